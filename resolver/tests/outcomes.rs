//! Every way a query can end is counted once under its outcome, and the upstream and cache
//! families follow what really happened: stub upstreams on loopback that time out, fail and
//! answer; raw packets for the rejects. The exposition is read as a scrape would read it and
//! checked by promtool.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use resolver::metrics::exposition::Exposition;
use resolver::Server;
use test_support::prometheus::{promtool_check, sample};

fn scrape(s: &Server) -> String {
    let mut e = Exposition::new();
    s.render_metrics(&mut e);
    e.finish()
}

fn outcome(text: &str, network: &str, transport: &str, outcome: &str) -> Option<f64> {
    sample(
        text,
        "attach_agent_dns_queries_total",
        &[
            ("network", network),
            ("transport", transport),
            ("outcome", outcome),
        ],
    )
}

fn of(text: &str, name: &str, upstream: SocketAddr) -> Option<f64> {
    let up = upstream.to_string();
    sample(text, name, &[("upstream", up.as_str())])
}

/// A header (id 0x4242) with these flags and counts, then `rest`.
fn packet(flags: u16, qd: u16, ar: u16, rest: &[u8]) -> Vec<u8> {
    let mut p = vec![0x42, 0x42];
    p.extend_from_slice(&flags.to_be_bytes());
    p.extend_from_slice(&qd.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0]);
    p.extend_from_slice(&ar.to_be_bytes());
    p.extend_from_slice(rest);
    p
}

/// The question `m0. IN A`.
const QUESTION: [u8; 8] = [2, b'm', b'0', 0, 0, 1, 0, 1];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_outcome_and_upstream_failure_is_counted_once() {
    let b = block();
    // The first upstream answers (TTL capped to 1 s by the cache) until it is muted, and is
    // silent from the start for names beginning with "slow"; the second always SERVFAILs.
    let first = upstream(Behaviour::SilentFor("slow", Ipv4Addr::new(192, 0, 2, 5))).await;
    let failing = upstream(Behaviour::ServFail).await;
    let mut c = config(&[first.addr, failing.addr]);
    c.strict_order = true;
    c.cache_max_ttl = 1;
    c.max_inflight_per_client = 1;
    let s = server(&c);
    let gw = add_net(&s, &net_spec("n1", "front"), ip(b, 1)).await;
    let asker = ip(b, 2);

    // Forwarded, then from the cache.
    let m = ask(gw, asker, "fresh.example", RecordType::A).await;
    assert_eq!(a_records(&m), [Ipv4Addr::new(192, 0, 2, 5)]);
    let m = ask(gw, asker, "fresh.example", RecordType::A).await;
    assert_eq!(a_records(&m), [Ipv4Addr::new(192, 0, 2, 5)]);

    // One query waits out the first upstream's silence (300 ms) and gets the second's
    // SERVFAIL; meanwhile the same asker's next forwarded query is over its cap: REFUSED.
    let waiting = tokio::spawn(async move { ask(gw, asker, "slow.example", RecordType::A).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let m = ask(gw, asker, "other.example", RecordType::A).await;
    assert_eq!(rcode(&m), ResponseCode::Refused);
    assert_eq!(rcode(&waiting.await.unwrap()), ResponseCode::ServFail);

    // The cached answer expires; with every upstream failing it is served stale.
    first.set_mute(true);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let m = ask(gw, asker, "fresh.example", RecordType::A).await;
    assert_eq!(rcode(&m), ResponseCode::NoError);
    assert_eq!(m.answers[0].ttl, 30, "served stale");

    // The rejects: an opcode other than QUERY, an EDNS version other than 0, a packet too
    // short to carry an id, a packet that is itself a response.
    let notimp = udp_raw(
        gw,
        asker,
        &packet(0x1100, 1, 0, &QUESTION),
        Duration::from_secs(2),
    )
    .await
    .expect("a NOTIMP reply");
    assert_eq!(notimp[3] & 0x0f, 4, "NOTIMP");
    let mut opt_v1 = QUESTION.to_vec();
    opt_v1.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 1, 0, 0, 0, 0]);
    let badvers = udp_raw(
        gw,
        asker,
        &packet(0x0100, 1, 1, &opt_v1),
        Duration::from_secs(2),
    )
    .await
    .expect("a BADVERS reply");
    assert_eq!(
        badvers[3] & 0x0f,
        0,
        "BADVERS is an extended rcode: 16 = 1 << 4 | 0"
    );
    for dropped in [vec![0x42], packet(0x8100, 1, 0, &QUESTION)] {
        let got = udp_raw(gw, asker, &dropped, Duration::from_millis(300)).await;
        assert_eq!(got, None, "no reply to {dropped:?}");
    }

    let text = scrape(&s);
    let udp = |o: &str| outcome(&text, "front", "udp", o);
    assert_eq!(udp("forwarded"), Some(1.0), "{text}");
    assert_eq!(udp("cached"), Some(1.0));
    assert_eq!(udp("servfail"), Some(1.0));
    assert_eq!(udp("refused"), Some(1.0));
    assert_eq!(udp("stale"), Some(1.0));
    assert_eq!(udp("notimp"), Some(1.0));
    assert_eq!(udp("badvers"), Some(1.0));
    assert_eq!(udp("dropped"), Some(2.0));
    assert_eq!(udp("local"), Some(0.0));
    // Upstream attempts. The first answered fresh, then timed out on slow and was demoted
    // (how often it is probed or asked again while muted depends on timing); the second only
    // ever failed.
    let first_up = |n: &str| of(&text, n, first.addr).unwrap_or(-1.0);
    let failing_up = |n: &str| of(&text, n, failing.addr).unwrap_or(-1.0);
    let timeouts = first_up("attach_agent_dns_upstream_timeouts_total");
    assert!(timeouts >= 1.0, "{text}");
    assert!(first_up("attach_agent_dns_upstream_queries_total") >= timeouts + 1.0);
    assert_eq!(first_up("attach_agent_dns_upstream_failures_total"), 0.0);
    assert_eq!(first_up("attach_agent_dns_upstream_healthy"), 0.0);
    assert!(first_up("attach_agent_dns_upstream_rtt_seconds") > 0.0);
    let failures = failing_up("attach_agent_dns_upstream_failures_total");
    assert!(failures >= 2.0, "slow and the stale one: {text}");
    assert_eq!(
        failing_up("attach_agent_dns_upstream_queries_total"),
        failures
    );
    assert_eq!(failing_up("attach_agent_dns_upstream_timeouts_total"), 0.0);
    assert_eq!(
        sample(&text, "attach_agent_dns_forwarded_in_flight", &[]),
        Some(0.0)
    );
    let (ok, said) = promtool_check(&text);
    assert!(ok, "promtool check metrics: {said}\n{text}");
}

