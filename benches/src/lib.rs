//! Shared pieces of the benchmarks: building a populated table, and queries for it.

use std::net::{IpAddr, Ipv4Addr};

pub use test_support::docker_engine;
pub mod kernel_floor;
pub mod namespaced;
pub mod netavark;
pub mod netns;

use resolver::{EndpointSpec, NetworkSpec, Table};

/// The address of container `i` in 10.0.0.0/8 (never sent to: in-process benchmarks only).
pub fn addr(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a00_0000 + 2 + i)
}

/// A table with one network "bench" and `n` containers `c0`..`c{n-1}` (plus a client
/// container `client` at 10.255.255.254).
pub fn populated(n: u32) -> Table {
    let t = Table::new();
    t.add_network(&NetworkSpec {
        id: "benchnet".into(),
        name: "bench".into(),
        internal: false,
        bridge_ifindex: None,
        host_addresses: vec![],
        dns_servers: vec![],
    })
    .unwrap();
    for i in 0..n {
        t.upsert_endpoint(&EndpointSpec {
            network_id: "benchnet".into(),
            // Hash-derived, as the records file's: the short ids (first 12 hex digits) must
            // differ, or every container shares one short-id name.
            container_id: resolver::records::derived_id("container", &format!("c{i}")),
            container_name: format!("c{i}"),
            hostname: Some(format!("c{i}")),
            aliases: vec![],
            links: vec![],
            ipv4: Some(addr(i)),
            ipv6: None,
        })
        .unwrap();
    }
    t.upsert_endpoint(&EndpointSpec {
        network_id: "benchnet".into(),
        container_id: "client".into(),
        container_name: "client".into(),
        hostname: None,
        aliases: vec![],
        links: vec![],
        ipv4: Some(Ipv4Addr::new(10, 255, 255, 254)),
        ipv6: None,
    })
    .unwrap();
    t
}

pub const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 255, 255, 254));

/// A wire-format A query for `name`.
pub fn query(name: &str) -> Vec<u8> {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType};
    let mut m = Message::query();
    m.metadata.id = 0x4242;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    m.to_vec().unwrap()
}
