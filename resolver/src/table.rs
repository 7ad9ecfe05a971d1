//! The record table: networks, endpoints, and the indexes a query needs.
//!
//! One writer API ("add/remove network, upsert/remove endpoint") and the few reads the policy
//! needs. Every index is a `DashMap`, so a lookup is one hash probe whatever the table's size,
//! and readers only ever wait for the one shard a writer is touching, for the length of a single
//! map operation.
//!
//! Two rules keep that deadlock-free and cheap:
//! - writers are serialised by one mutex and never hold a map guard across another map call;
//! - readers copy out what they need and drop each guard before the next table call (a reader
//!   holding shard guard A while asking for A again would deadlock behind a queued writer).
//!
//! `Table` is a cheap-clone handle around shared state, as in mini-redis.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use smallvec::SmallVec;
use thiserror::Error;

/// Errors of the writer API. Each leaves the table unchanged.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TableError {
    #[error("network {0} not found")]
    NoSuchNetwork(String),
    #[error("a network named {name} already exists with id {id}")]
    NetworkNameTaken { name: String, id: String },
    #[error("invalid name {0:?}: {1}")]
    InvalidName(String, &'static str),
    #[error("address {0} is already registered on network {1}")]
    AddressTaken(IpAddr, String),
}

/// A network as the resolver sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSpec {
    pub id: String,
    pub name: String,
    /// `--internal`: askers only on internal networks get no forwarding.
    pub internal: bool,
    /// The bridge's interface index. When set, a query from one of this network's addresses is
    /// only trusted if it arrived on that interface (anti-spoofing across bridges).
    pub bridge_ifindex: Option<u32>,
}

/// `--link target:alias`, declared by one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Link {
    pub target: String,
    pub alias: String,
}

impl std::str::FromStr for Link {
    type Err = String;
    /// Docker's `NAME[:ALIAS]` form; the alias defaults to the target's name.
    fn from_str(s: &str) -> Result<Self, String> {
        let (target, alias) = match s.split_once(':') {
            Some((t, a)) => (t, a),
            None => (s, s),
        };
        let target = target.trim_start_matches('/');
        if target.is_empty() || alias.is_empty() || alias.contains(':') {
            return Err(format!("bad format for links: {s}"));
        }
        Ok(Link {
            target: target.to_string(),
            alias: alias.to_string(),
        })
    }
}

/// A container's attachment to one network, with every name it answers to there.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EndpointSpec {
    pub network_id: String,
    pub container_id: String,
    pub container_name: String,
    pub hostname: Option<String>,
    pub aliases: Vec<String>,
    pub links: Vec<Link>,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
}

impl EndpointSpec {
    /// Every name this endpoint answers to on its network, lower-cased, without duplicates:
    /// container name, hostname, 12-hex short id, aliases.
    fn names(&self) -> Vec<Box<[u8]>> {
        let short = if self.container_id.len() >= 12 {
            Some(&self.container_id[..12])
        } else {
            None
        };
        let mut seen = HashSet::new();
        std::iter::once(self.container_name.trim_start_matches('/'))
            .chain(self.hostname.as_deref())
            .chain(short)
            .chain(self.aliases.iter().map(String::as_str))
            .map(normalise)
            .filter(|n| !n.is_empty() && seen.insert(n.clone()))
            .map(|n| n.into_bytes().into_boxed_slice())
            .collect()
    }

    /// A 64-bit digest of every field: what the table keeps instead of a copy, so a caller can
    /// ask whether an endpoint is registered exactly so ([`Table::has_endpoint`]).
    fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        self.hash(&mut h);
        h.finish()
    }
}

