//! Side-by-side comparison: the same N names served by the echo floor, our standalone
//! resolver, dnsmasq and aardvark-dns, each queried by dnsperf from a container's source
//! address, load generator and server pinned to different cores. Prints a markdown table with
//! ratios and writes `target/bench/compare.json`.
//!
//! `cargo run --release -p bench --bin compare -- [--quick]`
//!
//! Everything listens on loopback (127.76–79.0.1, port 5300); the names' addresses are data only.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bench::namespaced::{self, Target};
use clap::Parser;
use serde::Serialize;

#[derive(Parser, Debug)]
struct Args {
    /// A few seconds a server, N=100 only, one repeat (CI's smoke run).
    #[arg(long)]
    quick: bool,
    /// Numbers of names to serve.
    #[arg(long, value_delimiter = ',', default_value = "100,10000")]
    names: Vec<u32>,
    /// Seconds of load per measurement.
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// Repeats per point (the median is reported).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Fixed offered loads for the latency runs, queries per second.
    #[arg(long, value_delimiter = ',', default_value = "10000,40000")]
    rates: Vec<u32>,
    /// Query forms: bare names (`cI`), and qualified ones (`cI.bench`, NAME.NETWORK; for
    /// aardvark-dns its search domain, `cI.dns.podman`; for dnsmasq its `--domain`).
    #[arg(long, value_delimiter = ',', default_value = "bare,qualified")]
    forms: Vec<Form>,
    /// Which servers to run (aardvark-dns at 10^6 names takes very long to load).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "echo,ours,dnsmasq,aardvark,agent,docker"
    )]
    servers: Vec<Kind>,
    /// Also measure the agent: connect this many running containers, one at a time, over its
    /// API (0: skip). Needs root: it makes namespaces, a bridge and veths (prefix "bca").
    #[arg(long, default_value_t = 0)]
    agent: u32,
    /// Where the servers' files and the results go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
}

const PORT: u16 = 5300;
const LOAD_CPU: &str = "0";
const SERVER_CPU: &str = "1";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
enum Form {
    Bare,
    Qualified,
}

impl Form {
    /// What follows the name in a query to `kind`.
    fn suffix(self, kind: Kind) -> &'static str {
        match (self, kind) {
            (Form::Bare, _) => "",
            (Form::Qualified, Kind::Aardvark) => ".dns.podman",
            (Form::Qualified, _) => ".bench",
        }
    }
    fn label(self) -> &'static str {
        match self {
            Form::Bare => "bare names",
            Form::Qualified => "NAME.NETWORK (aardvark-dns: NAME.dns.podman)",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
enum Kind {
    Echo,
    Ours,
    Dnsmasq,
    Aardvark,
    /// The full agent: real namespaces, bridge, veths, DNS on the gateway.
    Agent,
    /// Docker 20.10's embedded DNS, asked at 127.0.0.11 inside a container.
    Docker,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Echo => "echo floor",
            Kind::Ours => "attach-agent resolver",
            Kind::Dnsmasq => "dnsmasq",
            Kind::Aardvark => "aardvark-dns",
            Kind::Agent => "attach-agent, full agent in namespaces",
            Kind::Docker => "Docker 20.10 embedded DNS",
        }
    }
    /// Whether it serves containers in real namespaces (at most one bridge's worth of them).
    fn namespaced(self) -> bool {
        matches!(self, Kind::Agent | Kind::Docker)
    }
    /// Where dnsperf asks a server that listens on loopback.
    fn target(self) -> Target {
        Target {
            enter: vec![],
            server: self.listen().into(),
            port: PORT,
            source: Some(self.client().into()),
        }
    }
    fn listen(self) -> &'static str {
        match self {
            Kind::Echo => "127.76.0.1",
            Kind::Ours => "127.77.0.1",
            Kind::Dnsmasq => "127.78.0.1",
            Kind::Aardvark => "127.79.0.1",
            Kind::Agent | Kind::Docker => unreachable!("namespaced"),
        }
    }
    /// The source address dnsperf sends from: a container of the served network.
    fn client(self) -> &'static str {
        match self {
            Kind::Echo => "127.76.0.2",
            Kind::Ours => "127.77.0.2",
            Kind::Dnsmasq => "127.78.0.2",
            Kind::Aardvark => "127.79.0.2",
            Kind::Agent | Kind::Docker => unreachable!("namespaced"),
        }
    }
}

