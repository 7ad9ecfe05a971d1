//! The figures tests give the reliability report (the resolver's tests and attach-agent's).

/// A figure for the reliability report: printed, and appended to $RELIABILITY_OUT when the
/// report generator (`cargo xtask reliability-report`) runs the tests.
pub fn report(figures: serde_json::Value) {
    let line = format!("RELIABILITY {figures}\n");
    print!("{line}");
    if let Ok(path) = std::env::var("RELIABILITY_OUT") {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(line.as_bytes()).unwrap();
    }
}
