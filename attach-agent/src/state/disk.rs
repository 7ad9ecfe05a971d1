//! The state directory: one file per object (`STATE_DIR/networks/ID.json`,
//! `STATE_DIR/containers/ID.json`), each replaced atomically, made durable by the change's
//! record in `STATE_DIR/journal` before the change is acknowledged (see [`super::journal`]),
//! and loaded (with what is derived rebuilt) at start.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::journal::{Entry, Journal, Kind};
use super::model::{derive, Container, Network, State};
use crate::durable::{self, Flush};
use crate::ids::{ContainerId, InstanceId, NetworkId};

/// An object whose file a change touched.
#[derive(Debug, Clone, Copy)]
pub enum Changed<'a> {
    Network(&'a NetworkId),
    Container(&'a ContainerId),
}

/// Where the state lives. Cheap to clone.
#[derive(Clone)]
pub struct StateDir {
    networks: PathBuf,
    containers: PathBuf,
    journal: Journal,
    /// Held across writing a change's files and taking its record, so that records are in
    /// the order the files were written in.
    order: std::sync::Arc<std::sync::Mutex<()>>,
    /// The single file of earlier versions, migrated at the first load.
    legacy: PathBuf,
    /// This agent's [`InstanceId`], one line.
    instance: PathBuf,
}

fn invalid(path: &Path, e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("{}: {e}", path.display()),
    )
}

/// Every `*.json` object of a directory; temp files of an interrupted write are removed.
/// What a state file must hold beyond what decodes: names that become paths and interface
/// names are checked like API input, as a file edited or damaged by hand must not reach the
/// file system or the kernel either.
pub trait Loaded {
    fn check(&self) -> Result<(), String>;
    /// The id its file is named by.
    fn id(&self) -> &str;
}

impl Loaded for Network {
    fn id(&self) -> &str {
        &self.id
    }

    fn check(&self) -> Result<(), String> {
        if !crate::names::is_valid_name(&self.name) {
            return Err(format!("invalid network name {:?}", self.name));
        }
        if !crate::names::is_valid_ifname(&self.bridge) {
            return Err(format!("invalid bridge name {:?}", self.bridge));
        }
        Ok(())
    }
}

impl Loaded for Container {
    fn id(&self) -> &str {
        &self.id
    }

    fn check(&self) -> Result<(), String> {
        if !crate::names::is_valid_name(&self.name) {
            return Err(format!("invalid container name {:?}", self.name));
        }
        if !crate::names::is_valid_hostname(&self.hostname) {
            return Err(format!("invalid hostname {:?}", self.hostname));
        }
        if self.owns_netns && self.netns != crate::kernel::netns::named_path(&self.name) {
            return Err(format!(
                "namespace {} is not the agent's /run/netns/{}",
                self.netns.display(),
                self.name
            ));
        }
        for e in &self.endpoints {
            if let Some(a) = &e.attached {
                for n in [&a.ifname, &a.host_veth] {
                    if !crate::names::is_valid_ifname(n) {
                        return Err(format!("invalid interface name {n:?}"));
                    }
                }
            }
        }
        Ok(())
    }
}

/// One object from its file: read, decoded, checked, and named by its own id.
fn read_object<T: serde::de::DeserializeOwned + Loaded>(path: &Path) -> Result<T, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let object: T = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    object.check()?;
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    if stem != object.id() {
        return Err(format!("it holds object {}", object.id()));
    }
    Ok(object)
}

/// Move a file that cannot be loaded out of the way (`NAME.corrupt-UNIXTIME`, kept for a
/// look), so one bad file costs its own object, not the start.
fn set_aside(path: &Path, why: &str) -> std::io::Result<PathBuf> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".corrupt-{secs}"));
    let to = path.with_file_name(name);
    std::fs::rename(path, &to)?;
    if let Some(dir) = path.parent() {
        durable::sync_dir(dir)?;
    }
    tracing::error!(file = %path.display(), moved_to = %to.display(), why, "a state file cannot be loaded; set aside");
    Ok(to)
}

fn read_objects<T: serde::de::DeserializeOwned + Loaded>(
    dir: &Path,
    aside: &mut Vec<PathBuf>,
) -> std::io::Result<Vec<T>> {
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
        match read_object(&path) {
            Ok(object) => out.push(object),
            Err(why) => aside.push(set_aside(&path, &why)?),
        }
    }
    Ok(out)
}

