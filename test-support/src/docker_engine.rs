//! Docker Engine 20.10 (Debian's docker.io), started by hand as a reference: for the Engine
//! API differential test (attach-agent/tests/differential.rs) and for the
//! benchmark's Docker embedded-DNS row. Never with its defaults, which rewrite the host's
//! firewall: `--iptables=false --ip-forward=false --ip-masq=false --bridge=none`, its own
//! sockets and directories under a temporary directory, removed with everything it made.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Docker Engine 20.10 on its own sockets and directories, touching nothing else: no iptables,
/// no ip_forward, no docker0; its bridges carry our test prefix; its containers' DNS forwards
/// to 127.0.0.1 inside their own namespaces, so nothing leaves the machine.
pub struct DockerEngine {
    dir: tempfile::TempDir,
    socket: PathBuf,
    containerd: Option<Child>,
    dockerd: Option<Child>,
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "{what} did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl DockerEngine {
    pub fn start() -> DockerEngine {
        for bin in ["dockerd", "containerd", "busybox"] {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {bin}")])
                .output()
                .is_ok_and(|o| o.status.success());
            assert!(
                found,
                "{bin} missing: .ci/run installs docker.io and busybox-static"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("dref")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path().to_path_buf();
        let ctd_sock = d.join("ctd.sock");
        let log = |name: &str| std::fs::File::create(d.join(name)).unwrap();
        let containerd = Command::new("containerd")
            .arg("--root")
            .arg(d.join("cr"))
            .arg("--state")
            .arg(d.join("cs"))
            .arg("--address")
            .arg(&ctd_sock)
            .stdout(log("containerd.out"))
            .stderr(log("containerd.err"))
            .spawn()
            .unwrap();
        let mut engine = DockerEngine {
            socket: d.join("d.sock"),
            dir,
            containerd: Some(containerd),
            dockerd: None,
        };
        wait_for("containerd", Duration::from_secs(20), || ctd_sock.exists());
        let dockerd = Command::new("dockerd")
            .arg("--host")
            .arg(format!("unix://{}", engine.socket.display()))
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("ex"))
            .arg("--pidfile")
            .arg(d.join("d.pid"))
            .arg("--containerd")
            .arg(&ctd_sock)
            .args([
                "--iptables=false",
                "--ip-forward=false",
                "--ip-masq=false",
                "--bridge=none",
            ])
            .args(["--dns", "127.0.0.1"])
            .stdout(log("dockerd.out"))
            .stderr(log("dockerd.err"))
            .spawn()
            .unwrap();
        engine.dockerd = Some(dockerd);
        wait_for("dockerd", Duration::from_secs(60), || {
            engine.docker(&["version"]).status.success()
        });
        // The image: busybox-static in an otherwise empty root.
        let rootfs = engine.dir.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).unwrap();
        std::fs::copy(which("busybox"), rootfs.join("bin/busybox")).unwrap();
        for app in ["sh", "sleep"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(app)).unwrap();
        }
        let st = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "tar -C {} -c . | docker -H unix://{} import - ddtest:1",
                rootfs.display(),
                engine.socket.display()
            ))
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "docker import");
        engine
    }

    /// Run the docker client against this engine.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("the docker client")
    }

    /// The engine's own process (its embedded DNS server runs in it).
    pub fn dockerd_pid(&self) -> u32 {
        self.dockerd.as_ref().expect("running").id()
    }

    /// The main process of a container (to enter its namespaces).
    pub fn pid_of(&self, container: &str) -> String {
        let o = self.docker(&["inspect", "-f", "{{.State.Pid}}", container]);
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }
}

fn which(bin: &str) -> PathBuf {
    let o = Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .output()
        .unwrap();
    PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())
}

fn stop(child: &mut Option<Child>, grace: Duration) {
    if let Some(mut c) = child.take() {
        // SAFETY: kill has no memory preconditions; the pid is our own child's, not yet reaped.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Drop for DockerEngine {
    fn drop(&mut self) {
        let ids = String::from_utf8_lossy(&self.docker(&["ps", "-aq"]).stdout).to_string();
        for id in ids.split_whitespace() {
            self.docker(&["rm", "-f", id]);
        }
        self.docker(&["network", "prune", "-f"]);
        stop(&mut self.dockerd, Duration::from_secs(20));
        stop(&mut self.containerd, Duration::from_secs(10));
        // Whatever dockerd left mounted under its directories.
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let root = self.dir.path().to_string_lossy().to_string();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|m| m.starts_with(&root))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = Command::new("umount").args(["-l", p]).status();
        }
    }
}
