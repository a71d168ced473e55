//! Server configuration: command-line flags, each also settable by environment variable.

use clap::{Parser, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// Match-and-chat server.
#[derive(Clone, Debug, Parser)]
#[command(name = "matchchat-server", version, about)]
pub struct Config {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, env = "MATCHCHAT_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// Directory with the trunk-built browser client, served at `/`.
    #[arg(long, env = "MATCHCHAT_STATIC_DIR", default_value = "dist")]
    pub static_dir: PathBuf,

    /// Players per room.
    #[arg(long, env = "MATCHCHAT_ROOM_SIZE", default_value_t = 2, value_parser = clap::value_parser!(u16).range(2..=64))]
    pub room_size: u16,

    /// How long a disconnected session player keeps its room, in milliseconds.
    #[arg(long, env = "MATCHCHAT_RESUME_GRACE_MS", default_value_t = 30_000)]
    pub resume_grace_ms: u64,

    /// Room events kept per room for replay on resume.
    #[arg(long, env = "MATCHCHAT_HISTORY", default_value_t = 1_000)]
    pub history: usize,

    /// `chat_sn`s remembered per room for idempotency.
    #[arg(long, env = "MATCHCHAT_SN_MEMORY", default_value_t = 10_000)]
    pub sn_memory: usize,

    /// Sessions expire this long after their last use, in seconds.
    #[arg(long, env = "MATCHCHAT_SESSION_TTL_SECS", default_value_t = 24 * 3600)]
    pub session_ttl_secs: u64,

    /// Most sessions held at once; `get_config` answers -20001 beyond it.
    #[arg(long, env = "MATCHCHAT_MAX_SESSIONS", default_value_t = 1_000_000)]
    pub max_sessions: usize,

    /// Requests per second per connection (token bucket rate).
    #[arg(long, env = "MATCHCHAT_RATE_PER_SEC", default_value_t = 20.0)]
    pub rate_per_sec: f64,

    /// Token bucket burst.
    #[arg(long, env = "MATCHCHAT_RATE_BURST", default_value_t = 40.0)]
    pub rate_burst: f64,

    /// Consecutive rate-limited frames after which the connection is closed (1008).
    #[arg(long, env = "MATCHCHAT_FLOOD_CLOSE_AFTER", default_value_t = 200)]
    pub flood_close_after: u32,

    /// Largest WebSocket message in bytes; larger closes the connection with 1009.
    #[arg(long, env = "MATCHCHAT_MAX_FRAME_BYTES", default_value_t = matchchat_core::limits::FRAME_MAX_BYTES)]
    pub max_frame_bytes: usize,

    /// Frames queued for one connection before it counts as a slow consumer and is closed
    /// (1008); never less than `--history` + 16, so a resume's replay always fits. Queued
    /// chat frames share their payload with the room, so a full queue costs little memory.
    #[arg(long, env = "MATCHCHAT_OUTBOUND_QUEUE", default_value_t = 4096)]
    pub outbound_queue: usize,

    /// Interval between server pings, in milliseconds.
    #[arg(long, env = "MATCHCHAT_PING_INTERVAL_MS", default_value_t = 20_000)]
    pub ping_interval_ms: u64,

    /// A connection silent for this long is dropped, in milliseconds.
    #[arg(long, env = "MATCHCHAT_IDLE_TIMEOUT_MS", default_value_t = 60_000)]
    pub idle_timeout_ms: u64,

    /// Most WebSocket connections at once; upgrades beyond it get HTTP 503.
    #[arg(long, env = "MATCHCHAT_MAX_CONNECTIONS", default_value_t = 100_000)]
    pub max_connections: usize,

    /// Most WebSocket connections from one IP address (0: no limit).
    #[arg(long, env = "MATCHCHAT_MAX_CONNECTIONS_PER_IP", default_value_t = 0)]
    pub max_connections_per_ip: usize,

    /// A browser origin allowed to open `/ws` besides the page's own (repeatable, or
    /// comma-separated in the environment), e.g. `http://127.0.0.1:8000` for `trunk serve`.
    #[arg(
        long = "allowed-origin",
        env = "MATCHCHAT_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// How long shutdown waits for connections to close, in milliseconds.
    #[arg(long, env = "MATCHCHAT_SHUTDOWN_GRACE_MS", default_value_t = 3_000)]
    pub shutdown_grace_ms: u64,

    /// Log format.
    #[arg(long, env = "MATCHCHAT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    /// Share queues, rooms and sessions with other nodes through this Redis
    /// (`redis://127.0.0.1:6379`); without it everything stays in this process.
    #[arg(long, env = "MATCHCHAT_REDIS_URL")]
    pub redis_url: Option<String>,

    /// Prefix of every Redis key, so that several deployments can share one Redis.
    #[arg(long, env = "MATCHCHAT_REDIS_PREFIX", default_value = "matchchat")]
    pub redis_prefix: String,

    /// How often a node tells the others it is alive, in ms (with `--redis-url`).
    #[arg(long, env = "MATCHCHAT_NODE_HEARTBEAT_MS", default_value_t = 1_000)]
    pub node_heartbeat_ms: u64,

    /// A node silent this long is dead: its players' connections are detached and they
    /// resume on another node, in ms (with `--redis-url`).
    #[arg(long, env = "MATCHCHAT_NODE_TIMEOUT_MS", default_value_t = 5_000)]
    pub node_timeout_ms: u64,

    /// How often the shared state is snapshotted and the Redis log trimmed behind it, in
    /// ms (with `--redis-url`).
    #[arg(long, env = "MATCHCHAT_SNAPSHOT_EVERY_MS", default_value_t = 30_000)]
    pub snapshot_every_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config::parse_from(["matchchat-server"])
    }
}

impl Config {
    pub fn resume_grace(&self) -> Duration {
        Duration::from_millis(self.resume_grace_ms)
    }
    pub fn ping_interval(&self) -> Duration {
        Duration::from_millis(self.ping_interval_ms.max(1))
    }
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms.max(1))
    }
    pub fn session_ttl(&self) -> Duration {
        Duration::from_secs(self.session_ttl_secs)
    }
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}
