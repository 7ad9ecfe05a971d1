//! Project tasks (`cargo xtask TASK`, an alias in `.cargo/config.toml`): things done to the
//! repository, kept apart from the product and from the benchmarks.

mod reliability;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand, Debug)]
enum Task {
    /// Run the fault, hostile-input, churn, crash and access tests (and, when asked, the
    /// fuzzers) and write `docs/reliability.md` from the figures they print. Needs root.
    ReliabilityReport(reliability::Args),
}

fn main() -> std::process::ExitCode {
    match Cli::parse().task {
        Task::ReliabilityReport(args) => reliability::run(args),
    }
}
