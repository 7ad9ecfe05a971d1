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
    #[error("link_prefix {prefix:?} would match the host's own interfaces ({like}…): links with the prefix that the state does not know are deleted at start")]
    HostLinkPrefix { prefix: String, like: &'static str },
    #[error("cluster store {0:?}: etcd://HOST:PORT[,HOST:PORT...] (or http://), or https:// / etcds:// for TLS")]
    StoreScheme(String),
    #[error("cluster {0}: needs a TLS store (https:// or etcds://)")]
    TlsWithoutHttps(&'static str),
    #[error("cluster {0}")]
    Incomplete(&'static str),
    #[error("cluster store {url:?}: member {member:?} is not HOST:PORT")]
    StoreMember { url: String, member: String },
    #[error("a cluster store needs an advertise address (--advertise-addr IP)")]
    NoAdvertiseAddr,
    #[error("cluster lease_ttl: at least 1 second")]
    LeaseTtl,
    #[error(transparent)]
    Dns(#[from] resolver::config::ConfigError),
    #[error(transparent)]
    MetricsAddr(#[from] resolver::observe::BadMetricsAddr),
}

/// Name families of interfaces hosts, runtimes and VPNs make. A `link_prefix` that one of these
/// starts with, or that starts with one of them, is refused: the start-up sweep deletes every
/// link with the prefix that the state does not know.
const HOST_LINK_NAMES: &[&str] = &[
    "eth",
    "en",
    "em",
    "wl",
    "ww",
    "ib",
    "sl",
    "usb",
    "lo",
    "br",
    "bond",
    "team",
    "vlan",
    "veth",
    "tun",
    "tap",
    "dummy",
    "docker",
    "virbr",
    "vxlan",
    "geneve",
    "gre",
    "gretap",
    "erspan",
    "ip6",
    "sit",
    "ipip",
    "wg",
    "tailscale",
    "zt",
    "ppp",
    "cni",
    "podman",
    "flannel",
    "cali",
    "cilium",
    "weave",
    "kube",
    "lxc",
    "lxd",
    "vnet",
    "macvtap",
    "nlmon",
    "ovs",
    "genev",
];

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
    /// Where `/metrics` (Prometheus), `/health` and `/ready` listen, `IP:PORT`; empty: no
    /// listener, and nothing is counted.
    pub metrics_addr: String,
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
    /// Seconds a host may be gone from the store (its `hosts/` record expired with its lease)
    /// before any other host releases the address claims it left, one transaction each; 0:
    /// never. Claims carry no lease so that a host back within this time finds its
    /// containers' addresses still its own; one back later may find them given to others.
    pub claim_grace: u64,
    /// TLS (`https://` or `etcds://` stores): the CA that signed the members' certificates;
    /// none: the system's roots are not used, so a TLS store needs it.
    pub ca_file: Option<PathBuf>,
    /// Mutual TLS: this host's client certificate and its key (PEM).
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// etcd RBAC: a user and the file holding its password.
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
}

/// What the members' addresses say about the transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreUrl {
    pub members: Vec<String>,
    pub tls: bool,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            store: None,
            advertise_addr: None,
            lease_ttl: 10,
            vxlan_port: 4789,
            retry_for: 15,
            claim_grace: 3600,
            ca_file: None,
            cert_file: None,
            key_file: None,
            username: None,
            password_file: None,
        }
    }
}

impl ClusterConfig {
    /// The members of the store URL, and whether it asks for TLS.
    pub fn store_url(&self) -> Result<Option<StoreUrl>, ConfigError> {
        let Some(url) = &self.store else {
            return Ok(None);
        };
        let (tls, rest) = [
            ("etcd://", false),
            ("http://", false),
            ("etcds://", true),
            ("https://", true),
        ]
        .iter()
        .find_map(|(scheme, tls)| url.strip_prefix(scheme).map(|r| (*tls, r)))
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
        Ok(Some(StoreUrl { members, tls }))
    }

    /// The members of the store URL.
    pub fn etcd_endpoints(&self) -> Result<Option<Vec<String>>, ConfigError> {
        Ok(self.store_url()?.map(|u| u.members))
    }

