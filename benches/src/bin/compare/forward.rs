//! The forwarding comparison: names that are not containers', answered through each server
//! from one upstream that every server shares: a dnsmasq on 127.80.0.1:53 (pinned to the load
//! core) serving `fI.fwd.test` from a hosts file.
//!
//! Three measurements per server:
//! - **cached**: the upstream's TTL is an hour, so after a warm-up every answer can come from
//!   the server's cache;
//! - **uncacheable**: TTL 0, so every query goes upstream;
//! - **dead first upstream**: the first configured server is a black hole (a socket on
//!   127.81.0.1:53 that never reads), the second the real upstream; 100 distinct TTL-0 names
//!   asked one after another (dnsperf, one query outstanding), latency of each.
//!
//! Servers: the echo floor, our standalone resolver, the full agent (dnsperf inside a
//! container's namespace), dnsmasq as a caching forwarder, aardvark-dns (its upstreams come
//! from /etc/resolv.conf only, so it runs in a private mount namespace with its own file bound
//! there), and Docker 20.10's embedded DNS (`docker run --dns`; it forwards from the
//! container's namespace, so its copy of the upstream listens on the bench bridge's gateway).

use std::fmt::Write as _;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bench::namespaced::{self, Target};
use serde::Serialize;

use crate::dnsperf::{dnsperf, dnsperf_command, latency, median, saturation, Latency, Saturation};
use crate::peers::{self, wait_answer, which, write, Kind, Server};
use crate::{LOAD_CPU, PORT, SERVER_CPU};

const UPSTREAM: &str = "127.80.0.1";
const BLACK_HOLE: &str = "127.81.0.1";
/// Docker's: the bench network's gateway (on bridge `bcd-br0`), and a second address there.
const DOCKER_UPSTREAM: &str = "10.198.0.1";
const DOCKER_HOLE: &str = "10.198.255.254";
/// Names the upstream serves (and the cached runs ask).
const NAMES: u32 = 1000;
/// How long a server may take to answer its first forwarded name.
const WAIT: Duration = Duration::from_secs(60);
/// Distinct misses of the dead-first-upstream run (`--quick`: 10; a server that waits out the
/// dead server each time takes seconds a miss).
const MISSES: u32 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) enum Mode {
    Cached,
    Uncacheable,
}

