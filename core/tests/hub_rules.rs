//! Unit tests of every room rule of the state machine, driven through its public API.

use matchchat_core::hub::{
    Attach, CLOSE_TAKEN_OVER, ConnId, Effect, FrameKind, Hub, HubConfig, IdSource, PoolKey,
};
use matchchat_core::request::Request;
use matchchat_core::wire::{ChatData, MatchedData, PeerLeftData, RequestId};
use std::sync::Arc;

struct Counter(u64);
impl IdSource for Counter {
    fn room_id(&mut self) -> Arc<str> {
        self.0 += 1;
        format!("room{:028}", self.0).into()
    }
}

fn hub(config: HubConfig) -> Hub {
    Hub::new(config, Box::new(Counter(0)))
}

fn pool(zone: &str) -> PoolKey {
    PoolKey {
        product_id: 1,
        zone: zone.into(),
    }
}

fn attach(hub: &mut Hub, conn: u64, player: &str, pool: PoolKey, resumable: bool) -> Vec<Effect> {
    let mut out = Vec::new();
    hub.attach(
        Attach {
            conn: ConnId(conn),
            player: player.into(),
            pool,
            resumable,
            resume_after: None,
        },
        &mut out,
    );
    out
}

fn req(hub: &mut Hub, conn: u64, id: &str, request: Request) -> Vec<Effect> {
    let mut out = Vec::new();
    hub.handle(
        ConnId(conn),
        RequestId::from_string(id),
        request,
        1_700_000_000_000,
        &mut out,
    );
    hub.check_invariants().unwrap();
    out
}

fn chat(msg: &str, sn: &str) -> Request {
    Request::SendChat {
        chat_msg: msg.into(),
        chat_sn: sn.into(),
    }
}

/// (conn, reply id or None for a push, code, data)
fn frames(effects: &[Effect]) -> Vec<(u64, Option<String>, i32, serde_json::Value)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send {
                conn,
                kind,
                code,
                result,
            } => {
                let v: serde_json::Value = serde_json::from_str(result).unwrap();
                assert_eq!(v["code"], code.value());
                assert_eq!(v["message"], code.message());
                let id = match kind {
                    FrameKind::Reply(id) => Some(id.to_value().as_str().unwrap().to_owned()),
                    FrameKind::Push => None,
                };
                Some((conn.0, id, code.value(), v["data"].clone()))
            }
            Effect::Close { .. } => None,
        })
        .collect()
}

fn matched(a: &mut Hub) -> String {
    attach(a, 1, "alice00001", pool("z"), true);
    attach(a, 2, "bob0000002", pool("z"), true);
    req(a, 1, "m1", Request::MatchPlayer);
    let out = frames(&req(a, 2, "m2", Request::MatchPlayer));
    let data: MatchedData = serde_json::from_value(out[1].3.clone()).unwrap();
    data.room_id
}

#[test]
fn two_players_of_a_pool_match_reply_first_then_20001_for_both() {
    let mut h = hub(HubConfig::default());
    attach(&mut h, 1, "alice00001", pool("z"), true);
    attach(&mut h, 2, "bob0000002", pool("z"), true);
    let first = frames(&req(&mut h, 1, "m1", Request::MatchPlayer));
    assert_eq!(
        first,
        vec![(1, Some("m1".into()), 20000, serde_json::json!([]))]
    );
    let out = frames(&req(&mut h, 2, "m2", Request::MatchPlayer));
    assert_eq!(out.len(), 3);
    assert_eq!(
        (out[0].0, out[0].1.as_deref(), out[0].2),
        (2, Some("m2"), 20000)
    );
    let a: MatchedData = serde_json::from_value(out[1].3.clone()).unwrap();
    let b: MatchedData = serde_json::from_value(out[2].3.clone()).unwrap();
    assert_eq!(a.room_id, b.room_id);
    assert_eq!(a.room_id.len(), 32);
    assert_eq!(
        (a.player_id.as_str(), a.peer_ids.clone()),
        ("alice00001", vec!["bob0000002".to_string()])
    );
    assert_eq!(
        (b.player_id.as_str(), b.peer_ids.clone()),
        ("bob0000002", vec!["alice00001".to_string()])
    );
    assert!(out[1].1.is_none() && out[2].1.is_none(), "20001 is a push");
}

