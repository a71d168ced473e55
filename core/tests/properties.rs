//! Property tests of the room state machine ([`Hub`]) and of the frame parser feeding it.
//!
//! `random_operation_sequences_keep_every_room_rule` drives a [`Hub`] through random
//! sequences of attaches (anonymous players, session players, resumes, takeovers),
//! match / cancel / chat (with repeated `chat_sn`s) / leave requests, detaches, requests
//! on closed connections, `forget`s and ticks of an advancing clock, in 2- and 3-player
//! rooms spread over three pools. Beside the hub runs an independent model of the rules
//! (PROTOCOL.md §5, §6, §8) that predicts which connection gets which frames, and tracks
//! what every player received. After every operation it checks that:
//!
//! 1. `Hub::check_invariants` holds, and the hub's counts match the model's;
//! 2. every accepted message reaches every member exactly once, in the room's order:
//!    per (player, room) the `seq`s received over all of the player's connections, live
//!    and replayed after a resume's 20001, run 1, 2, 3, … with no duplicate and no gap,
//!    connected members are always caught up, and every member sees the same frame
//!    for one `seq`;
//! 3. the players of a 20001 (`player_id` + `peer_ids`) all come from one pool;
//! 4. a repeated `chat_sn` of one sender in one room is answered with the first reply,
//!    unchanged, and never pushed again;
//! 5. no effect is addressed to a closed or detached connection (a `Close` only to an
//!    open one).
//!
//! `frame_text_through_parser_and_hub` feeds arbitrary strings and JSON-shaped
//! strings (nested values, envelopes with method names and params shapes, mutations)
//! through `request::parse_frame`, which must not panic, must answer rejections with
//! well-formed frames, and whose accepted requests must leave a live [`Hub`] consistent.
//!
//! Two `generated_*` tests check that the generators reach every rule and every parser
//! outcome (so the properties cannot pass vacuously), and one fixed scenario checks the
//! model itself. 256 cases per property, sequences of up to 60 operations.

use matchchat_core::Code;
use matchchat_core::hub::{
    Attach, CLOSE_TAKEN_OVER, ConnId, Effect, FrameKind, Hub, HubConfig, IdSource, PoolKey,
};
use matchchat_core::request::{Rejection, Request, parse_frame, peek_id};
use matchchat_core::wire::RequestId;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, FileFailurePersistence, TestRunner};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

/// Room ids `room0…01`, `room0…02`, …: the model predicts them.
struct Counter(u64);
impl IdSource for Counter {
    fn room_id(&mut self) -> Arc<str> {
        self.0 += 1;
        room_name(self.0).into()
    }
}

fn room_name(n: u64) -> String {
    format!("room{n:028}")
}

/// Pool 0 is the anonymous pool; 1 and 2 are session pools of two products.
fn pool_key(i: usize) -> PoolKey {
    match i {
        0 => PoolKey::anonymous(),
        n => PoolKey {
            product_id: n as i64,
            zone: "east".into(),
        },
    }
}

const EPOCH: u64 = 1_700_000_000_000;

// ---------------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    /// Anonymous slot: a fresh player if the slot is not connected. Session slot: a new
    /// connection (resume when away, takeover when connected).
    Attach(usize),
    /// Requests from the slot's live connection (none: nothing happens).
    Match(usize),
    Cancel(usize),
    Chat {
        slot: usize,
        sn: u8,
        msg: u8,
    },
    Leave(usize),
    /// Closes the slot's live connection.
    Detach(usize),
    /// A request on (or, with `detach`, a late close of) a connection already closed:
    /// the hub must ignore it.
    Stale {
        conn: u64,
        detach: bool,
    },
    /// Advances the clock by this many ms and ticks.
    Tick(u64),
    /// `Hub::forget` of the slot's session player.
    Forget(usize),
}

/// A generated operation: `pick` chooses among the slots it applies to when it runs
/// (connected slots for requests, disconnected ones for an attach, …), so that few
/// operations are wasted. [`Sim::resolve`] turns it into an [`Op`].
#[derive(Clone, Copy, Debug)]
enum Kind {
    Attach,
    Takeover,
    Match,
    Cancel,
    Chat,
    Leave,
    Detach,
    /// A request on, or a late close of, a connection already closed or taken over.
    Stale,
    Tick,
    Forget,
}

#[derive(Clone, Debug)]
struct GenOp {
    kind: Kind,
    pick: usize,
    sn: u8,
    msg: u8,
    delta: u64,
}

#[derive(Clone, Debug)]
struct Scenario {
    room_size: usize,
    grace: u64,
    /// (session player?, pool) per slot; anonymous players are always in pool 0.
    slots: Vec<(bool, usize)>,
    ops: Vec<GenOp>,
}

fn op_strategy() -> impl Strategy<Value = GenOp> {
    let kind = prop_oneof![
        3 => Just(Kind::Attach),
        1 => Just(Kind::Takeover),
        5 => Just(Kind::Match),
        1 => Just(Kind::Cancel),
        8 => Just(Kind::Chat),
        1 => Just(Kind::Leave),
        3 => Just(Kind::Detach),
        1 => Just(Kind::Stale),
        3 => Just(Kind::Tick),
        1 => Just(Kind::Forget),
    ];
    (
        kind,
        0usize..16,
        0u8..4,
        0u8..3,
        prop_oneof![3 => 0u64..=400, 1 => 900u64..=1_100, 1 => 1_000u64..=3_000],
    )
        .prop_map(|(kind, pick, sn, msg, delta)| GenOp {
            kind,
            pick,
            sn,
            msg,
            delta,
        })
}

fn scenario_strategy() -> impl Strategy<Value = Scenario> {
    (
        prop_oneof![3 => Just(2usize), 1 => Just(3usize)],
        prop_oneof![4 => Just(1_000u64), 1 => Just(0u64)],
        prop::collection::vec(
            (
                prop::bool::weighted(0.7),
                prop_oneof![2 => Just(0usize), 3 => Just(1usize), 1 => Just(2usize)],
            )
                .prop_map(|(s, p)| (s, if s { p } else { 0 })),
            3..=6,
        ),
        prop::collection::vec(op_strategy(), 1..=60),
    )
        .prop_map(|(room_size, grace, slots, ops)| Scenario {
            room_size,
            grace,
            slots,
            ops,
        })
}

// ---------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
enum Status {
    Idle,
    Queued,
    InRoom(String),
}

#[derive(Debug)]
struct MPlayer {
    pool: usize,
    resumable: bool,
    conn: Option<u64>,
    status: Status,
    /// End of the grace period of a disconnected room member.
    deadline: Option<u64>,
}

