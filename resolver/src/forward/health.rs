//! Upstream health: which servers answer, and how fast.
//!
//! A server that times out (or whose port is closed) is demoted at once, so the next query
//! goes to the next server without waiting; a background probe asks each demoted server every
//! [`PROBE_EVERY`] and a server that answers is back in service. Among servers in service a
//! smoothed round-trip time (RFC 6298's 7/8 weighting) decides the order, unless the
//! configuration asks for strict order. Every change of state is logged when it happens.
//!
//! State is kept per address, not per list position, so it survives a resolv.conf reload that
//! keeps a server.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use smallvec::SmallVec;

/// How often a demoted server is asked whether it answers again.
pub const PROBE_EVERY: Duration = Duration::from_millis(1000);

/// The servers to try for one query, in order.
pub type Order = SmallVec<[SocketAddr; 4]>;

#[derive(Debug, Default)]
struct ServerHealth {
    /// Smoothed round-trip time in microseconds; 0 until the first answer.
    srtt_us: AtomicU32,
    demoted: AtomicBool,
    /// Queries sent to it (each attempt counts), over UDP and TCP.
    queries: AtomicU64,
    /// Attempts that got no usable answer other than by timing out: SERVFAIL or REFUSED
    /// answers, a closed port, a failed send.
    failures: AtomicU64,
    /// Attempts it did not answer in time.
    timeouts: AtomicU64,
}

/// One upstream as the metrics show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamReport {
    pub server: SocketAddr,
    pub queries: u64,
    pub failures: u64,
    pub timeouts: u64,
    /// Smoothed RTT, when measured.
    pub srtt: Option<Duration>,
    pub demoted: bool,
}

/// What is known of every upstream. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Health {
    servers: Arc<DashMap<SocketAddr, Arc<ServerHealth>>>,
    strict_order: bool,
}

impl Health {
    pub fn new(strict_order: bool) -> Health {
        Health {
            servers: Arc::new(DashMap::new()),
            strict_order,
        }
    }

    fn of(&self, server: SocketAddr) -> Arc<ServerHealth> {
        if let Some(h) = self.servers.get(&server) {
            return h.clone();
        }
        self.servers.entry(server).or_default().clone()
    }

    /// The order to try `list` in: servers in service first (by smoothed RTT, or as listed
    /// under strict order; a server never measured counts as fastest, so it gets measured),
    /// then demoted ones as listed: when every server is down they are still all tried.
    pub fn order(&self, list: &[SocketAddr]) -> Order {
        let mut up: SmallVec<[(u32, usize, SocketAddr); 4]> = SmallVec::new();
        let mut down = Order::new();
        for (i, &s) in list.iter().enumerate() {
            let h = self.of(s);
            if h.demoted.load(Ordering::Relaxed) {
                down.push(s);
            } else {
                let rank = if self.strict_order {
                    0
                } else {
                    h.srtt_us.load(Ordering::Relaxed)
                };
                up.push((rank, i, s));
            }
        }
        up.sort_unstable();
        up.into_iter().map(|(_, _, s)| s).chain(down).collect()
    }

