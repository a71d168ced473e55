//! What the load generator writes and reads on the socket, kept cheap: chat frames are
//! assembled by hand into a reused buffer, and incoming frames are classified by a few
//! substring scans instead of a JSON parse (the load generator, not the server, is the
//! first thing to run out of CPU on a small machine). Only the one 20001 per client is
//! decoded properly, with `matchchat_core::wire::ServerFrame`.
//!
//! A chat payload (`chat_msg`) is `<sender>.<seq>.<ts_us>[F]` padded with `x` to the
//! requested size: the sender's global index, its sequence number (1, 2, …), the intended
//! send time in microseconds since the Unix epoch, and `F` on the final marker message
//! that tells the receiver how many came before it.

use std::fmt::Write as _;

/// What the chat payload says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Payload {
    pub sender: u64,
    pub seq: u64,
    pub ts_us: u64,
    pub fin: bool,
}

/// The padding of a wide payload ([`wide_chat_frame`]): a 4-byte character, so that the
/// protocol's 1,000 characters make ~3.9 KB on the wire.
pub const WIDE_PAD: char = '\u{1F4AC}';

/// Writes a `game/send_chat_msg` request frame into `buf` (cleared first). The request id
/// and `chat_sn` are the sequence number; `chat_msg` is padded to `msg_bytes`.
pub fn chat_frame(buf: &mut String, p: Payload, msg_bytes: usize) {
    write_chat(buf, p, |buf, start| {
        while buf.len() - start < msg_bytes {
            buf.push('x');
        }
    });
}

/// Like [`chat_frame`], with the longest `chat_msg` the protocol allows
/// (`CHAT_MSG_MAX_CHARS` characters), padded with [`WIDE_PAD`].
pub fn wide_chat_frame(buf: &mut String, p: Payload) {
    write_chat(buf, p, |buf, start| {
        // The payload's head is ASCII: its bytes are its characters.
        let head = buf.len() - start;
        let pad = matchchat_core::limits::CHAT_MSG_MAX_CHARS.saturating_sub(head);
        buf.extend(std::iter::repeat_n(WIDE_PAD, pad));
    });
}

fn write_chat(buf: &mut String, p: Payload, pad: impl FnOnce(&mut String, usize)) {
    buf.clear();
    let _ = write!(
        buf,
        "{{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":\"game/send_chat_msg\",\"params\":{{\"chat_msg\":\"",
        p.seq
    );
    let start = buf.len();
    let _ = write!(buf, "{}.{}.{}", p.sender, p.seq, p.ts_us);
    if p.fin {
        buf.push('F');
    }
    pad(buf, start);
    let _ = write!(buf, "\",\"chat_sn\":\"{}\"}}}}", p.seq);
}

/// Parses a chat payload (the padding is ignored).
pub fn parse_payload(msg: &str) -> Option<Payload> {
    let mut parts = msg.splitn(3, '.');
    let sender = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    let rest = parts.next()?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let ts_us = rest[..digits].parse().ok()?;
    let tail = &rest[digits..];
    let fin = tail.starts_with('F');
    let padding = if fin { &tail[1..] } else { tail };
    if !(padding.bytes().all(|b| b == b'x') || padding.chars().all(|c| c == WIDE_PAD)) {
        return None;
    }
    Some(Payload {
        sender,
        seq,
        ts_us,
        fin,
    })
}

/// The text of a JSON string member `"key":"…"` (no escapes expected), found by scanning.
pub fn str_field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let pattern_len = key.len() + 4;
    let mut from = 0;
    while let Some(at) = text[from..].find(key) {
        let at = from + at;
        let before = at.checked_sub(1).map(|i| text.as_bytes()[i]);
        let after = &text[at + key.len()..];
        if before == Some(b'"') && after.starts_with("\":\"") {
            let value = &text[at - 1 + pattern_len..];
            return value.find('"').map(|end| &value[..end]);
        }
        from = at + key.len();
    }
    None
}

/// The first `"code":<int>` in the frame.
pub fn code_field(text: &str) -> Option<i64> {
    let at = text.find("\"code\":")? + 7;
    let rest = &text[at..];
    let len = rest
        .bytes()
        .enumerate()
        .take_while(|(i, b)| b.is_ascii_digit() || (*i == 0 && *b == b'-'))
        .count();
    rest[..len].parse().ok()
}

/// How the load generator reads one incoming text frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// A chat message: the sender's own 20002 reply (or the baseline's echo) when
    /// `payload.sender` is the reader, a delivery from the peer otherwise.
    Chat {
        payload: Payload,
        /// `send_player_id` (absent from the baseline's frames).
        from: Option<&'a str>,
    },
    /// 20000.
    Success,
    /// 20001 (decode it with [`matched`]).
    Matched,
    /// 20003.
    PeerLeft,
    /// A JSON-RPC `error` or a business error code.
    Error(i64),
    /// Anything else (counted as an error by the caller).
    Unknown,
}

