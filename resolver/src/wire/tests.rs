//! The wire format against hickory-proto, the reference encoder and decoder.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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
