//! Parsing and validating one client text frame into a typed [`Incoming`] request.
//!
//! The checks run in the contract's order (PROTOCOL.md §8.1, after the rate limit, which
//! the server applies before calling [`parse_frame`]): -1000 → -1001 → -1002 → 40000 →
//! 40001. The first that applies answers; the id is echoed whenever it could be read.

use crate::Code;
use crate::limits::{CHAT_MSG_MAX_CHARS, CHAT_SN_MAX_CHARS};
use crate::method;
use crate::wire::RequestId;
use serde::Deserialize;
use serde_json::value::RawValue;

/// A validated request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    MatchPlayer,
    CancelMatch,
    LeaveChat,
    SendChat { chat_msg: String, chat_sn: String },
}

impl Request {
    /// The method name on the wire.
    pub fn method(&self) -> &'static str {
        match self {
            Request::MatchPlayer => method::MATCH_PLAYER,
            Request::CancelMatch => method::CANCEL_MATCH,
            Request::LeaveChat => method::LEAVE_CHAT,
            Request::SendChat { .. } => method::SEND_CHAT_MSG,
        }
    }

    /// The request as a client frame with the given id.
    pub fn to_frame(&self, id: &str) -> String {
        let params = match self {
            Request::SendChat { chat_msg, chat_sn } => {
                serde_json::json!({"chat_msg": chat_msg, "chat_sn": chat_sn})
            }
            _ => serde_json::json!([]),
        };
        crate::wire::request_frame(id, self.method(), &params)
    }
}

/// A request with the id to answer it with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incoming {
    pub id: RequestId,
    pub request: Request,
}

/// Why a frame was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// -1000 / -1001 / -1002, sent in the JSON-RPC `error` member.
    Global { code: Code, id: Option<RequestId> },
    /// 40000 / 40001, sent as a `result` with `data` `{}`.
    Business { code: Code, id: RequestId },
}

impl Rejection {
    pub fn code(&self) -> Code {
        match self {
            Rejection::Global { code, .. } | Rejection::Business { code, .. } => *code,
        }
    }

    /// The frame that answers this rejection.
    pub fn to_frame(&self) -> String {
        match self {
            Rejection::Global { code, id } => crate::wire::error_frame(*code, id.as_ref()),
            Rejection::Business { code, id } => {
                crate::wire::reply_frame(&crate::wire::error_result_json(*code), id)
            }
        }
    }
}

/// The envelope, with every member kept raw so each check can run in order.
/// `Option<&RawValue>` reads a JSON `null` as absent.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    jsonrpc: Option<&'a RawValue>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    method: Option<&'a RawValue>,
    #[serde(borrow)]
    params: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ChatParams<'a> {
    #[serde(borrow)]
    chat_msg: Option<&'a RawValue>,
    #[serde(borrow)]
    chat_sn: Option<&'a RawValue>,
}

/// Best-effort id of a frame that is otherwise not looked at (for 40009 replies).
pub fn peek_id(text: &str) -> Option<RequestId> {
    let env: Envelope = serde_json::from_str(text).ok()?;
    env.id.and_then(RequestId::from_raw)
}

