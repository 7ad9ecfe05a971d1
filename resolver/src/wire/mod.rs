//! The DNS wire format, kept apart from policy.
//!
//! Local answers never go through a full message decode/encode: a query is a 12-byte header, one
//! question and at most an OPT record, so [`parse`] walks exactly that, and the `write_*`
//! functions append answers after a verbatim copy of the question. Copying the question keeps the
//! asker's letter case (the reply must echo it) and lets every answer name be a 2-byte
//! compression pointer to offset 12. Everything here is allocation-free as long as the output
//! buffer has room; callers keep one buffer per worker.
//!
//! `query` reads a question; `answer` writes local answers; `relay` serves the forwarding path,
//! which relays upstream replies as bytes and only needs to check and patch a few fields.

mod answer;
mod query;
mod relay;
#[cfg(test)]
mod tests;

pub use answer::{write_addresses, write_empty, write_ptr, write_reject};
pub use query::{parse, reverse_name_addr};
pub use relay::{
    age_ttls, answers_question, cache_key, cache_layout, cap_ttls, is_truncated, rcode_of,
    response_matches, restore_question, set_id, set_ttls, write_truncated, write_upstream_query,
    CacheKey, CacheLayout,
};

/// Header flag bits (second 16-bit word of the header).
pub(super) const QR: u16 = 0x8000;
pub(super) const AA: u16 = 0x0400;
pub(super) const TC: u16 = 0x0200;
pub(super) const RD: u16 = 0x0100;
pub(super) const RA: u16 = 0x0080;
pub(super) const OPCODE_MASK: u16 = 0x7800;

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
pub(super) const OPT_LEN: usize = 11;

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

/// The transport a query came over: the reply must fit it (UDP's limit, or TCP's), and a TCP
/// asker's forwarded query goes upstream over TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    /// As the metrics' `transport` label says it.
    pub fn label(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
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

pub(super) fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

pub(super) fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
        *b.get(at + 2)?,
        *b.get(at + 3)?,
    ]))
}

/// Where a resource record's parts are.
pub(super) struct RecordSpan {
    pub(super) name_start: usize,
    pub(super) name_end: usize,
    pub(super) rtype: u16,
    pub(super) class: u16,
    pub(super) ttl_at: usize,
    pub(super) rdata_at: usize,
    pub(super) end: usize,
}

/// Skip a (possibly compressed) name; returns the offset after it. Pointers are not followed:
/// skipping only needs the length of the name in place, so pointer loops cannot hurt here.
pub(super) fn skip_name(bytes: &[u8], mut at: usize) -> Option<usize> {
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

pub(super) fn skip_record(bytes: &[u8], at: usize) -> Option<RecordSpan> {
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
