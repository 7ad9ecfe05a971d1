//! Test harness: a daemon of our own (state dir, socket, link prefix, subnets all unique to the
//! test), the CLI against it, and cleanup of every namespace, bridge and veth on drop, also
//! when the test fails. Needs root, and says so.
#![allow(dead_code)]

pub mod cluster;
pub mod podman;
pub mod stub;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

static NEXT: AtomicU32 = AtomicU32::new(0);
static SWEEP: Once = Once::new();

/// Every name a test makes starts with `x` + three digits + a letter: the family swept.
fn is_test_name(n: &str) -> bool {
    let b = n.as_bytes();
    b.len() >= 5
        && b[0] == b'x'
        && b[1..4].iter().all(u8::is_ascii_digit)
        && b[4].is_ascii_lowercase()
}

fn netns_list() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn link_list() -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Remove namespaces, /etc/netns dirs and links whose names match `pred`.
fn sweep(pred: impl Fn(&str) -> bool) {
    for ns in netns_list().into_iter().filter(|n| pred(n)) {
        let _ = Command::new("ip").args(["netns", "delete", &ns]).status();
    }
    if let Ok(d) = std::fs::read_dir("/etc/netns") {
        for e in d.flatten() {
            if e.file_name().to_str().is_some_and(&pred) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    for l in link_list().into_iter().filter(|n| pred(n)) {
        // A veth may vanish with its namespace meanwhile: say nothing about that.
        let _ = Command::new("ip")
            .args(["link", "delete", &l])
            .stderr(Stdio::null())
            .status();
    }
}

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Out {
    fn from(o: Output) -> Self {
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).to_string(),
            stderr: String::from_utf8_lossy(&o.stderr).to_string(),
        }
    }
}

pub struct Env {
    /// Prefix of every host-visible name this test makes (links, namespaces).
    pub prefix: String,
    /// Second octet of this test's 10.X.0.0/16 address space.
    pub octet: u8,
    dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub upstreams: Vec<String>,
    /// More flags for the daemon, at its next start.
    pub daemon_args: Vec<String>,
    daemon: Option<Child>,
}

/// A name prefix (`x` + three digits + a letter) and a second octet (10.X.0.0/16) that no
/// other environment of this test process uses; leftovers of earlier runs swept first. Needs
/// root, and says so.
pub fn claim_prefix() -> (String, u8) {
    test_support::require_root("the attach-agent tests create namespaces, bridges and veths");
    // Leftovers of an earlier, interrupted run (no two test processes run at once).
    SWEEP.call_once(|| sweep(is_test_name));
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    assert!(n < 26, "too many environments in one test binary");
    let prefix = format!(
        "x{:03}{}",
        std::process::id() % 1000,
        (b'a' + n as u8) as char
    );
    (prefix, 200 + n as u8)
}

/// Remove every namespace, /etc/netns directory and link whose name starts with `prefix`.
pub fn sweep_prefix(prefix: &str) {
    sweep(|n| n.starts_with(prefix));
}

impl Env {
    /// A fresh environment with its daemon running.
    pub fn new() -> Env {
        let mut env = Env::without_daemon();
        env.start_daemon();
        env
    }

    /// A fresh environment whose daemon the test starts itself.
    pub fn without_daemon() -> Env {
        let (prefix, octet) = claim_prefix();
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        Env {
            prefix,
            octet,
            dir,
            socket,
            // Port 9 on loopback: nothing listens, so forwarding fails fast and never leaves
            // the machine.
            upstreams: vec!["127.0.0.1:9".into()],
            daemon_args: vec![],
            daemon: None,
        }
    }

    /// A second agent's environment (its own state directory, socket and addresses) that
    /// names its links with `other`'s prefix, as two agents started with the same
    /// `link_prefix` on one host do. Its daemon is running.
    pub fn sharing_prefix_with(other: &Env) -> Env {
        let mut env = Env::without_daemon();
        env.prefix = other.prefix.clone();
        env.start_daemon();
        env
    }

    /// The mark this environment's agent puts on its links (`ip link` shows it as the alias).
    pub fn link_mark(&self) -> String {
        let id = std::fs::read_to_string(self.state_dir().join("instance-id"))
            .expect("the agent keeps its instance id in its state directory");
        format!("attach-agent:{}", id.trim())
    }

