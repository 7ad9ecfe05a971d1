//! Containers that a runtime (podman, containerd, anything speaking CNI) owns: the runtime
//! made the namespace and runs the process; the agent attaches it to its networks, as it does
//! its own containers, and the container leaves when its last attachment is deleted.
//!
//! A runtime container is keyed by the id the runtime passes (`CNI_CONTAINERID`): its agent id
//! is that id when it is 64 hex digits (podman), else the SHA-256 of it (ctr's
//! `NAMESPACE-ID`), so the same runtime container always maps to the same agent container.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::request::{check_endpoint, check_ifname, check_name, EndpointRequest};
use super::{Agent, Cleanup};
use crate::clock::now_rfc3339;
use crate::error::{AgentError, Result};
use crate::ids::{ContainerId, NetworkId};
use crate::kernel::netns;
use crate::metrics::Operation;
use crate::state::{Changed, CniOwner, Container, Endpoint, RunState, State};

/// Longest runtime container id accepted (runtimes use 64 to ~200 characters).
const MAX_RUNTIME_ID: usize = 512;

/// One ADD, checked by the front for form (strings as the runtime sent them) and here for
/// meaning.
#[derive(Debug, Clone, Default)]
pub struct RuntimeAttach {
    /// `CNI_CONTAINERID`.
    pub runtime_id: String,
    /// The container's name (podman's `K8S_POD_NAME`); `None`: the runtime id.
    pub name: Option<String>,
    /// `CNI_NETNS`: this ADD's namespace (every podman start makes a new one).
    pub netns: PathBuf,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// The agent network, by name or id (the config's `name`).
    pub network: String,
    pub aliases: Vec<String>,
    /// Static addresses (`runtimeConfig.ips`, `CNI_ARGS IP=`), at most one per family.
    pub ips: Vec<IpAddr>,
    pub mac: Option<[u8; 6]>,
}

/// What an attachment is, for the runtime's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeAttachment {
    pub container: ContainerId,
    pub ifname: String,
    pub mac: [u8; 6],
    pub sandbox: PathBuf,
    /// (address, prefix length, gateway) of each family.
    pub addresses: Vec<(IpAddr, u8, IpAddr)>,
    /// Whether this attachment carries the container's default routes (its first network).
    pub default_route: bool,
    /// The DNS servers of the container: its networks' gateways.
    pub nameservers: Vec<IpAddr>,
}

/// The agent id of a runtime container.
pub fn container_id_of(runtime_id: &str) -> ContainerId {
    ContainerId::parse(runtime_id).unwrap_or_else(|_| {
        let digest = Sha256::digest(runtime_id.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        ContainerId::parse(&hex).expect("a SHA-256 digest in hex is 64 lowercase hex digits")
    })
}

/// A runtime id must be a printable, bounded string: it names a container in DNS when no
/// name is given, and is kept in a state file.
fn check_runtime_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= MAX_RUNTIME_ID
        && id.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
    if ok {
        Ok(())
    } else {
        Err(AgentError::Invalid(format!(
            "invalid container id {id:?}: 1 to {MAX_RUNTIME_ID} printable characters, no '/'"
        )))
    }
}

/// The namespace of an ADD: an absolute path to a network namespace, never the host's own.
fn check_netns(path: &Path) -> Result<()> {
    if !path.is_absolute() || !netns::is_netns(path) {
        return Err(AgentError::Invalid(format!(
            "{} is not a network namespace",
            path.display()
        )));
    }
    if netns::is_host_netns(path) {
        return Err(AgentError::Invalid(format!(
            "{} is the host's own network namespace",
            path.display()
        )));
    }
    Ok(())
}

fn runtime_container_of<'s>(state: &'s State, runtime_id: &str) -> Option<&'s Container> {
    state.containers.get(container_id_of(runtime_id).as_str())
}

