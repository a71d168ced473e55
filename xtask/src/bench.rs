//! `cargo xtask bench`: the standard load scenarios of issue 4 against release builds,
//! each run side by side with the baseline relay, written to `docs/BENCHMARKS.md`.
//!
//! Std only. Builds `matchchat-server`, `matchchat-loadgen` and `matchchat-baseline`
//! (release), then for each scenario starts a fresh server (or baseline) on a loopback
//! port, runs `matchchat-loadgen` against it, reads the loadgen's JSON line, and stops the
//! target. Flags (after `cargo xtask bench`):
//!
//! - `--soak-secs N`: length of the soak (default 600; 0 skips it);
//! - `--secs N`: length of each chat scenario (default 20);
//! - `--only a,b`: run only these scenarios (`closed`, `open5`, `open1`, `idle`,
//!   `match`, `buffer`, `soak`, `soak-steady`);
//! - `--out PATH`: where to write the report (default `docs/BENCHMARKS.md`).
//!
//! Takes about 10 minutes plus the two soaks (10 minutes each by default). Not part of
//! the tests (too long, too noisy).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Everything after this line of `docs/BENCHMARKS.md` is kept when it is rewritten.
const NOTES_MARKER: &str = "<!-- notes: kept by cargo xtask bench -->";

/// Server flags for every run: limits out of the way of the load.
pub(crate) const SERVER_FLAGS: &[&str] = &[
    "--rate-per-sec",
    "1000000",
    "--rate-burst",
    "1000000",
    "--max-connections",
    "200000",
    "--static-dir",
    "/nonexistent-matchchat-bench",
];

struct Flags {
    soak_secs: u64,
    secs: u64,
    only: Option<Vec<String>>,
    out: PathBuf,
}

fn parse_flags(root: &Path) -> Result<Flags, String> {
    let mut flags = Flags {
        soak_secs: 600,
        secs: 20,
        only: None,
        out: root.join("docs").join("BENCHMARKS.md"),
    };
    let args: Vec<String> = std::env::args().collect();
    let start = args
        .iter()
        .position(|a| a == "bench")
        .map_or(args.len(), |i| i + 1);
    let mut it = args[start..].iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "--soak-secs" => {
                flags.soak_secs = value("--soak-secs")?
                    .parse()
                    .map_err(|_| "--soak-secs takes whole seconds")?
            }
            "--secs" => {
                flags.secs = value("--secs")?
                    .parse()
                    .map_err(|_| "--secs takes whole seconds")?
            }
            "--only" => flags.only = Some(value("--only")?.split(',').map(str::to_owned).collect()),
            "--out" => flags.out = PathBuf::from(value("--out")?),
            other => return Err(format!("unknown bench flag `{other}`")),
        }
    }
    Ok(flags)
}

