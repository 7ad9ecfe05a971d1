//! Test harness: a server on loopback addresses, a DNS client that picks its source address
//! (so a 127.x.y.z address plays a container), and a stub upstream on 127.0.0.1.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use resolver::{EndpointSpec, NetworkSpec, ResolverConfig, Server, Table};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

static NEXT_BLOCK: AtomicU32 = AtomicU32::new(0);

/// A /24 of loopback addresses no other test in this process uses: 127.B.C.0/24.
pub fn block() -> [u8; 3] {
    let n = NEXT_BLOCK.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    [127, 100 + (pid % 100) as u8, (n % 250) as u8 + 1]
}

pub fn ip(b: [u8; 3], last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], last))
}

pub fn v4(b: [u8; 3], last: u8) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], last)
}

/// A config for tests: ephemeral port, fixed upstreams, short timeouts.
pub fn config(upstreams: &[SocketAddr]) -> ResolverConfig {
    ResolverConfig {
        port: 0,
        upstreams: upstreams.iter().map(|a| a.to_string()).collect(),
        // Never the machine's resolver: with no upstream given, a file that does not exist.
        resolv_conf: "/nonexistent/resolv.conf".into(),
        forward_timeout_ms: 300,
        tcp_idle_timeout_ms: 2000,
        ..ResolverConfig::default()
    }
}

pub fn server(config: &ResolverConfig) -> Server {
    Server::new(config, Table::new()).expect("server")
}

pub fn net_spec(id: &str, name: &str) -> NetworkSpec {
    NetworkSpec {
        id: id.into(),
        name: name.into(),
        internal: false,
        bridge_ifindex: None,
        host_addresses: vec![],
        dns_servers: vec![],
    }
}

pub fn endpoint(net: &str, cid: &str, name: &str, v4: Ipv4Addr) -> EndpointSpec {
    EndpointSpec {
        network_id: net.into(),
        container_id: cid.into(),
        container_name: name.into(),
        hostname: None,
        aliases: vec![],
        links: vec![],
        ipv4: Some(v4),
        ipv6: None,
    }
}

/// Add a network listening on `listen` and return the UDP/TCP address of its listener.
pub async fn add_net(server: &Server, spec: &NetworkSpec, listen: IpAddr) -> SocketAddr {
    server.add_network(spec, &[listen]).await.expect("listen")[0]
}

pub fn question(name: &str, rtype: RecordType) -> Message {
    let mut m = Message::query();
    m.metadata.id = fastrand::u16(..);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    m
}

pub fn with_edns(mut m: Message, size: u16) -> Message {
    let mut e = Edns::new();
    e.set_max_payload(size);
    m.set_edns(e);
    m
}

/// Send raw bytes over UDP from `src` and wait up to `wait` for one reply.
pub async fn udp_raw(
    server: SocketAddr,
    src: IpAddr,
    bytes: &[u8],
    wait: Duration,
) -> Option<Vec<u8>> {
    let sock = UdpSocket::bind(SocketAddr::new(src, 0)).await.unwrap();
    sock.send_to(bytes, server).await.unwrap();
    let mut buf = vec![0u8; 65535];
    match tokio::time::timeout(wait, sock.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

/// One UDP exchange; panics without a reply within 3 s.
pub async fn udp(server: SocketAddr, src: IpAddr, msg: &Message) -> Message {
    let reply = udp_raw(server, src, &msg.to_vec().unwrap(), Duration::from_secs(3))
        .await
        .unwrap_or_else(|| panic!("no reply from {server} for {:?}", msg.queries));
    let m = Message::from_vec(&reply).expect("reply decodes");
    assert_eq!(m.metadata.id, msg.metadata.id, "reply id");
    assert_eq!(m.metadata.message_type, MessageType::Response);
    m
}

pub async fn ask(server: SocketAddr, src: IpAddr, name: &str, rtype: RecordType) -> Message {
    udp(server, src, &question(name, rtype)).await
}

pub async fn tcp_connect(server: SocketAddr, src: IpAddr) -> TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(src, 0)).unwrap();
    sock.connect(server).await.unwrap()
}

pub async fn tcp_send(stream: &mut TcpStream, msg: &Message) {
    let bytes = msg.to_vec().unwrap();
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&bytes);
    stream.write_all(&framed).await.unwrap();
}

