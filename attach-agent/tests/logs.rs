//! The daemon's log as a service manager sees it: the filter from `RUST_LOG`, plain text in a
//! file (no ANSI colour codes when stderr is not a terminal).

mod common;

use common::Env;

#[test]
fn a_daemon_logging_to_a_file_writes_plain_text_filtered_by_rust_log() {
    let mut env = Env::without_daemon();
    let log = env.dir().join("daemon.log");
    env.start_daemon_logging_to("attach_agent=debug", &log);

    let net = env.name("logs");
    let subnet = env.subnet(1);
    env.ok(&["network", "create", "--subnet", &subnet, &net]);
    env.ok(&["network", "rm", &net]);
    env.kill_daemon();

    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("attach-agent ready"), "info lines: {log}");
    assert!(
        log.contains("network created") && log.contains(&net),
        "the operation is logged: {log}"
    );
    assert!(
        log.contains("DEBUG"),
        "RUST_LOG=attach_agent=debug turns on debug lines: {log}"
    );
    assert!(
        !log.contains('\x1b'),
        "a log that is not a terminal has no ANSI escapes: {log:?}"
    );
}
