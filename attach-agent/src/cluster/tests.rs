//! The cluster logic against the in-process store (same contract as etcd): the multi-host
//! tests run the same paths against a real three-member etcd cluster.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use super::layout::{EndpointRecord, NetworkRecord};
use super::memory::MemoryStore;
use super::*;
use crate::ids::{ContainerId, EndpointId, NetworkId};
use crate::ipam::Pool;

fn n(tag: &str) -> NetworkId {
    NetworkId::for_test(tag)
}

fn e(tag: &str) -> EndpointId {
    EndpointId::for_test(tag)
}

fn record(id: &str, name: &str) -> NetworkRecord {
    NetworkRecord {
        id: n(id),
        name: name.into(),
        created: String::new(),
        driver: crate::driver::Driver::Overlay,
        internal: false,
        attachable: true,
        labels: Default::default(),
        options: Default::default(),
        vni: 0,
        v4: Pool::new("10.9.0.0/24".parse().unwrap(), None, None).unwrap(),
        v6: None,
    }
}

fn endpoint(net: &str, ep: &str, host: IpAddr, last: u8) -> EndpointRecord {
    EndpointRecord {
        network_id: n(net),
        endpoint_id: e(ep),
        container_id: ContainerId::for_test(&format!("c-{ep}")),
        container_name: format!("name-{ep}"),
        hostname: ep.into(),
        aliases: vec![],
        v4: std::net::Ipv4Addr::new(10, 9, 0, last),
        v6: None,
        mac: [2, 0x42, 10, 9, 0, last],
        host,
    }
}

/// `rec` with its address claimed by its host first, as every real publish is (a record whose
/// address is not claimed for it is not believed).
async fn claimed(c: &Cluster, rec: EndpointRecord) -> EndpointRecord {
    c.claim(&rec.network_id, IpAddr::V4(rec.v4), &rec.endpoint_id)
        .await
        .unwrap();
    rec
}

async fn two_hosts(ttl: Duration) -> (MemoryStore, Cluster, Cluster) {
    let store = MemoryStore::new();
    let shared: Arc<dyn ClusterStore> = Arc::new(store.clone());
    let a = Cluster::join(shared.clone(), "192.0.2.1".parse().unwrap(), ttl)
        .await
        .unwrap();
    let b = Cluster::join(shared, "192.0.2.2".parse().unwrap(), ttl)
        .await
        .unwrap();
    (store, a, b)
}

#[tokio::test]
async fn a_name_and_a_vni_are_taken_once() {
    let (_s, a, b) = two_hosts(Duration::from_secs(10)).await;
    let one = a
        .create_network(record("n1", "web"))
        .await
        .unwrap()
        .unwrap();
    let two = b.create_network(record("n2", "db")).await.unwrap().unwrap();
    assert_eq!(one.vni, FIRST_VNI);
    assert_eq!(two.vni, FIRST_VNI + 1);
    assert!(b
        .create_network(record("n3", "web"))
        .await
        .unwrap()
        .is_none());
    let view = a.load().await.unwrap();
    assert_eq!(view.networks.len(), 2);
    // Removed: name and VNI free again.
    assert!(a.remove_network(&one).await.unwrap());
    let again = b
        .create_network(record("n4", "web"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.vni, FIRST_VNI);
}

#[tokio::test]
async fn concurrent_claims_never_share_an_address() {
    let (_s, a, b) = two_hosts(Duration::from_secs(10)).await;
    a.create_network(record("n1", "web")).await.unwrap();
    // Both hosts walk the same candidates at the same time, as two agents with the same
    // mirror would: every address ends up with exactly one holder.
    let walk = |c: Cluster, tag: &'static str| async move {
        let mut got = Vec::new();
        for i in 0..40 {
            for last in 2..=254u8 {
                let ip: IpAddr = std::net::Ipv4Addr::new(10, 9, 0, last).into();
                match c
                    .claim(&n("n1"), ip, &e(&format!("{tag}{i}")))
                    .await
                    .unwrap()
                {
                    Claimed::Ours => {
                        got.push(ip);
                        break;
                    }
                    Claimed::Taken => continue,
                    Claimed::NoNetwork => panic!("network vanished"),
                }
            }
        }
        got
    };
    let (x, y) = tokio::join!(walk(a.clone(), "a"), walk(b.clone(), "b"));
    let all: BTreeSet<IpAddr> = x.iter().chain(&y).copied().collect();
    assert_eq!(all.len(), 80, "distinct addresses");
    // A claim is idempotent for its holder, refused to others, released only by its holder.
    let ip = x[0];
    assert_eq!(
        a.claim(&n("n1"), ip, &e("a0")).await.unwrap(),
        Claimed::Ours
    );
    assert_eq!(
        b.claim(&n("n1"), ip, &e("b99")).await.unwrap(),
        Claimed::Taken
    );
    b.release(&n("n1"), ip, &e("b99")).await.unwrap();
    assert_eq!(
        b.claim(&n("n1"), ip, &e("b99")).await.unwrap(),
        Claimed::Taken
    );
    a.release(&n("n1"), ip, &e("a0")).await.unwrap();
    assert_eq!(
        b.claim(&n("n1"), ip, &e("b99")).await.unwrap(),
        Claimed::Ours
    );
    assert_eq!(
        a.claim(&n("nope"), ip, &e("a1")).await.unwrap(),
        Claimed::NoNetwork
    );
}