pub async fn tcp_recv(stream: &mut TcpStream) -> Option<Message> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await.ok()?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut buf).await.ok()?;
    Some(Message::from_vec(&buf).expect("tcp reply decodes"))
}

pub async fn tcp_ask(server: SocketAddr, src: IpAddr, name: &str, rtype: RecordType) -> Message {
    let mut s = tcp_connect(server, src).await;
    let q = question(name, rtype);
    tcp_send(&mut s, &q).await;
    let m = tokio::time::timeout(Duration::from_secs(3), tcp_recv(&mut s))
        .await
        .expect("tcp reply in time")
        .expect("tcp reply");
    assert_eq!(m.metadata.id, q.metadata.id);
    m
}

/// The server still answers `name` with `expect`, over UDP and over TCP.
pub async fn assert_serves(server: SocketAddr, src: IpAddr, name: &str, expect: Ipv4Addr) {
    assert_eq!(
        a_records(&ask(server, src, name, RecordType::A).await),
        [expect]
    );
    assert_eq!(
        a_records(&tcp_ask(server, src, name, RecordType::A).await),
        [expect]
    );
}

pub fn a_records(m: &Message) -> Vec<Ipv4Addr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

pub fn aaaa_records(m: &Message) -> Vec<Ipv6Addr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::AAAA(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

pub fn rcode(m: &Message) -> ResponseCode {
    m.metadata.response_code
}

/// How a stub upstream answers.
#[derive(Clone, Copy, Debug)]
pub enum Behaviour {
    /// An A record with this address and TTL.
    Answer(Ipv4Addr, u32),
    /// NXDOMAIN with an SOA (negative TTL 60).
    NxDomain,
    ServFail,
    Refused,
    /// Never answers.
    Silent,
    /// Over UDP: TC set, no answers. Over TCP: `n` A records.
    Truncated(u16),
    /// NXDOMAIN (with SOA, negative TTL 60) for a name with a dot inside a label; an A
    /// record with this address (TTL 300) for any other.
    NxForDottedLabels(Ipv4Addr),
    /// Silence for names starting with this label; an A record (TTL 60) for the others.
    SilentFor(&'static str, Ipv4Addr),
    /// An A record (TTL 0); over TCP each reply after a delay of this many milliseconds
    /// (20 ms less for each later query on the connection).
    SlowTcp(u64, Ipv4Addr),
    /// First spoofs carrying `spoofed` (one with the wrong id, one with the right id but
    /// another question), then the real answer with `real`.
    WrongIdFirst {
        real: Ipv4Addr,
        spoofed: Ipv4Addr,
    },
    /// Random bytes instead of a reply.
    Garbage,
    /// A right-looking answer, but sent from another port than the one asked.
    WrongSource(Ipv4Addr),
    /// `n` A records over UDP whatever the asker's size limit (a misbehaving upstream).
    Oversized(u8),
}

/// A tiny DNS server on 127.0.0.1 (or the address given), UDP and TCP on one port, counting
/// the queries it sees.
pub struct Upstream {
    pub addr: SocketAddr,
    pub queries: Arc<AtomicUsize>,
    /// While set, the stub answers nothing (it still counts what it is asked).
    pub mute: Arc<std::sync::atomic::AtomicBool>,
    /// TCP connections accepted.
    pub tcp_conns: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Upstream {
    pub fn count(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }

    /// Black-hole the stub (`true`) or let it answer again.
    pub fn set_mute(&self, mute: bool) {
        self.mute.store(mute, Ordering::SeqCst);
    }
}

fn stub_reply(query: &[u8], b: Behaviour, tcp: bool) -> Option<Vec<Vec<u8>>> {
    let q = Message::from_vec(query).ok()?;
    let mut r = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
    r.metadata.recursion_desired = q.metadata.recursion_desired;
    r.metadata.recursion_available = true;
    r.add_queries(q.queries.clone());
    if let Some(e) = &q.edns {
        let mut mine = Edns::new();
        mine.set_max_payload(e.max_payload());
        r.set_edns(mine);
    }
    let name = q.queries.first()?.name().clone();
    match b {
        Behaviour::NxForDottedLabels(a) => {
            if name.iter().any(|label| label.contains(&b'.')) {
                return stub_reply(query, Behaviour::NxDomain, tcp);
            }
            r.add_answer(Record::from_rdata(name, 300, RData::A(A(a))));
        }
        Behaviour::SlowTcp(_, a) => {
            r.add_answer(Record::from_rdata(name, 0, RData::A(A(a))));
        }
        Behaviour::SilentFor(prefix, a) => {
            if name.iter().next() == Some(prefix.as_bytes()) {
                return None;
            }
            r.add_answer(Record::from_rdata(name, 60, RData::A(A(a))));
        }
        Behaviour::Answer(a, ttl) => {
            r.add_answer(Record::from_rdata(name, ttl, RData::A(A(a))));
        }
        Behaviour::NxDomain => {
            r.metadata.response_code = ResponseCode::NXDomain;
            let soa = SOA::new(
                Name::from_ascii("ns.test.").unwrap(),
                Name::from_ascii("admin.test.").unwrap(),
                1,
                3600,
                600,
                86400,
                60,
            );
            r.add_authority(Record::from_rdata(
                Name::from_ascii("test.").unwrap(),
                300,
                RData::SOA(soa),
            ));
        }
        Behaviour::ServFail => r.metadata.response_code = ResponseCode::ServFail,
        Behaviour::Refused => r.metadata.response_code = ResponseCode::Refused,
        Behaviour::Silent => return None,
        Behaviour::Truncated(n) => {
            if tcp {
                for i in 0..n {
                    let [hi, lo] = i.to_be_bytes();
                    r.add_answer(Record::from_rdata(
                        name.clone(),
                        300,
                        RData::A(A(Ipv4Addr::new(198, 18, hi, lo))),
                    ));
                }
            } else {
                r.metadata.truncation = true;
            }
        }
        Behaviour::Garbage => {
            let mut rng = fastrand::Rng::with_seed(q.metadata.id as u64);
            return Some(vec![(0..200).map(|_| rng.u8(..)).collect()]);
        }
        Behaviour::WrongSource(a) => {
            r.add_answer(Record::from_rdata(name, 300, RData::A(A(a))));
        }
        Behaviour::Oversized(n) => {
            for i in 0..n {
                r.add_answer(Record::from_rdata(
                    name.clone(),
                    300,
                    RData::A(A(Ipv4Addr::new(198, 18, 1, i))),
                ));
            }
        }
        Behaviour::WrongIdFirst { real, spoofed } => {
            let mut bad = r.clone();
            r.add_answer(Record::from_rdata(name.clone(), 300, RData::A(A(real))));
            let good = r.to_vec().ok()?;
            bad.add_answer(Record::from_rdata(name.clone(), 300, RData::A(A(spoofed))));
            bad.metadata.id = q.metadata.id.wrapping_add(1);
            let wrong_id = bad.to_vec().ok()?;
            // The right id, another question (the same name under another type).
            let mut other = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
            other.metadata.recursion_available = true;
            let mut oq = q.queries[0].clone();
            oq.set_query_type(RecordType::MX);
            other.add_query(oq);
            other.add_answer(Record::from_rdata(name, 300, RData::A(A(spoofed))));
            let wrong_question = other.to_vec().ok()?;
            return Some(vec![wrong_id, wrong_question, good]);
        }
    }
    Some(vec![r.to_vec().ok()?])
}

pub async fn upstream(b: Behaviour) -> Upstream {
    upstream_on(IpAddr::V4(Ipv4Addr::LOCALHOST), 0, b).await
}

/// A stub upstream on `ip:port` (port 0: any).
pub async fn upstream_on(ip: IpAddr, port: u16, b: Behaviour) -> Upstream {
    let (udp, tcp) = loop {
        let udp = UdpSocket::bind(SocketAddr::new(ip, port)).await.unwrap();
        let bound = udp.local_addr().unwrap();
        if let Ok(tcp) = TcpListener::bind(bound).await {
            break (udp, tcp);
        }
        assert_eq!(port, 0, "cannot bind stub upstream on {ip}:{port}");
    };
    let addr = udp.local_addr().unwrap();
    let queries = Arc::new(AtomicUsize::new(0));
    let mute = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (mute1, mute2) = (mute.clone(), mute.clone());
    let q1 = queries.clone();
    let udp_task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65535];
        loop {
            let Ok((n, from)) = udp.recv_from(&mut buf).await else {
                return;
            };
            q1.fetch_add(1, Ordering::SeqCst);
            if mute1.load(Ordering::SeqCst) {
                continue;
            }
            for reply in stub_reply(&buf[..n], b, false).unwrap_or_default() {
                if let Behaviour::WrongSource(_) = b {
                    // Same address, another port: a connected asker must not take it.
                    let other = UdpSocket::bind(SocketAddr::new(addr.ip(), 0))
                        .await
                        .unwrap();
                    let _ = other.send_to(&reply, from).await;
                } else {
                    let _ = udp.send_to(&reply, from).await;
                }
            }
        }
    });
    let q2 = queries.clone();
    let tcp_conns = Arc::new(AtomicUsize::new(0));
    let accepted = tcp_conns.clone();
    let tcp_task = tokio::spawn(async move {
        loop {
            let Ok((s, _)) = tcp.accept().await else {
                return;
            };
            accepted.fetch_add(1, Ordering::SeqCst);
            let (q2, mute2) = (q2.clone(), mute2.clone());
            tokio::spawn(async move {
                let (mut rd, wr) = s.into_split();
                let wr = Arc::new(tokio::sync::Mutex::new(wr));
                let mut nth = 0u64;
                loop {
                    let mut len = [0u8; 2];
                    if rd.read_exact(&mut len).await.is_err() {
                        return;
                    }
                    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
                    if rd.read_exact(&mut buf).await.is_err() {
                        return;
                    }
                    q2.fetch_add(1, Ordering::SeqCst);
                    if mute2.load(Ordering::SeqCst) {
                        continue;
                    }
                    let replies = stub_reply(&buf, b, true).unwrap_or_default();
                    let wr = wr.clone();
                    let send = async move {
                        for reply in replies {
                            let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
                            framed.extend_from_slice(&reply);
                            if wr.lock().await.write_all(&framed).await.is_err() {
                                return;
                            }
                        }
                    };
                    if let Behaviour::SlowTcp(ms, _) = b {
                        // Each reply after its own delay, later queries sooner: replies come
                        // back out of order, and only a pipelining client gets them at once.
                        let delay = ms.saturating_sub(nth * 20);
                        nth += 1;
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_millis(delay)).await;
                            send.await;
                        });
                    } else {
                        send.await;
                    }
                }
            });
        }
    });
    Upstream {
        addr,
        queries,
        mute,
        tcp_conns,
        tasks: vec![udp_task, tcp_task],
    }
}

