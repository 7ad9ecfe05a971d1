//! Name resolution from inside the namespaces, with the stock glibc resolver (getent) and dig,
//! and TCP between containers by name.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::fd::AsRawFd;

use common::stub::Stub;
use common::Env;

#[test]
fn names_aliases_links_and_scope_from_inside_the_namespaces() {
    let env = Env::new();
    let (web, client, loner, both) = (
        env.name("web"),
        env.name("client"),
        env.name("loner"),
        env.name("both"),
    );
    env.ok(&["network", "create", "--subnet", &env.subnet(1), "front"]);
    env.ok(&["network", "create", "--subnet", &env.subnet(2), "back"]);
    env.ok(&[
        "run",
        "--name",
        &web,
        "--hostname",
        "webhost",
        "--network",
        "front",
        "--alias",
        "www",
        "busybox",
    ]);
    let web_id = env.ok(&["container", "inspect", &web]);
    let web_id: serde_json::Value = serde_json::from_str(&web_id).unwrap();
    let short = web_id[0]["Id"].as_str().unwrap()[..12].to_string();
    let link = format!("{web}:site");
    env.ok(&[
        "run",
        "--name",
        &client,
        "--network",
        "front",
        "--link",
        &link,
        "busybox",
    ]);
    env.ok(&["run", "--name", &loner, "--network", "back", "busybox"]);
    env.ok(&["run", "--name", &both, "--network", "back", "busybox"]);
    env.ok(&["network", "connect", "front", &both]);

    let web_ip = env.ip(1, 2);
    for name in [
        web.as_str(),
        "webhost",
        "www",
        &short,
        &format!("{web}.front"),
        &web.to_uppercase(),
    ] {
        assert_eq!(
            env.getent(&client, name),
            [web_ip.as_str()],
            "getent {name}"
        );
    }
    assert_eq!(
        env.dig(&client, &["www"]),
        web_ip,
        "dig through resolv.conf"
    );
    assert_eq!(env.dig(&client, &["-x", &web_ip]), format!("{web}.front."));
    // Links: the declaring container only.
    assert_eq!(env.getent(&client, "site"), [web_ip.as_str()]);
    assert!(env.getent(&both, "site").is_empty());
    // Scope: loner (back only) learns nothing of front, by name or PTR.
    assert!(env.getent(&loner, &web).is_empty());
    assert!(env.getent(&loner, "www").is_empty());
    assert_eq!(env.dig(&loner, &["-x", &web_ip]), "");
    assert!(env.dig(&loner, &[&web]).is_empty());
    // A container on both networks sees both; its first network answers first.
    assert_eq!(env.getent(&both, &web), [web_ip.as_str()]);
    assert_eq!(env.getent(&both, &loner), [env.ip(2, 2)]);
    assert_eq!(env.getent(&loner, &both), [env.ip(2, 3)]);
    assert_eq!(env.getent(&web, &both), [env.ip(1, 4)]);
}

/// Enter `ns` on a fresh thread and bind a TCP listener there (a socket stays in the namespace
/// it was made in).
fn listen_in(ns: &str) -> TcpListener {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).unwrap();
        // SAFETY: `f` is an open namespace file for the length of the call; setns changes only
        // this (new, single-purpose) thread's network namespace.
        assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        TcpListener::bind("0.0.0.0:8080").unwrap()
    })
    .join()
    .unwrap()
}

#[test]
fn containers_reach_each_other_over_tcp_by_name() {
    let env = Env::new();
    let (server, client) = (env.name("server"), env.name("client"));
    env.ok(&["network", "create", "--subnet", &env.subnet(1), "app"]);
    env.ok(&[
        "run",
        "--name",
        &server,
        "--network",
        "app",
        "--alias",
        "api",
        "busybox",
    ]);
    env.ok(&["run", "--name", &client, "--network", "app", "busybox"]);
    let listener = listen_in(&server);
    let accept = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().unwrap();
        s.write_all(b"hello from server\n").unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap();
        (
            peer.ip().to_string(),
            String::from_utf8_lossy(&buf[..n]).to_string(),
        )
    });
    // bash's /dev/tcp resolves "api" with getaddrinfo: the namespace's resolv.conf, our DNS.
    let out = env.exec(
        &client,
        &[
            "bash",
            "-c",
            "exec 3<>/dev/tcp/api/8080; read -r line <&3; echo \"$line\"; echo ping >&3",
        ],
    );
    assert_eq!(out.stdout.trim(), "hello from server", "{}", out.stderr);
    let (peer, said) = accept.join().unwrap();
    assert_eq!(peer, env.ip(1, 3));
    assert_eq!(said.trim(), "ping");
}

