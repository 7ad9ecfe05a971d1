//! Kernel handles kept from one operation to the next, so that a connect does not pay again
//! for what an earlier one already found: a netlink socket inside each namespace the agent
//! made ([`Insides`]), and each bridge's index ([`BridgeIndexes`]).
//!
//! Why: measured in the connect breakdown (`compare --agent 10`), opening a namespace's
//! socket (a thread that enters it, the socket, its connection task) and listing its links
//! took 0.16–0.21 ms of a 1.4 ms connect, and asking the bridge's index 0.07–0.12 ms; the
//! kernel floor the benchmark compares with holds both already.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::netlink::Netlink;

/// A namespace, held open, and a netlink connection inside it. Cheap to clone.
#[derive(Clone)]
pub struct Inside {
    pub ns: Arc<File>,
    pub netlink: Netlink,
    /// The namespace's identity (nsfs device and inode) when it was opened.
    id: (u64, u64),
}

impl Inside {
    /// `netlink`, a connection made inside `ns`.
    pub fn new(ns: File, netlink: Netlink) -> std::io::Result<Inside> {
        let m = ns.metadata()?;
        Ok(Inside {
            ns: Arc::new(ns),
            netlink,
            id: (m.dev(), m.ino()),
        })
    }
}

/// Sockets inside the namespaces the agent made (`/run/netns/NAME`), by path, for as long as
/// the namespace lives. Only those: a socket holds its namespace alive, and one a runtime
/// made (a process's, or podman's) must die when its owner lets it go (the agent learns of
/// it from the veth the kernel deletes with it). At most `cap` are kept (two descriptors
/// each); past that, each connect opens its own, as before.
pub struct Insides {
    kept: Mutex<HashMap<PathBuf, Inside>>,
    cap: usize,
}

impl Insides {
    pub fn new(cap: usize) -> Insides {
        Insides {
            kept: Mutex::new(HashMap::new()),
            cap,
        }
    }

    /// The kept handle of `path`, if `path` still names the namespace it was opened on (a
    /// namespace made again under the same name is another: its handle is dropped).
    pub fn get(&self, path: &Path) -> Option<Inside> {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        let inside = kept.get(path)?;
        match std::fs::metadata(path) {
            Ok(m) if (m.dev(), m.ino()) == inside.id => Some(inside.clone()),
            _ => {
                kept.remove(path);
                None
            }
        }
    }

    /// Keep `inside` for `path` (when there is room).
    pub fn keep(&self, path: &Path, inside: Inside) {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() < self.cap || kept.contains_key(path) {
            kept.insert(path.to_path_buf(), inside);
        }
    }

    /// Let go of the handle of `path` (its namespace is being removed).
    pub fn forget(&self, path: &Path) {
        self.kept
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(path);
    }
}

/// Each bridge's index in the host's namespace, by name: learnt at the first use, forgotten
/// when the bridge is deleted (and when a request naming the index fails, in case the
/// deletion's event is still on its way).
#[derive(Default)]
pub struct BridgeIndexes(Mutex<HashMap<String, u32>>);

impl BridgeIndexes {
    pub fn get(&self, name: &str) -> Option<u32> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .copied()
    }

    pub fn set(&self, name: &str, index: u32) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), index);
    }

    pub fn forget(&self, name: &str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }
}

/// Raise this process's soft limit on open files to its hard limit (as Go's runtime does for
/// dockerd and containerd): the kept sockets take two descriptors a namespace. Returns the
/// soft limit now in force.
pub fn raise_open_files_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}
