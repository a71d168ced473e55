//! The shared state in Redis, so that several nodes behind one load balancer form one
//! service (`--redis-url`).
//!
//! **Design: the state machine replicated over one Redis Stream.** Every node keeps a
//! full copy of `core`'s [`Hub`]. What happens on a node — a connection attached, a
//! validated request, a disconnect, a grace period due, a node found dead — is not applied
//! locally but appended (`XADD`) to the stream `{prefix}:log`; every node reads the
//! stream in order (`XREAD BLOCK`) and applies each entry to its copy. The Hub is
//! deterministic (room ids are carried by the entries, time is the stream ids' — Redis's
//! clock), so all copies go through the same states, and each node carries out only the
//! effects addressed to its own connections. Every node must run the same room settings
//! (checked at start, `{prefix}:settings`). So:
//! - matching is atomic across nodes: Redis puts all requests in one order, and every
//!   copy forms the same rooms from it, so nobody is matched twice;
//! - the room rules stay in `core` only (no second version in Lua);
//! - a node that dies loses nothing: the rooms, the history and the `chat_sn`s are in
//!   every other copy, so its players resume on any node within the grace period;
//! - the order of a room is the order of the stream.
//!
//! Connection ids are `node << 40 | n`, the node number coming from `INCR
//! {prefix}:nodes`, so they are unique across nodes. Each node refreshes
//! `{prefix}:node:{n}` (`SET PX`, holding the last entry it applied); a node that sees the
//! key of another node with
//! connections gone appends `node_down`, and every copy then detaches that node's
//! connections (grace periods start, as for a dropped socket). A node that reads its own
//! `node_down` (it was cut off too long) closes its sockets (1012) and registers anew.
//!
//! Sessions are Redis keys with an expiry (`{prefix}:session:{id}`), so any node can
//! resume any session.
//!
//! Every `--snapshot-every-ms` one node (`SET NX` lock) writes its copy's state with the
//! id of the last entry it includes (`{prefix}:snapshot`, only ever forward) and trims the
//! log up to the previous snapshot but never past a live node's position (`XTRIM MINID`),
//! so Redis holds about one period of log plus one state. A node that joins starts from
//! the snapshot and reads the log after it; a node whose position was trimmed away (it
//! was cut off) starts over the same way.
//!
//! Limit of this design, chosen for correctness first: every node holds the whole state
//! (it scales the sockets, the JSON and the rate limits across nodes, not the memory of
//! the rooms), and a snapshot is taken under the copy's lock.
//!
//! What clients see when nodes or Redis fail is in `docs/protocol.md` («Several nodes»).
//!
//! Redis must persist what it acknowledged (`appendonly yes`, `appendfsync always`) for a
//! Redis restart to lose nothing. When Redis comes back without its data (a new
//! `{prefix}:epoch`, or the last entry a node applied missing), the nodes close their
//! sockets (1012) and start over from what Redis has.

use crate::broker::{Broker, BrokerError, BrokerStats, ConnHandle, Session, carry_out, epoch_ms};
use crate::metrics::Metrics;
use matchchat_core::hub::{
    Attach, ConnId, Effect, Hub, HubConfig, HubSnapshot, IdSource, PoolKey, RoomId,
};
use matchchat_core::method;
use matchchat_core::request::{Incoming, Request};
use matchchat_core::wire::RequestId;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Bits of a connection id below the node number.
const NODE_SHIFT: u32 = 40;
/// Node numbers must fit in the bits above [`NODE_SHIFT`].
const MAX_NODE: u64 = 1 << (64 - NODE_SHIFT);

/// The connection ids of node `n`.
fn node_range(n: u64) -> Option<std::ops::Range<ConnId>> {
    if n >= MAX_NODE - 1 {
        return None;
    }
    Some(ConnId(n << NODE_SHIFT)..ConnId((n + 1) << NODE_SHIFT))
}
/// Entries read per `XREAD`.
const READ_BATCH: usize = 1024;
/// How long one `XREAD` blocks waiting for entries.
const READ_BLOCK: Duration = Duration::from_millis(1000);
/// Grace periods are checked this often.
const TICK_EVERY: Duration = Duration::from_millis(50);

/// How a node reaches Redis, and how it finds dead nodes.
#[derive(Clone, Debug)]
pub struct RedisOptions {
    pub url: String,
    /// Prefix of every key, so that several deployments can share one Redis.
    pub prefix: String,
    /// How often a node refreshes its liveness key.
    pub heartbeat: Duration,
    /// A node whose liveness key is this old is dead.
    pub node_timeout: Duration,
    pub session_ttl: Duration,
    /// How often the state is snapshotted and the log trimmed behind it.
    pub snapshot_every: Duration,
}

/// Why the Redis broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum RedisStartError {
    #[error("bad --redis-url: {0}")]
    Url(redis::RedisError),
    #[error("cannot reach Redis at {url}: {source}")]
    Connect {
        url: String,
        source: redis::RedisError,
    },
    #[error("cannot load the shared state: {0}")]
    Load(#[from] LoadError),
    #[error(
        "the cluster runs with other room settings ({cluster}) than this node ({mine}): \
         every node needs the same --room-size, --resume-grace-ms, --history and \
         --sn-memory (to change them, stop every node and delete {key})"
    )]
    Settings {
        cluster: String,
        mine: String,
        key: String,
    },
}

/// Version of the log's entries and of the snapshots; part of the settings every node
/// must share.
const LOG_FORMAT: u32 = 1;

/// What every node of a cluster must agree on: the copies only stay equal if they apply
/// the same rules.
fn settings_fingerprint(config: &HubConfig) -> String {
    format!(
        "log-format={LOG_FORMAT} room-size={} resume-grace-ms={} history={} sn-memory={}",
        config.room_size, config.resume_grace, config.history_limit, config.sn_memory
    )
}

/// One entry of the log. Short field names: every chat message is one entry. No entry
/// carries a time: the time of an entry is the millisecond part of its stream id, Redis's
/// clock, the same for every copy (the nodes' own clocks may disagree).
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "k", rename_all = "snake_case")]
enum Entry {
    Attach {
        c: u64,
        p: String,
        pid: i64,
        z: String,
        res: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<u64>,
    },
    Request {
        c: u64,
        /// The request id as raw JSON text (echoed byte for byte).
        id: String,
        m: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        msg: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sn: Option<String>,
        /// A fresh room id (CSPRNG, from the origin node) for a match this request may
        /// complete: every copy must name the room the same.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<String>,
    },
    Detach {
        c: u64,
    },
    /// A grace period may be due.
    Tick,
    NodeDown {
        n: u64,
    },
}

