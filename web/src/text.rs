//! Every piece of text the player can see, in one place: Chinese (the seed's language) by
//! default, English when the browser prefers it.
//!
//! Views never hold literal strings; they ask [`Lang`] for a [`Ui`] label, a parameterized
//! sentence, or the human sentence for a [`Notice`]. Error codes become sentences here and
//! nowhere else, so a new protocol code fails to compile until it has one (the `match` on
//! [`Code`] is exhaustive).

use crate::model::{ConfigFailure, EndReason, FailReason, Notice};
use matchchat_core::Code;
use matchchat_core::wire::LeaveReason;

/// The language of the interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Lang {
    #[default]
    Zh,
    En,
}

impl Lang {
    /// Chooses from a BCP 47 tag such as `navigator.language` (`en-US` → English).
    pub fn from_tag(tag: &str) -> Lang {
        if tag.trim().to_ascii_lowercase().starts_with("en") {
            Lang::En
        } else {
            Lang::Zh
        }
    }

    /// The value for `<html lang>`.
    pub fn html_tag(self) -> &'static str {
        match self {
            Lang::Zh => "zh-CN",
            Lang::En => "en",
        }
    }
}

/// Fixed labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ui {
    Title,
    Tagline,
    ZoneLabel,
    ZoneHint,
    ProductLabel,
    Enter,
    Entering,
    You,
    ConnConnecting,
    ConnOnline,
    ConnOffline,
    LobbyTitle,
    LobbyBody,
    Match,
    SwitchZone,
    WaitingTitle,
    Cancel,
    ChattingWith,
    PeerGone,
    Leave,
    Placeholder,
    Send,
    Pending,
    Resending,
    EmptyChat,
    FindNew,
    TakenOverTitle,
    TakenOverBody,
    UseHere,
    Dismiss,
    Enter2Send,
    OfflineHint,
}

