//! Real containers from a real runtime: podman 4.3 (its CNI backend) runs busybox processes on
//! the agent's networks through the attach-agent-cni plugin, set up with `attach-agent cni
//! install`. Everything podman has is private to the test (containers.conf, storage, CNI
//! directories, image), nothing is written to /etc/cni or /etc/containers, and podman's own
//! default network is never used (the default network is ours).

mod common;

use common::podman::Podman;
use common::Env;

#[test]
fn podman_containers_resolve_by_name_alias_and_short_id_and_follow_connect_stop_start() {
    let env = Env::new();
    let (front, back) = (env.name("front"), env.name("back"));
    env.ok(&["network", "create", "--subnet", &env.subnet(1), &front]);
    env.ok(&["network", "create", "--subnet", &env.subnet(2), &back]);
    let pm = Podman::new(&env, &[&front, &back]);
    let (gw1, gw2) = (env.ip(1, 1), env.ip(2, 1));
    let (a, b, c) = (env.name("a"), env.name("b"), env.name("c"));

    let a_id = pm.run(&a, &["--network", &front, "--network-alias", "web"], &gw1);
    pm.run(&b, &["--network", &front, "--ip", &env.ip(1, 77)], &gw1);
    pm.run(&c, &["--network", &back], &gw2);
    let a_ip = env.ip(1, 2);
    assert_eq!(pm.resolve(&b, &a), [a_ip.as_str()], "by name");
    assert_eq!(pm.resolve(&b, "web"), [a_ip.as_str()], "by --network-alias");
    assert_eq!(pm.resolve(&b, &a_id[..12]), [a_ip.as_str()], "by short id");
    assert_eq!(pm.resolve(&a, &b), [env.ip(1, 77)], "--ip honoured");
    // A real process answers by name.
    let page = pm.ok(&[
        "exec",
        &b,
        "wget",
        "-q",
        "-O",
        "-",
        &format!("http://{a}:8080/"),
    ]);
    assert_eq!(page, a_id[..12], "the page a serves (its hostname)");
    // The third, on another network, learns nothing of them.
    assert!(pm.resolve(&c, &a).is_empty(), "another network's name");
    assert!(pm.resolve(&c, "web").is_empty());
    // The agent sees podman's containers as its own, marked as a runtime's.
    let ls = env.ok(&["container", "ls"]);
    assert!(
        ls.contains(&a) && ls.contains(&b) && ls.contains(&c),
        "{ls}"
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&env.ok(&["network", "inspect", &front])).unwrap();
    assert_eq!(inspect[0]["Containers"].as_object().unwrap().len(), 2);

    // podman network connect of a running container: a second interface, names seen by the
    // other network's containers at once, gone after disconnect.
    pm.ok(&["network", "connect", "--alias", "api", &back, &a]);
    let eth1 = pm.ok(&["exec", &a, "ip", "-4", "addr", "show", "eth1"]);
    assert!(eth1.contains(&env.ip(2, 3)), "{eth1}");
    assert_eq!(pm.resolve(&c, &a), [env.ip(2, 3)]);
    assert_eq!(pm.resolve(&c, "api"), [env.ip(2, 3)]);
    pm.ok(&["network", "disconnect", &back, &a]);
    assert!(pm.resolve(&c, "api").is_empty(), "gone after disconnect");
    assert_eq!(
        pm.resolve(&b, &a),
        [a_ip.as_str()],
        "still on the first network"
    );

    // The agent's own network connect works on a podman container too (the page of the
    // docker network connect command, for runtimes without one).
    env.ok(&["network", "connect", "--alias", "cache", &back, &b]);
    assert_eq!(pm.resolve(&c, "cache"), [env.ip(2, 3)]);
    env.ok(&["network", "disconnect", &back, &b]);
    assert!(pm.resolve(&c, "cache").is_empty());

    // stop: names gone, address free; start: back (in a new namespace).
    pm.ok(&["stop", "-t", "0", &a]);
    assert!(pm.until(&b, &a, |g| g.is_empty()).is_empty(), "stopped");
    assert!(
        !env.ok(&["container", "ls", "-a"]).contains(&a),
        "left with its last attachment"
    );
    pm.ok(&["start", &a]);
    assert_eq!(
        pm.until(&b, &a, |g| !g.is_empty()),
        [a_ip.as_str()],
        "started again"
    );
    assert_eq!(pm.resolve(&b, "web"), [a_ip], "with its alias");
}