/// Entry point of `cargo xtask bench`.
pub fn run() -> Result<(), String> {
    let root = workspace_root();
    let flags = parse_flags(&root)?;
    let bench = Bench::build(&root)?;
    let wanted = |name: &str| {
        flags
            .only
            .as_ref()
            .is_none_or(|o| o.iter().any(|x| x == name))
    };
    let secs = flags.secs.to_string();
    let mut sections = Vec::new();

    if wanted("closed") {
        let args = [
            "--pairs",
            "1000",
            "--window",
            "1",
            "--msg-bytes",
            "32",
            "-d",
            &secs,
        ];
        sections.push(bench.side_by_side(
            "closed",
            "Closed loop: 1,000 pairs, window 1, 32-byte messages",
            &args,
        )?);
    }
    if wanted("open5") {
        let args = [
            "--pairs",
            "1000",
            "--rate",
            "5",
            "--msg-bytes",
            "32",
            "-d",
            &secs,
        ];
        sections.push(bench.side_by_side(
            "open5",
            "Open loop: 1,000 pairs × 5 msgs/s per client",
            &args,
        )?);
    }
    if wanted("open1") {
        let args = [
            "--pairs",
            "5000",
            "--rate",
            "1",
            "--msg-bytes",
            "32",
            "-d",
            &secs,
        ];
        sections.push(bench.side_by_side(
            "open1",
            "Open loop: 5,000 pairs × 1 msg/s per client",
            &args,
        )?);
    }
    if wanted("idle") {
        for n in ["1000", "10000", "18000"] {
            let args = ["--idle", "-n", n, "-d", "60"];
            let title = format!("Idle: {n} connections held 60 s");
            sections.push(bench.side_by_side(&format!("idle{n}"), &title, &args)?);
        }
    }
    if wanted("match") {
        let args = ["--match-only", "-n", "18000"];
        sections.push(bench.side_by_side("match", "18,000 players ask to match at once", &args)?);
    }
    if wanted("buffer") {
        sections.push(bench.read_buffer_cost(&secs)?);
    }
    if wanted("soak") && flags.soak_secs > 0 {
        sections.push(bench.soak(flags.soak_secs, Soak::FROM_EMPTY)?);
    }
    if wanted("soak-steady") && flags.soak_secs > 0 {
        sections.push(bench.soak(flags.soak_secs, Soak::STEADY)?);
    }
    let mut report = render(&sections);
    // Hand-written analysis below the marker survives regeneration.
    if let Ok(old) = std::fs::read_to_string(&flags.out)
        && let Some(at) = old.find(NOTES_MARKER)
    {
        report.push_str(&old[at..]);
    } else {
        report.push_str(NOTES_MARKER);
        report.push('\n');
    }
    if let Some(dir) = flags.out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(&flags.out, report).map_err(|e| format!("{}: {e}", flags.out.display()))?;
    println!("wrote {}", flags.out.display());
    Ok(())
}

