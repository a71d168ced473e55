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

/// A raw WebSocket client (handshake done) for frames the usual client will not send.
async fn raw_socket(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tcp.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 101"));
    tcp
}

/// One masked client frame.
fn masked_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![if fin { 0x80 } else { 0 } | opcode];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Reads until a close frame arrives; returns its code.
async fn close_code(tcp: &mut tokio::net::TcpStream) -> u16 {
    use tokio::io::AsyncReadExt;
    let mut all = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        let n = tokio::time::timeout(WAIT, tcp.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed without a close frame");
        all.extend_from_slice(&buf[..n]);
        // Server frames are unmasked; skip whole frames until the close (opcode 8).
        let mut at = 0;
        while at + 2 <= all.len() {
            let opcode = all[at] & 0x0f;
            let (len, header) = match all[at + 1] & 0x7f {
                126 if at + 4 <= all.len() => {
                    (u16::from_be_bytes([all[at + 2], all[at + 3]]) as usize, 4)
                }
                127 => panic!("unexpected huge server frame"),
                126 => break,
                n => (n as usize, 2),
            };
            if at + header + len > all.len() {
                break;
            }
            if opcode == 8 {
                return u16::from_be_bytes([all[at + header], all[at + header + 1]]);
            }
            at += header + len;
        }
    }
}

#[tokio::test]
async fn the_limit_applies_to_the_reassembled_message() {
    use tokio::io::AsyncWriteExt;
    let s = start().await;
    // Two fragments of 40 KiB: each under the limit, together over it.
    let mut tcp = raw_socket(s.addr).await;
    let part = vec![b'a'; 40 * 1024];
    tcp.write_all(&masked_frame(false, 1, &part)).await.unwrap();
    tcp.write_all(&masked_frame(true, 0, &part)).await.unwrap();
    assert_eq!(close_code(&mut tcp).await, 1009);
    // Fragments adding up to a normal request are read as one message.
    let mut c = raw_socket(s.addr).await;
    let text = br#"{"jsonrpc":"2.0","id":"f","method":"game/cancel_match","params":[]}"#;
    c.write_all(&masked_frame(false, 1, &text[..20]))
        .await
        .unwrap();
    c.write_all(&masked_frame(true, 0, &text[20..]))
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(&mut c, &mut buf))
        .await
        .unwrap()
        .unwrap();
    let reply = String::from_utf8_lossy(&buf[2..n]).into_owned();
    assert!(
        reply.contains(r#""code":20000"#) && reply.contains(r#""id":"f""#),
        "{reply}"
    );
}

#[tokio::test]
async fn text_that_is_not_utf8_closes_1007() {
    use tokio::io::AsyncWriteExt;
    let s = start().await;
    let mut tcp = raw_socket(s.addr).await;
    tcp.write_all(&masked_frame(true, 1, &[0xff, 0xfe, 0xfd]))
        .await
        .unwrap();
    assert_eq!(close_code(&mut tcp).await, 1007);
}
