//! The daemon is killed with SIGKILL and started again: nothing is lost, DNS answers at once.

mod common;

use common::Env;

/// Networks n1 and n2; `a` on n1 with the alias `alpha`, `b` on n1 and on n2 at .50. Their
/// names.
fn two_networks_and_two_containers(env: &Env) -> (String, String) {
    let (a, b) = (env.name("a"), env.name("b"));
    env.ok(&["network", "create", "--subnet", &env.subnet(1), "n1"]);
    env.ok(&["network", "create", "--subnet", &env.subnet(2), "n2"]);
    env.ok(&[
        "run",
        "--name",
        &a,
        "--network",
        "n1",
        "--alias",
        "alpha",
        "busybox",
    ]);
    env.ok(&["run", "--name", &b, "--network", "n1", "busybox"]);
    env.ok(&["network", "connect", "--ip", &env.ip(2, 50), "n2", &b]);
    (a, b)
}

#[test]
fn sigkill_and_restart_lose_nothing() {
    let mut env = Env::new();
    let (a, b) = two_networks_and_two_containers(&env);
    let s = env.name("s");
    env.ok(&[
        "container",
        "create",
        "--name",
        &s,
        "--network",
        "n1",
        "--ip",
        &env.ip(1, 77),
        "busybox",
    ]);
    let links = env.links();
    let inspect = env.inspect_network("n1");

    env.kill_daemon();
    // While it is down, a leftover veth with our prefix and our mark appears (a crash between
    // kernel work and the state write): the restart must remove it. One with the prefix but
    // another mark is not the agent's (made by hand, or by another agent): it stays. One with
    // the agent's group and no alias yet (a crash between the request that makes a link and
    // the one that marks it) is the agent's, and goes.
    let orphan = format!("{}0000000", env.prefix);
    let foreign = format!("{}0000001", env.prefix);
    let unmarked = format!("{}0000002", env.prefix);
    let group = env.link_group().to_string();
    for (veth, alias) in [
        (&orphan, Some(env.link_mark())),
        (&foreign, Some("by hand".to_string())),
        (&unmarked, None),
    ] {
        let st = std::process::Command::new("ip")
            .args(["link", "add", veth, "group", &group, "type", "veth"])
            .args(["peer", "name"])
            .arg(format!("{veth}p"))
            .status()
            .unwrap();
        assert!(st.success());
        if let Some(alias) = alias {
            let st = std::process::Command::new("ip")
                .args(["link", "set", veth, "alias", &alias])
                .status()
                .unwrap();
            assert!(st.success());
        }
    }
    env.start_daemon();

    // DNS answers right after the restart, from inside the namespaces.
    assert_eq!(env.getent(&b, "alpha"), [env.ip(1, 2)]);
    assert_eq!(env.getent(&a, &b), [env.ip(1, 3)]);
    assert_eq!(env.ip_of(&b, "n2"), env.ip(2, 50));
    let mut expected = links.clone();
    expected.extend([foreign.clone(), format!("{foreign}p")]);
    expected.sort();
    assert_eq!(
        env.links(),
        expected,
        "bridges and veths adopted, the orphan removed, the unmarked veth left"
    );
    let _ = std::process::Command::new("ip")
        .args(["link", "delete", &foreign])
        .status();
    let after = env.inspect_network("n1");
    assert_eq!(after["Containers"], inspect["Containers"]);
    assert_eq!(after["Id"], inspect["Id"]);
    // Addresses stay allocated: a new container gets the next free one, and the stopped
    // container's static address is applied when it starts.
    let c = env.name("c");
    env.ok(&["run", "--name", &c, "--network", "n1", "busybox"]);
    assert_eq!(env.ip_of(&c, "n1"), env.ip(1, 4));
    env.ok(&["container", "start", &s]);
    assert_eq!(env.ip_of(&s, "n1"), env.ip(1, 77));

    // A veth deleted behind the agent's back is recreated with the same address at restart.
    let host_veths: Vec<String> = env
        .links()
        .into_iter()
        .filter(|l| !l.contains('-'))
        .collect();
    env.kill_daemon();
    for v in &host_veths {
        std::process::Command::new("ip")
            .args(["link", "delete", v])
            .status()
            .unwrap();
    }
    env.start_daemon();
    assert_eq!(env.addrs_in(&a, "eth0"), [format!("{}/24", env.ip(1, 2))]);
    assert_eq!(env.getent(&c, "alpha"), [env.ip(1, 2)]);
}

