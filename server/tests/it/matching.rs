//! PROTOCOL.md §5 `game/match_player` and `game/cancel_match`: FIFO pools, idempotent
//! matching, reply before push, zones never mixing.

use crate::common::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn two_players_match_with_the_same_room_id_reply_then_push() {
    let s = start().await;
    let mut a = s.anonymous().await;
    let mut b = s.anonymous().await;
    let ra = a
        .expect_reply(
            "XQPieFsDzettF6HzH8mE682fZMT7336w",
            "game/match_player",
            json!([]),
            20000,
        )
        .await;
    assert_eq!(ra["result"]["data"], json!([]));
    assert_eq!(
        ra,
        json!({"jsonrpc":"2.0","result":{"code":20000,"message":"success","data":[]},"id":"XQPieFsDzettF6HzH8mE682fZMT7336w"})
    );
    // §8.7: the completing player gets its 20000 first, then 20001.
    b.expect_reply("m2", "game/match_player", json!({}), 20000)
        .await;
    let pa = a.expect_push(20001).await;
    let pb = b.expect_push(20001).await;
    let room = pa["result"]["data"]["room_id"].as_str().unwrap();
    assert_eq!(room.len(), 32);
    assert!(room.bytes().all(|c| c.is_ascii_alphanumeric()));
    assert_eq!(pb["result"]["data"]["room_id"], room);
    let a_id = pa["result"]["data"]["player_id"].as_str().unwrap();
    let b_id = pb["result"]["data"]["player_id"].as_str().unwrap();
    assert_eq!(a_id.len(), 10);
    assert!(a_id.bytes().all(|c| c.is_ascii_alphanumeric()));
    assert_eq!(pa["result"]["data"]["peer_ids"], json!([b_id]));
    assert_eq!(pb["result"]["data"]["peer_ids"], json!([a_id]));
    assert_ne!(pa["id"], pb["id"], "each push has its own id");
}

#[tokio::test]
async fn matching_again_while_queued_keeps_the_place() {
    let s = start().await;
    let mut a = s.anonymous().await;
    let mut b = s.anonymous().await;
    let mut c = s.anonymous().await;
    a.expect_reply("1", "game/match_player", json!([]), 20000)
        .await;
    b.expect_reply("2", "game/match_player", json!([]), 20000)
        .await;
    // a and b matched; now c queues twice and d completes with c.
    a.expect_push(20001).await;
    b.expect_push(20001).await;
    c.expect_reply("3", "game/match_player", json!([]), 20000)
        .await;
    c.expect_reply("4", "game/match_player", json!([]), 20000)
        .await;
    let mut d = s.anonymous().await;
    d.expect_reply("5", "game/match_player", json!([]), 20000)
        .await;
    let pc = c.expect_push(20001).await;
    d.expect_push(20001).await;
    c.expect_silence(Duration::from_millis(200)).await;
    assert_eq!(
        pc["result"]["data"]["peer_ids"].as_array().unwrap().len(),
        1
    );
}

