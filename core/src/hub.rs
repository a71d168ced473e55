//! The matchmaking + room state machine: the only place the room rules live.
//!
//! The server owns one [`Hub`] and feeds it what happens — a connection attached, a
//! request, a disconnect, the passing of time — and carries out the [`Effect`]s it
//! returns, in order: each is "send this frame to that connection" or "close that
//! connection". Nothing here reads a clock or does IO, so every rule is tested
//! deterministically (unit tests below, property tests in `tests/`).
//!
//! Rules (PROTOCOL.md §5, §6, §8):
//! - Pools are keyed by (product id, game zone); each is a FIFO queue. When `room_size`
//!   players are queued, the oldest form a room and each gets 20001.
//! - A room has one total order: every accepted message gets the next `seq`, and every
//!   member's frames are emitted in that order, the sender's 20002 reply included.
//! - `chat_sn` is an idempotency key per (sender, room), remembered for the room's last
//!   `sn_memory` messages.
//! - A session player who disconnects keeps its room for `resume_grace`; reconnecting in
//!   time replays 20001, then what it missed, once. Anonymous players leave at once.

use crate::request::Request;
use crate::wire::{self, LeaveReason, MatchedData, RequestId};
use crate::{Code, Millis};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

/// A connection, numbered by the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConnId(pub u64);

/// A player id (10 alphanumerics, made by the server).
pub type PlayerId = Arc<str>;
/// A room id (32 alphanumerics, from the [`IdSource`]).
pub type RoomId = Arc<str>;

/// A matchmaking pool: `(product id, game zone)`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PoolKey {
    pub product_id: i64,
    pub zone: Arc<str>,
}

impl PoolKey {
    /// The pool of anonymous players, `(0, "default")`.
    pub fn anonymous() -> PoolKey {
        PoolKey {
            product_id: 0,
            zone: Arc::from("default"),
        }
    }
}

/// Where fresh room ids come from (the server uses a CSPRNG).
pub trait IdSource: Send {
    fn room_id(&mut self) -> RoomId;
}

/// Tunables of the room rules.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// Players per room (at least 2).
    pub room_size: usize,
    /// How long a disconnected session player keeps its room, in ms.
    pub resume_grace: Millis,
    /// Room events kept for replay on resume.
    pub history_limit: usize,
    /// `chat_sn`s remembered per room for idempotency.
    pub sn_memory: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            room_size: 2,
            resume_grace: 30_000,
            history_limit: 1_000,
            sn_memory: 10_000,
        }
    }
}

/// How a frame is addressed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// The answer to a request: carries the request id.
    Reply(RequestId),
    /// Server-initiated: the server gives it a fresh push id when writing it.
    Push,
}

/// Something the server must do, in the order given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Send a `result` (shared JSON text) to a connection.
    Send {
        conn: ConnId,
        kind: FrameKind,
        code: Code,
        result: Arc<str>,
    },
    /// Close a connection (4001: taken over by a newer connection of the same session).
    Close {
        conn: ConnId,
        code: u16,
        reason: &'static str,
    },
}

/// Close code sent to a connection replaced by a newer one of the same session.
pub const CLOSE_TAKEN_OVER: u16 = 4001;

/// Who is connecting.
#[derive(Clone, Debug)]
pub struct Attach {
    pub conn: ConnId,
    pub player: PlayerId,
    pub pool: PoolKey,
    /// Session players may resume; anonymous ones leave everything when they disconnect.
    pub resumable: bool,
    /// Replay room events after this `seq` instead of "what was missed since the
    /// disconnect" (*extension*: lets a client that lost frames in flight ask again).
    pub resume_after: Option<u64>,
}

/// Counts for metrics and health.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HubStats {
    pub players: usize,
    pub connections: usize,
    pub rooms: usize,
    pub queued: Vec<(PoolKey, usize)>,
}

#[derive(Debug, Serialize, Deserialize)]
enum Status {
    Idle,
    Queued { ticket: u64 },
    InRoom { room: RoomId },
}

