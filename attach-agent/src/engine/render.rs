//! The model as the Engine API shows it: networks, endpoints and containers rendered into the
//! JSON shapes of `super::types`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::types::*;
use super::version::{self, ApiVersion};
use crate::clock::{human_duration, unix_seconds};
use crate::state::{Container, Endpoint, Network, RunState, State};

use crate::mac::text as mac_text;

/// A network as `GET /networks/{id}` shows it; `with_containers` for inspect (the list
/// leaves `Containers` empty, as the Engine does).
pub fn network_resource(
    net: &Network,
    state: &State,
    with_containers: bool,
    v: ApiVersion,
) -> NetworkResource {
    let config = net
        .pools()
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
                        c.id.to_string(),
                        NetworkContainer {
                            name: c.name.clone(),
                            endpoint_id: ep.endpoint_id.to_string(),
                            mac_address: mac_text(a.mac),
                            ipv4_address: match (a.v4, &net.v4) {
                                (Some(ip), Some(p)) => format!("{ip}/{}", p.prefix_len()),
                                _ => String::new(),
                            },
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
        id: net.id.to_string(),
        created: net.created.clone(),
        scope: net.scope().into(),
        driver: net.driver.to_string(),
        enable_ipv4: v
            .at_least(version::ENABLE_IPV4)
            .then_some(net.enable_ipv4()),
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

/// An endpoint of container `c` as `NetworkSettings.Networks[...]` shows it at version `v`:
/// before 1.45 `Aliases` ends with the short id (as the Engine added it), from 1.44 on
/// `DNSNames` lists every name the container answers to there.
pub fn endpoint_settings(
    c: &Container,
    ep: &Endpoint,
    net: &Network,
    v: ApiVersion,
) -> EndpointSettings {
    let mut aliases = ep.aliases.clone();
    if !v.at_least(version::ALIASES_AS_ASKED) && !aliases.iter().any(|a| a == c.id.short()) {
        aliases.push(c.id.short().to_string());
    }
    let dns_names = v.at_least(version::ENDPOINT_MAC).then(|| {
        let mut names: Vec<String> = Vec::new();
        let all = std::iter::once(c.name.as_str())
            .chain(ep.aliases.iter().map(String::as_str))
            .chain([c.id.short(), c.hostname.as_str()]);
        for n in all.filter(|n| !n.is_empty()) {
            if !names.iter().any(|x| x == n) {
                names.push(n.to_string());
            }
        }
        names
    });
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
        aliases: (!aliases.is_empty()).then_some(aliases),
        network_id: net.id.to_string(),
        dns_names,
        gw_priority: v.at_least(version::GW_PRIORITY).then_some(ep.gw_priority),
        ..EndpointSettings::default()
    };
    if let Some(a) = &ep.attached {
        s.endpoint_id = ep.endpoint_id.to_string();
        if let (Some(ip), Some(p)) = (a.v4, &net.v4) {
            s.gateway = p.gateway.to_string();
            s.ip_address = ip.to_string();
            s.ip_prefix_len = p.prefix_len();
        }
        s.mac_address = mac_text(a.mac);
        if let (Some(ip), Some(p)) = (a.v6, &net.v6) {
            s.ipv6_gateway = p.gateway.to_string();
            s.global_ipv6_address = ip.to_string();
            s.global_ipv6_prefix_len = p.prefix_len();
        }
    }
    s
}

fn networks_of(c: &Container, state: &State, v: ApiVersion) -> BTreeMap<String, EndpointSettings> {
    c.endpoints
        .iter()
        .filter_map(|ep| {
            let net = state.networks.get(&ep.network_id)?;
            Some((net.name.clone(), endpoint_settings(c, ep, net, v)))
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

pub fn container_summary(c: &Container, state: &State, v: ApiVersion) -> ContainerSummary {
    let since = unix_seconds(&crate::clock::now_rfc3339()) - unix_seconds(&c.state_since);
    let status = match c.state {
        RunState::Created => "Created".to_string(),
        RunState::Running => format!("Up {}", human_duration(since)),
        RunState::Paused => format!("Up {} (Paused)", human_duration(since)),
        RunState::Exited => format!("Exited (0) {} ago", human_duration(since)),
    };
    ContainerSummary {
        id: c.id.to_string(),
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
            ..HostConfig::default()
        },
        network_settings: SummaryNetworkSettings {
            networks: networks_of(c, state, v),
        },
        mounts: vec![],
    }
}

pub fn container_json(c: &Container, state: &State, v: ApiVersion) -> ContainerJson {
    let up = c.state.is_up();
    ContainerJson {
        id: c.id.to_string(),
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
        host_config: HostConfigJson {
            network_mode: network_mode(c, state),
            log_config: LogConfig {
                kind: "json-file".into(),
                config: BTreeMap::new(),
            },
            restart_policy: RestartPolicy {
                name: "no".into(),
                maximum_retry_count: 0,
            },
            auto_remove: false,
            dns: c.dns.servers.iter().map(ToString::to_string).collect(),
            dns_search: c.dns.search.clone(),
            dns_options: c.dns.options.clone(),
            extra_hosts: (!c.dns.extra_hosts.is_empty()).then(|| {
                c.dns
                    .extra_hosts
                    .iter()
                    .map(|h| match h.ip {
                        Some(ip) => format!("{}:{ip}", h.name),
                        None => format!("{}:host-gateway", h.name),
                    })
                    .collect()
            }),
        },
        config: ContainerConfig {
            hostname: c.hostname.clone(),
            image: c.image.clone(),
            labels: c.labels.clone(),
            ..ContainerConfig::default()
        },
        network_settings: NetworkSettings {
            bridge: String::new(),
            sandbox_id: String::new(),
            sandbox_key: c.netns.display().to_string(),
            ports: BTreeMap::new(),
            networks: networks_of(c, state, v),
        },
    }
}
