//! The model: networks, containers, endpoints and their attachments, as the core keeps them
//! (and as their files hold them: see `super::disk`).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use crate::driver::Driver;
use crate::error::{AgentError, Result};
use crate::ids::{ContainerId, EndpointId, NetworkId};
use crate::ipam::Pool;
use resolver::Link;

/// Everything the agent owns.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    pub networks: BTreeMap<NetworkId, Network>,
    pub containers: BTreeMap<ContainerId, Container>,
    /// Endpoints other hosts serve on global networks, by (network id, endpoint id): mirrored
    /// from the cluster store, never persisted here.
    #[serde(skip)]
    pub remote: BTreeMap<(NetworkId, EndpointId), crate::cluster::layout::EndpointRecord>,
    /// Global networks built on this host (bridge, tunnel, DNS): those it has endpoints on.
    #[serde(skip)]
    pub joined: std::collections::BTreeSet<NetworkId>,
    /// Containers with a connect between its two locked steps (its kernel work and durable
    /// write run without the lock): other operations on them wait (`Agent::lock_container`).
    #[serde(skip)]
    pub pending: std::collections::BTreeSet<ContainerId>,
}

/// Find by full id, exact name, or unique id prefix, in that order: the id, or how many ids
/// the prefix matched (0: none, 2+: ambiguous).
fn resolve<'a, K, T>(
    items: impl Iterator<Item = (&'a K, &'a T)> + Clone,
    name_of: impl Fn(&T) -> &str,
    key: &str,
) -> std::result::Result<&'a K, usize>
where
    K: std::ops::Deref<Target = str> + 'a,
    T: 'a,
{
    let key = key.trim_start_matches('/');
    if let Some((id, _)) = items.clone().find(|(id, _)| &***id == key) {
        return Ok(id);
    }
    if let Some((id, _)) = items.clone().find(|(_, t)| name_of(t) == key) {
        return Ok(id);
    }
    if key.is_empty() {
        return Err(0);
    }
    let mut matches = items
        .filter(|(id, _)| id.starts_with(key))
        .map(|(id, _)| id);
    match (matches.next(), matches.count()) {
        (Some(id), 0) => Ok(id),
        (None, _) => Err(0),
        (Some(_), more) => Err(more + 1),
    }
}

impl State {
    /// A network by full id, exact name, or unique id prefix (Docker's order).
    pub fn find_network(&self, key: &str) -> Result<NetworkId> {
        resolve(self.networks.iter(), |n: &Network| &n.name, key)
            .cloned()
            .map_err(|n| {
                if n > 1 {
                    AgentError::AmbiguousNetwork(key.to_string(), n)
                } else {
                    AgentError::NoSuchNetwork(key.to_string())
                }
            })
    }

    /// A container by full id, exact name, or unique id prefix (Docker's order).
    pub fn find_container(&self, key: &str) -> Result<ContainerId> {
        resolve(self.containers.iter(), |c: &Container| &c.name, key)
            .cloned()
            .map_err(|n| {
                if n > 1 {
                    AgentError::AmbiguousContainer(key.to_string())
                } else {
                    AgentError::NoSuchContainer(key.to_string())
                }
            })
    }

    pub fn network(&self, id: &NetworkId) -> Result<&Network> {
        self.networks
            .get(id)
            .ok_or_else(|| AgentError::NoSuchNetwork(id.to_string()))
    }

    pub fn network_mut(&mut self, id: &NetworkId) -> Result<&mut Network> {
        self.networks
            .get_mut(id)
            .ok_or_else(|| AgentError::NoSuchNetwork(id.to_string()))
    }

    pub fn container(&self, id: &ContainerId) -> Result<&Container> {
        self.containers
            .get(id)
            .ok_or_else(|| AgentError::NoSuchContainer(id.to_string()))
    }

    pub fn container_mut(&mut self, id: &ContainerId) -> Result<&mut Container> {
        self.containers
            .get_mut(id)
            .ok_or_else(|| AgentError::NoSuchContainer(id.to_string()))
    }

    /// A container's endpoint on a network.
    pub fn endpoint_mut(&mut self, cid: &ContainerId, net: &NetworkId) -> Result<&mut Endpoint> {
        let c = self.container_mut(cid)?;
        let name = c.name.clone();
        c.endpoint_mut(net).ok_or_else(|| AgentError::NotConnected {
            container: name,
            network: net.to_string(),
        })
    }

