//! Sockets on gateway addresses: UDP and TCP, opened and closed per network.
//!
//! UDP is served by one plain thread per socket doing blocking `recvmmsg` (batches of datagrams,
//! with IP_PKTINFO so the arrival interface is known) and answering local names in place, the
//! batch's replies in one `sendmmsg`: no task, no channel, no wakeup of an async runtime on the
//! hot path. Only forwarded queries go to the tokio runtime.
//! TCP, whose clients can be slow or hostile, is all async: one task per connection, bounded in
//! number, each read and write under the idle timeout, so one stalled client delays nobody else.
//!
//! Each listener belongs to one network; closing it touches no other network's sockets.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use crate::forward::{Forwarder, Transport};
use crate::respond::{Arrival, Outcome, Responder};
use crate::table::NetKey;
use crate::wire;

/// What every listener shares.
#[derive(Clone, Debug)]
pub struct ListenCtx {
    pub responder: Responder,
    pub forwarder: Forwarder,
    pub runtime: Handle,
    pub tcp_idle: Duration,
    pub tcp_max: usize,
}

/// UDP and TCP on one address of one network.
pub struct Listener {
    addr: SocketAddr,
    udp: Arc<UdpSocket>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    tcp: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Listener {
    /// Bind UDP and TCP on `ip:port` (port 0: one free port for both) and start serving for
    /// network `net`.
    pub fn open(ip: IpAddr, port: u16, net: NetKey, ctx: &ListenCtx) -> io::Result<Listener> {
        let (udp, tcp) = bind_pair(ip, port)?;
        let addr = udp.local_addr()?;
        let udp = Arc::new(udp);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (udp, stop, ctx) = (udp.clone(), stop.clone(), ctx.clone());
            std::thread::Builder::new()
                .name(format!("dns-udp-{addr}"))
                .spawn(move || udp_loop(&udp, &stop, net, &ctx))?
        };
        let tcp = {
            let _enter = ctx.runtime.enter();
            let listener = TcpListener::from_std(tcp)?;
            ctx.runtime.spawn(tcp_accept(listener, net, ctx.clone()))
        };
        tracing::debug!(%addr, "listening");
        Ok(Listener {
            addr,
            udp,
            stop,
            thread: Some(thread),
            tcp: Some(tcp),
        })
    }

    /// The bound address (with the real port when 0 was asked).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop serving and wait until both sockets are closed, so the address can be bound again
    /// at once.
    pub async fn close(mut self) {
        self.stop_udp();
        if let Some(t) = self.tcp.take() {
            t.abort();
            let _ = t.await;
        }
    }

