//! TCP to the upstreams, for askers on TCP: one kept-open connection per upstream, queries
//! pipelined on it and replies matched by id and question as they come, in any order
//! (RFC 7766 §6.2.1.1); no connection set-up per query.
//!
//! A connection is opened on first use and closed after [`IDLE`] without a reply (or when the
//! upstream closes it, or a query on it timed out); a query caught by a closing connection is
//! sent once more on a fresh one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::wire;

/// A connection that brought no reply for this long is closed.
pub const IDLE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("timed out")]
    Timeout,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the connection closed before the reply")]
    Closed,
    #[error("too many queries waiting on the connection")]
    Busy,
}

/// Most queries waiting on one connection (ids are 16 bits; the budget's caps keep far fewer
/// in flight).
const MAX_WAITING: usize = 4096;

/// One query's place in a connection's waiting table, removed however the query ends
/// (answered, timed out, abandoned).
struct Waiting {
    conn: Arc<Conn>,
    id: u16,
    ticket: u64,
    rx: Option<oneshot::Receiver<Vec<u8>>>,
}

impl Waiting {
    fn register(conn: &Arc<Conn>, question: &[u8]) -> Option<Waiting> {
        let mut waiting = conn.waiting();
        if waiting.len() >= MAX_WAITING {
            return None;
        }
        let id = loop {
            let id: u16 = rand::random();
            if !waiting.contains_key(&id) {
                break id;
            }
        };
        let (tx, rx) = oneshot::channel();
        let ticket = TICKETS.fetch_add(1, Ordering::Relaxed);
        waiting.insert(
            id,
            Waiter {
                question: question.into(),
                reply: tx,
                ticket,
            },
        );
        Some(Waiting {
            conn: conn.clone(),
            id,
            ticket,
            rx: Some(rx),
        })
    }

    /// The reply, or `None` when the connection closed first.
    async fn reply(mut self) -> Option<Vec<u8>> {
        self.rx.take()?.await.ok()
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut waiting = self.conn.waiting();
        if waiting
            .get(&self.id)
            .is_some_and(|w| w.ticket == self.ticket)
        {
            waiting.remove(&self.id);
        }
    }
}

/// A query waiting on a connection.
struct Waiter {
    question: Box<[u8]>,
    reply: oneshot::Sender<Vec<u8>>,
    /// Which registration this is: an id is reused once its query is done, and only the
    /// registration itself may remove its entry.
    ticket: u64,
}

/// Tickets of registrations.
static TICKETS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// One kept-open connection: frames go out through the writer task's channel, the reader
/// task hands replies to their waiters.
struct Conn {
    frames: mpsc::Sender<Vec<u8>>,
    waiting: Mutex<HashMap<u16, Waiter>>,
    closed: AtomicBool,
}

impl Conn {
    fn waiting(&self) -> MutexGuard<'_, HashMap<u16, Waiter>> {
        // Inserts and removes only: a panic elsewhere leaves a consistent map.
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        // Dropping the senders tells every waiter.
        self.waiting().clear();
    }
}

/// The connection of one upstream, behind an async lock held while connecting, so
/// concurrent first queries share one connection.
type Slot = Arc<tokio::sync::Mutex<Option<Arc<Conn>>>>;

/// The TCP connections to every upstream. Cheap to clone.
#[derive(Clone, Default)]
pub struct TcpUpstreams {
    conns: Arc<Mutex<HashMap<SocketAddr, Slot>>>,
}

impl std::fmt::Debug for TcpUpstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpUpstreams").finish_non_exhaustive()
    }
}

impl TcpUpstreams {
    /// Ask `server` `query` (its id is replaced) over its kept-open connection and return the
    /// reply matching id and `question`, all within `timeout`.
    pub async fn ask(
        &self,
        server: SocketAddr,
        query: &[u8],
        question: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, AskError> {
        let work = async {
            for _ in 0..2 {
                let conn = self.conn(server).await?;
                let Some(waiting) = Waiting::register(&conn, question) else {
                    return Err(AskError::Busy);
                };
                let mut frame = Vec::with_capacity(query.len() + 2);
                frame.extend_from_slice(&(query.len() as u16).to_be_bytes());
                frame.extend_from_slice(query);
                frame[2..4].copy_from_slice(&waiting.id.to_be_bytes());
                if conn.frames.send(frame).await.is_err() {
                    conn.close();
                    continue;
                }
                if let Some(reply) = waiting.reply().await {
                    return Ok(reply);
                }
                // The connection closed under this query: once more on a fresh one.
            }
            Err(AskError::Closed)
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => {
                // A connection that let a query time out is not trusted with the next ones
                // (a half-dead upstream would make every later TCP query wait it out).
                if let Some(c) = self.current(server) {
                    c.close();
                }
                Err(AskError::Timeout)
            }
        }
    }

    /// The connection to `server` now, if one is open.
    fn current(&self, server: SocketAddr) -> Option<Arc<Conn>> {
        let slot = self.conns().get(&server)?.clone();
        let slot = slot.try_lock().ok()?;
        slot.clone()
    }

    /// The open connection to `server`, or a new one.
    async fn conn(&self, server: SocketAddr) -> Result<Arc<Conn>, AskError> {
        let slot = self.conns().entry(server).or_default().clone();
        let mut slot = slot.lock().await;
        if let Some(c) = slot.as_ref() {
            if !c.closed.load(Ordering::Relaxed) {
                return Ok(c.clone());
            }
        }
        let stream = TcpStream::connect(server).await?;
        let _ = stream.set_nodelay(true);
        let (tx, rx) = mpsc::channel(64);
        let conn = Arc::new(Conn {
            frames: tx,
            waiting: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
        });
        tokio::spawn(run(stream, rx, conn.clone(), server));
        *slot = Some(conn.clone());
        Ok(conn)
    }

    fn conns(&self) -> MutexGuard<'_, HashMap<SocketAddr, Slot>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Write frames as they come and read replies as they come, until the upstream closes the
/// connection, an error, or [`IDLE`] with nothing waiting.
async fn run(
    stream: TcpStream,
    mut frames: mpsc::Receiver<Vec<u8>>,
    conn: Arc<Conn>,
    server: SocketAddr,
) {
    let (mut rd, mut wr) = stream.into_split();
    let writer = async {
        while let Some(frame) = frames.recv().await {
            if wr.write_all(&frame).await.is_err() {
                break;
            }
        }
    };
    let reader = async {
        loop {
            // Not cancel-safe, so never resumed after a timeout: idle or stalled for IDLE, the
            // connection is closed (waiting queries then retry on a fresh one).
            let mut len = [0u8; 2];
            match tokio::time::timeout(IDLE, rd.read_exact(&mut len)).await {
                Ok(Ok(_)) => {}
                _ => break,
            }
            let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
            match tokio::time::timeout(IDLE, rd.read_exact(&mut reply)).await {
                Ok(Ok(_)) => {}
                _ => break,
            }
            let Some(id) = reply.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
                continue;
            };
            let mut waiting = conn.waiting();
            let matches = waiting
                .get(&id)
                .is_some_and(|w| wire::answers_question(&reply, id, &w.question));
            if matches {
                if let Some(w) = waiting.remove(&id) {
                    let _ = w.reply.send(reply);
                }
            } else {
                tracing::debug!(%server, "ignoring a TCP reply that does not match id and question");
            }
        }
    };
    // Whichever ends first ends the connection.
    tokio::select! {
        _ = writer => {}
        _ = reader => {}
    }
    conn.close();
}
