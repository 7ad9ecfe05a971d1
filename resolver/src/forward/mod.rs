//! Forwarding: everything that is not a local name goes to the upstream servers.
//!
//! Designed like the local path: for a UDP asker, no socket, task or channel per query. Its query is
//! looked up in the cache on the listener's own thread (a hit is answered in the listener's
//! batch, like a local name); a miss becomes a [`Job`] waiting on one of a few long-lived
//! sockets per upstream ([`pool`]), and the task reading that socket sends the reply straight
//! to the asker from the listener's socket. One maintenance task times out waiting jobs,
//! probes demoted servers ([`health`]) and rotates sockets.
//!
//! Which server: those in service by smoothed RTT (or as configured, under strict order), then
//! demoted ones. SERVFAIL, REFUSED, silence past the per-server timeout or a closed port moves
//! the query on to the next server (and demotes a silent or closed one); any other answer,
//! NXDOMAIN included, is relayed as it is. When every server failed, a stale cached answer
//! (RFC 8767) is better than SERVFAIL. Only a reply matching id and question is taken: spoofed
//! or stray replies are ignored. Queries in flight are capped per host and per asker
//! ([`budget`]): past a cap the asker gets REFUSED at once.
//!
//! An asker on TCP is forwarded over TCP, on a kept-open connection per upstream with queries
//! pipelined ([`tcp`]), so answers too large for UDP come through whole; a UDP asker gets a
//! truncated upstream reply as it is (and retries over TCP).

pub mod budget;
pub mod health;
mod pool;
mod tcp;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use smallvec::SmallVec;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::cache::{Cache, CacheLimits};
use crate::metrics::{DnsMetrics, PendingTally, QueryOutcome, Tally};
use crate::upstream::{Servers, Upstreams};
use crate::wire::{self, Rcode};
use budget::{Budget, Refusal};
use health::{Health, Order, PROBE_EVERY};
use pool::{Pending, Pool, SendError, UpSocket};

/// Which transport the asker used: the reply must fit it, and a TCP asker is forwarded over
/// TCP.
pub use crate::wire::Transport;

/// Where a forwarded query's reply goes once it is there.
#[derive(Debug)]
pub enum ReplyTo {
    /// A UDP asker: sent from the listener's socket (so from the address it asked).
    Udp {
        socket: Arc<UdpSocket>,
        client: SocketAddr,
    },
    /// An awaiting task (TCP askers).
    Waiter(oneshot::Sender<Vec<u8>>),
    /// Nobody: a health probe.
    Discard,
}

/// What [`Forwarder::start`] did with a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    /// The reply is in `out`: a cache hit, or REFUSED over a cap, or FORMERR.
    Replied(QueryOutcome),
    /// Sent upstream: the reply will go where `reply_to` says.
    Pending,
}

/// How the forwarder behaves; from [`crate::ResolverConfig`].
#[derive(Debug, Clone, Copy)]
pub struct ForwardSettings {
    /// How long to wait for one server before the next.
    pub timeout: Duration,
    /// Forwarded queries in flight on the host.
    pub host_cap: usize,
    /// Forwarded queries in flight per asking address.
    pub asker_cap: usize,
    /// Try servers in the configured order, not by RTT.
    pub strict_order: bool,
    pub cache: CacheLimits,
}

/// Counters, for tests and operators.
#[derive(Debug, Default)]
pub struct ForwardStats {
    /// Queries sent upstream (each server tried counts).
    pub forwarded: AtomicU64,
    /// REFUSED because the host's cap was reached.
    pub refused_over_cap: AtomicU64,
    /// REFUSED because the asker's own cap was reached.
    pub refused_asker_cap: AtomicU64,
    pub servfail: AtomicU64,
    /// Stale answers given when every upstream failed.
    pub served_stale: AtomicU64,
    /// Server attempts that timed out.
    pub timeouts: AtomicU64,
}

