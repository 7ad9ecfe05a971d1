//! The DNS server as one handle: the record table, the responder, the forwarder, and the
//! listeners of every network.
//!
//! This is what the agent embeds and the standalone binary wraps. Adding a network opens its
//! listeners; removing it closes only those.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use thiserror::Error;
use tokio::sync::Mutex;

use crate::config::{ConfigError, ResolverConfig};
use crate::forward::Forwarder;
use crate::listen::{ListenCtx, Listener};
use crate::metrics::exposition::Exposition;
use crate::metrics::DnsMetrics;
use crate::respond::Responder;
use crate::table::{NetworkSpec, Table, TableError};
use crate::upstream::Upstreams;

#[derive(Debug, Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Table(#[from] TableError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

struct Inner {
    table: Table,
    responder: Responder,
    forwarder: Forwarder,
    ctx: ListenCtx,
    metrics: DnsMetrics,
    port: u16,
    /// The `host_names` and `host_address` settings (a restart changes them).
    host: ResolverConfig,
    /// Network id → its listeners. An async mutex: closing a listener awaits its TCP task.
    listeners: Mutex<HashMap<String, Vec<Listener>>>,
}

/// The running DNS server. Cheap to clone.
#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("table", &self.inner.table)
            .field("port", &self.inner.port)
            .finish()
    }
}

impl Server {
    /// Build a server around `table`, counting what it does (see [`crate::metrics`]). Must run
    /// inside a tokio runtime: forwarding and TCP use it, and a resolv.conf watcher is spawned
    /// on it when no upstreams are configured.
    pub fn new(config: &ResolverConfig, table: Table) -> Result<Server, ServerError> {
        Server::with_metrics(config, table, DnsMetrics::on())
    }

    /// [`Server::new`] counting into `metrics` ([`DnsMetrics::off`]: nothing is counted, when
    /// nobody can scrape them).
    pub fn with_metrics(
        config: &ResolverConfig,
        table: Table,
        metrics: DnsMetrics,
    ) -> Result<Server, ServerError> {
        config.validate()?;
        let fixed = config.fixed_upstreams()?;
        let upstreams = if fixed.is_empty() {
            Upstreams::watch_resolv_conf(config.resolv_conf.clone())
        } else {
            Upstreams::fixed(fixed)
        };
        let forwarder = Forwarder::new(upstreams, config.forward_settings(), metrics.clone());
        let responder = Responder::new(table.clone(), config.ttl);
        let ctx = ListenCtx {
            responder: responder.clone(),
            forwarder: forwarder.clone(),
            runtime: tokio::runtime::Handle::current(),
            tcp_idle: config.tcp_idle_timeout(),
            tcp_max: config.max_tcp_connections,
            tcp_inflight: config.max_inflight_per_tcp,
            metrics: metrics.clone(),
        };
        Ok(Server {
            inner: Arc::new(Inner {
                table,
                responder,
                forwarder,
                ctx,
                metrics,
                port: config.port,
                host: ResolverConfig {
                    host_names: config.host_names,
                    host_address: config.host_address.clone(),
                    ..ResolverConfig::default()
                },
                listeners: Mutex::new(HashMap::new()),
            }),
        })
    }

    pub fn table(&self) -> &Table {
        &self.inner.table
    }

    pub fn forwarder(&self) -> &Forwarder {
        &self.inner.forwarder
    }

    pub fn responder(&self) -> &Responder {
        &self.inner.responder
    }

    pub fn metrics(&self) -> &DnsMetrics {
        &self.inner.metrics
    }

    /// Write every DNS metric family (Prometheus text format) into `e`.
    pub fn render_metrics(&self, e: &mut Exposition) {
        crate::metrics::render::dns(
            e,
            &self.inner.metrics,
            &self.inner.forwarder,
            &self.inner.table,
        );
    }

    /// Register a network and listen on its gateway addresses. On a listen error nothing is
    /// left behind (for a network that was new). Adding an existing network again updates it
    /// and replaces its listeners with `listen`.
    pub async fn add_network(
        &self,
        spec: &NetworkSpec,
        listen: &[IpAddr],
    ) -> Result<Vec<SocketAddr>, ServerError> {
        let mut all = self.inner.listeners.lock().await;
        let existed = self.inner.table.network_key(&spec.id).is_some();
        // `host.docker.internal` there: the server's setting, else the listen addresses.
        let spec = &NetworkSpec {
            host_addresses: self.inner.host.host_addresses(listen),
            ..spec.clone()
        };
        let key = self.inner.table.add_network(spec)?;
        let stats = self.inner.metrics.network(&spec.id, &spec.name);
        // Keep listeners on addresses that stay; open the new ones; close the rest.
        let mut old: Vec<Listener> = all.remove(&spec.id).unwrap_or_default();
        let mut opened = Vec::new();
        for &ip in listen {
            // Kept only when bound to the same bridge too (a bridge made again has a new
            // index, and a socket bound to the old one would hear nothing).
            if let Some(pos) = old
                .iter()
                .position(|l| l.addr().ip() == ip && l.device() == spec.bridge_ifindex)
            {
                opened.push(old.swap_remove(pos));
                continue;
            }
            match Listener::open(
                ip,
                self.inner.port,
                spec.bridge_ifindex,
                key,
                stats.clone(),
                &self.inner.ctx,
            ) {
                Ok(l) => opened.push(l),
                Err(source) => {
                    for l in opened {
                        if !old.iter().any(|o| o.addr() == l.addr()) {
                            l.close().await;
                        }
                    }
                    if existed {
                        all.insert(spec.id.clone(), old);
                    } else {
                        self.inner.table.remove_network(&spec.id);
                        self.inner.metrics.remove_network(&spec.id);
                    }
                    return Err(ServerError::Listen {
                        addr: SocketAddr::new(ip, self.inner.port),
                        source,
                    });
                }
            }
        }
        for l in old {
            l.close().await;
        }
        let addrs = opened.iter().map(Listener::addr).collect();
        all.insert(spec.id.clone(), opened);
        Ok(addrs)
    }

    /// Close a network's listeners and drop its records. Other networks are not touched.
    pub async fn remove_network(&self, id: &str) {
        let listeners = self.inner.listeners.lock().await.remove(id);
        for l in listeners.unwrap_or_default() {
            l.close().await;
        }
        self.inner.table.remove_network(id);
        self.inner.metrics.remove_network(id);
    }

    /// Where a network's listeners are bound.
    pub async fn listen_addrs(&self, id: &str) -> Vec<SocketAddr> {
        self.inner
            .listeners
            .lock()
            .await
            .get(id)
            .map(|ls| ls.iter().map(Listener::addr).collect())
            .unwrap_or_default()
    }

    /// Apply the parts of a new configuration that can change while running: TTL and a fixed
    /// upstream list. (Port and timeouts need a restart.)
    pub fn reconfigure(&self, config: &ResolverConfig) -> Result<(), ServerError> {
        config.validate()?;
        self.inner.responder.set_ttl(config.ttl);
        let fixed = config.fixed_upstreams()?;
        if !fixed.is_empty() && *self.inner.forwarder.upstreams().current() != fixed {
            self.inner.forwarder.upstreams().set(fixed);
            self.inner.forwarder.cache().clear();
        }
        Ok(())
    }

    /// Close every listener.
    pub async fn shutdown(&self) {
        let all: Vec<Listener> = self
            .inner
            .listeners
            .lock()
            .await
            .drain()
            .flat_map(|(_, ls)| ls)
            .collect();
        for l in all {
            l.close().await;
        }
    }
}