#[derive(Debug)]
enum Content {
    Chat {
        sender: String,
        sn: String,
        msg: String,
    },
    Left {
        player: String,
        reason: &'static str,
    },
}

#[derive(Debug)]
struct Logged {
    content: Content,
    /// The `result` text, once some member received it: every member must get the same.
    result: Option<String>,
}

#[derive(Debug)]
struct MRoom {
    pool: usize,
    roster: Vec<String>,
    /// Still attached to the room (connected, or away within the grace period).
    members: BTreeSet<String>,
    /// Not departed; the room closes when fewer than 2 remain.
    active: BTreeSet<String>,
    closed: bool,
    last_seq: u64,
    log: BTreeMap<u64, Logged>,
    /// (sender, chat_sn) → seq of the accepted message (model side).
    sns: HashMap<(String, String), u64>,
    /// (sender, chat_sn) → seq, from the frames actually received (property 4).
    delivered_sns: HashMap<(String, String), u64>,
}

struct MConn {
    player: String,
    open: bool,
}

struct SlotState {
    session: bool,
    pool: usize,
    player: Option<String>,
}

/// How often each rule was exercised (for the coverage test).
#[derive(Clone, Debug, Default)]
struct Counters {
    rooms_opened: u64,
    chats_pushed: u64,
    repeats: u64,
    departures_seen: u64,
    replays: u64,
    resumes_into_closed_rooms: u64,
    takeovers: u64,
    expiries: u64,
    stale_requests: u64,
}

impl Counters {
    fn add(&mut self, o: &Counters) {
        self.rooms_opened += o.rooms_opened;
        self.chats_pushed += o.chats_pushed;
        self.repeats += o.repeats;
        self.departures_seen += o.departures_seen;
        self.replays += o.replays;
        self.resumes_into_closed_rooms += o.resumes_into_closed_rooms;
        self.takeovers += o.takeovers;
        self.expiries += o.expiries;
        self.stale_requests += o.stale_requests;
    }
}

/// What the model expects from one operation.
#[derive(Default)]
struct Expect {
    /// Connections open when the effects start (the new one of an attach included, the
    /// detached one excluded).
    open: BTreeSet<u64>,
    closes: Vec<u64>,
    /// (conn, kind, code) of every frame; compared per connection, in order.
    frames: Vec<(u64, FrameKind, i32)>,
    /// The request's reply must be the very first effect (§8.7).
    reply_first: Option<u64>,
    chat: Option<ChatCtx>,
    /// (player, room, seq): after the operation the player has received exactly up to seq.
    caught_up: Vec<(String, String, u64)>,
}

struct ChatCtx {
    sender: String,
    sn: String,
    msg: String,
    seq: u64,
    repeat: bool,
}

enum Action {
    Nothing,
    Attach(Attach),
    Detach(u64),
    Tick,
    Handle(u64, RequestId, Request),
    Forget(String),
}

struct Sim {
    hub: Hub,
    room_size: usize,
    grace: u64,
    slots: Vec<SlotState>,
    players: BTreeMap<String, MPlayer>,
    /// Pool of every player id ever seen (peers may be gone when a 20001 is replayed).
    pool_of: HashMap<String, usize>,
    /// Every room ever opened (kept after it is gone, for replays and checks).
    rooms: BTreeMap<String, MRoom>,
    queues: BTreeMap<usize, VecDeque<String>>,
    conns: BTreeMap<u64, MConn>,
    /// (player, room) → last seq received, over all its connections, live or replayed.
    streams: HashMap<(String, String), u64>,
    next_conn: u64,
    next_anon: u64,
    next_room: u64,
    next_request: u64,
    now: u64,
    counters: Counters,
    /// Replace the hub by `Hub::restore(hub.snapshot())` (through JSON text) before each
    /// step: the restored hub must behave exactly as the model predicts too.
    through_snapshots: bool,
}

impl Sim {
    fn new(s: &Scenario) -> Sim {
        let hub = Hub::new(
            HubConfig {
                room_size: s.room_size,
                resume_grace: s.grace,
                ..HubConfig::default()
            },
            Box::new(Counter(0)),
        );
        Sim {
            hub,
            room_size: s.room_size,
            grace: s.grace,
            slots: s
                .slots
                .iter()
                .map(|&(session, pool)| SlotState {
                    session,
                    pool,
                    player: None,
                })
                .collect(),
            players: BTreeMap::new(),
            pool_of: HashMap::new(),
            rooms: BTreeMap::new(),
            queues: BTreeMap::new(),
            conns: BTreeMap::new(),
            streams: HashMap::new(),
            next_conn: 0,
            next_anon: 0,
            next_room: 0,
            next_request: 0,
            now: 0,
            counters: Counters::default(),
            through_snapshots: false,
        }
    }

    /// Runs a whole scenario: every slot attached, the operations, then a tick past
    /// every grace period.
    fn run(s: &Scenario) -> Counters {
        let mut sim = Sim::start(s);
        for g in &s.ops {
            if let Some(op) = sim.resolve(g) {
                sim.step(&op);
            }
        }
        sim.finish()
    }

    fn start(s: &Scenario) -> Sim {
        let mut sim = Sim::new(s);
        for i in 0..sim.slots.len() {
            sim.step(&Op::Attach(i));
        }
        sim
    }

    fn finish(mut self) -> Counters {
        self.step(&Op::Tick(self.grace * 3 + 1));
        assert_eq!(self.hub.next_deadline(), None, "every grace period ended");
        self.counters
    }

