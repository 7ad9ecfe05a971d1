//! The command line: `daemon`, and client commands that mirror `docker network …` and the
//! container verbs, speaking the Engine API to the daemon. Output as the docker CLI prints it.

pub mod client;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use hyper::Method;
use ipnet::IpNet;

use crate::cli::client::{encode, Client, ClientError};
use crate::engine::types::{self, EndpointIpamConfig, EndpointSettings};

#[derive(Debug, Parser)]
#[command(
    name = "attach-agent",
    version,
    about = "Container networking and DNS sidecar"
)]
pub struct Cli {
    /// Daemon socket to connect to (unix:///path); default $ATTACH_AGENT_HOST or
    /// unix:///run/attach-agent/attach-agent.sock.
    #[arg(short = 'H', long = "host", global = true, env = "ATTACH_AGENT_HOST")]
    pub host: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground.
    Daemon(DaemonArgs),
    /// Manage networks.
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Manage containers.
    #[command(subcommand)]
    Container(ContainerCmd),
    /// Create and start a container.
    Run(Box<CreateArgs>),
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// TOML configuration file (see configs/agent.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// API socket path.
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// State directory.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Upstream DNS server IP[:PORT] (repeatable); default: /etc/resolv.conf's.
    #[arg(long = "upstream")]
    pub upstreams: Vec<String>,
    /// Port of the DNS listeners on each gateway.
    #[arg(long)]
    pub dns_port: Option<u16>,
    /// Prefix of the bridges and veths the agent makes.
    #[arg(long)]
    pub link_prefix: Option<String>,
    /// Join a cluster: etcd://HOST:PORT[,HOST:PORT...] (global networks, names across hosts).
    #[arg(long)]
    pub cluster_store: Option<String>,
    /// This host's address as the other hosts reach it (with --cluster-store).
    #[arg(long)]
    pub advertise_addr: Option<std::net::IpAddr>,
    /// Seconds this host's records outlive it in the cluster store.
    #[arg(long)]
    pub cluster_lease_ttl: Option<u64>,
    /// Log filter (tracing's EnvFilter syntax), e.g. info or attach_agent=debug; RUST_LOG when
    /// not given. Logs go to stderr, without colour unless it is a terminal.
    #[arg(long, env = "RUST_LOG", default_value = resolver::logging::DEFAULT_FILTER)]
    pub log: String,
}

#[derive(Debug, Subcommand)]
pub enum NetworkCmd {
    /// Create a network.
    Create {
        #[arg(long = "subnet")]
        subnets: Vec<String>,
        #[arg(long = "ip-range")]
        ip_ranges: Vec<String>,
        #[arg(long = "gateway")]
        gateways: Vec<String>,
        #[arg(long)]
        ipv6: bool,
        #[arg(long)]
        internal: bool,
        #[arg(long)]
        attachable: bool,
        #[arg(short = 'd', long, default_value = "bridge")]
        driver: String,
        #[arg(long = "label")]
        labels: Vec<String>,
        #[arg(short = 'o', long = "opt")]
        opts: Vec<String>,
        name: String,
    },
    /// Connect a container to a network.
    Connect {
        #[command(flatten)]
        endpoint: EndpointArgs,
        network: String,
        container: String,
    },
    /// Disconnect a container from a network.
    Disconnect {
        #[arg(short, long)]
        force: bool,
        network: String,
        container: String,
    },
    /// Show networks as JSON.
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// List networks.
    #[command(alias = "list")]
    Ls {
        #[arg(short, long)]
        quiet: bool,
        #[arg(short, long = "filter")]
        filters: Vec<String>,
        #[arg(long)]
        no_trunc: bool,
    },
    /// Remove networks.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove every network no container uses.
    Prune {
        #[arg(short, long)]
        force: bool,
    },
}

#[derive(Debug, Args, Default, Clone)]
pub struct EndpointArgs {
    #[arg(long = "alias")]
    pub aliases: Vec<String>,
    #[arg(long)]
    pub ip: Option<String>,
    #[arg(long)]
    pub ip6: Option<String>,
    #[arg(long = "link")]
    pub links: Vec<String>,
    #[arg(long = "link-local-ip")]
    pub link_local: Vec<String>,
}

