//! Who may use the API: the socket's mode keeps others out, and each connection's peer
//! credentials (SO_PEERCRED) are checked too, so a loosened mode still serves only root and
//! members of the configured group.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::net::UnixListener;

use super::ApiError;

/// Who is at the other end of an API connection (SO_PEERCRED).
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub pid: Option<i32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, UnixListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, UnixListener>) -> Self {
        match stream.io().peer_cred() {
            Ok(c) => Peer {
                pid: c.pid(),
                uid: Some(c.uid()),
                gid: Some(c.gid()),
            },
            Err(_) => Peer {
                pid: None,
                uid: None,
                gid: None,
            },
        }
    }
}

/// Whether process `pid` has `gid` among its supplementary groups.
fn in_group(pid: i32, gid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("Groups:"))?.to_string();
            Some(
                line.split_whitespace()
                    .skip(1)
                    .any(|g| g.parse() == Ok(gid)),
            )
        })
        .unwrap_or(false)
}

/// The socket's mode already keeps others out; this holds even if someone loosens the mode:
/// only root, or members of the configured group, are served.
pub(super) async fn only_root_or_group(
    group: Option<u32>,
    req: Request<Body>,
    next: axum::middleware::Next,
) -> Response {
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<Peer>>()
        .map(|c| c.0);
    let allowed = match peer {
        Some(Peer { uid: Some(0), .. }) => true,
        Some(Peer {
            pid, gid: Some(g), ..
        }) => group.is_some_and(|want| g == want || pid.is_some_and(|p| in_group(p, want))),
        _ => false,
    };
    if allowed {
        next.run(req).await
    } else {
        tracing::warn!(?peer, "refused an API request from a non-root peer");
        ApiError(
            StatusCode::FORBIDDEN,
            "permission denied: the attach-agent API serves root and the configured socket group only".into(),
        )
        .into_response()
    }
}
