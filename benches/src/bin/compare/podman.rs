//! A real runtime's view: `podman run -d` of the same busybox on an agent network (through the
//! attach-agent-cni plugin) and on podman's own netavark bridge network, one container at a
//! time, each run timed whole; and the plugin's ADD alone, timed into fresh namespaces.
//!
//! netavark writes firewall rules and sysctls, so that side runs inside a network namespace of
//! its own ("bcp-host") playing the host: its bridge, veths and rules live and die there.
//! Everything of podman's is private (configuration, storage, CNI directories).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use bench::namespaced;
use bench::netns::{ip, Sweep};
use serde::Serialize;
use test_support::podman::{Backend, Podman};

use crate::connect::{agent_binary, Timings};
use crate::peers::Server;
use crate::SERVER_CPU;

const HOST_NS: &str = "bcp-host";
const PREFIX: &str = "bcp";

#[derive(Debug, Clone, Serialize)]
pub(crate) struct PodmanFigures {
    pub(crate) runs: u32,
    /// `podman run -d` on an agent network.
    pub(crate) ours: Timings,
    /// The same on podman's netavark bridge network.
    pub(crate) netavark: Option<Timings>,
    /// The plugin's ADD (a process, the daemon's attach, the result), alone.
    pub(crate) cni_add: Timings,
}

/// Time `n` `podman run -d` of `pm`'s busybox on `network`, one after another.
fn time_runs(pm: &Podman, network: &str, n: u32) -> Timings {
    let mut times = Vec::with_capacity(n as usize);
    let all = Instant::now();
    for i in 0..n {
        let name = format!("{PREFIX}-{i}");
        let t = Instant::now();
        pm.ok(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            network,
            &pm.image,
            "sleep",
            "600",
        ]);
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let total = all.elapsed().as_secs_f64();
    let _ = pm.cmd(&["rm", "-af", "-t", "0"]);
    Timings::of(times, total)
}

/// The plugin's ADD into `n` fresh namespaces, each timed; DEL and the namespaces after.
fn time_adds(plugin: &Path, socket: &Path, network: &str, n: u32) -> Timings {
    let conf = serde_json::json!({
        "cniVersion": "1.0.0", "name": network, "type": "attach-agent-cni",
        "socket": socket.display().to_string(),
    })
    .to_string();
    let call = |command: &str, i: u32| -> std::time::Duration {
        let ns = format!("bcp-a{i}");
        let t = Instant::now();
        let mut child = Command::new(plugin)
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", format!("bcp-add-{i}"))
            .env("CNI_NETNS", format!("/run/netns/{ns}"))
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/nonexistent")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("the plugin");
        let _ = child.stdin.take().unwrap().write_all(conf.as_bytes());
        let st = child.wait().expect("the plugin");
        assert!(st.success(), "plugin {command} failed");
        t.elapsed()
    };
    let mut times = Vec::with_capacity(n as usize);
    let all = Instant::now();
    for i in 0..n {
        assert!(ip(&["netns", "add", &format!("bcp-a{i}")]), "ip netns add");
        times.push(call("ADD", i).as_secs_f64() * 1e3);
    }
    let total = all.elapsed().as_secs_f64();
    for i in 0..n {
        call("DEL", i);
        ip(&["netns", "delete", &format!("bcp-a{i}")]);
    }
    Timings::of(times, total)
}

/// `n` podman runs on ours and on netavark's, and `n` ADDs alone.
pub(crate) fn podman_figures(n: u32, dir: &Path, exe_dir: &Path) -> PodmanFigures {
    let _cleanup = Sweep::new("bcp-");
    let bin = agent_binary(exe_dir);
    let plugin = exe_dir.join(attach_agent::cni::setup::PLUGIN);
    let work = dir.join("podman");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let (child, socket) =
        namespaced::spawn_agent(&bin, &work, SERVER_CPU, PREFIX, namespaced::NO_UPSTREAM);
    let _daemon = Server {
        child,
        daemon: None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client =
            attach_agent::cli::client::Client::new(&format!("unix://{}", socket.display()))
                .unwrap();
        namespaced::wait_ready(&client).await;
        namespaced::must(
            &client,
            hyper::Method::POST,
            "/networks/create",
            serde_json::json!({"Name": "bench", "IPAM": {"Config": [{"Subnet": "10.234.0.0/16"}]}}),
        )
        .await;
    });

    eprintln!("podman run -d on the agent's network, {n} times...");
    let pm = Podman::new(Backend::Cni, "bench", PREFIX);
    attach_agent::cni::setup::install(
        &plugin,
        &pm.cni_bin(),
        &pm.cni_conf(),
        &["bench".to_string()],
        &socket,
    )
    .expect("cni install");
    let ours = time_runs(&pm, "bench", n);
    drop(pm);

    eprintln!("the plugin's ADD alone, {n} times...");
    let cni_add = time_adds(&plugin, &socket, "bench", n);

    // The agent's network goes (its bridge with it) before the daemon stops.
    rt.block_on(async {
        let client =
            attach_agent::cli::client::Client::new(&format!("unix://{}", socket.display()))
                .unwrap();
        namespaced::must(
            &client,
            hyper::Method::DELETE,
            "/networks/bench",
            serde_json::Value::Null,
        )
        .await;
    });

    let netavark = Path::new("/usr/lib/podman/netavark").exists().then(|| {
        eprintln!("podman run -d on netavark's bridge network (in {HOST_NS}), {n} times...");
        assert!(ip(&["netns", "add", HOST_NS]), "ip netns add {HOST_NS}");
        ip(&["netns", "exec", HOST_NS, "ip", "link", "set", "lo", "up"]);
        // Its default network stays unused (never started): the runs name theirs.
        let pm = Podman::inside(Backend::Netavark, "bcp-unused", "bcpn", HOST_NS);
        pm.ok(&["network", "create", "--subnet", "10.235.0.0/16", "bench"]);
        time_runs(&pm, "bench", n)
    });
    PodmanFigures {
        runs: n,
        ours,
        netavark,
        cni_add,
    }
}
