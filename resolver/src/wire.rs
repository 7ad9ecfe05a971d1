//! The DNS wire format, kept apart from policy.
//!
//! Local answers never go through a full message decode/encode: a query is a 12-byte header, one
//! question and at most an OPT record, so [`parse`] walks exactly that, and the `write_*`
//! functions append answers after a verbatim copy of the question. Copying the question keeps the
//! asker's letter case (the reply must echo it) and lets every answer name be a 2-byte
//! compression pointer to offset 12. Everything here is allocation-free as long as the output
//! buffer has room; callers keep one buffer per worker.
//!
//! The functions at the end (`response_*`, `cache_layout`) serve the forwarding path, which
//! relays upstream replies as bytes and only needs to check and patch a few fields.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Header flag bits (second 16-bit word of the header).
const QR: u16 = 0x8000;
const AA: u16 = 0x0400;
const TC: u16 = 0x0200;
const RD: u16 = 0x0100;
const RA: u16 = 0x0080;
const OPCODE_MASK: u16 = 0x7800;

pub const TYPE_A: u16 = 1;
pub const TYPE_SOA: u16 = 6;
pub const TYPE_PTR: u16 = 12;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_OPT: u16 = 41;
pub const CLASS_IN: u16 = 1;

/// Response codes we produce ourselves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Rcode {
    NoError = 0,
    FormErr = 1,
    ServFail = 2,
    NxDomain = 3,
    NotImp = 4,
    Refused = 5,
}

/// The UDP payload size we advertise in our own OPT records (the DNS flag day 2020 value).
pub const OUR_UDP_SIZE: u16 = 1232;
/// Plain DNS over UDP without EDNS (RFC 1035 §4.2.1).
pub const CLASSIC_UDP_LIMIT: usize = 512;
/// Largest reply over TCP (the 2-byte length prefix).
pub const TCP_LIMIT: usize = 65535;
/// Longest name on the wire (RFC 1035 §3.1), including the root label.
pub const MAX_NAME_WIRE: usize = 255;

/// Size of an OPT record without options.
const OPT_LEN: usize = 11;

/// EDNS(0) information taken from a query's OPT record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edns {
    pub udp_size: u16,
    pub dnssec_ok: bool,
}

/// The question name, lower-cased, as dotted text without the trailing dot (the root is "").
///
/// Fixed-size so parsing a query allocates nothing.
#[derive(Clone)]
pub struct QName {
    buf: [u8; MAX_NAME_WIRE],
    len: u8,
    /// False when a label holds a byte that cannot appear in a container name (a dot inside a
    /// label, a space, a control byte): such names are never local, only forwarded.
    plain: bool,
}

impl QName {
    /// The lower-cased dotted name.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }

    /// True when every byte is one a local name could have.
    pub fn is_plain(&self) -> bool {
        self.plain
    }
}

impl std::fmt::Debug for QName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// A query as far as answering it needs.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub bytes: &'a [u8],
    pub id: u16,
    /// Offset just past the question (QNAME, QTYPE, QCLASS).
    pub question_end: usize,
    pub qtype: u16,
    pub qclass: u16,
    pub name: QName,
    pub edns: Option<Edns>,
}

impl Request<'_> {
    /// The recursion-desired bit, copied into every reply.
    fn rd(&self) -> u16 {
        u16::from_be_bytes([self.bytes[2], self.bytes[3]]) & RD
    }

    /// The question exactly as the asker sent it (name in its case, type, class).
    pub fn question_bytes(&self) -> &[u8] {
        &self.bytes[12..self.question_end]
    }

    /// The largest UDP reply this asker accepts: 512 bytes, or its EDNS size (RFC 6891 §6.2.5),
    /// never more than we advertise ourselves accepting on TCP.
    pub fn udp_limit(&self) -> usize {
        match self.edns {
            Some(e) => (e.udp_size as usize).clamp(CLASSIC_UDP_LIMIT, 4096),
            None => CLASSIC_UDP_LIMIT,
        }
    }
}