    /// Copies of one container and some networks, to put back if the operation about to
    /// change them fails. (A copy of the whole state would make every connect cost time in
    /// proportion to the number of containers.)
    pub fn undo_point(&self, cid: &ContainerId, networks: &[NetworkId]) -> Undo {
        Undo {
            container: self.containers.get(cid).cloned(),
            networks: networks
                .iter()
                .filter_map(|id| self.networks.get(id).cloned())
                .collect(),
        }
    }
}

/// See [`State::undo_point`].
#[must_use]
pub struct Undo {
    container: Option<Container>,
    networks: Vec<Network>,
}

impl Undo {
    pub fn restore(self, state: &mut State) {
        if let Some(c) = self.container {
            state.containers.insert(c.id.clone(), c);
        }
        for n in self.networks {
            state.networks.insert(n.id.clone(), n);
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub id: NetworkId,
    pub name: String,
    /// RFC 3339.
    pub created: String,
    pub driver: Driver,
    pub internal: bool,
    pub attachable: bool,
    pub labels: BTreeMap<String, String>,
    pub options: BTreeMap<String, String>,
    /// The Linux bridge backing it.
    pub bridge: String,
    pub bridge_mac: [u8; 6],
    /// `None`: an IPv6-only network (`--ipv4=false`, the Engine's `EnableIPv4: false`).
    pub v4: Option<Pool>,
    pub v6: Option<Pool>,
    /// Global (overlay) networks: the VXLAN id. Their definition lives in the cluster store;
    /// the file here is a cache that keeps this host's endpoints on them across restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
}

impl Network {
    /// Defined in the cluster store, spanning hosts (Docker's scope `global`).
    pub fn is_global(&self) -> bool {
        self.vni.is_some()
    }

    pub fn scope(&self) -> &'static str {
        if self.is_global() {
            "global"
        } else {
            "local"
        }
    }

    pub fn enable_ipv6(&self) -> bool {
        self.v6.is_some()
    }

    pub fn enable_ipv4(&self) -> bool {
        self.v4.is_some()
    }

    /// Its pools: IPv4 first.
    pub fn pools(&self) -> impl Iterator<Item = &Pool> {
        self.v4.iter().chain(self.v6.iter())
    }

    /// The IPv4 pool, which a global (overlay) network always has (checked at its creation
    /// and when its record is read from the store).
    pub fn overlay_v4(&self) -> Result<&Pool> {
        self.v4
            .as_ref()
            .ok_or_else(|| AgentError::Invalid(format!("network {} has no IPv4 subnet", self.name)))
    }

    pub fn gateways(&self) -> Vec<IpAddr> {
        self.pools().map(|p| p.gateway).collect()
    }

    /// The pool of `ip`'s family, if the network has one.
    pub fn pool_for(&mut self, ip: IpAddr) -> Option<&mut Pool> {
        if ip.is_ipv4() {
            self.v4.as_mut()
        } else {
            self.v6.as_mut()
        }
    }

    /// Give an endpoint's addresses back to the pools.
    pub fn release(&mut self, v4: Option<Ipv4Addr>, v6: Option<Ipv6Addr>) {
        if let (Some(p), Some(ip)) = (self.v4.as_mut(), v4) {
            p.release(IpAddr::V4(ip));
        }
        if let (Some(p), Some(ip)) = (self.v6.as_mut(), v6) {
            p.release(IpAddr::V6(ip));
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Created,
    Running,
    Paused,
    Exited,
}

impl RunState {
    /// Whether interfaces are attached (running or paused).
    pub fn is_up(self) -> bool {
        matches!(self, RunState::Running | RunState::Paused)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    pub id: ContainerId,
    pub name: String,
    pub hostname: String,
    pub image: String,
    pub created: String,
    /// The namespace path; `owned` when the agent made it (and removes it with the container).
    pub netns: PathBuf,
    pub owns_netns: bool,
    pub state: RunState,
    /// When it last started or stopped (RFC 3339), for `ps`.
    pub state_since: String,
    pub labels: BTreeMap<String, String>,
    /// In connect order.
    pub endpoints: Vec<Endpoint>,
    /// Set for a container a runtime attached through the CNI plugin: the runtime owns its
    /// process and namespace, and it leaves when its last attachment is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni: Option<CniOwner>,
    /// `--dns`, `--dns-search`, `--dns-option`, `--add-host`.
    #[serde(default, skip_serializing_if = "ContainerDns::is_empty")]
    pub dns: ContainerDns,
}

/// What a container's resolver is told besides its networks' gateways, as `docker run` takes
/// it: its own upstream servers (the gateway DNS forwards its names that are not local there,
/// instead of to the host's), search domains and options for its resolv.conf, and extra
/// lines for its hosts file. Checked before it is kept (`agent::request::check_container_dns`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerDns {
    pub servers: Vec<IpAddr>,
    pub search: Vec<String>,
    pub options: Vec<String>,
    pub extra_hosts: Vec<ExtraHost>,
}

impl ContainerDns {
    pub fn is_empty(&self) -> bool {
        *self == ContainerDns::default()
    }
}

/// `--add-host NAME:IP` (`IP` may be `host-gateway`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraHost {
    pub name: String,
    /// `None`: `host-gateway`, the host's address as the container sees it (the configured
    /// `host_address`, else the gateway of its first network).
    pub ip: Option<IpAddr>,
}

/// Who a CNI-attached container belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniOwner {
    /// `CNI_CONTAINERID` as the runtime passes it (podman: 64 hex digits; ctr:
    /// `NAMESPACE-ID`).
    pub container_id: String,
}

impl Container {
    pub fn endpoint(&self, network_id: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.network_id == network_id)
    }