impl Entry {
    fn request(conn: ConnId, incoming: Incoming) -> Entry {
        let method = incoming.request.method();
        let room = matches!(incoming.request, Request::MatchPlayer).then(crate::ids::room_id);
        let (msg, sn) = match incoming.request {
            Request::SendChat { chat_msg, chat_sn } => (Some(chat_msg), Some(chat_sn)),
            _ => (None, None),
        };
        Entry::Request {
            c: conn.0,
            id: incoming.id.as_json().to_owned(),
            m: method.to_owned(),
            msg,
            sn,
            room,
        }
    }
}

/// The request of a `Request` entry, or `None` for one this version does not know.
fn decode_request(
    id: String,
    method_name: &str,
    msg: Option<String>,
    sn: Option<String>,
) -> Option<Incoming> {
    let raw = serde_json::value::RawValue::from_string(id).ok()?;
    let id = RequestId::from_raw(&raw)?;
    let request = match method_name {
        method::MATCH_PLAYER => Request::MatchPlayer,
        method::CANCEL_MATCH => Request::CancelMatch,
        method::LEAVE_CHAT => Request::LeaveChat,
        method::SEND_CHAT_MSG => Request::SendChat {
            chat_msg: msg?,
            chat_sn: sn?,
        },
        _ => return None,
    };
    Some(Incoming { id, request })
}

/// Room ids for the copy of the Hub: the one carried by the entry being applied.
struct EntryRoomIds {
    next: Arc<Mutex<Option<String>>>,
}

impl IdSource for EntryRoomIds {
    fn room_id(&mut self) -> RoomId {
        let carried = self.next.lock().ok().and_then(|mut slot| slot.take());
        // Only a match request forms a room, and it carries an id; a second room in one
        // step cannot happen, but would get a local id rather than a panic.
        carried.unwrap_or_else(crate::ids::room_id).into()
    }
}

/// The copy of the shared state, and this node's connections.
struct Replica {
    hub: Hub,
    room_ids: Arc<Mutex<Option<String>>>,
    /// This node's connections, by id.
    conns: HashMap<ConnId, ConnHandle>,
    /// Every attached connection of every node, as the log says: what a `node_down`
    /// detaches.
    attached: BTreeSet<ConnId>,
    effects: Vec<Effect>,
    /// The log's clock: the latest entry time seen, so the Hub's time never goes back.
    clock: u64,
    /// The id of the last entry applied.
    last_id: String,
}

impl Replica {
    fn new(config: HubConfig) -> Replica {
        let room_ids = Arc::new(Mutex::new(None));
        Replica {
            hub: Hub::new(
                config,
                Box::new(EntryRoomIds {
                    next: room_ids.clone(),
                }),
            ),
            room_ids,
            conns: HashMap::new(),
            attached: BTreeSet::new(),
            effects: Vec::new(),
            clock: 0,
            last_id: "0-0".to_owned(),
        }
    }

    /// A copy in the state of a snapshot record.
    fn restore(config: HubConfig, record: SnapshotRecord) -> Result<Replica, String> {
        let mut replica = Replica::new(config.clone());
        replica.hub = Hub::restore(
            config,
            Box::new(EntryRoomIds {
                next: replica.room_ids.clone(),
            }),
            record.hub,
        )
        .map_err(|e| e.to_string())?;
        replica.attached = record.attached.into_iter().map(ConnId).collect();
        replica.clock = record.clock;
        replica.last_id = record.last_id;
        Ok(replica)
    }

    fn record(&self, epoch: String) -> Result<SnapshotRecord, String> {
        Ok(SnapshotRecord {
            epoch,
            last_id: self.last_id.clone(),
            clock: self.clock,
            attached: self.attached.iter().map(|c| c.0).collect(),
            hub: self.hub.snapshot().map_err(|e| e.to_string())?,
        })
    }

    /// Applies one entry, appended at `time` (ms, from its stream id); returns whether it
    /// was this node's own `node_down`.
    fn apply(&mut self, entry: Entry, time: u64, me: u64, metrics: &Metrics) -> bool {
        self.clock = self.clock.max(time);
        let now = self.clock;
        let mut fenced = false;
        let out = &mut self.effects;
        match entry {
            Entry::Attach {
                c,
                p,
                pid,
                z,
                res,
                after,
            } => {
                self.attached.insert(ConnId(c));
                self.hub.attach(
                    Attach {
                        conn: ConnId(c),
                        player: p.into(),
                        pool: PoolKey {
                            product_id: pid,
                            zone: z.into(),
                        },
                        resumable: res,
                        resume_after: after,
                    },
                    out,
                );
            }
            Entry::Request {
                c,
                id,
                m,
                msg,
                sn,
                room,
            } => match decode_request(id, &m, msg, sn) {
                Some(incoming) => {
                    // Only a match request carries a room id (and may form a room).
                    let carries_room = room.is_some();
                    if carries_room && let Ok(mut slot) = self.room_ids.lock() {
                        *slot = room;
                    }
                    self.hub
                        .handle(ConnId(c), incoming.id, incoming.request, now, out);
                    if carries_room && let Ok(mut slot) = self.room_ids.lock() {
                        *slot = None;
                    }
                }
                None => tracing::warn!(method = %m, "log entry with an unknown request skipped"),
            },
            Entry::Detach { c } => {
                self.attached.remove(&ConnId(c));
                self.hub.detach(ConnId(c), now, out);
            }
            Entry::Tick => self.hub.tick(now, out),
            Entry::NodeDown { n } => {
                // Node numbers are below MAX_NODE (checked where they are made), so the
                // range is never empty-and-reversed (which would panic).
                let gone: Vec<ConnId> = match node_range(n) {
                    Some(range) => self.attached.range(range).copied().collect(),
                    None => Vec::new(),
                };
                for conn in gone {
                    self.attached.remove(&conn);
                    self.hub.detach(conn, now, out);
                }
                fenced = n == me;
            }
        }
        // A takeover closes the old connection: it is no longer attached, on any node.
        for effect in out.iter() {
            if let Effect::Close { conn, .. } = effect {
                self.attached.remove(conn);
            }
        }
        carry_out(&mut self.effects, &mut self.conns, metrics);
        fenced
    }

