//! Following the cluster store: this host mirrors it — network definitions into its state,
//! other hosts' endpoints into the record table and the tunnel's forwarding and neighbour
//! entries, address claims into its pools — loading everything once, then following a watch
//! from that revision. A broken watch resumes from the last revision it saw (the client then
//! talks to another member); a compacted history means a full reload, diffed against what is
//! here. This host's own endpoints go the other way: the local state is the truth, and they are
//! published on the host's lease, again after a lease is lost and replaced.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use futures::StreamExt;
use resolver::EndpointSpec;

use super::overlay::held_locally;
use super::{mac_for, Agent, Withdrawn};
use crate::cluster::layout::{self, Claim, EndpointRecord, Key, NetworkRecord};
use crate::cluster::{Change, Claimed, Cluster, Refused, StoreError, View};
use crate::error::Result;
use crate::ids::{EndpointId, NetworkId};
use crate::state::{Changed, Network, State};

/// How often the mirror looks for claims of hosts gone longer than the claim grace.
const ORPHAN_CHECK: Duration = Duration::from_secs(1);

/// Hosts that hold claims but have no `hosts/` record, and since when this agent has seen
/// them so.
#[derive(Default)]
struct Orphans(BTreeMap<IpAddr, std::time::Instant>);

/// Tunnel entries to add or remove, collected while a batch of changes updates the table and
/// applied after it: the names of a whole batch (a dead host's lease: all its endpoints at
/// once) change together, not one netlink round trip apart.
#[derive(Default)]
pub(super) struct TunnelWork(pub(super) Vec<(EndpointRecord, bool)>);

impl Agent {
    /// The cluster the mirror follows. The mirror is started only by an agent that joined a
    /// cluster (`Agent::open`, when `cluster` is set), and `cluster` never changes after, so
    /// this holds for every mirror task by construction.
    fn mirror_cluster(&self) -> &Cluster {
        self.cluster()
            .expect("the mirror runs only in an agent that joined a cluster")
    }