    /// The link group this environment's agent creates its links in (the mark of a link
    /// left by a crash before its alias was set).
    pub fn link_group(&self) -> u32 {
        let mark = self.link_mark();
        let id = mark.trim_start_matches("attach-agent:");
        (u32::from_str_radix(&id[..8], 16).unwrap() & 0x7fff_ffff).max(1)
    }

    /// A container name unique to this test (it names a namespace on the host).
    pub fn name(&self, n: &str) -> String {
        format!("{}-{n}", self.prefix)
    }

    /// `10.X.third.0/24` of this test.
    pub fn subnet(&self, third: u8) -> String {
        format!("10.{}.{third}.0/24", self.octet)
    }

    pub fn ip(&self, third: u8, last: u8) -> String {
        format!("10.{}.{third}.{last}", self.octet)
    }

    /// The directory holding the socket and the state.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn start_daemon(&mut self) {
        let mut cmd = self.daemon_command();
        cmd.args(["--log", "warn"]);
        self.spawn_daemon(cmd);
    }

    /// Start the daemon as an operator's service manager would: the log filter from
    /// `RUST_LOG` only (no `--log`), stderr into the file at `log`.
    pub fn start_daemon_logging_to(&mut self, rust_log: &str, log: &std::path::Path) {
        let mut cmd = self.daemon_command();
        cmd.env("RUST_LOG", rust_log)
            .stderr(std::fs::File::create(log).expect("create the daemon's log file"));
        self.spawn_daemon(cmd);
    }

    fn daemon_command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_attach-agent"));
        cmd.args(["daemon", "--socket"])
            .arg(&self.socket)
            .arg("--state-dir")
            .arg(self.state_dir())
            .args(["--link-prefix", &self.prefix])
            .env_remove("RUST_LOG");
        if !self.daemon_args.iter().any(|a| a == "--metrics-addr") {
            // Metrics on, as in production, on a port of the test's own.
            cmd.args(["--metrics-addr", "127.0.0.1:0"]);
        }
        for u in &self.upstreams {
            cmd.args(["--upstream", u]);
        }
        cmd.args(&self.daemon_args);
        cmd
    }

    fn spawn_daemon(&mut self, mut cmd: Command) {
        assert!(self.daemon.is_none());
        let child = cmd.stdin(Stdio::null()).spawn().expect("start daemon");
        self.daemon = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.socket.exists() && self.cli(&["network", "ls", "-q"]).code == 0 {
                return;
            }
            if let Some(Ok(Some(status))) = self.daemon.as_mut().map(|c| c.try_wait()) {
                panic!("daemon exited: {status}");
            }
            assert!(Instant::now() < deadline, "daemon did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL the daemon (crash), leaving whatever it had made.
    pub fn kill_daemon(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn daemon_pid(&self) -> u32 {
        self.daemon.as_ref().expect("daemon").id()
    }

    /// Run the CLI against this daemon.
    pub fn cli(&self, args: &[&str]) -> Out {
        Command::new(env!("CARGO_BIN_EXE_attach-agent"))
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run cli")
            .into()
    }

    /// Run the CLI; it must succeed. Its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.cli(args);
        assert_eq!(o.code, 0, "{args:?} failed: {}{}", o.stdout, o.stderr);
        o.stdout
    }

    /// Run the CLI; it must fail with a one-line message. That line.
    pub fn fails(&self, args: &[&str]) -> String {
        let o = self.cli(args);
        assert_ne!(o.code, 0, "{args:?} succeeded: {}", o.stdout);
        assert_eq!(
            o.stderr.lines().count(),
            1,
            "one line on stderr: {:?}",
            o.stderr
        );
        o.stderr.trim().to_string()
    }

    /// Run the stock docker client against this daemon's socket.
    pub fn docker(&self, args: &[&str]) -> Out {
        self.docker_command(args)
            .env_remove("DOCKER_API_VERSION")
            .output()
            .expect("the docker client must be on PATH (.ci/run installs it)")
            .into()
    }

    /// The stock docker client speaking API version `api` (`DOCKER_API_VERSION`), whatever
    /// it and the agent could negotiate.
    pub fn docker_at(&self, api: &str, args: &[&str]) -> Out {
        self.docker_command(args)
            .env("DOCKER_API_VERSION", api)
            .output()
            .expect("the docker client must be on PATH (.ci/run installs it)")
            .into()
    }

    fn docker_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("docker");
        cmd.arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .env_remove("DOCKER_CONTEXT")
            .stdin(Stdio::null());
        cmd
    }

    /// The docker client must succeed; its stdout.
    pub fn dok(&self, args: &[&str]) -> String {
        let o = self.docker(args);
        assert_eq!(
            o.code, 0,
            "docker {args:?} failed: {}{}",
            o.stdout, o.stderr
        );
        o.stdout
    }

    /// Run a command inside a container's namespace, as `ip netns exec` (so the namespace's
    /// /etc/netns resolv.conf and hosts apply).
    pub fn exec(&self, container: &str, cmd: &[&str]) -> Out {
        Command::new("ip")
            .args(["netns", "exec", container])
            .args(cmd)
            .stdin(Stdio::null())
            .output()
            .expect("ip netns exec")
            .into()
    }

    /// `getent hosts NAME` inside `container`: the addresses, or empty when it fails.
    pub fn getent(&self, container: &str, name: &str) -> Vec<String> {
        let o = self.exec(container, &["getent", "hosts", name]);
        o.stdout
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(String::from))
            .collect()
    }

    /// `dig +short` inside `container` (its resolv.conf's server).
    pub fn dig(&self, container: &str, args: &[&str]) -> String {
        let mut cmd = vec!["dig", "+short", "+time=2", "+tries=1"];
        cmd.extend_from_slice(args);
        self.exec(container, &cmd).stdout.trim().to_string()
    }

    /// Names of host links made by this test.
    pub fn links(&self) -> Vec<String> {
        let mut l: Vec<String> = link_list()
            .into_iter()
            .filter(|n| n.starts_with(&self.prefix))
            .collect();
        l.sort();
        l
    }

    /// Interfaces inside a namespace.
    pub fn links_in(&self, container: &str) -> Vec<String> {
        let o = self.exec(container, &["ip", "-o", "link", "show"]);
        o.stdout
            .lines()
            .filter_map(|l| {
                let name = l.split(':').nth(1)?.trim();
                Some(name.split('@').next()?.to_string())
            })
            .collect()
    }

    /// IPv4 addresses of `ifname` inside a namespace.
    pub fn addrs_in(&self, container: &str, ifname: &str) -> Vec<String> {
        let o = self.exec(
            container,
            &["ip", "-o", "-4", "addr", "show", "dev", ifname],
        );
        o.stdout
            .lines()
            .filter_map(|l| l.split_whitespace().nth(3).map(String::from))
            .collect()
    }

    /// `network inspect` parsed.
    pub fn inspect_network(&self, name: &str) -> serde_json::Value {
        let out = self.ok(&["network", "inspect", name]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v[0].clone()
    }

    /// `container inspect` of one container.
    pub fn inspect_container(&self, name: &str) -> serde_json::Value {
        let out = self.ok(&["container", "inspect", name]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v[0].clone()
    }

    /// The full id of a container.
    pub fn container_id(&self, container: &str) -> String {
        let out = self.ok(&["container", "inspect", container]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v[0]["Id"].as_str().unwrap_or_default().to_string()
    }

    /// IPv4 address of a container on a network, from `container inspect`.
    pub fn ip_of(&self, container: &str, network: &str) -> String {
        let out = self.ok(&["container", "inspect", container]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v[0]["NetworkSettings"]["Networks"][network]["IPAddress"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.kill_daemon();
        let p = self.prefix.clone();
        sweep(|n| n.starts_with(&p));
    }
}

/// Run `f` on a thread that has entered the named network namespace. A socket made there stays
/// in that namespace when handed back, whichever thread then uses it.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(
            // SAFETY: `file` is an open namespace file for the length of the call; setns
            // changes only this (new, single-purpose) thread's network namespace.
            unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
            0,
            "setns {path}"
        );
        f()
    })
    .join()
    .unwrap()
}

