//! Two players in two real headless Chromium sessions, against the real server serving the
//! real trunk build: they match, chat both ways, one reloads mid-chat and keeps the
//! conversation, one leaves and the other sees it. Every check reads what is on screen.
//! A screenshot of the chat view is saved to `docs/screenshot.png`. One test runs the
//! release server binary instead, sends it SIGTERM and starts it again on the same port:
//! the page must notice (close 1012), wait, and come back online on its own.
//!
//! Needs `dist/` (trunk build), `/usr/bin/chromedriver` and `/usr/bin/chromium` (override
//! with `MATCHCHAT_DIST`, `CHROMEDRIVER`, `CHROME_BIN`). The server binary is built with
//! `cargo build --release -p matchchat-server` (a no-op when up to date) unless
//! `MATCHCHAT_SERVER_BIN` names one.

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator, key::Key};
use matchchat_core::wire::LeaveReason;
use matchchat_web::model::{EndReason, Notice};
use matchchat_web::text::{Lang, Ui};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long any one on-screen condition may take to appear.
const WAIT: Duration = Duration::from_secs(20);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// A loopback port free right now (bound, then released).
fn free_loopback_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The trunk build the server serves.
fn dist_dir() -> PathBuf {
    let dist = std::env::var("MATCHCHAT_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("dist"));
    assert!(
        dist.join("index.html").is_file(),
        "{} has no trunk build: run `trunk build --release` (or the xtask) first",
        dist.display()
    );
    dist
}

/// `chromedriver` on a free loopback port, killed when dropped.
struct ChromeDriver {
    child: Child,
    port: u16,
}

impl ChromeDriver {
    fn start() -> ChromeDriver {
        let path = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
        let port = free_loopback_port();
        // Its own process group, so that dropping it also ends the browsers it started,
        // even when a failed assertion skipped the orderly close.
        let child = Command::new(&path)
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {path}: {e} (install chromium-driver)"));
        let driver = ChromeDriver { child, port };
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        driver
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One headless Chromium session with a browser language and window size.
async fn browser(driver: &ChromeDriver, lang: &str, width: u32, height: u32) -> Client {
    let binary = std::env::var("CHROME_BIN").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": binary,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", format!("--lang={lang}"),
                format!("--window-size={width},{height}"),
            ],
            "prefs": {"intl.accept_languages": lang},
        }),
    );
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url())
        .await
        .expect("a Chromium session");
    // The window size flag sets the outer size; set the viewport-ish size explicitly too.
    let _ = client.set_window_size(width, height).await;
    client
}

