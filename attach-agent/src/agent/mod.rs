//! The core: the operations (create network, connect, start, stop, …) that combine IPAM,
//! netlink, state and the resolver's table, each rolled back whole on error. The fronts (the
//! Engine API in `crate::engine`, and through it the CLI) are thin calls here, and nothing
//! here knows which front called.
//!
//! One mutex serialises the control path: operations read and change one [`State`], persist it
//! before answering, and update the record table before returning, so a connect returns only
//! once its names answer. Veth deletion, the slow kernel call, runs after the lock is released.
//!
//! - [`request`]: what callers ask for, and the pure checks that refuse bad input up front;
//! - `networks`: create, remove, prune;
//! - `attach`: connect and disconnect (plan, plumb, commit, or undo);
//! - `containers`: create, start, stop, pause, remove;
//! - `reconcile`: at start, make the kernel and the table match the saved state;
//! - `overlay` and `mirror`: global networks, this host's side of the cluster store;
//! - `runtime`: containers a runtime owns and attaches through CNI (ADD, DEL, CHECK, GC);
//! - `vanished`: attachments whose namespace died without a word, ended from link events;
//! - `repair`: links deleted behind the agent's back, made again from the same events.

mod attach;
mod containers;
pub mod gateway;
mod mirror;
mod networks;
mod overlay;
mod reconcile;
mod repair;
pub mod request;
mod runtime;
mod vanished;

use std::net::Ipv4Addr;
use std::sync::Arc;

use resolver::Server;
use tokio::sync::Mutex;

use crate::cluster::Cluster;
use crate::config::AgentConfig;
use crate::error::{AgentError, Result};
use crate::ids::{ContainerId, NetworkId};
use crate::kernel::handles::{BridgeIndexes, Insides};
use crate::kernel::netlink::{LinkMark, Netlink};
use crate::metrics::{AgentMetrics, ClusterCounts, Operation, StateCounts};
use crate::readiness::Startup;
use crate::state::{Changed, Container, Endpoint, State, StateDir};
use attach::AttachPlan;
pub use overlay::{Withdrawn, OVERLAY_MTU};
pub use request::{
    ContainerCreate, ContainerDnsRequest, EndpointRequest, IpamRequest, NetworkCreate,
};
pub use runtime::{container_id_of, RuntimeAttach, RuntimeAttachment};

struct Inner {
    state: Mutex<State>,
    /// Bumped after every saved change: `wait` listens to it.
    changes: tokio::sync::watch::Sender<u64>,
    store: StateDir,
    dns: Server,
    host: Netlink,
    /// Sockets inside the namespaces the agent made, and bridges' indexes, kept between
    /// operations (see `crate::kernel::handles`).
    insides: Insides,
    bridges: BridgeIndexes,
    /// What every link this agent makes carries (from its [`crate::ids::InstanceId`]).
    mark: LinkMark,
    cfg: AgentConfig,
    /// Set when the agent joined a cluster store (global networks).
    cluster: Option<Cluster>,
    /// Told when a container leaves `State::pending`, and when `draining` falls.
    settled: tokio::sync::Notify,
    /// Changes over every container waiting for `State::pending` to empty: no connect
    /// starts meanwhile (an atomic, so that a waiter dropped half way gives it back).
    draining: std::sync::atomic::AtomicUsize,
    metrics: AgentMetrics,
    /// How far the start has got (the daemon marks the API socket).
    startup: Arc<Startup>,
    /// Where the metrics listener is bound, once it is.
    metrics_at: std::sync::OnceLock<std::net::SocketAddr>,
    /// The state's sizes as last read, for a scrape that finds the state lock held long (a
    /// slow disk, the mirror applying a batch): a scrape must not time out behind it.
    last_counts: std::sync::Mutex<StateCounts>,
}

/// One change over every container waiting for connects to settle (see `Inner::draining`);
/// given back on drop, also when the waiter is dropped half way.
struct Draining<'a>(&'a Inner);

impl<'a> Draining<'a> {
    fn new(inner: &'a Inner) -> Self {
        inner
            .draining
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Draining(inner)
    }
}

impl Drop for Draining<'_> {
    fn drop(&mut self) {
        self.0
            .draining
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        self.0.settled.notify_waiters();
    }
}

/// The agent. Cheap to clone.
#[derive(Clone)]
pub struct Agent {
    inner: Arc<Inner>,
}

