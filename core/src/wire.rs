//! JSON-RPC 2.0 envelopes as they travel on the socket.
//!
//! The server side *assembles* frames from pre-serialized parts: the `result` object of a
//! chat message is serialized once ([`result_json`]) and shared (`Arc<str>`) between the
//! sender's reply, every peer's push and the room history; only the envelope around it
//! differs per recipient ([`reply_frame`], [`push_frame`]). The client side *decodes*
//! frames with [`ServerFrame::parse`] into typed [`Event`]s.

use crate::Code;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::fmt::Write as _;

/// A request id exactly as the client wrote it: a JSON string or number, kept as raw JSON
/// text so that it is echoed byte for byte (`1.0`, `1e3` and big integers included).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RequestId(Box<str>);

impl RequestId {
    /// Accepts raw JSON text that is a string or a number.
    pub fn from_raw(raw: &RawValue) -> Option<RequestId> {
        let text = raw.get();
        match text.as_bytes().first() {
            Some(b'"') | Some(b'-') | Some(b'0'..=b'9') => Some(RequestId(text.into())),
            _ => None,
        }
    }

    /// A string id (what the browser client uses).
    pub fn from_string(id: &str) -> RequestId {
        RequestId(json_string(id).into_boxed_str())
    }

    /// The id as raw JSON text, ready to splice into a frame.
    pub fn as_json(&self) -> &str {
        &self.0
    }

    /// The id as a JSON value.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(&self.0).unwrap_or(serde_json::Value::Null)
    }
}

/// `data` of 20001 `匹配成功`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchedData {
    pub room_id: String,
    pub player_id: String,
    pub peer_ids: Vec<String>,
}

/// `data` of 20002 `聊天数据`. `seq` (the room's sequence number) and `ts` (server time,
/// milliseconds since the Unix epoch) are extensions; the seed's three fields come first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatData {
    pub send_player_id: String,
    pub chat_msg: String,
    pub chat_sn: String,
    #[serde(default)]
    pub seq: u64,
    #[serde(default)]
    pub ts: u64,
}

/// Why a member left a room, as `reason` in 20003.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaveReason {
    Left,
    Disconnected,
}

/// `data` of 20003 `对方已离开`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerLeftData {
    pub room_id: String,
    pub player_id: String,
    pub reason: LeaveReason,
    #[serde(default)]
    pub seq: u64,
}

/// `data` of the HTTP `get_config` success.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigData {
    pub session_id: String,
    pub request_id: String,
    pub account: String,
}

/// The HTTP `get_config` envelope, success (`status` 1) or failure (`status` 0).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigResponse {
    pub code: i32,
    pub status: i32,
    pub msg: String,
    pub message: String,
    pub data: serde_json::Value,
}

impl ConfigResponse {
    pub fn success(data: &ConfigData) -> ConfigResponse {
        ConfigResponse {
            code: 1,
            status: 1,
            msg: String::new(),
            message: String::new(),
            data: serde_json::to_value(data).unwrap_or_default(),
        }
    }

    pub fn failure(code: Code) -> ConfigResponse {
        ConfigResponse {
            code: code.value(),
            status: 0,
            msg: code.message().to_owned(),
            message: code.message().to_owned(),
            data: serde_json::Value::Object(Default::default()),
        }
    }
}

/// Serializes a `result` object: `{"code":…,"message":"…","data":…}`.
pub fn result_json<T: Serialize + ?Sized>(code: Code, data: &T) -> String {
    // Serializing plain data structs and literals cannot fail; fall back to `{}` anyway.
    let data = serde_json::to_string(data).unwrap_or_else(|_| "{}".to_owned());
    let mut out = String::with_capacity(data.len() + 48);
    let _ = write!(
        out,
        "{{\"code\":{},\"message\":{},\"data\":{}}}",
        code.value(),
        json_string(code.message()),
        data
    );
    out
}

/// The `result` of a 20002, from borrowed parts: byte-identical to serializing
/// [`ChatData`] (same members, same order), without copying the strings first.
pub fn chat_result_json(
    send_player_id: &str,
    chat_msg: &str,
    chat_sn: &str,
    seq: u64,
    ts: u64,
) -> String {
    #[derive(Serialize)]
    struct ChatDataRef<'a> {
        send_player_id: &'a str,
        chat_msg: &'a str,
        chat_sn: &'a str,
        seq: u64,
        ts: u64,
    }
    result_json(
        Code::ChatData,
        &ChatDataRef {
            send_player_id,
            chat_msg,
            chat_sn,
            seq,
            ts,
        },
    )
}

