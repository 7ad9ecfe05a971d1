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
    assert!(!std::path::Path::new("/run/escape").exists());
    assert!(!std::path::Path::new("/run/netns/a").exists());
    assert_eq!(env.ok(&["container", "ls", "-a", "-q"]).trim(), "");
    assert_eq!(env.ok(&["network", "ls", "-q"]).trim(), "");
}