    pub fn endpoint_mut(&mut self, network_id: &str) -> Option<&mut Endpoint> {
        self.endpoints
            .iter_mut()
            .find(|e| e.network_id == network_id)
    }

    /// The namespace name for agent-made namespaces (/run/netns/NAME).
    pub fn netns_name(&self) -> Option<&str> {
        if self.owns_netns {
            self.netns.file_name().and_then(|n| n.to_str())
        } else {
            None
        }
    }
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// A container's attachment to a network: what was asked (kept across stops) and what is
/// applied while it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub network_id: NetworkId,
    pub endpoint_id: EndpointId,
    pub aliases: Vec<String>,
    pub links: Vec<Link>,
    pub static_v4: Option<Ipv4Addr>,
    pub static_v6: Option<Ipv6Addr>,
    pub link_local: Vec<IpAddr>,
    /// The interface name asked for inside the namespace (a CNI runtime's `CNI_IFNAME`);
    /// `None`: the first free `ethN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    /// The MAC asked for; `None`: Docker's `02:42` followed by the IPv4 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<[u8; 6]>,
    /// `--gw-priority`: the endpoint with the highest gives the default routes
    /// (`agent::gateway`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gw_priority: i64,
    /// Set while attached.
    pub attached: Option<Attached>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attached {
    pub ifname: String,
    pub host_veth: String,
    pub mac: [u8; 6],
    /// `None` on an IPv6-only network.
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
}

impl Attached {
    /// Its addresses: IPv4 first.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.v4
            .map(IpAddr::V4)
            .into_iter()
            .chain(self.v6.map(IpAddr::V6))
    }
}

/// Rebuild what is not stored: endpoints on networks that no longer exist are dropped, and
/// each pool's allocations are the addresses of its attached endpoints. An address claimed
/// twice (a damaged state directory; no sequence of writes makes one) stays with the first
/// claimant; the second endpoint is detached and reconcile removes its veth.
pub(super) fn derive(state: &mut State) {
    let State {
        networks,
        containers,
        ..
    } = state;
    for c in containers.values_mut() {
        c.endpoints.retain(|e| {
            let keep = networks.contains_key(&e.network_id);
            if !keep {
                tracing::info!(container = %c.name, network = %e.network_id, "dropping the endpoint of a removed network");
            }
            keep
        });
        for e in &mut c.endpoints {
            let Some(a) = &e.attached else { continue };
            // Endpoints of networks that are gone were dropped just above.
            let Some(net) = networks.get_mut(&e.network_id) else {
                continue;
            };
            let v6 = match (net.v6.as_mut(), a.v6) {
                (Some(p), Some(ip)) => p.reserve(IpAddr::V6(ip)).map(|()| Some(ip)),
                _ => Ok(None),
            };
            let v4 = match (net.v4.as_mut(), a.v4) {
                (Some(p), Some(ip)) => p.reserve(IpAddr::V4(ip)).map(|()| Some(ip)),
                _ => Ok(None),
            };
            match (v4, v6) {
                (Ok(_), Ok(_)) => {}
                (r4, r6) => {
                    tracing::error!(container = %c.name, network = %net.name, "address held twice in the state; detaching the later holder");
                    if let (Ok(Some(ip)), Some(p)) = (r4, net.v4.as_mut()) {
                        p.release(IpAddr::V4(ip));
                    }
                    if let (Ok(Some(ip)), Some(p)) = (r6, net.v6.as_mut()) {
                        p.release(IpAddr::V6(ip));
                    }
                    e.attached = None;
                }
            }
        }
    }
}
