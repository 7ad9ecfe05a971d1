//! The writer API: networks and endpoints added, replaced and removed. Writers are serialised
//! by one mutex and never hold a map guard across another map call.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use smallvec::SmallVec;

use super::compact::*;
use super::read::ScopeEntry;
use super::spec::{normalise, EndpointSpec, NetworkSpec, TableError};
use super::{NetKey, Table};

impl Table {
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
                host_addresses: spec.host_addresses.clone().into_boxed_slice(),
                servers: crate::upstream::Servers::new(&spec.dns_servers),
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

    pub(super) fn net_by_name(&self, lower: &[u8]) -> Option<NetKey> {
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
        let (net, internal) = self
            .inner
            .net_ids
            .get(spec.network_id.as_str())
            .map(|k| *k)
            .and_then(|k| Some((k, self.inner.nets.get(&k)?.internal)))
            .ok_or_else(|| TableError::NoSuchNetwork(spec.network_id.clone()))?;
        let names = checked_names(spec)?;
        let known = self.find_container(&spec.container_id);
        // An address held by another container on this network is a caller bug: refuse it
        // rather than answer with two owners.
        for addr in addrs(spec.ipv4, spec.ipv6) {
            let clash = self.inner.holders_of(addr).is_some_and(|hs| {
                hs.iter()
                    .any(|h| h.net == net && Some(h.container) != known)
            });
            if clash {
                return Err(TableError::AddressTaken(addr, spec.network_id.clone()));
            }
        }
        let container = known.unwrap_or_else(|| self.new_container(&spec.container_id));
        let holder = Holder { net, container };
        if self.inner.endpoints.contains_key(&(net, container)) {
            self.unindex(holder);
        }
        // The record first: every index answers with its holder's record, so the record
        // must be the new one before any index shows the holder.
        self.inner.endpoints.insert(
            (net, container),
            Record {
                names: name_blob(spec, &names),
                v4: spec.ipv4,
                v6: spec.ipv6,
                fingerprint: spec.fingerprint(),
            },
        );
        for name in &names {
            hold(&self.inner.names, self.inner.keys.hash(name), holder);
        }
        for addr in addrs(spec.ipv4, spec.ipv6) {
            self.inner.hold_addr(addr, holder);
        }
        let has_links = self.index_links(spec, holder);
        if let Some(mut c) = self.inner.containers.get_mut(&container) {
            let entry = ScopeEntry {
                net,
                internal,
                has_links,
            };
            match c.scope.iter_mut().find(|s| s.net == net) {
                Some(s) => *s = entry,
                None => c.scope.push(entry),
            }
        }
        Ok(())
    }

    /// The endpoint's links, normalised, under its (container, network); whether it has any.
    fn index_links(&self, spec: &EndpointSpec, h: Holder) -> bool {
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
            self.inner.links.insert((h.container, h.net), links);
        }
        has_links
    }

    /// Remove an endpoint's records. Returns whether it was registered.
    pub fn remove_endpoint(&self, network_id: &str, container_id: &str) -> bool {
        let _w = self.lock();
        let Some(net) = self.inner.net_ids.get(network_id).map(|k| *k) else {
            return false;
        };
        let Some(container) = self.find_container(container_id) else {
            return false;
        };
        self.remove_locked((net, container))
    }

    /// The key of a container with an endpoint, by id.
    pub(super) fn find_container(&self, id: &str) -> Option<ContainerKey> {
        let candidates = self
            .inner
            .container_keys
            .get(&self.inner.keys.hash(id.as_bytes()))
            .map(|f| f.clone())?;
        let id = ContainerId::new(id);
        candidates
            .as_slice()
            .iter()
            .copied()
            .find(|k| self.inner.containers.get(k).is_some_and(|c| c.id == id))
    }

    /// Give container `id` upstream servers of its own (`--dns`; empty: none, the network's
    /// or the host's then). Kept while it has endpoints here; set again after each
    /// `upsert_endpoint` of a new container (a container's record goes with its last
    /// endpoint).
    pub fn set_container_servers(&self, id: &str, servers: &[std::net::SocketAddr]) {
        let _w = self.lock();
        if let Some(k) = self.find_container(id) {
            if let Some(mut c) = self.inner.containers.get_mut(&k) {
                c.servers = crate::upstream::Servers::new(servers);
            }
        }
    }

    fn new_container(&self, id: &str) -> ContainerKey {
        let k = self.inner.next_container.fetch_add(1, Ordering::Relaxed);
        self.inner.containers.insert(
            k,
            Container {
                id: ContainerId::new(id),
                scope: SmallVec::new(),
                servers: None,
            },
        );
        hold(
            &self.inner.container_keys,
            self.inner.keys.hash(id.as_bytes()),
            k,
        );
        k
    }

    fn remove_locked(&self, key: (NetKey, ContainerKey)) -> bool {
        let (net, container) = key;
        if !self.inner.endpoints.contains_key(&key) {
            return false;
        }
        self.unindex(Holder { net, container });
        self.inner.endpoints.remove(&key);
        let now_empty = self
            .inner
            .containers
            .get_mut(&container)
            .is_some_and(|mut c| {
                c.scope.retain(|s| s.net != net);
                c.scope.is_empty()
            });
        if now_empty {
            if let Some((_, c)) = self.inner.containers.remove(&container) {
                let id = c.id.to_string();
                release(
                    &self.inner.container_keys,
                    &self.inner.keys.hash(id.as_bytes()),
                    container,
                );
            }
        }
        true
    }

    /// Remove an endpoint's names, addresses and links from the indexes (not its record, nor
    /// its place in the scope).
    fn unindex(&self, h: Holder) {
        let Some(record) = self
            .inner
            .endpoints
            .get(&(h.net, h.container))
            .map(|r| r.clone())
        else {
            return;
        };
        for name in record.names() {
            let key = self.inner.keys.hash(&name.to_ascii_lowercase());
            release(&self.inner.names, &key, h);
        }
        for addr in addrs(record.v4, record.v6) {
            self.inner.release_addr(addr, h);
        }
        self.inner.links.remove(&(h.container, h.net));
    }
}

/// The names an endpoint answers to, once its id and name are known to be usable: each must
/// fit the record's 16-bit length prefix.
fn checked_names(spec: &EndpointSpec) -> Result<Vec<Box<[u8]>>, TableError> {
    if spec.container_id.is_empty() {
        return Err(TableError::InvalidName(String::new(), "empty container id"));
    }
    if normalise(spec.container_name.trim_start_matches('/')).is_empty() {
        return Err(TableError::InvalidName(
            spec.container_name.clone(),
            "empty container name",
        ));
    }
    let names = spec.names();
    if let Some(long) = names.iter().find(|n| n.len() > usize::from(u16::MAX)) {
        return Err(TableError::InvalidName(
            String::from_utf8_lossy(long).into_owned(),
            "longer than 65535 bytes",
        ));
    }
    Ok(names)
}

/// A record's names, each behind its 16-bit length: the container name as given first (the
/// PTR target), then the others (`names` puts the lower-cased container name first, so it is
/// skipped).
fn name_blob(spec: &EndpointSpec, names: &[Box<[u8]>]) -> Box<[u8]> {
    let given = spec.container_name.trim_start_matches('/');
    let mut blob = Vec::new();
    for name in std::iter::once(given.as_bytes()).chain(names.iter().skip(1).map(|n| &**n)) {
        blob.extend_from_slice(&(name.len() as u16).to_le_bytes());
        blob.extend_from_slice(name);
    }
    blob.into_boxed_slice()
}
