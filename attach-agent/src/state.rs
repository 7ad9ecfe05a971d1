//! The persisted model: networks, containers, endpoints, addresses.
//!
//! One file per object (`STATE_DIR/networks/ID.json`, `STATE_DIR/containers/ID.json`), each
//! replaced atomically (temp file, fsync, rename, fsync of the directory) before a change is
//! acknowledged. A connect or disconnect rewrites one small file, whatever the number of
//! containers: the whole-state file this replaces grew with every container, and so did the
//! time of every connect. What can be derived is not stored: the pools' allocations come from
//! the attached endpoints at load, and endpoints of a network that is gone are dropped then,
//! so removing a network is the removal of one file.

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
    /// Endpoints other hosts serve on global networks, by (network id, endpoint id): mirrored
    /// from the cluster store, never persisted here.
    #[serde(skip)]
    pub remote: BTreeMap<(String, String), crate::cluster::layout::EndpointRecord>,
    /// Global networks built on this host (bridge, tunnel, DNS): those it has endpoints on.
    #[serde(skip)]
    pub joined: std::collections::BTreeSet<String>,
}

impl State {
    /// Copies of one container and some networks, to put back if the operation about to
    /// change them fails. (A copy of the whole state would make every connect cost time in
    /// proportion to the number of containers.)
    pub fn undo_point(&self, cid: &str, networks: &[String]) -> Undo {
        Undo {
            container: self.containers.get(cid).cloned(),
            networks: networks
                .iter()
                .filter_map(|id| self.networks.get(id).cloned())
                .collect(),
        }
    }
}

/// See [`State::undo_point`].
#[must_use]
pub struct Undo {
    container: Option<Container>,
    networks: Vec<Network>,
}

impl Undo {
    pub fn restore(self, state: &mut State) {
        if let Some(c) = self.container {
            state.containers.insert(c.id.clone(), c);
        }
        for n in self.networks {
            state.networks.insert(n.id.clone(), n);
        }
    }
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
    /// Global (overlay) networks: the VXLAN id. Their definition lives in the cluster store;
    /// the file here is a cache that keeps this host's endpoints on them across restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
}

impl Network {
    /// Defined in the cluster store, spanning hosts (Docker's scope `global`).
    pub fn is_global(&self) -> bool {
        self.vni.is_some()
    }

    pub fn scope(&self) -> &'static str {
        if self.is_global() {
            "global"
        } else {
            "local"
        }
    }

    pub fn enable_ipv6(&self) -> bool {
        self.v6.is_some()
    }

    pub fn gateways(&self) -> Vec<IpAddr> {
        std::iter::once(self.v4.gateway)
            .chain(self.v6.as_ref().map(|p| p.gateway))
            .collect()
    }

    /// The pool of `ip`'s family, if the network has one.
    pub fn pool_for(&mut self, ip: IpAddr) -> Option<&mut Pool> {
        if ip.is_ipv4() {
            Some(&mut self.v4)
        } else {
            self.v6.as_mut()
        }
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

/// An object whose file a change touched.
#[derive(Debug, Clone, Copy)]
pub enum Changed<'a> {
    Network(&'a str),
    Container(&'a str),
}

/// Where the state lives.
#[derive(Debug, Clone)]
pub struct Store {
    networks: PathBuf,
    containers: PathBuf,
    /// The single file of earlier versions, migrated at the first load.
    legacy: PathBuf,
}

fn invalid(path: &Path, e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("{}: {e}", path.display()),
    )
}

/// Every `*.json` object of a directory; temp files of an interrupted write are removed.
fn read_objects<T: serde::de::DeserializeOwned>(dir: &Path) -> std::io::Result<Vec<T>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        if !name.ends_with(".json") {
            continue;
        }
        let bytes = std::fs::read(&path)?;
        out.push(serde_json::from_slice(&bytes).map_err(|e| invalid(&path, e))?);
    }
    Ok(out)
}

impl Store {
    pub fn new(dir: &Path) -> std::io::Result<Store> {
        let store = Store {
            networks: dir.join("networks"),
            containers: dir.join("containers"),
            legacy: dir.join("state.json"),
        };
        std::fs::create_dir_all(&store.networks)?;
        std::fs::create_dir_all(&store.containers)?;
        Ok(store)
    }

