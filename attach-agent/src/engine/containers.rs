//! `/containers` endpoints: create (with the networks to attach at start), start, stop,
//! restart, kill, pause, unpause, wait, remove, list and inspect.

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State as AxState};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;

use super::foreground::{ForegroundRuns, Inspect};
use super::networks::endpoint_request;
use super::version::{self, ApiVersion};
use super::{bad_request, json_body, render, types, ApiError, ApiResult};
use crate::agent::{Agent, ContainerCreate, ContainerDnsRequest, EndpointRequest};
use crate::error::AgentError;
use crate::ids::ContainerId;

#[derive(Deserialize)]
pub(super) struct CreateQuery {
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

/// The container-wide `MacAddress` (deprecated in 1.44) goes to the endpoint of the main
/// network, the one `HostConfig.NetworkMode` names, with the Engine's rules and words: it
/// must have one, and an endpoint MAC there must be the same. Before 1.44 endpoints' own
/// MACs are not part of the API, and are dropped as the Engine drops them. The warnings to
/// return.
fn apply_container_mac(
    req: &types::ContainerCreateRequest,
    networks: &mut [(String, EndpointRequest)],
    has_bridge: bool,
    v: ApiVersion,
) -> ApiResult<Vec<String>> {
    if !v.at_least(version::ENDPOINT_MAC) {
        for (_, ep) in networks.iter_mut() {
            ep.mac = None;
        }
    }
    let wide = req.mac_address.trim();
    if wide.is_empty() {
        return Ok(vec![]);
    }
    let mode = req
        .host_config
        .as_ref()
        .map(|h| h.network_mode.as_str())
        .unwrap_or_default();
    let main = match mode {
        "default" | "bridge" if has_bridge => "bridge",
        m => m,
    };
    if networks.is_empty() {
        // No network to give it to (no `bridge` network here, or `--network none`): the
        // create goes ahead, as with Docker 20.10, and says so.
        return Ok(vec![format!(
            "the container-wide MacAddress {wide} is not used: the container has no network"
        )]);
    }
    let Some((_, ep)) = networks.first_mut().filter(|(name, _)| name == main) else {
        return Err(bad_request(
            "if a container-wide MAC address is supplied, HostConfig.NetworkMode must match the identity of a network in NetworkSettings.Networks",
        ));
    };
    let same =
        |a: &str| crate::mac::parse(a).is_some() && crate::mac::parse(a) == crate::mac::parse(wide);
    match ep.mac.as_deref().map(str::trim).filter(|m| !m.is_empty()) {
        Some(m) if !same(m) => {
            return Err(bad_request(
                "the container-wide MAC address must match the endpoint-specific MAC address for the main network, or be left empty",
            ))
        }
        _ => ep.mac = Some(wide.to_string()),
    }
    Ok(if v.at_least(version::ENDPOINT_MAC) {
        vec!["The container-wide MacAddress field is now deprecated. It should be specified in EndpointsConfig instead.".into()]
    } else {
        vec![]
    })
}

pub(super) async fn create(
    AxState(agent): AxState<Agent>,
    Extension(v): Extension<ApiVersion>,
    Extension(runs): Extension<ForegroundRuns>,
    Query(q): Query<CreateQuery>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let req: types::ContainerCreateRequest = json_body(&body)?;
    let has_bridge = agent.network_id("bridge").await.is_ok();
    let mut networks = container_networks(&req, has_bridge)?;
    let warnings = apply_container_mac(&req, &mut networks, has_bridge, v)?;
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
            dns: req
                .host_config
                .map(|h| ContainerDnsRequest {
                    servers: h.dns.unwrap_or_default(),
                    search: h.dns_search.unwrap_or_default(),
                    options: h.dns_options.unwrap_or_default(),
                    extra_hosts: h.extra_hosts.unwrap_or_default(),
                })
                .unwrap_or_default(),
        })
        .await
        .map_err(|e| match e {
            AgentError::NoSuchNetwork(_) => ApiError(StatusCode::BAD_REQUEST, e.to_string()),
            e => e.into(),
        })?;
    runs.created(&id, req.attach_stdout || req.attach_stderr);
    Ok((
        StatusCode::CREATED,
        Json(types::ContainerCreateResponse {
            id: id.to_string(),
            warnings,
        }),
    )
        .into_response())
}

