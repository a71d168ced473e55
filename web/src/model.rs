//! The client's state machine: everything the page knows and decides, with no browser in it.
//!
//! [`Client::handle`] takes one [`Input`] (a player action, a frame, a socket event, a timer)
//! and the current time, updates the state, and returns the [`Command`]s the browser side
//! (`driver`) must carry out: open a socket, send a frame, start a timer, save to storage.
//! Keeping IO out makes the whole protocol behaviour (pending messages, resend with the same
//! `chat_sn`, dedupe by `seq`, reconnect and session renewal) testable natively.

use crate::backoff::{Backoff, Rng};
use crate::session::Session;
use matchchat_core::Code;
use matchchat_core::limits::{CHAT_MSG_MAX_CHARS, GAME_ZONE_MAX_CHARS, PRODUCT_ID_MAX};
use matchchat_core::request::Request;
use matchchat_core::wire::{
    ChatData, ConfigData, Event, LeaveReason, MatchedData, PeerLeftData, ServerFrame,
};
use serde::{Deserialize, Serialize};

/// Close code the server uses when the same session connected somewhere else.
pub const CLOSE_TAKEN_OVER: u16 = 4001;
/// A connection that stayed open this long counts as healthy: the backoff starts over.
const STABLE_MS: f64 = 5_000.0;
/// Wait before re-sending messages the server refused with 40009.
const RATE_LIMIT_RETRY_MS: u32 = 1_500;
/// Lines kept in memory for one room (the server's replay is bounded too).
const MAX_LINES: usize = 2_000;

/// The socket as the player sees it.
#[derive(Clone, Debug, PartialEq)]
pub enum Conn {
    /// No session yet: nothing to connect to.
    Offline,
    Connecting,
    Online,
    /// Waiting for the backoff timer; the next attempt starts at `due_ms`.
    Reconnecting {
        due_ms: f64,
    },
    /// Closed with 4001: another tab or device took the session. No automatic reconnect.
    TakenOver,
}

/// Where the player is in the flow.
#[derive(Clone, Debug, PartialEq)]
pub enum Phase {
    /// Choosing a game zone.
    Setup,
    /// `get_config` is on its way.
    SigningIn,
    /// Has a player, not queued, not in a room.
    Lobby,
    /// Queued for a match since `since_ms`.
    Waiting { since_ms: f64 },
    /// In a room.
    Chat,
    /// The room is over; its messages stay on screen.
    Ended(EndReason),
}

/// Why a chat ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    PeerLeft(LeaveReason),
    /// The server no longer knows the room (40004).
    Gone,
}

/// Why a message was not delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailReason {
    Code(Code),
    RoomClosed,
}

/// Delivery state of one line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineState {
    /// Sent (or waiting to be sent), no 20002 yet.
    Pending,
    Delivered,
    Failed(FailReason),
}

/// One chat message on screen.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    pub chat_sn: String,
    pub sender: String,
    pub text: String,
    pub mine: bool,
    /// Room sequence number from the server (absent while pending).
    pub seq: Option<u64>,
    /// Server time, ms since the epoch (absent while pending).
    pub ts: Option<u64>,
    pub state: LineState,
}

/// The current (or last) room.
#[derive(Clone, Debug, PartialEq)]
pub struct Room {
    pub room_id: String,
    pub me: String,
    pub peers: Vec<String>,
    pub lines: Vec<Line>,
    /// Highest room `seq` seen: `last_seq` for an in-page reconnect.
    pub max_seq: u64,
}

/// A message not yet acknowledged, kept in storage so that a reload re-sends it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingMsg {
    pub room_id: String,
    pub chat_sn: String,
    pub text: String,
}

/// A sentence to show once (errors and notable events).
#[derive(Clone, Debug, PartialEq)]
pub enum Notice {
    Code(Code),
    UnknownCode(i64),
    Config(ConfigFailure),
    SessionRenewed,
    InvalidZone,
}

/// Why `get_config` did not give a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigFailure {
    Code(Code),
    Network,
    BadResponse,
}

/// What the player can do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    SignIn {
        product_id: i64,
        game_zone: String,
    },
    Match,
    Cancel,
    Leave,
    Send(String),
    /// After 4001: take the session back to this tab.
    UseHere,
    /// Forget this player and choose a zone again.
    SwitchZone,
    DismissNotice,
}

/// Everything that can happen to the client. Socket events carry the generation of the
/// socket they come from, so late events of a replaced socket are ignored.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    User(Action),
    ConfigLoaded(Result<ConfigData, ConfigFailure>),
    SocketOpened {
        epoch: u64,
    },
    SocketFrame {
        epoch: u64,
        text: String,
    },
    SocketClosed {
        epoch: u64,
        opened: bool,
        code: u16,
    },
    HealthChecked {
        epoch: u64,
        ok: bool,
    },
    ReconnectDue {
        epoch: u64,
    },
    ResendDue,
    /// The browser reports the network is back (`online` event): do not wait out the backoff.
    NetworkOnline,
}

/// What the browser side must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    PostConfig {
        product_id: i64,
        game_zone: String,
    },
    /// Close any current socket and open `/ws?session_id=…&last_seq=…`.
    Connect {
        epoch: u64,
        session_id: String,
        last_seq: u64,
    },
    /// Send one text frame on the current socket.
    Send(String),
    /// Close the current socket and do not reconnect.
    Disconnect,
    /// `GET /healthz`: tells a refused session (401) from a server that is down.
    CheckHealth {
        epoch: u64,
    },
    ScheduleReconnect {
        epoch: u64,
        delay_ms: u32,
    },
    ScheduleResend {
        delay_ms: u32,
    },
    /// Store this tab's session (and mark it alive).
    SaveSession(Session),
    /// Remove a session from storage: refused by the server, or the player left it.
    ForgetSession(Session),
    /// Store [`Client::outbox`].
    SaveOutbox,
}

/// What a request in flight was, to interpret its reply.
#[derive(Clone, Debug, PartialEq)]
enum Sent {
    Match,
    Cancel,
    Leave,
    Chat { chat_sn: String },
}

/// The whole client state.
#[derive(Clone, Debug, PartialEq)]
pub struct Client {
    pub session: Option<Session>,
    pub conn: Conn,
    pub phase: Phase,
    pub room: Option<Room>,
    pub notice: Option<Notice>,
    outbox: Vec<PendingMsg>,
    in_flight: Vec<(String, Sent)>,
    /// `(product_id, game_zone)` of a `get_config` in flight.
    signing_in: Option<(i64, String)>,
    /// A `get_config` in flight replaces a refused session.
    renewing: bool,
    /// The session was renewed and the new one has not connected yet: do not loop.
    just_renewed: bool,
    epoch: u64,
    opened_at: Option<f64>,
    backoff: Backoff,
    rng: Rng,
    next_request: u64,
}

