//! A container whose namespace dies without the agent being told (its process killed, no DEL,
//! no stop) leaves DNS and gives its address back by itself: the kernel's link deletion is the
//! signal, no container is polled.

mod common;

use std::time::{Duration, Instant};

use common::{Env, ProcessNetns};

#[test]
fn a_container_whose_namespace_dies_leaves_dns_and_frees_its_address() {
    let env = Env::new();
    let net = env.name("net");
    env.ok(&["network", "create", "--subnet", &env.subnet(1), &net]);
    let client = env.name("client");
    env.ok(&["run", "--name", &client, "--network", &net, "busybox"]);
    let mut sandbox = ProcessNetns::new();
    let victim = env.name("victim");
    env.ok(&[
        "run",
        "--name",
        &victim,
        "--netns",
        &sandbox.path(),
        "--network",
        &net,
        "--alias",
        "doomed",
        "busybox",
    ]);
    assert_eq!(env.dig(&client, &[&victim]), env.ip(1, 3));
    assert_eq!(env.dig(&client, &["doomed"]), env.ip(1, 3));

    // The process dies; nobody tells the agent.
    let killed = Instant::now();
    sandbox.kill();
    let deadline = killed + Duration::from_secs(5);
    while !env.dig(&client, &[&victim]).is_empty() {
        assert!(
            Instant::now() < deadline,
            "still answering 5 s after its namespace died"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "records gone {} ms after the namespace's process was killed",
        killed.elapsed().as_millis()
    );
    assert_eq!(env.dig(&client, &["doomed"]), "", "its alias too");
    let inspect: serde_json::Value =
        serde_json::from_str(&env.ok(&["container", "inspect", &victim])).unwrap();
    assert_eq!(inspect[0]["State"]["Status"], "exited");
    // Its address is free again: the next container gets it.
    let next = env.name("next");
    env.ok(&["run", "--name", &next, "--network", &net, "busybox"]);
    assert_eq!(env.dig(&client, &[&next]), env.ip(1, 3));
}

/// The same for a namespace the agent made, deleted behind its back with `ip netns del` while
/// the container runs: the socket the agent keeps inside it is let go at once, so the
/// namespace dies with its veth as it would without the agent.
#[test]
fn an_agent_made_namespace_deleted_behind_its_back_leaves_dns() {
    let env = Env::new();
    let net = env.name("net");
    env.ok(&["network", "create", "--subnet", &env.subnet(1), &net]);
    let (client, victim) = (env.name("client"), env.name("victim"));
    env.ok(&["run", "--name", &client, "--network", &net, "busybox"]);
    env.ok(&["run", "--name", &victim, "--network", &net, "busybox"]);
    assert_eq!(env.dig(&client, &[&victim]), env.ip(1, 3));
    let st = std::process::Command::new("ip")
        .args(["netns", "del", &victim])
        .status()
        .unwrap();
    assert!(st.success(), "ip netns del {victim}");
    soon("its records are gone", || {
        env.dig(&client, &[&victim]).is_empty()
    });
    env.ok(&["container", "rm", "-f", &victim]);
}

/// The host-side link whose index `container`'s `eth0` is paired with.
fn host_veth_of(env: &Env, container: &str) -> String {
    let peer = env.exec(container, &["cat", "/sys/class/net/eth0/iflink"]);
    let peer = peer.stdout.trim().to_string();
    env.links()
        .into_iter()
        .find(|l| {
            std::fs::read_to_string(format!("/sys/class/net/{l}/ifindex"))
                .is_ok_and(|i| i.trim() == peer)
        })
        .unwrap_or_else(|| panic!("no host link with index {peer} for {container}"))
}

/// Wait (at most 5 s) until `ok` holds; say what was awaited otherwise.
fn soon(what: &str, ok: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ok() {
        assert!(Instant::now() < deadline, "not within 5 s: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `ip link del` on a network's bridge, then on a running container's host-side veth, behind
/// the agent's back: each is made again at once (not at the next restart), the containers
/// reach each other over it, and DNS answers from the new bridge.
#[test]
fn links_deleted_behind_the_agents_back_are_made_again() {
    let mut env = Env::new();
    let (a, b) = (env.name("a"), env.name("b"));
    env.ok(&["network", "create", "--subnet", &env.subnet(1), "front"]);
    env.ok(&["run", "--name", &a, "--network", "front", "busybox"]);
    env.ok(&["run", "--name", &b, "--network", "front", "busybox"]);
    let bridge = env.links().into_iter().find(|l| l.contains('-')).unwrap();
    let pings = |from: &str, to: String| {
        env.exec(from, &["busybox", "ping", "-c", "1", "-W", "1", &to])
            .code
            == 0
    };
    assert!(pings(&a, env.ip(1, 3)));

    let del = |link: &str| {
        let st = std::process::Command::new("ip")
            .args(["link", "del", link])
            .status()
            .unwrap();
        assert!(st.success(), "ip link del {link}");
    };
    del(&bridge);
    soon("the bridge is made again", || {
        std::path::Path::new("/sys/class/net")
            .join(&bridge)
            .exists()
    });
    soon("a reaches b over the new bridge", || {
        pings(&a, env.ip(1, 3))
    });
    soon("DNS answers on the new bridge", || {
        env.getent(&a, &b) == [env.ip(1, 3)]
    });
    // A container attached after the rebuild goes onto the new bridge (the old one's index,
    // kept by the agent, is forgotten).
    let c = env.name("c");
    env.ok(&["run", "--name", &c, "--network", "front", "busybox"]);
    assert!(pings(&a, env.ip(1, 4)), "a reaches c over the new bridge");
    env.ok(&["container", "rm", "-f", &c]);

    // a on a second network too, one that sorts after "front": the default route stays eth0's.
    env.ok(&["network", "create", "--subnet", &env.subnet(2), "rear"]);
    env.ok(&["network", "connect", "rear", &a]);
    let veth = host_veth_of(&env, &a);
    del(&veth);
    soon("a has its address again", || {
        env.addrs_in(&a, "eth0") == [format!("{}/24", env.ip(1, 2))]
    });
    soon("b reaches a again", || pings(&b, env.ip(1, 2)));
    assert_eq!(env.getent(&b, &a), [env.ip(1, 2)]);
    assert_eq!(env.ip_of(&a, "front"), env.ip(1, 2));
    // Its default route came back with it.
    let routes = env.exec(&a, &["ip", "route", "show", "default"]).stdout;
    assert!(
        routes.contains(&format!("via {}", env.ip(1, 1))),
        "{routes}"
    );
    // Saved: a restart adopts what was made again, nothing recreated or swept.
    let links = env.links();
    assert_eq!(links.len(), 5, "{links:?}");
    env.kill_daemon();
    env.start_daemon();
    assert_eq!(env.links(), links);
    assert_eq!(env.addrs_in(&a, "eth0"), [format!("{}/24", env.ip(1, 2))]);
    assert_eq!(env.getent(&b, &a), [env.ip(1, 2)]);
}
