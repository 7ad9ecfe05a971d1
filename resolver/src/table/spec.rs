//! What callers hand the table: networks and endpoints with every name they answer to, and
//! the writer API's errors.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use thiserror::Error;

/// Errors of the writer API. Each leaves the table unchanged.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TableError {
    #[error("network {0} not found")]
    NoSuchNetwork(String),
    #[error("a network named {name} already exists with id {id}")]
    NetworkNameTaken { name: String, id: String },
    #[error("invalid name {0:?}: {1}")]
    InvalidName(String, &'static str),
    #[error("address {0} is already registered on network {1}")]
    AddressTaken(IpAddr, String),
}

/// A network as the resolver sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSpec {
    pub id: String,
    pub name: String,
    /// `--internal`: askers only on internal networks get no forwarding.
    pub internal: bool,
    /// The bridge's interface index. When set, the network's listeners are bound to it (what
    /// arrives on another interface is dropped by the kernel), and a query from one of this
    /// network's addresses is only trusted if it arrived on that interface (anti-spoofing
    /// across bridges). None (the standalone resolver): listeners on the address alone.
    pub bridge_ifindex: Option<u32>,
    /// What `host.docker.internal` and `host.containers.internal` answer for askers on this
    /// network; empty: those names are nobody's here. `Server::add_network` sets it from
    /// its settings (`ResolverConfig::host_addresses`) and the network's listen addresses.
    pub host_addresses: Vec<IpAddr>,
    /// Where names not local go for askers on this network that have no servers of their
    /// own (Podman's `network create --dns`); empty: the host's upstreams.
    pub dns_servers: Vec<std::net::SocketAddr>,
}

/// `--link target:alias`, declared by one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Link {
    pub target: String,
    pub alias: String,
}

/// A link that is not `NAME[:ALIAS]`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("bad format for links: {0}")]
pub struct BadLink(pub String);

impl std::str::FromStr for Link {
    type Err = BadLink;
    /// Docker's `NAME[:ALIAS]` form; the alias defaults to the target's name.
    fn from_str(s: &str) -> Result<Self, BadLink> {
        let (target, alias) = match s.split_once(':') {
            Some((t, a)) => (t, a),
            None => (s, s),
        };
        let target = target.trim_start_matches('/');
        if target.is_empty() || alias.is_empty() || alias.contains(':') {
            return Err(BadLink(s.to_string()));
        }
        Ok(Link {
            target: target.to_string(),
            alias: alias.to_string(),
        })
    }
}

/// A container's attachment to one network, with every name it answers to there.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EndpointSpec {
    pub network_id: String,
    pub container_id: String,
    pub container_name: String,
    pub hostname: Option<String>,
    pub aliases: Vec<String>,
    pub links: Vec<Link>,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
}

impl EndpointSpec {
    /// Every name this endpoint answers to on its network, lower-cased, without duplicates:
    /// container name, hostname, 12-hex short id, aliases.
    pub(super) fn names(&self) -> Vec<Box<[u8]>> {
        let short = if self.container_id.len() >= 12 {
            Some(&self.container_id[..12])
        } else {
            None
        };
        let mut seen = HashSet::new();
        std::iter::once(self.container_name.trim_start_matches('/'))
            .chain(self.hostname.as_deref())
            .chain(short)
            .chain(self.aliases.iter().map(String::as_str))
            .map(normalise)
            .filter(|n| !n.is_empty() && seen.insert(n.clone()))
            .map(|n| n.into_bytes().into_boxed_slice())
            .collect()
    }

    /// A 64-bit digest of every field: what the table keeps instead of a copy, so a caller can
    /// ask whether an endpoint is registered exactly so ([`Table::has_endpoint`]).
    pub(super) fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        self.hash(&mut h);
        h.finish()
    }
}

/// Names are matched without regard to case and without the trailing dot.
pub fn normalise(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}
