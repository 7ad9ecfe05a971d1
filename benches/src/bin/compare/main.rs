//! Side-by-side comparison: the same N names served by the echo floor, our standalone
//! resolver, dnsmasq and aardvark-dns, each queried by dnsperf from a container's source
//! address, load generator and server pinned to different cores. Prints a markdown table with
//! ratios and writes `target/bench/compare.json`.
//!
//! `cargo run --release -p bench --bin compare -- [--quick]`
//!
//! Everything listens on loopback (127.76–79.0.1, port 5300); the names' addresses are data only.

mod charts;
mod connect;
mod dnsperf;
mod forward;
mod metrics_cost;
mod peers;
mod podman;
mod procfs;
mod progress;
mod report;

use std::path::{Path, PathBuf};
use std::process::Command;

use bench::namespaced::{self, Target};
use clap::Parser;

use connect::{agent_binary, agent_figures};
use dnsperf::{latency, median, query_file, saturation, Latency, Saturation};
use peers::{start_serving, which, write, Form, Kind};
use procfs::rss_kib;
use report::{connect_table, podman_table, table, Point};

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
        default_value = "echo,ours,ours-metrics-off,dnsmasq,aardvark,agent,docker"
    )]
    servers: Vec<Kind>,
    /// Also measure the agent: connect this many running containers, one at a time, over its
    /// API (0: skip). Needs root: it makes namespaces, a bridge and veths (prefix "bca").
    #[arg(long, default_value_t = 0)]
    agent: u32,
    /// With --agent: spread the one-at-a-time connects over this many networks (bridges),
    /// container i on bridge i mod B, and the kernel floor alike.
    #[arg(long, default_value_t = 1)]
    bridges: u32,
    /// Also time `podman run -d` this many times on an agent network (through the CNI plugin)
    /// and on podman's netavark network, and the plugin's ADD alone (0: skip). Needs root and
    /// podman 4.3.
    #[arg(long, default_value_t = 0)]
    podman: u32,
    /// Also compare forwarding (names that are not containers'): answered from cache,
    /// uncacheable, and a dead first upstream, through one shared upstream on loopback.
    #[arg(long)]
    forward: bool,
    /// Only the forwarding comparison: skip the local-name runs.
    #[arg(long)]
    forward_only: bool,
    /// Also measure what counting costs a local answer: this many alternating saturation runs
    /// of our resolver with metrics on and off (at the first --names, bare names; 0: skip).
    #[arg(long, default_value_t = 0)]
    metrics_cost: usize,
    /// Where the servers' files and the results go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
}

const PORT: u16 = 5300;

const LOAD_CPU: &str = "0";

