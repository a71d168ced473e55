//! The browser side of the client: the one hook ([`use_chat`]) that owns the WebSocket,
//! the timers and storage, feeds every event into the [`Client`] state machine and carries
//! out the [`Command`]s it returns. Views only see a [`Snapshot`] and send [`Action`]s.

use crate::model::{Action, Client, Command, ConfigFailure, Input, PendingMsg};
use crate::session::{self, HEARTBEAT_MS, Session, StoredSession};
use futures::{SinkExt, StreamExt, channel::mpsc, future::poll_fn};
use gloo_net::websocket::{Message, WebSocketError, futures::WebSocket};
use gloo_storage::{LocalStorage, SessionStorage, Storage};
use gloo_timers::callback::{Interval, Timeout};
use matchchat_core::Code;
use matchchat_core::wire::{ConfigData, ConfigResponse};
use std::cell::RefCell;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use wasm_bindgen::JsCast;
use wasm_bindgen::closure::Closure;
use wasm_bindgen_futures::spawn_local;
use yew::prelude::*;

const SESSIONS_KEY: &str = "matchchat.sessions";
const CLAIM_KEY: &str = "matchchat.tab_session";
const OUTBOX_KEY: &str = "matchchat.outbox";

/// An immutable view of the client for rendering. Compared by pointer: every change makes
/// a new one, so Yew re-renders exactly when something happened.
#[derive(Clone, Debug)]
pub struct Snapshot(pub Rc<Client>);

impl PartialEq for Snapshot {
    fn eq(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }
}

impl Snapshot {
    pub fn new(client: Client) -> Snapshot {
        Snapshot(Rc::new(client))
    }
}

/// What [`use_chat`] gives the view.
#[derive(Clone, PartialEq)]
pub struct ChatHandle {
    pub snapshot: Snapshot,
    pub act: Callback<Action>,
}

/// Starts the client once per page and returns its current snapshot.
#[hook]
pub fn use_chat() -> ChatHandle {
    let update = use_force_update();
    let driver = use_memo((), move |_| Driver::start(update));
    let act = {
        let driver = driver.clone();
        use_callback((), move |action: Action, _| {
            driver.dispatch(Input::User(action))
        })
    };
    ChatHandle {
        snapshot: driver.snapshot(),
        act,
    }
}

/// The socket of one connection attempt.
struct Socket {
    raw: web_sys::WebSocket,
    /// Frames to send; the writer task drains it.
    tx: mpsc::UnboundedSender<String>,
}

struct Inner {
    client: Client,
    snapshot: Snapshot,
    socket: Option<Socket>,
    reconnect_timer: Option<Timeout>,
    resend_timer: Option<Timeout>,
    _heartbeat: Option<Interval>,
    /// Window event handlers; kept alive as long as the page.
    _listeners: Vec<Closure<dyn FnMut()>>,
}

struct Driver {
    inner: RefCell<Inner>,
    update: UseForceUpdateHandle,
    this: Weak<Driver>,
}

impl Driver {
    /// Restores the player from storage and starts connecting. Returns the shared driver
    /// (`use_memo` keeps it for the page's lifetime).
    fn start(update: UseForceUpdateHandle) -> Rc<Driver> {
        let now = js_sys::Date::now();
        let stored: Vec<StoredSession> = LocalStorage::get(SESSIONS_KEY).unwrap_or_default();
        let claimed: Option<String> = SessionStorage::get(CLAIM_KEY).ok();
        let session = session::pick(&stored, claimed.as_deref(), now);
        let outbox = session.as_ref().map(load_outbox).unwrap_or_default();
        let (client, commands) = Client::restore(session.clone(), outbox, random_seed());
        if let Some(s) = &session {
            save_session(s);
        }
        let driver = Rc::new_cyclic(|this: &Weak<Driver>| Driver {
            inner: RefCell::new(Inner {
                snapshot: Snapshot::new(client.clone()),
                client,
                socket: None,
                reconnect_timer: None,
                resend_timer: None,
                _heartbeat: None,
                _listeners: Vec::new(),
            }),
            update,
            this: this.clone(),
        });
        // The first commands must not run during the first render: defer them.
        let first = Rc::clone(&driver);
        spawn_local(async move {
            first.run_all(commands);
            first.publish();
        });
        // Tell other tabs this player is in use (see `session`).
        let heartbeat = {
            let weak = Rc::downgrade(&driver);
            Interval::new(HEARTBEAT_MS, move || {
                if let Some(d) = weak.upgrade()
                    && let Some(s) = d.inner.borrow().client.session.clone()
                {
                    save_session(&s);
                }
            })
        };
        let pagehide = {
            let weak = Rc::downgrade(&driver);
            Closure::<dyn FnMut()>::new(move || {
                // Free the player for the next tab opened; a reload reclaims it anyway.
                if let Some(d) = weak.upgrade()
                    && let Some(s) = d.inner.borrow().client.session.as_ref()
                {
                    let mut stored: Vec<StoredSession> =
                        LocalStorage::get(SESSIONS_KEY).unwrap_or_default();
                    session::release(&mut stored, &s.session_id);
                    let _ = LocalStorage::set(SESSIONS_KEY, &stored);
                }
            })
        };
        let online = {
            let weak = Rc::downgrade(&driver);
            Closure::<dyn FnMut()>::new(move || {
                if let Some(d) = weak.upgrade() {
                    d.dispatch(Input::NetworkOnline);
                }
            })
        };
        if let Some(window) = web_sys::window() {
            let _ = window
                .add_event_listener_with_callback("pagehide", pagehide.as_ref().unchecked_ref());
            let _ =
                window.add_event_listener_with_callback("online", online.as_ref().unchecked_ref());
        }
        {
            let mut inner = driver.inner.borrow_mut();
            inner._heartbeat = Some(heartbeat);
            inner._listeners = vec![pagehide, online];
        }
        driver
    }