#[tokio::test]
async fn a_claim_publishes_its_endpoint_only_when_it_wins() {
    let (_s, a, b) = two_hosts(Duration::from_secs(10)).await;
    a.create_network(record("n1", "web")).await.unwrap();
    let ip: IpAddr = "10.9.0.2".parse().unwrap();
    let ea = endpoint("n1", "ea", a.host(), 2);
    let eb = endpoint("n1", "eb", b.host(), 2);
    assert_eq!(
        a.claim_and_publish(&n("n1"), ip, &e("ea"), Some(&ea))
            .await
            .unwrap(),
        Claimed::Ours
    );
    assert_eq!(
        b.claim_and_publish(&n("n1"), ip, &e("eb"), Some(&eb))
            .await
            .unwrap(),
        Claimed::Taken
    );
    let view = a.load().await.unwrap();
    let eps: Vec<&EndpointId> = view.endpoints.keys().map(|(_, e)| e).collect();
    assert_eq!(eps, vec![&e("ea")], "the loser published nothing");
}

#[tokio::test]
async fn a_network_with_endpoints_stays() {
    let (_s, a, b) = two_hosts(Duration::from_secs(10)).await;
    let net = a
        .create_network(record("n1", "web"))
        .await
        .unwrap()
        .unwrap();
    assert!(b
        .publish(&claimed(&b, endpoint("n1", "e1", b.host(), 2)).await)
        .await
        .unwrap());
    assert!(!a.remove_network(&net).await.unwrap());
    b.withdraw(&n("n1"), &e("e1")).await.unwrap();
    assert!(a.remove_network(&net).await.unwrap());
    // Publishing on a network that is gone fails.
    assert!(!b
        .publish(&claimed(&b, endpoint("n1", "e2", b.host(), 3)).await)
        .await
        .unwrap());
}

#[tokio::test]
async fn a_dead_host_loses_only_its_endpoints() {
    let (_s, a, b) = two_hosts(Duration::from_millis(300)).await;
    a.create_network(record("n1", "web")).await.unwrap();
    assert!(a
        .publish(&claimed(&a, endpoint("n1", "ea", a.host(), 2)).await)
        .await
        .unwrap());
    assert!(b
        .publish(&claimed(&b, endpoint("n1", "eb", b.host(), 3)).await)
        .await
        .unwrap());
    // `a` keeps its lease alive, `b` stops (it "died").
    b.halt();
    tokio::time::sleep(Duration::from_millis(900)).await;
    let view = a.load().await.unwrap();
    let left: Vec<&EndpointId> = view.endpoints.keys().map(|(_, e)| e).collect();
    assert_eq!(left, vec![&e("ea")]);
}

#[tokio::test]
async fn a_lost_lease_is_replaced_and_the_owner_told() {
    let (store, a, _b) = two_hosts(Duration::from_millis(300)).await;
    let old = a.lease();
    let mut changes = a.lease_changes();
    store.revoke(old).await.unwrap();
    tokio::time::timeout(Duration::from_secs(2), changes.changed())
        .await
        .expect("told of the new lease")
        .unwrap();
    assert_ne!(a.lease(), old);
}

#[tokio::test]
async fn a_publish_on_a_lost_lease_takes_a_new_one() {
    let (store, a, _b) = two_hosts(Duration::from_secs(10)).await;
    a.create_network(record("n1", "web")).await.unwrap();
    let old = a.lease();
    let changes = a.lease_changes();
    store.revoke(old).await.unwrap();
    assert!(a
        .publish(&claimed(&a, endpoint("n1", "e1", a.host(), 2)).await)
        .await
        .unwrap());
    assert_ne!(a.lease(), old);
    assert!(
        changes.has_changed().unwrap(),
        "the owner is told to publish the rest"
    );
    let view = a.load().await.unwrap();
    assert!(view.endpoints.contains_key(&(n("n1"), e("e1"))));
}

