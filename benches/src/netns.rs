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

/// How many network namespaces the kernel holds (live or waiting for its cleanup), from
/// /proc/slabinfo's `net_namespace` cache; `None` where the kernel does not show it.
pub fn namespaces_held() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/slabinfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("net_namespace "))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Wait (at most two minutes) until the kernel has finished cleaning up the namespaces a run
/// deleted, so that the next measurement does not pay for the last one's teardown (namespace
/// cleanup runs later, in the kernel's own workers, holding the lock every link change needs):
/// until the namespaces it holds are down to `baseline` or have stopped falling for two
/// seconds (the slab's count is approximate). How long it waited.
pub fn settle(baseline: Option<usize>) -> std::time::Duration {
    use std::time::{Duration, Instant};
    let t = Instant::now();
    let Some(base) = baseline else {
        std::thread::sleep(Duration::from_secs(5));
        return t.elapsed();
    };
    let (mut low, mut since) = (usize::MAX, Instant::now());
    while let Some(n) = namespaces_held() {
        if n <= base
            || since.elapsed() >= Duration::from_secs(2)
            || t.elapsed() > Duration::from_secs(120)
        {
            break;
        }
        if n < low {
            (low, since) = (n, Instant::now());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    t.elapsed()
}