    /// `server` answered after `rtt`: fold it into the smoothed RTT, and bring the server
    /// back into service if it was demoted.
    pub fn answered(&self, server: SocketAddr, rtt: Duration) {
        let h = self.of(server);
        let sample = rtt.as_micros().clamp(1, u128::from(u32::MAX)) as u32;
        let old = h.srtt_us.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            ((u64::from(old) * 7 + u64::from(sample)) / 8) as u32
        };
        h.srtt_us.store(new.max(1), Ordering::Relaxed);
        if h.demoted.swap(false, Ordering::Relaxed) {
            tracing::info!(%server, rtt_ms = rtt.as_secs_f64() * 1000.0, "upstream answers again: back in service");
        }
    }

    /// A query (an attempt) went to `server`.
    pub fn sent(&self, server: SocketAddr) {
        self.of(server).queries.fetch_add(1, Ordering::Relaxed);
    }

    /// An attempt at `server` failed without saying anything of its health (a SERVFAIL or
    /// REFUSED answer, a failed send, anything over TCP): counted, not demoted.
    pub fn attempt_failed(&self, server: SocketAddr) {
        self.of(server).failures.fetch_add(1, Ordering::Relaxed);
    }

    /// An attempt at `server` over TCP timed out: counted, not demoted (health is UDP's).
    pub fn attempt_timed_out(&self, server: SocketAddr) {
        self.of(server).timeouts.fetch_add(1, Ordering::Relaxed);
    }

    /// `server` did not answer in time: demote it.
    pub fn timed_out(&self, server: SocketAddr) {
        self.attempt_timed_out(server);
        self.demote(server, "timed out");
    }

    /// An attempt at `server` failed (`why`: its port is closed): count it and demote it.
    pub fn failed(&self, server: SocketAddr, why: &str) {
        self.attempt_failed(server);
        self.demote(server, why);
    }

    /// Forget servers that are not in `keep` (no longer listed nor in use): their series go
    /// from the metrics, and a server listed again starts afresh.
    pub fn retain(&self, keep: impl Fn(&SocketAddr) -> bool) {
        self.servers.retain(|s, _| keep(s));
    }

    /// Every server known (asked at least once, or listed for an order), by address.
    pub fn report(&self) -> Vec<UpstreamReport> {
        let mut all: Vec<UpstreamReport> = self
            .servers
            .iter()
            .map(|e| {
                let h = e.value();
                let us = h.srtt_us.load(Ordering::Relaxed);
                UpstreamReport {
                    server: *e.key(),
                    queries: h.queries.load(Ordering::Relaxed),
                    failures: h.failures.load(Ordering::Relaxed),
                    timeouts: h.timeouts.load(Ordering::Relaxed),
                    srtt: (us > 0).then(|| Duration::from_micros(u64::from(us))),
                    demoted: h.demoted.load(Ordering::Relaxed),
                }
            })
            .collect();
        all.sort_by_key(|r| r.server);
        all
    }

    /// Demote `server` (`why`), and say so the first time.
    pub fn demote(&self, server: SocketAddr, why: &str) {
        let h = self.of(server);
        if !h.demoted.swap(true, Ordering::Relaxed) {
            tracing::warn!(%server, reason = why, "upstream demoted: later queries go to the next server first; probing it every second");
        }
    }

    /// Whether `server` is demoted now.
    pub fn is_demoted(&self, server: SocketAddr) -> bool {
        self.servers
            .get(&server)
            .is_some_and(|h| h.demoted.load(Ordering::Relaxed))
    }

    /// The demoted servers of `list`.
    pub fn demoted(&self, list: &[SocketAddr]) -> Vec<SocketAddr> {
        list.iter()
            .copied()
            .filter(|&s| self.is_demoted(s))
            .collect()
    }

    /// Smoothed RTT of `server`, when measured.
    pub fn srtt(&self, server: SocketAddr) -> Option<Duration> {
        let us = self.servers.get(&server)?.srtt_us.load(Ordering::Relaxed);
        (us > 0).then(|| Duration::from_micros(u64::from(us)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demoted_servers_go_last_and_come_back_and_rtt_orders_the_rest() {
        let (a, b, c): (SocketAddr, SocketAddr, SocketAddr) = (
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
            "127.0.0.1:3".parse().unwrap(),
        );
        let h = Health::new(false);
        assert_eq!(h.order(&[a, b, c]).as_slice(), [a, b, c]);
        h.failed(a, "timed out");
        assert_eq!(h.order(&[a, b, c]).as_slice(), [b, c, a]);
        h.answered(b, Duration::from_millis(30));
        h.answered(c, Duration::from_millis(2));
        assert_eq!(h.order(&[a, b, c]).as_slice(), [c, b, a]);
        h.answered(a, Duration::from_millis(1));
        assert_eq!(h.order(&[a, b, c]).as_slice(), [a, c, b]);
        let strict = Health::new(true);
        strict.answered(c, Duration::from_millis(1));
        strict.answered(a, Duration::from_millis(50));
        strict.failed(b, "timed out");
        assert_eq!(strict.order(&[a, b, c]).as_slice(), [a, c, b]);
    }
}
