//! The examples of Docker's `network connect` page, through the agent's CLI, in real namespaces.

mod common;

use common::{Env, ProcessNetns};

#[test]
fn connect_page_examples() {
    let env = Env::new();
    let (c1, c2, c3) = (
        env.name("container1"),
        env.name("container2"),
        env.name("container3"),
    );

    // Connect a running container to a network, by name and by id.
    let net_id = env
        .ok(&[
            "network",
            "create",
            "--subnet",
            &env.subnet(1),
            "multi-host-network",
        ])
        .trim()
        .to_string();
    assert_eq!(net_id.len(), 64);
    env.ok(&["run", "--name", &c1, "busybox"]);
    env.ok(&["network", "connect", "multi-host-network", &c1]);
    assert_eq!(env.addrs_in(&c1, "eth0"), [format!("{}/24", env.ip(1, 2))]);
    // The namespace the agent made has its loopback up, as under a container runtime.
    let lo = env.exec(&c1, &["ip", "-o", "link", "show", "lo"]).stdout;
    assert!(lo.contains(",UP"), "lo is up: {lo}");
    let ping_self = env.exec(&c1, &["busybox", "ping", "-c", "1", "-W", "1", "127.0.0.1"]);
    assert_eq!(ping_self.code, 0, "loopback answers: {}", ping_self.stderr);
    env.ok(&["run", "--name", &c2, "busybox"]);
    env.ok(&["network", "connect", &net_id[..12], &c2]);
    assert_eq!(env.addrs_in(&c2, "eth0"), [format!("{}/24", env.ip(1, 3))]);

    // Connect a container when it starts: run --network.
    env.ok(&[
        "run",
        "--name",
        &c3,
        "--network",
        "multi-host-network",
        "busybox",
    ]);
    assert_eq!(env.ip_of(&c3, "multi-host-network"), env.ip(1, 4));

    // A static address.
    let c4 = env.name("container4");
    env.ok(&["run", "--name", &c4, "busybox"]);
    env.ok(&[
        "network",
        "connect",
        "--ip",
        &env.ip(1, 122),
        "multi-host-network",
        &c4,
    ]);
    assert_eq!(
        env.addrs_in(&c4, "eth0"),
        [format!("{}/24", env.ip(1, 122))]
    );

    // Aliases and links.
    let c5 = env.name("container5");
    env.ok(&["run", "--name", &c5, "busybox"]);
    let link = format!("{c1}:c1");
    env.ok(&[
        "network",
        "connect",
        "--link",
        &link,
        "--alias",
        "db",
        "--alias",
        "mysql",
        "multi-host-network",
        &c5,
    ]);
    assert_eq!(env.getent(&c5, "c1"), [env.ip(1, 2)], "link alias");
    assert_eq!(
        env.getent(&c2, "db"),
        [env.ip(1, 5)],
        "network-scoped alias"
    );
    assert_eq!(env.getent(&c2, "mysql"), [env.ip(1, 5)]);
    assert!(
        env.getent(&c2, "c1").is_empty(),
        "the link is the declarer's only"
    );

    // inspect shows every container with its address.
    let v = env.inspect_network("multi-host-network");
    let containers = v["Containers"].as_object().unwrap();
    assert_eq!(containers.len(), 5);
    let names: Vec<&str> = containers
        .values()
        .map(|c| c["Name"].as_str().unwrap())
        .collect();
    for n in [&c1, &c2, &c3, &c4, &c5] {
        assert!(names.contains(&n.as_str()), "{n} in inspect");
    }
    assert_eq!(v["IPAM"]["Config"][0]["Subnet"], env.subnet(1));
    // As Docker: a gateway derived from a given subnet is not shown.
    assert!(v["IPAM"]["Config"][0].get("Gateway").is_none());

    // Disconnect removes the interface and the records, and frees the address.
    env.ok(&["network", "disconnect", "multi-host-network", &c2]);
    assert!(!env.links_in(&c2).contains(&"eth0".to_string()));
    assert!(env.getent(&c1, &c2).is_empty());
    let c6 = env.name("container6");
    env.ok(&[
        "run",
        "--name",
        &c6,
        "--network",
        "multi-host-network",
        "busybox",
    ]);
    assert_eq!(
        env.ip_of(&c6, "multi-host-network"),
        env.ip(1, 3),
        "the freed address is reused"
    );

    // One container on two networks.
    env.ok(&["network", "create", "--subnet", &env.subnet(2), "second"]);
    env.ok(&["network", "connect", "second", &c1]);
    assert_eq!(env.addrs_in(&c1, "eth1"), [format!("{}/24", env.ip(2, 2))]);
    let routes = env.exec(&c1, &["ip", "route", "show", "default"]).stdout;
    assert!(
        routes.contains(&format!("via {}", env.ip(1, 1))),
        "default route stays on the first network: {routes}"
    );
    let resolv = std::fs::read_to_string(format!("/etc/netns/{c1}/resolv.conf")).unwrap();
    assert!(
        resolv.contains(&env.ip(1, 1)) && resolv.contains(&env.ip(2, 1)),
        "{resolv}"
    );
}

