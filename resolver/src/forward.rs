//! Forwarding: everything that is not a local name goes to the upstream servers, in order.
//!
//! SERVFAIL, REFUSED or silence past the per-server timeout moves on to the next server;
//! any other answer (NXDOMAIN included) is relayed as it is. Each forwarded query gets a fresh
//! random id and a fresh socket with a random source port, connected to the server, and only a
//! reply that matches id and question is taken: spoofed or stray replies are ignored. A cap on
//! queries in flight keeps a dead upstream from piling up tasks: past it the asker gets REFUSED
//! at once, and that is logged at most once a second.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::cache::Cache;
use crate::upstream::Upstreams;
use crate::wire::{self, Rcode, Request};

/// Which transport the asker used: the reply must fit it, and a TCP asker is forwarded over TCP
/// (so answers too large for UDP come through whole).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Counters, for tests and operators.
#[derive(Debug, Default)]
pub struct ForwardStats {
    pub forwarded: AtomicU64,
    pub cache_hits: AtomicU64,
    pub refused_over_cap: AtomicU64,
    pub servfail: AtomicU64,
}

struct Inner {
    upstreams: Upstreams,
    timeout: Duration,
    cap: usize,
    inflight: AtomicUsize,
    cache: Cache,
    stats: ForwardStats,
    started: Instant,
    /// Second (since `started`) of the last "over cap" log line.
    last_cap_log: AtomicU64,
}

/// The forwarder. Cheap to clone; clones share the cache, counters and cap.
#[derive(Clone)]
pub struct Forwarder {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("upstreams", &self.inner.upstreams)
            .field("timeout", &self.inner.timeout)
            .field("cap", &self.inner.cap)
            .finish()
    }
}

/// Decrements the in-flight count however the forward ends.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Forwarder {
    pub fn new(upstreams: Upstreams, timeout: Duration, cap: usize, cache_entries: usize) -> Self {
        Forwarder {
            inner: Arc::new(Inner {
                upstreams,
                timeout,
                cap,
                inflight: AtomicUsize::new(0),
                cache: Cache::new(cache_entries),
                stats: ForwardStats::default(),
                started: Instant::now(),
                last_cap_log: AtomicU64::new(u64::MAX),
            }),
        }
    }

    pub fn upstreams(&self) -> &Upstreams {
        &self.inner.upstreams
    }

    pub fn stats(&self) -> &ForwardStats {
        &self.inner.stats
    }

    pub fn cache(&self) -> &Cache {
        &self.inner.cache
    }

    /// The reply to send for `query` (raw bytes as the asker sent them; already known to parse).
    pub async fn forward(&self, query: &[u8], transport: Transport) -> Vec<u8> {
        let mut out = Vec::new();
        let Ok(req) = wire::parse(query) else {
            // The listener only hands over parsed queries; answer FORMERR defensively.
            wire::write_reject(&mut out, query, wire::Reject::FormErr);
            return out;
        };
        let limit = match transport {
            Transport::Udp => req.udp_limit(),
            Transport::Tcp => wire::TCP_LIMIT,
        };
        if let Some(reply) = self.inner.cache.get(&req) {
            self.inner.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
            return fit(reply, &req, limit);
        }
        if self.inner.inflight.fetch_add(1, Ordering::Relaxed) >= self.inner.cap {
            self.inner.inflight.fetch_sub(1, Ordering::Relaxed);
            self.inner
                .stats
                .refused_over_cap
                .fetch_add(1, Ordering::Relaxed);
            self.log_over_cap();
            wire::write_empty(&mut out, &req, Rcode::Refused);
            return out;
        }
        let _guard = InFlight(&self.inner.inflight);
        let servers = self.inner.upstreams.current();
        for &server in servers.iter() {
            self.inner.stats.forwarded.fetch_add(1, Ordering::Relaxed);
            let id = fastrand::u16(..);
            let mut q = query.to_vec();
            wire::set_id(&mut q, id);
            let attempt = match transport {
                Transport::Udp => ask_udp(server, &q, id, &req, self.inner.timeout).await,
                Transport::Tcp => ask_tcp(server, &q, id, &req, self.inner.timeout).await,
            };
            let mut reply = match attempt {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(%server, error = %e, "upstream failed, trying next");
                    continue;
                }
            };
            match wire::rcode_of(&reply) {
                Some(2) | Some(5) => {
                    tracing::debug!(%server, "upstream answered SERVFAIL/REFUSED, trying next");
                    continue;
                }
                _ => {}
            }
            self.inner.cache.put(&req, &reply);
            wire::set_id(&mut reply, req.id);
            wire::restore_question(&mut reply, &req);
            return fit(reply, &req, limit);
        }
        self.inner.stats.servfail.fetch_add(1, Ordering::Relaxed);
        wire::write_empty(&mut out, &req, Rcode::ServFail);
        out
    }

    fn log_over_cap(&self) {
        let now = self.inner.started.elapsed().as_secs();
        let last = self.inner.last_cap_log.load(Ordering::Relaxed);
        if last != now
            && self
                .inner
                .last_cap_log
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                cap = self.inner.cap,
                refused_total = self.inner.stats.refused_over_cap.load(Ordering::Relaxed),
                "too many forwarded queries in flight: answering REFUSED"
            );
        }
    }
}

/// A reply larger than the asker accepts becomes header + question with TC.
fn fit(reply: Vec<u8>, req: &Request<'_>, limit: usize) -> Vec<u8> {
    if reply.len() <= limit {
        return reply;
    }
    let mut out = Vec::new();
    wire::write_truncated(&mut out, req, wire::rcode_of(&reply).unwrap_or(0));
    out
}

#[derive(Debug, thiserror::Error)]
enum AskError {
    #[error("timed out")]
    Timeout,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("reply does not match the query")]
    Mismatch,
}

fn unspecified_for(server: SocketAddr) -> SocketAddr {
    if server.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    }
}

async fn ask_udp(
    server: SocketAddr,
    q: &[u8],
    id: u16,
    req: &Request<'_>,
    timeout: Duration,
) -> Result<Vec<u8>, AskError> {
    let sock = UdpSocket::bind(unspecified_for(server)).await?;
    // Connected: the kernel drops datagrams from any other address or port.
    sock.connect(server).await?;
    sock.send(q).await?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = tokio::time::timeout_at(deadline, sock.recv(&mut buf))
            .await
            .map_err(|_| AskError::Timeout)??;
        if wire::response_matches(&buf[..n], id, req) {
            buf.truncate(n);
            return Ok(buf);
        }
        tracing::debug!(%server, "ignoring a reply that does not match id and question");
    }
}

async fn ask_tcp(
    server: SocketAddr,
    q: &[u8],
    id: u16,
    req: &Request<'_>,
    timeout: Duration,
) -> Result<Vec<u8>, AskError> {
    let work = async {
        let mut s = TcpStream::connect(server).await?;
        let mut framed = Vec::with_capacity(q.len() + 2);
        framed.extend_from_slice(&(q.len() as u16).to_be_bytes());
        framed.extend_from_slice(q);
        s.write_all(&framed).await?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len).await?;
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut buf).await?;
        if wire::response_matches(&buf, id, req) {
            Ok(buf)
        } else {
            Err(AskError::Mismatch)
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| AskError::Timeout)?
}
