//! What an agent believes from the cluster store: a hostile writer (another host gone bad, a
//! leaked credential) puts records no agent would write into a real etcd cluster, and every
//! agent keeps running and answering, ignores and logs each bad record, touches no file outside
//! its state directory and leaves the tunnel entries of other endpoints as they were. The same
//! checks against the in-process store are the unit tests of `cluster::trust`.

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::{Duration, Instant};

use attach_agent::cluster::layout::{self, Claim, EndpointRecord};
use attach_agent::cluster::{ClusterStore, Cond, Op};
use attach_agent::ids::{ContainerId, EndpointId, NetworkId};
use common::cluster::{gone, sh, until, Hosts};
use common::{Answer, Asker};

/// The tunnel's forwarding and neighbour entries on host `i` (every VXLAN device's).
fn tunnel_entries(h: &Hosts, i: usize) -> BTreeSet<String> {
    let ns = h.host_ns(i);
    let mut out = BTreeSet::new();
    for args in [
        vec!["bridge", "-n", &ns, "fdb", "show"],
        vec!["ip", "-n", &ns, "neigh", "show", "nud", "permanent"],
    ] {
        let o = Command::new(args[0]).args(&args[1..]).output().unwrap();
        for line in String::from_utf8_lossy(&o.stdout).lines() {
            if line.contains(&h.prefix) && (line.contains(" dst ") || args[0] == "ip") {
                out.insert(line.to_string());
            }
        }
    }
    out
}

