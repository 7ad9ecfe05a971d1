//! What the DNS server counts, and how a scrape reads it.
//!
//! The rule that keeps counting off the hot path: a UDP listener thread writes cells that it
//! alone writes ([`ThreadCells`]: a plain load and store, no locked instruction, on cache lines
//! of its own), and a scrape sums every thread's cells. Answer latency is taken per batch (two
//! clock reads per `recvmmsg`, not two per query). Counts from the async side (TCP askers,
//! forwarded queries ending, upstream health, the cache) are shared atomics: they sit beside
//! work that costs tens of microseconds already.
//!
//! Every query ends in exactly one [`QueryOutcome`], counted once, when its reply is sent (or
//! when it is dropped): the outcomes of a network sum to the queries it received, except for
//! forwarded ones still in flight (their own gauge).
//!
//! - [`exposition`]: the text format;
//! - `render`: every family, written from the server's parts (see [`crate::Server`]).

pub mod exposition;
pub(crate) mod render;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use crate::wire::Transport;

/// How a query ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryOutcome {
    /// Answered from the table: addresses, or a PTR.
    Local,
    /// A local name without a record of the asked type (NOERROR, no answers).
    NoData,
    /// NXDOMAIN from us: a local name out of the asker's scope, or a name an internal
    /// network's container may not have forwarded.
    NxDomain,
    /// Relayed from an upstream's answer.
    Forwarded,
    /// Answered from the cache of upstream answers.
    Cached,
    /// Every upstream failed; a stale cached answer was given (RFC 8767).
    Stale,
    /// Every upstream failed and nothing was cached: SERVFAIL.
    ServFail,
    /// REFUSED: the host's or the asker's cap of forwarded queries in flight was reached.
    Refused,
    /// Malformed: FORMERR.
    FormErr,
    /// An opcode other than QUERY: NOTIMP.
    NotImp,
    /// An EDNS version other than 0: BADVERS.
    BadVers,
    /// Not answered: too short to carry an id, or itself a response.
    Dropped,
}

impl QueryOutcome {
    pub const ALL: [QueryOutcome; 12] = [
        QueryOutcome::Local,
        QueryOutcome::NoData,
        QueryOutcome::NxDomain,
        QueryOutcome::Forwarded,
        QueryOutcome::Cached,
        QueryOutcome::Stale,
        QueryOutcome::ServFail,
        QueryOutcome::Refused,
        QueryOutcome::FormErr,
        QueryOutcome::NotImp,
        QueryOutcome::BadVers,
        QueryOutcome::Dropped,
    ];
    const COUNT: usize = QueryOutcome::ALL.len();

    /// The `outcome` label.
    pub fn label(self) -> &'static str {
        match self {
            QueryOutcome::Local => "local",
            QueryOutcome::NoData => "nodata",
            QueryOutcome::NxDomain => "nxdomain",
            QueryOutcome::Forwarded => "forwarded",
            QueryOutcome::Cached => "cached",
            QueryOutcome::Stale => "stale",
            QueryOutcome::ServFail => "servfail",
            QueryOutcome::Refused => "refused",
            QueryOutcome::FormErr => "formerr",
            QueryOutcome::NotImp => "notimp",
            QueryOutcome::BadVers => "badvers",
            QueryOutcome::Dropped => "dropped",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// Answered by this server itself (the local-answer latency histogram's queries).
    pub fn is_local(self) -> bool {
        matches!(
            self,
            QueryOutcome::Local | QueryOutcome::NoData | QueryOutcome::NxDomain
        )
    }
}

/// Upper bounds of the answer-latency buckets, seconds: from a local answer's few
/// microseconds to a forwarded one's seconds, one set for both so they compare.
pub const LATENCY_BOUNDS: [f64; 19] = [
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
const BUCKETS: usize = LATENCY_BOUNDS.len() + 1;

/// Upper bounds of [`LATENCY_BOUNDS`] in nanoseconds, for the bucket search.
const BOUNDS_NS: [u64; 19] = {
    let mut ns = [0u64; 19];
    let mut i = 0;
    while i < ns.len() {
        ns[i] = (LATENCY_BOUNDS[i] * 1e9) as u64;
        i += 1;
    }
    ns
};

fn bucket_of(ns: u64) -> usize {
    BOUNDS_NS.partition_point(|&b| b < ns)
}

/// A latency histogram in nanoseconds; written either by one thread alone (`*_owned`) or by
/// anyone (`*_shared`), never both.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
}

impl Histogram {
    /// `times` observations of `took`, by the one thread that writes this histogram.
    fn observe_owned(&self, took: Duration, times: u64) {
        let ns = took.as_nanos().min(u128::from(u64::MAX / 1024)) as u64;
        bump_owned(&self.buckets[bucket_of(ns)], times);
        bump_owned(&self.sum_ns, ns * times);
    }

