//! PROTOCOL.md §3 and §6: sessions at upgrade, resume within the grace period with the
//! missed messages exactly once, takeover (4001), expiry of the grace period, §8.11–8.14.

use crate::common::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn unknown_session_is_refused_with_401_at_upgrade() {
    let s = start().await;
    let err = Client::connect(
        s.addr,
        "session_id=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    )
    .await
    .err()
    .expect("refused");
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => {
            assert_eq!(resp.status().as_u16(), 401)
        }
        other => panic!("expected HTTP 401, got {other}"),
    }
}

#[tokio::test]
async fn expired_session_is_refused_with_401() {
    let s = start_with(|c| c.session_ttl_secs = 1).await;
    let session = s.new_session(1, "z").await;
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    match Client::connect(s.addr, &format!("session_id={}", session.id)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 401)
        }
        Err(other) => panic!("expected HTTP 401, got {other}"),
        Ok(_) => panic!("expired session accepted"),
    }
}

#[tokio::test]
async fn session_player_id_is_the_account_from_get_config() {
    let s = start().await;
    let (mut a, sa) = s.session(5, "zone").await;
    let (mut b, sb) = s.session(5, "zone").await;
    match_two(&mut a, &mut b).await;
    let reply = a
        .expect_reply(
            "c",
            "game/send_chat_msg",
            json!({"chat_msg": "hi", "chat_sn": "1"}),
            20002,
        )
        .await;
    assert_eq!(
        reply["result"]["data"]["send_player_id"],
        sa.player.as_str()
    );
    assert_eq!(
        b.expect_push(20002).await["result"]["data"]["send_player_id"],
        sa.player.as_str()
    );
    assert_ne!(sa.player, sb.player);
}

#[tokio::test]
async fn resume_within_grace_replays_20001_then_missed_messages_once() {
    let s = start().await;
    let (mut a, _sa) = s.session(1, "r").await;
    let (mut b, sb) = s.session(1, "r").await;
    let room = match_two(&mut a, &mut b).await;
    a.expect_reply(
        "c0",
        "game/send_chat_msg",
        json!({"chat_msg": "seen", "chat_sn": "0"}),
        20002,
    )
    .await;
    b.expect_push(20002).await;
    b.close().await;
    // The peer is not told during the grace period.
    for i in 1..=3 {
        a.expect_reply(
            "c",
            "game/send_chat_msg",
            json!({"chat_msg": format!("missed {i}"), "chat_sn": i.to_string()}),
            20002,
        )
        .await;
    }
    a.expect_silence(Duration::from_millis(200)).await;
    let mut b2 = s.resume(&sb, None).await;
    let again = b2.expect_push(20001).await;
    assert_eq!(again["result"]["data"]["room_id"], room.as_str());
    for i in 1..=3 {
        let m = b2.expect_push(20002).await;
        assert_eq!(m["result"]["data"]["chat_msg"], format!("missed {i}"));
    }
    b2.expect_silence(Duration::from_millis(200)).await;
    // Live again, both ways.
    a.chat("c", "live", "4").await;
    a.next_json().await;
    assert_eq!(
        b2.expect_push(20002).await["result"]["data"]["chat_msg"],
        "live"
    );
    b2.chat("c", "back", "b1").await;
    b2.next_json().await;
    assert_eq!(
        a.expect_push(20002).await["result"]["data"]["chat_msg"],
        "back"
    );
}

#[tokio::test]
async fn resume_with_last_seq_replays_everything_after_it() {
    let s = start().await;
    let (mut a, _) = s.session(1, "ls").await;
    let (mut b, sb) = s.session(1, "ls").await;
    match_two(&mut a, &mut b).await;
    b.expect_reply(
        "b",
        "game/send_chat_msg",
        json!({"chat_msg": "mine", "chat_sn": "b"}),
        20002,
    )
    .await;
    a.expect_push(20002).await;
    a.expect_reply(
        "a",
        "game/send_chat_msg",
        json!({"chat_msg": "yours", "chat_sn": "a"}),
        20002,
    )
    .await;
    b.expect_push(20002).await;
    drop(b);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A page reload knows nothing: last_seq=0 brings the whole conversation back.
    let mut b2 = s.resume(&sb, Some(0)).await;
    b2.expect_push(20001).await;
    assert_eq!(
        b2.expect_push(20002).await["result"]["data"]["chat_msg"],
        "mine"
    );
    assert_eq!(
        b2.expect_push(20002).await["result"]["data"]["chat_msg"],
        "yours"
    );
    drop(b2);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut b3 = s.resume(&sb, Some(1)).await;
    b3.expect_push(20001).await;
    assert_eq!(
        b3.expect_push(20002).await["result"]["data"]["chat_msg"],
        "yours"
    );
    b3.expect_silence(Duration::from_millis(150)).await;
}

