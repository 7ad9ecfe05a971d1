//! The reads a query needs: who is asking, what a name resolves to in the asker's scope,
//! PTR; and the counts and listings the control path and the tests use. Readers copy out what
//! they need and drop each guard before the next table call.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use smallvec::SmallVec;

use super::compact::*;
use super::spec::{EndpointSpec, NetworkSpec};
use super::{NetKey, Table};

/// One network in an asker's scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScopeEntry {
    pub net: NetKey,
    pub internal: bool,
    pub(super) has_links: bool,
}

/// The asker of a query, as the policy needs it.
#[derive(Debug, Clone, Default)]
pub struct Asker {
    /// Networks to search, in the order the container was connected to them.
    pub scope: SmallVec<[ScopeEntry; 4]>,
    container: Option<ContainerKey>,
    /// True when the source address claimed a container but arrived on the wrong bridge: it
    /// gets no container names at all.
    pub untrusted: bool,
    /// The network whose gateway the query was sent to.
    pub listener: NetKey,
}

impl Asker {
    /// Whether names not known locally may be forwarded upstream for this asker: not when every
    /// network in scope is `--internal`, nor for an untrusted source.
    pub fn may_forward(&self) -> bool {
        !self.untrusted && (self.scope.is_empty() || self.scope.iter().any(|s| !s.internal))
    }
}

/// The result of a name lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// The name exists on a network of the asker's; these are its addresses there (possibly
    /// none of one family).
    Here {
        v4: SmallVec<[Ipv4Addr; 8]>,
        v6: SmallVec<[Ipv6Addr; 8]>,
    },
    /// The name exists only on networks the asker is not on: answer NXDOMAIN, never forward
    /// (a local name never leaves the host).
    Elsewhere,
    /// Not a local name.
    Unknown,
}

impl Table {
    /// Who is asking: the container owning `src` and its networks in connect order; for a
    /// source that is no container, the network of the listener it asked.
    ///
    /// `arrived_on` is the interface the query came in on, when known (UDP). A source address
    /// that belongs to a network with a bridge must arrive on that bridge, or it is untrusted.
    pub fn asker(&self, src: IpAddr, arrived_on: Option<u32>, listener: NetKey) -> Asker {
        let src = canonical(src);
        match self.inner.holders_of(src) {
            Some(holders) => {
                // The address may be held on several networks (by different containers): the
                // one whose bridge the query came in on is asking; the latest when unknown.
                let bridge_of =
                    |h: &Holder| self.inner.nets.get(&h.net).and_then(|m| m.bridge_ifindex);
                let asking = holders.iter().rev().find(|h| match arrived_on {
                    Some(i) => bridge_of(h).is_none_or(|b| b == i),
                    None => true,
                });
                let Some(h) = asking else {
                    return Asker {
                        untrusted: true,
                        listener,
                        ..Asker::default()
                    };
                };
                let scope = self
                    .inner
                    .containers
                    .get(&h.container)
                    .map(|c| c.scope.iter().copied().collect())
                    .unwrap_or_default();
                Asker {
                    scope,
                    container: Some(h.container),
                    untrusted: false,
                    listener,
                }
            }
            None => {
                let internal = self.inner.nets.get(&listener).map(|m| m.internal);
                let mut scope = SmallVec::new();
                if let Some(internal) = internal {
                    scope.push(ScopeEntry {
                        net: listener,
                        internal,
                        has_links: false,
                    });
                }
                Asker {
                    scope,
                    container: None,
                    untrusted: false,
                    listener,
                }
            }
        }
    }

    /// The endpoints that may answer to `lower`: those under its hash (each checked against
    /// its record when asked for addresses).
    fn candidates(&self, lower: &[u8]) -> Option<Holders> {
        self.inner
            .names
            .get(&self.inner.keys.hash(lower))
            .map(|f| f.as_slice().into())
    }

    /// Resolve `name` (lower-cased, no trailing dot) for `asker`: the first network in its
    /// scope that has the name answers (links of the asker first); then `NAME.NETWORK`.
    pub fn lookup(&self, asker: &Asker, name: &[u8]) -> Found {
        if asker.untrusted {
            return Found::Unknown;
        }
        let candidates = self.candidates(name);
        let holders = candidates.as_deref().unwrap_or_default();
        for s in &asker.scope {
            if s.has_links {
                if let Some(found) = self.via_link(asker, s.net, name) {
                    return found;
                }
            }
            if let Some(found) = self.collect(holders, s.net, name) {
                return found;
            }
        }
        let mut known_elsewhere = self.named(holders, name);
        // NAME.NETWORK: the network name as a suffix. Tried at every dot, since container
        // and network names may both hold dots.
        for (i, _) in name.iter().enumerate().filter(|(_, &c)| c == b'.') {
            let (prefix, suffix) = (&name[..i], &name[i + 1..]);
            if prefix.is_empty() {
                continue;
            }
            let Some(net) = self.net_by_name(suffix) else {
                continue;
            };
            let scope = asker.scope.iter().find(|s| s.net == net);
            if let Some(s) = scope.filter(|s| s.has_links) {
                if let Some(found) = self.via_link(asker, s.net, prefix) {
                    return found;
                }
            }
            let Some(holders) = self.candidates(prefix) else {
                continue;
            };
            let Some(found) = self.collect(&holders, net, prefix) else {
                continue;
            };
            if scope.is_some() {
                return found;
            }
            known_elsewhere = true;
        }
        if known_elsewhere {
            Found::Elsewhere
        } else {
            Found::Unknown
        }
    }

    /// Whether any of `holders` really answers to `name` (a hash matched; is it the name?).
    fn named(&self, holders: &[Holder], name: &[u8]) -> bool {
        holders.iter().any(|h| {
            self.inner
                .endpoints
                .get(&(h.net, h.container))
                .is_some_and(|r| r.answers_to(name))
        })
    }