/// A power cut takes what the page cache held: with the checkpoint not yet run, every object
/// file may be lost or old, and only the journal's records were flushed. Simulated by emptying
/// both object directories after a SIGKILL: the restart rebuilds every acknowledged change
/// from the journal (networks, containers, endpoints, a removal, an address), and DNS answers.
#[test]
fn a_power_cut_loses_no_acknowledged_change() {
    let mut env = Env::new();
    let (a, b) = two_networks_and_two_containers(&env);
    let gone = env.name("gone");
    env.ok(&["run", "--name", &gone, "--network", "n1", "busybox"]);
    env.ok(&["container", "rm", "-f", &gone]);
    let networks = env.inspect_network("n1");
    let containers = env.ok(&["container", "inspect", &a, &b]);
    env.kill_daemon();
    let state = env.state_dir();
    let mut emptied = 0;
    for dir in ["networks", "containers"] {
        for f in std::fs::read_dir(state.join(dir)).unwrap() {
            let path = f.unwrap().path();
            // The objects' files, and the spares their next writes would recycle.
            if !path.file_name().unwrap().to_string_lossy().starts_with('.') {
                emptied += 1;
            }
            std::fs::remove_file(path).unwrap();
        }
    }
    assert_eq!(emptied, 4, "two networks and two containers had files");
    env.start_daemon();
    assert_eq!(
        env.inspect_network("n1")["Containers"],
        networks["Containers"]
    );
    assert_eq!(env.ok(&["container", "inspect", &a, &b]), containers);
    assert!(
        env.cli(&["container", "inspect", &gone]).code != 0,
        "the removal came back too"
    );
    assert_eq!(env.getent(&b, "alpha"), [env.ip(1, 2)]);
    assert_eq!(env.ip_of(&b, "n2"), env.ip(2, 50));
    let c = env.name("c");
    env.ok(&["run", "--name", &c, "--network", "n1", "busybox"]);
    assert_eq!(
        env.ip_of(&c, "n1"),
        env.ip(1, 4),
        "the addresses in use stay taken"
    );
}

#[test]
fn a_bad_state_file_is_set_aside_and_the_rest_starts() {
    let mut env = Env::new();
    let web = env.name("web");
    env.ok(&["network", "create", "--subnet", &env.subnet(1), "front"]);
    env.ok(&["run", "--name", &web, "--network", "front", "busybox"]);
    env.kill_daemon();
    // A torn file and one whose name would become a path: neither stops the start.
    let containers = env.state_dir().join("containers");
    let junk = containers.join(format!("{}.json", "e".repeat(64)));
    std::fs::write(&junk, b"{\"id\": \"").unwrap();
    let evil_id = "f".repeat(64);
    let good: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            std::fs::read_dir(&containers)
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p != &junk && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
                .unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let mut evil = good.clone();
    evil["id"] = evil_id.clone().into();
    evil["name"] = "../../../etc".into();
    std::fs::write(
        containers.join(format!("{evil_id}.json")),
        serde_json::to_vec(&evil).unwrap(),
    )
    .unwrap();
    env.start_daemon();
    assert_eq!(env.getent(&web, &web), vec![env.ip(1, 2)]);
    let ls = env.ok(&["container", "ls", "-a", "-q"]);
    assert_eq!(ls.trim().lines().count(), 1, "{ls}");
    let aside: Vec<String> = std::fs::read_dir(&containers)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".json.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 2, "{aside:?}");
}