#[test]
fn ip_range_static_address_survives_stop_start_and_a_taken_one_fails_start() {
    let env = Env::new();
    let (web, thief) = (env.name("web"), env.name("thief"));
    let subnet = format!("10.{}.0.0/16", env.octet);
    let range = format!("10.{}.240.0/20", env.octet);
    let fixed = format!("10.{}.128.2", env.octet);
    env.ok(&[
        "network",
        "create",
        "--subnet",
        &subnet,
        "--ip-range",
        &range,
        "ranged",
    ]);
    // Dynamic addresses come from the range...
    env.ok(&["run", "--name", &thief, "--network", "ranged", "busybox"]);
    assert_eq!(
        env.ip_of(&thief, "ranged"),
        format!("10.{}.240.1", env.octet)
    );
    // ...a static one may lie outside it.
    env.ok(&["run", "--name", &web, "busybox"]);
    env.ok(&["network", "connect", "--ip", &fixed, "ranged", &web]);
    assert_eq!(env.ip_of(&web, "ranged"), fixed);

    env.ok(&["container", "stop", &web]);
    assert!(
        env.getent(&thief, &web).is_empty(),
        "stop removes the records"
    );
    assert!(
        !env.links_in(&web).contains(&"eth0".to_string()),
        "stop removes the interface"
    );
    env.ok(&["container", "start", &web]);
    assert_eq!(env.ip_of(&web, "ranged"), fixed, "reapplied at start");
    assert_eq!(env.getent(&thief, &web), [fixed.as_str()]);

    // Someone takes the address while web is stopped: web's start fails, it stays stopped.
    env.ok(&["container", "stop", &web]);
    let other = env.name("other");
    env.ok(&["container", "create", "--name", &other, "busybox"]);
    env.ok(&["network", "connect", "--ip", &fixed, "ranged", &other]);
    env.ok(&["container", "start", &other]);
    let err = env.fails(&["container", "start", &web]);
    assert_eq!(err, "Error response from daemon: Address already in use");
    let ps = env.ok(&["container", "ls", "-a"]);
    let line = ps.lines().find(|l| l.ends_with(&web)).unwrap();
    assert!(line.contains("Exited"), "{line}");
    assert!(!env.links_in(&web).contains(&"eth0".to_string()));
    assert_eq!(
        env.dig(&thief, &["-x", &fixed]),
        format!("{other}.ranged."),
        "the PTR names the new owner"
    );
    assert_eq!(env.getent(&thief, &other), [fixed.as_str()]);
}