#[derive(Debug, Serialize, Deserialize)]
struct Player {
    pool: PoolKey,
    resumable: bool,
    conn: Option<ConnId>,
    status: Status,
    /// When the grace period of a disconnected room member ends.
    grace_deadline: Option<Millis>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Member {
    player: PlayerId,
    /// Last `seq` handed to a live connection of this member.
    delivered: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Room {
    id: RoomId,
    /// Everyone matched into the room, for the `peer_ids` of 20001.
    roster: Vec<PlayerId>,
    /// Members still attached (connected, or disconnected within their grace period).
    members: Vec<Member>,
    /// Members who have not left or timed out; the room closes when this drops below 2.
    active: usize,
    last_seq: u64,
    /// Recent events: the replay history and the `chat_sn` memory in one compact log.
    log: RoomLog,
    closed: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Pool {
    queue: BTreeMap<u64, PlayerId>,
}

/// One room event, stored compactly: the JSON is rebuilt on the rare paths that need it
/// again (a resume's replay, a repeated `chat_sn`), so a busy room keeps ~100 bytes per
/// remembered message instead of its serialized frame.
#[derive(Debug, Serialize, Deserialize)]
enum Event {
    Chat {
        /// Index of the sender in the room's roster.
        sender: usize,
        sn: Box<str>,
        msg: Box<str>,
        ts: Millis,
    },
    Left {
        player: usize,
        reason: LeaveReason,
    },
}

/// The last `capacity` events of a room, in `seq` order (contiguous: every event gets the
/// next `seq`), with a hash index from (sender, `chat_sn`) to `seq` for idempotency.
#[derive(Debug)]
struct RoomLog {
    capacity: usize,
    events: VecDeque<(u64, Event)>,
    /// Hash of (sender, chat_sn) → seq. A hash collision is checked against the event and
    /// then treated as a new message, so it can only ever cost a forgotten `chat_sn`.
    by_sn: HashMap<u64, u64>,
    hasher: std::hash::RandomState,
}

/// A room log as stored in a snapshot: its events; the `chat_sn` index is rebuilt on
/// restore (its hashes are per process).
#[derive(Serialize)]
struct RoomLogRef<'a> {
    capacity: usize,
    events: &'a VecDeque<(u64, Event)>,
}

#[derive(Deserialize)]
struct RoomLogData {
    capacity: usize,
    events: VecDeque<(u64, Event)>,
}

impl Serialize for RoomLog {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        RoomLogRef {
            capacity: self.capacity,
            events: &self.events,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for RoomLog {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let data = RoomLogData::deserialize(deserializer)?;
        let mut log = RoomLog::new(data.capacity);
        for (seq, event) in data.events {
            log.push(seq, event);
        }
        Ok(log)
    }
}

impl RoomLog {
    fn new(capacity: usize) -> RoomLog {
        RoomLog {
            capacity: capacity.max(1),
            events: VecDeque::new(),
            by_sn: HashMap::new(),
            hasher: std::hash::RandomState::new(),
        }
    }

    fn sn_hash(&self, sender: usize, sn: &str) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one((sender, sn))
    }

    fn push(&mut self, seq: u64, event: Event) {
        let was_full = self.events.len() >= self.capacity;
        if was_full && let Some((old_seq, Event::Chat { sender, sn, .. })) = self.events.pop_front()
        {
            let h = self.sn_hash(sender, &sn);
            if self.by_sn.get(&h) == Some(&old_seq) {
                self.by_sn.remove(&h);
            }
        }
        if let Event::Chat { sender, sn, .. } = &event {
            let h = self.sn_hash(*sender, sn);
            self.by_sn.insert(h, seq);
        }
        self.events.push_back((seq, event));
        if !was_full && self.events.len() == self.capacity {
            // The log just filled: from now on every message removes one entry of the
            // index and adds one. hashbrown leaves a tombstone per removal and, once they
            // use up its spare room, doubles a table more than half full; that came some
            // 3.5 capacities of messages later, as a late step of +14 % RSS in the steady
            // soak (docs/BENCHMARKS.md). Taken now, at most half full, the index only
            // ever rehashes in place, so a full room's memory stays constant.
            self.by_sn.reserve(
                self.capacity.saturating_mul(2).saturating_add(1)
                    - self.by_sn.len().min(self.capacity),
            );
        }
    }

    fn get(&self, seq: u64) -> Option<&Event> {
        let first = self.events.front()?.0;
        let index = usize::try_from(seq.checked_sub(first)?).ok()?;
        self.events.get(index).map(|(_, e)| e)
    }

    /// The reply of an earlier message with this (sender, chat_sn), if remembered.
    fn find_chat(&self, sender: usize, sn: &str, roster: &[PlayerId]) -> Option<String> {
        let seq = *self.by_sn.get(&self.sn_hash(sender, sn))?;
        match self.get(seq)? {
            Event::Chat {
                sender: s,
                sn: stored,
                msg,
                ts,
            } if *s == sender && &**stored == sn => Some(wire::chat_result_json(
                roster.get(*s)?,
                msg,
                stored,
                seq,
                *ts,
            )),
            _ => None,
        }
    }

    /// The events after `after` among the last `limit`, as frames' `result`s.
    fn replay<'a>(
        &'a self,
        after: u64,
        limit: usize,
        room_id: &'a str,
        roster: &'a [PlayerId],
    ) -> impl Iterator<Item = (Code, String)> + 'a {
        let skip = self.events.len().saturating_sub(limit);
        self.events
            .iter()
            .skip(skip)
            .filter(move |(seq, _)| *seq > after)
            .filter_map(move |(seq, event)| match event {
                Event::Chat {
                    sender,
                    sn,
                    msg,
                    ts,
                } => Some((
                    Code::ChatData,
                    wire::chat_result_json(roster.get(*sender)?, msg, sn, *seq, *ts),
                )),
                Event::Left { player, reason } => Some((
                    Code::PeerLeft,
                    wire::peer_left_result_json(room_id, roster.get(*player)?, *reason, *seq),
                )),
            })
    }
}