#[test]
fn match_while_queued_is_idempotent_and_keeps_position() {
    let mut h = hub(HubConfig::default());
    for (c, p) in [(1, "p000000001"), (2, "p000000002"), (3, "p000000003")] {
        attach(&mut h, c, p, pool("z"), false);
    }
    req(&mut h, 1, "a", Request::MatchPlayer);
    assert_eq!(
        frames(&req(&mut h, 1, "b", Request::MatchPlayer))[0].2,
        20000
    );
    let out = frames(&req(&mut h, 3, "c", Request::MatchPlayer));
    let conns: Vec<u64> = out.iter().skip(1).map(|f| f.0).collect();
    assert_eq!(
        conns,
        vec![1, 3],
        "the first queued player is matched, once"
    );
    assert_eq!(h.stats().queued, vec![]);
}

#[test]
fn fifo_order_within_a_pool_and_pools_never_mix() {
    let mut h = hub(HubConfig::default());
    attach(&mut h, 1, "p000000001", pool("east"), false);
    attach(&mut h, 2, "p000000002", pool("west"), false);
    attach(&mut h, 3, "p000000003", pool("east"), false);
    attach(&mut h, 4, "p000000004", pool("east"), false);
    attach(
        &mut h,
        5,
        "p000000005",
        PoolKey {
            product_id: 2,
            zone: "east".into(),
        },
        false,
    );
    for c in [1, 2, 5] {
        assert_eq!(
            frames(&req(&mut h, c, "m", Request::MatchPlayer)).len(),
            1,
            "nobody to meet yet"
        );
    }
    let out = frames(&req(&mut h, 3, "m", Request::MatchPlayer));
    let m: MatchedData = serde_json::from_value(out[1].3.clone()).unwrap();
    assert_eq!(m.peer_ids, vec!["p000000003".to_string()]);
    assert_eq!(out[1].0, 1, "oldest east player matched first");
    assert_eq!(
        h.stats().queued.len(),
        2,
        "west and product 2 still waiting"
    );
    assert_eq!(frames(&req(&mut h, 4, "m", Request::MatchPlayer)).len(), 1);
}

#[test]
fn in_room_match_is_40003_and_chat_outside_room_is_40004() {
    let mut h = hub(HubConfig::default());
    attach(&mut h, 9, "lonely0001", pool("z"), false);
    let out = frames(&req(&mut h, 9, "x", chat("hi", "s")));
    assert_eq!(
        out,
        vec![(9, Some("x".into()), 40004, serde_json::json!({}))]
    );
    let out = frames(&req(&mut h, 9, "y", Request::LeaveChat));
    assert_eq!(
        out,
        vec![(9, Some("y".into()), 40004, serde_json::json!({}))]
    );
    matched(&mut h);
    let out = frames(&req(&mut h, 1, "z", Request::MatchPlayer));
    assert_eq!(
        out,
        vec![(1, Some("z".into()), 40003, serde_json::json!({}))]
    );
}

#[test]
fn chat_reply_to_sender_push_to_peer_same_result() {
    let mut h = hub(HubConfig::default());
    matched(&mut h);
    let out = frames(&req(
        &mut h,
        1,
        "c1",
        chat("123", "Dhy84razsSeh7WPSiAdW7EsZ76fyt267"),
    ));
    assert_eq!(out.len(), 2);
    assert_eq!((out[0].0, out[0].1.as_deref()), (1, Some("c1")));
    assert_eq!((out[1].0, out[1].1.as_deref()), (2, None));
    assert_eq!(out[0].3, out[1].3);
    let data: ChatData = serde_json::from_value(out[0].3.clone()).unwrap();
    assert_eq!(data.send_player_id, "alice00001");
    assert_eq!(data.chat_msg, "123");
    assert_eq!(data.chat_sn, "Dhy84razsSeh7WPSiAdW7EsZ76fyt267");
    assert_eq!(data.seq, 1);
}

#[test]
fn repeated_chat_sn_gets_first_reply_and_is_not_delivered_again() {
    let mut h = hub(HubConfig::default());
    matched(&mut h);
    let first = frames(&req(&mut h, 1, "c1", chat("first", "sn")));
    let again = frames(&req(&mut h, 1, "c2", chat("different text", "sn")));
    assert_eq!(again.len(), 1, "no second delivery");
    assert_eq!(
        again[0].1.as_deref(),
        Some("c2"),
        "answered with the new request's id"
    );
    assert_eq!(
        again[0].3, first[0].3,
        "the first message's reply, unchanged"
    );
    // The same chat_sn from the other member is a different message.
    assert_eq!(frames(&req(&mut h, 2, "d", chat("mine", "sn"))).len(), 2);
}

