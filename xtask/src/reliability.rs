//! `cargo xtask reliability`: the slow-consumer and flood checks of the "Reliability"
//! issue, against release builds, written into `docs/RELIABILITY.md`.
//!
//! Three scenarios, each an open-loop run of 500 pairs (1,000 clients) × 5 msgs/s of
//! 32-byte messages against a fresh server started with [`SERVER_FLAGS`]:
//!
//! - `plain`: nothing else;
//! - `stall`: `--stall-one` — client 0 stops reading after its 20001 while its peer sends
//!   it 80 msgs/s of the largest messages allowed (~3.9 KB);
//! - `flood`: `--flood-one` — one more connection, in no room, writes chat frames as fast
//!   as the socket takes them.
//!
//! The scenarios run `--rounds` times, interleaved, the order turning by one each round
//! (plain, stall, flood; stall, flood, plain; …), and are compared by the median of the
//! rounds' p99 (a shared 2-core machine is noisy). After each
//! run the server's `/metrics` is read for its own counts (slow consumers closed, 40009s
//! answered), since both ways of being closed carry the same code (1008).
//!
//! Flags (after `cargo xtask reliability`): `--secs N` (length of each chat, default 20),
//! `--rounds N` (default 5), `--out PATH` (default `docs/RELIABILITY.md`; the section
//! between the markers is replaced, the rest of the file kept). Takes about 8 minutes.

use crate::bench::{self, Bench, Json, Run, fmt, num, ratio};
use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Server flags of every run.
///
/// - `--outbound-queue 320` (its floor is `--history` + 16, hence `--history 304`) instead
///   of 4,096 frames: the kernel already absorbs ~3 MB for a client that stops reading
///   before the server's queue sees anything, and 4,096 more frames of ~3.9 KB would take
///   the stall past the run. 320 is still above all the replies a flooder gets before its
///   close (burst 100 + 199 rejected), so even if none were written yet it is closed for
///   flooding, not as a slow consumer (with 32, a server that read the flood before
///   writing closed it as a slow consumer: same code, 1008).
/// - `--rate-per-sec 100 --rate-burst 100`: 20 × what a client at 5 msgs/s needs, above the
///   stalled client's peer (80 msgs/s), far below a flooder.
pub(crate) const SERVER_FLAGS: &[&str] = &[
    "--rate-per-sec",
    "100",
    "--rate-burst",
    "100",
    "--history",
    "304",
    "--outbound-queue",
    "320",
    "--max-connections",
    "200000",
    "--static-dir",
    "/nonexistent-matchchat-reliability",
];

/// Messages per second the stalled client's peer sends it.
const STALL_RATE: &str = "80";

const PORT: u16 = 18_080;

/// The generated section sits between these lines of `docs/RELIABILITY.md`.
const BEGIN: &str = "<!-- reliability: written by cargo xtask reliability -->";
const END: &str = "<!-- /reliability: end of the generated part -->";

/// Largest p99 of a scenario, relative to the plain runs', that counts as unaffected.
const P99_TOLERANCE: f64 = 1.20;

struct Flags {
    secs: u64,
    rounds: usize,
    out: PathBuf,
}

fn parse_flags(root: &Path) -> Result<Flags, String> {
    let mut flags = Flags {
        secs: 20,
        rounds: 5,
        out: root.join("docs").join("RELIABILITY.md"),
    };
    let args: Vec<String> = std::env::args().collect();
    let start = args
        .iter()
        .position(|a| a == "reliability")
        .map_or(args.len(), |i| i + 1);
    let mut it = args[start..].iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "--secs" => {
                flags.secs = value("--secs")?
                    .parse()
                    .map_err(|_| "--secs takes whole seconds")?
            }
            "--rounds" => {
                flags.rounds = value("--rounds")?
                    .parse()
                    .map_err(|_| "--rounds takes a whole number")?
            }
            "--out" => flags.out = PathBuf::from(value("--out")?),
            other => return Err(format!("unknown reliability flag `{other}`")),
        }
    }
    if flags.rounds == 0 || flags.secs == 0 {
        return Err("--rounds and --secs must be at least 1".into());
    }
    Ok(flags)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    Plain,
    Stall,
    Flood,
}