/// One forwarded question, from the asker to its reply.
#[derive(Debug)]
struct Job {
    /// The asker's query, as it came (its id, its letter case).
    query: Box<[u8]>,
    question_end: usize,
    key: Box<[u8]>,
    /// What goes upstream (see [`wire::write_upstream_query`]); the id is set per attempt.
    upstream: SmallVec<[u8; 320]>,
    order: Order,
    /// Index in `order` of the next server to try.
    next: usize,
    /// The largest reply the asker's transport takes.
    limit: usize,
    reply_to: ReplyTo,
    /// The asker's share of the budget, given back when the job ends.
    _slot: Option<budget::Slot>,
    /// Where its outcome is counted (nowhere: a probe, or metrics off), once.
    tally: PendingTally,
    /// When the asker's query was taken (the forwarded-answer latency).
    taken: Instant,
}

impl Job {
    /// The question as sent upstream (the asker's, so in the asker's letter case).
    fn upstream_question(&self) -> &[u8] {
        let len = self.question_end - 12;
        &self.upstream[12..12 + len]
    }
}

struct Inner {
    upstreams: Upstreams,
    settings: ForwardSettings,
    health: Health,
    budget: Budget,
    cache: Cache,
    stats: ForwardStats,
    pools: DashMap<SocketAddr, Arc<Pool<Job>>>,
    /// Servers of some askers only (`Servers`: a container's `--dns`, a network's), with when
    /// a query last went to them: their pools are kept, and they are probed when demoted, for
    /// as long as they are in use (`EXTRA_KEPT` after the last query).
    extra: DashMap<SocketAddr, Instant>,
    /// Sockets out of their pool (rotated, or their server unlisted) with queries that may
    /// still be waiting: their replies are still read and their deadlines still kept.
    draining: std::sync::Mutex<Vec<Arc<UpSocket<Job>>>>,
    tcp: tcp::TcpUpstreams,
    runtime: Handle,
    metrics: DnsMetrics,
}

/// The forwarder. Cheap to clone; clones share the cache, sockets, health and budget. The
/// background tasks end once the last clone is gone.
#[derive(Clone)]
pub struct Forwarder {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("upstreams", &self.inner.upstreams)
            .field("settings", &self.inner.settings)
            .finish()
    }
}