/// The state of a [`Hub`] as JSON text ([`Hub::snapshot`], [`Hub::restore`]); it
/// serializes as that JSON, embedded as is.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HubSnapshot {
    state: Box<serde_json::value::RawValue>,
}

/// A snapshot that does not describe a valid state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotError(pub String);

impl std::fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unusable snapshot: {}", self.0)
    }
}

impl std::error::Error for SnapshotError {}

#[derive(Serialize)]
struct SnapshotRef<'a> {
    players: &'a HashMap<PlayerId, Player>,
    conns: &'a HashMap<ConnId, PlayerId>,
    pools: Vec<(PoolKey, Pool)>,
    rooms: &'a HashMap<RoomId, Room>,
    deadlines: &'a BTreeSet<(Millis, PlayerId)>,
    next_ticket: u64,
}

#[derive(Deserialize)]
struct SnapshotData {
    players: HashMap<PlayerId, Player>,
    conns: HashMap<ConnId, PlayerId>,
    pools: Vec<(PoolKey, Pool)>,
    rooms: HashMap<RoomId, Room>,
    deadlines: BTreeSet<(Millis, PlayerId)>,
    next_ticket: u64,
}

/// The state machine. See the module docs for the rules.
pub struct Hub {
    config: HubConfig,
    ids: Box<dyn IdSource>,
    players: HashMap<PlayerId, Player>,
    conns: HashMap<ConnId, PlayerId>,
    pools: HashMap<PoolKey, Pool>,
    rooms: HashMap<RoomId, Room>,
    deadlines: BTreeSet<(Millis, PlayerId)>,
    next_ticket: u64,
}

impl Hub {
    pub fn new(mut config: HubConfig, ids: Box<dyn IdSource>) -> Hub {
        config.room_size = config.room_size.max(2);
        config.sn_memory = config.sn_memory.max(1);
        // The last entry of a closed room is its 20003, which a resuming member must get.
        config.history_limit = config.history_limit.max(1);
        Hub {
            config,
            ids,
            players: HashMap::new(),
            conns: HashMap::new(),
            pools: HashMap::new(),
            rooms: HashMap::new(),
            deadlines: BTreeSet::new(),
            next_ticket: 0,
        }
    }

