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

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
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

/// One endpoint: the handle every index holds, so that each index entry is a few bytes and
/// the endpoint's data lives once, in its [`Record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Holder {
    net: NetKey,
    container: ContainerKey,
}

/// The holders of one index key: nearly always one, so that one is kept inline. 16 bytes
/// where a `SmallVec` takes 24 and a `Vec` 24 plus a heap block (at 10^6 names, each byte
/// of an index entry costs about two bytes of memory once the maps' spare room is counted).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Few<T> {
    One(T),
    /// A thin pointer (8 bytes) where a `Vec` or a boxed slice would take 16 or 24 in every
    /// entry; the extra allocation is paid only by the rare key with several holders.
    #[allow(clippy::box_collection)]
    Many(Box<Vec<T>>),
}

impl<T: Copy + PartialEq> Few<T> {
    fn as_slice(&self) -> &[T] {
        match self {
            Few::One(t) => std::slice::from_ref(t),
            Few::Many(v) => v,
        }
    }

    /// Add `t` unless it is there already.
    fn add(&mut self, t: T) {
        if self.as_slice().contains(&t) {
            return;
        }
        match self {
            Few::One(a) => *self = Few::Many(Box::new(vec![*a, t])),
            Few::Many(v) => v.push(t),
        }
    }

    /// Drop every `t` equal to `gone`; true when nothing is left (the caller removes the key).
    fn remove(&mut self, gone: T) -> bool {
        match self {
            Few::One(a) => *a == gone,
            Few::Many(v) => {
                v.retain(|t| *t != gone);
                match v.len() {
                    0 => true,
                    1 => {
                        *self = Few::One(v[0]);
                        false
                    }
                    _ => false,
                }
            }
        }
    }
}

/// Holders copied out of an index for one query: no heap block for up to eight (a name shared
/// by a few containers, as round-robin aliases are, allocates nothing per query).
type Holders = SmallVec<[Holder; 8]>;

/// Add `value` to the holders of `key`.
fn hold<K: std::hash::Hash + Eq, T: Copy + PartialEq, S: BuildHasher + Clone>(
    map: &DashMap<K, Few<T>, S>,
    key: K,
    value: T,
) {
    map.entry(key)
        .and_modify(|f| f.add(value))
        .or_insert(Few::One(value));
}

/// Remove `value` from the holders of `key`, and the key when it was the last.
fn release<K: std::hash::Hash + Eq, T: Copy + PartialEq, S: BuildHasher + Clone>(
    map: &DashMap<K, Few<T>, S>,
    key: &K,
    value: T,
) {
    let empty = map.get_mut(key).is_some_and(|mut f| f.remove(value));
    if empty {
        map.remove_if(key, |_, f| f.as_slice().is_empty() || *f == Few::One(value));
    }
}

/// A map keyed by a 64-bit hash computed beforehand (of a name or a container id): the key
/// is its own hash, so it is not hashed twice, and the key costs 8 bytes whatever the name's
/// length. Two names sharing a hash share the entry; every reader checks the name against the
/// holder's [`Record`], so a collision costs a comparison, never a wrong answer.
type ByHash<V> = DashMap<u64, V, BuildHasherDefault<PassThrough>>;

/// The hasher of [`ByHash`]: the `u64` written is the hash.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by `ByHash`; fold anything else rather than lose it.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// How names and ids become [`ByHash`] keys: SipHash with this table's random keys, so
/// nobody choosing container names can make them collide on purpose.
#[derive(Debug)]
enum KeyHasher {
    Keyed(RandomState),
    /// Every key the same: the tests' way of making every lookup go through collisions.
    #[cfg(test)]
    Constant,
}

impl KeyHasher {
    fn hash(&self, bytes: &[u8]) -> u64 {
        match self {
            KeyHasher::Keyed(s) => s.hash_one(bytes),
            #[cfg(test)]
            KeyHasher::Constant => 7,
        }
    }
}

/// An endpoint's data, held once: its names, addresses, and a digest of its whole spec (not
/// a copy: that would double the table's size), so it can be undone exactly and a caller can
/// ask whether it is registered exactly so.
#[derive(Debug, Clone)]
struct Record {
    /// Every name it answers to, each as a 2-byte little-endian length and the bytes: the
    /// container's name as given first (the PTR target), then the others lower-cased. One
    /// allocation for all of them.
    names: Box<[u8]>,
    v4: Option<Ipv4Addr>,
    v6: Option<Ipv6Addr>,
    fingerprint: u64,
}

