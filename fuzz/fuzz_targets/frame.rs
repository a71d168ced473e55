//! Fuzz target: arbitrary bytes as client frames → `parse_frame` → the room state
//! machine with a few connected players. Nothing may panic, and the hub's invariants must
//! hold after every step.
#![no_main]

use libfuzzer_sys::fuzz_target;
use matchchat_core::hub::{Attach, ConnId, Effect, Hub, HubConfig, IdSource, PoolKey};
use matchchat_core::request::{parse_frame, peek_id};
use std::sync::Arc;

struct Counter(u64);
impl IdSource for Counter {
    fn room_id(&mut self) -> Arc<str> {
        self.0 += 1;
        format!("{:032}", self.0).into()
    }
}

fuzz_target!(|data: &[u8]| {
    let mut hub = Hub::new(
        HubConfig { resume_grace: 10, history_limit: 8, sn_memory: 4, ..HubConfig::default() },
        Box::new(Counter(0)),
    );
    let mut out: Vec<Effect> = Vec::new();
    for conn in 0..4u64 {
        hub.attach(
            Attach {
                conn: ConnId(conn),
                player: format!("player{conn:04}").into(),
                pool: PoolKey::anonymous(),
                resumable: conn % 2 == 0,
                resume_after: None,
            },
            &mut out,
        );
    }
    // Frames are separated by newlines; the first byte of each picks the connection, and
    // a frame starting with '!' detaches that connection instead (and time moves on).
    let mut now = 0u64;
    for (i, line) in data.split(|b| *b == b'\n').enumerate() {
        let conn = ConnId(line.first().map_or(0, |b| u64::from(*b % 4)));
        let Ok(text) = std::str::from_utf8(line.get(1..).unwrap_or_default()) else {
            continue;
        };
        let _ = peek_id(text);
        if text.starts_with('!') {
            now += 7;
            hub.detach(conn, now, &mut out);
            hub.tick(now, &mut out);
        } else {
            match parse_frame(text) {
                Ok(incoming) => hub.handle(conn, incoming.id, incoming.request, i as u64, &mut out),
                Err(rejection) => {
                    let _ = rejection.to_frame();
                }
            }
        }
        if let Err(e) = hub.check_invariants() {
            panic!("invariant broken: {e}");
        }
        out.clear();
    }
});
