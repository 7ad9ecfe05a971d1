//! Writing local answers after a verbatim copy of the question: every answer name is a 2-byte
//! pointer to offset 12, counts patched and TC set when the asker's limit cuts the answers.

use std::net::IpAddr;

use super::*;

pub(super) fn put16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub(super) fn put_opt(out: &mut Vec<u8>, ext_rcode: u8) {
    out.push(0);
    put16(out, TYPE_OPT);
    put16(out, OUR_UDP_SIZE);
    out.extend_from_slice(&[ext_rcode, 0, 0, 0]);
    put16(out, 0);
}

/// Header + the question as asked. Counts: one question, `ancount` answers, and an OPT record
/// when the query had one.
pub(super) fn put_reply_head(
    out: &mut Vec<u8>,
    req: &Request<'_>,
    rcode: Rcode,
    ancount: u16,
    tc: bool,
) {
    out.clear();
    put16(out, req.id);
    let mut flags = QR | RA | req.rd() | rcode as u16;
    if tc {
        flags |= TC;
    }
    put16(out, flags);
    put16(out, 1);
    put16(out, ancount);
    put16(out, 0);
    put16(out, u16::from(req.edns.is_some()));
    out.extend_from_slice(req.question_bytes());
}

pub(super) fn finish(out: &mut Vec<u8>, req: &Request<'_>) {
    if req.edns.is_some() {
        put_opt(out, 0);
    }
}

/// A reply with no answers: NODATA (NOERROR), NXDOMAIN, SERVFAIL, REFUSED.
pub fn write_empty(out: &mut Vec<u8>, req: &Request<'_>, rcode: Rcode) {
    put_reply_head(out, req, rcode, 0, false);
    finish(out, req);
}

/// Set the AA bit: local names are ours to be authoritative for.
pub(super) fn set_aa(out: &mut [u8]) {
    out[2] |= (AA >> 8) as u8;
}

/// How many records of `rr_len` bytes fit in `limit` after what is already in `out`, leaving
/// room for the OPT record.
pub(super) fn fitting(
    out: &[u8],
    req: &Request<'_>,
    limit: usize,
    rr_len: usize,
    wanted: usize,
) -> usize {
    let reserved = out.len() + if req.edns.is_some() { OPT_LEN } else { 0 };
    let room = limit.saturating_sub(reserved);
    (room / rr_len).min(wanted)
}

pub(super) fn patch_counts(out: &mut [u8], ancount: usize, tc: bool) {
    out[6..8].copy_from_slice(&(ancount as u16).to_be_bytes());
    if tc {
        out[2] |= (TC >> 8) as u8;
    }
}

/// A/AAAA answers for the asked name, in the order given (the caller shuffles). Records that do
/// not fit in `limit` are left out and TC is set, so the asker retries over TCP.
pub fn write_addresses(
    out: &mut Vec<u8>,
    req: &Request<'_>,
    addrs: &[IpAddr],
    ttl: u32,
    limit: usize,
) {
    put_reply_head(out, req, Rcode::NoError, 0, false);
    set_aa(out);
    let rr_len = |a: &IpAddr| if a.is_ipv4() { 16 } else { 28 };
    let per = addrs.first().map(rr_len).unwrap_or(16);
    let n = fitting(out, req, limit, per, addrs.len());
    for a in &addrs[..n] {
        out.extend_from_slice(&[0xC0, 0x0C]);
        match a {
            IpAddr::V4(v4) => {
                put16(out, TYPE_A);
                put16(out, CLASS_IN);
                out.extend_from_slice(&ttl.to_be_bytes());
                put16(out, 4);
                out.extend_from_slice(&v4.octets());
            }
            IpAddr::V6(v6) => {
                put16(out, TYPE_AAAA);
                put16(out, CLASS_IN);
                out.extend_from_slice(&ttl.to_be_bytes());
                put16(out, 16);
                out.extend_from_slice(&v6.octets());
            }
        }
    }
    patch_counts(out, n, n < addrs.len());
    finish(out, req);
}

/// A PTR answer naming `target` (dotted text without the trailing dot).
pub fn write_ptr(out: &mut Vec<u8>, req: &Request<'_>, target: &str, ttl: u32, limit: usize) {
    put_reply_head(out, req, Rcode::NoError, 0, false);
    set_aa(out);
    let start = out.len();
    out.extend_from_slice(&[0xC0, 0x0C]);
    put16(out, TYPE_PTR);
    put16(out, CLASS_IN);
    out.extend_from_slice(&ttl.to_be_bytes());
    let rdlen_at = out.len();
    put16(out, 0);
    let rdata_start = out.len();
    for label in target.split('.').filter(|l| !l.is_empty()) {
        let label = &label.as_bytes()[..label.len().min(63)];
        out.push(label.len() as u8);
        out.extend_from_slice(label);
    }
    out.push(0);
    let rdlen = (out.len() - rdata_start) as u16;
    out[rdlen_at..rdlen_at + 2].copy_from_slice(&rdlen.to_be_bytes());
    let rr_len = out.len() - start;
    if fitting(&out[..start], req, limit, rr_len, 1) == 0 {
        out.truncate(start);
        patch_counts(out, 0, true);
    } else {
        patch_counts(out, 1, false);
    }
    finish(out, req);
}

/// The reply to a packet [`parse`] rejected (header only, plus OPT for BADVERS). `None` when
/// the packet deserves no reply.
pub fn write_reject(out: &mut Vec<u8>, bytes: &[u8], reject: Reject) -> Option<()> {
    let rcode = match reject {
        Reject::Drop => return None,
        Reject::FormErr => Rcode::FormErr as u16,
        Reject::NotImp => Rcode::NotImp as u16,
        Reject::BadVers => 0,
    };
    let id = be16(bytes, 0)?;
    let flags = be16(bytes, 2)?;
    out.clear();
    put16(out, id);
    put16(out, QR | RA | (flags & (OPCODE_MASK | RD)) | rcode);
    put16(out, 0);
    put16(out, 0);
    put16(out, 0);
    if reject == Reject::BadVers {
        put16(out, 1);
        // BADVERS is extended rcode 16: upper 8 bits (1) in the OPT TTL field.
        put_opt(out, 1);
    } else {
        put16(out, 0);
    }
    Some(())
}
