//! Multi-host: global networks kept in a cluster store shared by every host's agent.
//!
//! This module is the store-facing half: the key layout ([`layout`]), the store interface and
//! its two implementations ([`store`], [`etcd`], [`memory`]), and [`Cluster`], the operations
//! the agent needs expressed as transactions (a network name or VXLAN id taken once, an
//! address claimed once, endpoints published on this host's lease). What the agent does with
//! the store's contents — its state, the record table, the tunnels — lives in
//! `crate::agent` (its `overlay` and `mirror` parts).

pub mod etcd;
pub mod layout;
pub mod memory;
pub mod store;
pub mod trust;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;

use crate::ids::{EndpointId, NetworkId};
use layout::{Claim, EndpointRecord, HostRecord, Key, NetworkRecord};
pub use store::{Batch, Change, ClusterStore, Cond, Kv, LeaseId, Op, Revision, StoreError};
pub use trust::Refused;

/// The first VXLAN id handed out (Docker's overlay driver starts at 4096 too).
pub const FIRST_VNI: u32 = 4096;

/// The lease of a host that has none yet: it started while no member answered. Nothing is
/// ever put on it (etcd would take 0 for "no lease", and the key would never expire).
pub const NO_LEASE: LeaseId = 0;

/// Everything under the layout's root at one revision, decoded and checked: only records
/// [`trust`] accepts are in it.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub revision: Revision,
    pub networks: BTreeMap<NetworkId, NetworkRecord>,
    /// By (network id, endpoint id).
    pub endpoints: BTreeMap<(NetworkId, EndpointId), EndpointRecord>,
    pub claims: BTreeMap<(NetworkId, IpAddr), Claim>,
    /// Each live host's lease: an endpoint naming a host must be on it.
    pub hosts: BTreeMap<IpAddr, LeaseId>,
}

impl View {
    /// Fold one change in (the watch's view of the same data). A record that is refused is
    /// not kept, and one it replaces under the same key is dropped: the key no longer holds
    /// what was believed.
    pub fn apply(&mut self, change: &Change) -> Result<(), Refused> {
        match change {
            Change::Put(kv) => match Key::parse(&kv.key) {
                Key::Network(id) => {
                    let rec = decode::<NetworkRecord>(kv)
                        .and_then(|r| trust::network(&self.networks, &id, &r).map(|()| r));
                    match rec {
                        Ok(r) => self.networks.insert(id, r),
                        // A network already built stays as it was believed.
                        Err(e @ Refused::NetworkChanged) => return Err(e),
                        Err(e) => {
                            self.networks.remove(&id);
                            return Err(e);
                        }
                    };
                }
                Key::Endpoint { net, ep } => {
                    let rec = decode::<EndpointRecord>(kv).and_then(|r| {
                        let cx = trust::Context {
                            networks: &self.networks,
                            claims: &self.claims,
                            hosts: &self.hosts,
                        };
                        trust::endpoint(&cx, (&net, &ep), &r, kv.lease).map(|()| r)
                    });
                    match rec {
                        Ok(r) => self.endpoints.insert((net, ep), r),
                        Err(e) => {
                            self.endpoints.remove(&(net, ep));
                            return Err(e);
                        }
                    };
                }
                Key::Claim { net, ip } => match decode::<Claim>(kv) {
                    Ok(c) => {
                        self.claims.insert((net, ip), c);
                    }
                    Err(e) => {
                        self.claims.remove(&(net, ip));
                        return Err(e);
                    }
                },
                Key::Host(addr) => {
                    trust::host(addr)?;
                    self.hosts.insert(addr, kv.lease);
                }
                Key::Invalid => return Err(Refused::BadKey),
                Key::Other => {}
            },
            Change::Delete(key) => match Key::parse(key) {
                Key::Network(id) => {
                    self.networks.remove(&id);
                }
                Key::Endpoint { net, ep } => {
                    self.endpoints.remove(&(net, ep));
                }
                Key::Claim { net, ip } => {
                    self.claims.remove(&(net, ip));
                }
                Key::Host(addr) => {
                    self.hosts.remove(&addr);
                }
                Key::Invalid | Key::Other => {}
            },
        }
        Ok(())
    }
}

