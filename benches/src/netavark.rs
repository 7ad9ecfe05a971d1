//! The peer for connect times: netavark 1.4's `setup` (what podman runs per container), on the
//! same kind of namespaces, timed per call with its process start included (podman starts it
//! per container too).
//!
//! netavark 1.4 has no way to leave the firewall alone (iptables or firewalld only), so it runs
//! inside a namespace of its own ("bcn-host") that plays the host: its bridge, veths, iptables
//! rules and sysctls all live and die there, and the machine's own firewall is never touched.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

const BIN: &str = "/usr/lib/podman/netavark";
const HOST_NS: &str = "bcn-host";

fn ns_name(i: u32) -> String {
    format!("bcn-c{i}")
}

use crate::netns::ip;

/// Every namespace this module makes starts so (the host one takes netavark's bridge, veths
/// and firewall rules with it when it goes).
const PREFIX: &str = "bcn-";

/// netavark's input for container `i` on one bridge network (10.89.0.0/16, addresses given:
/// podman's IPAM picks them before it calls netavark).
fn options(i: u32) -> String {
    serde_json::json!({
        "container_id": format!("{i:064x}"),
        "container_name": format!("bcn-{i}"),
        "networks": {"bench": {
            "interface_name": "eth0",
            "static_ips": [format!("10.89.{}.{}", (i + 2) / 256, (i + 2) % 256)],
        }},
        "network_info": {"bench": {
            "dns_enabled": false,
            "driver": "bridge",
            "id": "b".repeat(64),
            "internal": false,
            "ipv6_enabled": false,
            "name": "bench",
            "network_interface": "bcnbr0",
            "subnets": [{"gateway": "10.89.0.1", "subnet": "10.89.0.0/16"}],
        }},
    })
    .to_string()
}

/// Whether netavark is installed (Debian's package puts it under /usr/lib/podman).
pub fn available() -> bool {
    Path::new(BIN).exists()
}

/// Milliseconds of each of `n` `netavark setup` calls, one container at a time.
pub fn setup_times(n: u32, work: &Path) -> Vec<f64> {
    assert!(n <= 60000, "one /16 of addresses");
    let _cleanup = crate::netns::Sweep::new(PREFIX);
    assert!(ip(&["netns", "add", HOST_NS]), "ip netns add {HOST_NS}");
    for i in 0..n {
        assert!(ip(&["netns", "add", &ns_name(i)]), "ip netns add");
    }
    let config = work.join("netavark");
    std::fs::create_dir_all(&config).unwrap();
    let host = std::fs::File::open(format!("/run/netns/{HOST_NS}")).unwrap();
    let host_fd = host.as_raw_fd();
    let mut times = Vec::with_capacity(n as usize);
    for i in 0..n {
        let input = options(i);
        let t = Instant::now();
        let mut cmd = Command::new(BIN);
        cmd.arg("--config")
            .arg(&config)
            .arg("setup")
            .arg(format!("/run/netns/{}", ns_name(i)))
            .stdin(Stdio::piped())
            .stdout(Stdio::null());
        // SAFETY: setns is async-signal-safe; the fd stays open until after the wait.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(host_fd, libc::CLONE_NEWNET) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        let mut child = cmd.spawn().expect("start netavark");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let status = child.wait().unwrap();
        times.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(status.success(), "netavark setup {i} failed");
    }
    // It did the work: the last container has its address.
    let out = Command::new("ip")
        .args(["-n", &ns_name(n - 1), "-o", "-4", "addr", "show", "eth0"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("10.89."),
        "netavark left no address"
    );
    drop(host);
    times
}
