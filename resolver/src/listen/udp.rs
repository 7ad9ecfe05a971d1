//! UDP: one plain thread per socket in blocking `recvmmsg` (a batch of datagrams at a time,
//! with IP_PKTINFO so the arrival interface is known), local answers of the whole batch sent
//! in one `sendmmsg`; forwarded queries go to the async runtime one by one.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ListenCtx;
use crate::forward::{ReplyTo, Started, Transport};
use crate::metrics::{NetworkStats, QueryOutcome, Tally};
use crate::respond::{Arrival, Outcome};
use crate::table::NetKey;

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
            // SAFETY: sockaddr_storage is a plain C struct; all zeroes is a valid (empty) one.
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
/// Counted into `stats` (none: metrics off) through cells of this thread's own.
pub(super) fn serve(
    sock: &Arc<UdpSocket>,
    stop: &AtomicBool,
    net: NetKey,
    stats: Option<&Arc<NetworkStats>>,
    ctx: &ListenCtx,
) {
    let cells = stats.map(|s| s.thread_cells());
    serve_counted(sock, stop, net, stats, cells.as_deref(), ctx);
    if let (Some(s), Some(c)) = (stats, &cells) {
        s.retire(c);
    }
}

fn serve_counted(
    sock: &Arc<UdpSocket>,
    stop: &AtomicBool,
    net: NetKey,
    stats: Option<&Arc<NetworkStats>>,
    cells: Option<&crate::metrics::ThreadCells>,
    ctx: &ListenCtx,
) {
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
        // Local answers are timed per batch: from here to their sendmmsg.
        let began = cells.map(|_| Instant::now());
        let mut local = 0u64;
        let mut count = |outcome: QueryOutcome| {
            if let Some(c) = cells {
                c.count(outcome);
                local += u64::from(outcome.is_local());
            }
        };
        let mut replies = 0;
        for i in 0..n as usize {
            let len = b.msgs[i].msg_len as usize;
            // SAFETY: the kernel filled name and control for this message.
            let (src, ifindex) =
                unsafe { (sockaddr_of(&b.names[i]), ifindex_of(&b.msgs[i].msg_hdr)) };
            let Some(src) = src else {
                count(QueryOutcome::Dropped);
                continue;
            };
            let arrival = Arrival {
                src: src.ip(),
                ifindex,
                listener: net,
                fixed_limit: None,
            };
            let query = &b.bufs[i][..len];
            match ctx.responder.respond(query, &arrival, &mut b.outs[i]) {
                Outcome::Reply(outcome) => {
                    queue(&mut b, i, &mut replies);
                    count(outcome);
                }
                Outcome::Drop => count(QueryOutcome::Dropped),
                Outcome::Forward(servers) => {
                    let reply_to = ReplyTo::Udp {
                        socket: sock.clone(),
                        client: src,
                    };
                    let tally = stats.map(|s| Tally {
                        network: s.clone(),
                        transport: Transport::Udp,
                    });
                    let out = &mut b.outs[i];
                    match ctx.forwarder.start(
                        query,
                        src.ip(),
                        servers.as_ref(),
                        Transport::Udp,
                        reply_to,
                        tally,
                        out,
                    ) {
                        Started::Replied(outcome) => {
                            queue(&mut b, i, &mut replies);
                            count(outcome);
                        }
                        Started::Pending => {}
                    }
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
        if let (Some(c), Some(began)) = (cells, began) {
            c.local_answers(local, began.elapsed());
        }
    }
}

/// Add the reply in slot `i` to the batch's `sendmmsg`, to the address slot `i` came from.
fn queue(b: &mut Batch, i: usize, replies: &mut usize) {
    let r = *replies;
    b.send_iovs[r] = libc::iovec {
        iov_base: b.outs[i].as_mut_ptr() as *mut libc::c_void,
        iov_len: b.outs[i].len(),
    };
    let h = &mut b.send_msgs[r].msg_hdr;
    h.msg_name = &mut b.names[i] as *mut _ as *mut libc::c_void;
    h.msg_namelen = b.msgs[i].msg_hdr.msg_namelen;
    h.msg_iov = &mut b.send_iovs[r];
    h.msg_iovlen = 1;
    h.msg_control = std::ptr::null_mut();
    h.msg_controllen = 0;
    *replies += 1;
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
