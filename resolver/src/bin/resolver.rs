//! The standalone resolver: serves a records file on the addresses it lists, reloading on
//! change or SIGHUP without dropping queries.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::Parser;
use resolver::metrics::exposition::Exposition;
use resolver::metrics::DnsMetrics;
use resolver::observe::{self, Check, ObserveListener, Observed};
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
    /// Where /metrics, /health and /ready listen, IP:PORT (overrides the file's
    /// metrics_addr; default 127.0.0.1:9253); "" turns them off.
    #[arg(long)]
    metrics_addr: Option<String>,
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

/// What the metrics listener shows of the standalone resolver.
struct Shown {
    server: Server,
    /// The records applied and every listener open.
    serving: AtomicBool,
}

impl Observed for Shown {
    async fn render(&self, mut e: Exposition) -> Exposition {
        self.server.render_metrics(&mut e);
        e
    }

    fn readiness(&self) -> Vec<Check> {
        vec![Check {
            name: "records loaded and listeners open".into(),
            ok: self.serving.load(Ordering::Relaxed),
        }]
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
    let metrics_text = args
        .metrics_addr
        .clone()
        .or_else(|| records.metrics_addr.clone())
        .unwrap_or_else(|| observe::DEFAULT_METRICS_ADDR.to_string());
    let metrics_addr = observe::parse_metrics_addr(&metrics_text)?;
    let counting = match metrics_addr {
        Some(_) => DnsMetrics::on(),
        None => DnsMetrics::off(),
    };
    let server = Server::with_metrics(&config, Table::new(), counting)?;
    let shown = Arc::new(Shown {
        server: server.clone(),
        serving: AtomicBool::new(false),
    });
    let observer: Option<ObserveListener> = match metrics_addr {
        Some(addr) => Some(
            ObserveListener::open(addr, shown.clone())
                .await
                .map_err(|e| format!("metrics_addr {addr}: {e}"))?,
        ),
        None => None,
    };
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
    shown.serving.store(true, Ordering::Relaxed);
    // Tests and scripts wait for this line to know every listener is open; the next says
    // where the metrics are (a port 0 asked for is known only now).
    // One write, its error ignored: a reader that took the first line and closed the pipe
    // must not take the resolver down.
    let metrics_line = match &observer {
        Some(o) => format!("metrics http://{}", o.addr()),
        None => "metrics off".to_string(),
    };
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(format!("ready\n{metrics_line}\n").as_bytes());
        let _ = out.flush();
    }

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