    /// The saved state (empty on first start), with the derived parts rebuilt.
    pub fn load(&self) -> std::io::Result<State> {
        let mut state = State::default();
        match std::fs::read(&self.legacy) {
            Ok(bytes) => {
                state = serde_json::from_slice(&bytes).map_err(|e| invalid(&self.legacy, e))?;
                tracing::info!(path = %self.legacy.display(), "migrating to one file per object");
                for c in state.containers.values() {
                    self.write(&self.containers, &c.id, c)?;
                }
                for n in state.networks.values() {
                    self.write(&self.networks, &n.id, n)?;
                }
                sync_dir(&self.containers)?;
                sync_dir(&self.networks)?;
                std::fs::remove_file(&self.legacy)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                for n in read_objects::<Network>(&self.networks)? {
                    state.networks.insert(n.id.clone(), n);
                }
                for c in read_objects::<Container>(&self.containers)? {
                    state.containers.insert(c.id.clone(), c);
                }
            }
            Err(e) => return Err(e),
        }
        derive(&mut state);
        Ok(state)
    }

    /// Make the files of `changed` objects match `state` (written, or removed when the object
    /// is gone), durably, before the change is acknowledged.
    pub fn persist(&self, state: &State, changed: &[Changed<'_>]) -> std::io::Result<()> {
        let (mut nets, mut ctrs) = (false, false);
        for c in changed {
            match *c {
                Changed::Network(id) => {
                    nets = true;
                    match state.networks.get(id) {
                        Some(n) => self.write(&self.networks, id, n)?,
                        None => remove(&self.networks, id)?,
                    }
                }
                Changed::Container(id) => {
                    ctrs = true;
                    match state.containers.get(id) {
                        Some(c) => self.write(&self.containers, id, c)?,
                        None => remove(&self.containers, id)?,
                    }
                }
            }
        }
        if nets {
            sync_dir(&self.networks)?;
        }
        if ctrs {
            sync_dir(&self.containers)?;
        }
        Ok(())
    }

    /// One container's file, durably (file and directory flushed).
    pub fn write_container(&self, c: &Container) -> std::io::Result<()> {
        self.write(&self.containers, &c.id, c)?;
        sync_dir(&self.containers)
    }

    /// One object's file, replaced atomically and flushed (the directory is flushed by the
    /// caller, once for all the objects of a change).
    fn write(&self, dir: &Path, id: &str, value: &impl Serialize) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(value).map_err(std::io::Error::other)?;
        let tmp = dir.join(format!(".{id}.tmp"));
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, dir.join(format!("{id}.json")))
    }
}

