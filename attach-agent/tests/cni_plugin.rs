//! The plugin as the CNI spec drives it, without a runtime: the attach-agent-cni binary run with
//! CNI's environment and a network config on stdin, into real namespaces (each a process of
//! its own, made by `unshare --net`): VERSION, ADD in 0.4.0 and 1.x, CHECK, STATUS, DEL (also
//! repeated, for an unknown container, and with an empty CNI_NETNS), GC with a valid list, and
//! the errors with the spec's codes.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{Env, ProcessNetns};
use serde_json::{json, Value};

/// One plugin run: exit code and stdout parsed as JSON (`Null` when empty).
fn plugin(
    command: &str,
    id: &str,
    netns: &str,
    ifname: &str,
    args: &str,
    conf: &Value,
) -> (i32, Value) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_attach-agent-cni"))
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", ifname)
        .env("CNI_ARGS", args)
        .env("CNI_PATH", "/nonexistent")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let v = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    };
    (out.status.code().unwrap_or(-1), v)
}

fn conf(env: &Env, version: &str, network: &str) -> Value {
    json!({
        "cniVersion": version,
        "name": network,
        "type": "attach-agent-cni",
        "socket": env.socket.display().to_string(),
    })
}

#[test]
fn the_plugin_follows_the_cni_spec() {
    let env = Env::new();
    let net = env.name("net");
    env.ok(&["network", "create", "--subnet", &env.subnet(1), &net]);
    let client = env.name("client");
    env.ok(&["run", "--name", &client, "--network", &net, "busybox"]);
    let (a, b) = (ProcessNetns::new(), ProcessNetns::new());

    let (code, v) = plugin("VERSION", "", "", "", "", &json!({}));
    assert_eq!(code, 0);
    assert_eq!(v["supportedVersions"], json!(["0.4.0", "1.0.0", "1.1.0"]));

    // ADD, 1.0.0, with a name, a static address and a MAC from CNI_ARGS.
    let c1 = conf(&env, "1.0.0", &net);
    let args = format!(
        "IgnoreUnknown=1;K8S_POD_NAME={};IP={};MAC=02:00:00:00:00:aa",
        env.name("pa"),
        env.ip(1, 40)
    );
    let (code, r) = plugin("ADD", "runtime-a", &a.path(), "eth0", &args, &c1);
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["cniVersion"], "1.0.0");
    assert_eq!(r["interfaces"][0]["name"], "eth0");
    assert_eq!(r["interfaces"][0]["mac"], "02:00:00:00:00:aa");
    assert_eq!(r["interfaces"][0]["sandbox"], a.path());
    assert_eq!(r["ips"][0]["address"], format!("{}/24", env.ip(1, 40)));
    assert_eq!(r["ips"][0]["gateway"], env.ip(1, 1));
    assert!(r["ips"][0].get("version").is_none());
    assert_eq!(r["routes"][0]["dst"], "0.0.0.0/0");
    assert_eq!(r["dns"]["nameservers"], json!([env.ip(1, 1)]));
    assert_eq!(env.dig(&client, &[&env.name("pa")]), env.ip(1, 40));
    // The same ADD again answers with the same attachment.
    let (code, again) = plugin("ADD", "runtime-a", &a.path(), "eth0", &args, &c1);
    assert_eq!((code, &again["ips"]), (0, &r["ips"]));

    // ADD, 0.4.0, no name: the runtime's id is the name; ips carry "version".
    let (code, r) = plugin(
        "ADD",
        "runtime-b",
        &b.path(),
        "net1",
        "",
        &conf(&env, "0.4.0", &net),
    );
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["cniVersion"], "0.4.0");
    assert_eq!(r["ips"][0]["version"], "4");
    assert_eq!(r["interfaces"][0]["name"], "net1");
    assert_eq!(env.dig(&client, &["runtime-b"]), env.ip(1, 3));

    // runtimeConfig as podman fills it: static addresses (no prefix) and aliases by network.
    let c = ProcessNetns::new();
    let mut rc = c1.clone();
    rc["runtimeConfig"] = json!({
        "ips": [env.ip(1, 60)],
        "aliases": {net.clone(): ["cache", "redis"], "elsewhere": ["nope"]},
        "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
    });
    let (code, r) = plugin("ADD", "runtime-rc", &c.path(), "eth0", "", &rc);
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["ips"][0]["address"], format!("{}/24", env.ip(1, 60)));
    assert_eq!(env.dig(&client, &["redis"]), env.ip(1, 60));
    assert_eq!(
        env.dig(&client, &["nope"]),
        "",
        "another network's aliases are not this one's"
    );
    let mut two = rc.clone();
    two["runtimeConfig"]["ips"] = json!([env.ip(1, 61), env.ip(1, 62)]);
    let (code, e) = plugin("ADD", "runtime-two", &b.path(), "eth9", "", &two);
    assert_eq!(
        (code, e["code"].as_u64()),
        (1, Some(7)),
        "two IPv4 addresses: {e}"
    );
    assert_eq!(plugin("DEL", "runtime-rc", "", "eth0", "", &rc).0, 0);

    // CHECK and STATUS.
    assert_eq!(
        plugin("CHECK", "runtime-a", &a.path(), "eth0", "", &c1).0,
        0
    );
    let (code, e) = plugin("CHECK", "nobody", &a.path(), "eth0", "", &c1);
    assert_eq!(
        (code, e["code"].as_u64()),
        (1, Some(3)),
        "unknown container: {e}"
    );
    assert_eq!(plugin("STATUS", "", "", "", "", &c1).0, 0);

    // Errors, each changing nothing: a taken address, an unknown network, a bad version, no
    // namespace, the host's own namespace.
    let (code, e) = plugin(
        "ADD",
        "runtime-c",
        &b.path(),
        "eth1",
        &format!("IP={}", env.ip(1, 40)),
        &c1,
    );
    assert_eq!((code, e["code"].as_u64()), (1, Some(100)), "{e}");
    assert!(e["msg"]
        .as_str()
        .unwrap()
        .contains("Address already in use"));
    let (code, e) = plugin(
        "ADD",
        "runtime-c",
        &b.path(),
        "eth1",
        "",
        &conf(&env, "1.0.0", "ghost"),
    );
    assert_eq!((code, e["code"].as_u64()), (1, Some(7)), "{e}");
    assert!(
        e["msg"]
            .as_str()
            .unwrap()
            .contains("network ghost not found"),
        "{e}"
    );
    let (code, e) = plugin(
        "ADD",
        "runtime-c",
        &b.path(),
        "eth1",
        "",
        &conf(&env, "0.3.1", &net),
    );
    assert_eq!((code, e["code"].as_u64()), (1, Some(1)), "{e}");
    let (code, e) = plugin("ADD", "runtime-c", "", "eth1", "", &c1);
    assert_eq!((code, e["code"].as_u64()), (1, Some(4)), "{e}");
    // (Read by the daemon: its own namespace, the host's.)
    let (code, e) = plugin("ADD", "runtime-c", "/proc/self/ns/net", "eth1", "", &c1);
    assert_eq!(code, 1, "{e}");
    assert!(
        e["msg"]
            .as_str()
            .unwrap()
            .contains("host's own network namespace"),
        "{e}"
    );
    let (code, e) = plugin("ADD", "runtime-c", &b.path(), "../eth1", "", &c1);
    assert_eq!(code, 1, "{e}");
    assert!(
        !env.ok(&["container", "ls"]).contains("runtime-c"),
        "nothing left of the failures"
    );

    // GC with runtime-a still valid: runtime-b goes.
    let mut gc = c1.clone();
    gc["cniVersion"] = "1.1.0".into();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "runtime-a", "ifname": "eth0"}]);
    assert_eq!(plugin("GC", "", "", "", "", &gc).0, 0);
    assert_eq!(env.dig(&client, &["runtime-b"]), "", "collected");
    assert_eq!(env.dig(&client, &[&env.name("pa")]), env.ip(1, 40), "kept");

    // DEL: with an empty CNI_NETNS, then again (idempotent), then for nobody at all.
    for _ in 0..2 {
        assert_eq!(plugin("DEL", "runtime-a", "", "eth0", "", &c1).0, 0);
    }
    assert_eq!(plugin("DEL", "nobody", "", "eth0", "", &c1).0, 0);
    assert_eq!(env.dig(&client, &[&env.name("pa")]), "");
    let ls = env.ok(&["container", "ls", "-a"]);
    assert!(
        !ls.contains(&env.name("pa")) && !ls.contains("runtime-b"),
        "{ls}"
    );

    // The daemon not running: "try again later", naming the socket.
    drop(a);
    let mut env = env;
    env.kill_daemon();
    let (code, e) = plugin("ADD", "runtime-d", &b.path(), "eth0", "", &c1);
    assert_eq!((code, e["code"].as_u64()), (1, Some(11)), "{e}");
    assert!(
        e["msg"]
            .as_str()
            .unwrap()
            .contains("is attach-agent daemon running on"),
        "{e}"
    );
    let (code, e) = plugin("STATUS", "", "", "", "", &c1);
    assert_eq!((code, e["code"].as_u64()), (1, Some(50)), "{e}");
    env.start_daemon();
}