    /// The concrete operation a generated one stands for now, if any applies.
    fn resolve(&self, g: &GenOp) -> Option<Op> {
        let connected = |s: &usize| self.live_conn(*s).is_some();
        let all: Vec<usize> = (0..self.slots.len()).collect();
        let pick = |candidates: Vec<usize>| {
            (!candidates.is_empty()).then(|| candidates[g.pick % candidates.len()])
        };
        let live = || pick(all.iter().copied().filter(connected).collect());
        // Mostly players the request means something to; sometimes anyone connected
        // (40003, 40004, an idempotent match).
        let preferring = |want: fn(&Status) -> bool| {
            let status = |s: &usize| {
                let p = self.slots[*s].player.as_ref()?;
                self.players.get(p).map(|p| want(&p.status))
            };
            let preferred: Vec<usize> = all
                .iter()
                .copied()
                .filter(|s| connected(s) && status(s) == Some(true))
                .collect();
            if g.pick < 13 && !preferred.is_empty() {
                pick(preferred)
            } else {
                live()
            }
        };
        // With nobody in a room, a chat would be one more 40004: match someone instead.
        let nobody = |want: fn(&Status) -> bool| !self.players.values().any(|p| want(&p.status));
        let idle = |s: &Status| *s == Status::Idle;
        let in_room = |s: &Status| matches!(s, Status::InRoom(_));
        Some(match g.kind {
            Kind::Attach => {
                // Mostly a resume within the grace period, if someone is away.
                let away: Vec<usize> = all
                    .iter()
                    .copied()
                    .filter(|s| {
                        self.slots[*s]
                            .player
                            .as_ref()
                            .and_then(|p| self.players.get(p))
                            .is_some_and(|p| p.deadline.is_some())
                    })
                    .collect();
                if g.pick < 10 && !away.is_empty() {
                    Op::Attach(pick(away)?)
                } else {
                    Op::Attach(pick(
                        all.iter().copied().filter(|s| !connected(s)).collect(),
                    )?)
                }
            }
            Kind::Takeover => Op::Attach(pick(
                all.iter()
                    .copied()
                    .filter(|s| self.slots[*s].session && connected(s))
                    .collect(),
            )?),
            Kind::Match => Op::Match(preferring(idle)?),
            Kind::Cancel => Op::Cancel(live()?),
            Kind::Chat if g.pick < 13 && nobody(in_room) => Op::Match(preferring(idle)?),
            Kind::Chat => Op::Chat {
                slot: preferring(in_room)?,
                sn: g.sn,
                msg: g.msg,
            },
            Kind::Leave => Op::Leave(preferring(in_room)?),
            Kind::Detach => Op::Detach(preferring(in_room)?),
            Kind::Stale => {
                // Any closed connection: one whose player disconnected, or one taken over.
                let closed: Vec<u64> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| !c.open)
                    .map(|(id, _)| *id)
                    .collect();
                let conn = *closed.get(g.pick % closed.len().max(1))?;
                Op::Stale {
                    conn,
                    detach: g.sn.is_multiple_of(2),
                }
            }
            Kind::Tick => Op::Tick(g.delta),
            Kind::Forget => Op::Forget(pick(
                all.iter()
                    .copied()
                    .filter(|s| self.slots[*s].session && !connected(s))
                    .collect(),
            )?),
        })
    }

    fn stream(&self, player: &str, room: &str) -> u64 {
        self.streams
            .get(&(player.to_owned(), room.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    fn room_of(&self, player: &str) -> Option<String> {
        match &self.players.get(player)?.status {
            Status::InRoom(r) => Some(r.clone()),
            _ => None,
        }
    }

    fn live_conn(&self, slot: usize) -> Option<(u64, String)> {
        let p = self.slots[slot].player.clone()?;
        let c = self.players.get(&p)?.conn?;
        Some((c, p))
    }

    fn conn_of(&self, player: &str) -> Option<u64> {
        self.players.get(player).and_then(|p| p.conn)
    }

    fn leave_queue(&mut self, player: &str) {
        let p = self.players.get_mut(player).expect("known player");
        if p.status == Status::Queued {
            p.status = Status::Idle;
            let q = self
                .queues
                .get_mut(&p.pool)
                .expect("queue of a queued player");
            q.retain(|x| x != player);
            if q.is_empty() {
                self.queues.remove(&p.pool);
            }
        }
    }

    /// One operation: predict, run it on the hub, compare, check.
    fn step(&mut self, op: &Op) {
        if self.through_snapshots {
            let text = serde_json::to_string(&self.hub.snapshot().expect("a snapshot"))
                .expect("a snapshot encodes");
            let snapshot = serde_json::from_str(&text).expect("a snapshot decodes");
            let config = self.hub.config().clone();
            self.hub = Hub::restore(config, Box::new(Counter(self.next_room)), snapshot)
                .expect("a snapshot restores");
        }
        let pre_rooms: HashMap<String, String> = self
            .players
            .iter()
            .filter_map(|(id, p)| match &p.status {
                Status::InRoom(r) => Some((id.clone(), r.clone())),
                _ => None,
            })
            .collect();
        let mut x = Expect {
            open: self
                .conns
                .iter()
                .filter(|(_, c)| c.open)
                .map(|(id, _)| *id)
                .collect(),
            ..Expect::default()
        };
        let action = self.predict(op, &mut x);
        let mut out = Vec::new();
        match action {
            Action::Nothing => return,
            Action::Attach(a) => self.hub.attach(a, &mut out),
            Action::Detach(c) => self.hub.detach(ConnId(c), self.now, &mut out),
            Action::Tick => self.hub.tick(self.now, &mut out),
            Action::Handle(c, id, request) => {
                self.hub
                    .handle(ConnId(c), id, request, EPOCH + self.now, &mut out)
            }
            Action::Forget(p) => self.hub.forget(&Arc::from(p.as_str()), &mut out),
        }
        self.check_effects(op, &x, &out, &pre_rooms);
        self.check_state(op, &x);
    }

    fn predict(&mut self, op: &Op, x: &mut Expect) -> Action {
        let n = self.slots.len();
        match *op {
            Op::Attach(s) => self.predict_attach(s % n, x),
            Op::Detach(s) => self.predict_detach(s % n, x),
            Op::Stale { conn, detach } => {
                assert!(!self.conns[&conn].open, "a stale connection is closed");
                self.counters.stale_requests += 1;
                if detach {
                    Action::Detach(conn)
                } else {
                    self.next_request += 1;
                    let id = RequestId::from_string(&format!("r{}", self.next_request));
                    Action::Handle(conn, id, Request::MatchPlayer)
                }
            }
            Op::Tick(d) => {
                self.now += d;
                self.predict_tick(x);
                Action::Tick
            }
            Op::Forget(s) => {
                let s = s % n;
                if !self.slots[s].session {
                    return Action::Nothing;
                }
                let pid = session_player(s);
                if self.players.get(&pid).is_some_and(|p| p.conn.is_none()) {
                    self.depart(&pid, "disconnected", x);
                    self.players.remove(&pid);
                }
                Action::Forget(pid)
            }
            Op::Match(s) | Op::Cancel(s) | Op::Leave(s) | Op::Chat { slot: s, .. } => {
                let s = s % n;
                let request = match *op {
                    Op::Match(_) => Request::MatchPlayer,
                    Op::Cancel(_) => Request::CancelMatch,
                    Op::Leave(_) => Request::LeaveChat,
                    Op::Chat { sn, msg, .. } => Request::SendChat {
                        chat_msg: format!("message {msg}"),
                        chat_sn: format!("sn{sn}"),
                    },
                    _ => unreachable!(),
                };
                self.next_request += 1;
                let id = RequestId::from_string(&format!("r{}", self.next_request));
                match self.live_conn(s) {
                    Some((c, p)) => {
                        x.reply_first = Some(c);
                        self.predict_request(c, &p, &id, &request, x);
                        Action::Handle(c, id, request)
                    }
                    None => Action::Nothing,
                }
            }
        }
    }

    fn predict_request(
        &mut self,
        c: u64,
        p: &str,
        id: &RequestId,
        request: &Request,
        x: &mut Expect,
    ) {
        let reply = |code: i32| (c, FrameKind::Reply(id.clone()), code);
        let status = self.players[p].status.clone();
        match request {
            Request::MatchPlayer => match status {
                Status::InRoom(_) => x.frames.push(reply(40003)),
                Status::Queued => x.frames.push(reply(20000)),
                Status::Idle => {
                    x.frames.push(reply(20000));
                    let player = self.players.get_mut(p).expect("known player");
                    player.status = Status::Queued;
                    let pool = player.pool;
                    let queue = self.queues.entry(pool).or_default();
                    queue.push_back(p.to_owned());
                    if queue.len() >= self.room_size {
                        let roster: Vec<String> = queue.drain(..self.room_size).collect();
                        if queue.is_empty() {
                            self.queues.remove(&pool);
                        }
                        self.open_room(roster, pool, x);
                    }
                }
            },
            Request::CancelMatch => {
                self.leave_queue(p);
                x.frames.push(reply(20000));
            }
            Request::LeaveChat => match status {
                Status::InRoom(_) => {
                    x.frames.push(reply(20000));
                    self.depart(p, "left", x);
                }
                _ => x.frames.push(reply(40004)),
            },
            Request::SendChat { chat_msg, chat_sn } => {
                let Status::InRoom(r) = status else {
                    x.frames.push(reply(40004));
                    return;
                };
                x.frames.push(reply(20002));
                let key = (p.to_owned(), chat_sn.clone());
                let room = self.rooms.get_mut(&r).expect("model room");
                let (seq, repeat) = match room.sns.get(&key) {
                    Some(&seq) => {
                        self.counters.repeats += 1;
                        (seq, true)
                    }
                    None => {
                        room.last_seq += 1;
                        let seq = room.last_seq;
                        room.sns.insert(key, seq);
                        room.log.insert(
                            seq,
                            Logged {
                                content: Content::Chat {
                                    sender: p.to_owned(),
                                    sn: chat_sn.clone(),
                                    msg: chat_msg.clone(),
                                },
                                result: None,
                            },
                        );
                        for m in &room.roster {
                            if m != p
                                && room.members.contains(m)
                                && let Some(mc) = self.players.get(m).and_then(|q| q.conn)
                            {
                                x.frames.push((mc, FrameKind::Push, 20002));
                                self.counters.chats_pushed += 1;
                            }
                        }
                        (seq, false)
                    }
                };
                x.chat = Some(ChatCtx {
                    sender: p.to_owned(),
                    sn: chat_sn.clone(),
                    msg: chat_msg.clone(),
                    seq,
                    repeat,
                });
            }
        }
    }

    fn open_room(&mut self, roster: Vec<String>, pool: usize, x: &mut Expect) {
        self.next_room += 1;
        let id = room_name(self.next_room);
        for m in &roster {
            let p = self.players.get_mut(m).expect("queued player");
            p.status = Status::InRoom(id.clone());
            let c = p.conn.expect("queued players are connected");
            x.frames.push((c, FrameKind::Push, 20001));
        }
        self.counters.rooms_opened += 1;
        self.rooms.insert(
            id,
            MRoom {
                pool,
                members: roster.iter().cloned().collect(),
                active: roster.iter().cloned().collect(),
                roster,
                closed: false,
                last_seq: 0,
                log: BTreeMap::new(),
                sns: HashMap::new(),
                delivered_sns: HashMap::new(),
            },
        );
    }

    /// A player leaves its room (left, or disconnected for good).
    fn depart(&mut self, p: &str, reason: &'static str, x: &mut Expect) {
        let player = self.players.get_mut(p).expect("known player");
        let Status::InRoom(r) = std::mem::replace(&mut player.status, Status::Idle) else {
            return;
        };
        let connected = player.conn.is_some();
        let room = self.rooms.get_mut(&r).expect("model room");
        room.members.remove(p);
        if !room.closed {
            if connected {
                // Whoever leaves had everything before its own departure.
                x.caught_up.push((p.to_owned(), r.clone(), room.last_seq));
            }
            room.active.remove(p);
            room.last_seq += 1;
            room.log.insert(
                room.last_seq,
                Logged {
                    content: Content::Left {
                        player: p.to_owned(),
                        reason,
                    },
                    result: None,
                },
            );
            for m in &room.roster {
                if room.members.contains(m)
                    && let Some(mc) = self.players.get(m).and_then(|q| q.conn)
                {
                    x.frames.push((mc, FrameKind::Push, 20003));
                }
            }
            if room.active.len() < 2 {
                room.closed = true;
            }
        }
        if room.closed {
            // Connected members are free now (having got the closing 20003).
            for m in room.members.clone() {
                let q = self.players.get_mut(&m).expect("member is a player");
                if q.conn.is_some() {
                    q.status = Status::Idle;
                    room.members.remove(&m);
                    x.caught_up.push((m, r.clone(), room.last_seq));
                }
            }
        }
    }

    fn predict_attach(&mut self, s: usize, x: &mut Expect) -> Action {
        if !self.slots[s].session {
            if self.live_conn(s).is_some() {
                return Action::Nothing;
            }
            self.next_anon += 1;
            let pid = format!("anon{:06}", self.next_anon);
            let c = self.open_conn(s, &pid, x);
            self.pool_of.insert(pid.clone(), 0);
            self.players.insert(
                pid.clone(),
                MPlayer {
                    pool: 0,
                    resumable: false,
                    conn: Some(c),
                    status: Status::Idle,
                    deadline: None,
                },
            );
            return Action::Attach(Attach {
                conn: ConnId(c),
                player: pid.into(),
                pool: pool_key(0),
                resumable: false,
                resume_after: None,
            });
        }
        let pid = session_player(s);
        let pool = self.slots[s].pool;
        self.pool_of.insert(pid.clone(), pool);
        if let Some(old) = self.players.get(&pid).and_then(|p| p.conn) {
            // Takeover: the old connection is closed (4001) and leaves any queue.
            x.closes.push(old);
            self.conns.get_mut(&old).expect("model conn").open = false;
            self.counters.takeovers += 1;
            self.leave_queue(&pid);
        }
        let c = self.open_conn(s, &pid, x);
        let player = self.players.entry(pid.clone()).or_insert(MPlayer {
            pool,
            resumable: true,
            conn: None,
            status: Status::Idle,
            deadline: None,
        });
        player.conn = Some(c);
        player.deadline = None;
        if let Status::InRoom(r) = player.status.clone() {
            // 20001 again, then exactly what this player has not received yet.
            x.frames.push((c, FrameKind::Push, 20001));
            let from = self.stream(&pid, &r) + 1;
            let room = self.rooms.get_mut(&r).expect("model room");
            for seq in from..=room.last_seq {
                let code = match room.log[&seq].content {
                    Content::Chat { .. } => 20002,
                    Content::Left { .. } => 20003,
                };
                x.frames.push((c, FrameKind::Push, code));
            }
            if from <= room.last_seq {
                self.counters.replays += 1;
            }
            if room.closed {
                room.members.remove(&pid);
                x.caught_up.push((pid.clone(), r.clone(), room.last_seq));
                self.counters.resumes_into_closed_rooms += 1;
                self.players.get_mut(&pid).expect("just attached").status = Status::Idle;
            }
        }
        Action::Attach(Attach {
            conn: ConnId(c),
            player: pid.into(),
            pool: pool_key(pool),
            resumable: true,
            resume_after: None,
        })
    }

    fn open_conn(&mut self, s: usize, pid: &str, x: &mut Expect) -> u64 {
        self.next_conn += 1;
        let c = self.next_conn;
        self.conns.insert(
            c,
            MConn {
                player: pid.to_owned(),
                open: true,
            },
        );
        x.open.insert(c);
        self.slots[s].player = Some(pid.to_owned());
        c
    }

    fn predict_detach(&mut self, s: usize, x: &mut Expect) -> Action {
        let Some((c, p)) = self.live_conn(s) else {
            return Action::Nothing;
        };
        x.open.remove(&c);
        self.conns.get_mut(&c).expect("model conn").open = false;
        self.leave_queue(&p);
        let player = self.players.get_mut(&p).expect("known player");
        player.conn = None;
        match player.status.clone() {
            Status::InRoom(r) => {
                let last = self.rooms[&r].last_seq;
                x.caught_up.push((p.clone(), r.clone(), last));
                if player.resumable && self.grace > 0 {
                    player.deadline = Some(self.now + self.grace);
                } else {
                    self.depart(&p, "disconnected", x);
                    self.players.remove(&p);
                }
            }
            _ => {
                self.players.remove(&p);
            }
        }
        Action::Detach(c)
    }

    fn predict_tick(&mut self, x: &mut Expect) {
        let mut due: Vec<(u64, String)> = self
            .players
            .iter()
            .filter_map(|(id, p)| {
                p.deadline
                    .filter(|d| *d <= self.now)
                    .map(|d| (d, id.clone()))
            })
            .collect();
        due.sort();
        for (_, p) in due {
            self.counters.expiries += 1;
            self.depart(&p, "disconnected", x);
            self.players.remove(&p);
        }
    }

    // -----------------------------------------------------------------------------
    // Checks
    // -----------------------------------------------------------------------------

    fn check_effects(
        &mut self,
        op: &Op,
        x: &Expect,
        out: &[Effect],
        pre_rooms: &HashMap<String, String>,
    ) {
        let ctx = || format!("after {op:?}, effects:\n{out:#?}");
        // Property 5: only open connections are addressed, a Close only once.
        let mut open = x.open.clone();
        let mut closes = Vec::new();
        for e in out {
            match e {
                Effect::Send { conn, .. } => assert!(
                    open.contains(&conn.0),
                    "frame to closed connection {}; {}",
                    conn.0,
                    ctx()
                ),
                Effect::Close { conn, code, .. } => {
                    assert!(
                        open.remove(&conn.0),
                        "close of a closed connection {}; {}",
                        conn.0,
                        ctx()
                    );
                    assert_eq!(*code, CLOSE_TAKEN_OVER, "{}", ctx());
                    closes.push(conn.0);
                }
            }
        }
        assert_eq!(closes, x.closes, "closes; {}", ctx());
        if !x.closes.is_empty() {
            assert!(
                matches!(out.first(), Some(Effect::Close { .. })),
                "the takeover's close comes first; {}",
                ctx()
            );
        }
        if let Some(c) = x.reply_first {
            // §8.7, as a client can see it: on the requester's connection the reply comes
            // before any push (the peers' pushes may be carried out before it).
            let first = out.iter().find(|e| match e {
                Effect::Send { conn, .. } | Effect::Close { conn, .. } => conn.0 == c,
            });
            assert!(
                matches!(
                    first,
                    Some(Effect::Send {
                        kind: FrameKind::Reply(_),
                        ..
                    })
                ),
                "the request's reply comes first on its connection; {}",
                ctx()
            );
        }
        // Who gets which frames, per connection in order.
        let mut got: BTreeMap<u64, Vec<(FrameKind, i32)>> = BTreeMap::new();
        for e in out {
            if let Effect::Send {
                conn, kind, code, ..
            } = e
            {
                got.entry(conn.0)
                    .or_default()
                    .push((kind.clone(), code.value()));
            }
        }
        let mut want: BTreeMap<u64, Vec<(FrameKind, i32)>> = BTreeMap::new();
        for (c, kind, code) in &x.frames {
            want.entry(*c).or_default().push((kind.clone(), *code));
        }
        assert_eq!(got, want, "frames per connection; {}", ctx());
        for e in out {
            if let Effect::Send {
                conn,
                kind,
                code,
                result,
            } = e
            {
                self.observe(conn.0, kind, *code, result, x, pre_rooms, &ctx);
            }
        }
    }

    /// Checks one received frame against what its player has received so far.
    #[allow(clippy::too_many_arguments)]
    fn observe(
        &mut self,
        conn: u64,
        kind: &FrameKind,
        code: Code,
        result: &str,
        x: &Expect,
        pre_rooms: &HashMap<String, String>,
        ctx: &dyn Fn() -> String,
    ) {
        let v: Value = serde_json::from_str(result).expect("result is JSON");
        assert_eq!(v["code"], code.value(), "{}", ctx());
        assert_eq!(v["message"], code.message(), "{}", ctx());
        let data = &v["data"];
        let player = self.conns[&conn].player.clone();
        // The room a frame is about: the player's room before the operation, or the one
        // it was matched into by it.
        let room_id = pre_rooms
            .get(&player)
            .cloned()
            .or_else(|| self.room_of(&player));
        match code {
            Code::Success => assert_eq!(data, &json!([]), "{}", ctx()),
            Code::InRoom | Code::NoRoom => assert_eq!(data, &json!({}), "{}", ctx()),
            Code::Matched => {
                let room_id = room_id.expect("a 20001 belongs to a room");
                let room = &self.rooms[&room_id];
                assert_eq!(data["room_id"], room_id.as_str(), "{}", ctx());
                assert_eq!(data["player_id"], player.as_str(), "{}", ctx());
                let peers: BTreeSet<String> = data["peer_ids"]
                    .as_array()
                    .expect("peer_ids")
                    .iter()
                    .map(|p| p.as_str().expect("peer id").to_owned())
                    .collect();
                let expected: BTreeSet<String> = room
                    .roster
                    .iter()
                    .filter(|p| **p != player)
                    .cloned()
                    .collect();
                assert_eq!(peers, expected, "peer_ids; {}", ctx());
                // Property 3: one pool per room, judged from the frame alone.
                let pool = self.pool_of[&player];
                for peer in &peers {
                    assert_eq!(
                        self.pool_of[peer],
                        pool,
                        "{player} matched with {peer} of another pool; {}",
                        ctx()
                    );
                }
                assert_eq!(room.pool, pool, "{}", ctx());
            }
            Code::ChatData | Code::PeerLeft => {
                let room_id = room_id.expect("room events go to room members");
                let seq = data["seq"].as_u64().expect("seq");
                let key = (player.clone(), room_id.clone());
                let last = self.streams.get(&key).copied().unwrap_or(0);
                if code == Code::ChatData && matches!(kind, FrameKind::Reply(_)) {
                    let c = x.chat.as_ref().expect("a chat reply answers a chat");
                    assert_eq!(data["send_player_id"], c.sender.as_str(), "{}", ctx());
                    assert_eq!(data["chat_sn"], c.sn.as_str(), "{}", ctx());
                    assert_eq!(seq, c.seq, "seq of the chat reply; {}", ctx());
                    if c.repeat {
                        // Property 4: the first reply, unchanged (and no push: see frames).
                        assert!(seq <= last, "a repeat with a new seq; {}", ctx());
                        assert_eq!(
                            self.rooms[&room_id].log[&seq].result.as_deref(),
                            Some(result),
                            "a repeated chat_sn must get the first reply; {}",
                            ctx()
                        );
                        return;
                    }
                    assert_eq!(data["chat_msg"], c.msg.as_str(), "{}", ctx());
                }
                // Property 2: per (player, room), seqs run 1, 2, 3, … over live
                // frames and replays alike.
                assert_eq!(
                    seq,
                    last + 1,
                    "{player} in {room_id} got seq {seq} after {last} \
                     (a duplicate, a gap or out of order); {}",
                    ctx()
                );
                self.streams.insert(key, seq);
                let room = self.rooms.get_mut(&room_id).expect("model room");
                let entry = room
                    .log
                    .get_mut(&seq)
                    .unwrap_or_else(|| panic!("seq {seq} was never accepted; {}", ctx()));
                match &entry.content {
                    Content::Chat { sender, sn, msg } => {
                        assert_eq!(code, Code::ChatData, "{}", ctx());
                        assert_eq!(data["send_player_id"], sender.as_str(), "{}", ctx());
                        assert_eq!(data["chat_sn"], sn.as_str(), "{}", ctx());
                        assert_eq!(data["chat_msg"], msg.as_str(), "{}", ctx());
                        // Property 4, from the frames alone: one seq per (sender, sn).
                        let first = room
                            .delivered_sns
                            .entry((sender.clone(), sn.clone()))
                            .or_insert(seq);
                        assert_eq!(*first, seq, "chat_sn delivered twice; {}", ctx());
                    }
                    Content::Left {
                        player: who,
                        reason,
                    } => {
                        assert_eq!(code, Code::PeerLeft, "{}", ctx());
                        assert_eq!(data["room_id"], room_id.as_str(), "{}", ctx());
                        assert_eq!(data["player_id"], who.as_str(), "{}", ctx());
                        assert_eq!(data["reason"], *reason, "{}", ctx());
                        self.counters.departures_seen += 1;
                    }
                }
                match &entry.result {
                    None => entry.result = Some(result.to_owned()),
                    Some(first) => assert_eq!(
                        first,
                        result,
                        "members got different frames for seq {seq}; {}",
                        ctx()
                    ),
                }
            }
            other => panic!("unexpected code {other:?}; {}", ctx()),
        }
    }

    fn check_state(&self, op: &Op, x: &Expect) {
        if let Err(e) = self.hub.check_invariants() {
            panic!("invariant broken after {op:?}: {e}");
        }
        for (p, r, want) in &x.caught_up {
            assert_eq!(
                self.stream(p, r),
                *want,
                "{p} in {r} should have received up to seq {want}, after {op:?}"
            );
        }
        // Connected members are always caught up with their room.
        for (r, room) in &self.rooms {
            for m in &room.members {
                if self.conn_of(m).is_some() {
                    assert_eq!(
                        self.stream(m, r),
                        room.last_seq,
                        "connected member {m} of {r} is behind, after {op:?}"
                    );
                }
            }
        }
        // The hub's counts agree with the model's.
        let mut queued: Vec<(PoolKey, usize)> = self
            .queues
            .iter()
            .map(|(pool, q)| (pool_key(*pool), q.len()))
            .collect();
        queued.sort();
        let stats = self.hub.stats();
        assert_eq!(stats.queued, queued, "queues after {op:?}");
        assert_eq!(stats.players, self.players.len(), "players after {op:?}");
        let open: Vec<&u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.open)
            .map(|(id, _)| id)
            .collect();
        assert_eq!(stats.connections, open.len(), "connections after {op:?}");
        let rooms = self
            .rooms
            .values()
            .filter(|r| !r.members.is_empty())
            .count();
        assert_eq!(stats.rooms, rooms, "rooms after {op:?}");
        for (id, c) in &self.conns {
            let hub_player = self.hub.player_of(ConnId(*id)).map(|p| p.to_string());
            let want = c.open.then(|| c.player.clone());
            assert_eq!(hub_player, want, "player of conn {id} after {op:?}");
        }
    }
}

/// 256 cases per property; a failing case is saved next to this file
/// (`properties.proptest-regressions`) and replayed first on later runs.
fn config() -> Config {
    Config {
        cases: 256,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..Config::default()
    }
}

fn session_player(slot: usize) -> String {
    format!("sess{slot:06}")
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_operation_sequences_keep_every_room_rule(scenario in scenario_strategy()) {
        Sim::run(&scenario);
    }

    /// A node of a cluster joins from a snapshot: a hub restored from one, at any point,
    /// keeps every rule exactly as the original (same frames, same order, same state).
    #[test]
    fn a_hub_restored_from_a_snapshot_behaves_as_the_original(scenario in scenario_strategy()) {
        let mut sim = Sim::new(&scenario);
        sim.through_snapshots = true;
        for i in 0..sim.slots.len() {
            sim.step(&Op::Attach(i));
        }
        for g in &scenario.ops {
            if let Some(op) = sim.resolve(g) {
                sim.step(&op);
            }
        }
        sim.finish();
    }
}

/// The generated sequences do reach every rule the properties are about (otherwise the
/// properties above could pass vacuously).
#[test]
fn generated_sequences_reach_every_rule() {
    let mut runner = TestRunner::deterministic();
    let strategy = scenario_strategy();
    let mut total = Counters::default();
    for _ in 0..128 {
        let scenario = strategy
            .new_tree(&mut runner)
            .expect("a scenario")
            .current();
        total.add(&Sim::run(&scenario));
    }
    let c = &total;
    for (what, n) in [
        ("rooms opened", c.rooms_opened),
        ("chat pushes", c.chats_pushed),
        ("repeated chat_sn", c.repeats),
        ("20003 received", c.departures_seen),
        ("resumes with a replay", c.replays),
        ("resumes into a closed room", c.resumes_into_closed_rooms),
        ("takeovers", c.takeovers),
        ("grace expiries", c.expiries),
        ("requests on closed connections", c.stale_requests),
    ] {
        assert!(n > 0, "no {what} in 128 generated scenarios: {c:?}");
    }
}

/// A resume within the grace period and a takeover, through the model (a self-test of
/// the harness: it follows the rules where they are known to hold).
#[test]
fn model_follows_a_resume_with_replay_and_a_takeover() {
    let scenario = Scenario {
        room_size: 2,
        grace: 1_000,
        slots: vec![(true, 1), (true, 1)],
        ops: vec![],
    };
    let chat = |slot, sn, msg| Op::Chat { slot, sn, msg };
    let mut sim = Sim::start(&scenario);
    for op in [
        Op::Match(0),
        Op::Match(1),
        chat(0, 0, 0),
        Op::Detach(1),
        chat(0, 1, 0),
        chat(0, 1, 1),
        Op::Tick(999),
        Op::Attach(1),
        Op::Attach(1),
        Op::Leave(0),
    ] {
        sim.step(&op);
    }
    assert_eq!(
        sim.stream("sess000001", &room_name(1)),
        3,
        "2 chats + 20003"
    );
    let c = sim.finish();
    assert_eq!(
        (
            c.rooms_opened,
            c.replays,
            c.repeats,
            c.takeovers,
            c.expiries
        ),
        (1, 1, 1, 1, 0)
    );
    assert_eq!((c.chats_pushed, c.departures_seen), (1, 1));
}

// ---------------------------------------------------------------------------------
// Frame text → parse → state machine
// ---------------------------------------------------------------------------------

/// JSON-ish text, duplicate members and non-finite numbers included.
#[derive(Clone, Debug)]
enum J {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    RawNum(String),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl J {
    fn render(&self, out: &mut String) {
        match self {
            J::Null => out.push_str("null"),
            J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            J::Int(i) => out.push_str(&i.to_string()),
            J::Float(f) => out.push_str(&f.to_string()),
            J::RawNum(n) => out.push_str(n),
            J::Str(s) => out.push_str(&serde_json::to_string(s).expect("string")),
            J::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.render(out);
                }
                out.push(']');
            }
            J::Obj(members) => {
                out.push('{');
                for (i, (k, v)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(k).expect("key"));
                    out.push(':');
                    v.render(out);
                }
                out.push('}');
            }
        }
    }

    fn text(&self) -> String {
        let mut out = String::new();
        self.render(&mut out);
        out
    }
}