/// Names are matched without regard to case and without the trailing dot.
pub fn normalise(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Internal handle of a network (ids are 64-hex strings; queries carry this instead).
pub type NetKey = u32;
/// 32 bits: four billion containers is plenty, and every index entry holding one is smaller.
type ContainerKey = u32;

/// A name as the indexes hold it: one allocation, shared by the name index's key, the
/// endpoint's record of what it registered, and the PTR holder (for the container name).
type Name = Arc<[u8]>;

/// One endpoint holding a name. Its addresses are read from the endpoint's record when the
/// name is asked for (one more probe a query): kept here, they made every entry of the
/// largest index three times bigger (8 bytes against 44, ~45 bytes a name at 10^6).
#[derive(Debug, Clone, Copy)]
struct Holder {
    net: NetKey,
    container: ContainerKey,
}

/// An address's owner, for PTR.
#[derive(Debug, Clone)]
struct PtrHolder {
    net: NetKey,
    container: ContainerKey,
    /// The container's name as given: the PTR target is `NAME.NETWORK`, with the network's
    /// current name joined at query time (not stored: one allocation less per address).
    name: Name,
}

/// Where a source address belongs.
#[derive(Debug, Clone, Copy)]
struct Source {
    container: ContainerKey,
    net: NetKey,
}

/// One network in an asker's scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScopeEntry {
    pub net: NetKey,
    pub internal: bool,
    has_links: bool,
}

#[derive(Debug, Clone)]
struct NetMeta {
    id: Arc<str>,
    name: Box<str>,
    name_lower: Box<str>,
    internal: bool,
    bridge_ifindex: Option<u32>,
}

/// What the table registered for an endpoint, so it can be undone exactly: its names and
/// addresses, and a digest of its whole spec (not a copy: that would double the table's size).
#[derive(Debug, Clone)]
struct Stored {
    names: Box<[Name]>,
    v4: Option<Ipv4Addr>,
    v6: Option<Ipv6Addr>,
    fingerprint: u64,
}

/// Links declared by one endpoint: (alias, target), both normalised.
type LinkList = Box<[(Box<[u8]>, Box<[u8]>)]>;

/// The asker of a query, as the policy needs it.
#[derive(Debug, Clone, Default)]
pub struct Asker {
    /// Networks to search, in the order the container was connected to them.
    pub scope: SmallVec<[ScopeEntry; 4]>,
    container: Option<ContainerKey>,
    /// True when the source address claimed a container but arrived on the wrong bridge: it
    /// gets no container names at all.
    pub untrusted: bool,
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

#[derive(Default)]
struct Inner {
    next_net: AtomicU32,
    next_container: AtomicU32,
    net_ids: DashMap<Arc<str>, NetKey>,
    nets: DashMap<NetKey, NetMeta>,
    /// Lower-cased network name → key, for `NAME.NETWORK`.
    net_names: DashMap<Box<[u8]>, NetKey>,
    container_keys: DashMap<Arc<str>, ContainerKey>,
    /// Key → id, sharing the id's allocation with `container_keys`.
    container_ids: DashMap<ContainerKey, Arc<str>>,
    names: DashMap<Name, SmallVec<[Holder; 1]>>,
    ptrs: DashMap<IpAddr, SmallVec<[PtrHolder; 1]>>,
    sources: DashMap<IpAddr, Source>,
    scopes: DashMap<ContainerKey, SmallVec<[ScopeEntry; 2]>>,
    links: DashMap<(ContainerKey, NetKey), LinkList>,
    endpoints: DashMap<(NetKey, ContainerKey), Stored>,
    writer: Mutex<()>,
}

/// The concurrent record table. Clone it freely: clones share one table.
#[derive(Clone, Default)]
pub struct Table {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("networks", &self.inner.nets.len())
            .field("endpoints", &self.inner.endpoints.len())
            .field("names", &self.inner.names.len())
            .finish()
    }
}

impl Table {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        // A panicking writer cannot leave the maps inconsistent in a way the mutex protects
        // (each map operation is atomic), so a poisoned lock is still usable.
        self.inner.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    // ---- writers ------------------------------------------------------------------------