/// `host.docker.internal` and `host.containers.internal` answer in DNS (not only in a hosts
/// file, so programs with their own DNS client find the host too): the asker's network's
/// gateway, per family; `--host-address` replaces it; `--no-host-names` turns them off.
#[test]
fn host_names_answer_the_gateway_unless_configured_otherwise() {
    let mut env = Env::new();
    let (a, b) = (env.name("a"), env.name("b"));
    let v6net = format!("fd{:02x}:2::/64", env.octet);
    env.ok(&["network", "create", "--subnet", &env.subnet(1), "front"]);
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
    env.ok(&["run", "--name", &a, "--network", "front", "busybox"]);
    env.ok(&["run", "--name", &b, "--network", "dual", "busybox"]);
    assert_eq!(env.getent(&a, "host.docker.internal"), [env.ip(1, 1)]);
    assert_eq!(env.getent(&a, "HOST.containers.internal."), [env.ip(1, 1)]);
    assert_eq!(
        env.dig(&b, &["host.containers.internal", "A"]),
        env.ip(2, 1)
    );
    assert_eq!(
        env.dig(&b, &["host.docker.internal", "AAAA"]),
        format!("fd{:02x}:2::1", env.octet)
    );
    // The host it names is reachable there: the gateway answers DNS over TCP.
    assert_eq!(
        env.dig(&a, &["+tcp", &format!("@{}", env.ip(1, 1)), &b, "A"]),
        "",
        "b is not on a's network"
    );

    env.kill_daemon();
    env.daemon_args = vec!["--host-address".into(), "192.0.2.7".into()];
    env.start_daemon();
    assert_eq!(env.getent(&a, "host.docker.internal"), ["192.0.2.7"]);
    assert_eq!(env.dig(&b, &["host.docker.internal", "AAAA"]), "");

    env.kill_daemon();
    env.daemon_args = vec!["--no-host-names".into()];
    env.start_daemon();
    // Forwarded like any other name (to this test's dead upstream): no answer.
    assert!(env.getent(&a, "host.docker.internal").is_empty());
}