    fn snapshot(&self) -> Snapshot {
        self.inner.borrow().snapshot.clone()
    }

    /// Feeds one input to the state machine and carries out what it asks for.
    fn dispatch(&self, input: Input) {
        let commands = {
            let mut inner = self.inner.borrow_mut();
            inner.client.handle(input, js_sys::Date::now())
        };
        self.run_all(commands);
        self.publish();
    }

    fn publish(&self) {
        {
            let mut inner = self.inner.borrow_mut();
            inner.snapshot = Snapshot::new(inner.client.clone());
        }
        self.update.force_update();
    }

    fn weak(&self) -> Weak<Driver> {
        self.this.clone()
    }

    fn run_all(&self, commands: Vec<Command>) {
        for command in commands {
            self.run(command);
        }
    }

    fn run(&self, command: Command) {
        match command {
            Command::PostConfig {
                product_id,
                game_zone,
            } => {
                let weak = self.weak();
                spawn_local(async move {
                    let result = post_config(product_id, &game_zone).await;
                    if let Some(d) = weak.upgrade() {
                        d.dispatch(Input::ConfigLoaded(result));
                    }
                });
            }
            Command::Connect {
                epoch,
                session_id,
                last_seq,
            } => self.connect(epoch, &session_id, last_seq),
            Command::Send(frame) => {
                if let Some(socket) = &self.inner.borrow().socket {
                    let _ = socket.tx.unbounded_send(frame);
                }
            }
            Command::Disconnect => {
                if let Some(old) = self.inner.borrow_mut().socket.take() {
                    let _ = old.raw.close();
                }
                let mut inner = self.inner.borrow_mut();
                inner.reconnect_timer = None;
                inner.resend_timer = None;
            }
            Command::CheckHealth { epoch } => {
                let weak = self.weak();
                spawn_local(async move {
                    let ok = matches!(
                        gloo_net::http::Request::get("/healthz").send().await,
                        Ok(resp) if resp.status() == 200
                    );
                    if let Some(d) = weak.upgrade() {
                        d.dispatch(Input::HealthChecked { epoch, ok });
                    }
                });
            }
            Command::ScheduleReconnect { epoch, delay_ms } => {
                let weak = self.weak();
                let timer = Timeout::new(delay_ms, move || {
                    if let Some(d) = weak.upgrade() {
                        d.dispatch(Input::ReconnectDue { epoch });
                    }
                });
                self.inner.borrow_mut().reconnect_timer = Some(timer);
            }
            Command::ScheduleResend { delay_ms } => {
                let weak = self.weak();
                let timer = Timeout::new(delay_ms, move || {
                    if let Some(d) = weak.upgrade() {
                        d.dispatch(Input::ResendDue);
                    }
                });
                self.inner.borrow_mut().resend_timer = Some(timer);
            }
            Command::SaveSession(session) => save_session(&session),
            Command::ForgetSession(session) => forget_session(&session),
            Command::SaveOutbox => {
                let inner = self.inner.borrow();
                if let Some(s) = &inner.client.session {
                    save_outbox(s, inner.client.outbox());
                }
            }
        }
    }

