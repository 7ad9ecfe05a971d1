//! A container whose namespace dies without the agent being told (its process killed, no DEL,
//! no stop) leaves DNS and gives its address back by itself: the kernel's link deletion is the
//! signal, no container is polled.

mod common;

use std::time::{Duration, Instant};

use common::{Env, ProcessNetns};

#[test]
fn a_container_whose_namespace_dies_leaves_dns_and_frees_its_address() {
    let env = Env::new();
    let net = env.name("net");
    env.ok(&["network", "create", "--subnet", &env.subnet(1), &net]);
    let client = env.name("client");
    env.ok(&["run", "--name", &client, "--network", &net, "busybox"]);
    let mut sandbox = ProcessNetns::new();
    let victim = env.name("victim");
    env.ok(&[
        "run",
        "--name",
        &victim,
        "--netns",
        &sandbox.path(),
        "--network",
        &net,
        "--alias",
        "doomed",
        "busybox",
    ]);
    assert_eq!(env.dig(&client, &[&victim]), env.ip(1, 3));
    assert_eq!(env.dig(&client, &["doomed"]), env.ip(1, 3));

    // The process dies; nobody tells the agent.
    let killed = Instant::now();
    sandbox.kill();
    let deadline = killed + Duration::from_secs(5);
    while !env.dig(&client, &[&victim]).is_empty() {
        assert!(
            Instant::now() < deadline,
            "still answering 5 s after its namespace died"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "records gone {} ms after the namespace's process was killed",
        killed.elapsed().as_millis()
    );
    assert_eq!(env.dig(&client, &["doomed"]), "", "its alias too");
    let inspect: serde_json::Value =
        serde_json::from_str(&env.ok(&["container", "inspect", &victim])).unwrap();
    assert_eq!(inspect[0]["State"]["Status"], "exited");
    // Its address is free again: the next container gets it.
    let next = env.name("next");
    env.ok(&["run", "--name", &next, "--network", &net, "busybox"]);
    assert_eq!(env.dig(&client, &[&next]), env.ip(1, 3));
}