const METHODS: [&str; 4] = [
    "game/match_player",
    "game/send_chat_msg",
    "game/cancel_match",
    "game/leave_chat",
];

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(METHODS.to_vec()).prop_map(str::to_owned),
        prop::sample::select(vec![
            "2.0", "1.0", "", "chat_msg", "chat_sn", "sn0", "sn1", "game/", "字", "\u{0}"
        ])
        .prop_map(str::to_owned),
        "\\PC{0,12}",
        ".{0,6}",
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec!["jsonrpc", "id", "method", "params", "chat_msg", "chat_sn"])
            .prop_map(str::to_owned),
        1 => "[a-z_]{0,8}",
    ]
}

/// Keys of extra members: mostly unknown ones, sometimes a duplicate of a known one.
fn extra_key() -> impl Strategy<Value = String> {
    prop_oneof![1 => key(), 4 => "x_[a-z]{0,6}"]
}

fn json_value() -> impl Strategy<Value = J> {
    let leaf = prop_oneof![
        Just(J::Null),
        any::<bool>().prop_map(J::Bool),
        any::<i64>().prop_map(J::Int),
        any::<f64>().prop_map(J::Float),
        "-?[0-9]{1,25}(\\.[0-9]{1,5})?([eE][+-]?[0-9]{1,4})?".prop_map(J::RawNum),
        word().prop_map(J::Str),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(J::Arr),
            prop::collection::vec((key(), inner), 0..6).prop_map(J::Obj),
        ]
    })
}

