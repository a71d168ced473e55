//! Delivery under faults: clients killed abruptly at random points (sockets dropped
//! without a close, including between a send and its reply) reconnect with their
//! session and `last_seq`, and resend unacknowledged messages with the same `chat_sn`,
//! as the web client does. Over 1,000 kill/resume cycles across many rooms, every
//! message is delivered to the peer exactly once and in order.

use crate::common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const ROOMS: usize = 25;
const CYCLES_PER_ROOM: usize = 40; // kills per room, shared by its two players

/// Deterministic xorshift, one per room.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A client that survives its socket being killed.
struct Resilient {
    server: std::net::SocketAddr,
    session: Session,
    ws: Option<Client>,
    last_seq: u64,
    next_counter: u64,
    /// Sent but not acknowledged, by counter: resent in the order first sent.
    pending: BTreeMap<u64, String>,
    /// Counters of the peer's messages, in the order received.
    from_peer: Vec<u64>,
    violations: Vec<String>,
    reconnects: usize,
}

impl Resilient {
    async fn connect(&mut self) {
        let query = format!("session_id={}&last_seq={}", self.session.id, self.last_seq);
        let client = Client::connect(self.server, &query)
            .await
            .expect("reconnect");
        self.ws = Some(client);
        self.reconnects += 1;
        // Resend everything unacknowledged with the same chat_sn, in the original order.
        let pending: Vec<String> = self.pending.values().cloned().collect();
        for sn in pending {
            let text = counter_of(&sn).to_string();
            self.send_raw(&sn, &text).await;
        }
    }

    async fn send_raw(&mut self, sn: &str, text: &str) {
        if let Some(ws) = self.ws.as_mut() {
            let frame = json!({"jsonrpc": "2.0", "id": format!("r-{sn}"), "method": "game/send_chat_msg", "params": {"chat_msg": text, "chat_sn": sn}});
            if futures_util::SinkExt::send(&mut ws.ws, Message::text(frame.to_string()))
                .await
                .is_err()
            {
                self.ws = None;
            }
        }
    }

    async fn send_new(&mut self) {
        let counter = self.next_counter;
        self.next_counter += 1;
        let sn = format!("{}-{counter}", self.session.player);
        let text = format!("{counter}");
        self.pending.insert(counter, sn.clone());
        self.send_raw(&sn, &text).await;
    }

    fn kill(&mut self) {
        // Dropping the stream closes the TCP socket with no WebSocket close frame.
        self.ws = None;
    }

    /// Reads what arrives within `wait`; returns false when the socket died.
    async fn read_for(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let Some(ws) = self.ws.as_mut() else {
                return false;
            };
            let next = match tokio::time::timeout_at(deadline, ws.ws.next()).await {
                Err(_) => return true,
                Ok(next) => next,
            };
            match next {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str()).expect("JSON from the server");
                    self.on_frame(&v);
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                _ => {
                    self.ws = None;
                    return false;
                }
            }
        }
    }

    fn on_frame(&mut self, v: &Value) {
        let code = v["result"]["code"].as_i64().unwrap_or(0);
        let data = &v["result"]["data"];
        let is_reply = v["id"].as_str().is_some_and(|id| id.starts_with("r-"));
        match code {
            20001 => {}
            20002 if is_reply => {
                // The answer to our own send, first time or repeat: acknowledged.
                if let Some(sn) = data["chat_sn"].as_str() {
                    self.pending.remove(&counter_of(sn));
                }
                let seq = data["seq"].as_u64().unwrap_or(0);
                self.last_seq = self.last_seq.max(seq);
            }
            20002 => {
                let seq = data["seq"].as_u64().unwrap_or(0);
                if seq <= self.last_seq {
                    self.violations.push(format!(
                        "seq {seq} delivered again (last {})",
                        self.last_seq
                    ));
                    return;
                }
                self.last_seq = seq;
                let sender = data["send_player_id"].as_str().unwrap_or("");
                if sender == self.session.player {
                    // Our own message replayed after a reconnect: acknowledged too.
                    if let Some(sn) = data["chat_sn"].as_str() {
                        self.pending.remove(&counter_of(sn));
                    }
                } else {
                    let counter = data["chat_msg"]
                        .as_str()
                        .and_then(|m| m.parse().ok())
                        .unwrap_or(u64::MAX);
                    self.from_peer.push(counter);
                }
            }
            other => self
                .violations
                .push(format!("unexpected frame {other}: {v}")),
        }
    }
}

