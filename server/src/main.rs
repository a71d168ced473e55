//! `matchchat-server`: parses flags, starts the server, stops it on SIGINT/SIGTERM.

use clap::Parser;
use matchchat_server::{Config, init_logging, start};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    init_logging(config.log_format);
    let running = match start(config).await {
        Ok(running) => running,
        Err(e) => {
            eprintln!("matchchat-server: {e}");
            return ExitCode::from(2);
        }
    };
    let stop = running.stop_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received: shutting down");
        stop.cancel();
    });
    running.wait().await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
