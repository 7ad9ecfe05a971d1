//! Forwarding through real sockets, against stub upstreams on loopback.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use resolver::NetworkSpec;

fn addr(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// An address where nothing listens: bound and dropped, so the port is closed.
async fn dead_upstream() -> SocketAddr {
    let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.local_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_over_from_dead_and_silent_upstreams() {
    let b = block();
    let dead = dead_upstream().await;
    let silent = upstream(Behaviour::Silent).await;
    let good = upstream(Behaviour::Answer(addr("192.0.2.7"), 60)).await;
    let s = server(&config(&[dead, silent.addr, good.addr]));
    let gw = add_net(&s, &net_spec("n1", "front"), ip(b, 1)).await;
    let m = ask(gw, ip(b, 2), "example.com", RecordType::A).await;
    assert_eq!(a_records(&m), [addr("192.0.2.7")]);
    // (The silent one may have had its once-a-second probe meanwhile.)
    assert!(silent.count() >= 1);
    assert_eq!(good.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servfail_and_refused_move_on_nxdomain_is_relayed() {
    let b = block();
    let sf = upstream(Behaviour::ServFail).await;
    let rf = upstream(Behaviour::Refused).await;
    let nx = upstream(Behaviour::NxDomain).await;
    let never = upstream(Behaviour::Answer(addr("192.0.2.8"), 60)).await;
    let s = server(&config(&[sf.addr, rf.addr, nx.addr, never.addr]));
    let gw = add_net(&s, &net_spec("n1", "front"), ip(b, 1)).await;
    let m = ask(gw, ip(b, 2), "NoSuch.Example.", RecordType::A).await;
    assert_eq!(rcode(&m), ResponseCode::NXDomain);
    assert_eq!(m.queries[0].name().to_ascii(), "NoSuch.Example.");
    assert_eq!((sf.count(), rf.count(), nx.count()), (1, 1, 1));
    assert_eq!(
        never.count(),
        0,
        "an NXDOMAIN is an answer: not retried elsewhere"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_upstream_answering_is_servfail() {
    let b = block();
    let sf = upstream(Behaviour::ServFail).await;
    let silent = upstream(Behaviour::Silent).await;
    let s = server(&config(&[sf.addr, silent.addr]));
    let gw = add_net(&s, &net_spec("n1", "front"), ip(b, 1)).await;
    let m = ask(gw, ip(b, 2), "example.com", RecordType::A).await;
    assert_eq!(rcode(&m), ResponseCode::ServFail);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_cached_for_their_ttl() {
    let b = block();
    let up = upstream(Behaviour::Answer(addr("192.0.2.9"), 2)).await;
    let s = server(&config(&[up.addr]));
    let gw = add_net(&s, &net_spec("n1", "front"), ip(b, 1)).await;
    let first = ask(gw, ip(b, 2), "cached.example", RecordType::A).await;
    let second = ask(gw, ip(b, 3), "CACHED.example", RecordType::A).await;
    assert_eq!(a_records(&first), a_records(&second));
    assert_eq!(second.queries[0].name().to_ascii(), "CACHED.example.");
    assert_eq!(
        up.count(),
        1,
        "the second question was answered from the cache"
    );
    // After the TTL the upstream is asked again.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    ask(gw, ip(b, 2), "cached.example", RecordType::A).await;
    assert_eq!(up.count(), 2);
    // Negative answers are cached by the SOA's rules too.
    let nx = upstream(Behaviour::NxDomain).await;
    let s2 = server(&config(&[nx.addr]));
    let gw2 = add_net(&s2, &net_spec("n2", "other"), ip(b, 129)).await;
    for _ in 0..3 {
        let m = ask(gw2, ip(b, 130), "gone.example", RecordType::A).await;
        assert_eq!(rcode(&m), ResponseCode::NXDomain);
    }
    assert_eq!(nx.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_upstream_reply_is_relayed_with_tc_and_tcp_gets_it_whole() {
    let b = block();
    let up = upstream(Behaviour::Truncated(60)).await;
    let s = server(&config(&[up.addr]));
    let gw = add_net(&s, &net_spec("n1", "front"), ip(b, 1)).await;
    let m = ask(gw, ip(b, 2), "big.example", RecordType::A).await;
    assert!(m.metadata.truncation, "TC relayed");
    assert!(m.answers.is_empty());
    let m = tcp_ask(gw, ip(b, 2), "big.example", RecordType::A).await;
    assert!(!m.metadata.truncation);
    assert_eq!(
        a_records(&m).len(),
        60,
        "TCP forwarding brings the whole answer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_only_askers_get_no_forwarding() {
    let b = block();
    let up = upstream(Behaviour::Answer(addr("192.0.2.10"), 60)).await;
    let s = server(&config(&[up.addr]));
    let spec = NetworkSpec {
        internal: true,
        ..net_spec("n1", "private")
    };
    let gw = add_net(&s, &spec, ip(b, 1)).await;
    s.table()
        .upsert_endpoint(&endpoint("n1", "inside000000", "inside", v4(b, 2)))
        .unwrap();
    let m = ask(gw, ip(b, 2), "example.com", RecordType::A).await;
    assert_eq!(rcode(&m), ResponseCode::NXDomain);
    assert_eq!(
        a_records(&ask(gw, ip(b, 2), "inside", RecordType::A).await),
        [v4(b, 2)]
    );
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_past_the_in_flight_cap_are_refused() {
    let b = block();
    let silent = upstream(Behaviour::Silent).await;
    let mut c = config(&[silent.addr]);
    c.max_inflight = 2;
    c.forward_timeout_ms = 1500;
    let s = server(&c);
    let gw = add_net(&s, &net_spec("n1", "front"), ip(b, 1)).await;
    // Two queries occupy the cap...
    let pending: Vec<_> = (0..2)
        .map(|i| {
            let q = question(&format!("slow{i}.example"), RecordType::A);
            tokio::spawn(async move { udp(gw, ip(b, 2), &q).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // ...the third is refused at once, and local names still answer.
    let started = Instant::now();
    let m = ask(gw, ip(b, 3), "third.example", RecordType::A).await;
    assert_eq!(rcode(&m), ResponseCode::Refused);
    assert!(started.elapsed() < Duration::from_millis(1000));
    for p in pending {
        assert_eq!(rcode(&p.await.unwrap()), ResponseCode::ServFail);
    }
    assert_eq!(
        s.forwarder()
            .stats()
            .refused_over_cap
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // Once they are done, forwarding works again.
    let m = ask(gw, ip(b, 3), "fourth.example", RecordType::A).await;
    assert_eq!(rcode(&m), ResponseCode::ServFail);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_with_the_wrong_id_are_ignored() {
    let b = block();
    // The spoofed reply (wrong id, sent first) carries another address than the real one, so
    // taking it would show in the answer.
    let up = upstream(Behaviour::WrongIdFirst {
        real: addr("192.0.2.11"),
        spoofed: addr("203.0.113.66"),
    })
    .await;
    let s = server(&config(&[up.addr]));
    let gw = add_net(&s, &net_spec("n1", "front"), ip(b, 1)).await;
    let m = ask(gw, ip(b, 2), "spoof.example", RecordType::A).await;
    assert_eq!(a_records(&m), [addr("192.0.2.11")]);
}

/// Upstreams from a resolv.conf, re-read when it changes. resolv.conf has no ports, so the
/// stubs listen on port 53 of their own loopback addresses: this test needs root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolv_conf_is_reread_when_it_changes() {
    test_support::require_root("this test binds port 53 on loopback");
    let b = block();
    let (ua, ub) = (ip([127, 53, b[2]], 1), ip([127, 53, b[2]], 2));
    let first = upstream_on(ua, 53, Behaviour::Answer(addr("192.0.2.1"), 0)).await;
    let second = upstream_on(ub, 53, Behaviour::Answer(addr("192.0.2.2"), 0)).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resolv.conf");
    std::fs::write(&path, format!("search example\nnameserver {ua}\n")).unwrap();
    let mut c = config(&[]);
    c.resolv_conf = path.clone();
    let s = server(&c);
    let gw = add_net(&s, &net_spec("n1", "front"), ip(b, 1)).await;
    let m = ask(gw, ip(b, 2), "x.example", RecordType::A).await;
    assert_eq!(a_records(&m), [addr("192.0.2.1")]);
    // Replace the file the way resolvconf does: write a new one and rename it over.
    let tmp = dir.path().join("resolv.conf.new");
    std::fs::write(&tmp, format!("nameserver {ub}\n# changed\n")).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = ask(gw, ip(b, 2), "y.example", RecordType::A).await;
        if a_records(&m) == [addr("192.0.2.2")] {
            break;
        }
        assert!(Instant::now() < deadline, "new upstream not used after 5 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(second.count() >= 1);
    // From now on only the new upstream is asked.
    let asked_first = first.count();
    let m = ask(gw, ip(b, 2), "z.example", RecordType::A).await;
    assert_eq!(a_records(&m), [addr("192.0.2.2")]);
    assert_eq!(
        first.count(),
        asked_first,
        "the old upstream is still asked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_wrong_source_replies_are_ignored_and_the_next_server_asked() {
    let b = block();
    let garbage = upstream(Behaviour::Garbage).await;
    let spoof = upstream(Behaviour::WrongSource(addr("192.0.2.66"))).await;
    let good = upstream(Behaviour::Answer(addr("192.0.2.12"), 60)).await;
    let s = server(&config(&[garbage.addr, spoof.addr, good.addr]));
    let gw = add_net(&s, &net_spec("n1", "front"), ip(b, 1)).await;
    let m = ask(gw, ip(b, 2), "faulty.example", RecordType::A).await;
    assert_eq!(
        a_records(&m),
        [addr("192.0.2.12")],
        "neither the garbage nor the spoof"
    );
    // Both bad ones were asked (and are demoted: probes may add to their counts).
    assert!(garbage.count() >= 1 && spoof.count() >= 1);
    assert_eq!(good.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_upstream_reply_reaches_a_udp_asker_truncated() {
    let b = block();
    let up = upstream(Behaviour::Oversized(80)).await;
    let s = server(&config(&[up.addr]));
    let gw = add_net(&s, &net_spec("n1", "front"), ip(b, 1)).await;
    let q = question("huge.example", RecordType::A);
    let raw = udp_raw(gw, ip(b, 2), &q.to_vec().unwrap(), Duration::from_secs(3))
        .await
        .expect("a reply");
    assert!(raw.len() <= 512, "{} bytes to a plain UDP asker", raw.len());
    let m = hickory_proto::op::Message::from_vec(&raw).unwrap();
    assert!(m.metadata.truncation);
    // Over TCP the whole answer comes through.
    let m = tcp_ask(gw, ip(b, 2), "huge.example", RecordType::A).await;
    assert_eq!(a_records(&m).len(), 80);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_names_keep_answering_while_every_upstream_is_black_holed() {
    let b = block();
    let hole1 = upstream(Behaviour::Silent).await;
    let hole2 = upstream(Behaviour::Silent).await;
    let mut c = config(&[hole1.addr, hole2.addr]);
    c.forward_timeout_ms = 2000;
    let s = server(&c);
    let gw = add_net(&s, &net_spec("n1", "front"), ip(b, 1)).await;
    s.table()
        .upsert_endpoint(&endpoint("n1", "local0000000", "local", v4(b, 10)))
        .unwrap();
    let prober = Prober::start(gw, ip(b, 3), "local", v4(b, 10));
    // 2,000 external questions that will all hang upstream (and past the in-flight cap).
    // What the asker gets back, read as it comes (a socket buffer left unread would drop
    // most of it), until 1.5 s after the last send, before the forward timeout: the rest hang.
    let sock = std::sync::Arc::new(tokio::net::UdpSocket::bind((ip(b, 2), 0)).await.unwrap());
    let (done_tx, mut done_rx) = tokio::sync::watch::channel(false);
    let reader = {
        let sock = sock.clone();
        tokio::spawn(async move {
            let mut replies: std::collections::BTreeMap<String, u64> = Default::default();
            let mut buf = vec![0u8; 65535];
            loop {
                let got = tokio::select! {
                    r = sock.recv_from(&mut buf) => r,
                    _ = done_rx.changed() => break,
                };
                let Ok((n, _)) = got else { break };
                let code = hickory_proto::op::Message::from_vec(&buf[..n])
                    .map(|m| format!("{:?}", m.metadata.response_code))
                    .unwrap_or_else(|_| "undecodable".into());
                *replies.entry(code).or_default() += 1;
            }
            replies
        })
    };
    for i in 0..2000 {
        let q = question(&format!("q{i}.blackhole.example"), RecordType::A);
        sock.send_to(&q.to_vec().unwrap(), gw).await.unwrap();
        if i % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    done_tx.send(true).unwrap();
    let replies = reader.await.unwrap();
    let seen = prober.stop().await;
    // One asker, so its own cap is what it reaches first.
    let refused = s
        .forwarder()
        .stats()
        .refused_asker_cap
        .load(std::sync::atomic::Ordering::Relaxed);
    let answered: u64 = replies.values().sum();
    report(serde_json::json!({
        "test": "blackhole",
        "sent": 2000,
        "replies_by_rcode": replies,
        "hanging": 2000 - answered,
        "refused_asker_cap": refused,
        "prober_answered": seen.answered,
        "prober_failed": seen.failed,
        "prober_worst_ms": seen.worst.as_secs_f64() * 1000.0,
    }));
    assert_eq!(seen.failed, 0, "{seen:?}");
    assert!(seen.answered > 50, "{seen:?}");
    assert!(seen.worst < Duration::from_millis(100), "{seen:?}");
    assert!(refused > 0, "the cap was reached and answered REFUSED");
    assert_eq!(
        replies.get("Refused").copied().unwrap_or(0),
        refused,
        "every REFUSED the server counted reached the asker: {replies:?}"
    );
    assert!(
        2000 - answered <= c.max_inflight_per_client as u64,
        "at most the asker's cap hangs: {replies:?}"
    );
}

/// The cache-poisoning query of issue 16: labels `www2` + `bank.com` (a dot inside a label)
/// get NXDOMAIN upstream; the real `www2.bank.com` must still answer afterwards, for every
/// asker. (Keyed by dotted text, the NXDOMAIN stood for the real name for the SOA's TTL.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_with_a_dot_inside_a_label_cannot_poison_the_cache() {
    let b = block();
    let up = upstream(Behaviour::NxForDottedLabels(addr("192.0.2.80"))).await;
    let s = server(&config(&[up.addr]));
    let gw = add_net(&s, &net_spec("n1", "front"), ip(b, 1)).await;
    // Build the forged query by hand: 4 www2 8 bank.com 0, A, IN.
    let mut forged = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    forged.extend_from_slice(b"\x04www2\x08bank.com\x00\x00\x01\x00\x01");
    let raw = udp_raw(gw, ip(b, 2), &forged, Duration::from_secs(2))
        .await
        .expect("a reply to the forged query");
    let m = hickory_proto::op::Message::from_vec(&raw).unwrap();
    assert_eq!(rcode(&m), ResponseCode::NXDomain, "upstream said NXDOMAIN");
    assert_eq!(up.count(), 1);
    for asker in [ip(b, 2), ip(b, 3)] {
        let m = ask(gw, asker, "www2.bank.com", RecordType::A).await;
        assert_eq!(rcode(&m), ResponseCode::NoError);
        assert_eq!(a_records(&m), [addr("192.0.2.80")]);
    }
    // The forged name's NXDOMAIN is cached for the forged name only.
    let raw = udp_raw(gw, ip(b, 3), &forged, Duration::from_secs(2))
        .await
        .unwrap();
    let m = hickory_proto::op::Message::from_vec(&raw).unwrap();
    assert_eq!(rcode(&m), ResponseCode::NXDomain);
    assert_eq!(
        up.count(),
        2,
        "real name asked once, forged one answered from the cache"
    );
}

/// A black-holed first upstream costs one timeout: it is demoted then, and later misses go
/// to the second server at once (it only gets the once-a-second probe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_first_upstream_costs_one_timeout() {
    let b = block();
    let hole = upstream(Behaviour::Silent).await;
    let good = upstream(Behaviour::Answer(addr("192.0.2.81"), 0)).await;
    let mut c = config(&[hole.addr, good.addr]);
    c.forward_timeout_ms = 500;
    let s = server(&c);
    let gw = add_net(&s, &net_spec("n1", "front"), ip(b, 1)).await;
    let began = Instant::now();
    let first = ask(gw, ip(b, 2), "first.example", RecordType::A).await;
    assert_eq!(a_records(&first), [addr("192.0.2.81")]);
    assert!(
        began.elapsed() >= Duration::from_millis(500),
        "the first miss waited"
    );
    assert!(s.forwarder().health().is_demoted(hole.addr));
    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        let t = Instant::now();
        let m = ask(gw, ip(b, 2), &format!("miss{i}.example"), RecordType::A).await;
        slowest = slowest.max(t.elapsed());
        assert_eq!(a_records(&m), [addr("192.0.2.81")]);
    }
    // Not a speed target: a miss that waited for the dead server would take the whole
    // 500 ms timeout.
    assert!(
        slowest < Duration::from_millis(250),
        "a miss waited {slowest:?}"
    );
    let probes_at_most = 1 + began.elapsed().as_secs() as usize + 1;
    assert!(
        hole.count() <= probes_at_most,
        "the dead server was asked {} times (first query + probes ≤ {probes_at_most})",
        hole.count()
    );
    assert_eq!(good.count(), 21);
}

/// A demoted server is probed and back in use within seconds of answering again (strict
/// order, so "in use" shows: it is first again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demoted_upstream_comes_back_into_use() {
    let b = block();
    let first = upstream(Behaviour::Answer(addr("192.0.2.82"), 0)).await;
    let second = upstream(Behaviour::Answer(addr("192.0.2.83"), 0)).await;
    first.set_mute(true);
    let mut c = config(&[first.addr, second.addr]);
    c.strict_order = true;
    let s = server(&c);
    let gw = add_net(&s, &net_spec("n1", "front"), ip(b, 1)).await;
    let m = ask(gw, ip(b, 2), "a.example", RecordType::A).await;
    assert_eq!(a_records(&m), [addr("192.0.2.83")]);
    assert!(s.forwarder().health().is_demoted(first.addr));
    let m = ask(gw, ip(b, 2), "b.example", RecordType::A).await;
    assert_eq!(a_records(&m), [addr("192.0.2.83")], "demoted: second first");
    first.set_mute(false);
    let back = Instant::now();
    let mut i = 0;
    loop {
        i += 1;
        let m = ask(gw, ip(b, 2), &format!("back{i}.example"), RecordType::A).await;
        if a_records(&m) == [addr("192.0.2.82")] {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "the first server is not back 5 s after it answers again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!s.forwarder().health().is_demoted(first.addr));
}

/// When every upstream is black-holed, an expired cached answer is given (TTL 30, RFC 8767)
/// instead of SERVFAIL; with serve-stale off it is SERVFAIL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_answer_is_served_stale_when_every_upstream_fails() {
    let b = block();
    let up = upstream(Behaviour::Answer(addr("192.0.2.84"), 1)).await;
    let s = server(&config(&[up.addr]));
    let mut off = config(&[up.addr]);
    off.serve_stale_secs = 0;
    let s_off = server(&off);
    let gw = add_net(&s, &net_spec("n1", "front"), ip(b, 1)).await;
    let gw_off = add_net(&s_off, &net_spec("n2", "other"), ip(b, 129)).await;
    let fresh = ask(gw, ip(b, 2), "stale.example", RecordType::A).await;
    assert_eq!(a_records(&fresh), [addr("192.0.2.84")]);
    ask(gw_off, ip(b, 130), "stale.example", RecordType::A).await;
    up.set_mute(true);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let stale = ask(gw, ip(b, 2), "STALE.example", RecordType::A).await;
    assert_eq!(rcode(&stale), ResponseCode::NoError);
    assert_eq!(a_records(&stale), [addr("192.0.2.84")]);
    assert_eq!(stale.answers[0].ttl, 30, "a stale answer carries TTL 30");
    assert_eq!(stale.queries[0].name().to_ascii(), "STALE.example.");
    let m = ask(gw_off, ip(b, 130), "stale.example", RecordType::A).await;
    assert_eq!(rcode(&m), ResponseCode::ServFail, "serve-stale off");
    assert_eq!(
        s.forwarder()
            .stats()
            .served_stale
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

/// Filled with 64 KiB answers (over TCP; 2,300 A records with uncompressed names), the cache
/// stays within its byte budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_stays_within_its_byte_budget_with_64k_answers() {
    let b = block();
    let up = upstream(Behaviour::Truncated(2300)).await;
    let mut c = config(&[up.addr]);
    let budget = 1 << 20;
    c.cache_bytes = budget;
    c.cache_max_reply = 65_535;
    let s = server(&c);
    let gw = add_net(&s, &net_spec("n1", "front"), ip(b, 1)).await;
    let mut stream = tcp_connect(gw, ip(b, 2)).await;
    for i in 0..40 {
        tcp_send(
            &mut stream,
            &question(&format!("big{i}.example"), RecordType::A),
        )
        .await;
        let m = tcp_recv(&mut stream).await.expect("an answer");
        assert_eq!(a_records(&m).len(), 2300);
        let cache = s.forwarder().cache();
        assert!(cache.bytes() <= budget, "{} bytes cached", cache.bytes());
    }
    let cache = s.forwarder().cache();
    assert!(
        cache.len() >= 8,
        "the budget holds a dozen 64 KiB answers: {} cached",
        cache.len()
    );
    // With the default bound on one reply's size, none of them is kept.
    let s2 = server(&config(&[up.addr]));
    let gw2 = add_net(&s2, &net_spec("n2", "other"), ip(b, 129)).await;
    let m = tcp_ask(gw2, ip(b, 130), "big0.example", RecordType::A).await;
    assert_eq!(a_records(&m).len(), 2300);
    assert!(s2.forwarder().cache().is_empty());
}

/// One container flooding forwarded names that hang upstream reaches its own cap and gets
/// REFUSED; another container's forwarded question is still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_container_flooding_does_not_stop_another_from_being_answered() {
    let b = block();
    let up = upstream(Behaviour::SilentFor("flood", addr("192.0.2.90"))).await;
    let mut c = config(&[up.addr]);
    c.max_inflight = 256;
    c.max_inflight_per_client = 32;
    c.forward_timeout_ms = 2000;
    let s = server(&c);
    let gw = add_net(&s, &net_spec("n1", "front"), ip(b, 1)).await;
    let (flooder, other) = (ip(b, 2), ip(b, 3));
    let sock = tokio::net::UdpSocket::bind((flooder, 0)).await.unwrap();
    for i in 0..1000 {
        let q = question(&format!("flood.q{i}.example"), RecordType::A);
        sock.send_to(&q.to_vec().unwrap(), gw).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (host, mine) = s.forwarder().budget().in_flight(flooder);
    assert!(
        mine <= 32 && host <= 32,
        "the flooder holds {mine} (host {host})"
    );
    let m = ask(gw, other, "ok.example", RecordType::A).await;
    assert_eq!(
        rcode(&m),
        ResponseCode::NoError,
        "the other container is not refused"
    );
    assert_eq!(a_records(&m), [addr("192.0.2.90")]);
    let refused = s
        .forwarder()
        .stats()
        .refused_asker_cap
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        refused >= 900,
        "the flood past its cap was refused: {refused}"
    );
}

/// TCP askers asking at once are forwarded over one kept-open TCP connection to the upstream,
/// pipelined: the upstream answers each after a delay of its own, out of order, and every
/// asker has its own answer about one delay later (one after another, it would be ten).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_askers_share_one_pipelined_upstream_connection() {
    let b = block();
    let up = upstream(Behaviour::SlowTcp(400, addr("192.0.2.95"))).await;
    let mut c = config(&[up.addr]);
    c.forward_timeout_ms = 2000;
    let s = server(&c);
    let gw = add_net(&s, &net_spec("n1", "front"), ip(b, 1)).await;
    // One query first, so the connection exists before the others.
    tcp_ask(gw, ip(b, 2), "first.example", RecordType::A).await;
    let began = Instant::now();
    let askers: Vec<_> = (0..10)
        .map(|i| {
            tokio::spawn(async move {
                let name = format!("slow{i}.example");
                let m = tcp_ask(gw, ip(b, 2 + i), &name, RecordType::A).await;
                (name, m)
            })
        })
        .collect();
    for a in askers {
        let (name, m) = a.await.unwrap();
        assert_eq!(a_records(&m), [addr("192.0.2.95")]);
        assert_eq!(m.queries[0].name().to_ascii(), format!("{name}."));
    }
    let took = began.elapsed();
    assert!(
        took < Duration::from_millis(1500),
        "ten queries of 220-400 ms each took {took:?}: not pipelined"
    );
    assert_eq!(
        up.tcp_conns.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "eleven TCP askers, one connection"
    );
}

/// An upstream whose port is closed answers with ICMP port unreachable: every query sent
/// there moves on at once (here to SERVFAIL), none waits out the timeout — whichever of the
/// pooled sockets it left on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_upstream_port_fails_each_query_at_once() {
    let b = block();
    let dead = dead_upstream().await;
    let mut c = config(&[dead]);
    c.forward_timeout_ms = 3000;
    let s = server(&c);
    let gw = add_net(&s, &net_spec("n1", "front"), ip(b, 1)).await;
    for i in 0..20 {
        let t = Instant::now();
        let m = ask(gw, ip(b, 2), &format!("closed{i}.example"), RecordType::A).await;
        assert_eq!(rcode(&m), ResponseCode::ServFail);
        // Not a speed target: waiting for the timeout would take the whole 3 s.
        assert!(
            t.elapsed() < Duration::from_millis(1500),
            "query {i} waited {:?}",
            t.elapsed()
        );
    }
}
