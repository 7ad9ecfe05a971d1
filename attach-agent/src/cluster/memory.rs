//! [`ClusterStore`] inside one process: the same contract as etcd (revisions, conditional
//! transactions, leases that expire, watches that resume from a revision or report
//! compaction), for one host on its own and for the unit tests of the cluster logic, which
//! then run without an etcd cluster. Nothing is persisted: it lives as long as the process.
//! No code under its lock panics, so a poisoned lock (a panic elsewhere on that thread) is
//! taken over as it is.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use tokio::sync::broadcast;

use super::store::{
    Batch, Change, ClusterStore, Cond, Kv, LeaseId, Op, Result, Revision, StoreError,
};

#[derive(Default)]
struct Mem {
    revision: Revision,
    kvs: BTreeMap<String, (Vec<u8>, Option<LeaseId>)>,
    leases: HashMap<LeaseId, (Duration, Instant)>,
    next_lease: LeaseId,
    /// Every batch since `compacted`, for watches that start in the past.
    history: Vec<Batch>,
    compacted: Revision,
}

/// Cheap to clone: clones share the store.
#[derive(Clone)]
pub struct MemoryStore {
    mem: Arc<Mutex<Mem>>,
    events: broadcast::Sender<Batch>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    /// A new, empty store. Expired leases are reaped by a task on the current runtime.
    pub fn new() -> MemoryStore {
        let store = MemoryStore {
            mem: Arc::new(Mutex::new(Mem {
                revision: 1,
                next_lease: 1,
                ..Mem::default()
            })),
            events: broadcast::channel(4096).0,
        };
        let weak = Arc::downgrade(&store.mem);
        let events = store.events.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let Some(mem) = weak.upgrade() else { return };
                let mut m = mem
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let now = Instant::now();
                let dead: Vec<LeaseId> = m
                    .leases
                    .iter()
                    .filter(|(_, (_, until))| *until <= now)
                    .map(|(id, _)| *id)
                    .collect();
                for id in dead {
                    m.leases.remove(&id);
                    let keys: Vec<String> = m
                        .kvs
                        .iter()
                        .filter(|(_, (_, l))| *l == Some(id))
                        .map(|(k, _)| k.clone())
                        .collect();
                    if !keys.is_empty() {
                        let ops: Vec<Op> = keys.into_iter().map(Op::Delete).collect();
                        commit(&mut m, &ops, &events);
                    }
                }
            }
        });
        store
    }

    /// Drop the history up to the current revision: watches asked to start before it fail
    /// with `Compacted` (what etcd's compaction does).
    pub fn compact(&self) {
        let mut m = self
            .mem
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        m.compacted = m.revision;
        m.history.clear();
    }
}

fn holds(m: &Mem, c: &Cond) -> bool {
    match c {
        Cond::Absent(k) => !m.kvs.contains_key(k),
        Cond::Present(k) => m.kvs.contains_key(k),
        Cond::NoneUnder(p) => !m.kvs.keys().any(|k| k.starts_with(p.as_str())),
        Cond::ValueIs(k, v) => m.kvs.get(k).is_some_and(|(x, _)| x == v),
    }
}

/// Apply `ops` as one revision and tell the watchers.
fn commit(m: &mut Mem, ops: &[Op], events: &broadcast::Sender<Batch>) {
    let mut changes = Vec::new();
    for o in ops {
        match o {
            Op::Put { key, value, lease } => {
                m.kvs.insert(key.clone(), (value.clone(), *lease));
                changes.push(Change::Put(Kv {
                    key: key.clone(),
                    value: value.clone(),
                    lease: lease.unwrap_or(0),
                }));
            }
            Op::Delete(k) => {
                if m.kvs.remove(k).is_some() {
                    changes.push(Change::Delete(k.clone()));
                }
            }
            Op::DeleteUnder(p) => {
                let gone: Vec<String> = m
                    .kvs
                    .keys()
                    .filter(|k| k.starts_with(p.as_str()))
                    .cloned()
                    .collect();
                for k in gone {
                    m.kvs.remove(&k);
                    changes.push(Change::Delete(k));
                }
            }
        }
    }
    if changes.is_empty() {
        return;
    }
    m.revision += 1;
    let batch = Batch {
        revision: m.revision,
        changes,
    };
    m.history.push(batch.clone());
    let _ = events.send(batch);
}