    /// Starts over from `fresh` (Redis lost its data, or this node fell behind the
    /// trimmed log): every socket of this node is closed, its players resume.
    fn replace(&mut self, fresh: Replica) {
        let conns = std::mem::take(&mut self.conns);
        for handle in conns.values() {
            handle
                .closer()
                .close(crate::connection::close::RESTART, "shared state was reset");
        }
        *self = fresh;
    }
}

/// What `{prefix}:snapshot` holds: a copy's state and the log entry it includes.
#[derive(Serialize, Deserialize)]
struct SnapshotRecord {
    /// The data set it belongs to.
    epoch: String,
    last_id: String,
    clock: u64,
    attached: Vec<u64>,
    hub: HubSnapshot,
}

/// The Redis-backed broker. Cheap to clone.
#[derive(Clone)]
pub struct RedisBroker {
    shared: Arc<Shared>,
}

/// One mutex over the copy of the Hub and this node's connections, for the same reason
/// as in [`crate::broker::LocalBroker`]: frames are queued under the lock that orders
/// them. Only the log reader applies entries; handlers append and do not wait for it.
struct Shared {
    options: RedisOptions,
    /// `{prefix}:log`, made once: every request appends to it.
    log_key: String,
    hub_config: HubConfig,
    /// Commands (XADD, sessions, liveness); multiplexed, reconnects by itself.
    redis: ConnectionManager,
    replica: Mutex<Replica>,
    metrics: Arc<Metrics>,
    /// This node's number (changes only when it was declared dead and registers again).
    node: AtomicU64,
    /// The data set this copy belongs to (`{prefix}:epoch`).
    epoch: Mutex<String>,
    next_conn: AtomicU64,
    /// Redis answered the last command.
    commands_ok: AtomicBool,
    /// The log reader's last read succeeded.
    reads_ok: AtomicBool,
    /// The log reader ended other than by shutdown (a panic): the node cannot serve.
    reader_gone: AtomicBool,
    /// This node read its own `node_down` and has no new number yet.
    fencing: AtomicBool,
    /// Detaches that could not be appended (Redis down), retried by the heartbeat.
    pending_detach: Mutex<Vec<ConnId>>,
    last_tick_sent: Mutex<Option<Instant>>,
}

fn key(prefix: &str, name: &str) -> String {
    format!("{prefix}:{name}")
}

async fn connect(
    url: &str,
    response_timeout: Duration,
) -> Result<ConnectionManager, RedisStartError> {
    let client = redis::Client::open(url).map_err(RedisStartError::Url)?;
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(response_timeout))
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_with_config(client, config)
        .await
        .map_err(|source| RedisStartError::Connect {
            url: url.to_owned(),
            source,
        })
}

fn unavailable(e: redis::RedisError) -> BrokerError {
    BrokerError::Unavailable(e.to_string())
}

/// What a session key holds.
#[derive(Serialize, Deserialize)]
struct StoredSession {
    p: String,
    pid: i64,
    z: String,
}

