//! The records file of the standalone resolver: networks, their listen addresses, and
//! containers with their endpoints, in TOML (see `configs/records.toml`).
//!
//! A file is parsed and checked whole before anything is applied, so a bad edit changes
//! nothing; applying a good one is a diff against the table, so unchanged records and
//! listeners are never touched (no query is dropped by a reload).

use std::collections::{HashMap, HashSet};
use std::hash::Hasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use serde::Deserialize;
use thiserror::Error;

use crate::config::ResolverConfig;
use crate::server::{Server, ServerError};
use crate::table::{EndpointSpec, Link, NetworkSpec};

#[derive(Debug, Error)]
pub enum RecordsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Syntax(#[from] toml::de::Error),
    #[error(transparent)]
    MetricsAddr(#[from] crate::observe::BadMetricsAddr),
    #[error("network {0:?} is defined twice")]
    DuplicateNetwork(String),
    #[error("container {0:?} is defined twice")]
    DuplicateContainer(String),
    #[error("id {0:?} is given to two networks or two containers")]
    DuplicateId(String),
    #[error("container {container:?}: network {network:?} not found")]
    NoSuchNetwork { container: String, network: String },
    #[error("container {container:?} is on network {network:?} twice")]
    DuplicateEndpoint { container: String, network: String },
    #[error("address {addr} is used twice on network {network:?}")]
    DuplicateAddress { addr: IpAddr, network: String },
    #[error(
        "invalid name {0:?}: use letters, digits, '_', '.', '-', starting with a letter or digit"
    )]
    BadName(String),
    #[error("container {container:?}: {source}")]
    BadLink {
        container: String,
        #[source]
        source: crate::table::spec::BadLink,
    },
    #[error("container {container:?} on network {network:?} has no address")]
    NoAddress { container: String, network: String },
    #[error("invalid dns settings: {0}")]
    Dns(#[from] crate::config::ConfigError),
}