/// Runs `script` (a function body returning JSON) until `done` accepts its value.
async fn wait_js(c: &Client, what: &str, script: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    let mut last = Value::Null;
    loop {
        if let Ok(v) = c.execute(script, vec![]).await {
            if done(&v) {
                return v;
            }
            last = v;
        }
        if Instant::now() > deadline {
            let html = c.source().await.unwrap_or_default();
            panic!("timed out waiting for {what}; last value {last}; page:\n{html}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `data-phase` / `data-conn` of the app root.
async fn wait_state(c: &Client, phase: &str, conn: &str) {
    let script = "const a = document.querySelector('.app'); \
                  return a ? [a.dataset.phase, a.dataset.conn] : null;";
    wait_js(c, &format!("phase {phase} / conn {conn}"), script, |v| {
        v == &json!([phase, conn])
    })
    .await;
}

/// Every message line on screen: text, side and delivery state.
const MESSAGES: &str = "return Array.from(document.querySelectorAll('#messages .msg')).map(m => ({ \
    text: m.querySelector('.bubble').textContent, \
    mine: m.classList.contains('mine'), \
    state: ['pending','failed','delivered'].find(s => m.classList.contains(s)) \
}));";

fn msg(text: &str, mine: bool) -> Value {
    json!({"text": text, "mine": mine, "state": "delivered"})
}

async fn wait_messages(c: &Client, who: &str, expected: &[Value]) {
    let expected = Value::Array(expected.to_vec());
    wait_js(c, &format!("{who}'s messages {expected}"), MESSAGES, |v| {
        v == &expected
    })
    .await;
}

async fn text_of(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .text()
        .await
        .unwrap_or_default()
}

async fn click(c: &Client, css: &str) {
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("cannot click {css}: {e}"));
}

/// Types into the chat input and presses Enter, as a player does.
async fn say(c: &Client, text: &str) {
    let input = c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#input"))
        .await
        .expect("the chat input");
    input.send_keys(text).await.expect("typing");
    input
        .send_keys(&char::from(Key::Enter).to_string())
        .await
        .expect("Enter");
}

async fn lang_of(c: &Client) -> Lang {
    let tag = c
        .execute("return navigator.language;", vec![])
        .await
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    Lang::from_tag(&tag)
}

/// Opens the page, signs in with the default zone and waits until online in the lobby.
/// Returns the player's id as shown on screen.
async fn enter(c: &Client, base: &str) -> String {
    c.goto(base).await.expect("page loads");
    click(c, "#enter").await;
    wait_state(c, "lobby", "online").await;
    let account = wait_js(
        c,
        "the player id",
        "return document.querySelector('#me-id')?.textContent ?? null;",
        |v| v.is_string(),
    )
    .await;
    let account = account.as_str().unwrap_or_default();
    // "我的 ID：xxxx" / "My id: xxxx": the id is the last word.
    account
        .rsplit(['：', ' '])
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Reloads and measures navigation start → "online" as seen by polling the page.
async fn reload_and_time_to_online(c: &Client) -> f64 {
    c.refresh().await.expect("reload");
    let v = wait_js(
        c,
        "online after reload",
        "const a = document.querySelector('.app'); \
         return a && a.dataset.conn === 'online' ? performance.now() : null;",
        |v| v.is_number(),
    )
    .await;
    v.as_f64().unwrap_or(f64::NAN)
}

/// The real server on a loopback port serving `dist/`, and a chromedriver.
struct Harness {
    server: matchchat_server::Running,
    driver: ChromeDriver,
    base: String,
}

impl Harness {
    async fn start() -> Harness {
        let config = matchchat_server::Config {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            static_dir: dist_dir(),
            ..Default::default()
        };
        let server = matchchat_server::start(config)
            .await
            .expect("the server starts");
        let base = format!("http://{}/", server.local_addr());
        Harness {
            server,
            driver: ChromeDriver::start(),
            base,
        }
    }

    async fn stop(self, browsers: Vec<Client>) {
        for b in browsers {
            let _ = b.close().await;
        }
        drop(self.driver);
        self.server.shutdown().await;
    }
}

/// Extra screenshots for people reviewing the UI (not part of the docs).
async fn snapshot(c: &Client, name: &str) {
    let dir = repo_root().join("target").join("e2e-screens");
    if let Ok(png) = c.screenshot().await
        && std::fs::create_dir_all(&dir).is_ok()
    {
        let _ = std::fs::write(dir.join(format!("{name}.png")), png);
    }
}

/// The release server binary: `MATCHCHAT_SERVER_BIN`, or built into the target directory
/// this test runs from (a no-op when up to date).
fn server_binary() -> PathBuf {
    if let Ok(bin) = std::env::var("MATCHCHAT_SERVER_BIN") {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "MATCHCHAT_SERVER_BIN={} does not exist",
            bin.display()
        );
        return bin;
    }
    // This test runs as <target>/<profile>/deps/browser-…
    let target = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.to_path_buf()))
        .unwrap_or_else(|| repo_root().join("target"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(&cargo)
        .current_dir(repo_root())
        .args([
            "build",
            "--release",
            "-p",
            "matchchat-server",
            "--target-dir",
        ])
        .arg(&target)
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cargo}: {e}"));
    // A cold release build on two busy cores takes minutes, not this long.
    let deadline = Instant::now() + Duration::from_secs(30 * 60);
    let status = loop {
        if let Some(status) = build.try_wait().expect("waiting for cargo build") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = build.kill();
            let _ = build.wait();
            panic!("cargo build --release -p matchchat-server took over 30 min");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        status.success(),
        "cargo build --release -p matchchat-server: {status}"
    );
    target.join("release").join("matchchat-server")
}

/// The server binary as a child process on a given loopback port, with its JSON log
/// (stdout) collected as it comes. Killed when dropped.
struct ServerProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl ServerProcess {
    /// Starts `bin` on 127.0.0.1:`port` serving `dist` and waits until it listens.
    async fn start(bin: &Path, port: u16, dist: &Path) -> ServerProcess {
        let mut child = Command::new(bin)
            .arg("--bind")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--static-dir")
            .arg(dist)
            .args(["--log-format", "json"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stdout = child.stdout.take().expect("the server's stdout");
        let (tx, lines) = mpsc::channel();
        // Read on a thread so that a full pipe never blocks the server's logging.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = ServerProcess {
            child,
            lines,
            log: Vec::new(),
        };
        let deadline = Instant::now() + WAIT;
        let listening = loop {
            server.log.extend(server.lines.try_iter());
            if let Some(fields) = server.fields("listening on") {
                break fields;
            }
            if let Some(exit) = server.child.try_wait().expect("the server's status") {
                panic!("the server exited at start ({exit}); log: {:?}", server.log);
            }
            assert!(
                Instant::now() < deadline,
                "the server did not listen on port {port}; log: {:?}",
                server.log
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(listening["local_addr"], json!(format!("127.0.0.1:{port}")));
        server
    }

    /// The `fields` of the first log line whose message starts with `message`.
    fn fields(&self, message: &str) -> Option<Value> {
        self.log.iter().find_map(|line| {
            let v: Value = serde_json::from_str(line).ok()?;
            let text = v["fields"]["message"].as_str()?;
            text.starts_with(message).then(|| v["fields"].clone())
        })
    }

    /// Sends SIGTERM and waits for the exit (failing after `limit`); returns the status,
    /// the time from the signal to the exit, and completes the log.
    async fn terminate(&mut self, limit: Duration) -> (ExitStatus, Duration) {
        let started = Instant::now();
        let kill = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(kill.success(), "kill -TERM: {kill}");
        let (exit, took) = loop {
            if let Some(exit) = self.child.try_wait().expect("the server's status") {
                break (exit, started.elapsed());
            }
            assert!(
                started.elapsed() < limit,
                "the server still runs {limit:?} after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        // The reader ends at end of file, right after the exit.
        let deadline = Instant::now() + Duration::from_secs(2);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => self.log.push(line),
                Err(_) => break,
            }
        }
        (exit, took)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A chromedriver command: run `source` in every new document of the session before the
/// page's own scripts (Chrome DevTools `Page.addScriptToEvaluateOnNewDocument`).
#[derive(Debug)]
struct OnNewDocument(&'static str);

impl WebDriverCompatibleCommand for OnNewDocument {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        let body = json!({
            "cmd": "Page.addScriptToEvaluateOnNewDocument",
            "params": {"source": self.0},
        });
        (http::Method::POST, Some(body.to_string()))
    }
}

/// Keeps the close code of every WebSocket the page opens in `window.__wsCloses` (the page
/// itself does not show why its socket closed).
const RECORD_CLOSE_CODES: &str = "(() => { \
    const Native = window.WebSocket; const closes = window.__wsCloses = []; \
    window.WebSocket = class extends Native { constructor(...args) { super(...args); \
        this.addEventListener('close', e => closes.push(e.code)); } }; })();";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_players_match_chat_reload_and_leave() {
    let root = repo_root();
    let h = Harness::start().await;
    let (driver, base) = (&h.driver, h.base.clone());
    // A on a desktop window in Chinese, B on a phone-sized one in English.
    let a = browser(driver, "zh-CN", 900, 760).await;
    let b = browser(driver, "en-US", 390, 780).await;
    let (lang_a, lang_b) = (lang_of(&a).await, lang_of(&b).await);

    let id_a = enter(&a, &base).await;
    let id_b = enter(&b, &base).await;
    assert_eq!(id_a.len(), 10, "player id on screen: {id_a}");
    assert_ne!(id_a, id_b);

    // A waits, B completes the room.
    snapshot(&b, "lobby-phone-en").await;
    click(&a, "#match").await;
    wait_state(&a, "waiting", "online").await;
    snapshot(&a, "waiting-zh").await;
    assert!(
        text_of(&a, "#waiting h2")
            .await
            .contains(lang_a.t(Ui::WaitingTitle))
    );
    click(&b, "#match").await;
    wait_state(&a, "chat", "online").await;
    wait_state(&b, "chat", "online").await;
    assert_eq!(text_of(&a, "#peer-id").await, id_b);
    assert_eq!(text_of(&b, "#peer-id").await, id_a);

    // Both ways, as text (markup stays literal).
    say(&a, "你好！我是 A").await;
    wait_messages(&b, "B", &[msg("你好！我是 A", false)]).await;
    say(&b, "hi A, <b>not bold</b>").await;
    wait_messages(
        &a,
        "A",
        &[
            msg("你好！我是 A", true),
            msg("hi A, <b>not bold</b>", false),
        ],
    )
    .await;
    assert_eq!(
        a.execute(
            "return document.querySelectorAll('.bubble b').length;",
            vec![]
        )
        .await
        .ok(),
        Some(json!(0))
    );
    say(&a, "第二条消息").await;
    let before_reload = [
        msg("你好！我是 A", false),
        msg("hi A, <b>not bold</b>", true),
        msg("第二条消息", false),
    ];
    wait_messages(&b, "B", &before_reload).await;

    // B reloads mid-chat: same player, same room, the whole conversation, each once.
    let online_ms = reload_and_time_to_online(&b).await;
    println!("page load to online after reload: {online_ms:.0} ms (upper bound)");
    wait_state(&b, "chat", "online").await;
    wait_messages(&b, "B after reload", &before_reload).await;
    assert_eq!(text_of(&b, "#peer-id").await, id_a);
    assert!(text_of(&b, "#me-id").await.ends_with(&id_b));
    // And the chat goes on both ways.
    say(&b, "back after reload").await;
    say(&a, "欢迎回来").await;
    let after = [
        msg("你好！我是 A", true),
        msg("hi A, <b>not bold</b>", false),
        msg("第二条消息", true),
        msg("back after reload", false),
        msg("欢迎回来", true),
    ];
    // Both sides see the same room order; take it from A's screen and mirror it on B.
    let shown = wait_js(&a, "A's five messages", MESSAGES, |v| {
        v.as_array()
            .is_some_and(|l| l.len() == 5 && l.iter().all(|m| m["state"] == "delivered"))
    })
    .await;
    let mut expect_a: Vec<Value> = after.to_vec();
    if shown[3]["text"] == "欢迎回来" {
        expect_a.swap(3, 4);
    }
    wait_messages(&a, "A", &expect_a).await;
    let expect_b: Vec<Value> = expect_a
        .iter()
        .map(|m| json!({"text": m["text"], "mine": !m["mine"].as_bool().unwrap_or(false), "state": "delivered"}))
        .collect();
    wait_messages(&b, "B", &expect_b).await;

    // The chat view, for the README.
    let png = a.screenshot().await.expect("a screenshot");
    let docs = root.join("docs");
    std::fs::create_dir_all(&docs).expect("docs/ exists");
    std::fs::write(docs.join("screenshot.png"), png).expect("screenshot saved");

    snapshot(&b, "chat-phone-en").await;

    // B leaves; A sees it and can look for someone new.
    click(&b, "#leave").await;
    wait_state(&b, "lobby", "online").await;
    wait_state(&a, "ended", "online").await;
    assert_eq!(
        text_of(&a, "#ended p").await,
        lang_a.ended(EndReason::PeerLeft(LeaveReason::Left))
    );
    assert_eq!(text_of(&a, "#new-partner").await, lang_a.t(Ui::FindNew));
    // The conversation stays readable on A's side.
    wait_messages(&a, "A after the peer left", &expect_a).await;
    snapshot(&a, "peer-left-zh").await;
    click(&a, "#new-partner").await;
    wait_state(&a, "waiting", "online").await;
    assert_eq!(text_of(&b, "#match").await, lang_b.t(Ui::Match));

    h.stop(vec![a, b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_session_is_renewed_and_a_second_tab_takes_over() {
    let h = Harness::start().await;
    let a = browser(&h.driver, "en-US", 700, 700).await;
    let c = browser(&h.driver, "en-US", 700, 700).await;

    // A stored session the server does not know (expired): the upgrade is refused (401),
    // the page finds the server healthy and gets a new player on its own.
    a.goto(&h.base).await.expect("page loads");
    let ghost = json!([{"session": {"session_id": "G".repeat(40), "account": "ghostAAAAA",
        "product_id": 1, "game_zone": "cn-east"}, "seen_ms": 0}]);
    a.execute(
        "localStorage.setItem('matchchat.sessions', JSON.stringify(arguments[0])); \
         sessionStorage.clear();",
        vec![ghost],
    )
    .await
    .expect("storage is writable");
    a.refresh().await.expect("reload");
    wait_state(&a, "lobby", "online").await;
    let me = text_of(&a, "#me-id").await;
    assert!(!me.contains("ghostAAAAA"), "still the expired player: {me}");
    assert_eq!(
        text_of(&a, "#notice .notice-text").await,
        Lang::En.notice(&matchchat_web::model::Notice::SessionRenewed)
    );

    // The same player opened in another browser takes the session over (close 4001):
    // the first page says so and does not fight back until asked.
    let stored = a
        .execute("return localStorage.getItem('matchchat.sessions');", vec![])
        .await
        .expect("stored sessions");
    c.goto(&h.base).await.expect("page loads");
    c.execute(
        "const s = JSON.parse(arguments[0]); s.forEach(e => e.seen_ms = 0); \
         localStorage.setItem('matchchat.sessions', JSON.stringify(s)); sessionStorage.clear();",
        vec![stored],
    )
    .await
    .expect("storage is writable");
    c.refresh().await.expect("reload");
    wait_state(&c, "lobby", "online").await;
    assert_eq!(text_of(&c, "#me-id").await, me);
    wait_js(
        &a,
        "the taken-over notice",
        "return document.querySelector('#taken-over h2')?.textContent ?? null;",
        |v| v == &json!(Lang::En.t(Ui::TakenOverTitle)),
    )
    .await;
    assert_eq!(
        a.execute(
            "return document.querySelector('.app').dataset.conn;",
            vec![]
        )
        .await
        .ok(),
        Some(json!("offline"))
    );
    snapshot(&a, "taken-over-en").await;
    // "Use it here" takes it back; now the other page is the one paused.
    click(&a, "#use-here").await;
    wait_state(&a, "lobby", "online").await;
    wait_js(
        &c,
        "the other page paused",
        "return document.querySelector('#taken-over') !== null;",
        |v| v == &json!(true),
    )
    .await;
    h.stop(vec![a, c]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_the_page_reconnects_on_its_own_after_a_restart() {
    let dist = dist_dir();
    let bin = tokio::task::spawn_blocking(server_binary)
        .await
        .expect("the server binary");
    // A fixed port: the page reconnects to the address it was loaded from.
    let port = free_loopback_port();
    let base = format!("http://127.0.0.1:{port}/");
    let mut server = ServerProcess::start(&bin, port, &dist).await;
    let driver = ChromeDriver::start();
    let a = browser(&driver, "en-US", 700, 700).await;
    a.issue_cmd(OnNewDocument(RECORD_CLOSE_CODES))
        .await
        .expect("chromedriver runs a DevTools command");
    let before = enter(&a, &base).await;
    // Gone if the page reloads.
    a.execute("window.__samePage = true;", vec![])
        .await
        .expect("the page runs scripts");

    // SIGTERM: the connected page is told (1012) and the process ends well within 5 s.
    let (exit, drain) = server.terminate(Duration::from_secs(5)).await;
    let exited = Instant::now();
    eprintln!("SIGTERM → server exited: {} ms ({exit})", drain.as_millis());
    assert!(exit.success(), "exit after SIGTERM: {exit}");
    assert_eq!(
        server
            .fields("shutting down: closing connections")
            .map(|f| f["open"].clone()),
        Some(json!(1)),
        "log: {:?}",
        server.log
    );
    assert!(
        server.fields("stopped").is_some(),
        "no `stopped` in the log: {:?}",
        server.log
    );
    for bad in ["shutdown grace elapsed", "panicked"] {
        assert!(
            !server.log.iter().any(|l| l.contains(bad)),
            "`{bad}` in the log: {:?}",
            server.log
        );
    }
    drop(server);
    let closes = wait_js(
        &a,
        "the close code of the page's socket",
        "return window.__wsCloses ?? null;",
        |v| v.as_array().is_some_and(|c| !c.is_empty()),
    )
    .await;
    assert!(
        closes[0] == json!(1012) || closes[0] == json!(1001),
        "the page's socket closed with {closes} (expected 1012 or 1001 first)"
    );
    // The page says it is reconnecting, with a countdown, and keeps the player.
    let label = wait_js(
        &a,
        "the reconnecting badge",
        "const a = document.querySelector('.app'); \
         return a && a.dataset.conn === 'reconnecting' \
           ? [a.dataset.phase, document.querySelector('#conn').textContent] : null;",
        |v| v.is_array(),
    )
    .await;
    assert_eq!(label[0], json!("lobby"));
    let label = label[1].as_str().unwrap_or_default();
    assert!(
        (0..=15).any(|s| label == Lang::En.reconnecting_in(s)),
        "badge while the server is down: {label:?}"
    );
    assert!(text_of(&a, "#me-id").await.ends_with(&before));

    // Back on the same port: the stored session is unknown now (401), so the page gets
    // a new player and comes online with no reload and no click.
    let restarted = Instant::now();
    let down = restarted - exited;
    let mut server = ServerProcess::start(&bin, port, &dist).await;
    let listening = restarted.elapsed();
    wait_state(&a, "lobby", "online").await;
    let online = restarted.elapsed();
    eprintln!(
        "server restart → page online: {} ms (listening after {} ms, page online {} ms \
         later; the server was down {} ms)",
        online.as_millis(),
        listening.as_millis(),
        (online - listening).as_millis(),
        down.as_millis()
    );
    assert_eq!(
        a.execute("return window.__samePage ?? false;", vec![])
            .await
            .ok(),
        Some(json!(true)),
        "the page reloaded"
    );
    let after = text_of(&a, "#me-id").await;
    assert!(!after.ends_with(&before), "still the old player: {after}");
    assert_eq!(
        text_of(&a, "#notice .notice-text").await,
        Lang::En.notice(&Notice::SessionRenewed)
    );

    // The reconnected page really works: a second player matches it and they chat.
    let b = browser(&driver, "en-US", 390, 780).await;
    let id_b = enter(&b, &base).await;
    click(&a, "#match").await;
    wait_state(&a, "waiting", "online").await;
    click(&b, "#match").await;
    wait_state(&a, "chat", "online").await;
    wait_state(&b, "chat", "online").await;
    assert_eq!(text_of(&a, "#peer-id").await, id_b);
    assert!(after.ends_with(&text_of(&b, "#peer-id").await));
    say(&a, "back after the restart").await;
    wait_messages(&b, "B", &[msg("back after the restart", false)]).await;
    say(&b, "welcome back").await;
    wait_messages(
        &a,
        "A",
        &[
            msg("back after the restart", true),
            msg("welcome back", false),
        ],
    )
    .await;

    // A second drain, with both players in a room, is as quick.
    let (exit, drain) = server.terminate(Duration::from_secs(5)).await;
    eprintln!(
        "SIGTERM with a room open → server exited: {} ms ({exit})",
        drain.as_millis()
    );
    assert!(exit.success(), "exit after SIGTERM: {exit}");
    assert_eq!(
        server
            .fields("shutting down: closing connections")
            .map(|f| f["open"].clone()),
        Some(json!(2)),
        "log: {:?}",
        server.log
    );
    for c in [a, b] {
        let _ = c.close().await;
    }
    drop(driver);
}
