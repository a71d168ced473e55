//! The page: Yew function components that render a [`Snapshot`] of the client.
//!
//! Nothing here knows the protocol: components read the model's phase, connection and room,
//! take every string from [`crate::text`], and report what the player does as [`Action`]s.
//! [`Screen`] renders any state from props alone, which is what the DOM tests use; [`App`]
//! wires it to the live [`use_chat`] hook and a clock.

use crate::driver::{Snapshot, use_chat};
use crate::model::{Action, Conn, Line, LineState, Phase, Room};
use crate::text::{Lang, Ui};
use gloo_timers::callback::Interval;
use matchchat_core::limits::{CHAT_MSG_MAX_CHARS, GAME_ZONE_MAX_CHARS};
use web_sys::{HtmlInputElement, HtmlTextAreaElement};
use yew::prelude::*;

/// Game zones offered as suggestions; any other zone can be typed.
const ZONES: [&str; 4] = ["cn-east", "cn-north", "cn-south", "global"];

/// The live page.
#[function_component(App)]
pub fn app() -> Html {
    let chat = use_chat();
    let lang = use_memo((), |_| browser_lang());
    let client = &chat.snapshot.0;
    // Tick only while something on screen counts seconds.
    let ticking = matches!(client.phase, Phase::Waiting { .. })
        || matches!(client.conn, Conn::Reconnecting { .. });
    let now_ms = use_clock(ticking);
    use_effect_with(*lang, |lang| {
        if let Some(html) = web_sys::window()
            .and_then(|w| w.document())
            .and_then(|d| d.document_element())
        {
            let _ = html.set_attribute("lang", lang.html_tag());
        }
        if let Some(doc) = web_sys::window().and_then(|w| w.document()) {
            doc.set_title(lang.t(Ui::Title));
        }
    });
    html! {
        <Screen snapshot={chat.snapshot.clone()} {now_ms} lang={*lang} on_action={chat.act.clone()} />
    }
}

/// `Date.now()`, refreshed every second while `active`.
#[hook]
fn use_clock(active: bool) -> f64 {
    let now = use_state(js_sys::Date::now);
    {
        let now = now.clone();
        use_effect_with(active, move |active| {
            now.set(js_sys::Date::now());
            let timer = active.then(|| Interval::new(1_000, move || now.set(js_sys::Date::now())));
            move || drop(timer)
        });
    }
    *now
}

fn browser_lang() -> Lang {
    web_sys::window()
        .and_then(|w| w.navigator().language())
        .map_or(Lang::Zh, |tag| Lang::from_tag(&tag))
}

/// Props of [`Screen`]: everything it shows comes from here.
#[derive(Properties, PartialEq)]
pub struct ScreenProps {
    pub snapshot: Snapshot,
    /// Wall-clock time for elapsed and countdown displays (ms since the epoch).
    pub now_ms: f64,
    pub lang: Lang,
    pub on_action: Callback<Action>,
}

/// The whole page for one client state.
#[function_component(Screen)]
pub fn screen(props: &ScreenProps) -> Html {
    let client = &props.snapshot.0;
    let lang = props.lang;
    let act = props.on_action.clone();
    let online = client.online();
    let zone = client
        .session
        .as_ref()
        .map(|s| s.game_zone.clone())
        .unwrap_or_default();
    let body = if client.conn == Conn::TakenOver {
        html! { <TakenOver {lang} on_action={act.clone()} /> }
    } else {
        match &client.phase {
            Phase::Setup | Phase::SigningIn => html! {
                <SetupForm {lang} busy={client.phase == Phase::SigningIn} on_action={act.clone()} />
            },
            Phase::Lobby => {
                html! { <Lobby {lang} {online} zone={zone.clone()} on_action={act.clone()} /> }
            }
            Phase::Waiting { since_ms } => {
                let secs = ((props.now_ms - since_ms) / 1000.0).max(0.0) as u64;
                html! { <Waiting {lang} {secs} on_action={act.clone()} /> }
            }
            Phase::Chat | Phase::Ended(_) => match &client.room {
                Some(room) => html! {
                    <ChatPanel {lang} room={room.clone()} ended={match client.phase {
                        Phase::Ended(reason) => Some(lang.ended(reason)),
                        _ => None,
                    }} {online} on_action={act.clone()} />
                },
                None => {
                    html! { <Lobby {lang} {online} zone={zone.clone()} on_action={act.clone()} /> }
                }
            },
        }
    };
    let notice = client.notice.as_ref().map(|n| lang.notice(n));
    html! {
        <div class="app" data-phase={phase_name(&client.phase)} data-conn={conn_name(&client.conn)}>
                <header class="topbar">
                    <h1 class="brand">{ lang.t(Ui::Title) }</h1>
                    <ConnBadge {lang} conn={client.conn.clone()} now_ms={props.now_ms} />
                    if let Some(s) = &client.session {
                        <span class="me" id="me-id">{ lang.player_label(&s.account) }</span>
                    }
                </header>
                if let Some(text) = notice {
                    <div class="notice" role="alert" id="notice">
                        <span class="notice-text">{ text }</span>
                        <button type="button" class="link"
                            onclick={act.reform(|_| Action::DismissNotice)}>{ lang.t(Ui::Dismiss) }</button>
                    </div>
                }
                <main class="stage">{ body }</main>
            </div>
    }
}

