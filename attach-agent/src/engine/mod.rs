//! The Docker Engine API on the agent's unix socket: the network endpoints, and the container
//! endpoints that networking needs. Handlers only translate JSON to [`Agent`] calls and back.
//!
//! [`types`] holds the JSON shapes (Docker's field names), [`render`] turns the model into them,
//! `networks` and `containers` the handlers, [`filters`] the `filters` parameter, `auth` who may
//! connect, `system` ping/version/info and the answers for what is not served. Every response
//! carries the Engine's headers, set by one layer.

mod auth;
mod containers;
pub mod filters;
mod foreground;
mod networks;
pub mod render;
mod system;
pub mod types;
pub mod version;

pub use auth::Peer;
pub use containers::container_networks;
pub use networks::{endpoint_request, network_create};

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router, ServiceExt};
use serde::Deserialize;
use tokio::net::UnixListener;
use tower::Layer;

use crate::agent::Agent;
use crate::error::AgentError;
use types::ErrorResponse;

/// An error as the Engine sends it: `{"message": …}` with its status code.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl From<AgentError> for ApiError {
    fn from(e: AgentError) -> Self {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %e, "request failed");
        }
        ApiError(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorResponse { message: self.1 })).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

fn bad_request(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

/// Parse a JSON body ourselves, so a bad one gets the Engine's 400 `{"message"}`.
pub fn json_body<T: for<'de> Deserialize<'de> + Default>(body: &[u8]) -> ApiResult<T> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| bad_request(format!("invalid JSON: {e}")))
}

/// Serve `app` (the Engine API's [`router`], and whatever other front the daemon merges in) on
/// `socket` until the task is dropped, behind the access check and with version prefixes
/// stripped. The socket is made mode 0660.
pub async fn serve(app: Router, socket: &Path, group: Option<u32>) -> std::io::Result<()> {
    serve_on(app, bind(socket, group)?, group).await
}

/// Make the API socket (mode 0660, owned by root and `group`), replacing a stale one.
pub fn bind(socket: &Path, group: Option<u32>) -> std::io::Result<UnixListener> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(socket)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))?;
    if let Some(gid) = group {
        std::os::unix::fs::chown(socket, Some(0), Some(gid))?;
    }
    Ok(listener)
}

/// Serve the Engine API (and whatever `app` routes) on `listener`, for root and `group`.
pub async fn serve_on(
    app: Router,
    listener: UnixListener,
    group: Option<u32>,
) -> std::io::Result<()> {
    let app = app.layer(axum::middleware::from_fn(move |req, next| {
        auth::only_root_or_group(group, req, next)
    }));
    let app = tower::util::MapRequestLayer::new(strip_version).layer(app);
    axum::serve(listener, app.into_make_service_with_connect_info::<Peer>()).await
}

/// `/v1.41/networks` → `/networks`: every route answers with and without a version prefix;
/// the version asked for goes along with the request ([`version::Asked`]) for
/// [`version::check`] to judge.
fn strip_version(mut req: Request<Body>) -> Request<Body> {
    tracing::debug!(method = %req.method(), uri = %req.uri(), "request");
    let path = req.uri().path();
    let mut asked = None;
    if let Some(rest) = path.strip_prefix("/v") {
        if let Some(slash) = rest.find('/') {
            let text = &rest[..slash];
            if text.contains('.') && text.chars().all(|c| c.is_ascii_digit() || c == '.') {
                asked = Some(version::ApiVersion::parse(text).ok_or(()));
                let new_path = rest[slash..].to_string();
                let pq = match req.uri().query() {
                    Some(q) => format!("{new_path}?{q}"),
                    None => new_path,
                };
                if let Ok(uri) = pq.parse::<Uri>() {
                    *req.uri_mut() = uri;
                }
            }
        }
    }
    req.extensions_mut().insert(version::Asked(asked));
    req
}

pub fn router(agent: Agent) -> Router {
    use system::{info, no_such, ping, unsupported, version};
    Router::new()
        .route("/_ping", get(ping).head(ping))
        .route("/version", get(version))
        .route("/info", get(info))
        .route("/attach-agent/v1/status", get(system::status))
        .route("/networks", get(networks::list))
        .route("/networks/create", post(networks::create))
        .route("/networks/prune", post(networks::prune))
        .route(
            "/networks/{id}",
            get(networks::inspect).delete(networks::remove),
        )
        .route("/networks/{id}/connect", post(networks::connect))
        .route("/networks/{id}/disconnect", post(networks::disconnect))
        .route("/containers/create", post(containers::create))
        .route("/containers/json", get(containers::list))
        .route("/containers/{id}/json", get(containers::inspect))
        .route("/containers/{id}/wait", post(containers::wait))
        .route("/containers/{id}/logs", get(containers::logs))
        .route("/containers/{id}/attach", post(containers::attach))
        .route("/images/{name}/json", get(no_such("image")))
        .route("/volumes/{name}", get(no_such("volume")))
        .route("/plugins/{name}/json", get(no_such("plugin")))
        .route("/containers/{id}/{action}", post(containers::action))
        .route(
            "/containers/{id}",
            axum::routing::delete(containers::remove),
        )
        .fallback(unsupported)
        .layer(axum::Extension(foreground::ForegroundRuns::default()))
        .layer(axum::middleware::from_fn(version::check))
        .layer(axum::middleware::map_response(engine_headers))
        .with_state(agent)
}

/// The headers the Engine puts on every response; set here once, by a layer.
async fn engine_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        "Api-Version",
        HeaderValue::from_static(version::CURRENT_TEXT),
    );
    h.insert("Ostype", HeaderValue::from_static("linux"));
    h.insert("Docker-Experimental", HeaderValue::from_static("false"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(
        header::SERVER,
        HeaderValue::from_static(concat!("attach-agent/", env!("CARGO_PKG_VERSION"))),
    );
    r
}
