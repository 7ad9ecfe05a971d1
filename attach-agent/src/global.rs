//! Global (overlay) networks: the agent's side of the cluster store.
//!
//! A global network is defined once in the store and built on every host: a bridge carrying
//! the gateway (the same address on each host, answered locally, DNS included) plus a VXLAN
//! device that reaches the other hosts' containers. The store is the truth for what other
//! hosts serve; this host mirrors it — network definitions into its state, other hosts'
//! endpoints into the record table and the tunnel's forwarding and neighbour entries, address
//! claims into its pools — loading everything once, then following a watch from that
//! revision. A broken watch resumes from the last revision it saw (the client then talks to
//! another member); a compacted history means a full reload, diffed against what is here.
//!
//! This host's own endpoints are the other way round: the local state is the truth, and they
//! are published on the host's lease, again after a lease is lost and replaced.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ipnet::IpNet;
use resolver::EndpointSpec;

use crate::agent::{mac_for, now_rfc3339, random_id, Agent, AttachPlan};
use crate::cluster::etcd::EtcdStore;
use crate::cluster::layout::{self, Claim, EndpointRecord, Key, NetworkRecord};
use crate::cluster::{Change, Claimed, Cluster, StoreError, View};
use crate::config::ClusterConfig;
use crate::error::{AgentError, Result};
use crate::ipam::{self, IpamError, Pool};
use crate::request::NetworkCreate;
use crate::state::{Changed, Network, State};

/// MTU inside overlay networks: 1500 less VXLAN's 50 bytes of outer headers.
pub const OVERLAY_MTU: u32 = 1450;

/// An endpoint of a global network this host stopped serving: withdrawn from the store with
/// its address claims once the control lock is released.
#[derive(Debug)]
pub struct Withdrawn {
    pub network_id: String,
    pub endpoint_id: String,
    pub v4: Ipv4Addr,
    pub v6: Option<Ipv6Addr>,
}

/// Tunnel entries to add or remove, collected while a batch of changes updates the table and
/// applied after it: the names of a whole batch (a dead host's lease: all its endpoints at
/// once) change together, not one netlink round trip apart.
#[derive(Default)]
struct TunnelWork(Vec<(EndpointRecord, bool)>);

/// Join the cluster the configuration names, if any.
pub async fn join(cfg: &ClusterConfig) -> Result<Option<Cluster>> {
    let Some(members) = cfg.etcd_endpoints().map_err(AgentError::Invalid)? else {
        return Ok(None);
    };
    let host = cfg
        .advertise_addr
        .ok_or_else(|| AgentError::Invalid("a cluster store needs --advertise-addr".into()))?;
    let store = EtcdStore::connect(&members, Duration::from_secs(cfg.retry_for)).await?;
    let cluster = Cluster::join(Arc::new(store), host, Duration::from_secs(cfg.lease_ttl)).await?;
    tracing::info!(store = ?members, %host, lease = cluster.lease(), "joined the cluster");
    Ok(Some(cluster))
}

fn record_of(net: &Network) -> NetworkRecord {
    NetworkRecord {
        id: net.id.clone(),
        name: net.name.clone(),
        created: net.created.clone(),
        driver: net.driver.clone(),
        internal: net.internal,
        attachable: net.attachable,
        labels: net.labels.clone(),
        options: net.options.clone(),
        vni: net.vni.unwrap_or(0),
        v4: net.v4.clone(),
        v6: net.v6.clone(),
    }
}

/// Whether a local attached endpoint holds `ip` on `net_id`.
fn held_locally(state: &State, net_id: &str, ip: IpAddr) -> bool {
    state.containers.values().any(|c| {
        c.endpoint(net_id)
            .and_then(|e| e.attached.as_ref())
            .is_some_and(|a| IpAddr::V4(a.v4) == ip || a.v6.map(IpAddr::V6) == Some(ip))
    })
}

