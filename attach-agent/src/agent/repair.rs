//! Links deleted behind the agent's back (`ip link del` on a bridge, a tunnel or a veth by an
//! operator or another tool): seen at once from the kernel's link events, and made again, so
//! DNS and the containers' connectivity come back without waiting for a restart.
//!
//! - a network's bridge: made again with its addresses and MAC, its DNS listeners moved to
//!   the new bridge, and every attached endpoint's host-side veth (which the kernel released,
//!   not deleted) added to it again; a global network's tunnel is made again too;
//! - a global network's VXLAN device: made again, with every remote endpoint's entries;
//! - a host-side veth whose container's namespace is alive: the attachment is made again with
//!   the same addresses (the kernel deleted the peer with it). Whose namespace died: see
//!   `vanished`.
//!
//! The agent's own deletions (disconnect, network removal) are never taken for these: by the
//! time their event arrives, the state no longer names the link.

use super::Agent;
use crate::cluster::layout::EndpointRecord;
use crate::ids::{ContainerId, NetworkId};
use crate::kernel::netns;
use crate::state::{Changed, Network, State};

impl Agent {
    /// The link `name` (with our prefix) was deleted: rebuild what the state says it was.
    pub(super) async fn link_deleted(&self, name: &str) {
        self.inner.bridges.forget(name);
        let mut state = self.lock_settled().await;
        if let Some(net) = self.served_network_with_link(&state, name) {
            tracing::warn!(link = %name, network = %net.name, "a link was deleted behind the agent's back; making it again");
            self.rebuild_network(&mut state, &net).await;
            return;
        }
        let Some((cid, net_id)) = super::vanished::attachment_with_veth(&state, name) else {
            return; // ours, deleted by a disconnect or stop, or not an attachment at all
        };
        let alive = state
            .container(&cid)
            .is_ok_and(|c| netns::is_netns(&c.netns));
        if alive {
            tracing::warn!(veth = %name, container = %cid, "a veth was deleted behind the agent's back; attaching again");
            self.rebuild_attachment(&mut state, &cid, &net_id).await;
            return;
        }
        self.veth_gone(state, &cid, &net_id).await;
    }

    /// The network (served on this host) whose bridge or VXLAN device is `name`.
    fn served_network_with_link(&self, state: &State, name: &str) -> Option<Network> {
        state
            .networks
            .values()
            .filter(|n| !n.is_global() || state.joined.contains(&n.id))
            .find(|n| n.bridge == name || (n.is_global() && self.vxlan_name(&n.id) == name))
            .cloned()
    }

    /// Bridge (and tunnel) made again, DNS listeners on the new bridge, ports added back,
    /// remote endpoints' tunnel entries put back.
    async fn rebuild_network(&self, state: &mut State, net: &Network) {
        if let Err(e) = self.bring_up_network(net).await {
            tracing::error!(network = %net.name, error = %e, "cannot make a deleted link again");
            return;
        }
        let bridge = match self.inner.host.index_of(&net.bridge).await {
            Ok(Some(i)) => i,
            other => {
                tracing::error!(network = %net.name, result = ?other.map(|_| ()), "the bridge made again is not there");
                return;
            }
        };
        let veths: Vec<String> = state
            .containers
            .values()
            .filter_map(|c| c.endpoint(&net.id)?.attached.as_ref())
            .map(|a| a.host_veth.clone())
            .collect();
        let mut ports = 0;
        for v in &veths {
            match self.inner.host.enslave(v, bridge).await {
                Ok(()) => ports += 1,
                Err(e) => {
                    tracing::warn!(veth = %v, error = %e, "cannot add a veth to its bridge again")
                }
            }
        }
        if net.is_global() {
            let remotes: Vec<EndpointRecord> = state
                .remote
                .values()
                .filter(|r| r.network_id == net.id)
                .cloned()
                .collect();
            for rec in &remotes {
                if let Err(e) = self.tunnel_entries(rec, true).await {
                    tracing::warn!(container = %rec.container_name, error = %e, "cannot put a remote endpoint's tunnel entries back");
                }
            }
        }
        self.inner
            .metrics
            .links_recreated(1 + u64::from(net.is_global()));
        tracing::info!(network = %net.name, ports, "network links made again");
    }

    /// An attachment whose host-side veth (and so its peer) was deleted, its namespace alive:
    /// attached again with the same addresses, and saved (the veth has a new name).
    async fn rebuild_attachment(&self, state: &mut State, cid: &ContainerId, net_id: &NetworkId) {
        let Some(was) = state
            .container(cid)
            .ok()
            .and_then(|c| c.endpoint(net_id)?.attached.clone())
        else {
            return;
        };
        match self.reattach(state, cid, net_id, &was).await {
            Ok(veth) => {
                if let Err(e) = self.persist(state, &[Changed::Container(cid)]) {
                    tracing::error!(container = %cid, error = %e, "cannot save an attachment made again");
                }
                self.inner.metrics.links_recreated(1);
                tracing::info!(container = %cid, network = %net_id, %veth, "attached again");
            }
            Err(e) => {
                // Not attached any more, then: its names go, and the file says so too (its
                // addresses went back to the pools with the failed attempt).
                tracing::error!(container = %cid, network = %net_id, error = %e, "cannot attach again; the endpoint is left detached");
                self.inner.dns.table().remove_endpoint(net_id, cid);
                self.refresh_etc(state, cid);
                if let Err(e) = self.persist(state, &[Changed::Container(cid)]) {
                    tracing::error!(container = %cid, error = %e, "cannot save a detached endpoint");
                }
            }
        }
    }

    /// After link events were lost: every served network's bridge (and tunnel) and every
    /// attached veth whose namespace lives is looked at, and what is missing is made again.
    pub(super) async fn repair_missing_links(&self) {
        let mut state = self.lock_settled().await;
        let nets: Vec<Network> = state
            .networks
            .values()
            .filter(|n| !n.is_global() || state.joined.contains(&n.id))
            .cloned()
            .collect();
        for net in &nets {
            let mut names = vec![net.bridge.clone()];
            if net.is_global() {
                names.push(self.vxlan_name(&net.id));
            }
            for name in names {
                if let Ok(None) = self.inner.host.index_of(&name).await {
                    tracing::warn!(link = %name, network = %net.name, "a link went missing while link events were lost; making it again");
                    self.rebuild_network(&mut state, net).await;
                    break;
                }
            }
        }
        let attached: Vec<(ContainerId, NetworkId, String)> = state
            .containers
            .values()
            .filter(|c| c.state.is_up() && netns::is_netns(&c.netns))
            .flat_map(|c| {
                c.endpoints.iter().filter_map(|e| {
                    let a = e.attached.as_ref()?;
                    Some((c.id.clone(), e.network_id.clone(), a.host_veth.clone()))
                })
            })
            .collect();
        for (cid, net_id, veth) in attached {
            if let Ok(None) = self.inner.host.index_of(&veth).await {
                tracing::warn!(%veth, container = %cid, "a veth went missing while link events were lost; attaching again");
                self.rebuild_attachment(&mut state, &cid, &net_id).await;
            }
        }
    }
}
