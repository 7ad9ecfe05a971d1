//! The answer cache of forwarded queries: upstream replies kept as bytes for their TTL.
//!
//! A hit costs a copy, an id patch, the asker's question case restored and the TTLs aged: no
//! decode. Docker's embedded DNS has no cache at all; this one is what makes a container's
//! repeated look-ups of the same external name cheap for the host's upstream.

use std::time::Instant;

use dashmap::DashMap;

use crate::wire::{self, CacheLayout, Request};

/// What makes two questions the same for the cache.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    name: Box<[u8]>,
    qtype: u16,
    qclass: u16,
    /// Replies to EDNS queries carry an OPT record; plain ones must not.
    edns: bool,
    dnssec_ok: bool,
}

impl Key {
    fn of(req: &Request<'_>) -> Key {
        Key {
            name: req.name.as_bytes().into(),
            qtype: req.qtype,
            qclass: req.qclass,
            edns: req.edns.is_some(),
            dnssec_ok: req.edns.is_some_and(|e| e.dnssec_ok),
        }
    }
}

struct Entry {
    reply: Box<[u8]>,
    layout: CacheLayout,
    stored: Instant,
}

impl Entry {
    fn age(&self, now: Instant) -> Option<u32> {
        let age = now.duration_since(self.stored).as_secs();
        (age < u64::from(self.layout.lifetime)).then_some(age as u32)
    }
}

/// Longest we keep anything, whatever its TTL says.
const MAX_LIFETIME: u32 = 86_400;

/// A bounded TTL cache of upstream replies.
pub struct Cache {
    entries: DashMap<Key, Entry>,
    capacity: usize,
}

impl Cache {
    pub fn new(capacity: usize) -> Self {
        Cache {
            entries: DashMap::new(),
            capacity,
        }
    }

    /// The cached reply to `req`, ready to send: the asker's id and question, TTLs aged.
    pub fn get(&self, req: &Request<'_>) -> Option<Vec<u8>> {
        if self.capacity == 0 {
            return None;
        }
        let key = Key::of(req);
        let now = Instant::now();
        let (mut reply, offsets, age) = {
            let e = self.entries.get(&key)?;
            match e.age(now) {
                Some(age) => (e.reply.to_vec(), e.layout.ttl_offsets.clone(), age),
                None => {
                    drop(e);
                    self.entries.remove_if(&key, |_, e| e.age(now).is_none());
                    return None;
                }
            }
        };
        wire::set_id(&mut reply, req.id);
        wire::restore_question(&mut reply, req);
        wire::age_ttls(&mut reply, &offsets, age);
        Some(reply)
    }

    /// Keep `reply` (an upstream's answer to `req`) if it is a complete NOERROR or NXDOMAIN
    /// answer with a lifetime.
    pub fn put(&self, req: &Request<'_>, reply: &[u8]) {
        if self.capacity == 0 || wire::is_truncated(reply) {
            return;
        }
        if !matches!(wire::rcode_of(reply), Some(0) | Some(3)) {
            return;
        }
        let Some(mut layout) = wire::cache_layout(reply) else {
            return;
        };
        if layout.lifetime == 0 {
            return;
        }
        layout.lifetime = layout.lifetime.min(MAX_LIFETIME);
        if self.entries.len() >= self.capacity {
            let now = Instant::now();
            self.entries.retain(|_, e| e.age(now).is_some());
            if self.entries.len() >= self.capacity {
                // Still full of live entries: drop an arbitrary tenth rather than grow.
                let victims: Vec<Key> = self
                    .entries
                    .iter()
                    .take(self.capacity / 10 + 1)
                    .map(|e| e.key().clone())
                    .collect();
                for k in victims {
                    self.entries.remove(&k);
                }
            }
        }
        self.entries.insert(
            Key::of(req),
            Entry {
                reply: reply.into(),
                layout,
                stored: Instant::now(),
            },
        );
    }

    /// Number of cached replies.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Forget everything (upstreams changed).
    pub fn clear(&self) {
        self.entries.clear();
    }
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("len", &self.entries.len())
            .field("capacity", &self.capacity)
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

    #[test]
    fn a_hit_carries_the_askers_id_and_case() {
        let cache = Cache::new(100);
        let q1 = query(1, "www.example.com.", RecordType::A);
        cache.put(
            &wire::parse(&q1).unwrap(),
            &reply(&q1, ResponseCode::NoError, 300),
        );
        let q2 = query(7, "WWW.Example.com.", RecordType::A);
        let hit = cache.get(&wire::parse(&q2).unwrap()).expect("a hit");
        let m = Message::from_vec(&hit).unwrap();
        assert_eq!(m.metadata.id, 7);
        assert_eq!(m.queries[0].name().to_ascii(), "WWW.Example.com.");
        assert_eq!(m.answers.len(), 1);
        // Another type of the same name is another entry.
        let aaaa = query(8, "www.example.com.", RecordType::AAAA);
        assert!(cache.get(&wire::parse(&aaaa).unwrap()).is_none());
    }

    #[test]
    fn only_complete_answers_with_a_lifetime_are_kept() {
        let cache = Cache::new(100);
        let q = query(1, "a.example.", RecordType::A);
        let req = wire::parse(&q).unwrap();
        cache.put(&req, &reply(&q, ResponseCode::NoError, 0));
        cache.put(&req, &reply(&q, ResponseCode::ServFail, 300));
        cache.put(&req, &reply(&q, ResponseCode::Refused, 300));
        assert!(
            cache.is_empty(),
            "TTL 0, SERVFAIL and REFUSED are not cached"
        );
        let mut truncated = reply(&q, ResponseCode::NoError, 300);
        truncated[2] |= 0x02; // TC
        cache.put(&req, &truncated);
        assert!(cache.is_empty(), "a truncated reply is not cached");
        let off = Cache::new(0);
        off.put(&req, &reply(&q, ResponseCode::NoError, 300));
        assert!(off.get(&req).is_none(), "capacity 0 disables the cache");
    }

    #[test]
    fn the_cache_never_grows_past_its_capacity() {
        let cache = Cache::new(50);
        for i in 0..500 {
            let q = query(1, &format!("n{i}.example."), RecordType::A);
            cache.put(
                &wire::parse(&q).unwrap(),
                &reply(&q, ResponseCode::NoError, 300),
            );
            assert!(cache.len() <= 50, "{} entries", cache.len());
        }
        cache.clear();
        assert!(cache.is_empty());
    }
}
