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
    let Some(flags) = be16(reply, 2) else {
        return false;
    };
    if be16(reply, 0) != Some(id) || flags & QR == 0 || be16(reply, 4) != Some(1) {
        return false;
    }
    let q = req.question_bytes();
    match reply.get(12..12 + q.len()) {
        Some(rq) => rq.eq_ignore_ascii_case(q),
        None => false,
    }
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
