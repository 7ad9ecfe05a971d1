//! The operations (create network, connect, start, stop, …) that combine IPAM, netlink, state
//! and the resolver's table, each rolled back whole on error. API handlers are thin calls here.
//!
//! One mutex serialises the control path: operations read and change one [`State`], persist it
//! before answering, and update the record table before returning, so a connect returns only
//! once its names answer. Veth deletion, the slow kernel call, runs after the lock is released.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipnet::IpNet;
use resolver::{EndpointSpec, NetworkSpec, Server};
use tokio::sync::Mutex;

use crate::cluster::Cluster;
use crate::config::AgentConfig;
use crate::error::{AgentError, Result};
use crate::ipam::{self, Pool};
use crate::netlink::Netlink;
use crate::netns;
use crate::request::{check_endpoint, check_hostname, check_name, plan_network, NetworkPlan};
pub use crate::request::{ContainerCreate, EndpointRequest, IpamRequest, NetworkCreate};
use crate::state::{Attached, Changed, Container, Endpoint, Network, RunState, State, Store};

struct Inner {
    state: Mutex<State>,
    /// Bumped after every saved change: `wait` listens to it.
    changes: tokio::sync::watch::Sender<u64>,
    store: Store,
    dns: Server,
    host: Netlink,
    cfg: AgentConfig,
    /// Set when the agent joined a cluster store (global networks).
    cluster: Option<Cluster>,
}

/// The agent. Cheap to clone.
#[derive(Clone)]
pub struct Agent {
    inner: Arc<Inner>,
}

/// One attachment, decided: see [`Agent::plan_attach`].
pub(crate) struct AttachPlan {
    pub(crate) cid: String,
    pub(crate) net_id: String,
    /// A global network's endpoint: its id (claims and the published record name it).
    pub(crate) global: Option<String>,
    /// Both ends of the veth (an overlay's tunnel header takes 50 bytes).
    mtu: Option<u32>,
    bridge: String,
    prefix4: u8,
    gateway4: IpAddr,
    /// The network's IPv6 prefix length and gateway, when it has IPv6.
    v6_pool: Option<(u8, IpAddr)>,
    pub(crate) v4: Ipv4Addr,
    pub(crate) v6: Option<Ipv6Addr>,
    link_local: Vec<IpAddr>,
    /// The container's first attachment: it gets the default route (and `lo` up).
    default_route: bool,
    lo_up: bool,
    host_veth: String,
    ifname: String,
    /// The namespace, and a netlink connection inside it.
    ns: std::fs::File,
    inside: Netlink,
}

/// Work left for after the lock: host-side veths to delete (each takes its peer), and
/// endpoints of global networks to withdraw from the cluster store with their addresses.
#[derive(Debug, Default)]
#[must_use]
pub(crate) struct Cleanup {
    pub(crate) veths: Vec<String>,
    pub(crate) withdrawn: Vec<crate::global::Withdrawn>,
    /// Global networks this host may have no endpoint on any more: taken down if so.
    pub(crate) leave: Vec<String>,
}

impl Cleanup {
    fn extend(&mut self, other: Cleanup) {
        self.veths.extend(other.veths);
        self.withdrawn.extend(other.withdrawn);
        self.leave.extend(other.leave);
    }