/// Parses and validates one text frame.
pub fn parse_frame(text: &str) -> Result<Incoming, Rejection> {
    let protocol_error = |id: Option<RequestId>| Rejection::Global {
        code: Code::ProtocolError,
        id,
    };
    // Not JSON, not an object (arrays, i.e. batches, included), duplicate members: -1000.
    let env: Envelope = serde_json::from_str(text).map_err(|_| protocol_error(None))?;
    let id = env.id.and_then(RequestId::from_raw);
    if env.jsonrpc.map(RawValue::get) != Some("\"2.0\"") {
        return Err(protocol_error(id));
    }
    let Some(id) = id else {
        return Err(protocol_error(None));
    };
    let method: String = match env.method.map(|m| serde_json::from_str::<String>(m.get())) {
        Some(Ok(m)) => m,
        _ => return Err(protocol_error(Some(id))),
    };
    let request_kind = match method.as_str() {
        method::MATCH_PLAYER => Kind::Match,
        method::SEND_CHAT_MSG => Kind::Chat,
        method::CANCEL_MATCH => Kind::Cancel,
        method::LEAVE_CHAT => Kind::Leave,
        _ => {
            return Err(Rejection::Global {
                code: Code::MethodNotFound,
                id: Some(id),
            });
        }
    };
    let params = match env.params {
        Some(p) if matches!(p.get().as_bytes().first(), Some(b'{') | Some(b'[')) => p,
        _ => {
            return Err(Rejection::Global {
                code: Code::ParamsMissing,
                id: Some(id),
            });
        }
    };
    let request = match request_kind {
        Kind::Match => Request::MatchPlayer,
        Kind::Cancel => Request::CancelMatch,
        Kind::Leave => Request::LeaveChat,
        Kind::Chat => parse_chat_params(params).map_err(|code| Rejection::Business {
            code,
            id: id.clone(),
        })?,
    };
    Ok(Incoming { id, request })
}

enum Kind {
    Match,
    Chat,
    Cancel,
    Leave,
}

fn parse_chat_params(params: &RawValue) -> Result<Request, Code> {
    // Positional params carry no named fields: both are absent.
    let fields: ChatParams = if params.get().starts_with('[') {
        ChatParams {
            chat_msg: None,
            chat_sn: None,
        }
    } else {
        serde_json::from_str(params.get()).map_err(|_| Code::ParamInvalid)?
    };
    let (Some(msg), Some(sn)) = (fields.chat_msg, fields.chat_sn) else {
        return Err(Code::ParamMissing);
    };
    let chat_msg = text_field(msg, CHAT_MSG_MAX_CHARS)?;
    let chat_sn = text_field(sn, CHAT_SN_MAX_CHARS)?;
    Ok(Request::SendChat { chat_msg, chat_sn })
}