/// The endpoint an ADD configures: the runtime's aliases and static addresses (at most one per
/// family) checked against the network, its interface name and MAC.
fn runtime_endpoint(state: &State, net_id: &NetworkId, req: &RuntimeAttach) -> Result<Endpoint> {
    let ask = |v4: bool| {
        req.ips
            .iter()
            .find(|ip| ip.is_ipv4() == v4)
            .map(ToString::to_string)
    };
    let mut ep = check_endpoint(
        &EndpointRequest {
            aliases: req.aliases.clone(),
            ipv4: ask(true),
            ipv6: ask(false),
            ..Default::default()
        },
        state.network(net_id)?,
    )?
    .into_endpoint(net_id.clone());
    ep.ifname = Some(req.ifname.clone());
    ep.mac = req.mac;
    Ok(ep)
}

/// A runtime's container as the agent keeps it: running in the runtime's namespace, its
/// hostname its short id (podman's default too), marked with the runtime's id.
fn runtime_container(
    id: ContainerId,
    name: String,
    req: &RuntimeAttach,
    ep: Endpoint,
) -> Container {
    let now = now_rfc3339();
    Container {
        hostname: id.short().to_string(),
        id,
        name,
        image: String::new(),
        created: now.clone(),
        netns: req.netns.clone(),
        owns_netns: false,
        state: RunState::Running,
        state_since: now,
        labels: Default::default(),
        endpoints: vec![ep],
        cni: Some(CniOwner {
            container_id: req.runtime_id.clone(),
        }),
        dns: Default::default(),
    }
}

impl Agent {
    /// Attach a runtime's container to a network (CNI ADD). An ADD repeated for an attachment
    /// that exists in the same namespace answers with it; one for a container whose earlier
    /// namespace is gone (a restart, or a crash without DEL) replaces the old attachment.
    pub async fn runtime_attach(&self, req: RuntimeAttach) -> Result<RuntimeAttachment> {
        self.counted(Operation::CniAdd, self.runtime_attach_uncounted(req))
            .await
    }

    async fn runtime_attach_uncounted(&self, req: RuntimeAttach) -> Result<RuntimeAttachment> {
        check_runtime_id(&req.runtime_id)?;
        check_ifname(&req.ifname)?;
        check_netns(&req.netns)?;
        let name = req.name.clone().unwrap_or_else(|| req.runtime_id.clone());
        check_name(&name)?;
        let cid = container_id_of(&req.runtime_id);
        let mut state = self.lock_id(&cid).await;
        let net_id = state.find_network(&req.network)?;
        let mut stale = Cleanup::default();
        let known = state.containers.contains_key(&cid);
        if known {
            if let Some(existing) = self.existing_attachment(&state, &cid, &net_id, &req)? {
                return Ok(existing);
            }
            // The endpoints this ADD replaces end first, as an operation of their own (saved,
            // then their records, veths and addresses gone), so the new attachment may take
            // the same names and the same static address.
            let before = state.undo_point(&cid, &[]);
            let dropped = self.drop_stale_endpoints(&mut state, &cid, &net_id, &req.netns)?;
            if !dropped.is_empty() {
                if let Err(e) = self.persist(&state, &[Changed::Container(&cid)]) {
                    before.restore(&mut state);
                    return Err(e);
                }
                stale = dropped.run_holding(self, &mut state).await;
            }
        } else if let Some(other) = state.containers.values().find(|c| c.name == name) {
            return Err(AgentError::ContainerExists {
                name,
                id: other.id.to_string(),
            });
        }
        let undo = state.undo_point(&cid, &[]);
        let ep = match runtime_endpoint(&state, &net_id, &req) {
            Ok(ep) => ep,
            Err(e) => {
                stale.run(self, state).await;
                return Err(e);
            }
        };
        if known {
            let c = state.container_mut(&cid)?;
            c.netns = req.netns.clone();
            c.state = RunState::Running;
            c.state_since = now_rfc3339();
            c.endpoints.push(ep);
        } else {
            let c = runtime_container(cid.clone(), name, &req, ep);
            state.containers.insert(cid.clone(), c);
        }
        let attached = match self.attach(&mut state, &cid, &net_id).await {
            Ok(()) => self.persist(&state, &[Changed::Container(&cid)]),
            Err(e) => Err(e),
        };
        if let Err(e) = attached {
            // The new attachment's records, veth and addresses go (the replaced ones went
            // already).
            let mut failed = self.detach(&mut state, &cid, &net_id);
            failed.extend(stale);
            if known {
                undo.restore(&mut state);
            } else {
                state.containers.remove(&cid);
            }
            failed.run(self, state).await;
            return Err(e);
        }
        let result = self.attachment_of(&state, &cid, &net_id);
        stale.run(self, state).await;
        result
    }

