//! The `sluice` binary: parse the command line, set up logging, run.

use clap::Parser;
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// mimalloc instead of the system allocator: glibc's per-arena locks, free-list consolidation
/// and frees of memory another thread allocated (request-log rows, vault results) cost ~10% of
/// the gateway's CPU under load (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run());
    // Work still on the blocking pool — a connector compiling when a first start was stopped —
    // is not waited for: its result has nowhere to go.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    code
}

async fn run() -> std::process::ExitCode {
    let cli = sluice::config::Cli::parse();
    let default_filter = || EnvFilter::new(cli.command.default_log_filter());
    let filter = match std::env::var("SLUICE_LOG") {
        Ok(text) => EnvFilter::try_new(&text).unwrap_or_else(|error| {
            // Said before logging starts, so on stderr as it is: a filter silently ignored
            // would hide the lines the operator asked for.
            eprintln!("warning: SLUICE_LOG={text:?} is not a log filter ({error}); using the default");
            default_filter()
        }),
        Err(_) => default_filter(),
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.log_format == "json" {
        logs.json().init();
    } else {
        logs.with_ansi(std::io::stderr().is_terminal()).init();
    }
    match sluice::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