    /// The whole state, to be stored and given to [`Hub::restore`] (a node of a cluster
    /// joins from the latest snapshot instead of replaying every event since the start).
    pub fn snapshot(&self) -> Result<HubSnapshot, SnapshotError> {
        let mut pools: Vec<(PoolKey, Pool)> = self
            .pools
            .iter()
            .map(|(k, p)| {
                (
                    k.clone(),
                    Pool {
                        queue: p.queue.clone(),
                    },
                )
            })
            .collect();
        pools.sort_by(|a, b| a.0.cmp(&b.0));
        // Straight to text: a `Value` tree would copy every chat message once more.
        let state = serde_json::value::to_raw_value(&SnapshotRef {
            players: &self.players,
            conns: &self.conns,
            pools,
            rooms: &self.rooms,
            deadlines: &self.deadlines,
            next_ticket: self.next_ticket,
        })
        .map_err(|e| SnapshotError(e.to_string()))?;
        Ok(HubSnapshot { state })
    }

    /// A Hub in the state of a [`Hub::snapshot`], with this config and id source.
    pub fn restore(
        config: HubConfig,
        ids: Box<dyn IdSource>,
        snapshot: HubSnapshot,
    ) -> Result<Hub, SnapshotError> {
        let state: SnapshotData =
            serde_json::from_str(snapshot.state.get()).map_err(|e| SnapshotError(e.to_string()))?;
        let mut hub = Hub::new(config, ids);
        hub.players = state.players;
        hub.conns = state.conns;
        hub.pools = state.pools.into_iter().collect();
        hub.rooms = state.rooms;
        hub.deadlines = state.deadlines;
        hub.next_ticket = state.next_ticket;
        hub.check_invariants().map_err(SnapshotError)?;
        Ok(hub)
    }

    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// The player behind a live connection.
    pub fn player_of(&self, conn: ConnId) -> Option<&PlayerId> {
        self.conns.get(&conn)
    }

    /// A connection opened. A player already connected is taken over: its old connection
    /// is closed with 4001. A player with a room (resume or takeover) gets 20001 again,
    /// then the room events it missed, in order.
    pub fn attach(&mut self, attach: Attach, out: &mut Vec<Effect>) {
        let Attach {
            conn,
            player: player_id,
            pool,
            resumable,
            resume_after,
        } = attach;
        let previous_conn = self.players.get(&player_id).and_then(|p| p.conn);
        if let Some(old) = previous_conn {
            // A takeover is a disconnect immediately followed by a resume.
            self.conns.remove(&old);
            out.push(Effect::Close {
                conn: old,
                code: CLOSE_TAKEN_OVER,
                reason: "session taken over by a newer connection",
            });
            self.leave_queue(&player_id);
            self.mark_disconnected(&player_id);
        }
        self.conns.insert(conn, player_id.clone());
        let player = self.players.entry(player_id.clone()).or_insert(Player {
            pool,
            resumable,
            conn: None,
            status: Status::Idle,
            grace_deadline: None,
        });
        player.conn = Some(conn);
        if let Some(deadline) = player.grace_deadline.take() {
            self.deadlines.remove(&(deadline, player_id.clone()));
        }
        let Status::InRoom { room } = &player.status else {
            return;
        };
        let room_id = room.clone();
        let Some(room) = self.rooms.get_mut(&room_id) else {
            player.status = Status::Idle;
            return;
        };
        let Some(member) = room.members.iter_mut().find(|m| m.player == player_id) else {
            player.status = Status::Idle;
            return;
        };
        let after = resume_after.unwrap_or(member.delivered);
        member.delivered = room.last_seq;
        out.push(send_push(
            conn,
            Code::Matched,
            matched_json(room, &player_id),
        ));
        for (code, result) in
            room.log
                .replay(after, self.config.history_limit, &room.id, &room.roster)
        {
            out.push(send_push(conn, code, result.into()));
        }
        if room.closed {
            // §8.13: the closed room was replayed with its closing 20003; now free.
            player.status = Status::Idle;
            room.members.retain(|m| m.player != player_id);
            if room.members.is_empty() {
                self.rooms.remove(&room_id);
            }
        }
    }