#[tokio::test]
async fn fifo_the_waiting_player_is_matched_before_later_ones() {
    // A queue never holds a room's worth of players (a match forms at once), so FIFO is
    // seen as: whoever waits longest is in the next room, later arrivals wait their turn.
    let s = start_with(|c| c.room_size = 3).await;
    let mut first = s.anonymous().await;
    let mut second = s.anonymous().await;
    first
        .expect_reply("1", "game/match_player", json!([]), 20000)
        .await;
    second
        .expect_reply("2", "game/match_player", json!([]), 20000)
        .await;
    let mut third = s.anonymous().await;
    third
        .expect_reply("3", "game/match_player", json!([]), 20000)
        .await;
    let room = first.expect_push(20001).await["result"]["data"]["room_id"].clone();
    assert_eq!(
        second.expect_push(20001).await["result"]["data"]["room_id"],
        room
    );
    assert_eq!(
        third.expect_push(20001).await["result"]["data"]["room_id"],
        room
    );
    let mut fourth = s.anonymous().await;
    fourth
        .expect_reply("4", "game/match_player", json!([]), 20000)
        .await;
    fourth.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn cancel_match_leaves_the_queue_and_always_answers_20000() {
    let s = start().await;
    let mut a = s.anonymous().await;
    let v = a
        .expect_reply("c0", "game/cancel_match", json!([]), 20000)
        .await;
    assert_eq!(v["result"]["data"], json!([]));
    a.expect_reply("m", "game/match_player", json!([]), 20000)
        .await;
    a.expect_reply("c1", "game/cancel_match", json!([]), 20000)
        .await;
    let mut b = s.anonymous().await;
    b.expect_reply("m", "game/match_player", json!([]), 20000)
        .await;
    a.expect_silence(Duration::from_millis(200)).await;
    b.expect_silence(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn zones_and_products_never_mix() {
    let s = start().await;
    let (mut east1, _) = s.session(1, "east").await;
    let (mut west, _) = s.session(1, "west").await;
    let (mut other_product, _) = s.session(2, "east").await;
    let mut anon = s.anonymous().await;
    for (c, id) in [
        (&mut east1, "e1"),
        (&mut west, "w"),
        (&mut other_product, "o"),
        (&mut anon, "a"),
    ] {
        c.expect_reply(id, "game/match_player", json!([]), 20000)
            .await;
    }
    for c in [&mut east1, &mut west, &mut other_product, &mut anon] {
        c.expect_silence(Duration::from_millis(150)).await;
    }
    let (mut east2, session2) = s.session(1, "east").await;
    east2
        .expect_reply("e2", "game/match_player", json!([]), 20000)
        .await;
    let p = east2.expect_push(20001).await;
    let p1 = east1.expect_push(20001).await;
    assert_eq!(p["result"]["data"]["player_id"], session2.player.as_str());
    assert_eq!(p1["result"]["data"]["peer_ids"], json!([session2.player]));
    // The anonymous pool (0, "default") is ordinary: a session made for it meets `anon`.
    let (mut default_session, _) = s.session(0, "default").await;
    default_session
        .expect_reply("d", "game/match_player", json!([]), 20000)
        .await;
    default_session.expect_push(20001).await;
    anon.expect_push(20001).await;
    west.expect_silence(Duration::from_millis(100)).await;
    other_product
        .expect_silence(Duration::from_millis(100))
        .await;
}

#[tokio::test]
async fn queued_players_show_in_metrics() {
    let s = start().await;
    let (mut c, _) = s.session(3, "metrics-zone").await;
    c.expect_reply("m", "game/match_player", json!([]), 20000)
        .await;
    let (_, text, _) = s.get("/metrics").await;
    assert!(
        text.contains("matchchat_queued_players{product_id=\"3\",game_zone=\"metrics-zone\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn rooms_of_three_when_configured() {
    let s = start_with(|c| c.room_size = 3).await;
    let mut a = s.anonymous().await;
    let mut b = s.anonymous().await;
    let mut c = s.anonymous().await;
    a.expect_reply("a", "game/match_player", json!([]), 20000)
        .await;
    b.expect_reply("b", "game/match_player", json!([]), 20000)
        .await;
    a.expect_silence(Duration::from_millis(150)).await;
    c.expect_reply("c", "game/match_player", json!([]), 20000)
        .await;
    for x in [&mut a, &mut b, &mut c] {
        let p = x.expect_push(20001).await;
        assert_eq!(p["result"]["data"]["peer_ids"].as_array().unwrap().len(), 2);
    }
    // §8.15: one leaves, the other two keep chatting; the next leave closes it.
    c.expect_reply("l", "game/leave_chat", json!([]), 20000)
        .await;
    a.expect_push(20003).await;
    b.expect_push(20003).await;
    a.chat("m", "still two", "1").await;
    a.next_json().await;
    let got = b.expect_push(20002).await;
    assert_eq!(got["result"]["data"]["chat_msg"], "still two");
    b.expect_reply("l2", "game/leave_chat", json!([]), 20000)
        .await;
    a.expect_push(20003).await;
    a.expect_reply("again", "game/match_player", json!([]), 20000)
        .await;
}
