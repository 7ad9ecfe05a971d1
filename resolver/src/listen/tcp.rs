//! TCP, whose clients can be slow or hostile: all async, one task per connection, bounded in
//! number, each read and write under the idle timeout, so one stalled client delays nobody.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinSet;

use super::ListenCtx;
use crate::forward::{self, ReplyTo, Started, Transport};
use crate::metrics::{NetworkStats, QueryOutcome, Tally};
use crate::respond::{Arrival, Outcome};
use crate::table::NetKey;
use crate::wire;

/// Accept connections for ever, at most `tcp_max` served at once (one over the cap is closed
/// at once); aborting this task closes them all.
pub(super) async fn accept(
    listener: TcpListener,
    net: NetKey,
    stats: Option<Arc<NetworkStats>>,
    ctx: ListenCtx,
) {
    let slots = Arc::new(Semaphore::new(ctx.tcp_max));
    // Owning the connections here means aborting this task closes them all.
    let mut conns = JoinSet::new();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "tcp accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        while conns.try_join_next().is_some() {}
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "tcp connection cap reached, closing");
            continue;
        };
        let (ctx, stats) = (ctx.clone(), stats.clone());
        conns.spawn(async move {
            serve(stream, peer, net, stats, &ctx).await;
            drop(slot);
        });
    }
}

/// Serve one TCP connection: many queries, answered as they complete (forwarded ones may
/// overtake each other, RFC 7766 §6.2.1.1), closed after the idle timeout without a query.
/// A local answer waits for the writer's channel; a forwarded one holds one of the
/// connection's in-flight permits until its reply is handed to the writer.
async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    net: NetKey,
    stats: Option<Arc<NetworkStats>>,
    ctx: &ListenCtx,
) {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let idle = ctx.tcp_idle;
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(16);
    let writer = async move {
        while let Some(reply) = rx.recv().await {
            let mut framed = Vec::with_capacity(reply.len() + 2);
            framed.extend_from_slice(&(reply.len() as u16).to_be_bytes());
            framed.extend_from_slice(&reply);
            match tokio::time::timeout(idle, wr.write_all(&framed)).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
    };
    let reader = async move {
        let mut forwards = JoinSet::new();
        let mut out = Vec::with_capacity(1024);
        let arrival = Arrival {
            src: peer.ip(),
            ifindex: None,
            listener: net,
            fixed_limit: Some(wire::TCP_LIMIT),
        };
        // At most `tcp_inflight` forwarded queries per connection: past it this reader waits
        // for one to be answered (and its reply taken by the writer) before reading on, so a
        // client pipelining without reading holds a bounded amount of the agent's memory.
        let inflight = Arc::new(Semaphore::new(ctx.tcp_inflight));
        loop {
            let Ok(permit) = inflight.clone().acquire_owned().await else {
                break;
            };
            // The writer gave up (a client that does not read, past the idle timeout): stop
            // reading too, or its pipeline would be forwarded with nobody to take the replies.
            if tx.is_closed() {
                break;
            }
            let mut len = [0u8; 2];
            match tokio::time::timeout(idle, rd.read_exact(&mut len)).await {
                Ok(Ok(_)) => {}
                _ => break,
            }
            let n = u16::from_be_bytes(len) as usize;
            let mut msg = vec![0u8; n];
            // The whole message must arrive within the idle timeout: a trickling client is cut.
            match tokio::time::timeout(idle, rd.read_exact(&mut msg)).await {
                Ok(Ok(_)) => {}
                _ => break,
            }
            while forwards.try_join_next().is_some() {}
            let began = Instant::now();
            let count = |outcome: QueryOutcome| {
                if let Some(s) = &stats {
                    s.count(Transport::Tcp, outcome);
                }
            };
            match ctx.responder.respond(&msg, &arrival, &mut out) {
                Outcome::Reply(outcome) => {
                    count(outcome);
                    if outcome.is_local() {
                        ctx.metrics.tcp_local_answer(began.elapsed());
                    }
                    if tx.send(out.clone()).await.is_err() {
                        break;
                    }
                }
                Outcome::Drop => {
                    count(QueryOutcome::Dropped);
                    break;
                }
                Outcome::Forward(servers) => {
                    // Taken here, so a query answered at once is counted here, and one sent
                    // upstream is counted by the forwarder when it ends, whatever becomes of
                    // this connection meanwhile.
                    let (reply_tx, reply_rx) = oneshot::channel();
                    let tally = stats.clone().map(|network| Tally {
                        network,
                        transport: Transport::Tcp,
                    });
                    match ctx.forwarder.start(
                        &msg,
                        peer.ip(),
                        servers.as_ref(),
                        Transport::Tcp,
                        ReplyTo::Waiter(reply_tx),
                        tally,
                        &mut out,
                    ) {
                        Started::Replied(outcome) => {
                            count(outcome);
                            if tx.send(out.clone()).await.is_err() {
                                break;
                            }
                        }
                        Started::Pending => {
                            let tx = tx.clone();
                            forwards.spawn(async move {
                                let reply = forward::wait_reply(reply_rx, &msg).await;
                                let _ = tx.send(reply).await;
                                drop(permit);
                            });
                        }
                    }
                }
            }
        }
        // Let answers already being worked on go out, within the idle timeout.
        let _ = tokio::time::timeout(idle, async {
            while forwards.join_next().await.is_some() {}
        })
        .await;
        drop(tx);
    };
    tokio::join!(reader, writer);
}
