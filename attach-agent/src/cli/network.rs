//! `network create|connect|disconnect|inspect|ls|rm|prune`.

use std::collections::BTreeMap;
use std::io::Write;

use hyper::Method;
use ipnet::IpNet;

use super::client::{encode, Client, ClientError};
use super::output::{key_values, print_table};
use super::{each, inspect, NetworkCmd};
use crate::engine::types;

pub(super) async fn run(client: &Client, cmd: NetworkCmd) -> Result<i32, ClientError> {
    match cmd {
        NetworkCmd::Create {
            subnets,
            ip_ranges,
            gateways,
            ipv6,
            ipv4,
            internal,
            attachable,
            driver,
            labels,
            opts,
            dns,
            name,
        } => {
            let mut options = key_values(&opts);
            if !dns.is_empty() {
                options.insert(
                    crate::agent::request::NETWORK_DNS_OPTION.to_string(),
                    dns.join(","),
                );
            }
            let req = types::NetworkCreateRequest {
                name,
                check_duplicate: true,
                driver,
                internal,
                attachable,
                ipam: Some(types::Ipam {
                    driver: "default".into(),
                    options: None,
                    config: Some(ipam_config(&subnets, &ip_ranges, &gateways)?),
                }),
                enable_ipv6: Some(ipv6),
                enable_ipv4: (!ipv4).then_some(false),
                options: Some(options),
                labels: Some(key_values(&labels)),
                ..Default::default()
            };
            let r: types::NetworkCreateResponse = client
                .json(Method::POST, "/networks/create", Some(&req))
                .await?;
            println!("{}", r.id);
            Ok(0)
        }
        NetworkCmd::Connect {
            endpoint,
            network,
            container,
        } => {
            let req = types::NetworkConnectRequest {
                container,
                endpoint_config: Some(endpoint.settings()),
            };
            let path = format!("/networks/{}/connect", encode(&network));
            client.call(Method::POST, &path, Some(&req)).await?;
            Ok(0)
        }
        NetworkCmd::Disconnect {
            force,
            network,
            container,
        } => {
            let req = types::NetworkDisconnectRequest { container, force };
            let path = format!("/networks/{}/disconnect", encode(&network));
            client.call(Method::POST, &path, Some(&req)).await?;
            Ok(0)
        }
        NetworkCmd::Inspect { names } => {
            inspect(client, &names, "network", |n| {
                format!("/networks/{}", encode(n))
            })
            .await
        }
        NetworkCmd::Ls {
            quiet,
            filters,
            no_trunc,
        } => ls(client, &filters, quiet, no_trunc).await,
        NetworkCmd::Rm { names } => {
            each(&names, |n| async move {
                let path = format!("/networks/{}", encode(&n));
                client
                    .call(Method::DELETE, &path, None::<&()>)
                    .await
                    .map(|_| ())
            })
            .await
        }
        NetworkCmd::Prune { force } => prune(client, force).await,
    }
}

/// The IPAM configs of `network create`: one per `--subnet`, and each `--ip-range` and
/// `--gateway` with the subnet that contains it (as the docker CLI places them); without a
/// subnet, one config holding the first range and gateway.
pub fn ipam_config(
    subnets: &[String],
    ip_ranges: &[String],
    gateways: &[String],
) -> Result<Vec<types::IpamConfig>, ClientError> {
    let mut config: Vec<types::IpamConfig> = subnets
        .iter()
        .map(|s| types::IpamConfig {
            subnet: Some(s.clone()),
            ..Default::default()
        })
        .collect();
    for r in ip_ranges {
        place(r, &mut config, true)?;
    }
    for g in gateways {
        place(g, &mut config, false)?;
    }
    Ok(config)
}

/// Put one `--ip-range` (`range`) or `--gateway` into the config of its subnet.
fn place(v: &str, config: &mut Vec<types::IpamConfig>, range: bool) -> Result<(), ClientError> {
    let addr = if range {
        v.parse::<IpNet>().ok().map(|n| n.addr())
    } else {
        v.parse().ok()
    };
    let slot = config.iter().position(|c| {
        let sub = c.subnet.as_deref().and_then(|s| s.parse::<IpNet>().ok());
        matches!((sub, addr), (Some(s), Some(a)) if s.contains(&a))
            && if range {
                c.ip_range.is_none()
            } else {
                c.gateway.is_none()
            }
    });
    match slot {
        Some(i) if range => config[i].ip_range = Some(v.to_string()),
        Some(i) => config[i].gateway = Some(v.to_string()),
        None if config.is_empty() => config.push(types::IpamConfig {
            ip_range: range.then(|| v.to_string()),
            gateway: (!range).then(|| v.to_string()),
            ..Default::default()
        }),
        None => {
            return Err(ClientError::Usage(format!(
                "no matching subnet for {} {v}",
                if range { "range" } else { "gateway" }
            )))
        }
    }
    Ok(())
}

