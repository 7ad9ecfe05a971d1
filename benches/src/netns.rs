//! Network namespaces a benchmark makes, named with its own prefix: `ip` calls, and a guard
//! that removes every namespace of the prefix (also leftovers of an interrupted run) when it is
//! made and when it is dropped, however the benchmark ends.

use std::process::{Command, Stdio};

/// Run `ip ARGS`; whether it succeeded.
pub fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Remove every namespace whose name starts with `prefix`.
pub fn sweep(prefix: &str) {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for e in dir.flatten() {
        if let Some(name) = e.file_name().to_str() {
            if name.starts_with(prefix) {
                ip(&["netns", "delete", name]);
            }
        }
    }
}

/// Sweeps `prefix` now and again on drop.
#[must_use]
pub struct Sweep(&'static str);

impl Sweep {
    pub fn new(prefix: &'static str) -> Sweep {
        sweep(prefix);
        Sweep(prefix)
    }
}

impl Drop for Sweep {
    fn drop(&mut self) {
        sweep(self.0);
    }
}