    /// Load the store, make this host match it, publish this host's endpoints, and follow
    /// the store from then on (a task), keeping the lease alive (another). A store that does
    /// not answer does not hold the start: this host serves what its state remembers, and
    /// the task loads and catches up when a member answers.
    pub(crate) async fn start_mirror(&self) -> Result<()> {
        let cluster = self.need_cluster()?.clone();
        let view = if cluster.is_joined() {
            match cluster.load().await {
                Ok(view) => {
                    self.apply_view(&view).await;
                    cluster.applied(view.revision);
                    Some(view)
                }
                Err(StoreError::Unavailable(why)) => {
                    tracing::warn!(%why, "cannot load the cluster store; catching up when it answers");
                    None
                }
                Err(e) => return Err(e.into()),
            }
        } else {
            None
        };
        let agent = self.clone();
        tokio::spawn(async move {
            let view = match view {
                Some(v) => v,
                None => agent.reload(agent.mirror_cluster()).await,
            };
            agent.follow(view).await
        });
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

    /// Apply the store's changes as they come, after `view`'s revision, for ever. `view` is
    /// kept up to date: what each record is checked against (networks, claims, host leases).
    pub(super) async fn follow(&self, mut view: View) {
        let cluster = self.mirror_cluster().clone();
        let grace = Duration::from_secs(self.config().cluster.claim_grace);
        let mut orphans = Orphans::default();
        let mut tick = tokio::time::interval(ORPHAN_CHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let revision = view.revision;
            let mut stream = match cluster.watch(revision).await {
                Ok(s) => {
                    tracing::debug!(from = revision + 1, "watching the cluster store");
                    s
                }
                Err(StoreError::Compacted(_)) => {
                    view = self.reload(&cluster).await;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch the cluster store; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            loop {
                let item = tokio::select! {
                    item = stream.next() => item,
                    _ = tick.tick(), if !grace.is_zero() => {
                        self.release_orphans(&view, &mut orphans, grace).await;
                        continue;
                    }
                };
                let Some(item) = item else { break };
                match item {
                    Ok(batch) if batch.changes.is_empty() => {
                        // Progress: nothing to apply, the watch is complete up to there.
                        view.revision = view.revision.max(batch.revision);
                        cluster.applied(view.revision);
                    }
                    Ok(batch) => {
                        tracing::debug!(
                            revision = batch.revision,
                            changes = batch.changes.len(),
                            "cluster changes"
                        );
                        // A change may drop a network: not under a connect half done.
                        let mut state = self.lock_settled().await;
                        let mut work = TunnelWork::default();
                        for change in &batch.changes {
                            match view.apply(change) {
                                Ok(()) => self.apply_change(&mut state, change, &mut work).await,
                                Err(why) => self.refused(&mut state, change, &why, &mut work).await,
                            }
                        }
                        self.run_tunnel_work(work).await;
                        view.revision = batch.revision;
                        cluster.applied(batch.revision);
                        drop(state);
                        self.notify();
                    }
                    Err(StoreError::Compacted(_)) => {
                        view = self.reload(&cluster).await;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, revision = view.revision, "cluster watch broken; resuming");
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Release the claims of hosts gone from the store (no `hosts/` record) for longer than
    /// `grace`, one transaction each. A host's absence is timed from when this agent first saw
    /// it, so an agent that just started waits the whole grace itself.
    async fn release_orphans(&self, view: &View, orphans: &mut Orphans, grace: Duration) {
        let cluster = self.mirror_cluster();
        let me = cluster.host();
        let now = std::time::Instant::now();
        let absent: BTreeSet<IpAddr> = view
            .claims
            .values()
            .map(|c| c.host)
            .filter(|h| *h != me && !view.hosts.contains_key(h))
            .collect();
        orphans.0.retain(|h, _| absent.contains(h));
        for h in &absent {
            orphans.0.entry(*h).or_insert(now);
        }
        let due: Vec<(&(NetworkId, IpAddr), &Claim)> = view
            .claims
            .iter()
            .filter(|(_, c)| {
                orphans
                    .0
                    .get(&c.host)
                    .is_some_and(|since| now.duration_since(*since) >= grace)
            })
            .collect();
        for ((net, ip), claim) in due {
            match cluster.release_orphan(net, *ip, claim).await {
                Ok(true) => {
                    tracing::info!(network = %net, %ip, host = %claim.host, grace_s = grace.as_secs(), "released the address claim of a host gone for longer than the claim grace")
                }
                Ok(false) => {} // the host came back, or another host released it first
                Err(e) => {
                    tracing::warn!(network = %net, %ip, error = %e, "cannot release a gone host's claim")
                }
            }
        }
    }

    /// The state brought in line with a whole `view` of the store (once no connect is half
    /// done: a network may be dropped), and `wait`ers told.
    async fn apply_view(&self, view: &View) {
        let mut state = self.lock_settled().await;
        self.sync_view(&mut state, view).await;
        drop(state);
        self.notify();
    }

    /// A full reload (the watch's history was compacted away).
    pub(super) async fn reload(&self, cluster: &Cluster) -> View {
        loop {
            match cluster.load().await {
                Ok(view) => {
                    self.apply_view(&view).await;
                    cluster.applied(view.revision);
                    tracing::info!(revision = view.revision, "reloaded the cluster store");
                    return view;
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
    pub(super) async fn sync_view(&self, state: &mut State, view: &View) {
        let mut work = TunnelWork::default();
        self.sync_view_tables(state, view, &mut work).await;
        self.run_tunnel_work(work).await;
        self.publish_local(state).await;
    }

    pub(super) async fn run_tunnel_work(&self, work: TunnelWork) {
        for (rec, add) in work.0 {
            if let Err(e) = self.tunnel_entries(&rec, add).await {
                tracing::error!(container = %rec.container_name, add, error = %e, "cannot change tunnel entries");
            }
        }
    }

    /// Make this host match `view`: global networks added and dropped, pools holding every
    /// claim, other hosts' endpoints in the table (tunnel entries collected in `work`), and
    /// records and claims of this host's that nothing here explains withdrawn.
    pub(super) async fn sync_view_tables(
        &self,
        state: &mut State,
        view: &View,
        work: &mut TunnelWork,
    ) {
        self.sync_networks(state, view).await;
        sync_pools(state, view);
        self.sync_remote_endpoints(state, view, work).await;
        self.withdraw_unexplained(state, view).await;
    }

    async fn sync_networks(&self, state: &mut State, view: &View) {
        for rec in view.networks.values() {
            if !state.networks.contains_key(&rec.id) {
                self.add_global(state, rec).await;
            }
        }
        let gone: Vec<NetworkId> = state
            .networks
            .values()
            .filter(|n| n.is_global() && !view.networks.contains_key(&n.id))
            .map(|n| n.id.clone())
            .collect();
        for id in gone {
            self.drop_global(state, &id).await;
        }
    }

    async fn sync_remote_endpoints(&self, state: &mut State, view: &View, work: &mut TunnelWork) {
        let me = self.mirror_cluster().host();
        let wanted: BTreeMap<&(NetworkId, EndpointId), &EndpointRecord> = view
            .endpoints
            .iter()
            .filter(|(_, r)| r.host != me && state.networks.contains_key(&r.network_id))
            .collect();
        let stale: Vec<(NetworkId, EndpointId)> = state
            .remote
            .iter()
            .filter(|(k, r)| wanted.get(k).is_none_or(|w| *w != *r))
            .map(|(k, _)| k.clone())
            .collect();
        for (net, ep) in stale {
            self.remote_delete(state, &net, &ep, work);
        }
        for rec in wanted.values() {
            if let Err(why) = self.remote_put(state, rec, work).await {
                let key = layout::endpoint(&rec.network_id, &rec.endpoint_id);
                tracing::warn!(%key, %why, "ignoring a cluster store record");
            }
        }
    }

    /// This host's own records and claims that no attached endpoint explains (left by a crash
    /// or by a disconnect while the store was unreachable).
    async fn withdraw_unexplained(&self, state: &mut State, view: &View) {
        let cluster = self.mirror_cluster();
        let me = cluster.host();
        let own_stale: Vec<Withdrawn> = view
            .endpoints
            .values()
            .filter(|r| r.host == me && !self.serves_endpoint(state, &r.network_id, &r.endpoint_id))
            .map(|r| Withdrawn {
                network_id: r.network_id.clone(),
                endpoint_id: r.endpoint_id.clone(),
                v4: Some(r.v4),
                v6: r.v6,
            })
            .collect();
        for w in &own_stale {
            self.withdraw(w).await;
        }
        let stale_claims: Vec<(&(NetworkId, IpAddr), &Claim)> = view
            .claims
            .iter()
            .filter(|((net, ip), c)| c.host == me && !held_locally(state, net, *ip))
            .collect();
        for ((net, ip), c) in stale_claims {
            if let Err(e) = cluster.release(net, *ip, &c.endpoint_id).await {
                tracing::warn!(network = %net, %ip, error = %e, "cannot release a stale claim");
            }
            if let Some(p) = state.networks.get_mut(net).and_then(|n| n.pool_for(*ip)) {
                p.release(*ip);
            }
        }
    }

    /// Publish (again) every endpoint this host serves on global networks, claims first.
    pub(super) async fn publish_local(&self, state: &State) {
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
                for ip in a.addresses() {
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

    /// A change the store's checks refused: logged once, naming its key; an endpoint record it
    /// replaced is no longer believed either.
    async fn refused(
        &self,
        state: &mut State,
        change: &Change,
        why: &crate::cluster::Refused,
        work: &mut TunnelWork,
    ) {
        let Change::Put(kv) = change else { return };
        tracing::warn!(key = %kv.key, %why, "ignoring a cluster store record");
        if let Key::Endpoint { net, ep } = Key::parse(&kv.key) {
            self.remote_delete(state, &net, &ep, work);
        }
    }

    /// One change from the watch, already accepted into the mirror's view.
    pub(super) async fn apply_change(
        &self,
        state: &mut State,
        change: &Change,
        work: &mut TunnelWork,
    ) {
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
                            if let Err(why) = self.remote_put(state, &rec, work).await {
                                tracing::warn!(key = %kv.key, %why, "ignoring a cluster store record");
                            }
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
    pub(super) fn serves_endpoint(&self, state: &State, net: &NetworkId, ep: &EndpointId) -> bool {
        state.containers.values().any(|c| {
            c.endpoint(net)
                .is_some_and(|e| e.endpoint_id == ep && e.attached.is_some())
        })
    }

    /// A global network appeared: build it here, unless its name or a subnet is a local
    /// network's (the name would become ambiguous, the routes would clash); that is logged,
    /// naming its key.
    pub(super) async fn add_global(&self, state: &mut State, rec: &NetworkRecord) {
        let clash = state.networks.values().any(|n| {
            !n.is_global()
                && (n.name == rec.name
                    || std::iter::once(&rec.v4)
                        .chain(rec.v6.as_ref())
                        .any(|p| n.pools().any(|q| q.overlaps(&p.subnet))))
        });
        if clash {
            let key = layout::network(&rec.id);
            let why = Refused::ClashesWithLocal;
            tracing::warn!(%key, %why, "ignoring a cluster store record");
            return;
        }
        let net = self.network_of(rec);
        state.networks.insert(net.id.clone(), net.clone());
        if let Err(e) = self.persist(state, &[Changed::Network(&net.id)]) {
            tracing::error!(network = %net.name, error = %e, "cannot save a global network");
        }
        tracing::info!(network = %net.name, id = %net.id, "global network added");
    }

    /// A global network is gone from the store: take it down here, with whatever this host
    /// still had on it.
    pub(super) async fn drop_global(&self, state: &mut State, id: &NetworkId) {
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
        let mut what: Vec<Changed> = changed.iter().map(Changed::Container).collect();
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
    /// Refused (nothing changed) when it would take over something of this host's or of
    /// another endpoint: a local container's id, an address another endpoint holds, another
    /// endpoint's container id on the network; tunnel entries only for what the table took.
    pub(super) async fn remote_put(
        &self,
        state: &mut State,
        rec: &EndpointRecord,
        work: &mut TunnelWork,
    ) -> std::result::Result<(), Refused> {
        let me = self.mirror_cluster().host();
        if rec.host == me {
            if !self.serves_endpoint(state, &rec.network_id, &rec.endpoint_id) {
                // A record of ours that nothing here explains (a stale one): withdraw it.
                self.withdraw(&Withdrawn {
                    network_id: rec.network_id.clone(),
                    endpoint_id: rec.endpoint_id.clone(),
                    v4: Some(rec.v4),
                    v6: rec.v6,
                })
                .await;
            }
            return Ok(());
        }
        let key = (rec.network_id.clone(), rec.endpoint_id.clone());
        if state.remote.get(&key) == Some(rec) || !state.networks.contains_key(&rec.network_id) {
            return Ok(());
        }
        check_remote(state, &key, rec)?;
        if state.remote.contains_key(&key) {
            self.remote_delete(state, &key.0, &key.1, work);
        }
        if state.joined.contains(&rec.network_id) {
            self.register_remote(rec)?;
            work.0.push((rec.clone(), true));
        }
        if let Some(n) = state.networks.get_mut(&rec.network_id) {
            if let Some(p) = n.v4.as_mut() {
                p.allocated.insert(IpAddr::V4(rec.v4));
            }
            if let (Some(p), Some(v6)) = (n.v6.as_mut(), rec.v6) {
                p.allocated.insert(IpAddr::V6(v6));
            }
        }
        state.remote.insert(key, rec.clone());
        Ok(())
    }

    /// A remote endpoint's names in the record table.
    pub(super) fn register_remote(&self, rec: &EndpointRecord) -> std::result::Result<(), Refused> {
        let spec = EndpointSpec {
            network_id: rec.network_id.to_string(),
            container_id: rec.container_id.to_string(),
            container_name: rec.container_name.clone(),
            hostname: Some(rec.hostname.clone()),
            aliases: rec.aliases.clone(),
            links: Vec::new(),
            ipv4: Some(rec.v4),
            ipv6: rec.v6,
        };
        self.dns()
            .table()
            .upsert_endpoint(&spec)
            .map(|_| ())
            .map_err(|e| Refused::TableRefused(e.to_string()))
    }

    pub(super) fn remote_delete(
        &self,
        state: &mut State,
        net: &NetworkId,
        ep: &EndpointId,
        work: &mut TunnelWork,
    ) {
        let Some(rec) = state.remote.remove(&(net.clone(), ep.clone())) else {
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
    pub(super) async fn tunnel_entries(&self, rec: &EndpointRecord, add: bool) -> Result<()> {
        let Some(vx) = self
            .host()
            .index_of(&self.vxlan_name(&rec.network_id))
            .await?
        else {
            return Ok(());
        };
        if rec.mac != mac_for(rec.v4) {
            // Checked when the record came in; never a tunnel entry for a MAC of another's.
            return Err(crate::error::AgentError::Invalid(format!(
                "endpoint {}: MAC does not match its address",
                rec.endpoint_id
            )));
        }
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

/// The checks of another host's endpoint that need this host's state: it may not reuse a
/// local container's id (the table would replace that container's names), nor hold an address
/// another endpoint holds here or elsewhere, nor reuse another remote endpoint's container id
/// on the same network.
fn check_remote(
    state: &State,
    key: &(NetworkId, EndpointId),
    rec: &EndpointRecord,
) -> std::result::Result<(), Refused> {
    if state.containers.contains_key(&rec.container_id) {
        return Err(Refused::LocalContainerId);
    }
    let addrs: Vec<IpAddr> = std::iter::once(IpAddr::V4(rec.v4))
        .chain(rec.v6.map(IpAddr::V6))
        .collect();
    for &ip in &addrs {
        if held_locally(state, &rec.network_id, ip) {
            return Err(Refused::AddressInUse(ip));
        }
    }
    for (k, other) in &state.remote {
        if k == key || other.network_id != rec.network_id {
            continue;
        }
        let theirs = [Some(IpAddr::V4(other.v4)), other.v6.map(IpAddr::V6)];
        if let Some(ip) = addrs.iter().find(|ip| theirs.contains(&Some(**ip))) {
            return Err(Refused::AddressInUse(*ip));
        }
        if other.container_id == rec.container_id {
            return Err(Refused::ContainerIdInUse(rec.container_id.to_string()));
        }
    }
    Ok(())
}

/// Each global network's pools hold every claim in the store and this host's attached
/// endpoints' addresses.
fn sync_pools(state: &mut State, view: &View) {
    let State {
        networks,
        containers,
        ..
    } = state;
    for net in networks.values_mut().filter(|n| n.is_global()) {
        let mut held: BTreeSet<IpAddr> = view
            .claims
            .keys()
            .filter(|(n, _)| *n == net.id)
            .map(|(_, ip)| *ip)
            .collect();
        for c in containers.values() {
            if let Some(a) = c.endpoint(&net.id).and_then(|e| e.attached.as_ref()) {
                held.extend(a.addresses());
            }
        }
        if let Some(p) = net.v4.as_mut() {
            p.allocated = held.iter().filter(|ip| ip.is_ipv4()).copied().collect();
        }
        if let Some(p) = net.v6.as_mut() {
            p.allocated = held.iter().filter(|ip| ip.is_ipv6()).copied().collect();
        }
    }
}
