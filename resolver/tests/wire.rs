//! Wire rules through real sockets: EDNS, truncation, TCP, bad packets, listener churn.

mod common;

use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use tokio::io::AsyncWriteExt;

/// A server with `n` containers sharing the alias "pool" on network n1.
async fn pool_server(n: u8) -> (resolver::Server, std::net::SocketAddr, [u8; 3]) {
    let b = block();
    let s = server(&config(&[]));
    let gw = add_net(&s, &net_spec("n1", "front"), ip(b, 1)).await;
    for i in 0..n {
        let mut e = endpoint(
            "n1",
            &format!("member{i:06}"),
            &format!("m{i}"),
            v4(b, 10 + i),
        );
        e.aliases = vec!["pool".into()];
        s.table().upsert_endpoint(&e).unwrap();
    }
    (s, gw, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opt_record_only_when_the_query_had_one() {
    let (_s, gw, b) = pool_server(1).await;
    let m = udp(
        gw,
        ip(b, 2),
        &with_edns(question("m0", RecordType::A), 1232),
    )
    .await;
    let e = m.edns.expect("OPT in the reply to an EDNS query");
    assert!(e.max_payload() >= 512);
    let m = ask(gw, ip(b, 2), "m0", RecordType::A).await;
    assert!(m.edns.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_replies_fit_512_or_the_edns_size_with_tc_when_cut() {
    let (_s, gw, b) = pool_server(40).await;
    // 40 A records are 652 bytes: too many for 512.
    let q = question("pool", RecordType::A);
    let raw = udp_raw(gw, ip(b, 2), &q.to_vec().unwrap(), Duration::from_secs(3))
        .await
        .unwrap();
    assert!(raw.len() <= 512, "{} bytes", raw.len());
    let m = Message::from_vec(&raw).unwrap();
    assert!(m.metadata.truncation);
    assert!(m.answers.len() < 40);
    // With EDNS 4096 they fit.
    let m = udp(
        gw,
        ip(b, 2),
        &with_edns(question("pool", RecordType::A), 4096),
    )
    .await;
    assert!(!m.metadata.truncation);
    assert_eq!(a_records(&m).len(), 40);
    // With EDNS 600, cut again, OPT kept.
    let q = with_edns(question("pool", RecordType::A), 600);
    let raw = udp_raw(gw, ip(b, 2), &q.to_vec().unwrap(), Duration::from_secs(3))
        .await
        .unwrap();
    assert!(raw.len() <= 600);
    let m = Message::from_vec(&raw).unwrap();
    assert!(m.metadata.truncation && m.edns.is_some());
    // TCP carries all of them.
    let m = tcp_ask(gw, ip(b, 2), "pool", RecordType::A).await;
    assert!(!m.metadata.truncation);
    assert_eq!(a_records(&m).len(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_serves_many_queries_per_connection_pipelined() {
    let (_s, gw, b) = pool_server(5).await;
    let mut st = tcp_connect(gw, ip(b, 2)).await;
    let qs: Vec<Message> = (0..5)
        .map(|i| question(&format!("m{i}"), RecordType::A))
        .collect();
    for q in &qs {
        tcp_send(&mut st, q).await;
    }
    let mut seen = Vec::new();
    for _ in 0..5 {
        let m = tokio::time::timeout(Duration::from_secs(3), tcp_recv(&mut st))
            .await
            .unwrap()
            .unwrap();
        let i = qs
            .iter()
            .position(|q| q.metadata.id == m.metadata.id)
            .unwrap();
        assert_eq!(a_records(&m), [v4(b, 10 + i as u8)]);
        seen.push(i);
    }
    seen.sort();
    assert_eq!(seen, [0, 1, 2, 3, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tcp_connections_are_closed() {
    let b = block();
    let mut c = config(&[]);
    c.tcp_idle_timeout_ms = 300;
    let s = server(&c);
    let gw = add_net(&s, &net_spec("n1", "front"), ip(b, 1)).await;
    let mut st = tcp_connect(gw, ip(b, 2)).await;
    let started = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(3), tcp_recv(&mut st)).await;
    assert!(
        matches!(closed, Ok(None)),
        "the server closed the idle connection"
    );
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_tcp_clients_delay_nobody() {
    let (_s, gw, b) = pool_server(1).await;
    // Ten connections that send one byte of a length prefix and stall.
    let mut stalled = Vec::new();
    for _ in 0..10 {
        let mut st = tcp_connect(gw, ip(b, 3)).await;
        st.write_all(&[0]).await.unwrap();
        stalled.push(st);
    }
    // And one that announces a long message and trickles it.
    let mut trickle = tcp_connect(gw, ip(b, 3)).await;
    trickle.write_all(&[0, 200, 1]).await.unwrap();
    for _ in 0..20 {
        let started = Instant::now();
        assert_eq!(
            a_records(&ask(gw, ip(b, 2), "m0", RecordType::A).await),
            [v4(b, 10)]
        );
        assert_eq!(
            a_records(&tcp_ask(gw, ip(b, 2), "m0", RecordType::A).await),
            [v4(b, 10)]
        );
        assert!(started.elapsed() < Duration::from_millis(500));
        trickle.write_all(&[1]).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_packets_get_formerr_notimp_or_nothing_and_the_server_goes_on() {
    let (_s, gw, b) = pool_server(1).await;
    let src = ip(b, 2);
    let wait = Duration::from_millis(300);
    // Too short for a header: dropped.
    assert!(udp_raw(gw, src, &[1, 2, 3], wait).await.is_none());
    // A response (QR set): dropped, never answered (no reflection loops).
    let mut resp = question("m0", RecordType::A).to_vec().unwrap();
    resp[2] |= 0x80;
    assert!(udp_raw(gw, src, &resp, wait).await.is_none());
    // QDCOUNT 0 and 2: FORMERR.
    let mut q = question("m0", RecordType::A).to_vec().unwrap();
    q[5] = 0;
    let r = Message::from_vec(&udp_raw(gw, src, &q, wait).await.unwrap()).unwrap();
    assert_eq!(rcode(&r), ResponseCode::FormErr);
    q[5] = 2;
    let r = Message::from_vec(&udp_raw(gw, src, &q, wait).await.unwrap()).unwrap();
    assert_eq!(rcode(&r), ResponseCode::FormErr);
    // Label running past the end: FORMERR.
    let mut q = question("m0", RecordType::A).to_vec().unwrap();
    q[12] = 60;
    let r = Message::from_vec(&udp_raw(gw, src, &q, wait).await.unwrap()).unwrap();
    assert_eq!(rcode(&r), ResponseCode::FormErr);
    // NOTIFY (opcode 4): NOTIMP.
    let mut q = question("m0", RecordType::A).to_vec().unwrap();
    q[2] = (q[2] & 0x87) | (4 << 3);
    let r = Message::from_vec(&udp_raw(gw, src, &q, wait).await.unwrap()).unwrap();
    assert_eq!(rcode(&r), ResponseCode::NotImp);
    // Random garbage, a few hundred times.
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..300 {
        let len = rng.usize(0..600);
        let junk: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        let sock = tokio::net::UdpSocket::bind((src, 0)).await.unwrap();
        sock.send_to(&junk, gw).await.unwrap();
    }
    // A TCP message of length 0 and one that lies about its length.
    let mut st = tcp_connect(gw, src).await;
    st.write_all(&[0, 0]).await.unwrap();
    let mut st2 = tcp_connect(gw, src).await;
    st2.write_all(&[0xff, 0xff, 1, 2, 3]).await.unwrap();
    drop(st2);
    // Still answering.
    assert_serves(gw, src, "m0", v4(b, 10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_come_and_go_without_disturbing_other_networks() {
    let (s, gw, b) = pool_server(1).await;
    let prober = Prober::start(gw, ip(b, 2), "m0", v4(b, 10));
    let other = [b[0], b[1], b[2]];
    for round in 0..30u8 {
        let id = format!("churn{round}");
        let addr = add_net(&s, &net_spec(&id, &id), ip(other, 128 + round)).await;
        assert_eq!(
            rcode(&ask(addr, ip(other, 250), "nothing-here", RecordType::A).await),
            ResponseCode::ServFail
        );
        s.remove_network(&id).await;
    }
    // The same address can be taken again right away.
    add_net(&s, &net_spec("again", "again"), ip(other, 128)).await;
    // Keep probing a while after the churn too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = prober.stop().await;
    assert_eq!(seen.failed, 0, "{seen:?}");
    assert!(seen.answered > 20, "{seen:?}");
    assert_eq!(s.table().network_count(), 2);
}