/// What a detaching change leaves to do once it is on disk. An operation changes only memory
/// (the state) until its write succeeds; the table, the kernel and the pools follow in
/// [`Cleanup::run`], so a failed write is undone by restoring the state alone and dropping
/// the cleanup. In order: records out of the table (under the lock, so no later connect's
/// records are touched), host-side veths deleted (each takes its peer) after the lock, then the
/// addresses they held freed, endpoints of global networks withdrawn from the cluster store,
/// global networks left when idle.
#[derive(Debug, Default)]
#[must_use]
pub(crate) struct Cleanup {
    /// Endpoints whose records leave the table.
    pub(crate) records: Vec<(NetworkId, ContainerId)>,
    pub(crate) veths: Vec<String>,
    /// Addresses that become free once the veth that held them is gone (never before: a
    /// connect in between would get the same address and MAC while the old veth still
    /// answers for them).
    pub(crate) freed: Vec<Freed>,
    pub(crate) withdrawn: Vec<Withdrawn>,
    /// Global networks this host may have no endpoint on any more: taken down if so.
    pub(crate) leave: Vec<NetworkId>,
}

/// An endpoint's addresses, to give back to its network's pools after `veth` is deleted.
#[derive(Debug)]
pub(crate) struct Freed {
    pub(crate) network_id: NetworkId,
    pub(crate) v4: Option<Ipv4Addr>,
    pub(crate) v6: Option<std::net::Ipv6Addr>,
    /// The host-side veth that held them; `None` when it is gone already.
    pub(crate) veth: Option<String>,
}

impl Cleanup {
    fn extend(&mut self, other: Cleanup) {
        self.records.extend(other.records);
        self.veths.extend(other.veths);
        self.freed.extend(other.freed);
        self.withdrawn.extend(other.withdrawn);
        self.leave.extend(other.leave);
    }

    /// The veths went with their namespace: nothing to delete, the addresses are free.
    fn veths_already_gone(&mut self) {
        self.veths.clear();
        for f in &mut self.freed {
            f.veth = None;
        }
    }

    /// Whether there is nothing to do.
    fn is_empty(&self) -> bool {
        self.records.is_empty()
            && self.veths.is_empty()
            && self.freed.is_empty()
            && self.withdrawn.is_empty()
            && self.leave.is_empty()
    }

    /// The records, veths and addresses now, under the lock (the change being on disk), for
    /// an operation that goes on to use what they free; the rest (the store's part) is left.
    async fn run_holding(mut self, agent: &Agent, state: &mut State) -> Cleanup {
        for (net, cid) in self.records.drain(..) {
            agent.inner.dns.table().remove_endpoint(&net, &cid);
        }
        let mut kept = Vec::new();
        for v in self.veths.drain(..) {
            if let Err(e) = agent.inner.host.delete_link(&v).await {
                tracing::warn!(veth = %v, error = %e, "cannot delete veth; its addresses stay taken until the next start");
                kept.push(v);
            }
        }
        for f in self.freed.drain(..) {
            if f.veth.as_ref().is_some_and(|v| kept.contains(v)) {
                continue;
            }
            if let Some(n) = state.networks.get_mut(&f.network_id) {
                n.release(f.v4, f.v6);
            }
        }
        self
    }

    /// Do it all, the change being on disk; `state` is the lock the change was made under.
    async fn run(self, agent: &Agent, state: tokio::sync::MutexGuard<'_, State>) {
        for (net, cid) in &self.records {
            agent.inner.dns.table().remove_endpoint(net, cid);
        }
        drop(state);
        let mut kept = Vec::new();
        for v in self.veths {
            if let Err(e) = agent.inner.host.delete_link(&v).await {
                tracing::warn!(veth = %v, error = %e, "cannot delete veth; its addresses stay taken until the next start");
                kept.push(v);
            }
        }
        if !self.freed.is_empty() {
            let mut state = agent.state().lock().await;
            for f in &self.freed {
                if f.veth.as_ref().is_some_and(|v| kept.contains(v)) {
                    continue;
                }
                if let Some(n) = state.networks.get_mut(&f.network_id) {
                    n.release(f.v4, f.v6);
                }
            }
        }
        for w in self.withdrawn {
            agent.withdraw(&w).await;
        }
        for net in self.leave {
            let mut state = agent.state().lock().await;
            agent.leave_if_idle(&mut state, &net).await;
        }
    }
}

