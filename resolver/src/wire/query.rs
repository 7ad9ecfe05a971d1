//! Reading a query: the header, exactly one question, the OPT record if any; and the address a
//! reverse (PTR) name stands for.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;

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