impl Agent {
    fn need_cluster(&self) -> Result<&Cluster> {
        self.cluster()
            .ok_or_else(|| AgentError::NoCluster("overlay".into()))
    }

    /// The local form of a global network (this host's bridge name and MAC).
    fn network_of(&self, rec: &NetworkRecord) -> Network {
        let tail = fastrand::u32(..).to_be_bytes();
        let mut v4 = rec.v4.clone();
        v4.allocated.clear();
        let mut v6 = rec.v6.clone();
        if let Some(p) = v6.as_mut() {
            p.allocated.clear();
        }
        Network {
            id: rec.id.clone(),
            name: rec.name.clone(),
            created: rec.created.clone(),
            driver: rec.driver.clone(),
            internal: rec.internal,
            attachable: rec.attachable,
            labels: rec.labels.clone(),
            options: rec.options.clone(),
            bridge: self.bridge_name(&rec.id),
            bridge_mac: [0x02, 0x42, tail[0], tail[1], tail[2], tail[3]],
            v4,
            v6,
            vni: Some(rec.vni),
        }
    }

    /// `network create --driver overlay`: stored in the cluster (name and VXLAN id taken
    /// atomically), then built here; the other hosts build theirs from the watch.
    pub(crate) async fn create_global_network(
        &self,
        state: &mut State,
        req: NetworkCreate,
        taken: Vec<IpNet>,
        v4: Option<Pool>,
        v6: Option<Pool>,
    ) -> Result<String> {
        let cluster = self.need_cluster()?.clone();
        let v4 = match v4 {
            Some(p) => p,
            None => {
                let mut avoid = taken;
                avoid.extend(self.host().ipv4_routes().await?);
                let mut p = Pool::new(ipam::pick_default_overlay(&avoid)?, None, None)?;
                p.show_gateway = true;
                p
            }
        };
        let rec = NetworkRecord {
            id: random_id(),
            name: req.name.clone(),
            created: now_rfc3339(),
            driver: "overlay".into(),
            internal: req.internal,
            attachable: req.attachable,
            labels: req.labels,
            options: req.options,
            vni: 0,
            v4,
            v6,
        };
        let rec = cluster
            .create_network(rec)
            .await?
            .ok_or_else(|| AgentError::NetworkExists(req.name.clone()))?;
        // Built here (as on every host) when a first endpoint of this host joins it.
        let net = self.network_of(&rec);
        state.networks.insert(net.id.clone(), net.clone());
        if let Err(e) = self.persist(state, &[Changed::Network(&net.id)]) {
            state.networks.remove(&net.id);
            if let Err(e) = cluster.remove_network(&rec).await {
                tracing::error!(network = %net.name, error = %e, "cannot take back a failed network create");
            }
            return Err(e);
        }
        tracing::info!(network = %net.name, id = %net.id, vni = rec.vni, subnet = %net.v4.subnet, "global network created");
        Ok(net.id)
    }

    /// Remove a global network from the store, unless an endpoint of any host is on it.
    pub(crate) async fn remove_global_network(&self, net: &Network) -> Result<()> {
        let cluster = self.need_cluster()?;
        if !cluster.remove_network(&record_of(net)).await? {
            return Err(AgentError::ActiveEndpoints(net.name.clone()));
        }
        Ok(())
    }

    /// Build a global network on this host (bridge, tunnel, DNS listeners) if it is not yet,
    /// with the names and tunnel entries of every endpoint other hosts have on it.
    pub(crate) async fn join_network(&self, state: &mut State, net_id: &str) -> Result<()> {
        if state.joined.contains(net_id) {
            return Ok(());
        }
        let net = state.networks[net_id].clone();
        if let Err(e) = self.bring_up_network(&net).await {
            self.tear_down_network(&net).await;
            return Err(e);
        }
        state.joined.insert(net_id.to_string());
        let remotes: Vec<EndpointRecord> = state
            .remote
            .values()
            .filter(|r| r.network_id == net_id)
            .cloned()
            .collect();
        let mut work = TunnelWork::default();
        for rec in remotes {
            self.register_remote(&rec);
            work.0.push((rec, true));
        }
        self.run_tunnel_work(work).await;
        tracing::info!(network = %net.name, "joined a global network");
        Ok(())
    }