impl ClusterStore for MemoryStore {
    fn snapshot(&self, prefix: &str) -> BoxFuture<'_, Result<(Vec<Kv>, Revision)>> {
        let m = self
            .mem
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let kvs = m
            .kvs
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, (v, l))| Kv {
                key: k.clone(),
                value: v.clone(),
                lease: l.unwrap_or(0),
            })
            .collect();
        let rev = m.revision;
        futures::future::ready(Ok((kvs, rev))).boxed()
    }

    fn txn(&self, when: Vec<Cond>, then: Vec<Op>) -> BoxFuture<'_, Result<bool>> {
        let mut m = self
            .mem
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // As etcd: a put on a lease that is gone fails whole.
        let dead = then.iter().find_map(|o| match o {
            Op::Put { lease: Some(l), .. } if !m.leases.contains_key(l) => Some(*l),
            _ => None,
        });
        if let Some(l) = dead {
            return futures::future::ready(Err(StoreError::LeaseExpired(l))).boxed();
        }
        let ok = when.iter().all(|c| holds(&m, c));
        if ok {
            commit(&mut m, &then, &self.events);
        }
        futures::future::ready(Ok(ok)).boxed()
    }

    fn grant(&self, ttl: Duration) -> BoxFuture<'_, Result<LeaseId>> {
        let mut m = self
            .mem
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let id = m.next_lease;
        m.next_lease += 1;
        m.leases.insert(id, (ttl, Instant::now() + ttl));
        futures::future::ready(Ok(id)).boxed()
    }

    fn keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<Revision>> {
        let mut m = self
            .mem
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let revision = m.revision;
        let r = match m.leases.get_mut(&lease) {
            Some((ttl, until)) => {
                *until = Instant::now() + *ttl;
                Ok(revision)
            }
            None => Err(StoreError::LeaseExpired(lease)),
        };
        futures::future::ready(r).boxed()
    }

    fn revoke(&self, lease: LeaseId) -> BoxFuture<'_, Result<()>> {
        let mut m = self
            .mem
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if m.leases.remove(&lease).is_some() {
            let keys: Vec<Op> = m
                .kvs
                .iter()
                .filter(|(_, (_, l))| *l == Some(lease))
                .map(|(k, _)| Op::Delete(k.clone()))
                .collect();
            commit(&mut m, &keys, &self.events);
        }
        futures::future::ready(Ok(())).boxed()
    }

    fn watch(
        &self,
        prefix: &str,
        from: Revision,
    ) -> BoxFuture<'_, Result<BoxStream<'static, Result<Batch>>>> {
        let m = self
            .mem
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if from <= m.compacted {
            return futures::future::ready(Err(StoreError::Compacted(m.compacted))).boxed();
        }
        // Subscribed under the lock: no batch falls between the replay and the live feed.
        let live = tokio_stream_of(self.events.subscribe());
        let past: Vec<Batch> = m
            .history
            .iter()
            .filter(|b| b.revision >= from)
            .cloned()
            .collect();
        drop(m);
        let prefix = prefix.to_string();
        let only_prefix = move |b: Batch| -> Option<Batch> {
            let changes: Vec<Change> = b
                .changes
                .into_iter()
                .filter(|c| match c {
                    Change::Put(kv) => kv.key.starts_with(&prefix),
                    Change::Delete(k) => k.starts_with(&prefix),
                })
                .collect();
            (!changes.is_empty()).then_some(Batch {
                revision: b.revision,
                changes,
            })
        };
        let filter = only_prefix.clone();
        let stream = futures::stream::iter(past.into_iter().map(Ok))
            .chain(live)
            .filter_map(move |b| {
                let out = match b {
                    Ok(b) if b.revision >= from => filter(b).map(Ok),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                };
                futures::future::ready(out)
            });
        futures::future::ready(Ok(stream.boxed())).boxed()
    }
}

/// A broadcast receiver as a stream; falling behind is reported as a broken watch (the
/// watcher resumes from its last revision, as after a member failure).
fn tokio_stream_of(rx: broadcast::Receiver<Batch>) -> impl futures::Stream<Item = Result<Batch>> {
    futures::stream::unfold(Some(rx), |rx| async move {
        let mut rx = rx?;
        match rx.recv().await {
            Ok(b) => Some((Ok(b), Some(rx))),
            Err(broadcast::error::RecvError::Lagged(n)) => Some((
                Err(StoreError::Unavailable(format!(
                    "watch fell {n} batches behind"
                ))),
                None,
            )),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    })
}