/// Why a packet cannot be answered normally, and what to do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Not worth a reply: too short to carry an id, or itself a response (answering responses
    /// invites reflection loops).
    Drop,
    /// Malformed: reply FORMERR with the header only.
    FormErr,
    /// An opcode other than QUERY: reply NOTIMP.
    NotImp,
    /// EDNS version other than 0: reply BADVERS (RFC 6891 §6.1.3).
    BadVers,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
        *b.get(at + 2)?,
        *b.get(at + 3)?,
    ]))
}

/// Parse a query: header, exactly one question, and the OPT record if any.
pub fn parse(bytes: &[u8]) -> Result<Request<'_>, Reject> {
    if bytes.len() < 12 {
        return Err(Reject::Drop);
    }
    let id = be16(bytes, 0).ok_or(Reject::Drop)?;
    let flags = be16(bytes, 2).ok_or(Reject::Drop)?;
    if flags & QR != 0 {
        return Err(Reject::Drop);
    }
    if flags & OPCODE_MASK != 0 {
        return Err(Reject::NotImp);
    }
    let qdcount = be16(bytes, 4).unwrap_or(0);
    let ancount = be16(bytes, 6).unwrap_or(0);
    let nscount = be16(bytes, 8).unwrap_or(0);
    let arcount = be16(bytes, 10).unwrap_or(0);
    if qdcount != 1 {
        return Err(Reject::FormErr);
    }
    let (name, mut at) = read_qname(bytes, 12).ok_or(Reject::FormErr)?;
    let qtype = be16(bytes, at).ok_or(Reject::FormErr)?;
    let qclass = be16(bytes, at + 2).ok_or(Reject::FormErr)?;
    at += 4;
    let question_end = at;
    for _ in 0..(ancount as usize + nscount as usize) {
        at = skip_record(bytes, at).ok_or(Reject::FormErr)?.end;
    }
    let mut edns = None;
    for _ in 0..arcount {
        let rr = skip_record(bytes, at).ok_or(Reject::FormErr)?;
        if rr.rtype == TYPE_OPT {
            // RFC 6891 §6.1.1: exactly one OPT, owned by the root.
            if edns.is_some() || rr.name_start + 1 != rr.name_end || bytes[rr.name_start] != 0 {
                return Err(Reject::FormErr);
            }
            let version = bytes[rr.ttl_at + 1];
            if version != 0 {
                return Err(Reject::BadVers);
            }
            let flags = be16(bytes, rr.ttl_at + 2).ok_or(Reject::FormErr)?;
            edns = Some(Edns {
                udp_size: rr.class.max(CLASSIC_UDP_LIMIT as u16),
                dnssec_ok: flags & 0x8000 != 0,
            });
        }
        at = rr.end;
    }
    Ok(Request {
        bytes,
        id,
        question_end,
        qtype,
        qclass,
        name,
        edns,
    })
}

/// Read the question name at `at`: plain labels only (a compression pointer cannot appear in
/// the first name of a message). Returns the name and the offset after it.
fn read_qname(bytes: &[u8], mut at: usize) -> Option<(QName, usize)> {
    let mut name = QName {
        buf: [0; MAX_NAME_WIRE],
        len: 0,
        plain: true,
    };
    let mut wire_len = 0usize;
    let mut out = 0usize;
    loop {
        let len = *bytes.get(at)? as usize;
        at += 1;
        wire_len += 1 + len;
        if wire_len > MAX_NAME_WIRE {
            return None;
        }
        if len == 0 {
            break;
        }
        if len & 0xC0 != 0 {
            return None;
        }
        let label = bytes.get(at..at + len)?;
        if out != 0 {
            name.buf[out] = b'.';
            out += 1;
        }
        for &c in label {
            let c = c.to_ascii_lowercase();
            if !(c.is_ascii_alphanumeric() || c == b'-' || c == b'_') {
                name.plain = false;
            }
            name.buf[out] = c;
            out += 1;
        }
        at += len;
    }
    name.len = out as u8;
    Some((name, at))
}

/// Where a resource record's parts are.
struct RecordSpan {
    name_start: usize,
    name_end: usize,
    rtype: u16,
    class: u16,
    ttl_at: usize,
    rdata_at: usize,
    end: usize,
}

