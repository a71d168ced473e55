//! Match-and-chat protocol and room logic, shared by the server and the browser client.
//!
//! Everything here is pure: no IO, no clock (time is passed in as [`Millis`]), no
//! randomness (room ids come from an [`hub::IdSource`] the caller supplies). That keeps
//! the protocol defined exactly once, compiles for `wasm32-unknown-unknown`, and makes
//! every room rule testable deterministically.
//!
//! - [`code`]: every protocol code with its exact message text.
//! - [`wire`]: JSON-RPC envelopes, request ids, outgoing frame assembly, client-side decoding.
//! - [`request`]: parsing and validating one client text frame.
//! - [`hub`]: the matchmaking + room state machine, returning [`hub::Effect`]s.
#![forbid(unsafe_code)]

pub mod code;
pub mod hub;
pub mod request;
pub mod wire;

pub use code::Code;

/// Milliseconds on a monotonic clock chosen by the caller.
pub type Millis = u64;

/// Method names, exactly as on the wire.
pub mod method {
    pub const MATCH_PLAYER: &str = "game/match_player";
    pub const SEND_CHAT_MSG: &str = "game/send_chat_msg";
    pub const CANCEL_MATCH: &str = "game/cancel_match";
    pub const LEAVE_CHAT: &str = "game/leave_chat";
}

/// Protocol limits that both sides validate against.
pub mod limits {
    /// Maximum `chat_msg` length in Unicode scalar values.
    pub const CHAT_MSG_MAX_CHARS: usize = 1000;
    /// Maximum `chat_sn` length in Unicode scalar values.
    pub const CHAT_SN_MAX_CHARS: usize = 64;
    /// Maximum `game_zone` length in Unicode scalar values.
    pub const GAME_ZONE_MAX_CHARS: usize = 64;
    /// Largest accepted WebSocket message, in bytes.
    pub const FRAME_MAX_BYTES: usize = 64 * 1024;
    /// Largest `get_config` product id.
    pub const PRODUCT_ID_MAX: i64 = 2_147_483_647;
}