fn decode<T: for<'de> serde::Deserialize<'de>>(kv: &Kv) -> Result<T, Refused> {
    serde_json::from_slice(&kv.value).map_err(|e| Refused::Undecodable(e.to_string()))
}

/// The order a snapshot is folded in: what an endpoint is checked against (its network, its
/// host's lease, its claims) before the endpoint, whatever the keys' order.
fn load_rank(key: &str) -> u8 {
    match Key::parse(key) {
        Key::Network(_) => 0,
        Key::Host(_) => 1,
        Key::Claim { .. } => 2,
        Key::Endpoint { .. } => 3,
        Key::Invalid | Key::Other => 4,
    }
}

/// How a claim on an address ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claimed {
    Ours,
    /// Another endpoint holds it.
    Taken,
    /// The network is gone from the store.
    NoNetwork,
}

/// This host's membership in the cluster. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn ClusterStore>,
    host: IpAddr,
    ttl: Duration,
    lease: AtomicI64,
    /// Bumped each time the lease had to be replaced (see [`Cluster::lease_changes`]).
    generation: tokio::sync::watch::Sender<u64>,
    keeper: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Serialises lease replacement (the keeper and a publish that found the lease gone).
    renewing: tokio::sync::Mutex<()>,
    /// This host's record, as first announced (the same bytes each time it is put again).
    host_record: Vec<u8>,
    /// What the metrics show of the store; see [`StoreHealth`].
    health: std::sync::Mutex<StoreHealth>,
}

/// The cluster store as this host last saw it.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreHealth {
    /// Whether the last renewal (or the first grant) reached a member.
    pub reachable: bool,
    /// When the lease was last granted or renewed.
    pub renewed: Option<std::time::Instant>,
    /// The store's revision at that renewal.
    pub store_revision: Revision,
    /// The revision of the last change the mirror applied.
    pub applied_revision: Revision,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(k) = self.keeper.get_mut().ok().and_then(Option::take) {
            k.abort();
        }
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("host", &self.inner.host)
            .field("lease", &self.lease())
            .finish()
    }
}

impl Cluster {
    /// Join: a lease for this host's endpoints, kept alive from now on (by a task, for as
    /// long as this handle or a clone lives), and the host's own record on it.
    pub async fn join(
        store: Arc<dyn ClusterStore>,
        host: IpAddr,
        ttl: Duration,
    ) -> Result<Cluster, StoreError> {
        let lease = store.grant(ttl).await?;
        let c = Cluster::new(store, host, ttl, lease);
        c.announce_host().await?;
        Ok(c)
    }

    /// A membership for a host whose store does not answer now: no lease yet; it takes one
    /// (announcing the host, and telling [`Cluster::lease_changes`] watchers to publish) as
    /// soon as a member answers.
    pub fn offline(store: Arc<dyn ClusterStore>, host: IpAddr, ttl: Duration) -> Cluster {
        Cluster::new(store, host, ttl, NO_LEASE)
    }

    fn new(store: Arc<dyn ClusterStore>, host: IpAddr, ttl: Duration, lease: LeaseId) -> Cluster {
        let c = Cluster {
            inner: Arc::new(Inner {
                store,
                host,
                ttl,
                lease: AtomicI64::new(lease),
                generation: tokio::sync::watch::Sender::new(0),
                keeper: std::sync::Mutex::new(None),
                renewing: tokio::sync::Mutex::new(()),
                host_record: layout::encode(&HostRecord {
                    started: crate::clock::now_rfc3339(),
                }),
                health: std::sync::Mutex::new(StoreHealth {
                    reachable: lease != NO_LEASE,
                    renewed: (lease != NO_LEASE).then(std::time::Instant::now),
                    ..StoreHealth::default()
                }),
            }),
        };
        let keeper = c.spawn_keeper();
        *c.inner
            .keeper
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(keeper);
        c
    }

    /// The store as last seen (the metrics).
    pub fn store_health(&self) -> StoreHealth {
        *self
            .inner
            .health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The mirror applied the store's changes up to `revision`.
    pub fn applied(&self, revision: Revision) {
        self.with_health(|h| {
            h.applied_revision = revision;
            h.store_revision = h.store_revision.max(revision);
        });
    }

    fn with_health(&self, f: impl FnOnce(&mut StoreHealth)) {
        f(&mut self
            .inner
            .health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner));
    }