fn remove(dir: &Path, id: &str) -> std::io::Result<()> {
    match std::fs::remove_file(dir.join(format!("{id}.json"))) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Rebuild what is not stored: endpoints on networks that no longer exist are dropped, and
/// each pool's allocations are the addresses of its attached endpoints. An address claimed
/// twice (a damaged state directory; no sequence of writes makes one) stays with the first
/// claimant; the second endpoint is detached and reconcile removes its veth.
fn derive(state: &mut State) {
    let State {
        networks,
        containers,
        ..
    } = state;
    for c in containers.values_mut() {
        c.endpoints.retain(|e| {
            let keep = networks.contains_key(&e.network_id);
            if !keep {
                tracing::info!(container = %c.name, network = %e.network_id, "dropping the endpoint of a removed network");
            }
            keep
        });
        for e in &mut c.endpoints {
            let Some(a) = &e.attached else { continue };
            let net = networks.get_mut(&e.network_id).expect("kept above");
            let v6 = match (net.v6.as_mut(), a.v6) {
                (Some(p), Some(ip)) => p.reserve(IpAddr::V6(ip)).map(|()| Some(ip)),
                _ => Ok(None),
            };
            match (net.v4.reserve(IpAddr::V4(a.v4)), v6) {
                (Ok(()), Ok(_)) => {}
                (r4, r6) => {
                    tracing::error!(container = %c.name, network = %net.name, "address held twice in the state; detaching the later holder");
                    if r4.is_ok() {
                        net.v4.release(IpAddr::V4(a.v4));
                    }
                    if let Ok(Some(ip)) = r6 {
                        net.v6.as_mut().expect("v6 pool").release(IpAddr::V6(ip));
                    }
                    e.attached = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(id: &str, subnet: &str) -> Network {
        Network {
            id: id.into(),
            name: format!("net-{id}"),
            created: String::new(),
            driver: "bridge".into(),
            internal: false,
            attachable: false,
            labels: BTreeMap::new(),
            options: BTreeMap::new(),
            bridge: format!("br-{id}"),
            bridge_mac: [2, 0x42, 0, 0, 0, 1],
            vni: None,
            v4: Pool::new(subnet.parse().unwrap(), None, None).unwrap(),
            v6: None,
        }
    }

    fn container(id: &str, eps: &[(&str, Option<[u8; 4]>)]) -> Container {
        Container {
            id: id.into(),
            name: format!("ctr-{id}"),
            hostname: id.into(),
            image: "busybox".into(),
            created: String::new(),
            netns: PathBuf::from(format!("/run/netns/{id}")),
            owns_netns: true,
            state: RunState::Running,
            state_since: String::new(),
            labels: BTreeMap::new(),
            endpoints: eps
                .iter()
                .map(|(net, v4)| Endpoint {
                    network_id: (*net).into(),
                    endpoint_id: format!("ep-{id}-{net}"),
                    aliases: vec![],
                    links: vec![],
                    static_v4: None,
                    static_v6: None,
                    link_local: vec![],
                    attached: v4.map(|a| Attached {
                        ifname: "eth0".into(),
                        host_veth: format!("v{id}"),
                        mac: [0; 6],
                        v4: Ipv4Addr::from(a),
                        v6: None,
                    }),
                })
                .collect(),
        }
    }

    fn ips(p: &Pool) -> Vec<String> {
        p.allocated.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn one_file_per_object_with_allocations_derived_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path()).unwrap();
        let mut state = State::default();
        state
            .networks
            .insert("n1".into(), network("n1", "10.1.0.0/24"));
        state
            .containers
            .insert("a".into(), container("a", &[("n1", Some([10, 1, 0, 2]))]));
        state
            .containers
            .insert("b".into(), container("b", &[("n1", None)]));
        store
            .persist(
                &state,
                &[
                    Changed::Network("n1"),
                    Changed::Container("a"),
                    Changed::Container("b"),
                ],
            )
            .unwrap();
        assert!(dir.path().join("containers/a.json").exists());
        // A temp file of a write cut by a crash is ignored and removed.
        std::fs::write(dir.path().join("containers/.c.tmp"), b"{").unwrap();

        let loaded = store.load().unwrap();
        assert_eq!(
            ips(&loaded.networks["n1"].v4),
            ["10.1.0.2"],
            "only the attached one"
        );
        assert_eq!(loaded.containers.len(), 2);
        assert!(!dir.path().join("containers/.c.tmp").exists());

        // A removed container's file goes; a removed network takes its endpoints with it.
        state.containers.remove("b");
        state.networks.remove("n1");
        store
            .persist(&state, &[Changed::Container("b"), Changed::Network("n1")])
            .unwrap();
        let loaded = store.load().unwrap();
        assert!(loaded.networks.is_empty());
        assert_eq!(loaded.containers.len(), 1);
        assert!(loaded.containers["a"].endpoints.is_empty());
    }

    #[test]
    fn an_address_held_twice_stays_with_one_holder() {
        let mut state = State::default();
        state
            .networks
            .insert("n1".into(), network("n1", "10.1.0.0/24"));
        state
            .containers
            .insert("a".into(), container("a", &[("n1", Some([10, 1, 0, 2]))]));
        state
            .containers
            .insert("b".into(), container("b", &[("n1", Some([10, 1, 0, 2]))]));
        derive(&mut state);
        let attached = state
            .containers
            .values()
            .filter(|c| c.endpoints[0].attached.is_some())
            .count();
        assert_eq!(attached, 1);
        assert_eq!(ips(&state.networks["n1"].v4), ["10.1.0.2"]);
    }

    #[test]
    fn the_single_state_file_of_earlier_versions_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = State::default();
        state
            .networks
            .insert("n1".into(), network("n1", "10.1.0.0/24"));
        state
            .containers
            .insert("a".into(), container("a", &[("n1", Some([10, 1, 0, 9]))]));
        std::fs::write(
            dir.path().join("state.json"),
            serde_json::to_vec(&state).unwrap(),
        )
        .unwrap();
        let store = Store::new(dir.path()).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(ips(&loaded.networks["n1"].v4), ["10.1.0.9"]);
        assert!(!dir.path().join("state.json").exists());
        assert!(dir.path().join("networks/n1.json").exists());
        let again = store.load().unwrap();
        assert_eq!(again.containers["a"], loaded.containers["a"]);
    }
}
