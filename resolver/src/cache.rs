//! The answer cache of forwarded queries: upstream replies kept as bytes for their TTL.
//!
//! A hit costs a copy, an id patch, the asker's question case restored and the TTLs aged: no
//! decode. Docker's embedded DNS has no cache at all; this one is what makes a container's
//! repeated look-ups of the same external name cheap for the host's upstream.
//!
//! What any container can put in here is bounded: the key is the question in wire format
//! ([`wire::cache_key`]), so a name whose labels differ from another's cannot stand in for it;
//! the cache is bounded in bytes (and entries), replies above a size are not kept, and TTLs are
//! capped. An expired entry is kept a while longer to be served stale (RFC 8767) when every
//! upstream fails.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use dashmap::DashMap;

use crate::wire::{self, Request};

/// The bounds of the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    /// Bytes of replies, keys and bookkeeping together (0 disables the cache).
    pub max_bytes: usize,
    /// Entries, whatever their size.
    pub max_entries: usize,
    /// Larger replies are relayed but not kept.
    pub max_reply: usize,
    /// Longest a reply is kept fresh, whatever its TTL says, seconds.
    pub max_ttl: u32,
    /// How long past its expiry an entry may still be answered when every upstream fails,
    /// seconds (0: never serve stale).
    pub stale_for: u32,
}

/// The TTL of a stale answer (RFC 8767 §4 recommends 30 s).
pub const STALE_TTL: u32 = 30;

/// What an entry costs besides its key and reply: the map's slot, the entry's fields.
const ENTRY_OVERHEAD: usize = 96;

struct Entry {
    reply: Box<[u8]>,
    ttl_offsets: Box<[usize]>,
    lifetime: u32,
    stored: Instant,
    cost: usize,
}

/// Where an entry stands at a moment.
enum Age {
    /// Within its lifetime: seconds since it was stored.
    Fresh(u32),
    /// Expired, but within the stale window.
    Stale,
    /// Past the stale window too: to be dropped.
    Dead,
}

impl Entry {
    fn age(&self, now: Instant, stale_for: u32) -> Age {
        let age = now.duration_since(self.stored).as_secs();
        if age < u64::from(self.lifetime) {
            Age::Fresh(age as u32)
        } else if age < u64::from(self.lifetime) + u64::from(stale_for) {
            Age::Stale
        } else {
            Age::Dead
        }
    }
}

/// A byte-bounded TTL cache of upstream replies. Shared by reference (it lives in the
/// forwarder's shared state).
pub struct Cache {
    entries: DashMap<Box<[u8]>, Entry>,
    limits: CacheLimits,
    bytes: AtomicUsize,
    /// Held by the one thread making room; others insert over the bound meanwhile rather than
    /// wait (by at most a few entries).
    evicting: Mutex<()>,
    counts: CacheCounts,
}

/// What the cache did, for the metrics.
#[derive(Debug, Default)]
pub struct CacheCounts {
    /// Lookups answered with a fresh reply.
    pub hits: AtomicU64,
    /// Lookups that found nothing fresh.
    pub misses: AtomicU64,
    /// Entries dropped to make room (expired ones included, when making room found them).
    pub evictions: AtomicU64,
}

impl Cache {
    pub fn new(limits: CacheLimits) -> Self {
        Cache {
            entries: DashMap::new(),
            limits,
            bytes: AtomicUsize::new(0),
            evicting: Mutex::new(()),
            counts: CacheCounts::default(),
        }
    }

    fn enabled(&self) -> bool {
        self.limits.max_bytes > 0 && self.limits.max_entries > 0
    }

