//! The agent's configuration: `configs/agent.toml` documents every key; flags override it.

use std::path::{Path, PathBuf};

use resolver::ResolverConfig;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A setting that cannot be used, named as the file and the flags name it.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("link_prefix {0:?}: 1 to 6 letters or digits (interface names are at most 15)")]
    LinkPrefix(String),
    #[error("cluster store {0:?}: only etcd://HOST:PORT[,HOST:PORT...] is supported")]
    StoreScheme(String),
    #[error("cluster store {url:?}: member {member:?} is not HOST:PORT")]
    StoreMember { url: String, member: String },
    #[error("a cluster store needs an advertise address (--advertise-addr IP)")]
    NoAdvertiseAddr,
    #[error("cluster lease_ttl: at least 1 second")]
    LeaseTtl,
    #[error(transparent)]
    Dns(#[from] resolver::config::ConfigError),
}

/// Default API socket.
pub const DEFAULT_SOCKET: &str = "/run/attach-agent/attach-agent.sock";
/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/attach-agent";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// Unix socket of the Engine API.
    pub socket: PathBuf,
    /// Where the state is persisted.
    pub state_dir: PathBuf,
    /// Group allowed on the socket besides root (mode 0660); none: root only.
    pub socket_group: Option<String>,
    /// Prefix of every bridge and veth the agent makes (at most 6 characters). Links with this
    /// prefix that the state does not know are removed at start.
    pub link_prefix: String,
    /// The DNS server.
    pub dns: ResolverConfig,
    /// Multi-host: the cluster store shared with other hosts' agents (global networks).
    pub cluster: ClusterConfig,
}

/// `[cluster]`: absent `store` means everything stays local and nothing external is needed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// `etcd://HOST:PORT[,HOST:PORT...]`: the members of the etcd cluster.
    pub store: Option<String>,
    /// This host's address as other hosts reach it: the VXLAN tunnels' end here, and its
    /// identity in the store.
    pub advertise_addr: Option<std::net::IpAddr>,
    /// Seconds this host's endpoints outlive it in the store when it stops renewing its lease.
    pub lease_ttl: u64,
    /// UDP port of the VXLAN tunnels (the same on every host).
    pub vxlan_port: u16,
    /// Seconds a store operation is retried (members failing) before it is an error.
    pub retry_for: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            store: None,
            advertise_addr: None,
            lease_ttl: 10,
            vxlan_port: 4789,
            retry_for: 15,
        }
    }
}

impl ClusterConfig {
    /// The members of an `etcd://` store URL.
    pub fn etcd_endpoints(&self) -> Result<Option<Vec<String>>, ConfigError> {
        let Some(url) = &self.store else {
            return Ok(None);
        };
        let rest = url
            .strip_prefix("etcd://")
            .ok_or_else(|| ConfigError::StoreScheme(url.clone()))?;
        let members: Vec<String> = rest
            .split(',')
            .map(|m| m.trim().trim_end_matches('/').to_string())
            .collect();
        for m in &members {
            let ok = m
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if !ok {
                return Err(ConfigError::StoreMember {
                    url: url.clone(),
                    member: m.clone(),
                });
            }
        }
        Ok(Some(members))
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            socket: DEFAULT_SOCKET.into(),
            state_dir: DEFAULT_STATE_DIR.into(),
            socket_group: None,
            link_prefix: "aag".into(),
            dns: ResolverConfig::default(),
            cluster: ClusterConfig::default(),
        }
    }
}

impl AgentConfig {
    /// Read a TOML file; missing keys keep their defaults.
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let c: AgentConfig = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        c.validate()?;
        Ok(c)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let p = &self.link_prefix;
        if p.is_empty() || p.len() > 6 || !p.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(ConfigError::LinkPrefix(p.clone()));
        }
        if self.cluster.etcd_endpoints()?.is_some() && self.cluster.advertise_addr.is_none() {
            return Err(ConfigError::NoAdvertiseAddr);
        }
        if self.cluster.lease_ttl == 0 {
            return Err(ConfigError::LeaseTtl);
        }
        Ok(self.dns.validate()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_example_is_the_default() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/agent.toml");
        assert_eq!(
            AgentConfig::load(Path::new(path)).unwrap(),
            AgentConfig::default()
        );
    }

    #[test]
    fn bad_prefix_is_rejected() {
        let c = AgentConfig {
            link_prefix: "much-too-long".into(),
            ..AgentConfig::default()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn cluster_store_urls_are_checked() {
        let with = |store: &str, addr: Option<&str>| AgentConfig {
            cluster: ClusterConfig {
                store: Some(store.into()),
                advertise_addr: addr.map(|a| a.parse().unwrap()),
                ..ClusterConfig::default()
            },
            ..AgentConfig::default()
        };
        let ok = with(
            "etcd://10.0.0.1:2379,etcd-2.example:2379/",
            Some("10.0.0.1"),
        );
        assert!(ok.validate().is_ok());
        assert_eq!(
            ok.cluster.etcd_endpoints().unwrap().unwrap(),
            vec!["10.0.0.1:2379", "etcd-2.example:2379"]
        );
        let no_addr = with("etcd://10.0.0.1:2379", None).validate().unwrap_err();
        assert!(matches!(no_addr, ConfigError::NoAdvertiseAddr));
        assert!(
            no_addr.to_string().contains("--advertise-addr"),
            "{no_addr}"
        );
        for bad in [
            "http://10.0.0.1:2379",
            "etcd://10.0.0.1",
            "etcd://:2379",
            "etcd://h:0",
            "etcd://",
        ] {
            let e = with(bad, Some("10.0.0.1")).validate().unwrap_err();
            assert!(
                matches!(
                    e,
                    ConfigError::StoreScheme(_) | ConfigError::StoreMember { .. }
                ),
                "{bad}: {e}"
            );
            assert!(e.to_string().contains("cluster store"), "{bad}: {e}");
        }
        assert!(AgentConfig::default()
            .cluster
            .etcd_endpoints()
            .unwrap()
            .is_none());
    }
}
