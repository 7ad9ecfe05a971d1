//! The servers compared on loopback (the echo floor, our standalone resolver, dnsmasq,
//! aardvark-dns): each given the same N names in its own format, started pinned to the server
//! core, and ready once it answers for the last name.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bench::namespaced::Target;
use serde::Serialize;

use crate::{PORT, SERVER_CPU};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
pub(crate) enum Form {
    Bare,
    Qualified,
}

impl Form {
    /// What follows the name in a query to `kind`.
    pub(crate) fn suffix(self, kind: Kind) -> &'static str {
        match (self, kind) {
            (Form::Bare, _) => "",
            (Form::Qualified, Kind::Aardvark) => ".dns.podman",
            (Form::Qualified, _) => ".bench",
        }
    }
    pub(crate) fn label(self) -> &'static str {
        match self {
            Form::Bare => "bare names",
            Form::Qualified => "NAME.NETWORK (aardvark-dns: NAME.dns.podman)",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
pub(crate) enum Kind {
    Echo,
    Ours,
    /// Our resolver with `--metrics-addr ""`: nothing counted (the baseline of the metrics'
    /// cost, measured in the same run).
    OursMetricsOff,
    Dnsmasq,
    Aardvark,
    /// The full agent: real namespaces, bridge, veths, DNS on the gateway.
    Agent,
    /// Docker 20.10's embedded DNS, asked at 127.0.0.11 inside a container.
    Docker,
}

impl Kind {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Kind::Echo => "echo floor",
            Kind::Ours => "attach-agent resolver",
            Kind::OursMetricsOff => "attach-agent resolver, metrics off",
            Kind::Dnsmasq => "dnsmasq",
            Kind::Aardvark => "aardvark-dns",
            Kind::Agent => "attach-agent, full agent in namespaces",
            Kind::Docker => "Docker 20.10 embedded DNS",
        }
    }
    /// Whether it serves containers in real namespaces (at most one bridge's worth of them).
    pub(crate) fn namespaced(self) -> bool {
        matches!(self, Kind::Agent | Kind::Docker)
    }
    /// Where dnsperf asks a server that listens on loopback.
    pub(crate) fn target(self) -> Target {
        Target {
            enter: vec![],
            server: self.listen().into(),
            port: PORT,
            source: Some(self.client().into()),
        }
    }
    pub(crate) fn listen(self) -> &'static str {
        match self {
            Kind::Echo => "127.76.0.1",
            Kind::Ours => "127.77.0.1",
            Kind::OursMetricsOff => "127.80.0.1",
            Kind::Dnsmasq => "127.78.0.1",
            Kind::Aardvark => "127.79.0.1",
            Kind::Agent | Kind::Docker => unreachable!("namespaced"),
        }
    }
    /// The source address dnsperf sends from: a container of the served network.
    pub(crate) fn client(self) -> &'static str {
        match self {
            Kind::Echo => "127.76.0.2",
            Kind::Ours => "127.77.0.2",
            Kind::OursMetricsOff => "127.80.0.2",
            Kind::Dnsmasq => "127.78.0.2",
            Kind::Aardvark => "127.79.0.2",
            Kind::Agent | Kind::Docker => unreachable!("namespaced"),
        }
    }
}

/// Address of name `i` (data only; nothing is sent there).
pub(crate) fn addr(i: u32) -> String {
    let a = 0x0a00_0002u32 + i;
    std::net::Ipv4Addr::from(a).to_string()
}

