//! Load from dnsperf, pinned to the load core: saturation (CPU per query, q/s, loss) and
//! latency percentiles at fixed offered rates.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use bench::namespaced::Target;
use serde::Serialize;

use crate::procfs::cpu_ticks;
use crate::LOAD_CPU;

#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Saturation {
    pub(crate) qps: f64,
    pub(crate) completed: u64,
    pub(crate) lost: u64,
    pub(crate) cpu_us_per_query: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Latency {
    pub(crate) rate: u32,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) p999_ms: f64,
    pub(crate) lost: u64,
}

pub(crate) fn query_file(dir: &Path, n: u32, suffix: &str) -> PathBuf {
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

/// dnsperf on the load core, from where `target` says (its namespace, its source address),
/// asking its server the queries of `queries`; the caller adds the load options.
pub(crate) fn dnsperf_command(target: &Target, queries: &Path) -> Command {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", LOAD_CPU])
        .args(&target.enter)
        .arg("dnsperf")
        .args(["-s", &target.server, "-p", &target.port.to_string()]);
    if let Some(source) = &target.source {
        cmd.args(["-a", source]);
    }
    cmd.arg("-d").arg(queries);
    cmd
}

pub(crate) fn dnsperf(
    target: &Target,
    queries: &Path,
    seconds: u32,
    rate: Option<u32>,
    verbose: bool,
) -> std::process::Output {
    let mut cmd = dnsperf_command(target, queries);
    cmd.args([
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

pub(crate) fn field(out: &str, label: &str) -> f64 {
    out.lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

pub(crate) fn saturation(target: &Target, pid: u32, queries: &Path, seconds: u32) -> Saturation {
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

pub(crate) fn latency(target: &Target, queries: &Path, seconds: u32, rate: u32) -> Latency {
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

pub(crate) fn median<T: Clone>(mut v: Vec<T>, key: impl Fn(&T) -> f64) -> T {
    v.sort_by(|a, b| key(a).total_cmp(&key(b)));
    v[v.len() / 2].clone()
}
