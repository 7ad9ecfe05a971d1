//! podman 4.3, everything private to one user of it: containers.conf, storage, CNI plugin and
//! config directories, and a busybox image imported from a busybox-static rootfs. Its network
//! backend is CNI (the agent's plugin: the caller fills [`Podman::cni_bin`] and
//! [`Podman::cni_conf`], with `attach-agent cni install`) or netavark (the peer the benchmark
//! compares with; it writes firewall rules, so it must run inside a network namespace of its
//! own: [`Podman::inside`]). podman's default network is the caller's, never `podman`. podman
//! 4.3 keeps its CNI result cache in /var/lib/cni, which no setting moves; it removes its
//! entries on DEL.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// podman's network backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Cni,
    Netavark,
}

/// podman with private configuration and storage, and a busybox image of its own.
pub struct Podman {
    pub dir: tempfile::TempDir,
    pub image: String,
    /// A network namespace (under /run/netns) every podman command runs in.
    netns: Option<String>,
}

impl Podman {
    /// A sandbox whose default network is `default_network`, with the image
    /// `localhost/<tag>-busybox`.
    pub fn new(backend: Backend, default_network: &str, tag: &str) -> Podman {
        Podman::with_netns(backend, default_network, tag, None)
    }

    /// The same, every podman command run inside the network namespace `netns`.
    pub fn inside(backend: Backend, default_network: &str, tag: &str, netns: &str) -> Podman {
        Podman::with_netns(backend, default_network, tag, Some(netns.to_string()))
    }

    fn with_netns(
        backend: Backend,
        default_network: &str,
        tag: &str,
        netns: Option<String>,
    ) -> Podman {
        assert!(
            Command::new("podman").arg("--version").output().is_ok(),
            "podman must be installed (apt-get install podman containernetworking-plugins)"
        );
        let dir = tempfile::tempdir().expect("a temporary directory");
        let d = dir.path();
        for sub in [
            "cni-bin", "cni-conf", "root", "runroot", "tmp", "vol", "static",
        ] {
            std::fs::create_dir_all(d.join(sub)).expect("sandbox directories");
        }
        let p = |s: &str| d.join(s).display().to_string();
        let network = match backend {
            Backend::Cni => format!(
                "network_backend = \"cni\"\ncni_plugin_dirs = [\"{}\"]\n",
                p("cni-bin")
            ),
            Backend::Netavark => "network_backend = \"netavark\"\n".to_string(),
        };
        write(
            &d.join("containers.conf"),
            &format!(
                "[network]\n{network}network_config_dir = \"{}\"\ndefault_network = \"{default_network}\"\n\
                 [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n\
                 events_logfile_path = \"{}\"\nruntime = \"runc\"\ntmp_dir = \"{}\"\n\
                 volume_path = \"{}\"\nstatic_dir = \"{}\"\n\
                 [containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=4096:4096\"]\n",
                p("cni-conf"),
                p("events.log"),
                p("tmp"),
                p("vol"),
                p("static"),
            ),
        );
        write(
            &d.join("storage.conf"),
            &format!(
                "[storage]\ndriver = \"overlay\"\nrunroot = \"{}\"\ngraphroot = \"{}\"\n",
                p("runroot"),
                p("root")
            ),
        );
        write(
            &d.join("registries.conf"),
            "unqualified-search-registries = []\n",
        );
        let pm = Podman {
            image: format!("localhost/{tag}-busybox"),
            dir,
            netns,
        };
        let tar = busybox_rootfs(pm.dir.path());
        pm.ok(&[
            "import",
            "--change",
            "CMD [\"/bin/sh\"]",
            tar.to_str().expect("a UTF-8 path"),
            &pm.image,
        ]);
        pm
    }

    /// Where the CNI backend finds plugins and network configs.
    pub fn cni_bin(&self) -> PathBuf {
        self.dir.path().join("cni-bin")
    }

    pub fn cni_conf(&self) -> PathBuf {
        self.dir.path().join("cni-conf")
    }

    /// One podman command in the sandbox.
    pub fn cmd(&self, args: &[&str]) -> Output {
        let d = self.dir.path();
        let mut cmd = match &self.netns {
            // nsenter, not `ip netns exec`: that one mounts a new /sys, without the cgroup
            // tree runc needs.
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}"))
                    .args(["--", "podman"]);
                c
            }
            None => Command::new("podman"),
        };
        cmd.arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .args(args)
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", d.join("storage.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", d.join("registries.conf"))
            .output()
            .expect("run podman")
    }

    /// A podman command that must succeed; its stdout, trimmed.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.cmd(args);
        assert!(
            o.status.success(),
            "podman {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Only this sandbox's containers: its storage is its own.
        let _ = self.cmd(&["rm", "-af", "-t", "0"]);
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// A tarball of a rootfs holding busybox-static and the applets tests and benchmarks use.
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).expect("rootfs directory");
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox must be installed (apt-get install busybox-static)");
    std::fs::copy(busybox, root.join("bin/busybox")).expect("copy busybox");
    for applet in [
        "sh", "sleep", "nslookup", "wget", "ip", "cat", "hostname", "httpd", "mkdir", "true",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).expect("applet");
    }
    let tar = dir.join("rootfs.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .expect("tar");
    assert!(st.success(), "tar of the rootfs failed");
    tar
}
