use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::request::{check_endpoint, EndpointRequest};
use super::{endpoint_spec, mac_for_endpoint, Agent, Cleanup, Freed, Withdrawn, OVERLAY_MTU};
use crate::error::{AgentError, Result};
use crate::ids::{ContainerId, EndpointId, NetworkId};
use crate::kernel::handles::Inside;
use crate::kernel::netlink::Netlink;
use crate::kernel::netns;
use crate::metrics::Operation;
use crate::state::{Attached, Changed, Container, Endpoint, Network, State};

/// Where an operation's time goes, phase by phase, logged at debug level under the target
/// `attach_agent::timing` (the comparison tool turns it on to print its breakdown). Costs two
/// clock reads a phase when the target is off.
pub(super) struct PhaseTimer {
    last: std::time::Instant,
    laps: [(&'static str, u128); 16],
    taken: usize,
}

impl PhaseTimer {
    fn start() -> PhaseTimer {
        PhaseTimer {
            last: std::time::Instant::now(),
            laps: [("", 0); 16],
            taken: 0,
        }
    }

    fn lap(&mut self, phase: &'static str) {
        let now = std::time::Instant::now();
        if let Some(slot) = self.laps.get_mut(self.taken) {
            *slot = (phase, (now - self.last).as_micros());
            self.taken += 1;
        }
        self.last = now;
    }

    fn report(&self, operation: &str) {
        if tracing::enabled!(target: "attach_agent::timing", tracing::Level::DEBUG) {
            let laps: Vec<String> = self.laps[..self.taken]
                .iter()
                .map(|(p, us)| format!("{p}={us}"))
                .collect();
            tracing::debug!(target: "attach_agent::timing", operation, phases_us = %laps.join(","), "phases");
        }
    }
}

/// Takes a container out of `State::pending` if its connect ends before doing so itself (a
/// panic): otherwise every later operation on it, and every one over all containers, would
/// wait for ever.
struct Unpend {
    agent: Agent,
    cid: Option<ContainerId>,
}

impl Drop for Unpend {
    fn drop(&mut self) {
        if let Some(cid) = self.cid.take() {
            let agent = self.agent.clone();
            tokio::spawn(async move {
                let mut state = agent.inner.state.lock().await;
                tracing::error!(container = %cid, "a connect ended half done; its container is released");
                agent.settle(&mut state, &cid);
            });
        }
    }
}

/// One attachment, decided: see [`Agent::plan_attach`].
pub(crate) struct AttachPlan {
    pub(crate) cid: ContainerId,
    pub(crate) net_id: NetworkId,
    /// A global network's endpoint: its id (claims and the published record name it).
    pub(crate) global: Option<EndpointId>,
    /// Both ends of the veth (an overlay's tunnel header takes 50 bytes).
    mtu: Option<u32>,
    bridge: String,
    /// The network's IPv4 / IPv6 prefix length and gateway, for each family it has.
    v4_pool: Option<(u8, IpAddr)>,
    v6_pool: Option<(u8, IpAddr)>,
    /// `None` on an IPv6-only network.
    pub(crate) v4: Option<Ipv4Addr>,
    pub(crate) v6: Option<Ipv6Addr>,
    link_local: Vec<IpAddr>,
    /// This attachment gives the container its IPv4 / IPv6 default route (`super::gateway`):
    /// it takes it over from whichever endpoint had it.
    route4: bool,
    route6: bool,
    /// The gateways whose default routes this attachment takes over from the container's
    /// other endpoints (empty: none of the agent's had them): a replace, put back if the
    /// attachment fails; without any, an existing default route is kept.
    previous_routes: Vec<IpAddr>,
    /// The container's first attachment in a namespace it was given: `lo` goes up too.
    lo_up: bool,
    host_veth: String,
    ifname: String,
    mac: [u8; 6],
    /// The namespace, and a netlink connection inside it.
    ns: std::sync::Arc<std::fs::File>,
    inside: Netlink,
}

impl Agent {
    /// Connect a container to a network: at once when it runs, at its next start otherwise.
    /// Returns after the records answer (running container).
    ///
    /// Two steps under the state lock, the kernel work and the durable write's flush between
    /// them without it, so that connects of other containers go on meanwhile (only the
    /// kernel's own lock orders their veths): the first decides everything (addresses, names),
    /// records it in the state, writes the container's file and takes its journal record, and
    /// marks the container pending (its other operations wait); the second makes the
    /// attachment answer, or undoes it whole.
    pub async fn connect(&self, net_key: &str, ctr_key: &str, req: &EndpointRequest) -> Result<()> {
        let work = self.connect_uncounted(net_key, ctr_key, req);
        self.counted(Operation::Connect, work).await
    }

    async fn connect_uncounted(
        &self,
        net_key: &str,
        ctr_key: &str,
        req: &EndpointRequest,
    ) -> Result<()> {
        let mut timer = PhaseTimer::start();
        let (mut state, cid) = self.lock_container(ctr_key).await?;
        timer.lap("lock");
        let net_id = state.find_network(net_key)?;
        let net = state.network(&net_id)?;
        let c = state.container(&cid)?;
        if c.endpoint(&net_id).is_some() {
            return Err(AgentError::AlreadyConnected {
                container: c.name.clone(),
                network: net.name.clone(),
            });
        }
        let ep = check_endpoint(req, net)?.into_endpoint(net_id.clone());
        let c = state.container_mut(&cid)?;
        c.endpoints.push(ep);
        let unplanned = |state: &mut State| {
            if let Some(c) = state.containers.get_mut(&cid) {
                c.endpoints.retain(|e| e.network_id != net_id);
            }
        };
        if !c.state.is_up() {
            // Configured only: attached at the next start.
            if let Err(e) = self.persist(&state, &[Changed::Container(&cid)]) {
                unplanned(&mut state);
                return Err(e);
            }
            return Ok(());
        }
        // Running. A crash after the file is written leaves it naming a veth that may not
        // exist: the restart recreates it, as for any missing veth.
        let plan = match self.plan_attach(&mut state, &cid, &net_id).await {
            Ok(plan) => plan,
            Err(e) => {
                unplanned(&mut state);
                return Err(e);
            }
        };
        timer.lap("plan");
        let saving = self
            .mark_attached(&mut state, &plan)
            .and_then(|c| self.start_container_write(c));
        let saving = match saving {
            Ok(saving) => saving,
            Err(e) => {
                self.abandon(&mut state, &plan).await;
                unplanned(&mut state);
                return Err(e);
            }
        };
        state.pending.insert(cid.clone());
        drop(state);
        timer.lap("write");
        // The rest runs to its end even if the caller goes away (a client that hangs up):
        // the container must leave `pending`, and the attachment answer or be undone.
        let agent = self.clone();
        let unpend = Unpend {
            agent: self.clone(),
            cid: Some(cid.clone()),
        };
        tokio::spawn(async move { agent.finish_connect(plan, saving, timer, unpend).await })
            .await
            .map_err(|e| AgentError::Invalid(format!("connect failed: {e}")))?
    }

    /// A connect's kernel work and the rest of its durable write (no lock held), then its
    /// second locked step: see [`Agent::connect`].
    async fn finish_connect(
        &self,
        plan: AttachPlan,
        saving: impl std::future::Future<Output = Result<()>>,
        mut timer: PhaseTimer,
        mut unpend: Unpend,
    ) -> Result<()> {
        timer.lap("spawn");
        let plumbed = self.plumb(&plan, &mut timer).await;
        let saved = saving.await;
        timer.lap("save");
        let mut state = self.inner.state.lock().await;
        let cid = plan.cid.clone();
        unpend.cid = None;
        self.settle(&mut state, &cid);
        let committed = plumbed
            .and(saved)
            .and_then(|()| self.commit_attach(&mut state, &plan));
        timer.lap("commit");
        timer.report("connect");
        if let Err(e) = committed {
            self.abandon(&mut state, &plan).await;
            if let Some(c) = state.containers.get_mut(&cid) {
                c.endpoints.retain(|e| e.network_id != plan.net_id);
            }
            if let Err(e) = self.persist(&state, &[Changed::Container(&cid)]) {
                tracing::error!(container = %cid, error = %e, "cannot write back a failed connect");
            }
            return Err(e);
        }
        self.inner.changes.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Disconnect: records gone, interface removed, dynamic address freed.
    pub async fn disconnect(&self, net_key: &str, ctr_key: &str, force: bool) -> Result<()> {
        let work = self.disconnect_uncounted(net_key, ctr_key, force);
        self.counted(Operation::Disconnect, work).await
    }

    async fn disconnect_uncounted(&self, net_key: &str, ctr_key: &str, force: bool) -> Result<()> {
        // Once the container (if there is one) has no connect half done.
        let mut state = loop {
            let state = self.inner.state.lock().await;
            if force && !state.pending.is_empty() && state.find_network(net_key).is_err() {
                // --force on a network that is gone changes every container (below): once no
                // connect of any is half done.
                drop(state);
                break self.lock_settled().await;
            }
            match state.find_container(ctr_key) {
                Ok(cid) if state.pending.contains(&cid) => self.until_settled(state).await,
                _ => break state,
            }
        };
        let net_id = match state.find_network(net_key) {
            Ok(id) => id,
            Err(AgentError::NoSuchNetwork(_)) if force => {
                // --force: clear what is left of a network that is gone. (A rare repair over
                // every container: the copy for the undo is affordable here.)
                let before = state.clone();
                let (cleanup, changed) =
                    self.forget_endpoints(&mut state, |_, e| *e.network_id == *net_key);
                let changed: Vec<Changed> = changed.iter().map(Changed::Container).collect();
                if let Err(e) = self.persist(&state, &changed) {
                    *state = before;
                    // Files written before the one that failed get their old content back.
                    if let Err(again) = self.persist(&state, &changed) {
                        tracing::error!(error = %again, "cannot write back a failed disconnect");
                    }
                    return Err(e);
                }
                cleanup.run(self, state).await;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let cid = match state.find_container(ctr_key) {
            Ok(id) => id,
            Err(AgentError::NoSuchContainer(_)) if force => {
                self.inner
                    .dns
                    .table()
                    .remove_endpoint(net_id.as_str(), ctr_key);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if state.container(&cid)?.endpoint(&net_id).is_none() {
            return Err(AgentError::NotConnected {
                container: cid.to_string(),
                network: state.network(&net_id)?.name.clone(),
            });
        }
        let undo = state.undo_point(&cid, &[]);
        let moved = self.gateways_moving(&state, &cid, &net_id);
        let cleanup = self.detach(&mut state, &cid, &net_id);
        state
            .container_mut(&cid)?
            .endpoints
            .retain(|e| e.network_id != net_id);
        if let Err(e) = self.persist(&state, &[Changed::Container(&cid)]) {
            undo.restore(&mut state);
            return Err(e);
        }
        self.refresh_etc(&state, &cid);
        if !moved.is_empty() {
            // Before the veth goes (and its routes with it): the default routes move to the
            // next network in line, as Docker moves them.
            let c = state.container(&cid)?;
            if let Err(e) = self.reroute(&c.netns, c.owns_netns, &moved).await {
                tracing::error!(container = %c.name, error = %e, "cannot move the default route to the next network");
            }
        }
        cleanup.run(self, state).await;
        Ok(())
    }

    /// The gateways that take over container `cid`'s default routes when its endpoint on
    /// `leaving` goes, for the families that endpoint gives them (none when it gives none, or
    /// the container is not running).
    fn gateways_moving(
        &self,
        state: &State,
        cid: &ContainerId,
        leaving: &NetworkId,
    ) -> Vec<(IpAddr, IpAddr)> {
        let Ok(c) = state.container(cid) else {
            return vec![];
        };
        if !c.state.is_up() {
            return vec![];
        }
        let before = super::gateway::Gateways::of(c, state, None, None);
        let after = super::gateway::Gateways::of(c, state, None, Some(leaving));
        let Some(gone) = state.networks.get(leaving) else {
            return vec![];
        };
        let mut moved = Vec::new();
        for v6 in [false, true] {
            let (was, next) = if v6 {
                (before.v6.as_ref(), after.v6.as_ref())
            } else {
                (before.v4.as_ref(), after.v4.as_ref())
            };
            if was != Some(leaving) {
                continue;
            }
            let gateway = |n: &Network| {
                let pool = if v6 { n.v6.as_ref() } else { n.v4.as_ref() };
                pool.map(|p| p.gateway)
            };
            let next = next.and_then(|id| state.networks.get(id)).and_then(gateway);
            if let (Some(next), Some(old)) = (next, gateway(gone)) {
                moved.push((next, old));
            }
        }
        moved
    }

    /// Point a running container's default routes at the new gateways of `moved` (new, old),
    /// where they still go via the old one (a route another plugin holds stays).
    async fn reroute(
        &self,
        netns: &std::path::Path,
        owned: bool,
        moved: &[(IpAddr, IpAddr)],
    ) -> Result<()> {
        let inside = match self.inner.insides.get(netns) {
            Some(kept) => kept.netlink,
            None => {
                let opened = self.open_namespace(netns)?;
                if owned {
                    self.inner.insides.keep(netns, opened.clone());
                }
                opened.netlink
            }
        };
        for (new, old) in moved {
            inside.move_default_route(*new, &[*old]).await?;
        }
        Ok(())
    }

    pub(super) fn forget_endpoints(
        &self,
        state: &mut State,
        pred: impl Fn(&Container, &Endpoint) -> bool,
    ) -> (Cleanup, Vec<ContainerId>) {
        let mut cleanup = Cleanup::default();
        let mut changed = Vec::new();
        for c in state.containers.values_mut() {
            let cid = c.id.clone();
            let gone: Vec<Endpoint> = c.endpoints.iter().filter(|e| pred(c, e)).cloned().collect();
            if !gone.is_empty() {
                changed.push(cid.clone());
            }
            for e in gone {
                cleanup.records.push((e.network_id.clone(), cid.clone()));
                if let Some(a) = &e.attached {
                    cleanup.veths.push(a.host_veth.clone());
                    if self.inner.cluster.is_some() {
                        // Maybe a global network's: withdrawing what is not there is harmless.
                        cleanup.leave.push(e.network_id.clone());
                        cleanup.withdrawn.push(Withdrawn {
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
    pub(super) async fn attach(
        &self,
        state: &mut State,
        cid: &ContainerId,
        net_id: &NetworkId,
    ) -> Result<()> {
        let plan = self.plan_attach(state, cid, net_id).await?;
        let done = match self.plumb(&plan, &mut PhaseTimer::start()).await {
            Ok(()) => match self.mark_attached(state, &plan) {
                Ok(_) => self.commit_attach(state, &plan),
                Err(e) => Err(e),
            },
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
    pub(super) async fn plan_attach(
        &self,
        state: &mut State,
        cid: &ContainerId,
        net_id: &NetworkId,
    ) -> Result<AttachPlan> {
        let c = state.container(cid)?;
        let ep = c.endpoint(net_id).ok_or_else(|| AgentError::NotConnected {
            container: c.name.clone(),
            network: net_id.to_string(),
        })?;
        let (static_v4, static_v6) = (ep.static_v4, ep.static_v6);
        let endpoint_id = ep.endpoint_id.clone();
        let link_local = ep.link_local.clone();
        let (want_ifname, want_mac) = (ep.ifname.clone(), ep.mac);
        // The first attachment in connect order brings `lo` up in a namespace it was given
        // (also when one after it is attached, as when this one is attached again after its
        // veth was deleted).
        let first = !c
            .endpoints
            .iter()
            .take_while(|e| e.network_id != *net_id)
            .any(|e| e.attached.is_some());
        let lo_up = first && !c.owns_netns;
        let gateways = super::gateway::Gateways::of(c, state, Some(net_id), None);
        let (route4, route6) = (
            gateways.v4.as_ref() == Some(net_id),
            gateways.v6.as_ref() == Some(net_id),
        );
        // Who gives the routes now: taken over from another of the agent's endpoints (a route
        // replace, and given back if this attachment fails), or none of ours (a route already
        // there, as another CNI plugin's in a runtime's namespace, is kept).
        let before = super::gateway::Gateways::of(c, state, None, Some(net_id));
        let gateway_of = |id: Option<&NetworkId>, v6: bool| {
            let net = state.networks.get(id?)?;
            let pool = if v6 { net.v6.as_ref() } else { net.v4.as_ref() };
            pool.map(|p| p.gateway)
        };
        let mut previous_routes = Vec::new();
        if route4 {
            previous_routes.extend(gateway_of(before.v4.as_ref(), false));
        }
        if route6 {
            previous_routes.extend(gateway_of(before.v6.as_ref(), true));
        }
        // Interface names other endpoints of the container asked for are not handed out.
        let reserved: Vec<String> = c
            .endpoints
            .iter()
            .filter(|e| e.network_id != *net_id)
            .filter_map(|e| e.ifname.clone())
            .collect();
        let netns_path = c.netns.clone();
        // The namespace first (a missing one fails before any address is taken).
        let (ns, inside, ifname) = self
            .open_inside(&netns_path, c.owns_netns, want_ifname, &reserved)
            .await?;
        let global = state.network(net_id)?.is_global();
        if global && want_mac.is_some() {
            // Other hosts believe an overlay endpoint only with Docker's MAC for its address:
            // their tunnel entries are keyed by it.
            return Err(AgentError::Invalid(format!(
                "a MAC address cannot be chosen on global network {}: it is derived from the IPv4 address",
                state.network(net_id)?.name
            )));
        }
        let (v4, v6) = if global {
            self.join_network(state, net_id).await?;
            let claimed = self
                .claim_addresses(state, cid, net_id, &endpoint_id, static_v4, static_v6)
                .await;
            if claimed.is_err() {
                self.leave_if_idle(state, net_id).await;
            }
            claimed.map(|(v4, v6)| (Some(v4), v6))?
        } else {
            Self::allocate_local(state, net_id, static_v4, static_v6)?
        };
        let net = state.network(net_id)?;
        let mac = mac_for_endpoint(v4, &endpoint_id);
        Ok(AttachPlan {
            cid: cid.clone(),
            net_id: net_id.clone(),
            global: global.then_some(endpoint_id),
            mtu: global.then_some(OVERLAY_MTU),
            bridge: net.bridge.clone(),
            v4_pool: net.v4.as_ref().map(|p| (p.prefix_len(), p.gateway)),
            v6_pool: net.v6.as_ref().map(|p| (p.prefix_len(), p.gateway)),
            v4,
            v6,
            link_local,
            route4,
            route6,
            previous_routes,
            lo_up,
            host_veth: self.veth_name(),
            ifname,
            mac: want_mac.unwrap_or(mac),
            ns,
            inside,
        })
    }

    /// Addresses from a local network's pools (static ones reserved, else the lowest free).
    pub(super) fn allocate_local(
        state: &mut State,
        net_id: &NetworkId,
        static_v4: Option<Ipv4Addr>,
        static_v6: Option<Ipv6Addr>,
    ) -> Result<(Option<Ipv4Addr>, Option<Ipv6Addr>)> {
        let net = state.network_mut(net_id)?;
        let what = format!("{} ({})", net.name, net.id);
        let v4 = match (&mut net.v4, static_v4) {
            (Some(pool), Some(ip)) => {
                pool.reserve(IpAddr::V4(ip))?;
                Some(ip)
            }
            (Some(pool), None) => Some(pool.allocate_v4(&what)?),
            // An IPv6-only network (a static IPv4 address was refused by check_endpoint).
            (None, _) => None,
        };
        let v6 = match (&mut net.v6, static_v6) {
            (Some(pool), Some(ip)) => pool.reserve(IpAddr::V6(ip)).map(|()| Some(ip)),
            (Some(pool), None) => pool.allocate_v6(&what).map(Some),
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
    /// free `ethN` there (or `wanted`, which must be free). Kept for the next operation when
    /// the agent made the namespace (`owned`).
    pub(super) async fn open_inside(
        &self,
        path: &std::path::Path,
        owned: bool,
        wanted: Option<String>,
        reserved: &[String],
    ) -> Result<(std::sync::Arc<std::fs::File>, Netlink, String)> {
        let (ns, inside) = match self.inner.insides.get(path) {
            Some(kept) => (kept.ns, kept.netlink),
            None => {
                let kept = self.open_namespace(path)?;
                if owned {
                    self.inner.insides.keep(path, kept.clone());
                }
                (kept.ns, kept.netlink)
            }
        };
        let present = inside.link_names().await?;
        if let Some(name) = wanted {
            if present.contains(&name) {
                return Err(AgentError::Invalid(format!(
                    "interface {name} already exists in {}",
                    path.display()
                )));
            }
            return Ok((ns, inside, name));
        }
        // The names in use are finitely many, so one of eth0, eth1, … is free.
        let ifname = (0..)
            .map(|i| format!("eth{i}"))
            .find(|n| !present.contains(n) && !reserved.contains(n))
            .expect("a finite set of names leaves some ethN free");
        Ok((ns, inside, ifname))
    }

    /// A namespace opened afresh (the host's own refused), with a netlink connection in it.
    pub(super) fn open_namespace(&self, path: &std::path::Path) -> Result<Inside> {
        let ns = netns::open(path).map_err(AgentError::io(format!(
            "network namespace {}",
            path.display()
        )))?;
        let inside = Netlink::inside(&ns)?;
        Inside::new(ns, inside).map_err(AgentError::io(format!(
            "network namespace {}",
            path.display()
        )))
    }

    /// The index of bridge `name`, asked of the kernel and kept.
    async fn bridge_index(&self, name: &str) -> Result<u32> {
        let index = self
            .inner
            .host
            .index_of(name)
            .await?
            .ok_or_else(|| crate::kernel::netlink::NetlinkError::NoLink(name.to_string()))?;
        self.inner.bridges.set(name, index);
        Ok(index)
    }

    /// The kernel part of attaching: veth into the namespace, addresses, routes.
    pub(super) async fn plumb(&self, plan: &AttachPlan, timer: &mut PhaseTimer) -> Result<()> {
        let (ns, inside) = (&plan.ns, &plan.inside);
        let known = self.inner.bridges.get(&plan.bridge);
        let bridge = match known {
            Some(index) => index,
            None => self.bridge_index(&plan.bridge).await?,
        };
        timer.lap("bridge");
        let add_veth = |bridge| {
            self.inner.host.add_veth(
                &plan.host_veth,
                bridge,
                ns,
                &plan.ifname,
                plan.mac,
                plan.mtu,
                &self.inner.mark,
            )
        };
        match add_veth(bridge).await {
            // An index learnt before its bridge was made again (the deletion's event may still
            // be on its way): asked afresh, once.
            // (EINVAL: no such controller; the create is undone whole.)
            Err(e) if known.is_some() && matches!(e.errno(), Some(libc::EINVAL | libc::ENODEV)) => {
                self.inner.bridges.forget(&plan.bridge);
                add_veth(self.bridge_index(&plan.bridge).await?).await?;
            }
            done => done?,
        }
        timer.lap("veth");
        let index = inside
            .index_of(&plan.ifname)
            .await?
            .ok_or_else(|| crate::kernel::netlink::NetlinkError::NoLink(plan.ifname.clone()))?;
        timer.lap("peer");
        if let (Some(ip), Some((prefix, _))) = (plan.v4, plan.v4_pool) {
            inside.add_address(index, IpAddr::V4(ip), prefix).await?;
        }
        if let (Some(ip), Some((prefix, _))) = (plan.v6, plan.v6_pool) {
            inside.add_address(index, IpAddr::V6(ip), prefix).await?;
        }
        for ll in &plan.link_local {
            let prefix = if ll.is_ipv4() { 16 } else { 64 };
            inside.add_address(index, *ll, prefix).await?;
        }
        // An interface with no IPv6 address of its own gets no link-local one either
        // (`Netlink::without_ipv6_link_local`: no multicast for the bridge to flood).
        if plan.v6.is_none() && !plan.link_local.iter().any(IpAddr::is_ipv6) {
            inside.without_ipv6_link_local(index).await?;
        }
        timer.lap("addr");
        inside.set_up(index).await?;
        timer.lap("up");
        // The agent brings `lo` up when it makes a namespace; one it was given may have it down.
        if plan.lo_up {
            if let Some(lo) = inside.index_of("lo").await? {
                inside.set_up(lo).await?;
            }
        }
        let route = |gw: IpAddr| async move {
            if plan
                .previous_routes
                .iter()
                .any(|g| g.is_ipv4() == gw.is_ipv4())
            {
                // Taken over from another of the agent's endpoints, if the route is still
                // theirs (one another plugin set stays).
                inside.move_default_route(gw, &plan.previous_routes).await
            } else {
                inside.add_default_route(gw).await
            }
        };
        if let (true, Some(_), Some((_, gw))) = (plan.route4, plan.v4, plan.v4_pool) {
            route(gw).await?;
        }
        if let (true, Some(_), Some((_, gw))) = (plan.route6, plan.v6, plan.v6_pool) {
            route(gw).await?;
        }
        timer.lap("route");
        self.mark_soon(&plan.host_veth);
        Ok(())
    }

    /// Set the agent's alias on host veth `name` once the operation that made it has had its
    /// turn: a request of its own (the kernel takes no alias at creation), kept off the
    /// connect's path. Nothing depends on it being there at once: the veth carries the
    /// agent's group from its creation, and the sweep takes either for the agent's mark.
    fn mark_soon(&self, name: &str) {
        let (host, mark, name) = (
            self.inner.host.clone(),
            self.inner.mark.clone(),
            name.to_string(),
        );
        // Spawned, so it runs when the connect's task next waits (its durable write's flush)
        // or after its reply, not before the requests the connect still has to make.
        tokio::spawn(async move {
            match host.set_mark(&name, &mark).await {
                // Disconnected meanwhile.
                Err(e) if e.errno() == Some(libc::ENODEV) => {}
                Err(e) => tracing::warn!(veth = %name, error = %e, "cannot mark a veth"),
                Ok(()) => {}
            }
        });
    }

    /// Record the planned attachment on the endpoint (before or after the kernel work).
    /// The container, as it is to be saved.
    pub(super) fn mark_attached<'s>(
        &self,
        state: &'s mut State,
        plan: &AttachPlan,
    ) -> Result<&'s Container> {
        state.endpoint_mut(&plan.cid, &plan.net_id)?.attached = Some(Attached {
            ifname: plan.ifname.clone(),
            host_veth: plan.host_veth.clone(),
            mac: plan.mac,
            v4: plan.v4,
            v6: plan.v6,
        });
        state.container(&plan.cid)
    }

    /// Make the attachment visible: its names answer from the next query on, and the
    /// container's /etc/netns files name the new gateway.
    pub(super) fn commit_attach(&self, state: &mut State, plan: &AttachPlan) -> Result<()> {
        let c = state.container(&plan.cid)?;
        let ep = c
            .endpoint(&plan.net_id)
            .ok_or_else(|| AgentError::NotConnected {
                container: c.name.clone(),
                network: plan.net_id.to_string(),
            })?;
        let spec = endpoint_spec(c, ep, plan.v4, plan.v6);
        self.inner.dns.table().upsert_endpoint(&spec)?;
        self.register_servers(c);
        self.refresh_etc(state, &plan.cid);
        Ok(())
    }

    /// Tell the DNS server where container `c`'s names that are not local go (its `--dns`),
    /// once it has a record there.
    pub(super) fn register_servers(&self, c: &Container) {
        if !c.dns.servers.is_empty() {
            let servers: Vec<std::net::SocketAddr> = c
                .dns
                .servers
                .iter()
                .map(|ip| std::net::SocketAddr::new(*ip, 53))
                .collect();
            self.inner
                .dns
                .table()
                .set_container_servers(c.id.as_str(), &servers);
        }
    }

    /// Undo a planned attachment whose kernel work or registration failed.
    pub(super) async fn abandon(&self, state: &mut State, plan: &AttachPlan) {
        if let Ok(ep) = state.endpoint_mut(&plan.cid, &plan.net_id) {
            ep.attached = None;
        }
        // The addresses are free once the veth that may hold them is gone (kept taken when it
        // cannot be deleted, as in `Cleanup::run`).
        match self.inner.host.delete_link(&plan.host_veth).await {
            Ok(()) => {
                if let Some(n) = state.networks.get_mut(&plan.net_id) {
                    n.release(plan.v4, plan.v6);
                }
                // The routes it took over went with it: back to the endpoints that had them
                // (a route another plugin holds stays as it is).
                for gw in &plan.previous_routes {
                    if let Err(e) = plan
                        .inside
                        .move_default_route(*gw, &plan.previous_routes)
                        .await
                    {
                        tracing::error!(gateway = %gw, error = %e, "cannot give the default route back after a failed attachment");
                    }
                }
            }
            Err(e) => {
                tracing::error!(veth = %plan.host_veth, error = %e, "cannot delete the veth of a failed attachment; its addresses stay taken");
            }
        }
        self.release_plan(plan).await;
        self.leave_if_idle(state, &plan.net_id).await;
    }

    /// End an attachment in the state; its records, veth and addresses go in the cleanup,
    /// for when the change is on disk.
    pub(super) fn detach(
        &self,
        state: &mut State,
        cid: &ContainerId,
        net_id: &NetworkId,
    ) -> Cleanup {
        let mut cleanup = Cleanup::default();
        cleanup.records.push((net_id.clone(), cid.clone()));
        let Some(c) = state.containers.get_mut(cid) else {
            return cleanup;
        };
        let Some(ep) = c.endpoint_mut(net_id) else {
            return cleanup;
        };
        let endpoint_id = ep.endpoint_id.clone();
        if let Some(a) = ep.attached.take() {
            if let Some(n) = state.networks.get(net_id) {
                cleanup.freed.push(Freed {
                    network_id: net_id.clone(),
                    v4: a.v4,
                    v6: a.v6,
                    veth: Some(a.host_veth.clone()),
                });
                if n.is_global() {
                    cleanup.leave.push(net_id.clone());
                    cleanup.withdrawn.push(Withdrawn {
                        network_id: net_id.clone(),
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
}
