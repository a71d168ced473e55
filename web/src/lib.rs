//! Browser client for match-and-chat.
//!
//! - [`model`]: the client state machine (pure; decides everything, does no IO).
//! - [`backoff`], [`session`]: reconnect delays, which stored player this tab is.
//! - [`text`]: every string the player sees, Chinese and English.
//! - `driver` (wasm only): the one hook that owns the WebSocket, timers and storage and
//!   feeds the model.
//! - `view` (wasm only): Yew function components rendering a model snapshot.
//!
//! The pure modules build natively, so `cargo test -p matchchat-web` tests the logic
//! without a browser; the same tests also run in Chromium under `wasm-pack test`.
#![forbid(unsafe_code)]

pub mod backoff;
pub mod model;
pub mod session;
pub mod text;

#[cfg(target_arch = "wasm32")]
pub mod driver;
#[cfg(target_arch = "wasm32")]
pub mod view;

// The unit tests above run in the browser too (wasm-pack test --chrome).
#[cfg(all(test, target_arch = "wasm32"))]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

/// Mounts the app on `<body>` (the trunk entry point calls this).
#[cfg(target_arch = "wasm32")]
pub fn start() {
    yew::Renderer::<view::App>::new().render();
}
