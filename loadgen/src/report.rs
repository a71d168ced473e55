//! The figures of one run: per-client outcomes folded into a [`Report`], printed as one
//! JSON line ([`Report::to_json`]) and a human summary ([`Report::summary`]).

use crate::options::{Mode, Options, Target};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// What one client saw.
#[derive(Debug, Default)]
pub struct Outcome {
    pub connect_us: Option<u64>,
    pub match_us: Option<u64>,
    pub connect_match_us: Option<u64>,
    pub matched: bool,
    /// Idle mode: still up at the end of the hold.
    pub alive: bool,
    /// Data messages sent and acknowledged by the server's reply (or the baseline's echo).
    pub sent: u64,
    pub acked: u64,
    /// Distinct data messages received from the peer (and those before the chat ended).
    pub delivered: u64,
    pub delivered_in_window: u64,
    pub dup: u64,
    pub reorder: u64,
    /// Sequence numbers skipped and never filled in.
    pub missing: u64,
    /// Highest sequence number received from the peer (its final marker included).
    pub last_seq: u64,
    /// The peer's final marker, once received: it sent `fin_seq - 1` data messages.
    pub fin_seq: Option<u64>,
    /// The peer's global client index (from the id map, or its first message).
    pub peer_index: Option<u64>,
    pub identity_errors: u64,
    pub errors: BTreeMap<String, u64>,
    /// `--stall-one`: this client's part in the stalled pair, if it has one (the pair is
    /// left out of the figures above and reported under `stalled`).
    pub stall: Option<StallPart>,
}

/// What one side of the stalled pair saw.
#[derive(Clone, Debug)]
pub enum StallPart {
    /// The client that stopped reading.
    Stalled(StalledSide),
    /// Its peer, which kept sending to it.
    Peer(StallPeerSide),
}

/// The stalled client's view: nothing during the chat (it does not read), then what it
/// found when it read again after the chat.
#[derive(Clone, Debug, Default)]
pub struct StalledSide {
    pub index: u64,
    /// The connection turned out closed (close frame, end of stream or reset) when read
    /// again.
    pub closed: bool,
    /// Text and binary frames read after the chat, and their bytes.
    pub drained_frames: u64,
    pub drained_bytes: u64,
    /// The code of the close frame read after the chat, if one came.
    pub close_code: Option<u16>,
    /// How the connection ended when read again: `close frame`, `eof` (the server closed
    /// TCP without a close frame reaching the client), `error: …`, or `open` (still up at
    /// the deadline).
    pub ended: String,
}

/// The stalled client's peer's view.
#[derive(Clone, Debug, Default)]
pub struct StallPeerSide {
    /// Data messages sent to the stalled client, and acknowledged by the server's reply.
    pub sent: u64,
    pub acked: u64,
    /// When the 20003 (peer left) came, in ms from the start of the chat: the moment the
    /// server dropped the stalled client from the room.
    pub peer_left_after_ms: Option<f64>,
}

impl Outcome {
    pub fn error(&mut self, kind: impl Into<String>) {
        *self.errors.entry(kind.into()).or_insert(0) += 1;
    }

    pub fn failed(kind: &str) -> Outcome {
        let mut o = Outcome::default();
        o.error(kind);
        o
    }
}

/// Readings taken by the coordinator.
#[derive(Debug, Default)]
pub struct Samples {
    pub server_rss_before: Option<u64>,
    pub server_rss_connected: Option<u64>,
    pub server_rss_end: Option<u64>,
    pub server_cpu: Option<f64>,
    pub loadgen_cpu: Option<f64>,
    pub loadgen_rss: Option<u64>,
    pub connected_after: Option<Duration>,
    pub matched_after: Option<Duration>,
    /// Highest server RSS of the samples taken every 250 ms over the whole run, and how
    /// many were taken.
    pub server_rss_max: Option<u64>,
    pub server_rss_samples: u64,
    /// `--flood-one`: what the flooder saw (moved into [`Report::flooder`]).
    pub flooder: Option<Flooder>,
}

