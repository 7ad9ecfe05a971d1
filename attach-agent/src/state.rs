//! The persisted model: networks, containers, endpoints, addresses. Written whole to
//! `STATE_DIR/state.json` atomically (temp file, fsync, rename, fsync of the directory)
//! before any change is acknowledged, and loaded at start.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ipam::Pool;
use resolver::Link;

/// Everything the agent owns.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    pub networks: BTreeMap<String, Network>,
    pub containers: BTreeMap<String, Container>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub id: String,
    pub name: String,
    /// RFC 3339.
    pub created: String,
    pub driver: String,
    pub internal: bool,
    pub attachable: bool,
    pub labels: BTreeMap<String, String>,
    pub options: BTreeMap<String, String>,
    /// The Linux bridge backing it.
    pub bridge: String,
    pub bridge_mac: [u8; 6],
    pub v4: Pool,
    pub v6: Option<Pool>,
}

impl Network {
    pub fn enable_ipv6(&self) -> bool {
        self.v6.is_some()
    }

    pub fn gateways(&self) -> Vec<IpAddr> {
        std::iter::once(self.v4.gateway)
            .chain(self.v6.as_ref().map(|p| p.gateway))
            .collect()
    }

    /// Give an endpoint's addresses back to the pools.
    pub fn release(&mut self, v4: Ipv4Addr, v6: Option<Ipv6Addr>) {
        self.v4.release(IpAddr::V4(v4));
        if let (Some(p), Some(ip)) = (self.v6.as_mut(), v6) {
            p.release(IpAddr::V6(ip));
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Created,
    Running,
    Paused,
    Exited,
}

impl RunState {
    /// Whether interfaces are attached (running or paused).
    pub fn is_up(self) -> bool {
        matches!(self, RunState::Running | RunState::Paused)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub hostname: String,
    pub image: String,
    pub created: String,
    /// The namespace path; `owned` when the agent made it (and removes it with the container).
    pub netns: PathBuf,
    pub owns_netns: bool,
    pub state: RunState,
    /// When it last started or stopped (RFC 3339), for `ps`.
    pub state_since: String,
    pub labels: BTreeMap<String, String>,
    /// In connect order.
    pub endpoints: Vec<Endpoint>,
}

impl Container {
    pub fn endpoint(&self, network_id: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.network_id == network_id)
    }

    pub fn endpoint_mut(&mut self, network_id: &str) -> Option<&mut Endpoint> {
        self.endpoints
            .iter_mut()
            .find(|e| e.network_id == network_id)
    }

    /// The namespace name for agent-made namespaces (/run/netns/NAME).
    pub fn netns_name(&self) -> Option<&str> {
        if self.owns_netns {
            self.netns.file_name().and_then(|n| n.to_str())
        } else {
            None
        }
    }
}

/// A container's attachment to a network: what was asked (kept across stops) and what is
/// applied while it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub network_id: String,
    pub endpoint_id: String,
    pub aliases: Vec<String>,
    pub links: Vec<Link>,
    pub static_v4: Option<Ipv4Addr>,
    pub static_v6: Option<Ipv6Addr>,
    pub link_local: Vec<IpAddr>,
    /// Set while attached.
    pub attached: Option<Attached>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attached {
    pub ifname: String,
    pub host_veth: String,
    pub mac: [u8; 6],
    pub v4: Ipv4Addr,
    pub v6: Option<Ipv6Addr>,
}

/// Write `bytes` to `path` so that a crash leaves either the old or the new file whole.
/// `durable`: also wait until the new file and its name are on disk (fsync of the file and of
/// the directory) — for the state, which must survive a power cut once acknowledged; files the
/// agent can regenerate at start skip the two flushes.
pub fn write_atomic(path: &Path, bytes: &[u8], durable: bool) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("state"),
        std::process::id()
    ));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        if durable {
            f.sync_all()?;
        }
    }
    std::fs::rename(&tmp, path)?;
    if durable {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Where the state lives.
#[derive(Debug, Clone)]
pub struct Store {
    path: PathBuf,
}

impl Store {
    pub fn new(dir: &Path) -> std::io::Result<Store> {
        std::fs::create_dir_all(dir)?;
        Ok(Store {
            path: dir.join("state.json"),
        })
    }

    /// The saved state, or an empty one on first start.
    pub fn load(&self) -> std::io::Result<State> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: {e}", self.path.display()),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(e),
        }
    }

    pub fn save(&self, state: &State) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(state).map_err(std::io::Error::other)?;
        write_atomic(&self.path, &bytes, true)
    }
}
