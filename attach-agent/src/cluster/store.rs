//! The interface the cluster logic needs from a distributed store: ranges read at one revision,
//! conditional transactions, leases, and a watch that resumes from a revision. etcd is the
//! implementation that spans hosts ([`super::etcd::EtcdStore`]); [`super::memory::MemoryStore`]
//! is the same contract inside one process (one host, or the unit tests of the cluster logic).
//!
//! The contract is etcd's, kept small on purpose: anything a second store would have to fake
//! (sorting, leases with keys listed, compaction control) stays out.

use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use thiserror::Error;

/// A store-wide version number: every write makes a new one.
pub type Revision = i64;
/// A lease: keys put with it vanish when it is not kept alive for its TTL.
pub type LeaseId = i64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: String,
    pub value: Vec<u8>,
    /// The lease the key was put on (0: none). Readers check an endpoint's lease against its
    /// host's: only that host can have put it there.
    pub lease: LeaseId,
}

/// A condition of a transaction.
#[derive(Debug, Clone)]
pub enum Cond {
    /// No such key.
    Absent(String),
    /// The key exists.
    Present(String),
    /// No key starts with this prefix.
    NoneUnder(String),
    /// The key exists with exactly this value.
    ValueIs(String, Vec<u8>),
}

/// An operation of a transaction.
#[derive(Debug, Clone)]
pub enum Op {
    Put {
        key: String,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    },
    Delete(String),
    /// Every key with this prefix.
    DeleteUnder(String),
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Put(Kv),
    Delete(String),
}

/// Changes of one revision (or of consecutive ones), in order; none for a progress
/// notification (every change up to `revision` has been sent).
#[derive(Debug, Clone)]
pub struct Batch {
    /// The revision of the last change in the batch (or the progress reached): resume from
    /// the next one.
    pub revision: Revision,
    pub changes: Vec<Change>,
}

#[derive(Debug, Error)]
pub enum StoreError {
    /// No member answered in time (all down, or no quorum).
    #[error("cluster store unavailable: {0}")]
    Unavailable(String),
    /// The history a watch wanted to resume from is gone: reload everything.
    #[error("cluster store history compacted past revision {0}")]
    Compacted(Revision),
    /// The lease is gone (not kept alive in time): its keys were deleted.
    #[error("cluster lease {0} expired")]
    LeaseExpired(LeaseId),
    /// A setting that cannot work: a certificate or key file, a CA the store's certificate
    /// does not verify against, a user or password the store refuses.
    #[error("cluster {setting}: {detail}")]
    Setting {
        setting: &'static str,
        detail: String,
    },
    /// The store refused an operation to this host's user (its role lacks the permission).
    #[error("cluster store: permission denied: {0}")]
    Denied(String),
    /// A value that does not decode (written by something else, or a newer layout).
    #[error("cluster store key {key}: {reason}")]
    Corrupt { key: String, reason: String },
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A cluster store. Implementations retry on member failure themselves; an error means the
/// store as a whole could not be reached within their deadline.
pub trait ClusterStore: Send + Sync + 'static {
    /// Every key under `prefix`, and the revision they were read at.
    fn snapshot(&self, prefix: &str) -> BoxFuture<'_, Result<(Vec<Kv>, Revision)>>;
    /// Apply `then` atomically if every condition of `when` holds; whether it did.
    fn txn(&self, when: Vec<Cond>, then: Vec<Op>) -> BoxFuture<'_, Result<bool>>;
    fn grant(&self, ttl: Duration) -> BoxFuture<'_, Result<LeaseId>>;
    /// Renew a lease once; the store's revision as of the renewal. `LeaseExpired` when it
    /// is gone.
    fn keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<Revision>>;
    fn revoke(&self, lease: LeaseId) -> BoxFuture<'_, Result<()>>;
    /// Changes under `prefix` from revision `from` on. The stream ends or yields an error when
    /// the watch breaks; `Compacted` means `from` is too old (reload with `snapshot`).
    fn watch(
        &self,
        prefix: &str,
        from: Revision,
    ) -> BoxFuture<'_, Result<BoxStream<'static, Result<Batch>>>>;
}