/// A cache of ten entries asked eleven names: room is made down to 90 % of the bound (one
/// eviction), ten entries are left, and the hits and misses are as asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_counts_hits_misses_and_evictions() {
    let b = block();
    let up = upstream(Behaviour::Answer(Ipv4Addr::new(192, 0, 2, 9), 60)).await;
    let mut c = config(&[up.addr]);
    c.cache_entries = 10;
    let s = server(&c);
    let gw = add_net(&s, &net_spec("n1", "front"), ip(b, 1)).await;
    let mut names = vec!["n0.example".to_string()];
    names.extend((0..=10).map(|i| format!("n{i}.example")));
    names.push("n10.example".into());
    for name in &names {
        let m = ask(gw, ip(b, 2), name, RecordType::A).await;
        assert_eq!(a_records(&m), [Ipv4Addr::new(192, 0, 2, 9)], "{name}");
    }
    let text = scrape(&s);
    let one = |n: &str| sample(&text, n, &[]);
    assert_eq!(
        one("attach_agent_dns_cache_hits_total"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(one("attach_agent_dns_cache_misses_total"), Some(11.0));
    assert_eq!(one("attach_agent_dns_cache_evictions_total"), Some(1.0));
    assert_eq!(one("attach_agent_dns_cache_entries"), Some(10.0));
    assert!(one("attach_agent_dns_cache_bytes").is_some_and(|b| b > 0.0));
    assert_eq!(up.count(), 11);
}