impl Mode {
    fn ttl(self) -> u32 {
        match self {
            Mode::Cached => 3600,
            Mode::Uncacheable => 0,
        }
    }
    pub(crate) fn label(self) -> &'static str {
        match self {
            Mode::Cached => "answered from cache (upstream TTL 3600)",
            Mode::Uncacheable => "uncacheable (upstream TTL 0: every query goes upstream)",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct ForwardPoint {
    pub(crate) server: Kind,
    pub(crate) mode: Mode,
    pub(crate) saturation: Saturation,
    /// At a fixed rate below saturation: latency and loss.
    pub(crate) latency: Latency,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct DeadFirst {
    pub(crate) server: Kind,
    pub(crate) asked: u32,
    pub(crate) answered: usize,
    pub(crate) first_ms: f64,
    /// Of the misses after the first.
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct ForwardFigures {
    pub(crate) points: Vec<ForwardPoint>,
    pub(crate) dead_first: Vec<DeadFirst>,
}

/// The upstream dnsmasq, killed on drop.
struct Upstream(Child);

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The shared upstream: `fI.fwd.test` and `dI.fwd.test` with TTL `ttl`, pinned to the load
/// core, listening on `listen`:53 only.
fn upstream(dir: &Path, ttl: u32, listen: &str) -> Upstream {
    let work = dir.join(format!("fwd-upstream-{listen}"));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let mut hosts = String::new();
    for i in 0..NAMES {
        let _ = writeln!(hosts, "{} f{i}.fwd.test", peers::addr(i));
    }
    for i in 0..MISSES {
        let _ = writeln!(hosts, "{} d{i}.fwd.test", peers::addr(i));
    }
    write(&work.join("hosts"), &hosts);
    let child = Command::new("taskset")
        .args(["-c", LOAD_CPU, "dnsmasq", "-k", "--conf-file=/dev/null"])
        .args([
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--user=root",
        ])
        .arg(format!("--listen-address={listen}"))
        .args(["--port=53", "--cache-size=0"])
        .arg(format!("--local-ttl={ttl}"))
        .arg(format!("--addn-hosts={}", work.join("hosts").display()))
        .arg(format!("--pid-file={}", work.join("pid").display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the upstream dnsmasq");
    let up = Upstream(child);
    wait_answer(&[], listen, 53, None, "f0.fwd.test", WAIT);
    up
}

/// A server under test, forwarding to `upstreams` (each `IP` on port 53); kept alive by the
/// first field.
fn start(
    kind: Kind,
    upstreams: &[&str],
    dir: &Path,
    exe_dir: &Path,
) -> (Box<dyn std::any::Any>, Target, u32) {
    let work = dir.join(format!("fwd-{kind:?}").to_lowercase());
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let with_port: Vec<String> = upstreams.iter().map(|u| format!("{u}:53")).collect();
    if kind == Kind::Docker {
        // Docker's embedded DNS forwards from the container's namespace, to port 53.
        let r = namespaced::docker(0, upstreams);
        let (t, p) = (r.target.clone(), r.pid);
        return (Box::new(r), t, p);
    }
    if kind == Kind::Agent {
        let ups: Vec<&str> = with_port.iter().map(String::as_str).collect();
        let r = namespaced::agent(
            0,
            &work,
            &crate::connect::agent_binary(exe_dir),
            SERVER_CPU,
            &ups,
        );
        let (t, p) = (r.target.clone(), r.pid);
        return (Box::new(r), t, p);
    }
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", SERVER_CPU]);
    match kind {
        Kind::Echo => {
            cmd.arg(exe_dir.join("echo"))
                .args(["--listen", &format!("{}:{PORT}", kind.listen())]);
        }
        Kind::Ours | Kind::OursMetricsOff => {
            let records = format!(
                "[[network]]\nname = \"bench\"\nlisten = [\"{}\"]\n\n[[container]]\nname = \"client\"\n[[container.endpoint]]\nnetwork = \"bench\"\nipv4 = \"{}\"\n",
                kind.listen(),
                kind.client()
            );
            let path = work.join("records.toml");
            write(&path, &records);
            cmd.arg(exe_dir.join("resolver"))
                .args([
                    "--records",
                    path.to_str().unwrap(),
                    "--port",
                    &PORT.to_string(),
                ])
                .args(["--log", "warn"])
                .args(["--metrics-addr", crate::peers::metrics_addr(kind)]);
            for u in &with_port {
                cmd.args(["--upstream", u]);
            }
        }
        Kind::Dnsmasq => {
            cmd.args([
                "dnsmasq",
                "-k",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
            ])
            .args(["--bind-interfaces", "--user=root", "--cache-size=10000"])
            .arg(format!("--listen-address={}", kind.listen()))
            .arg(format!("--port={PORT}"))
            .arg(format!("--pid-file={}", work.join("pid").display()));
            for u in upstreams {
                cmd.arg(format!("--server={u}"));
            }
        }
        Kind::Aardvark => {
            let cfg = work.join("config");
            std::fs::create_dir_all(&cfg).unwrap();
            write(
                &cfg.join("bench"),
                &format!("{}\nclient {}  client\n", kind.listen(), kind.client()),
            );
            let mut resolv = String::new();
            for u in upstreams {
                let _ = writeln!(resolv, "nameserver {u}");
            }
            let resolv_path = work.join("resolv.conf");
            write(&resolv_path, &resolv);
            let aardvark = which("aardvark-dns").unwrap_or("/usr/lib/podman/aardvark-dns".into());
            // aardvark-dns 1.4 reads its upstreams from /etc/resolv.conf alone: give it its own
            // in a private mount namespace (the host's file is not touched).
            cmd.args(["unshare", "-m", "--propagation", "private", "sh", "-c"])
                .arg(format!(
                    "mount --bind {} /etc/resolv.conf && exec {} --config {} -p {PORT} run",
                    resolv_path.display(),
                    aardvark.display(),
                    cfg.display()
                ));
        }
        Kind::Agent | Kind::Docker => unreachable!(),
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {kind:?}: {e}"));
    let mut server = Server {
        child,
        daemon: None,
    };
    let target = kind.target();
    let pid = if kind == Kind::Aardvark {
        wait_answer(
            &[],
            kind.listen(),
            PORT,
            Some(kind.client()),
            "f0.fwd.test",
            WAIT,
        );
        aardvark_daemon(&work, server.child.id())
    } else {
        server.child.id()
    };
    if pid != server.child.id() {
        server.daemon = Some(pid);
    }
    (Box::new(server), target, pid)
}

/// The aardvark-dns process serving from `work`: the one it forked into the background, not
/// the one we started (which may still be waiting for it).
fn aardvark_daemon(work: &Path, started: u32) -> u32 {
    let needle = work.to_string_lossy().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| pid != started)
            .find(|pid| {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let cmd = String::from_utf8_lossy(&cmd);
                cmd.starts_with("/") && cmd.contains("aardvark-dns") && cmd.contains(&needle)
            });
        if let Some(pid) = found {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "no aardvark-dns daemon for {needle}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn query_file(dir: &Path, prefix: char, count: u32) -> PathBuf {
    let path = dir.join(format!("fwd-queries-{prefix}{count}.txt"));
    let mut text = String::new();
    let mut k = 0u32;
    for _ in 0..count {
        k = (k + 7_919) % count;
        let _ = writeln!(text, "{prefix}{k}.fwd.test A");
    }
    write(&path, &text);
    path
}

/// Latency of each of `misses` distinct names asked one after another.
fn one_after_another(target: &Target, dir: &Path, misses: u32) -> Vec<f64> {
    let path = dir.join("fwd-misses.txt");
    let text: String = (0..misses).map(|i| format!("d{i}.fwd.test A\n")).collect();
    write(&path, &text);
    let o = dnsperf_command(target, &path)
        .args(["-n", "1", "-c", "1", "-q", "1", "-t", "10", "-v"])
        .stderr(Stdio::null())
        .output()
        .expect("dnsperf");
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.starts_with('>'))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .map(|s| s * 1e3)
        .collect()
}

fn dead_first(server: Kind, asked: u32, lat: &[f64]) -> DeadFirst {
    let first = lat.first().copied().unwrap_or(0.0);
    let mut rest: Vec<f64> = lat.iter().skip(1).copied().collect();
    rest.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        if rest.is_empty() {
            0.0
        } else {
            rest[((rest.len() as f64 * p) as usize).min(rest.len() - 1)]
        }
    };
    DeadFirst {
        server,
        asked,
        answered: lat.len(),
        first_ms: first,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        max_ms: rest.last().copied().unwrap_or(0.0),
    }
}

/// Every forwarding measurement of `servers`.
pub(crate) fn forward_figures(
    servers: &[Kind],
    seconds: u32,
    repeat: usize,
    rate: u32,
    misses: u32,
    dir: &Path,
    exe_dir: &Path,
) -> ForwardFigures {
    let mut points = Vec::new();
    for mode in [Mode::Cached, Mode::Uncacheable] {
        let queries = query_file(dir, 'f', NAMES);
        for &kind in servers {
            eprintln!("forwarding, {}: {}...", mode.label(), kind.label());
            let (_up, _running, target, pid) = setup(kind, mode.ttl(), false, dir, exe_dir);
            // Warm up: every name asked once (fills the caches of the cached mode).
            let _ = dnsperf(&target, &queries, 2, None, false);
            let runs: Vec<Saturation> = (0..repeat)
                .map(|_| saturation(&target, pid, &queries, seconds))
                .collect();
            let at_rate: Vec<Latency> = (0..repeat)
                .map(|_| latency(&target, &queries, seconds.min(5), rate))
                .collect();
            points.push(ForwardPoint {
                server: kind,
                mode,
                saturation: median(runs, |s| s.cpu_us_per_query),
                latency: median(at_rate, |l| l.p99_ms),
            });
        }
    }
    let mut dead = Vec::new();
    for &kind in servers.iter().filter(|k| **k != Kind::Echo) {
        eprintln!("forwarding, dead first upstream: {}...", kind.label());
        let (_up, _running, target, _pid) = setup(kind, 0, true, dir, exe_dir);
        let misses = misses.min(MISSES);
        dead.push(dead_first(
            kind,
            misses,
            &one_after_another(&target, dir, misses),
        ));
    }
    ForwardFigures {
        points,
        dead_first: dead,
    }
}

/// Everything one measurement of `kind` needs, dropped in reverse order after it: the
/// upstream (TTL `ttl`), the black hole first when `dead_first`, and the server.
type Setup = (Box<dyn std::any::Any>, Box<dyn std::any::Any>, Target, u32);

fn setup(kind: Kind, ttl: u32, dead_first: bool, dir: &Path, exe_dir: &Path) -> Setup {
    if kind != Kind::Docker {
        let up = upstream(dir, ttl, UPSTREAM);
        // Bound and never read: what is sent there is lost.
        let hole = dead_first.then(|| {
            UdpSocket::bind((BLACK_HOLE, 53)).expect("bind the black hole on 127.81.0.1:53")
        });
        let ups: &[&str] = if dead_first {
            &[BLACK_HOLE, UPSTREAM]
        } else {
            &[UPSTREAM]
        };
        let (running, target, pid) = start(kind, ups, dir, exe_dir);
        return (Box::new((up, hole)), running, target, pid);
    }
    // Docker's upstream must be reachable from the container: the same dnsmasq, on the
    // bench bridge's gateway address (and the black hole on a second address of that
    // bridge), which exist once the engine made the network.
    let ups: &[&str] = if dead_first {
        &[DOCKER_HOLE, DOCKER_UPSTREAM]
    } else {
        &[DOCKER_UPSTREAM]
    };
    let (running, target, pid) = start(kind, ups, dir, exe_dir);
    let up = upstream(dir, ttl, DOCKER_UPSTREAM);
    let hole = dead_first.then(|| {
        let added = Command::new("ip")
            .args([
                "addr",
                "add",
                &format!("{DOCKER_HOLE}/32"),
                "dev",
                "bcd-br0",
            ])
            .status()
            .is_ok_and(|s| s.success());
        assert!(added, "add {DOCKER_HOLE} to bcd-br0");
        UdpSocket::bind((DOCKER_HOLE, 53)).expect("bind the black hole on the bench bridge")
    });
    wait_answer(
        &target.enter,
        &target.server,
        target.port,
        None,
        "f0.fwd.test",
        WAIT,
    );
    (Box::new((up, hole)), running, target, pid)
}

/// The forwarding tables, with ratios to the echo floor, the same server's local answer
/// (`local`, when the run measured it), dnsmasq and aardvark-dns.
pub(crate) fn forward_table(f: &ForwardFigures, local: impl Fn(Kind) -> Option<f64>) -> String {
    let mut s = String::new();
    for mode in [Mode::Cached, Mode::Uncacheable] {
        let ps: Vec<&ForwardPoint> = f.points.iter().filter(|p| p.mode == mode).collect();
        let cpu = |k: Kind| {
            ps.iter()
                .find(|p| p.server == k)
                .map(|p| p.saturation.cpu_us_per_query)
        };
        let _ = writeln!(s, "\n### Forwarded names, {}\n", mode.label());
        let rate = ps.first().map_or(0, |p| p.latency.rate);
        let _ = writeln!(s, "| server | q/s at saturation | lost | CPU µs/query | vs echo | vs its own local answer | vs dnsmasq | vs aardvark-dns | p50/p99 ms at {}k q/s (lost) |\n|---|---|---|---|---|---|---|---|---|", rate / 1000);
        for p in &ps {
            let me = p.saturation.cpu_us_per_query;
            let ratio = |o: Option<f64>| match o {
                Some(o) if o > 0.0 => format!("{:.2}x", me / o),
                _ => "-".into(),
            };
            let _ = writeln!(
                s,
                "| {} | {:.0} | {} | {:.2} | {} | {} | {} | {} | {:.3}/{:.3} ({}) |",
                p.server.label(),
                p.saturation.qps,
                p.saturation.lost,
                me,
                ratio(cpu(Kind::Echo)),
                ratio(local(p.server)),
                ratio(cpu(Kind::Dnsmasq)),
                ratio(cpu(Kind::Aardvark)),
                p.latency.p50_ms,
                p.latency.p99_ms,
                p.latency.lost,
            );
        }
    }
    let misses = f.dead_first.iter().map(|d| d.asked).max().unwrap_or(0);
    let _ = writeln!(
        s,
        "\n### Dead first upstream: {misses} distinct misses one after another\n"
    );
    let _ = writeln!(s, "| server | answered | first miss ms | later misses p50 ms | p99 ms | max ms |\n|---|---|---|---|---|---|");
    for d in &f.dead_first {
        let _ = writeln!(
            s,
            "| {} | {} | {:.1} | {:.2} | {:.2} | {:.1} |",
            d.server.label(),
            d.answered,
            d.first_ms,
            d.p50_ms,
            d.p99_ms,
            d.max_ms
        );
    }
    s
}