/// What the record table needs of an attached endpoint.
pub(crate) fn endpoint_spec(
    c: &Container,
    ep: &Endpoint,
    v4: Option<Ipv4Addr>,
    v6: Option<std::net::Ipv6Addr>,
) -> resolver::EndpointSpec {
    resolver::EndpointSpec {
        network_id: ep.network_id.to_string(),
        container_id: c.id.to_string(),
        container_name: c.name.clone(),
        hostname: Some(c.hostname.clone()),
        aliases: ep.aliases.clone(),
        links: ep.links.clone(),
        ipv4: v4,
        ipv6: v6,
    }
}

pub(crate) use crate::ipam::{mac_for, mac_for_endpoint};

/// How long a scrape waits for the state lock before it shows the sizes last read.
const SCRAPE_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

impl Agent {
    /// Load the state, reconcile it with the kernel, and serve DNS for every network.
    pub async fn open(cfg: AgentConfig) -> Result<Agent> {
        Agent::open_reporting(cfg, Arc::default()).await
    }

    /// [`Agent::open`], marking each milestone in `startup` as it passes.
    pub async fn open_reporting(cfg: AgentConfig, startup: Arc<Startup>) -> Result<Agent> {
        let store = StateDir::new(&cfg.state_dir).map_err(AgentError::io("state directory"))?;
        let instance = store
            .instance_id()
            .map_err(AgentError::io("this agent's instance id"))?;
        let (state, aside) = store
            .load_report()
            .map_err(AgentError::io("loading state"))?;
        tracing::info!(
            networks = state.networks.len(),
            containers = state.containers.len(),
            set_aside = aside.len(),
            %instance,
            "state loaded"
        );
        startup.state_loaded();
        // Nothing is counted when nobody can scrape it (the benchmark's baseline).
        let counting = match cfg.metrics_addr()? {
            Some(_) => resolver::metrics::DnsMetrics::on(),
            None => resolver::metrics::DnsMetrics::off(),
        };
        let dns = Server::with_metrics(&cfg.dns, resolver::Table::new(), counting)?;
        let host = Netlink::host()?;
        let cluster = overlay::join(&cfg.cluster).await?;
        // Two descriptors a kept namespace socket; a quarter of the limit for them leaves the
        // rest to the API's clients, the DNS listeners and the state files.
        let open_files = crate::kernel::handles::raise_open_files_limit();
        let insides = Insides::new((open_files / 8).min(1 << 20) as usize);
        let agent = Agent {
            inner: Arc::new(Inner {
                state: Mutex::new(state),
                changes: tokio::sync::watch::Sender::new(0),
                store,
                dns,
                host,
                insides,
                bridges: BridgeIndexes::default(),
                mark: LinkMark::of(&instance),
                cfg,
                cluster,
                settled: tokio::sync::Notify::new(),
                draining: Default::default(),
                metrics: AgentMetrics::default(),
                startup: startup.clone(),
                metrics_at: std::sync::OnceLock::new(),
                last_counts: Default::default(),
            }),
        };
        let (networks_failed, endpoints_failed) = agent.reconcile().await?;
        // Namespaces that died while the agent was down (a reboot, a runtime that sent no DEL).
        agent.sweep_vanished().await;
        agent.start_link_watch();
        if agent.inner.cluster.is_some() {
            agent.start_mirror().await?;
        }
        startup.reconciled(networks_failed, endpoints_failed);
        Ok(agent)
    }

    pub(crate) fn cluster(&self) -> Option<&Cluster> {
        self.inner.cluster.as_ref()
    }

    pub(crate) fn host(&self) -> &Netlink {
        &self.inner.host
    }

    pub(crate) fn state(&self) -> &Mutex<State> {
        &self.inner.state
    }

    /// Tell `wait`ers (a change made outside the usual operations, such as the mirror's).
    pub(crate) fn notify(&self) {
        self.inner.changes.send_modify(|n| *n += 1);
    }

    pub fn dns(&self) -> &Server {
        &self.inner.dns
    }

    pub fn metrics(&self) -> &AgentMetrics {
        &self.inner.metrics
    }

    pub fn startup(&self) -> &Startup {
        &self.inner.startup
    }

    /// The metrics listener is bound at `addr`.
    pub fn metrics_listening(&self, addr: std::net::SocketAddr) {
        let _ = self.inner.metrics_at.set(addr);
    }