    fn stop_udp(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the thread blocked in recvmsg: on Linux, shutdown of a UDP socket makes
        // pending and later receives return 0.
        unsafe {
            libc::shutdown(self.udp.as_raw_fd(), libc::SHUT_RD);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop_udp();
        if let Some(t) = self.tcp.take() {
            t.abort();
        }
    }
}

fn bind_pair(ip: IpAddr, port: u16) -> io::Result<(UdpSocket, std::net::TcpListener)> {
    // Port 0: the kernel picks the UDP port; TCP takes the same one, which is almost always
    // free. Retry a few times for the rare clash.
    let tries = if port == 0 { 20 } else { 1 };
    let mut last = None;
    for _ in 0..tries {
        let udp = udp_socket(SocketAddr::new(ip, port))?;
        let bound = udp.local_addr()?;
        match tcp_socket(bound) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no port")))
}

fn domain_of(addr: &SocketAddr) -> Domain {
    if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    }
}

fn setsockopt_int(fd: i32, level: i32, name: i32, value: i32) -> io::Result<()> {
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &value as *const i32 as *const libc::c_void,
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn udp_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let s = Socket::new(domain_of(&addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
        setsockopt_int(s.as_raw_fd(), libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)?;
        // A gateway address just added may still be tentative (DAD): bind anyway.
        setsockopt_int(s.as_raw_fd(), libc::IPPROTO_IPV6, libc::IPV6_FREEBIND, 1)?;
    } else {
        setsockopt_int(s.as_raw_fd(), libc::IPPROTO_IP, libc::IP_PKTINFO, 1)?;
        setsockopt_int(s.as_raw_fd(), libc::IPPROTO_IP, libc::IP_FREEBIND, 1)?;
    }
    s.set_recv_buffer_size(4 << 20).ok();
    s.bind(&addr.into())?;
    Ok(s.into())
}

fn tcp_socket(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let s = Socket::new(domain_of(&addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
        setsockopt_int(s.as_raw_fd(), libc::IPPROTO_IPV6, libc::IPV6_FREEBIND, 1)?;
    } else {
        setsockopt_int(s.as_raw_fd(), libc::IPPROTO_IP, libc::IP_FREEBIND, 1)?;
    }
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

// ---- UDP ------------------------------------------------------------------------------------

/// Queries taken from the socket per system call.
const BATCH: usize = 32;
/// Largest query read over UDP; a longer datagram is cut (and then answered FORMERR).
const RECV_BUF: usize = 4096;

/// The receive side of one batch: buffers, source addresses and control messages that
/// `recvmmsg` fills, allocated once per listener thread.
struct Batch {
    bufs: Vec<[u8; RECV_BUF]>,
    names: Vec<libc::sockaddr_storage>,
    controls: Vec<[u64; 8]>,
    iovs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    /// Replies, one per slot, and the send-side headers pointing at them.
    outs: Vec<Vec<u8>>,
    send_iovs: Vec<libc::iovec>,
    send_msgs: Vec<libc::mmsghdr>,
}

impl Batch {
    fn new() -> Box<Batch> {
        // SAFETY: these are plain C structs for which all-zero is a valid value.
        let zeroed_msg = || unsafe { std::mem::zeroed::<libc::mmsghdr>() };
        let iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        Box::new(Batch {
            bufs: vec![[0u8; RECV_BUF]; BATCH],
            names: vec![unsafe { std::mem::zeroed() }; BATCH],
            controls: vec![[0u64; 8]; BATCH],
            iovs: vec![iov; BATCH],
            msgs: (0..BATCH).map(|_| zeroed_msg()).collect(),
            outs: (0..BATCH).map(|_| Vec::with_capacity(RECV_BUF)).collect(),
            send_iovs: vec![iov; BATCH],
            send_msgs: (0..BATCH).map(|_| zeroed_msg()).collect(),
        })
    }

    /// Point every receive header at its buffers again (the kernel changes the lengths).
    fn arm(&mut self) {
        for i in 0..BATCH {
            self.iovs[i].iov_base = self.bufs[i].as_mut_ptr() as *mut libc::c_void;
            self.iovs[i].iov_len = RECV_BUF;
            let h = &mut self.msgs[i].msg_hdr;
            h.msg_name = &mut self.names[i] as *mut _ as *mut libc::c_void;
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = self.controls[i].as_mut_ptr() as *mut libc::c_void;
            h.msg_controllen = std::mem::size_of::<[u64; 8]>();
            h.msg_flags = 0;
            self.msgs[i].msg_len = 0;
        }
    }
}

/// Answer queries on one UDP socket: a batch of datagrams per `recvmmsg`, the local answers of
/// the whole batch in one `sendmmsg`; forwarded queries go to the async runtime one by one.
fn udp_loop(sock: &Arc<UdpSocket>, stop: &AtomicBool, net: NetKey, ctx: &ListenCtx) {
    let fd = sock.as_raw_fd();
    let mut b = Batch::new();
    loop {
        b.arm();
        // SAFETY: `arm` pointed every header at live buffers of `b` of the sizes given.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                b.msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if stop.load(Ordering::SeqCst) {
            return;
        }
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                tracing::warn!(error = %e, "udp receive failed");
                std::thread::sleep(Duration::from_millis(10));
            }
            continue;
        }
        let mut replies = 0;
        for i in 0..n as usize {
            let len = b.msgs[i].msg_len as usize;
            // SAFETY: the kernel filled name and control for this message.
            let (src, ifindex) =
                unsafe { (sockaddr_of(&b.names[i]), ifindex_of(&b.msgs[i].msg_hdr)) };
            let Some(src) = src else { continue };
            let arrival = Arrival {
                src: src.ip(),
                ifindex,
                listener: net,
                fixed_limit: None,
            };
            let query = &b.bufs[i][..len];
            match ctx.responder.respond(query, &arrival, &mut b.outs[i]) {
                Outcome::Reply => {
                    b.send_iovs[replies] = libc::iovec {
                        iov_base: b.outs[i].as_mut_ptr() as *mut libc::c_void,
                        iov_len: b.outs[i].len(),
                    };
                    let h = &mut b.send_msgs[replies].msg_hdr;
                    h.msg_name = &mut b.names[i] as *mut _ as *mut libc::c_void;
                    h.msg_namelen = b.msgs[i].msg_hdr.msg_namelen;
                    h.msg_iov = &mut b.send_iovs[replies];
                    h.msg_iovlen = 1;
                    h.msg_control = std::ptr::null_mut();
                    h.msg_controllen = 0;
                    replies += 1;
                }
                Outcome::Drop => {}
                Outcome::Forward => {
                    let query = query.to_vec();
                    let (sock, fwd) = (sock.clone(), ctx.forwarder.clone());
                    ctx.runtime.spawn(async move {
                        let reply = fwd.forward(&query, Transport::Udp).await;
                        if let Err(e) = sock.send_to(&reply, src) {
                            tracing::debug!(%src, error = %e, "udp send failed");
                        }
                    });
                }
            }
        }
        let mut sent = 0;
        while sent < replies {
            // SAFETY: headers `sent..replies` point at live reply buffers and addresses.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    b.send_msgs[sent..].as_mut_ptr(),
                    (replies - sent) as libc::c_uint,
                    0,
                )
            };
            if r <= 0 {
                // A reply that cannot be sent (buffer full, peer gone) is dropped, as one
                // sendto would; the asker retries.
                sent += 1;
            } else {
                sent += r as usize;
            }
        }
    }
}

