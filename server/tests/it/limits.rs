//! PROTOCOL.md §3 and §7: frame limit (1009), rate limit (40009) and recovery, flood
//! close, slow consumers, idle drop, connection limits.

use crate::common::*;
use futures_util::SinkExt;
use serde_json::json;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

fn chat_frame_of_len(len: usize) -> String {
    let head =
        r#"{"jsonrpc":"2.0","id":"big","method":"game/send_chat_msg","params":{"chat_msg":""#;
    let tail = r#"","chat_sn":"s"}}"#;
    let pad = len - head.len() - tail.len();
    format!("{head}{}{tail}", "a".repeat(pad))
}

#[tokio::test]
async fn frame_of_64_kib_is_read_one_byte_more_closes_1009() {
    let s = start().await;
    let mut c = s.anonymous().await;
    let frame = chat_frame_of_len(64 * 1024);
    assert_eq!(frame.len(), 65_536);
    c.send_text(frame).await;
    // Read and answered (too long a chat_msg, and not in a room anyway).
    let v = c.next_json().await;
    assert_result(&v, 40001);
    c.send_text(chat_frame_of_len(64 * 1024 + 1)).await;
    assert_eq!(c.ended().await, Ended::Closed(Some(1009)));
}

#[tokio::test]
async fn rate_limit_answers_40009_per_excess_frame_then_recovers() {
    let s = start_with(|c| {
        c.rate_per_sec = 5.0;
        c.rate_burst = 5.0;
    })
    .await;
    let mut c = s.anonymous().await;
    for i in 0..8 {
        c.request(&format!("r{i}"), "game/cancel_match", json!([]))
            .await;
    }
    c.send_text("not json at all").await;
    let mut codes = Vec::new();
    for _ in 0..9 {
        let v = c.next_json().await;
        codes.push((v["id"].clone(), v["result"]["code"].clone()));
        if v["result"]["code"] == 40009 {
            assert_result(&v, 40009);
            assert_eq!(v["result"]["data"], json!({}));
        }
    }
    let ok = codes.iter().filter(|(_, c)| *c == 20000).count();
    assert_eq!(ok, 5, "the burst passes: {codes:?}");
    assert_eq!(codes[5], (json!("r5"), json!(40009)), "the id is echoed");
    // The rate limit comes before parsing: even garbage is 40009, with a null id.
    assert_eq!(codes[8], (serde_json::Value::Null, json!(40009)));
    tokio::time::sleep(Duration::from_millis(450)).await;
    c.expect_reply("later", "game/cancel_match", json!([]), 20000)
        .await;
}

#[tokio::test]
async fn a_persistent_flood_is_closed_1008_and_others_are_unaffected() {
    let s = start_with(|c| {
        c.rate_per_sec = 5.0;
        c.rate_burst = 5.0;
        c.flood_close_after = 20;
    })
    .await;
    let (mut a, mut b, _) = s.matched_pair().await;
    let mut flooder = s.anonymous().await;
    for i in 0..200 {
        if flooder
            .ws
            .send(Message::text(format!(
                "{{\"jsonrpc\":\"2.0\",\"id\":{i},\"method\":\"game/cancel_match\",\"params\":[]}}"
            )))
            .await
            .is_err()
        {
            break;
        }
    }
    assert_eq!(flooder.ended().await, Ended::Closed(Some(1008)));
    a.expect_reply(
        "c",
        "game/send_chat_msg",
        json!({"chat_msg": "fine", "chat_sn": "1"}),
        20002,
    )
    .await;
    b.expect_push(20002).await;
}

#[tokio::test]
async fn a_reader_that_stops_is_disconnected_and_its_peer_keeps_working() {
    let s = start_with(|c| {
        c.rate_per_sec = 1_000_000.0;
        c.rate_burst = 1_000_000.0;
        c.outbound_queue = 8;
    })
    .await;
    let (mut a, mut b, _) = s.matched_pair().await;
    // b stops reading. a keeps sending big messages until the server gives up on b.
    let text = "字".repeat(1000);
    let mut closed = false;
    for i in 0..20_000 {
        a.chat(&format!("c{i}"), &text, &i.to_string()).await;
        let reply = a.next_json().await;
        if reply["result"]["code"] == 20003 {
            assert_eq!(reply["result"]["data"]["reason"], "disconnected");
            // The reply to this last chat is still on its way (accepted or, after the
            // room closed, 40004).
            let last = a.next_json().await;
            assert_eq!(last["id"], format!("c{i}"));
            closed = true;
            break;
        }
        assert_result(&reply, 20002);
    }
    assert!(closed, "the slow reader was never disconnected");
    assert!(s.metric("matchchat_slow_consumers_closed_total").await >= 1.0);
    // b, reading at last, finds its connection closed with 1008 (or cut).
    let end = b.ended().await;
    assert!(
        matches!(end, Ended::Closed(Some(1008)) | Ended::Dropped),
        "{end:?}"
    );
    // a is free and works.
    let mut c = s.anonymous().await;
    match_two(&mut a, &mut c).await;
}

#[tokio::test]
async fn a_silent_connection_is_dropped_after_the_idle_timeout() {
    let s = start_with(|c| {
        c.idle_timeout_ms = 300;
        c.ping_interval_ms = 60_000;
    })
    .await;
    let mut c = s.anonymous().await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(matches!(
        c.ended().await,
        Ended::Closed(Some(1001)) | Ended::Dropped
    ));
}

#[tokio::test]
async fn pongs_to_server_pings_keep_a_connection_alive() {
    let s = start_with(|c| {
        c.idle_timeout_ms = 400;
        c.ping_interval_ms = 100;
    })
    .await;
    let mut c = s.anonymous().await;
    // Reading makes the client answer each ping with a pong.
    c.expect_silence(Duration::from_millis(1_000)).await;
    c.expect_reply("alive", "game/cancel_match", json!([]), 20000)
        .await;
}

#[tokio::test]
async fn connection_limits_refuse_the_upgrade_with_503() {
    let s = start_with(|c| c.max_connections = 2).await;
    let _a = s.anonymous().await;
    let _b = s.anonymous().await;
    match Client::connect(s.addr, "").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 503)
        }
        Err(other) => panic!("expected 503, got {other}"),
        Ok(_) => panic!("third connection accepted"),
    }
    let s = start_with(|c| c.max_connections_per_ip = 1).await;
    let a = s.anonymous().await;
    assert!(
        matches!(Client::connect(s.addr, "").await, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status().as_u16() == 503)
    );
    // The slot is given back when the connection ends.
    a.close().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _again = s.anonymous().await;
}

#[tokio::test]
async fn text_that_is_not_utf8_closes_1007() {
    use tokio::io::AsyncWriteExt;
    let s = start().await;
    // A raw handshake, then one masked text frame whose payload is not UTF-8.
    let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        s.addr
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::io::AsyncReadExt::read(&mut tcp, &mut buf)
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 101"));
    let payload = [0xff, 0xfe, 0xfd];
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    tcp.write_all(&frame).await.unwrap();
    let n = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(&mut tcp, &mut buf))
        .await
        .unwrap()
        .unwrap();
    // A close frame (opcode 8) with code 1007.
    assert!(n >= 4, "got {n} bytes");
    assert_eq!(buf[0] & 0x0f, 8);
    assert_eq!(u16::from_be_bytes([buf[2], buf[3]]), 1007);
}