#[test]
fn plugin_errors_reach_the_user_and_leave_nothing_behind() {
    let mut env = Env::new();
    let net = env.name("net");
    env.ok(&["network", "create", "--subnet", &env.subnet(1), &net]);
    let pm = Podman::new(&env, &[&net]);
    let gw = env.ip(1, 1);
    let links_before = links_with(&env.prefix);

    // An address another container holds.
    let a = env.name("a");
    pm.run(&a, &["--network", &net, "--ip", &env.ip(1, 50)], &gw);
    let b = env.name("b");
    let o = pm.cmd(&[
        "run",
        "--rm",
        "--name",
        &b,
        "--network",
        &net,
        "--ip",
        &env.ip(1, 50),
        &pm.image,
        "true",
    ]);
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("Address already in use"), "{}", o.stderr);
    // A network the daemon does not have (a conflist written by hand).
    let ghost = env.name("ghost");
    let conf = pm.cni_conf().join("90-ghost.conflist");
    let mut list = attach_agent::cni::setup::conflist(&ghost, &env.socket);
    list["name"] = ghost.clone().into();
    std::fs::write(&conf, list.to_string()).unwrap();
    let o = pm.cmd(&["run", "--rm", "--network", &ghost, &pm.image, "true"]);
    assert_ne!(o.code, 0);
    assert!(
        o.stderr.contains(&format!("network {ghost} not found")),
        "{}",
        o.stderr
    );
    // Nothing was left: no veth, no record, no address held, no container.
    assert_eq!(
        links_with(&env.prefix).len(),
        links_before.len() + 1,
        "only a's veth"
    );
    let ls = env.ok(&["container", "ls", "-a"]);
    assert!(ls.contains(&a) && !ls.contains(&b), "{ls}");
    let c = env.name("c");
    pm.run(&c, &["--network", &net], &gw);
    assert_eq!(
        pm.resolve(&a, &c),
        [env.ip(1, 2)],
        "the lowest address is still free"
    );

    // The daemon not running: the runtime's error says what to check.
    env.kill_daemon();
    let o = pm.cmd(&["run", "--rm", "--network", &net, &pm.image, "true"]);
    assert_ne!(o.code, 0);
    assert!(
        o.stderr.contains("is attach-agent daemon running on"),
        "{}",
        o.stderr
    );
    env.start_daemon();
}

#[test]
fn podman_containers_still_resolve_after_the_daemon_is_killed_and_restarted() {
    let mut env = Env::new();
    let net = env.name("net");
    env.ok(&["network", "create", "--subnet", &env.subnet(1), &net]);
    let pm = Podman::new(&env, &[&net]);
    let gw = env.ip(1, 1);
    let (a, b) = (env.name("a"), env.name("b"));
    pm.run(&a, &["--network", &net, "--network-alias", "db"], &gw);
    pm.run(&b, &["--network", &net], &gw);
    assert_eq!(pm.resolve(&b, "db"), [env.ip(1, 2)]);
    env.kill_daemon();
    env.start_daemon();
    assert_eq!(
        pm.resolve(&b, &a),
        [env.ip(1, 2)],
        "after SIGKILL and restart"
    );
    assert_eq!(pm.resolve(&b, "db"), [env.ip(1, 2)]);
    // And podman can still stop it cleanly through the restarted daemon.
    pm.ok(&["stop", "-t", "0", &a]);
    assert!(pm.until(&b, &a, |g| g.is_empty()).is_empty());
}

fn links_with(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect()
}
