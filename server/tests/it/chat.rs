//! PROTOCOL.md §5 `game/send_chat_msg` and `game/leave_chat`: reply and push, chat_sn
//! idempotency, one order per room, leave and anonymous disconnect.

use crate::common::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn chat_reply_to_sender_and_push_to_peer() {
    let s = start().await;
    let (mut a, mut b, _) = s.matched_pair().await;
    let reply = a
        .expect_reply(
            "yHs6ndAXiyi6spTSKPRXX26dSeTRa4xx",
            "game/send_chat_msg",
            json!({"chat_msg": "123", "chat_sn": "Dhy84razsSeh7WPSiAdW7EsZ76fyt267"}),
            20002,
        )
        .await;
    let push = b.expect_push(20002).await;
    let a_id = reply["result"]["data"]["send_player_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(a_id.len(), 10);
    for v in [&reply, &push] {
        let d = &v["result"]["data"];
        assert_eq!(d["send_player_id"], a_id.as_str());
        assert_eq!(d["chat_msg"], "123");
        assert_eq!(d["chat_sn"], "Dhy84razsSeh7WPSiAdW7EsZ76fyt267");
    }
    assert_eq!(reply["result"], push["result"], "the same result for both");
    // The raw text keeps the seed's member order: jsonrpc, result, id.
    a.chat("raw", "order", "o").await;
    let raw = match futures_util::StreamExt::next(&mut b.ws).await {
        Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => t.to_string(),
        other => panic!("{other:?}"),
    };
    assert!(raw.starts_with(r#"{"jsonrpc":"2.0","result":{"code":20002,"message":"聊天数据","data":{"send_player_id":""#), "{raw}");
    assert!(raw.contains(r#"},"id":""#) && raw.ends_with("\"}"), "{raw}");
    a.next_json().await;
    a.expect_silence(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn sender_identity_comes_from_the_server() {
    let s = start().await;
    let (mut a, mut b, _) = s.matched_pair().await;
    // A forged send_player_id in params is ignored.
    a.request(
        "f",
        "game/send_chat_msg",
        json!({"chat_msg": "hi", "chat_sn": "1", "send_player_id": "forged0000"}),
    )
    .await;
    let reply = a.next_json().await;
    let push = b.expect_push(20002).await;
    assert_ne!(push["result"]["data"]["send_player_id"], "forged0000");
    assert_eq!(
        push["result"]["data"]["send_player_id"],
        reply["result"]["data"]["send_player_id"]
    );
}

#[tokio::test]
async fn repeated_chat_sn_is_answered_again_but_delivered_once() {
    let s = start().await;
    let (mut a, mut b, _) = s.matched_pair().await;
    let first = a
        .expect_reply(
            "c1",
            "game/send_chat_msg",
            json!({"chat_msg": "first", "chat_sn": "dup"}),
            20002,
        )
        .await;
    b.expect_push(20002).await;
    // §8.9: a repeat with different text gets the first message's 20002, unchanged.
    let again = a
        .expect_reply(
            "c2",
            "game/send_chat_msg",
            json!({"chat_msg": "second text", "chat_sn": "dup"}),
            20002,
        )
        .await;
    assert_eq!(again["result"], first["result"]);
    assert_eq!(again["id"], "c2");
    b.expect_silence(Duration::from_millis(300)).await;
    // The peer may use the same chat_sn for its own message.
    b.expect_reply(
        "d",
        "game/send_chat_msg",
        json!({"chat_msg": "mine", "chat_sn": "dup"}),
        20002,
    )
    .await;
    assert_eq!(
        a.expect_push(20002).await["result"]["data"]["chat_msg"],
        "mine"
    );
}

#[tokio::test]
async fn a_few_hundred_messages_keep_one_order_for_both_members() {
    // Rate limit raised: this test is about order, not limits.
    let s = start_with(|c| {
        c.rate_per_sec = 10_000.0;
        c.rate_burst = 10_000.0;
    })
    .await;
    let (mut a, mut b, _) = s.matched_pair().await;
    let n = 300;
    for i in 0..n {
        let (sender, tag) = if i % 3 == 0 {
            (&mut b, "b")
        } else {
            (&mut a, "a")
        };
        sender
            .chat(
                &format!("id{i}"),
                &format!("{tag}{i}"),
                &format!("{tag}-{i}"),
            )
            .await;
    }
    let mut seen_a = Vec::new();
    let mut seen_b = Vec::new();
    while seen_a.len() < n || seen_b.len() < n {
        tokio::select! {
            v = a.next_json(), if seen_a.len() < n => seen_a.push(v),
            v = b.next_json(), if seen_b.len() < n => seen_b.push(v),
        }
    }
    let seqs = |frames: &[serde_json::Value]| -> Vec<u64> {
        frames
            .iter()
            .map(|v| v["result"]["data"]["seq"].as_u64().unwrap())
            .collect()
    };
    let msgs = |frames: &[serde_json::Value]| -> Vec<String> {
        frames
            .iter()
            .map(|v| v["result"]["data"]["chat_msg"].as_str().unwrap().to_owned())
            .collect()
    };
    // §8.8: one total order, the sender's own replies included.
    assert_eq!(msgs(&seen_a), msgs(&seen_b));
    assert_eq!(seqs(&seen_a), (1..=n as u64).collect::<Vec<_>>());
    // Per-sender order is the order sent.
    let a_sent: Vec<String> = msgs(&seen_b)
        .into_iter()
        .filter(|m| m.starts_with('a'))
        .collect();
    let mut sorted = a_sent.clone();
    sorted.sort_by_key(|m| m[1..].parse::<u32>().unwrap());
    assert_eq!(a_sent, sorted);
    a.expect_silence(Duration::from_millis(100)).await;
    b.expect_silence(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn leave_sends_20003_left_and_frees_both() {
    let s = start().await;
    let (mut a, mut b, room) = s.matched_pair().await;
    let v = a
        .expect_reply("l", "game/leave_chat", json!([]), 20000)
        .await;
    assert_eq!(v["result"]["data"], json!([]));
    let left = b.expect_push(20003).await;
    let d = &left["result"]["data"];
    assert_eq!(d["room_id"], room.as_str());
    assert_eq!(d["reason"], "left");
    assert_eq!(d["player_id"].as_str().unwrap().len(), 10);
    // The room is closed: chatting fails, matching works again.
    b.expect_reply(
        "c",
        "game/send_chat_msg",
        json!({"chat_msg": "anyone?", "chat_sn": "x"}),
        40004,
    )
    .await;
    a.expect_reply("l2", "game/leave_chat", json!([]), 40004)
        .await;
    crate::common::match_two(&mut a, &mut b).await;
}

#[tokio::test]
async fn anonymous_disconnect_is_20003_disconnected_at_once() {
    let s = start().await;
    let (a, mut b, room) = s.matched_pair().await;
    drop(a); // the socket goes away without a close handshake
    let left = b.expect_push(20003).await;
    assert_eq!(left["result"]["data"]["reason"], "disconnected");
    assert_eq!(left["result"]["data"]["room_id"], room.as_str());
    b.expect_reply("m", "game/match_player", json!([]), 20000)
        .await;
}

#[tokio::test]
async fn rooms_are_isolated() {
    let s = start().await;
    let (mut a, mut b, room1) = s.matched_pair().await;
    let (mut c, mut d, room2) = s.matched_pair().await;
    assert_ne!(room1, room2);
    a.chat("x", "for b only", "1").await;
    a.next_json().await;
    b.expect_push(20002).await;
    c.expect_silence(Duration::from_millis(200)).await;
    d.expect_silence(Duration::from_millis(50)).await;
}

#[tokio::test]
async fn bursts_both_ways_are_delivered_without_dropping_fast_readers() {
    // Found by the black-box conformance suite: 200 requests per side in one write used to
    // overflow a 256-frame queue although both clients were reading.
    let s = start_with(|c| {
        c.rate_per_sec = 100_000.0;
        c.rate_burst = 100_000.0;
    })
    .await;
    let (mut a, mut b, _) = s.matched_pair().await;
    let n = 300;
    // Every request of a side in one write, as a pipelining client would.
    for (c, tag) in [(&mut a, "a"), (&mut b, "b")] {
        for i in 0..n {
            let frame = json!({"jsonrpc": "2.0", "id": format!("{tag}{i}"), "method": "game/send_chat_msg", "params": {"chat_msg": tag, "chat_sn": format!("{tag}{i}")}});
            futures_util::SinkExt::feed(
                &mut c.ws,
                tokio_tungstenite::tungstenite::Message::text(frame.to_string()),
            )
            .await
            .unwrap();
        }
    }
    futures_util::SinkExt::flush(&mut a.ws).await.unwrap();
    futures_util::SinkExt::flush(&mut b.ws).await.unwrap();
    let (mut got_a, mut got_b) = (0, 0);
    while got_a < 2 * n || got_b < 2 * n {
        tokio::select! {
            v = a.next_json(), if got_a < 2 * n => { assert_result(&v, 20002); got_a += 1; }
            v = b.next_json(), if got_b < 2 * n => { assert_result(&v, 20002); got_b += 1; }
        }
    }
    a.expect_silence(Duration::from_millis(100)).await;
}