/// The workspace root: xtask's parent (or `$MATCHCHAT_ROOT`, for a copy built elsewhere).
pub(crate) fn workspace_root() -> PathBuf {
    if let Some(root) = std::env::var_os("MATCHCHAT_ROOT") {
        return PathBuf::from(root);
    }
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// The release binaries and where their logs go.
pub(crate) struct Bench {
    runs: std::cell::Cell<u32>,
    server: PathBuf,
    baseline: PathBuf,
    loadgen: PathBuf,
    logs: PathBuf,
}

/// One load-generator run against one target.
pub(crate) struct Run {
    pub(crate) command: String,
    /// The target's command line.
    pub(crate) target: String,
    pub(crate) json: Json,
    pub(crate) load_before: String,
}

/// One scenario: the product and (usually) the baseline.
struct Section {
    key: String,
    title: String,
    server: Run,
    baseline: Option<Run>,
    extra: Vec<String>,
    /// Column names of the two runs.
    labels: [&'static str; 2],
}

impl Bench {
    /// Builds the release binaries (server, load generator, baseline) in `root`.
    pub(crate) fn build(root: &Path) -> Result<Bench, String> {
        let target_dir = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        println!("$ cargo build --release -p matchchat-server -p matchchat-loadgen");
        let status = Command::new("cargo")
            .args([
                "build",
                "--release",
                "-p",
                "matchchat-server",
                "-p",
                "matchchat-loadgen",
            ])
            .current_dir(root)
            .status()
            .map_err(|e| format!("cannot start cargo: {e}"))?;
        if !status.success() {
            return Err(format!("release build failed ({status})"));
        }
        let bin = target_dir.join("release");
        let bench = Bench {
            runs: std::cell::Cell::new(0),
            server: bin.join("matchchat-server"),
            baseline: bin.join("matchchat-baseline"),
            loadgen: bin.join("matchchat-loadgen"),
            logs: target_dir.join("bench-logs"),
        };
        std::fs::create_dir_all(&bench.logs)
            .map_err(|e| format!("{}: {e}", bench.logs.display()))?;
        Ok(bench)
    }

    fn start(&self, baseline: bool, port: u16) -> Result<Target, String> {
        self.start_with(baseline, port, &[])
    }

    /// The product, with `flags` instead of the benchmarks' [`SERVER_FLAGS`].
    pub(crate) fn start_server(&self, port: u16, flags: &[&str]) -> Result<Target, String> {
        self.spawn(false, port, flags)
    }

    fn start_with(&self, baseline: bool, port: u16, extra: &[&str]) -> Result<Target, String> {
        if baseline {
            self.spawn(true, port, extra)
        } else {
            self.spawn(false, port, SERVER_FLAGS)
        }
    }

    /// Starts the baseline (with `flags`) or the product (with `flags`), and waits until it
    /// accepts connections.
    fn spawn(&self, baseline: bool, port: u16, flags: &[&str]) -> Result<Target, String> {
        let addr = format!("127.0.0.1:{port}");
        if TcpStream::connect(&addr).is_ok() {
            return Err(format!("{addr} is already in use: stop what listens there"));
        }
        let log = self.logs.join(if baseline {
            "baseline.log"
        } else {
            "server.log"
        });
        let log = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut cmd = if baseline {
            let mut c = Command::new(&self.baseline);
            c.args(["--bind", &addr]).args(flags);
            c
        } else {
            let mut c = Command::new(&self.server);
            c.args(["--bind", &addr])
                .args(flags)
                .env("RUST_LOG", "warn");
            c
        };
        let child = cmd
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start the target: {e}"))?;
        let command = format!(
            "{} {}",
            if baseline {
                "matchchat-baseline"
            } else {
                "matchchat-server"
            },
            cmd.get_args()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        );
        let mut target = Target {
            child,
            addr,
            command,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(&target.addr).is_err() {
            if Instant::now() > deadline {
                return Err(format!("target on {} did not come up", target.addr));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Ok(Some(status)) = target.child.try_wait() {
            return Err(format!(
                "target exited at once ({status}): {}",
                target.command
            ));
        }
        Ok(target)
    }

    pub(crate) fn loadgen(
        &self,
        target: &Target,
        baseline: bool,
        args: &[&str],
    ) -> Result<Run, String> {
        self.loadgen_at(
            &target.addr,
            target.child.id(),
            &target.command,
            baseline,
            args,
        )
    }

    /// The load generator against `addr` (several nodes: comma separated), reading the
    /// CPU and memory of process `pid`.
    pub(crate) fn loadgen_at(
        &self,
        addr: &str,
        pid: u32,
        target_command: &str,
        baseline: bool,
        args: &[&str],
    ) -> Result<Run, String> {
        let pid = pid.to_string();
        let mut full: Vec<String> = vec!["--addr".into(), addr.to_owned()];
        if baseline {
            full.extend(["--target".into(), "baseline".into()]);
        }
        full.extend(args.iter().map(|a| a.to_string()));
        // A fresh block of source addresses per run: a port reused within TIME_WAIT of
        // the previous run costs a SYN retransmission (1 s) on connect.
        let run = self.runs.get();
        self.runs.set(run + 1);
        let first = 2 + (run * 8) % 240;
        full.extend(["--source-ip-first".into(), first.to_string()]);
        let command = format!(
            "matchchat-loadgen {} --server-pid <target pid>",
            full.join(" ")
        );
        full.extend(["--server-pid".into(), pid, "--quiet".into()]);
        let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!("$ {command}");
        let mut child = Command::new(&self.loadgen)
            .args(&full)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start the load generator: {e}"))?;
        let mut out = String::new();
        if let Some(mut stdout) = child.stdout.take() {
            stdout
                .read_to_string(&mut out)
                .map_err(|e| format!("reading the load generator: {e}"))?;
        }
        let status = child.wait().map_err(|e| format!("load generator: {e}"))?;
        let line = out.lines().last().unwrap_or("");
        let json = Json::parse(line)
            .map_err(|e| format!("load generator output ({status}): {e}: {line}"))?;
        Ok(Run {
            command,
            target: target_command.to_owned(),
            json,
            load_before: load_before
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
        })
    }

    fn side_by_side(&self, key: &str, title: &str, args: &[&str]) -> Result<Section, String> {
        println!("== {title}");
        let server = {
            let target = self.start(false, 18_080)?;
            let run = self.loadgen(&target, false, args);
            target.stop();
            run?
        };
        settle();
        let baseline = {
            let target = self.start(true, 19_001)?;
            let run = self.loadgen(&target, true, args);
            target.stop();
            run?
        };
        settle();
        Ok(Section {
            key: key.to_owned(),
            title: title.to_owned(),
            server,
            baseline: Some(baseline),
            extra: Vec::new(),
            labels: ["product", "baseline"],
        })
    }

    /// What tungstenite's default 128 KiB read buffer (the one warp 0.4 always uses) costs:
    /// the baseline with that buffer against the baseline as usual (1 KiB).
    fn read_buffer_cost(&self, secs: &str) -> Result<Section, String> {
        println!("== read buffer cost");
        let closed = ["--pairs", "1000", "--window", "1", "-d", secs];
        let idle = ["--idle", "-n", "10000", "-d", "10"];
        let mut runs = Vec::new();
        for args in [&closed[..], &idle[..]] {
            for extra in [&["--read-buffer", "131072"][..], &[][..]] {
                let target = self.start_with(true, 19_001, extra)?;
                let run = self.loadgen(&target, true, args);
                target.stop();
                runs.push(run?);
                settle();
            }
        }
        let mut it = runs.into_iter();
        let (Some(closed_big), Some(closed_small), Some(idle_big), Some(idle_small)) =
            (it.next(), it.next(), it.next(), it.next())
        else {
            return Err("read buffer runs missing".into());
        };
        let per_msg = |r: &Run| num(&r.json, &["server", "cpu_us_per_msg"]);
        let per_conn = |r: &Run| num(&r.json, &["server", "rss_bytes_per_conn"]);
        let extra = vec![
            format!(
                "Closed loop (1,000 pairs, window 1): baseline CPU per delivered message {} µs with a 128 KiB read buffer, {} µs with 1 KiB (ratio {}); delivered {} vs {} msgs/s.",
                fmt(per_msg(&closed_big), 2),
                fmt(per_msg(&closed_small), 2),
                ratio(per_msg(&closed_big), per_msg(&closed_small)),
                fmt(num(&closed_big.json, &["delivered_per_sec"]), 0),
                fmt(num(&closed_small.json, &["delivered_per_sec"]), 0),
            ),
            format!(
                "Idle (10,000 connections): baseline RSS per connection {} bytes with a 128 KiB read buffer, {} bytes with 1 KiB.",
                fmt(per_conn(&idle_big), 0),
                fmt(per_conn(&idle_small), 0),
            ),
            "tungstenite zero-fills the spare capacity of its read buffer before every read \
             (`BytesMut::resize` in `FrameCodec::read_in`), so the buffer's size is paid in memory \
             on the first read and in `memset` on every read."
                .to_owned(),
        ];
        Ok(Section {
            key: "buffer".into(),
            title: "Cost of tungstenite's default 128 KiB read buffer (baseline with `--read-buffer 131072`)".into(),
            server: closed_big,
            baseline: Some(closed_small),
            extra,
            labels: ["baseline, 128 KiB buffer", "baseline, 1 KiB buffer"],
        })
    }

    /// A soak: 10,000 msgs/s for `secs`, the server's RSS sampled every 10 s meanwhile.
    fn soak(&self, secs: u64, soak: Soak) -> Result<Section, String> {
        println!("== {}, {secs} s", soak.key);
        let target = self.start(false, 18_080)?;
        let pid = target.child.id();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut samples = Vec::new();
                let started = Instant::now();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Some(rss) = rss_kib(pid) {
                        samples.push((started.elapsed().as_secs(), rss));
                    }
                    for _ in 0..100 {
                        if stop.load(std::sync::atomic::Ordering::Relaxed) {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
                samples
            })
        };
        let d = secs.to_string();
        let (pairs, rate) = (soak.pairs.to_string(), soak.rate.to_string());
        let run = self.loadgen(
            &target,
            false,
            &["--pairs", &pairs, "--rate", &rate, "-d", &d],
        );
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let samples = sampler.join().unwrap_or_default();
        target.stop();
        let run = run?;
        let mut extra = Vec::new();
        // Flatness: max vs min once the state has settled (connections and buffers after
        // the first tenth; for the steady soak, once every room's chat_sn memory is full).
        let settled_from =
            ((secs as f64 * soak.settled_after).round() as u64).max(soak.settled_by_secs);
        let settled: Vec<u64> = samples
            .iter()
            .filter(|(t, _)| *t >= settled_from)
            .map(|(_, r)| *r)
            .collect();
        if let (Some(min), Some(max)) = (settled.iter().min(), settled.iter().max()) {
            let spread = (*max as f64 - *min as f64) / *min as f64 * 100.0;
            extra.push(format!(
                "Server RSS from {settled_from} s to the end: min {min} KiB, max {max} KiB, spread {spread:.1} % (target ≤ 10 %)."
            ));
        } else {
            extra.push(format!(
                "The run is too short to judge flatness: the state settles by {settled_from} s."
            ));
        }
        extra.push(soak.why.to_owned());
        let series: Vec<String> = samples
            .iter()
            .step_by((samples.len() / 20).max(1))
            .map(|(t, r)| format!("{t}s:{r}"))
            .collect();
        extra.push(format!("RSS samples (s:KiB): {}", series.join(" ")));
        Ok(Section {
            key: "soak".into(),
            title: format!(
                "{}: 10,000 msgs/s ({} pairs × {} msgs/s) for {secs} s",
                soak.title, soak.pairs, soak.rate
            ),
            server: run,
            baseline: None,
            extra,
            labels: ["product", "baseline"],
        })
    }
}

/// The shape of a soak. Both send 10,000 msgs/s; they differ in how the load is spread
/// over rooms, which decides when the rooms' `chat_sn` memory (PROTOCOL.md §8.9: the last
/// 10,000 per room, kept on purpose) is full and memory can be flat.
pub(crate) struct Soak {
    key: &'static str,
    title: &'static str,
    pairs: u32,
    /// Messages per second per client.
    rate: u32,
    /// From which fraction of the run the RSS must be flat...
    settled_after: f64,
    /// ...and not before this second: the memory is full (its pages touched) by then.
    settled_by_secs: u64,
    /// One line for the report: what the flatness window means.
    why: &'static str,
}

impl Soak {
    /// 1,000 rooms from empty: each fills its 10,000 `chat_sn`s after 1,000 s, so RSS
    /// grows for the whole 10 minutes by design.
    const FROM_EMPTY: Soak = Soak {
        key: "soak",
        title: "Soak",
        pairs: 1000,
        rate: 5,
        settled_after: 0.1,
        settled_by_secs: 0,
        why: "1,000 rooms at 10 msgs/s each fill their 10,000 remembered chat_sns after \
              1,000 s: RSS grows for the whole run by design (PROTOCOL.md §8.9), so this \
              run cannot tell a leak from that memory. The steady soak can.",
    };
    /// 100 rooms at 100 msgs/s each: the `chat_sn` memory is full after 100 s, so from
    /// then on any growth would be a leak.
    const STEADY: Soak = Soak {
        key: "soak-steady",
        title: "Steady soak",
        pairs: 100,
        rate: 50,
        settled_after: 1.0 / 3.0,
        // Full after 100 s; the pages of each room's index are touched over the next
        // ≈ 80 s (seen in the samples), so flatness is judged from 200 s at the earliest.
        settled_by_secs: 200,
        why: "100 rooms at 100 msgs/s each fill their 10,000 remembered chat_sns after \
              100 s; from then on the state no longer grows, so any growth of RSS in the \
              window above would be a leak.",
    };
}

/// Lets sockets in TIME_WAIT and the scheduler settle between runs.
pub(crate) fn settle() {
    std::thread::sleep(Duration::from_secs(2));
}

/// A started server or baseline.
pub(crate) struct Target {
    pub(crate) child: Child,
    pub(crate) addr: String,
    pub(crate) command: String,
}

impl Target {
    pub(crate) fn stop(mut self) {
        // SIGTERM for a graceful stop, then make sure.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The checked-out commit, `+dirty` when the work tree differs from it.
/// User + system CPU time of a process, from `/proc/<pid>/stat` (clock ticks of 1/100 s,
/// Linux's USER_HZ on every common architecture).
pub(crate) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

pub(crate) fn commit() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(workspace_root())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let Some(head) = git(&["rev-parse", "--short", "HEAD"]) else {
        return "(unknown)".into();
    };
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    if dirty { format!("{head}+dirty") } else { head }
}

pub(crate) fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let nofile = Command::new("sh")
        .args(["-c", "ulimit -n"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!(
        "{cores} cores ({model}), {:.1} GiB memory, Linux {}, open-file limit {nofile}; server, baseline and load generator share the machine (loopback)",
        mem_kib as f64 / 1024.0 / 1024.0,
        kernel.trim()
    )
}

pub(crate) fn num(j: &Json, path: &[&str]) -> Option<f64> {
    j.at(path).and_then(Json::as_f64)
}

pub(crate) fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.digits$}"))
}

pub(crate) fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => format!("{:.2}", a / b),
        _ => "–".into(),
    }
}

/// The rows shown for a scenario, by kind.
fn rows(key: &str) -> Vec<(&'static str, Vec<&'static str>, usize)> {
    let quality = vec![
        ("lost", vec!["lost"], 0),
        ("duplicated", vec!["dup"], 0),
        ("reordered", vec!["reorder"], 0),
        ("wrong sender", vec!["identity_errors"], 0),
        ("errors", vec!["errors"], 0),
    ];
    let mut out = if key.starts_with("idle") {
        vec![
            ("connections up at the end", vec!["alive"], 0),
            (
                "server RSS before, KiB",
                vec!["server", "rss_kib_before"],
                0,
            ),
            (
                "server RSS at the end, KiB",
                vec!["server", "rss_kib_end"],
                0,
            ),
            (
                "RSS per connection, bytes",
                vec!["server", "rss_bytes_per_conn"],
                0,
            ),
            ("connect p99, ms", vec!["connect_ms", "p99"], 1),
            ("errors", vec!["errors"], 0),
        ]
    } else if key == "match" {
        vec![
            ("matched", vec!["matched"], 0),
            ("ask→20001 p50, ms", vec!["match_ms", "p50"], 1),
            ("ask→20001 p99, ms", vec!["match_ms", "p99"], 1),
            ("ask→20001 max, ms", vec!["match_ms", "max"], 1),
            ("connect p99, ms", vec!["connect_ms", "p99"], 1),
            (
                "server RSS at the end, KiB",
                vec!["server", "rss_kib_end"],
                0,
            ),
            ("errors", vec!["errors"], 0),
        ]
    } else {
        let mut v = vec![
            ("delivered msgs/s", vec!["delivered_per_sec"], 0),
            ("end-to-end p50, ms", vec!["latency_ms", "p50"], 3),
            ("end-to-end p99, ms", vec!["latency_ms", "p99"], 3),
            ("end-to-end p999, ms", vec!["latency_ms", "p999"], 3),
            ("end-to-end max, ms", vec!["latency_ms", "max"], 3),
            ("server CPU, s", vec!["server", "cpu_s"], 2),
            (
                "server CPU per delivered msg, µs",
                vec!["server", "cpu_us_per_msg"],
                2,
            ),
            ("load generator CPU, s", vec!["loadgen", "cpu_s"], 2),
            (
                "server RSS at the end, KiB",
                vec!["server", "rss_kib_end"],
                0,
            ),
            ("connect→20001 p99, ms", vec!["connect_match_ms", "p99"], 1),
        ];
        v.extend(quality);
        v
    };
    if key == "soak" {
        out.retain(|(name, _, _)| !name.starts_with("connect"));
    }
    out
}

fn render(sections: &[Section]) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(
        md,
        "Written by `cargo xtask bench` (source: `xtask/src/bench.rs`) at commit {}; one run of each scenario. \
         Release builds; every scenario starts a fresh target. **product** is `matchchat-server` \
         (started with `{}`), **baseline** is `matchchat-baseline`, the thinnest relay on the same \
         stack (tokio + tokio-tungstenite, one task per connection, no JSON), driven by the same \
         load generator. Ratios are product / baseline.\n",
        commit(),
        SERVER_FLAGS.join(" ")
    );
    let _ = writeln!(md, "**Machine:** {}.\n", machine());
    let _ = writeln!(
        md,
        "Latency is end to end, sender to receiver, with the sender's clock; open-loop latency is \
         measured from the *intended* send time (coordinated-omission corrected). Server CPU is \
         utime+stime from `/proc/<pid>/stat` over the chat window; RSS from `/proc/<pid>/status`. \
         The load average before each run is noted: other work on the machine skews the figures.\n"
    );
    for s in sections {
        let _ = writeln!(md, "## {}\n", s.title);
        let _ = writeln!(md, "```\n{}", s.server.command);
        if let Some(b) = &s.baseline {
            let _ = writeln!(md, "{}", b.command);
        }
        let _ = writeln!(md, "```\n");
        let [la, lb] = s.labels;
        let _ = write!(md, "Targets: `{}`", s.server.target);
        if let Some(b) = &s.baseline {
            let _ = write!(md, ", `{}`", b.target);
        }
        let _ = write!(
            md,
            ". Load average before: {la} run {}",
            s.server.load_before
        );
        if let Some(b) = &s.baseline {
            let _ = write!(md, ", {lb} run {}", b.load_before);
        }
        let _ = writeln!(md, ".\n");
        if s.baseline.is_some() {
            let _ = writeln!(md, "| figure | {la} | {lb} | ratio |\n|---|---:|---:|---:|");
        } else {
            let _ = writeln!(md, "| figure | {la} |\n|---|---:|");
        }
        for (name, path, digits) in rows(&s.key) {
            let a = num(&s.server.json, &path);
            match &s.baseline {
                Some(b) => {
                    let bv = num(&b.json, &path);
                    let _ = writeln!(
                        md,
                        "| {name} | {} | {} | {} |",
                        fmt(a, digits),
                        fmt(bv, digits),
                        ratio(a, bv)
                    );
                }
                None => {
                    let _ = writeln!(md, "| {name} | {} |", fmt(a, digits));
                }
            }
        }
        let kinds = s
            .server
            .json
            .at(&["error_kinds"])
            .map(Json::to_text)
            .unwrap_or_default();
        if kinds != "{}" && !kinds.is_empty() {
            let _ = writeln!(md, "\nProduct error kinds: `{kinds}`");
        }
        if let Some(b) = &s.baseline {
            let kinds = b
                .json
                .at(&["error_kinds"])
                .map(Json::to_text)
                .unwrap_or_default();
            if kinds != "{}" && !kinds.is_empty() {
                let _ = writeln!(md, "\nBaseline error kinds: `{kinds}`");
            }
        }
        if s.key.starts_with("idle")
            && let Some(per) = num(&s.server.json, &["server", "rss_bytes_per_conn"])
        {
            let _ = writeln!(
                md,
                "\nProjection to 1,000,000 connections at this rate: {:.1} GiB of server RSS.",
                per * 1e6 / 1024.0 / 1024.0 / 1024.0
            );
        }
        for line in &s.extra {
            let _ = writeln!(md, "\n{line}");
        }
        let _ = writeln!(md);
    }
    md
}

/// Just enough JSON for the load generator's line.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(BTreeMap<String, Json>),
}

