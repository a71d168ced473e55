//! Component tests in a real browser: each client state (connecting, lobby, waiting, chat,
//! peer left, errors, reconnecting, taken over) is produced by feeding the state machine
//! the frames the server would send (built with core's own wire functions), rendered with
//! `Screen`, and checked in the DOM. Run with `wasm-pack test --headless --chrome web`.
#![cfg(target_arch = "wasm32")]

use gloo_timers::future::TimeoutFuture;
use matchchat_core::Code;
use matchchat_core::wire::{
    ChatData, LeaveReason, MatchedData, PeerLeftData, RequestId, error_result_json, push_frame,
    reply_frame, result_json,
};
use matchchat_web::driver::Snapshot;
use matchchat_web::model::{Action, Client, Command, Input};
use matchchat_web::session::Session;
use matchchat_web::text::Lang;
use matchchat_web::view::{Screen, ScreenProps};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::JsCast;
use wasm_bindgen_test::*;
use web_sys::{Element, HtmlElement, HtmlTextAreaElement};
use yew::Callback;

wasm_bindgen_test_configure!(run_in_browser);

const PUSH_ID: &str = "0123456789abcdef0123456789abcdef";
const ME: &str = "meAAAAAAAA";
const PEER: &str = "peerBBBBBB";

fn session() -> Session {
    Session {
        session_id: "S".repeat(40),
        account: ME.into(),
        product_id: 1,
        game_zone: "cn-east".into(),
    }
}

/// A rendered screen and the actions its controls emitted.
struct Mounted {
    root: Element,
    actions: Rc<RefCell<Vec<Action>>>,
    _app: yew::AppHandle<Screen>,
}

impl Mounted {
    fn find(&self, selector: &str) -> Option<Element> {
        self.root.query_selector(selector).ok().flatten()
    }

    fn text(&self, selector: &str) -> String {
        self.find(selector)
            .and_then(|e| e.text_content())
            .unwrap_or_else(|| panic!("no {selector} in {}", self.root.inner_html()))
    }

    fn count(&self, selector: &str) -> u32 {
        self.root
            .query_selector_all(selector)
            .map(|l| l.length())
            .unwrap_or(0)
    }

    fn attr(&self, selector: &str, name: &str) -> Option<String> {
        self.find(selector).and_then(|e| e.get_attribute(name))
    }

    fn click(&self, selector: &str) {
        let el: HtmlElement = self
            .find(selector)
            .and_then(|e| e.dyn_into().ok())
            .unwrap_or_else(|| panic!("no {selector}"));
        el.click();
    }

    fn disabled(&self, selector: &str) -> bool {
        self.find(selector)
            .map(|e| e.has_attribute("disabled"))
            .unwrap_or_else(|| panic!("no {selector}"))
    }
}

/// Renders `client` into a fresh element and waits for Yew's asynchronous render.
async fn mount(client: Client, lang: Lang, now_ms: f64) -> Mounted {
    let document = web_sys::window().and_then(|w| w.document()).unwrap();
    let root = document.create_element("div").unwrap();
    document.body().unwrap().append_child(&root).unwrap();
    let actions = Rc::new(RefCell::new(Vec::new()));
    let sink = actions.clone();
    let props = ScreenProps {
        snapshot: Snapshot::new(client),
        now_ms,
        lang,
        on_action: Callback::from(move |a: Action| sink.borrow_mut().push(a)),
    };
    let app = yew::Renderer::<Screen>::with_root_and_props(root.clone(), props).render();
    settle().await;
    Mounted {
        root,
        actions,
        _app: app,
    }
}

async fn settle() {
    TimeoutFuture::new(30).await;
}

fn restored() -> Client {
    Client::restore(Some(session()), vec![], 5).0
}

fn online() -> Client {
    let mut c = restored();
    let epoch = c.epoch();
    c.handle(Input::SocketOpened { epoch }, 0.0);
    c
}

fn feed(c: &mut Client, text: String) -> Vec<Command> {
    let epoch = c.epoch();
    c.handle(Input::SocketFrame { epoch, text }, 0.0)
}

fn in_chat() -> Client {
    let mut c = online();
    let data = MatchedData {
        room_id: "R".repeat(32),
        player_id: ME.into(),
        peer_ids: vec![PEER.into()],
    };
    feed(
        &mut c,
        push_frame(&result_json(Code::Matched, &data), PUSH_ID),
    );
    c
}

fn peer_says(c: &mut Client, text: &str, seq: u64) {
    let data = ChatData {
        send_player_id: PEER.into(),
        chat_msg: text.into(),
        chat_sn: format!("sn{seq}"),
        seq,
        ts: 1_700_000_000_000,
    };
    feed(c, push_frame(&result_json(Code::ChatData, &data), PUSH_ID));
}

/// The request id of the first frame in `cmds`.
fn first_request_id(cmds: &[Command]) -> String {
    cmds.iter()
        .find_map(|c| match c {
            Command::Send(f) => serde_json::from_str::<serde_json::Value>(f)
                .ok()
                .and_then(|v| v["id"].as_str().map(str::to_owned)),
            _ => None,
        })
        .expect("a frame was sent")
}

