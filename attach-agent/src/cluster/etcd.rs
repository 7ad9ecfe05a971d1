//! [`ClusterStore`] on etcd (v3 API, gRPC, via the etcd-client crate).
//!
//! One client per member, and calls go to the current one; a call that fails for want of a
//! member (connection refused, reset, deadline, no leader) moves on to the next member and is
//! retried, with a short backoff after each full round, until `retry_for` has passed, so one
//! member dying costs a retry, not an error. (etcd-client's own balanced channel over all the
//! members keeps picking a dead one: it has no health check.) Transactions are retried too: callers make their conditions such that a retry of a
//! transaction that did apply is recognisable (see `Cluster::claim`).

use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, PutOptions,
    Txn, TxnOp, WatchOptions,
};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use tonic::Code;

use super::store::{
    Batch, Change, ClusterStore, Cond, Kv, LeaseId, Op, Result, Revision, StoreError,
};

/// How long one request may take before it is tried again (on another member, if one is
/// down): a dead member's TCP connection otherwise hangs until the kernel gives up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

pub struct EtcdStore {
    /// One client per member, in the order given.
    members: Vec<(String, Client)>,
    /// The member calls go to; moved on when it fails.
    current: std::sync::atomic::AtomicUsize,
    retry_for: Duration,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore").finish_non_exhaustive()
    }
}

/// Whether an error says "this member, now" rather than "this request": worth a retry.
fn transient(e: &etcd_client::Error) -> bool {
    use etcd_client::Error as E;
    if e.to_string().contains("lease not found") {
        return false; // the lease is gone everywhere: see `keep_alive` and `txn`
    }
    match e {
        E::TransportError(_) | E::IoError(_) | E::WatchError(_) | E::LeaseKeepAliveError(_) => true,
        E::GRpcStatus(s) => matches!(
            s.code(),
            Code::Unavailable
                | Code::DeadlineExceeded
                | Code::Unknown
                | Code::Cancelled
                | Code::Aborted
                | Code::Internal
        ),
        _ => false,
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn lease_gone(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.code() == Code::NotFound)
}

impl EtcdStore {
    /// Connect to the members at `endpoints` (`HOST:PORT`); fails when none answers within
    /// `retry_for`.
    pub async fn connect(endpoints: &[String], retry_for: Duration) -> Result<EtcdStore> {
        let urls: Vec<String> = endpoints.iter().map(|e| format!("http://{e}")).collect();
        let options = ConnectOptions::new()
            .with_connect_timeout(REQUEST_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(1), REQUEST_TIMEOUT)
            .with_keep_alive_while_idle(true)
            // A member cut off from the others must not serve (stale) reads or watches.
            .with_require_leader(true);
        let mut members = Vec::new();
        for (name, url) in endpoints.iter().zip(&urls) {
            // Connecting is lazy: a member down now is only skipped at the first call.
            let client = Client::connect([url], Some(options.clone()))
                .await
                .map_err(unavailable)?;
            members.push((name.clone(), client));
        }
        if members.is_empty() {
            return Err(StoreError::Unavailable(
                "no cluster store member given".into(),
            ));
        }
        let store = EtcdStore {
            members,
            current: std::sync::atomic::AtomicUsize::new(0),
            retry_for,
        };
        // One read to know a member answers now, not at the first operation.
        store.snapshot("/attach-agent/v1/version-probe").await?;
        Ok(store)
    }

    /// Compact the store's history up to now (an operator's task; the tests use it to send
    /// watchers down the full-reload path). Returns the revision compacted to.
    pub async fn compact_now(&self) -> Result<Revision> {
        let (_, rev) = self.snapshot("/attach-agent/v1/").await?;
        self.client()
            .compact(
                rev,
                Some(etcd_client::CompactionOptions::new().with_physical()),
            )
            .await
            .map_err(unavailable)?;
        Ok(rev)
    }

    async fn retry<T, F>(&self, what: &str, mut call: F) -> Result<T>
    where
        F: FnMut(Client) -> BoxFuture<'static, std::result::Result<T, etcd_client::Error>>,
    {
        use std::sync::atomic::Ordering;
        let deadline = Instant::now() + self.retry_for;
        let mut pause = Duration::from_millis(20);
        let n = self.members.len();
        let mut tried = 0;
        loop {
            let i = self.current.load(Ordering::Relaxed) % n;
            let (name, client) = &self.members[i];
            match call(client.clone()).await {
                Ok(v) => return Ok(v),
                Err(e) if transient(&e) && Instant::now() + pause < deadline => {
                    tracing::debug!(what, member = %name, error = %e, "cluster store call failed; trying the next member");
                    // Move on, unless another call moved already.
                    let _ = self.current.compare_exchange(
                        i,
                        (i + 1) % n,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    tried += 1;
                    if tried % n == 0 {
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_millis(500));
                    }
                }
                Err(e) => return Err(StoreError::Unavailable(format!("{what}: {e}"))),
            }
        }
    }

    /// The current member's client.
    fn client(&self) -> Client {
        let i = self.current.load(std::sync::atomic::Ordering::Relaxed);
        self.members[i % self.members.len()].1.clone()
    }
}

fn compare(c: &Cond) -> Compare {
    match c {
        Cond::Absent(k) => Compare::version(k.as_str(), CompareOp::Equal, 0),
        Cond::Present(k) => Compare::version(k.as_str(), CompareOp::Greater, 0),
        // Over a range, etcd compares every key in it; an empty range compares as one key
        // of version 0.
        Cond::NoneUnder(p) => Compare::version(p.as_str(), CompareOp::Equal, 0).with_prefix(),
        Cond::ValueIs(k, v) => Compare::value(k.as_str(), CompareOp::Equal, v.clone()),
    }
}

fn operation(o: &Op) -> TxnOp {
    match o {
        Op::Put { key, value, lease } => TxnOp::put(
            key.as_str(),
            value.clone(),
            lease.map(|l| PutOptions::new().with_lease(l)),
        ),
        Op::Delete(k) => TxnOp::delete(k.as_str(), None),
        Op::DeleteUnder(p) => TxnOp::delete(p.as_str(), Some(DeleteOptions::new().with_prefix())),
    }
}

fn kv(k: &etcd_client::KeyValue) -> Result<Kv> {
    let key = k.key_str().map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(k.key()).into(),
        reason: e.to_string(),
    })?;
    Ok(Kv {
        key: key.to_string(),
        value: k.value().to_vec(),
    })
}

