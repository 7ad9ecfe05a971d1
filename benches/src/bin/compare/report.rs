//! The results as markdown: the servers' table with ratios to the echo floor and to
//! dnsmasq, and the connect table.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::connect::{AgentFigures, Timings};
use crate::dnsperf::{Latency, Saturation};
use crate::peers::{Form, Kind};
use crate::podman::PodmanFigures;

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Point {
    pub(crate) server: Kind,
    pub(crate) names: u32,
    pub(crate) form: Form,
    pub(crate) saturation: Saturation,
    pub(crate) latency: Vec<Latency>,
    pub(crate) rss_kib: u64,
}

pub(crate) fn table(points: &[Point], rates: &[u32]) -> String {
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
        if let (Some(on), Some(off)) = (cpu(Kind::Ours), cpu(Kind::OursMetricsOff)) {
            let _ = writeln!(
                s,
                "\nThe metrics' cost: {on:.3} µs a query counted, {off:.3} µs with metrics off: {:+.1} %.",
                (on / off - 1.0) * 100.0
            );
        }
    }
    s
}

/// The connect table: the agent's API call beside netavark's setup.
pub(crate) fn connect_table(a: &AgentFigures) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n### attach-agent: connecting {} running containers one at a time, over {} bridge{}\n",
        a.containers,
        a.bridges,
        if a.bridges == 1 { "" } else { "s" }
    );
    let _ = writeln!(
        s,
        "| operation | mean | p50 | p99 | containers/s | vs kernel floor (p50 / p99) | vs netavark (mean) |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    let f = &a.kernel_floor;
    let mut row = |label: &str, t: &Timings, netavark: String| {
        let _ = writeln!(
            s,
            "| {label} | {:.2} ms | {:.2} ms | {:.2} ms | {:.0} | {:.2}x / {:.2}x | {netavark} |",
            t.mean_ms,
            t.p50_ms,
            t.p99_ms,
            t.per_second,
            t.p50_ms / f.p50_ms,
            t.p99_ms / f.p99_ms
        );
    };
    let ratio = |t: &Timings| {
        a.netavark.as_ref().map_or("-".to_string(), |n| {
            format!("{:.2}x", t.mean_ms / n.mean_ms)
        })
    };
    row(
        "attach-agent connect (API call)",
        &a.connect,
        ratio(&a.connect),
    );
    row(
        "kernel floor (the same requests, one socket per namespace)",
        f,
        ratio(f),
    );
    if let Some(n) = &a.netavark {
        row("netavark 1.4 setup (process per call)", n, "1.00x".into());
    }
    let (c0, c1) = a.connect_tenths_p50_ms;
    let (f0, f1) = a.floor_tenths_p50_ms;
    let _ = writeln!(
        s,
        "\nGrowth with the bridge's ports (p50 of the first and the last tenth of the connects): \
         attach-agent {c0:.2} → {c1:.2} ms ({:.2}x), kernel floor {f0:.2} → {f1:.2} ms ({:.2}x); \
         agent/floor {:.2}x → {:.2}x.",
        c1 / c0,
        f1 / f0,
        c0 / f0,
        c1 / f1
    );
    if !a.connect_phases_ms.is_empty() {
        let phases: Vec<String> = a
            .connect_phases_ms
            .iter()
            .map(|(p, ms)| format!("{p} {ms:.3}"))
            .collect();
        let inside: f64 = a.connect_phases_ms.iter().map(|(_, ms)| ms).sum();
        let _ = writeln!(
            s,
            "\nInside the agent, mean ms a connect ({inside:.3} of the API call's {:.3}; the rest is \
             HTTP and the client): {}.",
            a.connect.mean_ms,
            phases.join(", ")
        );
    }
    if !a.clients_per_second.is_empty() {
        let floor_rate = 1e3 / f.mean_ms;
        let _ = writeln!(
            s,
            "\n| clients at once | containers/s | vs the kernel floor's rate ({floor_rate:.0}/s, one at a time) |\n|---|---|---|"
        );
        for (clients, rate) in &a.clients_per_second {
            let _ = writeln!(s, "| {clients} | {rate:.0} | {:.2}x |", rate / floor_rate);
        }
    }
    let _ = writeln!(
        s,
        "\nAnswered on the first query right after connect returned: {}/{}.",
        a.answered_at_once, a.containers
    );
    s
}

/// The podman table: a whole `podman run -d` on each network, and the plugin's ADD alone.
pub(crate) fn podman_table(p: &PodmanFigures) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n### podman run -d, {} containers one at a time\n",
        p.runs
    );
    let _ = writeln!(
        s,
        "| what | mean | p50 | p99 | per second | vs netavark (mean) |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    let ratio = |t: &Timings| {
        p.netavark.as_ref().map_or("-".to_string(), |n| {
            format!("{:.2}x", t.mean_ms / n.mean_ms)
        })
    };
    let mut row = |label: &str, t: &Timings, r: String| {
        let _ = writeln!(
            s,
            "| {label} | {:.2} ms | {:.2} ms | {:.2} ms | {:.1} | {r} |",
            t.mean_ms, t.p50_ms, t.p99_ms, t.per_second
        );
    };
    row(
        "podman run -d, agent network (CNI plugin)",
        &p.ours,
        ratio(&p.ours),
    );
    if let Some(n) = &p.netavark {
        row("podman run -d, netavark bridge network", n, "1.00x".into());
    }
    row(
        "the plugin's ADD alone (process + attach)",
        &p.cni_add,
        ratio(&p.cni_add),
    );
    s
}
