//! What the agent counts of its own work (the DNS server counts its own: `resolver::metrics`),
//! and the agent's metric families.
//!
//! Operations are counted where they are done ([`crate::agent::Agent`]), whichever front asked
//! (Engine API, CLI, CNI). Everything else is read when scraped: the state's sizes, the
//! cluster store's health. Nothing here is on the DNS hot path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use resolver::metrics::exposition::{Exposition, Kind};
use resolver::metrics::Histogram;

/// An operation whose count and duration are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Connect,
    Disconnect,
    Start,
    Stop,
    CniAdd,
    CniDel,
}

impl Operation {
    pub const ALL: [Operation; 6] = [
        Operation::Connect,
        Operation::Disconnect,
        Operation::Start,
        Operation::Stop,
        Operation::CniAdd,
        Operation::CniDel,
    ];

    /// The `operation` label.
    pub fn label(self) -> &'static str {
        match self {
            Operation::Connect => "connect",
            Operation::Disconnect => "disconnect",
            Operation::Start => "start",
            Operation::Stop => "stop",
            Operation::CniAdd => "cni_add",
            Operation::CniDel => "cni_del",
        }
    }
}

#[derive(Debug, Default)]
struct OperationCells {
    ok: AtomicU64,
    error: AtomicU64,
    duration: Histogram,
}

/// The agent's counters. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct AgentMetrics {
    inner: Arc<Cells>,
}

#[derive(Debug, Default)]
struct Cells {
    operations: [OperationCells; Operation::ALL.len()],
    /// Durable writes of the state, from their start to being on disk.
    state_writes: Histogram,
    /// Links deleted behind the agent's back and made again.
    links_recreated: AtomicU64,
    /// Links left by a crash, deleted at start.
    links_swept: AtomicU64,
}

impl AgentMetrics {
    /// `op` ended (`ok` or not) after `took`.
    pub fn operation(&self, op: Operation, ok: bool, took: Duration) {
        let c = &self.inner.operations[op as usize];
        let n = if ok { &c.ok } else { &c.error };
        n.fetch_add(1, Ordering::Relaxed);
        c.duration.observe(took);
    }

    /// A durable state write took `took`.
    pub fn state_write(&self, took: Duration) {
        self.inner.state_writes.observe(took);
    }

    pub fn links_recreated(&self, n: u64) {
        self.inner.links_recreated.fetch_add(n, Ordering::Relaxed);
    }

    pub fn links_swept(&self, n: u64) {
        self.inner.links_swept.fetch_add(n, Ordering::Relaxed);
    }

    /// Operations of kind `op` so far: (succeeded, failed).
    pub fn operations(&self, op: Operation) -> (u64, u64) {
        let c = &self.inner.operations[op as usize];
        (
            c.ok.load(Ordering::Relaxed),
            c.error.load(Ordering::Relaxed),
        )
    }
}

/// The state's sizes, read under the lock at scrape time.
#[derive(Debug, Clone, Default)]
pub struct StateCounts {
    pub networks: usize,
    pub containers: usize,
    pub running: usize,
    /// (network name, endpoints attached on this host).
    pub endpoints: Vec<(String, usize)>,
    /// Endpoints of other hosts mirrored from the cluster store.
    pub remote_endpoints: usize,
}

/// The cluster store as the metrics show it (multi-host only).
#[derive(Debug, Clone, Copy)]
pub struct ClusterCounts {
    pub reachable: bool,
    /// Since the lease was last granted or renewed (none: never).
    pub lease_age: Option<Duration>,
    /// Revisions the store is ahead of what the mirror applied.
    pub revision_lag: i64,
}

/// Write the agent's families into `e`.
pub fn render(
    e: &mut Exposition,
    m: &AgentMetrics,
    state: &StateCounts,
    cluster: Option<ClusterCounts>,
) {
    e.single(
        "attach_agent_networks",
        Kind::Gauge,
        "Networks the agent owns.",
        state.networks as f64,
    );
    e.family(
        "attach_agent_containers",
        Kind::Gauge,
        "Containers the agent knows, by whether their interfaces are attached (running or paused).",
    );
    let stopped = state.containers.saturating_sub(state.running);
    e.sample(
        "attach_agent_containers",
        &[("state", "up")],
        state.running as f64,
    );
    e.sample(
        "attach_agent_containers",
        &[("state", "down")],
        stopped as f64,
    );
    e.family(
        "attach_agent_endpoints",
        Kind::Gauge,
        "Endpoints attached on this host, by network.",
    );
    for (network, n) in &state.endpoints {
        e.sample("attach_agent_endpoints", &[("network", network)], *n as f64);
    }
    e.family(
        "attach_agent_operations_total",
        Kind::Counter,
        "Operations done, by kind and result (whichever front asked: Engine API, CLI or CNI).",
    );
    for op in Operation::ALL {
        let (ok, failed) = m.operations(op);
        for (result, n) in [("ok", ok), ("error", failed)] {
            e.sample(
                "attach_agent_operations_total",
                &[("operation", op.label()), ("result", result)],
                n as f64,
            );
        }
    }
    e.family(
        "attach_agent_operation_duration_seconds",
        Kind::Histogram,
        "Time an operation took, from its call to its answer (records answering, state on disk).",
    );
    for op in Operation::ALL {
        let c = &m.inner.operations[op as usize];
        e.histogram(
            "attach_agent_operation_duration_seconds",
            &[("operation", op.label())],
            &c.duration.value(),
        );
    }
    e.family(
        "attach_agent_state_write_duration_seconds",
        Kind::Histogram,
        "Durable writes of the state, from their start to being on disk (concurrent ones share a flush).",
    );
    e.histogram(
        "attach_agent_state_write_duration_seconds",
        &[],
        &m.inner.state_writes.value(),
    );
    e.single(
        "attach_agent_links_recreated_total",
        Kind::Counter,
        "Bridges and veths deleted behind the agent's back and made again.",
        m.inner.links_recreated.load(Ordering::Relaxed) as f64,
    );
    e.single(
        "attach_agent_links_swept_total",
        Kind::Counter,
        "Links with the agent's mark that the state did not know (left by a crash), deleted at start.",
        m.inner.links_swept.load(Ordering::Relaxed) as f64,
    );
    if let Some(c) = cluster {
        e.single(
            "attach_agent_cluster_store_reachable",
            Kind::Gauge,
            "1 when the last lease renewal reached a cluster store member, else 0.",
            if c.reachable { 1.0 } else { 0.0 },
        );
        if let Some(age) = c.lease_age {
            e.single(
                "attach_agent_cluster_lease_age_seconds",
                Kind::Gauge,
                "Time since this host's lease was last granted or renewed (it is renewed every third of lease_ttl).",
                age.as_secs_f64(),
            );
        }
        e.single(
            "attach_agent_cluster_watch_revision_lag",
            Kind::Gauge,
            "Revisions the cluster store was at (its last lease renewal or watch progress report) beyond the last change the mirror applied.",
            c.revision_lag.max(0) as f64,
        );
        e.single(
            "attach_agent_cluster_remote_endpoints",
            Kind::Gauge,
            "Endpoints of other hosts mirrored from the cluster store.",
            state.remote_endpoints as f64,
        );
    }
}