fn text_value() -> impl Strategy<Value = J> {
    prop_oneof![
        4 => prop::sample::select(vec!["hi", "sn0", "sn1", "sn2", "字"]).prop_map(|s| J::Str(s.to_owned())),
        2 => word().prop_map(J::Str),
        1 => (995usize..1005).prop_map(|n| J::Str("字".repeat(n))),
        1 => (60usize..68).prop_map(|n| J::Str("s".repeat(n))),
        1 => json_value(),
    ]
}

fn params_value() -> impl Strategy<Value = J> {
    let chat = (
        prop::option::weighted(0.9, text_value()),
        prop::option::weighted(0.9, text_value()),
        prop::collection::vec((extra_key(), json_value()), 0..2),
    )
        .prop_map(|(msg, sn, extra)| {
            let mut members = Vec::new();
            if let Some(m) = msg {
                members.push(("chat_msg".to_owned(), m));
            }
            if let Some(s) = sn {
                members.push(("chat_sn".to_owned(), s));
            }
            members.extend(extra);
            members
        })
        .prop_shuffle()
        .prop_map(J::Obj);
    prop_oneof![
        3 => Just(J::Arr(vec![])),
        2 => Just(J::Obj(vec![])),
        5 => chat,
        1 => json_value(),
    ]
}

