use clap::Parser;

use attach_agent::cli::client::Client;
use attach_agent::cli::{run_client, Cli, Command};
use attach_agent::config::DEFAULT_SOCKET;

/// Big tables on transparent huge pages (see `resolver::huge_pages`).
#[global_allocator]
static ALLOC: resolver::huge_pages::HugePages = resolver::huge_pages::HugePages;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        // Two workers at most (a sidecar), one when the agent is given one CPU: then a
        // request's task and its netlink connection's task hand off on one thread instead of
        // waking each other across threads on the same core (`compare --agent 10`: connect
        // p50 2.26x the kernel floor before, 1.88-1.94x with this and the link watch's
        // filter together; not measured apart).
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get().min(2)))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("attach-agent: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let code = rt.block_on(async move {
        match cli.command {
            Command::Daemon(args) => {
                resolver::logging::init(&args.log);
                match attach_agent::daemon::run(args).await {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!("attach-agent: {e}");
                        1
                    }
                }
            }
            cmd => {
                // A client's output piped into `head` ends quietly, as other Unix tools do,
                // instead of panicking on the broken pipe.
                // SAFETY: restoring the default disposition of SIGPIPE, before any thread of
                // ours writes, has no memory effects.
                unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
                let host = cli
                    .host
                    .unwrap_or_else(|| format!("unix://{DEFAULT_SOCKET}"));
                let client = match Client::new(&host) {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("{e}");
                        return 1;
                    }
                };
                match run_client(&client, cmd).await {
                    Ok(code) => code,
                    Err(e) => {
                        eprintln!("{e}");
                        1
                    }
                }
            }
        }
    });
    std::process::ExitCode::from(code as u8)
}