impl EndpointArgs {
    fn settings(&self) -> EndpointSettings {
        let ipam =
            (self.ip.is_some() || self.ip6.is_some() || !self.link_local.is_empty()).then(|| {
                EndpointIpamConfig {
                    ipv4_address: self.ip.clone(),
                    ipv6_address: self.ip6.clone(),
                    link_local_ips: (!self.link_local.is_empty()).then(|| self.link_local.clone()),
                }
            });
        EndpointSettings {
            ipam_config: ipam,
            links: (!self.links.is_empty()).then(|| self.links.clone()),
            aliases: (!self.aliases.is_empty()).then(|| self.aliases.clone()),
            ..EndpointSettings::default()
        }
    }
}

#[derive(Debug, Args, Clone)]
pub struct CreateArgs {
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub hostname: Option<String>,
    /// Use this existing network namespace instead of making /run/netns/NAME.
    #[arg(long)]
    pub netns: Option<PathBuf>,
    #[arg(long)]
    pub network: Option<String>,
    #[command(flatten)]
    pub endpoint: EndpointArgs,
    #[arg(long = "label", short = 'l')]
    pub labels: Vec<String>,
    /// Image name, recorded only.
    pub image: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ContainerCmd {
    /// Create a container.
    Create(Box<CreateArgs>),
    Start {
        #[arg(required = true)]
        names: Vec<String>,
    },
    Stop {
        #[arg(required = true)]
        names: Vec<String>,
    },
    Restart {
        #[arg(required = true)]
        names: Vec<String>,
    },
    Kill {
        #[arg(required = true)]
        names: Vec<String>,
    },
    Pause {
        #[arg(required = true)]
        names: Vec<String>,
    },
    Unpause {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove containers.
    Rm {
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        names: Vec<String>,
    },
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// List containers.
    #[command(alias = "ps")]
    Ls {
        #[arg(short, long)]
        all: bool,
        #[arg(short, long)]
        quiet: bool,
    },
}

fn key_values(items: &[String]) -> BTreeMap<String, String> {
    items
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.to_string(), String::new()),
        })
        .collect()
}

/// Docker's table layout (Go's tabwriter with minwidth 10, padding 3): each column as wide as
/// its widest cell plus 3, at least 10; the first column holds 12-character ids.
fn print_table(rows: &[Vec<String>]) {
    let cols = rows.first().map_or(0, |r| r.len());
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            let widest = rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0);
            let widest = if i == 0 { widest.max(12) } else { widest };
            (widest + 3).max(10) - 3
        })
        .collect();
    let mut out = std::io::stdout().lock();
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == cols {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}", w = widths[i] + 3));
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

fn print_json(v: &impl serde::Serialize) {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    if v.serialize(&mut ser).is_ok() {
        println!("{}", String::from_utf8_lossy(&buf));
    }
}

/// Run a client command. Returns the process exit code.
pub async fn run_client(client: &Client, cmd: Command) -> Result<i32, ClientError> {
    match cmd {
        Command::Daemon(_) => unreachable!("handled by main"),
        Command::Network(n) => network(client, n).await,
        Command::Container(c) => container(client, c).await,
        Command::Run(args) => {
            let id = create(client, &args).await?;
            client
                .call(
                    Method::POST,
                    &format!("/containers/{id}/start"),
                    None::<&()>,
                )
                .await?;
            println!("{id}");
            Ok(0)
        }
    }
}

