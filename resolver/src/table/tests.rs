//! The table's own tests: scope, clashes, hash collisions.

use super::*;

fn net(t: &Table, id: &str, name: &str) -> NetKey {
    t.add_network(&NetworkSpec {
        id: id.into(),
        name: name.into(),
        internal: false,
        bridge_ifindex: None,
        host_addresses: vec![],
        dns_servers: vec![],
    })
    .unwrap()
}

fn ep(net: &str, id: &str, name: &str, v4: [u8; 4]) -> EndpointSpec {
    EndpointSpec {
        network_id: net.into(),
        container_id: id.into(),
        container_name: name.into(),
        hostname: None,
        aliases: vec![],
        links: vec![],
        ipv4: Some(Ipv4Addr::from(v4)),
        ipv6: None,
    }
}

fn v4s(f: Found) -> Vec<Ipv4Addr> {
    match f {
        Found::Here { v4, .. } => v4.to_vec(),
        other => panic!("expected addresses, got {other:?}"),
    }
}

#[test]
fn scope_and_order() {
    let t = Table::new();
    let a = net(&t, "na", "alpha");
    let _b = net(&t, "nb", "beta");
    t.upsert_endpoint(&ep("na", "c1aaaaaaaaaaaa", "web", [10, 0, 0, 2]))
        .unwrap();
    t.upsert_endpoint(&ep("nb", "c2bbbbbbbbbbbb", "web", [10, 1, 0, 2]))
        .unwrap();
    t.upsert_endpoint(&ep("nb", "c3cccccccccccc", "client", [10, 1, 0, 3]))
        .unwrap();
    t.upsert_endpoint(&ep("na", "c3cccccccccccc", "client", [10, 0, 0, 3]))
        .unwrap();
    // client joined beta first: beta's web answers.
    let asker = t.asker("10.0.0.3".parse().unwrap(), None, a);
    assert_eq!(v4s(t.lookup(&asker, b"web")), [Ipv4Addr::new(10, 1, 0, 2)]);
    assert_eq!(
        v4s(t.lookup(&asker, b"web.alpha")),
        [Ipv4Addr::new(10, 0, 0, 2)]
    );
    // web on alpha sees only alpha.
    let asker = t.asker("10.0.0.2".parse().unwrap(), None, a);
    assert_eq!(t.lookup(&asker, b"nothing"), Found::Unknown);
    assert_eq!(
        v4s(t.lookup(&asker, b"c1aaaaaaaaaa")),
        [Ipv4Addr::new(10, 0, 0, 2)]
    );
    assert!(t.remove_endpoint("na", "c3cccccccccccc"));
    assert_eq!(t.lookup(&asker, b"client"), Found::Elsewhere);
    t.remove_network("nb");
    assert_eq!(t.lookup(&asker, b"client"), Found::Unknown);
    assert_eq!(t.endpoint_count(), 1);
}

#[test]
fn address_clash_changes_nothing() {
    let t = Table::new();
    net(&t, "na", "alpha");
    t.upsert_endpoint(&ep("na", "c1", "one", [10, 0, 0, 2]))
        .unwrap();
    let err = t
        .upsert_endpoint(&ep("na", "c2", "two", [10, 0, 0, 2]))
        .unwrap_err();
    assert!(matches!(err, TableError::AddressTaken(..)));
    assert_eq!(t.endpoint_count(), 1);
    assert_eq!(t.name_count(), 1);
}

