//! `container create|start|stop|restart|kill|pause|unpause|rm|inspect|ls`, and `run`.

use std::collections::BTreeMap;

use hyper::Method;

use super::client::{encode, Client, ClientError};
use super::output::{key_values, print_table};
use super::{each, inspect, ContainerCmd, CreateArgs};
use crate::engine::types;

pub(super) async fn create(client: &Client, args: &CreateArgs) -> Result<String, ClientError> {
    let mut endpoints = BTreeMap::new();
    if let Some(net) = &args.network {
        let mut settings = args.endpoint.settings();
        settings.mac_address = args.mac_address.clone().unwrap_or_default();
        endpoints.insert(net.clone(), settings);
    } else if args.mac_address.is_some() {
        return Err(ClientError::Usage(
            "--mac-address applies to the endpoint on --network: give a network".into(),
        ));
    }
    let req = types::ContainerCreateRequest {
        hostname: args.hostname.clone().unwrap_or_default(),
        image: args.image.clone().unwrap_or_default(),
        labels: Some(key_values(&args.labels)),
        host_config: Some(types::HostConfig {
            network_mode: args.network.clone().unwrap_or_else(|| "none".into()),
            dns: Some(args.dns.clone()),
            dns_search: Some(args.dns_search.clone()),
            dns_options: Some(args.dns_options.clone()),
            extra_hosts: Some(args.add_hosts.clone()),
        }),
        networking_config: Some(types::NetworkingConfig {
            endpoints_config: endpoints,
        }),
        netns: args.netns.as_ref().map(|p| p.display().to_string()),
        ..Default::default()
    };
    let path = match &args.name {
        Some(n) => format!("/containers/create?name={}", encode(n)),
        None => "/containers/create".into(),
    };
    let r: types::ContainerCreateResponse = client.json(Method::POST, &path, Some(&req)).await?;
    Ok(r.id)
}

async fn action(client: &Client, names: &[String], verb: &'static str) -> Result<i32, ClientError> {
    each(names, |n| async move {
        client
            .call(
                Method::POST,
                &format!("/containers/{}/{verb}", encode(&n)),
                None::<&()>,
            )
            .await
            .map(|_| ())
    })
    .await
}

pub(super) async fn run(client: &Client, cmd: ContainerCmd) -> Result<i32, ClientError> {
    match cmd {
        ContainerCmd::Create(args) => {
            println!("{}", create(client, &args).await?);
            Ok(0)
        }
        ContainerCmd::Start { names } => action(client, &names, "start").await,
        ContainerCmd::Stop { names } => action(client, &names, "stop").await,
        ContainerCmd::Restart { names } => action(client, &names, "restart").await,
        ContainerCmd::Kill { names } => action(client, &names, "kill").await,
        ContainerCmd::Pause { names } => action(client, &names, "pause").await,
        ContainerCmd::Unpause { names } => action(client, &names, "unpause").await,
        ContainerCmd::Rm { force, names } => {
            each(&names, |n| async move {
                let q = if force { "?force=1" } else { "" };
                client
                    .call(
                        Method::DELETE,
                        &format!("/containers/{}{q}", encode(&n)),
                        None::<&()>,
                    )
                    .await
                    .map(|_| ())
            })
            .await
        }
        ContainerCmd::Inspect { names } => {
            inspect(client, &names, "container", |n| {
                format!("/containers/{}/json", encode(n))
            })
            .await
        }
        ContainerCmd::Ls { all, quiet } => {
            let path = if all {
                "/containers/json?all=1"
            } else {
                "/containers/json"
            };
            let list: Vec<types::ContainerSummary> =
                client.json(Method::GET, path, None::<&()>).await?;
            if quiet {
                for c in &list {
                    println!("{}", &c.id[..12.min(c.id.len())]);
                }
                return Ok(0);
            }
            let mut rows = vec![[
                "CONTAINER ID",
                "IMAGE",
                "COMMAND",
                "CREATED",
                "STATUS",
                "PORTS",
                "NAMES",
            ]
            .map(String::from)
            .to_vec()];
            let now = crate::clock::unix_seconds(&crate::clock::now_rfc3339());
            for c in &list {
                let created = format!("{} ago", crate::clock::human_duration(now - c.created));
                rows.push(vec![
                    c.id.chars().take(12).collect(),
                    c.image.clone(),
                    format!("\"{}\"", c.command),
                    created,
                    c.status.clone(),
                    String::new(),
                    c.names
                        .iter()
                        .map(|n| n.trim_start_matches('/'))
                        .collect::<Vec<_>>()
                        .join(","),
                ]);
            }
            print_table(&rows);
            Ok(0)
        }
    }
}
