//! `attach-agent daemon`: configuration, the agent, the API socket, signals.

use std::ffi::CString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use resolver::metrics::exposition::Exposition;
use resolver::observe::{Check, ObserveListener, Observed};
use thiserror::Error;

use crate::agent::Agent;
use crate::cli::DaemonArgs;
use crate::config::{AgentConfig, ConfigError};
use crate::error::AgentError;
use crate::readiness::Startup;

/// Why the daemon could not start, or stopped serving.
#[derive(Debug, Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the daemon must run as root (it creates bridges, veths and namespaces)")]
    NotRoot,
    #[error("socket_group {name:?}: {why}")]
    Group { name: String, why: &'static str },
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error("signal handler: {0}")]
    Signal(#[source] std::io::Error),
    #[error("metrics_addr {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("API socket {}: {source}", path.display())]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The configuration from the file (if any) with the flags on top.
pub fn config(args: &DaemonArgs) -> Result<AgentConfig, ConfigError> {
    let mut c = match &args.config {
        Some(p) => AgentConfig::load(p)?,
        None => AgentConfig::default(),
    };
    if let Some(s) = &args.socket {
        c.socket = s.clone();
    }
    if let Some(s) = &args.state_dir {
        c.state_dir = s.clone();
    }
    if !args.upstreams.is_empty() {
        c.dns.upstreams = args.upstreams.clone();
    }
    if args.no_host_names {
        c.dns.host_names = false;
    }
    if !args.host_addresses.is_empty() {
        c.dns.host_address = args.host_addresses.clone();
    }
    if let Some(p) = args.dns_port {
        c.dns.port = p;
    }
    if let Some(p) = &args.link_prefix {
        c.link_prefix = p.clone();
    }
    if let Some(a) = &args.metrics_addr {
        c.metrics_addr = a.clone();
    }
    if let Some(s) = &args.cluster_store {
        c.cluster.store = Some(s.clone());
    }
    if let Some(a) = args.advertise_addr {
        c.cluster.advertise_addr = Some(a);
    }
    if let Some(t) = args.cluster_lease_ttl {
        c.cluster.lease_ttl = t;
    }
    if let Some(g) = args.cluster_claim_grace {
        c.cluster.claim_grace = g;
    }
    let cl = &mut c.cluster;
    cl.ca_file = args.cluster_ca.clone().or(cl.ca_file.take());
    cl.cert_file = args.cluster_cert.clone().or(cl.cert_file.take());
    cl.key_file = args.cluster_key.clone().or(cl.key_file.take());
    cl.username = args.cluster_user.clone().or(cl.username.take());
    cl.password_file = args
        .cluster_password_file
        .clone()
        .or(cl.password_file.take());
    c.validate()?;
    Ok(c)
}

fn group_id(name: &str) -> Result<u32, DaemonError> {
    if let Ok(gid) = name.parse() {
        return Ok(gid);
    }
    let err = |why| DaemonError::Group {
        name: name.to_string(),
        why,
    };
    let c = CString::new(name).map_err(|_| err("not a group name"))?;
    // SAFETY: `c` is a NUL-terminated string that outlives the call. getgrnam returns null or
    // a pointer into a static buffer that stays valid until the next getgrnam on any thread;
    // the daemon calls it once, at start, and reads the result at once.
    let g = unsafe { libc::getgrnam(c.as_ptr()) };
    if g.is_null() {
        Err(err("no such group"))
    } else {
        // SAFETY: `g` is the non-null result just returned, not yet overwritten (see above).
        Ok(unsafe { (*g).gr_gid })
    }
}

/// What the metrics listener shows of the daemon: nothing but readiness until the agent is
/// open, then its metrics and its DNS server's.
struct Shown {
    startup: Arc<Startup>,
    agent: OnceLock<Agent>,
}

impl Observed for Shown {
    async fn render(&self, mut e: Exposition) -> Exposition {
        if let Some(agent) = self.agent.get() {
            agent.render_metrics(&mut e).await;
        }
        e
    }

    fn readiness(&self) -> Vec<Check> {
        self.startup.checks()
    }
}

/// Run until SIGTERM or SIGINT.
pub async fn run(args: DaemonArgs) -> Result<(), DaemonError> {
    let cfg = config(&args)?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(DaemonError::NotRoot);
    }
    let group = cfg.socket_group.as_deref().map(group_id).transpose()?;
    // The metrics listener first: /ready answers (503) while the state loads and reconciles.
    let shown = Arc::new(Shown {
        startup: Arc::default(),
        agent: OnceLock::new(),
    });
    let observer = match cfg.metrics_addr()? {
        Some(addr) => Some(
            ObserveListener::open(addr, shown.clone())
                .await
                .map_err(|source| DaemonError::Metrics { addr, source })?,
        ),
        None => None,
    };
    let agent = Agent::open_reporting(cfg.clone(), shown.startup.clone()).await?;
    if let Some(o) = &observer {
        agent.metrics_listening(o.addr());
    }
    let _ = shown.agent.set(agent.clone());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(DaemonError::Signal)?;
    // One socket, two fronts: the Engine API, and the CNI plugin's calls.
    let app = crate::engine::router(agent.clone()).merge(crate::cni::front::router(agent.clone()));
    let socket_error = |source| DaemonError::Socket {
        path: cfg.socket.clone(),
        source,
    };
    let listener = crate::engine::bind(&cfg.socket, group).map_err(socket_error)?;
    shown.startup.api_listening();
    tracing::info!(
        socket = %cfg.socket.display(),
        state = %cfg.state_dir.display(),
        metrics = ?observer.as_ref().map(|o| o.addr()),
        "attach-agent ready"
    );
    let server = crate::engine::serve_on(app, listener, group);
    tokio::select! {
        r = server => r.map_err(socket_error)?,
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    // Interfaces and namespaces stay: a restarted agent adopts them.
    agent.dns().shutdown().await;
    let _ = std::fs::remove_file(&cfg.socket);
    tracing::info!("attach-agent stopped");
    Ok(())
}