/// The scenarios above on a table where every name and id has the same hash: answers
/// must come from the records, not from the hash.
#[test]
fn collisions_never_change_an_answer() {
    let t = Table::colliding();
    let a = net(&t, "na", "alpha");
    net(&t, "nb", "beta");
    let hex = |c: char| std::iter::repeat_n(c, 64).collect::<String>();
    t.upsert_endpoint(&ep("na", &hex('a'), "web", [10, 0, 0, 2]))
        .unwrap();
    t.upsert_endpoint(&ep("na", &hex('b'), "db", [10, 0, 0, 3]))
        .unwrap();
    t.upsert_endpoint(&ep("nb", &hex('c'), "cache", [10, 1, 0, 2]))
        .unwrap();
    let mut aliased = ep("na", "client-id", "Client", [10, 0, 0, 4]);
    aliased.aliases = vec!["front".into()];
    t.upsert_endpoint(&aliased).unwrap();
    let asker = t.asker("10.0.0.4".parse().unwrap(), None, a);
    assert_eq!(v4s(t.lookup(&asker, b"web")), [Ipv4Addr::new(10, 0, 0, 2)]);
    assert_eq!(v4s(t.lookup(&asker, b"db")), [Ipv4Addr::new(10, 0, 0, 3)]);
    assert_eq!(
        v4s(t.lookup(&asker, b"aaaaaaaaaaaa")),
        [Ipv4Addr::new(10, 0, 0, 2)]
    );
    assert_eq!(
        v4s(t.lookup(&asker, b"front")),
        [Ipv4Addr::new(10, 0, 0, 4)]
    );
    assert_eq!(t.lookup(&asker, b"cache"), Found::Elsewhere);
    assert_eq!(t.lookup(&asker, b"nothing"), Found::Unknown);
    assert_eq!(t.lookup(&asker, b"web.beta"), Found::Unknown);
    assert_eq!(
        v4s(t.lookup(&asker, b"db.alpha")),
        [Ipv4Addr::new(10, 0, 0, 3)]
    );
    assert_eq!(
        t.ptr(&asker, "10.0.0.4".parse().unwrap()),
        Some(Some("Client.alpha".into()))
    );
    // Ids are told apart by value, and removing one leaves the others whole.
    assert!(t.has_endpoint(&ep("na", &hex('b'), "db", [10, 0, 0, 3])));
    assert!(!t.has_endpoint(&ep("na", &hex('d'), "db", [10, 0, 0, 3])));
    assert!(t.remove_endpoint("na", &hex('a')));
    assert!(!t.remove_endpoint("na", &hex('a')));
    assert_eq!(t.lookup(&asker, b"web"), Found::Unknown);
    assert_eq!(v4s(t.lookup(&asker, b"db")), [Ipv4Addr::new(10, 0, 0, 3)]);
    let mut keys = t.endpoint_keys();
    keys.sort();
    assert_eq!(
        keys,
        [
            ("na".to_string(), hex('b')),
            ("na".to_string(), "client-id".to_string()),
            ("nb".to_string(), hex('c')),
        ]
    );
}

/// One address on two networks (two bridges): the bridge a query arrives on says which
/// container asks; one arriving elsewhere is untrusted.
#[test]
fn shared_address_is_told_apart_by_bridge() {
    let t = Table::new();
    for (id, name, ifindex) in [("na", "alpha", 10), ("nb", "beta", 20)] {
        t.add_network(&NetworkSpec {
            id: id.into(),
            name: name.into(),
            internal: false,
            bridge_ifindex: Some(ifindex),
            host_addresses: vec![],
            dns_servers: vec![],
        })
        .unwrap();
    }
    t.upsert_endpoint(&ep("na", "c1", "one", [10, 0, 0, 2]))
        .unwrap();
    t.upsert_endpoint(&ep("nb", "c2", "two", [10, 0, 0, 2]))
        .unwrap();
    t.upsert_endpoint(&ep("na", "c3", "three", [10, 0, 0, 3]))
        .unwrap();
    let src = "10.0.0.2".parse().unwrap();
    let on_alpha = t.asker(src, Some(10), 0);
    assert_eq!(
        v4s(t.lookup(&on_alpha, b"three")),
        [Ipv4Addr::new(10, 0, 0, 3)]
    );
    let on_beta = t.asker(src, Some(20), 0);
    assert_eq!(t.lookup(&on_beta, b"three"), Found::Elsewhere);
    assert!(t.asker(src, Some(30), 0).untrusted);
    // The other holder stays the source when one goes.
    assert!(t.remove_endpoint("nb", "c2"));
    assert!(!t.asker(src, Some(10), 0).untrusted);
    assert!(t.asker(src, Some(20), 0).untrusted);
}

#[test]
fn ids_round_trip() {
    for id in [
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
        "short",
        "",
    ] {
        assert_eq!(ContainerId::new(id).to_string(), id);
    }
    assert!(matches!(
        ContainerId::new(&"f".repeat(64)),
        ContainerId::Hex(_)
    ));
}

#[test]
fn links_parse() {
    assert_eq!(
        "c1:alias".parse::<Link>().unwrap(),
        Link {
            target: "c1".into(),
            alias: "alias".into()
        }
    );
    assert_eq!("c1".parse::<Link>().unwrap().alias, "c1");
    assert!("a:b:c".parse::<Link>().is_err());
    assert!(":b".parse::<Link>().is_err());
}
