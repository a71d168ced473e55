//! Counters for `GET /metrics`, written in the Prometheus text format by hand (a handful
//! of atomics does not justify a metrics crate).

use matchchat_core::Code;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Process-wide counters; gauges of rooms and queues come from the broker.
#[derive(Debug, Default)]
pub struct Metrics {
    pub connections_open: AtomicU64,
    pub connections_total: AtomicU64,
    pub connections_refused: AtomicU64,
    pub frames_in: AtomicU64,
    pub frames_out: AtomicU64,
    pub chat_messages: AtomicU64,
    pub slow_consumers_closed: AtomicU64,
    pub sessions_created: AtomicU64,
    errors: [AtomicU64; Code::ALL.len()],
}

impl Metrics {
    /// Counts one error answered with `code`.
    pub fn error(&self, code: Code) {
        if let Some(i) = Code::ALL.iter().position(|c| *c == code) {
            self.errors[i].fetch_add(1, Relaxed);
        }
    }

    pub fn error_count(&self, code: Code) -> u64 {
        Code::ALL
            .iter()
            .position(|c| *c == code)
            .map_or(0, |i| self.errors[i].load(Relaxed))
    }

    /// The exposition text, with the broker's gauges.
    pub fn render(&self, stats: &crate::broker::BrokerStats) -> String {
        let mut out = String::with_capacity(2048);
        let mut gauge = |name: &str, help: &str, kind: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        gauge(
            "matchchat_connections",
            "Open WebSocket connections.",
            "gauge",
            self.connections_open.load(Relaxed),
        );
        gauge(
            "matchchat_connections_total",
            "WebSocket connections accepted.",
            "counter",
            self.connections_total.load(Relaxed),
        );
        gauge(
            "matchchat_connections_refused_total",
            "WebSocket upgrades refused (limits, draining, unknown session).",
            "counter",
            self.connections_refused.load(Relaxed),
        );
        gauge(
            "matchchat_messages_in_total",
            "Frames received from clients.",
            "counter",
            self.frames_in.load(Relaxed),
        );
        gauge(
            "matchchat_messages_out_total",
            "Frames sent to clients.",
            "counter",
            self.frames_out.load(Relaxed),
        );
        gauge(
            "matchchat_chat_messages_total",
            "Chat requests that passed validation (repeats of a chat_sn included).",
            "counter",
            self.chat_messages.load(Relaxed),
        );
        gauge(
            "matchchat_slow_consumers_closed_total",
            "Connections closed because their outbound queue was full.",
            "counter",
            self.slow_consumers_closed.load(Relaxed),
        );
        gauge(
            "matchchat_sessions_created_total",
            "Sessions created by get_config.",
            "counter",
            self.sessions_created.load(Relaxed),
        );
        gauge(
            "matchchat_sessions",
            "Live sessions.",
            "gauge",
            stats.sessions as u64,
        );
        gauge(
            "matchchat_players",
            "Players known to the room state machine.",
            "gauge",
            stats.players as u64,
        );
        gauge(
            "matchchat_rooms",
            "Open rooms.",
            "gauge",
            stats.rooms as u64,
        );
        let _ = writeln!(
            out,
            "# HELP matchchat_queued_players Players waiting to be matched, per pool.\n# TYPE matchchat_queued_players gauge"
        );
        for (pool, n) in &stats.queued {
            let _ = writeln!(
                out,
                "matchchat_queued_players{{product_id=\"{}\",game_zone=\"{}\"}} {n}",
                pool.product_id,
                escape_label(&pool.zone)
            );
        }
        let _ = writeln!(
            out,
            "# HELP matchchat_errors_total Error answers sent, by protocol code.\n# TYPE matchchat_errors_total counter"
        );
        for (code, n) in Code::ALL.iter().zip(&self.errors) {
            let _ = writeln!(
                out,
                "matchchat_errors_total{{code=\"{}\"}} {}",
                code.value(),
                n.load(Relaxed)
            );
        }
        out
    }
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