impl StateDir {
    /// The state directory at `dir` (made when missing), with the changes of its journal
    /// that did not reach the files before a crash written into them.
    pub fn new(dir: &Path) -> std::io::Result<StateDir> {
        let (networks, containers) = (dir.join("networks"), dir.join("containers"));
        std::fs::create_dir_all(&networks)?;
        std::fs::create_dir_all(&containers)?;
        let (journal, replayed) = Journal::open(&dir.join("journal"), &networks, &containers)?;
        if replayed > 0 {
            tracing::info!(
                changes = replayed,
                "state files brought up to date from the journal"
            );
        }
        Ok(StateDir {
            networks,
            containers,
            journal,
            order: Default::default(),
            legacy: dir.join("state.json"),
            instance: dir.join("instance-id"),
        })
    }

    /// This agent's id: the one saved here, or a fresh one saved durably on first start. A
    /// file that holds anything else is an error, never replaced: a new id would disown every
    /// link the agent made.
    pub fn instance_id(&self) -> std::io::Result<InstanceId> {
        match std::fs::read_to_string(&self.instance) {
            Ok(text) => InstanceId::parse(text.trim()).map_err(|e| invalid(&self.instance, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = InstanceId::random();
                durable::replace(
                    &self.instance,
                    format!("{id}\n").as_bytes(),
                    Flush::FileAndDir,
                )?;
                Ok(id)
            }
            Err(e) => Err(std::io::Error::new(
                e.kind(),
                format!("{}: {e}", self.instance.display()),
            )),
        }
    }

    /// The saved state (empty on first start), with the derived parts rebuilt.
    pub fn load(&self) -> std::io::Result<State> {
        Ok(self.load_report()?.0)
    }

    /// [`StateDir::load`], and the files set aside because they could not be loaded (each
    /// logged: unreadable, not JSON, names that fail their checks, named for another id).
    pub fn load_report(&self) -> std::io::Result<(State, Vec<PathBuf>)> {
        let mut aside = Vec::new();
        let mut state = State::default();
        match std::fs::read(&self.legacy) {
            Ok(bytes) => {
                state = serde_json::from_slice(&bytes).map_err(|e| invalid(&self.legacy, e))?;
                for c in state.containers.values() {
                    c.check().map_err(|e| invalid(&self.legacy, e))?;
                }
                for n in state.networks.values() {
                    n.check().map_err(|e| invalid(&self.legacy, e))?;
                }
                tracing::info!(path = %self.legacy.display(), "migrating to one file per object");
                for c in state.containers.values() {
                    self.write(&self.containers, &c.id, c)?;
                }
                for n in state.networks.values() {
                    self.write(&self.networks, &n.id, n)?;
                }
                durable::sync_dir(&self.containers)?;
                durable::sync_dir(&self.networks)?;
                std::fs::remove_file(&self.legacy)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                for n in read_objects::<Network>(&self.networks, &mut aside)? {
                    state.networks.insert(n.id.clone(), n);
                }
                for c in read_objects::<Container>(&self.containers, &mut aside)? {
                    state.containers.insert(c.id.clone(), c);
                }
            }
            Err(e) => return Err(e),
        }
        derive(&mut state);
        Ok((state, aside))
    }

    /// Make the files of `changed` objects match `state` (written, or removed when the object
    /// is gone), durably, before the change is acknowledged.
    pub fn persist(&self, state: &State, changed: &[Changed<'_>]) -> std::io::Result<()> {
        let mut entries = Vec::with_capacity(changed.len());
        for c in changed {
            entries.push(match *c {
                Changed::Network(id) => Entry {
                    kind: Kind::Network,
                    id: id.to_string(),
                    bytes: state.networks.get(id).map(encode).transpose()?,
                },
                Changed::Container(id) => Entry {
                    kind: Kind::Container,
                    id: id.to_string(),
                    bytes: state.containers.get(id).map(encode).transpose()?,
                },
            });
        }
        self.save(&entries)
    }

    /// One container's file written, its record taken; [`Saving::wait`] for it to be on disk
    /// (so the caller can do other work meanwhile, without its own lock).
    pub fn start_container_write(&self, c: &Container) -> std::io::Result<Saving> {
        self.start_save(&[Entry {
            kind: Kind::Container,
            id: c.id.to_string(),
            bytes: Some(encode(c)?),
        }])
    }

    fn dir_of(&self, kind: Kind) -> &Path {
        match kind {
            Kind::Network => &self.networks,
            Kind::Container => &self.containers,
        }
    }

    /// Write the files of a change, then make it durable.
    fn save(&self, entries: &[Entry]) -> std::io::Result<()> {
        self.start_save(entries)?.wait()
    }

    /// Write the new contents of a change into its files' spares and take its journal record,
    /// flushed with those of concurrent changes when waited for (the files take the contents
    /// then: see [`super::journal`]); or, for a change too big for a record, write them file by
    /// file (each flushed, then the directories) once the journal's records are all in their
    /// files.
    fn start_save(&self, entries: &[Entry]) -> std::io::Result<Saving> {
        let order = self.order.lock().unwrap_or_else(|p| p.into_inner());
        let files: Vec<PathBuf> = entries
            .iter()
            .map(|e| self.dir_of(e.kind).join(format!("{}.json", e.id)))
            .collect();
        if Journal::too_big(entries) {
            self.journal.settle()?;
            self.write_now(entries, &files)?;
            return Ok(Saving(None));
        }
        // Changes whose files could not take them first, or none (they would be replayed
        // over this one at the next start).
        self.journal.retry_held()?;
        // The files themselves are untouched until the record is on disk: a failure here or
        // in the flush leaves nothing to put back (a spare holds no one's content).
        for (e, path) in entries.iter().zip(&files) {
            if let Some(b) = &e.bytes {
                durable::write_spare(path, b, false)?;
            }
        }
        let seq = self.journal.enqueue(entries, &files)?;
        drop(order);
        Ok(Saving(Some((self.clone(), seq))))
    }

    /// A change too big for a record, written file by file, each flushed, then their
    /// directories; on failure the files written are put back.
    fn write_now(&self, entries: &[Entry], files: &[PathBuf]) -> std::io::Result<()> {
        let mut before = Before(Vec::with_capacity(entries.len()));
        for (e, path) in entries.iter().zip(files) {
            let held = match std::fs::read(path) {
                Ok(b) => Some(b),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
                Err(err) => {
                    before.put_back(self);
                    return Err(std::io::Error::new(
                        err.kind(),
                        format!("reading {}: {err}", path.display()),
                    ));
                }
            };
            let written = match &e.bytes {
                Some(b) => durable::replace_recycling(path, b, Flush::File),
                None => remove(path),
            };
            if let Err(err) = written {
                // This file is as it was; those written before it are put back.
                before.put_back(self);
                return Err(err);
            }
            before.0.push((path.clone(), held));
        }
        for kind in [Kind::Network, Kind::Container] {
            if entries.iter().any(|e| e.kind == kind) {
                durable::sync_dir(self.dir_of(kind))?;
            }
        }
        Ok(())
    }

    /// One object's file, replaced atomically and flushed (the directory is flushed by the
    /// caller, once for all the objects of a change).
    fn write(&self, dir: &Path, id: &str, value: &impl Serialize) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(value).map_err(std::io::Error::other)?;
        durable::replace_recycling(&dir.join(format!("{id}.json")), &bytes, Flush::File)
    }
}

/// A change whose record is taken: on disk, and in its files, once [`Saving::wait`] returns.
#[must_use]
pub struct Saving(Option<(StateDir, u64)>);

impl Saving {
    /// Block until the change is on disk (a group flush, led by this caller when none runs).
    /// On failure the files hold what they held before.
    pub fn wait(self) -> std::io::Result<()> {
        match self.0 {
            Some((dir, seq)) => dir.journal.wait_durable(seq),
            None => Ok(()),
        }
    }
}

/// Files as they were before a change: (path, content or absent).
struct Before(Vec<(PathBuf, Option<Vec<u8>>)>);

impl Before {
    /// Put every file back, flushed, with its directory (best effort: a failure is logged,
    /// the caller reports the change's own error).
    fn put_back(&self, dir: &StateDir) {
        for (path, held) in &self.0 {
            let back = match held {
                Some(b) => durable::replace_recycling(path, b, Flush::File),
                None => remove(path),
            };
            if let Err(e) = back {
                tracing::error!(file = %path.display(), error = %e, "cannot put a state file back after a failed change");
            }
        }
        for d in [&dir.networks, &dir.containers] {
            if let Err(e) = durable::sync_dir(d) {
                tracing::error!(dir = %d.display(), error = %e, "cannot flush a state directory");
            }
        }
    }
}

fn encode(value: &impl Serialize) -> std::io::Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(std::io::Error::other)
}

fn remove(path: &Path) -> std::io::Result<()> {
    match durable::remove_recycled(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(std::io::Error::new(
            e.kind(),
            format!("removing {}: {e}", path.display()),
        )),
        _ => Ok(()),
    }
}