    /// A connection closed (or was dropped). Ignored for a connection already replaced.
    pub fn detach(&mut self, conn: ConnId, now: Millis, out: &mut Vec<Effect>) {
        let Some(player_id) = self.conns.remove(&conn) else {
            return;
        };
        let Some(player) = self.players.get_mut(&player_id) else {
            return;
        };
        if player.conn != Some(conn) {
            return;
        }
        player.conn = None;
        self.leave_queue(&player_id);
        let Some(player) = self.players.get_mut(&player_id) else {
            return;
        };
        match &player.status {
            Status::InRoom { .. } if player.resumable && self.config.resume_grace > 0 => {
                let deadline = now.saturating_add(self.config.resume_grace);
                player.grace_deadline = Some(deadline);
                self.deadlines.insert((deadline, player_id.clone()));
                self.mark_disconnected(&player_id);
            }
            Status::InRoom { .. } => {
                self.depart(&player_id, LeaveReason::Disconnected, out);
                self.players.remove(&player_id);
            }
            _ => {
                self.players.remove(&player_id);
            }
        }
    }

    /// Grace periods that ended by `now` close their members' places in rooms (20003
    /// `disconnected` to the others).
    pub fn tick(&mut self, now: Millis, out: &mut Vec<Effect>) {
        while let Some((deadline, _)) = self.deadlines.first() {
            if *deadline > now {
                break;
            }
            let Some((_, player_id)) = self.deadlines.pop_first() else {
                break;
            };
            let still_away = self
                .players
                .get(&player_id)
                .is_some_and(|p| p.conn.is_none());
            if still_away {
                self.depart(&player_id, LeaveReason::Disconnected, out);
                self.players.remove(&player_id);
            }
        }
    }

    /// When the next grace period ends, if any.
    pub fn next_deadline(&self) -> Option<Millis> {
        self.deadlines.first().map(|(d, _)| *d)
    }

    /// A validated request from a live connection. `now_epoch_ms` stamps chat messages.
    pub fn handle(
        &mut self,
        conn: ConnId,
        id: RequestId,
        request: Request,
        now_epoch_ms: Millis,
        out: &mut Vec<Effect>,
    ) {
        let Some(player_id) = self.conns.get(&conn).cloned() else {
            return;
        };
        match request {
            Request::MatchPlayer => self.match_player(conn, id, &player_id, out),
            Request::CancelMatch => {
                self.leave_queue(&player_id);
                out.push(send_reply(conn, id, Code::Success, success_json()));
            }
            Request::LeaveChat => {
                if self.room_of(&player_id).is_some() {
                    out.push(send_reply(conn, id, Code::Success, success_json()));
                    self.depart(&player_id, LeaveReason::Left, out);
                } else {
                    out.push(send_reply(conn, id, Code::NoRoom, error_json(Code::NoRoom)));
                }
            }
            Request::SendChat { chat_msg, chat_sn } => {
                self.chat(conn, id, &player_id, chat_msg, chat_sn, now_epoch_ms, out)
            }
        }
    }

    /// Forgets a player whose session ended (it must not be connected).
    pub fn forget(&mut self, player_id: &PlayerId, out: &mut Vec<Effect>) {
        if self
            .players
            .get(player_id)
            .is_some_and(|p| p.conn.is_none())
        {
            self.depart(player_id, LeaveReason::Disconnected, out);
            if let Some(deadline) = self
                .players
                .remove(player_id)
                .and_then(|p| p.grace_deadline)
            {
                self.deadlines.remove(&(deadline, player_id.clone()));
            }
        }
    }

    pub fn stats(&self) -> HubStats {
        let mut queued: Vec<(PoolKey, usize)> = self
            .pools
            .iter()
            .map(|(k, p)| (k.clone(), p.queue.len()))
            .collect();
        queued.sort();
        HubStats {
            players: self.players.len(),
            connections: self.conns.len(),
            rooms: self.rooms.len(),
            queued,
        }
    }

    fn room_of(&self, player_id: &PlayerId) -> Option<&RoomId> {
        match &self.players.get(player_id)?.status {
            Status::InRoom { room } => Some(room),
            _ => None,
        }
    }

