//! Every DNS metric family, written at scrape time from the server's parts: the query counts
//! summed over the listener threads, the forwarder's health, budget and cache, the table's
//! size. README's metric table lists the same names.

use super::exposition::{Exposition, HistogramValue, Kind};
use super::{DnsMetrics, QueryOutcome, LATENCY_BOUNDS};
use crate::forward::Forwarder;
use crate::table::Table;

/// Write the DNS families into `e`.
pub(crate) fn dns(e: &mut Exposition, metrics: &DnsMetrics, forwarder: &Forwarder, table: &Table) {
    e.family(
        "attach_agent_dns_queries_total",
        Kind::Counter,
        "DNS queries received, by the network whose gateway received them, transport, and how they ended.",
    );
    for (network, transport, counts) in metrics.query_counts() {
        for (outcome, n) in QueryOutcome::ALL.iter().zip(counts) {
            e.sample(
                "attach_agent_dns_queries_total",
                &[
                    ("network", &network),
                    ("transport", transport.label()),
                    ("outcome", outcome.label()),
                ],
                n as f64,
            );
        }
    }
    if let Some([local, forwarded]) = metrics.latencies() {
        e.family(
            "attach_agent_dns_answer_duration_seconds",
            Kind::Histogram,
            "Time from a query being read to its reply being sent: local answers (over UDP timed per receive batch), and replies to queries sent upstream.",
        );
        for (source, (counts, sum_ns)) in [("local", local), ("forwarded", forwarded)] {
            e.histogram(
                "attach_agent_dns_answer_duration_seconds",
                &[("source", source)],
                &HistogramValue {
                    bounds: &LATENCY_BOUNDS,
                    counts: counts.to_vec(),
                    sum: sum_ns as f64 / 1e9,
                },
            );
        }
    }
    e.single(
        "attach_agent_dns_forwarded_in_flight",
        Kind::Gauge,
        "Forwarded queries waiting for an upstream's answer now.",
        forwarder.budget().host_in_flight() as f64,
    );
    let upstreams = forwarder.health().report();
    let families: [(&str, Kind, &str); 5] = [
        (
            "attach_agent_dns_upstream_queries_total",
            Kind::Counter,
            "Queries sent to an upstream server (every attempt counts).",
        ),
        (
            "attach_agent_dns_upstream_failures_total",
            Kind::Counter,
            "Attempts at an upstream that got no usable answer, timeouts apart: SERVFAIL or REFUSED, a closed port, a failed send.",
        ),
        (
            "attach_agent_dns_upstream_timeouts_total",
            Kind::Counter,
            "Attempts an upstream did not answer within the forward timeout.",
        ),
        (
            "attach_agent_dns_upstream_rtt_seconds",
            Kind::Gauge,
            "Smoothed round-trip time of an upstream's answers over UDP (RFC 6298 weighting); absent until it has answered.",
        ),
        (
            "attach_agent_dns_upstream_healthy",
            Kind::Gauge,
            "1 while an upstream is in service, 0 while it is demoted (it stopped answering; probed every second).",
        ),
    ];
    for (i, (name, kind, help)) in families.iter().enumerate() {
        e.family(name, *kind, help);
        for u in &upstreams {
            let value = match i {
                0 => Some(u.queries as f64),
                1 => Some(u.failures as f64),
                2 => Some(u.timeouts as f64),
                3 => u.srtt.map(|d| d.as_secs_f64()),
                _ => Some(if u.demoted { 0.0 } else { 1.0 }),
            };
            if let Some(v) = value {
                e.sample(name, &[("upstream", &u.server.to_string())], v);
            }
        }
    }
    let cache = forwarder.cache();
    let counts = cache.counts();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    e.single(
        "attach_agent_dns_cache_entries",
        Kind::Gauge,
        "Upstream answers in the cache.",
        cache.len() as f64,
    );
    e.single(
        "attach_agent_dns_cache_bytes",
        Kind::Gauge,
        "Bytes the cached answers take, keys and bookkeeping included (what cache_bytes bounds).",
        cache.bytes() as f64,
    );
    e.single(
        "attach_agent_dns_cache_hits_total",
        Kind::Counter,
        "Cache lookups answered with a fresh answer.",
        load(&counts.hits) as f64,
    );
    e.single(
        "attach_agent_dns_cache_misses_total",
        Kind::Counter,
        "Cache lookups that found no fresh answer (the query went upstream, or was refused).",
        load(&counts.misses) as f64,
    );
    e.single(
        "attach_agent_dns_cache_evictions_total",
        Kind::Counter,
        "Cached answers dropped to make room.",
        load(&counts.evictions) as f64,
    );
    e.single(
        "attach_agent_dns_networks",
        Kind::Gauge,
        "Networks in the record table.",
        table.network_count() as f64,
    );
    e.single(
        "attach_agent_dns_endpoints",
        Kind::Gauge,
        "Endpoints (a container on a network) in the record table.",
        table.endpoint_count() as f64,
    );
}