fn envelope() -> impl Strategy<Value = J> {
    let jsonrpc = prop_oneof![15 => Just(J::Str("2.0".into())), 1 => json_value()];
    let id = prop_oneof![
        3 => "[a-zA-Z0-9]{0,12}".prop_map(J::Str),
        2 => any::<i64>().prop_map(J::Int),
        1 => "-?[0-9]{1,25}(\\.[0-9]{1,5})?([eE][+-]?[0-9]{1,4})?".prop_map(J::RawNum),
        1 => json_value(),
    ];
    let method = prop_oneof![
        8 => prop::sample::select(METHODS.to_vec()).prop_map(|m| J::Str(m.to_owned())),
        4 => Just(J::Str(METHODS[1].to_owned())),
        1 => word().prop_map(J::Str),
        1 => json_value(),
    ];
    (
        prop::option::weighted(0.95, jsonrpc),
        prop::option::weighted(0.95, id),
        prop::option::weighted(0.95, method),
        prop::option::weighted(0.9, params_value()),
        prop::collection::vec((extra_key(), json_value()), 0..2),
    )
        .prop_map(|(jsonrpc, id, method, params, extra)| {
            let mut members = Vec::new();
            for (k, v) in [
                ("jsonrpc", jsonrpc),
                ("id", id),
                ("method", method),
                ("params", params),
            ] {
                if let Some(v) = v {
                    members.push((k.to_owned(), v));
                }
            }
            members.extend(extra);
            members
        })
        .prop_shuffle()
        .prop_map(J::Obj)
}

