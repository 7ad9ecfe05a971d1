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
//!
//! A listener of a network with a bridge is bound to that bridge (SO_BINDTOIFINDEX) as well as
//! to the gateway address. Linux delivers a packet for any local address that arrives on any
//! interface, so an address alone would answer a LAN machine that routes a bridge subnet
//! through this host, or a container asking another network's gateway. Bound to the device,
//! the kernel itself drops what arrives elsewhere, for UDP (port unreachable) and TCP (reset)
//! alike. Host processes still get in: a packet the host sends to one of its own addresses
//! arrives on the device that holds the address.

mod tcp;
mod udp;

use std::io;
use std::net::{IpAddr, Shutdown, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::net::TcpListener;
use tokio::runtime::Handle;

use crate::forward::Forwarder;
use crate::metrics::{DnsMetrics, NetworkStats};
use crate::respond::Responder;
use crate::table::NetKey;

/// What every listener shares.
#[derive(Clone, Debug)]
pub struct ListenCtx {
    pub responder: Responder,
    pub forwarder: Forwarder,
    pub runtime: Handle,
    pub tcp_idle: Duration,
    pub tcp_max: usize,
    /// Forwarded queries in flight per TCP connection.
    pub tcp_inflight: usize,
    pub metrics: DnsMetrics,
}

/// UDP and TCP on one address of one network.
pub struct Listener {
    addr: SocketAddr,
    /// The interface both sockets are bound to, if any.
    device: Option<u32>,
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
    /// Bind UDP and TCP on `ip:port` (port 0: one free port for both), and to interface
    /// `device` when given, and start serving for network `net`, counting into `stats`
    /// (none: metrics off).
    pub fn open(
        ip: IpAddr,
        port: u16,
        device: Option<u32>,
        net: NetKey,
        stats: Option<Arc<NetworkStats>>,
        ctx: &ListenCtx,
    ) -> io::Result<Listener> {
        let (udp, tcp) = bind_pair(ip, port, device)?;
        let addr = udp.local_addr()?;
        let udp = Arc::new(udp);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (udp, stop, ctx, stats) = (udp.clone(), stop.clone(), ctx.clone(), stats.clone());
            std::thread::Builder::new()
                .name(format!("dns-udp-{addr}"))
                .spawn(move || udp::serve(&udp, &stop, net, stats.as_ref(), &ctx))?
        };
        let tcp = {
            let _enter = ctx.runtime.enter();
            let listener = TcpListener::from_std(tcp)?;
            ctx.runtime
                .spawn(tcp::accept(listener, net, stats, ctx.clone()))
        };
        tracing::debug!(%addr, ?device, "listening");
        Ok(Listener {
            addr,
            device,
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

    /// The interface the sockets are bound to (none: any).
    pub fn device(&self) -> Option<u32> {
        self.device
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
        // pending and later receives return 0. (ENOTCONN is reported, and the wake-up happens
        // all the same.)
        let _ = SockRef::from(&*self.udp).shutdown(Shutdown::Read);
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

fn bind_pair(
    ip: IpAddr,
    port: u16,
    device: Option<u32>,
) -> io::Result<(UdpSocket, std::net::TcpListener)> {
    // Port 0: the kernel picks the UDP port; TCP takes the same one, which is almost always
    // free. Retry a few times for the rare clash.
    let tries = if port == 0 { 20 } else { 1 };
    let mut last = None;
    for _ in 0..tries {
        let udp = udp_socket(SocketAddr::new(ip, port), device)?;
        let bound = udp.local_addr()?;
        match tcp_socket(bound, device) {
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

/// An int socket option socket2 has no call for (IP_PKTINFO, IPV6_RECVPKTINFO).
fn setsockopt_int(fd: i32, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: `value` lives across the call and the length given is its size; the kernel
    // reads it and checks `fd`, `level` and `name` itself.
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

/// Bind `s` to interface `device` (by index: no name to look up, and the kernel checks it
/// exists).
fn bind_to_device(s: &Socket, device: Option<u32>) -> io::Result<()> {
    match device {
        Some(index) => {
            let index =
                i32::try_from(index).map_err(|_| io::Error::other("ifindex out of range"))?;
            setsockopt_int(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_BINDTOIFINDEX,
                index,
            )
        }
        None => Ok(()),
    }
}

fn udp_socket(addr: SocketAddr, device: Option<u32>) -> io::Result<UdpSocket> {
    let s = Socket::new(domain_of(&addr), Type::DGRAM, Some(Protocol::UDP))?;
    bind_to_device(&s, device)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
        setsockopt_int(s.as_raw_fd(), libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)?;
        // A gateway address just added may still be tentative (DAD): bind anyway.
        s.set_freebind_v6(true)?;
    } else {
        setsockopt_int(s.as_raw_fd(), libc::IPPROTO_IP, libc::IP_PKTINFO, 1)?;
        s.set_freebind_v4(true)?;
    }
    s.set_recv_buffer_size(4 << 20).ok();
    s.bind(&addr.into())?;
    Ok(s.into())
}

fn tcp_socket(addr: SocketAddr, device: Option<u32>) -> io::Result<std::net::TcpListener> {
    let s = Socket::new(domain_of(&addr), Type::STREAM, Some(Protocol::TCP))?;
    bind_to_device(&s, device)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
        s.set_freebind_v6(true)?;
    } else {
        s.set_freebind_v4(true)?;
    }
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}