    /// Take a global network down on this host if it has no endpoint left on it.
    pub(crate) async fn leave_if_idle(&self, state: &mut State, net_id: &str) {
        if !state.joined.contains(net_id) {
            return;
        }
        let used = state
            .containers
            .values()
            .any(|c| c.endpoint(net_id).is_some_and(|e| e.attached.is_some()));
        if used {
            return;
        }
        state.joined.remove(net_id);
        if let Some(net) = state.networks.get(net_id).cloned() {
            self.tear_down_network(&net).await;
            tracing::info!(network = %net.name, "left a global network");
        }
    }

    /// The VXLAN device of a global network, a port of its bridge.
    pub(crate) async fn bring_up_tunnel(&self, net: &Network, vni: u32, bridge: u32) -> Result<()> {
        let cluster = self.need_cluster()?;
        let port = self.config().cluster.vxlan_port;
        self.host()
            .ensure_vxlan(&self.vxlan_name(&net.id), vni, cluster.host(), port, bridge)
            .await?;
        Ok(())
    }

    /// Addresses for an endpoint of a global network, each claimed in the store: the lowest
    /// free one by this host's mirror, the next one if another host claimed it meanwhile.
    ///
    /// The last claim also publishes the endpoint's record, in the same transaction (one etcd
    /// write, one raft commit and fsync, per connect rather than two): other hosts may resolve
    /// it a moment before its interface is up here, and a failed attachment withdraws it.
    pub(crate) async fn claim_addresses(
        &self,
        state: &mut State,
        cid: &str,
        net_id: &str,
        endpoint_id: &str,
        static_v4: Option<Ipv4Addr>,
        static_v6: Option<Ipv6Addr>,
    ) -> Result<(Ipv4Addr, Option<Ipv6Addr>)> {
        let cluster = self.need_cluster()?.clone();
        let mut rec = self
            .endpoint_names(state, cid, net_id)
            .expect("endpoint configured");
        let has_v6 = state.networks[net_id].v6.is_some();
        let fixed4 = static_v4.map(IpAddr::V4);
        let publish4 = (!has_v6).then_some(&mut rec);
        let v4 = match self
            .claim_one(
                &cluster,
                state,
                net_id,
                endpoint_id,
                fixed4,
                false,
                publish4,
            )
            .await?
        {
            IpAddr::V4(ip) => ip,
            IpAddr::V6(_) => unreachable!("v4 pool"),
        };
        if !has_v6 {
            return Ok((v4, None));
        }
        rec.v4 = v4;
        rec.mac = mac_for(v4);
        let fixed6 = static_v6.map(IpAddr::V6);
        match self
            .claim_one(
                &cluster,
                state,
                net_id,
                endpoint_id,
                fixed6,
                true,
                Some(&mut rec),
            )
            .await
        {
            Ok(IpAddr::V6(ip)) => Ok((v4, Some(ip))),
            Ok(IpAddr::V4(_)) => unreachable!("v6 pool"),
            Err(e) => {
                if let Some(n) = state.networks.get_mut(net_id) {
                    n.v4.release(IpAddr::V4(v4));
                }
                let _ = cluster.release(net_id, IpAddr::V4(v4), endpoint_id).await;
                Err(e)
            }
        }
    }

