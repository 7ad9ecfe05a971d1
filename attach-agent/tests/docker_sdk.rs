//! The Docker SDK for Python (pinned, from PyPI, in the tests' own virtual environment) as a
//! second real client of the Engine API: the seed page, the behaviour reference's errors, the
//! version negotiation, per-endpoint MACs and interface names, and runs detached and in the
//! foreground (tests/sdk/seed_page.py; it reads kernel effects back with ip and getent).

mod common;

use std::process::Command;

use attach_agent::engine::version;
use common::Env;

#[test]
fn the_python_sdk_drives_the_agent() {
    test_support::require_root("the SDK test makes namespaces and bridges");
    let python =
        test_support::docker_sdk::python(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")));
    let env = Env::new();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/seed_page.py");
    let out = Command::new(python)
        .arg(script)
        .env("AGENT_SOCKET", &env.socket)
        .env("PREFIX", &env.prefix)
        .env("OCTET", env.octet.to_string())
        .env("API_CURRENT", version::CURRENT.to_string())
        .env("API_MINIMUM", version::MINIMUM.to_string())
        .env_remove("DOCKER_HOST")
        .output()
        .expect("run the SDK script");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "seed_page.py failed:\n{stdout}\n{stderr}"
    );
}
