//! Delivery under faults: clients killed abruptly at random points (sockets dropped
//! without a close, including between a send and its reply) reconnect with their
//! session and `last_seq`, and resend unacknowledged messages with the same `chat_sn`,
//! as the web client does. Over 1,000 kill/resume cycles across many rooms, every
//! message is delivered to the peer exactly once and in order.

use crate::common::*;
use crate::resilient::*;
use std::time::Duration;

const ROOMS: usize = 25;
const CYCLES_PER_ROOM: usize = 40; // kills per room, shared by its two players

async fn run_room(
    server: std::net::SocketAddr,
    a: (Client, Session),
    b: (Client, Session),
    seed: u64,
) -> (usize, usize, Vec<String>) {
    let mut rng = Rng(seed | 1);
    let mut players = [a, b].map(|(ws, session)| Resilient::new(server, ws, session));
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
    let (checked, violations) = settle_and_check(&mut players).await;
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