    /// One observation, from any thread.
    pub fn observe(&self, took: Duration) {
        let ns = took.as_nanos().min(u128::from(u64::MAX / 1024)) as u64;
        self.buckets[bucket_of(ns)].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// What it holds now, in seconds.
    pub fn value(&self) -> exposition::HistogramValue<'static> {
        let (mut counts, mut sum_ns) = ([0u64; BUCKETS], 0u64);
        self.add_into(&mut counts, &mut sum_ns);
        exposition::HistogramValue {
            bounds: &LATENCY_BOUNDS,
            counts: counts.to_vec(),
            sum: sum_ns as f64 / 1e9,
        }
    }

    fn add_into(&self, counts: &mut [u64; BUCKETS], sum_ns: &mut u64) {
        for (c, b) in counts.iter_mut().zip(&self.buckets) {
            *c += b.load(Ordering::Relaxed);
        }
        *sum_ns += self.sum_ns.load(Ordering::Relaxed);
    }

    fn fold(&self, other: &Histogram) {
        for (mine, theirs) in self.buckets.iter().zip(&other.buckets) {
            mine.fetch_add(theirs.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        self.sum_ns
            .fetch_add(other.sum_ns.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

/// Add `n` to a cell only this thread writes: a load and a store, no locked instruction.
fn bump_owned(cell: &AtomicU64, n: u64) {
    cell.store(
        cell.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

/// The counts of one UDP listener thread, written by that thread alone. Aligned to cache
/// lines so no other thread's writes share them.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct ThreadCells {
    outcomes: [AtomicU64; QueryOutcome::COUNT],
    local_latency: Histogram,
}

impl ThreadCells {
    /// A query of this thread ended as `outcome`. Only the thread owning the cells calls it
    /// (a second writer could lose counts; the crate's UDP listener threads are the owners).
    pub(crate) fn count(&self, outcome: QueryOutcome) {
        bump_owned(&self.outcomes[outcome.index()], 1);
    }

    /// `answers` local answers of one batch took `took` (from the batch being read to its
    /// replies being sent). The owning thread only, as [`ThreadCells::count`].
    pub(crate) fn local_answers(&self, answers: u64, took: Duration) {
        if answers > 0 {
            self.local_latency.observe_owned(took, answers);
        }
    }
}

/// Counts anyone may write: TCP askers, and forwarded queries ending on the async side.
#[derive(Debug, Default)]
struct SharedCells {
    outcomes: [AtomicU64; QueryOutcome::COUNT],
}

impl SharedCells {
    fn count(&self, outcome: QueryOutcome) {
        self.outcomes[outcome.index()].fetch_add(1, Ordering::Relaxed);
    }

    fn add_into(&self, counts: &mut [u64; QueryOutcome::COUNT]) {
        for (c, o) in counts.iter_mut().zip(&self.outcomes) {
            *c += o.load(Ordering::Relaxed);
        }
    }
}

/// The counts of one network's listeners.
#[derive(Debug, Default)]
pub struct NetworkStats {
    /// Live UDP listener threads' cells.
    threads: Mutex<Vec<Arc<ThreadCells>>>,
    /// What ended threads counted (folded in when they end, so nothing goes backwards).
    retired: ThreadCells,
    /// UDP queries that ended on the async side (forwarded ones).
    udp_late: SharedCells,
    tcp: SharedCells,
}

impl NetworkStats {
    /// Cells for a new UDP listener thread, read by every scrape from now on.
    pub(crate) fn thread_cells(&self) -> Arc<ThreadCells> {
        let cells = Arc::new(ThreadCells::default());
        lock(&self.threads).push(cells.clone());
        cells
    }

    /// The thread owning `cells` ended: keep what it counted.
    pub(crate) fn retire(&self, cells: &Arc<ThreadCells>) {
        let mut threads = lock(&self.threads);
        for (mine, theirs) in self.retired.outcomes.iter().zip(&cells.outcomes) {
            mine.fetch_add(theirs.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        self.retired.local_latency.fold(&cells.local_latency);
        threads.retain(|c| !Arc::ptr_eq(c, cells));
    }

    /// A query ended away from its listener thread (or over TCP).
    pub fn count(&self, transport: Transport, outcome: QueryOutcome) {
        match transport {
            Transport::Udp => self.udp_late.count(outcome),
            Transport::Tcp => self.tcp.count(outcome),
        }
    }

    /// Outcome counts for `transport`, in [`QueryOutcome::ALL`] order.
    fn outcomes(&self, transport: Transport) -> [u64; QueryOutcome::COUNT] {
        let mut counts = [0u64; QueryOutcome::COUNT];
        match transport {
            Transport::Udp => {
                let threads = lock(&self.threads);
                for cells in threads.iter().map(|c| &**c).chain([&self.retired]) {
                    for (c, o) in counts.iter_mut().zip(&cells.outcomes) {
                        *c += o.load(Ordering::Relaxed);
                    }
                }
                drop(threads);
                self.udp_late.add_into(&mut counts);
            }
            Transport::Tcp => self.tcp.add_into(&mut counts),
        }
        counts
    }

    fn add_local_latency(&self, counts: &mut [u64; BUCKETS], sum_ns: &mut u64) {
        let threads = lock(&self.threads);
        for cells in threads.iter().map(|c| &**c).chain([&self.retired]) {
            cells.local_latency.add_into(counts, sum_ns);
        }
    }
}

/// Where a forwarded query's outcome is counted when it ends.
#[derive(Debug, Clone)]
pub struct Tally {
    pub network: Arc<NetworkStats>,
    pub transport: Transport,
}

impl Tally {
    pub fn count(&self, outcome: QueryOutcome) {
        self.network.count(self.transport, outcome);
    }
}

/// A forwarded query's tally until the query ends: counted once, by [`PendingTally::end`], or
/// when dropped unended (the forwarder shutting down) as what the asker then gets.
#[derive(Debug)]
pub struct PendingTally {
    tally: Option<Tally>,
    if_dropped: QueryOutcome,
}

impl PendingTally {
    pub fn new(tally: Option<Tally>, if_dropped: QueryOutcome) -> PendingTally {
        PendingTally { tally, if_dropped }
    }

    /// The query ended as `outcome` (counted the first time only).
    pub fn end(&mut self, outcome: QueryOutcome) {
        if let Some(t) = self.tally.take() {
            t.count(outcome);
        }
    }
}

impl Drop for PendingTally {
    fn drop(&mut self) {
        self.end(self.if_dropped);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Registry {
    /// Network id → (name, counts). Only networks being served are here.
    networks: Mutex<BTreeMap<String, (String, Arc<NetworkStats>)>>,
    /// Answers local to TCP askers (UDP's are in the threads' cells).
    tcp_local_latency: Histogram,
    /// Forwarded queries, from being taken to their reply being sent.
    forward_latency: Histogram,
    /// What networks no longer served counted: their local answers' latency stays in the
    /// histogram (it has no network label, so it must not go backwards), their outcomes in
    /// the totals `attach-agent info` shows.
    removed_local_latency: Histogram,
    removed_outcomes: [AtomicU64; QueryOutcome::COUNT],
}

/// The DNS server's counts; `off()` counts nothing at all (the benchmark's baseline). Cheap
/// to clone.
#[derive(Clone)]
pub struct DnsMetrics {
    inner: Option<Arc<Registry>>,
}

impl std::fmt::Debug for DnsMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsMetrics")
            .field("on", &self.inner.is_some())
            .finish()
    }
}

impl DnsMetrics {
    pub fn on() -> DnsMetrics {
        DnsMetrics {
            inner: Some(Arc::new(Registry {
                networks: Mutex::new(BTreeMap::new()),
                tcp_local_latency: Histogram::default(),
                forward_latency: Histogram::default(),
                removed_local_latency: Histogram::default(),
                removed_outcomes: Default::default(),
            })),
        }
    }

    pub fn off() -> DnsMetrics {
        DnsMetrics { inner: None }
    }

    pub fn is_on(&self) -> bool {
        self.inner.is_some()
    }

    /// The counts of network `id` (made on first use; its name updated).
    pub fn network(&self, id: &str, name: &str) -> Option<Arc<NetworkStats>> {
        let r = self.inner.as_ref()?;
        let mut nets = lock(&r.networks);
        let entry = nets
            .entry(id.to_string())
            .or_insert_with(|| (name.to_string(), Arc::default()));
        name.clone_into(&mut entry.0);
        Some(entry.1.clone())
    }

    /// Network `id` is no longer served: its series go, its latencies and totals stay.
    pub fn remove_network(&self, id: &str) {
        let Some(r) = &self.inner else { return };
        let Some((_, stats)) = lock(&r.networks).remove(id) else {
            return;
        };
        let threads = lock(&stats.threads);
        for cells in threads.iter().map(|c| &**c).chain([&stats.retired]) {
            r.removed_local_latency.fold(&cells.local_latency);
        }
        drop(threads);
        for t in [Transport::Udp, Transport::Tcp] {
            for (total, n) in r.removed_outcomes.iter().zip(stats.outcomes(t)) {
                total.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// A TCP asker's local answer took `took`.
    pub fn tcp_local_answer(&self, took: Duration) {
        if let Some(r) = &self.inner {
            r.tcp_local_latency.observe(took);
        }
    }

    /// A forwarded query's reply went out `took` after the query was taken.
    pub fn forwarded_answer(&self, took: Duration) {
        if let Some(r) = &self.inner {
            r.forward_latency.observe(took);
        }
    }

    /// Every network's name and outcome counts by transport.
    fn query_counts(&self) -> Vec<(String, Transport, [u64; QueryOutcome::COUNT])> {
        let Some(r) = &self.inner else {
            return Vec::new();
        };
        let nets: Vec<(String, Arc<NetworkStats>)> = lock(&r.networks).values().cloned().collect();
        let mut rows = Vec::new();
        for (name, stats) in nets {
            for t in [Transport::Udp, Transport::Tcp] {
                rows.push((name.clone(), t, stats.outcomes(t)));
            }
        }
        rows
    }

    /// Queries of every network and transport, by outcome (networks removed included).
    pub fn outcome_totals(&self) -> Vec<(QueryOutcome, u64)> {
        let mut totals = [0u64; QueryOutcome::COUNT];
        if let Some(r) = &self.inner {
            for (t, n) in totals.iter_mut().zip(&r.removed_outcomes) {
                *t += n.load(Ordering::Relaxed);
            }
        }
        for (_, _, counts) in self.query_counts() {
            for (t, c) in totals.iter_mut().zip(counts) {
                *t += c;
            }
        }
        QueryOutcome::ALL.into_iter().zip(totals).collect()
    }

    /// Local-answer and forwarded-answer latency: (bucket counts, sum in ns) each.
    fn latencies(&self) -> Option<[([u64; BUCKETS], u64); 2]> {
        let r = self.inner.as_ref()?;
        let mut local = ([0u64; BUCKETS], 0u64);
        let nets: Vec<Arc<NetworkStats>> =
            lock(&r.networks).values().map(|(_, s)| s.clone()).collect();
        for s in nets {
            s.add_local_latency(&mut local.0, &mut local.1);
        }
        r.tcp_local_latency.add_into(&mut local.0, &mut local.1);
        r.removed_local_latency.add_into(&mut local.0, &mut local.1);
        let mut forwarded = ([0u64; BUCKETS], 0u64);
        r.forward_latency
            .add_into(&mut forwarded.0, &mut forwarded.1);
        Some([local, forwarded])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_tally_counts_once_and_counts_when_dropped() {
        let m = DnsMetrics::on();
        let net = m.network("id1", "front").unwrap();
        let tally = || {
            Some(Tally {
                network: net.clone(),
                transport: Transport::Tcp,
            })
        };
        let mut ended = PendingTally::new(tally(), QueryOutcome::ServFail);
        ended.end(QueryOutcome::Forwarded);
        ended.end(QueryOutcome::Stale);
        drop(ended);
        drop(PendingTally::new(tally(), QueryOutcome::ServFail));
        let tcp = net.outcomes(Transport::Tcp);
        assert_eq!(tcp[QueryOutcome::Forwarded.index()], 1);
        assert_eq!(tcp[QueryOutcome::Stale.index()], 0);
        assert_eq!(tcp[QueryOutcome::ServFail.index()], 1);
    }

    #[test]
    fn buckets_take_each_bound_inclusively() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(5_000), 0);
        assert_eq!(bucket_of(5_001), 1);
        assert_eq!(bucket_of(5_000_000_000), LATENCY_BOUNDS.len() - 1);
        assert_eq!(bucket_of(5_000_000_001), LATENCY_BOUNDS.len());
    }

    #[test]
    fn a_retired_threads_counts_are_kept_and_summed_with_the_live_ones() {
        let m = DnsMetrics::on();
        let net = m.network("id1", "front").unwrap();
        let a = net.thread_cells();
        let b = net.thread_cells();
        a.count(QueryOutcome::Local);
        a.count(QueryOutcome::Local);
        b.count(QueryOutcome::Local);
        b.local_answers(3, Duration::from_micros(3));
        net.retire(&a);
        drop(a);
        net.count(Transport::Udp, QueryOutcome::Forwarded);
        net.count(Transport::Tcp, QueryOutcome::NxDomain);
        let rows = m.query_counts();
        let udp = &rows.iter().find(|r| r.1 == Transport::Udp).unwrap().2;
        assert_eq!(udp[QueryOutcome::Local.index()], 3);
        assert_eq!(udp[QueryOutcome::Forwarded.index()], 1);
        let tcp = &rows.iter().find(|r| r.1 == Transport::Tcp).unwrap().2;
        assert_eq!(tcp[QueryOutcome::NxDomain.index()], 1);
        let [local, _] = m.latencies().unwrap();
        assert_eq!(local.0[0], 3);
        assert_eq!(local.1, 9_000);
        assert!(DnsMetrics::off().network("id1", "front").is_none());
        // A network removed: its series go, the latency histogram and the totals keep it.
        m.remove_network("id1");
        assert!(m.query_counts().is_empty());
        assert_eq!(m.latencies().unwrap()[0].0[0], 3);
        let totals = m.outcome_totals();
        assert_eq!(
            totals[QueryOutcome::Local.index()],
            (QueryOutcome::Local, 3)
        );
        assert_eq!(totals[QueryOutcome::NxDomain.index()].1, 1);
    }
}