/// Skip a (possibly compressed) name; returns the offset after it. Pointers are not followed:
/// skipping only needs the length of the name in place, so pointer loops cannot hurt here.
fn skip_name(bytes: &[u8], mut at: usize) -> Option<usize> {
    let mut wire_len = 0usize;
    loop {
        let len = *bytes.get(at)? as usize;
        match len & 0xC0 {
            0x00 => {
                at += 1;
                wire_len += 1 + len;
                if wire_len > MAX_NAME_WIRE {
                    return None;
                }
                if len == 0 {
                    return Some(at);
                }
                bytes.get(at..at + len)?;
                at += len;
            }
            0xC0 => {
                bytes.get(at + 1)?;
                return Some(at + 2);
            }
            _ => return None,
        }
    }
}

fn skip_record(bytes: &[u8], at: usize) -> Option<RecordSpan> {
    let name_end = skip_name(bytes, at)?;
    let rtype = be16(bytes, name_end)?;
    let class = be16(bytes, name_end + 2)?;
    let ttl_at = name_end + 4;
    be32(bytes, ttl_at)?;
    let rdlen = be16(bytes, name_end + 8)? as usize;
    let rdata_at = name_end + 10;
    let end = rdata_at + rdlen;
    if end > bytes.len() {
        return None;
    }
    Some(RecordSpan {
        name_start: at,
        name_end,
        rtype,
        class,
        ttl_at,
        rdata_at,
        end,
    })
}

fn put16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_opt(out: &mut Vec<u8>, ext_rcode: u8) {
    out.push(0);
    put16(out, TYPE_OPT);
    put16(out, OUR_UDP_SIZE);
    out.extend_from_slice(&[ext_rcode, 0, 0, 0]);
    put16(out, 0);
}

