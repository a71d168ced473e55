//! `matchchat-baseline`: the thin relay of [`matchchat_loadgen::baseline`], standalone.
//! Stops on SIGINT/SIGTERM.

use clap::Parser;
use std::net::SocketAddr;
use std::process::ExitCode;

/// The thinnest WebSocket relay on the server's stack, for side-by-side benchmarks.
#[derive(Parser)]
#[command(name = "matchchat-baseline", version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9001")]
    bind: SocketAddr,
    /// Read buffer per connection, in bytes (tungstenite's default is 131072).
    #[arg(long, default_value_t = matchchat_loadgen::baseline::DEFAULT_READ_BUFFER)]
    read_buffer: usize,
    /// Runtime worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if args.threads > 0 {
        runtime.worker_threads(args.threads);
    }
    let runtime = match runtime.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("matchchat-baseline: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async {
        let baseline = match matchchat_loadgen::baseline::start_with(
            args.bind,
            matchchat_loadgen::baseline::Relay {
                read_buffer: args.read_buffer,
                ..Default::default()
            },
        )
        .await
        {
            Ok(b) => b,
            Err(e) => {
                eprintln!("matchchat-baseline: cannot listen on {}: {e}", args.bind);
                return ExitCode::from(2);
            }
        };
        eprintln!(
            "matchchat-baseline: listening on ws://{}/ws",
            baseline.local_addr()
        );
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(e) => {
                    eprintln!("matchchat-baseline: signals: {e}");
                    return ExitCode::from(2);
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        baseline.shutdown();
        ExitCode::SUCCESS
    })
}
