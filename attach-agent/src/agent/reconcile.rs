use resolver::EndpointSpec;

use super::Agent;
use crate::error::Result;
use crate::ids::ContainerId;
use crate::kernel::netlink::Netlink;
use crate::kernel::netns;
use crate::state::{Changed, Network};

impl Agent {
    /// Make the kernel and the table match the saved state: bridges adopted or recreated,
    /// veths of running containers adopted when present and recreated with the same addresses
    /// when not, leftovers with our prefix removed.
    pub(super) async fn reconcile(&self) -> Result<()> {
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
        let ids: Vec<ContainerId> = state.containers.keys().cloned().collect();
        let mut keep_veths = Vec::new();
        let mut reattached = Vec::new();
        for cid in &ids {
            let c = state.container(cid)?.clone();
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
                        network_id: ep.network_id.to_string(),
                        container_id: c.id.to_string(),
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
        let changed: Vec<Changed> = reattached.iter().map(Changed::Container).collect();
        self.persist(&state, &changed)?;
        Ok(())
    }
}
