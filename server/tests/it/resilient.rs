//! A test client that survives its socket being killed: it reconnects with its session
//! and `last_seq`, and resends unacknowledged messages with the same `chat_sn`, as the
//! web client does. Used by the fault tests on one node and across nodes.

use crate::common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// Deterministic xorshift, one per room.
pub struct Rng(pub u64);
impl Rng {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A client that survives its socket being killed.
pub struct Resilient {
    pub server: std::net::SocketAddr,
    pub session: Session,
    pub ws: Option<Client>,
    pub last_seq: u64,
    pub next_counter: u64,
    /// Sent but not acknowledged, by counter: resent in the order first sent.
    pub pending: BTreeMap<u64, String>,
    /// Counters of the peer's messages, in the order received.
    pub from_peer: Vec<u64>,
    pub violations: Vec<String>,
    pub reconnects: usize,
}

impl Resilient {
    pub async fn connect(&mut self) {
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

    pub async fn send_raw(&mut self, sn: &str, text: &str) {
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

    pub async fn send_new(&mut self) {
        let counter = self.next_counter;
        self.next_counter += 1;
        let sn = format!("{}-{counter}", self.session.player);
        let text = format!("{counter}");
        self.pending.insert(counter, sn.clone());
        self.send_raw(&sn, &text).await;
    }

    pub fn kill(&mut self) {
        // Dropping the stream closes the TCP socket with no WebSocket close frame.
        self.ws = None;
    }

    /// Reads what arrives within `wait`; returns false when the socket died.
    pub async fn read_for(&mut self, wait: Duration) -> bool {
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

    pub fn on_frame(&mut self, v: &Value) {
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
pub fn counter_of(sn: &str) -> u64 {
    sn.rsplit('-')
        .next()
        .and_then(|c| c.parse().ok())
        .unwrap_or(u64::MAX)
}

impl Resilient {
    /// A resilient client on an already open connection.
    pub fn new(server: std::net::SocketAddr, ws: Client, session: Session) -> Resilient {
        Resilient {
            server,
            session,
            ws: Some(ws),
            last_seq: 0,
            next_counter: 0,
            pending: BTreeMap::new(),
            from_peer: Vec::new(),
            violations: Vec::new(),
            reconnects: 0,
        }
    }
}

/// Reconnects and reads until everything is acknowledged and delivered (or 20 s), then
/// checks that each player got every message of the other exactly once and in order.
/// Returns (deliveries checked, violations).
pub async fn settle_and_check(players: &mut [Resilient; 2]) -> (usize, Vec<String>) {
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
    (checked, violations)
}