    fn match_player(
        &mut self,
        conn: ConnId,
        id: RequestId,
        player_id: &PlayerId,
        out: &mut Vec<Effect>,
    ) {
        let Some(player) = self.players.get_mut(player_id) else {
            return;
        };
        match player.status {
            Status::InRoom { .. } => {
                out.push(send_reply(conn, id, Code::InRoom, error_json(Code::InRoom)));
                return;
            }
            Status::Queued { .. } => {
                // Idempotent: the queue position is kept.
                out.push(send_reply(conn, id, Code::Success, success_json()));
                return;
            }
            Status::Idle => {}
        }
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        player.status = Status::Queued { ticket };
        let pool_key = player.pool.clone();
        // §8.7: the reply comes before the 20001 it may cause.
        out.push(send_reply(conn, id, Code::Success, success_json()));
        let pool = self.pools.entry(pool_key.clone()).or_default();
        pool.queue.insert(ticket, player_id.clone());
        if pool.queue.len() < self.config.room_size {
            return;
        }
        let mut roster = Vec::with_capacity(self.config.room_size);
        while roster.len() < self.config.room_size {
            let Some((_, p)) = pool.queue.pop_first() else {
                break;
            };
            roster.push(p);
        }
        if pool.queue.is_empty() {
            self.pools.remove(&pool_key);
        }
        self.open_room(roster, out);
    }

    fn open_room(&mut self, roster: Vec<PlayerId>, out: &mut Vec<Effect>) {
        let room_id = self.ids.room_id();
        let room = Room {
            id: room_id.clone(),
            members: roster
                .iter()
                .map(|p| Member {
                    player: p.clone(),
                    delivered: 0,
                })
                .collect(),
            active: roster.len(),
            roster,
            last_seq: 0,
            log: RoomLog::new(
                self.config
                    .history_limit
                    .max(self.config.sn_memory + self.config.room_size),
            ),
            closed: false,
        };
        for member in &room.members {
            if let Some(player) = self.players.get_mut(&member.player) {
                player.status = Status::InRoom {
                    room: room_id.clone(),
                };
                if let Some(conn) = player.conn {
                    out.push(send_push(
                        conn,
                        Code::Matched,
                        matched_json(&room, &member.player),
                    ));
                }
            }
        }
        self.rooms.insert(room_id, room);
    }

    #[allow(clippy::too_many_arguments)]
    fn chat(
        &mut self,
        conn: ConnId,
        id: RequestId,
        sender: &PlayerId,
        chat_msg: String,
        chat_sn: String,
        now_epoch_ms: Millis,
        out: &mut Vec<Effect>,
    ) {
        let Some(room) = self
            .room_of(sender)
            .cloned()
            .and_then(|r| self.rooms.get_mut(&r))
        else {
            out.push(send_reply(conn, id, Code::NoRoom, error_json(Code::NoRoom)));
            return;
        };
        let Some(slot) = room.roster.iter().position(|p| p == sender) else {
            out.push(send_reply(conn, id, Code::NoRoom, error_json(Code::NoRoom)));
            return;
        };
        if let Some(first) = room.log.find_chat(slot, &chat_sn, &room.roster) {
            // §8.9: a repeat gets the first message's reply, unchanged, and is not delivered.
            out.push(send_reply(conn, id, Code::ChatData, first.into()));
            return;
        }
        room.last_seq += 1;
        let seq = room.last_seq;
        let result: Arc<str> =
            wire::chat_result_json(sender, &chat_msg, &chat_sn, seq, now_epoch_ms).into();
        room.log.push(
            seq,
            Event::Chat {
                sender: slot,
                sn: chat_sn.into_boxed_str(),
                msg: chat_msg.into_boxed_str(),
                ts: now_epoch_ms,
            },
        );
        let mut reply = Some(id);
        emit(
            room,
            &self.players,
            seq,
            Code::ChatData,
            sender,
            &result,
            &mut reply,
            out,
        );
    }

