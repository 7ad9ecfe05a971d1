//! The Docker Engine API on the agent's unix socket: the network endpoints, and the container
//! endpoints that networking needs. Handlers only translate JSON to [`Agent`] calls and back.

pub mod types;

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State as AxState};
use axum::http::{header, HeaderValue, Method, Request, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router, ServiceExt};
use serde::Deserialize;
use tokio::net::UnixListener;
use tower::Layer;

use crate::agent::{Agent, ContainerCreate, EndpointRequest, IpamRequest, NetworkCreate};
use crate::error::AgentError;
use types::ErrorResponse;

/// The API version we speak (Docker Engine 20.10), and the oldest we accept.
pub const API_VERSION: &str = "1.41";
pub const MIN_API_VERSION: &str = "1.12";

/// An error as the Engine sends it: `{"message": …}` with its status code.
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

/// Serve the API on `socket` until the task is dropped. The socket is made mode 0660.
pub async fn serve(agent: Agent, socket: &Path, group: Option<u32>) -> std::io::Result<()> {
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
    let app = router(agent).layer(axum::middleware::from_fn(move |req, next| {
        only_root_or_group(group, req, next)
    }));
    let app = tower::util::MapRequestLayer::new(strip_version).layer(app);
    axum::serve(listener, app.into_make_service_with_connect_info::<Peer>()).await
}

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
async fn only_root_or_group(
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

/// `/v1.41/networks` → `/networks`: every route answers with and without a version prefix.
fn strip_version(mut req: Request<Body>) -> Request<Body> {
    tracing::debug!(method = %req.method(), uri = %req.uri(), "request");
    let path = req.uri().path();
    if let Some(rest) = path.strip_prefix("/v") {
        if let Some(slash) = rest.find('/') {
            let version = &rest[..slash];
            if version.contains('.') && version.chars().all(|c| c.is_ascii_digit() || c == '.') {
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
    req
}

pub fn router(agent: Agent) -> Router {
    Router::new()
        .route("/_ping", get(ping).head(ping))
        .route("/version", get(version))
        .route("/networks", get(list_networks))
        .route("/networks/create", post(create_network))
        .route("/networks/prune", post(prune_networks))
        .route(
            "/networks/{id}",
            get(inspect_network).delete(remove_network),
        )
        .route("/networks/{id}/connect", post(connect))
        .route("/networks/{id}/disconnect", post(disconnect))
        .route("/containers/create", post(create_container))
        .route("/containers/json", get(list_containers))
        .route("/containers/{id}/json", get(inspect_container))
        .route("/containers/{id}/wait", post(wait_container))
        .route("/info", get(info))
        .route("/images/{name}/json", get(no_such("image")))
        .route("/volumes/{name}", get(no_such("volume")))
        .route("/plugins/{name}/json", get(no_such("plugin")))
        .route("/containers/{id}/{action}", post(container_action))
        .route("/containers/{id}", axum::routing::delete(remove_container))
        .fallback(unsupported)
        .with_state(agent)
}

fn engine_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert("Api-Version", HeaderValue::from_static(API_VERSION));
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

async fn ping(method: Method) -> Response {
    let body = if method == Method::HEAD { "" } else { "OK" };
    engine_headers(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
}

async fn version() -> Response {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let v = serde_json::json!({
        "Platform": {"Name": "attach-agent"},
        "Components": [{"Name": "attach-agent", "Version": env!("CARGO_PKG_VERSION"), "Details": {}}],
        "Version": env!("CARGO_PKG_VERSION"),
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "",
        "GoVersion": "",
        "Os": "linux",
        "Arch": std::env::consts::ARCH,
        "KernelVersion": kernel.trim(),
        "BuildTime": "",
    });
    engine_headers(Json(v).into_response())
}

/// Objects the agent has none of: a 404 with the Engine's text, so clients that probe for them
/// (`docker inspect NAME` tries every kind) go on to the next kind.
fn no_such(
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

async fn info(AxState(agent): AxState<Agent>) -> Response {
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
    engine_headers(Json(v).into_response())
}

#[derive(Deserialize)]
struct WaitQuery {
    condition: Option<String>,
}

/// `POST /containers/{id}/wait`: answers when the container is not running (`not-running`,
/// the default), after its next stop (`next-exit`), or once removed (`removed`).
async fn wait_container(
    AxState(agent): AxState<Agent>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<WaitQuery>,
) -> ApiResult<Response> {
    let cid = agent.container_id(&id).await?;
    let condition = q.condition.unwrap_or_else(|| "not-running".into());
    if !["not-running", "next-exit", "removed"].contains(&condition.as_str()) {
        return Err(bad_request(format!("invalid condition: {condition:?}")));
    }
    let mut changes = agent.subscribe();
    let first_since = agent
        .snapshot()
        .await
        .containers
        .get(&cid)
        .map(|c| c.state_since.clone());
    // The Engine sends the headers at once and the body when the condition holds; clients
    // (docker run) wait for the headers before they go on to start the container.
    let done = async move {
        loop {
            let state = agent.snapshot().await;
            let done = match (state.containers.get(&cid), condition.as_str()) {
                (None, _) => true,
                (Some(c), "not-running") => !c.state.is_up(),
                (Some(c), "next-exit") => {
                    c.state == crate::state::RunState::Exited
                        && Some(&c.state_since) != first_since.as_ref()
                }
                _ => false,
            };
            if done || changes.changed().await.is_err() {
                let body = serde_json::json!({"StatusCode": 0, "Error": null}).to_string();
                return Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(body + "\n"));
            }
        }
    };
    let body = Body::from_stream(futures::stream::once(done));
    Ok(engine_headers(
        ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
    ))
}

async fn unsupported(method: Method, uri: Uri) -> ApiError {
    ApiError(
        StatusCode::NOT_IMPLEMENTED,
        format!(
            "{method} {} is not supported by attach-agent: it manages container networking only (no images, exec, logs or attach)",
            uri.path()
        ),
    )
}

// ---- filters --------------------------------------------------------------------------

/// Docker's `filters` query parameter: `{"name":{"x":true}}` or the older `{"name":["x"]}`.
fn parse_filters(raw: Option<&String>) -> ApiResult<HashMap<String, Vec<String>>> {
    let Some(raw) = raw.filter(|r| !r.is_empty()) else {
        return Ok(HashMap::new());
    };
    let v: serde_json::Value =
        serde_json::from_str(raw).map_err(|e| bad_request(format!("invalid filter: {e}")))?;
    let mut out = HashMap::new();
    let obj = v
        .as_object()
        .ok_or_else(|| bad_request("invalid filter: not an object"))?;
    for (k, vals) in obj {
        let list: Vec<String> = match vals {
            serde_json::Value::Object(m) => m.keys().cloned().collect(),
            serde_json::Value::Array(a) => a
                .iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect(),
            _ => return Err(bad_request(format!("invalid filter '{k}'"))),
        };
        out.insert(k.clone(), list);
    }
    Ok(out)
}

fn label_matches(labels: &BTreeMap<String, String>, want: &str) -> bool {
    match want.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
        None => labels.contains_key(want),
    }
}

// ---- networks -------------------------------------------------------------------------

#[derive(Deserialize)]
struct ListQuery {
    filters: Option<String>,
}

async fn list_networks(
    AxState(agent): AxState<Agent>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let filters = parse_filters(q.filters.as_ref())?;
    for k in filters.keys() {
        if !["name", "id", "label", "driver", "type", "dangling", "scope"].contains(&k.as_str()) {
            return Err(bad_request(format!("invalid filter '{k}'")));
        }
    }
    let state = agent.snapshot().await;
    let mut out = Vec::new();
    for net in state.networks.values() {
        let ok = filters.iter().all(|(k, vals)| {
            vals.is_empty()
                || vals.iter().any(|v| match k.as_str() {
                    "name" => net.name.contains(v.as_str()),
                    "id" => net.id.starts_with(v.as_str()),
                    "label" => label_matches(&net.labels, v),
                    "driver" => net.driver == *v,
                    "type" => v == "custom",
                    "scope" => v == net.scope(),
                    "dangling" => {
                        let used = state
                            .containers
                            .values()
                            .any(|c| c.endpoint(&net.id).is_some());
                        (v == "true" || v == "1") != used
                    }
                    _ => false,
                })
        });
        if ok {
            out.push(types::network_resource(net, &state, false));
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(engine_headers(Json(out).into_response()))
}

async fn inspect_network(
    AxState(agent): AxState<Agent>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Response> {
    let nid = agent.network_id(&id).await?;
    let state = agent.snapshot().await;
    let net = state
        .networks
        .get(&nid)
        .ok_or_else(|| ApiError::from(AgentError::NoSuchNetwork(id.clone())))?;
    Ok(engine_headers(
        Json(types::network_resource(net, &state, true)).into_response(),
    ))
}

async fn create_network(
    AxState(agent): AxState<Agent>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let req: types::NetworkCreateRequest = json_body(&body)?;
    let id = agent.create_network(network_create(req)).await?;
    Ok(engine_headers(
        (
            StatusCode::CREATED,
            Json(types::NetworkCreateResponse {
                id,
                warning: String::new(),
            }),
        )
            .into_response(),
    ))
}

async fn remove_network(
    AxState(agent): AxState<Agent>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<StatusCode> {
    agent.remove_network(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn prune_networks(AxState(agent): AxState<Agent>) -> ApiResult<Response> {
    let names = agent.prune_networks().await?;
    Ok(engine_headers(
        Json(types::PruneResponse {
            networks_deleted: names,
        })
        .into_response(),
    ))
}

/// A `network create` from Docker's request body.
pub fn network_create(req: types::NetworkCreateRequest) -> NetworkCreate {
    let ipam = req
        .ipam
        .as_ref()
        .and_then(|i| i.config.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|c| IpamRequest {
            subnet: c.subnet,
            ip_range: c.ip_range,
            gateway: c.gateway,
        })
        .collect();
    NetworkCreate {
        name: req.name,
        driver: Some(req.driver),
        internal: req.internal,
        attachable: req.attachable,
        enable_ipv6: req.enable_ipv6.unwrap_or(false),
        labels: req.labels.unwrap_or_default(),
        options: req.options.unwrap_or_default(),
        ipam,
    }
}

/// An endpoint request from Docker's `EndpointSettings`.
pub fn endpoint_request(s: Option<&types::EndpointSettings>) -> EndpointRequest {
    let Some(s) = s else {
        return EndpointRequest::default();
    };
    let ipam = s.ipam_config.clone().unwrap_or_default();
    EndpointRequest {
        aliases: s.aliases.clone().unwrap_or_default(),
        links: s.links.clone().unwrap_or_default(),
        ipv4: ipam.ipv4_address,
        ipv6: ipam.ipv6_address,
        link_local: ipam.link_local_ips.unwrap_or_default(),
    }
}

async fn connect(
    AxState(agent): AxState<Agent>,
    UrlPath(id): UrlPath<String>,
    body: axum::body::Bytes,
) -> ApiResult<StatusCode> {
    let req: types::NetworkConnectRequest = json_body(&body)?;
    agent
        .connect(
            &id,
            &req.container,
            &endpoint_request(req.endpoint_config.as_ref()),
        )
        .await?;
    Ok(StatusCode::OK)
}

async fn disconnect(
    AxState(agent): AxState<Agent>,
    UrlPath(id): UrlPath<String>,
    body: axum::body::Bytes,
) -> ApiResult<StatusCode> {
    let req: types::NetworkDisconnectRequest = json_body(&body)?;
    agent.disconnect(&id, &req.container, req.force).await?;
    Ok(StatusCode::OK)
}

// ---- containers -----------------------------------------------------------------------

#[derive(Deserialize)]
struct CreateQuery {
    name: Option<String>,
}

/// The networks a `container create` attaches at start, in order: `--network` first, then
/// `EndpointsConfig`. Docker's predefined modes are not networks here: "default" and "bridge"
/// mean the network named "bridge" if one was created (`has_bridge`), none otherwise.
pub fn container_networks(
    req: &types::ContainerCreateRequest,
    has_bridge: bool,
) -> ApiResult<Vec<(String, EndpointRequest)>> {
    let predefined = |k: &str| match k {
        "default" | "bridge" => !has_bridge,
        "none" | "host" | "" => true,
        _ => false,
    };
    let mut networks: Vec<(String, EndpointRequest)> = req
        .networking_config
        .as_ref()
        .map(|n| {
            n.endpoints_config
                .iter()
                .filter(|(k, _)| !predefined(k))
                .map(|(k, v)| (k.clone(), endpoint_request(Some(v))))
                .collect()
        })
        .unwrap_or_default();
    let mode = req
        .host_config
        .as_ref()
        .map(|h| h.network_mode.clone())
        .unwrap_or_default();
    let mode = match mode.as_str() {
        "default" if has_bridge => "bridge".to_string(),
        _ => mode,
    };
    match mode.as_str() {
        m if predefined(m) => {}
        m if m.starts_with("container:") || m == "host" => {
            return Err(ApiError(
                StatusCode::NOT_IMPLEMENTED,
                format!("network mode {m} is not supported by attach-agent"),
            ))
        }
        m => {
            // `--network NAME`: that network first, whatever EndpointsConfig says.
            if let Some(pos) = networks.iter().position(|(k, _)| k == m) {
                let first = networks.remove(pos);
                networks.insert(0, first);
            } else {
                networks.insert(0, (m.to_string(), EndpointRequest::default()));
            }
        }
    }
    Ok(networks)
}

async fn create_container(
    AxState(agent): AxState<Agent>,
    Query(q): Query<CreateQuery>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let req: types::ContainerCreateRequest = json_body(&body)?;
    let has_bridge = agent.network_id("bridge").await.is_ok();
    let networks = container_networks(&req, has_bridge)?;
    // A 404 from create makes the docker client try to pull the image: a missing network is
    // a bad request here, so the client prints the daemon's message instead.
    let id = agent
        .create_container(ContainerCreate {
            name: q.name.filter(|n| !n.is_empty()),
            hostname: Some(req.hostname).filter(|h| !h.is_empty()),
            image: req.image,
            netns: req.netns.map(Into::into),
            labels: req.labels.unwrap_or_default(),
            networks,
        })
        .await
        .map_err(|e| match e {
            AgentError::NoSuchNetwork(_) => ApiError(StatusCode::BAD_REQUEST, e.to_string()),
            e => e.into(),
        })?;
    Ok(engine_headers(
        (
            StatusCode::CREATED,
            Json(types::ContainerCreateResponse {
                id,
                warnings: vec![],
            }),
        )
            .into_response(),
    ))
}

async fn container_action(
    AxState(agent): AxState<Agent>,
    UrlPath((id, action)): UrlPath<(String, String)>,
) -> ApiResult<StatusCode> {
    match action.as_str() {
        "start" => agent.start(&id).await?,
        "stop" | "kill" => agent.stop(&id).await?,
        "restart" => agent.restart(&id).await?,
        "pause" => agent.pause(&id, true).await?,
        "unpause" => agent.pause(&id, false).await?,
        other => {
            return Err(ApiError(
                StatusCode::NOT_IMPLEMENTED,
                format!("POST /containers/{{id}}/{other} is not supported by attach-agent"),
            ))
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct RemoveQuery {
    force: Option<String>,
}

fn truthy(v: &Option<String>) -> bool {
    matches!(v.as_deref(), Some("1") | Some("true") | Some("True"))
}

async fn remove_container(
    AxState(agent): AxState<Agent>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<RemoveQuery>,
) -> ApiResult<StatusCode> {
    agent.remove_container(&id, truthy(&q.force)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct PsQuery {
    all: Option<String>,
}

async fn list_containers(
    AxState(agent): AxState<Agent>,
    Query(q): Query<PsQuery>,
) -> ApiResult<Response> {
    let state = agent.snapshot().await;
    let all = truthy(&q.all);
    let mut out: Vec<_> = state
        .containers
        .values()
        .filter(|c| all || c.state.is_up())
        .map(|c| types::container_summary(c, &state))
        .collect();
    out.sort_by(|a, b| b.created.cmp(&a.created).then(a.names.cmp(&b.names)));
    Ok(engine_headers(Json(out).into_response()))
}

async fn inspect_container(
    AxState(agent): AxState<Agent>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Response> {
    let cid = agent.container_id(&id).await?;
    let state = agent.snapshot().await;
    let c = state
        .containers
        .get(&cid)
        .ok_or_else(|| ApiError::from(AgentError::NoSuchContainer(id.clone())))?;
    Ok(engine_headers(
        Json(types::container_json(c, &state)).into_response(),
    ))
}
