//! The command line: `daemon`, and client commands that mirror `docker network …` and the
//! container verbs, speaking the Engine API to the daemon. Output as the docker CLI prints it.

pub mod client;
mod cni;
mod container;
mod network;
pub mod output;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use hyper::Method;

use crate::engine::types::{EndpointIpamConfig, EndpointSettings};
use client::{Client, ClientError};
use output::print_json;

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
    /// Set up runtimes (podman, containerd, …) to attach their containers through the
    /// attach-agent-cni plugin.
    #[command(subcommand)]
    Cni(CniCmd),
    /// Readiness and the headline numbers of the metrics: what /ready and /metrics say.
    Info {
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum CniCmd {
    /// Put the plugin and a conflist per network where runtimes look for them.
    Install {
        /// CNI plugin directory.
        #[arg(long, default_value = crate::cni::setup::DEFAULT_BIN_DIR)]
        bin_dir: PathBuf,
        /// CNI network config directory.
        #[arg(long, default_value = crate::cni::setup::DEFAULT_CONF_DIR)]
        conf_dir: PathBuf,
        /// Agent networks to offer (each must exist).
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Print the conflist of a network.
    Conflist { network: String },
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
    /// Do not answer host.docker.internal and host.containers.internal (on by default: each
    /// network's gateway, or --host-address).
    #[arg(long)]
    pub no_host_names: bool,
    /// The address host.docker.internal and host.containers.internal answer (repeatable, one
    /// per family); default: the asker's network's gateway.
    #[arg(long = "host-address")]
    pub host_addresses: Vec<std::net::IpAddr>,
    /// Prefix of the bridges and veths the agent makes.
    #[arg(long)]
    pub link_prefix: Option<String>,
    /// Where /metrics, /health and /ready listen, IP:PORT (default 127.0.0.1:9253); "" turns
    /// them off.
    #[arg(long)]
    pub metrics_addr: Option<String>,
    /// Join a cluster: etcd://HOST:PORT[,HOST:PORT...] (global networks, names across hosts);
    /// https:// or etcds:// for TLS.
    #[arg(long)]
    pub cluster_store: Option<String>,
    /// PEM file of the CA that signed the etcd members' certificates (TLS).
    #[arg(long)]
    pub cluster_ca: Option<std::path::PathBuf>,
    /// PEM file of this host's client certificate for etcd (mutual TLS; with --cluster-key).
    #[arg(long)]
    pub cluster_cert: Option<std::path::PathBuf>,
    /// PEM file of the private key of --cluster-cert.
    #[arg(long)]
    pub cluster_key: Option<std::path::PathBuf>,
    /// etcd user (RBAC), with --cluster-password-file.
    #[arg(long)]
    pub cluster_user: Option<String>,
    /// File holding the etcd user's password (its first line).
    #[arg(long)]
    pub cluster_password_file: Option<std::path::PathBuf>,
    /// This host's address as the other hosts reach it (with --cluster-store).
    #[arg(long)]
    pub advertise_addr: Option<std::net::IpAddr>,
    /// Seconds this host's records outlive it in the cluster store.
    #[arg(long)]
    pub cluster_lease_ttl: Option<u64>,
    /// Seconds a host may be gone from the cluster store before others release its address
    /// claims (0: never).
    #[arg(long)]
    pub cluster_claim_grace: Option<u64>,
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
        /// `--ipv4=false`: an IPv6-only network (with --ipv6 and an IPv6 --subnet).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
        ipv4: bool,
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
        /// DNS server for the names that are not local of every container on it without its
        /// own --dns (repeatable; Podman's --dns): the option attach-agent.dns_servers.
        #[arg(long = "dns")]
        dns: Vec<String>,
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
    /// Endpoint driver options, KEY=VALUE (`com.docker.network.endpoint.ifname=NAME` names
    /// the interface inside).
    #[arg(long = "driver-opt")]
    pub driver_opts: Vec<String>,
    /// The endpoint with the highest priority gives the container its default routes (ties:
    /// a network with IPv4 and IPv6 first, then by name, as Docker).
    #[arg(long = "gw-priority", allow_negative_numbers = true)]
    pub gw_priority: Option<i64>,
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
            driver_opts: (!self.driver_opts.is_empty())
                .then(|| output::key_values(&self.driver_opts)),
            gw_priority: self.gw_priority,
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
    /// The MAC of the interface on `--network`.
    #[arg(long = "mac-address")]
    pub mac_address: Option<String>,
    /// Upstream DNS server for this container's names that are not local (repeatable): the
    /// gateway DNS forwards them there instead of to the network's or the host's.
    #[arg(long = "dns")]
    pub dns: Vec<String>,
    /// A search domain for its resolv.conf (repeatable).
    #[arg(long = "dns-search")]
    pub dns_search: Vec<String>,
    /// An option for its resolv.conf, e.g. ndots:2 (repeatable).
    #[arg(long = "dns-option")]
    pub dns_options: Vec<String>,
    /// A line for its hosts file, NAME:IP (IP may be host-gateway) (repeatable).
    #[arg(long = "add-host")]
    pub add_hosts: Vec<String>,
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

/// Run a client command. Returns the process exit code.
pub async fn run_client(client: &Client, cmd: Command) -> Result<i32, ClientError> {
    match cmd {
        Command::Daemon(_) => Err(ClientError::Usage(
            "`daemon` runs the agent; it is not a command for a running one".into(),
        )),
        Command::Network(n) => network::run(client, n).await,
        Command::Container(c) => container::run(client, c).await,
        Command::Cni(c) => cni::run(client, c).await,
        Command::Info { json } => {
            let status: crate::metrics::Status = client
                .json(Method::GET, "/attach-agent/v1/status", None::<&()>)
                .await?;
            if json {
                print_json(&status);
            } else {
                print!("{}", status.text());
            }
            Ok(if status.ready { 0 } else { 1 })
        }
        Command::Run(args) => {
            let id = container::create(client, &args).await?;
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
pub(super) async fn each<F, Fut>(names: &[String], f: F) -> Result<i32, ClientError>
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
pub(super) async fn inspect(
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