impl Record {
    fn names(&self) -> impl Iterator<Item = &[u8]> {
        let mut rest = &*self.names;
        std::iter::from_fn(move || {
            let (len, tail) = rest.split_first_chunk::<2>()?;
            let (name, tail) = tail.split_at(usize::from(u16::from_le_bytes(*len)));
            rest = tail;
            Some(name)
        })
    }

    /// Whether it answers to `lower` (lower-cased).
    fn answers_to(&self, lower: &[u8]) -> bool {
        self.names().any(|n| n.eq_ignore_ascii_case(lower))
    }

    /// The container's name as given.
    fn given_name(&self) -> &[u8] {
        self.names().next().unwrap_or_default()
    }
}

/// A container id: Docker's are 64 hex digits, kept as the 32 bytes they spell (half the
/// size, and no allocation); any other string as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ContainerId {
    Hex([u8; 32]),
    Text(Box<str>),
}

impl ContainerId {
    fn new(id: &str) -> Self {
        let b = id.as_bytes();
        let digit = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        if b.len() == 64 {
            let mut out = [0u8; 32];
            let all = out.iter_mut().zip(b.chunks_exact(2)).all(|(o, pair)| {
                match (digit(pair[0]), digit(pair[1])) {
                    (Some(h), Some(l)) => {
                        *o = h << 4 | l;
                        true
                    }
                    _ => false,
                }
            });
            if all {
                return ContainerId::Hex(out);
            }
        }
        ContainerId::Text(id.into())
    }
}

impl std::fmt::Display for ContainerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ContainerId::Hex(b) => b.iter().try_for_each(|x| write!(f, "{x:02x}")),
            ContainerId::Text(s) => f.write_str(s),
        }
    }
}