/// What a name lookup gave, as the churn and crash tests judge it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Addrs(Vec<Ipv4Addr>),
    NxDomain,
    /// Another rcode (SERVFAIL, REFUSED, …).
    Rcode(u8),
    Timeout,
}

/// A plain UDP DNS client living in a container's namespace: one query at a time, A records,
/// replies with a wrong id ignored.
pub struct Asker {
    sock: UdpSocket,
    id: u16,
}

impl Asker {
    /// A client in namespace `ns`, asking `server` (a gateway of a network `ns` is on).
    pub fn new(ns: &str, server: Ipv4Addr, timeout: Duration) -> Asker {
        Asker::from_addr(
            ns,
            "0.0.0.0:0".parse().unwrap(),
            (server, 53).into(),
            timeout,
        )
    }

    /// A client in namespace `ns` sending from `local` (an address of its own, with its scope
    /// for a link-local one) to `server`.
    pub fn from_addr(ns: &str, local: SocketAddr, server: SocketAddr, timeout: Duration) -> Asker {
        let sock = in_netns(ns, move || {
            let s = UdpSocket::bind(local).unwrap_or_else(|e| panic!("bind {local}: {e}"));
            s.connect(server).unwrap();
            s
        });
        sock.set_read_timeout(Some(timeout)).unwrap();
        Asker {
            sock,
            id: fastrand::u16(..),
        }
    }