impl RedisBroker {
    /// Connects, registers this node and starts the log reader, the heartbeat and the
    /// grace-period ticker, all running until `stop` is cancelled.
    pub async fn start(
        options: RedisOptions,
        hub_config: HubConfig,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> Result<RedisBroker, RedisStartError> {
        let mut redis = connect(&options.url, Duration::from_secs(2)).await?;
        // The reader blocks in XREAD, so it has a connection of its own.
        let reader = connect(&options.url, READ_BLOCK + Duration::from_secs(2)).await?;
        let node = register(&mut redis, &options.prefix)
            .await
            .map_err(|source| RedisStartError::Connect {
                url: options.url.clone(),
                source,
            })?;
        check_settings(&mut redis, &options, &hub_config).await?;
        let epoch = ensure_epoch(&mut redis, &options.prefix)
            .await
            .map_err(|source| RedisStartError::Connect {
                url: options.url.clone(),
                source,
            })?;
        let replica = load_replica(&mut redis, &options.prefix, &epoch, &hub_config).await?;
        let broker = RedisBroker {
            shared: Arc::new(Shared {
                replica: Mutex::new(replica),
                hub_config,
                log_key: key(&options.prefix, "log"),
                options,
                redis,
                metrics,
                node: AtomicU64::new(node),
                epoch: Mutex::new(epoch),
                next_conn: AtomicU64::new(1),
                commands_ok: AtomicBool::new(true),
                reads_ok: AtomicBool::new(true),
                reader_gone: AtomicBool::new(false),
                fencing: AtomicBool::new(false),
                pending_detach: Mutex::new(Vec::new()),
                last_tick_sent: Mutex::new(None),
            }),
        };
        broker.heartbeat().await;
        tracing::info!(node, "joined the cluster through Redis");
        let reader_task = tokio::spawn(broker.clone().read_log(reader, stop.clone()));
        tokio::spawn(broker.clone().watch_reader(reader_task, stop.clone()));
        tokio::spawn(broker.clone().keep_alive(stop.clone()));
        tokio::spawn(broker.clone().snapshots(stop.clone()));
        tokio::spawn(broker.clone().tick_grace(stop));
        Ok(broker)
    }

    /// This node's number.
    pub fn node(&self) -> u64 {
        self.shared.node.load(Ordering::Relaxed)
    }

    fn replica(&self) -> MutexGuard<'_, Replica> {
        // Entries are applied whole or not at all by a Hub that does not panic; serving on
        // after a poisoned lock is better than taking every room down.
        self.shared
            .replica
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn key(&self, name: &str) -> String {
        key(&self.shared.options.prefix, name)
    }

    /// Records whether Redis answered a command (`reads`: the log reader's read). Only a
    /// change is written (and logged): this runs for every request.
    fn set_healthy(&self, reads: bool, ok: bool) {
        let flag = if reads {
            &self.shared.reads_ok
        } else {
            &self.shared.commands_ok
        };
        if flag.load(Ordering::Relaxed) == ok {
            return;
        }
        flag.store(ok, Ordering::Relaxed);
        let what = if reads { "reading the log" } else { "commands" };
        if ok {
            tracing::info!("Redis answers again ({what})");
        } else {
            tracing::error!("Redis is unreachable ({what}): requests fail until it is back");
        }
    }

    async fn append(&self, entry: &Entry) -> Result<(), BrokerError> {
        let text = serde_json::to_string(entry)
            .map_err(|e| BrokerError::Unavailable(format!("cannot encode a log entry: {e}")))?;
        let mut redis = self.shared.redis.clone();
        let added: Result<String, _> = redis::cmd("XADD")
            .arg(&self.shared.log_key)
            .arg("*")
            .arg("e")
            .arg(text)
            .query_async(&mut redis)
            .await;
        self.set_healthy(false, added.is_ok());
        added.map(drop).map_err(unavailable)
    }

    /// A node whose log reader died (a panic) would take requests and never answer them:
    /// it reports itself unhealthy (so the load balancer stops sending players) and closes
    /// its sockets (1012), so that they go to another node.
    async fn watch_reader(self, reader: tokio::task::JoinHandle<()>, stop: CancellationToken) {
        let ended = reader.await;
        if stop.is_cancelled() {
            return;
        }
        tracing::error!(
            panicked = ended.is_err(),
            "the log reader stopped: this node can no longer serve; closing its connections"
        );
        self.shared.reader_gone.store(true, Ordering::Relaxed);
        self.close_all(
            crate::connection::close::RESTART,
            "node cannot serve: log reader stopped",
        );
    }

    /// Reads the log forever, applying each entry to the copy of the Hub.
    async fn read_log(self, mut reader: ConnectionManager, stop: CancellationToken) {
        let log = self.shared.log_key.clone();
        let mut failed = false;
        loop {
            if failed {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
                if let Err(e) = self.check_not_lost(&mut reader).await {
                    tracing::debug!(error = %e, "Redis still unreachable");
                    continue;
                }
            }
            let last_id = self.replica().last_id.clone();
            let mut xread = redis::cmd("XREAD");
            xread
                .arg("COUNT")
                .arg(READ_BATCH)
                .arg("BLOCK")
                .arg(u64::try_from(READ_BLOCK.as_millis()).unwrap_or(1000))
                .arg("STREAMS")
                .arg(&log)
                .arg(&last_id);
            let read = xread.query_async::<redis::Value>(&mut reader);
            let reply = tokio::select! {
                _ = stop.cancelled() => return,
                reply = read => reply,
            };
            match reply {
                Ok(reply) => {
                    failed = false;
                    self.set_healthy(true, true);
                    self.apply_batch(&last_id, &reply);
                }
                Err(e) => {
                    if !failed {
                        tracing::warn!(error = %e, "reading the log failed");
                    }
                    self.set_healthy(true, false);
                    failed = true;
                }
            }
        }
    }

    /// Applies entries read after `from`, unless the copy was replaced meanwhile (it
    /// started over from a snapshot): then they may not follow its position, and the next
    /// read starts from there instead.
    fn apply_batch(&self, from: &str, reply: &redis::Value) {
        let me = self.node();
        let mut fenced = false;
        {
            let mut replica = self.replica();
            if replica.last_id != from {
                return;
            }
            for (id, text) in stream_entries(reply) {
                let Ok(id) = std::str::from_utf8(id) else {
                    tracing::warn!("log entry with an unreadable id skipped");
                    continue;
                };
                let time = stream_id(id).map_or(replica.clock, |(ms, _)| ms);
                match text.map(serde_json::from_slice::<Entry>) {
                    Some(Ok(entry)) => {
                        fenced |= replica.apply(entry, time, me, &self.shared.metrics);
                    }
                    _ => tracing::warn!(%id, "unreadable log entry skipped"),
                }
                replica.last_id.clear();
                replica.last_id.push_str(id);
            }
        }
        // Several nodes may append this node's `node_down`: one fencing is enough.
        if fenced && !self.shared.fencing.swap(true, Ordering::AcqRel) {
            self.fenced();
        }
    }

    /// Another node declared this one dead (it could not reach Redis for too long): its
    /// connections were detached everywhere, so they are closed, and the node registers
    /// under a new number.
    fn fenced(&self) {
        tracing::error!(
            node = self.node(),
            "this node was declared dead by the cluster: closing its connections"
        );
        let conns: Vec<ConnHandle> = self.replica().conns.drain().map(|(_, h)| h).collect();
        for handle in conns {
            handle.closer().close(
                crate::connection::close::RESTART,
                "node rejoining the cluster",
            );
        }
        // Until it has a new number, the node refuses new connections (their ids would be
        // under the dead number).
        let broker = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(broker.shared.options.heartbeat);
            loop {
                every.tick().await;
                let mut redis = broker.shared.redis.clone();
                match register(&mut redis, &broker.shared.options.prefix).await {
                    Ok(node) => {
                        broker.shared.node.store(node, Ordering::Relaxed);
                        broker.heartbeat().await;
                        broker.shared.fencing.store(false, Ordering::Release);
                        tracing::info!(node, "registered again");
                        return;
                    }
                    Err(e) => tracing::warn!(error = %e, "could not register again yet"),
                }
            }
        });
    }

    /// After Redis was unreachable: did it come back with less than this copy has seen?
    /// Either its data is gone (the epoch key, made once per data set, is missing or new)
    /// or it lost the end of the log (the last entry this copy applied is not there). Then
    /// start over from what it has. Stream ids cannot tell by themselves: they come from
    /// the clock, so entries appended after the restart have larger ids anyway.
    async fn check_not_lost(&self, reader: &mut ConnectionManager) -> Result<(), BrokerError> {
        let epoch: Option<String> = redis::cmd("GET")
            .arg(self.key("epoch"))
            .query_async(reader)
            .await
            .map_err(unavailable)?;
        let mine = self.epoch();
        let seen = self.replica().last_id.clone();
        let mut lost = epoch.as_deref() != Some(mine.as_str());
        if !lost && seen != "0-0" {
            let found: Vec<redis::Value> = redis::cmd("XRANGE")
                .arg(self.key("log"))
                .arg(&seen)
                .arg(&seen)
                .query_async(reader)
                .await
                .map_err(unavailable)?;
            let trimmed: Option<String> = redis::cmd("GET")
                .arg(self.key("trimmed"))
                .query_async(reader)
                .await
                .map_err(unavailable)?;
            let trimmed_away = trimmed.is_some_and(|t| stream_id(&seen) < stream_id(&t));
            if found.is_empty() && trimmed_away {
                // Not lost, but gone for this copy: what follows it cannot be applied.
                tracing::error!(%seen, "the log was trimmed past this node's position: starting over from the snapshot");
                return self.start_over(reader).await;
            }
            lost = found.is_empty();
        }
        if lost {
            tracing::error!(
                %seen,
                "Redis came back without the state this node has read: closing every connection and starting over"
            );
            let epoch = ensure_epoch(reader, &self.shared.options.prefix)
                .await
                .map_err(unavailable)?;
            *self.shared.epoch.lock().unwrap_or_else(|p| p.into_inner()) = epoch;
            self.start_over(reader).await?;
        }
        Ok(())
    }

    fn epoch(&self) -> String {
        self.shared
            .epoch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the copy by what Redis has (its snapshot, or nothing), closing this node's
    /// sockets.
    async fn start_over(&self, redis: &mut ConnectionManager) -> Result<(), BrokerError> {
        let epoch = self.epoch();
        let fresh = load_replica(
            redis,
            &self.shared.options.prefix,
            &epoch,
            &self.shared.hub_config,
        )
        .await
        .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        self.replica().replace(fresh);
        Ok(())
    }

    /// Writes a snapshot of the copy now and then, and trims the log behind the previous
    /// one (one period of slack, so that no node reading normally loses an entry). One
    /// node does it per period (`SET NX` lock).
    async fn snapshots(self, stop: CancellationToken) {
        let period = self.shared.options.snapshot_every;
        let mut every = tokio::time::interval(period);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = every.tick() => {}
            }
            if let Err(e) = self.snapshot_once(period).await {
                tracing::warn!(error = %e, "snapshot failed");
            }
        }
    }

    async fn snapshot_once(&self, period: Duration) -> Result<(), BrokerError> {
        let mut redis = self.shared.redis.clone();
        // Held for most of a period: the nodes' timers are not aligned, and one snapshot
        // per period is what the trimming below counts on.
        let lock_ms = u64::try_from(period.as_millis() * 9 / 10)
            .unwrap_or(1_000)
            .max(1);
        let locked: Option<String> = redis::cmd("SET")
            .arg(self.key("snapshot_lock"))
            .arg(self.node())
            .arg("NX")
            .arg("PX")
            .arg(lock_ms)
            .query_async(&mut redis)
            .await
            .map_err(unavailable)?;
        if locked.is_none() {
            return Ok(());
        }
        let previous: Option<String> = redis::cmd("GET")
            .arg(self.key("snapshot_id"))
            .query_async(&mut redis)
            .await
            .map_err(unavailable)?;
        let current = self.replica().last_id.clone();
        // Nothing new since the last snapshot: no need to write the same state again.
        if stream_id(&current) > previous.as_deref().and_then(stream_id) {
            let record = self
                .replica()
                .record(self.epoch())
                .map_err(BrokerError::Unavailable)?;
            let text = serde_json::to_string(&record)
                .map_err(|e| BrokerError::Unavailable(format!("cannot encode a snapshot: {e}")))?;
            let (ms, seq) = stream_id(&record.last_id).unwrap_or((0, 0));
            // Atomically, and only if this copy belongs to the data set Redis has and is
            // newer than the stored snapshot: a lagging node must not replace a newer one.
            let written: i64 = redis::cmd("EVAL")
                .arg(WRITE_SNAPSHOT)
                .arg(3)
                .arg(self.key("snapshot"))
                .arg(self.key("snapshot_id"))
                .arg(self.key("epoch"))
                .arg(&text)
                .arg(ms)
                .arg(seq)
                .arg(&record.last_id)
                .arg(&record.epoch)
                .query_async(&mut redis)
                .await
                .map_err(unavailable)?;
            tracing::debug!(bytes = text.len(), at = %record.last_id, written, "snapshot");
        }
        // Trim up to the previous snapshot, but never past a live node's position (each
        // node's liveness key holds the last entry it applied): a slow node keeps what it
        // has yet to read.
        let Some(mut trim_to) = previous else {
            return Ok(());
        };
        for position in self.node_positions(&mut redis).await? {
            if stream_id(&position).is_some() && stream_id(&position) < stream_id(&trim_to) {
                trim_to = position;
            }
        }
        let _: () = redis::pipe()
            .atomic()
            .cmd("XTRIM")
            .arg(&self.shared.log_key)
            .arg("MINID")
            .arg(&trim_to)
            .ignore()
            .cmd("SET")
            .arg(self.key("trimmed"))
            .arg(&trim_to)
            .ignore()
            .query_async(&mut redis)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// The last applied entry of every live node (their liveness keys).
    async fn node_positions(
        &self,
        redis: &mut ConnectionManager,
    ) -> Result<Vec<String>, BrokerError> {
        let pattern = self.key("node:*");
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        // Bounded: a cluster has a handful of nodes; 100 rounds of SCAN cover any keyspace
        // this deployment shares.
        for _ in 0..100 {
            let (next, mut found): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(redis)
                .await
                .map_err(unavailable)?;
            keys.append(&mut found);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(redis)
            .await
            .map_err(unavailable)?;
        Ok(values.into_iter().flatten().collect())
    }

    /// A node whose position is older than the trimmed part of the log cannot read on
    /// (the entries it needs are gone): it starts over from the snapshot.
    async fn check_not_behind(&self) {
        let mut redis = self.shared.redis.clone();
        let trimmed: Result<Option<String>, _> = redis::cmd("GET")
            .arg(self.key("trimmed"))
            .query_async(&mut redis)
            .await;
        let Ok(Some(trimmed)) = trimmed else {
            return;
        };
        let seen = self.replica().last_id.clone();
        if stream_id(&seen) < stream_id(&trimmed) {
            tracing::error!(%seen, %trimmed, "this node fell behind the trimmed log: starting over from the snapshot");
            if let Err(e) = self.start_over(&mut redis).await {
                tracing::warn!(error = %e, "starting over failed");
            }
        }
    }

    /// Refreshes this node's liveness key, retries lost detaches, and declares dead the
    /// nodes whose key expired.
    async fn keep_alive(self, stop: CancellationToken) {
        let mut every = tokio::time::interval(self.shared.options.heartbeat);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Nodes are judged only after this node itself reached Redis for a whole timeout:
        // after an outage everyone's key has expired, and nobody is dead for that.
        let mut reachable_since: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = every.tick() => {}
            }
            if !self.heartbeat().await {
                reachable_since = None;
                continue;
            }
            let since = *reachable_since.get_or_insert_with(Instant::now);
            self.retry_detaches().await;
            self.check_not_behind().await;
            if since.elapsed() >= self.shared.options.node_timeout {
                self.find_dead_nodes().await;
            }
        }
        // Leaving on purpose: the others need not wait for the key to expire.
        let mut redis = self.shared.redis.clone();
        let _: Result<(), _> = redis::cmd("DEL")
            .arg(self.key(&format!("node:{}", self.node())))
            .query_async(&mut redis)
            .await;
    }

    async fn heartbeat(&self) -> bool {
        let mut redis = self.shared.redis.clone();
        let ttl = u64::try_from(self.shared.options.node_timeout.as_millis()).unwrap_or(5_000);
        let position = self.replica().last_id.clone();
        let set: Result<(), _> = redis::cmd("SET")
            .arg(self.key(&format!("node:{}", self.node())))
            .arg(position)
            .arg("PX")
            .arg(ttl.max(1))
            .query_async(&mut redis)
            .await;
        self.set_healthy(false, set.is_ok());
        set.is_ok()
    }

    async fn retry_detaches(&self) {
        let pending = std::mem::take(
            &mut *self
                .shared
                .pending_detach
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for (i, conn) in pending.iter().enumerate() {
            if self.append(&Entry::Detach { c: conn.0 }).await.is_err() {
                self.shared
                    .pending_detach
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(&pending[i..]);
                return;
            }
        }
    }

    async fn find_dead_nodes(&self) {
        let me = self.node();
        let nodes: BTreeSet<u64> = self
            .replica()
            .attached
            .iter()
            .map(|c| c.0 >> NODE_SHIFT)
            .filter(|n| *n != me)
            .collect();
        let mut redis = self.shared.redis.clone();
        for n in nodes {
            let alive: Result<bool, _> = redis::cmd("EXISTS")
                .arg(self.key(&format!("node:{n}")))
                .query_async(&mut redis)
                .await;
            if let Ok(false) = alive {
                tracing::warn!(
                    node = n,
                    "node stopped answering: detaching its connections"
                );
                let _ = self.append(&Entry::NodeDown { n }).await;
            }
        }
    }

    /// Appends a tick when a grace period of the copy is due (at most one per 100 ms per
    /// node: every node may tick, and a tick with nothing due does nothing).
    async fn tick_grace(self, stop: CancellationToken) {
        let mut every = tokio::time::interval(TICK_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = every.tick() => {}
            }
            let now = epoch_ms();
            let due = self.replica().hub.next_deadline().is_some_and(|d| d <= now);
            if !due {
                continue;
            }
            {
                let mut last = self
                    .shared
                    .last_tick_sent
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                if last.is_some_and(|l| l.elapsed() < Duration::from_millis(100)) {
                    continue;
                }
                *last = Some(Instant::now());
            }
            let _ = self.append(&Entry::Tick).await;
        }
    }
}