    /// Write the fresh cached reply to `req` (key `key`) into `out`, ready to send: the
    /// asker's id and question, TTLs aged. False on a miss (`out` then unspecified).
    pub fn get(&self, key: &[u8], req: &Request<'_>, out: &mut Vec<u8>) -> bool {
        if !self.enabled() {
            return false;
        }
        let fresh = self.entries.get(key).and_then(|e| {
            match e.age(Instant::now(), self.limits.stale_for) {
                Age::Fresh(age) => Some((e, age)),
                _ => None,
            }
        });
        let Some((e, age)) = fresh else {
            self.counts.misses.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        self.counts.hits.fetch_add(1, Ordering::Relaxed);
        out.clear();
        out.extend_from_slice(&e.reply);
        wire::age_ttls(out, &e.ttl_offsets, age);
        drop(e);
        wire::set_id(out, req.id);
        wire::restore_question(out, req);
        true
    }

    /// Write into `out` the reply to `req` kept past its expiry but within the stale window,
    /// every TTL [`STALE_TTL`] (or a reply still fresh, aged): what to answer when every
    /// upstream failed, instead of SERVFAIL. False when there is none.
    pub fn get_stale(&self, key: &[u8], req: &Request<'_>, out: &mut Vec<u8>) -> bool {
        if !self.enabled() || self.limits.stale_for == 0 {
            return false;
        }
        let Some(e) = self.entries.get(key) else {
            return false;
        };
        let age = e.age(Instant::now(), self.limits.stale_for);
        if let Age::Dead = age {
            return false;
        }
        out.clear();
        out.extend_from_slice(&e.reply);
        match age {
            Age::Fresh(age) => wire::age_ttls(out, &e.ttl_offsets, age),
            _ => wire::set_ttls(out, &e.ttl_offsets, STALE_TTL),
        }
        drop(e);
        wire::set_id(out, req.id);
        wire::restore_question(out, req);
        true
    }

    /// Keep `reply` (an upstream's answer to the question of `key`) if it is a complete
    /// NOERROR or NXDOMAIN answer with a lifetime, and not above the size bound.
    pub fn put(&self, key: &[u8], reply: &[u8]) {
        if !self.enabled() || reply.len() > self.limits.max_reply || wire::is_truncated(reply) {
            return;
        }
        if !matches!(wire::rcode_of(reply), Some(0) | Some(3)) {
            return;
        }
        let Some(layout) = wire::cache_layout(reply) else {
            return;
        };
        // RFC 2181 §8: a TTL with the top bit set means zero.
        let lifetime = if layout.lifetime > i32::MAX as u32 {
            0
        } else {
            layout.lifetime.min(self.limits.max_ttl)
        };
        if lifetime == 0 {
            return;
        }
        let cost = key.len() + reply.len() + layout.ttl_offsets.len() * 8 + ENTRY_OVERHEAD;
        if cost > self.limits.max_bytes {
            return;
        }
        if self.bytes.load(Ordering::Relaxed) + cost > self.limits.max_bytes
            || self.entries.len() >= self.limits.max_entries
        {
            self.make_room(cost);
        }
        // What we hand out never claims more than we keep it for: every TTL capped too.
        let mut reply: Box<[u8]> = reply.into();
        wire::cap_ttls(&mut reply, &layout.ttl_offsets, self.limits.max_ttl);
        let entry = Entry {
            reply,
            ttl_offsets: layout.ttl_offsets.into_boxed_slice(),
            lifetime,
            stored: Instant::now(),
            cost,
        };
        self.bytes.fetch_add(cost, Ordering::Relaxed);
        if let Some(old) = self.entries.insert(key.into(), entry) {
            self.bytes.fetch_sub(old.cost, Ordering::Relaxed);
        }
    }

    /// Bring the cache to 90 % of its bounds less `incoming`: drop dead entries, then stale
    /// ones, then live ones in map order (arbitrary, so no asker can choose what is evicted).
    fn make_room(&self, incoming: usize) {
        let Ok(_one) = self.evicting.try_lock() else {
            return;
        };
        let byte_goal = (self.limits.max_bytes / 10 * 9).saturating_sub(incoming);
        let entry_goal = (self.limits.max_entries / 10 * 9).min(self.limits.max_entries - 1);
        let now = Instant::now();
        let stale_for = self.limits.stale_for;
        let over =
            |c: &Cache| c.bytes.load(Ordering::Relaxed) > byte_goal || c.entries.len() > entry_goal;
        for pass in 0..3 {
            if !over(self) {
                return;
            }
            // `len` of the map cannot be asked inside `retain` (it holds a shard's lock).
            let mut remaining = self.entries.len();
            self.entries.retain(|_, e| {
                let drop = match (pass, e.age(now, stale_for)) {
                    (_, Age::Dead) | (1, Age::Stale) => true,
                    (2, _) => {
                        self.bytes.load(Ordering::Relaxed) > byte_goal || remaining > entry_goal
                    }
                    _ => false,
                };
                if drop {
                    self.bytes.fetch_sub(e.cost, Ordering::Relaxed);
                    self.counts.evictions.fetch_add(1, Ordering::Relaxed);
                    remaining -= 1;
                }
                !drop
            });
        }
    }

    /// Hits, misses and evictions so far.
    pub fn counts(&self) -> &CacheCounts {
        &self.counts
    }

    /// Number of cached replies.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// What the cached entries cost, bytes (the quantity [`CacheLimits::max_bytes`] bounds).
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Forget everything (upstreams changed).
    pub fn clear(&self) {
        self.entries.retain(|_, e| {
            self.bytes.fetch_sub(e.cost, Ordering::Relaxed);
            false
        });
    }
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("len", &self.entries.len())
            .field("bytes", &self.bytes())
            .field("limits", &self.limits)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    use super::*;

    fn query(id: u16, name: &str, t: RecordType) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = id;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        m.to_vec().unwrap()
    }

    /// An upstream's reply to `q`: `rcode`, one A record of `ttl` when NOERROR.
    fn reply(q: &[u8], rcode: ResponseCode, ttl: u32) -> Vec<u8> {
        let q = Message::from_vec(q).unwrap();
        let mut r = Message::response(q.metadata.id, q.metadata.op_code);
        r.metadata.message_type = MessageType::Response;
        r.metadata.response_code = rcode;
        r.add_query(q.queries[0].clone());
        if rcode == ResponseCode::NoError {
            r.add_answer(Record::from_rdata(
                q.queries[0].name().clone(),
                ttl,
                RData::A(A(Ipv4Addr::new(192, 0, 2, 9))),
            ));
        }
        r.to_vec().unwrap()
    }