impl Client {
    /// The state at page load, from what storage had. With a session, connects at once,
    /// asking for the whole room history (`last_seq=0`) so a reload gets the chat back.
    pub fn restore(
        session: Option<Session>,
        outbox: Vec<PendingMsg>,
        seed: u64,
    ) -> (Client, Vec<Command>) {
        let mut client = Client {
            session: None,
            conn: Conn::Offline,
            phase: Phase::Setup,
            room: None,
            notice: None,
            outbox,
            in_flight: Vec::new(),
            signing_in: None,
            renewing: false,
            just_renewed: false,
            epoch: 0,
            opened_at: None,
            backoff: Backoff::default(),
            rng: Rng::new(seed),
            next_request: 0,
        };
        let mut out = Vec::new();
        match session {
            Some(s) => {
                client.session = Some(s);
                client.phase = Phase::Lobby;
                client.connect(0, &mut out);
            }
            None => client.outbox.clear(),
        }
        (client, out)
    }

    /// Messages not yet acknowledged (what [`Command::SaveOutbox`] stores).
    pub fn outbox(&self) -> &[PendingMsg] {
        &self.outbox
    }

    /// Generation of the current socket.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether requests can be sent now.
    pub fn online(&self) -> bool {
        self.conn == Conn::Online
    }

    /// Applies one input at time `now_ms` (ms since the epoch).
    pub fn handle(&mut self, input: Input, now_ms: f64) -> Vec<Command> {
        let mut out = Vec::new();
        match input {
            Input::User(action) => self.on_action(action, now_ms, &mut out),
            Input::ConfigLoaded(result) => self.on_config(result, now_ms, &mut out),
            Input::SocketOpened { epoch } if epoch == self.epoch => {
                self.conn = Conn::Online;
                self.opened_at = Some(now_ms);
                self.just_renewed = false;
                // Queued players leave the queue when their socket drops: queue again.
                if matches!(self.phase, Phase::Waiting { .. }) {
                    self.request(Request::MatchPlayer, Sent::Match, &mut out);
                }
            }
            Input::SocketFrame { epoch, text } if epoch == self.epoch => {
                self.on_frame(&text, now_ms, &mut out)
            }
            Input::SocketClosed {
                epoch,
                opened,
                code,
            } if epoch == self.epoch => self.on_closed(opened, code, now_ms, &mut out),
            Input::HealthChecked { epoch, ok } if epoch == self.epoch => {
                if ok && !self.just_renewed && !self.renewing {
                    // The server is up but refused the socket: the session is unknown or
                    // expired (401). Get a new player for the same pool.
                    if let Some(s) = &self.session {
                        self.renewing = true;
                        out.push(Command::PostConfig {
                            product_id: s.product_id,
                            game_zone: s.game_zone.clone(),
                        });
                    }
                } else {
                    self.schedule_reconnect(now_ms, &mut out);
                }
            }
            Input::ReconnectDue { epoch } if epoch == self.epoch => {
                if matches!(self.conn, Conn::Reconnecting { .. }) {
                    let last_seq = self.room.as_ref().map_or(0, |r| r.max_seq);
                    self.connect(last_seq, &mut out);
                }
            }
            Input::ResendDue => self.resend_pending(&mut out),
            Input::NetworkOnline => {
                if matches!(self.conn, Conn::Reconnecting { .. }) {
                    self.backoff.reset();
                    let last_seq = self.room.as_ref().map_or(0, |r| r.max_seq);
                    self.connect(last_seq, &mut out);
                }
            }
            // Events of a socket that has since been replaced.
            Input::SocketOpened { .. }
            | Input::SocketFrame { .. }
            | Input::SocketClosed { .. }
            | Input::HealthChecked { .. }
            | Input::ReconnectDue { .. } => {}
        }
        out
    }

    fn on_action(&mut self, action: Action, now_ms: f64, out: &mut Vec<Command>) {
        match action {
            Action::SignIn {
                product_id,
                game_zone,
            } => {
                if !matches!(self.phase, Phase::Setup) {
                    return;
                }
                let zone = game_zone.trim().to_owned();
                let zone_len = zone.chars().count();
                if zone_len == 0
                    || zone_len > GAME_ZONE_MAX_CHARS
                    || !(0..=PRODUCT_ID_MAX).contains(&product_id)
                {
                    self.notice = Some(Notice::InvalidZone);
                    return;
                }
                self.notice = None;
                self.phase = Phase::SigningIn;
                self.signing_in = Some((product_id, zone.clone()));
                out.push(Command::PostConfig {
                    product_id,
                    game_zone: zone,
                });
            }
            Action::Match => {
                if !self.online() || !matches!(self.phase, Phase::Lobby | Phase::Ended(_)) {
                    return;
                }
                self.leave_room_locally(out);
                self.phase = Phase::Waiting { since_ms: now_ms };
                self.request(Request::MatchPlayer, Sent::Match, out);
            }
            Action::Cancel => {
                if let Phase::Waiting { .. } = self.phase {
                    self.phase = Phase::Lobby;
                    if self.online() {
                        self.request(Request::CancelMatch, Sent::Cancel, out);
                    }
                }
            }
            Action::Leave => {
                if matches!(self.phase, Phase::Chat) && self.online() {
                    self.request(Request::LeaveChat, Sent::Leave, out);
                }
                if matches!(self.phase, Phase::Chat | Phase::Ended(_)) {
                    self.leave_room_locally(out);
                    self.phase = Phase::Lobby;
                }
            }
            Action::Send(text) => self.send_chat(text, out),
            Action::UseHere => {
                if self.conn == Conn::TakenOver {
                    let last_seq = self.room.as_ref().map_or(0, |r| r.max_seq);
                    self.connect(last_seq, out);
                }
            }
            Action::SwitchZone => {
                if matches!(self.phase, Phase::Setup | Phase::SigningIn) {
                    return;
                }
                self.epoch += 1;
                out.push(Command::Disconnect);
                if let Some(old) = self.session.take() {
                    out.push(Command::ForgetSession(old));
                }
                self.conn = Conn::Offline;
                self.phase = Phase::Setup;
                self.room = None;
                self.in_flight.clear();
                self.outbox.clear();
                out.push(Command::SaveOutbox);
            }
            Action::DismissNotice => self.notice = None,
        }
    }