    /// A known container's endpoints that this ADD replaces: all of them when the namespace is
    /// not the one remembered (podman makes a new one at every start), else the one on this
    /// network. Detached and removed; their veths in the cleanup.
    fn drop_stale_endpoints(
        &self,
        state: &mut State,
        cid: &ContainerId,
        net_id: &NetworkId,
        netns: &Path,
    ) -> Result<Cleanup> {
        let c = state.container(cid)?;
        let netns_changed = c.netns != netns;
        let stale: Vec<NetworkId> = c
            .endpoints
            .iter()
            .filter(|e| netns_changed || e.network_id == *net_id)
            .map(|e| e.network_id.clone())
            .collect();
        let mut cleanup = Cleanup::default();
        for n in &stale {
            cleanup.extend(self.detach(state, cid, n));
            state
                .container_mut(cid)?
                .endpoints
                .retain(|e| e.network_id != *n);
        }
        Ok(cleanup)
    }

    /// The attachment an ADD asks for, if it is there already in the ADD's namespace.
    fn existing_attachment(
        &self,
        state: &State,
        cid: &ContainerId,
        net_id: &NetworkId,
        req: &RuntimeAttach,
    ) -> Result<Option<RuntimeAttachment>> {
        let c = state.container(cid)?;
        let same = c.netns == req.netns
            && c.endpoint(net_id)
                .and_then(|e| e.attached.as_ref())
                .is_some_and(|a| a.ifname == req.ifname);
        if same {
            self.attachment_of(state, cid, net_id).map(Some)
        } else {
            Ok(None)
        }
    }

    fn attachment_of(
        &self,
        state: &State,
        cid: &ContainerId,
        net_id: &NetworkId,
    ) -> Result<RuntimeAttachment> {
        let c = state.container(cid)?;
        let net = state.network(net_id)?;
        let not_attached = || AgentError::NotConnected {
            container: c.name.clone(),
            network: net.name.clone(),
        };
        let ep = c.endpoint(net_id).ok_or_else(not_attached)?;
        let a = ep.attached.as_ref().ok_or_else(not_attached)?;
        let mut addresses = Vec::new();
        if let (Some(v4), Some(p)) = (a.v4, &net.v4) {
            addresses.push((IpAddr::V4(v4), p.prefix_len(), p.gateway));
        }
        if let (Some(v6), Some(p)) = (a.v6, &net.v6) {
            addresses.push((IpAddr::V6(v6), p.prefix_len(), p.gateway));
        }
        let first = c.endpoints.iter().find(|e| e.attached.is_some());
        let mut nameservers = Vec::new();
        for e in c.endpoints.iter().filter(|e| e.attached.is_some()) {
            if let Some(n) = state.networks.get(&e.network_id) {
                nameservers.extend(n.gateways());
            }
        }
        Ok(RuntimeAttachment {
            container: cid.clone(),
            ifname: a.ifname.clone(),
            mac: a.mac,
            sandbox: c.netns.clone(),
            addresses,
            default_route: first.is_some_and(|e| e.network_id == *net_id),
            nameservers,
        })
    }

    /// Detach a runtime's container from a network (CNI DEL): idempotent (an unknown container,
    /// network or attachment is success), and the container leaves with its last attachment.
    pub async fn runtime_detach(
        &self,
        runtime_id: &str,
        network: &str,
        ifname: &str,
    ) -> Result<()> {
        let work = self.runtime_detach_uncounted(runtime_id, network, ifname);
        self.counted(Operation::CniDel, work).await
    }