fn json(v: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

#[test]
fn a_hostile_store_is_ignored_and_logged() {
    // Forged records that name host 1 are withdrawn by host 1 itself as soon as it sees them
    // (a record of its own that nothing there explains); what is checked here is that host 0
    // never believed them in the meantime: logged at arrival, no tunnel entry, no name.
    let mut h = Hosts::new();
    let net = h.name("ov");
    let subnet = format!("10.{}.4.0/22", h.octet);
    h.ok(
        0,
        &[
            "network", "create", "--driver", "overlay", "--subnet", &subnet, &net,
        ],
    );
    let (a, b) = (h.name("a"), h.name("b"));
    h.ok(0, &["run", "--name", &a, "--network", &net, "busybox"]);
    h.ok(1, &["run", "--name", &b, "--network", &net, "busybox"]);
    let ip_b = h.ip_of(1, &b, &net);
    let mut asker = Asker::new(&a, h.gateway(), Duration::from_millis(500));
    assert!(
        until(&mut asker, &b, Duration::from_secs(10), |x| *x
            == Answer::Addrs(vec![ip_b]))
        .is_some(),
        "{a} does not resolve {b}"
    );
    // A runtime asking for a MAC of its own on the overlay is refused (other hosts believe an
    // overlay endpoint only with Docker's MAC for its address).
    let cni_ns = h.name("cni");
    common::cluster::sh(&["ip", "netns", "add", &cni_ns]);
    let conf = serde_json::json!({
        "cniVersion": "1.0.0", "name": net, "type": "attach-agent-cni",
        "socket": h.socket(0).display().to_string(),
    });
    let mut child = Command::new(env!("CARGO_BIN_EXE_attach-agent-cni"))
        .env_clear()
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", "a".repeat(64))
        .env("CNI_NETNS", format!("/run/netns/{cni_ns}"))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_ARGS", "MAC=02:00:00:00:00:01")
        .env("CNI_PATH", "/nonexistent")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        conf.to_string().as_bytes(),
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_ne!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("MAC address cannot be chosen"), "{text}");

    let before = tunnel_entries(&h, 0);
    assert!(
        before.iter().any(|l| l.contains(&ip_b.to_string())),
        "no tunnel entry for {b}: {before:?}"
    );

    let inspect = |i: usize, what: &str, name: &str| -> String {
        let v: serde_json::Value =
            serde_json::from_str(&h.ok(i, &[what, "inspect", name])).unwrap();
        v[0]["Id"].as_str().unwrap().to_string()
    };
    let net_id = NetworkId::parse(&inspect(0, "network", &net)).unwrap();
    let a_id = ContainerId::parse(&inspect(0, "container", &a)).unwrap();
    let host = |i: usize| -> IpAddr { h.host_ip(i).parse().unwrap() };
    let escape = format!("/etc/{}-escape", h.prefix);
    let (hosts, escape_key) = (vec![host(0), host(1), host(2)], escape.clone());
    let octet = h.octet;

    // Each bad record, written as any writer of the store could.
    let bad_keys: Vec<String> = h
        .with_store(async move |store| {
            let (kvs, _) = store.snapshot(layout::ROOT).await.unwrap();
            let lease_of = |ip: IpAddr| {
                kvs.iter()
                    .find(|kv| kv.key == layout::host(ip))
                    .map(|kv| kv.lease)
                    .expect("a host record")
            };
            let (lease0, lease1) = (lease_of(hosts[0]), lease_of(hosts[1]));
            let mut keys = Vec::new();
            let mut put = async |key: String, value: Vec<u8>, lease| {
                store
                    .put_bytes(key.clone().into_bytes(), value, lease)
                    .await
                    .unwrap();
                keys.push(key);
            };
            // A path-traversal network id, and one with a multibyte character.
            let mut rec = serde_json::json!({
                "id": format!("../../../..{escape_key}"), "name": "evil-net", "created": "",
                "driver": "overlay", "internal": false, "attachable": true, "labels": {},
                "options": {}, "vni": 9999,
                "v4": {"subnet": format!("10.{octet}.8.0/24"), "ip_range": null,
                       "gateway": format!("10.{octet}.8.1")},
                "v6": null,
            });
            put(
                layout::network(&format!("../../../..{escape_key}")),
                json(&rec),
                0,
            )
            .await;
            rec["id"] = "é".repeat(32).into();
            put(layout::network(&"é".repeat(32)), json(&rec), 0).await;
            // A well-formed network whose pool's gateway is outside its subnet.
            let odd = NetworkId::random();
            rec["id"] = odd.to_string().into();
            rec["v4"]["gateway"] = "192.0.2.1".into();
            put(layout::network(&odd), json(&rec), 0).await;

            // Endpoints on the overlay, each wrong in one way only.
            let ep = |n: u8, name: &str, v4: Ipv4Addr, host: IpAddr| EndpointRecord {
                network_id: net_id.clone(),
                endpoint_id: EndpointId::random(),
                container_id: ContainerId::random(),
                container_name: name.into(),
                hostname: format!("evil{n}"),
                aliases: vec![],
                v4,
                v6: None,
                mac: attach_agent::ipam::mac_for(v4),
                host,
            };
            let claim = |r: &EndpointRecord| {
                let c = Claim {
                    endpoint_id: r.endpoint_id.clone(),
                    host: r.host,
                };
                Op::Put {
                    key: layout::claim(&r.network_id, IpAddr::V4(r.v4)),
                    value: layout::encode(&c),
                    lease: None,
                }
            };
            let free = |last: u8| Ipv4Addr::new(10, octet, 5, last);
            // 1. A MAC that is not the address's (claimed, on its host's lease).
            let mut r = ep(1, "evil-mac", free(1), hosts[1]);
            r.mac = [2, 0x42, 1, 2, 3, 4];
            store.txn(vec![], vec![claim(&r)]).await.unwrap();
            let k = layout::endpoint(&net_id, &r.endpoint_id);
            put(k, layout::encode(&r), lease1).await;
            // 2. Another container's address (b's, whose claim names b's endpoint).
            let r = ep(2, "evil-addr", ip_b, hosts[1]);
            let k = layout::endpoint(&net_id, &r.endpoint_id);
            put(k, layout::encode(&r), lease1).await;
            // 3. Another host's endpoint (host 2's) on host 0's lease.
            let r = ep(3, "evil-lease", free(3), hosts[2]);
            store.txn(vec![], vec![claim(&r)]).await.unwrap();
            let k = layout::endpoint(&net_id, &r.endpoint_id);
            put(k, layout::encode(&r), lease0).await;
            // 4. A local container's id (a's, on host 0), claimed, on host 1's lease.
            let mut r = ep(4, "evil-id", free(4), hosts[1]);
            r.container_id = a_id.clone();
            store.txn(vec![], vec![claim(&r)]).await.unwrap();
            let k = layout::endpoint(&net_id, &r.endpoint_id);
            put(k, layout::encode(&r), lease1).await;
            // 5. A name that is no name (it would be served and written to /etc/hosts); its
            // hostname `evil5` would answer if the record were believed.
            let r = ep(5, "evil\n10.0.0.1 victim", free(5), hosts[1]);
            store.txn(vec![], vec![claim(&r)]).await.unwrap();
            let k = layout::endpoint(&net_id, &r.endpoint_id);
            put(k, layout::encode(&r), lease1).await;
            // 7. The overlay's gateway address (its tunnel entry would compete with the bridge).
            let r = ep(7, "evil-gw", Ipv4Addr::new(10, octet, 4, 1), hosts[1]);
            store.txn(vec![], vec![claim(&r)]).await.unwrap();
            let k = layout::endpoint(&net_id, &r.endpoint_id);
            put(k, layout::encode(&r), lease1).await;
            // 8. The network rewritten with a subnet of the whole 10/8: what was built stays.
            let ov_key = layout::network(&net_id);
            let mut ov: serde_json::Value = serde_json::from_slice(
                &kvs.iter()
                    .find(|kv| kv.key == ov_key)
                    .expect("the overlay's record")
                    .value,
            )
            .unwrap();
            ov["v4"]["subnet"] = "10.0.0.0/8".into();
            put(ov_key, json(&ov), 0).await;
            // 9. A forgery that passes every check, naming host 1 on host 1's lease with a free
            // address it claimed for it: host 1 serves no such endpoint and withdraws it.
            let r = ep(9, "evil-forged", free(9), hosts[1]);
            store.txn(vec![], vec![claim(&r)]).await.unwrap();
            let k = layout::endpoint(&net_id, &r.endpoint_id);
            store
                .put_bytes(k.into_bytes(), layout::encode(&r), lease1)
                .await
                .unwrap();
            // 6. A key that is not UTF-8, and a value that is not JSON.
            store
                .put_bytes(
                    b"/attach-agent/v1/endpoints/\xff\xfe".to_vec(),
                    b"{}".to_vec(),
                    0,
                )
                .await
                .unwrap();
            let junk = layout::endpoint(&net_id, &EndpointId::random());
            put(junk, b"not json".to_vec(), lease1).await;
            // The store is still writable for what follows.
            assert!(store
                .txn(vec![Cond::Absent("/attach-agent/v1/x".into())], vec![])
                .await
                .unwrap());
            keys
        })
        .expect("reach etcd");

    // The watch moved past all of it: a container started after is seen on host 0.
    let c = h.name("c");
    h.ok(1, &["run", "--name", &c, "--network", &net, "busybox"]);
    let ip_c = h.ip_of(1, &c, &net);
    assert!(
        until(&mut asker, &c, Duration::from_secs(10), |x| *x
            == Answer::Addrs(vec![ip_c]))
        .is_some(),
        "the watch stalled: {c} never resolved\n{}",
        h.log(0)
    );
    let check = |h: &Hosts, asker: &mut Asker, when: &str| {
        for i in 0..3 {
            assert!(
                h.agents[i]
                    .as_ref()
                    .is_some_and(|_| h.cli(i, &["network", "ls"]).code == 0),
                "{when}: agent {i} stopped answering\n{}",
                h.log(i)
            );
        }
        for name in [
            "evil-mac",
            "evil-addr",
            "evil-lease",
            "evil-id",
            "evil5",
            "evil-gw",
        ] {
            let got = asker.ask(name);
            assert!(gone(&got), "{when}: {name} is served: {got:?}");
        }
        assert_eq!(asker.ask(&b), Answer::Addrs(vec![ip_b]), "{when}");
        assert_eq!(asker.ask(&a), Answer::Addrs(vec![h.ip_of(0, &a, &net)]));
        assert!(
            !std::path::Path::new(&format!("{escape}.json")).exists()
                && !std::path::Path::new(&escape).exists(),
            "{when}: a file was written outside the state directory"
        );
        let net_ls = h.ok(0, &["network", "ls"]);
        assert!(!net_ls.contains("evil-net"), "{when}: {net_ls}");
        let v: serde_json::Value =
            serde_json::from_str(&h.ok(0, &["network", "inspect", &net])).unwrap();
        assert_eq!(
            v[0]["IPAM"]["Config"][0]["Subnet"], subnet,
            "{when}: the network was rewritten"
        );
    };
    check(&h, &mut asker, "following the watch");
    // The forgery naming host 1 is gone: withdrawn from the store by host 1 itself.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = h.store_dump("evil-forged");
        let served = asker.ask("evil-forged");
        if !left.contains("endpoints/") && gone(&served) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a forgery naming host 1 stays: {served:?}\n{left}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let after: BTreeSet<String> = tunnel_entries(&h, 0);
    let added: Vec<&String> = after.difference(&before).collect();
    assert!(
        added.iter().all(|l| l.contains(&ip_c.to_string())
            || l.contains(&format!(
                "{:02x}:{:02x}",
                ip_c.octets()[2],
                ip_c.octets()[3]
            ))),
        "tunnel entries other than {c}'s added: {added:?}"
    );
    assert!(
        before.is_subset(&after),
        "tunnel entries removed or replaced: {before:?} -> {after:?}"
    );
    // Each bad record was logged once by name (the non-UTF-8 key escaped).
    let log = h.full_log(0);
    for k in &bad_keys {
        assert!(
            log.contains(&format!("key={k}")) || log.contains(&format!("key=\"{k}\"")),
            "{k} not logged:\n{}",
            h.log(0)
        );
    }
    assert!(log.contains("not UTF-8"), "{}", h.log(0));

    // A restart reads all of it from the snapshot: starts, serves, believes none of it.
    h.kill_agent(0);
    h.start_agent(0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while asker.ask(&c) != Answer::Addrs(vec![ip_c]) {
        assert!(
            Instant::now() < deadline,
            "after a restart: {c}\n{}",
            h.log(0)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    check(&h, &mut asker, "after a restart");
}

/// An agent started in host 0's namespace as an extra host (10.X.0.9, its own socket, state
/// and links) with the store flags given; (exit code, stderr), or `None` when it came up and
/// served (it is stopped then).
fn try_agent(h: &Hosts, tag: &str, flags: &[String]) -> Option<(i32, String)> {
    let dir = h.dir.path().join(format!("extra-{tag}"));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("agent.sock");
    let mut child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", h.host_ns(0)))
        .arg(env!("CARGO_BIN_EXE_attach-agent"))
        .arg("daemon")
        .arg("--socket")
        .arg(&socket)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(["--link-prefix", &format!("{}9", h.prefix)])
        .args(["--metrics-addr", "127.0.0.1:0"])
        .args(["--upstream", "127.0.0.1:9"])
        .args(["--advertise-addr", &format!("10.{}.0.9", h.octet)])
        .args(flags)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("log")).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let log = std::fs::read_to_string(dir.join("log")).unwrap();
            return Some((status.code().unwrap_or(-1), log));
        }
        if socket.exists() {
            let ls = Command::new(env!("CARGO_BIN_EXE_attach-agent"))
                .arg("-H")
                .arg(format!("unix://{}", socket.display()))
                .args(["network", "ls"])
                .output()
                .unwrap();
            if ls.status.success() {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{tag}: neither up nor failed in 40 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn flag_value(flags: &mut [String], name: &str, value: String) {
    let i = flags.iter().position(|f| f == name).unwrap();
    flags[i + 1] = value;
}

/// `etcdctl` as host 0's agent (its client certificate), inside host 0's namespace.
fn etcdctl(h: &Hosts, user: Option<&str>, args: &[&str]) -> std::process::Output {
    let c = h.certs();
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{}", h.host_ns(0)))
        .arg("etcdctl")
        .arg(format!("--endpoints=https://{}:2379", h.host_ip(0)))
        .arg(format!("--cacert={}", c.join("ca.pem").display()))
        .arg(format!("--cert={}", c.join("h0.pem").display()))
        .arg(format!("--key={}", c.join("h0-key.pem").display()));
    if let Some(u) = user {
        cmd.arg(format!("--user={u}"));
    }
    cmd.args(args)
        .output()
        .expect("etcdctl (Debian's etcd-client)")
}

fn etcdctl_ok(h: &Hosts, user: Option<&str>, args: &[&str]) {
    let o = etcdctl(h, user, args);
    assert!(
        o.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn tls_and_credential_mistakes_fail_at_start_naming_the_setting() {
    let h = Hosts::new();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/cluster-certs");
    let certs = h.certs();
    let good = h.store_flags(0);
    let fails_naming = |tag: &str, flags: &[String], setting: &str, also: &str| {
        let (code, log) =
            try_agent(&h, tag, flags).unwrap_or_else(|| panic!("{tag}: the agent came up"));
        assert_ne!(code, 0, "{tag}");
        let last = log.lines().last().unwrap_or_default();
        assert!(
            last.contains(setting) && last.contains(also),
            "{tag}: the error does not name {setting} ({also}):\n{log}"
        );
    };

    // A CA that did not sign the members' certificates.
    let other = h.dir.path().join("other");
    sh(&[script, other.to_str().unwrap(), "ca"]);
    let mut f = good.clone();
    flag_value(
        &mut f,
        "--cluster-ca",
        other.join("ca.pem").display().to_string(),
    );
    fails_naming("wrong-ca", &f, "--cluster-ca", "does not verify");
    // No client certificate, where the store requires one.
    let no_cert: Vec<String> = good[..4].to_vec();
    fails_naming("no-cert", &no_cert, "--cluster-cert", "client certificate");
    // An expired client certificate, and one from another CA.
    std::process::Command::new(script)
        .env("DAYS", "-1")
        .args([certs.to_str().unwrap(), "client", "expired"])
        .status()
        .unwrap();
    let mut f = good.clone();
    flag_value(
        &mut f,
        "--cluster-cert",
        certs.join("expired.pem").display().to_string(),
    );
    flag_value(
        &mut f,
        "--cluster-key",
        certs.join("expired-key.pem").display().to_string(),
    );
    fails_naming(
        "expired",
        &f,
        "--cluster-cert",
        "refused this host's certificate",
    );
    sh(&[script, other.to_str().unwrap(), "client", "stranger"]);
    let mut f = good.clone();
    flag_value(
        &mut f,
        "--cluster-cert",
        other.join("stranger.pem").display().to_string(),
    );
    flag_value(
        &mut f,
        "--cluster-key",
        other.join("stranger-key.pem").display().to_string(),
    );
    fails_naming(
        "stranger",
        &f,
        "--cluster-cert",
        "refused this host's certificate",
    );
    // A file that is not there, a key where the certificate should be, plain HTTP to TLS.
    let mut f = good.clone();
    flag_value(&mut f, "--cluster-ca", "/nonexistent/ca.pem".into());
    fails_naming("missing", &f, "--cluster-ca", "No such file");
    let mut f = good.clone();
    flag_value(
        &mut f,
        "--cluster-cert",
        certs.join("h0-key.pem").display().to_string(),
    );
    fails_naming("swapped", &f, "--cluster-cert", "no PEM CERTIFICATE");
    let plain = vec![
        "--cluster-store".to_string(),
        good[1].replace("https://", "etcd://"),
    ];
    fails_naming(
        "plain",
        &plain,
        "--cluster-store",
        "needs an https:// store",
    );

    // etcd RBAC: each host's agent is the user its certificate names, with a role limited to
    // the layout's keys (README's role); a password user; a read-only one.
    let role = "attach-agent";
    etcdctl_ok(
        &h,
        None,
        &["user", "add", "root", "--new-user-password=rootpw"],
    );
    etcdctl_ok(&h, None, &["user", "grant-role", "root", "root"]);
    etcdctl_ok(&h, None, &["role", "add", role]);
    etcdctl_ok(
        &h,
        None,
        &[
            "role",
            "grant-permission",
            role,
            "--prefix=true",
            "readwrite",
            "/attach-agent/v1/",
        ],
    );
    for i in 0..3 {
        let u = format!("h{i}");
        etcdctl_ok(&h, None, &["user", "add", &u, "--no-password"]);
        etcdctl_ok(&h, None, &["user", "grant-role", &u, role]);
    }
    etcdctl_ok(
        &h,
        None,
        &["user", "add", "pw", "--new-user-password=s3cret"],
    );
    etcdctl_ok(&h, None, &["user", "grant-role", "pw", role]);
    etcdctl_ok(&h, None, &["role", "add", "reader"]);
    etcdctl_ok(
        &h,
        None,
        &[
            "role",
            "grant-permission",
            "reader",
            "--prefix=true",
            "read",
            "/attach-agent/v1/",
        ],
    );
    etcdctl_ok(&h, None, &["user", "add", "ro", "--new-user-password=ro"]);
    etcdctl_ok(&h, None, &["user", "grant-role", "ro", "reader"]);
    etcdctl_ok(&h, None, &["auth", "enable"]);
    // Outside the role: refused to the agents' own users.
    let o = etcdctl(&h, None, &["put", "/elsewhere", "x"]);
    assert!(
        !o.status.success(),
        "h0 may write outside /attach-agent/v1/"
    );

    // The running agents (users h0..h2 by certificate) go on: a global network and a container.
    let net = h.name("ov");
    h.ok(
        1,
        &[
            "network",
            "create",
            "--driver",
            "overlay",
            "--subnet",
            &format!("10.{}.4.0/22", h.octet),
            &net,
        ],
    );
    h.ok(
        2,
        &["run", "--name", &h.name("c"), "--network", &net, "busybox"],
    );

    let pw = |tag: &str, user: &str, password: &str| {
        let file = h.dir.path().join(format!("{tag}.password"));
        std::fs::write(&file, format!("{password}\n")).unwrap();
        let mut f = good.clone();
        f.extend([
            "--cluster-user".to_string(),
            user.to_string(),
            "--cluster-password-file".to_string(),
            file.display().to_string(),
        ]);
        f
    };
    fails_naming(
        "wrong-password",
        &pw("wrong", "pw", "guess"),
        "--cluster-user",
        "refused the user or password",
    );
    fails_naming(
        "read-only",
        &pw("ro", "ro", "ro"),
        "--cluster-user",
        "permission denied",
    );
    assert!(
        try_agent(&h, "password", &pw("right", "pw", "s3cret")).is_none(),
        "the right password does not get in"
    );
}