#[test]
fn chat_sn_memory_is_bounded_per_room() {
    // The room log keeps max(history, sn_memory + room_size) events: here 3 + 2 = 5.
    let mut h = hub(HubConfig {
        sn_memory: 3,
        history_limit: 1,
        ..HubConfig::default()
    });
    matched(&mut h);
    for i in 0..6 {
        req(&mut h, 1, "c", chat("m", &format!("sn{i}")));
    }
    // sn0 was forgotten, so it is a new message now; sn3 (among the last 3) is known.
    assert_eq!(frames(&req(&mut h, 1, "c", chat("m", "sn0"))).len(), 2);
    assert_eq!(frames(&req(&mut h, 1, "c", chat("m", "sn3"))).len(), 1);
}

#[test]
fn leave_sends_20003_left_and_frees_both() {
    let mut h = hub(HubConfig::default());
    let room = matched(&mut h);
    let out = frames(&req(&mut h, 1, "l", Request::LeaveChat));
    assert_eq!(out[0], (1, Some("l".into()), 20000, serde_json::json!([])));
    let left: PeerLeftData = serde_json::from_value(out[1].3.clone()).unwrap();
    assert_eq!(out[1].0, 2);
    assert_eq!(
        (left.room_id, left.player_id.as_str()),
        (room, "alice00001")
    );
    assert_eq!(serde_json::to_value(left.reason).unwrap(), "left");
    assert_eq!(h.stats().rooms, 0);
    // Both may match again, and do so with each other.
    req(&mut h, 1, "m", Request::MatchPlayer);
    assert_eq!(frames(&req(&mut h, 2, "m", Request::MatchPlayer)).len(), 3);
}

#[test]
fn cancel_match_leaves_the_queue_and_always_succeeds() {
    let mut h = hub(HubConfig::default());
    attach(&mut h, 1, "p000000001", pool("z"), false);
    attach(&mut h, 2, "p000000002", pool("z"), false);
    assert_eq!(
        frames(&req(&mut h, 1, "c", Request::CancelMatch))[0].2,
        20000
    );
    req(&mut h, 1, "m", Request::MatchPlayer);
    req(&mut h, 1, "c", Request::CancelMatch);
    assert_eq!(
        frames(&req(&mut h, 2, "m", Request::MatchPlayer)).len(),
        1,
        "no match: 1 left the queue"
    );
}

#[test]
fn anonymous_disconnect_leaves_at_once() {
    let mut h = hub(HubConfig::default());
    attach(&mut h, 1, "p000000001", pool("z"), false);
    attach(&mut h, 2, "p000000002", pool("z"), false);
    req(&mut h, 1, "m", Request::MatchPlayer);
    req(&mut h, 2, "m", Request::MatchPlayer);
    let mut out = Vec::new();
    h.detach(ConnId(1), 0, &mut out);
    let f = frames(&out);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].3["reason"], "disconnected");
    assert_eq!(h.stats().rooms, 0);
    assert_eq!(h.stats().players, 1);
    h.check_invariants().unwrap();
}

#[test]
fn queued_session_player_leaves_queue_on_disconnect() {
    let mut h = hub(HubConfig::default());
    attach(&mut h, 1, "p000000001", pool("z"), true);
    req(&mut h, 1, "m", Request::MatchPlayer);
    let mut out = Vec::new();
    h.detach(ConnId(1), 0, &mut out);
    assert!(out.is_empty());
    assert!(h.stats().queued.is_empty());
    assert_eq!(h.stats().players, 0);
}

fn resume(
    h: &mut Hub,
    conn: u64,
    player: &str,
    after: Option<u64>,
) -> Vec<(u64, Option<String>, i32, serde_json::Value)> {
    let mut out = Vec::new();
    h.attach(
        Attach {
            conn: ConnId(conn),
            player: player.into(),
            pool: pool("z"),
            resumable: true,
            resume_after: after,
        },
        &mut out,
    );
    h.check_invariants().unwrap();
    frames(&out)
}