    /// Where the metrics listener is bound (none: off, or not yet).
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.inner.metrics_at.get().copied()
    }

    /// Run operation `op`, counting it and its duration.
    async fn counted<T>(
        &self,
        op: Operation,
        work: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let began = std::time::Instant::now();
        let r = work.await;
        self.inner.metrics.operation(op, r.is_ok(), began.elapsed());
        r
    }

    /// The state's sizes and the cluster store's health, as the metrics show them.
    pub async fn counts(&self) -> (StateCounts, Option<ClusterCounts>) {
        let counts = match tokio::time::timeout(SCRAPE_WAIT, self.inner.state.lock()).await {
            Ok(state) => {
                let counts = Self::count_state(&state);
                drop(state);
                *self
                    .inner
                    .last_counts
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = counts.clone();
                counts
            }
            Err(_) => self
                .inner
                .last_counts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        };
        let cluster = self.inner.cluster.as_ref().map(|c| {
            let h = c.store_health();
            ClusterCounts {
                reachable: h.reachable,
                lease_age: h.renewed.map(|t| t.elapsed()),
                revision_lag: h.store_revision - h.applied_revision,
            }
        });
        (counts, cluster)
    }

    fn count_state(state: &State) -> StateCounts {
        let mut per_network: std::collections::BTreeMap<&NetworkId, usize> =
            state.networks.keys().map(|id| (id, 0)).collect();
        let mut running = 0;
        for c in state.containers.values() {
            running += usize::from(c.state.is_up());
            for ep in &c.endpoints {
                if ep.attached.is_some() {
                    if let Some(n) = per_network.get_mut(&ep.network_id) {
                        *n += 1;
                    }
                }
            }
        }
        let counts = StateCounts {
            networks: state.networks.len(),
            containers: state.containers.len(),
            running,
            endpoints: per_network
                .into_iter()
                .filter_map(|(id, n)| Some((state.networks.get(id)?.name.clone(), n)))
                .collect(),
            remote_endpoints: state.remote.len(),
        };
        counts
    }

    /// Readiness and the headline numbers (`attach-agent info`).
    pub async fn status(&self) -> crate::metrics::Status {
        use crate::metrics::{ClusterStatus, Status, UpstreamStatus};
        let (state, cluster) = self.counts().await;
        let dns = &self.inner.dns;
        let checks = self.inner.startup.checks();
        Status {
            ready: checks.iter().all(|c| c.ok),
            checks: checks.iter().map(|c| (c.name.clone(), c.ok)).collect(),
            metrics_addr: self.metrics_addr(),
            networks: state.networks,
            containers: state.containers,
            containers_up: state.running,
            endpoints: state.endpoints.iter().map(|(_, n)| n).sum(),
            remote_endpoints: state.remote_endpoints,
            queries: dns
                .metrics()
                .outcome_totals()
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .map(|(o, n)| (o.label().to_string(), n))
                .collect(),
            forwarded_in_flight: dns.forwarder().budget().host_in_flight(),
            cache_entries: dns.forwarder().cache().len(),
            cache_bytes: dns.forwarder().cache().bytes(),
            upstreams: dns
                .forwarder()
                .health()
                .report()
                .into_iter()
                .map(|u| UpstreamStatus {
                    address: u.server,
                    healthy: !u.demoted,
                    rtt_ms: u.srtt.map(|d| d.as_secs_f64() * 1000.0),
                    queries: u.queries,
                    failures: u.failures,
                    timeouts: u.timeouts,
                })
                .collect(),
            operations: Operation::ALL
                .iter()
                .map(|op| {
                    let (ok, failed) = self.inner.metrics.operations(*op);
                    (op.label().to_string(), ok, failed)
                })
                .collect(),
            cluster: cluster.map(|c| ClusterStatus {
                reachable: c.reachable,
                lease_age_secs: c.lease_age.map(|d| d.as_secs_f64()),
                revision_lag: c.revision_lag,
            }),
        }
    }

    /// Every metric family of the agent and its DNS server (Prometheus text format).
    pub async fn render_metrics(&self, e: &mut resolver::metrics::exposition::Exposition) {
        let (state, cluster) = self.counts().await;
        crate::metrics::render(e, &self.inner.metrics, &state, cluster);
        self.inner.dns.render_metrics(e);
    }

    pub fn config(&self) -> &AgentConfig {
        &self.inner.cfg
    }

    /// A copy of the whole state (inspect, ls).
    pub async fn snapshot(&self) -> State {
        self.inner.state.lock().await.clone()
    }

    /// The state, once container `key` has no connect between its two locked steps, and the
    /// container's id: how every operation on one container starts.
    pub(crate) async fn lock_container(
        &self,
        key: &str,
    ) -> Result<(tokio::sync::MutexGuard<'_, State>, ContainerId)> {
        loop {
            let state = self.inner.state.lock().await;
            let cid = state.find_container(key)?;
            // Also while a change over every container waits for them to settle, so that it
            // does not wait for ever under a stream of connects.
            let draining = self
                .inner
                .draining
                .load(std::sync::atomic::Ordering::SeqCst);
            if !state.pending.contains(&cid) && draining == 0 {
                return Ok((state, cid));
            }
            self.until_settled(state).await;
        }
    }

    /// The state, once the container with id `cid` (known or not) has no connect between its
    /// two locked steps.
    pub(crate) async fn lock_id(&self, cid: &ContainerId) -> tokio::sync::MutexGuard<'_, State> {
        loop {
            let state = self.inner.state.lock().await;
            if !state.pending.contains(cid) {
                return state;
            }
            self.until_settled(state).await;
        }
    }

    /// The state, once no container has a connect between its two locked steps: for the
    /// changes that look at many containers (removing networks, repairs, garbage collection).
    pub(crate) async fn lock_settled(&self) -> tokio::sync::MutexGuard<'_, State> {
        let mut state = self.inner.state.lock().await;
        if state.pending.is_empty() {
            return state;
        }
        // No new connect starts while this waits (`lock_container`).
        let _draining = Draining::new(&self.inner);
        loop {
            self.until_settled(state).await;
            state = self.inner.state.lock().await;
            if state.pending.is_empty() {
                return state;
            }
        }
    }

    /// Release the lock and wait for the next container to leave `pending`.
    async fn until_settled(&self, state: tokio::sync::MutexGuard<'_, State>) {
        let settled = self.inner.settled.notified();
        tokio::pin!(settled);
        // Registered before the lock goes, so the next notification cannot be missed.
        settled.as_mut().enable();
        drop(state);
        settled.await;
    }

    /// Take `cid` out of `pending` (its connect's second locked step) and wake its waiters.
    pub(crate) fn settle(&self, state: &mut State, cid: &ContainerId) {
        state.pending.remove(cid);
        self.inner.settled.notify_waiters();
    }

    /// Persist the objects a change touched, then tell `wait`ers.
    pub(crate) fn persist(&self, state: &State, changed: &[Changed<'_>]) -> Result<()> {
        let began = std::time::Instant::now();
        self.inner
            .store
            .persist(state, changed)
            .map_err(AgentError::io("saving state"))?;
        self.inner.metrics.state_write(began.elapsed());
        self.inner.changes.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Write one container's file and take its journal record now; the returned future
    /// waits (on the blocking pool) until it is on disk. The caller awaits it before
    /// acknowledging (and notifies `wait`ers itself).
    fn start_container_write(
        &self,
        c: &Container,
    ) -> Result<impl std::future::Future<Output = Result<()>> + use<>> {
        let saving = self
            .inner
            .store
            .start_container_write(c)
            .map_err(AgentError::io("saving state"))?;
        let began = std::time::Instant::now();
        let task = tokio::task::spawn_blocking(move || saving.wait());
        let metrics = self.inner.metrics.clone();
        Ok(async move {
            task.await
                .map_err(std::io::Error::other)
                .and_then(|r| r)
                .map_err(AgentError::io("saving state"))?;
            metrics.state_write(began.elapsed());
            Ok(())
        })
    }

    /// A receiver that sees every saved change (for `wait`).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    pub(crate) fn bridge_name(&self, id: &str) -> String {
        let p = &self.inner.cfg.link_prefix;
        format!("{p}-{}", &id[..(14 - p.len()).min(id.len())])
    }

    /// A global network's VXLAN device (`_` never appears in bridge or veth names).
    pub(crate) fn vxlan_name(&self, id: &str) -> String {
        let p = &self.inner.cfg.link_prefix;
        format!("{p}_{}", &id[..(14 - p.len()).min(id.len())])
    }

    fn veth_name(&self) -> String {
        let p = &self.inner.cfg.link_prefix;
        let hex = format!("{:016x}", fastrand::u64(..));
        format!("{p}{}", &hex[..15 - p.len()])
    }

    /// The id of a network by id, name or prefix.
    pub async fn network_id(&self, key: &str) -> Result<NetworkId> {
        self.inner.state.lock().await.find_network(key)
    }

    /// The id of a container by id, name or prefix.
    pub async fn container_id(&self, key: &str) -> Result<ContainerId> {
        self.inner.state.lock().await.find_container(key)
    }
}
