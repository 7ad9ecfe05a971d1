//! The agent's connect path: N running containers connected one at a time over its API, each
//! call timed, each name asked right after its connect returned; beside it the kernel's floor
//! for the same work on the same bridge sizes (`bench::kernel_floor`) and netavark 1.4's setup
//! of the same number of namespaces.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bench::namespaced;
use serde::Serialize;

use crate::peers::Server;
use crate::SERVER_CPU;

#[derive(Debug, Clone, Serialize)]
pub(crate) struct AgentFigures {
    pub(crate) containers: u32,
    /// The bridges the one-at-a-time connects were spread over.
    pub(crate) bridges: u32,
    pub(crate) connect: Timings,
    /// Containers whose name answered on the first query sent after their connect returned.
    pub(crate) answered_at_once: u32,
    /// netavark 1.4 `setup` on as many fresh namespaces, when installed.
    pub(crate) netavark: Option<Timings>,
    /// The kernel's own work for as many connects onto one bridge.
    pub(crate) kernel_floor: Timings,
    /// p50 of the first and of the last tenth of the connects (the bridge nearly empty, then
    /// nearly full): how each grows with the number of containers.
    pub(crate) connect_tenths_p50_ms: (f64, f64),
    pub(crate) floor_tenths_p50_ms: (f64, f64),
    /// Where a connect's time goes inside the agent: each phase's mean (ms), as the agent
    /// timed it (lock wait, plan: namespace and addresses, kernel work, the durable write's
    /// remaining wait, commit: table and /etc/netns files).
    pub(crate) connect_phases_ms: Vec<(String, f64)>,
    /// Containers connected per second with 1, 4 and 16 clients at once (each phase connects
    /// every container to a network of its own, so each starts on an empty bridge).
    pub(crate) clients_per_second: Vec<(u32, f64)>,
    /// The p50 of each twentieth of the connects, in order: how each grows as the bridge
    /// fills (the connect chart).
    pub(crate) growth: Vec<Growth>,
}

/// One window of the connects, in the order they were made.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Growth {
    /// Connects done by the window's end.
    pub(crate) containers: u32,
    pub(crate) agent_p50_ms: f64,
    pub(crate) floor_p50_ms: f64,
    pub(crate) netavark_p50_ms: Option<f64>,
}

/// The p50 of each of twenty windows of the three series (taken in the same order).
fn growth(agent: &[f64], floor: &[f64], netavark: Option<&[f64]>) -> Vec<Growth> {
    let k = (agent.len() / 20).max(1);
    let p50 = |all: &[f64], from: usize| {
        let part = all.get(from..(from + k).min(all.len()))?;
        if part.is_empty() {
            return None;
        }
        let mut v = part.to_vec();
        v.sort_by(f64::total_cmp);
        Some(v[v.len() / 2])
    };
    (0..agent.len())
        .step_by(k)
        .filter_map(|from| {
            Some(Growth {
                containers: (from + k).min(agent.len()) as u32,
                agent_p50_ms: p50(agent, from)?,
                floor_p50_ms: p50(floor, from)?,
                netavark_p50_ms: netavark.and_then(|n| p50(n, from)),
            })
        })
        .collect()
}

/// The p50 of the first and of the last tenth of `ms` (in the order they were taken).
fn tenths(ms: &[f64]) -> (f64, f64) {
    let k = (ms.len() / 10).max(1);
    let p50 = |part: &[f64]| {
        let mut v = part.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (p50(&ms[..k]), p50(&ms[ms.len() - k..]))
}

/// Per-call times of one kind of operation, done one at a time.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Timings {
    pub(crate) mean_ms: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) per_second: f64,
}

impl Timings {
    pub(crate) fn of(mut ms: Vec<f64>, total_seconds: f64) -> Timings {
        ms.sort_by(f64::total_cmp);
        Timings {
            mean_ms: ms.iter().sum::<f64>() / ms.len() as f64,
            p50_ms: ms[ms.len() / 2],
            p99_ms: ms[((ms.len() as f64 * 0.99) as usize).min(ms.len() - 1)],
            per_second: ms.len() as f64 / total_seconds,
        }
    }
}

/// The agent's binary beside this one (and its CNI plugin), built with the same profile:
/// cargo makes them current when older than the sources, and does nothing when they are not.
pub(crate) fn agent_binary(exe_dir: &Path) -> PathBuf {
    let bin = exe_dir.join("attach-agent");
    {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut c = Command::new(cargo);
        c.args(["build", "-p", "attach-agent"]);
        if exe_dir.ends_with("release") {
            c.arg("--release");
        }
        assert!(
            c.status().is_ok_and(|s| s.success()),
            "building the agent failed"
        );
    }
    bin
}