#[tokio::test]
async fn grace_expiry_sends_20003_disconnected() {
    let s = start_with(|c| c.resume_grace_ms = 300).await;
    let (mut a, _) = s.session(1, "g").await;
    let (mut b, sb) = s.session(1, "g").await;
    let room = match_two(&mut a, &mut b).await;
    drop(b);
    let left = a.expect_push(20003).await;
    assert_eq!(left["result"]["data"]["reason"], "disconnected");
    assert_eq!(left["result"]["data"]["player_id"], sb.player.as_str());
    assert_eq!(left["result"]["data"]["room_id"], room.as_str());
    // Too late: the session still works, but the room is gone.
    let mut b2 = s.resume(&sb, None).await;
    b2.expect_silence(Duration::from_millis(200)).await;
    b2.expect_reply("m", "game/match_player", json!([]), 20000)
        .await;
}

#[tokio::test]
async fn resume_after_the_room_closed_gets_20001_missed_then_20003_and_is_free() {
    let s = start().await;
    let (mut a, _) = s.session(1, "c").await;
    let (mut b, sb) = s.session(1, "c").await;
    let room = match_two(&mut a, &mut b).await;
    drop(b);
    tokio::time::sleep(Duration::from_millis(100)).await;
    a.expect_reply(
        "c",
        "game/send_chat_msg",
        json!({"chat_msg": "bye", "chat_sn": "1"}),
        20002,
    )
    .await;
    a.expect_reply("l", "game/leave_chat", json!([]), 20000)
        .await;
    let mut b2 = s.resume(&sb, None).await;
    assert_eq!(
        b2.expect_push(20001).await["result"]["data"]["room_id"],
        room.as_str()
    );
    assert_eq!(
        b2.expect_push(20002).await["result"]["data"]["chat_msg"],
        "bye"
    );
    let closed = b2.expect_push(20003).await;
    assert_eq!(closed["result"]["data"]["reason"], "left");
    b2.expect_reply("m", "game/match_player", json!([]), 20000)
        .await;
}

#[tokio::test]
async fn queued_session_player_leaves_the_queue_on_disconnect() {
    let s = start().await;
    let (mut a, sa) = s.session(1, "q").await;
    a.expect_reply("m", "game/match_player", json!([]), 20000)
        .await;
    drop(a);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (mut b, _) = s.session(1, "q").await;
    b.expect_reply("m", "game/match_player", json!([]), 20000)
        .await;
    b.expect_silence(Duration::from_millis(200)).await;
    // And reconnecting does not put it back in the queue.
    let mut a2 = s.resume(&sa, None).await;
    a2.expect_silence(Duration::from_millis(150)).await;
}

#[tokio::test]
async fn takeover_closes_the_old_connection_with_4001_and_inherits_the_room() {
    let s = start().await;
    let (mut a, _) = s.session(1, "t").await;
    let (mut b, sb) = s.session(1, "t").await;
    let room = match_two(&mut a, &mut b).await;
    a.expect_reply(
        "c0",
        "game/send_chat_msg",
        json!({"chat_msg": "to the first tab", "chat_sn": "0"}),
        20002,
    )
    .await;
    assert_eq!(
        b.expect_push(20002).await["result"]["data"]["chat_msg"],
        "to the first tab"
    );
    // A second tab with the same session.
    let mut b2 = s.resume(&sb, None).await;
    assert_eq!(b.ended().await, Ended::Closed(Some(4001)));
    // §8.12: 20001 again; nothing to replay, the old tab had everything.
    assert_eq!(
        b2.expect_push(20001).await["result"]["data"]["room_id"],
        room.as_str()
    );
    b2.expect_silence(Duration::from_millis(150)).await;
    a.chat("c", "to the new tab", "1").await;
    a.next_json().await;
    assert_eq!(
        b2.expect_push(20002).await["result"]["data"]["chat_msg"],
        "to the new tab"
    );
    b2.chat("c", "from the new tab", "b1").await;
    b2.next_json().await;
    assert_eq!(
        a.expect_push(20002).await["result"]["data"]["chat_msg"],
        "from the new tab"
    );
    // The old connection's end does not disturb the room: no 20003 for a.
    a.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_resume_replays_a_long_backlog_without_overflowing() {
    // Found by the black-box conformance suite: 300 missed messages used to overflow the
    // outbound queue at once, closing the resumed connection with 1008.
    let s = start_with(|c| {
        c.rate_per_sec = 100_000.0;
        c.rate_burst = 100_000.0;
    })
    .await;
    let (mut a, _) = s.session(1, "backlog").await;
    let (mut b, sb) = s.session(1, "backlog").await;
    match_two(&mut a, &mut b).await;
    b.close().await;
    let n = 900;
    for i in 0..n {
        a.chat(&format!("c{i}"), &format!("missed {i}"), &i.to_string())
            .await;
    }
    for _ in 0..n {
        assert_result(&a.next_json().await, 20002);
    }
    let mut b2 = s.resume(&sb, None).await;
    b2.expect_push(20001).await;
    for i in 0..n {
        let m = b2.expect_push(20002).await;
        assert_eq!(m["result"]["data"]["chat_msg"], format!("missed {i}"));
    }
    b2.expect_silence(Duration::from_millis(100)).await;
}