/// `--dns` per container and `network create --dns` per network: a container's names that
/// are not local go to its own servers, else its network's, else the host's (Podman's order);
/// each set's answers are cached apart. `--dns-search`, `--dns-option` and `--add-host`
/// (with `host-gateway`) end up in its resolv.conf and hosts file.
#[test]
fn dns_servers_per_container_and_per_network() {
    let mut env = Env::new();
    let o = env.octet;
    let stub = |last: u8, answer: u8| {
        Stub::start(
            std::net::Ipv4Addr::new(127, o, 0, last),
            std::net::Ipv4Addr::new(192, 0, 2, answer),
        )
    };
    let (one, two, three) = (stub(53, 1), stub(54, 2), stub(55, 3));
    let dns = |last: u8| format!("127.{o}.0.{last}");
    let (c1, c2, c3, c4) = (
        env.name("c1"),
        env.name("c2"),
        env.name("c3"),
        env.name("c4"),
    );
    env.ok(&[
        "network",
        "create",
        "--subnet",
        &env.subnet(1),
        "--dns",
        &dns(55),
        "front",
    ]);
    env.ok(&["network", "create", "--subnet", &env.subnet(2), "plain"]);
    env.ok(&[
        "run",
        "--name",
        &c1,
        "--network",
        "front",
        "--dns",
        &dns(53),
        "--dns-search",
        "example.test",
        "--dns-option",
        "ndots:2",
        "--add-host",
        "db.local:10.9.9.9",
        "--add-host",
        "gw.local:host-gateway",
        "busybox",
    ]);
    env.ok(&[
        "run",
        "--name",
        &c2,
        "--network",
        "front",
        "--dns",
        &dns(54),
        "busybox",
    ]);
    env.ok(&["run", "--name", &c3, "--network", "front", "busybox"]);
    env.ok(&["run", "--name", &c4, "--network", "plain", "busybox"]);
    let ask = |c: &str| env.dig(c, &["www.example.com", "A"]);
    assert_eq!(ask(&c1), "192.0.2.1");
    assert_eq!(ask(&c2), "192.0.2.2", "not c1's cached answer");
    assert_eq!(ask(&c3), "192.0.2.3", "the network's server");
    assert_eq!(ask(&c4), "", "the host's upstream (dead here)");
    let before = (one.count(), two.count());
    assert_eq!(ask(&c1), "192.0.2.1");
    assert_eq!(ask(&c2), "192.0.2.2");
    assert_eq!(
        (one.count(), two.count()),
        before,
        "answered from each one's cache"
    );
    // A local name never leaves the host, whatever the container's servers. (Not asked from
    // c1: its search domain comes first for a name with fewer dots than its ndots:2.)
    assert_eq!(env.getent(&c2, &c1), [env.ip(1, 2)]);
    assert_eq!(three.count(), 1);

    let resolv = std::fs::read_to_string(format!("/etc/netns/{c1}/resolv.conf")).unwrap();
    assert!(resolv.contains("search example.test\n"), "{resolv}");
    assert!(resolv.contains("options ndots:2\n"), "{resolv}");
    let resolv2 = std::fs::read_to_string(format!("/etc/netns/{c2}/resolv.conf")).unwrap();
    assert!(resolv2.contains("options ndots:0\n"), "{resolv2}");
    assert_eq!(env.getent(&c1, "db.local"), ["10.9.9.9"]);
    assert_eq!(env.getent(&c1, "gw.local"), [env.ip(1, 1)]);
    let v = env.inspect_container(&c1);
    assert_eq!(v["HostConfig"]["Dns"], serde_json::json!([dns(53)]));
    assert_eq!(
        v["HostConfig"]["DnsSearch"],
        serde_json::json!(["example.test"])
    );
    assert_eq!(
        v["HostConfig"]["DnsOptions"],
        serde_json::json!(["ndots:2"])
    );
    assert_eq!(
        v["HostConfig"]["ExtraHosts"],
        serde_json::json!(["db.local:10.9.9.9", "gw.local:host-gateway"])
    );

    // Bad input is refused whole: nothing made.
    let c5 = env.name("c5");
    for bad in [
        &["--dns", "nope"][..],
        &["--dns-search", "a b"],
        &["--dns-option", "ndots 2"],
        &["--add-host", "x y:10.0.0.1"],
        &["--add-host", "x:300.0.0.1"],
    ] {
        let mut args = vec!["run", "--name", &c5, "--network", "front"];
        args.extend_from_slice(bad);
        args.push("busybox");
        let e = env.fails(&args);
        assert!(
            e.contains("invalid") || e.contains("bad format"),
            "{bad:?}: {e}"
        );
        assert!(!std::path::Path::new(&format!("/run/netns/{c5}")).exists());
    }
    let e = env.fails(&["network", "create", "--dns", "nope", "bad"]);
    assert!(e.contains("invalid DNS server address"), "{e}");

    // After a restart each container still asks its own servers.
    env.kill_daemon();
    env.start_daemon();
    assert_eq!(env.dig(&c1, &["other.example.com", "A"]), "192.0.2.1");
    assert_eq!(env.dig(&c3, &["other.example.com", "A"]), "192.0.2.3");
}