impl Forwarder {
    /// A forwarder to `upstreams`, timing its answers into `metrics`. Must run inside a tokio
    /// runtime: its tasks run there.
    pub fn new(upstreams: Upstreams, settings: ForwardSettings, metrics: DnsMetrics) -> Self {
        let inner = Arc::new(Inner {
            upstreams,
            health: Health::new(settings.strict_order),
            budget: Budget::new(settings.host_cap, settings.asker_cap),
            cache: Cache::new(settings.cache),
            settings,
            stats: ForwardStats::default(),
            pools: DashMap::new(),
            extra: DashMap::new(),
            draining: std::sync::Mutex::new(Vec::new()),
            tcp: tcp::TcpUpstreams::default(),
            runtime: Handle::current(),
            metrics,
        });
        inner.runtime.spawn(maintain(Arc::downgrade(&inner)));
        Forwarder { inner }
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

    pub fn health(&self) -> &Health {
        &self.inner.health
    }

    pub fn budget(&self) -> &Budget {
        &self.inner.budget
    }

    /// Take `query` (raw bytes as `asker` sent them; already known to parse) for forwarding
    /// to `servers` (the asker's own; `None`: the host's upstreams): answered into `out` at
    /// once from the cache (or REFUSED over a cap), or sent upstream with its reply going to
    /// `reply_to`. Never waits. Answers of other servers than the host's are cached apart,
    /// under their servers' tag. A query sent upstream has its outcome counted in `tally`
    /// when it ends; one answered at once is the caller's to count.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        &self,
        query: &[u8],
        asker: IpAddr,
        servers: Option<&Servers>,
        transport: Transport,
        reply_to: ReplyTo,
        tally: Option<Tally>,
        out: &mut Vec<u8>,
    ) -> Started {
        let inner = &self.inner;
        let Ok(req) = wire::parse(query) else {
            // The listeners only hand over parsed queries; answer FORMERR defensively.
            wire::write_reject(out, query, wire::Reject::FormErr);
            return Started::Replied(QueryOutcome::FormErr);
        };
        let limit = match transport {
            Transport::Udp => req.udp_limit(),
            Transport::Tcp => wire::TCP_LIMIT,
        };
        let mut key = wire::cache_key(&req);
        if let Some(s) = servers {
            // The servers themselves, not a digest of them: no list's answers can be made
            // to pass for another's.
            key.extend_from_slice(s.key_bytes());
        }
        if inner.cache.get(&key, &req, out) {
            fit(out, &req, limit);
            return Started::Replied(QueryOutcome::Cached);
        }
        let slot = match inner.budget.acquire(asker) {
            Ok(slot) => slot,
            Err(cap) => {
                let counter = match cap {
                    Refusal::Host => &inner.stats.refused_over_cap,
                    Refusal::Asker => &inner.stats.refused_asker_cap,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                wire::write_empty(out, &req, Rcode::Refused);
                return Started::Replied(QueryOutcome::Refused);
            }
        };
        if let Some(s) = servers {
            let now = Instant::now();
            for server in s.list() {
                inner.extra.insert(*server, now);
            }
        }
        let mut upstream = Vec::with_capacity(320);
        wire::write_upstream_query(&mut upstream, &req, 0);
        let job = Job {
            query: query.into(),
            question_end: req.question_end,
            key: key.as_slice().into(),
            upstream: SmallVec::from_vec(upstream),
            order: match servers {
                Some(s) => inner.health.order(s.list()),
                None => inner.health.order(&inner.upstreams.current()),
            },
            next: 0,
            limit,
            reply_to,
            _slot: Some(slot),
            // Dropped unended (the forwarder shutting down): a UDP asker gets nothing, a TCP
            // one SERVFAIL from its waiter.
            tally: PendingTally::new(
                tally,
                match transport {
                    Transport::Udp => QueryOutcome::Dropped,
                    Transport::Tcp => QueryOutcome::ServFail,
                },
            ),
            taken: Instant::now(),
        };
        match transport {
            Transport::Udp => dispatch(inner, job),
            Transport::Tcp => {
                inner.runtime.spawn(forward_tcp(inner.clone(), job));
            }
        }
        Started::Pending
    }
}

/// The reply a [`ReplyTo::Waiter`] gets for `query` (TCP askers): SERVFAIL when the job was
/// dropped without one (the forwarder shutting down).
pub async fn wait_reply(rx: oneshot::Receiver<Vec<u8>>, query: &[u8]) -> Vec<u8> {
    match rx.await {
        Ok(reply) => reply,
        Err(_) => {
            let mut out = Vec::new();
            if let Ok(req) = wire::parse(query) {
                wire::write_empty(&mut out, &req, Rcode::ServFail);
            }
            out
        }
    }
}

/// A reply larger than the asker accepts becomes header + question with TC.
fn fit(out: &mut Vec<u8>, req: &wire::Request<'_>, limit: usize) {
    if out.len() > limit {
        let rcode = wire::rcode_of(out).unwrap_or(0);
        wire::write_truncated(out, req, rcode);
    }
}

impl Inner {
    /// Keep `sockets` (retired) served until they have nothing waiting.
    fn drain_later(&self, sockets: impl IntoIterator<Item = Arc<UpSocket<Job>>>) {
        let mut d = self.draining.lock().unwrap_or_else(|p| p.into_inner());
        d.extend(sockets);
    }