    /// Add a network, or update the bridge index of one already known by this id. Its
    /// [`NetKey`] is what listeners pass with each query.
    pub fn add_network(&self, spec: &NetworkSpec) -> Result<NetKey, TableError> {
        let _w = self.lock();
        let lower = normalise(&spec.name);
        if lower.is_empty() {
            return Err(TableError::InvalidName(spec.name.clone(), "empty"));
        }
        if let Some(other) = self
            .inner
            .nets
            .iter()
            .find(|m| *m.name_lower == *lower && *m.id != *spec.id)
            .map(|m| m.id.to_string())
        {
            return Err(TableError::NetworkNameTaken {
                name: spec.name.clone(),
                id: other,
            });
        }
        let existing = self.inner.net_ids.get(spec.id.as_str()).map(|k| *k);
        let key = match existing {
            Some(k) => k,
            None => {
                let k = self.inner.next_net.fetch_add(1, Ordering::Relaxed);
                self.inner.net_ids.insert(Arc::from(spec.id.as_str()), k);
                k
            }
        };
        if let Some(old) = self.inner.nets.get(&key).map(|m| m.name_lower.clone()) {
            self.inner.net_names.remove(old.as_bytes());
        }
        self.inner.net_names.insert(lower.as_bytes().into(), key);
        self.inner.nets.insert(
            key,
            NetMeta {
                id: Arc::from(spec.id.as_str()),
                name: spec.name.clone().into_boxed_str(),
                name_lower: lower.into_boxed_str(),
                internal: spec.internal,
                bridge_ifindex: spec.bridge_ifindex,
            },
        );
        Ok(key)
    }

    /// Remove a network and every endpoint on it. Unknown ids are not an error (idempotent).
    pub fn remove_network(&self, id: &str) {
        let _w = self.lock();
        let Some(key) = self.inner.net_ids.get(id).map(|k| *k) else {
            return;
        };
        let members: Vec<(NetKey, ContainerKey)> = self
            .inner
            .endpoints
            .iter()
            .filter(|e| e.key().0 == key)
            .map(|e| *e.key())
            .collect();
        for k in members {
            self.remove_locked(k);
        }
        if let Some((_, m)) = self.inner.nets.remove(&key) {
            self.inner.net_names.remove(m.name_lower.as_bytes());
        }
        self.inner.net_ids.remove(id);
    }

    fn net_by_name(&self, lower: &[u8]) -> Option<NetKey> {
        self.inner.net_names.get(lower).map(|k| *k)
    }

    /// The key of a network by id.
    pub fn network_key(&self, id: &str) -> Option<NetKey> {
        self.inner.net_ids.get(id).map(|k| *k)
    }

    /// Register (or replace) an endpoint. Visible to the next query once this returns. A
    /// replaced endpoint keeps its place in the container's connect order.
    pub fn upsert_endpoint(&self, spec: &EndpointSpec) -> Result<(), TableError> {
        let _w = self.lock();
        let net = self
            .inner
            .net_ids
            .get(spec.network_id.as_str())
            .map(|k| *k)
            .ok_or_else(|| TableError::NoSuchNetwork(spec.network_id.clone()))?;
        if spec.container_id.is_empty() {
            return Err(TableError::InvalidName(String::new(), "empty container id"));
        }
        if normalise(spec.container_name.trim_start_matches('/')).is_empty() {
            return Err(TableError::InvalidName(
                spec.container_name.clone(),
                "empty container name",
            ));
        }
        let container = self.container_key(&spec.container_id);
        // An address held by another container on this network is a caller bug: refuse it
        // rather than answer with two owners.
        for addr in [spec.ipv4.map(IpAddr::V4), spec.ipv6.map(IpAddr::V6)]
            .into_iter()
            .flatten()
        {
            let clash = self
                .inner
                .ptrs
                .get(&addr)
                .is_some_and(|hs| hs.iter().any(|h| h.net == net && h.container != container));
            if clash {
                return Err(TableError::AddressTaken(addr, spec.network_id.clone()));
            }
        }
        let existed = self.inner.endpoints.contains_key(&(net, container));
        if existed {
            self.unindex((net, container));
        }
        let internal = self
            .inner
            .nets
            .get(&net)
            .expect("network meta exists with its id")
            .internal;
        // The record first: a name answers with its holder's record's addresses, so the
        // record must hold the new ones before any holder is visible.
        self.inner.endpoints.insert(
            (net, container),
            Stored {
                names: Box::new([]),
                v4: spec.ipv4,
                v6: spec.ipv6,
                fingerprint: spec.fingerprint(),
            },
        );
        let mut names: Vec<Name> = Vec::new();
        for name in spec.names() {
            let holder = Holder { net, container };
            let mut holders = self.inner.names.entry(Name::from(name)).or_default();
            holders.push(holder);
            names.push(holders.key().clone());
        }
        // The container name comes first in `names`; shared unless its case differs.
        let given = spec.container_name.trim_start_matches('/');
        let ptr_name = match names.first() {
            Some(n) if **n == *given.as_bytes() => n.clone(),
            _ => Name::from(given.as_bytes()),
        };
        for addr in [spec.ipv4.map(IpAddr::V4), spec.ipv6.map(IpAddr::V6)]
            .into_iter()
            .flatten()
        {
            self.inner.ptrs.entry(addr).or_default().push(PtrHolder {
                net,
                container,
                name: ptr_name.clone(),
            });
            self.inner.sources.insert(addr, Source { container, net });
        }
        let links: LinkList = spec
            .links
            .iter()
            .map(|l| {
                (
                    normalise(&l.alias).into_bytes().into_boxed_slice(),
                    normalise(&l.target).into_bytes().into_boxed_slice(),
                )
            })
            .collect();
        let has_links = !links.is_empty();
        if has_links {
            self.inner.links.insert((container, net), links);
        }
        {
            let mut scope = self.inner.scopes.entry(container).or_default();
            let entry = ScopeEntry {
                net,
                internal,
                has_links,
            };
            match scope.iter_mut().find(|s| s.net == net) {
                Some(s) => *s = entry,
                None => scope.push(entry),
            }
        }
        if let Some(mut stored) = self.inner.endpoints.get_mut(&(net, container)) {
            stored.names = names.into_boxed_slice();
        }
        Ok(())
    }

