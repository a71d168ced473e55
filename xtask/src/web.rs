//! Browser-client tasks for xtask: install the web toolchain when missing, build the client
//! with trunk, and run the browser tests (wasm tests in headless Chromium + the end-to-end
//! test). Standard library only, so it runs on a fresh machine before anything is built.
//!
//! Every install step checks first and is skipped when the tool is already there, so these
//! functions are cheap to call on every `run` and `test`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const WASM_TARGET: &str = "wasm32-unknown-unknown";
/// Trunk series the project's Trunk.toml and index.html are written for.
const TRUNK_SERIES: &str = "trunk 0.22.";
/// A binaryen whose wasm-opt understands what current rustc emits (Debian's 108 does not).
const BINARYEN_NPM: &str = "binaryen@132.0.0";
/// wasm-bindgen-cli's own lock pins a webpki-roots release missing from the registry;
/// this one is there and compatible.
const WEBPKI_ROOTS_FALLBACK: &str = "1.0.10";
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// A CJK font, so Chinese text renders in headless Chromium (and in the screenshot).
const CJK_FONT_DIR: &str = "/usr/share/fonts/truetype/wqy";

/// The workspace root (xtask lives one level below it).
fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Where npm-installed tools go (inside target/, so `cargo clean` removes them too).
fn tools_dir() -> PathBuf {
    root().join("target").join("tools")
}

fn binaryen_bin() -> PathBuf {
    tools_dir().join("binaryen").join("bin")
}

/// Runs a command in `dir`, echoing it, its output and its duration (and counting the
/// tests it reports); Err on failure.
fn run_in(dir: &Path, program: &str, args: &[&str], envs: &[(&str, String)]) -> Result<(), String> {
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    crate::run_counting(dir, program, args, &envs)
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    run_in(&root(), program, args, &[])
}

/// The first line a tool prints for `args`, or None when it is missing or fails.
fn output_of(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Some(text.lines().next().unwrap_or_default().trim().to_owned())
}

/// Installs what the browser client needs, skipping whatever is already there.
pub fn ensure_web_toolchain() -> Result<(), String> {
    ensure_wasm_target()?;
    ensure_trunk()?;
    ensure_wasm_bindgen()?;
    ensure_wasm_pack()?;
    ensure_browser()?;
    ensure_wasm_opt();
    Ok(())
}

fn ensure_wasm_target() -> Result<(), String> {
    let installed = output_of_all("rustup", &["target", "list", "--installed"])
        .is_some_and(|t| t.lines().any(|l| l.trim() == WASM_TARGET));
    if installed {
        return Ok(());
    }
    println!("adding the {WASM_TARGET} target (rustup, ~30 s)");
    run("rustup", &["target", "add", WASM_TARGET])
}

fn output_of_all(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ensure_trunk() -> Result<(), String> {
    if output_of("trunk", &["--version"]).is_some_and(|v| v.starts_with(TRUNK_SERIES)) {
        return Ok(());
    }
    println!("installing trunk 0.22 (cargo install, ~15 min on 2 cores)");
    run(
        "cargo",
        &[
            "install",
            "--locked",
            "trunk",
            "--version",
            "^0.22",
            "--ignore-rust-version",
        ],
    )
}

/// The `wasm-bindgen` version in Cargo.lock: the CLI must be exactly this version.
fn locked_wasm_bindgen_version() -> Result<String, String> {
    let lock = fs::read_to_string(root().join("Cargo.lock"))
        .map_err(|e| format!("cannot read Cargo.lock: {e}"))?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "name = \"wasm-bindgen\""
            && let Some(version) = lines
                .next()
                .and_then(|l| l.trim().strip_prefix("version = \""))
                .and_then(|v| v.strip_suffix('"'))
        {
            return Ok(version.to_owned());
        }
    }
    Err(
        "Cargo.lock has no wasm-bindgen package; build the web crate once (`cargo metadata`)"
            .into(),
    )
}

