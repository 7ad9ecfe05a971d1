//! Hostile input while a prober from another container keeps asking: every bad packet gets the
//! right reply (or none), the prober is always answered quickly, and the server's CPU goes back
//! to idle afterwards. One test in its own binary, so the CPU figure is this server's alone.
//!
//! What came back for every input is read and counted (an rcode, "dropped", or what became of
//! a TCP connection), and the report prints those counts: nothing in it is a constant. The TCP
//! inputs run while the connection cap has room, so the server parses them.

mod common;

use std::time::Duration;

use std::collections::BTreeMap;
use std::time::Instant;

use common::*;
use hickory_proto::op::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

/// What came back for one input, as the report counts it.
fn outcome(reply: Option<&[u8]>) -> String {
    let Some(r) = reply else {
        return "dropped".into();
    };
    let Ok(m) = Message::from_vec(r) else {
        return "an undecodable reply".into();
    };
    let name = match u16::from(m.metadata.response_code) {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        16 => "BADVERS",
        n => return format!("rcode {n}"),
    };
    if name == "NOERROR" && m.answers.is_empty() {
        "NOERROR, no answer".into()
    } else {
        name.into()
    }
}

/// Inputs of each class and what came back for them.
#[derive(Default)]
struct Tally(BTreeMap<&'static str, BTreeMap<String, usize>>);

impl Tally {
    fn add(&mut self, class: &'static str, outcome: String) {
        *self.0.entry(class).or_default().entry(outcome).or_default() += 1;
    }

    fn of(&self, class: &str) -> BTreeMap<String, usize> {
        self.0.get(class).cloned().unwrap_or_default()
    }

    fn json(&self) -> serde_json::Value {
        self.0
            .iter()
            .map(|(class, outcomes)| {
                let tried: usize = outcomes.values().sum();
                (
                    class.to_string(),
                    serde_json::json!({"tried": tried, "outcomes": outcomes}),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, n)| (k.to_string(), *n)).collect()
}

/// Read what a TCP connection gives until the server answers or closes it, or `limit` passes:
/// "a reply: RCODE", "closed by the server, no reply", or "still open".
async fn tcp_fate(conn: &mut TcpStream, limit: Duration) -> String {
    let mut len = [0u8; 2];
    match tokio::time::timeout(limit, conn.read_exact(&mut len)).await {
        Err(_) => "still open".into(),
        Ok(Err(_)) => "closed by the server, no reply".into(),
        Ok(Ok(_)) => {
            let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
            match tokio::time::timeout(limit, conn.read_exact(&mut msg)).await {
                Ok(Ok(_)) => format!("a reply: {}", outcome(Some(&msg))),
                _ => "a torn reply".into(),
            }
        }
    }
}

/// A query for m0 (type A) framed for TCP, padded with an EDNS option to `len` bytes of message.
fn framed_query(id: u16, len: usize) -> Vec<u8> {
    let mut q = header(id, 0x0100, 1, 0, 0, 1);
    q.extend_from_slice(&question_m0());
    // OPT at the root, payload 1232, one PADDING option (12) filling up to `len`.
    let pad = len - q.len() - 11 - 4;
    q.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0]);
    q.extend_from_slice(&((pad + 4) as u16).to_be_bytes());
    q.extend_from_slice(&12u16.to_be_bytes());
    q.extend_from_slice(&(pad as u16).to_be_bytes());
    q.extend(std::iter::repeat_n(0u8, pad));
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    framed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_never_stops_answers() {
    const TCP_CAP: usize = 16;
    const IDLE: Duration = Duration::from_millis(3000);
    let b = block();
    let mut c = config(&[]);
    c.max_tcp_connections = TCP_CAP;
    c.tcp_idle_timeout_ms = IDLE.as_millis() as u64;
    let s = server(&c);
    let gw = add_net(&s, &net_spec("n1", "front"), ip(b, 1)).await;
    s.table()
        .upsert_endpoint(&endpoint("n1", "member000000", "m0", v4(b, 10)))
        .unwrap();

    // The witness: another container asking for m0 all along.
    let prober = Prober::start(gw, ip(b, 20), "m0", v4(b, 10));

    let src = ip(b, 2);
    let wait = Duration::from_millis(300);
    let mut tally = Tally::default();
    let udp = async |p: &[u8]| outcome(udp_raw(gw, src, p, wait).await.as_deref());

    // Names: a compression pointer to itself, a label running past the end, a name over 255.
    const LOOPS: &str = "compression-pointer loops (in the question; in an additional record)";
    const OVERRUNS: &str = "label and name length overruns";
    let mut p = header(1, 0x0100, 1, 0, 0, 0);
    p.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1]);
    tally.add(LOOPS, udp(&p).await);
    let mut p = header(2, 0x0100, 1, 0, 0, 0);
    p.extend_from_slice(&[63, b'a', b'b']);
    tally.add(OVERRUNS, udp(&p).await);
    let mut p = header(3, 0x0100, 1, 0, 0, 0);
    for _ in 0..5 {
        p.push(63);
        p.extend_from_slice(&[b'x'; 63]);
    }
    p.extend_from_slice(&[0, 0, 1, 0, 1]);
    tally.add(OVERRUNS, udp(&p).await);
    // An additional record whose name is a pointer loop: skipped, never followed.
    let mut p = header(4, 0x0100, 1, 0, 0, 1);
    p.extend_from_slice(&question_m0());
    let at = p.len() as u16;
    p.extend_from_slice(&(0xC000 | at).to_be_bytes());
    p.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 0, 0, 0]);
    tally.add(LOOPS, udp(&p).await);
    // QDCOUNT 0 and 2.
    const QDCOUNT: &str = "QDCOUNT 0 and 2";
    for qd in [0u16, 2] {
        let mut p = header(5, 0x0100, qd, 0, 0, 0);
        p.extend_from_slice(&question_m0());
        tally.add(QDCOUNT, udp(&p).await);
    }
    // OPT: two of them; one not owned by the root; version 1 (BADVERS).
    const OPT: &str = "bad OPT records (two, not at the root, version 1)";
    let opt = |name: &[u8], version: u8| {
        let mut o = name.to_vec();
        o.extend_from_slice(&[0, 41, 4, 0, 0, version, 0, 0, 0, 0]);
        o
    };
    let mut p = header(6, 0x0100, 1, 0, 0, 2);
    p.extend_from_slice(&question_m0());
    p.extend_from_slice(&opt(&[0], 0));
    p.extend_from_slice(&opt(&[0], 0));
    tally.add(OPT, udp(&p).await);
    let mut p = header(7, 0x0100, 1, 0, 0, 1);
    p.extend_from_slice(&question_m0());
    p.extend_from_slice(&opt(&[1, b'x', 0], 0));
    tally.add(OPT, udp(&p).await);
    let mut p = header(8, 0x0100, 1, 0, 0, 1);
    p.extend_from_slice(&question_m0());
    p.extend_from_slice(&opt(&[0], 1));
    tally.add(OPT, udp(&p).await);
    // Opcodes other than QUERY: NOTIMP. A class other than IN for a local name: not local.
    const OPCODES: &str = "unknown opcodes (1, 2, 4, 5, 15)";
    for opcode in [1u16, 2, 4, 5, 15] {
        let mut p = header(9, 0x0100 | (opcode << 11), 1, 0, 0, 0);
        p.extend_from_slice(&question_m0());
        tally.add(OPCODES, udp(&p).await);
    }
    // (Not a local name in that class: forwarded, and this server has no upstream.)
    const CHAOS: &str = "a local name asked in class CHAOS (forwarded; no upstream here)";
    let mut p = header(10, 0x0100, 1, 0, 0, 0);
    p.extend_from_slice(&[2, b'm', b'0', 0, 0, 1, 0, 3]);
    tally.add(CHAOS, udp(&p).await);
    // Truncated headers: each from a socket of its own, its reply (if any) awaited.
    const TRUNCATED: &str = "truncated headers (0 to 11 bytes)";
    for len in 0..12 {
        let p = header(11, 0x0100, 1, 0, 0, 0);
        tally.add(
            TRUNCATED,
            outcome(
                udp_raw(gw, src, &p[..len], Duration::from_millis(100))
                    .await
                    .as_deref(),
            ),
        );
    }

    // Random bytes, with and without a plausible header; each with an id of its own (its
    // first two bytes), so every reply is matched to the packet that caused it.
    const RANDOM: &str = "random packets (0 to 699 bytes)";
    let mut rng = fastrand::Rng::with_seed(42);
    let sock = tokio::net::UdpSocket::bind((src, 0)).await.unwrap();
    let mut sent: BTreeMap<u16, ()> = BTreeMap::new();
    let mut no_id = 0;
    let mut replies: BTreeMap<u16, Vec<u8>> = BTreeMap::new();
    let mut buf = vec![0u8; 65535];
    for i in 0..2000u16 {
        let len = rng.usize(0..700);
        let mut junk: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        if i % 2 == 0 && junk.len() >= 12 {
            junk[2] &= 0x07; // a query with opcode 0
            junk[4] = 0;
            junk[5] = 1;
        }
        if junk.len() >= 2 {
            junk[..2].copy_from_slice(&i.to_be_bytes());
            sent.insert(i, ());
        } else {
            no_id += 1;
        }
        sock.send_to(&junk, gw).await.unwrap();
        // Paced, and replies taken as they come: the server's socket buffer never overflows,
        // so what is dropped is dropped by the server.
        while let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_micros(200), sock.recv_from(&mut buf)).await
        {
            if n >= 2 {
                replies.insert(u16::from_be_bytes([buf[0], buf[1]]), buf[..n].to_vec());
            }
        }
    }
    while let Ok(Ok((n, _))) =
        tokio::time::timeout(Duration::from_millis(300), sock.recv_from(&mut buf)).await
    {
        if n >= 2 {
            replies.insert(u16::from_be_bytes([buf[0], buf[1]]), buf[..n].to_vec());
        }
    }
    for id in sent.keys() {
        tally.add(RANDOM, outcome(replies.get(id).map(Vec::as_slice)));
    }
    for _ in 0..no_id {
        tally.add(RANDOM, "dropped".into());
    }
    assert!(
        replies.keys().all(|id| sent.contains_key(id)),
        "a reply to nothing sent"
    );

    // TCP, with the connection cap's room: length prefixes of four shapes, five each, every
    // connection read until the server answers or closes it.
    let shapes: [(&'static str, Vec<u8>, bool); 4] = [
        (
            "TCP length prefix that lies: 65,535 announced, 3 sent, the client's end closed",
            vec![0xff, 0xff, 1, 2, 3],
            true,
        ),
        (
            "TCP length prefix of 12, then 12 random bytes",
            {
                let mut v = vec![0, 12];
                v.extend((0..12).map(|_| rng.u8(..)));
                v
            },
            false,
        ),
        (
            "TCP length prefix of 5 (less than a header), 5 bytes sent",
            vec![0, 5, 1, 2, 3, 4, 5],
            false,
        ),
        ("TCP length prefix of 0", vec![0, 0], false),
    ];
    for (class, bytes, half_close) in &shapes {
        for _ in 0..5 {
            let mut liar = tcp_connect(gw, src).await;
            liar.write_all(bytes).await.unwrap();
            if *half_close {
                liar.shutdown().await.unwrap();
            }
            tally.add(
                class,
                tcp_fate(&mut liar, IDLE + Duration::from_secs(1)).await,
            );
        }
    }

    // The cap's worth of connections at once: one trickling a real query a byte every
    // 100 ms (longer than the idle timeout allows a message), one announcing 65,535 bytes
    // and sending 3, the rest idle; one more over the cap.
    const TRICKLE: &str = "a TCP client sending a query one byte every 100 ms";
    const STALLED: &str = "a TCP client announcing 65,535 bytes, sending 3, then silent";
    const IDLE_CLASS: &str = "idle TCP connections, up to the cap";
    const OVER: &str = "a TCP connection over the cap";
    let trickled = framed_query(12, 40);
    let mut trickler = tcp_connect(gw, src).await;
    let mut stalled = tcp_connect(gw, src).await;
    stalled.write_all(&[0xff, 0xff, 1, 2, 3]).await.unwrap();
    let mut idle = Vec::new();
    for _ in 0..TCP_CAP - 2 {
        idle.push(tcp_connect(gw, src).await);
    }
    // Time for the server to accept them all; the one over the cap is closed as soon as it is
    // accepted, so a generous limit costs nothing when the machine is quick (it is shared).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut over = tcp_connect(gw, src).await;
    tally.add(OVER, tcp_fate(&mut over, Duration::from_secs(2)).await);
    let began = Instant::now();
    let trickle = async {
        let mut sent_bytes = 0;
        for byte in &trickled {
            if trickler.write_all(&[*byte]).await.is_err() {
                break;
            }
            sent_bytes += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
            // Cut? A closed connection reads EOF at once.
            let mut one = [0u8; 1];
            if let Ok(r) = tokio::time::timeout(Duration::ZERO, trickler.peek(&mut one)).await {
                if matches!(r, Ok(0) | Err(_)) {
                    break;
                }
            }
        }
        let fate = tcp_fate(&mut trickler, Duration::from_secs(1)).await;
        (fate, sent_bytes)
    };
    let watch = async |conns: &mut Vec<TcpStream>| {
        let mut fates = Vec::new();
        for conn in conns.iter_mut() {
            fates.push(tcp_fate(conn, IDLE + Duration::from_secs(2)).await);
        }
        fates
    };
    let ((trickle_fate, trickle_sent), stalled_fate, idle_fates) = tokio::join!(
        trickle,
        tcp_fate(&mut stalled, IDLE + Duration::from_secs(2)),
        watch(&mut idle)
    );
    let idle_closed_after = began.elapsed();
    tally.add(
        TRICKLE,
        format!(
            "{trickle_fate} ({trickle_sent} of {} bytes sent)",
            trickled.len()
        ),
    );
    tally.add(STALLED, stalled_fate);
    for f in idle_fates {
        tally.add(IDLE_CLASS, f);
    }

    // Still serving, over UDP and TCP.
    assert_serves(gw, src, "m0", v4(b, 10)).await;
    let seen = prober.stop().await;

    // What every class got.
    let closed = "closed by the server, no reply";
    assert_eq!(tally.of(LOOPS), counts(&[("FORMERR", 1), ("NOERROR", 1)]));
    assert_eq!(tally.of(OVERRUNS), counts(&[("FORMERR", 2)]));
    assert_eq!(tally.of(QDCOUNT), counts(&[("FORMERR", 2)]));
    assert_eq!(tally.of(OPT), counts(&[("FORMERR", 2), ("BADVERS", 1)]));
    assert_eq!(tally.of(OPCODES), counts(&[("NOTIMP", 5)]));
    assert_eq!(tally.of(CHAOS), counts(&[("SERVFAIL", 1)]));
    assert_eq!(tally.of(TRUNCATED), counts(&[("dropped", 12)]));
    let random = tally.of(RANDOM);
    assert_eq!(random.values().sum::<usize>(), 2000, "{random:?}");
    assert!(!random.contains_key("an undecodable reply"), "{random:?}");
    assert!(
        random.get("dropped").is_some_and(|&n| n < 2000),
        "some random packets were answered: {random:?}"
    );
    for (class, _, _) in &shapes {
        let got = tally.of(class);
        assert_eq!(got.values().sum::<usize>(), 5, "{class}: {got:?}");
        assert!(
            !got.contains_key("still open"),
            "{class}: a slot held past the idle timeout: {got:?}"
        );
    }
    assert_eq!(tally.of(OVER), counts(&[(closed, 1)]));
    assert_eq!(tally.of(STALLED), counts(&[(closed, 1)]));
    assert_eq!(tally.of(IDLE_CLASS), counts(&[(closed, TCP_CAP - 2)]));
    assert!(
        tally.of(TRICKLE).keys().all(|k| k.starts_with(closed)),
        "the trickler was cut: {:?}",
        tally.of(TRICKLE)
    );
    assert!(
        idle_closed_after < IDLE + Duration::from_secs(2),
        "{idle_closed_after:?}"
    );
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
        "classes": tally.json(),
        "tcp_cap": TCP_CAP,
        "tcp_idle_ms": IDLE.as_millis() as u64,
        "idle_closed_after_ms": idle_closed_after.as_millis() as u64,
        "prober_answered": seen.answered,
        "prober_failed": seen.failed,
        "prober_worst_ms": seen.worst.as_secs_f64() * 1000.0,
        "idle_cpu_ticks_per_s": spent,
    }));
    assert!(spent <= 5, "{spent} ticks of CPU in a second of idleness");
}
