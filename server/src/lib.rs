//! The match-and-chat server: warp + tokio IO around the `matchchat-core` state machine.
//!
//! - [`config`]: flags and environment.
//! - [`server`]: routes, limits at upgrade, startup and graceful shutdown.
//! - [`listener`]: the accept loop and the WebSocket handshake.
//! - [`connection`]: one WebSocket, one task (reads, writes its queue, rate limit, idle drop).
//! - [`broker`]: the shared-state interface and its in-memory implementation.
//! - [`redis_broker`]: the same interface over Redis, for several nodes.
//! - [`ids`], [`rate_limit`], [`metrics`]: small pieces the others use.
#![forbid(unsafe_code)]

pub mod broker;
pub mod config;
pub mod connection;
pub mod ids;
pub mod listener;
pub mod metrics;
pub mod rate_limit;
pub mod redis_broker;
pub mod server;

pub use config::{Config, LogFormat};
pub use server::{Running, StartError, start};

/// Installs the `tracing` subscriber (human or JSON lines; `RUST_LOG` filters, default info).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,warp=warn,hyper=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
