//! `/containers` endpoints: create (with the networks to attach at start), start, stop,
//! restart, kill, pause, unpause, wait, remove, list and inspect.

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State as AxState};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::networks::endpoint_request;
use super::{bad_request, json_body, render, types, ApiError, ApiResult};
use crate::agent::{Agent, ContainerCreate, EndpointRequest};
use crate::error::AgentError;

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

pub(super) async fn create(
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
    Ok((
        StatusCode::CREATED,
        Json(types::ContainerCreateResponse {
            id: id.to_string(),
            warnings: vec![],
        }),
    )
        .into_response())
}

pub(super) async fn action(
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
pub(super) struct RemoveQuery {
    force: Option<String>,
}

fn truthy(v: &Option<String>) -> bool {
    matches!(v.as_deref(), Some("1") | Some("true") | Some("True"))
}

pub(super) async fn remove(
    AxState(agent): AxState<Agent>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<RemoveQuery>,
) -> ApiResult<StatusCode> {
    agent.remove_container(&id, truthy(&q.force)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub(super) struct PsQuery {
    all: Option<String>,
}

pub(super) async fn list(
    AxState(agent): AxState<Agent>,
    Query(q): Query<PsQuery>,
) -> ApiResult<Response> {
    let state = agent.snapshot().await;
    let all = truthy(&q.all);
    let mut out: Vec<_> = state
        .containers
        .values()
        .filter(|c| all || c.state.is_up())
        .map(|c| render::container_summary(c, &state))
        .collect();
    out.sort_by(|a, b| b.created.cmp(&a.created).then(a.names.cmp(&b.names)));
    Ok(Json(out).into_response())
}

pub(super) async fn inspect(
    AxState(agent): AxState<Agent>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Response> {
    let cid = agent.container_id(&id).await?;
    let state = agent.snapshot().await;
    let c = state
        .containers
        .get(&cid)
        .ok_or_else(|| ApiError::from(AgentError::NoSuchContainer(id.clone())))?;
    Ok(Json(render::container_json(c, &state)).into_response())
}

#[derive(Deserialize)]
pub(super) struct WaitQuery {
    condition: Option<String>,
}

/// `POST /containers/{id}/wait`: answers when the container is not running (`not-running`,
/// the default), after its next stop (`next-exit`), or once removed (`removed`).
pub(super) async fn wait(
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
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}