/// A non-empty JSON string of at most `max_chars` Unicode scalar values.
fn text_field(raw: &RawValue, max_chars: usize) -> Result<String, Code> {
    if !raw.get().starts_with('"') {
        return Err(Code::ParamInvalid);
    }
    let text: String = serde_json::from_str(raw.get()).map_err(|_| Code::ParamInvalid)?;
    // Byte length bounds the char count from above: skip counting for short strings.
    if text.is_empty() || (text.len() > max_chars && text.chars().count() > max_chars) {
        return Err(Code::ParamInvalid);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reject(text: &str) -> (Code, Option<String>) {
        match parse_frame(text) {
            Ok(ok) => panic!("accepted a frame of {} bytes: {ok:?}", text.len()),
            Err(Rejection::Global { code, id }) => (code, id.map(|i| i.as_json().to_owned())),
            Err(Rejection::Business { code, id }) => (code, Some(id.as_json().to_owned())),
        }
    }

    #[test]
    fn accepts_the_seed_examples() {
        let chat = r#"{"id":"yHs6ndAXiyi6spTSKPRXX26dSeTRa4xx","jsonrpc":"2.0","method":"game/send_chat_msg","params":{"chat_msg":"123","chat_sn":"Dhy84razsSeh7WPSiAdW7EsZ76fyt267"}}"#;
        let got = parse_frame(chat).unwrap();
        assert_eq!(got.id.as_json(), "\"yHs6ndAXiyi6spTSKPRXX26dSeTRa4xx\"");
        assert_eq!(
            got.request,
            Request::SendChat {
                chat_msg: "123".into(),
                chat_sn: "Dhy84razsSeh7WPSiAdW7EsZ76fyt267".into()
            }
        );
        let matching = r#"{"id":"XQPieFsDzettF6HzH8mE682fZMT7336w","jsonrpc":"2.0","method":"game/match_player","params":[]}"#;
        assert_eq!(parse_frame(matching).unwrap().request, Request::MatchPlayer);
        let with_object = r#"{"id":1,"jsonrpc":"2.0","method":"game/match_player","params":{}}"#;
        assert_eq!(
            parse_frame(with_object).unwrap().request,
            Request::MatchPlayer
        );
        let cancel = r#"{"id":2,"jsonrpc":"2.0","method":"game/cancel_match","params":[]}"#;
        assert_eq!(parse_frame(cancel).unwrap().request, Request::CancelMatch);
        let leave = r#"{"id":3,"jsonrpc":"2.0","method":"game/leave_chat","params":[]}"#;
        assert_eq!(parse_frame(leave).unwrap().request, Request::LeaveChat);
    }

    #[test]
    fn protocol_errors() {
        let none = (Code::ProtocolError, None);
        assert_eq!(reject("not json"), none);
        assert_eq!(reject(""), none);
        assert_eq!(reject("[]"), none);
        assert_eq!(
            reject(r#"[{"jsonrpc":"2.0","id":1,"method":"game/match_player","params":[]}]"#),
            none
        );
        assert_eq!(reject("42"), none);
        assert_eq!(reject(r#""str""#), none);
        assert_eq!(
            reject(r#"{"jsonrpc":"2.0","method":"game/match_player","params":[]}"#),
            none
        );
        assert_eq!(
            reject(r#"{"jsonrpc":"2.0","id":null,"method":"game/match_player","params":[]}"#),
            none
        );
        assert_eq!(
            reject(r#"{"jsonrpc":"2.0","id":true,"method":"game/match_player","params":[]}"#),
            none
        );
        assert_eq!(
            reject(r#"{"jsonrpc":"2.0","id":{},"method":"game/match_player","params":[]}"#),
            none
        );
        // The id is echoed whenever it could be read.
        let with_id = (Code::ProtocolError, Some("\"a\"".to_owned()));
        assert_eq!(
            reject(r#"{"id":"a","method":"game/match_player","params":[]}"#),
            with_id
        );
        assert_eq!(
            reject(r#"{"jsonrpc":"1.0","id":"a","method":"game/match_player","params":[]}"#),
            with_id
        );
        assert_eq!(
            reject(r#"{"jsonrpc":2.0,"id":"a","method":"game/match_player","params":[]}"#),
            with_id
        );
        assert_eq!(reject(r#"{"jsonrpc":"2.0","id":"a","params":[]}"#), with_id);
        assert_eq!(
            reject(r#"{"jsonrpc":"2.0","id":"a","method":5,"params":[]}"#),
            with_id
        );
        // Duplicate members are ambiguous: refused.
        assert_eq!(
            reject(
                r#"{"jsonrpc":"2.0","id":"a","id":"b","method":"game/match_player","params":[]}"#
            )
            .0,
            Code::ProtocolError
        );
        // Deep nesting never reaches the stack: refused where it is read, skipped elsewhere.
        let nest = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert_eq!(reject(&nest(100_000)), none);
        let deep_id = format!(
            r#"{{"jsonrpc":"2.0","id":{},"method":"game/match_player","params":[]}}"#,
            nest(100_000)
        );
        assert_eq!(reject(&deep_id), none);
        let deep_extra = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"game/match_player","params":[],"x":{}}}"#,
            nest(100_000)
        );
        assert_eq!(
            parse_frame(&deep_extra).map(|i| i.request),
            Ok(Request::MatchPlayer)
        );
    }

    #[test]
    fn method_and_params_errors() {
        assert_eq!(
            reject(r#"{"jsonrpc":"2.0","id":9,"method":"game/nope","params":[]}"#),
            (Code::MethodNotFound, Some("9".into()))
        );
        // -1001 is checked before -1002.
        assert_eq!(
            reject(r#"{"jsonrpc":"2.0","id":9,"method":"game/nope"}"#),
            (Code::MethodNotFound, Some("9".into()))
        );
        for params in [
            "",
            r#","params":null"#,
            r#","params":"x""#,
            r#","params":3"#,
            r#","params":true"#,
        ] {
            let text =
                format!(r#"{{"jsonrpc":"2.0","id":9,"method":"game/match_player"{params}}}"#);
            assert_eq!(
                reject(&text),
                (Code::ParamsMissing, Some("9".into())),
                "{text}"
            );
        }
    }

    fn chat(params: &str) -> String {
        format!(r#"{{"jsonrpc":"2.0","id":"c","method":"game/send_chat_msg","params":{params}}}"#)
    }

    #[test]
    fn chat_param_errors_in_order() {
        let missing = (Code::ParamMissing, Some("\"c\"".to_owned()));
        let invalid = (Code::ParamInvalid, Some("\"c\"".to_owned()));
        assert_eq!(reject(&chat("{}")), missing);
        assert_eq!(reject(&chat("[]")), missing);
        assert_eq!(reject(&chat(r#"["hi","sn"]"#)), missing);
        assert_eq!(reject(&chat(r#"{"chat_msg":"hi"}"#)), missing);
        assert_eq!(reject(&chat(r#"{"chat_sn":"s"}"#)), missing);
        assert_eq!(reject(&chat(r#"{"chat_msg":null,"chat_sn":"s"}"#)), missing);
        // 40000 wins over 40001 when both apply.
        assert_eq!(reject(&chat(r#"{"chat_msg":5}"#)), missing);
        assert_eq!(reject(&chat(r#"{"chat_msg":5,"chat_sn":"s"}"#)), invalid);
        assert_eq!(reject(&chat(r#"{"chat_msg":"hi","chat_sn":7}"#)), invalid);
        assert_eq!(reject(&chat(r#"{"chat_msg":"","chat_sn":"s"}"#)), invalid);
        assert_eq!(reject(&chat(r#"{"chat_msg":"hi","chat_sn":""}"#)), invalid);
        assert_eq!(
            reject(&chat(r#"{"chat_msg":["hi"],"chat_sn":"s"}"#)),
            invalid
        );
        let long = "字".repeat(1001);
        assert_eq!(
            reject(&chat(&format!(r#"{{"chat_msg":"{long}","chat_sn":"s"}}"#))),
            invalid
        );
        let sn = "s".repeat(65);
        assert_eq!(
            reject(&chat(&format!(r#"{{"chat_msg":"hi","chat_sn":"{sn}"}}"#))),
            invalid
        );
    }

    #[test]
    fn limits_count_unicode_scalar_values() {
        let msg = "字".repeat(1000); // 3000 bytes, 1000 characters
        let sn = "é".repeat(64);
        let text = chat(&format!(r#"{{"chat_msg":"{msg}","chat_sn":"{sn}"}}"#));
        let Request::SendChat { chat_msg, chat_sn } = parse_frame(&text).unwrap().request else {
            panic!("not a chat");
        };
        assert_eq!(chat_msg.chars().count(), 1000);
        assert_eq!(chat_sn.chars().count(), 64);
        // Escapes are decoded before counting; control characters and NUL are plain text.
        let escaped = chat(r#"{"chat_msg":"a\u0000b\n\u5b57","chat_sn":"s"}"#);
        let Request::SendChat { chat_msg, .. } = parse_frame(&escaped).unwrap().request else {
            panic!("not a chat");
        };
        assert_eq!(chat_msg, "a\0b\n字");
        // A lone surrogate escape is not a Unicode scalar value: the JSON is refused.
        assert_eq!(
            reject(&chat(r#"{"chat_msg":"\ud800","chat_sn":"s"}"#)).0,
            Code::ParamInvalid
        );
    }

    #[test]
    fn request_to_frame_round_trips() {
        let req = Request::SendChat {
            chat_msg: "a\"b".into(),
            chat_sn: "x".into(),
        };
        let parsed = parse_frame(&req.to_frame("id1")).unwrap();
        assert_eq!(parsed.request, req);
        assert_eq!(parsed.id, RequestId::from_string("id1"));
        assert_eq!(
            parse_frame(&Request::LeaveChat.to_frame("z"))
                .unwrap()
                .request,
            Request::LeaveChat
        );
    }

    #[test]
    fn peek_id_reads_ids_of_valid_envelopes_only() {
        assert_eq!(
            peek_id(r#"{"id":"q","method":1}"#),
            Some(RequestId::from_string("q"))
        );
        assert_eq!(peek_id("garbage"), None);
    }
}
