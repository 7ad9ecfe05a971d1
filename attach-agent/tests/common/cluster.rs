//! Hosts of a cluster on one machine: three "hosts" made as network namespaces, joined by an
//! underlay bridge the test creates, each running an etcd member (Debian's etcd-server) and its
//! own agent, the store reached over mutual TLS (certificates by scripts/cluster-certs). Every address used is on the test's own underlay (10.X.0.0/24, X unique to the
//! test) or on what the test creates on it. Everything is removed on drop, also on failure.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{claim_prefix, sweep_prefix, Answer, Asker, Out};

pub const HOSTS: usize = 3;
pub const LEASE_TTL: u64 = 3;

pub fn sh(args: &[&str]) {
    let s = Command::new(args[0])
        .args(&args[1..])
        .status()
        .expect("run command");
    assert!(s.success(), "{args:?} failed");
}

pub fn etcd_binary() -> &'static str {
    for p in ["/usr/bin/etcd", "/usr/local/bin/etcd"] {
        if std::path::Path::new(p).exists() {
            return p;
        }
    }
    panic!("etcd not found: the multi-host test needs Debian's etcd-server (apt-get install etcd-server)");
}

/// Three hosts, their etcd members and agents; all of it removed on drop, also on failure.
pub struct Hosts {
    pub prefix: String,
    pub octet: u8,
    pub dir: tempfile::TempDir,
    pub etcd: Vec<Option<Child>>,
    pub agents: Vec<Option<Child>>,
    /// More `attach-agent daemon` flags, for every agent.
    pub agent_args: Vec<String>,
}

impl Hosts {
    pub fn new() -> Hosts {
        Hosts::with_agent_args(&[])
    }

