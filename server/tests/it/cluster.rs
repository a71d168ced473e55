//! Several nodes on one Redis (`--redis-url`): players on different nodes match and
//! chat, a burst over three nodes pairs everyone once, a node killed with SIGKILL loses
//! nothing, and Redis restarting (with or without its data) gives clear errors, then
//! service again.
//!
//! Each test starts its own `redis-server` (Debian's package; `cargo xtask test`
//! installs it) on a free loopback port, with `appendonly yes` + `appendfsync always`,
//! the configuration `docs/protocol.md` («Several nodes») asks for. Nodes run in this process
//! (`matchchat_server::start`) or, where one must die by SIGKILL, as processes of the
//! real binary.

use crate::common::*;
use crate::resilient::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Liveness settings short enough for tests: a dead node is found within ~2 s, and a node
/// slowed by a loaded CI machine is not declared dead for it.
const HEARTBEAT_MS: u64 = 150;
const NODE_TIMEOUT_MS: u64 = 1_500;
const GRACE_MS: u64 = 15_000;
/// Snapshots (and log trimming) this often, so that nodes joining in the tests start
/// from a snapshot and read a trimmed log.
const SNAPSHOT_MS: u64 = 300;

static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

/// A `redis-server` of this test, on loopback.
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl Redis {
    fn start() -> Redis {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "matchchat-redis-{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        let mut redis = Redis {
            child: None,
            port,
            dir,
        };
        redis.restart(false);
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server without letting it save anything more (SIGKILL): what it
    /// acknowledged is already in its append-only file.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, with its data, or `empty`.
    fn restart(&mut self, empty: bool) {
        self.kill();
        if empty {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        std::fs::create_dir_all(&self.dir).expect("redis data dir");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--protected-mode", "yes"])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--daemonize", "no", "--loglevel", "warning"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}): install Debian's redis-server package \
                     (`cargo xtask test` does)"
                )
            });
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("bound").port()
}

/// A node in this process.
async fn node(redis: &Redis) -> TestServer {
    let url = redis.url();
    start_with(move |c| {
        c.redis_url = Some(url);
        c.node_heartbeat_ms = HEARTBEAT_MS;
        c.node_timeout_ms = NODE_TIMEOUT_MS;
        c.resume_grace_ms = GRACE_MS;
        c.snapshot_every_ms = SNAPSHOT_MS;
        c.rate_per_sec = 100_000.0;
        c.rate_burst = 100_000.0;
    })
    .await
}

/// A node as a process of the real binary, so that it can be killed for real.
struct NodeProcess {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl NodeProcess {
    fn spawn(redis: &Redis) -> NodeProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_matchchat-server"))
            .args(["--bind", "127.0.0.1:0", "--log-format", "json"])
            .args(["--redis-url", &redis.url()])
            .args(["--node-heartbeat-ms", &HEARTBEAT_MS.to_string()])
            .args(["--node-timeout-ms", &NODE_TIMEOUT_MS.to_string()])
            .args(["--resume-grace-ms", &GRACE_MS.to_string()])
            .args(["--snapshot-every-ms", &SNAPSHOT_MS.to_string()])
            .args(["--rate-per-sec", "100000", "--rate-burst", "100000"])
            .arg("--static-dir")
            .arg(std::env::temp_dir().join("matchchat-no-client-here"))
            .env("RUST_BACKTRACE", "1")
            .stdout(Stdio::piped())
            .spawn()
            .expect("the server binary starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (found, addr) = std::sync::mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let text: String = rest.chars().take_while(|c| *c != '"').collect();
                    let _ = found.send(text);
                }
                lines.lock().unwrap().push(line);
            }
        });
        let addr = addr
            .recv_timeout(Duration::from_secs(20))
            .expect("the node says where it listens")
            .parse()
            .expect("an address");
        NodeProcess { child, addr, log }
    }

    fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn assert_no_panic(&self) {
        let log = self.log.lock().unwrap();
        assert!(
            !log.iter().any(|l| l.contains("panicked")),
            "a node panicked:\n{}",
            log.join("\n")
        );
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.sigkill();
    }
}

/// A client of a node by address (for nodes that are processes).
fn at(addr: SocketAddr) -> TestServer {
    TestServer {
        running: None,
        addr,
    }
}