    fn on_config(
        &mut self,
        result: Result<ConfigData, ConfigFailure>,
        now_ms: f64,
        out: &mut Vec<Command>,
    ) {
        if self.renewing {
            self.renewing = false;
            match result {
                Ok(data) => {
                    let (product_id, game_zone) = self
                        .session
                        .as_ref()
                        .map(|s| (s.product_id, s.game_zone.clone()))
                        .unwrap_or((1, String::new()));
                    // The refused session must not be picked up again by a later tab.
                    if let Some(old) = self.session.take() {
                        out.push(Command::ForgetSession(old));
                    }
                    self.start_session(data, product_id, game_zone, out);
                    self.notice = Some(Notice::SessionRenewed);
                    self.just_renewed = true;
                }
                // The server went away again between the health check and now: keep trying.
                Err(_) => self.schedule_reconnect(now_ms, out),
            }
            return;
        }
        let Some((product_id, game_zone)) = self.signing_in.take() else {
            return;
        };
        match result {
            Ok(data) => self.start_session(data, product_id, game_zone, out),
            Err(failure) => {
                self.phase = Phase::Setup;
                self.notice = Some(Notice::Config(failure));
            }
        }
    }

    fn start_session(
        &mut self,
        data: ConfigData,
        product_id: i64,
        game_zone: String,
        out: &mut Vec<Command>,
    ) {
        let session = Session {
            session_id: data.session_id,
            account: data.account,
            product_id,
            game_zone,
        };
        out.push(Command::SaveSession(session.clone()));
        self.session = Some(session);
        // A new player has no room and nothing pending.
        self.room = None;
        self.outbox.clear();
        out.push(Command::SaveOutbox);
        self.phase = Phase::Lobby;
        self.connect(0, out);
    }

    fn connect(&mut self, last_seq: u64, out: &mut Vec<Command>) {
        let Some(session) = &self.session else {
            return;
        };
        self.epoch += 1;
        self.conn = Conn::Connecting;
        self.in_flight.clear();
        self.opened_at = None;
        out.push(Command::Connect {
            epoch: self.epoch,
            session_id: session.session_id.clone(),
            last_seq,
        });
    }

    fn on_closed(&mut self, opened: bool, code: u16, now_ms: f64, out: &mut Vec<Command>) {
        // Replies to what was in flight will never come; pending chat stays in the outbox.
        self.in_flight.clear();
        if let Some(at) = self.opened_at.take()
            && now_ms - at >= STABLE_MS
        {
            self.backoff.reset();
        }
        if code == CLOSE_TAKEN_OVER {
            self.conn = Conn::TakenOver;
            if matches!(self.phase, Phase::Waiting { .. }) {
                self.phase = Phase::Lobby;
            }
            return;
        }
        if !opened {
            // The browser hides why an upgrade failed; ask the server if it is alive.
            self.conn = Conn::Connecting;
            out.push(Command::CheckHealth { epoch: self.epoch });
            return;
        }
        self.schedule_reconnect(now_ms, out);
    }

    fn schedule_reconnect(&mut self, now_ms: f64, out: &mut Vec<Command>) {
        // Whole milliseconds, so the countdown and the timer agree.
        let delay = self.backoff.next_delay(self.rng.unit()).round();
        self.conn = Conn::Reconnecting {
            due_ms: now_ms + delay,
        };
        out.push(Command::ScheduleReconnect {
            epoch: self.epoch,
            delay_ms: delay as u32,
        });
    }

    fn request(&mut self, request: Request, sent: Sent, out: &mut Vec<Command>) {
        self.next_request += 1;
        // Unique per page; replies are matched against this id only.
        let id = format!("c{}", self.next_request);
        out.push(Command::Send(request.to_frame(&id)));
        self.in_flight.push((id, sent));
    }

    fn send_chat(&mut self, text: String, out: &mut Vec<Command>) {
        if !matches!(self.phase, Phase::Chat) {
            return;
        }
        let chars = text.chars().count();
        if text.trim().is_empty() || chars > CHAT_MSG_MAX_CHARS {
            return;
        }
        let chat_sn = self.rng.alnum(32);
        let Some(room) = &mut self.room else {
            return;
        };
        room.lines.push(Line {
            chat_sn: chat_sn.clone(),
            sender: room.me.clone(),
            text: text.clone(),
            mine: true,
            seq: None,
            ts: None,
            state: LineState::Pending,
        });
        self.outbox.push(PendingMsg {
            room_id: room.room_id.clone(),
            chat_sn: chat_sn.clone(),
            text: text.clone(),
        });
        out.push(Command::SaveOutbox);
        if self.online() {
            self.request(
                Request::SendChat {
                    chat_msg: text,
                    chat_sn: chat_sn.clone(),
                },
                Sent::Chat { chat_sn },
                out,
            );
        }
    }

    /// Re-sends every unacknowledged message of the current room with its original
    /// `chat_sn`: the server delivers each `chat_sn` once, so nothing is doubled.
    fn resend_pending(&mut self, out: &mut Vec<Command>) {
        if !self.online() || !matches!(self.phase, Phase::Chat) {
            return;
        }
        let Some(room_id) = self.room.as_ref().map(|r| r.room_id.clone()) else {
            return;
        };
        let pending: Vec<PendingMsg> = self
            .outbox
            .iter()
            .filter(|p| p.room_id == room_id)
            .cloned()
            .collect();
        for p in pending {
            let already = self
                .in_flight
                .iter()
                .any(|(_, s)| matches!(s, Sent::Chat { chat_sn } if *chat_sn == p.chat_sn));
            if !already {
                self.request(
                    Request::SendChat {
                        chat_msg: p.text,
                        chat_sn: p.chat_sn.clone(),
                    },
                    Sent::Chat { chat_sn: p.chat_sn },
                    out,
                );
            }
        }
    }

    /// Clears the room on this side (the player left or starts over).
    fn leave_room_locally(&mut self, out: &mut Vec<Command>) {
        self.room = None;
        if !self.outbox.is_empty() {
            self.outbox.clear();
            out.push(Command::SaveOutbox);
        }
    }

    fn on_frame(&mut self, text: &str, now_ms: f64, out: &mut Vec<Command>) {
        // A frame we cannot read is dropped: the server is the authority, and one odd frame
        // must not break the page.
        let Ok(frame) = ServerFrame::parse(text) else {
            return;
        };
        let Ok(event) = frame.event() else {
            return;
        };
        let sent = frame.id.as_ref().and_then(|id| {
            let at = self.in_flight.iter().position(|(rid, _)| rid == id)?;
            Some(self.in_flight.remove(at).1)
        });
        match sent {
            Some(sent) => self.on_reply(sent, event, now_ms, out),
            None => self.on_push(event, out),
        }
    }

