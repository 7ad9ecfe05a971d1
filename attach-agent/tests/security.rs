//! Who gets in: the API socket is root-only, and stays so by peer credentials even when its
//! file mode is loosened.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::Duration;

use common::{in_netns, Answer, Asker, Env};

#[test]
fn the_api_refuses_other_users_by_peer_credentials() {
    let env = Env::new();
    let mode = std::fs::metadata(&env.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "the socket is root-only by its mode");

    // Loosen everything on the way to the socket, then ask as nobody: the file system lets the
    // connection through, the daemon must not.
    std::fs::set_permissions(env.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&env.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let bin = env.dir().join("attach-agent-cli");
    std::fs::copy(env!("CARGO_BIN_EXE_attach-agent"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .arg("-H")
        .arg(format!("unix://{}", env.socket.display()))
        .args(["network", "create", "sneaky"])
        .output()
        .expect("setpriv (util-linux)");
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("Error response from daemon: permission denied"),
        "{stderr}"
    );
    // Nothing was created; root is still served.
    assert!(env.ok(&["network", "ls", "-q"]).trim().is_empty());
    env.ok(&["network", "create", "--subnet", &env.subnet(1), "fine"]);
}

#[test]
fn names_are_checked_before_they_touch_the_file_system_or_the_table() {
    let env = Env::new();
    let long = "a".repeat(65);
    for bad in [
        "../escape",
        "a/b",
        "-dash",
        ".hidden",
        "sp ace",
        long.as_str(),
    ] {
        let err = env.fails(&["container", "create", &format!("--name={bad}"), "busybox"]);
        assert!(err.contains("invalid name"), "{bad}: {err}");
        let err = env.fails(&["network", "create", "--", bad]);
        assert!(err.contains("invalid name"), "{bad}: {err}");
    }
    // A hostname is served and written into the container's /etc/hosts: a newline or a space
    // would forge lines there.
    let named = env.name("h");
    for bad in ["evil\n10.0.0.1 victim", "sp ace", "-lead", "a..b"] {
        let err = env.fails(&[
            "container",
            "create",
            "--name",
            &named,
            &format!("--hostname={bad}"),
            "busybox",
        ]);
        assert!(err.contains("invalid hostname"), "{bad:?}: {err}");
    }
    // The host's own namespace is no container's: the daemon's (its bridges are there) and
    // PID 1's are refused.
    for host in [
        "/proc/self/ns/net".to_string(),
        format!("/proc/{}/ns/net", env.daemon_pid()),
    ] {
        let err = env.fails(&[
            "container",
            "create",
            "--name",
            &named,
            "--netns",
            &host,
            "busybox",
        ]);
        assert!(
            err.contains("host's own network namespace"),
            "{host}: {err}"
        );
    }
    assert!(!std::path::Path::new(&format!("/run/netns/{named}")).exists());
    // A /run/netns/NAME the agent did not make is not adopted (removing the container would
    // unmount it and delete its /etc/netns files), nor is a file or symlink there followed.
    let theirs = env.name("theirs");
    run(&["ip", "netns", "add", &theirs]);
    let _gone = NetnsGuard(theirs.clone());
    let etc = std::path::PathBuf::from(format!("/etc/netns/{theirs}"));
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("resolv.conf"), "nameserver 127.0.0.1\n").unwrap();
    let err = env.fails(&["container", "create", "--name", &theirs, "busybox"]);
    assert!(err.contains("was not made by the agent"), "{err}");
    let target = env.dir().join("target");
    std::fs::write(&target, "untouched").unwrap();
    let link = env.name("link");
    std::os::unix::fs::symlink(&target, format!("/run/netns/{link}")).unwrap();
    let err = env.fails(&["container", "create", "--name", &link, "busybox"]);
    std::fs::remove_file(format!("/run/netns/{link}")).unwrap();
    assert!(err.contains("was not made by the agent"), "{err}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched");
    // Theirs, given explicitly, is used and left alone at removal.
    let id = env.ok(&[
        "container",
        "create",
        "--name",
        &theirs,
        "--netns",
        &format!("/run/netns/{theirs}"),
        "busybox",
    ]);
    env.ok(&["container", "rm", id.trim()]);
    assert!(std::path::Path::new(&format!("/run/netns/{theirs}")).exists());
    assert!(etc.join("resolv.conf").exists());
    drop(_gone);
    assert!(!std::path::Path::new("/run/escape").exists());
    assert!(!std::path::Path::new("/run/netns/a").exists());
    assert_eq!(env.ok(&["container", "ls", "-a", "-q"]).trim(), "");
    assert_eq!(env.ok(&["network", "ls", "-q"]).trim(), "");
}

fn run(args: &[&str]) {
    let st = Command::new(args[0]).args(&args[1..]).status().unwrap();
    assert!(st.success(), "{args:?}");
}

/// Removes a namespace (and its /etc/netns files) made by the test, also on failure.
struct NetnsGuard(String);

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.0));
    }
}