fn data(v: &Value) -> &Value {
    &v["result"]["data"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_on_two_nodes_match_chat_both_ways_and_leave() {
    let redis = Redis::start();
    let (one, two) = (node(&redis).await, node(&redis).await);
    let (mut a, sa) = one.session(7, "cross").await;
    let (mut b, sb) = two.session(7, "cross").await;
    let room = match_two(&mut a, &mut b).await;
    assert_eq!(room.len(), 32);

    // 100 messages each way, sent without waiting: order and sender kept, each once.
    const N: usize = 100;
    for i in 0..N {
        a.chat(&format!("a{i}"), &format!("from a {i}"), &format!("a-{i}"))
            .await;
        b.chat(&format!("b{i}"), &format!("from b {i}"), &format!("b-{i}"))
            .await;
    }
    for (me, my, peer, mine, theirs) in [(&mut a, &sa, &sb, "a", "b"), (&mut b, &sb, &sa, "b", "a")]
    {
        let (mut replies, mut pushes) = (Vec::new(), Vec::new());
        while replies.len() < N || pushes.len() < N {
            let v = me.next_json().await;
            assert_result(&v, 20002);
            if data(&v)["send_player_id"] == my.player.as_str() {
                replies.push(v["id"].as_str().unwrap_or("").to_owned());
            } else {
                assert_push_id(&v);
                assert_eq!(data(&v)["send_player_id"], peer.player.as_str(), "{v}");
                pushes.push(data(&v)["chat_msg"].as_str().unwrap_or("").to_owned());
            }
        }
        let want_replies: Vec<String> = (0..N).map(|i| format!("{mine}{i}")).collect();
        let want_pushes: Vec<String> = (0..N).map(|i| format!("from {theirs} {i}")).collect();
        assert_eq!(replies, want_replies);
        assert_eq!(pushes, want_pushes);
    }

    // A repeated chat_sn sent through the other node's copy is still recognised.
    let again = a
        .expect_reply(
            "again",
            "game/send_chat_msg",
            json!({"chat_msg": "from a 0", "chat_sn": "a-0"}),
            20002,
        )
        .await;
    assert_eq!(data(&again)["chat_sn"], "a-0");
    b.expect_silence(Duration::from_millis(300)).await;

    a.expect_reply("bye", "game/leave_chat", json!([]), 20000)
        .await;
    let left = b.expect_push(20003).await;
    assert_eq!(data(&left)["reason"], "left", "{left}");
    assert_eq!(data(&left)["room_id"], room.as_str(), "{left}");
    // Both copies agree the room is gone.
    for n in [&one, &two] {
        assert_eq!(n.metric("matchchat_rooms").await, 0.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_three_nodes_pairs_everyone_once_and_zones_never_mix() {
    let redis = Redis::start();
    let nodes = [node(&redis).await, node(&redis).await, node(&redis).await];
    // 20 players in each of two zones, and one more in "red" who must stay waiting.
    let mut players = Vec::new();
    for i in 0..41 {
        let zone = if i % 2 == 0 { "red" } else { "blue" };
        let (client, session) = nodes[i % 3].session(3, zone).await;
        players.push((client, session, zone));
    }
    let zone_of: HashMap<String, &str> = players
        .iter()
        .map(|(_, s, z)| (s.player.clone(), *z))
        .collect();
    // All ask at once.
    let tasks: Vec<_> = players
        .into_iter()
        .map(|(mut client, session, zone)| {
            tokio::spawn(async move {
                client
                    .expect_reply("m", "game/match_player", json!([]), 20000)
                    .await;
                let matched = client.try_next_json(Duration::from_secs(10)).await;
                (client, session, zone, matched)
            })
        })
        .collect();
    let mut rooms: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut waiting = Vec::new();
    let mut clients = Vec::new();
    for task in tasks {
        let (client, session, zone, matched) = task.await.expect("player task");
        match matched {
            Some(v) => {
                assert_result(&v, 20001);
                let peer = data(&v)["peer_ids"][0].as_str().unwrap_or("").to_owned();
                assert_eq!(zone_of.get(&peer), Some(&zone), "zones mixed: {v}");
                let room = data(&v)["room_id"].as_str().unwrap_or("").to_owned();
                rooms.entry(room).or_default().push(session.player.clone());
            }
            None => waiting.push((session.player.clone(), zone)),
        }
        clients.push(client);
    }
    assert_eq!(rooms.len(), 20, "{rooms:?}");
    assert!(rooms.values().all(|m| m.len() == 2), "{rooms:?}");
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    assert_eq!(waiting[0].1, "red");
    // Nobody gets a second 20001, and every copy of the state agrees.
    for client in clients.iter_mut() {
        client.expect_silence(Duration::from_millis(50)).await;
    }
    for n in &nodes {
        assert_eq!(n.metric("matchchat_rooms").await, 20.0);
        let (_, text, _) = n.get("/metrics").await;
        assert!(
            text.contains("matchchat_queued_players{product_id=\"3\",game_zone=\"red\"} 1"),
            "{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_killed_mid_chat_lose_nothing_and_double_nothing() {
    const ROOMS: usize = 10;
    const CYCLES: usize = 8;
    let redis = Redis::start();
    let mut nodes = [NodeProcess::spawn(&redis), NodeProcess::spawn(&redis)];
    let mut rooms = Vec::new();
    for r in 0..ROOMS {
        let zone = format!("kill-{r}");
        let (a, sa) = at(nodes[0].addr).session(5, &zone).await;
        let (b, sb) = at(nodes[1].addr).session(5, &zone).await;
        let (mut a, mut b) = (a, b);
        match_two(&mut a, &mut b).await;
        rooms.push([
            Resilient::new(nodes[0].addr, a, sa),
            Resilient::new(nodes[1].addr, b, sb),
        ]);
    }
    let mut rng = Rng(0x5DEE_CE66_D1CE_4E5B);
    for cycle in 0..CYCLES {
        // Everyone sends; some replies are still in flight when the node dies.
        for players in rooms.iter_mut() {
            for p in players.iter_mut() {
                for _ in 0..=rng.below(8) {
                    p.send_new().await;
                }
                p.read_for(Duration::from_millis(rng.below(3))).await;
            }
        }
        let victim = cycle % 2;
        let dead = nodes[victim].addr;
        nodes[victim].sigkill();
        let survivor = nodes[1 - victim].addr;
        // The players of the dead node reconnect to the other one, with their session
        // and last_seq, and resend what was not acknowledged; their peers keep talking.
        for players in rooms.iter_mut() {
            for p in players.iter_mut() {
                if p.server == dead {
                    p.kill();
                    p.server = survivor;
                    p.connect().await;
                } else {
                    p.send_new().await;
                }
            }
        }
        // A new node joins (it reads the whole log) and takes the dead one's place.
        nodes[victim] = NodeProcess::spawn(&redis);
    }
    let (mut checked, mut violations) = (0, Vec::new());
    for players in rooms.iter_mut() {
        let (n, mut v) = settle_and_check(players).await;
        checked += n;
        violations.append(&mut v);
    }
    let reconnects: usize = rooms.iter().flatten().map(|p| p.reconnects).sum();
    println!(
        "cluster kills: {CYCLES} nodes killed, {reconnects} reconnects, {checked} deliveries checked, {} violations",
        violations.len()
    );
    assert!(violations.is_empty(), "{violations:#?}");
    assert!(
        checked >= ROOMS * CYCLES * 2,
        "only {checked} deliveries checked"
    );
    for n in &nodes {
        n.assert_no_panic();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarting_gives_clear_errors_then_service_with_nothing_lost() {
    let mut redis = Redis::start();
    let (one, two) = (node(&redis).await, node(&redis).await);
    let (a, sa) = one.session(9, "outage").await;
    let (b, sb) = two.session(9, "outage").await;
    let (mut a, mut b) = (a, b);
    match_two(&mut a, &mut b).await;
    a.expect_reply(
        "1",
        "game/send_chat_msg",
        json!({"chat_msg": "before", "chat_sn": "s1"}),
        20002,
    )
    .await;
    let before = b.expect_push(20002).await;
    assert_eq!(data(&before)["chat_msg"], "before");
    let before_seq = data(&before)["seq"].as_u64().expect("a seq");

    redis.kill();
    // A request cannot be ordered without Redis: the socket is closed with 1012
    // ("try again later"), not answered wrongly.
    a.chat("2", "during", "s2").await;
    assert_eq!(a.ended().await, Ended::Closed(Some(1012)));
    // New sessions: -20002 (HTTP 500). Resuming: HTTP 503. Health: 503.
    let (status, body) = one
        .post_json("/app/get_config", &json!({"id": 9, "game_zone": "outage"}))
        .await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["code"], -20002, "{body}");
    match Client::connect(one.addr, &format!("session_id={}", sa.id)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 503)
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a session cannot be checked without Redis"),
    }
    let (status, _, _) = one.get("/healthz").await;
    assert_eq!(status, 503);

    redis.restart(false);
    for n in [&one, &two] {
        wait_healthy(n).await;
    }
    // a resumes and resends its unacknowledged message with the same chat_sn.
    let mut a = Client::connect(
        one.addr,
        &format!("session_id={}&last_seq={before_seq}", sa.id),
    )
    .await
    .expect("resume after the outage");
    assert_eq!(
        data(&a.expect_push(20001).await)["peer_ids"][0],
        sb.player.as_str()
    );
    a.expect_reply(
        "2",
        "game/send_chat_msg",
        json!({"chat_msg": "during", "chat_sn": "s2"}),
        20002,
    )
    .await;
    // b's socket stayed open through the outage; it gets the message once.
    let got = b.expect_push(20002).await;
    assert_eq!(data(&got)["chat_msg"], "during");
    b.expect_reply(
        "3",
        "game/send_chat_msg",
        json!({"chat_msg": "after", "chat_sn": "t1"}),
        20002,
    )
    .await;
    assert_eq!(data(&a.expect_push(20002).await)["chat_msg"], "after");
    a.expect_silence(Duration::from_millis(200)).await;
    b.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_back_without_its_data_resets_the_nodes_cleanly() {
    let mut redis = Redis::start();
    let (one, two) = (node(&redis).await, node(&redis).await);
    let (a, sa) = one.session(9, "amnesia").await;
    let (b, _) = two.session(9, "amnesia").await;
    let (mut a, mut b) = (a, b);
    match_two(&mut a, &mut b).await;

    redis.restart(true);
    // The nodes find the log shorter than what they read: every socket is closed with
    // 1012 and the copies start over empty.
    assert_eq!(a.ended().await, Ended::Closed(Some(1012)));
    assert_eq!(b.ended().await, Ended::Closed(Some(1012)));
    for n in [&one, &two] {
        wait_healthy(n).await;
        assert_eq!(n.metric("matchchat_rooms").await, 0.0);
    }
    // The sessions went with the data: 401, and a new session works everywhere.
    match Client::connect(one.addr, &format!("session_id={}", sa.id)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 401)
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a lost session must not resume"),
    }
    let (mut a, _) = one.session(9, "amnesia").await;
    let (mut b, _) = two.session(9, "amnesia").await;
    match_two(&mut a, &mut b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_node_starts_from_the_snapshot_and_redis_keeps_only_recent_log() {
    let redis = Redis::start();
    let one = node(&redis).await;
    let (mut a, sa) = one.session(4, "late").await;
    let (mut b, _) = one.session(4, "late").await;
    match_two(&mut a, &mut b).await;
    const N: usize = 200;
    for i in 0..N {
        a.chat(&format!("c{i}"), &format!("m{i}"), &format!("sn{i}"))
            .await;
    }
    let mut last_seq = 0;
    for _ in 0..N {
        let v = b.expect_push(20002).await;
        last_seq = data(&v)["seq"].as_u64().expect("seq");
    }
    for _ in 0..N {
        a.next_json().await;
    }
    // Two snapshot periods later the log was trimmed behind a snapshot.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let len = redis_cli(&redis, &["XLEN", "matchchat:log"]);
        if len.parse::<usize>().is_ok_and(|n| n < N / 2) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "log never trimmed: {len}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!redis_cli(&redis, &["GET", "matchchat:trimmed"]).is_empty());

    // A node started now cannot replay the log from the start: it restores the snapshot.
    let two = node(&redis).await;
    assert_eq!(two.metric("matchchat_rooms").await, 1.0);
    a.close().await;
    let mut a = Client::connect(
        two.addr,
        &format!("session_id={}&last_seq={last_seq}", sa.id),
    )
    .await
    .expect("resume on the new node");
    a.expect_push(20001).await;
    // The chat_sn memory came with the snapshot: a repeat is recognised, not delivered.
    let again = a
        .expect_reply(
            "again",
            "game/send_chat_msg",
            json!({"chat_msg": "m3", "chat_sn": "sn3"}),
            20002,
        )
        .await;
    assert_eq!(
        data(&again)["seq"].as_u64(),
        Some(last_seq - (N as u64 - 4))
    );
    b.expect_reply(
        "b",
        "game/send_chat_msg",
        json!({"chat_msg": "to two", "chat_sn": "b1"}),
        20002,
    )
    .await;
    let got = a.expect_push(20002).await;
    assert_eq!(data(&got)["chat_msg"], "to two");
    assert_eq!(data(&got)["seq"].as_u64(), Some(last_seq + 1));
    b.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_other_room_settings_refuses_to_join() {
    let redis = Redis::start();
    let _first = node(&redis).await;
    let mut config = test_config();
    config.redis_url = Some(redis.url());
    config.room_size = 3;
    let refused = matchchat_server::start(config).await;
    let Err(e) = refused else {
        panic!("a node with room size 3 joined a cluster of room size 2");
    };
    let text = e.to_string();
    assert!(
        text.contains("room-size=2") && text.contains("room-size=3"),
        "{text}"
    );
}

fn redis_cli(redis: &Redis, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &redis.port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

async fn wait_healthy(n: &TestServer) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, _) = n.get("/healthz").await;
        if status == 200 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node never healthy again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
