//! The standalone resolver: serves a records file on the addresses it lists, reloading on
//! change or SIGHUP without dropping queries.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::Parser;
use resolver::records::Records;
use resolver::{ResolverConfig, Server, Table};
use tokio::signal::unix::{signal, SignalKind};

/// Big tables on transparent huge pages (see `resolver::huge_pages`).
#[global_allocator]
static ALLOC: resolver::huge_pages::HugePages = resolver::huge_pages::HugePages;

/// Scoped container DNS on a records file.
#[derive(Debug, Parser)]
#[command(name = "resolver", version)]
struct Args {
    /// The records file (TOML: networks, listen addresses, containers). See configs/records.toml.
    #[arg(long, short = 'r')]
    records: PathBuf,
    /// Port of every listener (overrides the file's [dns] port).
    #[arg(long)]
    port: Option<u16>,
    /// Upstream server IP[:PORT], repeatable (overrides the file's; default: resolv.conf).
    #[arg(long = "upstream")]
    upstreams: Vec<String>,
    /// resolv.conf to take upstreams from when none are given.
    #[arg(long)]
    resolv_conf: Option<PathBuf>,
    /// TTL of local answers in seconds.
    #[arg(long)]
    ttl: Option<u32>,
    /// Per-upstream timeout in milliseconds.
    #[arg(long)]
    forward_timeout_ms: Option<u64>,
    /// Log filter (tracing's EnvFilter syntax), e.g. info or resolver=debug; RUST_LOG when
    /// not given. Logs go to stderr, without colour unless it is a terminal.
    #[arg(long, env = "RUST_LOG", default_value = resolver::logging::DEFAULT_FILTER)]
    log: String,
}

impl Args {
    /// The file's [dns] settings with the flags on top.
    fn config(&self, records: &Records) -> ResolverConfig {
        let mut c = records.dns.clone().unwrap_or_default();
        if let Some(p) = self.port {
            c.port = p;
        }
        if !self.upstreams.is_empty() {
            c.upstreams = self.upstreams.clone();
        }
        if let Some(r) = &self.resolv_conf {
            c.resolv_conf = r.clone();
        }
        if let Some(t) = self.ttl {
            c.ttl = t;
        }
        if let Some(t) = self.forward_timeout_ms {
            c.forward_timeout_ms = t;
        }
        c
    }
}

fn stamp(path: &PathBuf) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    resolver::logging::init(&args.log);
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("resolver: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let records = Records::load(&args.records)?;
    let config = args.config(&records);
    let server = Server::new(&config, Table::new())?;
    let mut records = records;
    records.dns = Some(config);
    records.apply(&server).await?;
    for (spec, _) in &records.networks {
        for addr in server.listen_addrs(&spec.id).await {
            tracing::info!(network = %spec.name, %addr, "serving");
        }
    }
    // The table holds what is served; the parsed file is not needed any more, and the memory
    // its parse took goes back to the system (glibc keeps freed heap otherwise).
    drop(records);
    // SAFETY: malloc_trim only releases free heap pages.
    unsafe { libc::malloc_trim(0) };
    // Tests and scripts wait for this line to know every listener is open.
    println!("ready");

    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut seen = stamp(&args.records);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        let reason = tokio::select! {
            _ = hup.recv() => "SIGHUP",
            _ = tick.tick() => {
                let now = stamp(&args.records);
                if now == seen { continue; }
                seen = now;
                "file changed"
            }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        };
        match Records::load(&args.records) {
            Ok(mut new) => {
                new.dns = Some(args.config(&new));
                match new.apply(&server).await {
                    Ok(()) => {
                        tracing::info!(
                            reason,
                            endpoints = server.table().endpoint_count(),
                            "reloaded"
                        );
                        // SAFETY: malloc_trim only releases free heap pages.
                        unsafe { libc::malloc_trim(0) };
                    }
                    Err(e) => tracing::error!(reason, error = %e, "reload partly failed"),
                }
            }
            Err(e) => {
                tracing::error!(reason, error = %e, "records file rejected, keeping the old records")
            }
        }
    }
    server.shutdown().await;
    Ok(())
}