    /// Takes a player out of its room (`left`, or `disconnected` after the grace period).
    fn depart(&mut self, player_id: &PlayerId, reason: LeaveReason, out: &mut Vec<Effect>) {
        let Some(player) = self.players.get_mut(player_id) else {
            return;
        };
        let Status::InRoom { room: room_id } = std::mem::replace(&mut player.status, Status::Idle)
        else {
            return;
        };
        let Some(room) = self.rooms.get_mut(&room_id) else {
            return;
        };
        room.members.retain(|m| &m.player != player_id);
        if !room.closed {
            room.active = room.active.saturating_sub(1);
            room.last_seq += 1;
            let seq = room.last_seq;
            let result: Arc<str> =
                wire::peer_left_result_json(&room.id, player_id, reason, seq).into();
            if let Some(slot) = room.roster.iter().position(|p| p == player_id) {
                room.log.push(
                    seq,
                    Event::Left {
                        player: slot,
                        reason,
                    },
                );
            }
            emit(
                room,
                &self.players,
                seq,
                Code::PeerLeft,
                player_id,
                &result,
                &mut None,
                out,
            );
            if room.active < 2 {
                room.closed = true;
            }
        }
        if room.closed {
            // Connected members are free now; disconnected ones learn of it on resume.
            let players = &mut self.players;
            room.members.retain(|m| match players.get_mut(&m.player) {
                Some(p) if p.conn.is_some() => {
                    p.status = Status::Idle;
                    false
                }
                Some(_) => true,
                None => false,
            });
            if room.members.is_empty() {
                self.rooms.remove(&room_id);
            }
        }
    }

    fn leave_queue(&mut self, player_id: &PlayerId) {
        let Some(player) = self.players.get_mut(player_id) else {
            return;
        };
        if let Status::Queued { ticket } = player.status {
            player.status = Status::Idle;
            if let Some(pool) = self.pools.get_mut(&player.pool) {
                pool.queue.remove(&ticket);
                if pool.queue.is_empty() {
                    self.pools.remove(&player.pool);
                }
            }
        }
    }

    /// Records that a room member has no live connection from now on: everything accepted
    /// so far was handed to the old connection.
    fn mark_disconnected(&mut self, player_id: &PlayerId) {
        let Some(player) = self.players.get_mut(player_id) else {
            return;
        };
        player.conn = None;
        if let Status::InRoom { room } = &player.status
            && let Some(room) = self.rooms.get_mut(room)
            && let Some(m) = room.members.iter_mut().find(|m| &m.player == player_id)
        {
            m.delivered = room.last_seq;
        }
    }

