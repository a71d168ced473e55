//! Graceful shutdown: clients told with 1012, `get_config` answering -20001 (503) and
//! `/healthz` 503 while draining, the process exiting on SIGTERM within a few seconds.

use crate::common::*;
use serde_json::json;
use std::io::{BufRead, BufReader, Lines};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test]
async fn drain_tells_clients_1012_and_refuses_new_work() {
    let mut s = start().await;
    let (mut a, mut b, _) = s.matched_pair().await;
    let stop = s.running.as_ref().unwrap().stop_token();
    stop.cancel();
    // `a` does not answer the close yet, which keeps the drain open for a moment.
    let mut saw_busy = false;
    for _ in 0..50 {
        let (status, body) = s
            .post_json("/app/get_config", &json!({"id": 1, "game_zone": "z"}))
            .await;
        if status == 503 {
            assert_eq!(body["code"], -20001);
            assert_eq!(body["message"], "系统处理中");
            saw_busy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(saw_busy, "get_config never answered -20001 while draining");
    let (status, _, _) = s.get("/healthz").await;
    assert_eq!(status, 503);
    assert!(
        matches!(Client::connect(s.addr, "").await, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status().as_u16() == 503)
    );
    assert_eq!(a.ended().await, Ended::Closed(Some(1012)));
    assert_eq!(b.ended().await, Ended::Closed(Some(1012)));
    let started = Instant::now();
    s.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(4));
}

/// The real binary on 127.0.0.1:0 with JSON logs at `rust_log`; its address and the rest
/// of its log (stdout, where tracing writes).
fn spawn_binary(rust_log: &str) -> (Child, SocketAddr, Lines<BufReader<ChildStdout>>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_matchchat-server"))
        .args(["--bind", "127.0.0.1:0", "--log-format", "json"])
        .env("RUST_LOG", rust_log)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("server binary starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let addr: SocketAddr = loop {
        let line = lines.next().expect("server prints its address").unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if let Some(addr) = v["fields"]["local_addr"].as_str() {
            break addr.parse().unwrap();
        }
    };
    (child, addr, lines)
}

/// Sends SIGTERM and waits (at most 5 s) for a successful exit.
async fn terminate(child: &mut Child) -> Duration {
    let started = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "still running 5 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "{exit:?}");
    started.elapsed()
}

#[tokio::test]
async fn sigterm_stops_the_binary_within_seconds_with_clients_told() {
    let (mut child, addr, lines) = spawn_binary("info");
    let mut c = Client::connect(addr, "").await.unwrap();
    c.expect_reply("m", "game/cancel_match", json!([]), 20000)
        .await;
    let term = tokio::spawn(async move {
        let took = terminate(&mut child).await;
        (child, took)
    });
    assert_eq!(c.ended().await, Ended::Closed(Some(1012)));
    let (_child, took) = term.await.unwrap();
    assert!(took < Duration::from_secs(5));
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("stopped")), "{rest:?}");
    assert!(!rest.iter().any(|l| l.contains("panicked")), "{rest:?}");
}

/// Chat text is the players' business: no log line carries it, even with the server's
/// own debug logs on (its info logs are what production keeps).
#[tokio::test]
async fn chat_text_never_reaches_the_log() {
    let (mut child, addr, lines) = spawn_binary("info,matchchat_server=debug,matchchat_core=debug");
    let marker = "secret-words-7f3a";
    let mut a = Client::connect(addr, "").await.unwrap();
    let mut b = Client::connect(addr, "").await.unwrap();
    match_two(&mut a, &mut b).await;
    a.expect_reply(
        "c1",
        "game/send_chat_msg",
        json!({"chat_msg": marker, "chat_sn": "s1"}),
        20002,
    )
    .await;
    let push = b.expect_push(20002).await;
    assert_eq!(push["result"]["data"]["chat_msg"], marker);
    // Rejected requests are logged at debug: their text must not leak either.
    a.send_text(format!(r#"{{"jsonrpc":"2.0","id":"x","method":"game/send_chat_msg","params":{{"chat_msg":"{marker}"}}}}"#))
        .await;
    assert_result(&a.next_json().await, 40000);
    drop((a, b));
    terminate(&mut child).await;
    let log: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(log.iter().any(|l| l.contains("stopped")), "{log:?}");
    let leaks: Vec<&String> = log.iter().filter(|l| l.contains(marker)).collect();
    assert!(leaks.is_empty(), "chat text in the log: {leaks:?}");
}