#[wasm_bindgen_test]
async fn setup_form_signs_in() {
    let client = Client::restore(None, vec![], 1).0;
    let m = mount(client, Lang::Zh, 0.0).await;
    assert_eq!(m.attr(".app", "data-phase").as_deref(), Some("setup"));
    assert_eq!(m.text("#conn"), "离线");
    assert!(m.find("#zone").is_some() && m.find("#product").is_some());
    m.click("#enter");
    settle().await;
    assert_eq!(
        m.actions.borrow().as_slice(),
        [Action::SignIn {
            product_id: 1,
            game_zone: "cn-east".into()
        }]
    );
}

#[wasm_bindgen_test]
async fn connecting_state() {
    let m = mount(restored(), Lang::Zh, 0.0).await;
    assert_eq!(m.attr(".app", "data-conn").as_deref(), Some("connecting"));
    assert_eq!(m.text("#conn"), "连接中");
    assert!(m.text("#me-id").contains(ME));
    // Matching needs a connection.
    assert!(m.disabled("#match"));
}

#[wasm_bindgen_test]
async fn lobby_online_matches() {
    let m = mount(online(), Lang::En, 0.0).await;
    assert_eq!(m.text("#conn"), "Online");
    assert!(!m.disabled("#match"));
    m.click("#match");
    settle().await;
    assert_eq!(m.actions.borrow().as_slice(), [Action::Match]);
}

#[wasm_bindgen_test]
async fn waiting_shows_elapsed_time_and_cancels() {
    let mut c = online();
    c.handle(Input::User(Action::Match), 1_000.0);
    let m = mount(c, Lang::Zh, 76_000.0).await;
    assert_eq!(m.attr(".app", "data-phase").as_deref(), Some("waiting"));
    assert_eq!(m.text("#elapsed"), "已等待 1:15");
    m.click("#cancel");
    settle().await;
    assert_eq!(m.actions.borrow().as_slice(), [Action::Cancel]);
}

#[wasm_bindgen_test]
async fn chat_view_renders_messages_as_text_with_sides_and_pending() {
    let mut c = in_chat();
    peer_says(&mut c, "<b>hi</b><img src=x onerror=alert(1)>", 1);
    c.handle(Input::User(Action::Send("hello back".into())), 0.0);
    let m = mount(c, Lang::Zh, 0.0).await;
    assert_eq!(m.attr(".app", "data-phase").as_deref(), Some("chat"));
    assert_eq!(m.text("#peer-id"), PEER);
    assert_eq!(m.count(".msg"), 2);
    // The peer's message, on the left, as literal text: no element was created from it.
    assert_eq!(
        m.text(".msg.theirs .bubble"),
        "<b>hi</b><img src=x onerror=alert(1)>"
    );
    assert_eq!(m.count(".bubble b"), 0);
    assert_eq!(m.count(".bubble img"), 0);
    assert!(m.find(".msg.theirs time").is_some());
    // Ours, on the right, pending until the 20002 reply.
    assert_eq!(m.text(".msg.mine .bubble"), "hello back");
    assert!(m.find(".msg.mine.pending").is_some());
    assert_eq!(m.text(".msg.mine .status"), "发送中…");
    assert_eq!(m.text("#counter"), "0/1000");
}

#[wasm_bindgen_test]
async fn composer_counts_and_enter_sends() {
    let m = mount(in_chat(), Lang::En, 0.0).await;
    assert_eq!(m.text(".messages .empty"), "Say hello!");
    assert!(m.disabled("#send"));
    let input: HtmlTextAreaElement = m.find("#input").unwrap().dyn_into().unwrap();
    input.set_value("héllo 字");
    let init = web_sys::InputEventInit::new();
    init.set_bubbles(true);
    let event = web_sys::InputEvent::new_with_event_init_dict("input", &init).unwrap();
    input.dispatch_event(&event).unwrap();
    settle().await;
    assert_eq!(m.text("#counter"), "7/1000");
    assert!(!m.disabled("#send"));
    // Shift+Enter is a new line, not a send.
    let key = |shift: bool| {
        let init = web_sys::KeyboardEventInit::new();
        init.set_key("Enter");
        init.set_shift_key(shift);
        init.set_bubbles(true);
        init.set_cancelable(true);
        web_sys::KeyboardEvent::new_with_keyboard_event_init_dict("keydown", &init).unwrap()
    };
    input.dispatch_event(&key(true)).unwrap();
    settle().await;
    assert!(m.actions.borrow().is_empty());
    input.dispatch_event(&key(false)).unwrap();
    settle().await;
    assert_eq!(
        m.actions.borrow().as_slice(),
        [Action::Send("héllo 字".into())]
    );
    assert_eq!(m.text("#counter"), "0/1000");
}