#[test]
fn a_network_that_cannot_be_served_does_not_stop_the_others() {
    let mut env = Env::new();
    let (a, b) = (env.name("a"), env.name("b"));
    env.ok(&["network", "create", "--subnet", &env.subnet(1), "front"]);
    env.ok(&["network", "create", "--subnet", &env.subnet(2), "back"]);
    env.ok(&["run", "--name", &a, "--network", "front", "busybox"]);
    env.ok(&["run", "--name", &b, "--network", "back", "busybox"]);
    env.kill_daemon();
    // Port 53 of front's gateway taken by someone else while the agent is down (the bridge
    // and its address stay, as after a crash).
    let squatter =
        std::net::UdpSocket::bind((env.ip(1, 1).parse::<std::net::Ipv4Addr>().unwrap(), 53))
            .expect("bind front's gateway:53");
    let log = env.dir().join("restart.log");
    env.start_daemon_logging_to("info", &log);
    // back is served; front is reported, not fatal.
    assert_eq!(env.getent(&b, &b), vec![env.ip(2, 2)]);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("cannot bring a network up") && text.contains("network=front"),
        "{text}"
    );
    assert!(text.contains("reconciled with the kernel"), "{text}");
    assert!(text.contains("networks_failed=1"), "{text}");
    // Both containers are still there.
    let ls = env.ok(&["container", "ls", "-q"]);
    assert_eq!(ls.trim().lines().count(), 2, "{ls}");
    drop(squatter);
}

/// Two agents on one host with different state directories and the same link prefix: the
/// restart of either sweeps only its own leftovers, never the other's bridges and veths (it
/// once took every link with its prefix that its state did not know for a crash's leftover).
#[test]
fn two_agents_with_one_prefix_leave_each_others_links_alone() {
    let mut first = Env::new();
    let mut second = Env::sharing_prefix_with(&first);
    let (a, b) = (first.name("a"), second.name("b"));
    first.ok(&["network", "create", "--subnet", &first.subnet(1), "left"]);
    first.ok(&[
        "run",
        "--name",
        &a,
        "--network",
        "left",
        "--alias",
        "aa",
        "busybox",
    ]);
    second.ok(&["network", "create", "--subnet", &second.subnet(1), "right"]);
    second.ok(&[
        "run",
        "--name",
        &b,
        "--network",
        "right",
        "--alias",
        "bb",
        "busybox",
    ]);
    let links = first.links();
    assert_eq!(
        links.len(),
        4,
        "two bridges, two host-side veths: {links:?}"
    );
    // Each link carries its agent's mark, as its alias and as its group. (A veth's alias is
    // set just after its connect returns, by a request of its own: waited for, briefly.)
    let sys = |l: &str, f: &str| {
        std::fs::read_to_string(format!("/sys/class/net/{l}/{f}"))
            .unwrap()
            .trim()
            .to_string()
    };
    let since = std::time::Instant::now();
    while links.iter().any(|l| sys(l, "ifalias").is_empty())
        && since.elapsed() < std::time::Duration::from_secs(5)
    {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    for l in &links {
        let owner = [&first, &second]
            .into_iter()
            .find(|e| sys(l, "ifalias") == e.link_mark())
            .unwrap_or_else(|| panic!("{l} has no agent's mark: {:?}", sys(l, "ifalias")));
        assert_eq!(
            sys(l, "netdev_group"),
            owner.link_group().to_string(),
            "{l}"
        );
    }
    assert_ne!(first.link_mark(), second.link_mark());
    let each_serves_its_own = |first: &Env, second: &Env| {
        assert_eq!(first.getent(&a, "aa"), [first.ip(1, 2)]);
        assert_eq!(second.getent(&b, "bb"), [second.ip(1, 2)]);
        assert_eq!(
            first.addrs_in(&a, "eth0"),
            [format!("{}/24", first.ip(1, 2))]
        );
        assert_eq!(
            second.addrs_in(&b, "eth0"),
            [format!("{}/24", second.ip(1, 2))]
        );
    };
    each_serves_its_own(&first, &second);

    for restart_first in [true, false] {
        let env = if restart_first {
            &mut first
        } else {
            &mut second
        };
        env.kill_daemon();
        env.start_daemon();
        assert_eq!(first.links(), links, "restarted the first: {restart_first}");
        each_serves_its_own(&first, &second);
    }
    // Still working after both restarts: each agent connects on its own bridge.
    let c = second.name("c");
    second.ok(&["run", "--name", &c, "--network", "right", "busybox"]);
    assert_eq!(second.getent(&c, "bb"), [second.ip(1, 2)]);
    assert_eq!(first.links().len(), 5);
    // Both stopped before either sweeps the prefix they share (a running agent would make
    // its links again as the other's clean-up deletes them).
    first.kill_daemon();
    second.kill_daemon();
}