#[test]
fn errors_are_clear_and_change_nothing() {
    let env = Env::new();
    let (a, b) = (env.name("a"), env.name("b"));
    env.ok(&["network", "create", "--subnet", &env.subnet(1), "net"]);
    env.ok(&["run", "--name", &a, "--network", "net", "busybox"]);
    env.ok(&["run", "--name", &b, "busybox"]);
    let links_before = env.links();
    let inspect_before = env.inspect_network("net");
    let in_b_before = env.links_in(&b);

    // Without a cluster store, a global network is refused, naming what it needs.
    let e = env.fails(&["network", "create", "--driver", "overlay", "ov"]);
    assert!(e.contains("overlay networks need a cluster store"), "{e}");
    assert!(!env.ok(&["network", "ls"]).contains(" ov "));

    let cases: Vec<(Vec<String>, String)> = vec![
        (
            vec!["nonet".into(), b.clone()],
            "network nonet not found".into(),
        ),
        (
            vec!["net".into(), "nobody".into()],
            "No such container: nobody".into(),
        ),
        (
            vec!["--ip".into(), "10.99.99.99".into(), "net".into(), b.clone()],
            "no configured subnet contains IP address 10.99.99.99".into(),
        ),
        (
            vec!["--ip".into(), env.ip(1, 2), "net".into(), b.clone()],
            "Address already in use".into(),
        ),
        (
            vec!["--ip".into(), env.ip(1, 1), "net".into(), b.clone()],
            "Address already in use".into(),
        ),
        (
            vec!["--ip".into(), "300.1.1.1".into(), "net".into(), b.clone()],
            "invalid IPv4 address: 300.1.1.1".into(),
        ),
        (
            vec!["--ip6".into(), "fd00::zz".into(), "net".into(), b.clone()],
            "invalid IPv6 address: fd00::zz".into(),
        ),
        (
            vec![
                "--link-local-ip".into(),
                "10.0.0.1".into(),
                "net".into(),
                b.clone(),
            ],
            "invalid link-local IP address: 10.0.0.1".into(),
        ),
        (
            vec!["--link".into(), "a:b:c".into(), "net".into(), b.clone()],
            "bad format for links: a:b:c".into(),
        ),
        (
            vec!["net".into(), a.clone()],
            format!("endpoint with name {a} already exists in network net"),
        ),
    ];
    for (args, msg) in cases {
        let mut full = vec!["network", "connect"];
        full.extend(args.iter().map(String::as_str));
        assert_eq!(
            env.fails(&full),
            format!("Error response from daemon: {msg}"),
            "{args:?}"
        );
    }
    assert_eq!(env.links(), links_before, "no link made or lost");
    assert_eq!(
        env.links_in(&b),
        in_b_before,
        "nothing half-configured in the namespace"
    );
    let after = env.inspect_network("net");
    assert_eq!(after["Containers"], inspect_before["Containers"]);
    // The address pool did not leak: the next dynamic address is still .3.
    env.ok(&["network", "connect", "net", &b]);
    assert_eq!(env.ip_of(&b, "net"), env.ip(1, 3));

    // Network errors.
    assert_eq!(
        env.fails(&["network", "create", "--subnet", &env.subnet(1), "other"]),
        "Error response from daemon: Pool overlaps with other one on this address space"
    );
    assert_eq!(
        env.fails(&["network", "create", "--subnet", &env.subnet(9), "net"]),
        "Error response from daemon: network with name net already exists"
    );
    assert_eq!(
        env.fails(&["network", "rm", "net"]),
        "Error response from daemon: network net has active endpoints"
    );
    assert_eq!(
        env.fails(&["network", "create", "--subnet", "10.1.2.3/99", "bad"]),
        "Error response from daemon: invalid CIDR address: 10.1.2.3/99"
    );
    // Connecting a stopped container to a missing network fails at once (unlike Docker).
    let c = env.name("c");
    env.ok(&["container", "create", "--name", &c, "busybox"]);
    assert_eq!(
        env.fails(&["network", "connect", "ghost", &c]),
        "Error response from daemon: network ghost not found"
    );
}

#[test]
fn network_ls_rm_prune_and_lifecycle_verbs() {
    let env = Env::new();
    env.ok(&[
        "network",
        "create",
        "--subnet",
        &env.subnet(1),
        "--label",
        "tier=front",
        "front",
    ]);
    env.ok(&["network", "create", "--subnet", &env.subnet(2), "back"]);
    env.ok(&["network", "create", "idle"]);
    let ls = env.ok(&["network", "ls"]);
    let lines: Vec<&str> = ls.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
    );
    assert_eq!(lines.len(), 4);
    assert!(lines[1..]
        .iter()
        .all(|l| l.contains("bridge") && l.ends_with("local")));
    let filtered = env.ok(&["network", "ls", "--filter", "label=tier=front", "-q"]);
    assert_eq!(filtered.lines().count(), 1);
    // The default pool was used for "idle", avoiding the host's routes and other networks.
    let idle = env.inspect_network("idle");
    let subnet = idle["IPAM"]["Config"][0]["Subnet"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        subnet.ends_with("/16") || subnet.ends_with("/20"),
        "{subnet}"
    );

    let w = env.name("w");
    env.ok(&["run", "--name", &w, "--network", "front", "busybox"]);
    env.ok(&["container", "pause", &w]);
    assert_eq!(
        env.getent(&w, &w),
        [env.ip(1, 2)],
        "pause changes nothing in DNS"
    );
    env.ok(&["container", "unpause", &w]);
    env.ok(&["container", "restart", &w]);
    assert_eq!(env.ip_of(&w, "front"), env.ip(1, 2));

    let pruned = env.ok(&["network", "prune", "-f"]);
    let mut names: Vec<&str> = pruned.lines().skip(1).collect();
    names.sort();
    assert_eq!(names, ["back", "idle"]);
    assert_eq!(
        env.fails(&["network", "rm", "front"]),
        "Error response from daemon: network front has active endpoints"
    );
    env.ok(&["container", "rm", "-f", &w]);
    assert!(
        !std::path::Path::new(&format!("/run/netns/{w}")).exists(),
        "namespace removed with the container"
    );
    env.ok(&["network", "rm", "front"]);
    assert!(
        env.links().is_empty(),
        "no bridge or veth left: {:?}",
        env.links()
    );
}