/// What the flooder (`--flood-one`) saw.
#[derive(Clone, Debug, Default)]
pub struct Flooder {
    pub connected: bool,
    /// Chat frames written.
    pub sent: u64,
    /// Replies: 40009 (rate-limited), 40004 (within the limit, but the flooder is in no
    /// room), anything else.
    pub rate_limited_40009: u64,
    pub not_in_room_40004: u64,
    pub other_replies: u64,
    /// The server ended the connection (close frame, or TCP closed or reset).
    pub closed: bool,
    pub close_code: Option<u16>,
    /// From the first frame written to the end of the connection, in ms.
    pub after_ms: Option<f64>,
    /// From the first frame written to the first 40009, in ms.
    pub first_40009_after_ms: Option<f64>,
    /// Why it stopped early, or what went wrong (connect, write, read).
    pub error: Option<String>,
}

impl Flooder {
    fn json(&self) -> Value {
        json!({
            "connected": self.connected,
            "sent": self.sent,
            "rate_limited_40009": self.rate_limited_40009,
            "not_in_room_40004": self.not_in_room_40004,
            "other_replies": self.other_replies,
            "closed": self.closed,
            "close_code": self.close_code,
            "after_ms": self.after_ms,
            "first_40009_after_ms": self.first_40009_after_ms,
            "error": self.error,
        })
    }
}

/// The stalled pair (`--stall-one`), both sides together.
#[derive(Clone, Debug, Default)]
pub struct Stalled {
    /// Global index of the client that stopped reading.
    pub index: u64,
    /// Whether its peer was found in this process.
    pub peer_found: bool,
    /// The server ended the stalled connection: its peer got 20003, or the stalled client
    /// found the connection closed when it read again.
    pub closed: bool,
    /// Close code read by the stalled client, if any reached it.
    pub close_code: Option<u16>,
    /// When the server dropped it (its peer's 20003), in ms from the start of the chat.
    pub after_ms: Option<f64>,
    pub ended: String,
    pub drained_frames: u64,
    pub drained_bytes: u64,
    pub peer_sent: u64,
    pub peer_acked: u64,
    /// Errors of either side (kept out of the run's error count).
    pub errors: BTreeMap<String, u64>,
}

impl Stalled {
    fn json(&self) -> Value {
        json!({
            "index": self.index,
            "peer_found": self.peer_found,
            "closed": self.closed,
            "close_code": self.close_code,
            "after_ms": self.after_ms,
            "ended": self.ended,
            "drained_frames": self.drained_frames,
            "drained_bytes": self.drained_bytes,
            "peer_sent": self.peer_sent,
            "peer_acked": self.peer_acked,
            "errors": self.errors,
        })
    }
}

/// p50 / p99 / p999 / max of a histogram of microseconds, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Percentiles {
        let ms = |us: u64| us as f64 / 1000.0;
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.50)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }

    fn json(&self) -> Value {
        json!({"p50": self.p50, "p99": self.p99, "p999": self.p999, "max": self.max, "count": self.count})
    }
}

/// The figures of one run.
#[derive(Debug)]
pub struct Report {
    pub target: Target,
    pub mode: Mode,
    pub connections: usize,
    pub window: usize,
    pub rate: Option<f64>,
    pub msg_bytes: usize,
    pub source_ips: u8,
    pub duration_s: f64,
    pub connected: u64,
    pub matched: u64,
    pub alive: u64,
    pub connect_ms: Percentiles,
    pub match_ms: Percentiles,
    pub connect_match_ms: Percentiles,
    pub match_phase_s: Option<f64>,
    pub sent: u64,
    pub delivered: u64,
    pub delivered_per_sec: f64,
    pub latency_ms: Percentiles,
    pub lost: u64,
    pub dup: u64,
    pub reorder: u64,
    pub identity_errors: u64,
    pub errors: u64,
    pub error_kinds: BTreeMap<String, u64>,
    pub server_pid: Option<u32>,
    pub samples: Samples,
    pub stalled: Option<Stalled>,
    pub flooder: Option<Flooder>,
}

