//! The daemon's side of the plugin: `POST /cni/v1/call` with a [`PluginCall`], answered with
//! the CNI result (ADD) or an empty object, or a CNI error object. Everything the runtime sent
//! is checked here or in the core before it reaches a path, a file or the kernel.

use std::net::IpAddr;
use std::path::PathBuf;

use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::spec::{
    parse_args, parse_mac, version_result, AddResult, CniError, Code, Command, NetConf, PluginCall,
    ResultIp, PLUGIN_VERSION,
};
use crate::agent::{Agent, RuntimeAttach};
use crate::error::AgentError;
use crate::ipam::IpamError;

/// The CNI routes, for the daemon's socket beside the Engine API.
pub fn router(agent: Agent) -> Router {
    Router::new()
        .route("/cni/v1/call", post(call))
        .with_state(agent)
}

async fn call(AxState(agent): AxState<Agent>, body: Bytes) -> Response {
    let call: PluginCall = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return failure(CniError::new(
                Code::Decode,
                format!("cannot decode the plugin's request: {e}"),
            ))
        }
    };
    let version = call
        .config
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or(PLUGIN_VERSION)
        .to_string();
    match handle(&agent, call).await {
        Ok(v) => (StatusCode::OK, Json(v)).into_response(),
        Err(e) => failure(e.in_version(&version)),
    }
}

fn failure(e: CniError) -> Response {
    let status = match e.code {
        c if c == Code::Io as u32 => StatusCode::INTERNAL_SERVER_ERROR,
        c if c == Code::TryAgainLater as u32 || c == Code::NotAvailable as u32 => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::BAD_REQUEST,
    };
    (status, Json(e)).into_response()
}

/// The CNI code of a core error, with the core's message (it names what to fix).
fn cni_error(e: AgentError) -> CniError {
    let code = match &e {
        AgentError::NoSuchNetwork(_) => Code::InvalidConfig,
        AgentError::NoSuchContainer(_) => Code::UnknownContainer,
        AgentError::Ipam(IpamError::InUse) => Code::AddressInUse,
        AgentError::ContainerExists { .. } => Code::NameInUse,
        AgentError::Netlink(_) | AgentError::Io { .. } | AgentError::Dns(_) => Code::Io,
        AgentError::Cluster(_) => Code::TryAgainLater,
        _ => Code::InvalidConfig,
    };
    let msg = match &e {
        AgentError::NoSuchNetwork(n) => {
            format!("network {n} not found: create it first (attach-agent network create {n})")
        }
        e => e.to_string(),
    };
    CniError::new(code, msg)
}

fn require(what: &str, value: &str) -> Result<(), CniError> {
    if value.is_empty() {
        Err(CniError::new(
            Code::InvalidEnvironment,
            format!("{what} is not set"),
        ))
    } else {
        Ok(())
    }
}

async fn handle(agent: &Agent, call: PluginCall) -> Result<Value, CniError> {
    if call.command == Command::Version {
        return Ok(version_result());
    }
    let conf = NetConf::from_value(&call.config)?;
    match call.command {
        Command::Version => Ok(version_result()),
        Command::Status => {
            agent
                .network_id(&conf.name)
                .await
                .map_err(|e| CniError::new(Code::NotAvailable, cni_error(e).msg))?;
            Ok(json!({}))
        }
        Command::Add => {
            let req = attach_request(&call, &conf)?;
            let a = agent.runtime_attach(req).await.map_err(cni_error)?;
            let result = AddResult {
                ifname: a.ifname,
                mac: a.mac,
                sandbox: a.sandbox.display().to_string(),
                ips: a
                    .addresses
                    .iter()
                    .map(|&(address, prefix_len, gateway)| ResultIp {
                        address,
                        prefix_len,
                        gateway,
                    })
                    .collect(),
                default_routes: if a.default_route {
                    a.addresses.iter().map(|&(_, _, gw)| gw).collect()
                } else {
                    Vec::new()
                },
                nameservers: a.nameservers,
            };
            Ok(result.render(&conf.cni_version))
        }
        Command::Del => {
            require("CNI_CONTAINERID", &call.container_id)?;
            agent
                .runtime_detach(&call.container_id, &conf.name, &call.ifname)
                .await
                .map_err(cni_error)?;
            Ok(json!({}))
        }
        Command::Check => {
            require("CNI_CONTAINERID", &call.container_id)?;
            require("CNI_IFNAME", &call.ifname)?;
            agent
                .runtime_check(&call.container_id, &conf.name, &call.ifname)
                .await
                .map_err(cni_error)?;
            Ok(json!({}))
        }
        Command::Gc => {
            let valid: Vec<(String, String)> = conf
                .valid_attachments
                .iter()
                .map(|a| (a.container_id.clone(), a.ifname.clone()))
                .collect();
            let n = agent
                .runtime_gc(&conf.name, &valid)
                .await
                .map_err(cni_error)?;
            tracing::info!(network = %conf.name, removed = n, "CNI GC");
            Ok(json!({}))
        }
    }
}

/// An ADD as the core takes it: the environment and the runtime's config read (static
/// addresses from `runtimeConfig.ips` and `CNI_ARGS IP=`, the MAC from `CNI_ARGS MAC=` or
/// `runtimeConfig.mac`, aliases for this network, the name from `K8S_POD_NAME`).
fn attach_request(call: &PluginCall, conf: &NetConf) -> Result<RuntimeAttach, CniError> {
    require("CNI_CONTAINERID", &call.container_id)?;
    require("CNI_NETNS", &call.netns)?;
    require("CNI_IFNAME", &call.ifname)?;
    let args = parse_args(&call.args)?;
    let rc = &conf.runtime_config;
    let mut ips = Vec::new();
    for s in rc.ips.iter().chain(args.get("IP")) {
        // podman sends addresses without a prefix; a CIDR is accepted too.
        let text = s.split('/').next().unwrap_or(s);
        let ip: IpAddr = text
            .parse()
            .map_err(|_| CniError::new(Code::InvalidConfig, format!("invalid IP address {s:?}")))?;
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    if ips.iter().filter(|ip| ip.is_ipv4()).count() > 1
        || ips.iter().filter(|ip| ip.is_ipv6()).count() > 1
    {
        return Err(CniError::new(
            Code::InvalidConfig,
            "at most one static address per family on one network",
        ));
    }
    let mac = match args.get("MAC").or(rc.mac.as_ref()) {
        Some(m) => Some(parse_mac(m).ok_or_else(|| {
            CniError::new(Code::InvalidConfig, format!("invalid MAC address {m:?}"))
        })?),
        None => None,
    };
    Ok(RuntimeAttach {
        runtime_id: call.container_id.clone(),
        name: args.get("K8S_POD_NAME").filter(|n| !n.is_empty()).cloned(),
        netns: PathBuf::from(&call.netns),
        ifname: call.ifname.clone(),
        network: conf.name.clone(),
        aliases: rc.aliases.get(&conf.name).cloned().unwrap_or_default(),
        ips,
        mac,
    })
}