#[test]
fn dual_stack_link_local_and_more_errors() {
    let env = Env::new();
    let (a, b) = (env.name("a"), env.name("b"));
    let v6net = format!("fd{:02x}:1::/64", env.octet);
    env.ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        &env.subnet(1),
        "--subnet",
        &v6net,
        "dual",
    ]);
    let v = env.inspect_network("dual");
    assert_eq!(v["EnableIPv6"], true);
    env.ok(&["run", "--name", &a, "--network", "dual", "busybox"]);
    env.ok(&["run", "--name", &b, "busybox"]);
    let ip6 = format!("fd{:02x}:1::33", env.octet);
    env.ok(&[
        "network",
        "connect",
        "--ip6",
        &ip6,
        "--link-local-ip",
        "169.254.7.7",
        "dual",
        &b,
    ]);
    let addrs = env
        .exec(&b, &["ip", "-o", "addr", "show", "dev", "eth0"])
        .stdout;
    assert!(addrs.contains(&format!("{ip6}/64")), "{addrs}");
    assert!(addrs.contains("169.254.7.7/16"), "{addrs}");
    // AAAA over the IPv6 gateway and the IPv4 one; the link-local address has no record.
    assert_eq!(env.dig(&a, &["AAAA", &b]), ip6);
    let gw6 = format!("fd{:02x}:1::1", env.octet);
    assert_eq!(env.dig(&a, &[&format!("@{gw6}"), "AAAA", &b]), ip6);
    assert_eq!(env.dig(&a, &["-x", "169.254.7.7"]), "");
    let resolv = std::fs::read_to_string(format!("/etc/netns/{a}/resolv.conf")).unwrap();
    assert!(resolv.contains(&gw6), "{resolv}");

    // Pool exhausted: a /29 holds 5 containers besides its gateway.
    env.ok(&[
        "network",
        "create",
        "--subnet",
        &format!("10.{}.9.0/29", env.octet),
        "tiny",
    ]);
    for i in 0..5 {
        let c = env.name(&format!("t{i}"));
        env.ok(&["run", "--name", &c, "--network", "tiny", "busybox"]);
    }
    let links = env.links();
    let err = env.fails(&["network", "connect", "tiny", &a]);
    let tiny_id = env.inspect_network("tiny")["Id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        err,
        format!("Error response from daemon: no available IPv4 addresses on this network's address pools: tiny ({tiny_id})")
    );
    assert_eq!(env.links(), links);

    // An ambiguous id prefix: among 17 networks two share their first hex digit.
    let mut ids = Vec::new();
    for i in 0..15 {
        let id = env.ok(&[
            "network",
            "create",
            "--subnet",
            &env.subnet(20 + i),
            &format!("n{i}"),
        ]);
        ids.push(id.trim().to_string());
    }
    ids.push(v["Id"].as_str().unwrap().to_string());
    ids.push(
        env.inspect_network("tiny")["Id"]
            .as_str()
            .unwrap()
            .to_string(),
    );
    let c = (0..16u8)
        .map(|d| char::from_digit(d as u32, 16).unwrap())
        .find(|d| ids.iter().filter(|id| id.starts_with(*d)).count() > 1)
        .unwrap();
    let n = ids.iter().filter(|id| id.starts_with(c)).count();
    assert_eq!(
        env.fails(&["network", "connect", &c.to_string(), &a]),
        format!("Error response from daemon: network {c} is ambiguous ({n} matches found based on ID prefix)")
    );

    // disconnect --force clears an endpoint whose network is gone from under a stopped
    // container, and a plain disconnect of a container not on the network is an error.
    assert_eq!(
        env.fails(&["network", "disconnect", "n0", &a]),
        format!(
            "Error response from daemon: container {} is not connected to network n0",
            env.container_id(&a)
        )
    );
    env.ok(&["network", "disconnect", "-f", "dual", &b]);
    assert!(!env.links_in(&b).contains(&"eth0".to_string()));
}

