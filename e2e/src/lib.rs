//! End-to-end browser test crate for match-and-chat; the test is in `tests/browser.rs`.
//!
//! It starts the real server (the `matchchat-server` library) on a loopback port serving
//! the trunk build in `dist/`, starts `chromedriver`, and drives two headless Chromium
//! sessions through matching, chatting both ways, a reload mid-chat and leaving. Build the
//! client first (`trunk build --release`, or the xtask that wraps it).
