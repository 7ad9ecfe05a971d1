//! The two servers of the comparison that answer containers in real network namespaces: the
//! full attach-agent (daemon, bridge, veths, DNS on the gateway) and Docker 20.10's embedded
//! DNS (127.0.0.11 inside each container). Each serves N containers whose network aliases are
//! the benchmark's names `c0`..`c{N-1}`, plus one client container that dnsperf runs in.
//!
//! Linux bridges take at most 1024 ports, so these rows exist for N ≤ 1000.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::docker_engine::DockerEngine;

/// Most containers one bridge can hold, with the client.
pub const MAX_NAMES: u32 = 1000;

/// Where dnsperf must run and what it must ask.
#[derive(Debug, Clone)]
pub struct Target {
    /// A command prefix that enters the client's namespace.
    pub enter: Vec<String>,
    pub server: String,
    pub port: u16,
    /// The source address to send from (`-a`), where the client is an address, not a namespace.
    pub source: Option<String>,
}

/// A running server with N containers; everything it made goes when it is dropped.
pub struct Running {
    /// The process whose CPU and memory are the server's.
    pub pid: u32,
    pub target: Target,
    _guard: Guard,
}

enum Guard {
    Agent {
        daemon: Child,
    },
    /// Held for its Drop: containers, network and engine go with it.
    #[allow(dead_code)]
    Docker(Box<DockerEngine>),
}

impl Drop for Guard {
    fn drop(&mut self) {
        match self {
            Guard::Agent { daemon } => {
                let _ = daemon.kill();
                let _ = daemon.wait();
                sweep_agent();
            }
            Guard::Docker(_) => {}
        }
    }
}

const AGENT_PREFIX: &str = "bcg";

/// Namespaces and links of the agent run (also leftovers of an interrupted one).
fn sweep_agent() {
    for dir in ["/run/netns", "/sys/class/net"] {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Some(name) = e.file_name().to_str().map(String::from) else {
                continue;
            };
            if !name.starts_with(AGENT_PREFIX) {
                continue;
            }
            let args: Vec<&str> = if dir == "/run/netns" {
                vec!["netns", "delete", &name]
            } else {
                vec!["link", "delete", &name]
            };
            let _ = Command::new("ip")
                .args(&args)
                .stderr(Stdio::null())
                .status();
        }
    }
    let _ = std::fs::read_dir("/etc/netns").map(|d| {
        for e in d.flatten() {
            if e.file_name().to_string_lossy().starts_with(AGENT_PREFIX) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    });
}

/// Where the agent forwards when a benchmark does not measure forwarding: a closed port on
/// loopback.
pub const NO_UPSTREAM: &[&str] = &["127.0.0.1:9"];

/// Start the agent daemon pinned to `cpu`, its socket and state in `work`, its links named
/// with `prefix`, forwarding to `upstreams` (on loopback). Returns it and its socket.
pub fn spawn_agent(
    bin: &Path,
    work: &Path,
    cpu: &str,
    prefix: &str,
    upstreams: &[&str],
) -> (Child, PathBuf) {
    let socket = work.join("agent.sock");
    let mut cmd = agent_command(bin, work, cpu, prefix, upstreams);
    cmd.args(["--log", "warn"]);
    let daemon = cmd.stdin(Stdio::null()).spawn().expect("start the agent");
    (daemon, socket)
}

/// [`spawn_agent`], with the agent's phase timings (`attach_agent::timing`) logged to
/// `log`, for [`phase_means`].
pub fn spawn_agent_timed(
    bin: &Path,
    work: &Path,
    cpu: &str,
    prefix: &str,
    log: &Path,
) -> (Child, PathBuf) {
    let socket = work.join("agent.sock");
    let mut cmd = agent_command(bin, work, cpu, prefix, NO_UPSTREAM);
    cmd.args(["--log", "warn,attach_agent::timing=debug"]);
    let daemon = cmd
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(log).expect("the agent's log"))
        .spawn()
        .expect("start the agent");
    (daemon, socket)
}

fn agent_command(bin: &Path, work: &Path, cpu: &str, prefix: &str, upstreams: &[&str]) -> Command {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", cpu])
        .arg(bin)
        .arg("daemon")
        .arg("--socket")
        .arg(work.join("agent.sock"))
        .arg("--state-dir")
        .arg(work.join("state"))
        .args(["--link-prefix", prefix])
        .args(["--metrics-addr", "127.0.0.1:0"]);
    for u in upstreams {
        cmd.args(["--upstream", u]);
    }
    cmd
}

/// The mean of each phase (ms) over the first `first` lines of `operation` in a log written
/// by [`spawn_agent_timed`], in the order the agent times them.
pub fn phase_means(log: &Path, operation: &str, first: usize) -> Vec<(String, f64)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut sums: Vec<(String, f64, u32)> = Vec::new();
    let tag = format!("operation=\"{operation}\"");
    for line in text.lines().filter(|l| l.contains(&tag)).take(first) {
        let Some(laps) = line.split("phases_us=").nth(1) else {
            continue;
        };
        for lap in laps.split_whitespace().next().unwrap_or("").split(',') {
            let Some((phase, us)) = lap.split_once('=') else {
                continue;
            };
            let Ok(us) = us.parse::<f64>() else { continue };
            match sums.iter_mut().find(|(p, _, _)| p == phase) {
                Some(s) => {
                    s.1 += us;
                    s.2 += 1;
                }
                None => sums.push((phase.to_string(), us, 1)),
            }
        }
    }
    sums.into_iter()
        .map(|(p, sum, n)| (p, sum / f64::from(n) / 1e3))
        .collect()
}