    /// TLS and credential settings that make sense together.
    fn validate_security(&self) -> Result<(), ConfigError> {
        let tls = self.store_url()?.is_some_and(|u| u.tls);
        for (set, name) in [
            (self.ca_file.is_some(), "ca_file (--cluster-ca)"),
            (self.cert_file.is_some(), "cert_file (--cluster-cert)"),
            (self.key_file.is_some(), "key_file (--cluster-key)"),
        ] {
            if set && !tls {
                return Err(ConfigError::TlsWithoutHttps(name));
            }
        }
        if tls && self.ca_file.is_none() {
            return Err(ConfigError::Incomplete(
                "store over TLS: ca_file (--cluster-ca) names the CA of the members' certificates",
            ));
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(ConfigError::Incomplete(
                "cert_file (--cluster-cert) and key_file (--cluster-key) go together",
            ));
        }
        if self.username.is_some() && !tls {
            return Err(ConfigError::Incomplete(
                "username (--cluster-user): a password and its token would cross the network in clear; use an https:// or etcds:// store",
            ));
        }
        if self.username.is_some() != self.password_file.is_some() {
            return Err(ConfigError::Incomplete(
                "username (--cluster-user) and password_file (--cluster-password-file) go together",
            ));
        }
        Ok(())
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            socket: DEFAULT_SOCKET.into(),
            state_dir: DEFAULT_STATE_DIR.into(),
            socket_group: None,
            link_prefix: "aag".into(),
            metrics_addr: resolver::observe::DEFAULT_METRICS_ADDR.into(),
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
        let lower = p.to_ascii_lowercase();
        if let Some(like) = HOST_LINK_NAMES
            .iter()
            .find(|h| h.starts_with(&lower) || lower.starts_with(**h))
        {
            return Err(ConfigError::HostLinkPrefix {
                prefix: p.clone(),
                like,
            });
        }
        if self.cluster.etcd_endpoints()?.is_some() && self.cluster.advertise_addr.is_none() {
            return Err(ConfigError::NoAdvertiseAddr);
        }
        if self.cluster.lease_ttl == 0 {
            return Err(ConfigError::LeaseTtl);
        }
        self.cluster.validate_security()?;
        self.metrics_addr()?;
        Ok(self.dns.validate()?)
    }

    /// Where the metrics listener goes (none: off).
    pub fn metrics_addr(&self) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        Ok(resolver::observe::parse_metrics_addr(&self.metrics_addr)?)
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
        let with = |p: &str| {
            AgentConfig {
                link_prefix: p.into(),
                ..AgentConfig::default()
            }
            .validate()
        };
        assert!(with("much-too-long").is_err());
        for host in [
            "eth", "en", "e", "wlan0", "docker", "br", "b", "veth", "lo", "ETH", "vx",
        ] {
            let e = with(host).unwrap_err();
            assert!(
                matches!(
                    e,
                    ConfigError::HostLinkPrefix { .. } | ConfigError::LinkPrefix(_)
                ),
                "{host}: {e}"
            );
        }
        assert!(with("en")
            .unwrap_err()
            .to_string()
            .contains("host's own interfaces"));
        for ok in ["aag", "x123a", "bcg", "mh1"] {
            assert!(with(ok).is_ok(), "{ok}");
        }
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
            "ftp://10.0.0.1:2379",
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

    #[test]
    fn tls_and_credentials_settings_are_checked_together() {
        let with = |store: &str, f: fn(&mut ClusterConfig)| {
            let mut c = AgentConfig {
                cluster: ClusterConfig {
                    store: Some(store.into()),
                    advertise_addr: Some("10.0.0.1".parse().unwrap()),
                    ..ClusterConfig::default()
                },
                ..AgentConfig::default()
            };
            f(&mut c.cluster);
            c.validate()
        };
        let ca = |c: &mut ClusterConfig| c.ca_file = Some("/ca.pem".into());
        assert!(with("https://10.0.0.1:2379", ca).is_ok());
        assert!(with("etcds://10.0.0.1:2379", ca).is_ok());
        let e = with("etcd://10.0.0.1:2379", ca).unwrap_err();
        assert!(e.to_string().contains("--cluster-ca"), "{e}");
        let e = with("https://10.0.0.1:2379", |_| {}).unwrap_err();
        assert!(e.to_string().contains("--cluster-ca"), "{e}");
        let e = with("https://10.0.0.1:2379", |c| {
            c.ca_file = Some("/ca.pem".into());
            c.cert_file = Some("/c.pem".into());
        })
        .unwrap_err();
        assert!(e.to_string().contains("--cluster-key"), "{e}");
        let e = with("https://10.0.0.1:2379", |c| {
            c.ca_file = Some("/ca.pem".into());
            c.username = Some("u".into());
        })
        .unwrap_err();
        assert!(e.to_string().contains("--cluster-password-file"), "{e}");
        fn user(c: &mut ClusterConfig) {
            c.username = Some("u".into());
            c.password_file = Some("/p".into());
        }
        let e = with("etcd://10.0.0.1:2379", user).unwrap_err();
        assert!(e.to_string().contains("in clear"), "{e}");
        assert!(with("https://10.0.0.1:2379", |c| {
            user(c);
            c.ca_file = Some("/ca.pem".into());
        })
        .is_ok());
    }
}