fn ensure_wasm_bindgen() -> Result<(), String> {
    let version = locked_wasm_bindgen_version()?;
    let wanted = format!("wasm-bindgen {version}");
    if output_of("wasm-bindgen", &["--version"]).is_some_and(|v| v == wanted)
        && output_of("wasm-bindgen-test-runner", &["--version"]).is_some()
    {
        return Ok(());
    }
    println!("installing wasm-bindgen-cli {version} (cargo install, ~4 min on 2 cores)");
    // The plain install works when the registry has everything its lock pins.
    if run(
        "cargo",
        &[
            "install",
            "--locked",
            "wasm-bindgen-cli",
            "--version",
            &version,
        ],
    )
    .is_ok()
    {
        return Ok(());
    }
    // It did download the crate: build that source with the one missing pin relaxed.
    println!("retrying wasm-bindgen-cli {version} with webpki-roots {WEBPKI_ROOTS_FALLBACK}");
    let src = registry_source(&format!("wasm-bindgen-cli-{version}")).ok_or_else(|| {
        format!("wasm-bindgen-cli {version} failed to install and its source was not downloaded")
    })?;
    // Outside the workspace, or cargo would treat it as a stray member.
    let build = std::env::temp_dir().join(format!("matchchat-wasm-bindgen-cli-{version}"));
    let _ = fs::remove_dir_all(&build);
    copy_dir(&src, &build).map_err(|e| format!("cannot copy {}: {e}", src.display()))?;
    if let Err(e) = run_in(
        &build,
        "cargo",
        &[
            "update",
            "-p",
            "webpki-roots",
            "--precise",
            WEBPKI_ROOTS_FALLBACK,
        ],
        &[],
    ) {
        println!("  (could not relax webpki-roots: {e}; trying the build anyway)");
    }
    let result = run_in(
        &build,
        "cargo",
        &["install", "--locked", "--path", "."],
        &[],
    );
    let _ = fs::remove_dir_all(&build);
    result.map_err(|e| format!("installing wasm-bindgen-cli {version}: {e}"))
}

/// `$CARGO_HOME/registry/src/<index>/<name>`, if cargo has unpacked that crate.
fn registry_source(name: &str) -> Option<PathBuf> {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    fs::read_dir(cargo_home.join("registry").join("src"))
        .ok()?
        .filter_map(Result::ok)
        .map(|index| index.path().join(name))
        .find(|p| p.join("Cargo.toml").is_file())
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

fn ensure_wasm_pack() -> Result<(), String> {
    if output_of("wasm-pack", &["--version"]).is_some() {
        return Ok(());
    }
    println!("installing wasm-pack (cargo install, ~5 min on 2 cores)");
    run("cargo", &["install", "--locked", "wasm-pack"])
}

/// cargo-deny, for the dependency checks of the test command (licenses, bans, sources).
pub fn ensure_cargo_deny() -> Result<(), String> {
    if output_of("cargo-deny", &["--version"]).is_some() {
        return Ok(());
    }
    println!("installing cargo-deny 0.20.2 (cargo install, ~12 min on 2 cores; once)");
    run(
        "cargo",
        &["install", "--locked", "cargo-deny", "--version", "0.20.2"],
    )
}

fn ensure_browser() -> Result<(), String> {
    ensure_debian_packages(&[
        (CHROMIUM, "chromium"),
        (CHROMEDRIVER, "chromium-driver"),
        (CJK_FONT_DIR, "fonts-wqy-microhei"),
    ])
}

/// Debian's `redis-server`, which the multi-node tests start on loopback themselves
/// (one per test, with its own port and data directory; nothing runs as a service).
pub fn ensure_redis() -> Result<(), String> {
    ensure_debian_packages(&[("/usr/bin/redis-server", "redis-server")])
}

/// Installs, with apt-get, the package of each path that is missing.
fn ensure_debian_packages(wanted: &[(&str, &str)]) -> Result<(), String> {
    let packages: Vec<&str> = wanted
        .iter()
        .filter(|(path, _)| !Path::new(path).exists())
        .map(|(_, package)| *package)
        .collect();
    if packages.is_empty() {
        return Ok(());
    }
    println!("installing {} (apt-get, ~1-2 min)", packages.join(", "));
    let env = [("DEBIAN_FRONTEND", "noninteractive".to_owned())];
    run_in(&root(), "apt-get", &["update"], &env)
        .map_err(|e| format!("{e} (Debian packages must be installed by root via apt-get)"))?;
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend(&packages);
    run_in(&root(), "apt-get", &args, &env)
}

/// wasm-opt from npm's binaryen into target/tools. Optional: without it the release build
/// is just larger, so a failure here only prints a note.
fn ensure_wasm_opt() {
    if binaryen_bin().join("wasm-opt").exists() {
        return;
    }
    if output_of("npm", &["--version"]).is_none() {
        println!("note: npm not found, so no wasm-opt; the client builds unoptimized by wasm-opt");
        return;
    }
    println!("installing wasm-opt ({BINARYEN_NPM} from npm, ~10 s)");
    let prefix = tools_dir().join("binaryen");
    let prefix = prefix.to_string_lossy();
    if let Err(e) = run("npm", &["install", "-g", "--prefix", &prefix, BINARYEN_NPM]) {
        println!("note: {e}; the client builds without wasm-opt");
    }
}

/// A wasm-opt that works on current wasm: ours from npm, else a system one of version 116+.
fn wasm_opt_dir() -> Option<PathBuf> {
    let ours = binaryen_bin();
    let works = |program: &str| {
        output_of(program, &["--version"])
            .and_then(|v| {
                v.split_whitespace()
                    .nth(2)
                    .and_then(|n| n.parse::<u32>().ok())
            })
            .is_some_and(|n| n >= 116)
    };
    if works(&ours.join("wasm-opt").to_string_lossy()) {
        return Some(ours);
    }
    // Empty PATH entry: the system one is already on PATH.
    works("wasm-opt").then(PathBuf::new)
}

/// Builds the browser client into dist/ with trunk (offline: tools come from PATH).
/// Release builds are size-optimized and run wasm-opt when a working one is available.
pub fn build_client(release: bool) -> Result<(), String> {
    let root = root();
    let path = std::env::var("PATH").unwrap_or_default();
    let opt_dir = if release { wasm_opt_dir() } else { None };
    let mut envs: Vec<(&str, String)> = Vec::new();
    if let Some(dir) = &opt_dir
        && !dir.as_os_str().is_empty()
    {
        envs.push(("PATH", format!("{}:{path}", dir.display())));
    }
    if release {
        // Size matters more than speed for a page download; set here rather than in the
        // workspace profile so the server's release build keeps its own settings.
        envs.extend([
            ("CARGO_PROFILE_RELEASE_OPT_LEVEL", "z".to_owned()),
            ("CARGO_PROFILE_RELEASE_LTO", "true".to_owned()),
            ("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1".to_owned()),
            ("CARGO_PROFILE_RELEASE_DEBUG", "false".to_owned()),
        ]);
    }
    let mut args = vec!["build"];
    // index.html asks for wasm-opt; without a working one, build from a copy that does not.
    let noopt = root.join(".trunk-noopt.html");
    if release && opt_dir.is_none() {
        println!("note: no working wasm-opt (run ensure_web_toolchain); building without it");
        let index = fs::read_to_string(root.join("index.html"))
            .map_err(|e| format!("cannot read index.html: {e}"))?;
        fs::write(
            &noopt,
            index.replace("data-wasm-opt=\"z\"", "data-wasm-opt=\"0\""),
        )
        .map_err(|e| format!("cannot write {}: {e}", noopt.display()))?;
        args.push(".trunk-noopt.html");
    }
    // After the target: `--release` takes an optional value and would swallow it.
    args.push("--offline");
    if release {
        args.push("--release");
    }
    println!(
        "building the browser client ({}; first build on 2 cores: ~3-4 min)",
        if release { "release" } else { "debug" }
    );
    let result = run_in(&root, "trunk", &args, &envs);
    let _ = fs::remove_file(&noopt);
    result?;
    report_size(&root.join("dist"));
    Ok(())
}

/// Prints the size of the built wasm and JS (raw; gzip when `gzip` is installed).
fn report_size(dist: &Path) {
    let Ok(entries) = fs::read_dir(dist) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let is_asset = path.extension().is_some_and(|e| e == "wasm" || e == "js");
        if !is_asset {
            continue;
        }
        let raw = entry.metadata().map(|m| m.len()).unwrap_or(0);
        let gz = Command::new("gzip")
            .args(["-9", "-c"])
            .arg(&path)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| format!(", {} KiB gzip", o.stdout.len() / 1024))
            .unwrap_or_default();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        println!("  {name}: {} KiB{gz}", raw / 1024);
    }
}

