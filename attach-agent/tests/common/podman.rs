//! podman 4.3 with its CNI backend, everything private to one test: containers.conf, storage,
//! CNI plugin and config directories (filled by the agent's own `cni install`), and a busybox
//! image imported from a busybox-static rootfs. podman's own default network is never used (the
//! default network is the test's). podman 4.3 keeps its CNI result cache in /var/lib/cni, which
//! no setting moves; it removes its entries on DEL.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::{Env, Out};

/// podman with private configuration and storage, and a busybox image of its own.
pub struct Podman {
    pub dir: tempfile::TempDir,
    pub image: String,
}

impl Podman {
    /// A sandbox whose CNI networks are `networks` of `env`'s daemon (installed with the
    /// agent's own `cni install`).
    pub fn new(env: &Env, networks: &[&str]) -> Podman {
        assert!(
            Command::new("podman").arg("--version").output().is_ok(),
            "podman must be installed (apt-get install podman containernetworking-plugins)"
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in [
            "cni-bin", "cni-conf", "root", "runroot", "tmp", "vol", "static",
        ] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let p = |s: &str| d.join(s).display().to_string();
        std::fs::write(
            d.join("containers.conf"),
            format!(
                "[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\"]\n\
                 network_config_dir = \"{}\"\ndefault_network = \"{}\"\n\
                 [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n\
                 events_logfile_path = \"{}\"\nruntime = \"runc\"\ntmp_dir = \"{}\"\n\
                 volume_path = \"{}\"\nstatic_dir = \"{}\"\n\
                 [containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=4096:4096\"]\n",
                p("cni-bin"),
                p("cni-conf"),
                networks[0],
                p("events.log"),
                p("tmp"),
                p("vol"),
                p("static"),
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"overlay\"\nrunroot = \"{}\"\ngraphroot = \"{}\"\n",
                p("runroot"),
                p("root")
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("registries.conf"),
            "unqualified-search-registries = []\n",
        )
        .unwrap();
        let mut install = vec!["cni", "install", "--bin-dir"];
        let (bin, conf) = (p("cni-bin"), p("cni-conf"));
        install.extend([bin.as_str(), "--conf-dir", conf.as_str()]);
        install.extend(networks);
        env.ok(&install);
        let pm = Podman {
            image: format!("localhost/{}-busybox", env.prefix),
            dir,
        };
        let tar = busybox_rootfs(pm.dir.path());
        pm.ok(&[
            "import",
            "--change",
            "CMD [\"/bin/sh\"]",
            tar.to_str().unwrap(),
            &pm.image,
        ]);
        pm
    }

    pub fn cmd(&self, args: &[&str]) -> Out {
        let d = self.dir.path();
        Command::new("podman")
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .args(args)
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", d.join("storage.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", d.join("registries.conf"))
            .output()
            .expect("run podman")
            .into()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.cmd(args);
        assert_eq!(o.code, 0, "podman {args:?}: {}{}", o.stdout, o.stderr);
        o.stdout.trim().to_string()
    }

    /// `podman run -d` of a busybox serving a page on :8080 (so `wget` by name can reach it),
    /// asking the gateway `dns` only. The container's id.
    pub fn run(&self, name: &str, extra: &[&str], dns: &str) -> String {
        let mut args = vec!["run", "-d", "--name", name, "--dns", dns];
        args.extend(extra);
        args.extend([
            self.image.as_str(),
            "sh",
            "-c",
            "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www",
        ]);
        self.ok(&args)
    }

    /// What `nslookup NAME` inside `ctr` answered: the addresses after `Name:`.
    pub fn resolve(&self, ctr: &str, name: &str) -> Vec<String> {
        let o = self.cmd(&["exec", ctr, "nslookup", name]);
        let mut seen_name = false;
        let mut out = Vec::new();
        for line in o.stdout.lines() {
            if line.starts_with("Name:") {
                seen_name = true;
            } else if let (true, Some(a)) = (seen_name, line.strip_prefix("Address:")) {
                out.push(a.trim().to_string());
            }
        }
        out
    }

    /// Wait until `name` resolves in `ctr` to what `want` accepts.
    pub fn until(&self, ctr: &str, name: &str, want: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let got = self.resolve(ctr, name);
            if want(&got) || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Only this sandbox's containers: its storage is its own.
        let _ = self.cmd(&["rm", "-af", "-t", "0"]);
    }
}

/// A tarball of a rootfs holding busybox-static and the applets the tests use.
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox must be installed (apt-get install busybox-static)");
    std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
    for applet in [
        "sh", "sleep", "nslookup", "wget", "ip", "cat", "hostname", "httpd", "mkdir", "true",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    let tar = dir.join("rootfs.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    tar
}
