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
#[derive(Clone)]
pub struct Insides {
    kept: Arc<Mutex<HashMap<PathBuf, Inside>>>,
    cap: usize,
}

impl Insides {
    /// Kept sockets, at most `cap`; each let go as soon as its `/run/netns/NAME` is removed by
    /// anyone (see [`Insides::forget_when_removed`]).
    pub fn new(cap: usize) -> Insides {
        let insides = Insides {
            kept: Arc::new(Mutex::new(HashMap::new())),
            cap,
        };
        if let Err(e) = insides.forget_when_removed() {
            // Without the watch a namespace deleted behind the agent's back lives until its
            // container's next operation or removal; nothing is kept then.
            tracing::warn!(error = %e, "cannot watch /run/netns; no namespace sockets kept");
            return Insides {
                kept: insides.kept,
                cap: 0,
            };
        }
        insides
    }

    /// Let go of a kept socket as soon as its namespace's name is removed (`ip netns del` on a
    /// running container included): the socket would otherwise hold the namespace alive, with
    /// its veth, so the kernel would never delete the veth and the agent never learn that the
    /// container's network is gone (`agent::vanished`). An inotify watch on `/run/netns`, read
    /// by a thread of its own for as long as the agent lives.
    fn forget_when_removed(&self) -> std::io::Result<()> {
        let dir = Path::new(super::netns::NETNS_RUN_DIR);
        std::fs::create_dir_all(dir)?;
        // SAFETY: inotify_init1 with a valid flag; the fd is owned below.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd was just returned by inotify_init1 and is owned by nothing else.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let c_dir = std::ffi::CString::new(super::netns::NETNS_RUN_DIR)?;
        // SAFETY: a valid inotify fd and a NUL-terminated path.
        let wd = unsafe {
            libc::inotify_add_watch(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                c_dir.as_ptr(),
                libc::IN_DELETE | libc::IN_MOVED_FROM,
            )
        };
        if wd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let kept = Arc::downgrade(&self.kept);
        std::thread::Builder::new()
            .name("netns-watch".into())
            .spawn(move || {
                let mut file = File::from(fd);
                let mut buf = [0u8; 4096];
                loop {
                    let n = match std::io::Read::read(&mut file, &mut buf) {
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            tracing::warn!(error = %e, "the /run/netns watch ended");
                            return;
                        }
                    };
                    let Some(kept) = kept.upgrade() else { return };
                    let mut kept = kept.lock().unwrap_or_else(|p| p.into_inner());
                    let (names, overflow) = removed_names(&buf[..n]);
                    for name in names {
                        kept.remove(&dir.join(name));
                    }
                    if overflow {
                        // Events were lost: every kept path looked at again.
                        kept.retain(|path, inside| {
                            std::fs::metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == inside.id)
                        });
                    }
                }
            })?;
        Ok(())
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
            let id = inside.id;
            kept.insert(path.to_path_buf(), inside);
            // Removed since it was opened (before the watch could see it in the map): let go.
            if !std::fs::metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == id) {
                kept.remove(path);
            }
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

/// The names in a buffer of inotify events (`struct inotify_event`: wd, mask, cookie, len,
/// then `len` bytes of NUL-padded name), and whether the kernel's queue overflowed.
fn removed_names(mut buf: &[u8]) -> (Vec<String>, bool) {
    const HEADER: usize = 16;
    let mut names = Vec::new();
    let mut overflow = false;
    while buf.len() >= HEADER {
        let mask = u32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
        overflow |= mask & libc::IN_Q_OVERFLOW != 0;
        let len = u32::from_ne_bytes([buf[12], buf[13], buf[14], buf[15]]) as usize;
        let Some(name) = buf.get(HEADER..HEADER + len) else {
            break;
        };
        let name = name.split(|b| *b == 0).next().unwrap_or_default();
        if !name.is_empty() {
            names.push(String::from_utf8_lossy(name).into_owned());
        }
        buf = &buf[HEADER + len..];
    }
    (names, overflow)
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