/// For each name, call `f`; print the name on success and the error otherwise, like the
/// docker CLI's multi-object commands. Exit 1 if any failed.
async fn each<F, Fut>(names: &[String], f: F) -> Result<i32, ClientError>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), ClientError>>,
{
    let mut code = 0;
    for n in names {
        match f(n.clone()).await {
            Ok(()) => println!("{n}"),
            Err(e @ ClientError::Daemon(_)) => {
                eprintln!("{e}");
                code = 1;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(code)
}

/// `inspect NAME...`: a JSON array of what was found, an error line for each name that was not.
async fn inspect(
    client: &Client,
    names: &[String],
    kind: &str,
    path: impl Fn(&str) -> String,
) -> Result<i32, ClientError> {
    let mut out = Vec::new();
    let mut code = 0;
    for n in names {
        match client
            .json::<serde_json::Value>(Method::GET, &path(n), None::<&()>)
            .await
        {
            Ok(v) => out.push(v),
            Err(ClientError::Daemon(_)) => {
                eprintln!("Error: No such {kind}: {n}");
                code = 1;
            }
            Err(e) => return Err(e),
        }
    }
    print_json(&out);
    Ok(code)
}

async fn network(client: &Client, cmd: NetworkCmd) -> Result<i32, ClientError> {
    match cmd {
        NetworkCmd::Create {
            subnets,
            ip_ranges,
            gateways,
            ipv6,
            internal,
            attachable,
            driver,
            labels,
            opts,
            name,
        } => {
            let mut config: Vec<types::IpamConfig> = subnets
                .iter()
                .map(|s| types::IpamConfig {
                    subnet: Some(s.clone()),
                    ..Default::default()
                })
                .collect();
            // Each --ip-range and --gateway goes with the --subnet that contains it.
            let place = |v: &String,
                         config: &mut Vec<types::IpamConfig>,
                         range: bool|
             -> Result<(), ClientError> {
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
                    Some(i) if range => config[i].ip_range = Some(v.clone()),
                    Some(i) => config[i].gateway = Some(v.clone()),
                    None if config.is_empty() => config.push(types::IpamConfig {
                        ip_range: range.then(|| v.clone()),
                        gateway: (!range).then(|| v.clone()),
                        ..Default::default()
                    }),
                    None => {
                        return Err(ClientError::Daemon(format!(
                            "no matching subnet for {} {v}",
                            if range { "range" } else { "gateway" }
                        )))
                    }
                }
                Ok(())
            };
            for r in &ip_ranges {
                place(r, &mut config, true)?;
            }
            for g in &gateways {
                place(g, &mut config, false)?;
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
                    config: Some(config),
                }),
                enable_ipv6: Some(ipv6),
                options: Some(key_values(&opts)),
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
            client
                .call(
                    Method::POST,
                    &format!("/networks/{}/connect", encode(&network)),
                    Some(&req),
                )
                .await?;
            Ok(0)
        }
        NetworkCmd::Disconnect {
            force,
            network,
            container,
        } => {
            let req = types::NetworkDisconnectRequest { container, force };
            client
                .call(
                    Method::POST,
                    &format!("/networks/{}/disconnect", encode(&network)),
                    Some(&req),
                )
                .await?;
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
        } => {
            let mut f: BTreeMap<String, BTreeMap<String, bool>> = BTreeMap::new();
            for kv in &filters {
                let (k, v) = kv.split_once('=').ok_or_else(|| {
                    ClientError::Daemon(format!("bad format of filter (expected name=value): {kv}"))
                })?;
                f.entry(k.into()).or_default().insert(v.into(), true);
            }
            let path = if f.is_empty() {
                "/networks".to_string()
            } else {
                format!(
                    "/networks?filters={}",
                    encode(&serde_json::to_string(&f).unwrap_or_default())
                )
            };
            let nets: Vec<types::NetworkResource> =
                client.json(Method::GET, &path, None::<&()>).await?;
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
        NetworkCmd::Rm { names } => {
            each(&names, |n| async move {
                client
                    .call(
                        Method::DELETE,
                        &format!("/networks/{}", encode(&n)),
                        None::<&()>,
                    )
                    .await
                    .map(|_| ())
            })
            .await
        }
        NetworkCmd::Prune { force } => {
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
    }
}

async fn create(client: &Client, args: &CreateArgs) -> Result<String, ClientError> {
    let mut endpoints = BTreeMap::new();
    if let Some(net) = &args.network {
        endpoints.insert(net.clone(), args.endpoint.settings());
    }
    let req = types::ContainerCreateRequest {
        hostname: args.hostname.clone().unwrap_or_default(),
        image: args.image.clone().unwrap_or_default(),
        labels: Some(key_values(&args.labels)),
        host_config: Some(types::HostConfig {
            network_mode: args.network.clone().unwrap_or_else(|| "none".into()),
        }),
        networking_config: Some(types::NetworkingConfig {
            endpoints_config: endpoints,
        }),
        netns: args.netns.as_ref().map(|p| p.display().to_string()),
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

async fn container(client: &Client, cmd: ContainerCmd) -> Result<i32, ClientError> {
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
                let created = format!("{} ago", types::human_duration(now - c.created));
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
