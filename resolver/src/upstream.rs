//! Where forwarded queries go: a fixed list, or the nameservers of a resolv.conf, re-read when
//! the file changes.
//!
//! The list sits behind an `ArcSwap`, so the query path reads it without a lock and a reload
//! swaps it whole.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

/// Upstream servers of some askers only (a container's `--dns`, a network's DNS servers),
/// instead of the host's: a fixed list, and its bytes for the cache key, which keep their
/// answers apart in the cache (one container's upstream's answer is never given to another
/// asking other servers; the list itself, not a digest that could be made to collide).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Servers {
    list: Arc<[SocketAddr]>,
    key: Arc<[u8]>,
}

impl Servers {
    /// `None` for an empty list (the host's upstreams then).
    pub fn new(list: &[SocketAddr]) -> Option<Servers> {
        if list.is_empty() {
            return None;
        }
        // A marker no question's key ends with, then each address whole (family, address,
        // port): the same list always gives the same bytes, different lists different ones.
        let mut key = vec![0xff];
        for a in list {
            match a.ip() {
                IpAddr::V4(ip) => {
                    key.push(4);
                    key.extend_from_slice(&ip.octets());
                }
                IpAddr::V6(ip) => {
                    key.push(6);
                    key.extend_from_slice(&ip.octets());
                }
            }
            key.extend_from_slice(&a.port().to_be_bytes());
        }
        Some(Servers {
            list: list.into(),
            key: key.into(),
        })
    }

    pub fn list(&self) -> &[SocketAddr] {
        &self.list
    }

    /// What the cache key of their answers ends with.
    pub fn key_bytes(&self) -> &[u8] {
        &self.key
    }
}

/// The current upstream servers. Cheap to clone; clones share the list.
#[derive(Clone, Debug)]
pub struct Upstreams {
    list: Arc<ArcSwap<Vec<SocketAddr>>>,
}

impl Upstreams {
    /// A list that never changes.
    pub fn fixed(list: Vec<SocketAddr>) -> Self {
        Upstreams {
            list: Arc::new(ArcSwap::from_pointee(list)),
        }
    }

    /// The nameservers of `path` now, and a task (on the current tokio runtime) that re-reads
    /// the file when its modification time, size or inode changes. Polling once a second rather
    /// than inotify: it also sees a file replaced by rename or bind mount, which is how
    /// resolv.conf usually changes.
    pub fn watch_resolv_conf(path: PathBuf) -> Self {
        let up = Upstreams::fixed(read_resolv_conf(&path));
        let list = Arc::downgrade(&up.list);
        tokio::spawn(async move {
            let mut seen = stamp(&path);
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let Some(list) = list.upgrade() else { return };
                let now = stamp(&path);
                if now != seen {
                    seen = now;
                    let servers = read_resolv_conf(&path);
                    tracing::info!(path = %path.display(), ?servers, "upstreams re-read");
                    list.store(Arc::new(servers));
                }
            }
        });
        up
    }

    /// The servers to try, in order.
    pub fn current(&self) -> Arc<Vec<SocketAddr>> {
        self.list.load_full()
    }

    /// Replace the list (configuration reload).
    pub fn set(&self, list: Vec<SocketAddr>) {
        self.list.store(Arc::new(list));
    }
}

fn stamp(path: &Path) -> Option<(SystemTime, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

/// The `nameserver` lines of a resolv.conf, port 53. A missing file means no upstreams
/// (every forwarded query then gets SERVFAIL, as with Docker on a host without DNS).
pub fn read_resolv_conf(path: &Path) -> Vec<SocketAddr> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_resolv_conf(&text),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read resolv.conf");
            Vec::new()
        }
    }
}

/// Parse `nameserver` lines; a zone index (`fe80::1%eth0`) is dropped, bad lines are skipped.
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            if words.next()? != "nameserver" {
                return None;
            }
            let addr = words.next()?;
            let addr = addr.split('%').next()?;
            addr.parse::<IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nameservers() {
        let text = "# c\nsearch example.com\nnameserver 10.0.0.1\nnameserver  fe80::1%eth0\nnameserver bad\noptions ndots:0\n";
        assert_eq!(
            parse_resolv_conf(text),
            vec![
                "10.0.0.1:53".parse().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
    }
}
