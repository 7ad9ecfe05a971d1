//! Fair share of forwarding: a cap on queries in flight for the whole host, and a smaller one
//! per asking container, so one container flooding names that hang upstream cannot take the
//! budget of every other.
//!
//! The asker is its source address. The bridge does not police source addresses, so a
//! container sending from a neighbour's address spends that neighbour's share, not the host's:
//! it can delay its neighbour's forwarding by at most that share, never every container's.
//!
//! A [`Slot`] is one query's share; dropping it (however the query ends) gives it back. Past
//! either cap the asker gets REFUSED at once, logged at most once a second (per container for
//! the per-container cap), so a flood cannot flood the log either.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

/// Which cap a refused query hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The host's cap of forwarded queries in flight.
    Host,
    /// The asking container's own cap.
    Asker,
}

/// Counts in flight, per host and per asker. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Budget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    host_cap: usize,
    asker_cap: usize,
    host: AtomicUsize,
    askers: DashMap<IpAddr, usize>,
    started: Instant,
    /// Second (since `started`) of the last host-cap log line.
    host_logged: AtomicU64,
    /// Second of the last asker-cap log line, per asker.
    asker_logged: DashMap<IpAddr, u64>,
    /// Second of the last sweep of `asker_logged`.
    pruned: AtomicU64,
}

/// One forwarded query's share of the budget, given back on drop.
#[derive(Debug)]
pub struct Slot {
    budget: Arc<Inner>,
    asker: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Entry::Occupied(mut e) = self.budget.askers.entry(self.asker) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
        self.budget.host.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Budget {
    pub fn new(host_cap: usize, asker_cap: usize) -> Budget {
        Budget {
            inner: Arc::new(Inner {
                host_cap,
                asker_cap,
                host: AtomicUsize::new(0),
                askers: DashMap::new(),
                started: Instant::now(),
                host_logged: AtomicU64::new(u64::MAX),
                asker_logged: DashMap::new(),
                pruned: AtomicU64::new(u64::MAX),
            }),
        }
    }

    /// A slot for one query of `asker`, or which cap is full.
    pub fn acquire(&self, asker: IpAddr) -> Result<Slot, Refusal> {
        let b = &self.inner;
        {
            let mut count = b.askers.entry(asker).or_insert(0);
            if *count >= b.asker_cap {
                drop(count);
                self.log_refused(Refusal::Asker, asker);
                return Err(Refusal::Asker);
            }
            *count += 1;
        }
        // From here the slot exists: dropping it undoes both counts.
        let slot = Slot {
            budget: b.clone(),
            asker,
        };
        if b.host.fetch_add(1, Ordering::Relaxed) >= b.host_cap {
            drop(slot);
            self.log_refused(Refusal::Host, asker);
            return Err(Refusal::Host);
        }
        Ok(slot)
    }

    /// Forwarded queries in flight now on the host.
    pub fn host_in_flight(&self) -> usize {
        self.inner.host.load(Ordering::Relaxed)
    }

    /// Queries in flight now, for the host and for `asker`.
    pub fn in_flight(&self, asker: IpAddr) -> (usize, usize) {
        let b = &self.inner;
        let mine = b.askers.get(&asker).map_or(0, |c| *c);
        (b.host.load(Ordering::Relaxed), mine)
    }

    fn log_refused(&self, cap: Refusal, asker: IpAddr) {
        let b = &self.inner;
        let now = b.started.elapsed().as_secs();
        match cap {
            Refusal::Host => {
                let last = b.host_logged.load(Ordering::Relaxed);
                if last != now
                    && b.host_logged
                        .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    tracing::warn!(
                        cap = b.host_cap,
                        %asker,
                        "too many forwarded queries in flight on this host: answering REFUSED"
                    );
                }
            }
            Refusal::Asker => {
                if b.asker_logged.len() > 4096 && b.pruned.swap(now, Ordering::Relaxed) != now {
                    // Forget askers not refused in the last two seconds: bounded memory, and
                    // at most one sweep a second however many askers are refused.
                    b.asker_logged.retain(|_, s| now.saturating_sub(*s) < 2);
                }
                let mut log = false;
                b.asker_logged
                    .entry(asker)
                    .and_modify(|s| {
                        if *s != now {
                            *s = now;
                            log = true;
                        }
                    })
                    .or_insert_with(|| {
                        log = true;
                        now
                    });
                if log {
                    tracing::warn!(
                        cap = b.asker_cap,
                        %asker,
                        "this container has too many forwarded queries in flight: answering REFUSED"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_asker_and_per_host_and_slots_give_back() {
        let b = Budget::new(3, 2);
        let (a, c) = ("10.0.0.2".parse().unwrap(), "10.0.0.3".parse().unwrap());
        let s1 = b.acquire(a).unwrap();
        let s2 = b.acquire(a).unwrap();
        assert_eq!(b.acquire(a).unwrap_err(), Refusal::Asker);
        let s3 = b.acquire(c).unwrap();
        assert_eq!(b.acquire(c).unwrap_err(), Refusal::Host);
        assert_eq!(b.in_flight(c), (3, 1), "a refused query holds nothing");
        drop((s1, s2, s3));
        assert_eq!(b.in_flight(a), (0, 0));
        assert!(b.inner.askers.is_empty());
    }
}