/// The copy to start from: the latest snapshot (then the log after it), or an empty one
/// (then the whole log).
async fn load_replica(
    redis: &mut ConnectionManager,
    prefix: &str,
    epoch: &str,
    config: &HubConfig,
) -> Result<Replica, LoadError> {
    let text: Option<String> = redis::cmd("GET")
        .arg(key(prefix, "snapshot"))
        .query_async(redis)
        .await?;
    let Some(text) = text else {
        return Ok(Replica::new(config.clone()));
    };
    let record = match serde_json::from_str::<SnapshotRecord>(&text) {
        // A snapshot of an earlier data set, written by a node that had not noticed the
        // loss yet: it describes a log that is gone.
        Ok(record) if record.epoch != epoch => return Ok(Replica::new(config.clone())),
        other => other,
    };
    let restored = record
        .map_err(|e| e.to_string())
        .and_then(|record| Replica::restore(config.clone(), record));
    match restored {
        Ok(replica) => {
            tracing::info!(at = %replica.last_id, "starting from the cluster's snapshot");
            Ok(replica)
        }
        // Reading the whole log instead would be wrong once it was trimmed: refuse.
        Err(e) => Err(LoadError::Snapshot(e)),
    }
}

/// Why a copy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
    #[error("the cluster's snapshot is unusable (another version of the server wrote it?): {0}")]
    Snapshot(String),
}