    pub fn ask(&mut self, name: &str) -> Answer {
        use hickory_proto::op::{Message, Query};
        use hickory_proto::rr::{Name, RData, RecordType};
        self.id = self.id.wrapping_add(1);
        let mut m = Message::query();
        m.metadata.id = self.id;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        let q = m.to_vec().unwrap();
        if self.sock.send(&q).is_err() {
            return Answer::Timeout;
        }
        let mut buf = [0u8; 1500];
        loop {
            let n = match self.sock.recv(&mut buf) {
                Ok(n) => n,
                Err(_) => return Answer::Timeout,
            };
            let Ok(r) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            if r.metadata.id != self.id {
                continue;
            }
            let rcode = u16::from(r.metadata.response_code) as u8;
            return match rcode {
                0 => Answer::Addrs(
                    r.answers
                        .iter()
                        .filter_map(|rr| match &rr.data {
                            RData::A(a) => Some(a.0),
                            _ => None,
                        })
                        .collect(),
                ),
                3 => Answer::NxDomain,
                c => Answer::Rcode(c),
            };
        }
    }
}

/// The Engine API of a test's daemon, called in-process (no CLI process per call): for tests
/// that make thousands of calls.
pub struct Api {
    client: attach_agent::cli::client::Client,
    rt: tokio::runtime::Runtime,
}

impl Api {
    pub fn new(socket: &std::path::Path) -> Api {
        Api {
            client: attach_agent::cli::client::Client::new(socket.to_str().unwrap()).unwrap(),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        }
    }

    /// One call: the status and the JSON body (`Null` when empty), or `Err` when the daemon
    /// could not be reached or hung up (killed).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(u16, serde_json::Value), String> {
        let method = hyper::Method::from_bytes(method.as_bytes()).unwrap();
        let body = body.map(|b| serde_json::to_vec(&b).unwrap());
        let (status, bytes) = self
            .rt
            .block_on(self.client.raw(method, path, body))
            .map_err(|e| e.to_string())?;
        let v = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        Ok((status.as_u16(), v))
    }

    /// A call that must succeed.
    pub fn ok(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> serde_json::Value {
        match self.call(method, path, body) {
            Ok((s, v)) if s < 300 => v,
            other => panic!("{method} {path}: {other:?}"),
        }
    }
}

#[allow(unused_imports)]
pub use test_support::report;

/// A process in a network namespace of its own, as a runtime makes them (`unshare --net`);
/// SIGKILLed on drop, which ends the namespace.
pub struct ProcessNetns(std::process::Child);

impl ProcessNetns {
    pub fn new() -> ProcessNetns {
        use std::os::unix::fs::MetadataExt;
        let child = Command::new("unshare")
            .args(["--net", "sleep", "600"])
            .spawn()
            .expect("unshare (util-linux)");
        let ns = ProcessNetns(child);
        let ours = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::metadata(ns.path())
            .map(|m| m.ino())
            .unwrap_or(ours)
            == ours
        {
            assert!(Instant::now() < deadline, "unshare made no namespace");
            std::thread::sleep(Duration::from_millis(10));
        }
        ns
    }

    /// `/proc/PID/ns/net`.
    pub fn path(&self) -> String {
        format!("/proc/{}/ns/net", self.0.id())
    }

    /// SIGKILL the process: the namespace dies with it.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for ProcessNetns {
    fn drop(&mut self) {
        self.kill();
    }
}