    /// The addresses of the holders on `net` answering to `name` (read from their records;
    /// one removed meanwhile is skipped), or `None` when none is on it.
    fn collect(&self, holders: &[Holder], net: NetKey, name: &[u8]) -> Option<Found> {
        let mut any = false;
        let mut v4 = SmallVec::new();
        let mut v6 = SmallVec::new();
        for h in holders.iter().filter(|h| h.net == net) {
            let Some((a4, a6)) = self
                .inner
                .endpoints
                .get(&(h.net, h.container))
                .filter(|r| r.answers_to(name))
                .map(|r| (r.v4, r.v6))
            else {
                continue;
            };
            any = true;
            if let Some(a) = a4 {
                if !v4.contains(&a) {
                    v4.push(a);
                }
            }
            if let Some(a) = a6 {
                if !v6.contains(&a) {
                    v6.push(a);
                }
            }
        }
        any.then_some(Found::Here { v4, v6 })
    }

    /// A link alias (or target) declared by the asker on `net`, resolved now to the target's
    /// addresses on that network. A link whose target is not there yet resolves to nothing.
    fn via_link(&self, asker: &Asker, net: NetKey, name: &[u8]) -> Option<Found> {
        let container = asker.container?;
        let mut target = [0u8; 256];
        let tlen = {
            let links = self.inner.links.get(&(container, net))?;
            let (_, t) = links
                .iter()
                .find(|(alias, target)| &**alias == name || &**target == name)?;
            let n = t.len().min(target.len());
            target[..n].copy_from_slice(&t[..n]);
            n
        };
        let target = &target[..tlen];
        let found = self
            .candidates(target)
            .and_then(|hs| self.collect(&hs, net, target));
        Some(found.unwrap_or(Found::Elsewhere))
    }

    /// The PTR target (`NAME.NETWORK`) of `addr` for `asker`, if the address is on one of its
    /// networks. `Some(None)` when the address is a container's on a network out of scope.
    pub fn ptr(&self, asker: &Asker, addr: IpAddr) -> Option<Option<Box<str>>> {
        let holders = self.inner.holders_of(canonical(addr))?;
        if asker.untrusted {
            return Some(None);
        }
        for s in &asker.scope {
            if let Some(h) = holders.iter().find(|h| h.net == s.net) {
                let name = self
                    .inner
                    .endpoints
                    .get(&(h.net, h.container))
                    .map(|r| String::from_utf8_lossy(r.given_name()).into_owned())?;
                let net = self.inner.nets.get(&h.net)?;
                return Some(Some(format!("{name}.{}", net.name).into_boxed_str()));
            }
        }
        Some(None)
    }

    // ---- inspection (tests, tooling) ----------------------------------------------------

    /// Number of networks.
    pub fn network_count(&self) -> usize {
        self.inner.nets.len()
    }

    /// Number of endpoints.
    pub fn endpoint_count(&self) -> usize {
        self.inner.endpoints.len()
    }

    /// Number of distinct names (distinct hashes: the same barring a 64-bit collision).
    pub fn name_count(&self) -> usize {
        self.inner.names.len()
    }

    /// Whether exactly `spec` is registered (same network, container and every field).
    pub fn has_endpoint(&self, spec: &EndpointSpec) -> bool {
        let Some(net) = self.network_key(&spec.network_id) else {
            return false;
        };
        let Some(c) = self.find_container(&spec.container_id) else {
            return false;
        };
        self.inner
            .endpoints
            .get(&(net, c))
            .is_some_and(|s| s.fingerprint == spec.fingerprint())
    }

    /// (network id, container id) of every registered endpoint (for diffing on reload).
    pub fn endpoint_keys(&self) -> Vec<(String, String)> {
        let keys: Vec<(NetKey, ContainerKey)> =
            self.inner.endpoints.iter().map(|e| *e.key()).collect();
        keys.into_iter()
            .filter_map(|(n, c)| {
                let net = self.inner.nets.get(&n).map(|m| m.id.to_string())?;
                let id = self.inner.containers.get(&c).map(|c| c.id.to_string())?;
                Some((net, id))
            })
            .collect()
    }

    /// Every network, as given to [`Table::add_network`].
    pub fn networks(&self) -> Vec<NetworkSpec> {
        self.inner
            .nets
            .iter()
            .map(|m| NetworkSpec {
                id: m.id.to_string(),
                name: m.name.to_string(),
                internal: m.internal,
                bridge_ifindex: m.bridge_ifindex,
                host_addresses: m.host_addresses.to_vec(),
                dns_servers: m
                    .servers
                    .as_ref()
                    .map(|s| s.list().to_vec())
                    .unwrap_or_default(),
            })
            .collect()
    }

    /// Where `asker`'s names that are not local go: its container's own servers, else those
    /// of the network it asked on, else (`None`) the host's upstreams. Podman's order.
    pub fn servers_for(&self, asker: &Asker) -> Option<crate::upstream::Servers> {
        let own = asker.container.and_then(|k| {
            self.inner
                .containers
                .get(&k)
                .and_then(|c| c.servers.clone())
        });
        own.or_else(|| {
            self.inner
                .nets
                .get(&asker.listener)
                .and_then(|m| m.servers.clone())
        })
    }

    /// What `host.docker.internal` answers for a query that came in on `listener`'s network
    /// (none: the name is not special there).
    pub fn host_addresses(&self, listener: NetKey) -> SmallVec<[IpAddr; 8]> {
        self.inner
            .nets
            .get(&listener)
            .map(|m| m.host_addresses.iter().copied().collect())
            .unwrap_or_default()
    }
}