/// An Engine API `POST /networks/NAME/{connect,disconnect}` for `container`, sent on a
/// connection of its own; the answer is read later.
fn engine_request(env: &Env, path: &str, container: &str) -> std::os::unix::net::UnixStream {
    use std::io::Write;
    let body = format!("{{\"Container\":\"{container}\"}}");
    let mut s = std::os::unix::net::UnixStream::connect(&env.socket).unwrap();
    write!(
        s,
        "POST /networks/{path} HTTP/1.1\r\nHost: agent\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    s
}

/// The status code of the answer on `conn`.
fn answer_status(conn: &mut std::os::unix::net::UnixStream) -> u16 {
    use std::io::Read;
    let mut text = String::new();
    conn.read_to_string(&mut text).unwrap();
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"))
}

/// A disconnect frees its address only after its veth is deleted: a connect racing it never
/// gets the same address (and MAC) while the old veth still exists. The departing
/// container's interface carries a thousand extra addresses, so that the kernel takes a while
/// (milliseconds) to delete its veth: the connect, sent right behind the disconnect, comes in
/// while that happens.
#[test]
fn an_address_is_free_only_once_its_veth_is_gone() {
    let env = Env::new();
    let (a, b) = (env.name("a"), env.name("b"));
    env.ok(&["network", "create", "--subnet", &env.subnet(1), "pool"]);
    env.ok(&["run", "--name", &a, "busybox"]);
    env.ok(&["run", "--name", &b, "busybox"]);
    let batch = env.dir().join("addresses");
    let lines: String = (1..=1000)
        .map(|i| format!("addr add fd00:{}::{i:x}/128 dev eth0 nodad\n", env.octet))
        .collect();
    std::fs::write(&batch, lines).unwrap();
    const ROUNDS: usize = 15;
    let mut reused = 0;
    for round in 0..ROUNDS {
        env.ok(&["network", "connect", "pool", &a]);
        let held = env.ip_of(&a, "pool");
        let st = std::process::Command::new("ip")
            .args(["-n", &a, "-batch"])
            .arg(&batch)
            .status()
            .unwrap();
        assert!(st.success(), "round {round}: addresses on {a}'s eth0");
        // Both requests on their way before either is answered: the connect waits for the
        // disconnect's lock, and comes in while its veth is being deleted.
        let mut leaving = engine_request(&env, "pool/disconnect", &a);
        let mut joining = engine_request(&env, "pool/connect", &b);
        for (what, conn) in [("disconnect", &mut leaving), ("connect", &mut joining)] {
            assert_eq!(answer_status(conn), 200, "round {round}: {what}");
        }
        if env.ip_of(&b, "pool") == held {
            reused += 1;
        }
        env.ok(&["network", "disconnect", "pool", &b]);
    }
    eprintln!("{reused} of {ROUNDS} rounds gave the departing address to the racing connect");
    common::report(serde_json::json!({
        "test": "no_reuse_before_teardown",
        "rounds": ROUNDS,
        "departing_address_given": reused,
    }));
    assert_eq!(
        reused, 0,
        "the address of a veth being deleted went to the racing connect"
    );
}

/// Connects run side by side (their kernel work and durable writes without the agent's lock):
/// sixteen containers connected at once each get their own address and answer; four
/// containers each connected to three networks at once get three interfaces and one default
/// route each (connects of one container wait for each other); disconnects and removes racing
/// connects leave nothing behind.
#[test]
fn concurrent_connects_are_each_whole() {
    let env = Env::new();
    for n in 1..=3 {
        env.ok(&[
            "network",
            "create",
            "--subnet",
            &env.subnet(n),
            &format!("n{n}"),
        ]);
    }
    let many: Vec<String> = (0..16).map(|i| env.name(&format!("c{i}"))).collect();
    let multi: Vec<String> = (0..4).map(|i| env.name(&format!("m{i}"))).collect();
    for c in many.iter().chain(&multi) {
        env.ok(&["run", "--name", c, "busybox"]);
    }
    std::thread::scope(|s| {
        for c in &many {
            s.spawn(|| env.ok(&["network", "connect", "n1", c]));
        }
        for m in &multi {
            for n in 1..=3 {
                let env = &env;
                s.spawn(move || env.ok(&["network", "connect", &format!("n{n}"), m]));
            }
        }
    });
    let mut addrs: Vec<String> = many.iter().map(|c| env.ip_of(c, "n1")).collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), many.len(), "one address each: {addrs:?}");
    for c in &many {
        assert_eq!(env.getent(&many[0], c), [env.ip_of(c, "n1")], "{c}");
    }
    for m in &multi {
        let mut ifaces = env.links_in(m);
        ifaces.sort();
        assert_eq!(ifaces, ["eth0", "eth1", "eth2", "lo"], "{m}");
        let routes = env.exec(m, &["ip", "-4", "route", "show", "default"]);
        assert_eq!(routes.stdout.lines().count(), 1, "{m}: {}", routes.stdout);
        assert_eq!(env.getent(&many[0], m), [env.ip_of(m, "n1")], "{m}");
    }

    // Racing: the first half disconnected, the second half removed, while the spare
    // containers connect.
    let spare: Vec<String> = (0..8).map(|i| env.name(&format!("s{i}"))).collect();
    for c in &spare {
        env.ok(&["run", "--name", c, "busybox"]);
    }
    std::thread::scope(|s| {
        for (i, c) in many.iter().enumerate() {
            if i < 8 {
                s.spawn(|| env.ok(&["network", "disconnect", "n1", c]));
            } else {
                s.spawn(|| env.ok(&["container", "rm", "-f", c]));
            }
        }
        for c in &spare {
            s.spawn(|| env.ok(&["network", "connect", "n1", c]));
        }
    });
    let members = env.inspect_network("n1")["Containers"]
        .as_object()
        .map_or(0, |m| m.len());
    assert_eq!(
        members,
        spare.len() + multi.len(),
        "the spares and the four"
    );
    for c in &spare {
        assert_eq!(env.getent(&multi[0], c), [env.ip_of(c, "n1")], "{c}");
    }
    for c in &many[..8] {
        assert!(env.getent(&multi[0], c).is_empty(), "{c} disconnected");
    }
    // Host veths: one a connected endpoint, nothing else (bridges have a '-').
    let veths = env.links().iter().filter(|l| !l.contains('-')).count();
    assert_eq!(veths, spare.len() + 3 * multi.len());
}