#[test]
fn resume_within_grace_replays_20001_then_missed_messages_once() {
    let mut h = hub(HubConfig {
        resume_grace: 1_000,
        ..HubConfig::default()
    });
    let room = matched(&mut h);
    req(&mut h, 1, "c", chat("seen", "s0"));
    let mut out = Vec::new();
    h.detach(ConnId(2), 100, &mut out);
    assert!(
        out.is_empty(),
        "the peer is not told during the grace period"
    );
    for i in 1..=3 {
        let f = frames(&req(
            &mut h,
            1,
            "c",
            chat(&format!("missed{i}"), &format!("s{i}")),
        ));
        assert_eq!(f.len(), 1, "only the sender's reply while the peer is away");
    }
    h.tick(1_099, &mut out);
    assert!(out.is_empty());
    let got = resume(&mut h, 3, "bob0000002", None);
    assert_eq!(got[0].2, 20001);
    assert_eq!(got[0].3["room_id"], room.as_str());
    let texts: Vec<&str> = got[1..]
        .iter()
        .map(|f| f.3["chat_msg"].as_str().unwrap())
        .collect();
    assert_eq!(texts, vec!["missed1", "missed2", "missed3"]);
    // Live again: the next message goes straight to the new connection.
    let f = frames(&req(&mut h, 1, "c", chat("live", "s9")));
    assert_eq!(f[1].0, 3);
    // A second resume replays nothing new.
    let mut out = Vec::new();
    h.detach(ConnId(3), 200, &mut out);
    assert_eq!(resume(&mut h, 4, "bob0000002", None).len(), 1);
    h.tick(10_000, &mut out);
    assert!(
        out.is_empty(),
        "a resumed player's old deadline does not fire"
    );
}

#[test]
fn resume_after_a_given_seq_replays_from_there_own_messages_included() {
    let mut h = hub(HubConfig::default());
    matched(&mut h);
    req(&mut h, 1, "c", chat("a1", "1"));
    req(&mut h, 2, "c", chat("b1", "2"));
    let mut out = Vec::new();
    h.detach(ConnId(2), 0, &mut out);
    let got = resume(&mut h, 3, "bob0000002", Some(0));
    let texts: Vec<&str> = got[1..]
        .iter()
        .map(|f| f.3["chat_msg"].as_str().unwrap())
        .collect();
    assert_eq!(texts, vec!["a1", "b1"]);
}

#[test]
fn grace_expiry_sends_20003_disconnected_and_frees_the_peer() {
    let mut h = hub(HubConfig {
        resume_grace: 1_000,
        ..HubConfig::default()
    });
    matched(&mut h);
    let mut out = Vec::new();
    h.detach(ConnId(2), 0, &mut out);
    assert_eq!(h.next_deadline(), Some(1_000));
    h.tick(1_000, &mut out);
    let f = frames(&out);
    assert_eq!(f.len(), 1);
    assert_eq!((f[0].0, f[0].2), (1, 20003));
    assert_eq!(f[0].3["reason"], "disconnected");
    assert_eq!(f[0].3["player_id"], "bob0000002");
    assert_eq!(h.stats().rooms, 0);
    // Too late to resume: a fresh, idle player.
    assert!(resume(&mut h, 5, "bob0000002", None).is_empty());
}

#[test]
fn resume_after_room_closed_in_grace_gets_20001_missed_then_20003_and_is_free() {
    let mut h = hub(HubConfig::default());
    let room = matched(&mut h);
    let mut out = Vec::new();
    h.detach(ConnId(2), 0, &mut out);
    req(&mut h, 1, "c", chat("bye soon", "x"));
    req(&mut h, 1, "l", Request::LeaveChat);
    assert_eq!(h.stats().rooms, 1, "kept for the absent member");
    let got = resume(&mut h, 3, "bob0000002", None);
    let codes: Vec<i32> = got.iter().map(|f| f.2).collect();
    assert_eq!(codes, vec![20001, 20002, 20003]);
    assert_eq!(got[0].3["room_id"], room.as_str());
    assert_eq!(got[2].3["reason"], "left");
    assert_eq!(h.stats().rooms, 0);
    assert_eq!(
        frames(&req(&mut h, 3, "m", Request::MatchPlayer))[0].2,
        20000,
        "free to match"
    );
}

#[test]
fn takeover_closes_old_connection_4001_and_inherits_the_room() {
    let mut h = hub(HubConfig::default());
    let room = matched(&mut h);
    req(&mut h, 1, "c", chat("before", "1"));
    let mut out = Vec::new();
    h.attach(
        Attach {
            conn: ConnId(7),
            player: "bob0000002".into(),
            pool: pool("z"),
            resumable: true,
            resume_after: None,
        },
        &mut out,
    );
    assert_eq!(
        out[0],
        Effect::Close {
            conn: ConnId(2),
            code: CLOSE_TAKEN_OVER,
            reason: "session taken over by a newer connection"
        }
    );
    let f = frames(&out);
    assert_eq!(
        f.len(),
        1,
        "20001 again; 'before' was handed to the old connection"
    );
    assert_eq!((f[0].0, f[0].2), (7, 20001));
    assert_eq!(f[0].3["room_id"], room.as_str());
    // The old connection's late close is ignored.
    h.detach(ConnId(2), 0, &mut out);
    assert_eq!(frames(&req(&mut h, 1, "c", chat("after", "2")))[1].0, 7);
    h.check_invariants().unwrap();
}

