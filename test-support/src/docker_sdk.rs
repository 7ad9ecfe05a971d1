//! The Docker SDK for Python (`docker` on PyPI, pinned to [`VERSION`]) as a client of the
//! agent: a virtual environment of the tests' own, made on first use under the target
//! directory (Debian's python3 with its `venv` module, as `.ci/run` installs them) and kept
//! for later runs. Nothing is installed into the machine's Python.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The SDK release the tests drive the agent with (the newest, as users install it).
pub const VERSION: &str = "7.1.0";

fn has_sdk(python: &Path) -> bool {
    Command::new(python)
        .args([
            "-c",
            &format!("import docker, sys; sys.exit(docker.__version__ != {VERSION:?})"),
        ])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The python of a virtual environment under `dir` (a test's `CARGO_TARGET_TMPDIR`) that has
/// the SDK; made once (in a directory of its own, renamed into place when whole, so two test
/// processes never use half of one). Panics, saying what is missing, when it cannot be made.
pub fn python(dir: &Path) -> PathBuf {
    let venv = dir.join(format!("docker-sdk-{VERSION}"));
    let python = venv.join("bin/python");
    if has_sdk(&python) {
        return python;
    }
    // Broken or half made (an interrupted run): no test can be using it.
    let _ = std::fs::remove_dir_all(&venv);
    let building = dir.join(format!("docker-sdk-{VERSION}.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&building);
    std::fs::create_dir_all(dir).expect("the target directory");
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&building)
        .output()
        .expect("python3 must be on PATH (.ci/run installs python3 and python3-venv)");
    assert!(
        made.status.success(),
        "python3 -m venv failed (Debian: apt-get install python3-venv): {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let pip = Command::new(building.join("bin/python"))
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            &format!("docker=={VERSION}"),
        ])
        .output()
        .expect("the new environment's python");
    assert!(
        pip.status.success(),
        "pip install docker=={VERSION} failed (PyPI must be reachable): {}",
        String::from_utf8_lossy(&pip.stderr)
    );
    // Another process may have finished first (the rename then fails): either will do. Only
    // `bin/python` is used, which finds its environment wherever the directory is.
    if std::fs::rename(&building, &venv).is_err() {
        let _ = std::fs::remove_dir_all(&building);
    }
    assert!(
        has_sdk(&python),
        "the SDK is not importable from {}",
        python.display()
    );
    python
}
