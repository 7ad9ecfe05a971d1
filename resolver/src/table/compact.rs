//! The table's compact representation: the handles every index holds, the one-or-many
//! holder sets, maps keyed by a precomputed hash, and each endpoint's record. Each type here
//! is as small as it can be, because at 10^6 names each byte of an index entry costs about two
//! of memory.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use dashmap::DashMap;
use smallvec::SmallVec;

use super::read::ScopeEntry;
use super::NetKey;

/// 32 bits: four billion containers is plenty, and every index entry holding one is smaller.
pub(super) type ContainerKey = u32;

/// One endpoint: the handle every index holds, so that each index entry is a few bytes and
/// the endpoint's data lives once, in its [`Record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Holder {
    pub(super) net: NetKey,
    pub(super) container: ContainerKey,
}

/// The holders of one index key: nearly always one, so that one is kept inline. 16 bytes
/// where a `SmallVec` takes 24 and a `Vec` 24 plus a heap block (at 10^6 names, each byte
/// of an index entry costs about two bytes of memory once the maps' spare room is counted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Few<T> {
    One(T),
    /// A thin pointer (8 bytes) where a `Vec` or a boxed slice would take 16 or 24 in every
    /// entry; the extra allocation is paid only by the rare key with several holders.
    #[allow(clippy::box_collection)]
    Many(Box<Vec<T>>),
}

impl<T: Copy + PartialEq> Few<T> {
    pub(super) fn as_slice(&self) -> &[T] {
        match self {
            Few::One(t) => std::slice::from_ref(t),
            Few::Many(v) => v,
        }
    }

    /// Add `t` unless it is there already.
    pub(super) fn add(&mut self, t: T) {
        if self.as_slice().contains(&t) {
            return;
        }
        match self {
            Few::One(a) => *self = Few::Many(Box::new(vec![*a, t])),
            Few::Many(v) => v.push(t),
        }
    }

    /// Drop every `t` equal to `gone`; true when nothing is left (the caller removes the key).
    pub(super) fn remove(&mut self, gone: T) -> bool {
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
pub(super) type Holders = SmallVec<[Holder; 8]>;

/// Add `value` to the holders of `key`.
pub(super) fn hold<K: std::hash::Hash + Eq, T: Copy + PartialEq, S: BuildHasher + Clone>(
    map: &DashMap<K, Few<T>, S>,
    key: K,
    value: T,
) {
    map.entry(key)
        .and_modify(|f| f.add(value))
        .or_insert(Few::One(value));
}

/// Remove `value` from the holders of `key`, and the key when it was the last.
pub(super) fn release<K: std::hash::Hash + Eq, T: Copy + PartialEq, S: BuildHasher + Clone>(
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
pub(super) type ByHash<V> = DashMap<u64, V, BuildHasherDefault<PassThrough>>;

/// The hasher of [`ByHash`]: the `u64` written is the hash.
#[derive(Default)]
pub(super) struct PassThrough(u64);

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
pub(super) enum KeyHasher {
    Keyed(RandomState),
    /// Every key the same: the tests' way of making every lookup go through collisions.
    #[cfg(test)]
    Constant,
}

impl KeyHasher {
    pub(super) fn hash(&self, bytes: &[u8]) -> u64 {
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
pub(super) struct Record {
    /// Every name it answers to, each as a 2-byte little-endian length and the bytes: the
    /// container's name as given first (the PTR target), then the others lower-cased. One
    /// allocation for all of them.
    pub(super) names: Box<[u8]>,
    pub(super) v4: Option<Ipv4Addr>,
    pub(super) v6: Option<Ipv6Addr>,
    pub(super) fingerprint: u64,
}

impl Record {
    pub(super) fn names(&self) -> impl Iterator<Item = &[u8]> {
        let mut rest = &*self.names;
        std::iter::from_fn(move || {
            let (len, tail) = rest.split_first_chunk::<2>()?;
            let (name, tail) = tail.split_at(usize::from(u16::from_le_bytes(*len)));
            rest = tail;
            Some(name)
        })
    }

    /// Whether it answers to `lower` (lower-cased).
    pub(super) fn answers_to(&self, lower: &[u8]) -> bool {
        self.names().any(|n| n.eq_ignore_ascii_case(lower))
    }

    /// The container's name as given.
    pub(super) fn given_name(&self) -> &[u8] {
        self.names().next().unwrap_or_default()
    }
}

/// A container id: Docker's are 64 hex digits, kept as the 32 bytes they spell (half the
/// size, and no allocation); any other string as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ContainerId {
    Hex([u8; 32]),
    Text(Box<str>),
}

impl ContainerId {
    pub(super) fn new(id: &str) -> Self {
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
pub(super) struct Container {
    pub(super) id: ContainerId,
    /// Its networks in the order it was connected to them: what its queries search.
    pub(super) scope: SmallVec<[ScopeEntry; 2]>,
    /// Its own upstream servers (`--dns`), if it has any.
    pub(super) servers: Option<crate::upstream::Servers>,
}

#[derive(Debug, Clone)]
pub(super) struct NetMeta {
    pub(super) id: Arc<str>,
    pub(super) name: Box<str>,
    pub(super) name_lower: Box<str>,
    pub(super) internal: bool,
    pub(super) bridge_ifindex: Option<u32>,
    pub(super) host_addresses: Box<[IpAddr]>,
    /// The network's upstream servers for its askers without servers of their own.
    pub(super) servers: Option<crate::upstream::Servers>,
}

/// Links declared by one endpoint: (alias, target), both normalised.
pub(super) type LinkList = Box<[(Box<[u8]>, Box<[u8]>)]>;

/// The addresses of an endpoint, as `IpAddr`s.
pub(super) fn addrs(v4: Option<Ipv4Addr>, v6: Option<Ipv6Addr>) -> impl Iterator<Item = IpAddr> {
    [v4.map(IpAddr::V4), v6.map(IpAddr::V6)]
        .into_iter()
        .flatten()
}

/// IPv4-mapped IPv6 sources (from dual-stack sockets) are their IPv4 address.
pub(super) fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => addr,
        },
        v4 => v4,
    }
}