/// A container with at least one endpoint.
#[derive(Debug, Clone)]
struct Container {
    id: ContainerId,
    /// Its networks in the order it was connected to them: what its queries search.
    scope: SmallVec<[ScopeEntry; 2]>,
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
        let given = spec.container_name.trim_start_matches('/');
        if normalise(given).is_empty() {
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
        let internal = self
            .inner
            .nets
            .get(&net)
            .expect("network meta exists with its id")
            .internal;
        // The container name as given first (the PTR target); `names()` puts its lower-cased
        // form first, so the rest follow it.
        let mut blob = Vec::new();
        for name in std::iter::once(given.as_bytes()).chain(names.iter().skip(1).map(|n| &**n)) {
            blob.extend_from_slice(&(name.len() as u16).to_le_bytes());
            blob.extend_from_slice(name);
        }
        // The record first: every index answers with its holder's record, so the record
        // must be the new one before any index shows the holder.
        self.inner.endpoints.insert(
            (net, container),
            Record {
                names: blob.into_boxed_slice(),
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
    fn find_container(&self, id: &str) -> Option<ContainerKey> {
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

    fn new_container(&self, id: &str) -> ContainerKey {
        let k = self.inner.next_container.fetch_add(1, Ordering::Relaxed);
        self.inner.containers.insert(
            k,
            Container {
                id: ContainerId::new(id),
                scope: SmallVec::new(),
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

    // ---- readers ------------------------------------------------------------------------

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
            })
            .collect()
    }
}

/// The addresses of an endpoint, as `IpAddr`s.
fn addrs(v4: Option<Ipv4Addr>, v6: Option<Ipv6Addr>) -> impl Iterator<Item = IpAddr> {
    [v4.map(IpAddr::V4), v6.map(IpAddr::V6)]
        .into_iter()
        .flatten()
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

    /// The scenarios above on a table where every name and id has the same hash: answers
    /// must come from the records, not from the hash.
    #[test]
    fn collisions_never_change_an_answer() {
        let t = Table::colliding();
        let a = net(&t, "na", "alpha");
        net(&t, "nb", "beta");
        let hex = |c: char| std::iter::repeat_n(c, 64).collect::<String>();
        t.upsert_endpoint(&ep("na", &hex('a'), "web", [10, 0, 0, 2]))
            .unwrap();
        t.upsert_endpoint(&ep("na", &hex('b'), "db", [10, 0, 0, 3]))
            .unwrap();
        t.upsert_endpoint(&ep("nb", &hex('c'), "cache", [10, 1, 0, 2]))
            .unwrap();
        let mut aliased = ep("na", "client-id", "Client", [10, 0, 0, 4]);
        aliased.aliases = vec!["front".into()];
        t.upsert_endpoint(&aliased).unwrap();
        let asker = t.asker("10.0.0.4".parse().unwrap(), None, a);
        assert_eq!(v4s(t.lookup(&asker, b"web")), [Ipv4Addr::new(10, 0, 0, 2)]);
        assert_eq!(v4s(t.lookup(&asker, b"db")), [Ipv4Addr::new(10, 0, 0, 3)]);
        assert_eq!(
            v4s(t.lookup(&asker, b"aaaaaaaaaaaa")),
            [Ipv4Addr::new(10, 0, 0, 2)]
        );
        assert_eq!(
            v4s(t.lookup(&asker, b"front")),
            [Ipv4Addr::new(10, 0, 0, 4)]
        );
        assert_eq!(t.lookup(&asker, b"cache"), Found::Elsewhere);
        assert_eq!(t.lookup(&asker, b"nothing"), Found::Unknown);
        assert_eq!(t.lookup(&asker, b"web.beta"), Found::Unknown);
        assert_eq!(
            v4s(t.lookup(&asker, b"db.alpha")),
            [Ipv4Addr::new(10, 0, 0, 3)]
        );
        assert_eq!(
            t.ptr(&asker, "10.0.0.4".parse().unwrap()),
            Some(Some("Client.alpha".into()))
        );
        // Ids are told apart by value, and removing one leaves the others whole.
        assert!(t.has_endpoint(&ep("na", &hex('b'), "db", [10, 0, 0, 3])));
        assert!(!t.has_endpoint(&ep("na", &hex('d'), "db", [10, 0, 0, 3])));
        assert!(t.remove_endpoint("na", &hex('a')));
        assert!(!t.remove_endpoint("na", &hex('a')));
        assert_eq!(t.lookup(&asker, b"web"), Found::Unknown);
        assert_eq!(v4s(t.lookup(&asker, b"db")), [Ipv4Addr::new(10, 0, 0, 3)]);
        let mut keys = t.endpoint_keys();
        keys.sort();
        assert_eq!(
            keys,
            [
                ("na".to_string(), hex('b')),
                ("na".to_string(), "client-id".to_string()),
                ("nb".to_string(), hex('c')),
            ]
        );
    }

    /// One address on two networks (two bridges): the bridge a query arrives on says which
    /// container asks; one arriving elsewhere is untrusted.
    #[test]
    fn shared_address_is_told_apart_by_bridge() {
        let t = Table::new();
        for (id, name, ifindex) in [("na", "alpha", 10), ("nb", "beta", 20)] {
            t.add_network(&NetworkSpec {
                id: id.into(),
                name: name.into(),
                internal: false,
                bridge_ifindex: Some(ifindex),
            })
            .unwrap();
        }
        t.upsert_endpoint(&ep("na", "c1", "one", [10, 0, 0, 2]))
            .unwrap();
        t.upsert_endpoint(&ep("nb", "c2", "two", [10, 0, 0, 2]))
            .unwrap();
        t.upsert_endpoint(&ep("na", "c3", "three", [10, 0, 0, 3]))
            .unwrap();
        let src = "10.0.0.2".parse().unwrap();
        let on_alpha = t.asker(src, Some(10), 0);
        assert_eq!(
            v4s(t.lookup(&on_alpha, b"three")),
            [Ipv4Addr::new(10, 0, 0, 3)]
        );
        let on_beta = t.asker(src, Some(20), 0);
        assert_eq!(t.lookup(&on_beta, b"three"), Found::Elsewhere);
        assert!(t.asker(src, Some(30), 0).untrusted);
        // The other holder stays the source when one goes.
        assert!(t.remove_endpoint("nb", "c2"));
        assert!(!t.asker(src, Some(10), 0).untrusted);
        assert!(t.asker(src, Some(20), 0).untrusted);
    }

    #[test]
    fn ids_round_trip() {
        for id in [
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
            "short",
            "",
        ] {
            assert_eq!(ContainerId::new(id).to_string(), id);
        }
        assert!(matches!(
            ContainerId::new(&"f".repeat(64)),
            ContainerId::Hex(_)
        ));
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