/// Tell the foreground-run watch that container `key` was asked about (`how`), when any is
/// watched (the lookup is skipped otherwise).
pub(super) async fn note(
    agent: &Agent,
    runs: &ForegroundRuns,
    key: &str,
    how: fn(&ForegroundRuns, &ContainerId),
) {
    if runs.any() {
        if let Ok(cid) = agent.container_id(key).await {
            how(runs, &cid);
        }
    }
}

pub(super) async fn action(
    AxState(agent): AxState<Agent>,
    Extension(runs): Extension<ForegroundRuns>,
    UrlPath((id, action)): UrlPath<(String, String)>,
) -> ApiResult<StatusCode> {
    if action == "start" && runs.any() {
        if let Ok(cid) = agent.container_id(&id).await {
            if runs.starts_foreground_run(&cid) {
                return Err(undo_foreground_run(&agent, &cid).await);
            }
        }
    } else {
        note(&agent, &runs, &id, ForegroundRuns::touched).await;
    }
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
pub(super) struct RemoveQuery {
    force: Option<String>,
}

fn truthy(v: &Option<String>) -> bool {
    matches!(v.as_deref(), Some("1") | Some("true") | Some("True"))
}

pub(super) async fn remove(
    AxState(agent): AxState<Agent>,
    Extension(runs): Extension<ForegroundRuns>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<RemoveQuery>,
) -> ApiResult<StatusCode> {
    note(&agent, &runs, &id, ForegroundRuns::touched).await;
    agent.remove_container(&id, truthy(&q.force)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub(super) struct PsQuery {
    all: Option<String>,
}

pub(super) async fn list(
    AxState(agent): AxState<Agent>,
    Extension(v): Extension<ApiVersion>,
    Query(q): Query<PsQuery>,
) -> ApiResult<Response> {
    let state = agent.snapshot().await;
    let all = truthy(&q.all);
    let mut out: Vec<_> = state
        .containers
        .values()
        .filter(|c| all || c.state.is_up())
        .map(|c| render::container_summary(c, &state, v))
        .collect();
    out.sort_by(|a, b| b.created.cmp(&a.created).then(a.names.cmp(&b.names)));
    Ok(Json(out).into_response())
}

pub(super) async fn inspect(
    AxState(agent): AxState<Agent>,
    Extension(v): Extension<ApiVersion>,
    Extension(runs): Extension<ForegroundRuns>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Response> {
    let cid = agent.container_id(&id).await?;
    let then = runs.inspected(&cid);
    let state = agent.snapshot().await;
    let c = state
        .containers
        .get(&cid)
        .ok_or_else(|| ApiError::from(AgentError::NoSuchContainer(id.clone())))?;
    let answer = Json(render::container_json(c, &state, v)).into_response();
    if then == Inspect::EndRun {
        agent.remove_container(cid.as_str(), true).await?;
    }
    Ok(answer)
}

#[derive(Deserialize)]
pub(super) struct WaitQuery {
    condition: Option<String>,
}

/// `POST /containers/{id}/wait`: answers when the container is not running (`not-running`,
/// the default), after its next stop (`next-exit`), or once removed (`removed`).
pub(super) async fn wait(
    AxState(agent): AxState<Agent>,
    Extension(runs): Extension<ForegroundRuns>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<WaitQuery>,
) -> ApiResult<Response> {
    let cid = agent.container_id(&id).await?;
    let condition = q.condition.unwrap_or_else(|| "not-running".into());
    if !["not-running", "next-exit", "removed"].contains(&condition.as_str()) {
        return Err(bad_request(format!("invalid condition: {condition:?}")));
    }
    runs.waited(&cid);
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
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

#[derive(Deserialize)]
pub(super) struct LogsQuery {
    follow: Option<String>,
    stderr: Option<String>,
}

/// `GET /containers/{id}/logs`: the agent runs no processes, so there are none; 501. When
/// the request follows the logs right after the SDK's create, inspect and start, it ends a
/// run in the foreground that cannot happen: its container is removed (`super::foreground`).
pub(super) async fn logs(
    AxState(agent): AxState<Agent>,
    Extension(runs): Extension<ForegroundRuns>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<LogsQuery>,
) -> ApiError {
    let cid = match agent.container_id(&id).await {
        Ok(cid) => cid,
        Err(e) => return e.into(),
    };
    // The SDK's run follows stdout alone (its default, `stderr=0`); a program's own
    // `logs(follow=True)` right after its create and start asks for both, and keeps its
    // container.
    let stdout_only = matches!(q.stderr.as_deref(), Some("0" | "false" | "False"));
    let runs_logs = truthy(&q.follow) && stdout_only;
    if runs_logs && runs.follows_logs(&cid) {
        return ApiError(
            StatusCode::NOT_IMPLEMENTED,
            format!(
                "attach-agent runs no processes, so container {} cannot run in the foreground: the container made for this run is removed. {RUN_DETACHED}",
                container_name(&agent, &cid).await
            ),
        );
    }
    runs.touched(&cid);
    no_output(&id)
}

/// `POST /containers/{id}/attach`. Right after the container's create (`docker run` without
/// `-d`), the connection is taken over and held open, empty, until the run's start is refused
/// (the docker client prints the start's message, never an attach's); otherwise 501.
pub(super) async fn attach(
    AxState(agent): AxState<Agent>,
    Extension(runs): Extension<ForegroundRuns>,
    UrlPath(id): UrlPath<String>,
    mut req: axum::extract::Request,
) -> Response {
    let cid = match agent.container_id(&id).await {
        Ok(cid) => cid,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let upgrade = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>();
    let (Some(upgrade), Some(closed)) = (upgrade, runs.attach(&cid)) else {
        runs.touched(&cid);
        return no_output(&id).into_response();
    };
    tokio::spawn(async move {
        if let Ok(stream) = upgrade.await {
            // Held until the run's start is refused or the watch ends; a client that never
            // starts does not hold it for long.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(60), closed).await;
            drop(stream);
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "tcp")
        .header(header::CONTENT_TYPE, "application/vnd.docker.raw-stream")
        .body(Body::empty())
        .unwrap_or_else(|_| no_output(&id).into_response())
}

fn no_output(key: &str) -> ApiError {
    ApiError(
        StatusCode::NOT_IMPLEMENTED,
        format!(
            "attach-agent runs no processes, so container {key} has no output to attach to or read"
        ),
    )
}

const RUN_DETACHED: &str = "Run it detached: docker run -d, or detach=True in the Docker SDK";

async fn container_name(agent: &Agent, cid: &ContainerId) -> String {
    agent
        .snapshot()
        .await
        .containers
        .get(cid)
        .map_or_else(|| cid.to_string(), |c| c.name.clone())
}

/// End `docker run`'s run in the foreground at its start: its container is removed, and the
/// client told why.
async fn undo_foreground_run(agent: &Agent, cid: &ContainerId) -> ApiError {
    let name = container_name(agent, cid).await;
    if let Err(e) = agent.remove_container(cid.as_str(), true).await {
        return e.into();
    }
    ApiError(
        StatusCode::NOT_IMPLEMENTED,
        format!(
            "attach-agent runs no processes, so container {name} cannot run in the foreground; it was removed. {RUN_DETACHED}"
        ),
    )
}