impl Scenario {
    const ALL: [Scenario; 3] = [Scenario::Plain, Scenario::Stall, Scenario::Flood];

    fn name(self) -> &'static str {
        match self {
            Scenario::Plain => "plain",
            Scenario::Stall => "stall",
            Scenario::Flood => "flood",
        }
    }

    fn extra_args(self) -> &'static [&'static str] {
        match self {
            Scenario::Plain => &[],
            Scenario::Stall => &["--stall-one", "--stall-rate", STALL_RATE],
            Scenario::Flood => &["--flood-one"],
        }
    }
}

/// The server's own counts, from `/metrics` at the end of a run.
#[derive(Debug, Default)]
struct ServerCounts {
    slow_consumers_closed: Option<f64>,
    rate_limited: Option<f64>,
}

struct Measured {
    scenario: Scenario,
    round: usize,
    run: Run,
    counts: ServerCounts,
}

/// Entry point of `cargo xtask reliability`.
pub fn run() -> Result<(), String> {
    let root = bench::workspace_root();
    let flags = parse_flags(&root)?;
    let bench = Bench::build(&root)?;
    let started = utc_now();
    let secs = flags.secs.to_string();
    let mut runs = Vec::new();
    for round in 1..=flags.rounds {
        // The order turns by one each round, so that no scenario always runs first.
        let mut order = Scenario::ALL;
        order.rotate_left((round - 1) % Scenario::ALL.len());
        for scenario in order {
            println!("== {} (round {round} of {})", scenario.name(), flags.rounds);
            let mut args = vec!["--pairs", "500", "--rate", "5", "--msg-bytes", "32", "-d"];
            args.push(&secs);
            args.extend_from_slice(scenario.extra_args());
            let target = bench.start_server(PORT, SERVER_FLAGS)?;
            let run = bench.loadgen(&target, false, &args);
            let counts = server_counts(&target.addr);
            target.stop();
            let run = run?;
            println!("   {}", one_line(scenario, &run.json));
            runs.push(Measured {
                scenario,
                round,
                run,
                counts,
            });
            bench::settle();
        }
    }
    let section = render(&flags, &started, &runs);
    let old = std::fs::read_to_string(&flags.out).unwrap_or_default();
    let new = splice(&old, &section);
    if let Some(dir) = flags.out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(&flags.out, new).map_err(|e| format!("{}: {e}", flags.out.display()))?;
    println!("wrote {}", flags.out.display());
    Ok(())
}

/// Replaces the generated section of `old` (or puts it before "## Not done yet", or at
/// the end).
fn splice(old: &str, section: &str) -> String {
    if let (Some(a), Some(b)) = (old.find(BEGIN), old.find(END))
        && a < b
    {
        return format!("{}{section}{}", &old[..a], &old[b + END.len()..]);
    }
    if let Some(at) = old.find("## Not done yet") {
        return format!("{}{section}\n{}", &old[..at], &old[at..]);
    }
    format!("{old}\n{section}")
}

/// `GET /metrics` on the server, for its slow-consumer and 40009 counters.
fn server_counts(addr: &str) -> ServerCounts {
    let mut counts = ServerCounts::default();
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return counts;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return counts;
    }
    let mut text = String::new();
    let _ = stream.take(4 << 20).read_to_string(&mut text);
    for line in text.lines() {
        let value = |prefix: &str| {
            line.strip_prefix(prefix)
                .and_then(|v| v.trim().parse::<f64>().ok())
        };
        if let Some(v) = value("matchchat_slow_consumers_closed_total ") {
            counts.slow_consumers_closed = Some(v);
        }
        if let Some(v) = value("matchchat_errors_total{code=\"40009\"} ") {
            counts.rate_limited = Some(v);
        }
    }
    counts
}

fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "(unknown time)".into())
}

fn text(j: &Json, path: &[&str]) -> String {
    match j.at(path) {
        None | Some(Json::Null) => "–".into(),
        Some(Json::Str(s)) => s.clone(),
        Some(Json::Bool(b)) => if *b { "yes" } else { "no" }.into(),
        Some(other) => other.to_text(),
    }
}

fn one_line(scenario: Scenario, j: &Json) -> String {
    let mut line = format!(
        "p50 {} ms, p99 {} ms, p999 {} ms, lost {}, errors {}",
        fmt(num(j, &["latency_ms", "p50"]), 3),
        fmt(num(j, &["latency_ms", "p99"]), 3),
        fmt(num(j, &["latency_ms", "p999"]), 3),
        fmt(num(j, &["lost"]), 0),
        fmt(num(j, &["errors"]), 0),
    );
    match scenario {
        Scenario::Plain => {}
        Scenario::Stall => {
            let _ = write!(
                line,
                "; stalled closed {}, after {} ms, ended {}",
                text(j, &["stalled", "closed"]),
                fmt(num(j, &["stalled", "after_ms"]), 0),
                text(j, &["stalled", "ended"]),
            );
        }
        Scenario::Flood => {
            let _ = write!(
                line,
                "; flooder sent {}, 40009 × {}, close {} after {} ms",
                fmt(num(j, &["flooder", "sent"]), 0),
                fmt(num(j, &["flooder", "rate_limited_40009"]), 0),
                text(j, &["flooder", "close_code"]),
                fmt(num(j, &["flooder", "after_ms"]), 1),
            );
        }
    }
    line
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

fn median_of(runs: &[Measured], scenario: Scenario, path: &[&str]) -> Option<f64> {
    median(
        runs.iter()
            .filter(|m| m.scenario == scenario)
            .filter_map(|m| num(&m.run.json, path))
            .collect(),
    )
}

fn render(flags: &Flags, started: &str, runs: &[Measured]) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "{BEGIN}");
    let _ = writeln!(
        md,
        "## Slow consumer and flood at 1,000 clients (`cargo xtask reliability`)\n"
    );
    let _ = writeln!(
        md,
        "Written by `cargo xtask reliability` (source: `xtask/src/reliability.rs`; flags \
         `--secs {}` `--rounds {}`) at commit {}, started {started}. Release builds; every \
         run starts a fresh server.\n",
        flags.secs,
        flags.rounds,
        bench::commit(),
    );
    let _ = writeln!(md, "**Machine:** {}.\n", bench::machine());
    let _ = writeln!(md, "```");
    if let Some(first) = runs.first() {
        let _ = writeln!(md, "{}", first.run.target);
    }
    for scenario in Scenario::ALL {
        if let Some(m) = runs.iter().find(|m| m.scenario == scenario) {
            let _ = writeln!(md, "{}", m.run.command);
        }
    }
    let _ = writeln!(md, "```\n");
    let _ = writeln!(
        md,
        "Each run: 500 pairs (1,000 clients) × 5 msgs/s of 32-byte messages, open loop, {} s of \
         chat; latency is end to end from the *intended* send time, over the other clients \
         only (the stalled pair and the flooder are left out of latency, loss and error counts \
         and reported apart). **stall**: after its 20001, client 0 never reads its socket again \
         (the TCP connection stays open; it asked for a 4 KiB receive buffer) while its peer \
         sends it {STALL_RATE} msgs/s of 1,000-character messages (~3.9 KB: the most the \
         protocol allows), so that the ~3 MB the kernel absorbs on loopback before the \
         server's queue fills are full within the run; after the chat it reads again to see \
         how the server ended it. **flood**: one more connection, in no room, writes chat \
         frames as fast as its socket takes them from the start of the chat. Server flags: \
         `--outbound-queue 320` (floor `--history` + 16, hence `--history 304`) and \
         `--rate-per-sec 100 --rate-burst 100`: see `xtask/src/reliability.rs` for why. The \
         scenarios ran {} times, interleaved, the order turning by one each round; the \
         comparison uses the median of the rounds.\n",
        flags.secs, flags.rounds
    );

    // The comparison.
    let plain_p99 = median_of(runs, Scenario::Plain, &["latency_ms", "p99"]);
    let _ = writeln!(
        md,
        "### Latency of the other clients (median of the rounds)\n"
    );
    let _ = writeln!(
        md,
        "| scenario | p50, ms | p99, ms | p999, ms | p99 / plain p99 | within 20 % |\n|---|---:|---:|---:|---:|---|"
    );
    for scenario in Scenario::ALL {
        let p99 = median_of(runs, scenario, &["latency_ms", "p99"]);
        let within = match (p99, plain_p99) {
            (Some(a), Some(b)) if b > 0.0 => {
                if a / b <= P99_TOLERANCE {
                    "yes"
                } else {
                    "**no**"
                }
            }
            _ => "–",
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            scenario.name(),
            fmt(median_of(runs, scenario, &["latency_ms", "p50"]), 3),
            fmt(p99, 3),
            fmt(median_of(runs, scenario, &["latency_ms", "p999"]), 3),
            ratio(p99, plain_p99),
            if scenario == Scenario::Plain {
                "–"
            } else {
                within
            },
        );
    }
    let _ = writeln!(md);

    // Every run.
    let _ = writeln!(md, "### Every run, in the order run\n");
    let _ = writeln!(
        md,
        "| round | scenario | p50, ms | p99, ms | p999, ms | max, ms | p99 / plain median | delivered msgs/s | lost / dup / reorder / errors | server RSS before → max, KiB | load before |\n|---:|---|---:|---:|---:|---:|---:|---:|---|---|---|"
    );
    for m in runs {
        let j = &m.run.json;
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} / {} / {} / {} | {} → {} | {} |",
            m.round,
            m.scenario.name(),
            fmt(num(j, &["latency_ms", "p50"]), 3),
            fmt(num(j, &["latency_ms", "p99"]), 3),
            fmt(num(j, &["latency_ms", "p999"]), 3),
            fmt(num(j, &["latency_ms", "max"]), 3),
            ratio(num(j, &["latency_ms", "p99"]), plain_p99),
            fmt(num(j, &["delivered_per_sec"]), 0),
            fmt(num(j, &["lost"]), 0),
            fmt(num(j, &["dup"]), 0),
            fmt(num(j, &["reorder"]), 0),
            fmt(num(j, &["errors"]), 0),
            fmt(num(j, &["server", "rss_kib_before"]), 0),
            fmt(num(j, &["server", "rss_kib_max"]), 0),
            m.run.load_before,
        );
    }
    let _ = writeln!(md);
    let kinds: Vec<String> = runs
        .iter()
        .filter_map(|m| {
            let k = m.run.json.at(&["error_kinds"]).map(Json::to_text)?;
            (k != "{}").then(|| format!("round {} {}: `{k}`", m.round, m.scenario.name()))
        })
        .collect();
    if !kinds.is_empty() {
        let _ = writeln!(md, "Error kinds: {}.\n", kinds.join("; "));
    }

    // The stalled client.
    let _ = writeln!(md, "### The stalled client\n");
    let _ = writeln!(
        md,
        "| round | closed by the server | dropped from its room, ms into the chat | close frame code it read | how it ended when read again | bytes it read then | its peer sent it | server's slow-consumer closes |\n|---:|---|---:|---|---|---:|---:|---:|"
    );
    for m in runs.iter().filter(|m| m.scenario == Scenario::Stall) {
        let j = &m.run.json;
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            m.round,
            text(j, &["stalled", "closed"]),
            fmt(num(j, &["stalled", "after_ms"]), 0),
            text(j, &["stalled", "close_code"]),
            text(j, &["stalled", "ended"]),
            fmt(num(j, &["stalled", "drained_bytes"]), 0),
            fmt(num(j, &["stalled", "peer_sent"]), 0),
            fmt(m.counts.slow_consumers_closed, 0),
        );
    }
    let _ = writeln!(
        md,
        "\n\"Dropped from its room\" is when its peer got the 20003 (`disconnected`): the \
         server detaches a connection the moment its queue overflows and closes it with 1008. \
         The close frame cannot reach a client that does not read: it would queue behind the \
         megabytes the kernel holds for it, and the server gives up on it after 0.5 s and \
         drops the socket; what the client finds when it reads again is the rest of the data \
         and then the end of the stream (or a reset).\n"
    );

    // The flooder.
    let _ = writeln!(md, "### The flooder\n");
    let _ = writeln!(
        md,
        "| round | frames written | 40009 received | 40004 received | first 40009 after, ms | close code | closed after, ms | server's 40009 count | server's slow-consumer closes |\n|---:|---:|---:|---:|---:|---|---:|---:|---:|"
    );
    let mut silent_close = false;
    for m in runs.iter().filter(|m| m.scenario == Scenario::Flood) {
        let j = &m.run.json;
        let received = num(j, &["flooder", "rate_limited_40009"]).unwrap_or(0.0);
        if received == 0.0 && m.counts.rate_limited.is_some_and(|n| n > 0.0) {
            silent_close = true;
        }
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            m.round,
            fmt(num(j, &["flooder", "sent"]), 0),
            fmt(num(j, &["flooder", "rate_limited_40009"]), 0),
            fmt(num(j, &["flooder", "not_in_room_40004"]), 0),
            fmt(num(j, &["flooder", "first_40009_after_ms"]), 1),
            text(j, &["flooder", "close_code"]),
            fmt(num(j, &["flooder", "after_ms"]), 1),
            fmt(m.counts.rate_limited, 0),
            fmt(m.counts.slow_consumers_closed, 0),
        );
    }
    if silent_close {
        let _ = writeln!(
            md,
            "\n**The flooder received none of the 40009s the server counted**: they were \
             still queued, unwritten, when the close came, and the close does not wait for \
             them. The rate limit and the close work; a fast flooder's 40009s are lost."
        );
    }
    let _ = writeln!(md);

    // Memory.
    let max_of = |scenario: Option<Scenario>| {
        runs.iter()
            .filter(|m| scenario.is_none_or(|s| m.scenario == s))
            .filter_map(|m| num(&m.run.json, &["server", "rss_kib_max"]))
            .fold(None, |acc: Option<f64>, v| {
                Some(acc.map_or(v, |a| a.max(v)))
            })
    };
    let _ = writeln!(
        md,
        "Server memory (RSS sampled every 250 ms over each run): at most {} KiB in the plain \
         runs, {} KiB with the stalled client, {} KiB with the flooder.\n",
        fmt(max_of(Some(Scenario::Plain)), 0),
        fmt(max_of(Some(Scenario::Stall)), 0),
        fmt(max_of(Some(Scenario::Flood)), 0),
    );
    let _ = writeln!(md, "{END}");
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splices_between_the_markers_or_before_not_done_yet() {
        let doc = "# R\n\n## A\n\ntext\n\n## Not done yet\n\nrest\n";
        let once = splice(doc, &format!("{BEGIN}\nfirst\n{END}\n"));
        assert!(once.starts_with("# R\n\n## A\n\ntext\n\n"));
        assert!(once.contains(&format!("{BEGIN}\nfirst\n{END}\n\n## Not done yet")));
        let twice = splice(&once, &format!("{BEGIN}\nsecond\n{END}\n"));
        assert!(!twice.contains("first"));
        assert!(twice.contains("second"));
        assert!(twice.ends_with("## Not done yet\n\nrest\n"));
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }
}