    /// [`Hosts::new`], every agent started with `args` too.
    pub fn with_agent_args(args: &[&str]) -> Hosts {
        let (prefix, octet) = claim_prefix();
        let etcd = etcd_binary();
        let h = Hosts {
            prefix,
            octet,
            dir: tempfile::tempdir().unwrap(),
            etcd: (0..HOSTS).map(|_| None).collect(),
            agents: (0..HOSTS).map(|_| None).collect(),
            agent_args: args.iter().map(|a| a.to_string()).collect(),
        };
        // The underlay: a bridge in this namespace without an address (so no route here
        // changes), and one veth per host namespace.
        let ul = format!("{}-ul", h.prefix);
        sh(&["ip", "link", "add", &ul, "type", "bridge"]);
        // Our bridge's own setting: its frames skip the host's iptables.
        sh(&[
            "ip",
            "link",
            "set",
            &ul,
            "type",
            "bridge",
            "nf_call_iptables",
            "0",
        ]);
        sh(&["ip", "link", "set", &ul, "up"]);
        for i in 0..HOSTS {
            let ns = h.host_ns(i);
            let outer = format!("{}-u{i}", h.prefix);
            let inner = format!("{}-i{i}", h.prefix);
            sh(&["ip", "netns", "add", &ns]);
            sh(&[
                "ip", "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            ]);
            sh(&["ip", "link", "set", &outer, "master", &ul, "up"]);
            sh(&["ip", "link", "set", &inner, "netns", &ns]);
            let exec = |args: &[&str]| {
                let mut v = vec!["ip", "netns", "exec", &ns];
                v.extend_from_slice(args);
                sh(&v);
            };
            exec(&["ip", "link", "set", &inner, "name", "eth0"]);
            exec(&[
                "ip",
                "addr",
                "add",
                &format!("{}/24", h.host_ip(i)),
                "dev",
                "eth0",
            ]);
            exec(&["ip", "link", "set", "eth0", "up"]);
            exec(&["ip", "link", "set", "lo", "up"]);
        }
        // Mutual TLS, made by the script README shows: a CA, a certificate per member (its
        // address), one per host's agent (CN hN).
        let certs = h.certs();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/cluster-certs");
        sh(&[script, certs.to_str().unwrap(), "ca"]);
        for i in 0..HOSTS {
            sh(&[
                script,
                certs.to_str().unwrap(),
                "server",
                &format!("m{i}"),
                &h.host_ip(i),
            ]);
            sh(&[script, certs.to_str().unwrap(), "client", &format!("h{i}")]);
        }
        let mut h = h;
        for i in 0..HOSTS {
            h.start_etcd(i, etcd, "new");
        }
        for i in 0..HOSTS {
            h.start_agent(i);
        }
        h
    }

    /// The cluster's certificates: ca.pem, mN.pem (members), hN.pem (agents), with -key.pem.
    pub fn certs(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    /// `attach-agent daemon` flags for the store as host `i`'s agent uses it.
    pub fn store_flags(&self, i: usize) -> Vec<String> {
        let c = self.certs();
        vec![
            "--cluster-store".into(),
            format!("https://{}", self.members()),
            "--cluster-ca".into(),
            c.join("ca.pem").display().to_string(),
            "--cluster-cert".into(),
            c.join(format!("h{i}.pem")).display().to_string(),
            "--cluster-key".into(),
            c.join(format!("h{i}-key.pem")).display().to_string(),
        ]
    }

    pub fn host_ns(&self, i: usize) -> String {
        format!("{}-h{i}", self.prefix)
    }

    pub fn host_ip(&self, i: usize) -> String {
        format!("10.{}.0.{}", self.octet, i + 1)
    }

    pub fn socket(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("agent{i}.sock"))
    }

    pub fn members(&self) -> String {
        (0..HOSTS)
            .map(|i| format!("{}:2379", self.host_ip(i)))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn start_etcd(&mut self, i: usize, bin: &str, cluster_state: &str) {
        let ip = self.host_ip(i);
        let peers: Vec<String> = (0..HOSTS)
            .map(|j| format!("m{j}=http://{}:2380", self.host_ip(j)))
            .collect();
        let log = std::fs::File::create(self.dir.path().join(format!("etcd{i}.log"))).unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.host_ns(i)))
            .arg(bin)
            .args(["--name", &format!("m{i}")])
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("etcd{i}")))
            .args(["--listen-client-urls", &format!("https://{ip}:2379")])
            .args(["--advertise-client-urls", &format!("https://{ip}:2379")])
            .arg("--cert-file")
            .arg(self.certs().join(format!("m{i}.pem")))
            .arg("--key-file")
            .arg(self.certs().join(format!("m{i}-key.pem")))
            .arg("--trusted-ca-file")
            .arg(self.certs().join("ca.pem"))
            .arg("--client-cert-auth")
            .args(["--listen-peer-urls", &format!("http://{ip}:2380")])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://{ip}:2380"),
            ])
            .args(["--initial-cluster", &peers.join(",")])
            .args(["--initial-cluster-state", cluster_state])
            .args(["--initial-cluster-token", &self.prefix])
            // Short election timers: this "network" is one machine.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.etcd[i] = Some(child);
    }

    pub fn kill_etcd(&mut self, i: usize) {
        if let Some(mut c) = self.etcd[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn start_agent(&mut self, i: usize) {
        assert!(self.agents[i].is_none());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("agent{i}.log")))
            .unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.host_ns(i)))
            .arg(env!("CARGO_BIN_EXE_attach-agent"))
            .arg("daemon")
            .arg("--socket")
            .arg(self.socket(i))
            .arg("--state-dir")
            .arg(self.dir.path().join(format!("state{i}")))
            .args(["--link-prefix", &format!("{}{i}", self.prefix)])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args([
                "--upstream",
                "127.0.0.1:9",
                "--log",
                "info,attach_agent::agent=debug,attach_agent::cluster=debug",
            ])
            .args(self.store_flags(i))
            .args(["--advertise-addr", &self.host_ip(i)])
            .args(["--cluster-lease-ttl", &LEASE_TTL.to_string()])
            .args(&self.agent_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start agent");
        self.agents[i] = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.socket(i).exists() && self.cli(i, &["network", "ls", "-q"]).code == 0 {
                return;
            }
            if let Some(Ok(Some(status))) = self.agents[i].as_mut().map(|c| c.try_wait()) {
                panic!("agent {i} exited: {status}\n{}", self.log(i));
            }
            assert!(
                Instant::now() < deadline,
                "agent {i} did not come up\n{}",
                self.log(i)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kill_agent(&mut self, i: usize) {
        if let Some(mut c) = self.agents[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(self.socket(i));
    }

    pub fn log(&self, i: usize) -> String {
        let s = std::fs::read_to_string(self.dir.path().join(format!("agent{i}.log")))
            .unwrap_or_default();
        let tail: Vec<&str> = s.lines().rev().take(40).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    pub fn cli(&self, i: usize, args: &[&str]) -> Out {
        Command::new(env!("CARGO_BIN_EXE_attach-agent"))
            .arg("-H")
            .arg(format!("unix://{}", self.socket(i).display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run cli")
            .into()
    }

    pub fn ok(&self, i: usize, args: &[&str]) -> String {
        let o = self.cli(i, args);
        assert_eq!(
            o.code,
            0,
            "host {i}: {args:?} failed: {}\n{}",
            o.stderr,
            self.log(i)
        );
        o.stdout
    }

    pub fn name(&self, n: &str) -> String {
        format!("{}-{n}", self.prefix)
    }

    /// The overlay's gateway: every host's bridge carries it.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.octet, 4, 1)
    }

    /// The id of `network` as host `i` shows it.
    pub fn network_id(&self, i: usize, network: &str) -> String {
        let v: serde_json::Value =
            serde_json::from_str(&self.ok(i, &["network", "inspect", network])).unwrap();
        v[0]["Id"].as_str().unwrap_or_default().to_string()
    }

    pub fn ip_of(&self, i: usize, container: &str, network: &str) -> Ipv4Addr {
        let out = self.ok(i, &["container", "inspect", container]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let ip = &v[0]["NetworkSettings"]["Networks"][network]["IPAddress"];
        ip.as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{container} has no address on {network}: {ip}"))
    }
}

impl Hosts {
    /// How many VXLAN devices host `i` has (one per global network it has endpoints on).
    pub fn tunnels(&self, i: usize) -> usize {
        let out = Command::new("ip")
            .args([
                "-n",
                &self.host_ns(i),
                "-j",
                "link",
                "show",
                "type",
                "vxlan",
            ])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v.as_array().map_or(0, Vec::len)
    }

    /// Run `f` with the agent's own etcd client, from host 0's namespace (a runtime of its own
    /// on that thread, so its sockets are made there). `None`: no member answered.
    pub fn with_store<T: Send + 'static>(
        &self,
        f: impl AsyncFnOnce(attach_agent::cluster::etcd::EtcdStore) -> T + Send + 'static,
    ) -> Option<T> {
        use attach_agent::cluster::etcd::{EtcdStore, Security};
        let members: Vec<String> = (0..HOSTS)
            .map(|i| format!("{}:2379", self.host_ip(i)))
            .collect();
        let c = self.certs();
        let security = Security {
            ca_file: Some(c.join("ca.pem")),
            identity: Some((c.join("h0.pem"), c.join("h0-key.pem"))),
            user: None,
        };
        super::in_netns(&self.host_ns(0), move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let store = EtcdStore::connect(&members, &security, Duration::from_secs(10))
                    .await
                    .ok()?;
                Some(f(store).await)
            })
        })
    }

    /// Compact etcd's history up to now.
    pub fn compact_store(&self) -> i64 {
        self.with_store(async |store| store.compact_now().await.expect("compact"))
            .expect("reach etcd")
    }

    pub fn full_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("agent{i}.log"))).unwrap_or_default()
    }

    /// The store's records whose key or value mentions `needle` (for failure messages).
    pub fn store_dump(&self, needle: &str) -> String {
        use attach_agent::cluster::ClusterStore;
        let needle = needle.to_string();
        self.with_store(
            async move |store| match store.snapshot("/attach-agent/v1/").await {
                Ok((kvs, rev)) => {
                    let mut out = format!("revision {rev}\n");
                    for kv in kvs {
                        let v = String::from_utf8_lossy(&kv.value);
                        if v.contains(&needle) || kv.key.contains(&needle) {
                            out.push_str(&format!("{} = {v}\n", kv.key));
                        }
                    }
                    out
                }
                Err(e) => format!("cannot read the store: {e}"),
            },
        )
        .unwrap_or_else(|| "store unreachable".into())
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for i in 0..HOSTS {
            self.kill_agent(i);
            self.kill_etcd(i);
        }
        sweep_prefix(&self.prefix);
    }
}

/// Ask until `want` holds or `limit` passes; how long it took.
pub fn until(
    asker: &mut Asker,
    name: &str,
    limit: Duration,
    want: impl Fn(&Answer) -> bool,
) -> Option<Duration> {
    let t = Instant::now();
    loop {
        let a = asker.ask(name);
        if want(&a) {
            return Some(t.elapsed());
        }
        if t.elapsed() > limit {
            eprintln!("{name}: last answer {a:?}");
            return None;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// A name no longer served: not found here, so forwarded, and the test's upstream (a closed
/// loopback port) fails — NXDOMAIN or SERVFAIL, never an address.
pub fn gone(a: &Answer) -> bool {
    matches!(a, Answer::NxDomain | Answer::Rcode(2))
}