#[tokio::test]
async fn a_watch_resumes_from_a_revision_and_reports_compaction() {
    let (store, a, b) = two_hosts(Duration::from_secs(10)).await;
    a.create_network(record("n1", "web")).await.unwrap();
    let mut view = a.load().await.unwrap();
    let mut w = a.watch(view.revision).await.unwrap();
    assert!(b
        .publish(&claimed(&b, endpoint("n1", "e1", b.host(), 2)).await)
        .await
        .unwrap());
    // The claim, then the record: two batches.
    let mut batch = w.next().await.unwrap().unwrap();
    for _ in 0..2 {
        for c in &batch.changes {
            view.apply(c).unwrap();
        }
        if view.endpoints.contains_key(&(n("n1"), e("e1"))) {
            break;
        }
        batch = w.next().await.unwrap().unwrap();
    }
    assert!(view.endpoints.contains_key(&(n("n1"), e("e1"))));
    // A watch started in the past replays what it missed.
    let rev = batch.revision;
    drop(w);
    b.withdraw(&n("n1"), &e("e1")).await.unwrap();
    let mut w = a.watch(rev).await.unwrap();
    let batch = w.next().await.unwrap().unwrap();
    for c in &batch.changes {
        view.apply(c).unwrap();
    }
    assert!(view.endpoints.is_empty());
    // After compaction, resuming from before it is refused: the caller reloads.
    store.compact();
    assert!(matches!(
        a.watch(rev).await.err(),
        Some(StoreError::Compacted(_))
    ));
}