    /// Remove an endpoint's records. Returns whether it was registered.
    pub fn remove_endpoint(&self, network_id: &str, container_id: &str) -> bool {
        let _w = self.lock();
        let Some(net) = self.inner.net_ids.get(network_id).map(|k| *k) else {
            return false;
        };
        let Some(container) = self.inner.container_keys.get(container_id).map(|k| *k) else {
            return false;
        };
        self.remove_locked((net, container))
    }

    fn container_key(&self, id: &str) -> ContainerKey {
        if let Some(k) = self.inner.container_keys.get(id) {
            return *k;
        }
        let k = self.inner.next_container.fetch_add(1, Ordering::Relaxed);
        let id: Arc<str> = Arc::from(id);
        self.inner.container_keys.insert(id.clone(), k);
        self.inner.container_ids.insert(k, id);
        k
    }

    fn remove_locked(&self, key: (NetKey, ContainerKey)) -> bool {
        if !self.inner.endpoints.contains_key(&key) {
            return false;
        }
        self.unindex(key);
        let (net, container) = key;
        self.inner.endpoints.remove(&key);
        let now_empty = {
            let mut gone = false;
            if let Some(mut scope) = self.inner.scopes.get_mut(&container) {
                scope.retain(|s| s.net != net);
                gone = scope.is_empty();
            }
            gone
        };
        if now_empty {
            self.inner.scopes.remove(&container);
            if let Some((_, id)) = self.inner.container_ids.remove(&container) {
                self.inner.container_keys.remove(&*id);
            }
        }
        true
    }

    /// Remove an endpoint's names, PTRs, sources and links (not its place in the scope).
    fn unindex(&self, key: (NetKey, ContainerKey)) {
        let (net, container) = key;
        let Some(stored) = self.inner.endpoints.get(&key).map(|s| s.clone()) else {
            return;
        };
        for name in &stored.names {
            let empty = match self.inner.names.get_mut(name) {
                Some(mut hs) => {
                    hs.retain(|h| !(h.net == net && h.container == container));
                    hs.is_empty()
                }
                None => false,
            };
            if empty {
                self.inner.names.remove_if(name, |_, hs| hs.is_empty());
            }
        }
        for addr in [stored.v4.map(IpAddr::V4), stored.v6.map(IpAddr::V6)]
            .into_iter()
            .flatten()
        {
            let empty = match self.inner.ptrs.get_mut(&addr) {
                Some(mut hs) => {
                    hs.retain(|h| !(h.net == net && h.container == container));
                    hs.is_empty()
                }
                None => false,
            };
            if empty {
                self.inner.ptrs.remove_if(&addr, |_, hs| hs.is_empty());
            }
            self.inner
                .sources
                .remove_if(&addr, |_, s| s.net == net && s.container == container);
        }
        self.inner.links.remove(&(container, net));
    }

    // ---- readers ------------------------------------------------------------------------