    fn on_reply(&mut self, sent: Sent, event: Event, now_ms: f64, out: &mut Vec<Command>) {
        match (sent, event) {
            (Sent::Chat { .. }, Event::Chat(data)) => self.on_chat(data, out),
            (Sent::Chat { chat_sn }, Event::Failed { code, raw_code }) => match code {
                Some(Code::RateLimited) => {
                    self.notice = Some(Notice::Code(Code::RateLimited));
                    out.push(Command::ScheduleResend {
                        delay_ms: RATE_LIMIT_RETRY_MS,
                    });
                }
                Some(Code::NoRoom) => self.end_room(EndReason::Gone, out),
                other => {
                    let reason = FailReason::Code(other.unwrap_or(Code::SystemError));
                    self.fail_line(&chat_sn, reason, out);
                    self.notice = Some(notice_for(other, raw_code));
                }
            },
            (Sent::Match, Event::Failed { code, raw_code }) => {
                if let Phase::Waiting { .. } = self.phase {
                    self.phase = Phase::Lobby;
                }
                self.notice = Some(notice_for(code, raw_code));
            }
            (Sent::Match, Event::Success) => {
                if !matches!(self.phase, Phase::Waiting { .. } | Phase::Chat) {
                    self.phase = Phase::Waiting { since_ms: now_ms };
                }
            }
            // Leaving a room that is already gone is what the player wanted anyway.
            (
                Sent::Leave,
                Event::Failed {
                    code: Some(Code::NoRoom),
                    ..
                },
            ) => {}
            (Sent::Cancel | Sent::Leave, Event::Failed { code, raw_code }) => {
                self.notice = Some(notice_for(code, raw_code));
            }
            // A reply with a push's shape (20001/20003) is still that push.
            (_, event @ (Event::Matched(_) | Event::PeerLeft(_) | Event::Chat(_))) => {
                self.on_push(event, out)
            }
            (_, Event::Success) => {}
        }
    }

    fn on_push(&mut self, event: Event, out: &mut Vec<Command>) {
        match event {
            Event::Matched(data) => self.on_matched(data, out),
            Event::Chat(data) => self.on_chat(data, out),
            Event::PeerLeft(data) => self.on_peer_left(data, out),
            Event::Failed { code, raw_code } => self.notice = Some(notice_for(code, raw_code)),
            Event::Success => {}
        }
    }

    fn on_matched(&mut self, data: MatchedData, out: &mut Vec<Command>) {
        let same_room = self
            .room
            .as_ref()
            .is_some_and(|r| r.room_id == data.room_id);
        if same_room {
            // A resume: keep what is on screen, the replay fills the gap.
            if let Some(room) = &mut self.room {
                room.peers = data.peer_ids;
                room.me = data.player_id;
            }
        } else {
            self.room = Some(Room {
                room_id: data.room_id.clone(),
                me: data.player_id,
                peers: data.peer_ids,
                lines: Vec::new(),
                max_seq: 0,
            });
            let before = self.outbox.len();
            self.outbox.retain(|p| p.room_id == data.room_id);
            if self.outbox.len() != before {
                out.push(Command::SaveOutbox);
            }
        }
        self.phase = Phase::Chat;
        // Messages stored before a reload come back on screen as pending.
        if let Some(room) = &mut self.room {
            for p in self.outbox.iter().filter(|p| p.room_id == room.room_id) {
                if !room.lines.iter().any(|l| l.mine && l.chat_sn == p.chat_sn) {
                    room.lines.push(Line {
                        chat_sn: p.chat_sn.clone(),
                        sender: room.me.clone(),
                        text: p.text.clone(),
                        mine: true,
                        seq: None,
                        ts: None,
                        state: LineState::Pending,
                    });
                }
            }
            sort_lines(&mut room.lines);
        }
        self.resend_pending(out);
    }

    fn on_chat(&mut self, data: ChatData, out: &mut Vec<Command>) {
        let Some(room) = &mut self.room else {
            return;
        };
        let seq = (data.seq > 0).then_some(data.seq);
        let ts = (data.ts > 0).then_some(data.ts);
        if let Some(seq) = seq {
            room.max_seq = room.max_seq.max(seq);
            if room.lines.iter().any(|l| l.seq == Some(seq)) {
                return;
            }
        }
        let mine = data.send_player_id == room.me;
        // The server delivers each (sender, chat_sn) once; a second copy is a replay.
        if let Some(line) = room
            .lines
            .iter_mut()
            .find(|l| l.sender == data.send_player_id && l.chat_sn == data.chat_sn)
        {
            if line.state == LineState::Pending {
                line.state = LineState::Delivered;
                line.seq = seq;
                line.ts = ts;
                sort_lines(&mut room.lines);
            }
        } else {
            room.lines.push(Line {
                chat_sn: data.chat_sn.clone(),
                sender: data.send_player_id,
                text: data.chat_msg,
                mine,
                seq,
                ts,
                state: LineState::Delivered,
            });
            sort_lines(&mut room.lines);
            if room.lines.len() > MAX_LINES {
                let extra = room.lines.len() - MAX_LINES;
                room.lines.drain(..extra);
            }
        }
        if mine {
            let before = self.outbox.len();
            self.outbox.retain(|p| p.chat_sn != data.chat_sn);
            if self.outbox.len() != before {
                out.push(Command::SaveOutbox);
            }
        }
    }

    fn on_peer_left(&mut self, data: PeerLeftData, out: &mut Vec<Command>) {
        let Some(room) = &mut self.room else {
            return;
        };
        if room.room_id != data.room_id || data.player_id == room.me {
            return;
        }
        room.max_seq = room.max_seq.max(data.seq);
        if room.peers.iter().any(|p| *p != data.player_id) {
            // A bigger room goes on without them.
            room.peers.retain(|p| *p != data.player_id);
        } else {
            // The last peer stays named on screen: "who left" is what the player reads.
            self.end_room(EndReason::PeerLeft(data.reason), out);
        }
    }

    /// The room is over: what was not delivered never will be.
    fn end_room(&mut self, reason: EndReason, out: &mut Vec<Command>) {
        if let Some(room) = &mut self.room {
            for line in room.lines.iter_mut() {
                if line.state == LineState::Pending {
                    line.state = LineState::Failed(FailReason::RoomClosed);
                }
            }
        }
        if !self.outbox.is_empty() {
            self.outbox.clear();
            out.push(Command::SaveOutbox);
        }
        self.phase = Phase::Ended(reason);
    }

    fn fail_line(&mut self, chat_sn: &str, reason: FailReason, out: &mut Vec<Command>) {
        if let Some(room) = &mut self.room {
            for line in room
                .lines
                .iter_mut()
                .filter(|l| l.mine && l.chat_sn == chat_sn)
            {
                line.state = LineState::Failed(reason);
            }
        }
        self.outbox.retain(|p| p.chat_sn != chat_sn);
        out.push(Command::SaveOutbox);
    }
}