/// Address of name `i` (data only; nothing is sent there).
fn addr(i: u32) -> String {
    let a = 0x0a00_0002u32 + i;
    std::net::Ipv4Addr::from(a).to_string()
}

struct Server {
    child: Child,
    /// A process it forked into the background (aardvark-dns), ended with it.
    daemon: Option<u32>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(pid) = self.daemon {
            // SAFETY: no memory preconditions; the pid is the daemon this server started, and
            // waitpid reaps it with no status buffer.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
                libc::waitpid(pid as i32, std::ptr::null_mut(), 0);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(bin: &str) -> Option<PathBuf> {
    let o = Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn start(kind: Kind, n: u32, dir: &Path, exe_dir: &Path) -> Server {
    let work = dir.join(format!("{kind:?}-{n}").to_lowercase());
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", SERVER_CPU]);
    match kind {
        Kind::Echo => {
            cmd.arg(exe_dir.join("echo"))
                .args(["--listen", &format!("{}:{PORT}", kind.listen())]);
        }
        Kind::Ours => {
            let mut f = String::with_capacity(n as usize * 96);
            let _ = writeln!(
                f,
                "[[network]]\nname = \"bench\"\nlisten = [\"{}\"]\n",
                kind.listen()
            );
            let _ = writeln!(
                f,
                "[[container]]\nname = \"client\"\n[[container.endpoint]]\nnetwork = \"bench\"\nipv4 = \"{}\"\n",
                kind.client()
            );
            for i in 0..n {
                let _ = writeln!(
                    f,
                    "[[container]]\nname = \"c{i}\"\n[[container.endpoint]]\nnetwork = \"bench\"\nipv4 = \"{}\"\n",
                    addr(i)
                );
            }
            let path = work.join("records.toml");
            write(&path, &f);
            cmd.arg(exe_dir.join("resolver"))
                .args([
                    "--records",
                    path.to_str().unwrap(),
                    "--port",
                    &PORT.to_string(),
                ])
                .args(["--upstream", "127.0.0.1:9", "--log", "warn"]);
        }
        Kind::Dnsmasq => {
            let mut f = String::with_capacity(n as usize * 24);
            for i in 0..n {
                let _ = writeln!(f, "{} c{i}", addr(i));
            }
            let path = work.join("hosts");
            write(&path, &f);
            cmd.arg("dnsmasq").args([
                "-k",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--domain=bench",
                "--expand-hosts",
                "--bind-interfaces",
                "--user=root",
                &format!("--listen-address={}", kind.listen()),
                &format!("--port={PORT}"),
                &format!("--addn-hosts={}", path.display()),
                &format!("--pid-file={}", work.join("pid").display()),
            ]);
        }
        Kind::Aardvark => {
            let cfg = work.join("config");
            std::fs::create_dir_all(&cfg).unwrap();
            let mut f = String::with_capacity(n as usize * 40);
            let _ = writeln!(f, "{}", kind.listen());
            let _ = writeln!(f, "client {}  client", kind.client());
            for i in 0..n {
                let _ = writeln!(f, "{i:012x} {}  c{i}", addr(i));
            }
            write(&cfg.join("bench"), &f);
            cmd.arg(which("aardvark-dns").unwrap_or("/usr/lib/podman/aardvark-dns".into()))
                .arg("--config")
                .arg(&cfg)
                .args(["-p", &PORT.to_string(), "run"]);
        }
        Kind::Agent | Kind::Docker => unreachable!("started by bench::namespaced"),
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {kind:?}: {e}"));
    let server = Server {
        child,
        daemon: None,
    };
    // Ready when it answers a query for the last name.
    let deadline = Instant::now() + Duration::from_secs(300);
    let probe = format!("c{}", n - 1);
    loop {
        let o = Command::new("dig")
            .args([
                &format!("@{}", kind.listen()),
                "-p",
                &PORT.to_string(),
                "-b",
                kind.client(),
                "+short",
                "+time=1",
                "+tries=1",
                &probe,
            ])
            .output()
            .expect("dig (bind9-dnsutils)");
        let answer = String::from_utf8_lossy(&o.stdout);
        if answer.trim().parse::<std::net::Ipv4Addr>().is_ok() {
            return server;
        }
        assert!(
            Instant::now() < deadline,
            "{kind:?} did not start answering"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The serving process: aardvark-dns forks into the background, so find it by its command
/// line (its config directory is ours alone); the others stay the process we started.
fn server_pid(kind: Kind, server: &Server, dir: &Path) -> u32 {
    if kind != Kind::Aardvark {
        return server.child.id();
    }
    let needle = dir.to_string_lossy().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd);
            cmd.contains("aardvark-dns") && cmd.contains(&needle)
        })
        .expect("the aardvark-dns process")
}

/// user+system CPU time of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat; after "pid (comm)" they are at 11 and 12.
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

#[derive(Debug, Clone, Default, Serialize)]
struct Saturation {
    qps: f64,
    completed: u64,
    lost: u64,
    cpu_us_per_query: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
struct Latency {
    rate: u32,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    lost: u64,
}

#[derive(Debug, Clone, Serialize)]
struct Point {
    server: Kind,
    names: u32,
    form: Form,
    saturation: Saturation,
    latency: Vec<Latency>,
    rss_kib: u64,
}

fn query_file(dir: &Path, n: u32, suffix: &str) -> PathBuf {
    let path = dir.join(format!("queries-{n}{suffix}.txt"));
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    // A spread of names over the whole table, in a scrambled order.
    let count = n.clamp(1, 100_000);
    let mut k: u64 = 0;
    for _ in 0..count {
        k = (k + 7_919) % n as u64;
        writeln!(f, "c{k}{suffix} A").unwrap();
    }
    path
}

fn dnsperf(
    target: &Target,
    queries: &Path,
    seconds: u32,
    rate: Option<u32>,
    verbose: bool,
) -> std::process::Output {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", LOAD_CPU])
        .args(&target.enter)
        .arg("dnsperf")
        .args(["-s", &target.server, "-p", &target.port.to_string()]);
    if let Some(source) = &target.source {
        cmd.args(["-a", source]);
    }
    cmd.arg("-d").arg(queries).args([
        "-l",
        &seconds.to_string(),
        "-c",
        "1",
        "-q",
        "200",
        "-t",
        "2",
    ]);
    if let Some(r) = rate {
        cmd.args(["-Q", &r.to_string()]);
    }
    if verbose {
        cmd.arg("-v");
    }
    cmd.stderr(Stdio::null()).output().expect("dnsperf")
}

fn field(out: &str, label: &str) -> f64 {
    out.lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

fn saturation(target: &Target, pid: u32, queries: &Path, seconds: u32) -> Saturation {
    let before = cpu_ticks(pid);
    let o = dnsperf(target, queries, seconds, None, false);
    let after = cpu_ticks(pid);
    let text = String::from_utf8_lossy(&o.stdout);
    let completed = field(&text, "Queries completed:") as u64;
    // Every answer must be a real one: a server that answers NXDOMAIN fast is not fast.
    let noerror = text
        .split("NOERROR")
        .nth(1)
        .and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0);
    if noerror < completed * 99 / 100 {
        eprintln!(
            "warning: {} of {completed} answers were NOERROR ({})",
            noerror, target.server
        );
    }
    // SAFETY: sysconf has no preconditions.
    let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu_s = (after - before) as f64 / ticks_per_s;
    Saturation {
        qps: field(&text, "Queries per second:"),
        completed,
        lost: field(&text, "Queries lost:") as u64,
        cpu_us_per_query: if completed > 0 {
            cpu_s * 1e6 / completed as f64
        } else {
            0.0
        },
    }
}

fn latency(target: &Target, queries: &Path, seconds: u32, rate: u32) -> Latency {
    let o = dnsperf(target, queries, seconds, Some(rate), true);
    let mut lat: Vec<f64> = BufReader::new(&o.stdout[..])
        .lines()
        .map_while(Result::ok)
        .filter(|l| l.starts_with('>'))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .collect();
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        if lat.is_empty() {
            0.0
        } else {
            lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)] * 1e3
        }
    };
    let text = String::from_utf8_lossy(&o.stdout);
    Latency {
        rate,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        p999_ms: pct(0.999),
        lost: field(&text, "Queries lost:") as u64,
    }
}

fn median<T: Clone>(mut v: Vec<T>, key: impl Fn(&T) -> f64) -> T {
    v.sort_by(|a, b| key(a).total_cmp(&key(b)));
    v[v.len() / 2].clone()
}

fn ensure_tools() {
    let missing: Vec<&str> = [
        ("dnsperf", "dnsperf"),
        ("dnsmasq", "dnsmasq-base"),
        ("dig", "bind9-dnsutils"),
        ("taskset", "util-linux"),
    ]
    .into_iter()
    .filter(|(bin, _)| which(bin).is_none())
    .map(|(_, pkg)| pkg)
    .chain(
        (which("aardvark-dns").is_none() && !Path::new("/usr/lib/podman/aardvark-dns").exists())
            .then_some("aardvark-dns"),
    )
    .chain((!bench::netavark::available()).then_some("netavark"))
    .collect();
    if missing.is_empty() {
        return;
    }
    eprintln!("installing {missing:?}");
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends {}",
            missing.join(" ")
        ))
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "could not install {missing:?}");
}

