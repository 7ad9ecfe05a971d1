//! Global (overlay) networks: the agent's side of the cluster store (the store's side, its
//! key layout and transactions, is `crate::cluster`). Creating, joining and leaving them here;
//! following the store in `super::mirror`.
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

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use super::mirror::TunnelWork;
use super::request::NetworkCreate;
use super::{mac_for, Agent, AttachPlan};
use crate::clock::now_rfc3339;
use crate::cluster::etcd::EtcdStore;
use crate::cluster::layout::{EndpointRecord, NetworkRecord};
use crate::cluster::{Claimed, Cluster, StoreError};
use crate::config::ClusterConfig;
use crate::error::{AgentError, Result};
use crate::ids::{ContainerId, EndpointId, NetworkId};

use crate::ipam::{self, IpamError, Pool};
use crate::state::{Changed, Driver, Network, State};

/// How long the start waits for a member of the cluster store before starting without it.
const START_PROBE: Duration = Duration::from_secs(3);

/// MTU inside overlay networks: 1500 less VXLAN's 50 bytes of outer headers.
pub const OVERLAY_MTU: u32 = 1450;

/// An endpoint of a global network this host stopped serving: withdrawn from the store with
/// its address claims once the control lock is released.
#[derive(Debug)]
pub struct Withdrawn {
    pub network_id: NetworkId,
    pub endpoint_id: EndpointId,
    /// Always set on a global network (they have IPv4); `None` for a local one's endpoint
    /// withdrawn just in case (nothing of it is in the store).
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
}

/// Join the cluster the configuration names, if any.
pub async fn join(cfg: &ClusterConfig) -> Result<Option<Cluster>> {
    let Some(url) = cfg.store_url()? else {
        return Ok(None);
    };
    let members = url.members;
    let security = crate::cluster::etcd::Security {
        ca_file: cfg.ca_file.clone(),
        identity: cfg.cert_file.clone().zip(cfg.key_file.clone()),
        user: cfg.username.clone().zip(cfg.password_file.clone()),
    };
    let host = cfg
        .advertise_addr
        .ok_or(crate::config::ConfigError::NoAdvertiseAddr)?;
    let retry_for = Duration::from_secs(cfg.retry_for);
    let mut store = EtcdStore::open(&members, &security, retry_for)?;
    // A short look at start: with every member down the agent starts all the same (on the
    // global networks its state remembers) rather than after the whole retry time.
    let ttl = Duration::from_secs(cfg.lease_ttl);
    let answered = match store.probe(retry_for.min(START_PROBE)).await {
        Ok(()) => Ok(()),
        Err(StoreError::Unavailable(why)) => Err(why),
        Err(e) => return Err(e.into()),
    };
    let store: Arc<dyn crate::cluster::ClusterStore> = Arc::new(store);
    let joined = match answered {
        Ok(()) => Cluster::join(store.clone(), host, ttl)
            .await
            .map_err(|e| match e {
                StoreError::Unavailable(why) => Ok(why),
                e => Err(e),
            }),
        Err(why) => Err(Ok(why)),
    };
    let cluster = match joined {
        Ok(c) => {
            tracing::info!(store = ?members, tls = security.tls(), user = ?cfg.username, %host, lease = c.lease(), "joined the cluster");
            c
        }
        Err(Ok(why)) => {
            tracing::warn!(store = ?members, %why, "no cluster store member answers; starting on the global networks the state remembers, joining when one answers");
            Cluster::offline(store, host, ttl)
        }
        Err(Err(e)) => return Err(e.into()),
    };
    Ok(Some(cluster))
}

pub(super) fn record_of(net: &Network) -> Result<NetworkRecord> {
    Ok(NetworkRecord {
        id: net.id.clone(),
        name: net.name.clone(),
        created: net.created.clone(),
        driver: net.driver,
        internal: net.internal,
        attachable: net.attachable,
        labels: net.labels.clone(),
        options: net.options.clone(),
        vni: net.vni.unwrap_or(0),
        v4: net.overlay_v4()?.clone(),
        v6: net.v6.clone(),
    })
}

/// Whether a local attached endpoint holds `ip` on `net_id`.
pub(super) fn held_locally(state: &State, net_id: &NetworkId, ip: IpAddr) -> bool {
    state.containers.values().any(|c| {
        c.endpoint(net_id)
            .and_then(|e| e.attached.as_ref())
            .is_some_and(|a| a.addresses().any(|held| held == ip))
    })
}

impl Agent {
    pub(super) fn need_cluster(&self) -> Result<&Cluster> {
        self.cluster()
            .ok_or_else(|| AgentError::NoCluster("overlay".into()))
    }

    /// The local form of a global network (this host's bridge name and MAC).
    pub(super) fn network_of(&self, rec: &NetworkRecord) -> Network {
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
            driver: rec.driver,
            internal: rec.internal,
            attachable: rec.attachable,
            labels: rec.labels.clone(),
            options: rec.options.clone(),
            bridge: self.bridge_name(&rec.id),
            bridge_mac: [0x02, 0x42, tail[0], tail[1], tail[2], tail[3]],
            v4: Some(v4),
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
    ) -> Result<NetworkId> {
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
            id: NetworkId::random(),
            name: req.name.clone(),
            created: now_rfc3339(),
            driver: Driver::Overlay,
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
        tracing::info!(network = %net.name, id = %net.id, vni = rec.vni, subnet = %rec.v4.subnet, "global network created");
        Ok(net.id)
    }

