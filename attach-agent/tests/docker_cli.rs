//! The stock docker client, pointed at the agent's socket, runs the `network connect` page.

mod common;

use common::Env;

#[test]
fn the_stock_docker_client_drives_the_agent() {
    let env = Env::new();
    let o = env.octet;
    let (c1, c2, c3) = (env.name("c1"), env.name("c2"), env.name("c3"));
    let version = env.dok(&["version", "--format", "{{.Server.APIVersion}}"]);
    assert_eq!(version.trim(), attach_agent::engine::version::CURRENT_TEXT);

    let subnet = format!("10.{o}.0.0/17");
    let range = format!("10.{o}.112.0/20");
    let id = env.dok(&[
        "network",
        "create",
        "--subnet",
        &subnet,
        "--ip-range",
        &range,
        "multi-host-network",
    ]);
    assert_eq!(id.trim().len(), 64);
    // create + start with --network; run -d without a network, connected afterwards.
    assert_eq!(
        env.dok(&[
            "create",
            "--name",
            &c1,
            "--network",
            "multi-host-network",
            "busybox"
        ])
        .trim()
        .len(),
        64
    );
    assert_eq!(env.dok(&["start", &c1]).trim(), c1);
    env.dok(&["run", "-d", "--name", &c2, "busybox"]);
    env.dok(&["network", "connect", "multi-host-network", &c2]);
    assert_eq!(
        env.ip_of(&c1, "multi-host-network"),
        format!("10.{o}.112.1")
    );
    assert_eq!(
        env.ip_of(&c2, "multi-host-network"),
        format!("10.{o}.112.2")
    );
    // --ip outside the range, --alias, --link, --link-local-ip.
    env.dok(&["create", "--name", &c3, "busybox"]);
    env.dok(&["start", &c3]);
    let fixed = format!("10.{o}.64.2");
    let link = format!("{c1}:one");
    env.dok(&[
        "network",
        "connect",
        "--ip",
        &fixed,
        "--alias",
        "db",
        "--alias",
        "mysql",
        "--link",
        &link,
        "--link-local-ip",
        "169.254.9.9",
        "multi-host-network",
        &c3,
    ]);
    let fmt = "{{(index .NetworkSettings.Networks \"multi-host-network\").IPAddress}}";
    assert_eq!(env.dok(&["inspect", "-f", fmt, &c3]).trim(), fixed);
    assert_eq!(
        env.getent(&c3, "one"),
        [env.ip_of(&c1, "multi-host-network")]
    );
    assert_eq!(env.getent(&c1, "mysql"), [fixed.as_str()]);
    assert!(env.getent(&c1, "one").is_empty());
    let ll = env
        .exec(&c3, &["ip", "-o", "addr", "show", "dev", "eth0"])
        .stdout;
    assert!(ll.contains("169.254.9.9"), "{ll}");

    // --ip6 on a dual-stack network.
    let v6 = format!("fd{o:02x}:2::/64");
    env.dok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        &format!("10.{o}.200.0/24"),
        "--subnet",
        &v6,
        "dual",
    ]);
    let ip6 = format!("fd{o:02x}:2::33");
    env.dok(&["network", "connect", "--ip6", &ip6, "dual", &c2]);
    let fmt6 = "{{.NetworkSettings.Networks.dual.GlobalIPv6Address}}";
    assert_eq!(env.dok(&["inspect", "-f", fmt6, &c2]).trim(), ip6);

    // inspect, ls, ps.
    let inspect: serde_json::Value =
        serde_json::from_str(&env.dok(&["network", "inspect", "multi-host-network"])).unwrap();
    let names: Vec<&str> = inspect[0]["Containers"]
        .as_object()
        .unwrap()
        .values()
        .map(|c| c["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    let ls = env.dok(&["network", "ls"]);
    assert!(ls.lines().next().unwrap().starts_with("NETWORK ID"));
    assert!(ls.contains("multi-host-network") && ls.contains("dual"));
    assert_eq!(
        env.dok(&["network", "ls", "-q", "--filter", "name=dual"])
            .lines()
            .count(),
        1
    );
    let ps = env.dok(&["ps", "-a", "--format", "{{.Names}} {{.State}}"]);
    for c in [&c1, &c2, &c3] {
        assert!(ps.contains(&format!("{c} running")), "{ps}");
    }

    // stop/start keeps the static address.
    env.dok(&["stop", &c3]);
    assert!(env.getent(&c1, "db").is_empty());
    env.dok(&["start", &c3]);
    assert_eq!(env.dok(&["inspect", "-f", fmt, &c3]).trim(), fixed);

    // Errors as the Engine prints them.
    let e = env.docker(&["network", "connect", "nonet", &c1]);
    assert_ne!(e.code, 0);
    assert_eq!(
        e.stderr.trim(),
        "Error response from daemon: network nonet not found"
    );
    let e = env.docker(&["network", "rm", "dual"]);
    assert_eq!(
        e.stderr.lines().next(),
        Some("Error response from daemon: network dual has active endpoints")
    );
    let e = env.docker(&["exec", &c1, "true"]);
    assert_ne!(e.code, 0);
    assert!(
        e.stderr.contains("not supported by attach-agent"),
        "{}",
        e.stderr
    );

    // A run in the foreground cannot happen (no processes here): refused with words at its
    // start, and the container made for it removed.
    let fg = env.name("fg");
    let e = env.docker(&[
        "run",
        "--network",
        "dual",
        "--name",
        &fg,
        "busybox",
        "echo",
        "hi",
    ]);
    assert_ne!(e.code, 0);
    assert!(
        e.stderr
            .contains(&format!("container {fg} cannot run in the foreground")),
        "{}",
        e.stderr
    );
    assert!(!env
        .dok(&["ps", "-a", "--format", "{{.Names}}"])
        .contains(&fg));
    assert!(!std::path::Path::new(&format!("/run/netns/{fg}")).exists());

    // --mac-address: the interface on the run's network has it, whichever API version the
    // client speaks (container-wide before 1.44, the endpoint's own since).
    let c4 = env.name("c4");
    env.dok(&[
        "run",
        "-d",
        "--network",
        "dual",
        "--mac-address",
        "02:42:ac:11:00:77",
        "--name",
        &c4,
        "busybox",
    ]);
    let link = env
        .exec(&c4, &["ip", "-o", "link", "show", "dev", "eth0"])
        .stdout;
    assert!(link.contains("02:42:ac:11:00:77"), "{link}");
    env.dok(&["rm", "-f", &c4]);

    // DNS options as the client sends them: the container's resolv.conf and hosts file, and
    // its inspect.
    let c5 = env.name("c5");
    env.dok(&[
        "run",
        "-d",
        "--network",
        "dual",
        "--dns",
        "127.0.0.1",
        "--dns-search",
        "example.test",
        "--dns-option",
        "ndots:2",
        "--add-host",
        "db.local:10.9.9.9",
        "--add-host",
        "gw.local:host-gateway",
        "--name",
        &c5,
        "busybox",
    ]);
    let resolv = std::fs::read_to_string(format!("/etc/netns/{c5}/resolv.conf")).unwrap();
    assert!(
        resolv.contains("search example.test\n") && resolv.contains("options ndots:2\n"),
        "{resolv}"
    );
    assert_eq!(env.getent(&c5, "db.local"), ["10.9.9.9"]);
    assert_eq!(env.getent(&c5, "gw.local"), [format!("10.{o}.200.1")]);
    let dns = env.dok(&["inspect", "-f", "{{json .HostConfig.Dns}}", &c5]);
    assert_eq!(dns.trim(), r#"["127.0.0.1"]"#);
    env.dok(&["rm", "-f", &c5]);

    // What a client of API 1.48 or later sends (Debian's 20.10 speaks 1.41: these steps are
    // the SDK test's then, through the raw API): --gw-priority moves the default route, and
    // --ipv4=false makes an IPv6-only network.
    let client_api = env.dok(&["version", "--format", "{{.Client.APIVersion}}"]);
    let client_api = attach_agent::engine::version::ApiVersion::parse(client_api.trim())
        .expect("the client's API version");
    if client_api.at_least(attach_agent::engine::version::GW_PRIORITY) {
        let default4 = || {
            env.exec(&c2, &["ip", "-4", "route", "show", "default"])
                .stdout
        };
        assert!(
            default4().contains(&format!("via 10.{o}.200.1 ")),
            "{}",
            default4()
        );
        // dual (both families, and first by name) has it; back on the other network with a
        // priority, that one has it.
        env.dok(&["network", "disconnect", "multi-host-network", &c2]);
        env.dok(&[
            "network",
            "connect",
            "--gw-priority",
            "7",
            "multi-host-network",
            &c2,
        ]);
        assert!(
            default4().contains(&format!("via 10.{o}.0.1 ")),
            "{}",
            default4()
        );
        let v6only = format!("fd{o:02x}:9::/64");
        env.dok(&[
            "network",
            "create",
            "--ipv6",
            "--ipv4=false",
            "--subnet",
            &v6only,
            "v6o",
        ]);
        let n = env.dok(&["network", "inspect", "-f", "{{.EnableIPv4}}", "v6o"]);
        assert_eq!(n.trim(), "false");
        env.dok(&["network", "rm", "v6o"]);
        env.dok(&["network", "disconnect", "multi-host-network", &c2]);
        assert!(
            default4().contains(&format!("via 10.{o}.200.1 ")),
            "{}",
            default4()
        );
        env.dok(&["network", "connect", "multi-host-network", &c2]);
    } else {
        eprintln!("docker client speaks API {client_api}: --gw-priority and --ipv4=false are tested through the SDK test's raw API only");
    }

    // disconnect, rm, prune.
    env.dok(&["network", "disconnect", "dual", &c2]);
    assert!(!env.links_in(&c2).contains(&"eth1".to_string()));
    assert_eq!(env.dok(&["network", "rm", "dual"]).trim(), "dual");
    env.dok(&["network", "create", "spare"]);
    let pruned = env.dok(&["network", "prune", "-f"]);
    assert_eq!(pruned.trim(), "Deleted Networks:\nspare");
    env.dok(&["rm", "-f", &c1, &c2, &c3]);
    assert_eq!(env.dok(&["ps", "-aq"]).trim(), "");
}
