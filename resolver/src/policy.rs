//! Given an asker and a question, decide: local answer, NODATA, NXDOMAIN, or forward.
//!
//! Pure: no sockets, no time. The table is the only input besides the question, so every rule
//! of docs/behaviour.md §7 that is about *what* to answer is tested here without a server.

use std::net::IpAddr;

use smallvec::SmallVec;

use crate::table::{Asker, Found, Table};
use crate::wire::{self, Request};

/// What to do with a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Answer with these addresses (all of the asked family; the caller shuffles).
    Addresses(SmallVec<[IpAddr; 8]>),
    /// Answer a PTR with this `NAME.NETWORK`.
    Ptr(Box<str>),
    /// NOERROR without answers: the name is local but has no record of this type.
    NoData,
    /// NXDOMAIN from us: a local name out of the asker's scope, or a name an internal-only
    /// asker may not have forwarded.
    NxDomain,
    /// Not ours: ask upstream.
    Forward,
}

/// Decide what to answer `req` from `asker`.
pub fn decide(table: &Table, asker: &Asker, req: &Request<'_>) -> Decision {
    let not_local = || {
        if asker.may_forward() {
            Decision::Forward
        } else {
            Decision::NxDomain
        }
    };
    if req.qclass != wire::CLASS_IN || !req.name.is_plain() {
        // Reverse names have digits and dots only, so they are plain too; anything else that
        // is not plain cannot be a container's name.
        return not_local();
    }
    let name = req.name.as_bytes();
    if req.qtype == wire::TYPE_PTR {
        if let Some(addr) = wire::reverse_name_addr(name) {
            return match table.ptr(asker, addr) {
                Some(Some(target)) => Decision::Ptr(target),
                Some(None) => Decision::NxDomain,
                None => not_local(),
            };
        }
    }
    match table.lookup(asker, name) {
        Found::Here { v4, v6 } => {
            let addrs: SmallVec<[IpAddr; 8]> = match req.qtype {
                wire::TYPE_A => v4.into_iter().map(IpAddr::V4).collect(),
                wire::TYPE_AAAA => v6.into_iter().map(IpAddr::V6).collect(),
                _ => SmallVec::new(),
            };
            if addrs.is_empty() {
                Decision::NoData
            } else {
                Decision::Addresses(addrs)
            }
        }
        Found::Elsewhere => Decision::NxDomain,
        Found::Unknown => not_local(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{EndpointSpec, Link, NetworkSpec};
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType};
    use std::net::Ipv4Addr;

    fn q(name: &str, t: RecordType) -> Vec<u8> {
        let mut m = Message::query();
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        m.to_vec().unwrap()
    }

    fn setup() -> Table {
        let t = Table::new();
        for (id, name, internal) in [("n1", "front", false), ("n2", "back", true)] {
            t.add_network(&NetworkSpec {
                id: id.into(),
                name: name.into(),
                internal,
                bridge_ifindex: None,
            })
            .unwrap();
        }
        let ep = |net: &str, cid: &str, name: &str, ip: [u8; 4], links: Vec<Link>| EndpointSpec {
            network_id: net.into(),
            container_id: cid.into(),
            container_name: name.into(),
            hostname: Some(format!("{name}-host")),
            aliases: vec![format!("{name}-alias")],
            links,
            ipv4: Some(Ipv4Addr::from(ip)),
            ipv6: None,
        };
        t.upsert_endpoint(&ep("n1", "aaaaaaaaaaaaaaaa", "web", [10, 1, 0, 2], vec![]))
            .unwrap();
        t.upsert_endpoint(&ep(
            "n1",
            "bbbbbbbbbbbbbbbb",
            "client",
            [10, 1, 0, 3],
            vec!["web:w".parse().unwrap(), "later:l".parse().unwrap()],
        ))
        .unwrap();
        t.upsert_endpoint(&ep("n2", "cccccccccccccccc", "db", [10, 2, 0, 2], vec![]))
            .unwrap();
        t
    }

    fn decide_for(t: &Table, src: &str, name: &str, ty: RecordType) -> Decision {
        let bytes = q(name, ty);
        let req = wire::parse(&bytes).unwrap();
        let asker = t.asker(src.parse().unwrap(), None, t.network_key("n1").unwrap());
        decide(t, &asker, &req)
    }

    fn one(ip: [u8; 4]) -> Decision {
        Decision::Addresses([IpAddr::V4(Ipv4Addr::from(ip))].into_iter().collect())
    }

    #[test]
    fn names_hostnames_aliases_short_ids() {
        let t = setup();
        for name in [
            "web",
            "WEB.",
            "web-host",
            "web-alias",
            "aaaaaaaaaaaa",
            "web.front",
        ] {
            assert_eq!(
                decide_for(&t, "10.1.0.3", name, RecordType::A),
                one([10, 1, 0, 2]),
                "{name}"
            );
        }
        assert_eq!(
            decide_for(&t, "10.1.0.3", "web", RecordType::AAAA),
            Decision::NoData
        );
        assert_eq!(
            decide_for(&t, "10.1.0.3", "web", RecordType::MX),
            Decision::NoData
        );
    }

    #[test]
    fn links_only_for_declaring_container() {
        let t = setup();
        assert_eq!(
            decide_for(&t, "10.1.0.3", "w", RecordType::A),
            one([10, 1, 0, 2])
        );
        assert_eq!(
            decide_for(&t, "10.1.0.2", "w", RecordType::A),
            Decision::Forward
        );
        // Target not there yet: a local name, so never forwarded.
        assert_eq!(
            decide_for(&t, "10.1.0.3", "l", RecordType::A),
            Decision::NxDomain
        );
    }

    #[test]
    fn no_leak_across_networks() {
        let t = setup();
        assert_eq!(
            decide_for(&t, "10.1.0.3", "db", RecordType::A),
            Decision::NxDomain
        );
        assert_eq!(
            decide_for(&t, "10.1.0.3", "2.0.2.10.in-addr.arpa", RecordType::PTR),
            Decision::NxDomain
        );
        assert_eq!(
            decide_for(&t, "10.1.0.3", "2.0.1.10.in-addr.arpa", RecordType::PTR),
            Decision::Ptr("web.front".into())
        );
        assert_eq!(
            decide_for(&t, "10.1.0.3", "example.com", RecordType::A),
            Decision::Forward
        );
    }

    #[test]
    fn internal_only_askers_get_no_forwarding() {
        let t = setup();
        assert_eq!(
            decide_for(&t, "10.2.0.2", "example.com", RecordType::A),
            Decision::NxDomain
        );
        assert_eq!(
            decide_for(&t, "10.2.0.2", "db", RecordType::A),
            one([10, 2, 0, 2])
        );
    }
}