/// Every record a hostile writer could put, folded into a view as the mirror folds the watch:
/// each refused for its own reason, the good ones kept (the in-process store; the same against
/// a real etcd cluster and running agents is `tests/cluster_trust.rs`).
#[tokio::test]
async fn records_from_the_store_are_checked_before_they_are_believed() {
    use super::trust::Refused;
    let (store, a, b) = two_hosts(Duration::from_secs(10)).await;
    a.create_network(record("n1", "web")).await.unwrap();
    let good = endpoint("n1", "eb", b.host(), 2);
    b.claim_and_publish(
        &n("n1"),
        IpAddr::V4(good.v4),
        &good.endpoint_id,
        Some(&good),
    )
    .await
    .unwrap();
    let put = |key: String, value: Vec<u8>, lease: Option<LeaseId>| {
        let store = store.clone();
        async move {
            store
                .txn(vec![], vec![Op::Put { key, value, lease }])
                .await
                .unwrap();
        }
    };
    let mut expect: Vec<(String, Refused)> = Vec::new();
    let mut bad_mac = endpoint("n1", "e-mac", b.host(), 3);
    bad_mac.mac = [2, 0x42, 9, 9, 9, 9];
    let other_addr = endpoint("n1", "e-addr", b.host(), 2); // eb's address, eb's claim
    let wrong_lease = endpoint("n1", "e-lease", a.host(), 4); // names a, put on b's lease
    let mut bad_name = endpoint("n1", "e-name", b.host(), 5);
    bad_name.hostname = "two words".into();
    let mut wrong_key = endpoint("n1", "e-key", b.host(), 6);
    wrong_key.endpoint_id = e("somebody-else");
    let outside = EndpointRecord {
        v4: std::net::Ipv4Addr::new(192, 0, 2, 9),
        mac: crate::ipam::mac_for(std::net::Ipv4Addr::new(192, 0, 2, 9)),
        ..endpoint("n1", "e-out", b.host(), 7)
    };
    for (r, why) in [
        (&bad_mac, Refused::WrongMac),
        (&other_addr, Refused::NotClaimed(IpAddr::V4(other_addr.v4))),
        (&wrong_lease, Refused::NotOnHostsLease(a.host())),
        (
            &bad_name,
            Refused::BadName {
                what: "hostname",
                name: "two words".into(),
            },
        ),
        (&wrong_key, Refused::KeyMismatch),
        (&outside, Refused::OutsideSubnet(IpAddr::V4(outside.v4))),
    ] {
        // Claimed for it by the host it names (b, except the one naming a); put on b's lease.
        let host_claim = Claim {
            endpoint_id: r.endpoint_id.clone(),
            host: r.host,
        };
        if r.v4 != good.v4 {
            put(
                layout::claim(&r.network_id, IpAddr::V4(r.v4)),
                layout::encode(&host_claim),
                None,
            )
            .await;
        }
        let key_ep = if why == Refused::KeyMismatch {
            e("e-key")
        } else {
            r.endpoint_id.clone()
        };
        let key = layout::endpoint(&r.network_id, &key_ep);
        put(key.clone(), layout::encode(r), Some(b.lease())).await;
        expect.push((key, why));
    }
    let traversal = layout::network("../../../../etc/x");
    put(traversal.clone(), b"{}".to_vec(), None).await;
    expect.push((traversal, Refused::BadKey));
    let junk = layout::endpoint(&n("n1"), &e("junk"));
    put(junk.clone(), b"not json".to_vec(), Some(b.lease())).await;

    // The snapshot path: only the good endpoint is believed.
    let view = a.load().await.unwrap();
    let believed: Vec<&EndpointId> = view.endpoints.keys().map(|(_, e)| e).collect();
    assert_eq!(believed, vec![&e("eb")]);
    // The watch path, in the order the writes happened (hosts, network, each claim before its
    // record): each refused for its reason.
    let mut fold = View::default();
    let mut refused = std::collections::BTreeMap::new();
    let mut w = a.watch(0).await.unwrap();
    while fold.revision < view.revision {
        let batch = tokio::time::timeout(Duration::from_secs(2), w.next())
            .await
            .expect("the watch replays the history")
            .unwrap()
            .unwrap();
        for c in &batch.changes {
            if let (Err(why), Change::Put(kv)) = (fold.apply(c), c) {
                refused.insert(kv.key.clone(), why);
            }
        }
        fold.revision = batch.revision;
    }
    let mut believed: Vec<&EndpointId> = fold.endpoints.keys().map(|(_, e)| e).collect();
    believed.sort();
    assert_eq!(believed, vec![&e("eb")]);
    for (key, why) in &expect {
        assert_eq!(refused.get(key), Some(why), "{key}");
    }
    assert!(matches!(refused.get(&junk), Some(Refused::Undecodable(_))));
    assert_eq!(refused.len(), expect.len() + 1, "{refused:?}");
    // A believed record rewritten into a bad one is no longer believed.
    let mut worse = good.clone();
    worse.mac = [0; 6];
    let key = layout::endpoint(&good.network_id, &good.endpoint_id);
    let change = Change::Put(Kv {
        key,
        value: layout::encode(&worse),
        lease: b.lease(),
    });
    assert_eq!(fold.apply(&change), Err(Refused::WrongMac));
    assert!(fold.endpoints.is_empty());
    // The gateway's address; a network record rewritten (a wider subnet) or taking another's
    // VXLAN id; a host record for no unicast address.
    let gw = std::net::Ipv4Addr::new(10, 9, 0, 1);
    let on_gw = EndpointRecord {
        v4: gw,
        mac: crate::ipam::mac_for(gw),
        ..endpoint("n1", "e-gw", b.host(), 1)
    };
    fold.claims.insert(
        (n("n1"), IpAddr::V4(gw)),
        Claim {
            endpoint_id: on_gw.endpoint_id.clone(),
            host: b.host(),
        },
    );
    let put_kv = |key: String, value: Vec<u8>, lease| Change::Put(Kv { key, value, lease });
    let key = layout::endpoint(&n("n1"), &on_gw.endpoint_id);
    assert_eq!(
        fold.apply(&put_kv(key, layout::encode(&on_gw), b.lease())),
        Err(Refused::Reserved(IpAddr::V4(gw)))
    );
    let mut wider = fold.networks[&n("n1")].clone();
    wider.v4 = Pool::new("10.0.0.0/8".parse().unwrap(), None, None).unwrap();
    let key = layout::network(&n("n1"));
    assert_eq!(
        fold.apply(&put_kv(key, layout::encode(&wider), 0)),
        Err(Refused::NetworkChanged)
    );
    assert_eq!(fold.networks[&n("n1")].v4.subnet.to_string(), "10.9.0.0/24");
    let mut twin = record("n2", "twin");
    twin.vni = fold.networks[&n("n1")].vni;
    let key = layout::network(&n("n2"));
    assert_eq!(
        fold.apply(&put_kv(key, layout::encode(&twin), 0)),
        Err(Refused::VniInUse(twin.vni))
    );
    let bad: IpAddr = "224.0.0.1".parse().unwrap();
    assert_eq!(
        fold.apply(&put_kv(layout::host(bad), b"{}".to_vec(), 1)),
        Err(Refused::BadHost(bad))
    );
}
