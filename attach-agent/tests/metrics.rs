//! Observability through its real consumers: `/metrics` as promtool checks it and as a
//! Prometheus server started here scrapes it (PromQL through its HTTP API), `/health` and
//! `/ready` as a service manager polls them, and `attach-agent info`.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::stub::Stub;
use common::Env;
use test_support::prometheus::{http_get, http_head_of_get, promtool_check, sample, Prometheus};

/// Where this environment's daemon serves its metrics (asked for on port 0).
fn metrics_addr(env: &Env) -> SocketAddr {
    let v: serde_json::Value = serde_json::from_str(&env.ok(&["info", "--json"])).unwrap();
    v["MetricsAddr"]
        .as_str()
        .expect("info names the metrics address")
        .parse()
        .unwrap()
}

fn scrape(addr: SocketAddr) -> String {
    let (status, body) = http_get(addr, "/metrics").expect("GET /metrics");
    assert_eq!(status, 200, "{body}");
    body
}

/// Queries of each kind from inside containers, then: the exposition counts each exactly,
/// promtool accepts it, and Prometheus scraping it sees the query counter rise as more are
/// sent.
#[test]
fn queries_and_operations_are_counted_promtool_accepts_them_and_prometheus_scrapes_them() {
    let mut env = Env::without_daemon();
    let o = env.octet;
    let stub = Stub::start(
        std::net::Ipv4Addr::new(127, o, 0, 53),
        std::net::Ipv4Addr::new(192, 0, 2, 7),
    );
    let upstream = format!("127.{o}.0.53:53");
    env.upstreams = vec![upstream.clone()];
    env.start_daemon();
    let addr = metrics_addr(&env);
    assert_eq!(http_get(addr, "/health").unwrap(), (200, "ok\n".into()));
    let (status, ready) = http_get(addr, "/ready").unwrap();
    assert_eq!(
        (status, ready.as_str()),
        (
            200,
            "ready\nok state loaded\nok reconciled with the kernel, DNS listeners open\nok every network and endpoint back\nok API socket listening\n"
        )
    );
    let head = http_head_of_get(addr, "/metrics").unwrap();
    assert!(
        head.contains("text/plain; version=0.0.4"),
        "the text format's content type: {head}"
    );

    let (c1, c2, c3) = (env.name("c1"), env.name("c2"), env.name("c3"));
    env.ok(&["network", "create", "--subnet", &env.subnet(1), "front"]);
    env.ok(&["network", "create", "--subnet", &env.subnet(2), "back"]);
    env.ok(&["run", "--name", &c1, "--network", "front", "busybox"]);
    env.ok(&["run", "--name", &c2, "--network", "front", "busybox"]);
    env.ok(&["run", "--name", &c3, "--network", "back", "busybox"]);
    for _ in 0..3 {
        assert_eq!(env.dig(&c1, &[&c2]), env.ip(1, 3));
    }
    assert_eq!(env.dig(&c1, &[&c2, "AAAA"]), "", "NODATA: no IPv6 here");
    assert_eq!(env.dig(&c1, &[&c3]), "", "NXDOMAIN: another network's");
    assert_eq!(env.dig(&c1, &["www.example.com"]), "192.0.2.7");
    assert_eq!(env.dig(&c1, &["www.example.com"]), "192.0.2.7");
    assert_eq!(env.dig(&c1, &["+tcp", &c2]), env.ip(1, 3));
    assert_eq!(stub.count(), 1, "the second answer came from the cache");

    let text = scrape(addr);
    let queries = |transport: &str, outcome: &str| {
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
    assert_eq!(queries("udp", "local"), Some(3.0), "{text}");
    assert_eq!(queries("udp", "nodata"), Some(1.0));
    assert_eq!(queries("udp", "nxdomain"), Some(1.0));
    assert_eq!(queries("udp", "forwarded"), Some(1.0));
    assert_eq!(queries("udp", "cached"), Some(1.0));
    assert_eq!(queries("udp", "servfail"), Some(0.0));
    assert_eq!(queries("tcp", "local"), Some(1.0));
    let counted = |name: &str, labels: &[(&str, &str)]| sample(&text, name, labels);
    assert_eq!(
        counted(
            "attach_agent_dns_answer_duration_seconds_count",
            &[("source", "local")]
        ),
        Some(6.0),
        "3 answers, a NODATA and an NXDOMAIN over UDP, one answer over TCP"
    );
    assert_eq!(
        counted(
            "attach_agent_dns_answer_duration_seconds_count",
            &[("source", "forwarded")]
        ),
        Some(1.0)
    );
    let up = [("upstream", upstream.as_str())];
    assert_eq!(
        counted("attach_agent_dns_upstream_queries_total", &up),
        Some(1.0)
    );
    assert_eq!(counted("attach_agent_dns_upstream_healthy", &up), Some(1.0));
    let rtt = counted("attach_agent_dns_upstream_rtt_seconds", &up).expect("an RTT");
    assert!(rtt > 0.0 && rtt < 2.0, "rtt {rtt}");
    assert_eq!(counted("attach_agent_dns_cache_entries", &[]), Some(1.0));
    assert_eq!(counted("attach_agent_dns_cache_hits_total", &[]), Some(1.0));
    assert_eq!(
        counted("attach_agent_dns_cache_misses_total", &[]),
        Some(1.0)
    );
    assert_eq!(
        counted("attach_agent_dns_forwarded_in_flight", &[]),
        Some(0.0)
    );
    assert_eq!(counted("attach_agent_networks", &[]), Some(2.0));
    assert_eq!(
        counted("attach_agent_containers", &[("state", "up")]),
        Some(3.0)
    );
    assert_eq!(
        counted("attach_agent_endpoints", &[("network", "front")]),
        Some(2.0)
    );
    assert_eq!(
        counted("attach_agent_endpoints", &[("network", "back")]),
        Some(1.0)
    );
    assert_eq!(
        counted(
            "attach_agent_operations_total",
            &[("operation", "start"), ("result", "ok")]
        ),
        Some(3.0)
    );
    assert_eq!(
        counted(
            "attach_agent_operation_duration_seconds_count",
            &[("operation", "start")]
        ),
        Some(3.0)
    );
    let writes = counted("attach_agent_state_write_duration_seconds_count", &[]).unwrap();
    assert!(writes >= 5.0, "two networks, three containers: {writes}");
    assert_eq!(counted("attach_agent_ready", &[]), Some(1.0));
    let (ok, said) = promtool_check(&text);
    assert!(ok, "promtool check metrics: {said}\n{text}");

    // A failed operation is counted as one.
    env.fails(&["network", "disconnect", "front", &env.name("nobody")]);
    let text = scrape(addr);
    assert_eq!(
        sample(
            &text,
            "attach_agent_operations_total",
            &[("operation", "disconnect"), ("result", "error")]
        ),
        Some(1.0)
    );

    // The summary says the same.
    let info = env.ok(&["info"]);
    assert!(info.starts_with("Ready: yes\n"), "{info}");
    assert!(
        info.contains("DNS queries: 8 (local 4, nodata 1, nxdomain 1, forwarded 1, cached 1)"),
        "{info}"
    );
    assert!(info.contains(&format!("{upstream}  healthy")), "{info}");
    assert!(info.contains("start: 3 ok, 0 failed"), "{info}");

    // A real Prometheus: it scrapes the agent, and PromQL sees the counter rise.
    let prom = Prometheus::scraping(addr, "attach_agent");
    assert_eq!(
        prom.wait_for("up{job=\"attach_agent\"}", Duration::from_secs(30), |v| v
            == 1.0),
        Ok(1.0),
        "the scrape target is up; prometheus said:\n{}",
        prom.log()
    );
    let local = "sum(attach_agent_dns_queries_total{outcome=\"local\"})";
    let before = prom
        .wait_for(local, Duration::from_secs(30), |v| v >= 4.0)
        .unwrap_or_else(|last| panic!("PromQL {local}: {last:?}\n{}", prom.log()));
    assert_eq!(before, 4.0);
    for _ in 0..5 {
        assert_eq!(env.dig(&c2, &[&c1]), env.ip(1, 2));
    }
    let after = prom.wait_for(local, Duration::from_secs(30), |v| v >= before + 5.0);
    assert_eq!(
        after,
        Ok(before + 5.0),
        "five more local answers seen by Prometheus"
    );
}

/// `/ready` answers 503 with what is missing while the daemon starts (here: a cluster store
/// that does not answer holds the start for its probe), `/metrics` says `attach_agent_ready 0`
/// meanwhile, then both turn.
#[test]
fn ready_is_503_until_the_start_is_done() {
    let mut env = Env::without_daemon();
    let store_port = test_support::prometheus::free_port();
    let metrics_port = test_support::prometheus::free_port();
    let addr: SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    env.daemon_args = vec![
        "--cluster-store".into(),
        format!("etcd://127.0.0.1:{store_port}"),
        "--advertise-addr".into(),
        format!("127.{}.0.1", env.octet),
        "--metrics-addr".into(),
        addr.to_string(),
    ];
    let started = std::thread::spawn(move || {
        env.start_daemon();
        env
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = None;
    while Instant::now() < deadline {
        if let Ok((503, body)) = http_get(addr, "/ready") {
            seen = Some((body, scrape(addr)));
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let env = started.join().unwrap();
    let (body, text) = seen.expect("a 503 from /ready while the start waits for the store");
    assert!(
        body.starts_with("not ready\nok state loaded\nno reconciled"),
        "{body}"
    );
    assert_eq!(
        sample(&text, "attach_agent_ready", &[]),
        Some(0.0),
        "{text}"
    );
    let (ok, said) = promtool_check(&text);
    assert!(ok, "{said}");
    assert_eq!(http_get(addr, "/ready").unwrap().0, 200);
    let text = scrape(addr);
    assert_eq!(sample(&text, "attach_agent_ready", &[]), Some(1.0));
    assert_eq!(
        sample(&text, "attach_agent_cluster_store_reachable", &[]),
        Some(0.0),
        "{text}"
    );
    drop(env);
}

/// `--metrics-addr ""` turns the listener off; a bad address or a taken port stops the
/// daemon before it changes anything, with the reason.
#[test]
fn metrics_can_be_turned_off_and_a_bad_address_is_refused() {
    let mut env = Env::without_daemon();
    env.daemon_args = vec!["--metrics-addr".into(), String::new()];
    env.start_daemon();
    let info = env.ok(&["info"]);
    assert!(info.contains("\nMetrics: off\n"), "{info}");
    drop(env);

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    for (flag, says) in [
        (
            "localhost:1",
            "metrics_addr \"localhost:1\": expected IP:PORT".to_string(),
        ),
        (
            taken_addr.as_str(),
            format!("metrics_addr {taken_addr}: Address already in use"),
        ),
    ] {
        let env = Env::without_daemon();
        let out = Command::new(env!("CARGO_BIN_EXE_attach-agent"))
            .args(["daemon", "--socket"])
            .arg(&env.socket)
            .arg("--state-dir")
            .arg(env.state_dir())
            .args(["--link-prefix", &env.prefix, "--metrics-addr", flag])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains(&says), "{stderr}");
        assert!(!env.socket.exists(), "no API socket made");
        assert!(!env.state_dir().exists(), "no state made");
    }
}

/// Links made again at start are counted: a network's bridge and a running container's veth
/// deleted while the daemon was down make `attach_agent_links_recreated_total` 2 after the
/// restart (and nothing swept: they were the state's own), and the container is back.
#[test]
fn links_made_again_at_start_are_counted() {
    let mut env = Env::new();
    env.ok(&["network", "create", "--subnet", &env.subnet(1), "n1"]);
    let a = env.name("a");
    env.ok(&["run", "--name", &a, "--network", "n1", "busybox"]);
    let links = env.links();
    let bridge = links.iter().find(|l| l.contains('-')).expect("the bridge");
    let veth = links.iter().find(|l| !l.contains('-')).expect("a's veth");
    env.kill_daemon();
    for link in [veth, bridge] {
        let deleted = Command::new("ip")
            .args(["link", "delete", link])
            .status()
            .unwrap();
        assert!(deleted.success(), "ip link delete {link}");
    }
    env.start_daemon();
    let text = scrape(metrics_addr(&env));
    assert_eq!(
        sample(&text, "attach_agent_links_recreated_total", &[]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "attach_agent_links_swept_total", &[]),
        Some(0.0)
    );
    assert_eq!(env.addrs_in(&a, "eth0"), [format!("{}/24", env.ip(1, 2))]);
}
