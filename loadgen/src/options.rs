//! The load generator's flags (also the library's configuration: tests build them with
//! [`Options::new`] and change fields).

use clap::{Parser, ValueEnum};

/// Which protocol the target speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// The match-and-chat server (checks `send_player_id` too).
    Server,
    /// The baseline relay (`matchchat-baseline`).
    Baseline,
}

/// What a run does after connecting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Window of `window` unacknowledged messages per client.
    Closed,
    /// `rate` messages per second per client, on a schedule.
    Open,
    /// Hold the connections, send nothing.
    Idle,
    /// Match everyone, then stop.
    Match,
}

/// Load generator for the match-and-chat server (and the baseline relay).
///
/// Prints one JSON line with the figures on stdout and a human summary on stderr.
#[derive(Clone, Debug, Parser)]
#[command(name = "matchchat-loadgen", version, about)]
pub struct Options {
    /// Server address (host:port); the WebSocket is `ws://ADDR/ws`. Several, comma
    /// separated, for the nodes of one cluster: clients are spread over them in turn.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: String,

    /// Protocol of the target.
    #[arg(long, value_enum, default_value_t = Target::Server)]
    pub target: Target,

    /// Client connections (two per pair).
    #[arg(short = 'n', long, conflicts_with = "pairs")]
    pub connections: Option<usize>,

    /// Pairs of clients (sets the connections to twice this).
    #[arg(short = 'p', long)]
    pub pairs: Option<usize>,

    /// Closed loop: messages in flight per client (unacknowledged by the sender's reply).
    #[arg(short = 'w', long, default_value_t = 1)]
    pub window: usize,

    /// Open loop: messages per second per client (latency from the intended send time).
    #[arg(short = 'r', long)]
    pub rate: Option<f64>,

    /// Seconds of chat (or of holding, with --idle).
    #[arg(short = 'd', long, default_value_t = 10.0)]
    pub duration: f64,

    /// Bytes of each `chat_msg` (padded; at least what the payload needs).
    #[arg(long, default_value_t = 32)]
    pub msg_bytes: usize,

    /// Hold the connections for --duration seconds without matching; report how many
    /// stayed up and the server's RSS.
    #[arg(long, conflicts_with_all = ["rate", "match_only"])]
    pub idle: bool,

    /// Only connect and match (no chat); implies --match-at-once.
    #[arg(long, conflicts_with = "rate")]
    pub match_only: bool,

    /// Connect everyone first, then have them all ask to match at the same moment.
    #[arg(long)]
    pub match_at_once: bool,

    /// Server process id, for its CPU time and RSS (from /proc).
    #[arg(long)]
    pub server_pid: Option<u32>,

    /// Source addresses 127.0.0.F … 127.0.0.F+K-1 to spread connections over (0: one
    /// per 10,000 connections).
    #[arg(long, default_value_t = 0)]
    pub source_ips: u8,

    /// F, the last octet of the first source address.
    #[arg(long, default_value_t = 1)]
    pub source_ip_first: u8,

    /// Index of this process's first client, for runs split over several processes.
    #[arg(long, default_value_t = 0)]
    pub index_base: u64,

    /// Connection handshakes in flight at once.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,

    /// Seconds allowed for connecting and matching everyone.
    #[arg(long, default_value_t = 60.0)]
    pub match_timeout: f64,

    /// Seconds allowed after the chat for the last messages to arrive.
    #[arg(long, default_value_t = 5.0)]
    pub drain_timeout: f64,

    /// Open loop: after matching, client 0 stops reading its socket (the connection stays
    /// open; it asks for a 4 KiB receive buffer so that the kernel absorbs less) while its
    /// peer keeps sending to it, at --stall-rate with the largest messages allowed (1,000
    /// characters, ~3.9 KB). At the end of the chat it reads again, to see how the server
    /// ended it. The pair is left out of the latency and loss figures and reported apart,
    /// under `stalled`.
    #[arg(long, requires = "rate")]
    pub stall_one: bool,

    /// Messages per second the stalled client's peer sends (--stall-one); the server's
    /// rate limit must allow it.
    #[arg(long, default_value_t = 80.0)]
    pub stall_rate: f64,

    /// Open loop: one extra connection, in no room, sends chat frames as fast as the socket
    /// takes them from the start of the chat until the server closes it or the chat ends;
    /// its replies (40009 rate-limited, 40004 for those within the limit) and its close
    /// are reported apart, under `flooder`.
    #[arg(long, requires = "rate")]
    pub flood_one: bool,

    /// Runtime worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,

    /// Print only the JSON line.
    #[arg(short, long)]
    pub quiet: bool,
}

impl Options {
    /// Defaults aimed at `addr` (what the flags give when only `--addr` is passed).
    pub fn new(addr: impl Into<String>) -> Options {
        let mut options = Options::parse_from(["matchchat-loadgen"]);
        options.addr = addr.into();
        options
    }

    /// The number of client connections.
    pub fn connection_count(&self) -> usize {
        self.connections.or(self.pairs.map(|p| p * 2)).unwrap_or(2)
    }

    pub fn mode(&self) -> Mode {
        if self.idle {
            Mode::Idle
        } else if self.match_only {
            Mode::Match
        } else if self.rate.is_some() {
            Mode::Open
        } else {
            Mode::Closed
        }
    }

    /// How many source addresses the connections are spread over.
    pub fn source_ip_count(&self) -> u8 {
        let wanted = if self.source_ips == 0 {
            self.connection_count().div_ceil(10_000).max(1)
        } else {
            usize::from(self.source_ips)
        };
        let room = 255usize
            .saturating_sub(usize::from(self.source_ip_first))
            .max(1);
        u8::try_from(wanted.min(room)).unwrap_or(1)
    }
}