impl ClusterStore for EtcdStore {
    fn snapshot(&self, prefix: &str) -> BoxFuture<'_, Result<(Vec<Kv>, Revision)>> {
        let prefix = prefix.to_string();
        async move {
            let resp = self
                .retry("get", |mut c| {
                    let p = prefix.clone();
                    async move { c.get(p, Some(GetOptions::new().with_prefix())).await }.boxed()
                })
                .await?;
            let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
            let kvs = resp.kvs().iter().map(kv).collect::<Result<Vec<_>>>()?;
            Ok((kvs, rev))
        }
        .boxed()
    }

    fn txn(&self, when: Vec<Cond>, then: Vec<Op>) -> BoxFuture<'_, Result<bool>> {
        async move {
            let compares: Vec<Compare> = when.iter().map(compare).collect();
            let ops: Vec<TxnOp> = then.iter().map(operation).collect();
            let lease = then.iter().find_map(|o| match o {
                Op::Put { lease, .. } => *lease,
                _ => None,
            });
            let resp = match self
                .retry("txn", |mut c| {
                    let t = Txn::new().when(compares.clone()).and_then(ops.clone());
                    async move { c.txn(t).await }.boxed()
                })
                .await
            {
                // etcd's answer to a put on a lease that expired ("requested lease not found").
                Err(StoreError::Unavailable(why)) if why.contains("lease not found") => {
                    return Err(StoreError::LeaseExpired(lease.unwrap_or_default()))
                }
                r => r?,
            };
            Ok(resp.succeeded())
        }
        .boxed()
    }

    fn grant(&self, ttl: Duration) -> BoxFuture<'_, Result<LeaseId>> {
        async move {
            let secs = ttl.as_secs().max(1) as i64;
            let resp = self
                .retry("lease grant", |mut c| {
                    async move { c.lease_grant(secs, None).await }.boxed()
                })
                .await?;
            Ok(resp.id())
        }
        .boxed()
    }

    fn keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<()>> {
        async move {
            let ttl = self
                .retry("lease keep-alive", |mut c| {
                    async move {
                        let gone =
                            |e: &etcd_client::Error| e.to_string().contains("lease not found");
                        // etcd-client reports a lease that is gone as an error at any of the
                        // three steps: a TTL of 0 here.
                        let (mut keeper, mut stream) = match c.lease_keep_alive(lease).await {
                            Ok(k) => k,
                            Err(e) if gone(&e) => return Ok(0),
                            Err(e) => return Err(e),
                        };
                        match keeper.keep_alive().await {
                            Err(e) if gone(&e) => return Ok(0),
                            r => r?,
                        }
                        match stream.message().await {
                            Ok(Some(r)) => Ok(r.ttl()),
                            Err(e) if gone(&e) => Ok(0),
                            Err(e) => Err(e),
                            Ok(None) => Err(etcd_client::Error::LeaseKeepAliveError(
                                "keep-alive stream closed".into(),
                            )),
                        }
                    }
                    .boxed()
                })
                .await?;
            if ttl <= 0 {
                return Err(StoreError::LeaseExpired(lease));
            }
            Ok(())
        }
        .boxed()
    }

    fn revoke(&self, lease: LeaseId) -> BoxFuture<'_, Result<()>> {
        async move {
            let mut c = self.client();
            match c.lease_revoke(lease).await {
                Ok(_) => Ok(()),
                Err(e) if lease_gone(&e) => Ok(()),
                Err(e) => Err(unavailable(e)),
            }
        }
        .boxed()
    }

    fn watch(
        &self,
        prefix: &str,
        from: Revision,
    ) -> BoxFuture<'_, Result<BoxStream<'static, Result<Batch>>>> {
        let prefix = prefix.to_string();
        async move {
            let stream = self
                .retry("watch", |mut c| {
                    let p = prefix.clone();
                    async move {
                        c.watch(
                            p,
                            Some(WatchOptions::new().with_prefix().with_start_revision(from)),
                        )
                        .await
                    }
                    .boxed()
                })
                .await?;
            let batches = futures::stream::unfold(Some(stream), |state| async move {
                let mut stream = state?;
                loop {
                    let resp = match stream.message().await {
                        Ok(Some(r)) => r,
                        Ok(None) => return None,
                        Err(e) => return Some((Err(unavailable(e)), None)),
                    };
                    if resp.compact_revision() > 0 {
                        return Some((Err(StoreError::Compacted(resp.compact_revision())), None));
                    }
                    if resp.canceled() {
                        let why = resp.cancel_reason().to_string();
                        return Some((Err(StoreError::Unavailable(why)), None));
                    }
                    if resp.events().is_empty() {
                        continue; // created / progress notifications
                    }
                    let mut changes = Vec::with_capacity(resp.events().len());
                    let mut revision = 0;
                    for ev in resp.events() {
                        let Some(k) = ev.kv() else { continue };
                        revision = revision.max(k.mod_revision());
                        let change = match ev.event_type() {
                            EventType::Put => kv(k).map(Change::Put),
                            EventType::Delete => kv(k).map(|k| Change::Delete(k.key)),
                        };
                        match change {
                            Ok(c) => changes.push(c),
                            Err(e) => return Some((Err(e), None)),
                        }
                    }
                    return Some((Ok(Batch { revision, changes }), Some(stream)));
                }
            });
            Ok(batches.boxed())
        }
        .boxed()
    }
}