    /// Opens `/ws` for this attempt and spawns its reader and writer.
    fn connect(&self, epoch: u64, session_id: &str, last_seq: u64) {
        if let Some(old) = self.inner.borrow_mut().socket.take() {
            let _ = old.raw.close();
        }
        let url = socket_url(session_id, last_seq);
        let weak = self.weak();
        let fail = move |weak: Weak<Driver>| {
            // Report asynchronously: the caller still holds the state machine.
            spawn_local(async move {
                if let Some(d) = weak.upgrade() {
                    d.dispatch(Input::SocketClosed {
                        epoch,
                        opened: false,
                        code: 1006,
                    });
                }
            });
        };
        let Ok(raw) = web_sys::WebSocket::new(&url) else {
            return fail(weak);
        };
        let Ok(mut ws) = WebSocket::try_from(raw.clone()) else {
            return fail(weak);
        };
        let (tx, mut rx) = mpsc::unbounded::<String>();
        self.inner.borrow_mut().socket = Some(Socket {
            raw: raw.clone(),
            tx,
        });
        spawn_local(async move {
            // Resolves on `open` or on `error`; the ready state tells which.
            let _ = poll_fn(|cx| futures::Sink::<Message>::poll_ready(Pin::new(&mut ws), cx)).await;
            let opened = raw.ready_state() == web_sys::WebSocket::OPEN;
            if opened && let Some(d) = weak.upgrade() {
                d.dispatch(Input::SocketOpened { epoch });
            }
            let (mut sink, mut stream) = ws.split();
            spawn_local(async move {
                while let Some(frame) = rx.next().await {
                    if sink.send(Message::Text(frame)).await.is_err() {
                        break;
                    }
                }
            });
            let mut code = 1006;
            while let Some(item) = stream.next().await {
                match item {
                    Ok(Message::Text(text)) => {
                        if let Some(d) = weak.upgrade() {
                            d.dispatch(Input::SocketFrame { epoch, text });
                        }
                    }
                    // The protocol is text only.
                    Ok(Message::Bytes(_)) => {}
                    Err(WebSocketError::ConnectionClose(event)) => code = event.code,
                    Err(_) => {}
                }
            }
            if let Some(d) = weak.upgrade() {
                d.dispatch(Input::SocketClosed {
                    epoch,
                    opened,
                    code,
                });
            }
        });
    }
}

/// `POST /app/get_config`, decoded with core's envelope types.
async fn post_config(product_id: i64, game_zone: &str) -> Result<ConfigData, ConfigFailure> {
    let body = serde_json::json!({"id": product_id, "game_zone": game_zone});
    let request = gloo_net::http::Request::post("/app/get_config")
        .json(&body)
        .map_err(|_| ConfigFailure::BadResponse)?;
    let response = request.send().await.map_err(|_| ConfigFailure::Network)?;
    let text = response.text().await.map_err(|_| ConfigFailure::Network)?;
    let envelope: ConfigResponse =
        serde_json::from_str(&text).map_err(|_| ConfigFailure::BadResponse)?;
    if envelope.status == 1 {
        serde_json::from_value(envelope.data).map_err(|_| ConfigFailure::BadResponse)
    } else {
        Err(Code::from_value(envelope.code.into())
            .map_or(ConfigFailure::BadResponse, ConfigFailure::Code))
    }
}

fn socket_url(session_id: &str, last_seq: u64) -> String {
    let (protocol, host) = web_sys::window()
        .map(|w| w.location())
        .map(|l| {
            (
                l.protocol().unwrap_or_else(|_| "http:".into()),
                l.host().unwrap_or_default(),
            )
        })
        .unwrap_or_else(|| ("http:".into(), String::new()));
    session::ws_url(&protocol, &host, session_id, last_seq)
}

fn save_session(session: &Session) {
    let mut stored: Vec<StoredSession> = LocalStorage::get(SESSIONS_KEY).unwrap_or_default();
    session::touch(&mut stored, session, js_sys::Date::now());
    // Storage can be full or disabled (private mode): the page still works, it just
    // forgets the player on reload.
    let _ = LocalStorage::set(SESSIONS_KEY, &stored);
    let _ = SessionStorage::set(CLAIM_KEY, &session.session_id);
}

fn forget_session(s: &Session) {
    let mut stored: Vec<StoredSession> = LocalStorage::get(SESSIONS_KEY).unwrap_or_default();
    session::forget(&mut stored, &s.session_id);
    let _ = LocalStorage::set(SESSIONS_KEY, &stored);
    LocalStorage::delete(outbox_key(s));
    // Only drop this tab's claim if it was on this session (a renewal saves the new one).
    if SessionStorage::get::<String>(CLAIM_KEY).is_ok_and(|id| id == s.session_id) {
        SessionStorage::delete(CLAIM_KEY);
    }
}

fn outbox_key(session: &Session) -> String {
    format!("{OUTBOX_KEY}.{}", session.session_id)
}

fn load_outbox(session: &Session) -> Vec<PendingMsg> {
    LocalStorage::get(outbox_key(session)).unwrap_or_default()
}

fn save_outbox(session: &Session, outbox: &[PendingMsg]) {
    if outbox.is_empty() {
        LocalStorage::delete(outbox_key(session));
    } else {
        let _ = LocalStorage::set(outbox_key(session), outbox);
    }
}

/// A seed for ids and jitter from the browser's CSPRNG (falls back to the clock).
fn random_seed() -> u64 {
    let mut bytes = [0u8; 8];
    let filled = web_sys::window()
        .and_then(|w| w.crypto().ok())
        .is_some_and(|c| c.get_random_values_with_u8_array(&mut bytes).is_ok());
    if filled {
        u64::from_le_bytes(bytes)
    } else {
        (js_sys::Date::now() as u64) ^ ((js_sys::Math::random() * 1e15) as u64)
    }
}
