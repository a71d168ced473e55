//! Integration tests: the real server on 127.0.0.1:0, driven by a real WebSocket client
//! (tokio-tungstenite) and a real HTTP client (hyper), one case per row of PROTOCOL.md.
//! One test binary with modules, so the suite links once.

mod common;
mod resilient;

mod chat;
mod cluster;
mod errors;
mod faults;
mod http;
mod limits;
mod matching;
mod sessions;
mod shutdown;