impl Report {
    pub(crate) fn build(
        opts: &Options,
        n: usize,
        chat: Option<Duration>,
        outcomes: Vec<Outcome>,
        sent_by_local: &[u64],
        latency: Histogram<u64>,
        mut samples: Samples,
    ) -> Result<Report, String> {
        let flooder = samples.flooder.take();
        let mut connect = crate::run::new_histogram()?;
        let mut matching = crate::run::new_histogram()?;
        let mut connect_match = crate::run::new_histogram()?;
        let mut error_kinds = BTreeMap::new();
        let (mut lost, mut dup, mut reorder, mut identity) = (0, 0, 0, 0);
        let (mut sent, mut delivered, mut in_window) = (0, 0, 0);
        let (mut connected, mut matched, mut alive) = (0, 0, 0);
        let base = opts.index_base;
        let mut stalled = opts.stall_one.then(|| Stalled {
            index: base,
            ended: "not reached".into(),
            ..Stalled::default()
        });
        for o in &outcomes {
            if let Some(us) = o.connect_us {
                connected += 1;
                connect.saturating_record(us.max(1));
            }
            if let Some(us) = o.match_us {
                matching.saturating_record(us.max(1));
            }
            if let Some(us) = o.connect_match_us {
                connect_match.saturating_record(us.max(1));
            }
            matched += u64::from(o.matched);
            alive += u64::from(o.alive);
            if let (Some(part), Some(st)) = (&o.stall, stalled.as_mut()) {
                // The stalled pair: reported apart, not in the figures of the others.
                match part {
                    StallPart::Stalled(side) => {
                        st.index = side.index;
                        st.drained_frames = side.drained_frames;
                        st.drained_bytes = side.drained_bytes;
                        st.close_code = side.close_code;
                        st.ended.clone_from(&side.ended);
                        st.closed |= side.closed;
                    }
                    StallPart::Peer(side) => {
                        st.peer_found = true;
                        st.peer_sent = side.sent;
                        st.peer_acked = side.acked;
                        st.after_ms = side.peer_left_after_ms;
                        st.closed |= side.peer_left_after_ms.is_some();
                    }
                }
                for (k, v) in &o.errors {
                    *st.errors.entry(k.clone()).or_insert(0) += v;
                }
                continue;
            }
            sent += o.sent;
            delivered += o.delivered;
            in_window += o.delivered_in_window;
            dup += o.dup;
            reorder += o.reorder;
            identity += o.identity_errors;
            // Losses: what the peer sent, against what arrived.
            let peer_sent = o.peer_index.and_then(|p| {
                p.checked_sub(base)
                    .and_then(|l| sent_by_local.get(usize::try_from(l).ok()?).copied())
            });
            let expected = peer_sent.or(o.fin_seq.map(|f| f.saturating_sub(1)));
            match expected {
                Some(expected) => {
                    lost += o.missing + expected.saturating_sub(o.last_seq.min(expected));
                }
                None if o.matched && chat.is_some() && opts.mode() != Mode::Idle => {
                    *error_kinds
                        .entry("peer's sent count unknown (nothing received)".to_owned())
                        .or_insert(0) += 1;
                }
                None => {}
            }
            for (k, v) in &o.errors {
                *error_kinds.entry(k.clone()).or_insert(0) += v;
            }
        }
        let duration_s = chat.map_or(0.0, |d| d.as_secs_f64());
        let chatting = matches!(opts.mode(), Mode::Closed | Mode::Open);
        Ok(Report {
            target: opts.target,
            mode: opts.mode(),
            connections: n,
            window: opts.window,
            rate: opts.rate,
            msg_bytes: opts.msg_bytes,
            source_ips: opts.source_ip_count(),
            duration_s,
            connected,
            matched,
            alive,
            connect_ms: Percentiles::of(&connect),
            match_ms: Percentiles::of(&matching),
            connect_match_ms: Percentiles::of(&connect_match),
            match_phase_s: samples.matched_after.map(|d| d.as_secs_f64()),
            sent,
            delivered,
            delivered_per_sec: if chatting && duration_s > 0.0 {
                in_window as f64 / duration_s
            } else {
                0.0
            },
            latency_ms: Percentiles::of(&latency),
            lost,
            dup,
            reorder,
            identity_errors: identity,
            errors: error_kinds.values().sum(),
            error_kinds,
            server_pid: opts.server_pid,
            samples,
            stalled,
            flooder,
        })
    }