    /// Checks the structural invariants; for tests.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut seen_in_rooms: HashMap<&PlayerId, &RoomId> = HashMap::new();
        for (room_id, room) in &self.rooms {
            for m in &room.members {
                if let Some(other) = seen_in_rooms.insert(&m.player, room_id) {
                    return Err(format!("{} in rooms {other} and {room_id}", m.player));
                }
                match self.players.get(&m.player).map(|p| &p.status) {
                    Some(Status::InRoom { room }) if room == room_id => {}
                    other => return Err(format!("{} member of {room_id} but {other:?}", m.player)),
                }
            }
            let pool = room
                .members
                .first()
                .and_then(|m| self.players.get(&m.player))
                .map(|p| &p.pool);
            for m in &room.members {
                let p = self.players.get(&m.player).map(|p| &p.pool);
                if pool.is_some() && p != pool {
                    return Err(format!("room {room_id} mixes pools"));
                }
            }
        }
        for (key, pool) in &self.pools {
            if pool.queue.is_empty() {
                return Err(format!("empty pool {key:?} kept"));
            }
            for (ticket, p) in &pool.queue {
                match self.players.get(p) {
                    Some(player)
                        if matches!(player.status, Status::Queued { ticket: t } if t == *ticket)
                            && &player.pool == key
                            && player.conn.is_some() => {}
                    other => return Err(format!("{p} queued in {key:?} but {other:?}")),
                }
                if seen_in_rooms.contains_key(p) {
                    return Err(format!("{p} queued and in a room"));
                }
            }
        }
        for (conn, p) in &self.conns {
            if self.players.get(p).and_then(|p| p.conn) != Some(*conn) {
                return Err(format!(
                    "conn {conn:?} maps to {p} which does not point back"
                ));
            }
        }
        for (id, p) in &self.players {
            match &p.status {
                Status::InRoom { room } if !seen_in_rooms.contains_key(id) => {
                    return Err(format!("{id} thinks it is in {room} but is not a member"));
                }
                Status::Queued { ticket } => {
                    let queued = self
                        .pools
                        .get(&p.pool)
                        .and_then(|pool| pool.queue.get(ticket));
                    if queued != Some(id) {
                        return Err(format!("{id} thinks it is queued but is not"));
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Sends an event to every connected member (the origin of a chat gets it as the reply).
#[allow(clippy::too_many_arguments)]
fn emit(
    room: &mut Room,
    players: &HashMap<PlayerId, Player>,
    seq: u64,
    code: Code,
    origin: &PlayerId,
    result: &Arc<str>,
    reply: &mut Option<RequestId>,
    out: &mut Vec<Effect>,
) {
    // The sender's reply goes first, whatever its place in the member list, so the
    // effects of one request always start with its answer.
    if let Some(id) = reply.take()
        && let Some(member) = room.members.iter_mut().find(|m| &m.player == origin)
        && let Some(conn) = players.get(&member.player).and_then(|p| p.conn)
    {
        member.delivered = seq;
        out.push(send_reply(conn, id, code, result.clone()));
    }
    for member in &mut room.members {
        if &member.player == origin {
            continue;
        }
        let Some(conn) = players.get(&member.player).and_then(|p| p.conn) else {
            continue;
        };
        member.delivered = seq;
        out.push(send_push(conn, code, result.clone()));
    }
}

fn matched_json(room: &Room, player: &PlayerId) -> Arc<str> {
    let data = MatchedData {
        room_id: room.id.to_string(),
        player_id: player.to_string(),
        peer_ids: room
            .roster
            .iter()
            .filter(|p| *p != player)
            .map(|p| p.to_string())
            .collect(),
    };
    wire::result_json(Code::Matched, &data).into()
}

fn success_json() -> Arc<str> {
    // Built once: every 20000 shares these bytes.
    static SUCCESS: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    SUCCESS
        .get_or_init(|| wire::success_result_json().into())
        .clone()
}

fn error_json(code: Code) -> Arc<str> {
    wire::error_result_json(code).into()
}

fn send_reply(conn: ConnId, id: RequestId, code: Code, result: Arc<str>) -> Effect {
    Effect::Send {
        conn,
        kind: FrameKind::Reply(id),
        code,
        result,
    }
}

fn send_push(conn: ConnId, code: Code, result: Arc<str>) -> Effect {
    Effect::Send {
        conn,
        kind: FrameKind::Push,
        code,
        result,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(sender: usize, n: u64) -> Event {
        Event::Chat {
            sender,
            sn: format!("sn-{n}").into_boxed_str(),
            msg: "hello".into(),
            ts: 0,
        }
    }

    /// A full log's `chat_sn` index keeps the size it took when the log filled, however
    /// many messages pass through it after (without the reservation in `push`, it doubled
    /// after ≈ 3.5 capacities).
    #[test]
    fn full_log_index_does_not_grow() {
        let capacity = 1_000;
        let mut log = RoomLog::new(capacity);
        let mut seq = 0;
        while log.events.len() < capacity {
            seq += 1;
            log.push(seq, chat((seq % 2) as usize, seq));
        }
        let at_fill = log.by_sn.capacity();
        assert!(at_fill > 2 * capacity, "index at fill: {at_fill}");
        let mut largest = at_fill;
        for _ in 0..10 * capacity {
            seq += 1;
            log.push(seq, chat((seq % 2) as usize, seq));
            largest = largest.max(log.by_sn.capacity());
        }
        assert_eq!(largest, at_fill, "the index grew after the log was full");
        assert_eq!(log.events.len(), capacity);
        assert_eq!(log.by_sn.len(), capacity);
        // The memory still answers for the last `capacity` messages, and only those.
        let roster = vec![PlayerId::from("a"), PlayerId::from("b")];
        let newest = seq;
        let oldest_kept = seq - capacity as u64 + 1;
        assert!(
            log.find_chat((newest % 2) as usize, &format!("sn-{newest}"), &roster)
                .is_some()
        );
        assert!(
            log.find_chat(
                (oldest_kept % 2) as usize,
                &format!("sn-{oldest_kept}"),
                &roster
            )
            .is_some()
        );
        let forgotten = oldest_kept - 1;
        assert!(
            log.find_chat(
                (forgotten % 2) as usize,
                &format!("sn-{forgotten}"),
                &roster
            )
            .is_none()
        );
    }
}
