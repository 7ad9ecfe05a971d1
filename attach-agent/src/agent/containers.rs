use std::net::IpAddr;

use super::request::{
    check_endpoint, check_hostname, check_name, ContainerCreate, EndpointRequest,
};
use super::{Agent, Cleanup};
use crate::clock::now_rfc3339;
use crate::error::{AgentError, Result};
use crate::ids::{ContainerId, NetworkId};
use crate::kernel::netns;
use crate::metrics::Operation;
use crate::state::{Changed, Container, Endpoint, RunState, State};

impl Agent {
    /// Create a container (its namespace too, unless one is given). Returns its id.
    pub async fn create_container(&self, req: ContainerCreate) -> Result<ContainerId> {
        let mut state = self.inner.state.lock().await;
        let id = ContainerId::random();
        let name = container_name(&state, req.name.as_deref())?;
        let hostname = match req.hostname.clone().filter(|h| !h.is_empty()) {
            Some(h) => {
                check_hostname(&h)?;
                h
            }
            None => id.short().to_string(),
        };
        let endpoints = configured_endpoints(&state, &req.networks)?;
        let dns = super::request::check_container_dns(&req.dns)?;
        // Last: the only step with an effect outside memory.
        let (netns, owns_netns) = match &req.netns {
            Some(p) => {
                if !netns::is_netns(p) {
                    return Err(AgentError::Invalid(format!(
                        "{} is not a network namespace",
                        p.display()
                    )));
                }
                if netns::is_host_netns(p) {
                    return Err(AgentError::Invalid(format!(
                        "{} is the host's own network namespace",
                        p.display()
                    )));
                }
                (p.clone(), false)
            }
            None => {
                let p = netns::create_named(&name).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::AlreadyExists {
                        AgentError::Invalid(e.to_string())
                    } else {
                        AgentError::io(format!("creating namespace {name}"))(e)
                    }
                })?;
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
            cni: None,
            dns,
        };
        let netns_path = c.netns.clone();
        state.containers.insert(id.clone(), c);
        if let Err(e) = self.persist(&state, &[Changed::Container(&id)]) {
            state.containers.remove(&id);
            if owns_netns {
                let _ = netns::remove_named(&name);
            }
            return Err(e);
        }
        if owns_netns {
            // Its socket now, kept until the container is removed: its connects find it open.
            match self.open_namespace(&netns_path) {
                Ok(inside) => self.inner.insides.keep(&netns_path, inside),
                Err(e) => {
                    tracing::debug!(container = %name, error = %e, "no socket kept in the namespace")
                }
            }
        }
        Ok(id)
    }

    /// Start: attach every configured network in order; any failure leaves it stopped with
    /// nothing attached.
    pub async fn start(&self, key: &str) -> Result<()> {
        self.counted(Operation::Start, self.start_uncounted(key))
            .await
    }

    async fn start_uncounted(&self, key: &str) -> Result<()> {
        let (mut state, cid) = self.lock_container(key).await?;
        if state.container(&cid)?.state.is_up() {
            return Ok(());
        }
        self.ensure_netns(state.container(&cid)?)?;
        let nets: Vec<NetworkId> = state
            .container(&cid)?
            .endpoints
            .iter()
            .map(|e| e.network_id.clone())
            .collect();
        // The container only: what attach took from the networks' pools comes back through
        // the detach below (after the veths are gone), not by restoring copies of the pools.
        let undo = state.undo_point(&cid, &[]);
        let mut started = Ok(());
        for net_id in &nets {
            started = self.attach(&mut state, &cid, net_id).await;
            if started.is_err() {
                break;
            }
        }
        if started.is_ok() {
            let c = state.container_mut(&cid)?;
            c.state = RunState::Running;
            c.state_since = now_rfc3339();
            if nets.is_empty() {
                // attach() wrote them otherwise: a container without networks still gets its
                // own (empty) resolv.conf rather than the host's.
                self.refresh_etc(&state, &cid);
            }
            started = self.persist(&state, &[Changed::Container(&cid)]);
        }
        // Anything failed: nothing stays attached, and the container is as it was.
        if let Err(e) = started {
            let mut cleanup = Cleanup::default();
            for n in &nets {
                cleanup.extend(self.detach(&mut state, &cid, n));
            }
            undo.restore(&mut state);
            self.refresh_etc(&state, &cid);
            cleanup.run(self, state).await;
            return Err(e);
        }
        Ok(())
    }

    /// A namespace the agent made must exist (it is gone after a reboot).
    pub(super) fn ensure_netns(&self, c: &Container) -> Result<()> {
        if c.owns_netns && !netns::is_netns(&c.netns) {
            netns::create_named(&c.name)
                .map_err(AgentError::io(format!("creating namespace {}", c.name)))?;
        }
        Ok(())
    }

    /// Stop: records removed, interfaces removed, dynamic addresses freed, settings kept.
    pub async fn stop(&self, key: &str) -> Result<()> {
        self.counted(Operation::Stop, self.stop_uncounted(key))
            .await
    }

    async fn stop_uncounted(&self, key: &str) -> Result<()> {
        let (mut state, cid) = self.lock_container(key).await?;
        let undo = state.undo_point(&cid, &[]);
        let cleanup = self.stop_in_memory(&mut state, &cid)?;
        if let Err(e) = self.persist(&state, &[Changed::Container(&cid)]) {
            undo.restore(&mut state);
            return Err(e);
        }
        self.refresh_etc(&state, &cid);
        cleanup.run(self, state).await;
        Ok(())
    }

    /// Stop in the state only: the caller saves, then runs the cleanup (or restores).
    fn stop_in_memory(&self, state: &mut State, cid: &ContainerId) -> Result<Cleanup> {
        let mut cleanup = Cleanup::default();
        if !state.container(cid)?.state.is_up() {
            return Ok(cleanup);
        }
        let nets: Vec<NetworkId> = state
            .container(cid)?
            .endpoints
            .iter()
            .map(|e| e.network_id.clone())
            .collect();
        for n in &nets {
            cleanup.extend(self.detach(state, cid, n));
        }
        let c = state.container_mut(cid)?;
        c.state = RunState::Exited;
        c.state_since = now_rfc3339();
        Ok(cleanup)
    }

    pub async fn restart(&self, key: &str) -> Result<()> {
        self.stop(key).await?;
        self.start(key).await
    }

    /// Pause/unpause: nothing changes in DNS or addressing.
    pub async fn pause(&self, key: &str, pause: bool) -> Result<()> {
        let (mut state, cid) = self.lock_container(key).await?;
        let c = state.container_mut(&cid)?;
        let was = c.state;
        match (pause, was) {
            (true, RunState::Running) => c.state = RunState::Paused,
            (true, RunState::Paused) => return Ok(()),
            (true, _) => return Err(AgentError::NotRunning(cid.to_string())),
            (false, RunState::Paused) => c.state = RunState::Running,
            (false, _) => return Err(AgentError::NotPaused(cid.to_string())),
        }
        let saved = self.persist(&state, &[Changed::Container(&cid)]);
        if saved.is_err() {
            state.container_mut(&cid)?.state = was;
        }
        saved
    }

    /// Remove a container (`force`: stop it first), and its namespace if the agent made it.
    pub async fn remove_container(&self, key: &str, force: bool) -> Result<()> {
        let (mut state, cid) = self.lock_container(key).await?;
        if state.container(&cid)?.state.is_up() && !force {
            return Err(AgentError::RemoveRunning(cid.to_string()));
        }
        let undo = state.undo_point(&cid, &[]);
        let cleanup = self.stop_in_memory(&mut state, &cid)?;
        let c = state
            .containers
            .remove(&cid)
            .ok_or_else(|| AgentError::NoSuchContainer(cid.to_string()))?;
        if let Err(e) = self.persist(&state, &[Changed::Container(&cid)]) {
            undo.restore(&mut state);
            return Err(e);
        }
        // Before any await: a caller that goes away must not leave the namespace held.
        self.inner.insides.forget(&c.netns);
        cleanup.run(self, state).await;
        if let Some(name) = c.netns_name() {
            if let Err(e) = netns::remove_named(name) {
                tracing::warn!(container = %c.name, error = %e, "cannot remove namespace");
            }
        }
        Ok(())
    }

    /// Rewrite /etc/netns/NAME/{resolv.conf,hosts} of an agent-made namespace.
    pub(super) fn refresh_etc(&self, state: &State, cid: &ContainerId) {
        let Some(c) = state.containers.get(cid) else {
            return;
        };
        let Some(name) = c.netns_name() else { return };
        let mut servers = Vec::new();
        let mut own = Vec::new();
        for e in &c.endpoints {
            if let (Some(a), Some(n)) = (&e.attached, state.networks.get(&e.network_id)) {
                if let (Some(v4), Some(p)) = (a.v4, &n.v4) {
                    servers.push(p.gateway);
                    own.push(IpAddr::V4(v4));
                }
                if let (Some(v6), Some(p)) = (a.v6, &n.v6) {
                    servers.push(p.gateway);
                    own.push(IpAddr::V6(v6));
                }
            }
        }
        // host-gateway: the configured host address (IPv4 first), else the gateway of the
        // container's first attached network (Docker: its default bridge's gateway).
        let configured = &self.config().dns.host_address;
        let host_gateway = configured
            .iter()
            .find(|a| a.is_ipv4())
            .or(configured.first())
            .copied()
            .or(servers.first().copied());
        let hosts = c
            .dns
            .extra_hosts
            .iter()
            .filter_map(|h| Some((h.ip.or(host_gateway)?, h.name.as_str())))
            .collect();
        let extras = netns::EtcExtras {
            search: &c.dns.search,
            options: &c.dns.options,
            hosts,
        };
        if let Err(e) = netns::write_etc(name, &servers, &c.hostname, &own, &extras) {
            tracing::warn!(container = %c.name, error = %e, "cannot write /etc/netns files");
        }
    }
}

/// The name of a new container: the one asked for (a leading `/` dropped, as the Engine
/// does), or a generated one; either must be free.
fn container_name(state: &State, asked: Option<&str>) -> Result<String> {
    let name = match asked {
        Some(n) => {
            let n = n.trim_start_matches('/').to_string();
            check_name(&n)?;
            n
        }
        None => crate::names::generate(|n| state.containers.values().any(|c| c.name == n)),
    };
    match state.containers.values().find(|c| c.name == name) {
        Some(other) => Err(AgentError::ContainerExists {
            name,
            id: other.id.to_string(),
        }),
        None => Ok(name),
    }
}

/// The endpoints a new container is created with, in order, each checked against its network
/// (a network named twice is attached once).
fn configured_endpoints(
    state: &State,
    networks: &[(String, EndpointRequest)],
) -> Result<Vec<Endpoint>> {
    let mut endpoints: Vec<Endpoint> = Vec::new();
    for (key, req) in networks {
        let net_id = state.find_network(key)?;
        if endpoints.iter().any(|e| e.network_id == net_id) {
            continue;
        }
        let cfg = check_endpoint(req, state.network(&net_id)?)?;
        endpoints.push(cfg.into_endpoint(net_id));
    }
    Ok(endpoints)
}