    /// Server CPU microseconds per delivered message over the chat window.
    pub fn server_cpu_us_per_msg(&self) -> Option<f64> {
        let in_window = self.delivered_per_sec * self.duration_s;
        self.samples
            .server_cpu
            .filter(|_| in_window > 0.0)
            .map(|cpu| cpu * 1e6 / in_window)
    }

    /// Server RSS growth per connection held (idle mode), in bytes.
    pub fn server_rss_bytes_per_conn(&self) -> Option<f64> {
        let held = if self.mode == Mode::Idle {
            self.alive
        } else {
            self.connected
        };
        let before = self.samples.server_rss_before?;
        let after = self
            .samples
            .server_rss_end
            .or(self.samples.server_rss_connected)?;
        (held > 0).then(|| (after.saturating_sub(before) * 1024) as f64 / held as f64)
    }

    /// Everything, as one JSON object.
    pub fn to_json(&self) -> Value {
        let mode = match self.mode {
            Mode::Closed => "closed",
            Mode::Open => "open",
            Mode::Idle => "idle",
            Mode::Match => "match",
        };
        let target = match self.target {
            Target::Server => "server",
            Target::Baseline => "baseline",
        };
        let s = &self.samples;
        json!({
            "target": target,
            "mode": mode,
            "connections": self.connections,
            "pairs": self.connections / 2,
            "window": self.window,
            "rate_per_client": self.rate,
            "msg_bytes": self.msg_bytes,
            "source_ips": self.source_ips,
            "duration_s": self.duration_s,
            "connected": self.connected,
            "matched": self.matched,
            "alive": self.alive,
            "connect_ms": self.connect_ms.json(),
            "match_ms": self.match_ms.json(),
            "connect_match_ms": self.connect_match_ms.json(),
            "match_phase_s": self.match_phase_s,
            "sent": self.sent,
            "delivered": self.delivered,
            "delivered_per_sec": self.delivered_per_sec,
            "latency_ms": self.latency_ms.json(),
            "lost": self.lost,
            "dup": self.dup,
            "reorder": self.reorder,
            "identity_errors": self.identity_errors,
            "errors": self.errors,
            "error_kinds": self.error_kinds,
            "server": {
                "pid": self.server_pid,
                "cpu_s": s.server_cpu,
                "cpu_us_per_msg": self.server_cpu_us_per_msg(),
                "rss_kib_before": s.server_rss_before,
                "rss_kib_connected": s.server_rss_connected,
                "rss_kib_end": s.server_rss_end,
                "rss_bytes_per_conn": self.server_rss_bytes_per_conn(),
                "rss_kib_max": s.server_rss_max,
                "rss_samples": s.server_rss_samples,
            },
            "stalled": self.stalled.as_ref().map(Stalled::json),
            "flooder": self.flooder.as_ref().map(Flooder::json),
            "loadgen": {"cpu_s": s.loadgen_cpu, "rss_kib": s.loadgen_rss},
        })
    }