/// The summary `attach-agent info` prints (`GET /attach-agent/v1/status`): readiness and the
/// headline numbers of the metrics.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Status {
    pub ready: bool,
    /// Each condition of readiness: (what, met).
    pub checks: Vec<(String, bool)>,
    /// Where `/metrics` is served (none: off).
    pub metrics_addr: Option<std::net::SocketAddr>,
    pub networks: usize,
    pub containers: usize,
    pub containers_up: usize,
    pub endpoints: usize,
    pub remote_endpoints: usize,
    /// DNS queries so far by outcome (`local`, `forwarded`, …), zeros left out.
    pub queries: Vec<(String, u64)>,
    pub forwarded_in_flight: usize,
    pub cache_entries: usize,
    pub cache_bytes: usize,
    pub upstreams: Vec<UpstreamStatus>,
    /// Operations so far: (kind, succeeded, failed).
    pub operations: Vec<(String, u64, u64)>,
    /// Multi-host only.
    pub cluster: Option<ClusterStatus>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpstreamStatus {
    pub address: std::net::SocketAddr,
    pub healthy: bool,
    pub rtt_ms: Option<f64>,
    pub queries: u64,
    pub failures: u64,
    pub timeouts: u64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ClusterStatus {
    pub reachable: bool,
    pub lease_age_secs: Option<f64>,
    pub revision_lag: i64,
}

impl Status {
    /// As `attach-agent info` prints it.
    pub fn text(&self) -> String {
        use std::fmt::Write;
        let mut t = String::new();
        let _ = writeln!(t, "Ready: {}", if self.ready { "yes" } else { "no" });
        for (what, ok) in &self.checks {
            let _ = writeln!(t, "  {} {what}", if *ok { "ok" } else { "no" });
        }
        match &self.metrics_addr {
            Some(a) => {
                let _ = writeln!(t, "Metrics: http://{a}/metrics (and /health, /ready)");
            }
            None => t.push_str("Metrics: off\n"),
        }
        let _ = writeln!(t, "Networks: {}", self.networks);
        let _ = writeln!(
            t,
            "Containers: {} ({} up)",
            self.containers, self.containers_up
        );
        let _ = writeln!(
            t,
            "Endpoints: {} on this host, {} mirrored from other hosts",
            self.endpoints, self.remote_endpoints
        );
        let total: u64 = self.queries.iter().map(|(_, n)| n).sum();
        let parts: Vec<String> = self
            .queries
            .iter()
            .map(|(o, n)| format!("{o} {n}"))
            .collect();
        let _ = writeln!(t, "DNS queries: {total} ({})", parts.join(", "));
        let _ = writeln!(t, "Forwarded in flight: {}", self.forwarded_in_flight);
        let _ = writeln!(
            t,
            "Cache: {} answers, {} bytes",
            self.cache_entries, self.cache_bytes
        );
        t.push_str("Upstreams:\n");
        if self.upstreams.is_empty() {
            t.push_str("  none asked yet\n");
        }
        for u in &self.upstreams {
            let rtt = u
                .rtt_ms
                .map_or("rtt -".to_string(), |r| format!("rtt {r:.2} ms"));
            let _ = writeln!(
                t,
                "  {}  {}  {rtt}  queries {}  failures {}  timeouts {}",
                u.address,
                if u.healthy { "healthy" } else { "demoted" },
                u.queries,
                u.failures,
                u.timeouts
            );
        }
        t.push_str("Operations:\n");
        for (op, ok, failed) in &self.operations {
            let _ = writeln!(t, "  {op}: {ok} ok, {failed} failed");
        }
        if let Some(c) = &self.cluster {
            let age = c.lease_age_secs.map_or("never renewed".to_string(), |a| {
                format!("renewed {a:.1} s ago")
            });
            let _ = writeln!(
                t,
                "Cluster store: {}, lease {age}, watch {} revisions behind",
                if c.reachable {
                    "reachable"
                } else {
                    "unreachable"
                },
                c.revision_lag.max(0)
            );
        }
        t
    }
}