fn phase_name(phase: &Phase) -> &'static str {
    match phase {
        Phase::Setup => "setup",
        Phase::SigningIn => "signing-in",
        Phase::Lobby => "lobby",
        Phase::Waiting { .. } => "waiting",
        Phase::Chat => "chat",
        Phase::Ended(_) => "ended",
    }
}

fn conn_name(conn: &Conn) -> &'static str {
    match conn {
        Conn::Offline | Conn::TakenOver => "offline",
        Conn::Connecting => "connecting",
        Conn::Online => "online",
        Conn::Reconnecting { .. } => "reconnecting",
    }
}

#[derive(Properties, PartialEq)]
struct ConnBadgeProps {
    lang: Lang,
    conn: Conn,
    now_ms: f64,
}

#[function_component(ConnBadge)]
fn conn_badge(props: &ConnBadgeProps) -> Html {
    let lang = props.lang;
    let label = match &props.conn {
        Conn::Offline | Conn::TakenOver => lang.t(Ui::ConnOffline).to_owned(),
        Conn::Connecting => lang.t(Ui::ConnConnecting).to_owned(),
        Conn::Online => lang.t(Ui::ConnOnline).to_owned(),
        Conn::Reconnecting { due_ms } => {
            lang.reconnecting_in(((due_ms - props.now_ms) / 1000.0).ceil().max(0.0) as u64)
        }
    };
    html! {
        <span class={classes!("conn", conn_name(&props.conn))} id="conn" role="status" aria-live="polite">
            <span class="dot" aria-hidden="true"></span>{ label }
        </span>
    }
}

#[derive(Properties, PartialEq)]
struct SetupProps {
    lang: Lang,
    busy: bool,
    on_action: Callback<Action>,
}

#[function_component(SetupForm)]
fn setup_form(props: &SetupProps) -> Html {
    let lang = props.lang;
    let zone = use_state(|| ZONES[0].to_owned());
    let product = use_state(|| default_product_id().to_string());
    let onsubmit = {
        let (zone, product, act) = (zone.clone(), product.clone(), props.on_action.clone());
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            // Not a number: -1, which the model refuses with a sentence.
            let product_id = product.trim().parse::<i64>().unwrap_or(-1);
            act.emit(Action::SignIn {
                product_id,
                game_zone: (*zone).clone(),
            });
        })
    };
    let on_zone = {
        let zone = zone.clone();
        Callback::from(move |e: InputEvent| {
            if let Some(input) = e.target_dyn_into::<HtmlInputElement>() {
                zone.set(input.value());
            }
        })
    };
    let on_product = {
        let product = product.clone();
        Callback::from(move |e: InputEvent| {
            if let Some(input) = e.target_dyn_into::<HtmlInputElement>() {
                product.set(input.value());
            }
        })
    };
    html! {
        <form class="card setup" id="setup" {onsubmit}>
            <p class="lead">{ lang.t(Ui::Tagline) }</p>
            <label for="zone">{ lang.t(Ui::ZoneLabel) }</label>
            <input id="zone" name="zone" list="zones" required=true autofocus=true
                maxlength={GAME_ZONE_MAX_CHARS.to_string()} placeholder={lang.t(Ui::ZoneHint)}
                value={(*zone).clone()} oninput={on_zone} disabled={props.busy} />
            <datalist id="zones">
                { for ZONES.iter().map(|z| html! { <option value={*z} /> }) }
            </datalist>
            <label for="product">{ lang.t(Ui::ProductLabel) }</label>
            <input id="product" name="product" type="number" min="0" max="2147483647" inputmode="numeric"
                value={(*product).clone()} oninput={on_product} disabled={props.busy} />
            <button type="submit" class="primary" id="enter" disabled={props.busy}>
                { if props.busy { lang.t(Ui::Entering) } else { lang.t(Ui::Enter) } }
            </button>
        </form>
    }
}

