//! Forwarding helpers: relayed replies stay bytes; we only check and patch them.

use super::answer::{finish, put_reply_head};
use super::*;

/// The response code of a message (low 4 bits; extended codes are relayed as they are).
pub fn rcode_of(msg: &[u8]) -> Option<u8> {
    msg.get(3).map(|b| b & 0x0F)
}

/// Whether a message has the TC bit.
pub fn is_truncated(msg: &[u8]) -> bool {
    msg.get(2).is_some_and(|b| b & (TC >> 8) as u8 != 0)
}

/// Overwrite the message id.
pub fn set_id(msg: &mut [u8], id: u16) {
    if msg.len() >= 2 {
        msg[..2].copy_from_slice(&id.to_be_bytes());
    }
}

/// True when `reply` is a response with id `id` to exactly the question in `req`
/// (name compared without regard to case, as resolvers using 0x20 randomisation do).
pub fn response_matches(reply: &[u8], id: u16, req: &Request<'_>) -> bool {
    answers_question(reply, id, req.question_bytes())
}

/// Copy the asker's question bytes over the reply's (same name up to case, so same length),
/// so the reply echoes the asker's case.
pub fn restore_question(reply: &mut [u8], req: &Request<'_>) {
    let q = req.question_bytes();
    if let Some(rq) = reply.get_mut(12..12 + q.len()) {
        rq.copy_from_slice(q);
    }
}

/// A header-and-question-only copy of `req`'s reply with TC set: what a relayed answer becomes
/// when it is larger than the asker accepts over UDP.
pub fn write_truncated(out: &mut Vec<u8>, req: &Request<'_>, rcode: u8) {
    put_reply_head(out, req, Rcode::NoError, 0, true);
    out[3] = (out[3] & 0xF0) | (rcode & 0x0F);
    finish(out, req);
}

/// What the answer cache needs of an upstream reply: where each TTL is, and how long the reply
/// may be kept (the smallest TTL; for a negative answer the SOA's TTL and MINIMUM, RFC 2308).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheLayout {
    pub ttl_offsets: Vec<usize>,
    pub lifetime: u32,
}

/// Walk a reply's records. `None` when the reply is malformed or has nothing to bound its
/// lifetime (a negative answer without SOA is not cached).
pub fn cache_layout(msg: &[u8]) -> Option<CacheLayout> {
    let qd = be16(msg, 4)?;
    let counts = [be16(msg, 6)?, be16(msg, 8)?, be16(msg, 10)?];
    let mut at = 12;
    for _ in 0..qd {
        at = skip_name(msg, at)? + 4;
    }
    let mut offsets = Vec::new();
    let mut lifetime: Option<u32> = None;
    let mut min = |v: u32| lifetime = Some(lifetime.map_or(v, |l| l.min(v)));
    for (section, &count) in counts.iter().enumerate() {
        for _ in 0..count {
            let rr = skip_record(msg, at)?;
            if rr.rtype != TYPE_OPT {
                let ttl = be32(msg, rr.ttl_at)?;
                offsets.push(rr.ttl_at);
                if section == 0 {
                    min(ttl);
                } else if section == 1 && rr.rtype == TYPE_SOA {
                    min(ttl);
                    if rr.end >= rr.rdata_at + 4 {
                        min(be32(msg, rr.end - 4)?);
                    }
                }
            }
            at = rr.end;
        }
    }
    Some(CacheLayout {
        ttl_offsets: offsets,
        lifetime: lifetime?,
    })
}

/// Lower every TTL at `offsets` by `elapsed` seconds (not below zero).
pub fn age_ttls(msg: &mut [u8], offsets: &[usize], elapsed: u32) {
    for &o in offsets {
        if let Some(t) = be32(msg, o) {
            msg[o..o + 4].copy_from_slice(&t.saturating_sub(elapsed).to_be_bytes());
        }
    }
}

