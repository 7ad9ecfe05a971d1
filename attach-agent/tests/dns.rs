//! Name resolution from inside the namespaces, with the stock glibc resolver (getent) and dig,
//! and TCP between containers by name.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::fd::AsRawFd;

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