/// Local addresses of every UDP and TCP socket a process holds, from /proc: its fds' socket
/// inodes matched against the namespace's socket tables.
fn sockets_of(pid: u32) -> Vec<(String, std::net::SocketAddr)> {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| {
            let t = std::fs::read_link(e.ok()?.path()).ok()?;
            let t = t.to_str()?;
            Some(
                t.strip_prefix("socket:[")?
                    .trim_end_matches(']')
                    .to_string(),
            )
        })
        .collect();
    let mut out = Vec::new();
    for table in ["udp", "udp6", "tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // TCP: listening sockets only (state 0A); an accepted connection is not a listener.
            if !inodes.contains(f[9]) || table.starts_with("tcp") && f[3] != "0A" {
                continue;
            }
            let (addr, port) = f[1].split_once(':').unwrap();
            let port = u16::from_str_radix(port, 16).unwrap();
            let ip: std::net::IpAddr = if addr.len() == 8 {
                std::net::Ipv4Addr::from(u32::from_str_radix(addr, 16).unwrap().swap_bytes()).into()
            } else {
                let mut b = [0u8; 16];
                for (i, w) in (0..4)
                    .map(|i| u32::from_str_radix(&addr[i * 8..i * 8 + 8], 16).unwrap())
                    .enumerate()
                {
                    b[i * 4..i * 4 + 4].copy_from_slice(&w.swap_bytes().to_be_bytes());
                }
                std::net::Ipv6Addr::from(b).into()
            };
            out.push((table.to_string(), std::net::SocketAddr::new(ip, port)));
        }
    }
    out
}

#[test]
fn dns_listens_on_the_gateways_only_never_a_wildcard() {
    let env = Env::new();
    env.ok(&["network", "create", "--subnet", &env.subnet(1), "n1"]);
    env.ok(&[
        "network",
        "create",
        "--subnet",
        &env.subnet(2),
        "--ipv6",
        "--subnet",
        "fd00:77:1::/64",
        "n2",
    ]);
    let mut want: Vec<String> = vec![env.ip(1, 1), env.ip(2, 1), "fd00:77:1::1".into()];
    want.sort();
    let socks = sockets_of(env.daemon_pid());
    // Besides: the metrics listener, TCP on loopback only, where `info` says.
    let info: serde_json::Value = serde_json::from_str(&env.ok(&["info", "--json"])).unwrap();
    let metrics: std::net::SocketAddr = info["MetricsAddr"].as_str().unwrap().parse().unwrap();
    assert!(metrics.ip().is_loopback(), "{metrics}");
    let (metrics_socks, socks): (Vec<_>, Vec<_>) = socks
        .into_iter()
        .partition(|(table, addr)| table.starts_with("tcp") && *addr == metrics);
    assert_eq!(
        metrics_socks.len(),
        1,
        "one metrics listener: {metrics_socks:?}"
    );
    let mut seen: Vec<String> = Vec::new();
    for (table, addr) in &socks {
        assert!(
            !addr.ip().is_unspecified(),
            "a wildcard {table} socket: {addr}"
        );
        assert_eq!(addr.port(), 53, "{table} {addr}: only DNS listeners");
        assert!(
            want.contains(&addr.ip().to_string()),
            "{table} {addr} is no gateway"
        );
        seen.push(format!("{table} {}", addr.ip()));
    }
    seen.sort();
    seen.dedup();
    // UDP and TCP on each gateway.
    assert_eq!(seen.len(), 2 * want.len(), "{seen:?}");
    env.ok(&["network", "rm", "n1"]);
    let after = sockets_of(env.daemon_pid());
    assert!(
        after
            .iter()
            .all(|(_, a)| a.ip().to_string() != env.ip(1, 1)),
        "the removed network's listeners are closed: {after:?}"
    );
}