/// The `result` of a 20003, from borrowed parts (byte-identical to [`PeerLeftData`]).
pub fn peer_left_result_json(
    room_id: &str,
    player_id: &str,
    reason: LeaveReason,
    seq: u64,
) -> String {
    #[derive(Serialize)]
    struct PeerLeftRef<'a> {
        room_id: &'a str,
        player_id: &'a str,
        reason: LeaveReason,
        seq: u64,
    }
    result_json(
        Code::PeerLeft,
        &PeerLeftRef {
            room_id,
            player_id,
            reason,
            seq,
        },
    )
}

/// `data` of every error reply (40000, 40001, 40003, 40004, 40009): `{}`.
pub fn error_result_json(code: Code) -> String {
    result_json(code, &serde_json::Map::new())
}

/// `data` of the plain successes (20000): `[]`, as in the seed.
pub fn success_result_json() -> String {
    result_json(Code::Success, &[(); 0])
}

/// The reply to a request: `{"jsonrpc":"2.0","result":…,"id":<request id>}`.
pub fn reply_frame(result: &str, id: &RequestId) -> String {
    envelope(result, id.as_json())
}

/// A push: the same shape with a fresh server id (32 lowercase hex).
pub fn push_frame(result: &str, push_id: &str) -> String {
    let mut out = String::with_capacity(result.len() + push_id.len() + 40);
    out.push_str("{\"jsonrpc\":\"2.0\",\"result\":");
    out.push_str(result);
    out.push_str(",\"id\":\"");
    out.push_str(push_id);
    out.push_str("\"}");
    out
}

/// A JSON-RPC global error: `{"jsonrpc":"2.0","error":{"code":…,"message":"…"},"id":…}`.
pub fn error_frame(code: Code, id: Option<&RequestId>) -> String {
    format!(
        "{{\"jsonrpc\":\"2.0\",\"error\":{{\"code\":{},\"message\":{}}},\"id\":{}}}",
        code.value(),
        json_string(code.message()),
        id.map_or("null", RequestId::as_json)
    )
}

fn envelope(result: &str, id_json: &str) -> String {
    let mut out = String::with_capacity(result.len() + id_json.len() + 38);
    out.push_str("{\"jsonrpc\":\"2.0\",\"result\":");
    out.push_str(result);
    out.push_str(",\"id\":");
    out.push_str(id_json);
    out.push('}');
    out
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// A request as the client writes it.
pub fn request_frame(id: &str, method: &str, params: &serde_json::Value) -> String {
    serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()
}

/// One frame from the server, decoded (client side).
#[derive(Clone, Debug, PartialEq)]
pub struct ServerFrame {
    /// The request id for replies, the server's push id for pushes, `None` for `null`.
    pub id: Option<String>,
    pub body: FrameBody,
}

/// The `result` or `error` member of a server frame.
#[derive(Clone, Debug, PartialEq)]
pub enum FrameBody {
    Result {
        code: i64,
        message: String,
        data: serde_json::Value,
    },
    Error {
        code: i64,
        message: String,
    },
}

/// What a decoded result means to a client.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Success,
    Matched(MatchedData),
    Chat(ChatData),
    PeerLeft(PeerLeftData),
    /// A business or global error with its code (unknown codes keep the raw number).
    Failed {
        code: Option<Code>,
        raw_code: i64,
    },
}

#[derive(Deserialize)]
struct RawServerFrame {
    #[serde(default)]
    id: serde_json::Value,
    result: Option<RawResult>,
    error: Option<RawResult>,
}

#[derive(Deserialize)]
struct RawResult {
    code: i64,
    #[serde(default)]
    message: String,
    #[serde(default)]
    data: serde_json::Value,
}

impl ServerFrame {
    /// Decodes one text frame from the server.
    pub fn parse(text: &str) -> Result<ServerFrame, String> {
        let raw: RawServerFrame = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let id = match raw.id {
            serde_json::Value::String(s) => Some(s),
            serde_json::Value::Null => None,
            other => Some(other.to_string()),
        };
        let body = match (raw.result, raw.error) {
            (Some(r), None) => FrameBody::Result {
                code: r.code,
                message: r.message,
                data: r.data,
            },
            (None, Some(e)) => FrameBody::Error {
                code: e.code,
                message: e.message,
            },
            _ => return Err("frame has neither or both of result and error".to_owned()),
        };
        Ok(ServerFrame { id, body })
    }

