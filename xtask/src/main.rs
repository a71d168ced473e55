//! `cargo xtask <command>`: the project's two entry points and its benchmarks.
//!
//! - `run`: installs whatever is missing, builds the browser client (release) and starts
//!   the server at http://127.0.0.1:8080 (extra arguments go to the server).
//! - `test`: installs whatever is missing and runs every check and test: formatting,
//!   clippy, cargo-deny, the Rust tests (core, server, load-generator smoke), the browser tests.
//! - `bench`: the standard load scenarios against release builds, into docs/BENCHMARKS.md.
//! - `reliability`: slow consumer and flood at 1,000 clients, into docs/RELIABILITY.md.
//!
//! Plain `std::process::Command` calls, so it needs nothing but cargo to start.

mod bench;
mod cluster_bench;
mod reliability;
mod web;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, rest) = match args.split_first() {
        Some((c, rest)) => (c.as_str(), rest.to_vec()),
        None => ("help", Vec::new()),
    };
    let result = match command {
        "run" => run(&rest),
        "test" => test(),
        "bench" => bench::run(),
        "reliability" => reliability::run(),
        "bench-cluster" => cluster_bench::run(),
        "help" | "--help" | "-h" => {
            print_help();
            Ok(())
        }
        other => Err(format!("unknown command `{other}`; try `cargo xtask help`")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {command}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print_help() {
    println!(
        "cargo xtask run [SERVER ARGS]   install what is missing, build the client, serve http://127.0.0.1:8080\n\
         cargo xtask test                install what is missing, run every check and test\n\
         cargo xtask bench               run the load scenarios, write docs/BENCHMARKS.md\n\
         cargo xtask reliability         run the slow-consumer and flood checks, write docs/RELIABILITY.md\n\
         cargo xtask bench-cluster       two nodes on one Redis against one, write their part of docs/BENCHMARKS.md"
    );
}

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Runs a command in the workspace root, echoing it; fails on a non-zero exit.
pub fn cmd(program: &str, args: &[&str]) -> Result<(), String> {
    step(program, args, &[])
}

/// Like [`cmd`], with extra environment variables.
pub fn step(program: &str, args: &[&str], envs: &[(&str, &str)]) -> Result<(), String> {
    run_counting(&root(), program, args, envs)
}

/// Tests counted over every step, for the closing `N passed, M failed` line.
static PASSED: AtomicU64 = AtomicU64::new(0);
static FAILED: AtomicU64 = AtomicU64::new(0);
/// Lines of any step's output that report a Rust panic (`thread '…' panicked at`).
static PANICS: AtomicU64 = AtomicU64::new(0);

fn count_panic(line: &str) {
    if line.contains("panicked at") {
        PANICS.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs a command in `dir`, echoing it and its output; adds the test counts it reports
/// (cargo's `test result:` lines, pytest's summary) to the totals.
pub fn run_counting(
    dir: &Path,
    program: &str,
    args: &[&str],
    envs: &[(&str, &str)],
) -> Result<(), String> {
    println!("$ {program} {}", args.join(" "));
    let started = Instant::now();
    let mut command = Command::new(program);
    if std::env::var_os("RUST_BACKTRACE").is_none() {
        // A panic anywhere shows where it came from; the test command fails on any.
        command.env("RUST_BACKTRACE", "1");
    }
    let mut child = command
        .args(args)
        .envs(envs.iter().copied())
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start `{program}`: {e}"))?;
    // stderr on its own thread, so neither pipe can fill up and stall the child.
    let stderr = child.stderr.take().map(|err| {
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("{line}");
                count_panic(&line);
            }
        })
    });
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            println!("{line}");
            count_tests(&line);
            count_panic(&line);
        }
    }
    if let Some(thread) = stderr {
        let _ = thread.join();
    }
    let status = child
        .wait()
        .map_err(|e| format!("`{program}` did not finish: {e}"))?;
    if status.success() {
        println!("  ({:.1} s)", started.elapsed().as_secs_f64());
        Ok(())
    } else {
        Err(format!("`{program} {}` failed ({status})", args.join(" ")))
    }
}