const SERVER_CPU: &str = "1";

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
    let names = if args.forward_only {
        vec![]
    } else {
        args.names.clone()
    };
    let forwarding_on = args.forward || args.forward_only;
    let mut steps = progress::Steps::new(
        names.len() * args.servers.len()
            + usize::from(args.agent > 0)
            + usize::from(args.podman > 0)
            + usize::from(forwarding_on)
            + usize::from(args.metrics_cost > 0),
    );
    for &n in &names {
        for &kind in &args.servers {
            steps.next(&format!("{} with {n} names", kind.label()));
            if kind.namespaced() && n > namespaced::MAX_NAMES {
                eprintln!(
                    "{}: skipped at {n} names (one bridge holds 1024 ports)",
                    kind.label()
                );
                continue;
            }
            points.extend(measure(kind, n, &args, &dir, &exe_dir));
        }
    }
    let metrics_cost = (args.metrics_cost > 0).then(|| {
        let n = args.names.first().copied().unwrap_or(100);
        steps.next(&format!(
            "the metrics' cost: {} alternating pairs of runs, metrics on and off, {n} names",
            args.metrics_cost
        ));
        metrics_cost::measure(n, args.metrics_cost, args.seconds, &dir, &exe_dir)
    });
    let agent = (args.agent > 0).then(|| {
        steps.next(&format!(
            "the agent's connect, {} containers over {} bridge(s)",
            args.agent, args.bridges
        ));
        agent_figures(args.agent, args.bridges, &dir, &exe_dir)
    });
    let podman = (args.podman > 0).then(|| {
        steps.next(&format!("podman run -d, {} containers", args.podman));
        podman::podman_figures(args.podman, &dir, &exe_dir)
    });
    let forwarding = forwarding_on.then(|| {
        steps.next("forwarding: from cache, uncacheable, dead first upstream");
        let rate = args.rates.first().copied().unwrap_or(10_000);
        let misses = if args.quick { 10 } else { 100 };
        forward::forward_figures(
            &args.servers,
            args.seconds,
            args.repeat,
            rate,
            misses,
            &dir,
            &exe_dir,
        )
    });
    let json = serde_json::json!({
        "servers": points,
        "agent": agent,
        "podman": podman,
        "forwarding": forwarding,
        "metrics_cost": metrics_cost,
    });
    write(
        &args.out.join("compare.json"),
        &serde_json::to_string_pretty(&json).unwrap(),
    );
    let charts = charts::write_all(&args.out, &points, agent.as_ref(), forwarding.as_ref())
        .unwrap_or_else(|e| panic!("writing the charts: {e}"));
    for c in &charts {
        eprintln!("chart: {}", c.display());
    }
    print!("{}", table(&points, &args.rates));
    if let Some(c) = &metrics_cost {
        print!("{}", metrics_cost::text(c));
    }
    if let Some(a) = agent {
        print!("{}", connect_table(&a));
    }
    if let Some(p) = podman {
        print!("{}", podman_table(&p));
    }
    if let Some(f) = forwarding {
        // A server's own local answer: its bare-name figure at the fewest names measured.
        let local = |k: Kind| {
            points
                .iter()
                .filter(|p| p.server == k && p.form == Form::Bare)
                .min_by_key(|p| p.names)
                .map(|p| p.saturation.cpu_us_per_query)
        };
        print!("{}", forward::forward_table(&f, local));
    }
}

/// Start `kind` with `n` names and measure it in every query form: saturation and the latency
/// at each offered rate, medians of `repeat` runs.
fn measure(kind: Kind, n: u32, args: &Args, dir: &Path, exe_dir: &Path) -> Vec<Point> {
    // Kept alive (and cleaned up on drop) for the measurements.
    let (_running, target, pid): (Box<dyn std::any::Any>, Target, u32) = match kind {
        Kind::Agent => {
            let r = namespaced::agent(
                n,
                &dir.join(format!("agent-dns-{n}")),
                &agent_binary(exe_dir),
                SERVER_CPU,
                namespaced::NO_UPSTREAM,
            );
            let (t, p) = (r.target.clone(), r.pid);
            (Box::new(r), t, p)
        }
        Kind::Docker => {
            let r = namespaced::docker(n, &[]);
            let (t, p) = (r.target.clone(), r.pid);
            (Box::new(r), t, p)
        }
        _ => {
            let (server, pid) = start_serving(kind, n, dir, exe_dir);
            (Box::new(server), kind.target(), pid)
        }
    };
    let mut points = Vec::new();
    let runs = args.forms.len() * args.repeat * (1 + args.rates.len());
    let bar = progress::bar(runs as u64, &format!("dnsperf runs, {}", kind.label()));
    for &form in &args.forms {
        let queries = query_file(dir, n, form.suffix(kind));
        let sat: Vec<Saturation> = (0..args.repeat)
            .map(|_| {
                let s = saturation(&target, pid, &queries, args.seconds);
                bar.inc(1);
                s
            })
            .collect();
        let lat = args
            .rates
            .iter()
            .map(|&r| {
                let runs: Vec<Latency> = (0..args.repeat)
                    .map(|_| {
                        let l = latency(&target, &queries, args.seconds.min(5), r);
                        bar.inc(1);
                        l
                    })
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
    bar.finish_and_clear();
    points
}