    /// The frame's meaning; a known code whose data does not decode is an error.
    pub fn event(&self) -> Result<Event, String> {
        match &self.body {
            FrameBody::Error { code, .. } => Ok(Event::Failed {
                code: Code::from_value(*code),
                raw_code: *code,
            }),
            FrameBody::Result {
                code: raw_code,
                data,
                ..
            } => {
                let data = data.clone();
                let decode_err = |e: serde_json::Error| e.to_string();
                Ok(match Code::from_value(*raw_code) {
                    Some(Code::Success) => Event::Success,
                    Some(Code::Matched) => {
                        Event::Matched(serde_json::from_value(data).map_err(decode_err)?)
                    }
                    Some(Code::ChatData) => {
                        Event::Chat(serde_json::from_value(data).map_err(decode_err)?)
                    }
                    Some(Code::PeerLeft) => {
                        Event::PeerLeft(serde_json::from_value(data).map_err(decode_err)?)
                    }
                    code => Event::Failed {
                        code,
                        raw_code: *raw_code,
                    },
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    #[test]
    fn request_ids_are_echoed_verbatim() {
        for text in [
            "\"abc\"",
            "1",
            "-2",
            "1.50",
            "1e400",
            "123456789012345678901234567890",
        ] {
            let id = RequestId::from_raw(&raw(text)).unwrap();
            assert_eq!(id.as_json(), text);
        }
        for text in ["null", "true", "{}", "[]"] {
            assert!(RequestId::from_raw(&raw(text)).is_none(), "{text}");
        }
    }

    #[test]
    fn reply_has_the_seed_shape() {
        let id = RequestId::from_string("XQPieFsDzettF6HzH8mE682fZMT7336w");
        let frame = reply_frame(&success_result_json(), &id);
        assert_eq!(
            frame,
            r#"{"jsonrpc":"2.0","result":{"code":20000,"message":"success","data":[]},"id":"XQPieFsDzettF6HzH8mE682fZMT7336w"}"#
        );
    }

    #[test]
    fn errors_have_empty_object_data_and_global_errors_use_error_member() {
        assert_eq!(
            error_result_json(Code::NoRoom),
            r#"{"code":40004,"message":"操作失败！未找到进行中的聊天房间","data":{}}"#
        );
        assert_eq!(
            error_frame(Code::ProtocolError, None),
            r#"{"jsonrpc":"2.0","error":{"code":-1000,"message":"协议错误"},"id":null}"#
        );
        let id = RequestId::from_raw(&raw("7")).unwrap();
        assert_eq!(
            error_frame(Code::MethodNotFound, Some(&id)),
            r#"{"jsonrpc":"2.0","error":{"code":-1001,"message":"方法不存在"},"id":7}"#
        );
    }

    #[test]
    fn client_decodes_what_the_server_writes() {
        let chat = ChatData {
            send_player_id: "rPBDTm5PKh".into(),
            chat_msg: "<b>hi</b> \"quoted\"".into(),
            chat_sn: "sn1".into(),
            seq: 3,
            ts: 99,
        };
        let frame = push_frame(
            &result_json(Code::ChatData, &chat),
            "0123456789abcdef0123456789abcdef",
        );
        let decoded = ServerFrame::parse(&frame).unwrap();
        assert_eq!(
            decoded.id.as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert_eq!(decoded.event().unwrap(), Event::Chat(chat));

        let err = ServerFrame::parse(&error_frame(Code::ParamsMissing, None)).unwrap();
        assert_eq!(err.id, None);
        assert_eq!(
            err.event().unwrap(),
            Event::Failed {
                code: Some(Code::ParamsMissing),
                raw_code: -1002
            }
        );
        let busy = ServerFrame::parse(&reply_frame(
            &error_result_json(Code::RateLimited),
            &RequestId::from_string("r"),
        ))
        .unwrap();
        assert_eq!(
            busy.event().unwrap(),
            Event::Failed {
                code: Some(Code::RateLimited),
                raw_code: 40009
            }
        );
        assert!(ServerFrame::parse("{}").is_err());
        assert!(ServerFrame::parse("not json").is_err());
    }

    #[test]
    fn borrowed_results_equal_the_owned_structs() {
        let chat = ChatData {
            send_player_id: "p".into(),
            chat_msg: "m\"<>".into(),
            chat_sn: "s".into(),
            seq: 7,
            ts: 9,
        };
        assert_eq!(
            chat_result_json("p", "m\"<>", "s", 7, 9),
            result_json(Code::ChatData, &chat)
        );
        let left = PeerLeftData {
            room_id: "r".into(),
            player_id: "p".into(),
            reason: LeaveReason::Left,
            seq: 3,
        };
        assert_eq!(
            peer_left_result_json("r", "p", LeaveReason::Left, 3),
            result_json(Code::PeerLeft, &left)
        );
    }

    #[test]
    fn config_envelopes() {
        let fail = serde_json::to_value(ConfigResponse::failure(Code::ParamsMissing)).unwrap();
        assert_eq!(
            fail,
            serde_json::json!({"code":-1002,"status":0,"msg":"请求参数缺失","message":"请求参数缺失","data":{}})
        );
    }
}
