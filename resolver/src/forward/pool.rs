//! Long-lived UDP sockets to the upstreams, and the queries waiting on each.
//!
//! Creating a socket per forwarded query (bind, connect, register with epoll, close) cost more
//! than everything else the forwarder does. Instead each upstream has a few sockets, each
//! connected (the kernel drops datagrams from any other address or port) and bound to a random
//! port the kernel picks; a query goes out on one of them chosen at random, with an id from a
//! CSPRNG not already waiting on that socket. A reply is taken only when id and question both
//! match. Sockets are replaced after [`ROTATE_AFTER`] or [`ROTATE_AFTER_QUERIES`], so the
//! source ports an off-path spoofer must guess keep changing.
//!
//! This module knows sockets and matching only; what a reply means is the forwarder's business.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use socket2::{Domain, Protocol, Socket, Type};

/// Sockets per upstream.
pub const POOL_SIZE: usize = 4;
/// A socket older than this is replaced.
pub const ROTATE_AFTER: Duration = Duration::from_secs(60);
/// A socket that carried this many queries is replaced.
pub const ROTATE_AFTER_QUERIES: u64 = 20_000;

/// Most queries waiting on one socket (ids are 16 bits; the budget's caps keep far fewer in
/// flight).
const MAX_WAITING: usize = 16_384;

/// Why a query was not sent.
#[derive(Debug)]
pub enum SendError {
    /// The socket is out of service: pick another.
    Retired,
    /// Its id space is nearly used up: pick another.
    Full,
    Io(io::Error),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Retired => f.write_str("socket retired"),
            SendError::Full => f.write_str("too many queries waiting on the socket"),
            SendError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// A query waiting for its reply.
#[derive(Debug)]
pub struct Pending<T> {
    pub job: T,
    pub sent_at: Instant,
    pub deadline: Instant,
}

/// One connected socket to one upstream.
#[derive(Debug)]
pub struct UpSocket<T> {
    pub server: SocketAddr,
    pub sock: UdpSocket,
    waiting: Mutex<HashMap<u16, Pending<T>>>,
    born: Instant,
    sent: AtomicU64,
    retired: AtomicBool,
}

impl<T> UpSocket<T> {
    /// A non-blocking UDP socket on a kernel-chosen port, connected to `server`.
    pub fn open(server: SocketAddr) -> io::Result<UpSocket<T>> {
        let domain = if server.is_ipv4() {
            Domain::IPV4
        } else {
            Domain::IPV6
        };
        let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_nonblocking(true)?;
        s.set_recv_buffer_size(1 << 20).ok();
        let any: SocketAddr = if server.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        s.bind(&any.into())?;
        s.connect(&server.into())?;
        Ok(UpSocket {
            server,
            sock: s.into(),
            waiting: Mutex::new(HashMap::new()),
            born: Instant::now(),
            sent: AtomicU64::new(0),
            retired: AtomicBool::new(false),
        })
    }