/// The source address of a received datagram.
///
/// # Safety
/// `addr` must have been filled by the kernel (recvmsg/recvmmsg).
unsafe fn sockaddr_of(addr: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match addr.ss_family as i32 {
        libc::AF_INET => {
            let a = &*(addr as *const _ as *const libc::sockaddr_in);
            Some(SocketAddr::from((
                u32::from_be(a.sin_addr.s_addr).to_be_bytes(),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            let a = &*(addr as *const _ as *const libc::sockaddr_in6);
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                a.sin6_addr.s6_addr.into(),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// The arrival interface from an IP_PKTINFO / IPV6_PKTINFO control message.
///
/// # Safety
/// `msg` must have been filled by the kernel, its control buffer still alive.
unsafe fn ifindex_of(msg: &libc::msghdr) -> Option<u32> {
    let mut cmsg = libc::CMSG_FIRSTHDR(msg);
    while !cmsg.is_null() {
        let c = &*cmsg;
        if c.cmsg_level == libc::IPPROTO_IP && c.cmsg_type == libc::IP_PKTINFO {
            let info: libc::in_pktinfo =
                std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::in_pktinfo);
            return Some(info.ipi_ifindex as u32);
        }
        if c.cmsg_level == libc::IPPROTO_IPV6 && c.cmsg_type == libc::IPV6_PKTINFO {
            let info: libc::in6_pktinfo =
                std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::in6_pktinfo);
            return Some(info.ipi6_ifindex);
        }
        cmsg = libc::CMSG_NXTHDR(msg, cmsg);
    }
    None
}

// ---- TCP ------------------------------------------------------------------------------------

async fn tcp_accept(listener: TcpListener, net: NetKey, ctx: ListenCtx) {
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
        let ctx = ctx.clone();
        conns.spawn(async move {
            tcp_conn(stream, peer, net, &ctx).await;
            drop(slot);
        });
    }
}

/// Serve one TCP connection: many queries, answered as they complete (forwarded ones may
/// overtake each other, RFC 7766 §6.2.1.1), closed after the idle timeout without a query.
async fn tcp_conn(stream: TcpStream, peer: SocketAddr, net: NetKey, ctx: &ListenCtx) {
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
        loop {
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
            match ctx.responder.respond(&msg, &arrival, &mut out) {
                Outcome::Reply => {
                    if tx.send(out.clone()).await.is_err() {
                        break;
                    }
                }
                Outcome::Drop => break,
                Outcome::Forward => {
                    let (fwd, tx) = (ctx.forwarder.clone(), tx.clone());
                    forwards.spawn(async move {
                        let reply = fwd.forward(&msg, Transport::Tcp).await;
                        let _ = tx.send(reply).await;
                    });
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