impl Json {
    fn parse(text: &str) -> Result<Json, String> {
        let mut p = Parser {
            s: text.as_bytes(),
            i: 0,
        };
        let v = p.value()?;
        p.ws();
        if p.i != p.s.len() {
            return Err(format!("trailing text at {}", p.i));
        }
        Ok(v)
    }

    pub(crate) fn at(&self, path: &[&str]) -> Option<&Json> {
        path.iter().try_fold(self, |j, k| match j {
            Json::Obj(m) => m.get(*k),
            _ => None,
        })
    }

    pub(crate) fn as_f64(&self) -> Option<f64> {
        match self {
            Json::Num(n) => Some(*n),
            _ => None,
        }
    }

    pub(crate) fn to_text(&self) -> String {
        match self {
            Json::Null => "null".into(),
            Json::Bool(b) => b.to_string(),
            Json::Num(n) => n.to_string(),
            Json::Str(s) => format!("{s:?}"),
            Json::Arr(a) => format!(
                "[{}]",
                a.iter().map(Json::to_text).collect::<Vec<_>>().join(",")
            ),
            Json::Obj(m) => format!(
                "{{{}}}",
                m.iter()
                    .map(|(k, v)| format!("{k:?}:{}", v.to_text()))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Result<(), String> {
        self.ws();
        if self.s.get(self.i) == Some(&b) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected `{}` at {}", b as char, self.i))
        }
    }

    fn value(&mut self) -> Result<Json, String> {
        self.ws();
        match self.s.get(self.i) {
            Some(b'{') => {
                self.i += 1;
                let mut m = BTreeMap::new();
                self.ws();
                if self.s.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Ok(Json::Obj(m));
                }
                loop {
                    self.ws();
                    let k = self.string()?;
                    self.eat(b':')?;
                    let v = self.value()?;
                    m.insert(k, v);
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Json::Obj(m));
                        }
                        _ => return Err(format!("bad object at {}", self.i)),
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                let mut a = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(Json::Arr(a));
                }
                loop {
                    a.push(self.value()?);
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Json::Arr(a));
                        }
                        _ => return Err(format!("bad array at {}", self.i)),
                    }
                }
            }
            Some(b'"') => Ok(Json::Str(self.string()?)),
            Some(b't') if self.s[self.i..].starts_with(b"true") => {
                self.i += 4;
                Ok(Json::Bool(true))
            }
            Some(b'f') if self.s[self.i..].starts_with(b"false") => {
                self.i += 5;
                Ok(Json::Bool(false))
            }
            Some(b'n') if self.s[self.i..].starts_with(b"null") => {
                self.i += 4;
                Ok(Json::Null)
            }
            Some(_) => {
                let start = self.i;
                while self.i < self.s.len()
                    && matches!(
                        self.s[self.i],
                        b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'
                    )
                {
                    self.i += 1;
                }
                std::str::from_utf8(&self.s[start..self.i])
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .map(Json::Num)
                    .ok_or_else(|| format!("bad value at {start}"))
            }
            None => Err("unexpected end".into()),
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.eat(b'"')?;
        let mut out = Vec::new();
        while let Some(&b) = self.s.get(self.i) {
            self.i += 1;
            match b {
                b'"' => return String::from_utf8(out).map_err(|e| e.to_string()),
                b'\\' => {
                    let e = *self.s.get(self.i).ok_or("bad escape")?;
                    self.i += 1;
                    match e {
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'u' => {
                            let hex = self.s.get(self.i..self.i + 4).ok_or("bad \\u")?;
                            self.i += 4;
                            let code = u32::from_str_radix(
                                std::str::from_utf8(hex).map_err(|e| e.to_string())?,
                                16,
                            )
                            .map_err(|e| e.to_string())?;
                            let c = char::from_u32(code).unwrap_or('\u{fffd}');
                            let mut buf = [0; 4];
                            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                        }
                        other => out.push(other),
                    }
                }
                other => out.push(other),
            }
        }
        Err("unterminated string".into())
    }
}

#[cfg(test)]
mod tests {
    use super::Json;

    #[test]
    fn reads_a_loadgen_line() {
        let j =
            Json::parse(r#"{"a":{"p99":1.5e0,"n":null},"b":[1,true,"x\"y"],"errors":0,"k":{}}"#)
                .unwrap();
        assert_eq!(j.at(&["a", "p99"]).and_then(Json::as_f64), Some(1.5));
        assert_eq!(j.at(&["errors"]).and_then(Json::as_f64), Some(0.0));
        assert_eq!(j.at(&["k"]).map(Json::to_text).as_deref(), Some("{}"));
    }
}