/// The counter in a chat_sn `<player>-<counter>`.
fn counter_of(sn: &str) -> u64 {
    sn.rsplit('-')
        .next()
        .and_then(|c| c.parse().ok())
        .unwrap_or(u64::MAX)
}

async fn run_room(
    server: std::net::SocketAddr,
    a: (Client, Session),
    b: (Client, Session),
    seed: u64,
) -> (usize, usize, Vec<String>) {
    let mut rng = Rng(seed | 1);
    let mut players = [a, b].map(|(ws, session)| Resilient {
        server,
        session,
        ws: Some(ws),
        last_seq: 0,
        next_counter: 0,
        pending: BTreeMap::new(),
        from_peer: Vec::new(),
        violations: Vec::new(),
        reconnects: 0,
    });
    for _ in 0..CYCLES_PER_ROOM {
        let who = rng.below(2) as usize;
        let p = &mut players[who];
        if p.ws.is_none() {
            p.connect().await;
        }
        for _ in 0..=rng.below(4) {
            p.send_new().await;
        }
        // Kill at a random point: right after sending (reply in flight), or after
        // reading a little.
        if rng.below(3) > 0 {
            p.read_for(Duration::from_millis(rng.below(4))).await;
        }
        p.kill();
        let other = &mut players[1 - who];
        if other.ws.is_none() {
            other.connect().await;
        }
        other.read_for(Duration::from_millis(rng.below(3))).await;
        players[who].connect().await;
    }
    // Settle: everyone connected, everything acknowledged and delivered.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        for p in players.iter_mut() {
            if p.ws.is_none() {
                p.connect().await;
            }
            p.read_for(Duration::from_millis(20)).await;
        }
        let done = (0..2).all(|i| {
            players[i].pending.is_empty()
                && players[i].from_peer.len() as u64 >= players[1 - i].next_counter
        });
        if done || tokio::time::Instant::now() > deadline {
            break;
        }
    }
    let mut violations = Vec::new();
    let mut checked = 0;
    for i in 0..2 {
        let expected: Vec<u64> = (0..players[1 - i].next_counter).collect();
        if players[i].from_peer != expected {
            violations.push(format!(
                "player {i} got {:?}, expected 0..{}",
                players[i].from_peer,
                expected.len()
            ));
        }
        if !players[i].pending.is_empty() {
            violations.push(format!(
                "player {i} never got replies for {:?}",
                players[i].pending.values()
            ));
        }
        checked += players[i].from_peer.len();
        violations.append(&mut players[i].violations);
    }
    let reconnects = players.iter().map(|p| p.reconnects).sum();
    (reconnects, checked, violations)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_kill_and_resume_cycles_lose_and_double_nothing() {
    let s = start_with(|c| {
        c.rate_per_sec = 100_000.0;
        c.rate_burst = 100_000.0;
        c.resume_grace_ms = 60_000;
    })
    .await;
    let mut rooms = Vec::new();
    for r in 0..ROOMS {
        let (mut a, sa) = s.session(1, &format!("faults-{r}")).await;
        let (mut b, sb) = s.session(1, &format!("faults-{r}")).await;
        match_two(&mut a, &mut b).await;
        rooms.push(tokio::spawn(run_room(
            s.addr,
            (a, sa),
            (b, sb),
            0x9E37_79B9_7F4A_7C15 ^ r as u64,
        )));
    }
    let (mut cycles, mut checked, mut violations) = (0, 0, Vec::new());
    for room in rooms {
        let (c, n, mut v) = room.await.expect("room task");
        cycles += c;
        checked += n;
        violations.append(&mut v);
    }
    println!(
        "faults: {cycles} reconnects, {checked} deliveries checked, {} violations",
        violations.len()
    );
    assert!(violations.is_empty(), "{violations:#?}");
    assert!(cycles >= 1_000, "only {cycles} kill/resume cycles");
    assert!(checked >= 1_000, "only {checked} deliveries checked");
}
