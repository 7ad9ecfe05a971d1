//! Multi-host faults the cluster store brings: an agent started while no etcd member answers,
//! and a host that never comes back while its address claims (which carry no lease) stay.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{etcd_binary, until, Hosts, HOSTS, LEASE_TTL};
use common::{report, Answer, Asker};

/// A global network (10.X.4.0/22) made on host 0, once every host has it; its name.
fn global_network(h: &Hosts) -> String {
    let ov = h.name("ov");
    let subnet = format!("10.{}.4.0/22", h.octet);
    h.ok(
        0,
        &[
            "network", "create", "--driver", "overlay", "--subnet", &subnet, &ov,
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while (1..HOSTS).any(|i| !h.ok(i, &["network", "ls"]).contains(&ov)) {
        assert!(Instant::now() < deadline, "not every host saw {ov}");
        std::thread::sleep(Duration::from_millis(20));
    }
    ov
}

/// Every member stopped, host 0's agent restarted: it starts, serves DNS for its local network
/// and for its own endpoint on the global one from its state, and once the members are back
/// it catches up (host 1's endpoint resolves there) and publishes again (host 1 resolves it).
#[test]
fn an_agent_starts_with_every_member_down_and_catches_up() {
    let mut h = Hosts::new();
    let ov = global_network(&h);
    let (c0, c1, l0) = (h.name("c0"), h.name("c1"), h.name("l0"));
    h.ok(
        0,
        &[
            "network",
            "create",
            "--subnet",
            &format!("10.{}.8.0/24", h.octet),
            "lan",
        ],
    );
    h.ok(0, &["run", "--name", &l0, "--network", "lan", "busybox"]);
    h.ok(0, &["run", "--name", &c0, "--network", &ov, "busybox"]);
    h.ok(1, &["run", "--name", &c1, "--network", &ov, "busybox"]);
    let (ip0, ip1) = (h.ip_of(0, &c0, &ov), h.ip_of(1, &c1, &ov));
    let mut asker0 = Asker::new(&c0, h.gateway(), Duration::from_millis(500));
    assert!(until(&mut asker0, &c1, Duration::from_secs(5), |a| *a
        == Answer::Addrs(vec![ip1]))
    .is_some());

    h.kill_agent(0);
    for i in 0..HOSTS {
        h.kill_etcd(i);
    }
    let t = Instant::now();
    h.start_agent(0);
    let offline_start = t.elapsed();
    eprintln!(
        "host 0's agent answered {:.1} s after its start with no member up",
        offline_start.as_secs_f64()
    );
    assert!(
        h.full_log(0).contains("no cluster store member answers"),
        "{}",
        h.log(0)
    );
    let mut asker0 = Asker::new(&c0, h.gateway(), Duration::from_millis(500));
    assert_eq!(
        asker0.ask(&c0),
        Answer::Addrs(vec![ip0]),
        "its own endpoint on the global network"
    );
    let lan_gw: std::net::Ipv4Addr = format!("10.{}.8.1", h.octet).parse().unwrap();
    let mut lan = Asker::new(&l0, lan_gw, Duration::from_millis(500));
    let l0_ip = h.ip_of(0, &l0, "lan");
    assert_eq!(lan.ask(&l0), Answer::Addrs(vec![l0_ip]), "a local network");
    // Still working while the store is down: local operations.
    let l1 = h.name("l1");
    h.ok(0, &["run", "--name", &l1, "--network", "lan", "busybox"]);

    let etcd = etcd_binary();
    for i in 0..HOSTS {
        h.start_etcd(i, etcd, "new");
    }
    assert!(
        until(&mut asker0, &c1, Duration::from_secs(30), |a| *a
            == Answer::Addrs(vec![ip1]))
        .is_some(),
        "host 0 never caught up with the store:\n{}",
        h.log(0)
    );
    let mut asker1 = Asker::new(&c1, h.gateway(), Duration::from_millis(500));
    assert!(
        until(&mut asker1, &c0, Duration::from_secs(30), |a| *a
            == Answer::Addrs(vec![ip0]))
        .is_some(),
        "host 0's endpoint was not published again:\n{}",
        h.log(0)
    );
    let caught_up = t.elapsed();
    // And it connects on the global network again.
    let c0b = h.name("c0b");
    h.ok(0, &["run", "--name", &c0b, "--network", &ov, "busybox"]);
    report(serde_json::json!({
        "test": "store_down_at_start",
        "api_answering_after_s": offline_start.as_secs_f64(),
        "caught_up_after_s": caught_up.as_secs_f64(),
    }));
}

/// Host 2 dies and never comes back: its endpoint leaves with its lease, and once its host
/// record has been gone for the claim grace, a surviving agent releases the address it held
/// (one transaction), so the address can be used again; live hosts' claims stay.
#[test]
fn claims_of_a_host_gone_longer_than_the_grace_are_released() {
    const GRACE: u64 = 2;
    let mut h = Hosts::with_agent_args(&["--cluster-claim-grace", &GRACE.to_string()]);
    let ov = global_network(&h);
    let held = format!("10.{}.4.50", h.octet);
    let (c1, c2) = (h.name("c1"), h.name("c2"));
    h.ok(1, &["run", "--name", &c1, "--network", &ov, "busybox"]);
    h.ok(
        2,
        &[
            "run",
            "--name",
            &c2,
            "--network",
            &ov,
            "--ip",
            &held,
            "busybox",
        ],
    );
    let live = h.ip_of(1, &c1, &ov).to_string();
    let net_id = h.network_id(0, &ov);
    let claim = |ip: &str| format!("ipam/{net_id}/{ip}");
    assert!(h.store_dump(&claim(&held)).contains(&claim(&held)));
    // Taken: another host cannot have it.
    let c0 = h.name("c0");
    let refused = h.cli(
        0,
        &[
            "run",
            "--name",
            &c0,
            "--network",
            &ov,
            "--ip",
            &held,
            "busybox",
        ],
    );
    assert_ne!(refused.code, 0, "{}", refused.stdout);
    h.ok(0, &["container", "rm", "-f", &c0]);

    h.kill_agent(2);
    let killed = Instant::now();
    // Its host record goes with its lease; the grace counts from then.
    let host_key = format!("hosts/{}", h.host_ip(2));
    let deadline = killed + Duration::from_secs(LEASE_TTL + 10);
    while h.store_dump(&host_key).contains(&host_key) {
        assert!(
            Instant::now() < deadline,
            "host 2's record outlived its lease"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let gone = Instant::now();
    let deadline = gone + Duration::from_secs(GRACE + 15);
    while h.store_dump(&claim(&held)).contains(&claim(&held)) {
        assert!(
            Instant::now() < deadline,
            "the dead host's claim was never released:\n{}\n{}",
            h.store_dump(&claim(&held)),
            h.log(0)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (took, after_gone) = (killed.elapsed(), gone.elapsed());
    eprintln!(
        "claim released {:.1} s after the host died, {:.1} s after its record went (lease {LEASE_TTL} s, grace {GRACE} s)",
        took.as_secs_f64(),
        after_gone.as_secs_f64()
    );
    // (The record was seen gone up to one poll late: a poll is a TLS connection and a read.)
    assert!(
        after_gone >= Duration::from_secs(GRACE) - Duration::from_millis(500),
        "released before the grace ran out: {after_gone:?} after the host's record went"
    );
    let released_by: Vec<usize> = (0..2)
        .filter(|&i| {
            h.full_log(i)
                .contains("released the address claim of a host gone")
        })
        .collect();
    assert!(!released_by.is_empty(), "no agent logged the release");
    assert!(
        h.store_dump(&claim(&live)).contains(&claim(&live)),
        "a live host's claim stays"
    );

    // Usable on host 0 once its mirror has seen the release (a watch event away).
    h.ok(
        0,
        &[
            "container",
            "create",
            "--name",
            &c0,
            "--network",
            &ov,
            "--ip",
            &held,
            "busybox",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.cli(0, &["container", "start", &c0]).code != 0 {
        assert!(
            Instant::now() < deadline,
            "{held} never became usable on host 0:\n{}",
            h.log(0)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(h.ip_of(0, &c0, &ov).to_string(), held);
    report(serde_json::json!({
        "test": "claim_grace",
        "lease_ttl_s": LEASE_TTL,
        "grace_s": GRACE,
        "released_after_death_s": took.as_secs_f64(),
        "released_after_record_gone_s": after_gone.as_secs_f64(),
    }));
}
