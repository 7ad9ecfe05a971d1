//! Who gets in: the API socket is root-only, and stays so by peer credentials even when its
//! file mode is loosened.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::Env;

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
    assert!(!std::path::Path::new("/run/escape").exists());
    assert!(!std::path::Path::new("/run/netns/a").exists());
    assert_eq!(env.ok(&["container", "ls", "-a", "-q"]).trim(), "");
    assert_eq!(env.ok(&["network", "ls", "-q"]).trim(), "");
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