fn count_tests(line: &str) {
    let line = line.trim();
    let number_before = |word: &str| -> Option<u64> {
        let head = &line[..line.find(word)?];
        head.split(|c: char| !c.is_ascii_digit())
            .rfind(|t| !t.is_empty())?
            .parse()
            .ok()
    };
    // cargo / libtest: `test result: ok. 12 passed; 0 failed; ...`
    // pytest: `220 passed in 86.49s` or `3 failed, 217 passed in ...`
    let cargo = line.starts_with("test result:");
    let pytest = line.contains(" passed in ") || line.contains(" failed in ");
    if cargo || pytest {
        PASSED.fetch_add(number_before(" passed").unwrap_or(0), Ordering::Relaxed);
        FAILED.fetch_add(number_before(" failed").unwrap_or(0), Ordering::Relaxed);
    }
}

fn run(server_args: &[String]) -> Result<(), String> {
    web::ensure_web_toolchain()?;
    web::build_client(true)?;
    println!("building and starting the server (first build on 2 cores: ~2 min)");
    let mut args = vec![
        "run",
        "--release",
        "--package",
        "matchchat-server",
        "--",
        "--static-dir",
        "dist",
    ];
    args.extend(server_args.iter().map(String::as_str));
    cmd("cargo", &args)
}

fn test() -> Result<(), String> {
    let started = Instant::now();
    cmd("cargo", &["fmt", "--all", "--check"])?;
    cmd(
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--exclude",
            "matchchat-web",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    // Dependency tree: permissive licenses only, crates.io only, no wildcard versions
    // (deny.toml; the advisory database lives on GitHub, unreachable here).
    web::ensure_cargo_deny()?;
    // `--offline` makes cargo-deny read the lock file without the network, but then every
    // package of every platform (Windows- and WASI-only ones too) must be in cargo's
    // cache already; clippy only fetched the host's. `cargo fetch` gets the rest.
    cmd("cargo", &["fetch", "--locked"])?;
    cmd(
        "cargo",
        &["deny", "--offline", "check", "bans", "licenses", "sources"],
    )?;
    // Property tests explore fresh random cases on a plain `cargo test`; the test command
    // fixes the seed (unless PROPTEST_RNG_SEED is set) so CI is repeatable, and failures
    // found while exploring are kept in core/tests/*.proptest-regressions.
    // The multi-node tests (server/tests/it/cluster.rs) start their own redis-server.
    web::ensure_redis()?;
    let seed = std::env::var("PROPTEST_RNG_SEED").unwrap_or_else(|_| "20261203".into());
    step(
        "cargo",
        &[
            "test",
            "--workspace",
            "--exclude",
            "matchchat-web",
            "--exclude",
            "matchchat-e2e",
        ],
        &[("PROPTEST_RNG_SEED", &seed)],
    )?;
    // The black-box suite, written from shared/PROTOCOL.md alone against the server binary.
    println!("conformance suite (Python, pytest + websockets from PyPI; ~90 s)");
    cmd(
        "python3",
        &[
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
            "tests/conformance/requirements.txt",
        ],
    )?;
    cmd("python3", &["-m", "pytest", "-q", "tests/conformance"])?;
    web::ensure_web_toolchain()?;
    web::test_web()?;
    let panics = PANICS.load(Ordering::Relaxed);
    if panics > 0 {
        return Err(format!(
            "every test passed, but {panics} line(s) of the output report a panic \
             (search it for `panicked at`); no panic is allowed anywhere"
        ));
    }
    println!(
        "all checks and tests passed in {:.0} s, no panic in the output",
        started.elapsed().as_secs_f64()
    );
    println!(
        "{} passed, {} failed",
        PASSED.load(Ordering::Relaxed),
        FAILED.load(Ordering::Relaxed)
    );
    Ok(())
}
