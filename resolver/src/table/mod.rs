//! The record table: networks, endpoints, and the indexes a query needs.
//!
//! One writer API ("add/remove network, upsert/remove endpoint") and the few reads the policy
//! needs. Every index is a `DashMap`, so a lookup is one hash probe whatever the table's size,
//! and readers only ever wait for the one shard a writer is touching, for the length of a single
//! map operation.
//!
//! Each endpoint's data (names, addresses) lives once, in its record; the indexes (names,
//! addresses, container ids) hold only 8-byte handles to records, and names and ids are keyed
//! by their 64-bit hash. That is what keeps a name under 300 bytes at 10^6 names: at that size
//! every byte of an index entry costs about two of memory, counting the maps' spare room.
//!
//! Two rules keep that deadlock-free and cheap:
//! - writers are serialised by one mutex and never hold a map guard across another map call;
//! - readers copy out what they need and drop each guard before the next table call (a reader
//!   holding shard guard A while asking for A again would deadlock behind a queued writer).
//!
//! `Table` is a cheap-clone handle around shared state, as in mini-redis.
//!
//! [`spec`] is what callers hand in, `compact` the representation, `write` the writer API,
//! `read` the lookups.

mod compact;
mod read;
pub mod spec;
#[cfg(test)]
mod tests;
mod write;

use std::collections::hash_map::RandomState;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};

use dashmap::DashMap;

use compact::*;
pub use read::{Asker, Found, ScopeEntry};
pub use spec::{normalise, EndpointSpec, Link, NetworkSpec, TableError};

/// Internal handle of a network (ids are 64-hex strings; queries carry this instead).
pub type NetKey = u32;

struct Inner {
    keys: KeyHasher,
    next_net: AtomicU32,
    next_container: AtomicU32,
    net_ids: DashMap<Arc<str>, NetKey>,
    nets: DashMap<NetKey, NetMeta>,
    /// Lower-cased network name → key, for `NAME.NETWORK`.
    net_names: DashMap<Box<[u8]>, NetKey>,
    /// Hash of a container id → the containers with that hash (one, barring a collision).
    container_keys: ByHash<Few<ContainerKey>>,
    containers: DashMap<ContainerKey, Container>,
    /// Hash of a lower-cased name → the endpoints answering to it (checked against their
    /// records: a hash is not a name).
    names: ByHash<Few<Holder>>,
    /// An address → the endpoints holding it (one per network at most): PTR, and which
    /// container a query's source address is.
    v4: DashMap<Ipv4Addr, Few<Holder>>,
    v6: DashMap<Ipv6Addr, Few<Holder>>,
    links: DashMap<(ContainerKey, NetKey), LinkList>,
    endpoints: DashMap<(NetKey, ContainerKey), Record>,
    writer: Mutex<()>,
}

impl Inner {
    fn new(keys: KeyHasher) -> Self {
        Inner {
            keys,
            next_net: AtomicU32::new(0),
            next_container: AtomicU32::new(0),
            net_ids: DashMap::new(),
            nets: DashMap::new(),
            net_names: DashMap::new(),
            container_keys: ByHash::default(),
            containers: DashMap::new(),
            names: ByHash::default(),
            v4: DashMap::new(),
            v6: DashMap::new(),
            links: DashMap::new(),
            endpoints: DashMap::new(),
            writer: Mutex::new(()),
        }
    }

    /// The holders of `addr`, copied out (no guard kept; on the stack, as a query needs them).
    fn holders_of(&self, addr: IpAddr) -> Option<Holders> {
        match addr {
            IpAddr::V4(a) => self.v4.get(&a).map(|f| f.as_slice().into()),
            IpAddr::V6(a) => self.v6.get(&a).map(|f| f.as_slice().into()),
        }
    }

    fn hold_addr(&self, addr: IpAddr, h: Holder) {
        match addr {
            IpAddr::V4(a) => hold(&self.v4, a, h),
            IpAddr::V6(a) => hold(&self.v6, a, h),
        }
    }

    fn release_addr(&self, addr: IpAddr, h: Holder) {
        match addr {
            IpAddr::V4(a) => release(&self.v4, &a, h),
            IpAddr::V6(a) => release(&self.v6, &a, h),
        }
    }
}

/// The concurrent record table. Clone it freely: clones share one table.
#[derive(Clone)]
pub struct Table {
    inner: Arc<Inner>,
}

impl Default for Table {
    fn default() -> Self {
        Table {
            inner: Arc::new(Inner::new(KeyHasher::Keyed(RandomState::new()))),
        }
    }
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

    /// A table whose names and ids all share one hash: every lookup goes through collisions.
    #[cfg(test)]
    fn colliding() -> Self {
        Table {
            inner: Arc::new(Inner::new(KeyHasher::Constant)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        // A panicking writer cannot leave the maps inconsistent in a way the mutex protects
        // (each map operation is atomic), so a poisoned lock is still usable.
        self.inner.writer.lock().unwrap_or_else(|e| e.into_inner())
    }
}