/// The query we send upstream for `req`, with id `id`: header, the asker's question as asked,
/// and our own OPT record when the asker used EDNS (its UDP size ours, its DO bit kept). Only
/// RD and CD of the asker's flags go along. Whatever else the asker packed in (records in the
/// answer or authority sections, EDNS options) stays here: the upstream query is at most
/// 12 + 259 + 11 bytes, which bounds what a queued query costs, and the cache key (see
/// [`cache_key`]) describes exactly what was asked.
pub fn write_upstream_query(out: &mut Vec<u8>, req: &Request<'_>, id: u16) {
    out.clear();
    out.extend_from_slice(&id.to_be_bytes());
    out.push(req.bytes[2] & (RD >> 8) as u8);
    out.push(req.bytes[3] & CD_BIT);
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(req.edns.is_some())]);
    out.extend_from_slice(req.question_bytes());
    if let Some(e) = req.edns {
        out.push(0);
        out.extend_from_slice(&TYPE_OPT.to_be_bytes());
        out.extend_from_slice(&OUR_UDP_SIZE.to_be_bytes());
        out.extend_from_slice(&[0, 0, if e.dnssec_ok { 0x80 } else { 0 }, 0, 0, 0]);
    }
}

/// The CD (checking disabled) bit, in the fourth header byte.
const CD_BIT: u8 = 0x10;

/// A cache key, on the stack for a lookup (the longest question is 259 bytes).
pub type CacheKey = smallvec::SmallVec<[u8; 264]>;

/// What makes two questions the same answer, as bytes: the question in wire format with the
/// name's letters lower-cased (labels stay labels: `www2` + `bank.com`, one label holding a
/// dot, is not `www2.bank.com`), then type and class, then one byte of the flags that change
/// an upstream's answer (EDNS present, DO, CD).
pub fn cache_key(req: &Request<'_>) -> CacheKey {
    let q = req.question_bytes();
    let name_len = q.len() - 4;
    let mut key = CacheKey::new();
    key.extend(q[..name_len].iter().map(u8::to_ascii_lowercase));
    key.extend_from_slice(&q[name_len..]);
    let edns = req.edns.is_some();
    let dnssec_ok = req.edns.is_some_and(|e| e.dnssec_ok);
    let cd = req.bytes[3] & CD_BIT != 0;
    key.push(u8::from(edns) | u8::from(dnssec_ok) << 1 | u8::from(cd) << 2);
    key
}

/// True when `reply` is a response with id `id` to the question `question` (name, type,
/// class as the query carried them; the name compared without regard to case).
pub fn answers_question(reply: &[u8], id: u16, question: &[u8]) -> bool {
    let Some(flags) = be16(reply, 2) else {
        return false;
    };
    if be16(reply, 0) != Some(id) || flags & QR == 0 || be16(reply, 4) != Some(1) {
        return false;
    }
    let name_len = question.len().saturating_sub(4);
    match reply.get(12..12 + question.len()) {
        Some(rq) => {
            rq[..name_len].eq_ignore_ascii_case(&question[..name_len])
                && rq[name_len..] == question[name_len..]
        }
        None => false,
    }
}

/// Set every TTL at `offsets` to `ttl`: a stale answer (RFC 8767) goes out with a short one.
pub fn set_ttls(msg: &mut [u8], offsets: &[usize], ttl: u32) {
    for &o in offsets {
        if let Some(slot) = msg.get_mut(o..o + 4) {
            slot.copy_from_slice(&ttl.to_be_bytes());
        }
    }
}

/// Lower every TTL at `offsets` to at most `max`; a TTL with the top bit set becomes 0
/// (RFC 2181 §8).
pub fn cap_ttls(msg: &mut [u8], offsets: &[usize], max: u32) {
    for &o in offsets {
        if let Some(t) = be32(msg, o) {
            let capped = if t > i32::MAX as u32 { 0 } else { t.min(max) };
            msg[o..o + 4].copy_from_slice(&capped.to_be_bytes());
        }
    }
}