fn notice_for(code: Option<Code>, raw_code: i64) -> Notice {
    code.map_or(Notice::UnknownCode(raw_code), Notice::Code)
}

/// Delivered lines in room order; pending ones after them in the order they were typed.
fn sort_lines(lines: &mut [Line]) {
    lines.sort_by_key(|l| l.seq.unwrap_or(u64::MAX));
}

#[cfg(test)]
mod tests {
    use super::*;
    use matchchat_core::wire::{
        RequestId, error_frame, error_result_json, push_frame, reply_frame, result_json,
        success_result_json,
    };
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const PUSH_ID: &str = "0123456789abcdef0123456789abcdef";

    fn session() -> Session {
        Session {
            session_id: "S".repeat(40),
            account: "meAAAAAAAA".into(),
            product_id: 1,
            game_zone: "cn-east".into(),
        }
    }

    /// A client with a session whose socket is open.
    fn online() -> Client {
        let (mut c, cmds) = Client::restore(Some(session()), vec![], 1);
        assert!(matches!(cmds[..], [Command::Connect { last_seq: 0, .. }]));
        let epoch = c.epoch();
        c.handle(Input::SocketOpened { epoch }, 0.0);
        c
    }

    fn frame(c: &mut Client, text: String) -> Vec<Command> {
        let epoch = c.epoch();
        c.handle(Input::SocketFrame { epoch, text }, 10.0)
    }

    fn matched(c: &mut Client, room: &str) -> Vec<Command> {
        let data = MatchedData {
            room_id: room.into(),
            player_id: "meAAAAAAAA".into(),
            peer_ids: vec!["peerBBBBBB".into()],
        };
        frame(c, push_frame(&result_json(Code::Matched, &data), PUSH_ID))
    }

    fn chat(sender: &str, msg: &str, sn: &str, seq: u64) -> ChatData {
        ChatData {
            send_player_id: sender.into(),
            chat_msg: msg.into(),
            chat_sn: sn.into(),
            seq,
            ts: 1_700_000_000_000 + seq,
        }
    }

    fn push_chat(c: &mut Client, data: &ChatData) -> Vec<Command> {
        frame(c, push_frame(&result_json(Code::ChatData, data), PUSH_ID))
    }

    /// The (id, parsed request) of every frame sent.
    fn sent(cmds: &[Command]) -> Vec<(String, Request)> {
        cmds.iter()
            .filter_map(|c| match c {
                Command::Send(f) => {
                    let inc = matchchat_core::request::parse_frame(f).ok()?;
                    let id = inc.id.to_value().as_str()?.to_owned();
                    Some((id, inc.request))
                }
                _ => None,
            })
            .collect()
    }