/// The product id the page was configured with (`<meta name="matchchat-product-id">`), else 1.
fn default_product_id() -> i64 {
    web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| {
            d.query_selector("meta[name=matchchat-product-id]")
                .ok()
                .flatten()
        })
        .and_then(|m| m.get_attribute("content"))
        .and_then(|c| c.trim().parse().ok())
        .unwrap_or(1)
}

#[derive(Properties, PartialEq)]
struct LobbyProps {
    lang: Lang,
    online: bool,
    zone: String,
    on_action: Callback<Action>,
}

#[function_component(Lobby)]
fn lobby(props: &LobbyProps) -> Html {
    let lang = props.lang;
    html! {
        <section class="card lobby" id="lobby">
            <span class="zone" id="zone-name">{ lang.t(Ui::ZoneLabel) }{ " · " }{ props.zone.clone() }</span>
            <h2>{ lang.t(Ui::LobbyTitle) }</h2>
            <p>{ lang.t(Ui::LobbyBody) }</p>
            <button type="button" class="primary big" id="match" disabled={!props.online}
                onclick={props.on_action.reform(|_| Action::Match)}>{ lang.t(Ui::Match) }</button>
            <button type="button" class="link" id="switch-zone"
                onclick={props.on_action.reform(|_| Action::SwitchZone)}>{ lang.t(Ui::SwitchZone) }</button>
        </section>
    }
}

#[derive(Properties, PartialEq)]
struct WaitingProps {
    lang: Lang,
    secs: u64,
    on_action: Callback<Action>,
}

#[function_component(Waiting)]
fn waiting(props: &WaitingProps) -> Html {
    let lang = props.lang;
    html! {
        <section class="card waiting" id="waiting" aria-busy="true">
            <div class="spinner" aria-hidden="true"></div>
            <h2>{ lang.t(Ui::WaitingTitle) }</h2>
            <p class="elapsed" id="elapsed">{ lang.waited(props.secs) }</p>
            <button type="button" id="cancel" autofocus=true
                onclick={props.on_action.reform(|_| Action::Cancel)}>{ lang.t(Ui::Cancel) }</button>
        </section>
    }
}

#[derive(Properties, PartialEq)]
struct ChatProps {
    lang: Lang,
    room: Room,
    /// The sentence saying why the chat ended, when it has.
    ended: Option<&'static str>,
    online: bool,
    on_action: Callback<Action>,
}

#[function_component(ChatPanel)]
fn chat_panel(props: &ChatProps) -> Html {
    let lang = props.lang;
    let room = &props.room;
    let peer = room.peers.first().cloned().unwrap_or_default();
    let list = use_node_ref();
    {
        // Keep the newest message in view.
        let list = list.clone();
        use_effect_with((room.lines.len(), props.ended.is_some()), move |_| {
            if let Some(el) = list.cast::<web_sys::Element>() {
                el.set_scroll_top(el.scroll_height());
            }
        });
    }
    html! {
        <section class="chat" id="chat" aria-label={lang.t(Ui::Title)}>
            <header class="chat-head">
                <span class="avatar" aria-hidden="true">{ peer.chars().next().unwrap_or('?') }</span>
                <span class="peer">
                    <strong id="peer-id">{ peer.clone() }</strong>
                    <small>{ lang.t(if props.ended.is_some() { Ui::PeerGone } else { Ui::ChattingWith }) }</small>
                </span>
                <button type="button" id="leave" class="ghost"
                    onclick={props.on_action.reform(|_| Action::Leave)}>{ lang.t(Ui::Leave) }</button>
            </header>
            <ol class="messages" id="messages" ref={list} aria-live="polite">
                if room.lines.is_empty() {
                    <li class="empty">{ lang.t(Ui::EmptyChat) }</li>
                }
                { for room.lines.iter().map(|line| html! {
                    <MessageLine key={line.chat_sn.clone() + &line.sender} {lang} line={line.clone()} online={props.online} />
                }) }
            </ol>
            if let Some(reason) = props.ended {
                <div class="ended" id="ended" role="status">
                    <p>{ reason }</p>
                    <button type="button" class="primary" id="new-partner" autofocus=true
                        onclick={props.on_action.reform(|_| Action::Match)} disabled={!props.online}>
                        { lang.t(Ui::FindNew) }</button>
                </div>
            } else {
                <Composer {lang} room_id={room.room_id.clone()} on_action={props.on_action.clone()} />
            }
        </section>
    }
}