/// What a [`Prober`] saw.
#[derive(Debug, Clone, Copy)]
pub struct Probed {
    pub answered: usize,
    pub failed: usize,
    pub worst: Duration,
}

/// A container that keeps asking for one name over UDP (every 5 ms, 1 s timeout) and counts
/// right answers, wrong or missing ones, and the slowest: the witness that something else going
/// on (reloads, hostile traffic, listener churn) never costs anyone an answer.
pub struct Prober {
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<Probed>,
}

impl Prober {
    pub fn start(server: SocketAddr, src: IpAddr, name: &str, expect: Ipv4Addr) -> Prober {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (flag, name) = (stop.clone(), name.to_string());
        let task = tokio::spawn(async move {
            let mut seen = Probed {
                answered: 0,
                failed: 0,
                worst: Duration::ZERO,
            };
            while !flag.load(Ordering::Relaxed) {
                let q = question(&name, RecordType::A).to_vec().unwrap();
                let started = std::time::Instant::now();
                let reply = udp_raw(server, src, &q, Duration::from_secs(1)).await;
                seen.worst = seen.worst.max(started.elapsed());
                match reply.and_then(|r| Message::from_vec(&r).ok()) {
                    Some(m) if a_records(&m) == [expect] => seen.answered += 1,
                    _ => seen.failed += 1,
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            seen
        });
        Prober { stop, task }
    }

    pub async fn stop(self) -> Probed {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("prober task")
    }
}

#[allow(unused_imports)]
pub use test_support::report;

/// A server process of a test (the standalone binary), killed however the test ends.
pub struct Running(pub std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A UDP port free on `ip` now (for a process that binds UDP and TCP on it).
pub fn free_port(ip: IpAddr) -> u16 {
    let u = std::net::UdpSocket::bind((ip, 0)).unwrap();
    u.local_addr().unwrap().port()
}