    /// A few lines for people.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let j = self.to_json();
        out.push_str(&format!(
            "{} {} run: {} connections ({} source IPs), {} connected, {} matched\n",
            j["target"].as_str().unwrap_or(""),
            j["mode"].as_str().unwrap_or(""),
            self.connections,
            self.source_ips,
            self.connected,
            self.matched
        ));
        let p = |name: &str, p: &Percentiles| {
            format!(
                "  {name:<16} p50 {:>8.3} ms  p99 {:>8.3} ms  p999 {:>8.3} ms  max {:>8.3} ms  (n={})\n",
                p.p50, p.p99, p.p999, p.max, p.count
            )
        };
        out.push_str(&p("connect", &self.connect_ms));
        if self.mode != Mode::Idle {
            out.push_str(&p("ask→20001", &self.match_ms));
            out.push_str(&p("connect→20001", &self.connect_match_ms));
        }
        if matches!(self.mode, Mode::Closed | Mode::Open) {
            out.push_str(&format!(
                "  chat {:.1} s: sent {}, delivered {} ({:.0} msgs/s)\n",
                self.duration_s, self.sent, self.delivered, self.delivered_per_sec
            ));
            out.push_str(&p("end-to-end", &self.latency_ms));
            out.push_str(&format!(
                "  lost {}  dup {}  reorder {}  identity {}\n",
                self.lost, self.dup, self.reorder, self.identity_errors
            ));
            if let (Some(cpu), Some(per)) = (self.samples.server_cpu, self.server_cpu_us_per_msg())
            {
                out.push_str(&format!(
                    "  server CPU {cpu:.2} s over the chat, {per:.2} µs per delivered message\n"
                ));
            }
            if let Some(cpu) = self.samples.loadgen_cpu {
                out.push_str(&format!("  load generator CPU {cpu:.2} s over the chat\n"));
            }
        }
        if self.mode == Mode::Idle {
            out.push_str(&format!(
                "  held {:.0} s: {} of {} still up\n",
                self.duration_s, self.alive, self.connections
            ));
        }
        if let Some(rss) = self.samples.server_rss_end {
            out.push_str(&format!(
                "  server RSS {} KiB at the end ({} KiB before)",
                rss,
                self.samples.server_rss_before.unwrap_or(0)
            ));
            if let Some(per) = self.server_rss_bytes_per_conn() {
                out.push_str(&format!(", {per:.0} bytes per connection"));
            }
            out.push('\n');
        }
        if let Some(st) = &self.stalled {
            out.push_str(&format!(
                "  stalled client {}: {}, dropped from its room {} (its peer sent {} to it); read again after the chat: {} frames, {} bytes, then {}{}\n",
                st.index,
                if st.closed { "closed by the server" } else { "not closed" },
                st.after_ms
                    .map_or_else(|| "never".to_owned(), |ms| format!("{ms:.0} ms into the chat")),
                st.peer_sent,
                st.drained_frames,
                st.drained_bytes,
                st.ended,
                st.close_code.map_or_else(String::new, |c| format!(" (code {c})")),
            ));
        }
        if let Some(f) = &self.flooder {
            out.push_str(&format!(
                "  flooder: sent {}, got {} × 40009 and {} × 40004, {}{}\n",
                f.sent,
                f.rate_limited_40009,
                f.not_in_room_40004,
                match (f.closed, f.close_code) {
                    (true, Some(code)) => format!("closed with {code}"),
                    (true, None) => "closed without a close frame".to_owned(),
                    (false, _) => "not closed".to_owned(),
                },
                f.after_ms
                    .map_or_else(String::new, |ms| format!(" after {ms:.1} ms")),
            ));
            if let Some(e) = &f.error {
                out.push_str(&format!("    flooder: {e}\n"));
            }
        }
        if let (Some(max), Some(before)) =
            (self.samples.server_rss_max, self.samples.server_rss_before)
        {
            out.push_str(&format!(
                "  server RSS {before} KiB before, at most {max} KiB over the run ({} samples)\n",
                self.samples.server_rss_samples
            ));
        }
        out.push_str(&format!("  errors {}", self.errors));
        for (k, v) in &self.error_kinds {
            out.push_str(&format!("\n    {v} × {k}"));
        }
        out.push('\n');
        out
    }
}