/// The agent keeps a netlink socket inside each namespace it made, from the container's create
/// to its removal. A namespace deleted behind its back (`ip netns del`) is made again at the
/// container's next start, under the same name: its interfaces go into the new one, not into
/// the old one the kept socket was in.
#[test]
fn a_namespace_made_again_under_its_name_gets_the_new_interfaces() {
    let env = Env::new();
    let web = env.name("web");
    env.ok(&["network", "create", "--subnet", &env.subnet(1), "front"]);
    env.ok(&["network", "create", "--subnet", &env.subnet(2), "back"]);
    env.ok(&["run", "--name", &web, "--network", "front", "busybox"]);
    env.ok(&["network", "connect", "back", &web]);
    assert_eq!(env.links_in(&web).len(), 3, "lo, eth0, eth1");
    env.ok(&["container", "stop", &web]);
    env.ok(&["network", "disconnect", "back", &web]);
    let st = std::process::Command::new("ip")
        .args(["netns", "del", &web])
        .status()
        .unwrap();
    assert!(st.success(), "ip netns del {web}");
    env.ok(&["container", "start", &web]);
    env.ok(&["network", "connect", "back", &web]);
    assert_eq!(
        env.links_in(&web).len(),
        3,
        "lo, eth0, eth1 in the new /run/netns/{web}"
    );
    assert_eq!(env.addrs_in(&web, "eth1"), [format!("{}/24", env.ip(2, 2))]);
    env.ok(&["container", "rm", "-f", &web]);
}