fn main() {
    // Orphans (aardvark-dns forks into the background) become our children, so we reap them.
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag and touches no memory of ours.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let mut args = Args::parse();
    if args.quick {
        args.names = vec![100];
        args.seconds = 2;
        args.repeat = 1;
        args.rates = vec![10_000];
    }
    ensure_tools();
    let exe_dir = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    // `cargo run --bin compare` builds this binary only: build the servers it starts, with the
    // same profile.
    for (package, bin) in [("bench", "echo"), ("resolver", "resolver")] {
        if exe_dir.join(bin).exists() {
            continue;
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut c = Command::new(cargo);
        c.args(["build", "-p", package, "--bin", bin]);
        if exe_dir.ends_with("release") {
            c.arg("--release");
        }
        assert!(
            c.status().is_ok_and(|s| s.success()) && exe_dir.join(bin).exists(),
            "building {bin} failed"
        );
    }
    let dir = args.out.join("work");
    std::fs::create_dir_all(&dir).unwrap();
    // Absolute: dnsmasq changes to / before it opens its files.
    let dir = dir.canonicalize().unwrap();
    let mut points = Vec::new();
    for &n in &args.names {
        for &kind in &args.servers {
            if kind.namespaced() && n > namespaced::MAX_NAMES {
                eprintln!(
                    "{}: skipped at {n} names (one bridge holds 1024 ports)",
                    kind.label()
                );
                continue;
            }
            eprintln!("{} with {n} names...", kind.label());
            // Kept alive (and cleaned up on drop) for the measurements.
            let (_running, target, pid): (Box<dyn std::any::Any>, Target, u32) = match kind {
                Kind::Agent => {
                    let r = namespaced::agent(
                        n,
                        &dir.join(format!("agent-dns-{n}")),
                        &agent_binary(&exe_dir),
                        SERVER_CPU,
                    );
                    let (t, p) = (r.target.clone(), r.pid);
                    (Box::new(r), t, p)
                }
                Kind::Docker => {
                    let r = namespaced::docker(n);
                    let (t, p) = (r.target.clone(), r.pid);
                    (Box::new(r), t, p)
                }
                _ => {
                    let mut server = start(kind, n, &dir, &exe_dir);
                    let pid = server_pid(
                        kind,
                        &server,
                        &dir.join(format!("{kind:?}-{n}").to_lowercase()),
                    );
                    if pid != server.child.id() {
                        server.daemon = Some(pid);
                    }
                    (Box::new(server), kind.target(), pid)
                }
            };
            for &form in &args.forms {
                let queries = query_file(&dir, n, form.suffix(kind));
                let sat: Vec<Saturation> = (0..args.repeat)
                    .map(|_| saturation(&target, pid, &queries, args.seconds))
                    .collect();
                let lat = args
                    .rates
                    .iter()
                    .map(|&r| {
                        let runs: Vec<Latency> = (0..args.repeat)
                            .map(|_| latency(&target, &queries, args.seconds.min(5), r))
                            .collect();
                        median(runs, |l| l.p99_ms)
                    })
                    .collect();
                points.push(Point {
                    server: kind,
                    names: n,
                    form,
                    saturation: median(sat, |s| s.cpu_us_per_query),
                    latency: lat,
                    rss_kib: rss_kib(pid),
                });
            }
        }
    }
    let agent = (args.agent > 0).then(|| agent_figures(args.agent, &dir, &exe_dir));
    let json = serde_json::json!({ "servers": points, "agent": agent });
    write(
        &args.out.join("compare.json"),
        &serde_json::to_string_pretty(&json).unwrap(),
    );
    print!("{}", table(&points, &args.rates));
    if let Some(a) = agent {
        println!(
            "\n### attach-agent: connecting {} running containers one at a time\n",
            a.containers
        );
        println!("| operation | mean | p50 | p99 | containers/s | vs netavark (mean) |");
        println!("|---|---|---|---|---|---|");
        let row = |label: &str, t: &Timings, ratio: String| {
            println!(
                "| {label} | {:.2} ms | {:.2} ms | {:.2} ms | {:.0} | {ratio} |",
                t.mean_ms, t.p50_ms, t.p99_ms, t.per_second
            )
        };
        let ratio = a.netavark.as_ref().map_or("-".to_string(), |n| {
            format!("{:.2}x", a.connect.mean_ms / n.mean_ms)
        });
        row("attach-agent connect (API call)", &a.connect, ratio);
        if let Some(n) = &a.netavark {
            row("netavark 1.4 setup (process per call)", n, "1.00x".into());
        }
        println!(
            "\nAnswered on the first query right after connect returned: {}/{}.",
            a.answered_at_once, a.containers
        );
    }
}

#[derive(Debug, Clone, Serialize)]
struct AgentFigures {
    containers: u32,
    connect: Timings,
    /// Containers whose name answered on the first query sent after their connect returned.
    answered_at_once: u32,
    /// netavark 1.4 `setup` on as many fresh namespaces, when installed.
    netavark: Option<Timings>,
}

/// Per-call times of one kind of operation, done one at a time.
#[derive(Debug, Clone, Serialize)]
struct Timings {
    mean_ms: f64,
    p50_ms: f64,
    p99_ms: f64,
    per_second: f64,
}

impl Timings {
    fn of(mut ms: Vec<f64>, total_seconds: f64) -> Timings {
        ms.sort_by(f64::total_cmp);
        Timings {
            mean_ms: ms.iter().sum::<f64>() / ms.len() as f64,
            p50_ms: ms[ms.len() / 2],
            p99_ms: ms[((ms.len() as f64 * 0.99) as usize).min(ms.len() - 1)],
            per_second: ms.len() as f64 / total_seconds,
        }
    }
}

/// The agent's binary beside this one, built with the same profile when missing.
fn agent_binary(exe_dir: &Path) -> PathBuf {
    let bin = exe_dir.join("attach-agent");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut c = Command::new(cargo);
        c.args(["build", "-p", "attach-agent"]);
        if exe_dir.ends_with("release") {
            c.arg("--release");
        }
        assert!(
            c.status().is_ok_and(|s| s.success()),
            "building the agent failed"
        );
    }
    bin
}