/// A runtime that restarts a container into a new namespace without a DEL (podman does): the
/// ADD replaces the old attachment, takes the same static address, and its name answers.
#[test]
fn an_add_into_a_new_namespace_replaces_the_old_attachment() {
    let env = Env::new();
    let net = env.name("net");
    env.ok(&["network", "create", "--subnet", &env.subnet(1), &net]);
    let client = env.name("client");
    env.ok(&["run", "--name", &client, "--network", &net, "busybox"]);
    let (old, new) = (ProcessNetns::new(), ProcessNetns::new());
    let c = conf(&env, "1.0.0", &net);
    let name = env.name("pr");
    let args = format!("IgnoreUnknown=1;K8S_POD_NAME={name};IP={}", env.ip(1, 60));
    let (code, r) = plugin("ADD", "runtime-r", &old.path(), "eth0", &args, &c);
    assert_eq!(code, 0, "{r}");
    assert_eq!(env.getent(&client, &name), [env.ip(1, 60)]);

    let (code, r) = plugin("ADD", "runtime-r", &new.path(), "eth0", &args, &c);
    assert_eq!(code, 0, "the same static address again: {r}");
    assert_eq!(r["ips"][0]["address"], format!("{}/24", env.ip(1, 60)));
    assert_eq!(
        env.getent(&client, &name),
        [env.ip(1, 60)],
        "its name answers"
    );
    let links_in = |ns: &ProcessNetns| {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", ns.path()))
            .args(["ip", "-o", "link", "show"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert!(
        !links_in(&old).contains("eth0"),
        "the old attachment's veth is gone"
    );
    assert!(links_in(&new).contains("eth0"));
    assert_eq!(plugin("DEL", "runtime-r", &new.path(), "eth0", "", &c).0, 0);
    assert!(env.getent(&client, &name).is_empty());
}