impl Lang {
    /// A fixed label.
    pub fn t(self, ui: Ui) -> &'static str {
        use Ui::*;
        match self {
            Lang::Zh => match ui {
                Title => "随缘聊",
                Tagline => "选一个大区，和同区的陌生人聊聊天。",
                ZoneLabel => "游戏大区",
                ZoneHint => "例如 cn-east",
                ProductLabel => "商品编号",
                Enter => "进入",
                Entering => "正在进入…",
                You => "我",
                ConnConnecting => "连接中",
                ConnOnline => "在线",
                ConnOffline => "离线",
                LobbyTitle => "准备好了吗？",
                LobbyBody => "点击开始匹配，我们会为你找一位同区的聊天对象。",
                Match => "开始匹配",
                SwitchZone => "换个大区",
                WaitingTitle => "正在寻找聊天对象…",
                Cancel => "取消",
                ChattingWith => "正在和你聊天",
                PeerGone => "已离开",
                Leave => "离开",
                Placeholder => "说点什么…",
                Send => "发送",
                Pending => "发送中…",
                Resending => "等待重新连接后发送",
                EmptyChat => "打个招呼吧！",
                FindNew => "寻找新的聊天对象",
                TakenOverTitle => "已在其他页面打开",
                TakenOverBody => "你的账号在另一个标签页或设备上登录了，这里已暂停。",
                UseHere => "在这里继续",
                Dismiss => "知道了",
                Enter2Send => "Enter 发送，Shift+Enter 换行",
                OfflineHint => "网络恢复后会自动发送",
            },
            Lang::En => match ui {
                Title => "Chance Chat",
                Tagline => "Pick a game zone and chat with a stranger from the same zone.",
                ZoneLabel => "Game zone",
                ZoneHint => "e.g. cn-east",
                ProductLabel => "Product id",
                Enter => "Enter",
                Entering => "Entering…",
                You => "You",
                ConnConnecting => "Connecting",
                ConnOnline => "Online",
                ConnOffline => "Offline",
                LobbyTitle => "Ready?",
                LobbyBody => "Press Match and we will find you someone to talk to in your zone.",
                Match => "Match",
                SwitchZone => "Change zone",
                WaitingTitle => "Looking for a partner…",
                Cancel => "Cancel",
                ChattingWith => "is chatting with you",
                PeerGone => "has left",
                Leave => "Leave",
                Placeholder => "Say something…",
                Send => "Send",
                Pending => "Sending…",
                Resending => "Will send when reconnected",
                EmptyChat => "Say hello!",
                FindNew => "Find a new partner",
                TakenOverTitle => "Opened somewhere else",
                TakenOverBody => {
                    "Your player was opened in another tab or device, so this page is paused."
                }
                UseHere => "Use it here",
                Dismiss => "OK",
                Enter2Send => "Enter to send, Shift+Enter for a new line",
                OfflineHint => "It will be sent once you are back online",
            },
        }
    }

    /// "reconnecting in Ns".
    pub fn reconnecting_in(self, secs: u64) -> String {
        match self {
            Lang::Zh => format!("{secs} 秒后重连"),
            Lang::En => format!("Reconnecting in {secs}s"),
        }
    }

    /// Elapsed waiting time, `m:ss`.
    pub fn waited(self, secs: u64) -> String {
        let clock = format!("{}:{:02}", secs / 60, secs % 60);
        match self {
            Lang::Zh => format!("已等待 {clock}"),
            Lang::En => format!("Waiting {clock}"),
        }
    }

    /// The character counter under the input.
    pub fn counter(self, used: usize, max: usize) -> String {
        format!("{used}/{max}")
    }

    /// A short label for who the player is.
    pub fn player_label(self, account: &str) -> String {
        match self {
            Lang::Zh => format!("我的 ID：{account}"),
            Lang::En => format!("My id: {account}"),
        }
    }

    /// The banner when a chat ends.
    pub fn ended(self, reason: EndReason) -> &'static str {
        match (self, reason) {
            (Lang::Zh, EndReason::PeerLeft(LeaveReason::Left)) => "对方已离开聊天。",
            (Lang::Zh, EndReason::PeerLeft(LeaveReason::Disconnected)) => {
                "对方掉线了，聊天已结束。"
            }
            (Lang::Zh, EndReason::Gone) => "这场聊天已经结束。",
            (Lang::En, EndReason::PeerLeft(LeaveReason::Left)) => "Your partner has left.",
            (Lang::En, EndReason::PeerLeft(LeaveReason::Disconnected)) => {
                "Your partner lost their connection; the chat has ended."
            }
            (Lang::En, EndReason::Gone) => "This chat has ended.",
        }
    }

    /// Why one message could not be delivered.
    pub fn failed(self, reason: FailReason) -> &'static str {
        match reason {
            FailReason::Code(code) => self.code(code),
            FailReason::RoomClosed => match self {
                Lang::Zh => "未送达：聊天已结束",
                Lang::En => "Not delivered: the chat ended",
            },
        }
    }

    /// The human sentence for a notice.
    pub fn notice(self, notice: &Notice) -> String {
        match notice {
            Notice::Code(code) => self.code(*code).to_owned(),
            Notice::UnknownCode(raw) => match self {
                Lang::Zh => format!("出现了一个未知问题（{raw}），请刷新页面后再试。"),
                Lang::En => format!("Something unexpected happened ({raw}); please reload."),
            },
            Notice::Config(failure) => self.config_failure(*failure).to_owned(),
            Notice::SessionRenewed => match self {
                Lang::Zh => "登录已过期，已为你换了一个新身份。之前的聊天无法恢复。",
                Lang::En => {
                    "Your login had expired, so you have a fresh identity; the old chat is gone."
                }
            }
            .to_owned(),
            Notice::InvalidZone => match self {
                Lang::Zh => "请填写大区（最多 64 个字符）和 0 到 2147483647 之间的商品编号。",
                Lang::En => {
                    "Enter a zone (up to 64 characters) and a product id from 0 to 2147483647."
                }
            }
            .to_owned(),
        }
    }

    fn config_failure(self, failure: ConfigFailure) -> &'static str {
        match failure {
            ConfigFailure::Code(code) => self.code(code),
            ConfigFailure::Network => match self {
                Lang::Zh => "连不上服务器，请检查网络后再试。",
                Lang::En => "Cannot reach the server; check your connection and try again.",
            },
            ConfigFailure::BadResponse => match self {
                Lang::Zh => "服务器的回应看不懂，请稍后再试。",
                Lang::En => "The server sent an answer we could not read; try again later.",
            },
        }
    }

    /// Every protocol code as a sentence a player understands.
    pub fn code(self, code: Code) -> &'static str {
        match self {
            Lang::Zh => match code {
                Code::Success => "操作成功。",
                Code::Matched => "已为你找到聊天对象。",
                Code::ChatData => "收到一条新消息。",
                Code::PeerLeft => "对方已离开聊天。",
                Code::ParamMissing => "消息内容不完整，请重新发送。",
                Code::ParamInvalid => "消息为空或超过 1000 个字，无法发送。",
                Code::InRoom => "你已经在一场聊天中了。",
                Code::NoRoom => "这场聊天已经结束了。",
                Code::RateLimited => "操作太频繁了，请稍等片刻再试。",
                Code::ProtocolError => "页面和服务器沟通出错，请刷新页面。",
                Code::MethodNotFound => "服务器不支持这个操作，请刷新页面获取新版本。",
                Code::ParamsMissing => "请求信息不完整，请检查大区和商品编号。",
                Code::SystemBusy => "服务器正忙，请稍后再试。",
                Code::SystemError => "服务器出错了，请稍后再试。",
            },
            Lang::En => match code {
                Code::Success => "Done.",
                Code::Matched => "You have been matched with a partner.",
                Code::ChatData => "New message.",
                Code::PeerLeft => "Your partner has left.",
                Code::ParamMissing => "The message was incomplete; please send it again.",
                Code::ParamInvalid => {
                    "The message is empty or longer than 1000 characters, so it was not sent."
                }
                Code::InRoom => "You are already in a chat.",
                Code::NoRoom => "This chat has already ended.",
                Code::RateLimited => "You are going a bit fast; wait a moment and try again.",
                Code::ProtocolError => {
                    "The page and the server misunderstood each other; please reload."
                }
                Code::MethodNotFound => {
                    "The server does not support that action; reload for the latest version."
                }
                Code::ParamsMissing => {
                    "Some required information was missing; check the zone and product id."
                }
                Code::SystemBusy => "The server is busy; please try again in a moment.",
                Code::SystemError => "Something went wrong on the server; please try later.",
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn language_follows_the_browser_tag() {
        assert_eq!(Lang::from_tag("en-US"), Lang::En);
        assert_eq!(Lang::from_tag("EN"), Lang::En);
        assert_eq!(Lang::from_tag("zh-CN"), Lang::Zh);
        assert_eq!(Lang::from_tag("fr"), Lang::Zh);
        assert_eq!(Lang::from_tag(""), Lang::Zh);
    }

    #[test]
    fn every_code_is_a_sentence_in_both_languages() {
        for lang in [Lang::Zh, Lang::En] {
            for code in Code::ALL {
                let text = lang.code(code);
                assert!(text.chars().count() > 3, "{code:?}");
                // A sentence, not the number or the raw wire text.
                assert!(!text.contains(&code.value().to_string()), "{code:?}");
                assert_ne!(text, code.message(), "{code:?}");
            }
        }
        assert!(Lang::En.code(Code::RateLimited).is_ascii());
    }

    #[test]
    fn parameterized_sentences() {
        assert_eq!(Lang::En.reconnecting_in(3), "Reconnecting in 3s");
        assert_eq!(Lang::Zh.waited(75), "已等待 1:15");
        assert_eq!(Lang::En.counter(12, 1000), "12/1000");
        assert!(Lang::Zh.notice(&Notice::UnknownCode(777)).contains("777"));
    }
}