/// Start the agent, make `n` running containers, connect each to one network over the API
/// (timing each call), and ask the network's DNS for the name right after each connect returns.
fn agent_figures(n: u32, dir: &Path, exe_dir: &Path) -> AgentFigures {
    // SAFETY: geteuid has no preconditions and cannot fail.
    assert_eq!(unsafe { libc::geteuid() }, 0, "--agent needs root");
    let bin = agent_binary(exe_dir);
    let work = dir.join("agent");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let (child, socket) = namespaced::spawn_agent(&bin, &work, SERVER_CPU, "bca");
    let daemon = Server {
        child,
        daemon: None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let figures = rt.block_on(async {
        use attach_agent::cli::client::Client;
        use hyper::Method;
        let client = Client::new(&format!("unix://{}", socket.display())).unwrap();
        namespaced::wait_ready(&client).await;
        let call = |m: Method, path: String, body: serde_json::Value| {
            let client = client.clone();
            async move { namespaced::must(&client, m, &path, body).await }
        };
        let created = call(
            Method::POST,
            "/networks/create".into(),
            serde_json::json!({"Name": "bench"}),
        )
        .await;
        let id: serde_json::Value = serde_json::from_slice(&created).unwrap();
        let inspect = client
            .raw(
                Method::GET,
                &format!("/networks/{}", id["Id"].as_str().unwrap()),
                None,
            )
            .await
            .unwrap()
            .1;
        let inspect: serde_json::Value = serde_json::from_slice(&inspect).unwrap();
        let gateway: std::net::IpAddr = inspect["IPAM"]["Config"][0]["Gateway"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        for i in 0..n {
            call(
                Method::POST,
                format!("/containers/create?name=bca-{i}"),
                serde_json::json!({"Image": "none"}),
            )
            .await;
            call(
                Method::POST,
                format!("/containers/bca-{i}/start"),
                serde_json::json!({}),
            )
            .await;
        }
        let dns = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        dns.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut times = Vec::with_capacity(n as usize);
        let mut answered = 0;
        let all = Instant::now();
        for i in 0..n {
            let t = Instant::now();
            call(
                Method::POST,
                "/networks/bench/connect".into(),
                serde_json::json!({"Container": format!("bca-{i}")}),
            )
            .await;
            times.push(t.elapsed().as_secs_f64() * 1e3);
            // Right after connect returned: does the name answer?
            let mut q = hickory_proto::op::Message::query();
            q.add_query(hickory_proto::op::Query::query(
                hickory_proto::rr::Name::from_ascii(format!("bca-{i}")).unwrap(),
                hickory_proto::rr::RecordType::A,
            ));
            dns.send_to(&q.to_vec().unwrap(), (gateway, 53)).unwrap();
            let mut buf = [0u8; 512];
            if let Ok(len) = dns.recv(&mut buf) {
                if hickory_proto::op::Message::from_vec(&buf[..len])
                    .is_ok_and(|m| !m.answers.is_empty())
                {
                    answered += 1;
                }
            }
        }
        let total = all.elapsed().as_secs_f64();
        for i in 0..n {
            let _ = client
                .raw(
                    Method::DELETE,
                    &format!("/containers/bca-{i}?force=1"),
                    None,
                )
                .await;
        }
        let _ = client.raw(Method::DELETE, "/networks/bench", None).await;
        (Timings::of(times, total), answered)
    });
    drop(daemon);
    let netavark = bench::netavark::available().then(|| {
        eprintln!("netavark setup on {n} namespaces...");
        let all = Instant::now();
        let times = bench::netavark::setup_times(n, &work);
        Timings::of(times, all.elapsed().as_secs_f64())
    });
    AgentFigures {
        containers: n,
        connect: figures.0,
        answered_at_once: figures.1,
        netavark,
    }
}

fn table(points: &[Point], rates: &[u32]) -> String {
    let mut s = String::new();
    let mut by_n: BTreeMap<(u32, Form), Vec<&Point>> = BTreeMap::new();
    for p in points {
        by_n.entry((p.names, p.form)).or_default().push(p);
    }
    for ((n, form), ps) in by_n {
        let cpu = |k: Kind| {
            ps.iter()
                .find(|p| p.server == k)
                .map(|p| p.saturation.cpu_us_per_query)
        };
        let _ = writeln!(s, "\n### {n} names, {}\n", form.label());
        let mut head = "| server | q/s at saturation | lost | CPU µs/query | vs echo | vs dnsmasq | vs aardvark-dns |".to_string();
        let mut rule = "|---|---|---|---|---|---|---|".to_string();
        for r in rates {
            let _ = write!(head, " p50/p99/p99.9 ms at {}k q/s |", r / 1000);
            rule.push_str("---|");
        }
        head.push_str(" RSS MiB |");
        rule.push_str("---|");
        let _ = writeln!(s, "{head}\n{rule}");
        for p in &ps {
            let me = p.saturation.cpu_us_per_query;
            let ratio = |k: Kind| match cpu(k) {
                Some(o) if o > 0.0 => format!("{:.2}x", me / o),
                _ => "-".into(),
            };
            let mut row = format!(
                "| {} | {:.0} | {} | {:.2} | {} | {} | {} |",
                p.server.label(),
                p.saturation.qps,
                p.saturation.lost,
                me,
                ratio(Kind::Echo),
                ratio(Kind::Dnsmasq),
                ratio(Kind::Aardvark)
            );
            for l in &p.latency {
                let _ = write!(
                    row,
                    " {:.3}/{:.3}/{:.3} (lost {}) |",
                    l.p50_ms, l.p99_ms, l.p999_ms, l.lost
                );
            }
            let _ = write!(row, " {:.1} |", p.rss_kib as f64 / 1024.0);
            let _ = writeln!(s, "{row}");
        }
    }
    s
}