    /// Claim one address of family `v6` (`fixed`, or the pool's lowest free), publishing
    /// `publish` with it, its address filled in, when given.
    #[allow(clippy::too_many_arguments)]
    async fn claim_one(
        &self,
        cluster: &Cluster,
        state: &mut State,
        net_id: &str,
        endpoint_id: &str,
        fixed: Option<IpAddr>,
        v6: bool,
        mut publish: Option<&mut EndpointRecord>,
    ) -> Result<IpAddr> {
        loop {
            let net = state
                .networks
                .get_mut(net_id)
                .ok_or_else(|| AgentError::NoSuchNetwork(net_id.into()))?;
            let label = format!("{} ({})", net.name, net.id);
            let pool = if v6 {
                net.v6.as_mut().expect("network has IPv6")
            } else {
                &mut net.v4
            };
            let ip = match fixed {
                Some(ip) => {
                    pool.reserve(ip)?;
                    ip
                }
                None => pool.allocate(&label)?,
            };
            if let Some(r) = publish.as_deref_mut() {
                match ip {
                    IpAddr::V4(a) => {
                        r.v4 = a;
                        r.mac = mac_for(a);
                    }
                    IpAddr::V6(a) => r.v6 = Some(a),
                }
            }
            let claimed = cluster
                .claim_and_publish(net_id, ip, endpoint_id, publish.as_deref())
                .await;
            match claimed {
                Ok(Claimed::Ours) => return Ok(ip),
                // Someone else's: it stays reserved here (the watch says so too).
                Ok(Claimed::Taken) if fixed.is_none() => continue,
                Ok(Claimed::Taken) => {
                    pool.release(ip);
                    return Err(IpamError::InUse.into());
                }
                Ok(Claimed::NoNetwork) => {
                    pool.release(ip);
                    return Err(AgentError::NoSuchNetwork(net_id.into()));
                }
                Err(e) => {
                    pool.release(ip);
                    return Err(e.into());
                }
            }
        }
    }

    /// What other hosts learn of one of this host's endpoints, addresses left unset (they
    /// are filled as they are claimed, or from the attachment).
    fn endpoint_names(&self, state: &State, cid: &str, net_id: &str) -> Option<EndpointRecord> {
        let c = state.containers.get(cid)?;
        let ep = c.endpoint(net_id)?;
        Some(EndpointRecord {
            network_id: net_id.into(),
            endpoint_id: ep.endpoint_id.clone(),
            container_id: c.id.clone(),
            container_name: c.name.clone(),
            hostname: c.hostname.clone(),
            aliases: ep.aliases.clone(),
            v4: Ipv4Addr::UNSPECIFIED,
            v6: None,
            mac: [0; 6],
            host: self.cluster()?.host(),
        })
    }

    /// What other hosts learn of one of this host's attached endpoints.
    fn endpoint_record(&self, state: &State, cid: &str, net_id: &str) -> Option<EndpointRecord> {
        let a = state
            .containers
            .get(cid)?
            .endpoint(net_id)?
            .attached
            .clone()?;
        let mut rec = self.endpoint_names(state, cid, net_id)?;
        (rec.v4, rec.v6, rec.mac) = (a.v4, a.v6, a.mac);
        Some(rec)
    }

    /// Take back what a failed attachment to a global network put in the store.
    pub(crate) async fn release_plan(&self, plan: &AttachPlan) {
        if let Some(ep) = &plan.global {
            self.withdraw(&Withdrawn {
                network_id: plan.net_id.clone(),
                endpoint_id: ep.clone(),
                v4: plan.v4,
                v6: plan.v6,
            })
            .await;
        }
    }

    /// Withdraw an endpoint and its claims. A failure is logged: the record goes with the
    /// lease if this host dies, and a stale one is withdrawn at the next reload.
    pub(crate) async fn withdraw(&self, w: &Withdrawn) {
        let Some(cluster) = self.cluster() else {
            return;
        };
        let r = async {
            cluster.withdraw(&w.network_id, &w.endpoint_id).await?;
            cluster
                .release(&w.network_id, IpAddr::V4(w.v4), &w.endpoint_id)
                .await?;
            if let Some(v6) = w.v6 {
                cluster
                    .release(&w.network_id, IpAddr::V6(v6), &w.endpoint_id)
                    .await?;
            }
            Ok::<(), StoreError>(())
        };
        if let Err(e) = r.await {
            tracing::error!(network = %w.network_id, endpoint = %w.endpoint_id, error = %e, "cannot withdraw an endpoint from the cluster store");
        }
    }

