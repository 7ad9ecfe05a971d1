//! The observability listener: `/metrics` (Prometheus text format), `/health` and `/ready`, on
//! a TCP address of its own (`metrics_addr`, default [`DEFAULT_METRICS_ADDR`]).
//!
//! Its own address, not the API socket: Prometheus scrapes over TCP, and a scraper needs no
//! right to change networks. Loopback by default, like the API: an operator who wants the
//! fleet's Prometheus to reach it says so. `/health` says the process is serving; `/ready`
//! says what the process needs before it answers everything it should (the daemon: state
//! loaded, reconciled, listeners open), with 503 and the checks that fail until then, so a
//! service manager or an orchestrator can wait on it.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use thiserror::Error;

use crate::metrics::exposition::{Exposition, Kind, CONTENT_TYPE};

/// Where `/metrics` listens unless told otherwise (CoreDNS has 9153; 9253 is free in
/// Prometheus's port allocation list's neighbourhood and taken by nothing we ship).
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9253";

/// A `metrics_addr` that cannot be listened on.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("metrics_addr {0:?}: expected IP:PORT ([IPv6]:PORT), or empty to turn metrics off")]
pub struct BadMetricsAddr(pub String);

/// `metrics_addr` as configured: `IP:PORT`, or empty (no listener, nothing counted).
pub fn parse_metrics_addr(text: &str) -> Result<Option<SocketAddr>, BadMetricsAddr> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(None);
    }
    t.parse()
        .map(Some)
        .map_err(|_| BadMetricsAddr(text.to_string()))
}

/// One condition of readiness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What holds when it is met, e.g. "state loaded".
    pub name: String,
    pub ok: bool,
}

/// What the listener shows: the process's metrics and readiness.
pub trait Observed: Send + Sync + 'static {
    /// Every metric family of the process, written into `e` (a scrape may wait for a lock).
    fn render(&self, e: Exposition) -> impl std::future::Future<Output = Exposition> + Send;
    /// The conditions of readiness, met or not.
    fn readiness(&self) -> Vec<Check>;
}

/// The listener, serving until dropped.
#[derive(Debug)]
pub struct ObserveListener {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl ObserveListener {
    /// Listen on `addr` (port 0: a free one) and serve `observed`.
    pub async fn open<O: Observed>(
        addr: SocketAddr,
        observed: Arc<O>,
    ) -> std::io::Result<ObserveListener> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/metrics", get(metrics::<O>))
            .route("/health", get(health))
            .route("/ready", get(ready::<O>))
            .with_state(observed);
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "metrics listener stopped");
            }
        });
        tracing::info!(%addr, "metrics, health and readiness over HTTP");
        Ok(ObserveListener { addr, task })
    }

    /// The bound address (with the real port when 0 was asked).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for ObserveListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether every check is met, and the checks as lines (`ok state loaded`, `no …`).
pub fn readiness_text(checks: &[Check]) -> (bool, String) {
    let ready = checks.iter().all(|c| c.ok);
    let mut text = String::from(if ready { "ready\n" } else { "not ready\n" });
    for c in checks {
        text.push_str(if c.ok { "ok " } else { "no " });
        text.push_str(&c.name);
        text.push('\n');
    }
    (ready, text)
}

async fn metrics<O: Observed>(State(o): State<Arc<O>>) -> Response {
    let mut e = o.render(Exposition::new()).await;
    let ready = o.readiness().iter().all(|c| c.ok);
    e.single(
        "attach_agent_ready",
        Kind::Gauge,
        "1 once the process serves everything it should (what /ready says), else 0.",
        if ready { 1.0 } else { 0.0 },
    );
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], e.finish()).into_response()
}

async fn health() -> &'static str {
    "ok\n"
}

async fn ready<O: Observed>(State(o): State<Arc<O>>) -> Response {
    let (ready, text) = readiness_text(&o.readiness());
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, text).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_addr_is_an_address_or_empty() {
        assert_eq!(
            parse_metrics_addr("127.0.0.1:9253"),
            Ok(Some("127.0.0.1:9253".parse().unwrap()))
        );
        assert_eq!(
            parse_metrics_addr("[::1]:0"),
            Ok(Some("[::1]:0".parse().unwrap()))
        );
        assert_eq!(parse_metrics_addr(""), Ok(None));
        assert!(parse_metrics_addr("localhost:9253").is_err());
        assert!(parse_metrics_addr("127.0.0.1").is_err());
    }

    #[test]
    fn readiness_lists_every_check() {
        let checks = [
            Check {
                name: "state loaded".into(),
                ok: true,
            },
            Check {
                name: "listeners open".into(),
                ok: false,
            },
        ];
        assert_eq!(
            readiness_text(&checks),
            (
                false,
                "not ready\nok state loaded\nno listeners open\n".into()
            )
        );
    }
}