/// The file as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordsFile {
    /// Where `/metrics`, `/health` and `/ready` listen (`IP:PORT`; empty: off). Read at start
    /// only.
    #[serde(default)]
    pub metrics_addr: Option<String>,
    /// DNS server settings (TTL and upstreams also apply on reload).
    #[serde(default)]
    pub dns: Option<ResolverConfig>,
    #[serde(default, rename = "network")]
    pub networks: Vec<NetworkEntry>,
    #[serde(default, rename = "container")]
    pub containers: Vec<ContainerEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkEntry {
    pub name: String,
    /// Defaults to an id derived from the name.
    pub id: Option<String>,
    /// Gateway addresses the DNS server listens on for this network.
    #[serde(default)]
    pub listen: Vec<IpAddr>,
    #[serde(default)]
    pub internal: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerEntry {
    pub name: String,
    /// Defaults to a 64-hex id derived from the name (its first 12 digits resolve too).
    pub id: Option<String>,
    pub hostname: Option<String>,
    #[serde(default, rename = "endpoint")]
    pub endpoints: Vec<EndpointEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointEntry {
    pub network: String,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// `TARGET[:ALIAS]`, as `--link`.
    #[serde(default)]
    pub links: Vec<String>,
}

/// A checked records file, ready to apply.
#[derive(Debug, Clone, Default)]
pub struct Records {
    /// Checked: an address or empty (see [`crate::observe::parse_metrics_addr`]).
    pub metrics_addr: Option<String>,
    pub dns: Option<ResolverConfig>,
    /// Networks with their listen addresses, in file order.
    pub networks: Vec<(NetworkSpec, Vec<IpAddr>)>,
    /// Endpoints in file order (a container's endpoints in its connect order).
    pub endpoints: Vec<EndpointSpec>,
}

/// A stable 64-hex id for a name, so ids (and short ids) survive reloads and restarts.
pub fn derived_id(kind: &str, name: &str) -> String {
    let mut id = String::with_capacity(64);
    for round in 0u64..4 {
        let mut h = std::hash::DefaultHasher::new();
        h.write(kind.as_bytes());
        h.write_u8(0);
        h.write(name.as_bytes());
        h.write_u64(round);
        id.push_str(&format!("{:016x}", h.finish()));
    }
    id
}

/// Docker's rule for container and network names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name.len() <= 255
}

impl Records {
    /// Read and check a records file.
    pub fn load(path: &Path) -> Result<Records, RecordsError> {
        let text = std::fs::read_to_string(path).map_err(|source| RecordsError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Records::parse(&text)
    }

    /// Parse and check records text.
    pub fn parse(text: &str) -> Result<Records, RecordsError> {
        let file: RecordsFile = toml::from_str(text)?;
        if let Some(dns) = &file.dns {
            dns.validate()?;
        }
        if let Some(addr) = &file.metrics_addr {
            crate::observe::parse_metrics_addr(addr)?;
        }
        let mut networks = Vec::new();
        let mut by_name: HashMap<&str, String> = HashMap::new();
        // Ids are the table's keys: two objects sharing one would be merged by the table.
        let (mut net_ids, mut ctr_ids) = (HashSet::new(), HashSet::new());
        for n in &file.networks {
            if !valid_name(&n.name) {
                return Err(RecordsError::BadName(n.name.clone()));
            }
            let id =
                n.id.clone()
                    .unwrap_or_else(|| derived_id("network", &n.name));
            if by_name.insert(&n.name, id.clone()).is_some() {
                return Err(RecordsError::DuplicateNetwork(n.name.clone()));
            }
            if !net_ids.insert(id.clone()) {
                return Err(RecordsError::DuplicateId(id));
            }
            networks.push((
                NetworkSpec {
                    id,
                    name: n.name.clone(),
                    internal: n.internal,
                    bridge_ifindex: None,
                    // Set by whoever serves it, from its `[dns]` settings.
                    host_addresses: Vec::new(),
                    dns_servers: vec![],
                },
                n.listen.clone(),
            ));
        }
        let mut endpoints = Vec::new();
        let mut names = HashSet::new();
        let mut used: HashSet<(String, IpAddr)> = HashSet::new();
        for c in &file.containers {
            if !valid_name(&c.name) {
                return Err(RecordsError::BadName(c.name.clone()));
            }
            if !names.insert(c.name.as_str()) {
                return Err(RecordsError::DuplicateContainer(c.name.clone()));
            }
            let id =
                c.id.clone()
                    .unwrap_or_else(|| derived_id("container", &c.name));
            if !ctr_ids.insert(id.clone()) {
                return Err(RecordsError::DuplicateId(id));
            }
            let mut on = HashSet::new();
            for e in &c.endpoints {
                let net_id = by_name.get(e.network.as_str()).cloned().ok_or_else(|| {
                    RecordsError::NoSuchNetwork {
                        container: c.name.clone(),
                        network: e.network.clone(),
                    }
                })?;
                if !on.insert(e.network.as_str()) {
                    return Err(RecordsError::DuplicateEndpoint {
                        container: c.name.clone(),
                        network: e.network.clone(),
                    });
                }
                if e.ipv4.is_none() && e.ipv6.is_none() {
                    return Err(RecordsError::NoAddress {
                        container: c.name.clone(),
                        network: e.network.clone(),
                    });
                }
                for addr in [e.ipv4.map(IpAddr::V4), e.ipv6.map(IpAddr::V6)]
                    .into_iter()
                    .flatten()
                {
                    if !used.insert((net_id.clone(), addr)) {
                        return Err(RecordsError::DuplicateAddress {
                            addr,
                            network: e.network.clone(),
                        });
                    }
                }
                let links = e
                    .links
                    .iter()
                    .map(|l| l.parse::<Link>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|source| RecordsError::BadLink {
                        container: c.name.clone(),
                        source,
                    })?;
                endpoints.push(EndpointSpec {
                    network_id: net_id,
                    container_id: id.clone(),
                    container_name: c.name.clone(),
                    hostname: c.hostname.clone(),
                    aliases: e.aliases.clone(),
                    links,
                    ipv4: e.ipv4,
                    ipv6: e.ipv6,
                });
            }
        }
        Ok(Records {
            metrics_addr: file.metrics_addr,
            dns: file.dns,
            networks,
            endpoints,
        })
    }

    /// Make the server serve exactly these records: a diff, so what did not change is not
    /// touched.
    pub async fn apply(&self, server: &Server) -> Result<(), ServerError> {
        if let Some(dns) = &self.dns {
            server.reconfigure(dns)?;
        }
        let table = server.table();
        for (spec, listen) in &self.networks {
            server.add_network(spec, listen).await?;
        }
        let wanted: HashMap<(&str, &str), &EndpointSpec> = self
            .endpoints
            .iter()
            .map(|e| ((e.network_id.as_str(), e.container_id.as_str()), e))
            .collect();
        // Remove what went away or changed first, so an address moving between containers is
        // free when its new owner is registered.
        for (net, cid) in table.endpoint_keys() {
            let keep = wanted
                .get(&(net.as_str(), cid.as_str()))
                .is_some_and(|w| table.has_endpoint(w));
            if !keep {
                table.remove_endpoint(&net, &cid);
            }
        }
        for e in &self.endpoints {
            if !table.has_endpoint(e) {
                table.upsert_endpoint(e)?;
            }
        }
        let keep: HashSet<&str> = self.networks.iter().map(|(n, _)| n.id.as_str()).collect();
        for n in table.networks() {
            if !keep.contains(n.id.as_str()) {
                server.remove_network(&n.id).await;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[network]]
name = "front"
listen = ["127.0.0.1"]

[[container]]
name = "web"
[[container.endpoint]]
network = "front"
ipv4 = "127.0.1.2"
aliases = ["www"]
links = ["db:database"]
"#;

    #[test]
    fn parses_and_derives_ids() {
        let r = Records::parse(GOOD).unwrap();
        assert_eq!(r.networks.len(), 1);
        assert_eq!(r.endpoints[0].container_id.len(), 64);
        assert_eq!(
            r.endpoints[0].container_id,
            derived_id("container", "web"),
            "ids are stable"
        );
        assert_eq!(r.endpoints[0].links[0].alias, "database");
    }

    #[test]
    fn ids_given_twice_are_refused() {
        let two_nets = r#"
[[network]]
name = "a"
id = "same"
[[network]]
name = "b"
id = "same"
"#;
        assert!(matches!(
            Records::parse(two_nets),
            Err(RecordsError::DuplicateId(_))
        ));
        let two_ctrs = r#"
[[network]]
name = "a"
[[container]]
name = "x"
id = "same"
[[container.endpoint]]
network = "a"
ipv4 = "10.0.0.2"
[[container]]
name = "y"
id = "same"
[[container.endpoint]]
network = "a"
ipv4 = "10.0.0.3"
"#;
        assert!(matches!(
            Records::parse(two_ctrs),
            Err(RecordsError::DuplicateId(_))
        ));
    }

    #[test]
    fn rejects_bad_files() {
        let bad = GOOD.replace("network = \"front\"", "network = \"back\"");
        assert!(matches!(
            Records::parse(&bad),
            Err(RecordsError::NoSuchNetwork { .. })
        ));
        let bad = GOOD.replace("name = \"web\"", "name = \"../web\"");
        assert!(matches!(
            Records::parse(&bad),
            Err(RecordsError::BadName(_))
        ));
        let bad = GOOD.replace("db:database", "a:b:c");
        assert!(matches!(
            Records::parse(&bad),
            Err(RecordsError::BadLink { .. })
        ));
        assert!(matches!(
            Records::parse("[[network]]\nnmae = \"x\""),
            Err(RecordsError::Syntax(_))
        ));
        let twice = format!("{GOOD}\n[[container]]\nname = \"web\"\n");
        assert!(matches!(
            Records::parse(&twice),
            Err(RecordsError::DuplicateContainer(_))
        ));
    }
}