    /// Whether this host has a lease (it has reached the store since it started).
    pub fn is_joined(&self) -> bool {
        self.lease() != NO_LEASE
    }

    /// The lease to put records on: the current one, or a first one taken now.
    async fn live_lease(&self) -> Result<LeaseId, StoreError> {
        if !self.is_joined() {
            self.replace_lease(NO_LEASE).await?;
        }
        Ok(self.lease())
    }

    /// Stop renewing the lease, as a host that died would: its records go when it expires.
    pub fn halt(&self) {
        if let Some(k) = self
            .inner
            .keeper
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            k.abort();
        }
    }

    /// Changes each time the lease was lost (the store unreachable for longer than the TTL)
    /// and replaced: everything published on the old one is gone, publish it again.
    pub fn lease_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.generation.subscribe()
    }

    async fn announce_host(&self) -> Result<(), StoreError> {
        self.inner
            .store
            .txn(vec![], vec![self.host_put(self.lease())])
            .await?;
        Ok(())
    }

    /// This host's record on `lease`. Readers believe an endpoint only when it is on the lease
    /// its host's record is on, so every publish puts it again in the same transaction: an
    /// announce that failed after a lease was replaced cannot leave the endpoints unbelieved.
    fn host_put(&self, lease: LeaseId) -> Op {
        Op::Put {
            key: layout::host(self.inner.host),
            value: self.inner.host_record.clone(),
            lease: Some(lease),
        }
    }

    /// This host's advertise address.
    pub fn host(&self) -> IpAddr {
        self.inner.host
    }

    pub fn lease(&self) -> LeaseId {
        self.inner.lease.load(Ordering::Relaxed)
    }

    /// Everything, at one revision.
    pub async fn load(&self) -> Result<View, StoreError> {
        let (mut kvs, revision) = self.inner.store.snapshot(layout::ROOT).await?;
        kvs.sort_by_key(|kv| load_rank(&kv.key));
        let mut view = View {
            revision,
            ..View::default()
        };
        for kv in kvs {
            let key = kv.key.clone();
            if let Err(why) = view.apply(&Change::Put(kv)) {
                // One bad record must not hide the others.
                tracing::warn!(%key, %why, "ignoring a cluster store record");
            }
        }
        Ok(view)
    }

    /// Changes after `revision`.
    pub async fn watch(
        &self,
        revision: Revision,
    ) -> Result<BoxStream<'static, Result<Batch, StoreError>>, StoreError> {
        self.inner.store.watch(layout::ROOT, revision + 1).await
    }

    /// Store a new global network, taking its name and the lowest free VXLAN id at once.
    /// `Ok(None)`: the name is taken.
    pub async fn create_network(
        &self,
        mut rec: NetworkRecord,
    ) -> Result<Option<NetworkRecord>, StoreError> {
        let (kvs, _) = self.inner.store.snapshot(&layout::vnis()).await?;
        let used: std::collections::BTreeSet<u32> = kvs
            .iter()
            .filter_map(|kv| kv.key.rsplit('/').next()?.parse().ok())
            .collect();
        let mut vni = FIRST_VNI;
        for _ in 0..64 {
            while used.contains(&vni) {
                vni += 1;
            }
            rec.vni = vni;
            let name_key = layout::network_name(&rec.name);
            let done = self
                .inner
                .store
                .txn(
                    vec![
                        Cond::Absent(name_key.clone()),
                        Cond::Absent(layout::vni(vni)),
                        Cond::Absent(layout::network(&rec.id)),
                    ],
                    vec![
                        Op::Put {
                            key: name_key.clone(),
                            value: rec.id.as_bytes().to_vec(),
                            lease: None,
                        },
                        Op::Put {
                            key: layout::vni(vni),
                            value: rec.id.as_bytes().to_vec(),
                            lease: None,
                        },
                        Op::Put {
                            key: layout::network(&rec.id),
                            value: layout::encode(&rec),
                            lease: None,
                        },
                    ],
                )
                .await?;
            if done {
                return Ok(Some(rec));
            }
            // Ours after all (a retried transaction that had applied)?
            if self
                .holds(&layout::network(&rec.id), &layout::encode(&rec))
                .await?
            {
                return Ok(Some(rec));
            }
            if !self.absent(&name_key).await? {
                return Ok(None);
            }
            vni += 1; // taken meanwhile by another host
        }
        Err(StoreError::Unavailable(
            "no free VXLAN id after 64 attempts".into(),
        ))
    }

    /// Remove a global network and its address claims unless an endpoint (on any host) is on
    /// it. `Ok(false)`: endpoints remain.
    pub async fn remove_network(&self, rec: &NetworkRecord) -> Result<bool, StoreError> {
        // Retried while the refusal is not explained by an endpoint (one that left between
        // the transaction and the check).
        for _ in 0..3 {
            let done = self
                .inner
                .store
                .txn(
                    vec![Cond::NoneUnder(layout::endpoints_of(&rec.id))],
                    vec![
                        Op::Delete(layout::network(&rec.id)),
                        Op::Delete(layout::network_name(&rec.name)),
                        Op::Delete(layout::vni(rec.vni)),
                        Op::DeleteUnder(layout::claims_of(&rec.id)),
                    ],
                )
                .await?;
            if done {
                return Ok(true);
            }
            if !self.none_under(&layout::endpoints_of(&rec.id)).await? {
                return Ok(false);
            }
        }
        Ok(false)
    }

    /// Claim `ip` on `net` for endpoint `ep` of this host. Two hosts claiming one address at
    /// the same moment: exactly one gets `Ours`.
    pub async fn claim(
        &self,
        net: &NetworkId,
        ip: IpAddr,
        ep: &EndpointId,
    ) -> Result<Claimed, StoreError> {
        self.claim_and_publish(net, ip, ep, None).await
    }

    /// [`Cluster::claim`], and when it succeeds, `rec` published on this host's lease in the
    /// same transaction: one etcd write (one raft commit and fsync) per connect, not two.
    pub async fn claim_and_publish(
        &self,
        net: &NetworkId,
        ip: IpAddr,
        ep: &EndpointId,
        rec: Option<&EndpointRecord>,
    ) -> Result<Claimed, StoreError> {
        let key = layout::claim(net, ip);
        let value = layout::encode(&Claim {
            endpoint_id: ep.clone(),
            host: self.inner.host,
        });
        let attempt = |lease: LeaseId| {
            let mut ops = vec![Op::Put {
                key: key.clone(),
                value: value.clone(),
                lease: None,
            }];
            if let Some(r) = rec {
                ops.push(self.host_put(lease));
                ops.push(Op::Put {
                    key: layout::endpoint(&r.network_id, &r.endpoint_id),
                    value: layout::encode(r),
                    lease: Some(lease),
                });
            }
            self.inner.store.txn(
                vec![
                    Cond::Present(layout::network(net)),
                    Cond::Absent(key.clone()),
                ],
                ops,
            )
        };
        let lease = self.live_lease().await?;
        let done = match attempt(lease).await {
            Err(StoreError::LeaseExpired(_)) => {
                self.replace_lease(lease).await?;
                attempt(self.lease()).await?
            }
            r => r?,
        };
        if done || self.holds(&key, &value).await? {
            return Ok(Claimed::Ours);
        }
        if self.absent(&layout::network(net)).await? {
            return Ok(Claimed::NoNetwork);
        }
        Ok(Claimed::Taken)
    }

    /// Give back an address claimed by endpoint `ep` of this host (someone else's claim on it
    /// stays).
    pub async fn release(
        &self,
        net: &NetworkId,
        ip: IpAddr,
        ep: &EndpointId,
    ) -> Result<(), StoreError> {
        let key = layout::claim(net, ip);
        let value = layout::encode(&Claim {
            endpoint_id: ep.clone(),
            host: self.inner.host,
        });
        self.inner
            .store
            .txn(
                vec![Cond::ValueIs(key.clone(), value)],
                vec![Op::Delete(key)],
            )
            .await?;
        Ok(())
    }

    /// Publish an endpoint of this host on its lease. `Ok(false)`: the network is gone. A
    /// lease found gone is replaced at once (and the owner told, to publish the rest again).
    pub async fn publish(&self, rec: &EndpointRecord) -> Result<bool, StoreError> {
        let put = |lease| {
            self.inner.store.txn(
                vec![Cond::Present(layout::network(&rec.network_id))],
                vec![
                    self.host_put(lease),
                    Op::Put {
                        key: layout::endpoint(&rec.network_id, &rec.endpoint_id),
                        value: layout::encode(rec),
                        lease: Some(lease),
                    },
                ],
            )
        };
        let lease = self.live_lease().await?;
        match put(lease).await {
            Err(StoreError::LeaseExpired(_)) => {
                self.replace_lease(lease).await?;
                put(self.lease()).await
            }
            r => r,
        }
    }

    /// Take a new lease if `old` is still the current one (it was found gone), announce the
    /// host on it and tell the owner.
    async fn replace_lease(&self, old: LeaseId) -> Result<(), StoreError> {
        let _one = self.inner.renewing.lock().await;
        if self.lease() != old {
            return Ok(()); // replaced meanwhile
        }
        if old == NO_LEASE {
            tracing::info!("a cluster store member answers; joining");
        } else {
            tracing::warn!(lease = old, "cluster lease lost; taking a new one");
        }
        let l = match self.inner.store.grant(self.inner.ttl).await {
            Ok(l) => l,
            Err(e) => {
                self.with_health(|h| h.reachable = false);
                return Err(e);
            }
        };
        self.with_health(|h| {
            h.reachable = true;
            h.renewed = Some(std::time::Instant::now());
        });
        self.inner.lease.store(l, Ordering::Relaxed);
        if let Err(e) = self.announce_host().await {
            tracing::warn!(error = %e, "cannot announce this host");
        }
        self.inner.generation.send_modify(|g| *g += 1);
        Ok(())
    }

    /// Release a claim another host left: only if it still holds exactly `claim` and that
    /// host's record is still absent (one transaction: a host that came back meanwhile, or
    /// another releaser that was quicker, makes it a no-op). Whether it was released.
    pub async fn release_orphan(
        &self,
        net: &NetworkId,
        ip: IpAddr,
        claim: &Claim,
    ) -> Result<bool, StoreError> {
        let key = layout::claim(net, ip);
        self.inner
            .store
            .txn(
                vec![
                    Cond::ValueIs(key.clone(), layout::encode(claim)),
                    Cond::Absent(layout::host(claim.host)),
                ],
                vec![Op::Delete(key)],
            )
            .await
    }

    pub async fn withdraw(&self, net: &NetworkId, ep: &EndpointId) -> Result<(), StoreError> {
        self.inner
            .store
            .txn(vec![], vec![Op::Delete(layout::endpoint(net, ep))])
            .await?;
        Ok(())
    }

    /// Renew the lease every third of its TTL; replace it when it was lost anyway.
    fn spawn_keeper(&self) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(&self.inner);
        let period = (self.inner.ttl / 3).max(Duration::from_millis(200));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(inner) = weak.upgrade() else { return };
                let c = Cluster { inner };
                if !c.is_joined() {
                    if let Err(e) = c.replace_lease(NO_LEASE).await {
                        tracing::debug!(error = %e, "still no cluster store member answers");
                    }
                    continue;
                }
                match c.inner.store.keep_alive(c.lease()).await {
                    Ok(revision) => c.with_health(|h| {
                        h.reachable = true;
                        h.renewed = Some(std::time::Instant::now());
                        h.store_revision = h.store_revision.max(revision);
                    }),
                    Err(StoreError::LeaseExpired(old)) => {
                        if let Err(e) = c.replace_lease(old).await {
                            tracing::warn!(error = %e, "cannot take a new lease");
                        }
                    }
                    Err(e) => {
                        c.with_health(|h| h.reachable = false);
                        tracing::warn!(error = %e, "cannot renew the cluster lease")
                    }
                }
            }
        })
    }

    async fn holds(&self, key: &str, value: &[u8]) -> Result<bool, StoreError> {
        self.inner
            .store
            .txn(vec![Cond::ValueIs(key.into(), value.to_vec())], vec![])
            .await
    }

    async fn absent(&self, key: &str) -> Result<bool, StoreError> {
        self.inner
            .store
            .txn(vec![Cond::Absent(key.into())], vec![])
            .await
    }

    async fn none_under(&self, prefix: &str) -> Result<bool, StoreError> {
        self.inner
            .store
            .txn(vec![Cond::NoneUnder(prefix.into())], vec![])
            .await
    }
}

#[cfg(test)]
mod tests;