#[test]
fn rooms_of_three_live_on_until_one_remains() {
    let mut h = hub(HubConfig {
        room_size: 3,
        ..HubConfig::default()
    });
    for (c, p) in [(1, "p000000001"), (2, "p000000002"), (3, "p000000003")] {
        attach(&mut h, c, p, pool("z"), false);
    }
    req(&mut h, 1, "m", Request::MatchPlayer);
    assert_eq!(frames(&req(&mut h, 2, "m", Request::MatchPlayer)).len(), 1);
    let out = frames(&req(&mut h, 3, "m", Request::MatchPlayer));
    assert_eq!(out.iter().filter(|f| f.2 == 20001).count(), 3);
    assert_eq!(out[1].3["peer_ids"].as_array().unwrap().len(), 2);
    let f = frames(&req(&mut h, 1, "c", chat("hi all", "1")));
    assert_eq!(f.iter().map(|f| f.0).collect::<Vec<_>>(), vec![1, 2, 3]);
    let f = frames(&req(&mut h, 3, "l", Request::LeaveChat));
    assert_eq!(
        f.iter()
            .filter(|f| f.2 == 20003)
            .map(|f| f.0)
            .collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(h.stats().rooms, 1, "two remain: the room lives on");
    assert_eq!(
        frames(&req(&mut h, 2, "c", chat("still here", "2"))).len(),
        2
    );
    let f = frames(&req(&mut h, 2, "l", Request::LeaveChat));
    assert_eq!(f[1].0, 1);
    assert_eq!(h.stats().rooms, 0, "one left: closed and freed");
    assert_eq!(frames(&req(&mut h, 1, "c", chat("alone", "3")))[0].2, 40004);
}

#[test]
fn messages_reach_members_in_accept_order() {
    let mut h = hub(HubConfig::default());
    matched(&mut h);
    let mut seen_by_2 = Vec::new();
    let mut seen_by_1 = Vec::new();
    for i in 0..300u64 {
        let (conn, sn) = if i % 3 == 0 {
            (2, format!("b{i}"))
        } else {
            (1, format!("a{i}"))
        };
        for f in frames(&req(&mut h, conn, "c", chat(&i.to_string(), &sn))) {
            let seq = f.3["seq"].as_u64().unwrap();
            if f.0 == 1 {
                seen_by_1.push(seq)
            } else {
                seen_by_2.push(seq)
            }
        }
    }
    let expected: Vec<u64> = (1..=300).collect();
    assert_eq!(seen_by_1, expected);
    assert_eq!(seen_by_2, expected);
}

#[test]
fn history_is_bounded() {
    let mut h = hub(HubConfig {
        history_limit: 5,
        ..HubConfig::default()
    });
    matched(&mut h);
    let mut out = Vec::new();
    h.detach(ConnId(2), 0, &mut out);
    for i in 0..20 {
        req(&mut h, 1, "c", chat("m", &i.to_string()));
    }
    let got = resume(&mut h, 3, "bob0000002", None);
    assert_eq!(got.len(), 1 + 5, "20001 + the last 5 kept");
    assert_eq!(got[1].3["seq"], 16);
}

#[test]
fn requests_from_unknown_connections_are_ignored() {
    let mut h = hub(HubConfig::default());
    assert!(req(&mut h, 42, "x", Request::MatchPlayer).is_empty());
    let mut out = Vec::new();
    h.detach(ConnId(42), 0, &mut out);
    assert!(out.is_empty());
}

#[test]
fn forget_removes_a_disconnected_session_player_from_its_room() {
    let mut h = hub(HubConfig::default());
    matched(&mut h);
    let mut out = Vec::new();
    h.detach(ConnId(2), 0, &mut out);
    h.forget(&"bob0000002".into(), &mut out);
    let f = frames(&out);
    assert_eq!((f[0].0, f[0].2), (1, 20003));
    assert_eq!(h.next_deadline(), None);
    h.check_invariants().unwrap();
}