/// Stores a snapshot if its epoch is Redis's and it is newer than the stored one.
/// KEYS: snapshot, snapshot_id, epoch. ARGV: text, ms, seq, id, epoch. Returns 1 if
/// written.
const WRITE_SNAPSHOT: &str = r"
if redis.call('GET', KEYS[3]) ~= ARGV[5] then return 0 end
local stored = redis.call('GET', KEYS[2])
if stored then
  local ms, seq = string.match(stored, '^(%d+)-(%d+)$')
  local nms, nseq = tonumber(ARGV[2]), tonumber(ARGV[3])
  ms, seq = tonumber(ms), tonumber(seq)
  if ms and (nms < ms or (nms == ms and nseq <= seq)) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[4])
return 1
";

/// Refuses to join a cluster whose room settings differ (the first node sets them).
async fn check_settings(
    redis: &mut ConnectionManager,
    options: &RedisOptions,
    config: &HubConfig,
) -> Result<(), RedisStartError> {
    let connect = |source| RedisStartError::Connect {
        url: options.url.clone(),
        source,
    };
    let settings_key = key(&options.prefix, "settings");
    let mine = settings_fingerprint(config);
    let _: Option<String> = redis::cmd("SET")
        .arg(&settings_key)
        .arg(&mine)
        .arg("NX")
        .query_async(redis)
        .await
        .map_err(connect)?;
    let cluster: String = redis::cmd("GET")
        .arg(&settings_key)
        .query_async(redis)
        .await
        .map_err(connect)?;
    if cluster != mine {
        return Err(RedisStartError::Settings {
            cluster,
            mine,
            key: settings_key,
        });
    }
    Ok(())
}