    fn lines(c: &Client) -> Vec<(String, LineState, Option<u64>)> {
        c.room
            .as_ref()
            .map(|r| {
                r.lines
                    .iter()
                    .map(|l| (l.text.clone(), l.state, l.seq))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn sign_in_connects_with_the_new_session() {
        let (mut c, cmds) = Client::restore(None, vec![], 1);
        assert!(cmds.is_empty());
        assert_eq!(c.phase, Phase::Setup);
        assert_eq!(c.conn, Conn::Offline);
        let cmds = c.handle(
            Input::User(Action::SignIn {
                product_id: 1,
                game_zone: " cn-east ".into(),
            }),
            0.0,
        );
        assert_eq!(
            cmds,
            vec![Command::PostConfig {
                product_id: 1,
                game_zone: "cn-east".into()
            }]
        );
        assert_eq!(c.phase, Phase::SigningIn);
        let cmds = c.handle(
            Input::ConfigLoaded(Ok(ConfigData {
                session_id: "S".repeat(40),
                request_id: "r".into(),
                account: "meAAAAAAAA".into(),
            })),
            0.0,
        );
        assert_eq!(c.session, Some(session()));
        assert_eq!(c.phase, Phase::Lobby);
        assert_eq!(c.conn, Conn::Connecting);
        assert!(cmds.contains(&Command::SaveSession(session())));
        assert!(cmds.contains(&Command::Connect {
            epoch: c.epoch(),
            session_id: "S".repeat(40),
            last_seq: 0
        }));
        c.handle(Input::SocketOpened { epoch: c.epoch() }, 0.0);
        assert_eq!(c.conn, Conn::Online);
    }

    #[test]
    fn sign_in_validates_and_reports_failures() {
        let (mut c, _) = Client::restore(None, vec![], 1);
        let bad = [
            (1, "   ".to_owned()),
            (-1, "z".to_owned()),
            (1, "z".repeat(65)),
        ];
        for (product_id, game_zone) in bad {
            let cmds = c.handle(
                Input::User(Action::SignIn {
                    product_id,
                    game_zone,
                }),
                0.0,
            );
            assert!(cmds.is_empty());
            assert_eq!(c.notice, Some(Notice::InvalidZone));
        }
        c.handle(
            Input::User(Action::SignIn {
                product_id: 1,
                game_zone: "z".into(),
            }),
            0.0,
        );
        c.handle(
            Input::ConfigLoaded(Err(ConfigFailure::Code(Code::SystemBusy))),
            0.0,
        );
        assert_eq!(c.phase, Phase::Setup);
        assert_eq!(
            c.notice,
            Some(Notice::Config(ConfigFailure::Code(Code::SystemBusy)))
        );
    }

    #[test]
    fn match_wait_cancel_and_match_again() {
        let mut c = online();
        let cmds = c.handle(Input::User(Action::Match), 1000.0);
        assert_eq!(c.phase, Phase::Waiting { since_ms: 1000.0 });
        let reqs = sent(&cmds);
        assert_eq!(reqs[0].1, Request::MatchPlayer);
        let reply = reply_frame(&success_result_json(), &RequestId::from_string(&reqs[0].0));
        frame(&mut c, reply);
        assert_eq!(c.phase, Phase::Waiting { since_ms: 1000.0 });
        let cmds = c.handle(Input::User(Action::Cancel), 2000.0);
        assert_eq!(sent(&cmds)[0].1, Request::CancelMatch);
        assert_eq!(c.phase, Phase::Lobby);
        // A match that raced the cancel wins: the server is the authority.
        matched(&mut c, "room1");
        assert_eq!(c.phase, Phase::Chat);
    }

    #[test]
    fn match_errors_become_notices() {
        let mut c = online();
        let cmds = c.handle(Input::User(Action::Match), 0.0);
        let id = RequestId::from_string(&sent(&cmds)[0].0);
        frame(
            &mut c,
            reply_frame(&error_result_json(Code::RateLimited), &id),
        );
        assert_eq!(c.phase, Phase::Lobby);
        assert_eq!(c.notice, Some(Notice::Code(Code::RateLimited)));
        c.handle(Input::User(Action::DismissNotice), 0.0);
        assert_eq!(c.notice, None);
        // Global errors with a null id are pushes without a request.
        frame(&mut c, error_frame(Code::ProtocolError, None));
        assert_eq!(c.notice, Some(Notice::Code(Code::ProtocolError)));
        // Unknown codes keep their number.
        frame(
            &mut c,
            r#"{"jsonrpc":"2.0","result":{"code":49999,"message":"x","data":{}},"id":"0123456789abcdef0123456789abcdef"}"#.into(),
        );
        assert_eq!(c.notice, Some(Notice::UnknownCode(49999)));
        // Garbage is ignored.
        frame(&mut c, "not json".into());
        assert_eq!(c.notice, Some(Notice::UnknownCode(49999)));
    }

    #[test]
    fn chat_messages_pending_until_acknowledged_and_ordered_by_seq() {
        let mut c = online();
        matched(&mut c, "room1");
        push_chat(&mut c, &chat("peerBBBBBB", "hello", "p1", 1));
        let cmds = c.handle(Input::User(Action::Send("hi there".into())), 20.0);
        assert!(cmds.contains(&Command::SaveOutbox));
        let reqs = sent(&cmds);
        let Request::SendChat { chat_msg, chat_sn } = &reqs[0].1 else {
            panic!("not a chat: {reqs:?}");
        };
        assert_eq!(chat_msg, "hi there");
        assert_eq!(c.outbox().len(), 1);
        assert_eq!(
            lines(&c),
            vec![
                ("hello".into(), LineState::Delivered, Some(1)),
                ("hi there".into(), LineState::Pending, None)
            ]
        );
        // The peer's next message overtakes ours in the room order.
        push_chat(&mut c, &chat("peerBBBBBB", "again", "p2", 2));
        let reply = reply_frame(
            &result_json(Code::ChatData, &chat("meAAAAAAAA", "hi there", chat_sn, 3)),
            &RequestId::from_string(&reqs[0].0),
        );
        let cmds = frame(&mut c, reply);
        assert!(cmds.contains(&Command::SaveOutbox));
        assert!(c.outbox().is_empty());
        assert_eq!(
            lines(&c),
            vec![
                ("hello".into(), LineState::Delivered, Some(1)),
                ("again".into(), LineState::Delivered, Some(2)),
                ("hi there".into(), LineState::Delivered, Some(3)),
            ]
        );
        let room = c
            .room
            .as_ref()
            .map(|r| (r.max_seq, r.lines[2].mine, r.lines[2].ts));
        assert_eq!(room, Some((3, true, Some(1_700_000_000_003))));
    }

    #[test]
    fn empty_and_overlong_messages_are_not_sent() {
        let mut c = online();
        matched(&mut c, "room1");
        assert!(
            c.handle(Input::User(Action::Send("  \n ".into())), 0.0)
                .is_empty()
        );
        let long = "字".repeat(CHAT_MSG_MAX_CHARS + 1);
        assert!(c.handle(Input::User(Action::Send(long)), 0.0).is_empty());
        let max = "字".repeat(CHAT_MSG_MAX_CHARS);
        assert_eq!(
            sent(&c.handle(Input::User(Action::Send(max)), 0.0)).len(),
            1
        );
    }

    #[test]
    fn unacknowledged_messages_are_resent_with_the_same_chat_sn_after_reconnect() {
        let mut c = online();
        matched(&mut c, "room1");
        push_chat(&mut c, &chat("peerBBBBBB", "one", "p1", 1));
        let cmds = c.handle(Input::User(Action::Send("lost?".into())), 0.0);
        let Request::SendChat { chat_sn, .. } = sent(&cmds)[0].1.clone() else {
            panic!()
        };
        // The socket drops before the reply.
        let epoch = c.epoch();
        let cmds = c.handle(
            Input::SocketClosed {
                epoch,
                opened: true,
                code: 1006,
            },
            100.0,
        );
        let Some(Command::ScheduleReconnect { delay_ms, .. }) = cmds.first().cloned() else {
            panic!("{cmds:?}")
        };
        assert!(
            matches!(c.conn, Conn::Reconnecting { due_ms } if due_ms == 100.0 + f64::from(delay_ms))
        );
        // Sending while disconnected queues.
        let cmds = c.handle(Input::User(Action::Send("queued".into())), 150.0);
        assert!(sent(&cmds).is_empty());
        assert_eq!(c.outbox().len(), 2);
        // The timer fires: reconnect from the highest seq seen.
        let cmds = c.handle(Input::ReconnectDue { epoch }, 2000.0);
        assert_eq!(
            cmds,
            vec![Command::Connect {
                epoch: epoch + 1,
                session_id: "S".repeat(40),
                last_seq: 1
            }]
        );
        c.handle(Input::SocketOpened { epoch: epoch + 1 }, 2100.0);
        // The resume: 20001 for the same room, then the server's replay.
        let cmds = matched(&mut c, "room1");
        let resent = sent(&cmds);
        assert_eq!(resent.len(), 2);
        assert!(
            matches!(&resent[0].1, Request::SendChat { chat_sn: sn, chat_msg } if *sn == chat_sn && chat_msg == "lost?")
        );
        // The first one had reached the server before the drop: its replay acknowledges it.
        push_chat(&mut c, &chat("meAAAAAAAA", "lost?", &chat_sn, 2));
        // The dedupe reply to the re-send changes nothing.
        let again = reply_frame(
            &result_json(Code::ChatData, &chat("meAAAAAAAA", "lost?", &chat_sn, 2)),
            &RequestId::from_string(&resent[0].0),
        );
        frame(&mut c, again);
        assert_eq!(
            lines(&c),
            vec![
                ("one".into(), LineState::Delivered, Some(1)),
                ("lost?".into(), LineState::Delivered, Some(2)),
                ("queued".into(), LineState::Pending, None),
            ]
        );
        assert_eq!(c.outbox().len(), 1);
    }

    #[test]
    fn a_reload_replays_the_room_and_resends_the_stored_outbox() {
        let stored = vec![PendingMsg {
            room_id: "room1".into(),
            chat_sn: "snX".into(),
            text: "typed before reload".into(),
        }];
        let (mut c, cmds) = Client::restore(Some(session()), stored, 9);
        assert!(matches!(cmds[..], [Command::Connect { last_seq: 0, .. }]));
        assert_eq!(c.phase, Phase::Lobby);
        c.handle(Input::SocketOpened { epoch: c.epoch() }, 0.0);
        let cmds = matched(&mut c, "room1");
        let resent = sent(&cmds);
        assert_eq!(
            resent[0].1,
            Request::SendChat {
                chat_msg: "typed before reload".into(),
                chat_sn: "snX".into()
            }
        );
        // The whole history comes back, own messages included, each once.
        for _ in 0..2 {
            push_chat(&mut c, &chat("peerBBBBBB", "hi", "a", 1));
            push_chat(&mut c, &chat("meAAAAAAAA", "hey", "b", 2));
        }
        assert_eq!(
            lines(&c),
            vec![
                ("hi".into(), LineState::Delivered, Some(1)),
                ("hey".into(), LineState::Delivered, Some(2)),
                ("typed before reload".into(), LineState::Pending, None),
            ]
        );
        assert!(
            c.room
                .as_ref()
                .is_some_and(|r| !r.lines[0].mine && r.lines[1].mine)
        );
    }

    #[test]
    fn a_match_for_another_room_drops_the_old_outbox() {
        let stored = vec![PendingMsg {
            room_id: "old".into(),
            chat_sn: "snX".into(),
            text: "stale".into(),
        }];
        let (mut c, _) = Client::restore(Some(session()), stored, 9);
        c.handle(Input::SocketOpened { epoch: c.epoch() }, 0.0);
        let cmds = matched(&mut c, "new");
        assert!(cmds.contains(&Command::SaveOutbox));
        assert!(sent(&cmds).is_empty());
        assert!(c.outbox().is_empty());
        assert!(lines(&c).is_empty());
    }

    #[test]
    fn peer_left_ends_the_chat_and_fails_what_is_pending() {
        let mut c = online();
        matched(&mut c, "room1");
        c.handle(Input::User(Action::Send("bye?".into())), 0.0);
        let left = PeerLeftData {
            room_id: "room1".into(),
            player_id: "peerBBBBBB".into(),
            reason: LeaveReason::Left,
            seq: 5,
        };
        frame(
            &mut c,
            push_frame(&result_json(Code::PeerLeft, &left), PUSH_ID),
        );
        assert_eq!(
            c.phase,
            Phase::Ended(EndReason::PeerLeft(LeaveReason::Left))
        );
        let peers = c.room.as_ref().map(|r| r.peers.clone());
        assert_eq!(peers, Some(vec!["peerBBBBBB".to_owned()]));
        assert_eq!(
            lines(&c),
            vec![(
                "bye?".into(),
                LineState::Failed(FailReason::RoomClosed),
                None
            )]
        );
        assert!(c.outbox().is_empty());
        // Sending is over; finding a new partner queues again.
        assert!(
            c.handle(Input::User(Action::Send("x".into())), 0.0)
                .is_empty()
        );
        let cmds = c.handle(Input::User(Action::Match), 50.0);
        assert_eq!(sent(&cmds)[0].1, Request::MatchPlayer);
        assert_eq!(c.phase, Phase::Waiting { since_ms: 50.0 });
        assert!(c.room.is_none());
    }

    #[test]
    fn a_bigger_room_goes_on_when_one_peer_leaves() {
        let mut c = online();
        let data = MatchedData {
            room_id: "room3".into(),
            player_id: "meAAAAAAAA".into(),
            peer_ids: vec!["peerBBBBBB".into(), "peerCCCCCC".into()],
        };
        frame(
            &mut c,
            push_frame(&result_json(Code::Matched, &data), PUSH_ID),
        );
        let left = |who: &str| PeerLeftData {
            room_id: "room3".into(),
            player_id: who.into(),
            reason: LeaveReason::Disconnected,
            seq: 1,
        };
        frame(
            &mut c,
            push_frame(&result_json(Code::PeerLeft, &left("peerBBBBBB")), PUSH_ID),
        );
        assert_eq!(c.phase, Phase::Chat);
        frame(
            &mut c,
            push_frame(&result_json(Code::PeerLeft, &left("peerCCCCCC")), PUSH_ID),
        );
        assert_eq!(
            c.phase,
            Phase::Ended(EndReason::PeerLeft(LeaveReason::Disconnected))
        );
    }

    #[test]
    fn leave_sends_leave_chat_and_returns_to_the_lobby() {
        let mut c = online();
        matched(&mut c, "room1");
        let cmds = c.handle(Input::User(Action::Leave), 0.0);
        let reqs = sent(&cmds);
        assert_eq!(reqs[0].1, Request::LeaveChat);
        assert_eq!(c.phase, Phase::Lobby);
        assert!(c.room.is_none());
        frame(
            &mut c,
            reply_frame(
                &error_result_json(Code::NoRoom),
                &RequestId::from_string(&reqs[0].0),
            ),
        );
        assert_eq!(c.notice, None);
    }

    #[test]
    fn send_errors() {
        let mut c = online();
        matched(&mut c, "room1");
        let cmds = c.handle(Input::User(Action::Send("a".into())), 0.0);
        let id = RequestId::from_string(&sent(&cmds)[0].0);
        // 40009: kept and re-sent later with the same chat_sn.
        let cmds = frame(
            &mut c,
            reply_frame(&error_result_json(Code::RateLimited), &id),
        );
        assert_eq!(cmds, vec![Command::ScheduleResend { delay_ms: 1500 }]);
        assert_eq!(c.notice, Some(Notice::Code(Code::RateLimited)));
        let cmds = c.handle(Input::ResendDue, 0.0);
        let reqs = sent(&cmds);
        assert_eq!(reqs.len(), 1);
        // 40001: that message failed.
        let id = RequestId::from_string(&reqs[0].0);
        frame(
            &mut c,
            reply_frame(&error_result_json(Code::ParamInvalid), &id),
        );
        assert_eq!(
            lines(&c),
            vec![(
                "a".into(),
                LineState::Failed(FailReason::Code(Code::ParamInvalid)),
                None
            )]
        );
        // 40004: the room is gone.
        let cmds = c.handle(Input::User(Action::Send("b".into())), 0.0);
        let id = RequestId::from_string(&sent(&cmds)[0].0);
        frame(&mut c, reply_frame(&error_result_json(Code::NoRoom), &id));
        assert_eq!(c.phase, Phase::Ended(EndReason::Gone));
    }

    #[test]
    fn waiting_players_queue_again_after_a_reconnect() {
        let mut c = online();
        c.handle(Input::User(Action::Match), 0.0);
        let epoch = c.epoch();
        c.handle(
            Input::SocketClosed {
                epoch,
                opened: true,
                code: 1012,
            },
            10.0,
        );
        assert!(matches!(c.phase, Phase::Waiting { .. }));
        let cmds = c.handle(Input::ReconnectDue { epoch }, 1000.0);
        assert!(matches!(cmds[..], [Command::Connect { .. }]));
        let cmds = c.handle(Input::SocketOpened { epoch: epoch + 1 }, 1100.0);
        assert_eq!(sent(&cmds)[0].1, Request::MatchPlayer);
    }

    #[test]
    fn network_back_online_reconnects_at_once() {
        let mut c = online();
        // Nothing to do while connected.
        assert!(c.handle(Input::NetworkOnline, 0.0).is_empty());
        let epoch = c.epoch();
        c.handle(
            Input::SocketClosed {
                epoch,
                opened: true,
                code: 1006,
            },
            0.0,
        );
        let cmds = c.handle(Input::NetworkOnline, 10.0);
        assert!(matches!(cmds[..], [Command::Connect { .. }]));
        assert_eq!(c.conn, Conn::Connecting);
        // The timer of the abandoned wait finds nothing to do.
        assert!(c.handle(Input::ReconnectDue { epoch }, 20.0).is_empty());
    }

    #[test]
    fn taken_over_does_not_reconnect_until_asked() {
        let mut c = online();
        let epoch = c.epoch();
        let cmds = c.handle(
            Input::SocketClosed {
                epoch,
                opened: true,
                code: CLOSE_TAKEN_OVER,
            },
            0.0,
        );
        assert!(cmds.is_empty());
        assert_eq!(c.conn, Conn::TakenOver);
        let cmds = c.handle(Input::User(Action::UseHere), 0.0);
        assert!(matches!(cmds[..], [Command::Connect { .. }]));
        assert_eq!(c.conn, Conn::Connecting);
    }

    #[test]
    fn a_refused_session_is_renewed_once_the_server_is_known_up() {
        let (mut c, _) = Client::restore(Some(session()), vec![], 3);
        let epoch = c.epoch();
        let cmds = c.handle(
            Input::SocketClosed {
                epoch,
                opened: false,
                code: 1006,
            },
            0.0,
        );
        assert_eq!(cmds, vec![Command::CheckHealth { epoch }]);
        assert_eq!(c.conn, Conn::Connecting);
        // Server down: back off and retry with the same session.
        let cmds = c.handle(Input::HealthChecked { epoch, ok: false }, 0.0);
        assert!(matches!(cmds[..], [Command::ScheduleReconnect { .. }]));
        c.handle(Input::ReconnectDue { epoch }, 1000.0);
        let epoch = c.epoch();
        c.handle(
            Input::SocketClosed {
                epoch,
                opened: false,
                code: 1006,
            },
            1000.0,
        );
        // Server up: the session was refused (401); get a new one for the same pool.
        let cmds = c.handle(Input::HealthChecked { epoch, ok: true }, 1000.0);
        assert_eq!(
            cmds,
            vec![Command::PostConfig {
                product_id: 1,
                game_zone: "cn-east".into()
            }]
        );
        let cmds = c.handle(
            Input::ConfigLoaded(Ok(ConfigData {
                session_id: "N".repeat(40),
                request_id: "r".into(),
                account: "newCCCCCCC".into(),
            })),
            1000.0,
        );
        assert_eq!(c.notice, Some(Notice::SessionRenewed));
        assert!(cmds.contains(&Command::ForgetSession(session())));
        assert_eq!(
            c.session.as_ref().map(|s| s.account.as_str()),
            Some("newCCCCCCC")
        );
        assert!(cmds.iter().any(|c| matches!(c, Command::Connect { session_id, last_seq: 0, .. } if *session_id == "N".repeat(40))));
        // If the new session is refused too, do not loop on get_config: back off.
        let epoch = c.epoch();
        c.handle(
            Input::SocketClosed {
                epoch,
                opened: false,
                code: 1006,
            },
            1000.0,
        );
        let cmds = c.handle(Input::HealthChecked { epoch, ok: true }, 1000.0);
        assert!(matches!(cmds[..], [Command::ScheduleReconnect { .. }]));
    }

    #[test]
    fn events_of_a_replaced_socket_are_ignored() {
        let mut c = online();
        let old = c.epoch();
        c.handle(
            Input::SocketClosed {
                epoch: old,
                opened: true,
                code: 1001,
            },
            0.0,
        );
        c.handle(Input::ReconnectDue { epoch: old }, 1.0);
        assert_eq!(c.epoch(), old + 1);
        assert!(
            c.handle(
                Input::SocketClosed {
                    epoch: old,
                    opened: true,
                    code: 1006
                },
                2.0
            )
            .is_empty()
        );
        assert_eq!(c.conn, Conn::Connecting);
        assert!(c.handle(Input::ReconnectDue { epoch: old }, 3.0).is_empty());
    }

    #[test]
    fn backoff_grows_while_connections_fail_and_resets_after_a_stable_one() {
        let mut c = online();
        let mut delays = Vec::new();
        for i in 0..4 {
            let epoch = c.epoch();
            let cmds = c.handle(
                Input::SocketClosed {
                    epoch,
                    opened: true,
                    code: 1006,
                },
                f64::from(i),
            );
            if let Some(Command::ScheduleReconnect { delay_ms, .. }) = cmds.first() {
                delays.push(*delay_ms);
            }
            c.handle(Input::ReconnectDue { epoch }, f64::from(i));
            c.handle(Input::SocketOpened { epoch: c.epoch() }, f64::from(i));
        }
        assert!(delays[3] >= 2000, "{delays:?}");
        // Open for longer than STABLE_MS: the next delay is short again.
        let epoch = c.epoch();
        c.handle(Input::SocketOpened { epoch }, 100.0);
        let cmds = c.handle(
            Input::SocketClosed {
                epoch,
                opened: true,
                code: 1006,
            },
            100.0 + STABLE_MS,
        );
        assert!(
            matches!(cmds[..], [Command::ScheduleReconnect { delay_ms, .. }] if delay_ms <= 500)
        );
    }

    #[test]
    fn switching_zone_forgets_the_player() {
        let mut c = online();
        let cmds = c.handle(Input::User(Action::SwitchZone), 0.0);
        assert!(cmds.contains(&Command::Disconnect));
        assert!(cmds.contains(&Command::ForgetSession(session())));
        assert_eq!(c.phase, Phase::Setup);
        assert_eq!(c.session, None);
        assert_eq!(c.conn, Conn::Offline);
    }

    #[test]
    fn chat_text_is_kept_verbatim() {
        let mut c = online();
        matched(&mut c, "room1");
        push_chat(
            &mut c,
            &chat("peerBBBBBB", "<img src=x onerror=alert(1)>", "p", 1),
        );
        assert_eq!(lines(&c)[0].0, "<img src=x onerror=alert(1)>");
    }
}