    async fn run(self, agent: &Agent) {
        for v in self.veths {
            if let Err(e) = agent.inner.host.delete_link(&v).await {
                tracing::warn!(veth = %v, error = %e, "cannot delete veth");
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

pub fn random_id() -> String {
    (0..4)
        .map(|_| format!("{:016x}", fastrand::u64(..)))
        .collect()
}

pub fn now_rfc3339() -> String {
    // Without a date crate: civil-from-days (Howard Hinnant's algorithm), UTC, nanoseconds.
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// Docker's MAC for an endpoint: 02:42 followed by the IPv4 address.
pub(crate) fn mac_for(v4: Ipv4Addr) -> [u8; 6] {
    let o = v4.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// Find by full id, exact name, or unique id prefix, in that order.
fn resolve<'a, T>(
    items: impl Iterator<Item = (&'a String, &'a T)> + Clone,
    name_of: impl Fn(&T) -> &str,
    key: &str,
) -> std::result::Result<&'a String, usize>
where
    T: 'a,
{
    let key = key.trim_start_matches('/');
    if let Some((id, _)) = items.clone().find(|(id, _)| id.as_str() == key) {
        return Ok(id);
    }
    if let Some((id, _)) = items.clone().find(|(_, t)| name_of(t) == key) {
        return Ok(id);
    }
    if key.is_empty() {
        return Err(0);
    }
    let matches: Vec<&String> = items
        .filter(|(id, _)| id.starts_with(key))
        .map(|(id, _)| id)
        .collect();
    match matches.len() {
        1 => Ok(matches[0]),
        n => Err(n),
    }
}

fn find_network(state: &State, key: &str) -> Result<String> {
    resolve(state.networks.iter(), |n: &Network| &n.name, key)
        .cloned()
        .map_err(|n| {
            if n > 1 {
                AgentError::AmbiguousNetwork(key.to_string(), n)
            } else {
                AgentError::NoSuchNetwork(key.to_string())
            }
        })
}

fn find_container(state: &State, key: &str) -> Result<String> {
    resolve(state.containers.iter(), |c: &Container| &c.name, key)
        .cloned()
        .map_err(|n| {
            if n > 1 {
                AgentError::AmbiguousContainer(key.to_string())
            } else {
                AgentError::NoSuchContainer(key.to_string())
            }
        })
}

impl Agent {
    /// Load the state, reconcile it with the kernel, and serve DNS for every network.
    pub async fn open(cfg: AgentConfig) -> Result<Agent> {
        let store = Store::new(&cfg.state_dir).map_err(AgentError::io("state directory"))?;
        let state = store.load().map_err(AgentError::io("loading state"))?;
        let dns = Server::new(&cfg.dns, resolver::Table::new())?;
        let host = Netlink::host()?;
        let cluster = crate::global::join(&cfg.cluster).await?;
        let agent = Agent {
            inner: Arc::new(Inner {
                state: Mutex::new(state),
                changes: tokio::sync::watch::Sender::new(0),
                store,
                dns,
                host,
                cfg,
                cluster,
            }),
        };
        agent.reconcile().await?;
        if agent.inner.cluster.is_some() {
            agent.start_mirror().await?;
        }
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

    pub fn config(&self) -> &AgentConfig {
        &self.inner.cfg
    }

    /// A copy of the whole state (inspect, ls).
    pub async fn snapshot(&self) -> State {
        self.inner.state.lock().await.clone()
    }

    /// Persist the objects a change touched, then tell `wait`ers.
    pub(crate) fn persist(&self, state: &State, changed: &[Changed<'_>]) -> Result<()> {
        self.inner
            .store
            .persist(state, changed)
            .map_err(AgentError::io("saving state"))?;
        self.inner.changes.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Write one container's file on the blocking pool while the caller goes on; the caller
    /// awaits the result before acknowledging (and notifies `wait`ers itself).
    fn persist_in_background(
        &self,
        c: &Container,
    ) -> impl std::future::Future<Output = Result<()>> + use<> {
        let (store, c) = (self.inner.store.clone(), c.clone());
        let task = tokio::task::spawn_blocking(move || store.write_container(&c));
        async move {
            task.await
                .map_err(std::io::Error::other)
                .and_then(|r| r)
                .map_err(AgentError::io("saving state"))
        }
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

    // ---- networks ---------------------------------------------------------------------

    /// Create a network: IPAM, bridge, DNS listeners. Returns its id.
    pub async fn create_network(&self, req: NetworkCreate) -> Result<String> {
        let mut state = self.inner.state.lock().await;
        if state.networks.values().any(|n| n.name == req.name) {
            return Err(AgentError::NetworkExists(req.name));
        }
        let taken: Vec<IpNet> = state
            .networks
            .values()
            .flat_map(|n| std::iter::once(n.v4.subnet).chain(n.v6.as_ref().map(|p| p.subnet)))
            .collect();
        let NetworkPlan { driver, v4, v6 } = plan_network(&req, &taken)?;
        if driver == "overlay" {
            return self
                .create_global_network(&mut state, req, taken, v4, v6)
                .await;
        }
        let v4 = match v4 {
            Some(p) => p,
            None => {
                let mut avoid = taken.clone();
                avoid.extend(self.inner.host.ipv4_routes().await?);
                let mut p = Pool::new(ipam::pick_default(&avoid)?, None, None)?;
                p.show_gateway = true;
                p
            }
        };
        let id = random_id();
        let mac_tail = fastrand::u32(..).to_be_bytes();
        let net = Network {
            id: id.clone(),
            name: req.name.clone(),
            created: now_rfc3339(),
            driver,
            internal: req.internal,
            attachable: req.attachable,
            labels: req.labels,
            options: req.options,
            bridge: self.bridge_name(&id),
            bridge_mac: [
                0x02,
                0x42,
                mac_tail[0],
                mac_tail[1],
                mac_tail[2],
                mac_tail[3],
            ],
            v4,
            v6,
            vni: None,
        };
        if let Err(e) = self.bring_up_network(&net).await {
            self.tear_down_network(&net).await;
            return Err(e);
        }
        state.networks.insert(id.clone(), net.clone());
        if let Err(e) = self.persist(&state, &[Changed::Network(&id)]) {
            state.networks.remove(&id);
            self.tear_down_network(&net).await;
            return Err(e);
        }
        tracing::info!(network = %net.name, %id, subnet = %net.v4.subnet, bridge = %net.bridge, "network created");
        Ok(id)
    }

    /// Bridge with its gateways (and a global network's tunnel), and DNS listeners on them.
    /// Idempotent (used at start too).
    pub(crate) async fn bring_up_network(&self, net: &Network) -> Result<()> {
        let addrs: Vec<(IpAddr, u8)> = std::iter::once(&net.v4)
            .chain(net.v6.as_ref())
            .map(|p| (p.gateway, p.prefix_len()))
            .collect();
        let index = self
            .inner
            .host
            .ensure_bridge(&net.bridge, net.bridge_mac, &addrs)
            .await?;
        if let Some(vni) = net.vni {
            self.bring_up_tunnel(net, vni, index).await?;
        }
        let spec = NetworkSpec {
            id: net.id.clone(),
            name: net.name.clone(),
            internal: net.internal,
            bridge_ifindex: Some(index),
        };
        self.inner.dns.add_network(&spec, &net.gateways()).await?;
        Ok(())
    }

    pub(crate) async fn tear_down_network(&self, net: &Network) {
        self.inner.dns.remove_network(&net.id).await;
        if net.is_global() {
            let vx = self.vxlan_name(&net.id);
            if let Err(e) = self.inner.host.delete_link(&vx).await {
                tracing::warn!(vxlan = %vx, error = %e, "cannot delete vxlan");
            }
        }
        if let Err(e) = self.inner.host.delete_link(&net.bridge).await {
            tracing::warn!(bridge = %net.bridge, error = %e, "cannot delete bridge");
        }
    }

    /// Remove a network without attached endpoints. Stopped containers forget their settings
    /// for it (unlike Docker, whose next start would then fail).
    pub async fn remove_network(&self, key: &str) -> Result<()> {
        let mut state = self.inner.state.lock().await;
        let id = find_network(&state, key)?;
        self.remove_network_locked(&mut state, &id).await
    }

    async fn remove_network_locked(&self, state: &mut State, id: &str) -> Result<()> {
        let net = state.networks[id].clone();
        let attached = state
            .containers
            .values()
            .any(|c| c.endpoint(id).is_some_and(|e| e.attached.is_some()));
        if attached {
            return Err(AgentError::ActiveEndpoints(net.name));
        }
        if net.is_global() {
            // Endpoints of any host keep it; the store decides, atomically.
            self.remove_global_network(&net).await?;
        }
        let before = state.clone();
        state.networks.remove(id);
        state.remote.retain(|(n, _), _| n != id);
        state.joined.remove(id);
        for c in state.containers.values_mut() {
            c.endpoints.retain(|e| e.network_id != id);
        }
        // One file: endpoints configured on a removed network are dropped at load.
        if let Err(e) = self.persist(state, &[Changed::Network(id)]) {
            *state = before;
            return Err(e);
        }
        self.tear_down_network(&net).await;
        tracing::info!(network = %net.name, "network removed");
        Ok(())
    }

    /// Remove every network without attached endpoints; their names.
    pub async fn prune_networks(&self) -> Result<Vec<String>> {
        let mut state = self.inner.state.lock().await;
        let idle: Vec<String> = state
            .networks
            .keys()
            .filter(|id| {
                !state
                    .containers
                    .values()
                    .any(|c| c.endpoint(id).is_some_and(|e| e.attached.is_some()))
                    && !state.remote.keys().any(|(n, _)| n == *id)
            })
            .cloned()
            .collect();
        // By name, as the Engine lists them.
        let mut idle = idle;
        idle.sort_by(|a, b| state.networks[a].name.cmp(&state.networks[b].name));
        let mut names = Vec::new();
        for id in idle {
            let name = state.networks[&id].name.clone();
            match self.remove_network_locked(&mut state, &id).await {
                Ok(()) => names.push(name),
                // A global network another host just attached to: not idle after all.
                Err(AgentError::ActiveEndpoints(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(names)
    }

    /// The id of a network by id, name or prefix.
    pub async fn network_id(&self, key: &str) -> Result<String> {
        find_network(&*self.inner.state.lock().await, key)
    }

    /// The id of a container by id, name or prefix.
    pub async fn container_id(&self, key: &str) -> Result<String> {
        find_container(&*self.inner.state.lock().await, key)
    }

    // ---- connect / disconnect ---------------------------------------------------------

    /// Connect a container to a network: at once when it runs, at its next start otherwise.
    /// Returns after the records answer (running container).
    pub async fn connect(&self, net_key: &str, ctr_key: &str, req: &EndpointRequest) -> Result<()> {
        let mut state = self.inner.state.lock().await;
        let net_id = find_network(&state, net_key)?;
        let cid = find_container(&state, ctr_key)?;
        let net = &state.networks[&net_id];
        let c = &state.containers[&cid];
        if c.endpoint(&net_id).is_some() {
            return Err(AgentError::AlreadyConnected {
                container: c.name.clone(),
                network: net.name.clone(),
            });
        }
        let cfg = check_endpoint(req, net)?;
        let ep = Endpoint {
            network_id: net_id.clone(),
            endpoint_id: random_id(),
            aliases: cfg.aliases,
            links: cfg.links,
            static_v4: cfg.v4,
            static_v6: cfg.v6,
            link_local: cfg.link_local,
            attached: None,
        };
        let undo = state.undo_point(&cid, std::slice::from_ref(&net_id));
        state
            .containers
            .get_mut(&cid)
            .expect("found above")
            .endpoints
            .push(ep);
        if !state.containers[&cid].state.is_up() {
            // Configured only: attached at the next start.
            if let Err(e) = self.persist(&state, &[Changed::Container(&cid)]) {
                undo.restore(&mut state);
                return Err(e);
            }
            return Ok(());
        }
        // Running: the durable write of the attachment overlaps the kernel work (a crash in
        // between leaves a file naming a veth that may not exist: the restart recreates it,
        // as for any missing veth).
        let plan = match self.plan_attach(&mut state, &cid, &net_id).await {
            Ok(plan) => plan,
            Err(e) => {
                undo.restore(&mut state);
                return Err(e);
            }
        };
        self.mark_attached(&mut state, &plan);
        let saving = self.persist_in_background(&state.containers[&cid]);
        let plumbed = self.plumb(&plan).await;
        let saved = saving.await;
        if let Err(e) = plumbed
            .and(saved)
            .and_then(|()| self.commit_attach(&mut state, &plan))
        {
            undo.restore(&mut state);
            if let Err(e) = self.persist(&state, &[Changed::Container(&cid)]) {
                tracing::error!(container = %cid, error = %e, "cannot write back a failed connect");
            }
            let _ = self.inner.host.delete_link(&plan.host_veth).await;
            self.release_plan(&plan).await;
            self.leave_if_idle(&mut state, &plan.net_id).await;
            return Err(e);
        }
        self.inner.changes.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Disconnect: records gone, interface removed, dynamic address freed.
    pub async fn disconnect(&self, net_key: &str, ctr_key: &str, force: bool) -> Result<()> {
        let mut state = self.inner.state.lock().await;
        let net_id = match find_network(&state, net_key) {
            Ok(id) => id,
            Err(AgentError::NoSuchNetwork(_)) if force => {
                // --force: clear what is left of a network that is gone.
                let (cleanup, changed) =
                    self.forget_endpoints(&mut state, |_, e| e.network_id == net_key);
                let changed: Vec<Changed> = changed.iter().map(|c| Changed::Container(c)).collect();
                self.persist(&state, &changed)?;
                drop(state);
                cleanup.run(self).await;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let cid = match find_container(&state, ctr_key) {
            Ok(id) => id,
            Err(AgentError::NoSuchContainer(_)) if force => {
                self.inner.dns.table().remove_endpoint(&net_id, ctr_key);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let c = &state.containers[&cid];
        if c.endpoint(&net_id).is_none() {
            return Err(AgentError::NotConnected {
                container: c.id.clone(),
                network: state.networks[&net_id].name.clone(),
            });
        }
        let cleanup = self.detach(&mut state, &cid, &net_id);
        state
            .containers
            .get_mut(&cid)
            .expect("found above")
            .endpoints
            .retain(|e| e.network_id != net_id);
        self.refresh_etc(&state, &cid);
        self.persist(&state, &[Changed::Container(&cid)])?;
        drop(state);
        cleanup.run(self).await;
        Ok(())
    }

    fn forget_endpoints(
        &self,
        state: &mut State,
        pred: impl Fn(&Container, &Endpoint) -> bool,
    ) -> (Cleanup, Vec<String>) {
        let mut cleanup = Cleanup::default();
        let mut changed = Vec::new();
        for c in state.containers.values_mut() {
            let cid = c.id.clone();
            let gone: Vec<Endpoint> = c.endpoints.iter().filter(|e| pred(c, e)).cloned().collect();
            if !gone.is_empty() {
                changed.push(cid.clone());
            }
            for e in gone {
                self.inner.dns.table().remove_endpoint(&e.network_id, &cid);
                if let Some(a) = &e.attached {
                    cleanup.veths.push(a.host_veth.clone());
                    if self.inner.cluster.is_some() {
                        // Maybe a global network's: withdrawing what is not there is harmless.
                        cleanup.leave.push(e.network_id.clone());
                        cleanup.withdrawn.push(crate::global::Withdrawn {
                            network_id: e.network_id.clone(),
                            endpoint_id: e.endpoint_id.clone(),
                            v4: a.v4,
                            v6: a.v6,
                        });
                    }
                }
                c.endpoints.retain(|x| x.network_id != e.network_id);
            }
        }
        (cleanup, changed)
    }

    /// Attach one configured endpoint of a running container: addresses, veth, records.
    /// Rolled back whole on error. (Connect does the same steps with its durable write
    /// overlapping the kernel work.)
    async fn attach(&self, state: &mut State, cid: &str, net_id: &str) -> Result<()> {
        let plan = self.plan_attach(state, cid, net_id).await?;
        let done = match self.plumb(&plan).await {
            Ok(()) => {
                self.mark_attached(state, &plan);
                self.commit_attach(state, &plan)
            }
            Err(e) => Err(e),
        };
        if let Err(e) = done {
            self.abandon(state, &plan).await;
            return Err(e);
        }
        Ok(())
    }

    /// Decide everything an attachment will make before any kernel work: the interface name
    /// inside the namespace, addresses taken from the pools, the host veth's name.
    async fn plan_attach(&self, state: &mut State, cid: &str, net_id: &str) -> Result<AttachPlan> {
        let c = &state.containers[cid];
        let ep = c.endpoint(net_id).expect("endpoint configured");
        let (static_v4, static_v6) = (ep.static_v4, ep.static_v6);
        let endpoint_id = ep.endpoint_id.clone();
        let link_local = ep.link_local.clone();
        let first = !c.endpoints.iter().any(|e| e.attached.is_some());
        let lo_up = first && !c.owns_netns;
        let netns_path = c.netns.clone();
        // The namespace first (a missing one fails before any address is taken).
        let (ns, inside, ifname) = self.open_inside(&netns_path).await?;
        let global = state.networks[net_id].is_global();
        let (v4, v6) = if global {
            self.join_network(state, net_id).await?;
            let claimed = self
                .claim_addresses(state, cid, net_id, &endpoint_id, static_v4, static_v6)
                .await;
            if claimed.is_err() {
                self.leave_if_idle(state, net_id).await;
            }
            claimed?
        } else {
            Self::allocate_local(state, net_id, static_v4, static_v6)?
        };
        let net = &state.networks[net_id];
        Ok(AttachPlan {
            cid: cid.to_string(),
            net_id: net_id.to_string(),
            global: global.then_some(endpoint_id),
            mtu: global.then_some(crate::global::OVERLAY_MTU),
            bridge: net.bridge.clone(),
            prefix4: net.v4.prefix_len(),
            gateway4: net.v4.gateway,
            v6_pool: net.v6.as_ref().map(|p| (p.prefix_len(), p.gateway)),
            v4,
            v6,
            link_local,
            default_route: first,
            lo_up,
            host_veth: self.veth_name(),
            ifname,
            ns,
            inside,
        })
    }

    /// Addresses from a local network's pools (static ones reserved, else the lowest free).
    fn allocate_local(
        state: &mut State,
        net_id: &str,
        static_v4: Option<Ipv4Addr>,
        static_v6: Option<Ipv6Addr>,
    ) -> Result<(Ipv4Addr, Option<Ipv6Addr>)> {
        let net = state.networks.get_mut(net_id).expect("network exists");
        let v4 = match static_v4 {
            Some(ip) => {
                net.v4.reserve(IpAddr::V4(ip))?;
                ip
            }
            None => match net.v4.allocate(&format!("{} ({})", net.name, net.id))? {
                IpAddr::V4(ip) => ip,
                IpAddr::V6(_) => unreachable!("v4 pool"),
            },
        };
        let v6 = match (&mut net.v6, static_v6) {
            (Some(pool), Some(ip)) => pool.reserve(IpAddr::V6(ip)).map(|()| Some(ip)),
            (Some(pool), None) => match pool.allocate(&format!("{} ({})", net.name, net.id)) {
                Ok(IpAddr::V6(ip)) => Ok(Some(ip)),
                Ok(IpAddr::V4(_)) => unreachable!("v6 pool"),
                Err(e) => Err(e),
            },
            (None, _) => Ok(None),
        };
        match v6 {
            Ok(v6) => Ok((v4, v6)),
            Err(e) => {
                net.release(v4, None);
                Err(e.into())
            }
        }
    }

    /// A handle on the container's namespace, a netlink connection inside it, and the first
    /// free `ethN` there.
    async fn open_inside(
        &self,
        path: &std::path::Path,
    ) -> Result<(std::fs::File, Netlink, String)> {
        let ns = netns::open(path).map_err(AgentError::io(format!(
            "network namespace {}",
            path.display()
        )))?;
        let inside = Netlink::inside(&ns)?;
        let present = inside.link_names().await?;
        let ifname = (0..)
            .map(|i| format!("eth{i}"))
            .find(|n| !present.contains(n))
            .expect("some ethN is free");
        Ok((ns, inside, ifname))
    }

    /// The kernel part of attaching: veth into the namespace, addresses, routes.
    async fn plumb(&self, plan: &AttachPlan) -> Result<()> {
        let (ns, inside) = (&plan.ns, &plan.inside);
        let bridge = self
            .inner
            .host
            .index_of(&plan.bridge)
            .await?
            .ok_or_else(|| crate::netlink::NetlinkError::NoLink(plan.bridge.clone()))?;
        self.inner
            .host
            .add_veth(
                &plan.host_veth,
                bridge,
                ns,
                &plan.ifname,
                mac_for(plan.v4),
                plan.mtu,
            )
            .await?;
        let index = inside
            .index_of(&plan.ifname)
            .await?
            .ok_or_else(|| crate::netlink::NetlinkError::NoLink(plan.ifname.clone()))?;
        inside
            .add_address(index, IpAddr::V4(plan.v4), plan.prefix4)
            .await?;
        if let (Some(ip), Some((prefix, _))) = (plan.v6, plan.v6_pool) {
            inside.add_address(index, IpAddr::V6(ip), prefix).await?;
        }
        for ll in &plan.link_local {
            let prefix = if ll.is_ipv4() { 16 } else { 64 };
            inside.add_address(index, *ll, prefix).await?;
        }
        inside.set_up(index).await?;
        // The agent brings `lo` up when it makes a namespace; one it was given may have it down.
        if plan.lo_up {
            if let Some(lo) = inside.index_of("lo").await? {
                inside.set_up(lo).await?;
            }
        }
        if plan.default_route {
            inside.add_default_route(plan.gateway4).await?;
            if let (Some(_), Some((_, gw))) = (plan.v6, plan.v6_pool) {
                inside.add_default_route(gw).await?;
            }
        }
        Ok(())
    }

    /// Record the planned attachment on the endpoint (before or after the kernel work).
    fn mark_attached(&self, state: &mut State, plan: &AttachPlan) {
        state
            .containers
            .get_mut(&plan.cid)
            .and_then(|c| c.endpoint_mut(&plan.net_id))
            .expect("endpoint configured")
            .attached = Some(Attached {
            ifname: plan.ifname.clone(),
            host_veth: plan.host_veth.clone(),
            mac: mac_for(plan.v4),
            v4: plan.v4,
            v6: plan.v6,
        });
    }

    /// Make the attachment visible: its names answer from the next query on, and the
    /// container's /etc/netns files name the new gateway.
    fn commit_attach(&self, state: &mut State, plan: &AttachPlan) -> Result<()> {
        let c = &state.containers[&plan.cid];
        let ep = c.endpoint(&plan.net_id).expect("endpoint configured");
        let spec = EndpointSpec {
            network_id: plan.net_id.clone(),
            container_id: c.id.clone(),
            container_name: c.name.clone(),
            hostname: Some(c.hostname.clone()),
            aliases: ep.aliases.clone(),
            links: ep.links.clone(),
            ipv4: Some(plan.v4),
            ipv6: plan.v6,
        };
        self.inner.dns.table().upsert_endpoint(&spec)?;
        self.refresh_etc(state, &plan.cid);
        Ok(())
    }

    /// Undo a planned attachment whose kernel work or registration failed.
    async fn abandon(&self, state: &mut State, plan: &AttachPlan) {
        if let Some(n) = state.networks.get_mut(&plan.net_id) {
            n.release(plan.v4, plan.v6);
        }
        if let Some(ep) = state
            .containers
            .get_mut(&plan.cid)
            .and_then(|c| c.endpoint_mut(&plan.net_id))
        {
            ep.attached = None;
        }
        let _ = self.inner.host.delete_link(&plan.host_veth).await;
        self.release_plan(plan).await;
        self.leave_if_idle(state, &plan.net_id).await;
    }

    /// Undo an attachment in the table and IPAM at once; the veth goes in the cleanup.
    fn detach(&self, state: &mut State, cid: &str, net_id: &str) -> Cleanup {
        let mut cleanup = Cleanup::default();
        self.inner.dns.table().remove_endpoint(net_id, cid);
        let Some(c) = state.containers.get_mut(cid) else {
            return cleanup;
        };
        let Some(ep) = c.endpoint_mut(net_id) else {
            return cleanup;
        };
        let endpoint_id = ep.endpoint_id.clone();
        if let Some(a) = ep.attached.take() {
            if let Some(n) = state.networks.get_mut(net_id) {
                n.release(a.v4, a.v6);
                if n.is_global() {
                    cleanup.leave.push(net_id.to_string());
                    cleanup.withdrawn.push(crate::global::Withdrawn {
                        network_id: net_id.to_string(),
                        endpoint_id,
                        v4: a.v4,
                        v6: a.v6,
                    });
                }
            }
            cleanup.veths.push(a.host_veth);
        }
        cleanup
    }

    /// Rewrite /etc/netns/NAME/{resolv.conf,hosts} of an agent-made namespace.
    fn refresh_etc(&self, state: &State, cid: &str) {
        let Some(c) = state.containers.get(cid) else {
            return;
        };
        let Some(name) = c.netns_name() else { return };
        let mut servers = Vec::new();
        let mut own = Vec::new();
        for e in &c.endpoints {
            if let (Some(a), Some(n)) = (&e.attached, state.networks.get(&e.network_id)) {
                servers.push(n.v4.gateway);
                own.push(IpAddr::V4(a.v4));
                if let (Some(v6), Some(p)) = (a.v6, &n.v6) {
                    servers.push(p.gateway);
                    own.push(IpAddr::V6(v6));
                }
            }
        }
        if let Err(e) = netns::write_etc(name, &servers, &c.hostname, &own) {
            tracing::warn!(container = %c.name, error = %e, "cannot write /etc/netns files");
        }
    }

    // ---- containers -------------------------------------------------------------------

    /// Create a container (its namespace too, unless one is given). Returns its id.
    pub async fn create_container(&self, req: ContainerCreate) -> Result<String> {
        let mut state = self.inner.state.lock().await;
        let id = random_id();
        let name = match &req.name {
            Some(n) => {
                let n = n.trim_start_matches('/').to_string();
                check_name(&n)?;
                n
            }
            None => crate::names::generate(|n| state.containers.values().any(|c| c.name == n)),
        };
        if let Some(other) = state.containers.values().find(|c| c.name == name) {
            return Err(AgentError::ContainerExists {
                name,
                id: other.id.clone(),
            });
        }
        let hostname = match req.hostname.clone().filter(|h| !h.is_empty()) {
            Some(h) => {
                check_hostname(&h)?;
                h
            }
            None => id[..12].to_string(),
        };
        let mut endpoints = Vec::new();
        for (key, ereq) in &req.networks {
            let net_id = find_network(&state, key)?;
            if endpoints.iter().any(|e: &Endpoint| e.network_id == net_id) {
                continue;
            }
            let cfg = check_endpoint(ereq, &state.networks[&net_id])?;
            endpoints.push(Endpoint {
                network_id: net_id,
                endpoint_id: random_id(),
                aliases: cfg.aliases,
                links: cfg.links,
                static_v4: cfg.v4,
                static_v6: cfg.v6,
                link_local: cfg.link_local,
                attached: None,
            });
        }
        let (netns, owns_netns) = match &req.netns {
            Some(p) => {
                if !netns::is_netns(p) {
                    return Err(AgentError::Invalid(format!(
                        "{} is not a network namespace",
                        p.display()
                    )));
                }
                (p.clone(), false)
            }
            None => {
                let p = netns::create_named(&name)
                    .map_err(AgentError::io(format!("creating namespace {name}")))?;
                (p, true)
            }
        };
        let now = now_rfc3339();
        let c = Container {
            id: id.clone(),
            name: name.clone(),
            hostname,
            image: req.image.clone(),
            created: now.clone(),
            netns,
            owns_netns,
            state: RunState::Created,
            state_since: now,
            labels: req.labels.clone(),
            endpoints,
        };
        state.containers.insert(id.clone(), c);
        if let Err(e) = self.persist(&state, &[Changed::Container(&id)]) {
            state.containers.remove(&id);
            if owns_netns {
                let _ = netns::remove_named(&name);
            }
            return Err(e);
        }
        Ok(id)
    }

    /// Start: attach every configured network in order; any failure leaves it stopped with
    /// nothing attached.
    pub async fn start(&self, key: &str) -> Result<()> {
        let mut state = self.inner.state.lock().await;
        let cid = find_container(&state, key)?;
        if state.containers[&cid].state.is_up() {
            return Ok(());
        }
        self.ensure_netns(&state.containers[&cid])?;
        let nets: Vec<String> = state.containers[&cid]
            .endpoints
            .iter()
            .map(|e| e.network_id.clone())
            .collect();
        let undo = state.undo_point(&cid, &nets);
        for net_id in &nets {
            if let Err(e) = self.attach(&mut state, &cid, net_id).await {
                let mut cleanup = Cleanup::default();
                for n in &nets {
                    cleanup.extend(self.detach(&mut state, &cid, n));
                }
                undo.restore(&mut state);
                drop(state);
                cleanup.run(self).await;
                return Err(e);
            }
        }
        let c = state.containers.get_mut(&cid).expect("found above");
        c.state = RunState::Running;
        c.state_since = now_rfc3339();
        if nets.is_empty() {
            // attach() wrote them otherwise: a container without networks still gets its own
            // (empty) resolv.conf rather than the host's.
            self.refresh_etc(&state, &cid);
        }
        if let Err(e) = self.persist(&state, &[Changed::Container(&cid)]) {
            let mut cleanup = Cleanup::default();
            for n in &nets {
                cleanup.extend(self.detach(&mut state, &cid, n));
            }
            undo.restore(&mut state);
            drop(state);
            cleanup.run(self).await;
            return Err(e);
        }
        Ok(())
    }

    /// A namespace the agent made must exist (it is gone after a reboot).
    fn ensure_netns(&self, c: &Container) -> Result<()> {
        if c.owns_netns && !netns::is_netns(&c.netns) {
            netns::create_named(&c.name)
                .map_err(AgentError::io(format!("creating namespace {}", c.name)))?;
        }
        Ok(())
    }

    /// Stop: records removed, interfaces removed, dynamic addresses freed, settings kept.
    pub async fn stop(&self, key: &str) -> Result<()> {
        let mut state = self.inner.state.lock().await;
        let cid = find_container(&state, key)?;
        let cleanup = self.stop_locked(&mut state, &cid)?;
        drop(state);
        cleanup.run(self).await;
        Ok(())
    }

    fn stop_locked(&self, state: &mut State, cid: &str) -> Result<Cleanup> {
        let mut cleanup = Cleanup::default();
        if !state.containers[cid].state.is_up() {
            return Ok(cleanup);
        }
        let nets: Vec<String> = state.containers[cid]
            .endpoints
            .iter()
            .map(|e| e.network_id.clone())
            .collect();
        for n in &nets {
            cleanup.extend(self.detach(state, cid, n));
        }
        let c = state.containers.get_mut(cid).expect("container exists");
        c.state = RunState::Exited;
        c.state_since = now_rfc3339();
        self.refresh_etc(state, cid);
        self.persist(state, &[Changed::Container(cid)])?;
        Ok(cleanup)
    }

    pub async fn restart(&self, key: &str) -> Result<()> {
        self.stop(key).await?;
        self.start(key).await
    }

    /// Pause/unpause: nothing changes in DNS or addressing.
    pub async fn pause(&self, key: &str, pause: bool) -> Result<()> {
        let mut state = self.inner.state.lock().await;
        let cid = find_container(&state, key)?;
        let c = state.containers.get_mut(&cid).expect("found above");
        match (pause, c.state) {
            (true, RunState::Running) => c.state = RunState::Paused,
            (true, RunState::Paused) => {}
            (true, _) => return Err(AgentError::NotRunning(cid)),
            (false, RunState::Paused) => c.state = RunState::Running,
            (false, _) => return Err(AgentError::NotPaused(cid)),
        }
        self.persist(&state, &[Changed::Container(&cid)])
    }

    /// Remove a container (`force`: stop it first), and its namespace if the agent made it.
    pub async fn remove_container(&self, key: &str, force: bool) -> Result<()> {
        let mut state = self.inner.state.lock().await;
        let cid = find_container(&state, key)?;
        if state.containers[&cid].state.is_up() && !force {
            return Err(AgentError::RemoveRunning(cid));
        }
        let cleanup = self.stop_locked(&mut state, &cid)?;
        let c = state.containers.remove(&cid).expect("found above");
        self.persist(&state, &[Changed::Container(&cid)])?;
        drop(state);
        cleanup.run(self).await;
        if let Some(name) = c.netns_name() {
            if let Err(e) = netns::remove_named(name) {
                tracing::warn!(container = %c.name, error = %e, "cannot remove namespace");
            }
        }
        Ok(())
    }

    // ---- start-up ---------------------------------------------------------------------

    /// Make the kernel and the table match the saved state: bridges adopted or recreated,
    /// veths of running containers adopted when present and recreated with the same addresses
    /// when not, leftovers with our prefix removed.
    async fn reconcile(&self) -> Result<()> {
        let mut state = self.inner.state.lock().await;
        // Global networks are built only where this host has endpoints on them.
        let nets: Vec<Network> = state
            .networks
            .values()
            .filter(|n| {
                !n.is_global()
                    || state.containers.values().any(|c| {
                        c.state.is_up() && c.endpoint(&n.id).is_some_and(|e| e.attached.is_some())
                    })
            })
            .cloned()
            .collect();
        for net in &nets {
            self.bring_up_network(net).await?;
            if net.is_global() {
                state.joined.insert(net.id.clone());
            }
        }
        let ids: Vec<String> = state.containers.keys().cloned().collect();
        let mut keep_veths = Vec::new();
        let mut reattached = Vec::new();
        for cid in &ids {
            let c = state.containers[cid].clone();
            if !c.state.is_up() {
                continue;
            }
            if let Err(e) = self.ensure_netns(&c) {
                tracing::error!(container = %c.name, error = %e, "cannot restore namespace");
                continue;
            }
            for ep in &c.endpoints {
                let Some(a) = &ep.attached else { continue };
                let present = self.inner.host.index_of(&a.host_veth).await?.is_some()
                    && match netns::open(&c.netns) {
                        Ok(ns) => Netlink::inside(&ns)?.index_of(&a.ifname).await?.is_some(),
                        Err(_) => false,
                    };
                if present {
                    keep_veths.push(a.host_veth.clone());
                    let spec = EndpointSpec {
                        network_id: ep.network_id.clone(),
                        container_id: c.id.clone(),
                        container_name: c.name.clone(),
                        hostname: Some(c.hostname.clone()),
                        aliases: ep.aliases.clone(),
                        links: ep.links.clone(),
                        ipv4: Some(a.v4),
                        ipv6: a.v6,
                    };
                    self.inner.dns.table().upsert_endpoint(&spec)?;
                    continue;
                }
                // Gone (reboot, or someone deleted it): recreate with the same addresses.
                tracing::info!(container = %c.name, network = %ep.network_id, "re-attaching");
                reattached.push(cid.clone());
                let _ = self.inner.host.delete_link(&a.host_veth).await;
                let net = state.networks.get_mut(&ep.network_id).expect("network");
                net.release(a.v4, a.v6);
                let e = state
                    .containers
                    .get_mut(cid)
                    .and_then(|c| c.endpoint_mut(&ep.network_id))
                    .expect("endpoint");
                let (sv4, sv6) = (e.static_v4, e.static_v6);
                e.static_v4 = Some(a.v4);
                e.static_v6 = a.v6;
                e.attached = None;
                let r = self.attach(&mut state, cid, &ep.network_id).await;
                let e = state
                    .containers
                    .get_mut(cid)
                    .and_then(|c| c.endpoint_mut(&ep.network_id))
                    .expect("endpoint");
                e.static_v4 = sv4;
                e.static_v6 = sv6;
                match r {
                    Ok(()) => {
                        keep_veths.push(e.attached.as_ref().expect("attached").host_veth.clone())
                    }
                    Err(err) => {
                        tracing::error!(container = %c.name, error = %err, "cannot re-attach")
                    }
                }
            }
        }
        // Leftovers of a crash between kernel work and the state write.
        let prefix = &self.inner.cfg.link_prefix;
        let bridges: Vec<String> = state
            .networks
            .values()
            .filter(|n| !n.is_global() || state.joined.contains(&n.id))
            .flat_map(|n| {
                std::iter::once(n.bridge.clone())
                    .chain(n.is_global().then(|| self.vxlan_name(&n.id)))
            })
            .collect();
        for name in self.inner.host.link_names().await? {
            let ours = name.starts_with(prefix.as_str());
            if ours && !bridges.contains(&name) && !keep_veths.contains(&name) {
                tracing::info!(link = %name, "removing leftover link");
                let _ = self.inner.host.delete_link(&name).await;
            }
        }
        let changed: Vec<Changed> = reattached.iter().map(|c| Changed::Container(c)).collect();
        self.persist(&state, &changed)?;
        Ok(())
    }
}