    // ---- the mirror ---------------------------------------------------------------------

    /// Load the store, make this host match it, publish this host's endpoints, and follow
    /// the store from then on (a task), keeping the lease alive (another).
    pub(crate) async fn start_mirror(&self) -> Result<()> {
        let cluster = self.need_cluster()?.clone();
        let view = cluster.load().await?;
        {
            let mut state = self.state().lock().await;
            self.sync_view(&mut state, &view).await;
        }
        self.notify();
        let agent = self.clone();
        let revision = view.revision;
        tokio::spawn(async move { agent.follow(revision).await });
        let agent = self.clone();
        let mut lease = cluster.lease_changes();
        tokio::spawn(async move {
            while lease.changed().await.is_ok() {
                let state = agent.state().lock().await;
                agent.publish_local(&state).await;
            }
        });
        Ok(())
    }

    /// Apply the store's changes as they come, from `revision` on, for ever.
    async fn follow(&self, mut revision: i64) {
        let cluster = self.cluster().expect("cluster").clone();
        loop {
            let mut stream = match cluster.watch(revision).await {
                Ok(s) => {
                    tracing::debug!(from = revision + 1, "watching the cluster store");
                    s
                }
                Err(StoreError::Compacted(_)) => {
                    revision = self.reload(&cluster).await;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch the cluster store; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            while let Some(item) = stream.next().await {
                match item {
                    Ok(batch) => {
                        tracing::debug!(
                            revision = batch.revision,
                            changes = batch.changes.len(),
                            "cluster changes"
                        );
                        let mut state = self.state().lock().await;
                        let mut work = TunnelWork::default();
                        for change in &batch.changes {
                            self.apply_change(&mut state, change, &mut work).await;
                        }
                        self.run_tunnel_work(work).await;
                        revision = batch.revision;
                        drop(state);
                        self.notify();
                    }
                    Err(StoreError::Compacted(_)) => {
                        revision = self.reload(&cluster).await;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, revision, "cluster watch broken; resuming");
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A full reload (the watch's history was compacted away). Its revision.
    async fn reload(&self, cluster: &Cluster) -> i64 {
        loop {
            match cluster.load().await {
                Ok(view) => {
                    let mut state = self.state().lock().await;
                    self.sync_view(&mut state, &view).await;
                    drop(state);
                    self.notify();
                    tracing::info!(revision = view.revision, "reloaded the cluster store");
                    return view.revision;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reload the cluster store; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    /// Make this host match a whole view: the diff of networks, other hosts' endpoints and
    /// claims; this host's own endpoints published again, its stale records withdrawn.
    async fn sync_view(&self, state: &mut State, view: &View) {
        let mut work = TunnelWork::default();
        self.sync_view_tables(state, view, &mut work).await;
        self.run_tunnel_work(work).await;
        self.publish_local(state).await;
    }

    async fn run_tunnel_work(&self, work: TunnelWork) {
        for (rec, add) in work.0 {
            if let Err(e) = self.tunnel_entries(&rec, add).await {
                tracing::error!(container = %rec.container_name, add, error = %e, "cannot change tunnel entries");
            }
        }
    }

    async fn sync_view_tables(&self, state: &mut State, view: &View, work: &mut TunnelWork) {
        let me = self.cluster().expect("cluster").host();
        for rec in view.networks.values() {
            if !state.networks.contains_key(&rec.id) {
                self.add_global(state, rec).await;
            }
        }
        let gone: Vec<String> = state
            .networks
            .values()
            .filter(|n| n.is_global() && !view.networks.contains_key(&n.id))
            .map(|n| n.id.clone())
            .collect();
        for id in gone {
            self.drop_global(state, &id).await;
        }
        // Pools: every claim in the store, and this host's attached endpoints.
        let ids: Vec<String> = state
            .networks
            .values()
            .filter(|n| n.is_global())
            .map(|n| n.id.clone())
            .collect();
        for id in &ids {
            let mut held: BTreeSet<IpAddr> = view
                .claims
                .keys()
                .filter(|(n, _)| n == id)
                .map(|(_, ip)| *ip)
                .collect();
            for c in state.containers.values() {
                if let Some(a) = c.endpoint(id).and_then(|e| e.attached.as_ref()) {
                    held.insert(IpAddr::V4(a.v4));
                    held.extend(a.v6.map(IpAddr::V6));
                }
            }
            let net = state.networks.get_mut(id).expect("listed above");
            net.v4.allocated = held.iter().filter(|ip| ip.is_ipv4()).copied().collect();
            if let Some(p) = net.v6.as_mut() {
                p.allocated = held.iter().filter(|ip| ip.is_ipv6()).copied().collect();
            }
        }
        // Other hosts' endpoints.
        let wanted: BTreeMap<&(String, String), &EndpointRecord> = view
            .endpoints
            .iter()
            .filter(|(_, r)| r.host != me && state.networks.contains_key(&r.network_id))
            .collect();
        let stale: Vec<(String, String)> = state
            .remote
            .iter()
            .filter(|(k, r)| wanted.get(k).is_none_or(|w| *w != *r))
            .map(|(k, _)| k.clone())
            .collect();
        for (net, ep) in stale {
            self.remote_delete(state, &net, &ep, work);
        }
        for rec in wanted.values() {
            self.remote_put(state, rec, work).await;
        }
        // This host's own records that no attached endpoint explains (left by a crash or by
        // a disconnect while the store was unreachable).
        let own_stale: Vec<Withdrawn> = view
            .endpoints
            .values()
            .filter(|r| r.host == me && !self.serves_endpoint(state, &r.network_id, &r.endpoint_id))
            .map(|r| Withdrawn {
                network_id: r.network_id.clone(),
                endpoint_id: r.endpoint_id.clone(),
                v4: r.v4,
                v6: r.v6,
            })
            .collect();
        for w in &own_stale {
            self.withdraw(w).await;
        }
        let stale_claims: Vec<(&(String, IpAddr), &Claim)> = view
            .claims
            .iter()
            .filter(|((net, ip), c)| c.host == me && !held_locally(state, net, *ip))
            .collect();
        for ((net, ip), c) in stale_claims {
            if let Err(e) = self
                .cluster()
                .expect("cluster")
                .release(net, *ip, &c.endpoint_id)
                .await
            {
                tracing::warn!(network = %net, %ip, error = %e, "cannot release a stale claim");
            }
            if let Some(p) = state.networks.get_mut(net).and_then(|n| n.pool_for(*ip)) {
                p.release(*ip);
            }
        }
    }

    /// Publish (again) every endpoint this host serves on global networks, claims first.
    async fn publish_local(&self, state: &State) {
        let Some(cluster) = self.cluster() else {
            return;
        };
        for c in state.containers.values() {
            for e in &c.endpoints {
                let global = state
                    .networks
                    .get(&e.network_id)
                    .is_some_and(Network::is_global);
                let (true, Some(a)) = (global, &e.attached) else {
                    continue;
                };
                for ip in std::iter::once(IpAddr::V4(a.v4)).chain(a.v6.map(IpAddr::V6)) {
                    match cluster.claim(&e.network_id, ip, &e.endpoint_id).await {
                        Ok(Claimed::Ours) => {}
                        Ok(other) => {
                            tracing::error!(container = %c.name, %ip, result = ?other, "an address this host uses is claimed by another endpoint")
                        }
                        Err(err) => {
                            tracing::warn!(container = %c.name, %ip, error = %err, "cannot claim an address again")
                        }
                    }
                }
                let Some(rec) = self.endpoint_record(state, &c.id, &e.network_id) else {
                    continue;
                };
                if let Err(err) = cluster.publish(&rec).await {
                    tracing::warn!(container = %c.name, error = %err, "cannot publish an endpoint");
                }
            }
        }
    }

    /// One change from the watch.
    async fn apply_change(&self, state: &mut State, change: &Change, work: &mut TunnelWork) {
        let r = match change {
            Change::Put(kv) => match Key::parse(&kv.key) {
                Key::Network(id) if !state.networks.contains_key(&id) => {
                    match layout::decode::<NetworkRecord>(&kv.key, &kv.value) {
                        Ok(rec) => {
                            self.add_global(state, &rec).await;
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                }
                Key::Endpoint { .. } => {
                    match layout::decode::<EndpointRecord>(&kv.key, &kv.value) {
                        Ok(rec) => {
                            self.remote_put(state, &rec, work).await;
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                }
                Key::Claim { net, ip } => {
                    if let Some(p) = state.networks.get_mut(&net).and_then(|n| n.pool_for(ip)) {
                        p.allocated.insert(ip);
                    }
                    Ok(())
                }
                _ => Ok(()),
            },
            Change::Delete(key) => {
                match Key::parse(key) {
                    Key::Network(id) => self.drop_global(state, &id).await,
                    Key::Endpoint { net, ep } => {
                        if state.remote.contains_key(&(net.clone(), ep.clone())) {
                            self.remote_delete(state, &net, &ep, work);
                        } else if self.serves_endpoint(state, &net, &ep) {
                            // Ours, still attached, gone from the store (lease lost, or
                            // deleted by hand): publish it again.
                            tracing::warn!(network = %net, endpoint = %ep, "own endpoint vanished from the cluster store; publishing it again");
                            self.publish_local(state).await;
                        }
                    }
                    Key::Claim { net, ip } if !held_locally(state, &net, ip) => {
                        if let Some(p) = state.networks.get_mut(&net).and_then(|n| n.pool_for(ip)) {
                            p.release(ip);
                        }
                    }
                    _ => {}
                }
                Ok(())
            }
        };
        if let Err(e) = r {
            tracing::error!(error = %e, "ignoring an undecodable cluster record");
        }
    }

    /// Whether this host has endpoint `ep` of network `net` attached.
    fn serves_endpoint(&self, state: &State, net: &str, ep: &str) -> bool {
        state.containers.values().any(|c| {
            c.endpoint(net)
                .is_some_and(|e| e.endpoint_id == ep && e.attached.is_some())
        })
    }

    /// A global network appeared: build it here.
    async fn add_global(&self, state: &mut State, rec: &NetworkRecord) {
        let net = self.network_of(rec);
        state.networks.insert(net.id.clone(), net.clone());
        if let Err(e) = self.persist(state, &[Changed::Network(&net.id)]) {
            tracing::error!(network = %net.name, error = %e, "cannot save a global network");
        }
        tracing::info!(network = %net.name, id = %net.id, "global network added");
    }

    /// A global network is gone from the store: take it down here, with whatever this host
    /// still had on it.
    async fn drop_global(&self, state: &mut State, id: &str) {
        let Some(net) = state.networks.get(id).cloned() else {
            return;
        };
        let mut changed = Vec::new();
        let mut veths = Vec::new();
        for c in state.containers.values_mut() {
            if let Some(e) = c.endpoint(id) {
                if let Some(a) = &e.attached {
                    veths.push(a.host_veth.clone());
                }
                c.endpoints.retain(|e| e.network_id != id);
                changed.push(c.id.clone());
            }
        }
        state.remote.retain(|(n, _), _| n != id);
        state.networks.remove(id);
        let joined = state.joined.remove(id);
        let mut what: Vec<Changed> = changed.iter().map(|c| Changed::Container(c)).collect();
        what.push(Changed::Network(id));
        if let Err(e) = self.persist(state, &what) {
            tracing::error!(network = %net.name, error = %e, "cannot save a removed global network");
        }
        for v in veths {
            let _ = self.host().delete_link(&v).await;
        }
        if joined {
            self.tear_down_network(&net).await;
        }
        tracing::info!(network = %net.name, "global network removed");
    }

    /// Another host's endpoint, new or changed: names in the table, entries in the tunnel.
    async fn remote_put(&self, state: &mut State, rec: &EndpointRecord, work: &mut TunnelWork) {
        let me = self.cluster().expect("cluster").host();
        if rec.host == me {
            if !self.serves_endpoint(state, &rec.network_id, &rec.endpoint_id) {
                // A record of ours that nothing here explains (a stale one): withdraw it.
                self.withdraw(&Withdrawn {
                    network_id: rec.network_id.clone(),
                    endpoint_id: rec.endpoint_id.clone(),
                    v4: rec.v4,
                    v6: rec.v6,
                })
                .await;
            }
            return;
        }
        let key = (rec.network_id.clone(), rec.endpoint_id.clone());
        if state.remote.get(&key) == Some(rec) || !state.networks.contains_key(&rec.network_id) {
            return;
        }
        if state.remote.contains_key(&key) {
            self.remote_delete(state, &key.0, &key.1, work);
        }
        if state.joined.contains(&rec.network_id) {
            self.register_remote(rec);
            work.0.push((rec.clone(), true));
        }
        if let Some(n) = state.networks.get_mut(&rec.network_id) {
            n.v4.allocated.insert(IpAddr::V4(rec.v4));
            if let (Some(p), Some(v6)) = (n.v6.as_mut(), rec.v6) {
                p.allocated.insert(IpAddr::V6(v6));
            }
        }
        state.remote.insert(key, rec.clone());
    }

    /// A remote endpoint's names in the record table.
    fn register_remote(&self, rec: &EndpointRecord) {
        let spec = EndpointSpec {
            network_id: rec.network_id.clone(),
            container_id: rec.container_id.clone(),
            container_name: rec.container_name.clone(),
            hostname: Some(rec.hostname.clone()),
            aliases: rec.aliases.clone(),
            links: Vec::new(),
            ipv4: Some(rec.v4),
            ipv6: rec.v6,
        };
        if let Err(e) = self.dns().table().upsert_endpoint(&spec) {
            tracing::error!(container = %rec.container_name, error = %e, "cannot register a remote endpoint");
        }
    }

    fn remote_delete(&self, state: &mut State, net: &str, ep: &str, work: &mut TunnelWork) {
        let Some(rec) = state.remote.remove(&(net.to_string(), ep.to_string())) else {
            return;
        };
        if state.joined.contains(&rec.network_id) {
            self.dns()
                .table()
                .remove_endpoint(&rec.network_id, &rec.container_id);
            work.0.push((rec, false));
        }
    }

    /// Add (or remove) a remote endpoint's forwarding and neighbour entries on its network's
    /// VXLAN device.
    async fn tunnel_entries(&self, rec: &EndpointRecord, add: bool) -> Result<()> {
        let Some(vx) = self
            .host()
            .index_of(&self.vxlan_name(&rec.network_id))
            .await?
        else {
            return Ok(());
        };
        debug_assert_eq!(rec.mac, mac_for(rec.v4));
        let addrs = std::iter::once(IpAddr::V4(rec.v4)).chain(rec.v6.map(IpAddr::V6));
        for ip in addrs {
            if add {
                self.host().add_remote(vx, ip, rec.mac, rec.host).await?;
            } else {
                self.host().remove_remote(vx, ip, rec.mac, rec.host).await?;
            }
        }
        Ok(())
    }
}