/// Header + the question as asked. Counts: one question, `ancount` answers, and an OPT record
/// when the query had one.
fn put_reply_head(out: &mut Vec<u8>, req: &Request<'_>, rcode: Rcode, ancount: u16, tc: bool) {
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

fn finish(out: &mut Vec<u8>, req: &Request<'_>) {
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
fn set_aa(out: &mut [u8]) {
    out[2] |= (AA >> 8) as u8;
}

/// How many records of `rr_len` bytes fit in `limit` after what is already in `out`, leaving
/// room for the OPT record.
fn fitting(out: &[u8], req: &Request<'_>, limit: usize, rr_len: usize, wanted: usize) -> usize {
    let reserved = out.len() + if req.edns.is_some() { OPT_LEN } else { 0 };
    let room = limit.saturating_sub(reserved);
    (room / rr_len).min(wanted)
}

fn patch_counts(out: &mut [u8], ancount: usize, tc: bool) {
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

/// The address a reverse name (`d.c.b.a.in-addr.arpa`, 32 nibbles `.ip6.arpa`) stands for.
pub fn reverse_name_addr(name: &[u8]) -> Option<IpAddr> {
    let name = std::str::from_utf8(name).ok()?;
    if let Some(rest) = name.strip_suffix(".in-addr.arpa") {
        let mut octets = [0u8; 4];
        let mut parts = rest.split('.');
        for i in (0..4).rev() {
            let p = parts.next()?;
            if p.is_empty() || p.len() > 3 || (p.len() > 1 && p.starts_with('0')) {
                return None;
            }
            octets[i] = p.parse().ok()?;
        }
        if parts.next().is_some() {
            return None;
        }
        return Some(IpAddr::V4(Ipv4Addr::from(octets)));
    }
    if let Some(rest) = name.strip_suffix(".ip6.arpa") {
        let mut bytes = [0u8; 16];
        let mut count = 0;
        for (i, p) in rest.split('.').enumerate() {
            if i >= 32 || p.len() != 1 {
                return None;
            }
            let nibble = u8::from_str_radix(p, 16).ok()?;
            let pos = 31 - i;
            bytes[pos / 2] |= if pos % 2 == 0 { nibble << 4 } else { nibble };
            count += 1;
        }
        if count != 32 {
            return None;
        }
        return Some(IpAddr::V6(Ipv6Addr::from(bytes)));
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Forwarding helpers: relayed replies stay bytes; we only check and patch them.

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

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Edns as HEdns, Message, Query};
    use hickory_proto::rr::{Name, RecordType};

    fn query(name: &str, rtype: RecordType, edns: Option<u16>) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 0x1234;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
        if let Some(size) = edns {
            let mut e = HEdns::new();
            e.set_max_payload(size);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    #[test]
    fn parses_question_lowercased_and_keeps_bytes() {
        let q = query("Web.Front.", RecordType::A, None);
        let r = parse(&q).unwrap();
        assert_eq!(r.name.as_bytes(), b"web.front");
        assert_eq!(r.qtype, TYPE_A);
        assert!(r.edns.is_none());
        assert_eq!(&r.question_bytes()[..4], b"\x03Web");
    }

    #[test]
    fn parses_edns_and_limits() {
        let q = query("a.", RecordType::AAAA, Some(4000));
        let r = parse(&q).unwrap();
        assert_eq!(r.edns.unwrap().udp_size, 4000);
        assert_eq!(r.udp_limit(), 4000);
    }

    #[test]
    fn answers_decode_with_hickory() {
        let q = query("DB.", RecordType::A, Some(1232));
        let r = parse(&q).unwrap();
        let mut out = Vec::new();
        let addrs = [
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3)),
        ];
        write_addresses(&mut out, &r, &addrs, 600, r.udp_limit());
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(m.metadata.id, 0x1234);
        assert!(m.metadata.recursion_available);
        assert_eq!(m.answers.len(), 2);
        assert_eq!(m.answers[0].name.to_ascii(), "DB.");
        assert_eq!(m.answers[0].ttl, 600);
        assert!(m.edns.is_some());
    }

    #[test]
    fn truncates_to_512_without_edns() {
        let q = query("many.", RecordType::A, None);
        let r = parse(&q).unwrap();
        let addrs: Vec<IpAddr> = (0..100u8)
            .map(|i| IpAddr::V4(Ipv4Addr::new(10, 0, 1, i)))
            .collect();
        let mut out = Vec::new();
        write_addresses(&mut out, &r, &addrs, 600, r.udp_limit());
        assert!(out.len() <= 512);
        let m = Message::from_vec(&out).unwrap();
        assert!(m.metadata.truncation);
        assert!(!m.answers.is_empty() && m.answers.len() < 100);
    }

    #[test]
    fn rejects() {
        assert_eq!(parse(&[0u8; 5]).unwrap_err(), Reject::Drop);
        let mut q = query("a.", RecordType::A, None);
        q[2] |= 0x80;
        assert_eq!(parse(&q).unwrap_err(), Reject::Drop);
        let mut q = query("a.", RecordType::A, None);
        q[2] |= 0x28; // opcode 5 (UPDATE)
        assert_eq!(parse(&q).unwrap_err(), Reject::NotImp);
        let mut q = query("a.", RecordType::A, None);
        q[5] = 2;
        assert_eq!(parse(&q).unwrap_err(), Reject::FormErr);
        // compression pointer in the question
        let mut q = query("a.", RecordType::A, None);
        q[12] = 0xC0;
        q[13] = 0x0C;
        assert_eq!(parse(&q).unwrap_err(), Reject::FormErr);
    }

    #[test]
    fn reverse_names() {
        assert_eq!(
            reverse_name_addr(b"4.3.2.10.in-addr.arpa"),
            Some("10.2.3.4".parse().unwrap())
        );
        let v6: Ipv6Addr = "fd00::1:2".parse().unwrap();
        let mut rev = String::new();
        for b in v6.octets().iter().rev() {
            rev.push_str(&format!("{:x}.{:x}.", b & 0xF, b >> 4));
        }
        rev.push_str("ip6.arpa");
        assert_eq!(reverse_name_addr(rev.as_bytes()), Some(IpAddr::V6(v6)));
        assert_eq!(reverse_name_addr(b"1.2.3.in-addr.arpa"), None);
        assert_eq!(reverse_name_addr(b"256.1.2.3.in-addr.arpa"), None);
    }

    #[test]
    fn ptr_answer() {
        let q = query("2.0.0.10.in-addr.arpa.", RecordType::PTR, None);
        let r = parse(&q).unwrap();
        let mut out = Vec::new();
        write_ptr(&mut out, &r, "web.front", 600, 512);
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].data.to_string(), "web.front.");
    }
}
