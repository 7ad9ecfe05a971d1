//! The metrics' real consumers: an HTTP GET of `/metrics`, `promtool check metrics`, and a
//! Prometheus server started on loopback that scrapes a target and answers PromQL.
//!
//! Debian's `prometheus` package ships both binaries (`.ci/run` installs it; its service is
//! never started). The server gets a configuration, a data directory and a port of the test's
//! own, and is ended by its PID when dropped.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `GET path` over HTTP/1.0 from `addr`: (status code, body). Plain std: the tests' client
/// must not share code with the server it checks.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no HTTP head in {text:?}")))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status in {head:?}")))?;
    Ok((status, body.to_string()))
}

/// The head of a `GET path` (its header lines), for checking the content type.
pub fn http_head_of_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    Ok(text
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_string())
}

/// Run `promtool check metrics` on `exposition`: its verdict (success, and what it printed).
pub fn promtool_check(exposition: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool must be on PATH (Debian's prometheus package; .ci/run installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// The value of one sample in an exposition: `name` with exactly `labels` (in any order).
pub fn sample(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    exposition.lines().find_map(|line| {
        if line.starts_with('#') {
            return None;
        }
        let (series, value) = line.rsplit_once(' ')?;
        let (n, rest) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.strip_suffix('}')?),
            None => (series, ""),
        };
        if n != name {
            return None;
        }
        let mut have: Vec<(String, String)> = Vec::new();
        for pair in rest.split("\",").filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once("=\"")?;
            have.push((k.to_string(), v.trim_end_matches('"').to_string()));
        }
        let mut want: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        have.sort();
        want.sort();
        (have == want).then(|| value.parse().ok())?
    })
}

/// A free TCP port on loopback (bound and let go: another process could take it between, which
/// a test then reports as a failure to start).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on loopback")
}

/// A Prometheus server on loopback scraping one target every second.
pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Start one that scrapes `target` (`/metrics`) every second under job `job`.
    pub fn scraping(target: SocketAddr, job: &str) -> Prometheus {
        let dir = tempfile::tempdir().expect("a directory for Prometheus");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: {job}\n    metrics_path: /metrics\n\
                 \x20   static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect(
                "prometheus must be on PATH (Debian's prometheus package; .ci/run installs it)",
            );
        let mut p = Prometheus {
            child,
            addr,
            dir: dir.path().to_path_buf(),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((200, _)) = http_get(addr, "/-/ready") {
                return p;
            }
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("prometheus exited: {status}; its log:\n{}", p.log());
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready in 60 s; its log:\n{}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// What it logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// The value of instant query `promql` if it gives exactly one sample.
    pub fn query_one(&self, promql: &str) -> Option<f64> {
        let mut q = String::new();
        for b in promql.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                q.push(b as char);
            } else {
                q.push_str(&format!("%{b:02X}"));
            }
        }
        let (status, body) = http_get(self.addr, &format!("/api/v1/query?query={q}")).ok()?;
        if status != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let result = v["data"]["result"].as_array()?;
        if result.len() != 1 {
            return None;
        }
        result[0]["value"][1].as_str()?.parse().ok()
    }

    /// Wait (up to `within`) for `promql` to give one sample for which `pred` holds; the last
    /// value seen.
    pub fn wait_for(
        &self,
        promql: &str,
        within: Duration,
        pred: impl Fn(f64) -> bool,
    ) -> Result<f64, Option<f64>> {
        let deadline = Instant::now() + within;
        let mut last = None;
        loop {
            if let Some(v) = self.query_one(promql) {
                if pred(v) {
                    return Ok(v);
                }
                last = Some(v);
            }
            if Instant::now() >= deadline {
                return Err(last);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_found_by_name_and_exact_labels() {
        let text = "# HELP x_total X.\n# TYPE x_total counter\n\
                    x_total{network=\"a\",outcome=\"local\"} 3\n\
                    x_total{network=\"a\",outcome=\"nodata\"} 1\nup 1\n";
        assert_eq!(
            sample(text, "x_total", &[("outcome", "local"), ("network", "a")]),
            Some(3.0)
        );
        assert_eq!(sample(text, "x_total", &[("outcome", "local")]), None);
        assert_eq!(sample(text, "up", &[]), Some(1.0));
    }
}
