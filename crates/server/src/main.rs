//! The `bavard` binary: parse the command line, set up logging, serve until SIGTERM or
//! SIGINT, then shut down gracefully and exit 0; or, for `bavard chat`, run the
//! terminal client ([`chat`], part of the binary, not of the server library).

mod chat;

use std::process::ExitCode;

use bavard::{
    app,
    config::{Cli, Command, LogFormat, ServeConfig},
};
use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match cli.command {
        Some(Command::Serve(config)) => *config,
        Some(Command::Chat(args)) => return chat::main(args),
        None => cli.serve,
    };
    init_logging(config.log_format);
    let workers = config.worker_threads();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("bavard: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("bavard: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    let db = config.db_for_logs();
    let server = app::start(config).await?;
    tracing::info!("Bavard listening on {}://{} (history in {db})", server.scheme(), server.addr());
    shutdown_signal().await?;
    tracing::info!("shutting down");
    server.stop().await?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    Ok(())
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("BAVARD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: logs redirected to a file or a collector stay plain.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // A log that cannot be written (a full disk) is dropped: tracing-subscriber would
    // report its own write error with `eprint!`, which panics when stderr fails and so
    // killed the thread that logged (the SQLite writer once, which closed the store for
    // good; see RELIABILITY.md).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .log_internal_errors(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