#[derive(Properties, PartialEq)]
struct LineProps {
    lang: Lang,
    line: Line,
    online: bool,
}

#[function_component(MessageLine)]
fn message_line(props: &LineProps) -> Html {
    let lang = props.lang;
    let line = &props.line;
    let (state, status) = match line.state {
        LineState::Pending if props.online => ("pending", Some(lang.t(Ui::Pending))),
        LineState::Pending => ("pending", Some(lang.t(Ui::Resending))),
        LineState::Delivered => ("delivered", None),
        LineState::Failed(reason) => ("failed", Some(lang.failed(reason))),
    };
    let who = if line.mine { "mine" } else { "theirs" };
    html! {
        <li class={classes!("msg", who, state)} data-seq={line.seq.map(|s| s.to_string())}>
            // Plain text node: chat text is never parsed as HTML.
            <div class="bubble">{ line.text.clone() }</div>
            <div class="meta">
                if let Some(ts) = line.ts {
                    <time>{ clock_time(ts) }</time>
                }
                if let Some(status) = status {
                    <span class="status">{ status }</span>
                }
            </div>
        </li>
    }
}

/// `HH:MM` in the browser's time zone.
fn clock_time(ts_ms: u64) -> String {
    let date = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(ts_ms as f64));
    format!("{:02}:{:02}", date.get_hours(), date.get_minutes())
}

#[derive(Properties, PartialEq)]
struct ComposerProps {
    lang: Lang,
    room_id: String,
    on_action: Callback<Action>,
}

#[function_component(Composer)]
fn composer(props: &ComposerProps) -> Html {
    let lang = props.lang;
    let text = use_state(String::new);
    let input = use_node_ref();
    {
        // A new room: focus the input so the player can type at once.
        let input = input.clone();
        use_effect_with(props.room_id.clone(), move |_| {
            if let Some(el) = input.cast::<HtmlTextAreaElement>() {
                let _ = el.focus();
            }
        });
    }
    let used = text.chars().count();
    let sendable = !text.trim().is_empty() && used <= CHAT_MSG_MAX_CHARS;
    let submit = {
        let (text, act) = (text.clone(), props.on_action.clone());
        Callback::from(move |()| {
            let value = (*text).clone();
            if !value.trim().is_empty() && value.chars().count() <= CHAT_MSG_MAX_CHARS {
                act.emit(Action::Send(value));
                text.set(String::new());
            }
        })
    };
    let oninput = {
        let text = text.clone();
        Callback::from(move |e: InputEvent| {
            if let Some(el) = e.target_dyn_into::<HtmlTextAreaElement>() {
                text.set(el.value());
            }
        })
    };
    let onkeydown = {
        let submit = submit.clone();
        Callback::from(move |e: KeyboardEvent| {
            // Enter sends; Shift+Enter is a new line; Enter that confirms an IME
            // composition (Chinese input) must not send.
            if e.key() == "Enter" && !e.shift_key() && !e.is_composing() && e.key_code() != 229 {
                e.prevent_default();
                submit.emit(());
            }
        })
    };
    let onsubmit = {
        let submit = submit.clone();
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            submit.emit(());
        })
    };
    let over = used > CHAT_MSG_MAX_CHARS;
    html! {
        <form class="composer" id="composer" {onsubmit}>
            <textarea id="input" ref={input} rows="1" placeholder={lang.t(Ui::Placeholder)}
                aria-label={lang.t(Ui::Placeholder)} aria-describedby="counter"
                value={(*text).clone()} {oninput} {onkeydown} />
            <div class="composer-side">
                <span id="counter" class={classes!("counter", over.then_some("over"))}
                    title={lang.t(Ui::Enter2Send)}>{ lang.counter(used, CHAT_MSG_MAX_CHARS) }</span>
                <button type="submit" class="primary" id="send" disabled={!sendable}>{ lang.t(Ui::Send) }</button>
            </div>
        </form>
    }
}

#[derive(Properties, PartialEq)]
struct TakenOverProps {
    lang: Lang,
    on_action: Callback<Action>,
}

#[function_component(TakenOver)]
fn taken_over(props: &TakenOverProps) -> Html {
    let lang = props.lang;
    html! {
        <section class="card taken-over" id="taken-over" role="alert">
            <h2>{ lang.t(Ui::TakenOverTitle) }</h2>
            <p>{ lang.t(Ui::TakenOverBody) }</p>
            <button type="button" class="primary" id="use-here"
                onclick={props.on_action.reform(|_| Action::UseHere)}>{ lang.t(Ui::UseHere) }</button>
        </section>
    }
}