    /// The pool of `server`, opened (and its readers started) on first use.
    fn pool(self: &Arc<Inner>, server: SocketAddr) -> std::io::Result<Arc<Pool<Job>>> {
        if let Some(p) = self.pools.get(&server) {
            return Ok(p.clone());
        }
        let pool = match self.pools.entry(server) {
            dashmap::mapref::entry::Entry::Occupied(e) => return Ok(e.get().clone()),
            dashmap::mapref::entry::Entry::Vacant(v) => {
                v.insert(Arc::new(Pool::open(server)?)).clone()
            }
        };
        for s in pool.sockets().iter() {
            self.runtime.spawn(receive(Arc::downgrade(self), s.clone()));
        }
        Ok(pool)
    }
}

/// Send `job` to the next server of its order that takes it; when none is left, end it
/// (stale answer or SERVFAIL).
fn dispatch(inner: &Arc<Inner>, mut job: Job) {
    while let Some(&server) = job.order.get(job.next) {
        job.next += 1;
        // A socket retired between picking and sending hands the job back: pick again (the
        // pool may be a new one by then).
        for _ in 0..4 {
            let pool = match inner.pool(server) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(%server, error = %e, "cannot open a socket to the upstream");
                    break;
                }
            };
            let mut query = job.upstream.clone();
            let up = pool.pick();
            match up.send(&mut query, job, inner.settings.timeout) {
                Ok(()) => {
                    inner.stats.forwarded.fetch_add(1, Ordering::Relaxed);
                    inner.health.sent(server);
                    return;
                }
                Err((back, SendError::Retired | SendError::Full)) => job = back,
                Err((back, SendError::Io(e))) => {
                    // An attempt, failed.
                    inner.health.sent(server);
                    inner.health.attempt_failed(server);
                    if e.kind() == std::io::ErrorKind::ConnectionRefused {
                        // The socket's pending error: an earlier datagram met a closed port,
                        // and this send reported it instead of the reader. What waits on the
                        // socket went to that closed port too: on to the next server, now.
                        inner.health.demote(server, "port unreachable");
                        for waited in up.drain() {
                            inner.health.attempt_failed(server);
                            dispatch(inner, waited.job);
                        }
                    }
                    tracing::debug!(%server, error = %e, "send to upstream failed, trying next");
                    job = back;
                    break;
                }
            }
        }
    }
    fail(inner, job);
}

/// A TCP asker's question, over the kept-open TCP connections to the upstreams, server after
/// server in the job's order (the order UDP's health gave it).
async fn forward_tcp(inner: Arc<Inner>, mut job: Job) {
    // Health (demotion, RTT) is learnt from UDP alone: a server that does not take TCP may
    // still answer everyone else, and a TCP time includes the connection's set-up.
    while let Some(&server) = job.order.get(job.next) {
        job.next += 1;
        inner.stats.forwarded.fetch_add(1, Ordering::Relaxed);
        inner.health.sent(server);
        let asked = inner
            .tcp
            .ask(
                server,
                &job.upstream,
                job.upstream_question(),
                inner.settings.timeout,
            )
            .await;
        match asked {
            Ok(reply) => {
                if matches!(wire::rcode_of(&reply), Some(2) | Some(5)) {
                    tracing::debug!(%server, "upstream answered SERVFAIL/REFUSED, trying next");
                    inner.health.attempt_failed(server);
                    continue;
                }
                return finish(&inner, job, &reply);
            }
            Err(e) => {
                if matches!(e, tcp::AskError::Timeout) {
                    inner.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                    inner.health.attempt_timed_out(server);
                } else {
                    inner.health.attempt_failed(server);
                }
                tracing::debug!(%server, error = %e, "upstream over TCP failed, trying next");
            }
        }
    }
    fail(&inner, job);
}

/// Every server failed: a stale answer if the cache has one, else SERVFAIL.
fn fail(inner: &Inner, mut job: Job) {
    if matches!(job.reply_to, ReplyTo::Discard) {
        return;
    }
    let Ok(req) = wire::parse(&job.query) else {
        return;
    };
    let mut out = Vec::new();
    let outcome = if inner.cache.get_stale(&job.key, &req, &mut out) {
        inner.stats.served_stale.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(name = ?req.name, "no upstream answered: serving a stale answer");
        fit(&mut out, &req, job.limit);
        QueryOutcome::Stale
    } else {
        inner.stats.servfail.fetch_add(1, Ordering::Relaxed);
        wire::write_empty(&mut out, &req, Rcode::ServFail);
        QueryOutcome::ServFail
    };
    ended(inner, &mut job, outcome);
    send(job.reply_to, out);
}

/// An upstream's reply to a waiting job.
fn on_reply(inner: &Arc<Inner>, server: SocketAddr, waited: Pending<Job>, reply: &[u8]) {
    let job = waited.job;
    inner.health.answered(server, waited.sent_at.elapsed());
    match wire::rcode_of(reply) {
        Some(2) | Some(5) => {
            tracing::debug!(%server, "upstream answered SERVFAIL/REFUSED, trying next");
            inner.health.attempt_failed(server);
            return dispatch(inner, job);
        }
        _ => {}
    }
    finish(inner, job, reply);
}

