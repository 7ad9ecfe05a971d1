use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use resolver::NetworkSpec;

use super::request::{plan_network, NetworkCreate, NetworkPlan};
use super::Agent;
use crate::clock::now_rfc3339;
use crate::error::{AgentError, Result};
use crate::ids::NetworkId;
use crate::ipam::{self, Pool};
use crate::state::{Changed, Driver, Network, State};

impl Agent {
    /// Create a network: IPAM, bridge, DNS listeners. Returns its id.
    pub async fn create_network(&self, req: NetworkCreate) -> Result<NetworkId> {
        let mut state = self.inner.state.lock().await;
        if state.networks.values().any(|n| n.name == req.name) {
            return Err(AgentError::NetworkExists(req.name));
        }
        let taken: Vec<IpNet> = state
            .networks
            .values()
            .flat_map(|n| n.pools().map(|p| p.subnet))
            .collect();
        let NetworkPlan { driver, v4, v6 } = plan_network(&req, &taken)?;
        if driver == Driver::Overlay {
            return self
                .create_global_network(&mut state, req, taken, v4, v6)
                .await;
        }
        let v4 = match v4 {
            Some(p) => Some(p),
            // IPv6-only (`--ipv4=false`): plan_network made sure it has an IPv6 subnet.
            None if req.ipv4_disabled => None,
            None => {
                let mut avoid = taken.clone();
                avoid.extend(self.inner.host.ipv4_routes().await?);
                let mut p = Pool::new(ipam::pick_default(&avoid)?, None, None)?;
                p.show_gateway = true;
                Some(p)
            }
        };
        let id = NetworkId::random();
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
        let subnets: Vec<String> = net.pools().map(|p| p.subnet.to_string()).collect();
        tracing::info!(network = %net.name, %id, ?subnets, bridge = %net.bridge, "network created");
        Ok(id)
    }

    /// Bridge with its gateways (and a global network's tunnel), and DNS listeners on them.
    /// Idempotent (used at start too).
    pub(crate) async fn bring_up_network(&self, net: &Network) -> Result<()> {
        let addrs: Vec<(IpAddr, u8)> = net.pools().map(|p| (p.gateway, p.prefix_len())).collect();
        let index = self
            .inner
            .host
            .ensure_bridge(&net.bridge, net.bridge_mac, &addrs, &self.inner.mark)
            .await?;
        if let Some(vni) = net.vni {
            self.bring_up_tunnel(net, vni, index).await?;
        }
        let spec = NetworkSpec {
            id: net.id.to_string(),
            name: net.name.clone(),
            internal: net.internal,
            bridge_ifindex: Some(index),
            // The DNS server fills it in from `[dns] host_names` / `host_address`.
            host_addresses: Vec::new(),
            // Checked when it was created; a state file changed by hand since is not trusted.
            dns_servers: match super::request::network_dns_servers(&net.options) {
                Ok(ips) => ips.into_iter().map(|ip| SocketAddr::new(ip, 53)).collect(),
                Err(e) => {
                    tracing::warn!(network = %net.name, error = %e, "ignoring the network's DNS servers");
                    vec![]
                }
            },
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
        let mut state = self.lock_settled().await;
        let id = state.find_network(key)?;
        self.remove_network_locked(&mut state, &id).await
    }

    pub(super) async fn remove_network_locked(
        &self,
        state: &mut State,
        id: &NetworkId,
    ) -> Result<()> {
        let net = state.network(id)?.clone();
        let attached = state
            .containers
            .values()
            .any(|c| c.endpoint(id).is_some_and(|e| e.attached.is_some()));
        if attached {
            return Err(AgentError::ActiveEndpoints(net.name));
        }
        let before = state.clone();
        state.networks.remove(id);
        state.remote.retain(|(n, _), _| n != id);
        state.joined.remove(id);
        for c in state.containers.values_mut() {
            c.endpoints.retain(|e| e.network_id != id);
        }
        // One file: endpoints configured on a removed network are dropped at load. Saved
        // before a global network leaves the store, which cannot be undone: a write that fails
        // changes nothing anywhere. (A crash in between: the mirror brings the network back
        // from the store at the next start.)
        if let Err(e) = self.persist(state, &[Changed::Network(id)]) {
            *state = before;
            return Err(e);
        }
        self.inner.bridges.forget(&net.bridge);
        if net.is_global() {
            // Endpoints of any host keep it; the store decides, atomically.
            if let Err(e) = self.remove_global_network(&net).await {
                *state = before;
                if let Err(again) = self.persist(state, &[Changed::Network(id)]) {
                    tracing::error!(network = %net.name, error = %again, "cannot write back a network the store kept");
                }
                return Err(e);
            }
        }
        self.tear_down_network(&net).await;
        tracing::info!(network = %net.name, "network removed");
        Ok(())
    }

    /// Remove every network without attached endpoints; their names.
    pub async fn prune_networks(&self) -> Result<Vec<String>> {
        let mut state = self.lock_settled().await;
        // By name, as the Engine lists them.
        let mut idle: Vec<(String, NetworkId)> = state
            .networks
            .values()
            .filter(|n| {
                !state
                    .containers
                    .values()
                    .any(|c| c.endpoint(&n.id).is_some_and(|e| e.attached.is_some()))
                    && !state.remote.keys().any(|(net, _)| *net == n.id)
            })
            .map(|n| (n.name.clone(), n.id.clone()))
            .collect();
        idle.sort();
        let mut names = Vec::new();
        for (name, id) in idle {
            match self.remove_network_locked(&mut state, &id).await {
                Ok(()) => names.push(name),
                // A global network another host just attached to: not idle after all.
                Err(AgentError::ActiveEndpoints(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(names)
    }
}
