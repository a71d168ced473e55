//! Which player this tab is, and the socket address for it.
//!
//! Sessions live in `localStorage` so that a reload, or a tab opened later, is the same
//! player. Two tabs open at once must not fight over one session (the server closes the
//! older connection with 4001), so each tab also remembers in `sessionStorage` which
//! session it claimed, and keeps a heartbeat (`seen_ms`) on it: a new tab takes over a
//! stored session only when no live tab has touched it recently, and otherwise starts as
//! a new player. This module is the pure part of that; the browser calls are in `driver`.

use serde::{Deserialize, Serialize};

/// One player, as returned by `get_config`, with the pool it was made for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub session_id: String,
    pub account: String,
    pub product_id: i64,
    pub game_zone: String,
}

/// A stored session and when a tab last showed it was alive (ms since the epoch).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredSession {
    pub session: Session,
    pub seen_ms: f64,
}

/// A tab that has not touched its session for this long is gone.
pub const STALE_MS: f64 = 8_000.0;
/// How often a live tab touches its session.
pub const HEARTBEAT_MS: u32 = 2_000;
/// Sessions kept per browser; older ones are forgotten.
const MAX_STORED: usize = 8;

/// The session this tab should use: the one it claimed before a reload, else the most
/// recent one no live tab holds, else none (the player picks a zone).
pub fn pick(stored: &[StoredSession], claimed: Option<&str>, now_ms: f64) -> Option<Session> {
    if let Some(id) = claimed
        && let Some(s) = stored.iter().find(|s| s.session.session_id == id)
    {
        return Some(s.session.clone());
    }
    // The list is newest first: among equally old entries the first (newest) wins.
    let mut best: Option<&StoredSession> = None;
    for s in stored
        .iter()
        .filter(|s| s.seen_ms <= 0.0 || now_ms - s.seen_ms >= STALE_MS)
    {
        if best.is_none_or(|b| s.seen_ms > b.seen_ms) {
            best = Some(s);
        }
    }
    best.map(|s| s.session.clone())
}

/// Marks `session` alive now, adding it (newest first) if it is new.
pub fn touch(stored: &mut Vec<StoredSession>, session: &Session, now_ms: f64) {
    stored.retain(|s| s.session.session_id != session.session_id);
    stored.insert(
        0,
        StoredSession {
            session: session.clone(),
            seen_ms: now_ms,
        },
    );
    stored.truncate(MAX_STORED);
}

/// Marks `session_id` as no longer held by any tab (the page is going away), so the next
/// tab opened can pick it up at once (`seen_ms` 0 means released).
pub fn release(stored: &mut [StoredSession], session_id: &str) {
    for s in stored
        .iter_mut()
        .filter(|s| s.session.session_id == session_id)
    {
        s.seen_ms = 0.0;
    }
}

/// Removes a session (expired, or the player chose another zone).
pub fn forget(stored: &mut Vec<StoredSession>, session_id: &str) {
    stored.retain(|s| s.session.session_id != session_id);
}

/// `ws(s)://host/ws?session_id=…&last_seq=…`, from `location.protocol` and `location.host`.
pub fn ws_url(page_protocol: &str, host: &str, session_id: &str, last_seq: u64) -> String {
    let scheme = if page_protocol == "https:" {
        "wss"
    } else {
        "ws"
    };
    format!(
        "{scheme}://{host}/ws?session_id={}&last_seq={last_seq}",
        percent_encode(session_id)
    )
}

/// Session ids are `[A-Za-z0-9]`, but the value comes from storage a user can edit.
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn session(id: &str) -> Session {
        Session {
            session_id: id.into(),
            account: format!("acct{id}"),
            product_id: 1,
            game_zone: "cn-east".into(),
        }
    }

    #[test]
    fn a_reload_keeps_its_claimed_session_even_while_fresh() {
        let mut stored = Vec::new();
        touch(&mut stored, &session("a"), 1000.0);
        assert_eq!(pick(&stored, Some("a"), 1500.0), Some(session("a")));
    }

    #[test]
    fn a_second_tab_does_not_steal_a_live_session() {
        let mut stored = Vec::new();
        touch(&mut stored, &session("a"), 1000.0);
        assert_eq!(pick(&stored, None, 2000.0), None);
        // Once the first tab has been gone for a while, its player is picked up.
        assert_eq!(pick(&stored, None, 1000.0 + STALE_MS), Some(session("a")));
        // A released session is free at once.
        release(&mut stored, "a");
        assert_eq!(pick(&stored, None, 2000.0), Some(session("a")));
    }

    #[test]
    fn newest_stale_session_wins_and_the_list_is_bounded() {
        let mut stored = Vec::new();
        for i in 0..20 {
            touch(&mut stored, &session(&i.to_string()), f64::from(i));
        }
        assert_eq!(stored.len(), MAX_STORED);
        assert_eq!(pick(&stored, None, 1e9), Some(session("19")));
        forget(&mut stored, "19");
        assert_eq!(pick(&stored, None, 1e9), Some(session("18")));
        // A claim for a forgotten session falls back to the free ones.
        assert_eq!(pick(&stored, Some("19"), 1e9), Some(session("18")));
        // All released: the newest one.
        for i in 0..18 {
            release(&mut stored, &i.to_string());
        }
        release(&mut stored, "18");
        assert_eq!(pick(&stored, None, 5.0), Some(session("18")));
    }

    #[test]
    fn socket_url_follows_the_page() {
        assert_eq!(
            ws_url("http:", "127.0.0.1:8080", "abcXYZ09", 0),
            "ws://127.0.0.1:8080/ws?session_id=abcXYZ09&last_seq=0"
        );
        assert_eq!(
            ws_url("https:", "chat.example", "a b&c", 42),
            "wss://chat.example/ws?session_id=a%20b%26c&last_seq=42"
        );
    }
}
