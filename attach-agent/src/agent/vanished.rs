//! Containers whose namespace died without anyone telling the agent: a runtime that sends no
//! DEL (ctr's detached containers never do), a crashed runtime, `kill -9` of a container's
//! init. The kernel deletes the veth with the namespace and announces it (RTM_DELLINK); the
//! agent follows those announcements, so the records leave DNS and the addresses return to
//! the pool at once, without polling any container.

use std::time::Duration;

use futures::StreamExt;

use super::{Agent, Cleanup};
use crate::error::Result;
use crate::ids::{ContainerId, NetworkId};
use crate::kernel::netlink::Netlink;
use crate::kernel::netns;
use crate::state::{Changed, RunState, State};

impl Agent {
    /// Follow link deletions for as long as the agent lives (a task). When the kernel's
    /// announcements are lost (the subscription ends), subscribe again and look once at every
    /// attachment instead.
    pub(super) fn start_link_watch(&self) {
        let agent = self.clone();
        tokio::spawn(async move {
            loop {
                match Netlink::deleted_links() {
                    Ok(mut gone) => {
                        while let Some(name) = gone.next().await {
                            if name.starts_with(agent.inner.cfg.link_prefix.as_str()) {
                                agent.link_deleted(&name).await;
                            }
                        }
                        tracing::warn!("link events ended; subscribing again");
                    }
                    Err(e) => tracing::error!(error = %e, "cannot follow link events"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                agent.sweep_vanished().await;
                agent.repair_missing_links().await;
            }
        });
    }

    /// The host-side veth of the attachment (`cid`, `net_id`) went with its container's
    /// namespace: the attachment ends.
    pub(super) async fn veth_gone(
        &self,
        mut state: tokio::sync::MutexGuard<'_, State>,
        cid: &ContainerId,
        net_id: &NetworkId,
    ) {
        match self.end_dead_attachment(&mut state, cid, net_id) {
            Ok(cleanup) => cleanup.run(self, state).await,
            Err(e) => {
                tracing::error!(container = %cid, error = %e, "cannot forget the attachment of a dead namespace")
            }
        }
    }

    /// Every attachment whose container's namespace is gone ends (after link events were
    /// lost).
    pub(super) async fn sweep_vanished(&self) {
        let mut state = self.lock_settled().await;
        let dead: Vec<(ContainerId, NetworkId)> = state
            .containers
            .values()
            .filter(|c| c.state.is_up() && !netns::is_netns(&c.netns))
            .flat_map(|c| {
                c.endpoints
                    .iter()
                    .filter(|e| e.attached.is_some())
                    .map(|e| (c.id.clone(), e.network_id.clone()))
            })
            .collect();
        let mut cleanup = Cleanup::default();
        for (cid, net_id) in dead {
            match self.end_dead_attachment(&mut state, &cid, &net_id) {
                Ok(c) => cleanup.extend(c),
                Err(e) => {
                    tracing::error!(container = %cid, error = %e, "cannot forget the attachment of a dead namespace")
                }
            }
        }
        cleanup.run(self, state).await;
    }

    /// End one attachment of a container whose namespace died: a runtime's container loses
    /// the endpoint (and leaves with its last); any other keeps its configuration and is
    /// exited once nothing of it is attached. The veth went with the namespace.
    fn end_dead_attachment(
        &self,
        state: &mut State,
        cid: &ContainerId,
        net_id: &NetworkId,
    ) -> Result<Cleanup> {
        tracing::info!(container = %cid, network = %net_id, "namespace gone: the attachment ends");
        let runtime_owned = state.container(cid)?.cni.is_some();
        let mut cleanup = if runtime_owned {
            self.forget_runtime_endpoint(state, cid, net_id)?
        } else {
            let undo = state.undo_point(cid, &[]);
            let cleanup = self.detach(state, cid, net_id);
            let c = state.container_mut(cid)?;
            if c.endpoints.iter().all(|e| e.attached.is_none()) {
                c.state = RunState::Exited;
                c.state_since = crate::clock::now_rfc3339();
            }
            if let Err(e) = self.persist(state, &[Changed::Container(cid)]) {
                undo.restore(state);
                return Err(e);
            }
            cleanup
        };
        // Nothing to delete: the kernel took the veth with the namespace.
        cleanup.veths_already_gone();
        Ok(cleanup)
    }
}

/// The (container, network) whose attachment's host-side veth is `name`.
pub(super) fn attachment_with_veth(state: &State, name: &str) -> Option<(ContainerId, NetworkId)> {
    state.containers.values().find_map(|c| {
        c.endpoints.iter().find_map(|e| {
            e.attached
                .as_ref()
                .filter(|a| a.host_veth == name)
                .map(|_| (c.id.clone(), e.network_id.clone()))
        })
    })
}
