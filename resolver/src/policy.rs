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

/// The names Docker (`host.docker.internal`) and Podman (`host.containers.internal`) give the
/// host, in any case, with or without the final dot.
pub const HOST_NAMES: [&str; 2] = ["host.docker.internal", "host.containers.internal"];

fn is_host_name(name: &[u8]) -> bool {
    let name = name.strip_suffix(b".").unwrap_or(name);
    HOST_NAMES
        .iter()
        .any(|h| h.as_bytes().eq_ignore_ascii_case(name))
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
    if !asker.untrusted && is_host_name(name) {
        // As /etc/hosts would have it: the host first, whatever a container is called.
        let found = table.host_addresses(asker.listener);
        if !found.is_empty() {
            let addrs: SmallVec<[IpAddr; 8]> = found
                .into_iter()
                .filter(|a| match req.qtype {
                    wire::TYPE_A => a.is_ipv4(),
                    wire::TYPE_AAAA => a.is_ipv6(),
                    _ => false,
                })
                .collect();
            return if addrs.is_empty() {
                Decision::NoData
            } else {
                Decision::Addresses(addrs)
            };
        }
    }
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
        let host: Vec<IpAddr> = vec!["10.1.0.1".parse().unwrap(), "fd01::1".parse().unwrap()];
        for (id, name, internal, host) in
            [("n1", "front", false, host), ("n2", "back", true, vec![])]
        {
            t.add_network(&NetworkSpec {
                id: id.into(),
                name: name.into(),
                internal,
                bridge_ifindex: None,
                host_addresses: host,
                dns_servers: vec![],
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
        decide_on(t, "n1", src, name, ty)
    }

    fn decide_on(t: &Table, net: &str, src: &str, name: &str, ty: RecordType) -> Decision {
        let bytes = q(name, ty);
        let req = wire::parse(&bytes).unwrap();
        let asker = t.asker(src.parse().unwrap(), None, t.network_key(net).unwrap());
        decide(t, &asker, &req)
    }

    #[test]
    fn host_names_answer_the_listeners_host_addresses() {
        let t = setup();
        for name in ["host.docker.internal", "HOST.Containers.Internal."] {
            assert_eq!(
                decide_for(&t, "10.1.0.2", name, RecordType::A),
                one([10, 1, 0, 1])
            );
            assert_eq!(
                decide_for(&t, "10.9.9.9", name, RecordType::AAAA),
                Decision::Addresses(["fd01::1".parse().unwrap()].into_iter().collect())
            );
            assert_eq!(
                decide_for(&t, "10.1.0.2", name, RecordType::MX),
                Decision::NoData
            );
        }
        // Not on a network without host addresses (names off there): an internal-only
        // asker gets NXDOMAIN as for any name not local.
        assert_eq!(
            decide_on(&t, "n2", "10.9.9.9", "host.docker.internal", RecordType::A),
            Decision::NxDomain
        );
        // Only those names: a lookalike is forwarded.
        assert_eq!(
            decide_for(&t, "10.1.0.2", "host.docker.internal.evil", RecordType::A),
            Decision::Forward
        );
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
