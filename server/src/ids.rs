//! Fresh identifiers, all from a CSPRNG (`rand::rng()`, ChaCha12 seeded by the OS).
//!
//! Session ids are bearer credentials, so they must be unguessable; the others only need
//! to be unique, but one generator for all keeps the code small and fast enough
//! (a push id costs two `u64` draws).

use rand::Rng;
use rand::distr::{Alphanumeric, SampleString};

fn alphanumeric(len: usize) -> String {
    Alphanumeric.sample_string(&mut rand::rng(), len)
}

/// 40 characters `[A-Za-z0-9]`: names a player for the session's lifetime.
pub fn session_id() -> String {
    alphanumeric(40)
}

/// 10 characters `[A-Za-z0-9]`, like the seed's `rPBDTm5PKh`.
pub fn player_id() -> String {
    alphanumeric(10)
}

/// 32 characters `[A-Za-z0-9]`.
pub fn room_id() -> String {
    alphanumeric(32)
}

/// 40 lowercase hex characters, unique per HTTP request.
pub fn request_id() -> String {
    let mut rng = rand::rng();
    format!(
        "{:016x}{:016x}{:08x}",
        rng.random::<u64>(),
        rng.random::<u64>(),
        rng.random::<u32>()
    )
}

/// 32 lowercase hex characters: the id of a server push.
pub fn push_id() -> String {
    let mut rng = rand::rng();
    format!("{:016x}{:016x}", rng.random::<u64>(), rng.random::<u64>())
}

/// Room ids for the core state machine.
pub struct RandomRoomIds;

impl matchchat_core::hub::IdSource for RandomRoomIds {
    fn room_id(&mut self) -> std::sync::Arc<str> {
        room_id().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let alnum = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric());
        let hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        assert!(session_id().len() == 40 && alnum(&session_id()));
        assert!(player_id().len() == 10 && alnum(&player_id()));
        assert!(room_id().len() == 32 && alnum(&room_id()));
        assert!(request_id().len() == 40 && hex(&request_id()));
        assert!(push_id().len() == 32 && hex(&push_id()));
        assert_ne!(session_id(), session_id());
        assert_ne!(push_id(), push_id());
    }
}
