//! The agent's errors, with Docker's texts (docs/behaviour.md §2–§5) and the HTTP status the
//! Engine API uses.

use thiserror::Error;

use crate::ipam::IpamError;
use crate::kernel::netlink::NetlinkError;

#[derive(Debug, Error)]
pub enum AgentError {
    #[error("network {0} not found")]
    NoSuchNetwork(String),
    #[error("No such container: {0}")]
    NoSuchContainer(String),
    #[error("network {0} is ambiguous ({1} matches found based on ID prefix)")]
    AmbiguousNetwork(String, usize),
    #[error("multiple IDs found with provided prefix: {0}")]
    AmbiguousContainer(String),
    #[error("network with name {0} already exists")]
    NetworkExists(String),
    #[error("Conflict. The container name \"/{name}\" is already in use by container \"{id}\". You have to remove (or rename) that container to be able to reuse that name.")]
    ContainerExists { name: String, id: String },
    #[error("endpoint with name {container} already exists in network {network}")]
    AlreadyConnected { container: String, network: String },
    #[error("container {container} is not connected to network {network}")]
    NotConnected { container: String, network: String },
    #[error("network {0} has active endpoints")]
    ActiveEndpoints(String),
    #[error("invalid IPv4 address: {0}")]
    BadIpv4(String),
    #[error("invalid IPv6 address: {0}")]
    BadIpv6(String),
    #[error("invalid link-local IP address: {0}")]
    BadLinkLocal(String),
    #[error("bad format for links: {0}")]
    BadLink(String),
    #[error(
        "invalid name {0:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed, at most {1} characters"
    )]
    BadName(String, usize),
    #[error("plugin \"{0}\" not found")]
    NoSuchDriver(String),
    #[error("{0}")]
    Invalid(String),
    #[error("Container {0} is not running")]
    NotRunning(String),
    #[error("Container {0} is not paused")]
    NotPaused(String),
    #[error("Container {0} is paused, unpause the container before stopping or killing")]
    Paused(String),
    #[error("You cannot remove a running container {0}. Stop the container before attempting removal or force remove")]
    RemoveRunning(String),
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Dns(#[from] resolver::ServerError),
    #[error(transparent)]
    Table(#[from] resolver::TableError),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::StoreError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("{0} networks need a cluster store: start the daemon with --cluster-store etcd://HOST:PORT --advertise-addr IP")]
    NoCluster(String),
}

impl AgentError {
    /// The status code the Engine API answers this error with.
    pub fn status(&self) -> u16 {
        use AgentError::*;
        match self {
            NoSuchNetwork(_) | NoSuchContainer(_) => 404,
            AmbiguousNetwork(..) | AmbiguousContainer(_) => 400,
            NetworkExists(_) | ContainerExists { .. } | RemoveRunning(_) => 409,
            AlreadyConnected { .. } | ActiveEndpoints(_) => 403,
            NotRunning(_) | NotPaused(_) | Paused(_) => 409,
            NotConnected { .. } => 404,
            BadIpv4(_) | BadIpv6(_) | BadLinkLocal(_) | BadLink(_) | BadName(..) | Invalid(_) => {
                400
            }
            NoSuchDriver(_) => 404,
            Ipam(IpamError::InUse) => 409,
            Ipam(IpamError::Overlap) => 403,
            Ipam(IpamError::Exhausted { .. }) | Ipam(IpamError::NoDefaultPool) => 503,
            Ipam(_) => 400,
            Netlink(_) | Io { .. } | Dns(_) | Table(_) => 500,
            Cluster(_) => 503,
            NoCluster(_) | Config(_) => 400,
        }
    }

    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> AgentError {
        let what = what.into();
        move |source| AgentError::Io { what, source }
    }
}

pub type Result<T> = std::result::Result<T, AgentError>;