/// Relay `reply` to the job's asker (and keep it in the cache).
fn finish(inner: &Inner, mut job: Job, reply: &[u8]) {
    if matches!(job.reply_to, ReplyTo::Discard) {
        return;
    }
    inner.cache.put(&job.key, reply);
    let Ok(req) = wire::parse(&job.query) else {
        return;
    };
    let mut out = reply.to_vec();
    wire::set_id(&mut out, req.id);
    wire::restore_question(&mut out, &req);
    fit(&mut out, &req, job.limit);
    ended(inner, &mut job, QueryOutcome::Forwarded);
    send(job.reply_to, out);
}

/// Count how an asker's job ended, and how long it took.
fn ended(inner: &Inner, job: &mut Job, outcome: QueryOutcome) {
    job.tally.end(outcome);
    inner.metrics.forwarded_answer(job.taken.elapsed());
}

fn send(to: ReplyTo, reply: Vec<u8>) {
    match to {
        ReplyTo::Udp { socket, client } => {
            // Never blocks a runtime worker: a full send buffer drops the reply, as the
            // listener's own sendmmsg would (the asker retries).
            let sent = socket2::SockRef::from(&*socket).send_to_with_flags(
                &reply,
                &client.into(),
                libc::MSG_DONTWAIT,
            );
            if let Err(e) = sent {
                tracing::debug!(%client, error = %e, "udp send failed");
            }
        }
        ReplyTo::Waiter(tx) => {
            let _ = tx.send(reply);
        }
        ReplyTo::Discard => {}
    }
}

/// An upstream socket as `AsyncFd` wants it.
struct Readable(Arc<UpSocket<Job>>);

impl AsRawFd for Readable {
    fn as_raw_fd(&self) -> RawFd {
        self.0.sock.as_raw_fd()
    }
}

/// What an upstream socket's reader waits for: a reply, or an error (an ICMP port unreachable
/// sets the socket's error without making it readable; unwatched, the queries waiting on it
/// would only move on at their timeout).
const WATCH: Interest = Interest::READABLE.add(Interest::ERROR);

/// Read replies from one upstream socket until the forwarder is gone, or the socket is retired
/// and has nothing waiting.
async fn receive(inner: Weak<Inner>, up: Arc<UpSocket<Job>>) {
    // SAFETY: the descriptor is that of `up.sock`, which `Readable` keeps alive (it holds the
    // `Arc`) and which is never replaced or closed while an `UpSocket` exists; `as_raw_fd`
    // returns that same descriptor every time.
    let registered = unsafe { AsyncFd::register_with_interest(Readable(up.clone()), WATCH) };
    let fd = match registered {
        Ok(fd) => fd,
        Err(e) => {
            // Out of service at once (maintenance replaces it); what already waits on it goes
            // elsewhere rather than time out.
            tracing::warn!(server = %up.server, error = %e, "cannot watch an upstream socket");
            up.retire();
            if let Some(inner) = inner.upgrade() {
                for waited in up.drain() {
                    dispatch(&inner, waited.job);
                }
            }
            return;
        }
    };
    let mut buf = vec![0u8; 65535];
    loop {
        if let Ok(Ok(mut ready)) =
            tokio::time::timeout(Duration::from_millis(200), fd.ready(WATCH)).await
        {
            loop {
                let got = ready.try_io(|s| s.get_ref().0.sock.recv(&mut buf));
                let Some(inner) = inner.upgrade() else { return };
                match got {
                    Ok(Ok(n)) => {
                        let reply = &buf[..n];
                        let taken = up.take(reply, |job, id| {
                            wire::answers_question(reply, id, job.upstream_question())
                        });
                        match taken {
                            Some(waited) => on_reply(&inner, up.server, waited, reply),
                            None => tracing::debug!(
                                server = %up.server,
                                "ignoring a reply that does not match id and question"
                            ),
                        }
                    }
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        // ICMP port unreachable: nothing listens there; every query waiting
                        // on this socket moves on now rather than at its timeout.
                        inner.health.demote(up.server, "port unreachable");
                        for waited in up.drain() {
                            inner.health.attempt_failed(up.server);
                            dispatch(&inner, waited.job);
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(server = %up.server, error = %e, "upstream receive failed");
                        break;
                    }
                    Err(_would_block) => break,
                }
            }
        }
        if inner.strong_count() == 0 || (up.is_retired() && up.is_idle()) {
            return;
        }
    }
}

