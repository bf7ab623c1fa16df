//! `backend-monitor`: parses the configuration and runs the server until Ctrl-C or SIGTERM.
//! Run as `backend-monitor ps`, `stop` or `start`, it is a client of a running server (see
//! `cli.rs`); run as `backend-monitor __shim …`, it is the shim that supervises one managed backend.

use clap::Parser;
use server::config::{Cli, Config, LogFormat, Subcommand};
use server::shim;
use server::startup::{Application, shutdown_signal};
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

#[global_allocator]
static HEAP: server::allocator::Heap = server::allocator::Heap;

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    match cli.command.take() {
        Some(Subcommand::Shim { report_fd, command }) => shim::run(report_fd, &command),
        Some(Subcommand::Client(command)) => return server::cli::run(command),
        None => {}
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(server::allocator::release_when_idle)
        .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(cli))
}

async fn serve(cli: Cli) -> ExitCode {
    let config = match Config::load(&cli) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let models = config.models.len();
    let app = match Application::build(config).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Ok(addr) = app.local_addr() {
        tracing::info!("backend-monitor watching {models} model(s) on http://{addr}");
    }
    match app.run_until_stopped(shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
