//! Local names through real sockets: what resolves, for whom, and how the answer looks.

mod common;

use std::collections::HashSet;
use std::net::{IpAddr, Ipv6Addr};

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};
use resolver::{EndpointSpec, NetworkSpec};

const ID_WEB: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const ID_CLIENT: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_hostnames_short_ids_aliases_and_network_suffix() {
    let b = block();
    let up = upstream(Behaviour::NxDomain).await;
    let s = server(&config(&[up.addr]));
    let gw = add_net(&s, &net_spec("n1", "front"), ip(b, 1)).await;
    let mut web = endpoint("n1", ID_WEB, "web", v4(b, 2));
    web.hostname = Some("web-host".into());
    web.aliases = vec!["db".into(), "MySQL".into()];
    s.table().upsert_endpoint(&web).unwrap();
    s.table()
        .upsert_endpoint(&endpoint("n1", ID_CLIENT, "client", v4(b, 3)))
        .unwrap();

    for name in [
        "web",
        "web.",
        "web-host",
        "0123456789ab",
        "db",
        "mysql",
        "web.front",
        "db.front.",
    ] {
        let m = ask(gw, ip(b, 3), name, RecordType::A).await;
        assert_eq!(rcode(&m), ResponseCode::NoError, "{name}");
        assert_eq!(a_records(&m), [v4(b, 2)], "{name}");
        assert!(m.metadata.recursion_available, "RA set");
    }
    // The answer echoes the question's case, for the question and the answer's owner name.
    let m = ask(gw, ip(b, 3), "WeB.FrOnT", RecordType::A).await;
    assert_eq!(m.queries[0].name().to_ascii(), "WeB.FrOnT.");
    assert_eq!(m.answers[0].name.to_ascii(), "WeB.FrOnT.");
    // Local names never reached the upstream.
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_are_per_container_and_resolved_at_query_time() {
    let b = block();
    let up = upstream(Behaviour::NxDomain).await;
    let s = server(&config(&[up.addr]));
    let gw = add_net(&s, &net_spec("n1", "front"), ip(b, 1)).await;
    let mut client = endpoint("n1", ID_CLIENT, "client", v4(b, 3));
    client.links = vec!["container1:c1".parse().unwrap()];
    s.table().upsert_endpoint(&client).unwrap();
    s.table()
        .upsert_endpoint(&endpoint("n1", "other0000000", "other", v4(b, 4)))
        .unwrap();

    // The target does not exist yet: no address, and the alias is not forwarded either.
    let m = ask(gw, ip(b, 3), "c1", RecordType::A).await;
    assert_eq!(rcode(&m), ResponseCode::NXDomain);
    assert_eq!(up.count(), 0);

    s.table()
        .upsert_endpoint(&endpoint("n1", "target000000", "container1", v4(b, 9)))
        .unwrap();
    let m = ask(gw, ip(b, 3), "c1", RecordType::A).await;
    assert_eq!(a_records(&m), [v4(b, 9)]);
    // Only the declaring container has the alias; the other one's question is forwarded.
    let m = ask(gw, ip(b, 4), "c1", RecordType::A).await;
    assert_eq!(rcode(&m), ResponseCode::NXDomain);
    assert_eq!(up.count(), 1);
    // Everybody on the network resolves the target by its own name.
    let m = ask(gw, ip(b, 4), "container1", RecordType::A).await;
    assert_eq!(a_records(&m), [v4(b, 9)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scope_never_leaks_across_networks() {
    let b = block();
    let up = upstream(Behaviour::NxDomain).await;
    let s = server(&config(&[up.addr]));
    let gw_a = add_net(&s, &net_spec("na", "alpha"), ip(b, 1)).await;
    let gw_b = add_net(&s, &net_spec("nb", "beta"), ip(b, 129)).await;
    let mut secret = endpoint("nb", "secret000000", "secret", v4(b, 130));
    secret.ipv6 = Some("fd00:b::2".parse().unwrap());
    s.table().upsert_endpoint(&secret).unwrap();
    s.table()
        .upsert_endpoint(&endpoint("na", "client000000", "client", v4(b, 2)))
        .unwrap();

    // A container on alpha asks either gateway: the scope is its own, never the listener's.
    for gw in [gw_a, gw_b] {
        for t in [RecordType::A, RecordType::AAAA] {
            let m = ask(gw, ip(b, 2), "secret", t).await;
            assert_eq!(rcode(&m), ResponseCode::NXDomain, "{t} via {gw}");
            assert!(m.answers.is_empty());
        }
        let m = ask(gw, ip(b, 2), "secret.beta", RecordType::A).await;
        assert_eq!(rcode(&m), ResponseCode::NXDomain);
        let rev = format!("130.{}.{}.{}.in-addr.arpa", b[2], b[1], b[0]);
        let m = ask(gw, ip(b, 2), &rev, RecordType::PTR).await;
        assert_eq!(rcode(&m), ResponseCode::NXDomain, "PTR does not leak");
    }
    // A name that exists on the host never leaves it.
    assert_eq!(up.count(), 0);
    // The beta container itself resolves it, and the PTR.
    let m = ask(gw_b, ip(b, 130), "secret", RecordType::AAAA).await;
    assert_eq!(aaaa_records(&m), ["fd00:b::2".parse::<Ipv6Addr>().unwrap()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_is_no_container_sees_the_listeners_network() {
    let b = block();
    let s = server(&config(&[]));
    let gw_a = add_net(&s, &net_spec("na", "alpha"), ip(b, 1)).await;
    let gw_b = add_net(&s, &net_spec("nb", "beta"), ip(b, 129)).await;
    s.table()
        .upsert_endpoint(&endpoint("na", "one000000000", "one", v4(b, 2)))
        .unwrap();
    s.table()
        .upsert_endpoint(&endpoint("nb", "two000000000", "two", v4(b, 130)))
        .unwrap();
    // The host asks from an address that is no container's.
    let host = ip(b, 250);
    assert_eq!(
        a_records(&ask(gw_a, host, "one", RecordType::A).await),
        [v4(b, 2)]
    );
    assert_eq!(
        rcode(&ask(gw_a, host, "two", RecordType::A).await),
        ResponseCode::NXDomain
    );
    assert_eq!(
        a_records(&ask(gw_b, host, "two", RecordType::A).await),
        [v4(b, 130)]
    );
    assert_eq!(
        rcode(&ask(gw_b, host, "one", RecordType::A).await),
        ResponseCode::NXDomain
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_network_in_connect_order_answers() {
    let b = block();
    let s = server(&config(&[]));
    let gw = add_net(&s, &net_spec("na", "alpha"), ip(b, 1)).await;
    s.table().add_network(&net_spec("nb", "beta")).unwrap();
    s.table()
        .upsert_endpoint(&endpoint("na", "db_a00000000", "db", v4(b, 10)))
        .unwrap();
    s.table()
        .upsert_endpoint(&endpoint("nb", "db_b00000000", "db", v4(b, 140)))
        .unwrap();
    // Connected to beta first, then alpha.
    s.table()
        .upsert_endpoint(&endpoint("nb", "client000000", "client", v4(b, 141)))
        .unwrap();
    s.table()
        .upsert_endpoint(&endpoint("na", "client000000", "client", v4(b, 11)))
        .unwrap();
    let m = ask(gw, ip(b, 11), "db", RecordType::A).await;
    assert_eq!(
        a_records(&m),
        [v4(b, 140)],
        "beta answers, results not merged"
    );
    let m = ask(gw, ip(b, 11), "db.alpha", RecordType::A).await;
    assert_eq!(a_records(&m), [v4(b, 10)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_on_the_wrong_interface_gets_no_container_names() {
    let b = block();
    let up = upstream(Behaviour::NxDomain).await;
    let s = server(&config(&[up.addr]));
    let lo = nix_ifindex("lo");
    // Network alpha's listener is bound to lo (its "bridge"); network beta's containers sit
    // behind another bridge. A query claiming a beta address but arriving on lo is spoofed.
    let alpha = NetworkSpec {
        bridge_ifindex: Some(lo),
        host_addresses: vec![],
        dns_servers: vec![],
        ..net_spec("na", "alpha")
    };
    let gw = add_net(&s, &alpha, ip(b, 1)).await;
    let beta = NetworkSpec {
        bridge_ifindex: Some(999_999),
        host_addresses: vec![],
        dns_servers: vec![],
        ..net_spec("nb", "beta")
    };
    s.table().add_network(&beta).unwrap();
    s.table()
        .upsert_endpoint(&endpoint("na", "web000000000", "web", v4(b, 2)))
        .unwrap();
    s.table()
        .upsert_endpoint(&endpoint("nb", "client000000", "client", v4(b, 3)))
        .unwrap();
    s.table()
        .upsert_endpoint(&endpoint("na", "client000000", "client", v4(b, 4)))
        .unwrap();
    let m = ask(gw, ip(b, 3), "web", RecordType::A).await;
    assert_eq!(rcode(&m), ResponseCode::NXDomain);
    assert!(m.answers.is_empty());
    let m = ask(gw, ip(b, 3), "example.com", RecordType::A).await;
    assert_eq!(rcode(&m), ResponseCode::NXDomain);
    assert_eq!(up.count(), 0, "an untrusted source is not forwarded either");
    // The same address behind the right interface (lo) is the container, and answered.
    s.table()
        .add_network(&NetworkSpec {
            bridge_ifindex: Some(lo),
            host_addresses: vec![],
            dns_servers: vec![],
            ..beta
        })
        .unwrap();
    assert_eq!(
        a_records(&ask(gw, ip(b, 3), "web", RecordType::A).await),
        [v4(b, 2)]
    );
}

fn nix_ifindex(name: &str) -> u32 {
    let path = format!("/sys/class/net/{name}/ifindex");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("no interface {name}: {e}"));
    text.trim().parse().expect("an interface index")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_address_shuffled_with_the_configured_ttl() {
    let b = block();
    let mut c = config(&[]);
    c.ttl = 42;
    let s = server(&c);
    let gw = add_net(&s, &net_spec("n1", "front"), ip(b, 1)).await;
    for i in 0..6u8 {
        let mut e = endpoint(
            "n1",
            &format!("worker{i:06}00"),
            &format!("w{i}"),
            v4(b, 10 + i),
        );
        e.aliases = vec!["pool".into()];
        e.ipv6 = Some(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 10 + i as u16));
        s.table().upsert_endpoint(&e).unwrap();
    }
    let want: HashSet<_> = (0..6u8).map(|i| v4(b, 10 + i)).collect();
    let mut orders = HashSet::new();
    for _ in 0..30 {
        let m = ask(gw, ip(b, 200), "pool", RecordType::A).await;
        let got = a_records(&m);
        assert_eq!(got.iter().copied().collect::<HashSet<_>>(), want);
        assert!(m.answers.iter().all(|r| r.ttl == 42));
        assert!(m.metadata.authoritative);
        orders.insert(got);
    }
    assert!(orders.len() > 1, "the order changes between replies");
    let m = ask(gw, ip(b, 200), "pool", RecordType::AAAA).await;
    assert_eq!(aaaa_records(&m).len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_names_get_nodata_for_other_families_and_types_without_forwarding() {
    let b = block();
    let up = upstream(Behaviour::Answer("192.0.2.1".parse().unwrap(), 60)).await;
    let s = server(&config(&[up.addr]));
    let gw = add_net(&s, &net_spec("n1", "front"), ip(b, 1)).await;
    s.table()
        .upsert_endpoint(&endpoint("n1", "web000000000", "web", v4(b, 2)))
        .unwrap();
    for t in [
        RecordType::AAAA,
        RecordType::MX,
        RecordType::TXT,
        RecordType::SRV,
        RecordType::HTTPS,
    ] {
        let m = ask(gw, ip(b, 250), "web", t).await;
        assert_eq!(rcode(&m), ResponseCode::NoError, "{t}");
        assert!(m.answers.is_empty(), "{t}");
    }
    assert_eq!(
        up.count(),
        0,
        "other types of a local name are not forwarded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ptr_names_the_container_and_its_network() {
    let b = block();
    let s = server(&config(&[]));
    let gw = add_net(&s, &net_spec("n1", "front"), ip(b, 1)).await;
    let v6: Ipv6Addr = "fd00:1::2".parse().unwrap();
    let mut web = endpoint("n1", "web000000000", "web", v4(b, 2));
    web.ipv6 = Some(v6);
    s.table().upsert_endpoint(&web).unwrap();
    let rev = format!("2.{}.{}.{}.in-addr.arpa", b[2], b[1], b[0]);
    let m = ask(gw, ip(b, 250), &rev, RecordType::PTR).await;
    match &m.answers[0].data {
        RData::PTR(p) => assert_eq!(p.0.to_ascii(), "web.front."),
        other => panic!("{other:?}"),
    }
    let mut rev6 = String::new();
    for o in v6.octets().iter().rev() {
        rev6.push_str(&format!("{:x}.{:x}.", o & 0xf, o >> 4));
    }
    rev6.push_str("ip6.arpa");
    let m = ask(gw, ip(b, 250), &rev6, RecordType::PTR).await;
    assert_eq!(m.answers.len(), 1);
    assert_eq!(m.answers[0].data.to_string(), "web.front.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_are_visible_to_the_very_next_query() {
    let b = block();
    let s = server(&config(&[]));
    let gw = add_net(&s, &net_spec("n1", "front"), ip(b, 1)).await;
    for round in 0..20u8 {
        let e = endpoint("n1", "flip00000000", "flip", v4(b, 2 + round));
        s.table().upsert_endpoint(&e).unwrap();
        assert_eq!(
            a_records(&ask(gw, ip(b, 250), "flip", RecordType::A).await),
            [v4(b, 2 + round)]
        );
        assert!(s.table().remove_endpoint("n1", "flip00000000"));
        // No upstream at all: a name we do not know is SERVFAIL, not the old address.
        let m = ask(gw, ip(b, 250), "flip", RecordType::A).await;
        assert!(m.answers.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_gateway_listener() {
    let s = server(&config(&[]));
    let gw = add_net(&s, &net_spec("n6", "six"), IpAddr::V6(Ipv6Addr::LOCALHOST)).await;
    let e = EndpointSpec {
        ipv6: Some("fd00:6::2".parse().unwrap()),
        ..endpoint("n6", "six000000000", "sixer", "10.66.0.2".parse().unwrap())
    };
    s.table().upsert_endpoint(&e).unwrap();
    let m = ask(
        gw,
        IpAddr::V6(Ipv6Addr::LOCALHOST),
        "sixer",
        RecordType::AAAA,
    )
    .await;
    assert_eq!(aaaa_records(&m), ["fd00:6::2".parse::<Ipv6Addr>().unwrap()]);
    let m = tcp_ask_v6(gw, "sixer").await;
    assert_eq!(
        a_records(&m),
        ["10.66.0.2".parse::<std::net::Ipv4Addr>().unwrap()]
    );
}

async fn tcp_ask_v6(gw: std::net::SocketAddr, name: &str) -> hickory_proto::op::Message {
    let mut st = tokio::net::TcpStream::connect(gw).await.unwrap();
    let q = question(name, RecordType::A);
    tcp_send(&mut st, &q).await;
    tcp_recv(&mut st).await.expect("reply")
}
