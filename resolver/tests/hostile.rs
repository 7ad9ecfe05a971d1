//! Hostile input while a prober from another container keeps asking: every bad packet gets the
//! right reply (or none), the prober is always answered quickly, and the server's CPU goes back
//! to idle afterwards. One test in its own binary, so the CPU figure is this server's alone.

mod common;

use std::time::Duration;

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use tokio::io::AsyncWriteExt;

fn header(id: u16, flags: u16, qd: u16, an: u16, ns: u16, ar: u16) -> Vec<u8> {
    let mut v = Vec::new();
    for x in [id, flags, qd, an, ns, ar] {
        v.extend_from_slice(&x.to_be_bytes());
    }
    v
}

/// A question for "m0" of type A, class IN.
fn question_m0() -> Vec<u8> {
    vec![2, b'm', b'0', 0, 0, 1, 0, 1]
}

fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let f: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_never_stops_answers() {
    let b = block();
    let mut c = config(&[]);
    c.max_tcp_connections = 16;
    c.tcp_idle_timeout_ms = 3000;
    let s = server(&c);
    let gw = add_net(&s, &net_spec("n1", "front"), ip(b, 1)).await;
    s.table()
        .upsert_endpoint(&endpoint("n1", "member000000", "m0", v4(b, 10)))
        .unwrap();

    // The witness: another container asking for m0 all along.
    let prober = Prober::start(gw, ip(b, 20), "m0", v4(b, 10));

    let src = ip(b, 2);
    let wait = Duration::from_millis(300);
    let rcode_of = |r: Option<Vec<u8>>| {
        r.and_then(|r| Message::from_vec(&r).ok())
            .map(|m| rcode(&m))
    };
    // How many inputs of each class were thrown, for the reliability report.
    let mut tried: std::collections::BTreeMap<&str, usize> = Default::default();

    // Names: a compression pointer to itself, a label running past the end, a name over 255.
    *tried.entry("compression-pointer loops").or_default() += 2;
    *tried.entry("label and name length overruns").or_default() += 2;
    *tried.entry("QDCOUNT 0 and 2").or_default() += 2;
    *tried
        .entry("bad OPT records (two, not at the root, version 1)")
        .or_default() += 3;
    *tried
        .entry("unknown opcodes (1, 2, 4, 5, 15) and class CHAOS")
        .or_default() += 6;
    let mut p = header(1, 0x0100, 1, 0, 0, 0);
    p.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1]);
    assert_eq!(
        rcode_of(udp_raw(gw, src, &p, wait).await),
        Some(ResponseCode::FormErr)
    );
    let mut p = header(2, 0x0100, 1, 0, 0, 0);
    p.extend_from_slice(&[63, b'a', b'b']);
    assert_eq!(
        rcode_of(udp_raw(gw, src, &p, wait).await),
        Some(ResponseCode::FormErr)
    );
    let mut p = header(3, 0x0100, 1, 0, 0, 0);
    for _ in 0..5 {
        p.push(63);
        p.extend_from_slice(&[b'x'; 63]);
    }
    p.extend_from_slice(&[0, 0, 1, 0, 1]);
    assert_eq!(
        rcode_of(udp_raw(gw, src, &p, wait).await),
        Some(ResponseCode::FormErr)
    );
    // An additional record whose name is a pointer loop: skipped, never followed.
    let mut p = header(4, 0x0100, 1, 0, 0, 1);
    p.extend_from_slice(&question_m0());
    let at = p.len() as u16;
    p.extend_from_slice(&(0xC000 | at).to_be_bytes());
    p.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        rcode_of(udp_raw(gw, src, &p, wait).await),
        Some(ResponseCode::NoError)
    );
    // QDCOUNT 0 and 2.
    for qd in [0u16, 2] {
        let mut p = header(5, 0x0100, qd, 0, 0, 0);
        p.extend_from_slice(&question_m0());
        assert_eq!(
            rcode_of(udp_raw(gw, src, &p, wait).await),
            Some(ResponseCode::FormErr)
        );
    }
    // OPT: two of them; one not owned by the root; version 1 (BADVERS).
    let opt = |name: &[u8], version: u8| {
        let mut o = name.to_vec();
        o.extend_from_slice(&[0, 41, 4, 0, 0, version, 0, 0, 0, 0]);
        o
    };
    let mut p = header(6, 0x0100, 1, 0, 0, 2);
    p.extend_from_slice(&question_m0());
    p.extend_from_slice(&opt(&[0], 0));
    p.extend_from_slice(&opt(&[0], 0));
    assert_eq!(
        rcode_of(udp_raw(gw, src, &p, wait).await),
        Some(ResponseCode::FormErr)
    );
    let mut p = header(7, 0x0100, 1, 0, 0, 1);
    p.extend_from_slice(&question_m0());
    p.extend_from_slice(&opt(&[1, b'x', 0], 0));
    assert_eq!(
        rcode_of(udp_raw(gw, src, &p, wait).await),
        Some(ResponseCode::FormErr)
    );
    let mut p = header(8, 0x0100, 1, 0, 0, 1);
    p.extend_from_slice(&question_m0());
    p.extend_from_slice(&opt(&[0], 1));
    // Extended rcode 16 (BADVERS; hickory names the shared code BADSIG).
    let code = rcode_of(udp_raw(gw, src, &p, wait).await).map(u16::from);
    assert_eq!(code, Some(16));
    // Opcodes other than QUERY: NOTIMP. A class other than IN for a local name: not local.
    for opcode in [1u16, 2, 4, 5, 15] {
        let mut p = header(9, 0x0100 | (opcode << 11), 1, 0, 0, 0);
        p.extend_from_slice(&question_m0());
        assert_eq!(
            rcode_of(udp_raw(gw, src, &p, wait).await),
            Some(ResponseCode::NotImp)
        );
    }
    let mut p = header(10, 0x0100, 1, 0, 0, 0);
    p.extend_from_slice(&[2, b'm', b'0', 0, 0, 1, 0, 3]);
    let m = udp_raw(gw, src, &p, wait)
        .await
        .and_then(|r| Message::from_vec(&r).ok());
    assert!(
        m.is_some_and(|m| m.answers.is_empty()),
        "CHAOS m0 gets no IN answer"
    );

    // Random bytes, with and without a plausible header.
    let mut rng = fastrand::Rng::with_seed(42);
    let sock = tokio::net::UdpSocket::bind((src, 0)).await.unwrap();
    for len in 0..12 {
        sock.send_to(&header(11, 0x0100, 1, 0, 0, 0)[..len], gw)
            .await
            .unwrap();
        *tried
            .entry("truncated headers (0 to 11 bytes)")
            .or_default() += 1;
    }
    for i in 0..2000 {
        let len = rng.usize(0..700);
        let mut junk: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        if i % 2 == 0 && junk.len() >= 12 {
            junk[2] &= 0x07; // a query with opcode 0
            junk[4] = 0;
            junk[5] = 1;
        }
        sock.send_to(&junk, gw).await.unwrap();
        *tried.entry("random packets").or_default() += 1;
    }

    // TCP: idle connections up to the cap, one trickling a byte a second, lying length prefixes.
    let mut idle = Vec::new();
    for _ in 0..15 {
        idle.push(tcp_connect(gw, src).await);
    }
    let mut trickle = tcp_connect(gw, src).await;
    for _ in 0..20 {
        let mut liar = tcp_connect(gw, src).await;
        let _ = liar.write_all(&[0xff, 0xff, 1, 2, 3]).await;
        drop(liar);
        *tried.entry("TCP length prefixes that lie").or_default() += 1;
    }
    for _ in 0..3 {
        let _ = trickle.write_all(&[0]).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    *tried
        .entry("idle TCP connections up to the cap")
        .or_default() += 15;
    *tried
        .entry("a TCP client trickling a byte at a time")
        .or_default() += 1;
    drop(idle);
    drop(trickle);

    // Still serving, over UDP and TCP.
    assert_serves(gw, src, "m0", v4(b, 10)).await;
    let seen = prober.stop().await;
    assert!(seen.answered > 50, "{seen:?}");
    assert_eq!(seen.failed, 0, "the prober always got its answer");
    assert!(seen.worst < Duration::from_millis(250), "{seen:?}");

    // Back to idle: nothing keeps spinning once the attack is over.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = cpu_ticks();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let spent = cpu_ticks() - before;
    report(serde_json::json!({
        "test": "hostile",
        "classes": tried,
        "prober_answered": seen.answered,
        "prober_failed": seen.failed,
        "prober_worst_ms": seen.worst.as_secs_f64() * 1000.0,
        "idle_cpu_ticks_per_s": spent,
    }));
    assert!(spent <= 5, "{spent} ticks of CPU in a second of idleness");
}