/// Wait until the agent answers on its API.
pub async fn wait_ready(client: &attach_agent::cli::client::Client) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while client
        .raw(hyper::Method::GET, "/_ping", None)
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the agent did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One API call that must succeed; its reply body.
pub async fn must(
    client: &attach_agent::cli::client::Client,
    method: hyper::Method,
    path: &str,
    body: serde_json::Value,
) -> Vec<u8> {
    let (st, b) = client
        .raw(method, path, Some(body.to_string().into_bytes()))
        .await
        .expect("agent API");
    assert!(
        st.is_success(),
        "{path}: {st} {}",
        String::from_utf8_lossy(&b)
    );
    b.to_vec()
}

/// The agent daemon pinned to `cpu` and forwarding to `upstreams`, with a network "bench"
/// (10.197.0.0/16) and N running containers `bcg-I` aliased `cI`, and a client container.
pub fn agent(n: u32, work: &Path, bin: &Path, cpu: &str, upstreams: &[&str]) -> Running {
    assert!(n <= MAX_NAMES);
    sweep_agent();
    let _ = std::fs::remove_dir_all(work);
    std::fs::create_dir_all(work).unwrap();
    let (daemon, socket) = spawn_agent(bin, work, cpu, AGENT_PREFIX, upstreams);
    let guard = Guard::Agent { daemon };
    let pid = match &guard {
        Guard::Agent { daemon } => daemon.id(),
        Guard::Docker(_) => unreachable!(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use attach_agent::cli::client::Client;
        use hyper::Method;
        let client = Client::new(&format!("unix://{}", socket.display())).unwrap();
        wait_ready(&client).await;
        let call = |path: String, body: serde_json::Value| {
            let client = client.clone();
            async move {
                must(&client, Method::POST, &path, body).await;
            }
        };
        call(
            "/networks/create".into(),
            serde_json::json!({"Name": "bench", "IPAM": {"Config": [{"Subnet": "10.197.0.0/16"}]}}),
        )
        .await;
        let names = (0..n)
            .map(|i| (format!("{AGENT_PREFIX}-{i}"), vec![format!("c{i}")]))
            .chain(std::iter::once((format!("{AGENT_PREFIX}-client"), vec![])));
        for (name, aliases) in names {
            call(
                format!("/containers/create?name={name}"),
                serde_json::json!({
                    "Image": "none",
                    "HostConfig": {"NetworkMode": "bench"},
                    "NetworkingConfig": {"EndpointsConfig": {"bench": {"Aliases": aliases}}},
                }),
            )
            .await;
            call(format!("/containers/{name}/start"), serde_json::json!({})).await;
        }
    });
    Running {
        pid,
        target: Target {
            enter: ["ip", "netns", "exec", &format!("{AGENT_PREFIX}-client")]
                .map(String::from)
                .to_vec(),
            server: "10.197.0.1".into(),
            port: 53,
            source: None,
        },
        _guard: guard,
    }
}

/// Docker Engine 20.10 with a network "bench" (10.198.0.0/16, bridge `bcd-br0`) and N running
/// containers `bcd-I` aliased `cI`, and a client container whose external DNS servers are
/// `dns` (`docker run --dns`; none: Docker's default).
pub fn docker(n: u32, dns: &[&str]) -> Running {
    assert!(n <= MAX_NAMES);
    let engine = DockerEngine::start();
    let ok = |args: &[&str]| {
        let o = engine.docker(args);
        assert!(
            o.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    ok(&[
        "network",
        "create",
        "--subnet",
        "10.198.0.0/16",
        "-o",
        "com.docker.network.bridge.name=bcd-br0",
        "bench",
    ]);
    for i in 0..=n {
        let (name, alias) = if i == n {
            ("bcd-client".to_string(), "client".to_string())
        } else {
            (format!("bcd-{i}"), format!("c{i}"))
        };
        let mut args = vec![
            "run",
            "-d",
            "--network",
            "bench",
            "--network-alias",
            &alias,
            "--name",
            &name,
        ];
        if i == n {
            for d in dns {
                args.extend(["--dns", d]);
            }
        }
        args.extend(["ddtest:1", "sleep", "1000000"]);
        ok(&args);
    }
    let client = engine.pid_of("bcd-client");
    Running {
        pid: engine.dockerd_pid(),
        target: Target {
            enter: ["nsenter", "-n", "-t", &client].map(String::from).to_vec(),
            server: "127.0.0.11".into(),
            port: 53,
            source: None,
        },
        _guard: Guard::Docker(Box::new(engine)),
    }
}