/// How often waiting jobs are checked against their deadline.
const TICK: Duration = Duration::from_millis(20);
/// How long the pool of a server some askers use (`Servers`) outlives their last query.
const EXTRA_KEPT: Duration = Duration::from_secs(300);

/// Time out waiting jobs, probe demoted servers, rotate sockets, close pools of servers no
/// longer listed; until the forwarder is gone.
async fn maintain(inner: Weak<Inner>) {
    let mut last_probe = Instant::now();
    loop {
        tokio::time::sleep(TICK).await;
        let Some(inner) = inner.upgrade() else { return };
        let now = Instant::now();
        let pools: Vec<Arc<Pool<Job>>> = inner.pools.iter().map(|p| p.clone()).collect();
        let draining: Vec<Arc<UpSocket<Job>>> = {
            let mut d = inner.draining.lock().unwrap_or_else(|p| p.into_inner());
            d.retain(|s| !s.is_idle());
            d.clone()
        };
        let live = pools
            .iter()
            .flat_map(|p| p.sockets().iter().cloned().collect::<Vec<_>>());
        for up in live.chain(draining) {
            for waited in up.expired(now) {
                inner.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                inner.health.timed_out(up.server);
                dispatch(&inner, waited.job);
            }
        }
        for pool in &pools {
            for up in pool.sockets().iter() {
                if !up.due_for_rotation(now) {
                    continue;
                }
                match UpSocket::open(pool.server) {
                    Ok(fresh) => {
                        let fresh = Arc::new(fresh);
                        inner
                            .runtime
                            .spawn(receive(Arc::downgrade(&inner), fresh.clone()));
                        if pool.replace(up, fresh) {
                            inner.drain_later([up.clone()]);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(server = %pool.server, error = %e, "cannot rotate an upstream socket")
                    }
                }
            }
        }
        // Pools of servers no longer listed (nor in use by some askers): retired whole, their
        // sockets drained.
        let listed = inner.upstreams.current();
        inner
            .extra
            .retain(|_, used| now.duration_since(*used) < EXTRA_KEPT);
        let mut unlisted = Vec::new();
        inner.pools.retain(|server, pool| {
            let keep = listed.contains(server) || inner.extra.contains_key(server);
            if !keep {
                unlisted.extend(pool.retire_all());
            }
            keep
        });

        inner.drain_later(unlisted);
        if now.duration_since(last_probe) >= PROBE_EVERY {
            last_probe = now;
            // And their health: the metrics show the servers in use, not every one ever
            // asked.
            inner
                .health
                .retain(|server| listed.contains(server) || inner.extra.contains_key(server));
            let mut servers: Vec<SocketAddr> = listed.to_vec();
            servers.extend(inner.extra.iter().map(|e| *e.key()));
            for server in inner.health.demoted(&servers) {
                probe(&inner, server);
            }
        }
    }
}

/// Ask a demoted `server` for the root's NS records: any matching reply brings it back.
fn probe(inner: &Arc<Inner>, server: SocketAddr) {
    // Header (id set when sent, RD), one question: the root, NS, IN.
    let query: [u8; 17] = [0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1];
    let job = Job {
        query: query.as_slice().into(),
        question_end: query.len(),
        key: Box::new([]),
        upstream: SmallVec::from_slice(&query),
        order: Order::from_slice(&[server]),
        next: 0,
        limit: wire::CLASSIC_UDP_LIMIT,
        reply_to: ReplyTo::Discard,
        _slot: None,
        tally: PendingTally::new(None, QueryOutcome::Dropped),
        taken: Instant::now(),
    };
    dispatch(inner, job);
}