#[wasm_bindgen_test]
async fn over_long_input_cannot_be_sent() {
    let m = mount(in_chat(), Lang::Zh, 0.0).await;
    let input: HtmlTextAreaElement = m.find("#input").unwrap().dyn_into().unwrap();
    input.set_value(&"字".repeat(1001));
    let init = web_sys::InputEventInit::new();
    init.set_bubbles(true);
    input
        .dispatch_event(&web_sys::InputEvent::new_with_event_init_dict("input", &init).unwrap())
        .unwrap();
    settle().await;
    assert_eq!(m.text("#counter"), "1001/1000");
    assert!(m.find("#counter.over").is_some());
    assert!(m.disabled("#send"));
}

#[wasm_bindgen_test]
async fn peer_left_offers_a_new_partner() {
    let mut c = in_chat();
    peer_says(&mut c, "bye", 1);
    let left = PeerLeftData {
        room_id: "R".repeat(32),
        player_id: PEER.into(),
        reason: LeaveReason::Left,
        seq: 2,
    };
    feed(
        &mut c,
        push_frame(&result_json(Code::PeerLeft, &left), PUSH_ID),
    );
    let m = mount(c, Lang::Zh, 0.0).await;
    assert_eq!(m.attr(".app", "data-phase").as_deref(), Some("ended"));
    assert_eq!(m.text("#ended p"), "对方已离开聊天。");
    // Who left stays on screen.
    assert_eq!(m.text("#peer-id"), PEER);
    assert_eq!(m.text(".chat-head small"), "已离开");
    // The conversation stays readable; typing is over.
    assert_eq!(m.text(".msg.theirs .bubble"), "bye");
    assert!(m.find("#composer").is_none());
    m.click("#new-partner");
    settle().await;
    assert_eq!(m.actions.borrow().as_slice(), [Action::Match]);
}

#[wasm_bindgen_test]
async fn errors_are_sentences_not_numbers() {
    let mut c = online();
    let cmds = c.handle(Input::User(Action::Match), 0.0);
    let id = RequestId::from_string(&first_request_id(&cmds));
    feed(
        &mut c,
        reply_frame(&error_result_json(Code::RateLimited), &id),
    );
    let m = mount(c, Lang::Zh, 0.0).await;
    let notice = m.text("#notice .notice-text");
    assert_eq!(notice, "操作太频繁了，请稍等片刻再试。");
    assert!(!notice.contains("40009"));
    assert_eq!(m.attr("#notice", "role").as_deref(), Some("alert"));
    // Back in the lobby, the match can be retried.
    assert_eq!(m.attr(".app", "data-phase").as_deref(), Some("lobby"));
    m.click("#notice button");
    settle().await;
    assert_eq!(m.actions.borrow().as_slice(), [Action::DismissNotice]);
}

#[wasm_bindgen_test]
async fn failed_message_shows_why() {
    let mut c = in_chat();
    let cmds = c.handle(Input::User(Action::Send("x".into())), 0.0);
    let id = RequestId::from_string(&first_request_id(&cmds));
    feed(
        &mut c,
        reply_frame(&error_result_json(Code::ParamInvalid), &id),
    );
    let m = mount(c, Lang::En, 0.0).await;
    assert!(m.find(".msg.mine.failed").is_some());
    assert_eq!(
        m.text(".msg.mine .status"),
        "The message is empty or longer than 1000 characters, so it was not sent."
    );
}

#[wasm_bindgen_test]
async fn reconnecting_counts_down_and_keeps_the_chat() {
    let mut c = in_chat();
    peer_says(&mut c, "still here?", 1);
    let epoch = c.epoch();
    let cmds = c.handle(
        Input::SocketClosed {
            epoch,
            opened: true,
            code: 1012,
        },
        10_000.0,
    );
    let delay = cmds
        .iter()
        .find_map(|c| match c {
            Command::ScheduleReconnect { delay_ms, .. } => Some(f64::from(*delay_ms)),
            _ => None,
        })
        .expect("a reconnect is scheduled");
    c.handle(Input::User(Action::Send("queued".into())), 10_001.0);
    let now = 10_000.0 + delay - 2_500.0;
    let m = mount(c, Lang::En, now).await;
    assert_eq!(m.attr(".app", "data-conn").as_deref(), Some("reconnecting"));
    assert_eq!(m.text("#conn"), "Reconnecting in 3s");
    assert_eq!(m.text(".msg.theirs .bubble"), "still here?");
    assert_eq!(m.text(".msg.mine .status"), "Will send when reconnected");
}

#[wasm_bindgen_test]
async fn taken_over_explains_and_offers_to_continue_here() {
    let mut c = in_chat();
    let epoch = c.epoch();
    c.handle(
        Input::SocketClosed {
            epoch,
            opened: true,
            code: 4001,
        },
        0.0,
    );
    let m = mount(c, Lang::Zh, 0.0).await;
    assert_eq!(m.attr(".app", "data-conn").as_deref(), Some("offline"));
    assert_eq!(m.text("#taken-over h2"), "已在其他页面打开");
    m.click("#use-here");
    settle().await;
    assert_eq!(m.actions.borrow().as_slice(), [Action::UseHere]);
}
