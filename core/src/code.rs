//! Every code of the protocol, with the exact message text the seed document gives.
//!
//! One enum so that a code and its text can never drift apart: the server writes
//! `code.value()` and `code.message()`, the client maps a received number back with
//! [`Code::from_value`].

/// A protocol code: business results (2xxxx), business errors (4xxxx),
/// JSON-RPC global errors (-1xxx) and HTTP bootstrap errors (-2xxxx).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Code {
    /// 20000 `success`
    Success,
    /// 20001 `匹配成功` (push)
    Matched,
    /// 20002 `聊天数据` (reply and push)
    ChatData,
    /// 20003 `对方已离开` (push)
    PeerLeft,
    /// 40000 `参数缺失`
    ParamMissing,
    /// 40001 `参数错误`
    ParamInvalid,
    /// 40003 `您有一场进行中的聊天房间`
    InRoom,
    /// 40004 `操作失败！未找到进行中的聊天房间`
    NoRoom,
    /// 40009 `操作过于频繁`
    RateLimited,
    /// -1000 `协议错误`
    ProtocolError,
    /// -1001 `方法不存在`
    MethodNotFound,
    /// -1002 `请求参数缺失`
    ParamsMissing,
    /// -20001 `系统处理中`
    SystemBusy,
    /// -20002 `系统错误`
    SystemError,
}

impl Code {
    /// Every code, for exhaustive tests and metrics.
    pub const ALL: [Code; 14] = [
        Code::Success,
        Code::Matched,
        Code::ChatData,
        Code::PeerLeft,
        Code::ParamMissing,
        Code::ParamInvalid,
        Code::InRoom,
        Code::NoRoom,
        Code::RateLimited,
        Code::ProtocolError,
        Code::MethodNotFound,
        Code::ParamsMissing,
        Code::SystemBusy,
        Code::SystemError,
    ];

    /// The number on the wire.
    pub const fn value(self) -> i32 {
        match self {
            Code::Success => 20000,
            Code::Matched => 20001,
            Code::ChatData => 20002,
            Code::PeerLeft => 20003,
            Code::ParamMissing => 40000,
            Code::ParamInvalid => 40001,
            Code::InRoom => 40003,
            Code::NoRoom => 40004,
            Code::RateLimited => 40009,
            Code::ProtocolError => -1000,
            Code::MethodNotFound => -1001,
            Code::ParamsMissing => -1002,
            Code::SystemBusy => -20001,
            Code::SystemError => -20002,
        }
    }

    /// The message text on the wire, byte for byte as in the seed document.
    pub const fn message(self) -> &'static str {
        match self {
            Code::Success => "success",
            Code::Matched => "匹配成功",
            Code::ChatData => "聊天数据",
            Code::PeerLeft => "对方已离开",
            Code::ParamMissing => "参数缺失",
            Code::ParamInvalid => "参数错误",
            Code::InRoom => "您有一场进行中的聊天房间",
            Code::NoRoom => "操作失败！未找到进行中的聊天房间",
            Code::RateLimited => "操作过于频繁",
            Code::ProtocolError => "协议错误",
            Code::MethodNotFound => "方法不存在",
            Code::ParamsMissing => "请求参数缺失",
            Code::SystemBusy => "系统处理中",
            Code::SystemError => "系统错误",
        }
    }

    /// The code with this wire number, if the protocol has one.
    pub fn from_value(value: i64) -> Option<Code> {
        Code::ALL
            .into_iter()
            .find(|c| i64::from(c.value()) == value)
    }

    /// JSON-RPC global errors travel in the `error` member, everything else in `result`.
    pub const fn is_global_error(self) -> bool {
        matches!(
            self,
            Code::ProtocolError | Code::MethodNotFound | Code::ParamsMissing
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_texts_match_the_seed_and_contract() {
        let expected = [
            (20000, "success"),
            (20001, "匹配成功"),
            (20002, "聊天数据"),
            (20003, "对方已离开"),
            (40000, "参数缺失"),
            (40001, "参数错误"),
            (40003, "您有一场进行中的聊天房间"),
            (40004, "操作失败！未找到进行中的聊天房间"),
            (40009, "操作过于频繁"),
            (-1000, "协议错误"),
            (-1001, "方法不存在"),
            (-1002, "请求参数缺失"),
            (-20001, "系统处理中"),
            (-20002, "系统错误"),
        ];
        assert_eq!(expected.len(), Code::ALL.len());
        for (code, (value, text)) in Code::ALL.iter().zip(expected) {
            assert_eq!(code.value(), value);
            assert_eq!(code.message(), text);
            assert_eq!(Code::from_value(value.into()), Some(*code));
        }
        assert_eq!(Code::from_value(12345), None);
    }

    #[test]
    fn the_full_width_exclamation_mark_is_kept() {
        // The seed uses U+FF01, not '!'; a client matching on text depends on it.
        assert!(Code::NoRoom.message().contains('\u{FF01}'));
    }
}