/// Classifies a frame from the server or the baseline.
pub fn classify(text: &str) -> Incoming<'_> {
    if let Some(msg) = str_field(text, "chat_msg") {
        // The real server answers 20002; the baseline forwards the request as it came.
        let code = code_field(text);
        if code.is_none_or(|c| c == 20002) {
            return match parse_payload(msg) {
                Some(payload) => Incoming::Chat {
                    payload,
                    from: str_field(text, "send_player_id"),
                },
                None => Incoming::Unknown,
            };
        }
    }
    if text.contains("\"error\":") {
        return Incoming::Error(code_field(text).unwrap_or(0));
    }
    match code_field(text) {
        Some(20000) => Incoming::Success,
        Some(20001) => Incoming::Matched,
        Some(20003) => Incoming::PeerLeft,
        Some(code) => Incoming::Error(code),
        None => Incoming::Unknown,
    }
}

/// `(player_id, first peer id)` of a 20001 frame.
pub fn matched(text: &str) -> Result<(String, String), String> {
    let frame = matchchat_core::wire::ServerFrame::parse(text)?;
    match frame.event()? {
        matchchat_core::wire::Event::Matched(data) => {
            let peer = data
                .peer_ids
                .into_iter()
                .find(|p| *p != data.player_id)
                .ok_or("20001 without a peer")?;
            Ok((data.player_id, peer))
        }
        other => Err(format!("expected 20001, got {other:?}")),
    }
}

/// The `game/match_player` request.
pub fn match_frame(id: &str) -> String {
    matchchat_core::request::Request::MatchPlayer.to_frame(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use matchchat_core::request::{Request, parse_frame};

    #[test]
    fn chat_frames_are_valid_requests_and_round_trip() {
        let mut buf = String::new();
        let p = Payload {
            sender: 17,
            seq: 3,
            ts_us: 1_700_000_000_123_456,
            fin: false,
        };
        chat_frame(&mut buf, p, 32);
        let incoming = parse_frame(&buf).expect("valid request");
        let Request::SendChat { chat_msg, chat_sn } = incoming.request else {
            panic!("not a chat: {buf}");
        };
        assert_eq!(chat_msg.len(), 32);
        assert_eq!(chat_sn, "3");
        assert_eq!(parse_payload(&chat_msg), Some(p));
        let mut wide = String::new();
        wide_chat_frame(&mut wide, p);
        let incoming = parse_frame(&wide).expect("valid request");
        let Request::SendChat { chat_msg, .. } = incoming.request else {
            panic!("not a chat: {wide}");
        };
        assert_eq!(
            chat_msg.chars().count(),
            matchchat_core::limits::CHAT_MSG_MAX_CHARS
        );
        assert!(chat_msg.len() > 3_900, "{}", chat_msg.len());
        assert_eq!(parse_payload(&chat_msg), Some(p));
        let fin = Payload { fin: true, ..p };
        chat_frame(&mut buf, fin, 8);
        assert_eq!(
            classify(&buf),
            Incoming::Chat {
                payload: fin,
                from: None
            }
        );
    }

    #[test]
    fn classifies_server_frames() {
        let push = r#"{"jsonrpc":"2.0","result":{"code":20002,"message":"聊天数据","data":{"send_player_id":"rPBDTm5PKh","chat_msg":"4.9.100xxxx","chat_sn":"9","seq":3,"ts":5}},"id":"0123456789abcdef0123456789abcdef"}"#;
        assert_eq!(
            classify(push),
            Incoming::Chat {
                payload: Payload {
                    sender: 4,
                    seq: 9,
                    ts_us: 100,
                    fin: false
                },
                from: Some("rPBDTm5PKh")
            }
        );
        let matched_frame = r#"{"jsonrpc":"2.0","result":{"code":20001,"message":"匹配成功","data":{"room_id":"r","player_id":"a","peer_ids":["a","b"]}},"id":"00"}"#;
        assert_eq!(classify(matched_frame), Incoming::Matched);
        assert_eq!(matched(matched_frame), Ok(("a".into(), "b".into())));
        assert_eq!(
            classify(
                r#"{"jsonrpc":"2.0","result":{"code":20000,"message":"success","data":[]},"id":"m"}"#
            ),
            Incoming::Success
        );
        assert_eq!(
            classify(r#"{"jsonrpc":"2.0","result":{"code":40009,"message":"x","data":{}},"id":1}"#),
            Incoming::Error(40009)
        );
        assert_eq!(
            classify(r#"{"jsonrpc":"2.0","error":{"code":-1000,"message":"x"},"id":null}"#),
            Incoming::Error(-1000)
        );
        assert_eq!(classify("garbage"), Incoming::Unknown);
        assert!(matches!(
            classify(&match_frame("m1")),
            Incoming::Unknown | Incoming::Error(_)
        ));
    }
}
