use super::{endpoint_spec, Agent};
use crate::error::{AgentError, Result};
use crate::ids::{ContainerId, NetworkId};
use crate::kernel::netlink::Netlink;
use crate::kernel::netns;
use crate::state::{Attached, Changed, Container, Network, State};

impl Agent {
    /// Make the kernel and the table match the saved state: bridges adopted or recreated,
    /// veths of running containers adopted when present and recreated with the same addresses
    /// when not, leftovers with our prefix removed.
    /// What did not come back: (networks, endpoints) that failed.
    pub(super) async fn reconcile(&self) -> Result<(usize, usize)> {
        let mut state = self.inner.state.lock().await;
        let (nets_up, nets_failed) = self.bring_up_networks(&mut state).await;
        let mut kept = 0;
        let mut failed = 0;
        let running: Vec<ContainerId> = state
            .containers
            .values()
            .filter(|c| c.state.is_up())
            .map(|c| c.id.clone())
            .collect();
        let mut keep_veths = Vec::new();
        let mut reattached = Vec::new();
        for cid in &running {
            let Ok(c) = state.container(cid).cloned() else {
                continue;
            };
            if !c.owns_netns && !netns::is_netns(&c.netns) {
                // Its runtime's namespace died meanwhile: ended after reconcile, not rebuilt.
                continue;
            }
            if let Err(e) = self.ensure_netns(&c) {
                tracing::error!(container = %c.name, error = %e, "cannot restore namespace");
                continue;
            }
            for ep in &c.endpoints {
                let Some(a) = &ep.attached else { continue };
                // Each endpoint on its own: one that cannot be looked at or registered is
                // reported and kept as it is (its veth is not swept), the others go on.
                let plumbed = match self.still_plumbed(&c, a).await {
                    Ok(p) => p,
                    Err(err) => {
                        tracing::error!(container = %c.name, network = %ep.network_id, error = %err, "cannot check an attachment; leaving it as it is");
                        keep_veths.push(a.host_veth.clone());
                        failed += 1;
                        continue;
                    }
                };
                if plumbed {
                    keep_veths.push(a.host_veth.clone());
                    // Made by an earlier version (no mark yet), or marked already: ours.
                    if let Err(err) = self
                        .inner
                        .host
                        .set_mark(&a.host_veth, &self.inner.mark)
                        .await
                    {
                        tracing::warn!(veth = %a.host_veth, error = %err, "cannot mark an adopted veth");
                    }
                    match self
                        .inner
                        .dns
                        .table()
                        .upsert_endpoint(&endpoint_spec(&c, ep, a.v4, a.v6))
                    {
                        Ok(_) => {
                            self.register_servers(&c);
                            kept += 1
                        }
                        Err(err) => {
                            tracing::error!(container = %c.name, network = %ep.network_id, error = %err, "cannot register an endpoint");
                            failed += 1;
                        }
                    }
                    continue;
                }
                // Gone (reboot, or someone deleted it): recreate with the same addresses.
                tracing::info!(container = %c.name, network = %ep.network_id, "re-attaching");
                reattached.push(cid.clone());
                match self.reattach(&mut state, cid, &ep.network_id, a).await {
                    Ok(veth) => {
                        self.inner.metrics.links_recreated(1);
                        keep_veths.push(veth)
                    }
                    Err(err) => {
                        failed += 1;
                        tracing::error!(container = %c.name, error = %err, "cannot re-attach")
                    }
                }
            }
        }
        self.sweep_leftovers(&state, &keep_veths).await?;
        // One entry a container (one is re-attached once for each of its networks).
        let mut containers = reattached.clone();
        containers.sort();
        containers.dedup();
        let changed: Vec<Changed> = containers.iter().map(Changed::Container).collect();
        self.persist(&state, &changed)?;
        tracing::info!(
            networks_up = nets_up,
            networks_failed = nets_failed,
            endpoints_adopted = kept,
            endpoints_recreated = reattached.len(),
            endpoints_failed = failed,
            "reconciled with the kernel"
        );
        Ok((nets_failed, failed))
    }

    /// Bridges, tunnels and DNS listeners of the networks this host serves: every local one,
    /// and the global ones it has endpoints on. Each on its own: one that fails (port 53 of its
    /// gateway taken, say) is reported and the others are served. (Up, failed.)
    async fn bring_up_networks(&self, state: &mut State) -> (usize, usize) {
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
        let mut failed = 0;
        for net in &nets {
            // Gone since the state was written (a reboot, a hand): made again below.
            let missing = matches!(self.inner.host.index_of(&net.bridge).await, Ok(None));
            if let Err(e) = self.bring_up_network(net).await {
                tracing::error!(network = %net.name, error = %e, "cannot bring a network up; serving the others");
                failed += 1;
                continue;
            }
            if missing {
                self.inner.metrics.links_recreated(1);
            }
            if net.is_global() {
                state.joined.insert(net.id.clone());
            }
        }
        (nets.len() - failed, failed)
    }

    /// Whether an attachment's veth is still there, both ends.
    pub(super) async fn still_plumbed(&self, c: &Container, a: &Attached) -> Result<bool> {
        if self.inner.host.index_of(&a.host_veth).await?.is_none() {
            return Ok(false);
        }
        Ok(match netns::open(&c.netns) {
            Ok(ns) => Netlink::inside(&ns)?.index_of(&a.ifname).await?.is_some(),
            Err(_) => false,
        })
    }

    /// Attach an endpoint again with the addresses it had (`was`), as if they were static for
    /// this once. The new host-side veth's name.
    pub(super) async fn reattach(
        &self,
        state: &mut State,
        cid: &ContainerId,
        net_id: &NetworkId,
        was: &Attached,
    ) -> Result<String> {
        let _ = self.inner.host.delete_link(&was.host_veth).await;
        state.network_mut(net_id)?.release(was.v4, was.v6);
        let e = state.endpoint_mut(cid, net_id)?;
        let asked = (e.static_v4, e.static_v6);
        (e.static_v4, e.static_v6) = (was.v4, was.v6);
        e.attached = None;
        let attached = self.attach(state, cid, net_id).await;
        let e = state.endpoint_mut(cid, net_id)?;
        (e.static_v4, e.static_v6) = asked;
        attached?;
        e.attached
            .as_ref()
            .map(|a| a.host_veth.clone())
            .ok_or_else(|| AgentError::NotConnected {
                container: cid.to_string(),
                network: net_id.to_string(),
            })
    }

    /// Remove the links with our mark that nothing in the state explains: leftovers of a
    /// crash between kernel work and the state write. A link with our prefix but without our
    /// mark is someone else's (another agent's, or made by hand) and is left alone.
    async fn sweep_leftovers(&self, state: &State, keep_veths: &[String]) -> Result<()> {
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
        for link in self.inner.host.links().await? {
            let name = &link.name;
            if !name.starts_with(prefix.as_str())
                || bridges.contains(name)
                || keep_veths.contains(name)
            {
                continue;
            }
            if link.is_marked(&self.inner.mark) {
                tracing::info!(link = %name, "removing leftover link");
                if self.inner.host.delete_link(name).await.is_ok() {
                    self.inner.metrics.links_swept(1);
                }
            } else {
                tracing::debug!(link = %name, alias = ?link.alias, "leaving a link with this prefix that is not this agent's");
            }
        }
        Ok(())
    }
}