/// The default route follows Docker 28's rule, recomputed at every connect and disconnect:
/// the highest `--gw-priority`, then a network with both gateways, then the network name; an
/// internal network never gives one; the IPv6 route is chosen apart.
#[test]
fn the_default_route_follows_gateway_priority_as_in_docker() {
    let env = Env::new();
    let c = env.name("c");
    let default4 = || {
        env.exec(&c, &["ip", "-4", "route", "show", "default"])
            .stdout
    };
    let default6 = || {
        env.exec(&c, &["ip", "-6", "route", "show", "default"])
            .stdout
    };
    let via = |third: u8| format!("via {} ", env.ip(third, 1));
    for (third, name) in [(1, "zeta"), (2, "alpha"), (3, "mid")] {
        env.ok(&["network", "create", "--subnet", &env.subnet(third), name]);
    }
    env.ok(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        &env.subnet(4),
        "aaa-internal",
    ]);
    env.ok(&["run", "--name", &c, "--network", "zeta", "busybox"]);
    assert!(default4().contains(&via(1)), "{}", default4());
    // Same priority: the name decides, also against the first network.
    env.ok(&["network", "connect", "alpha", &c]);
    assert!(default4().contains(&via(2)), "{}", default4());
    env.ok(&["network", "connect", "--gw-priority", "10", "mid", &c]);
    assert!(default4().contains(&via(3)), "{}", default4());
    // An internal network never gives it, whatever its name or priority.
    env.ok(&[
        "network",
        "connect",
        "--gw-priority",
        "99",
        "aaa-internal",
        &c,
    ]);
    assert!(default4().contains(&via(3)), "{}", default4());
    // Disconnecting the gateway's network moves it to the next in line.
    env.ok(&["network", "disconnect", "mid", &c]);
    assert!(default4().contains(&via(2)), "{}", default4());
    // A dual-stack network beats a single-stack one of the same priority, and gives the IPv6
    // route; a negative priority puts a network last.
    let v6net = format!("fd{:02x}:5::/64", env.octet);
    env.ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        &env.subnet(5),
        "--subnet",
        &v6net,
        "zz-dual",
    ]);
    env.ok(&["network", "connect", "zz-dual", &c]);
    assert!(default4().contains(&via(5)), "{}", default4());
    let gw6 = format!("via fd{:02x}:5::1 ", env.octet);
    assert!(default6().contains(&gw6), "{}", default6());
    env.ok(&["network", "disconnect", "zz-dual", &c]);
    assert!(default4().contains(&via(2)), "{}", default4());
    assert!(!default6().contains(&gw6), "{}", default6());
    env.ok(&["network", "disconnect", "alpha", &c]);
    assert!(default4().contains(&via(1)), "{}", default4());
    // The priority is kept with the endpoint: a restart of the container applies it again.
    env.ok(&["network", "connect", "--gw-priority", "-5", "mid", &c]);
    env.ok(&["network", "connect", "alpha", &c]);
    env.ok(&["container", "restart", &c]);
    assert!(default4().contains(&via(2)), "{}", default4());
    let routes = default4();
    assert_eq!(routes.lines().count(), 1, "one default route: {routes}");
}

/// A namespace the agent was given keeps the default route another plugin set up there: the
/// agent adds its own only where there is none, and takes one over only from its own
/// endpoints. Interface names an endpoint asks for are not handed out to the others.
#[test]
fn a_given_namespaces_default_route_is_kept_and_asked_names_are_reserved() {
    use std::process::Command;
    let env = Env::new();
    env.ok(&["network", "create", "--subnet", &env.subnet(1), "agentnet"]);
    env.ok(&["network", "create", "--subnet", &env.subnet(2), "second"]);
    let sandbox = ProcessNetns::new();
    let path = sandbox.path();
    let inside = |args: &[&str]| {
        let out = Command::new("nsenter")
            .arg(format!("--net={path}"))
            .args(args)
            .output()
            .expect("nsenter");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    // Another plugin's interface and default route.
    let theirs = env.ip(9, 1);
    inside(&[
        "ip", "link", "add", "other0", "type", "veth", "peer", "name", "other1",
    ]);
    inside(&["ip", "link", "set", "other1", "up"]);
    inside(&[
        "ip",
        "addr",
        "add",
        &format!("{}/24", env.ip(9, 2)),
        "dev",
        "other0",
    ]);
    inside(&["ip", "link", "set", "other0", "up"]);
    inside(&["ip", "route", "add", "default", "via", &theirs]);
    let c = env.name("given");
    env.ok(&[
        "run",
        "--name",
        &c,
        "--netns",
        &path,
        "--network",
        "agentnet",
        "busybox",
    ]);
    env.ok(&["network", "connect", "second", &c]);
    let routes = inside(&["ip", "-4", "route", "show", "default"]);
    assert!(routes.contains(&format!("via {theirs} ")), "{routes}");
    assert_eq!(routes.lines().count(), 1, "{routes}");

    // `--driver-opt com.docker.network.endpoint.ifname=eth0` on the second network of a
    // stopped container: its first network gets another name at the start.
    let d = env.name("named");
    env.ok(&[
        "container",
        "create",
        "--name",
        &d,
        "--network",
        "agentnet",
        "busybox",
    ]);
    env.ok(&[
        "network",
        "connect",
        "--driver-opt",
        "com.docker.network.endpoint.ifname=eth0",
        "second",
        &d,
    ]);
    env.ok(&["container", "start", &d]);
    assert_eq!(env.addrs_in(&d, "eth0"), [format!("{}/24", env.ip(2, 3))]);
    assert_eq!(env.addrs_in(&d, "eth1"), [format!("{}/24", env.ip(1, 3))]);
}

/// Each of the container's interface lines of `ip -o -6 addr show dev IFNAME`, as
/// "ADDRESS/LEN scope SCOPE".
fn ipv6_addrs_in(env: &Env, container: &str, ifname: &str) -> Vec<String> {
    let o = env.exec(
        container,
        &["ip", "-o", "-6", "addr", "show", "dev", ifname],
    );
    assert_eq!(o.code, 0, "ip addr show dev {ifname}: {}", o.stderr);
    o.stdout
        .lines()
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            format!("{} scope {}", w[3], w[5])
        })
        .collect()
}