pub(crate) struct Server {
    pub(crate) child: Child,
    /// A process it forked into the background (aardvark-dns), ended with it.
    pub(crate) daemon: Option<u32>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(pid) = self.daemon {
            // SAFETY: no memory preconditions; the pid is the daemon this server started, and
            // waitpid reaps it with no status buffer.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
                libc::waitpid(pid as i32, std::ptr::null_mut(), 0);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn which(bin: &str) -> Option<PathBuf> {
    let o = Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
}

pub(crate) fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// Start `kind` serving `n` names (its files under `dir`), pinned to the server core, and
/// return once it answers for the last name.
pub(crate) fn start(kind: Kind, n: u32, dir: &Path, exe_dir: &Path) -> Server {
    let work = dir.join(format!("{kind:?}-{n}").to_lowercase());
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", SERVER_CPU]);
    match kind {
        Kind::Echo => {
            cmd.arg(exe_dir.join("echo"))
                .args(["--listen", &format!("{}:{PORT}", kind.listen())]);
        }
        Kind::Ours | Kind::OursMetricsOff => ours(kind, &mut cmd, n, &work, exe_dir),
        Kind::Dnsmasq => dnsmasq(&mut cmd, n, &work),
        Kind::Aardvark => aardvark(&mut cmd, n, &work),
        Kind::Agent | Kind::Docker => unreachable!("started by bench::namespaced"),
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {kind:?}: {e}"));
    let server = Server {
        child,
        daemon: None,
    };
    wait_answering(kind, &format!("c{}", n - 1));
    server
}

/// Our standalone resolver on a records file of the `n` names and the client (`kind`: with
/// metrics, or without).
fn ours(kind: Kind, cmd: &mut Command, n: u32, work: &Path, exe_dir: &Path) {
    let mut f = String::with_capacity(n as usize * 96);
    let _ = writeln!(
        f,
        "[[network]]\nname = \"bench\"\nlisten = [\"{}\"]\n",
        kind.listen()
    );
    let _ = writeln!(
        f,
        "[[container]]\nname = \"client\"\n[[container.endpoint]]\nnetwork = \"bench\"\nipv4 = \"{}\"\n",
        kind.client()
    );
    for i in 0..n {
        let _ = writeln!(
            f,
            "[[container]]\nname = \"c{i}\"\n[[container.endpoint]]\nnetwork = \"bench\"\nipv4 = \"{}\"\n",
            addr(i)
        );
    }
    let path = work.join("records.toml");
    write(&path, &f);
    cmd.arg(exe_dir.join("resolver"))
        .args([
            "--records",
            path.to_str().unwrap(),
            "--port",
            &PORT.to_string(),
        ])
        .args(["--upstream", "127.0.0.1:9", "--log", "warn"])
        .args(["--metrics-addr", metrics_addr(kind)]);
}

/// Where our resolver of `kind` serves its metrics: a free port, or nowhere (and then it
/// counts nothing).
pub(crate) fn metrics_addr(kind: Kind) -> &'static str {
    if kind == Kind::OursMetricsOff {
        ""
    } else {
        "127.0.0.1:0"
    }
}

/// dnsmasq on a hosts file of the `n` names, its own configuration only.
fn dnsmasq(cmd: &mut Command, n: u32, work: &Path) {
    let mut f = String::with_capacity(n as usize * 24);
    for i in 0..n {
        let _ = writeln!(f, "{} c{i}", addr(i));
    }
    let path = work.join("hosts");
    write(&path, &f);
    cmd.arg("dnsmasq").args([
        "-k",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--domain=bench",
        "--expand-hosts",
        "--bind-interfaces",
        "--user=root",
        &format!("--listen-address={}", Kind::Dnsmasq.listen()),
        &format!("--port={PORT}"),
        &format!("--addn-hosts={}", path.display()),
        &format!("--pid-file={}", work.join("pid").display()),
    ]);
}

/// aardvark-dns on a config directory written as netavark writes it.
fn aardvark(cmd: &mut Command, n: u32, work: &Path) {
    let kind = Kind::Aardvark;
    let cfg = work.join("config");
    std::fs::create_dir_all(&cfg).unwrap();
    let mut f = String::with_capacity(n as usize * 40);
    let _ = writeln!(f, "{}", kind.listen());
    let _ = writeln!(f, "client {}  client", kind.client());
    for i in 0..n {
        let _ = writeln!(f, "{i:012x} {}  c{i}", addr(i));
    }
    write(&cfg.join("bench"), &f);
    cmd.arg(which("aardvark-dns").unwrap_or("/usr/lib/podman/aardvark-dns".into()))
        .arg("--config")
        .arg(&cfg)
        .args(["-p", &PORT.to_string(), "run"]);
}

/// Wait (up to 300 s: aardvark-dns loads 10^6 names slowly) until `kind` answers `probe`.
fn wait_answering(kind: Kind, probe: &str) {
    let patience = Duration::from_secs(300);
    wait_answer(
        &[],
        kind.listen(),
        PORT,
        Some(kind.client()),
        probe,
        patience,
    );
}

/// Wait up to `patience` until `server:port` answers `name` with an address (dig from inside
/// `enter`, from `source`; a 5 s dig timeout, for servers that wait out a dead upstream).
pub(crate) fn wait_answer(
    enter: &[String],
    server: &str,
    port: u16,
    source: Option<&str>,
    name: &str,
    patience: Duration,
) {
    let deadline = Instant::now() + patience;
    loop {
        let mut c = Command::new(enter.first().map_or("dig", |s| s.as_str()));
        c.args(enter.iter().skip(1));
        if !enter.is_empty() {
            c.arg("dig");
        }
        c.args([&format!("@{server}"), "-p", &port.to_string()]);
        if let Some(s) = source {
            c.args(["-b", s]);
        }
        let o = c
            .args(["+short", "+time=5", "+tries=1", name])
            .output()
            .expect("dig");
        let answer = String::from_utf8_lossy(&o.stdout);
        if answer.trim().parse::<std::net::Ipv4Addr>().is_ok() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{server}:{port} does not answer {name}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// [`start`], then find the process that serves (recorded in the guard, so it is ended with
/// it): the guard and that PID.
pub(crate) fn start_serving(kind: Kind, n: u32, dir: &Path, exe_dir: &Path) -> (Server, u32) {
    let mut server = start(kind, n, dir, exe_dir);
    let pid = server_pid(
        kind,
        &server,
        &dir.join(format!("{kind:?}-{n}").to_lowercase()),
    );
    if pid != server.child.id() {
        server.daemon = Some(pid);
    }
    (server, pid)
}

/// The serving process: aardvark-dns forks into the background, so find it by its command
/// line (its config directory is ours alone); the others stay the process we started.
pub(crate) fn server_pid(kind: Kind, server: &Server, dir: &Path) -> u32 {
    if kind != Kind::Aardvark {
        return server.child.id();
    }
    let needle = dir.to_string_lossy().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd);
            cmd.contains("aardvark-dns") && cmd.contains(&needle)
        })
        .expect("the aardvark-dns process")
}
