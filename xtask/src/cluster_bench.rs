//! `cargo xtask bench-cluster`: the load generator against two nodes sharing one Redis,
//! beside one node on the same Redis and the in-memory server, in one run; writes its
//! section of `docs/BENCHMARKS.md` (between markers, the rest of the file is kept).
//!
//! Pairs span the nodes: the load generator puts client i on node i mod 2, and pairs are
//! consecutive clients, so nearly every message crosses from one node to the other
//! through Redis. Redis runs as configured for no loss (`appendonly yes`,
//! `appendfsync always`), on loopback, its data in a fresh temporary directory; a last
//! column shows what `appendfsync everysec` (up to a second lost in a Redis crash) saves.

use crate::bench::{Bench, Run, SERVER_FLAGS, Target, commit, fmt, machine, num, settle};
use std::fmt::Write as _;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BEGIN: &str = "<!-- cluster: written by cargo xtask bench-cluster -->";
const END: &str = "<!-- /cluster: end of the generated part -->";
const REDIS_PORT: u16 = 16_379;

struct Redis {
    child: Child,
    dir: std::path::PathBuf,
}

impl Redis {
    /// `fsync`: Redis's `appendfsync` (`always` loses nothing it acknowledged; `everysec`
    /// may lose the last second in a Redis crash, and is shown for its cost).
    fn start(fsync: &str) -> Result<Redis, String> {
        if TcpStream::connect(("127.0.0.1", REDIS_PORT)).is_ok() {
            return Err(format!(
                "127.0.0.1:{REDIS_PORT} is in use: stop what listens there"
            ));
        }
        let dir =
            std::env::temp_dir().join(format!("matchchat-bench-redis-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let child = Command::new("redis-server")
            .args(["--port", &REDIS_PORT.to_string(), "--bind", "127.0.0.1"])
            .args(["--appendonly", "yes", "--appendfsync", fsync, "--save", ""])
            .arg("--dir")
            .arg(&dir)
            .args(["--loglevel", "warning"])
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!("cannot start redis-server (apt-get install redis-server): {e}")
            })?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", REDIS_PORT)).is_err() {
            if Instant::now() > deadline {
                return Err("redis-server did not come up".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Redis { child, dir })
    }

    fn url() -> String {
        format!("redis://127.0.0.1:{REDIS_PORT}/")
    }

    fn cpu_s(&self) -> Option<f64> {
        crate::bench::cpu_seconds(self.child.id())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One set-up's run of one scenario.
struct Measured {
    setup: &'static str,
    run: Run,
    redis_cpu_s: Option<f64>,
}

pub fn run() -> Result<(), String> {
    let root = crate::bench::workspace_root();
    let bench = Bench::build(&root)?;
    let secs = std::env::var("MATCHCHAT_BENCH_SECS").unwrap_or_else(|_| "10".into());
    let scenarios: [(&str, Vec<&str>); 2] = [
        (
            "closed loop, 1,000 pairs, window 1, 32-byte messages",
            vec!["--pairs", "1000", "--window", "1", "-d", &secs],
        ),
        (
            "open loop, 1,000 pairs × 5 msgs/s",
            vec!["--pairs", "1000", "--rate", "5", "-d", &secs],
        ),
    ];
    let mut results: Vec<(&str, Vec<Measured>)> = Vec::new();
    for (title, args) in &scenarios {
        println!("== {title}");
        let mut measured = Vec::new();
        // The in-memory server, the reference of the single-node tables.
        {
            let node = bench.start_server(18_080, SERVER_FLAGS)?;
            let run = bench.loadgen(&node, false, args);
            node.stop();
            measured.push(Measured {
                setup: "1 node, in memory",
                run: run?,
                redis_cpu_s: None,
            });
        }
        settle();
        for (nodes, fsync, setup) in [
            (1usize, "always", "1 node + Redis"),
            (2, "always", "2 nodes + Redis"),
            (2, "everysec", "2 nodes + Redis, fsync every second"),
        ] {
            let redis = Redis::start(fsync)?;
            let mut flags: Vec<&str> = SERVER_FLAGS.to_vec();
            let url = Redis::url();
            flags.extend(["--redis-url", &url]);
            let mut started: Vec<Target> = Vec::new();
            for i in 0..nodes {
                started.push(bench.start_server(18_081 + i as u16, &flags)?);
            }
            let addrs: Vec<String> = started.iter().map(|t| t.addr.clone()).collect();
            let redis_before = redis.cpu_s();
            let run = bench.loadgen_at(
                &addrs.join(","),
                started[0].child.id(),
                &started[0].command,
                false,
                args,
            );
            let redis_cpu_s = match (redis.cpu_s(), redis_before) {
                (Some(a), Some(b)) => Some(a - b),
                _ => None,
            };
            for t in started {
                t.stop();
            }
            drop(redis);
            measured.push(Measured {
                setup,
                run: run?,
                redis_cpu_s,
            });
            settle();
        }
        results.push((title, measured));
    }
    let section = render(&results, &secs);
    let path = root.join("docs/BENCHMARKS.md");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    std::fs::write(&path, splice(&old, &section))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

fn render(results: &[(&str, Vec<Measured>)], secs: &str) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "{BEGIN}");
    let _ = writeln!(
        md,
        "## Several nodes on one Redis (`cargo xtask bench-cluster`)\n"
    );
    let _ = writeln!(
        md,
        "Commit {}, {}. One run, {secs} s of chat per scenario; the load generator, the \
         nodes and Redis (`appendonly yes`, `appendfsync always` unless the column says \
         otherwise) share the machine. With two nodes, client i is on node i mod 2, so a \
         pair's messages cross nodes. Node CPU is the first node's; Redis's CPU is its own \
         row.\n",
        commit(),
        machine()
    );
    for (title, measured) in results {
        let _ = writeln!(md, "### {title}\n");
        let mut header = String::from("| |");
        let mut rule = String::from("|---|");
        for m in measured {
            let _ = write!(header, " {} |", m.setup);
            rule.push_str("---|");
        }
        let _ = writeln!(md, "{header}\n{rule}");
        let rows: [(&str, &[&str], usize); 10] = [
            ("delivered msgs/s", &["delivered_per_sec"], 0),
            ("end-to-end p50, ms", &["latency_ms", "p50"], 3),
            ("end-to-end p99, ms", &["latency_ms", "p99"], 3),
            ("end-to-end p999, ms", &["latency_ms", "p999"], 3),
            ("end-to-end max, ms", &["latency_ms", "max"], 3),
            ("first node's CPU, s", &["server", "cpu_s"], 2),
            ("connect→20001 p99, ms", &["connect_match_ms", "p99"], 1),
            ("lost", &["lost"], 0),
            ("duplicated", &["dup"], 0),
            ("reordered", &["reorder"], 0),
        ];
        for (name, path, digits) in rows {
            let mut line = format!("| {name} |");
            for m in measured {
                let _ = write!(line, " {} |", fmt(num(&m.run.json, path), digits));
            }
            let _ = writeln!(md, "{line}");
        }
        let mut line = String::from("| Redis CPU, s |");
        for m in measured {
            let _ = write!(line, " {} |", fmt(m.redis_cpu_s, 2));
        }
        let _ = writeln!(md, "{line}\n");
        let _ = writeln!(md, "Commands:\n");
        for m in measured {
            let _ = writeln!(
                md,
                "- {}: `{}` against `{}`",
                m.setup, m.run.command, m.run.target
            );
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(md, "{END}");
    md
}

fn splice(old: &str, section: &str) -> String {
    if let (Some(a), Some(b)) = (old.find(BEGIN), old.find(END))
        && a < b
    {
        return format!("{}{section}{}", &old[..a], &old[b + END.len()..]);
    }
    format!("{}\n\n{section}", old.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_is_replaced_not_repeated() {
        let once = splice("# Benchmarks\n\ntext", &format!("{BEGIN}\nfirst\n{END}\n"));
        let twice = splice(&once, &format!("{BEGIN}\nsecond\n{END}\n"));
        assert!(twice.starts_with("# Benchmarks\n\ntext"));
        assert!(twice.contains("second") && !twice.contains("first"));
    }
}
