//! What counting costs a local answer: our resolver with metrics on and with metrics off, both
//! started on the same names, measured at saturation in alternating runs (on, off, on, off…)
//! so that the machine's drift falls on both alike; the cost is the median of the pairs'
//! ratios. Running all of one and then all of the other, as the main table does, lets a noisy
//! neighbour of a few seconds decide the figure.

use std::path::Path;

use serde::Serialize;

use crate::dnsperf::{query_file, saturation, Saturation};
use crate::peers::{start_serving, Form, Kind};
use crate::progress;

#[derive(Debug, Clone, Serialize)]
pub(crate) struct MetricsCost {
    pub(crate) names: u32,
    /// CPU µs a query, metrics on, each run in order.
    pub(crate) on_us: Vec<f64>,
    /// CPU µs a query, metrics off, each run in order (run i follows on_us\[i\]).
    pub(crate) off_us: Vec<f64>,
    /// on / off of each pair, sorted.
    pub(crate) ratios: Vec<f64>,
}

impl MetricsCost {
    /// The median pair's on/off ratio.
    pub(crate) fn median_ratio(&self) -> f64 {
        self.ratios[self.ratios.len() / 2]
    }

    pub(crate) fn median_on(&self) -> f64 {
        median_of(&self.on_us)
    }

    pub(crate) fn median_off(&self) -> f64 {
        median_of(&self.off_us)
    }
}

fn median_of(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `pairs` alternating saturation runs of `seconds` each, with `n` bare names.
pub(crate) fn measure(
    n: u32,
    pairs: usize,
    seconds: u32,
    dir: &Path,
    exe_dir: &Path,
) -> MetricsCost {
    let servers: Vec<_> = [Kind::Ours, Kind::OursMetricsOff]
        .into_iter()
        .map(|kind| {
            let (server, pid) = start_serving(kind, n, dir, exe_dir);
            let queries = query_file(dir, n, Form::Bare.suffix(kind));
            (server, kind.target(), pid, queries)
        })
        .collect();
    let bar = progress::bar((2 * pairs) as u64, "metrics on, off, on, off…");
    let mut runs: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..pairs {
        for (i, (_, target, pid, queries)) in servers.iter().enumerate() {
            let s: Saturation = saturation(target, *pid, queries, seconds);
            runs[i].push(s.cpu_us_per_query);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let [on_us, off_us] = runs;
    let mut ratios: Vec<f64> = on_us.iter().zip(&off_us).map(|(a, b)| a / b).collect();
    ratios.sort_by(f64::total_cmp);
    MetricsCost {
        names: n,
        on_us,
        off_us,
        ratios,
    }
}

/// The paragraph for the report.
pub(crate) fn text(c: &MetricsCost) -> String {
    let pct = (c.median_ratio() - 1.0) * 100.0;
    format!(
        "\n### What counting costs a local answer ({} names, bare; {} alternating pairs)\n\n\
         | metrics | CPU µs/query (median) | runs |\n|---|---|---|\n\
         | on | {:.3} | {} |\n| off | {:.3} | {} |\n\n\
         Median of the pairs' on/off ratios: {:.3} ({pct:+.1} %); the pairs ranged {:.3}–{:.3}.\n",
        c.names,
        c.on_us.len(),
        c.median_on(),
        join(&c.on_us),
        c.median_off(),
        join(&c.off_us),
        c.median_ratio(),
        c.ratios[0],
        c.ratios[c.ratios.len() - 1],
    )
}

fn join(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}