    fn limits(max_bytes: usize) -> CacheLimits {
        CacheLimits {
            max_bytes,
            max_entries: 100_000,
            max_reply: 65_535,
            max_ttl: 86_400,
            stale_for: 3_600,
        }
    }

    fn put(cache: &Cache, q: &[u8], r: &[u8]) {
        let req = wire::parse(q).unwrap();
        cache.put(&wire::cache_key(&req), r);
    }

    fn get(cache: &Cache, q: &[u8]) -> Option<Vec<u8>> {
        let req = wire::parse(q).unwrap();
        let mut out = Vec::new();
        cache
            .get(&wire::cache_key(&req), &req, &mut out)
            .then_some(out)
    }

    #[test]
    fn a_hit_carries_the_askers_id_and_case() {
        let cache = Cache::new(limits(1 << 20));
        let q1 = query(1, "www.example.com.", RecordType::A);
        put(&cache, &q1, &reply(&q1, ResponseCode::NoError, 300));
        let q2 = query(7, "WWW.Example.com.", RecordType::A);
        let hit = get(&cache, &q2).expect("a hit");
        let m = Message::from_vec(&hit).unwrap();
        assert_eq!(m.metadata.id, 7);
        assert_eq!(m.queries[0].name().to_ascii(), "WWW.Example.com.");
        assert_eq!(m.answers.len(), 1);
        // Another type of the same name is another entry.
        let aaaa = query(8, "www.example.com.", RecordType::AAAA);
        assert!(get(&cache, &aaaa).is_none());
    }

    /// The labels `www2` + `bank.com` (a dot inside a label) are another name than
    /// `www2.bank.com`: an answer to one is never an answer to the other.
    #[test]
    fn a_name_with_a_dot_inside_a_label_is_another_key() {
        let cache = Cache::new(limits(1 << 20));
        let real = query(1, "www2.bank.com.", RecordType::A);
        let mut forged = real.clone();
        // 4 www2 4 bank 3 com 0  ->  4 www2 8 bank.com 0 (same length: one label less, a dot)
        let at = 12 + 5;
        forged.splice(
            at..at + 9,
            [8, b'b', b'a', b'n', b'k', b'.', b'c', b'o', b'm'],
        );
        put(&cache, &forged, &reply(&forged, ResponseCode::NoError, 300));
        assert_eq!(cache.len(), 1, "the forged name's answer is cached");
        assert!(
            get(&cache, &real).is_none(),
            "and answers only the forged name"
        );
        assert!(get(&cache, &forged).is_some());
    }

    #[test]
    fn only_complete_answers_with_a_lifetime_are_kept() {
        let cache = Cache::new(limits(1 << 20));
        let q = query(1, "a.example.", RecordType::A);
        put(&cache, &q, &reply(&q, ResponseCode::NoError, 0));
        put(&cache, &q, &reply(&q, ResponseCode::ServFail, 300));
        put(&cache, &q, &reply(&q, ResponseCode::Refused, 300));
        assert!(
            cache.is_empty(),
            "TTL 0, SERVFAIL and REFUSED are not cached"
        );
        let mut truncated = reply(&q, ResponseCode::NoError, 300);
        truncated[2] |= 0x02; // TC
        put(&cache, &q, &truncated);
        assert!(cache.is_empty(), "a truncated reply is not cached");
        let small = Cache::new(CacheLimits {
            max_reply: 20,
            ..limits(1 << 20)
        });
        put(&small, &q, &reply(&q, ResponseCode::NoError, 300));
        assert!(small.is_empty(), "a reply above max_reply is not cached");
        let off = Cache::new(limits(0));
        put(&off, &q, &reply(&q, ResponseCode::NoError, 300));
        assert!(get(&off, &q).is_none(), "0 bytes disables the cache");
    }

    #[test]
    fn the_cache_never_grows_past_its_bounds() {
        let cache = Cache::new(CacheLimits {
            max_entries: 50,
            ..limits(1 << 20)
        });
        for i in 0..500 {
            let q = query(1, &format!("n{i}.example."), RecordType::A);
            put(&cache, &q, &reply(&q, ResponseCode::NoError, 300));
            assert!(cache.len() <= 50, "{} entries", cache.len());
        }
        let budget = 20_000;
        let bytes = Cache::new(limits(budget));
        for i in 0..500 {
            let q = query(1, &format!("n{i}.example."), RecordType::A);
            put(&bytes, &q, &reply(&q, ResponseCode::NoError, 300));
            assert!(bytes.bytes() <= budget, "{} bytes", bytes.bytes());
        }
        assert!(
            bytes.len() > 50,
            "the budget is used: {} entries",
            bytes.len()
        );
        bytes.clear();
        assert!(bytes.is_empty());
        assert_eq!(bytes.bytes(), 0);
    }
}