/// `--filter K=V` flags as the API's `filters` parameter (`{"K":{"V":true}}`).
pub fn filters_param(
    filters: &[String],
) -> Result<BTreeMap<String, BTreeMap<String, bool>>, ClientError> {
    let mut f: BTreeMap<String, BTreeMap<String, bool>> = BTreeMap::new();
    for kv in filters {
        let (k, v) = kv.split_once('=').ok_or_else(|| {
            ClientError::Usage(format!("bad format of filter (expected name=value): {kv}"))
        })?;
        f.entry(k.into()).or_default().insert(v.into(), true);
    }
    Ok(f)
}

async fn ls(
    client: &Client,
    filters: &[String],
    quiet: bool,
    no_trunc: bool,
) -> Result<i32, ClientError> {
    let f = filters_param(filters)?;
    let path = if f.is_empty() {
        "/networks".to_string()
    } else {
        format!(
            "/networks?filters={}",
            encode(&serde_json::to_string(&f).unwrap_or_default())
        )
    };
    let nets: Vec<types::NetworkResource> = client.json(Method::GET, &path, None::<&()>).await?;
    let id = |s: &str| {
        if no_trunc {
            s.to_string()
        } else {
            s.chars().take(12).collect()
        }
    };
    if quiet {
        for n in &nets {
            println!("{}", id(&n.id));
        }
        return Ok(0);
    }
    let mut rows = vec![vec![
        "NETWORK ID".to_string(),
        "NAME".into(),
        "DRIVER".into(),
        "SCOPE".into(),
    ]];
    for n in &nets {
        rows.push(vec![
            id(&n.id),
            n.name.clone(),
            n.driver.clone(),
            n.scope.clone(),
        ]);
    }
    print_table(&rows);
    Ok(0)
}

async fn prune(client: &Client, force: bool) -> Result<i32, ClientError> {
    if !force {
        print!("WARNING! This will remove all custom networks not used by at least one container.\nAre you sure you want to continue? [y/N] ");
        let _ = std::io::stdout().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Ok(0);
        }
    }
    let r: types::PruneResponse = client
        .json(Method::POST, "/networks/prune", None::<&()>)
        .await?;
    if !r.networks_deleted.is_empty() {
        println!("Deleted Networks:");
        for n in r.networks_deleted {
            println!("{n}");
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn ranges_and_gateways_go_with_the_subnet_that_holds_them() {
        let c = ipam_config(
            &s(&["10.1.0.0/16", "fd00::/64"]),
            &s(&["fd00::/80", "10.1.240.0/20"]),
            &s(&["10.1.0.254"]),
        )
        .unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].ip_range.as_deref(), Some("10.1.240.0/20"));
        assert_eq!(c[0].gateway.as_deref(), Some("10.1.0.254"));
        assert_eq!(c[1].ip_range.as_deref(), Some("fd00::/80"));
        assert_eq!(c[1].gateway, None);
    }

    #[test]
    fn a_range_outside_every_subnet_is_a_usage_error() {
        let e = ipam_config(&s(&["10.1.0.0/16"]), &s(&["10.2.0.0/24"]), &[]).unwrap_err();
        assert!(matches!(e, ClientError::Usage(_)));
        assert_eq!(e.to_string(), "no matching subnet for range 10.2.0.0/24");
    }

    #[test]
    fn without_a_subnet_the_first_range_makes_a_config_of_its_own() {
        let c = ipam_config(&[], &s(&["10.3.1.0/24"]), &[]).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].subnet, None);
        assert_eq!(c[0].ip_range.as_deref(), Some("10.3.1.0/24"));
        // Nothing holds a gateway given after it: the daemon would have no subnet to check.
        assert!(ipam_config(&[], &s(&["10.3.1.0/24"]), &s(&["10.3.1.1"])).is_err());
    }

    #[test]
    fn filters_become_the_api_parameter() {
        let f = filters_param(&s(&["name=a", "name=b", "driver=bridge"])).unwrap();
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            r#"{"driver":{"bridge":true},"name":{"a":true,"b":true}}"#
        );
        assert!(matches!(
            filters_param(&s(&["oops"])),
            Err(ClientError::Usage(_))
        ));
    }
}
