//! The standalone `resolver` process under forwarding load and faults, watched from outside:
//! its resident memory while a TCP client pipelines without reading, and its log when an
//! upstream goes away and comes back.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use tokio::io::AsyncWriteExt;

/// Start the resolver on a records file for network `front` (gateway .1, containers .2, .3,
/// a local name `local` at .10) with `upstreams` and extra `[dns]` settings; wait for "ready".
fn start(b: [u8; 3], dir: &Path, upstreams: &[SocketAddr], dns: &str) -> (Running, u16) {
    let path = dir.join("records.toml");
    let records = format!(
        "[dns]\n{dns}\n[[network]]\nname = \"front\"\nlisten = [\"{gw}\"]\n\n\
         [[container]]\nname = \"a\"\n[[container.endpoint]]\nnetwork = \"front\"\nipv4 = \"{a}\"\n\n\
         [[container]]\nname = \"b\"\n[[container.endpoint]]\nnetwork = \"front\"\nipv4 = \"{b3}\"\n\n\
         [[container]]\nname = \"local\"\n[[container.endpoint]]\nnetwork = \"front\"\nipv4 = \"{l}\"\n",
        gw = ip(b, 1),
        a = ip(b, 2),
        b3 = ip(b, 3),
        l = ip(b, 10),
    );
    std::fs::write(&path, records).unwrap();
    let port = free_port(ip(b, 1));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_resolver"));
    cmd.args([
        "--records",
        path.to_str().unwrap(),
        "--port",
        &port.to_string(),
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    for u in upstreams {
        cmd.args(["--upstream", &u.to_string()]);
    }
    let mut child = cmd
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("resolver.log")).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let running = Running(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    (running, port)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// A client pipelining 10,000 unique forwarded names over one TCP connection without reading
/// a reply: the resolver stops reading that connection at its per-connection cap, so its
/// memory stays bounded, and other containers are answered meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_client_pipelining_without_reading_holds_bounded_memory() {
    let b = block();
    // About 1.2 KB per reply, so replies held for the client would show in the RSS.
    let up = upstream(Behaviour::Oversized(70)).await;
    let dir = tempfile::tempdir().unwrap();
    // No cache: it would keep every distinct answer (legitimately, up to its byte budget),
    // and what is measured here is what the connection holds.
    // The idle timeout shorter than the run, so the writer gives up on the client during it.
    let (running, port) = start(
        b,
        dir.path(),
        &[up.addr],
        "cache_bytes = 0\ntcp_idle_timeout_ms = 1000",
    );
    let pid = running.0.id();
    let gw = SocketAddr::new(ip(b, 1), port);
    for i in 0..50 {
        let m = tcp_ask(gw, ip(b, 3), &format!("warm{i}.example"), RecordType::A).await;
        assert_eq!(a_records(&m).len(), 70);
    }
    let before = rss_kib(pid);
    let mut stream = tcp_connect(gw, ip(b, 2)).await;
    let mut all = Vec::new();
    for i in 0..10_000 {
        let bytes = with_edns(
            question(&format!("p{i}.pipelined.example"), RecordType::A),
            4096,
        )
        .to_vec()
        .unwrap();
        all.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        all.extend_from_slice(&bytes);
    }
    // The write blocks once the resolver stops reading: leave it pending.
    let writer = tokio::spawn(async move {
        let _ = stream.write_all(&all).await;
        stream
    });
    let mut peak = before;
    for i in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(rss_kib(pid));
        let m = tcp_ask(gw, ip(b, 3), &format!("other{i}.example"), RecordType::A).await;
        assert_eq!(
            rcode(&m),
            ResponseCode::NoError,
            "another container is answered"
        );
        assert_eq!(a_records(&m).len(), 70);
        assert_eq!(
            a_records(&ask(gw, ip(b, 3), "local", RecordType::A).await),
            [v4(b, 10)]
        );
    }
    let asked = up.count();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let asked_later = up.count();
    let grown = peak.saturating_sub(before);
    report(serde_json::json!({
        "test": "tcp_pipelining_rss",
        "pipelined_queries": 10_000,
        "upstream_queries_seen": asked,
        "rss_before_kib": before,
        "rss_peak_kib": peak,
        "rss_growth_kib": grown,
    }));
    // Measured: 220 KiB with the cap of 32; 5.6 MB with `max_inflight_per_tcp = 100000`
    // (every query read, the replies held in tasks waiting for the writer). The replies the
    // kernel's socket buffers hold are not in the RSS.
    assert!(grown < 2 * 1024, "RSS grew {grown} KiB");
    // The writer gave up on the client after its idle second, and the reader with it: the
    // rest of the pipeline is not forwarded.
    assert!(asked < 10_000, "the whole pipeline was forwarded");
    assert_eq!(
        asked, asked_later,
        "forwarding went on after the connection was given up"
    );
    writer.abort();
}

/// When an upstream stops answering the log says so at once, and again when it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_state_changes_are_logged_when_they_happen() {
    let b = block();
    let first = upstream(Behaviour::Answer("192.0.2.91".parse().unwrap(), 0)).await;
    let second = upstream(Behaviour::Answer("192.0.2.92".parse().unwrap(), 0)).await;
    first.set_mute(true);
    let dir = tempfile::tempdir().unwrap();
    let (running, port) = start(
        b,
        dir.path(),
        &[first.addr, second.addr],
        "forward_timeout_ms = 300\nstrict_order = true",
    );
    let gw = SocketAddr::new(ip(b, 1), port);
    let log = dir.path().join("resolver.log");
    let m = ask(gw, ip(b, 2), "x.example", RecordType::A).await;
    assert_eq!(
        a_records(&m),
        ["192.0.2.92".parse::<std::net::Ipv4Addr>().unwrap()]
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("upstream demoted") && text.contains(&first.addr.to_string()),
        "{text}"
    );
    first.set_mute(false);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(&log).unwrap();
        if text.contains("back in service") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no 'back in service' line: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(running);
}
