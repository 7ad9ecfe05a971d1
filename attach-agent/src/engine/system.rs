//! The daemon-wide endpoints (`/_ping`, `/version`, `/info`), the Engine's 404s for object
//! kinds the agent has none of, and the 501 for everything it does not serve.

use axum::extract::{Path as UrlPath, State as AxState};
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::version::{CURRENT, MINIMUM};
use super::ApiError;
use crate::agent::Agent;

pub(super) async fn ping(method: Method) -> Response {
    let body = if method == Method::HEAD { "" } else { "OK" };
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

pub(super) async fn version() -> Response {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let v = serde_json::json!({
        "Platform": {"Name": "attach-agent"},
        "Components": [{"Name": "attach-agent", "Version": env!("CARGO_PKG_VERSION"), "Details": {}}],
        "Version": env!("CARGO_PKG_VERSION"),
        "ApiVersion": CURRENT.to_string(),
        "MinAPIVersion": MINIMUM.to_string(),
        "GitCommit": "",
        "GoVersion": "",
        "Os": "linux",
        "Arch": std::env::consts::ARCH,
        "KernelVersion": kernel.trim(),
        "BuildTime": "",
    });
    Json(v).into_response()
}

/// Objects the agent has none of: a 404 with the Engine's text, so clients that probe for them
/// (`docker inspect NAME` tries every kind) go on to the next kind.
pub(super) fn no_such(
    kind: &'static str,
) -> impl Fn(UrlPath<String>) -> std::future::Ready<ApiError> + Clone + Send + Sync + 'static {
    move |UrlPath(name): UrlPath<String>| {
        std::future::ready(ApiError(
            StatusCode::NOT_FOUND,
            match kind {
                "image" => format!("No such image: {name}"),
                "volume" => format!("get {name}: no such volume"),
                _ => format!("plugin \"{name}\" not found"),
            },
        ))
    }
}

/// The agent's own summary (`attach-agent info`): readiness and the metrics' headlines.
pub(super) async fn status(AxState(agent): AxState<Agent>) -> Response {
    Json(agent.status().await).into_response()
}

pub(super) async fn info(AxState(agent): AxState<Agent>) -> Response {
    let state = agent.snapshot().await;
    let count = |f: fn(crate::state::RunState) -> bool| {
        state.containers.values().filter(|c| f(c.state)).count()
    };
    use crate::state::RunState;
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let v = serde_json::json!({
        "ID": "",
        "Containers": state.containers.len(),
        "ContainersRunning": count(|s| s == RunState::Running),
        "ContainersPaused": count(|s| s == RunState::Paused),
        "ContainersStopped": count(|s| !s.is_up()),
        "Images": 0,
        "Driver": "",
        "Name": hostname.trim(),
        "ServerVersion": env!("CARGO_PKG_VERSION"),
        "OperatingSystem": "attach-agent",
        "OSType": "linux",
        "Architecture": std::env::consts::ARCH,
        "KernelVersion": kernel.trim(),
        "NCPU": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "DockerRootDir": agent.config().state_dir,
        "Swarm": {"LocalNodeState": "inactive", "ControlAvailable": false, "NodeID": "", "NodeAddr": ""},
        "Plugins": {"Network": ["bridge"], "Volume": [], "Log": []},
        "Labels": [],
        "Warnings": [],
    });
    Json(v).into_response()
}

/// 501 for what the agent does not serve. The request's body is read first (and dropped): a
/// client still sending it (`docker exec` posts its config) would otherwise meet a closed
/// connection and print a broken pipe instead of these words.
pub(super) async fn unsupported(method: Method, uri: Uri, _body: axum::body::Bytes) -> ApiError {
    ApiError(
        StatusCode::NOT_IMPLEMENTED,
        format!(
            "{method} {} is not supported by attach-agent: it manages container networking only (no images, exec, logs or attach)",
            uri.path()
        ),
    )
}