    /// Remove a global network from the store, unless an endpoint of any host is on it.
    pub(crate) async fn remove_global_network(&self, net: &Network) -> Result<()> {
        let cluster = self.need_cluster()?;
        if !cluster.remove_network(&record_of(net)?).await? {
            return Err(AgentError::ActiveEndpoints(net.name.clone()));
        }
        Ok(())
    }

    /// Build a global network on this host (bridge, tunnel, DNS listeners) if it is not yet,
    /// with the names and tunnel entries of every endpoint other hosts have on it.
    pub(crate) async fn join_network(&self, state: &mut State, net_id: &NetworkId) -> Result<()> {
        if state.joined.contains(net_id) {
            return Ok(());
        }
        let net = state.network(net_id)?.clone();
        if let Err(e) = self.bring_up_network(&net).await {
            self.tear_down_network(&net).await;
            return Err(e);
        }
        state.joined.insert(net_id.clone());
        let remotes: Vec<EndpointRecord> = state
            .remote
            .values()
            .filter(|r| r.network_id == net_id)
            .cloned()
            .collect();
        let mut work = TunnelWork::default();
        for rec in remotes {
            match self.register_remote(&rec) {
                Ok(()) => work.0.push((rec, true)),
                Err(why) => {
                    tracing::warn!(container = %rec.container_name, %why, "remote endpoint not served")
                }
            }
        }
        self.run_tunnel_work(work).await;
        tracing::info!(network = %net.name, "joined a global network");
        Ok(())
    }

    /// Take a global network down on this host if it has no endpoint left on it.
    pub(crate) async fn leave_if_idle(&self, state: &mut State, net_id: &NetworkId) {
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
            .ensure_vxlan(
                &self.vxlan_name(&net.id),
                vni,
                cluster.host(),
                port,
                bridge,
                &self.inner.mark,
            )
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
        cid: &ContainerId,
        net_id: &NetworkId,
        endpoint_id: &EndpointId,
        static_v4: Option<Ipv4Addr>,
        static_v6: Option<Ipv6Addr>,
    ) -> Result<(Ipv4Addr, Option<Ipv6Addr>)> {
        let cluster = self.need_cluster()?.clone();
        let mut rec =
            self.endpoint_names(state, cid, net_id)
                .ok_or_else(|| AgentError::NotConnected {
                    container: cid.to_string(),
                    network: net_id.to_string(),
                })?;
        let has_v6 = state.network(net_id)?.v6.is_some();
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
            IpAddr::V6(ip) => return Err(AgentError::BadIpv4(ip.to_string())),
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
            Ok(IpAddr::V4(ip)) => Err(AgentError::BadIpv6(ip.to_string())),
            Err(e) => {
                if let Some(n) = state.networks.get_mut(net_id) {
                    n.release(Some(v4), None);
                }
                let _ = cluster.release(net_id, IpAddr::V4(v4), endpoint_id).await;
                Err(e)
            }
        }
    }

    /// Claim one address of family `v6` (`fixed`, or the pool's lowest free), publishing
    /// `publish` with it, its address filled in, when given.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn claim_one(
        &self,
        cluster: &Cluster,
        state: &mut State,
        net_id: &NetworkId,
        endpoint_id: &EndpointId,
        fixed: Option<IpAddr>,
        v6: bool,
        mut publish: Option<&mut EndpointRecord>,
    ) -> Result<IpAddr> {
        loop {
            let net = state
                .networks
                .get_mut(net_id)
                .ok_or_else(|| AgentError::NoSuchNetwork(net_id.to_string()))?;
            let label = format!("{} ({})", net.name, net.id);
            let pool = match (v6, net.v6.as_mut()) {
                (false, _) => net.v4.as_mut().ok_or_else(|| {
                    AgentError::Invalid(format!("network {net_id} has no IPv4 subnet"))
                })?,
                (true, Some(p)) => p,
                (true, None) => {
                    return Err(AgentError::BadIpv6(format!("{net_id} has no IPv6 subnet")))
                }
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
                    return Err(AgentError::NoSuchNetwork(net_id.to_string()));
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
    pub(super) fn endpoint_names(
        &self,
        state: &State,
        cid: &ContainerId,
        net_id: &NetworkId,
    ) -> Option<EndpointRecord> {
        let c = state.containers.get(cid)?;
        let ep = c.endpoint(net_id)?;
        Some(EndpointRecord {
            network_id: net_id.clone(),
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
    pub(super) fn endpoint_record(
        &self,
        state: &State,
        cid: &ContainerId,
        net_id: &NetworkId,
    ) -> Option<EndpointRecord> {
        let a = state
            .containers
            .get(cid)?
            .endpoint(net_id)?
            .attached
            .clone()?;
        let mut rec = self.endpoint_names(state, cid, net_id)?;
        (rec.v4, rec.v6, rec.mac) = (a.v4?, a.v6, a.mac);
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
            if let Some(v4) = w.v4 {
                cluster
                    .release(&w.network_id, IpAddr::V4(v4), &w.endpoint_id)
                    .await?;
            }
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
}
