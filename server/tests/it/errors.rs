//! PROTOCOL.md §4 and §8.1–8.5: every global error and every parameter error, with its
//! exact envelope and text, and the connection staying open after each.

use crate::common::*;
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// Sends a raw frame and returns the answer.
async fn answer(c: &mut Client, text: &str) -> Value {
    c.send_text(text).await;
    c.next_json().await
}

#[tokio::test]
async fn protocol_errors_minus_1000_with_id_when_readable() {
    let s = start().await;
    let mut c = s.anonymous().await;
    for text in [
        "not json",
        "",
        "[]",
        r#"[{"jsonrpc":"2.0","id":"b","method":"game/match_player","params":[]}]"#,
        "42",
        r#"{"jsonrpc":"2.0","method":"game/match_player","params":[]}"#,
        r#"{"jsonrpc":"2.0","id":null,"method":"game/match_player","params":[]}"#,
        r#"{"jsonrpc":"2.0","id":[1],"method":"game/match_player","params":[]}"#,
        r#"{"jsonrpc":"2.0","id":true,"method":"game/match_player","params":[]}"#,
    ] {
        let v = answer(&mut c, text).await;
        assert_error(&v, -1000, Value::Null);
    }
    for text in [
        r#"{"id":"x1","method":"game/match_player","params":[]}"#,
        r#"{"jsonrpc":"1.0","id":"x1","method":"game/match_player","params":[]}"#,
        r#"{"jsonrpc":"2.0","id":"x1","params":[]}"#,
        r#"{"jsonrpc":"2.0","id":"x1","method":7,"params":[]}"#,
    ] {
        let v = answer(&mut c, text).await;
        assert_error(&v, -1000, json!("x1"));
    }
    // Numeric ids are echoed as numbers.
    let v = answer(
        &mut c,
        r#"{"jsonrpc":"2.0","id":17,"method":"game/nope","params":[]}"#,
    )
    .await;
    assert_error(&v, -1001, json!(17));
    // Still open and working.
    c.expect_reply("ok", "game/cancel_match", json!([]), 20000)
        .await;
}

#[tokio::test]
async fn binary_frame_is_minus_1000_with_null_id_and_connection_stays_open() {
    let s = start().await;
    let mut c = s.anonymous().await;
    c.ws.send(Message::binary(b"{\"jsonrpc\":\"2.0\"}".to_vec()))
        .await
        .unwrap();
    let v = c.next_json().await;
    assert_error(&v, -1000, Value::Null);
    c.expect_reply("after", "game/cancel_match", json!([]), 20000)
        .await;
}

#[tokio::test]
async fn unknown_method_minus_1001_checked_before_params() {
    let s = start().await;
    let mut c = s.anonymous().await;
    let v = answer(&mut c, r#"{"jsonrpc":"2.0","id":"u","method":"game/fly"}"#).await;
    assert_error(&v, -1001, json!("u"));
}

#[tokio::test]
async fn params_absent_or_not_container_is_minus_1002() {
    let s = start().await;
    let mut c = s.anonymous().await;
    for params in [
        "",
        r#","params":null"#,
        r#","params":"x""#,
        r#","params":1"#,
    ] {
        for method in [
            "game/match_player",
            "game/send_chat_msg",
            "game/cancel_match",
            "game/leave_chat",
        ] {
            let text = format!(r#"{{"jsonrpc":"2.0","id":"p","method":"{method}"{params}}}"#);
            let v = answer(&mut c, &text).await;
            assert_error(&v, -1002, json!("p"));
        }
    }
}

#[tokio::test]
async fn chat_params_missing_40000_and_invalid_40001_with_empty_object_data() {
    let s = start().await;
    let mut c = s.anonymous().await;
    let cases = [
        (json!({}), 40000),
        (json!([]), 40000),
        (json!({"chat_msg": "hi"}), 40000),
        (json!({"chat_sn": "s"}), 40000),
        (json!({"chat_msg": null, "chat_sn": "s"}), 40000),
        (json!({"chat_msg": "hi", "chat_sn": null}), 40000),
        (json!({"chat_msg": 1, "chat_sn": "s"}), 40001),
        (json!({"chat_msg": "hi", "chat_sn": 2}), 40001),
        (json!({"chat_msg": "", "chat_sn": "s"}), 40001),
        (json!({"chat_msg": "hi", "chat_sn": ""}), 40001),
        (
            json!({"chat_msg": "字".repeat(1001), "chat_sn": "s"}),
            40001,
        ),
        (json!({"chat_msg": "hi", "chat_sn": "s".repeat(65)}), 40001),
    ];
    for (params, code) in cases {
        let v = c
            .expect_reply("c", "game/send_chat_msg", params.clone(), code)
            .await;
        assert_eq!(v["result"]["data"], json!({}), "{params}");
    }
    // At the limits exactly, validation passes and the state check answers (not in a room).
    let v = c
        .expect_reply(
            "c",
            "game/send_chat_msg",
            json!({"chat_msg": "字".repeat(1000), "chat_sn": "s".repeat(64)}),
            40004,
        )
        .await;
    assert_eq!(v["result"]["data"], json!({}));
}

#[tokio::test]
async fn state_errors_40003_and_40004() {
    let s = start().await;
    let mut lone = s.anonymous().await;
    let v = lone
        .expect_reply(
            "x",
            "game/send_chat_msg",
            json!({"chat_msg": "hi", "chat_sn": "1"}),
            40004,
        )
        .await;
    assert_eq!(v["result"]["data"], json!({}));
    let v = lone
        .expect_reply("y", "game/leave_chat", json!([]), 40004)
        .await;
    assert_eq!(v["result"]["data"], json!({}));
    let (mut a, _b, _) = s.matched_pair().await;
    let v = a
        .expect_reply("z", "game/match_player", json!([]), 40003)
        .await;
    assert_eq!(v["result"]["data"], json!({}));
}

#[tokio::test]
async fn check_order_validation_before_state() {
    // §8.1: 40001 (validation) answers before 40004 (state) for a player not in a room.
    let s = start().await;
    let mut c = s.anonymous().await;
    c.expect_reply(
        "o",
        "game/send_chat_msg",
        json!({"chat_msg": "", "chat_sn": "s"}),
        40001,
    )
    .await;
    // and 40000 before 40001
    c.expect_reply("o", "game/send_chat_msg", json!({"chat_msg": 5}), 40000)
        .await;
}

#[tokio::test]
async fn error_counts_show_in_metrics() {
    let s = start().await;
    let mut c = s.anonymous().await;
    answer(&mut c, "nope").await;
    answer(
        &mut c,
        r#"{"jsonrpc":"2.0","id":1,"method":"x","params":[]}"#,
    )
    .await;
    let (_, text, _) = s.get("/metrics").await;
    assert!(
        text.contains("matchchat_errors_total{code=\"-1000\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("matchchat_errors_total{code=\"-1001\"} 1"),
        "{text}"
    );
}