    fn waiting(&self) -> MutexGuard<'_, HashMap<u16, Pending<T>>> {
        // A panic while holding this lock leaves a consistent map (inserts and removes only).
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Send `query` (its id is overwritten with a fresh one) and keep `job` waiting until
    /// `deadline`. On a send error, or when the socket is retired, the job comes back.
    pub fn send(&self, query: &mut [u8], job: T, timeout: Duration) -> Result<(), (T, SendError)> {
        let now = Instant::now();
        let id = {
            let mut waiting = self.waiting();
            // Checked under the lock `retire` takes: once retired and idle, a socket stays
            // idle, so forgetting it loses nothing.
            if self.is_retired() {
                return Err((job, SendError::Retired));
            }
            if waiting.len() >= MAX_WAITING {
                return Err((job, SendError::Full));
            }
            let id = loop {
                let id: u16 = rand::random();
                if !waiting.contains_key(&id) {
                    break id;
                }
            };
            waiting.insert(
                id,
                Pending {
                    job,
                    sent_at: now,
                    deadline: now + timeout,
                },
            );
            id
        };
        query[..2].copy_from_slice(&id.to_be_bytes());
        // Inserted before sending: the reply may come back before `send` returns.
        match self.sock.send(query) {
            Ok(_) => {
                self.sent.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => match self.waiting().remove(&id) {
                Some(p) => Err((p.job, SendError::Io(e))),
                // Taken meanwhile (a reply raced the error): nothing to give back.
                None => Ok(()),
            },
        }
    }

    /// The job waiting for `reply`, if its id is waiting and `matches` accepts the reply for
    /// that job and id (same question).
    pub fn take(&self, reply: &[u8], matches: impl Fn(&T, u16) -> bool) -> Option<Pending<T>> {
        let id = u16::from_be_bytes([*reply.first()?, *reply.get(1)?]);
        let mut waiting = self.waiting();
        if !matches(&waiting.get(&id)?.job, id) {
            return None;
        }
        waiting.remove(&id)
    }

    /// Jobs whose deadline has passed, taken out.
    pub fn expired(&self, now: Instant) -> Vec<Pending<T>> {
        let mut waiting = self.waiting();
        if waiting.values().all(|p| p.deadline > now) {
            return Vec::new();
        }
        let ids: Vec<u16> = waiting
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(&id, _)| id)
            .collect();
        ids.into_iter()
            .filter_map(|id| waiting.remove(&id))
            .collect()
    }

    /// Every waiting job, taken out (the server's port is closed).
    pub fn drain(&self) -> Vec<Pending<T>> {
        self.waiting().drain().map(|(_, p)| p).collect()
    }

    pub fn is_idle(&self) -> bool {
        self.waiting().is_empty()
    }

    /// Whether this socket should be replaced: it served long enough, or it was retired in
    /// place (its reader could not start).
    pub fn due_for_rotation(&self, now: Instant) -> bool {
        now.duration_since(self.born) >= ROTATE_AFTER
            || self.sent.load(Ordering::Relaxed) >= ROTATE_AFTER_QUERIES
            || self.is_retired()
    }

    /// Out of service: no new queries; it serves the waiting ones and then closes.
    pub fn retire(&self) {
        let _waiting = self.waiting();
        self.retired.store(true, Ordering::Relaxed);
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }
}

/// The sockets of one upstream.
#[derive(Debug)]
pub struct Pool<T> {
    pub server: SocketAddr,
    sockets: ArcSwap<Vec<Arc<UpSocket<T>>>>,
}

impl<T> Pool<T> {
    /// A pool of [`POOL_SIZE`] fresh sockets to `server`.
    pub fn open(server: SocketAddr) -> io::Result<Pool<T>> {
        let sockets = (0..POOL_SIZE)
            .map(|_| UpSocket::open(server).map(Arc::new))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Pool {
            server,
            sockets: ArcSwap::from_pointee(sockets),
        })
    }

    pub fn sockets(&self) -> Arc<Vec<Arc<UpSocket<T>>>> {
        self.sockets.load_full()
    }

    /// One of the sockets, at random.
    pub fn pick(&self) -> Arc<UpSocket<T>> {
        let s = self.sockets.load();
        s[fastrand::usize(..s.len())].clone()
    }

    /// Put `fresh` in the place of `old`, which is retired; false if `old` is not in the pool.
    pub fn replace(&self, old: &Arc<UpSocket<T>>, fresh: Arc<UpSocket<T>>) -> bool {
        let mut list: Vec<_> = self.sockets.load().iter().cloned().collect();
        let Some(slot) = list.iter_mut().find(|s| Arc::ptr_eq(s, old)) else {
            return false;
        };
        *slot = fresh;
        self.sockets.store(Arc::new(list));
        old.retire();
        true
    }

    /// Retire every socket (the server is no longer listed); they are returned to be drained.
    pub fn retire_all(&self) -> Vec<Arc<UpSocket<T>>> {
        let all = self.sockets();
        for s in all.iter() {
            s.retire();
        }
        all.iter().cloned().collect()
    }
}