/// `dig` in namespace `ns` with `args`: (exit code, stdout, stderr).
fn dig_in(ns: &str, args: &[&str]) -> (i32, String) {
    let o = Command::new("ip")
        .args(["netns", "exec", ns, "dig", "+time=1", "+tries=1"])
        .args(args)
        .output()
        .expect("dig (bind9-dnsutils)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.code().unwrap_or(-1), text)
}

/// The IPv6 link-local address of `eth0` in `container`, once past duplicate address
/// detection (a tentative address cannot be bound).
fn link_local_of(env: &Env, container: &str) -> String {
    for _ in 0..50 {
        let o = env.exec(
            container,
            &[
                "ip", "-o", "-6", "addr", "show", "dev", "eth0", "scope", "link",
            ],
        );
        let line = o.stdout.lines().next().unwrap_or_default().to_string();
        if !line.is_empty() && !line.contains("tentative") {
            let addr = line.split_whitespace().nth(3).expect("ip -o addr format");
            return addr.split('/').next().unwrap_or_default().to_string();
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("no usable link-local address on eth0 of {container}");
}

#[test]
fn dns_answers_only_queries_that_arrive_on_the_networks_bridge() {
    let env = Env::new();
    let v6 = |n: u8| format!("fd{:02x}:{n}::", env.octet);
    for (n, name) in [(1u8, "front"), (2, "back")] {
        env.ok(&[
            "network",
            "create",
            "--ipv6",
            "--subnet",
            &env.subnet(n),
            "--subnet",
            &format!("{}/64", v6(n)),
            name,
        ]);
    }
    let (web, secret) = (env.name("web"), env.name("secret"));
    env.ok(&["run", "--name", &web, "--network", "front", "busybox"]);
    env.ok(&["run", "--name", &secret, "--network", "back", "busybox"]);
    let web_ip = env.ip(1, 2);
    let front_gw = env.ip(1, 1);
    // The positive control: a container on the network is answered by its gateway.
    assert_eq!(env.dig(&web, &[&format!("@{front_gw}"), &web]), web_ip);

    // A host process reaches every gateway (over IPv4 and IPv6, UDP and TCP): the kernel
    // delivers a packet for a local address on the device that holds it.
    let front_gw6 = format!("{}1", v6(1));
    for gw in [&front_gw, &front_gw6] {
        for tcp in [false, true] {
            let mut args = vec!["dig", "+short", "+time=2", "+tries=1"];
            if tcp {
                args.push("+tcp");
            }
            let at = format!("@{gw}");
            args.extend([at.as_str(), web.as_str()]);
            let o = Command::new(args[0]).args(&args[1..]).output().unwrap();
            let text = String::from_utf8_lossy(&o.stdout);
            assert_eq!(text.trim(), web_ip, "host process, {gw}, tcp {tcp}");
        }
    }

    // A namespace outside the agent's networks, routed to the host over a veth of its own (a
    // LAN machine that routes the bridge subnets through this host is the same to the kernel).
    let out = env.name("out");
    run(&["ip", "netns", "add", &out]);
    let _out = NetnsGuard(out.clone());
    let (host_end, ns_end) = (env.name("o0"), env.name("o1"));
    run(&[
        "ip", "link", "add", &host_end, "type", "veth", "peer", "name", &ns_end, "netns", &out,
    ]);
    let (host_ip, ns_ip) = (env.ip(250, 1), env.ip(250, 2));
    run(&[
        "ip",
        "addr",
        "add",
        &format!("{host_ip}/30"),
        "dev",
        &host_end,
    ]);
    run(&["ip", "link", "set", &host_end, "up"]);
    let in_out = |args: &[&str]| {
        let mut a = vec!["ip", "netns", "exec", &out];
        a.extend_from_slice(args);
        run(&a);
    };
    in_out(&["ip", "addr", "add", &format!("{ns_ip}/30"), "dev", &ns_end]);
    in_out(&["ip", "link", "set", &ns_end, "up"]);
    in_out(&["ip", "link", "set", "lo", "up"]);
    in_out(&["ip", "route", "add", "default", "via", &host_ip]);
    // It reaches the host (the gateway address answers ping: the kernel accepts it)...
    in_out(&["busybox", "ping", "-c", "1", "-W", "2", &front_gw]);
    // ...but the DNS gets nothing from it: no reply over UDP, refused over TCP.
    let (code, text) = dig_in(&out, &[&format!("@{front_gw}"), &web]);
    assert_ne!(code, 0, "answered an outsider over UDP: {text}");
    assert!(!text.contains(&web_ip), "{text}");
    let (code, text) = dig_in(&out, &["+tcp", &format!("@{front_gw}"), &web]);
    assert_ne!(code, 0, "answered an outsider over TCP: {text}");
    assert!(text.contains("connection refused"), "{text}");
    // Nor may it use the forwarder as an open resolver.
    let (code, text) = dig_in(&out, &[&format!("@{front_gw}"), "example.com"]);
    assert_ne!(code, 0, "{text}");

    // A container asks the other network's gateway from its IPv6 link-local address (a source
    // no container holds): dropped, so no names of that network.
    let ll = link_local_of(&env, &web);
    let eth0 = in_netns(&web, || nix_ifindex("eth0"));
    let from_ll = SocketAddr::V6(SocketAddrV6::new(ll.parse().unwrap(), 0, 0, eth0));
    let octet = env.octet;
    let gw6 = move |n: u8| -> SocketAddr {
        let ip: Ipv6Addr = format!("fd{octet:02x}:{n}::1").parse().unwrap();
        (ip, 53).into()
    };
    let wait = Duration::from_secs(1);
    assert_eq!(
        Asker::from_addr(&web, from_ll, gw6(2), wait).ask(&secret),
        Answer::Timeout,
        "another network's gateway answered"
    );
    let tcp = in_netns(&web, move || {
        let s = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).unwrap();
        s.bind(&from_ll.into()).unwrap();
        s.connect_timeout(&gw6(2).into(), Duration::from_secs(2))
    });
    assert_eq!(
        tcp.map_err(|e| e.kind()).err(),
        Some(std::io::ErrorKind::ConnectionRefused),
        "TCP to another network's gateway"
    );
    // Asked from its own address, the other gateway is just as deaf: the bridge decides.
    let (code, text) = dig_in(&web, &[&format!("@{}", env.ip(2, 1)), &secret]);
    assert_ne!(code, 0, "{text}");
    assert!(
        text.contains("timed out") || text.contains("refused"),
        "{text}"
    );
    // From the link-local address to its own network's gateway: an unregistered source on the
    // bridge is answered as a host on that network (its names, none of another's).
    let mut own = Asker::from_addr(&web, from_ll, gw6(1), wait);
    assert_eq!(own.ask(&web), Answer::Addrs(vec![web_ip.parse().unwrap()]));
    assert_eq!(own.ask(&secret), Answer::NxDomain);
}

/// The index of interface `name` in the calling thread's namespace.
fn nix_ifindex(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: a valid NUL-terminated name; the call only reads it.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert_ne!(i, 0, "no interface {name}");
    i
}