/// A fresh node number (`INCR`), below [`MAX_NODE`].
async fn register(redis: &mut ConnectionManager, prefix: &str) -> Result<u64, redis::RedisError> {
    let node: u64 = redis::cmd("INCR")
        .arg(key(prefix, "nodes"))
        .query_async(redis)
        .await?;
    if node == 0 || node >= MAX_NODE - 1 {
        return Err(redis::RedisError::from((
            redis::ErrorKind::Client,
            "node numbers exhausted",
            format!("{prefix}:nodes is {node}; reset it with every node stopped"),
        )));
    }
    Ok(node)
}

/// The data set's epoch: made once (`SET NX`) when Redis has none, so a Redis that lost
/// its data is recognised by a new one.
async fn ensure_epoch(
    redis: &mut ConnectionManager,
    prefix: &str,
) -> Result<String, redis::RedisError> {
    let _: Option<String> = redis::cmd("SET")
        .arg(key(prefix, "epoch"))
        .arg(crate::ids::room_id())
        .arg("NX")
        .query_async(redis)
        .await?;
    redis::cmd("GET")
        .arg(key(prefix, "epoch"))
        .query_async(redis)
        .await
}

/// The (id, field `e`) of every entry of an `XREAD` reply, borrowed from it: walking the
/// reply in place instead of converting it (`StreamReadReply` clones every value into a
/// map per entry) halves what reading the log allocates. RESP2 (arrays) and RESP3 (a map
/// of streams) both.
fn stream_entries(reply: &redis::Value) -> Vec<(&[u8], Option<&[u8]>)> {
    use redis::Value;
    let streams: Vec<&Value> = match reply {
        Value::Array(streams) => streams
            .iter()
            .filter_map(|s| match s {
                Value::Array(pair) => pair.get(1),
                _ => None,
            })
            .collect(),
        Value::Map(pairs) => pairs.iter().map(|(_, items)| items).collect(),
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    for items in streams {
        let Value::Array(items) = items else { continue };
        for item in items {
            let Value::Array(parts) = item else { continue };
            let (Some(Value::BulkString(id)), Some(Value::Array(fields))) =
                (parts.first(), parts.get(1))
            else {
                continue;
            };
            let text = fields.chunks(2).find_map(|kv| match kv {
                [Value::BulkString(k), Value::BulkString(v)] if k.as_slice() == b"e" => {
                    Some(v.as_slice())
                }
                _ => None,
            });
            out.push((id.as_slice(), text));
        }
    }
    out
}

/// A stream id `ms-seq` as a pair that orders like the ids.
fn stream_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

impl Broker for RedisBroker {
    fn next_conn_id(&self) -> ConnId {
        let n = self.shared.next_conn.fetch_add(1, Ordering::Relaxed) & ((1 << NODE_SHIFT) - 1);
        ConnId((self.node() << NODE_SHIFT) | n)
    }

    async fn create_session(&self, pool: PoolKey) -> Result<Session, BrokerError> {
        let session = Session {
            id: crate::ids::session_id().into(),
            player: crate::ids::player_id().into(),
            pool,
        };
        let stored = serde_json::to_string(&StoredSession {
            p: session.player.to_string(),
            pid: session.pool.product_id,
            z: session.pool.zone.to_string(),
        })
        .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        let ttl = u64::try_from(self.shared.options.session_ttl.as_millis()).unwrap_or(u64::MAX);
        let mut redis = self.shared.redis.clone();
        let set: Result<(), _> = redis::cmd("SET")
            .arg(self.key(&format!("session:{}", session.id)))
            .arg(stored)
            .arg("PX")
            .arg(ttl.max(1))
            .query_async(&mut redis)
            .await;
        self.set_healthy(false, set.is_ok());
        set.map_err(unavailable)?;
        Ok(session)
    }

    async fn find_session(&self, id: &str) -> Result<Option<Session>, BrokerError> {
        // Session ids are 40 alphanumerics; anything else cannot name a key of ours.
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Ok(None);
        }
        let ttl = u64::try_from(self.shared.options.session_ttl.as_millis()).unwrap_or(u64::MAX);
        let mut redis = self.shared.redis.clone();
        let got: Result<Option<String>, _> = redis::cmd("GETEX")
            .arg(self.key(&format!("session:{id}")))
            .arg("PX")
            .arg(ttl.max(1))
            .query_async(&mut redis)
            .await;
        self.set_healthy(false, got.is_ok());
        let Some(text) = got.map_err(unavailable)? else {
            return Ok(None);
        };
        let Ok(stored) = serde_json::from_str::<StoredSession>(&text) else {
            tracing::warn!("unreadable session record ignored");
            return Ok(None);
        };
        Ok(Some(Session {
            id: id.into(),
            player: stored.p.into(),
            pool: PoolKey {
                product_id: stored.pid,
                zone: stored.z.into(),
            },
        }))
    }

    async fn attach(&self, conn: ConnHandle, attach: Attach) -> Result<(), BrokerError> {
        if self.shared.fencing.load(Ordering::Acquire)
            || self.shared.reader_gone.load(Ordering::Relaxed)
        {
            return Err(BrokerError::Unavailable(
                "this node is rejoining the cluster".into(),
            ));
        }
        let id = conn.id;
        // Registered first, so the 20001 and replay of a resume have somewhere to go.
        self.replica().conns.insert(id, conn);
        let entry = Entry::Attach {
            c: attach.conn.0,
            p: attach.player.to_string(),
            pid: attach.pool.product_id,
            z: attach.pool.zone.to_string(),
            res: attach.resumable,
            after: attach.resume_after,
        };
        let appended = self.append(&entry).await;
        if appended.is_err() {
            self.replica().conns.remove(&id);
        }
        appended
    }

    async fn request(&self, conn: ConnId, incoming: Incoming) -> Result<(), BrokerError> {
        self.append(&Entry::request(conn, incoming)).await
    }

    async fn detach(&self, conn: ConnId) {
        self.replica().conns.remove(&conn);
        if self.append(&Entry::Detach { c: conn.0 }).await.is_err() {
            // Without it the others would think the player still online: retried by the
            // heartbeat until Redis is back.
            self.shared
                .pending_detach
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(conn);
        }
    }

    fn close_all(&self, code: u16, reason: &'static str) {
        for handle in self.replica().conns.values() {
            handle.closer().close(code, reason);
        }
    }

    fn stats(&self) -> BrokerStats {
        let replica = self.replica();
        let hub = replica.hub.stats();
        BrokerStats {
            // Sessions are Redis keys with an expiry; the players of the copy are the
            // ones the cluster knows.
            sessions: hub.players,
            players: hub.players,
            connections: replica.conns.len(),
            rooms: hub.rooms,
            queued: hub.queued,
        }
    }

    fn healthy(&self) -> bool {
        let s = &self.shared;
        s.commands_ok.load(Ordering::Relaxed)
            && s.reads_ok.load(Ordering::Relaxed)
            && !s.reader_gone.load(Ordering::Relaxed)
            && !s.fencing.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incoming(frame: &str) -> Incoming {
        matchchat_core::request::parse_frame(frame).expect("valid frame")
    }

    #[test]
    fn a_request_survives_the_log_byte_for_byte() {
        for frame in [
            r#"{"jsonrpc":"2.0","id":"a\"b","method":"game/send_chat_msg","params":{"chat_msg":"你好 <b>","chat_sn":"s1"}}"#,
            r#"{"jsonrpc":"2.0","id":1e3,"method":"game/match_player","params":[]}"#,
            r#"{"jsonrpc":"2.0","id":-7,"method":"game/leave_chat","params":{}}"#,
            r#"{"jsonrpc":"2.0","id":"x","method":"game/cancel_match","params":[]}"#,
        ] {
            let original = incoming(frame);
            let entry = Entry::request(ConnId(3), original.clone());
            let text = serde_json::to_string(&entry).expect("encodes");
            let back: Entry = serde_json::from_str(&text).expect("decodes");
            assert_eq!(back, entry);
            let Entry::Request {
                id,
                m,
                msg,
                sn,
                room,
                ..
            } = back
            else {
                panic!("not a request: {text}");
            };
            assert_eq!(room.is_some(), m == method::MATCH_PLAYER, "{text}");
            let decoded = decode_request(id, &m, msg, sn).expect("known request");
            assert_eq!(decoded, original, "{text}");
        }
    }

    #[test]
    fn unknown_requests_are_refused_not_guessed() {
        assert!(decode_request("1".into(), "game/teleport", None, None).is_none());
        assert!(
            decode_request("1".into(), method::SEND_CHAT_MSG, Some("x".into()), None).is_none()
        );
        assert!(decode_request("{}".into(), method::MATCH_PLAYER, None, None).is_none());
    }

    #[test]
    fn stream_ids_order_numerically() {
        assert!(stream_id("1700000000000-10") > stream_id("1700000000000-9"));
        assert!(stream_id("0-0") < stream_id("1-0"));
        assert_eq!(stream_id("garbage"), None);
    }

    #[test]
    fn xread_replies_are_walked_in_place() {
        use redis::Value;
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let entry =
            |id: &str, fields: Vec<Value>| Value::Array(vec![bulk(id), Value::Array(fields)]);
        let items = Value::Array(vec![
            entry("1-0", vec![bulk("e"), bulk("{}")]),
            entry("1-1", vec![bulk("x"), bulk("y")]),
        ]);
        let resp2 = Value::Array(vec![Value::Array(vec![bulk("log"), items.clone()])]);
        let want: Vec<(&[u8], Option<&[u8]>)> = vec![(b"1-0", Some(b"{}")), (b"1-1", None)];
        assert_eq!(stream_entries(&resp2), want);
        let resp3 = Value::Map(vec![(bulk("log"), items)]);
        assert_eq!(stream_entries(&resp3), want);
        assert!(stream_entries(&Value::Nil).is_empty());
    }

    /// Two copies fed the same entries end in the same state and name rooms the same:
    /// the property the whole design stands on.
    #[test]
    fn copies_fed_the_same_log_agree() {
        let metrics = Metrics::default();
        let config = HubConfig::default();
        let mut a = Replica::new(config.clone());
        let mut b = Replica::new(config);
        let attach = |c: u64, p: &str| Entry::Attach {
            c,
            p: p.into(),
            pid: 1,
            z: "z".into(),
            res: true,
            after: None,
        };
        let matching = |c: u64| {
            Entry::request(
                ConnId(c),
                incoming(r#"{"jsonrpc":"2.0","id":"m","method":"game/match_player","params":[]}"#),
            )
        };
        let log = vec![
            attach(1 << NODE_SHIFT, "p1"),
            attach((2 << NODE_SHIFT) | 1, "p2"),
            matching(1 << NODE_SHIFT),
            matching((2 << NODE_SHIFT) | 1),
            Entry::NodeDown { n: 2 },
            Entry::Tick,
        ];
        for (time, entry) in (10..).zip(log) {
            let text = serde_json::to_string(&entry).expect("encodes");
            a.apply(
                serde_json::from_str(&text).expect("decodes"),
                time,
                1,
                &metrics,
            );
            b.apply(entry, time, 2, &metrics);
        }
        assert_eq!(a.hub.stats(), b.hub.stats());
        assert_eq!(a.hub.stats().rooms, 1);
        assert!(a.hub.check_invariants().is_ok());
        // Node 2 went down: its connection is detached in both copies.
        assert_eq!(a.attached, b.attached);
        assert_eq!(a.attached.len(), 1);
        assert_eq!(a.hub.player_of(ConnId((2 << NODE_SHIFT) | 1)), None);
        assert_eq!(a.clock, 15);
        // Compared as JSON values: the maps inside are hash maps, whose text order is
        // per process (the state, not the order, must agree).
        let state = |r: &Replica| -> serde_json::Value {
            let text =
                serde_json::to_string(&r.record("e".into()).expect("a record")).expect("encodes");
            serde_json::from_str(&text).expect("decodes")
        };
        assert_eq!(
            state(&a),
            state(&b),
            "both copies snapshot to the same state"
        );
    }

    #[test]
    fn node_ranges_never_panic() {
        assert_eq!(node_range(1), Some(ConnId(1 << 40)..ConnId(2 << 40)));
        assert_eq!(node_range(MAX_NODE - 1), None);
        assert_eq!(node_range(u64::MAX), None);
    }
}
