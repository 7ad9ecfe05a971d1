//! What the tests and benchmarks of several crates share, as a crate of its own rather than
//! files included across crates by path.
//!
//! - [`docker_sdk`]: the Docker SDK for Python, pinned, in a virtual environment of the
//!   tests' own (the Engine API tests with a second real client);
//! - [`docker_engine`]: Docker Engine 20.10 started by hand as the reference (the Engine API
//!   differential test, the benchmark's Docker row);
//! - [`podman`]: podman with private configuration, storage and CNI directories, on the
//!   agent's plugin or on netavark (the CNI tests, the benchmark's podman rows);
//! - [`prometheus`]: promtool and a Prometheus server, the metrics' real consumers;
//! - [`report`]: the figures tests give the reliability report;
//! - [`require_root`]: the tests that make namespaces, bridges and veths say so when not root.

pub mod docker_engine;
pub mod docker_sdk;
pub mod podman;
pub mod prometheus;
pub mod report;

pub use report::report;

/// The effective user id, from /proc/self/status (no unsafe code, no libc call).
pub fn euid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    uids.split_whitespace().nth(1)?.parse().ok()
}

/// Fail loudly, naming `why`, unless running as root: these tests never skip silently.
pub fn require_root(why: &str) {
    assert_eq!(euid(), Some(0), "{why}: run the tests as root");
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_effective_uid_is_read() {
        assert!(super::euid().is_some());
    }
}
