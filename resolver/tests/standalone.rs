//! The standalone `resolver` binary on a records file, queried with dig, reloaded while a
//! prober keeps asking.

mod common;

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn records(b: [u8; 3], extra: &str) -> String {
    format!(
        r#"
[dns]
ttl = 30

[[network]]
name = "front"
listen = ["{gw}"]

[[container]]
name = "web"
hostname = "web-host"
[[container.endpoint]]
network = "front"
ipv4 = "{web}"
aliases = ["www"]

[[container]]
name = "client"
[[container.endpoint]]
network = "front"
ipv4 = "{client}"
links = ["web:frontend"]
{extra}
"#,
        gw = ip(b, 1),
        web = ip(b, 2),
        client = ip(b, 3)
    )
}

fn dig(server: IpAddr, port: u16, src: IpAddr, args: &[&str]) -> String {
    let out = Command::new("dig")
        .args([
            format!("@{server}"),
            "-p".into(),
            port.to_string(),
            "-b".into(),
            src.to_string(),
            "+time=2".into(),
            "+tries=1".into(),
        ])
        .args(args)
        .output()
        .expect("dig must be installed (bind9-dnsutils)");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_a_records_file_to_dig_and_reloads_without_dropping_queries() {
    let b = block();
    let up = upstream(Behaviour::Answer("192.0.2.53".parse().unwrap(), 60)).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("records.toml");
    std::fs::write(&path, records(b, "")).unwrap();
    let port = free_port(ip(b, 1));
    // Its log goes to a file, as under a service manager: the filter from RUST_LOG alone.
    let log = dir.path().join("resolver.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_resolver"))
        .args([
            "--records",
            path.to_str().unwrap(),
            "--port",
            &port.to_string(),
        ])
        .args(["--upstream", &up.addr.to_string()])
        .args(["--metrics-addr", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let running = Running(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");

    let (gw, client) = (ip(b, 1), ip(b, 3));
    assert_eq!(
        dig(gw, port, client, &["+short", "www"]),
        ip(b, 2).to_string()
    );
    assert_eq!(
        dig(gw, port, client, &["+short", "+tcp", "web-host"]),
        ip(b, 2).to_string()
    );
    assert_eq!(
        dig(gw, port, client, &["+short", "frontend"]),
        ip(b, 2).to_string()
    );
    assert_eq!(
        dig(gw, port, client, &["+short", "example.com"]),
        "192.0.2.53"
    );
    let full = dig(gw, port, client, &["+noall", "+answer", "WEB.front"]);
    let fields: Vec<&str> = full.split_whitespace().collect();
    assert_eq!(
        fields,
        ["WEB.front.", "30", "IN", "A", &ip(b, 2).to_string()],
        "{full}"
    );

    // A prober asks for "web" the whole time the file changes.
    let prober = Prober::start(std::net::SocketAddr::new(gw, port), client, "web", v4(b, 2));

    // A new container appears when the file changes.
    let db = format!(
        "[[container]]\nname = \"db\"\n[[container.endpoint]]\nnetwork = \"front\"\nipv4 = \"{}\"\n",
        ip(b, 4)
    );
    write_atomically(&path, &records(b, &db));
    let deadline = Instant::now() + Duration::from_secs(5);
    while dig(gw, port, client, &["+short", "db"]) != ip(b, 4).to_string() {
        assert!(Instant::now() < deadline, "file change not picked up");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A broken file is rejected and the old records stay.
    write_atomically(&path, "[[network]]\nname = \"front\"\nbogus = 1\n");
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(
        dig(gw, port, client, &["+short", "db"]),
        ip(b, 4).to_string()
    );
    // SIGHUP reloads too: db goes away (and, no longer local, is forwarded).
    std::fs::write(&path, records(b, "")).unwrap();
    // SAFETY: kill has no memory preconditions; the pid is our own running child's.
    unsafe { libc::kill(running.0.id() as i32, libc::SIGHUP) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while dig(gw, port, client, &["+short", "db"]) != "192.0.2.53" {
        assert!(Instant::now() < deadline, "SIGHUP reload not seen");
        std::thread::sleep(Duration::from_millis(100));
    }
    let seen = prober.stop().await;
    assert!(seen.answered > 50, "{seen:?}");
    assert_eq!(seen.failed, 0, "no query lost across reloads");
    drop(running);

    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains("INFO") && log.contains("serving"),
        "RUST_LOG=info shows the info lines: {log}"
    );
    assert!(
        log.contains("records file rejected"),
        "the broken file is logged: {log}"
    );
    assert!(
        !log.contains('\x1b'),
        "a log that is not a terminal has no ANSI escapes: {log:?}"
    );
}

/// The standalone resolver serves `/metrics`, `/health` and `/ready` too: each kind of query
/// counted once under its outcome and transport, the upstream and cache figures, and an
/// exposition promtool accepts. With `--metrics-addr ""` there is no listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_metrics_that_count_every_query_once() {
    use test_support::prometheus::{http_get, promtool_check, sample};
    let b = block();
    let up = upstream(Behaviour::Answer("192.0.2.53".parse().unwrap(), 60)).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("records.toml");
    std::fs::write(&path, records(b, "")).unwrap();
    let port = free_port(ip(b, 1));
    let start = |metrics: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_resolver"))
            .args(["--records", path.to_str().unwrap()])
            .args(["--port", &port.to_string()])
            .args(["--upstream", &up.addr.to_string()])
            .args(["--metrics-addr", metrics])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let running = Running(child);
        assert_eq!(lines.next().unwrap().unwrap(), "ready");
        (running, lines.next().unwrap().unwrap())
    };
    let (off, said) = start("");
    assert_eq!(said, "metrics off");
    drop(off);

    let (running, said) = start("127.0.0.1:0");
    let addr: std::net::SocketAddr = said
        .strip_prefix("metrics http://")
        .unwrap_or_else(|| panic!("{said:?}"))
        .parse()
        .unwrap();
    assert_eq!(http_get(addr, "/health").unwrap(), (200, "ok\n".into()));
    assert_eq!(
        http_get(addr, "/ready").unwrap(),
        (200, "ready\nok records loaded and listeners open\n".into())
    );
    let (gw, client) = (ip(b, 1), ip(b, 3));
    for _ in 0..2 {
        assert_eq!(
            dig(gw, port, client, &["+short", "www"]),
            ip(b, 2).to_string()
        );
    }
    assert_eq!(dig(gw, port, client, &["+short", "web", "AAAA"]), "");
    for _ in 0..2 {
        assert_eq!(
            dig(gw, port, client, &["+short", "example.com"]),
            "192.0.2.53"
        );
    }
    assert_eq!(
        dig(gw, port, client, &["+short", "+tcp", "www"]),
        ip(b, 2).to_string()
    );
    // A header announcing five questions and carrying none: FORMERR.
    let sock = std::net::UdpSocket::bind((client, 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    sock.send_to(&[0x12, 0x34, 1, 0, 0, 5, 0, 0, 0, 0, 0, 0], (gw, port))
        .unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = sock.recv_from(&mut buf).expect("a FORMERR reply");
    assert_eq!(buf[3] & 0x0f, 1, "FORMERR: {:?}", &buf[..n]);

    let (status, text) = http_get(addr, "/metrics").unwrap();
    assert_eq!(status, 200);
    let q = |transport: &str, outcome: &str| {
        sample(
            &text,
            "attach_agent_dns_queries_total",
            &[
                ("network", "front"),
                ("transport", transport),
                ("outcome", outcome),
            ],
        )
    };
    assert_eq!(q("udp", "local"), Some(2.0), "{text}");
    assert_eq!(q("udp", "nodata"), Some(1.0));
    assert_eq!(q("udp", "forwarded"), Some(1.0));
    assert_eq!(q("udp", "cached"), Some(1.0));
    assert_eq!(q("udp", "formerr"), Some(1.0));
    assert_eq!(q("udp", "nxdomain"), Some(0.0));
    assert_eq!(q("tcp", "local"), Some(1.0));
    let upstream = [("upstream", up.addr.to_string())];
    let upstream: Vec<(&str, &str)> = upstream.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(
        sample(&text, "attach_agent_dns_upstream_queries_total", &upstream),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "attach_agent_dns_upstream_healthy", &upstream),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "attach_agent_dns_cache_hits_total", &[]),
        Some(1.0)
    );
    assert_eq!(sample(&text, "attach_agent_dns_endpoints", &[]), Some(2.0));
    assert_eq!(sample(&text, "attach_agent_ready", &[]), Some(1.0));
    let (ok, said) = promtool_check(&text);
    assert!(ok, "promtool check metrics: {said}\n{text}");
    drop(running);
}