/// Start the agent, make `n` running containers, connect each to one network over the API
/// (timing each call), and ask the network's DNS for the name right after each connect returns.
pub(crate) fn agent_figures(n: u32, bridges: u32, dir: &Path, exe_dir: &Path) -> AgentFigures {
    assert!(
        (1..=n).contains(&bridges),
        "--bridges between 1 and --agent"
    );
    // SAFETY: geteuid has no preconditions and cannot fail.
    assert_eq!(unsafe { libc::geteuid() }, 0, "--agent needs root");
    let bin = agent_binary(exe_dir);
    // Each phase starts once the kernel has cleaned up after the one before.
    let baseline = bench::netns::namespaces_held();
    let work = dir.join("agent");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let log = work.join("agent.log");
    let (child, socket) = namespaced::spawn_agent_timed(&bin, &work, SERVER_CPU, "bca", &log);
    let daemon = Server {
        child,
        daemon: None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (times, total, answered, concurrent) =
        rt.block_on(connect_one_at_a_time(&socket, n, bridges));
    drop(daemon);
    // The one-at-a-time phase's connects only (the concurrent ones wait for each other).
    let connect_phases_ms = namespaced::phase_means(&log, "connect", n as usize);
    let waited = bench::netns::settle(baseline);
    eprintln!(
        "kernel floor on {n} namespaces (after {:.1} s of the kernel's cleanup)...",
        waited.as_secs_f64()
    );
    // On the agent's CPU, as the agent runs.
    let cpu = SERVER_CPU.parse().expect("a CPU number");
    let floor = bench::kernel_floor::floor_times(n, bridges, cpu);
    // Its rate from the timed work alone (opening each namespace's socket is not the floor's).
    let floor_total = floor.iter().sum::<f64>() / 1e3;
    let netavark = bench::netavark::available().then(|| {
        let waited = bench::netns::settle(baseline);
        eprintln!(
            "netavark setup on {n} namespaces (after {:.1} s of the kernel's cleanup)...",
            waited.as_secs_f64()
        );
        let all = Instant::now();
        let times = bench::netavark::setup_times(n, &work);
        (
            times.clone(),
            Timings::of(times, all.elapsed().as_secs_f64()),
        )
    });
    let growth = growth(
        &times,
        &floor,
        netavark.as_ref().map(|(raw, _)| raw.as_slice()),
    );
    let netavark = netavark.map(|(_, t)| t);
    // One client: the connects' own time (the name asked after each is not a connect's).
    let one_client = f64::from(n) / (times.iter().sum::<f64>() / 1e3);
    AgentFigures {
        containers: n,
        bridges,
        connect_tenths_p50_ms: tenths(&times),
        floor_tenths_p50_ms: tenths(&floor),
        connect: Timings::of(times, total),
        answered_at_once: answered,
        netavark,
        kernel_floor: Timings::of(floor, floor_total),
        connect_phases_ms,
        clients_per_second: std::iter::once((1, one_client)).chain(concurrent).collect(),
        growth,
    }
}

/// Over the API at `socket`: a network, `n` running containers, then each connected to the
/// network in turn, timed, and its name asked of the network's DNS right after; then every
/// container connected to a network of its own by 4 and by 16 clients at once. The timings,
/// the total, how many names answered at once, and the concurrent phases' containers/s.
async fn connect_one_at_a_time(
    socket: &Path,
    n: u32,
    bridges: u32,
) -> (Vec<f64>, f64, u32, Vec<(u32, f64)>) {
    use attach_agent::cli::client::Client;
    use hyper::Method;
    let client = Client::new(&format!("unix://{}", socket.display())).unwrap();
    namespaced::wait_ready(&client).await;
    let call = |m: Method, path: String, body: serde_json::Value| {
        let client = client.clone();
        async move { namespaced::must(&client, m, &path, body).await }
    };
    // Bridge b's network and its gateway (for the name asked right after each connect).
    let mut nets: Vec<(String, std::net::IpAddr)> = Vec::new();
    for b in 0..bridges {
        let name = if b == 0 {
            "bench".to_string()
        } else {
            format!("bench-b{b}")
        };
        let created = call(
            Method::POST,
            "/networks/create".into(),
            serde_json::json!({"Name": name}),
        )
        .await;
        let id: serde_json::Value = serde_json::from_slice(&created).unwrap();
        let inspect = client
            .raw(
                Method::GET,
                &format!("/networks/{}", id["Id"].as_str().unwrap()),
                None,
            )
            .await
            .unwrap()
            .1;
        let inspect: serde_json::Value = serde_json::from_slice(&inspect).unwrap();
        let gateway = inspect["IPAM"]["Config"][0]["Gateway"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        nets.push((name, gateway));
    }
    let made = crate::progress::bar(u64::from(n), "containers created and started");
    for i in 0..n {
        made.inc(1);
        call(
            Method::POST,
            format!("/containers/create?name=bca-{i}"),
            serde_json::json!({"Image": "none"}),
        )
        .await;
        call(
            Method::POST,
            format!("/containers/bca-{i}/start"),
            serde_json::json!({}),
        )
        .await;
    }
    made.finish_and_clear();
    let dns = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    dns.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut times = Vec::with_capacity(n as usize);
    let mut answered = 0;
    let bar = crate::progress::bar(u64::from(n), "connects, one at a time");
    let all = Instant::now();
    for i in 0..n {
        bar.inc(1);
        let (net, gateway) = &nets[(i % bridges) as usize];
        let t = Instant::now();
        call(
            Method::POST,
            format!("/networks/{net}/connect"),
            serde_json::json!({"Container": format!("bca-{i}")}),
        )
        .await;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        // Right after connect returned: does the name answer?
        let mut q = hickory_proto::op::Message::query();
        q.add_query(hickory_proto::op::Query::query(
            hickory_proto::rr::Name::from_ascii(format!("bca-{i}")).unwrap(),
            hickory_proto::rr::RecordType::A,
        ));
        dns.send_to(&q.to_vec().unwrap(), (*gateway, 53)).unwrap();
        let mut buf = [0u8; 512];
        if let Ok(len) = dns.recv(&mut buf) {
            if hickory_proto::op::Message::from_vec(&buf[..len])
                .is_ok_and(|m| !m.answers.is_empty())
            {
                answered += 1;
            }
        }
    }
    let total = all.elapsed().as_secs_f64();
    bar.finish_and_clear();
    // Every container connected to one of `nets` (container i to network i mod their number,
    // as in the one-at-a-time phase, so it meets as many ports as there; by client i mod
    // `clients`): the time.
    let connect_all = |nets: Vec<String>, clients: u32, disconnect: bool| {
        let call = &call;
        async move {
            let all = Instant::now();
            let workers = (0..clients).map(|t| {
                let nets = nets.clone();
                async move {
                    for i in (t..n).step_by(clients as usize) {
                        let verb = if disconnect { "disconnect" } else { "connect" };
                        let net = &nets[i as usize % nets.len()];
                        call(
                            Method::POST,
                            format!("/networks/{net}/{verb}"),
                            serde_json::json!({"Container": format!("bca-{i}")}),
                        )
                        .await;
                    }
                }
            });
            futures::future::join_all(workers).await;
            all.elapsed().as_secs_f64()
        }
    };
    // Each concurrent phase starts as the first did: no veth on any bridge, its networks new
    // (as many as the first phase's).
    for (b, (net, _)) in nets.iter().enumerate() {
        for i in (b as u32..n).step_by(bridges as usize) {
            call(
                Method::POST,
                format!("/networks/{net}/disconnect"),
                serde_json::json!({"Container": format!("bca-{i}")}),
            )
            .await;
        }
    }
    let mut concurrent = Vec::new();
    let mut made: Vec<String> = nets.into_iter().map(|(name, _)| name).collect();
    for clients in [4u32, 16] {
        let phase: Vec<String> = (0..bridges)
            .map(|b| format!("bench-{clients}-b{b}"))
            .collect();
        for net in &phase {
            call(
                Method::POST,
                "/networks/create".into(),
                serde_json::json!({"Name": net}),
            )
            .await;
        }
        made.extend(phase.iter().cloned());
        eprintln!("connecting {n} containers with {clients} clients at once...");
        let took = connect_all(phase.clone(), clients, false).await;
        concurrent.push((clients, f64::from(n) / took));
        connect_all(phase, 16, true).await;
    }
    for i in 0..n {
        let _ = client
            .raw(
                Method::DELETE,
                &format!("/containers/bca-{i}?force=1"),
                None,
            )
            .await;
    }
    for net in made {
        let _ = client
            .raw(Method::DELETE, &format!("/networks/{net}"), None)
            .await;
    }
    (times, total, answered, concurrent)
}
