//! criterion benchmarks of the pure core: parsing and validating a chat request, 10,000
//! queued players being matched, and one chat message dispatched in a two-player room.
//!
//! `cargo bench -p matchchat-core` (figures in `docs/BENCHMARKS.md`).

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use matchchat_core::hub::{Attach, ConnId, Effect, Hub, HubConfig, IdSource, PoolKey, RoomId};
use matchchat_core::request::{Request, parse_frame};
use matchchat_core::wire::RequestId;
use std::hint::black_box;

/// Room ids from a counter (the server uses a CSPRNG; that cost is the server's).
struct CountingIds(u64);

impl IdSource for CountingIds {
    fn room_id(&mut self) -> RoomId {
        self.0 += 1;
        format!("{:032}", self.0).into()
    }
}

fn hub() -> Hub {
    Hub::new(HubConfig::default(), Box::new(CountingIds(0)))
}

/// A hub with `n` anonymous players attached (connections 1..=n), none queued yet.
fn hub_with_players(n: u64, out: &mut Vec<Effect>) -> Hub {
    let mut hub = hub();
    for i in 1..=n {
        hub.attach(
            Attach {
                conn: ConnId(i),
                player: format!("p{i:09}").into(),
                pool: PoolKey::anonymous(),
                resumable: false,
                resume_after: None,
            },
            out,
        );
    }
    out.clear();
    hub
}

fn parse_chat(c: &mut Criterion) {
    let frame = Request::SendChat {
        chat_msg: "12.345.1700000000000000xxxxxxxxx".into(),
        chat_sn: "345".into(),
    }
    .to_frame("345");
    c.bench_function("parse_frame: send_chat_msg (32-byte message)", |b| {
        b.iter(|| parse_frame(black_box(&frame)))
    });
}

fn match_10k(c: &mut Criterion) {
    const PLAYERS: u64 = 10_000;
    let mut group = c.benchmark_group("hub");
    group.sample_size(20);
    group.bench_function("match 10,000 queued players (5,000 rooms)", |b| {
        b.iter_batched(
            || {
                let mut out = Vec::with_capacity(4 * PLAYERS as usize);
                let hub = hub_with_players(PLAYERS, &mut out);
                (hub, out)
            },
            |(mut hub, mut out)| {
                for i in 1..=PLAYERS {
                    hub.handle(
                        ConnId(i),
                        RequestId::from_string("m"),
                        Request::MatchPlayer,
                        0,
                        &mut out,
                    );
                }
                debug_assert_eq!(hub.stats().rooms, PLAYERS as usize / 2);
                (hub, out)
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn chat_dispatch(c: &mut Criterion) {
    let mut out = Vec::new();
    let mut hub = hub_with_players(2, &mut out);
    for conn in [1, 2] {
        hub.handle(
            ConnId(conn),
            RequestId::from_string("m"),
            Request::MatchPlayer,
            0,
            &mut out,
        );
    }
    assert_eq!(hub.stats().rooms, 1);
    out.clear();
    let mut sn = 0u64;
    c.bench_function("hub: chat dispatch in a 2-player room", |b| {
        b.iter(|| {
            sn += 1;
            let text = sn.to_string();
            hub.handle(
                ConnId(1),
                RequestId::from_string(&text),
                Request::SendChat {
                    chat_msg: "12.345.1700000000000000xxxxxxxxx".into(),
                    chat_sn: text,
                },
                1_700_000_000_000,
                &mut out,
            );
            debug_assert_eq!(out.len(), 2);
            out.clear();
        })
    });
}

criterion_group!(benches, parse_chat, match_10k, chat_dispatch);
criterion_main!(benches);
