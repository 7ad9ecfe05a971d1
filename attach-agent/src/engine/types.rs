//! The Docker Engine API's JSON shapes for networks and containers, and their rendering from
//! the agent's model. Field names and casing as the Engine API defines them; unknown request
//! fields are ignored, as the Engine does.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::clock::unix_seconds;
use crate::state::{Container, Endpoint, Network, RunState, State};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct IpamConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    #[serde(rename = "IPRange", skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auxiliary_addresses: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Ipam {
    pub driver: String,
    pub options: Option<BTreeMap<String, String>>,
    pub config: Option<Vec<IpamConfig>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkCreateRequest {
    pub name: String,
    pub check_duplicate: bool,
    pub driver: String,
    pub internal: bool,
    pub attachable: bool,
    pub ingress: bool,
    #[serde(rename = "IPAM")]
    pub ipam: Option<Ipam>,
    #[serde(rename = "EnableIPv6")]
    pub enable_ipv6: Option<bool>,
    pub options: Option<BTreeMap<String, String>>,
    pub labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkCreateResponse {
    pub id: String,
    pub warning: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointIpamConfig {
    #[serde(rename = "IPv4Address", skip_serializing_if = "Option::is_none")]
    pub ipv4_address: Option<String>,
    #[serde(rename = "IPv6Address", skip_serializing_if = "Option::is_none")]
    pub ipv6_address: Option<String>,
    #[serde(rename = "LinkLocalIPs", skip_serializing_if = "Option::is_none")]
    pub link_local_ips: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointSettings {
    #[serde(rename = "IPAMConfig")]
    pub ipam_config: Option<EndpointIpamConfig>,
    pub links: Option<Vec<String>>,
    pub aliases: Option<Vec<String>>,
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    pub gateway: String,
    #[serde(rename = "IPAddress")]
    pub ip_address: String,
    #[serde(rename = "IPPrefixLen")]
    pub ip_prefix_len: u8,
    #[serde(rename = "IPv6Gateway")]
    pub ipv6_gateway: String,
    #[serde(rename = "GlobalIPv6Address")]
    pub global_ipv6_address: String,
    #[serde(rename = "GlobalIPv6PrefixLen")]
    pub global_ipv6_prefix_len: u8,
    pub mac_address: String,
    pub driver_opts: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkConnectRequest {
    pub container: String,
    pub endpoint_config: Option<EndpointSettings>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkDisconnectRequest {
    pub container: String,
    pub force: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkContainer {
    pub name: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    pub mac_address: String,
    #[serde(rename = "IPv4Address")]
    pub ipv4_address: String,
    #[serde(rename = "IPv6Address")]
    pub ipv6_address: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConfigReference {
    pub network: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkResource {
    pub name: String,
    pub id: String,
    pub created: String,
    pub scope: String,
    pub driver: String,
    #[serde(rename = "EnableIPv6")]
    pub enable_ipv6: bool,
    #[serde(rename = "IPAM")]
    pub ipam: Ipam,
    pub internal: bool,
    pub attachable: bool,
    pub ingress: bool,
    pub config_from: ConfigReference,
    pub config_only: bool,
    pub containers: BTreeMap<String, NetworkContainer>,
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PruneResponse {
    pub networks_deleted: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HostConfig {
    pub network_mode: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkingConfig {
    pub endpoints_config: BTreeMap<String, EndpointSettings>,
}

/// `POST /containers/create`. `Netns` is the agent's extension: an existing namespace to use
/// instead of one the agent makes (the stock client never sends it).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerCreateRequest {
    pub hostname: String,
    pub image: String,
    pub labels: Option<BTreeMap<String, String>>,
    pub host_config: Option<HostConfig>,
    pub networking_config: Option<NetworkingConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerCreateResponse {
    pub id: String,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkSettings {
    pub bridge: String,
    #[serde(rename = "SandboxID")]
    pub sandbox_id: String,
    pub sandbox_key: String,
    pub networks: BTreeMap<String, EndpointSettings>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct SummaryNetworkSettings {
    pub networks: BTreeMap<String, EndpointSettings>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerSummary {
    pub id: String,
    pub names: Vec<String>,
    pub image: String,
    #[serde(rename = "ImageID")]
    pub image_id: String,
    pub command: String,
    pub created: i64,
    pub ports: Vec<serde_json::Value>,
    pub labels: BTreeMap<String, String>,
    pub state: String,
    pub status: String,
    pub host_config: HostConfig,
    pub network_settings: SummaryNetworkSettings,
    pub mounts: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerStateJson {
    pub status: String,
    pub running: bool,
    pub paused: bool,
    pub restarting: bool,
    #[serde(rename = "OOMKilled")]
    pub oom_killed: bool,
    pub dead: bool,
    pub pid: u32,
    pub exit_code: i32,
    pub error: String,
    pub started_at: String,
    pub finished_at: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerConfig {
    pub hostname: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerJson {
    pub id: String,
    pub created: String,
    pub path: String,
    pub args: Vec<String>,
    pub state: ContainerStateJson,
    pub image: String,
    pub name: String,
    pub restart_count: u32,
    pub driver: String,
    pub platform: String,
    pub host_config: HostConfig,
    pub config: ContainerConfig,
    pub network_settings: NetworkSettings,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ErrorResponse {
    pub message: String,
}

fn mac_text(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A network as `GET /networks/{id}` shows it; `with_containers` for inspect (the list
/// leaves `Containers` empty, as the Engine does).
pub fn network_resource(net: &Network, state: &State, with_containers: bool) -> NetworkResource {
    let config = std::iter::once(&net.v4)
        .chain(net.v6.as_ref())
        .map(|p| IpamConfig {
            subnet: Some(p.subnet.to_string()),
            ip_range: p.ip_range.map(|r| r.to_string()),
            gateway: p.show_gateway.then(|| p.gateway.to_string()),
            auxiliary_addresses: None,
        })
        .collect();
    let mut containers = BTreeMap::new();
    if with_containers {
        for c in state.containers.values() {
            if let Some(ep) = c.endpoint(&net.id) {
                if let Some(a) = &ep.attached {
                    containers.insert(
                        c.id.clone(),
                        NetworkContainer {
                            name: c.name.clone(),
                            endpoint_id: ep.endpoint_id.clone(),
                            mac_address: mac_text(a.mac),
                            ipv4_address: format!("{}/{}", a.v4, net.v4.prefix_len()),
                            ipv6_address: match (a.v6, &net.v6) {
                                (Some(ip), Some(p)) => format!("{ip}/{}", p.prefix_len()),
                                _ => String::new(),
                            },
                        },
                    );
                }
            }
        }
    }
    NetworkResource {
        name: net.name.clone(),
        id: net.id.clone(),
        created: net.created.clone(),
        scope: net.scope().into(),
        driver: net.driver.clone(),
        enable_ipv6: net.enable_ipv6(),
        ipam: Ipam {
            driver: "default".into(),
            options: Some(BTreeMap::new()),
            config: Some(config),
        },
        internal: net.internal,
        attachable: net.attachable,
        ingress: false,
        config_from: ConfigReference::default(),
        config_only: false,
        containers,
        options: net.options.clone(),
        labels: net.labels.clone(),
    }
}

/// An endpoint as `NetworkSettings.Networks[...]` shows it.
pub fn endpoint_settings(ep: &Endpoint, net: &Network) -> EndpointSettings {
    let ipam_config =
        if ep.static_v4.is_some() || ep.static_v6.is_some() || !ep.link_local.is_empty() {
            Some(EndpointIpamConfig {
                ipv4_address: ep.static_v4.map(|a| a.to_string()),
                ipv6_address: ep.static_v6.map(|a| a.to_string()),
                link_local_ips: (!ep.link_local.is_empty())
                    .then(|| ep.link_local.iter().map(IpAddr::to_string).collect()),
            })
        } else {
            None
        };
    let mut s = EndpointSettings {
        ipam_config,
        links: (!ep.links.is_empty()).then(|| {
            ep.links
                .iter()
                .map(|l| format!("{}:{}", l.target, l.alias))
                .collect()
        }),
        aliases: (!ep.aliases.is_empty()).then(|| ep.aliases.clone()),
        network_id: net.id.clone(),
        ..EndpointSettings::default()
    };
    if let Some(a) = &ep.attached {
        s.endpoint_id = ep.endpoint_id.clone();
        s.gateway = net.v4.gateway.to_string();
        s.ip_address = a.v4.to_string();
        s.ip_prefix_len = net.v4.prefix_len();
        s.mac_address = mac_text(a.mac);
        if let (Some(ip), Some(p)) = (a.v6, &net.v6) {
            s.ipv6_gateway = p.gateway.to_string();
            s.global_ipv6_address = ip.to_string();
            s.global_ipv6_prefix_len = p.prefix_len();
        }
    }
    s
}

fn networks_of(c: &Container, state: &State) -> BTreeMap<String, EndpointSettings> {
    c.endpoints
        .iter()
        .filter_map(|ep| {
            let net = state.networks.get(&ep.network_id)?;
            Some((net.name.clone(), endpoint_settings(ep, net)))
        })
        .collect()
}

fn state_word(s: RunState) -> &'static str {
    match s {
        RunState::Created => "created",
        RunState::Running => "running",
        RunState::Paused => "paused",
        RunState::Exited => "exited",
    }
}

fn network_mode(c: &Container, state: &State) -> String {
    c.endpoints
        .first()
        .and_then(|e| state.networks.get(&e.network_id))
        .map(|n| n.name.clone())
        .unwrap_or_else(|| "none".into())
}

/// Docker's `units.HumanDuration`, as `ps` prints ages.
pub fn human_duration(secs: i64) -> String {
    let (minutes, hours) = (secs / 60, (secs as f64 / 3600.0 + 0.5) as i64);
    match secs {
        s if s < 1 => "Less than a second".into(),
        1 => "1 second".into(),
        s if s < 60 => format!("{s} seconds"),
        _ if minutes == 1 => "About a minute".into(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        s => format!("{} years", s / 3600 / 24 / 365),
    }
}

pub fn container_summary(c: &Container, state: &State) -> ContainerSummary {
    let since = unix_seconds(&crate::clock::now_rfc3339()) - unix_seconds(&c.state_since);
    let status = match c.state {
        RunState::Created => "Created".to_string(),
        RunState::Running => format!("Up {}", human_duration(since)),
        RunState::Paused => format!("Up {} (Paused)", human_duration(since)),
        RunState::Exited => format!("Exited (0) {} ago", human_duration(since)),
    };
    ContainerSummary {
        id: c.id.clone(),
        names: vec![format!("/{}", c.name)],
        image: c.image.clone(),
        image_id: String::new(),
        command: String::new(),
        created: unix_seconds(&c.created),
        ports: vec![],
        labels: c.labels.clone(),
        state: state_word(c.state).into(),
        status,
        host_config: HostConfig {
            network_mode: network_mode(c, state),
        },
        network_settings: SummaryNetworkSettings {
            networks: networks_of(c, state),
        },
        mounts: vec![],
    }
}

pub fn container_json(c: &Container, state: &State) -> ContainerJson {
    let up = c.state.is_up();
    ContainerJson {
        id: c.id.clone(),
        created: c.created.clone(),
        path: String::new(),
        args: vec![],
        state: ContainerStateJson {
            status: state_word(c.state).into(),
            running: up,
            paused: c.state == RunState::Paused,
            started_at: if up {
                c.state_since.clone()
            } else {
                "0001-01-01T00:00:00Z".into()
            },
            finished_at: if c.state == RunState::Exited {
                c.state_since.clone()
            } else {
                "0001-01-01T00:00:00Z".into()
            },
            ..ContainerStateJson::default()
        },
        image: c.image.clone(),
        name: format!("/{}", c.name),
        restart_count: 0,
        driver: String::new(),
        platform: "linux".into(),
        host_config: HostConfig {
            network_mode: network_mode(c, state),
        },
        config: ContainerConfig {
            hostname: c.hostname.clone(),
            image: c.image.clone(),
            labels: c.labels.clone(),
        },
        network_settings: NetworkSettings {
            bridge: String::new(),
            sandbox_id: String::new(),
            sandbox_key: c.netns.display().to_string(),
            networks: networks_of(c, state),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_fields_keep_docker_names() {
        let r: NetworkConnectRequest = serde_json::from_str(
            r#"{"Container":"c","EndpointConfig":{"IPAMConfig":{"IPv4Address":"10.0.0.2","IPv6Address":"","LinkLocalIPs":["169.254.1.1"]},"Links":["a:b"],"Aliases":["x"]}}"#,
        )
        .unwrap();
        let e = r.endpoint_config.unwrap();
        assert_eq!(e.ipam_config.unwrap().ipv4_address.unwrap(), "10.0.0.2");
        assert_eq!(e.links.unwrap(), ["a:b"]);
    }
}