/// Truncates the text, deletes a character or inserts one, at a random place.
fn mutate(text: String, at: prop::sample::Index, how: u8, c: char) -> String {
    let bounds: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .chain([text.len()])
        .collect();
    let i = bounds[at.index(bounds.len())];
    let mut t = text;
    match how % 3 {
        0 => t.truncate(i),
        1 => {
            if i < t.len() {
                t.remove(i);
            }
        }
        _ => t.insert(i, c),
    }
    t
}

fn frame_text() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => any::<String>(),
        1 => "[\\[\\]{}\",:0-9a-z_/\\\\. -]{0,40}",
        2 => json_value().prop_map(|j| j.text()),
        8 => envelope().prop_map(|j| j.text()),
        2 => (
            envelope(),
            any::<prop::sample::Index>(),
            any::<u8>(),
            prop::sample::select(vec!['"', '{', '}', '[', ']', ',', ':', '\\', ' ', 'x', '0'])
        )
            .prop_map(|(j, at, how, c)| mutate(j.text(), at, how, c)),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn frame_text_through_parser_and_hub(
        frames in prop::collection::vec((0usize..6, frame_text()), 1..24)
    ) {
        let mut hub = Hub::new(HubConfig::default(), Box::new(Counter(0)));
        let mut out = Vec::new();
        // Three anonymous players (they meet each other) and one alone in its pool.
        for (c, player, pool, resumable) in [
            (1, "anon000001", PoolKey::anonymous(), false),
            (2, "anon000002", PoolKey::anonymous(), false),
            (3, "anon000003", PoolKey::anonymous(), false),
            (4, "sess000004", pool_key(1), true),
        ] {
            hub.attach(
                Attach { conn: ConnId(c), player: player.into(), pool, resumable, resume_after: None },
                &mut out,
            );
        }
        prop_assert!(out.is_empty());
        for (i, (who, text)) in frames.iter().enumerate() {
            // Conn 99 was never attached: its requests must be dropped.
            let conn = if *who == 5 { ConnId(99) } else { ConnId(*who as u64 + 1) };
            let _ = peek_id(text);
            match parse_frame(text) {
                Err(rejection) => {
                    // Members kept raw: the id is echoed verbatim, even `1e400`.
                    let text = rejection.to_frame();
                    let frame: BTreeMap<String, Box<RawValue>> = serde_json::from_str(&text)
                        .expect("a rejection is answered with a JSON object");
                    let (member, id) = match &rejection {
                        Rejection::Global { id, .. } => ("error", id.clone()),
                        Rejection::Business { id, .. } => ("result", Some(id.clone())),
                    };
                    let keys: Vec<&str> = frame.keys().map(String::as_str).collect();
                    let mut want = vec!["id", "jsonrpc", member];
                    want.sort();
                    prop_assert_eq!(keys, want);
                    prop_assert_eq!(frame["jsonrpc"].get(), "\"2.0\"");
                    prop_assert_eq!(frame["id"].get(), id.as_ref().map_or("null", |id| id.as_json()));
                    let body: Value = serde_json::from_str(frame[member].get()).expect("body");
                    prop_assert_eq!(&body["code"], rejection.code().value());
                    prop_assert_eq!(&body["message"], rejection.code().message());
                }
                Ok(incoming) => {
                    let again = parse_frame(&incoming.request.to_frame("again"))
                        .expect("a request's own frame is accepted");
                    prop_assert_eq!(&again.request, &incoming.request);
                    let live = hub.player_of(conn).is_some();
                    let mut out = Vec::new();
                    hub.handle(conn, incoming.id.clone(), incoming.request, EPOCH + i as u64, &mut out);
                    if live {
                        let replies: Vec<&Effect> = out
                            .iter()
                            .filter(|e| matches!(e, Effect::Send { kind: FrameKind::Reply(_), .. }))
                            .collect();
                        prop_assert_eq!(replies.len(), 1, "one reply per request: {:?}", out);
                        prop_assert!(
                            matches!(&out[0], Effect::Send { conn: c, kind: FrameKind::Reply(id), .. }
                                if *c == conn && *id == incoming.id),
                            "the reply, with the request's id, comes first: {:?}", out
                        );
                    } else {
                        prop_assert!(out.is_empty(), "a request from an unknown connection: {:?}", out);
                    }
                    for e in &out {
                        match e {
                            Effect::Send { conn, result, .. } => {
                                prop_assert!(hub.player_of(*conn).is_some(), "frame to a dead conn: {:?}", e);
                                prop_assert!(serde_json::from_str::<Value>(result).is_ok());
                            }
                            Effect::Close { .. } => prop_assert!(false, "a request closed a connection: {:?}", e),
                        }
                    }
                    if let Err(e) = hub.check_invariants() {
                        prop_assert!(false, "invariant broken after {:?}: {}", text, e);
                    }
                }
            }
        }
    }
}

/// The generated frames reach every outcome of the parser: each request and each
/// rejection code (otherwise the property above could pass vacuously).
#[test]
fn generated_frames_reach_every_parser_outcome() {
    let mut runner = TestRunner::deterministic();
    let strategy = frame_text();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..1_000 {
        let text = strategy.new_tree(&mut runner).expect("a frame").current();
        let outcome = match parse_frame(&text) {
            Ok(incoming) => incoming.request.method().to_owned(),
            Err(rejection) => rejection.code().value().to_string(),
        };
        *seen.entry(outcome).or_default() += 1;
    }
    for outcome in METHODS
        .iter()
        .map(|m| m.to_string())
        .chain(["-1000", "-1001", "-1002", "40000", "40001"].map(str::to_owned))
    {
        assert!(seen.contains_key(&outcome), "no {outcome} in {seen:?}");
    }
}