/// The IPv6 lines of IFNAME (as [`ipv6_addrs_in`]) once they hold a link-local address other
/// than `besides`, waited for up to 5 s (the kernel makes its own once it sees the carrier);
/// after that, whatever they hold.
fn kernel_link_local_in(
    env: &Env,
    container: &str,
    ifname: &str,
    besides: Option<&str>,
) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let lines = ipv6_addrs_in(env, container, ifname);
        let has = lines.iter().any(|l| {
            l.starts_with("fe80:") && l.ends_with("scope link") && Some(l.as_str()) != besides
        });
        if has || std::time::Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// An interface whose endpoint has no IPv6 address (an IPv4-only network, no fe80
/// `--link-local-ip`) gets no IPv6 link-local address either, so it sends no IPv6 of its own
/// (no duplicate address detection, MLD or router solicitation); one with an IPv6 address,
/// global or link-local, keeps the kernel's own link-local address beside it.
#[test]
fn an_interface_has_ipv6_only_where_its_endpoint_has_an_ipv6_address() {
    let env = Env::new();
    let (a, b) = (env.name("a"), env.name("b"));
    env.ok(&["network", "create", "--subnet", &env.subnet(1), "four"]);
    let v6net = format!("fd{:02x}:2::/64", env.octet);
    env.ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        &env.subnet(2),
        "--subnet",
        &v6net,
        "dual",
    ]);
    env.ok(&["run", "--name", &a, "--network", "four", "busybox"]);
    assert_eq!(env.addrs_in(&a, "eth0"), [format!("{}/24", env.ip(1, 2))]);
    assert_eq!(ipv6_addrs_in(&env, &a, "eth0"), Vec::<String>::new());
    let mode = env.exec(&a, &["cat", "/proc/sys/net/ipv6/conf/eth0/addr_gen_mode"]);
    assert_eq!(mode.stdout.trim(), "1", "addrgenmode none: {}", mode.stderr);
    // IPv4 still works over it: the resolver on the gateway answers.
    assert_eq!(env.dig(&a, &[&a]), env.ip(1, 2));

    // The same container on a dual-stack network: that interface has its global address and
    // the kernel's link-local one (made once the kernel sees the link's carrier: waited for).
    env.ok(&["network", "connect", "dual", &a]);
    let eth1 = kernel_link_local_in(&env, &a, "eth1", None);
    let ip6 = env.inspect_container(&a)["NetworkSettings"]["Networks"]["dual"]["GlobalIPv6Address"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(eth1.contains(&format!("{ip6}/64 scope global")), "{eth1:?}");
    assert!(
        eth1.iter()
            .any(|l| l.starts_with("fe80:") && l.ends_with("scope link")),
        "{eth1:?}"
    );
    assert_eq!(ipv6_addrs_in(&env, &a, "eth0"), Vec::<String>::new());

    // An IPv6 link-local address asked for on the IPv4-only network counts as IPv6.
    env.ok(&["run", "--name", &b, "busybox"]);
    env.ok(&[
        "network",
        "connect",
        "--link-local-ip",
        "fe80::77",
        "four",
        &b,
    ]);
    let eth0 = kernel_link_local_in(&env, &b, "eth0", Some("fe80::77/64 scope link"));
    assert!(
        eth0.contains(&"fe80::77/64 scope link".to_string()),
        "{eth0:?}"
    );
    assert!(
        eth0.iter()
            .any(|l| l.starts_with("fe80:") && l != "fe80::77/64 scope link"),
        "the kernel's own link-local address too: {eth0:?}"
    );
}