    /// Who is asking: the container owning `src` and its networks in connect order; for a
    /// source that is no container, the network of the listener it asked.
    ///
    /// `arrived_on` is the interface the query came in on, when known (UDP). A source address
    /// that belongs to a network with a bridge must arrive on that bridge, or it is untrusted.
    pub fn asker(&self, src: IpAddr, arrived_on: Option<u32>, listener: NetKey) -> Asker {
        let src = canonical(src);
        let source = self.inner.sources.get(&src).map(|s| *s);
        match source {
            Some(s) => {
                if let Some(ifindex) = arrived_on {
                    let bridge = self.inner.nets.get(&s.net).and_then(|m| m.bridge_ifindex);
                    if bridge.is_some_and(|b| b != ifindex) {
                        return Asker {
                            untrusted: true,
                            ..Asker::default()
                        };
                    }
                }
                let scope = self
                    .inner
                    .scopes
                    .get(&s.container)
                    .map(|sc| sc.iter().copied().collect())
                    .unwrap_or_default();
                Asker {
                    scope,
                    container: Some(s.container),
                    untrusted: false,
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
                }
            }
        }
    }

    /// Resolve `name` (lower-cased, no trailing dot) for `asker`: the first network in its
    /// scope that has the name answers (links of the asker first); then `NAME.NETWORK`.
    pub fn lookup(&self, asker: &Asker, name: &[u8]) -> Found {
        if asker.untrusted {
            return Found::Unknown;
        }
        let mut known_elsewhere = false;
        // Copy the holders that are in scope; drop the guard before any other table call.
        let mut in_scope: SmallVec<[Holder; 8]> = SmallVec::new();
        if let Some(hs) = self.inner.names.get(name) {
            known_elsewhere = true;
            in_scope.extend(
                hs.iter()
                    .filter(|h| asker.scope.iter().any(|s| s.net == h.net))
                    .copied(),
            );
        }
        for s in &asker.scope {
            if s.has_links {
                if let Some(found) = self.via_link(asker, s.net, name) {
                    return found;
                }
            }
            if let Some(found) = self.collect(&in_scope, s.net) {
                return found;
            }
        }
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
            let holders: SmallVec<[Holder; 8]> = match self.inner.names.get(prefix) {
                Some(hs) => hs.iter().filter(|h| h.net == net).copied().collect(),
                None => continue,
            };
            if holders.is_empty() {
                continue;
            }
            known_elsewhere = true;
            if scope.is_some() {
                if let Some(found) = self.collect(&holders, net) {
                    return found;
                }
            }
        }
        if known_elsewhere {
            Found::Elsewhere
        } else {
            Found::Unknown
        }
    }

    /// The addresses of the holders on `net` (from their endpoint records; one removed
    /// meanwhile is skipped), or `None` when none is on it.
    fn collect(&self, holders: &[Holder], net: NetKey) -> Option<Found> {
        let mut any = false;
        let mut v4 = SmallVec::new();
        let mut v6 = SmallVec::new();
        for h in holders.iter().filter(|h| h.net == net) {
            let Some((a4, a6)) = self
                .inner
                .endpoints
                .get(&(h.net, h.container))
                .map(|e| (e.v4, e.v6))
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
        let holders: SmallVec<[Holder; 8]> = self
            .inner
            .names
            .get(&target[..tlen])
            .map(|hs| hs.iter().filter(|h| h.net == net).copied().collect())
            .unwrap_or_default();
        Some(self.collect(&holders, net).unwrap_or(Found::Elsewhere))
    }

    /// The PTR target (`NAME.NETWORK`) of `addr` for `asker`, if the address is on one of its
    /// networks. `Some(None)` when the address is a container's on a network out of scope.
    pub fn ptr(&self, asker: &Asker, addr: IpAddr) -> Option<Option<Box<str>>> {
        let addr = canonical(addr);
        let hs = self.inner.ptrs.get(&addr)?;
        if asker.untrusted {
            return Some(None);
        }
        for s in &asker.scope {
            if let Some(h) = hs.iter().find(|h| h.net == s.net) {
                let net = self.inner.nets.get(&h.net)?;
                let target = format!("{}.{}", String::from_utf8_lossy(&h.name), net.name);
                return Some(Some(target.into_boxed_str()));
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

    /// Number of distinct names.
    pub fn name_count(&self) -> usize {
        self.inner.names.len()
    }

    /// Whether exactly `spec` is registered (same network, container and every field).
    pub fn has_endpoint(&self, spec: &EndpointSpec) -> bool {
        let Some(net) = self.network_key(&spec.network_id) else {
            return false;
        };
        let Some(c) = self
            .inner
            .container_keys
            .get(spec.container_id.as_str())
            .map(|k| *k)
        else {
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
                let id = self.inner.container_ids.get(&c).map(|i| i.to_string())?;
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
            })
            .collect()
    }
}

/// IPv4-mapped IPv6 sources (from dual-stack sockets) are their IPv4 address.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => addr,
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(t: &Table, id: &str, name: &str) -> NetKey {
        t.add_network(&NetworkSpec {
            id: id.into(),
            name: name.into(),
            internal: false,
            bridge_ifindex: None,
        })
        .unwrap()
    }

    fn ep(net: &str, id: &str, name: &str, v4: [u8; 4]) -> EndpointSpec {
        EndpointSpec {
            network_id: net.into(),
            container_id: id.into(),
            container_name: name.into(),
            hostname: None,
            aliases: vec![],
            links: vec![],
            ipv4: Some(Ipv4Addr::from(v4)),
            ipv6: None,
        }
    }

    fn v4s(f: Found) -> Vec<Ipv4Addr> {
        match f {
            Found::Here { v4, .. } => v4.to_vec(),
            other => panic!("expected addresses, got {other:?}"),
        }
    }

    #[test]
    fn scope_and_order() {
        let t = Table::new();
        let a = net(&t, "na", "alpha");
        let _b = net(&t, "nb", "beta");
        t.upsert_endpoint(&ep("na", "c1aaaaaaaaaaaa", "web", [10, 0, 0, 2]))
            .unwrap();
        t.upsert_endpoint(&ep("nb", "c2bbbbbbbbbbbb", "web", [10, 1, 0, 2]))
            .unwrap();
        t.upsert_endpoint(&ep("nb", "c3cccccccccccc", "client", [10, 1, 0, 3]))
            .unwrap();
        t.upsert_endpoint(&ep("na", "c3cccccccccccc", "client", [10, 0, 0, 3]))
            .unwrap();
        // client joined beta first: beta's web answers.
        let asker = t.asker("10.0.0.3".parse().unwrap(), None, a);
        assert_eq!(v4s(t.lookup(&asker, b"web")), [Ipv4Addr::new(10, 1, 0, 2)]);
        assert_eq!(
            v4s(t.lookup(&asker, b"web.alpha")),
            [Ipv4Addr::new(10, 0, 0, 2)]
        );
        // web on alpha sees only alpha.
        let asker = t.asker("10.0.0.2".parse().unwrap(), None, a);
        assert_eq!(t.lookup(&asker, b"nothing"), Found::Unknown);
        assert_eq!(
            v4s(t.lookup(&asker, b"c1aaaaaaaaaa")),
            [Ipv4Addr::new(10, 0, 0, 2)]
        );
        assert!(t.remove_endpoint("na", "c3cccccccccccc"));
        assert_eq!(t.lookup(&asker, b"client"), Found::Elsewhere);
        t.remove_network("nb");
        assert_eq!(t.lookup(&asker, b"client"), Found::Unknown);
        assert_eq!(t.endpoint_count(), 1);
    }

    #[test]
    fn address_clash_changes_nothing() {
        let t = Table::new();
        net(&t, "na", "alpha");
        t.upsert_endpoint(&ep("na", "c1", "one", [10, 0, 0, 2]))
            .unwrap();
        let err = t
            .upsert_endpoint(&ep("na", "c2", "two", [10, 0, 0, 2]))
            .unwrap_err();
        assert!(matches!(err, TableError::AddressTaken(..)));
        assert_eq!(t.endpoint_count(), 1);
        assert_eq!(t.name_count(), 1);
    }

    #[test]
    fn links_parse() {
        assert_eq!(
            "c1:alias".parse::<Link>().unwrap(),
            Link {
                target: "c1".into(),
                alias: "alias".into()
            }
        );
        assert_eq!("c1".parse::<Link>().unwrap().alias, "c1");
        assert!("a:b:c".parse::<Link>().is_err());
        assert!(":b".parse::<Link>().is_err());
    }
}