/// The browser tests: clippy and the plain logic tests of the web crate, the wasm tests in
/// headless Chromium, then the end-to-end test against a fresh release build.
pub fn test_web() -> Result<(), String> {
    run(
        "cargo",
        &[
            "clippy",
            "-p",
            "matchchat-web",
            "--target",
            WASM_TARGET,
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    run("cargo", &["test", "-p", "matchchat-web"])?;
    println!("wasm tests in headless Chromium (first build ~1-2 min)");
    run_in(
        &root(),
        "wasm-pack",
        &[
            "test",
            "--headless",
            "--chrome",
            "--chromedriver",
            CHROMEDRIVER,
            "web",
        ],
        &[("CHROMEDRIVER", CHROMEDRIVER.to_owned())],
    )?;
    build_client(true)?;
    // The restart test runs the release binary as a child process (SIGTERM, then again
    // on the same port).
    println!("building the release server for the end-to-end tests (first time ~2 min)");
    run("cargo", &["build", "--release", "-p", "matchchat-server"])?;
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let server_bin = target_dir.join("release/matchchat-server");
    println!("end-to-end test: real server, real build, two headless Chromium sessions");
    run_in(
        &root(),
        "cargo",
        &["test", "-p", "matchchat-e2e", "--", "--nocapture"],
        &[
            ("CHROMEDRIVER", CHROMEDRIVER.to_owned()),
            (
                "MATCHCHAT_SERVER_BIN",
                server_bin.to_string_lossy().into_owned(),
            ),
        ],
    )
}