    async fn runtime_detach_uncounted(
        &self,
        runtime_id: &str,
        network: &str,
        ifname: &str,
    ) -> Result<()> {
        let mut state = self.lock_id(&container_id_of(runtime_id)).await;
        let Some(c) = runtime_container_of(&state, runtime_id) else {
            return Ok(());
        };
        let cid = c.id.clone();
        let Ok(net_id) = state.find_network(network) else {
            return Ok(());
        };
        let matches = c.endpoint(&net_id).is_some_and(|e| {
            e.attached
                .as_ref()
                .is_none_or(|a| ifname.is_empty() || a.ifname == ifname)
        });
        if !matches {
            return Ok(());
        }
        let cleanup = self.forget_runtime_endpoint(&mut state, &cid, &net_id)?;
        cleanup.run(self, state).await;
        Ok(())
    }

    /// Drop one endpoint of a runtime container (records, address, veth after the lock), and
    /// the container with its last one; saved before returning.
    pub(super) fn forget_runtime_endpoint(
        &self,
        state: &mut State,
        cid: &ContainerId,
        net_id: &NetworkId,
    ) -> Result<Cleanup> {
        let undo = state.undo_point(cid, &[]);
        let cleanup = self.detach(state, cid, net_id);
        let c = state.container_mut(cid)?;
        c.endpoints.retain(|e| e.network_id != *net_id);
        let last = c.endpoints.is_empty();
        if last {
            state.containers.remove(cid);
        }
        if let Err(e) = self.persist(state, &[Changed::Container(cid)]) {
            // Nothing is lost: the records, the veth and the addresses are untouched (they
            // are in `cleanup`, which is dropped), and the attachment is as it was.
            undo.restore(state);
            return Err(e);
        }
        if !last {
            self.refresh_etc(state, cid);
        }
        Ok(cleanup)
    }

    /// CNI CHECK: the attachment exists as the runtime expects, both ends of its veth present.
    pub async fn runtime_check(&self, runtime_id: &str, network: &str, ifname: &str) -> Result<()> {
        let state = self.inner.state.lock().await;
        let c = runtime_container_of(&state, runtime_id)
            .ok_or_else(|| AgentError::NoSuchContainer(runtime_id.to_string()))?;
        let net_id = state.find_network(network)?;
        let a = c
            .endpoint(&net_id)
            .and_then(|e| e.attached.as_ref())
            .filter(|a| a.ifname == ifname)
            .ok_or_else(|| AgentError::NotConnected {
                container: c.name.clone(),
                network: network.to_string(),
            })?;
        if !self.still_plumbed(c, a).await? {
            return Err(AgentError::Invalid(format!(
                "the interface {ifname} of {} is gone",
                c.name
            )));
        }
        Ok(())
    }

    /// CNI GC: every runtime attachment on `network` that is not in `valid` (runtime id,
    /// interface) is removed. How many were.
    pub async fn runtime_gc(&self, network: &str, valid: &[(String, String)]) -> Result<usize> {
        let mut state = self.lock_settled().await;
        let net_id = state.find_network(network)?;
        let gone: Vec<ContainerId> = state
            .containers
            .values()
            .filter(|c| {
                let Some(owner) = &c.cni else { return false };
                let Some(ep) = c.endpoint(&net_id) else {
                    return false;
                };
                let ifname = ep
                    .attached
                    .as_ref()
                    .map(|a| a.ifname.as_str())
                    .unwrap_or("");
                !valid
                    .iter()
                    .any(|(id, i)| *id == owner.container_id && (i.is_empty() || i == ifname))
            })
            .map(|c| c.id.clone())
            .collect();
        // Each one all or nothing: those saved before a failed write are cleaned up all the same.
        let mut cleanup = Cleanup::default();
        let mut failed = None;
        for cid in &gone {
            match self.forget_runtime_endpoint(&mut state, cid, &net_id) {
                Ok(c) => cleanup.extend(c),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        cleanup.run(self, state).await;
        match failed {
            Some(e) => Err(e),
            None => Ok(gone.len()),
        }
    }
}
