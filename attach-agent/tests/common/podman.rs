//! The tests' podman: `test_support::podman` on the CNI backend, its networks installed with
//! the agent's own `cni install`, and the few things tests ask of busybox containers.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use test_support::podman::Backend;

use super::{Env, Out};

/// podman on the agent's plugin, whose CNI networks are some of `env`'s.
pub struct Podman(pub test_support::podman::Podman);

impl std::ops::Deref for Podman {
    type Target = test_support::podman::Podman;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Podman {
    /// A sandbox whose networks are `networks` of `env`'s daemon, the first the default.
    pub fn new(env: &Env, networks: &[&str]) -> Podman {
        let pm = test_support::podman::Podman::new(Backend::Cni, networks[0], &env.prefix);
        let (bin, conf) = (pm.cni_bin(), pm.cni_conf());
        let (bin, conf) = (bin.display().to_string(), conf.display().to_string());
        let mut install = vec!["cni", "install", "--bin-dir", &bin, "--conf-dir", &conf];
        install.extend(networks);
        env.ok(&install);
        Podman(pm)
    }

    pub fn cmd(&self, args: &[&str]) -> Out {
        self.0.cmd(args).into()
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