/// An IPv6-only network (`--ipv4=false`) end to end: interfaces with IPv6 alone, the default
/// route over IPv6, the DNS server on the IPv6 gateway alone, AAAA and PTR in ip6.arpa, A
/// without answers, `host.docker.internal` over IPv6; and it comes back after a restart.
#[test]
fn an_ipv6_only_network_serves_the_same_dns() {
    let mut env = Env::new();
    let o = env.octet;
    let v6net = format!("fd{o:02x}:6::/64");
    let gw = format!("fd{o:02x}:6::1");
    let refused = env.fails(&["network", "create", "--ipv4=false", "--subnet", &v6net, "x"]);
    assert!(refused.contains("needs --ipv6"), "{refused}");
    let refused = env.fails(&[
        "network",
        "create",
        "--ipv6",
        "--ipv4=false",
        "--subnet",
        &env.subnet(1),
        "--subnet",
        &v6net,
        "x",
    ]);
    assert!(refused.contains("IPv4 is disabled"), "{refused}");
    env.ok(&[
        "network",
        "create",
        "--ipv6",
        "--ipv4=false",
        "--subnet",
        &v6net,
        "v6only",
    ]);
    let (a, b) = (env.name("a"), env.name("b"));
    env.ok(&[
        "run",
        "--name",
        &a,
        "--network",
        "v6only",
        "--alias",
        "web",
        "busybox",
    ]);
    env.ok(&["run", "--name", &b, "--network", "v6only", "busybox"]);
    let a_ip = format!("fd{o:02x}:6::2");
    let addrs = env
        .exec(&a, &["ip", "-o", "addr", "show", "dev", "eth0"])
        .stdout;
    assert!(addrs.contains(&format!("{a_ip}/64")), "{addrs}");
    assert!(!addrs.contains(" inet "), "no IPv4 address: {addrs}");
    let r6 = env
        .exec(&a, &["ip", "-6", "route", "show", "default"])
        .stdout;
    assert!(r6.contains(&format!("via {gw} ")), "{r6}");
    assert!(env
        .exec(&a, &["ip", "-4", "route", "show", "default"])
        .stdout
        .trim()
        .is_empty());
    let resolv = std::fs::read_to_string(format!("/etc/netns/{b}/resolv.conf")).unwrap();
    assert!(resolv.contains(&format!("nameserver {gw}\n")), "{resolv}");
    assert_eq!(resolv.matches("nameserver").count(), 1, "{resolv}");
    // Names, aliases, NAME.NETWORK: AAAA; A: NOERROR without answers.
    for name in [a.clone(), "web".into(), format!("{a}.v6only")] {
        assert_eq!(env.dig(&b, &[&name, "AAAA"]), a_ip, "{name}");
        let full = env
            .exec(&b, &["dig", "+time=2", "+tries=1", &name, "A"])
            .stdout;
        assert!(
            full.contains("status: NOERROR") && full.contains("ANSWER: 0"),
            "{full}"
        );
    }
    assert_eq!(env.getent(&b, &a), [a_ip.as_str()]);
    assert_eq!(env.dig(&b, &["-x", &a_ip]), format!("{a}.v6only."));
    assert_eq!(env.dig(&b, &["host.docker.internal", "AAAA"]), gw);
    assert_eq!(env.dig(&b, &["host.docker.internal", "A"]), "");
    let v = env.inspect_container(&a);
    let ep = &v["NetworkSettings"]["Networks"]["v6only"];
    assert_eq!(ep["IPAddress"], "");
    assert_eq!(ep["GlobalIPv6Address"], a_ip.as_str());
    let n = env.inspect_network("v6only");
    assert_eq!(n["IPAM"]["Config"].as_array().unwrap().len(), 1, "{n}");
    assert_eq!(n["EnableIPv6"], true);
    // A static IPv4 address has no subnet to be in.
    let e = env.fails(&[
        "network",
        "connect",
        "--ip",
        &env.ip(1, 9),
        "v6only",
        &env.name("c"),
    ]);
    assert!(
        e.contains("No such container") || e.contains("no configured subnet"),
        "{e}"
    );
    let c = env.name("c");
    env.ok(&["container", "create", "--name", &c, "busybox"]);
    let e = env.fails(&["network", "connect", "--ip", &env.ip(1, 9), "v6only", &c]);
    assert!(
        e.contains("no configured subnet contains IP address"),
        "{e}"
    );

    env.kill_daemon();
    env.start_daemon();
    assert_eq!(env.dig(&b, &[&a, "AAAA"]), a_ip);
    env.ok(&["container", "restart", &a]);
    assert_eq!(env.dig(&b, &[&a, "AAAA"]), a_ip);
}
