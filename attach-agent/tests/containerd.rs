//! containerd 1.6's `ctr run --cni`: a real task on an agent network through the plugin, and
//! the case ctr makes common: a detached task killed with no DEL ever sent, whose name must
//! leave DNS by itself.
//!
//! ctr reads only /etc/cni/net.d and /opt/cni/bin, so containerd and every ctr call run in a
//! private mount namespace where tmpfs covers /run, /etc/cni, /opt and /var/lib, holding only
//! this test's conflist and plugin; nothing of the host's is touched.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::podman::Podman;
use common::{Env, Out};

/// containerd on sockets and directories of its own, in a private mount namespace.
struct Containerd {
    dir: tempfile::TempDir,
    daemon: Child,
}

impl Containerd {
    /// Start containerd with `cni_conf` and `cni_bin`'s files as the only CNI configuration
    /// and plugins it sees.
    fn start(cni_conf: &Path, cni_bin: &Path) -> Containerd {
        assert!(
            Command::new("containerd").arg("--version").output().is_ok(),
            "containerd must be installed (apt-get install containerd, or docker.io)"
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        for sub in ["root", "state", "opt", "fifo"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        std::fs::write(
            dir.path().join("config.toml"),
            format!(
                "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{d}/containerd.sock\"\n\
                 [ttrpc]\n  address = \"{d}/containerd.sock.ttrpc\"\n\
                 [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{d}/opt\"\n"
            ),
        )
        .unwrap();
        let script = format!(
            "set -e; mount -t tmpfs none /run; mount -t tmpfs none /etc/cni; \
             mkdir /etc/cni/net.d; cp {conf}/* /etc/cni/net.d/; \
             mount -t tmpfs none /opt; mkdir -p /opt/cni/bin; cp {bin}/* /opt/cni/bin/; \
             mount -t tmpfs none /var/lib; echo ready; exec containerd --config {d}/config.toml",
            conf = cni_conf.display(),
            bin = cni_bin.display(),
        );
        let mut daemon = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                &script,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("unshare (util-linux)");
        let mut ready = String::new();
        BufReader::new(daemon.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert_eq!(
            ready.trim(),
            "ready",
            "the private mount namespace was not set up"
        );
        let c = Containerd { dir, daemon };
        let deadline = Instant::now() + Duration::from_secs(20);
        while c.ctr(&["version"]).code != 0 {
            assert!(Instant::now() < deadline, "containerd did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        c
    }

    /// `ctr` in containerd's mount namespace (where its CNI directories are).
    fn ctr(&self, args: &[&str]) -> Out {
        Command::new("nsenter")
            .arg(format!("--mount=/proc/{}/ns/mnt", self.daemon.id()))
            .args(["--", "ctr", "--address"])
            .arg(self.dir.path().join("containerd.sock"))
            .args(args)
            .output()
            .expect("nsenter and ctr")
            .into()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.ctr(args);
        assert_eq!(o.code, 0, "ctr {args:?}: {}{}", o.stdout, o.stderr);
        o.stdout
    }

    fn fifo_dir(&self) -> String {
        self.dir.path().join("fifo").display().to_string()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // This containerd's tasks and containers only, then containerd itself (by its PID).
        let tasks = self.ctr(&["task", "ls", "-q"]).stdout;
        for t in tasks.lines().filter(|t| !t.is_empty()) {
            let _ = self.ctr(&["task", "kill", "-s", "SIGKILL", t]);
            let _ = self.ctr(&["task", "rm", "-f", t]);
        }
        let containers = self.ctr(&["containers", "ls", "-q"]).stdout;
        for c in containers.lines().filter(|c| !c.is_empty()) {
            let _ = self.ctr(&["containers", "rm", c]);
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

#[test]
fn a_ctr_task_resolves_by_name_and_leaves_dns_when_killed_without_a_del() {
    let env = Env::new();
    let net = env.name("net");
    env.ok(&["network", "create", "--subnet", &env.subnet(1), &net]);
    let client = env.name("client");
    env.ok(&["run", "--name", &client, "--network", &net, "busybox"]);
    // The image: podman's busybox, saved as a docker archive and imported into containerd.
    let pm = Podman::new(&env, &[&net]);
    let archive = pm.dir.path().join("busybox.tar");
    pm.ok(&[
        "save",
        "--format",
        "docker-archive",
        "-o",
        archive.to_str().unwrap(),
        &pm.image,
    ]);
    let cd = Containerd::start(&pm.cni_conf(), &pm.cni_bin());
    cd.ok(&["images", "import", archive.to_str().unwrap()]);
    let image = format!("{}:latest", pm.image);

    let task = env.name("task");
    let fifo = cd.fifo_dir();
    cd.ok(&[
        "run",
        "--cni",
        "-d",
        "--fifo-dir",
        &fifo,
        &image,
        &task,
        "sleep",
        "600",
    ]);
    // ctr names the attachment NAMESPACE-ID: that is the container's name in DNS.
    let name = format!("default-{task}");
    assert_eq!(env.dig(&client, &[&name]), env.ip(1, 3));
    let ls = env.ok(&["container", "ls"]);
    assert!(ls.contains(&name), "{ls}");

    // kill -9 of the task; ctr sends no DEL for a detached container.
    let killed = Instant::now();
    cd.ok(&["task", "kill", "-s", "SIGKILL", &task]);
    let deadline = killed + Duration::from_secs(5);
    while !env.dig(&client, &[&name]).is_empty() {
        assert!(
            Instant::now() < deadline,
            "still answering 5 s after the kill"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "records gone {} ms after the task was killed",
        killed.elapsed().as_millis()
    );
    assert!(
        !env.ok(&["container", "ls", "-a"]).contains(&name),
        "the container left"
    );
    // Its address is free: the next task gets it.
    let again = env.name("again");
    cd.ok(&[
        "run",
        "--cni",
        "-d",
        "--fifo-dir",
        &fifo,
        &image,
        &again,
        "sleep",
        "600",
    ]);
    assert_eq!(
        env.dig(&client, &[&format!("default-{again}")]),
        env.ip(1, 3)
    );
}
