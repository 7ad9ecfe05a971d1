//! `/networks` endpoints: list (with filters), inspect, create, remove, prune, connect and
//! disconnect; and the translation of Docker's request bodies into the core's requests.

use axum::extract::{Path as UrlPath, Query, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;

use super::filters::{check_network_filters, network_matches, parse_filters};
use super::foreground::ForegroundRuns;
use super::version::ApiVersion;
use super::{json_body, render, types, ApiError, ApiResult};
use crate::agent::{Agent, EndpointRequest, IpamRequest, NetworkCreate};
use crate::error::AgentError;

#[derive(Deserialize)]
pub(super) struct ListQuery {
    filters: Option<String>,
}

pub(super) async fn list(
    AxState(agent): AxState<Agent>,
    Extension(v): Extension<ApiVersion>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let filters = parse_filters(q.filters.as_ref())?;
    check_network_filters(&filters)?;
    let state = agent.snapshot().await;
    let mut out: Vec<_> = state
        .networks
        .values()
        .filter(|net| network_matches(&filters, net, &state))
        .map(|net| render::network_resource(net, &state, false, v))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(out).into_response())
}

pub(super) async fn inspect(
    AxState(agent): AxState<Agent>,
    Extension(v): Extension<ApiVersion>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Response> {
    let nid = agent.network_id(&id).await?;
    let state = agent.snapshot().await;
    let net = state
        .networks
        .get(&nid)
        .ok_or_else(|| ApiError::from(AgentError::NoSuchNetwork(id.clone())))?;
    Ok(Json(render::network_resource(net, &state, true, v)).into_response())
}

pub(super) async fn create(
    AxState(agent): AxState<Agent>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let req: types::NetworkCreateRequest = json_body(&body)?;
    let id = agent.create_network(network_create(req)).await?;
    Ok((
        StatusCode::CREATED,
        Json(types::NetworkCreateResponse {
            id: id.to_string(),
            warning: String::new(),
        }),
    )
        .into_response())
}

pub(super) async fn remove(
    AxState(agent): AxState<Agent>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<StatusCode> {
    agent.remove_network(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn prune(AxState(agent): AxState<Agent>) -> ApiResult<Response> {
    let names = agent.prune_networks().await?;
    Ok(Json(types::PruneResponse {
        networks_deleted: names,
    })
    .into_response())
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
        ipv4_disabled: req.enable_ipv4 == Some(false),
        labels: req.labels.unwrap_or_default(),
        options: req.options.unwrap_or_default(),
        ipam,
    }
}

/// The driver option naming the interface inside the container (Engine 28).
pub const IFNAME_OPTION: &str = "com.docker.network.endpoint.ifname";

/// An endpoint request from Docker's `EndpointSettings`: addresses, aliases, links, the
/// per-endpoint `MacAddress` (API 1.44) and the interface-name driver option.
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
        mac: Some(s.mac_address.clone()).filter(|m| !m.is_empty()),
        ifname: s
            .driver_opts
            .as_ref()
            .and_then(|o| o.get(IFNAME_OPTION))
            .cloned(),
        gw_priority: s.gw_priority.unwrap_or(0),
    }
}

pub(super) async fn connect(
    AxState(agent): AxState<Agent>,
    Extension(runs): Extension<ForegroundRuns>,
    UrlPath(id): UrlPath<String>,
    body: axum::body::Bytes,
) -> ApiResult<StatusCode> {
    let req: types::NetworkConnectRequest = json_body(&body)?;
    super::containers::note(&agent, &runs, &req.container, ForegroundRuns::touched).await;
    agent
        .connect(
            &id,
            &req.container,
            &endpoint_request(req.endpoint_config.as_ref()),
        )
        .await?;
    Ok(StatusCode::OK)
}

pub(super) async fn disconnect(
    AxState(agent): AxState<Agent>,
    Extension(runs): Extension<ForegroundRuns>,
    UrlPath(id): UrlPath<String>,
    body: axum::body::Bytes,
) -> ApiResult<StatusCode> {
    let req: types::NetworkDisconnectRequest = json_body(&body)?;
    super::containers::note(&agent, &runs, &req.container, ForegroundRuns::touched).await;
    agent.disconnect(&id, &req.container, req.force).await?;
    Ok(StatusCode::OK)
}
