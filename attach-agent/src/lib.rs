//! attach-agent: the per-host sidecar that does `docker network connect`'s work (bridges,
//! veths, addresses, routes) and keeps the embedded resolver's record table true.
//!
//! Control path: a front ([`engine`], the Docker Engine API on a unix socket; the [`cli`] is its
//! client) → [`agent`] (the core's operations) → [`ipam`] + [`kernel`] + [`state`] (+
//! [`cluster`] for global networks) → the resolver's table → reply. The modules, one job each:

/// The core: networks, attach (connect/disconnect), containers, reconcile, overlay, mirror.
pub mod agent;
/// The command line: docker-style commands, a client of the daemon's socket.
pub mod cli;
/// Timestamps as the Engine writes them.
pub mod clock;
/// Multi-host: the cluster store (etcd, in-memory) and the operations on it.
pub mod cluster;
/// The CNI front: the `attach-agent-cni` plugin and the daemon's side of it.
pub mod cni;
/// The daemon's settings (file and flags).
pub mod config;
/// `attach-agent daemon`: the agent plus its front, until a signal.
pub mod daemon;
/// Network drivers (bridge, overlay).
pub mod driver;
/// Files written atomically and durably.
pub mod durable;
/// The Docker Engine API front: routes, auth, handlers, JSON types.
pub mod engine;
/// The core's errors.
pub mod error;
/// Object ids.
pub mod ids;
/// Address pools (pure).
pub mod ipam;
/// Kernel work: rtnetlink and network namespaces.
pub mod kernel;
/// MAC addresses: one parser for the Engine API and the CNI front.
pub mod mac;
/// The agent's own counters and metric families (the DNS server's are the resolver's).
pub mod metrics;
/// Docker-style generated container names.
pub mod names;
/// How far the daemon's start has got (`/ready`, `attach-agent info`).
pub mod readiness;
/// The model (networks, containers, endpoints) and its files.
pub mod state;
