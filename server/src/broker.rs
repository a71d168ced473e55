//! The shared state behind one small interface, [`Broker`].
//!
//! Handlers (HTTP and WebSocket) only talk to a `Broker`: sessions, attaching and
//! detaching connections, requests. [`LocalBroker`] keeps everything in this process;
//! [`crate::redis_broker::RedisBroker`] shares it between nodes through Redis, behind the
//! same trait, so the handlers do not know which one they talk to.
//!
//! Frames reach connections through the [`ConnHandle`] registered at attach time: a
//! **bounded** queue plus a [`Closer`] (an [`Outlet`]). The broker never waits on a connection: when a
//! queue is full the connection is a slow consumer and is closed (1008), so one client
//! that stops reading can neither stall its room nor grow the server's memory.

use crate::metrics::Metrics;
use matchchat_core::Code;
use matchchat_core::hub::{Attach, ConnId, Effect, FrameKind, Hub, HubConfig, PlayerId, PoolKey};
use matchchat_core::request::Incoming;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// One frame for a connection's writer.
#[derive(Debug)]
pub enum Outbound {
    /// A `result` (shared JSON text), enveloped by the writer as a reply or a push.
    Result { kind: FrameKind, result: Arc<str> },
    /// A complete frame (global errors, 40009).
    Text(String),
}

/// Closes a connection once, with the first code asked for.
///
/// A flag and a `Notify` rather than a `CancellationToken`: every connection has one, and
/// the token's tree node is a separate allocation of ≈ 100 bytes an idle connection does
/// not need.
#[derive(Debug, Default)]
pub struct Closer {
    closed: AtomicBool,
    notify: Notify,
    reason: Mutex<Option<(u16, &'static str)>>,
}

impl Closer {
    /// Asks for the connection to close with `code`; later calls keep the first code.
    pub fn close(&self, code: u16, reason: &'static str) {
        if let Ok(mut slot) = self.reason.lock()
            && slot.is_none()
        {
            *slot = Some((code, reason));
        }
        self.closed.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    pub fn reason(&self) -> Option<(u16, &'static str)> {
        self.reason.lock().ok().and_then(|r| *r)
    }

    /// Resolves once [`Closer::close`] has been called (at once if it already was).
    pub async fn closed(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before the flag is read, so a close in between is not missed.
            notified.as_mut().enable();
            if self.is_closed() {
                return;
            }
            notified.await;
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// Close code for a slow consumer (policy violation).
pub const CLOSE_SLOW_CONSUMER: u16 = 1008;

/// How the broker reaches one connection.
#[derive(Clone, Debug)]
pub struct ConnHandle {
    pub id: ConnId,
    pub outlet: Arc<Outlet>,
}

impl ConnHandle {
    /// The connection's close signal.
    pub fn closer(&self) -> &Closer {
        &self.outlet.closer
    }

    /// Queues a frame without waiting; a full queue closes the connection.
    pub fn offer(&self, frame: Outbound, metrics: &Metrics) {
        match self.outlet.push(frame) {
            Pushed::Queued | Pushed::Closed => {}
            Pushed::Full => {
                if !self.outlet.closer.is_closed() {
                    metrics
                        .slow_consumers_closed
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        conn = self.id.0,
                        "closing slow consumer: outbound queue full"
                    );
                }
                self.outlet
                    .closer
                    .close(CLOSE_SLOW_CONSUMER, "slow consumer: outbound queue full");
            }
        }
    }
}

/// A connection's outbound side: its bounded frame queue and its close signal, in one
/// allocation.
///
/// A `Mutex<VecDeque>` and a `Notify` rather than a tokio `mpsc` channel: the channel
/// allocates its shared state and a first block of 32 slots when it is made, ≈ 600 bytes
/// an idle connection never uses; an empty `VecDeque` allocates nothing. The lock is
/// held only to push or pop one frame.
#[derive(Debug)]
pub struct Outlet {
    pub closer: Closer,
    frames: Mutex<VecDeque<Outbound>>,
    capacity: usize,
    /// One permit per push (`notify_one`), so a push between the reader's check of the
    /// queue and its wait is not missed.
    ready: Notify,
}

/// What [`Outlet::push`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// The queue holds `capacity` frames already: a slow consumer.
    Full,
    /// The connection is closing; nothing more is delivered to it.
    Closed,
}

impl Outlet {
    /// A queue that holds at most `capacity` frames.
    pub fn new(capacity: usize) -> Outlet {
        Outlet {
            closer: Closer::default(),
            frames: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            ready: Notify::new(),
        }
    }

    fn frames(&self) -> MutexGuard<'_, VecDeque<Outbound>> {
        // A panic while holding this lock cannot leave the queue half-changed (push and
        // pop are single calls): keep using it.
        self.frames.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn push(&self, frame: Outbound) -> Pushed {
        if self.closer.is_closed() {
            return Pushed::Closed;
        }
        {
            let mut frames = self.frames();
            if frames.len() >= self.capacity {
                return Pushed::Full;
            }
            frames.push_back(frame);
        }
        self.ready.notify_one();
        Pushed::Queued
    }

    /// The next frame, without waiting.
    pub fn try_pop(&self) -> Option<Outbound> {
        let mut frames = self.frames();
        let frame = frames.pop_front();
        if frames.is_empty() && frames.capacity() > SHRINK_ABOVE {
            // A burst (a resume's replay) is over: give its memory back.
            *frames = VecDeque::new();
        }
        frame
    }

    /// The next frame, waiting for one. Cancel-safe: a frame is taken only in the poll
    /// that returns it.
    pub async fn pop(&self) -> Outbound {
        loop {
            let ready = self.ready.notified();
            if let Some(frame) = self.try_pop() {
                return frame;
            }
            ready.await;
        }
    }
}

/// Queue capacity kept after a burst; above it an emptied queue frees its buffer.
const SHRINK_ABOVE: usize = 64;

/// A session made by `get_config`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub id: Arc<str>,
    pub player: PlayerId,
    pub pool: PoolKey,
}

/// Gauges for `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct BrokerStats {
    pub sessions: usize,
    pub players: usize,
    pub connections: usize,
    pub rooms: usize,
    pub queued: Vec<(PoolKey, usize)>,
}

/// Failures of the shared state (a remote store being down, say).
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("too many sessions")]
    AtCapacity,
    #[error("shared state unavailable: {0}")]
    Unavailable(String),
}

/// The interface between handlers and the shared state.
pub trait Broker: Send + Sync + 'static {
    /// A fresh number for a connection of this process.
    fn next_conn_id(&self) -> ConnId;
    /// Makes a session (a player id in a pool).
    fn create_session(
        &self,
        pool: PoolKey,
    ) -> impl Future<Output = Result<Session, BrokerError>> + Send;
    /// The live session with this id, refreshing its expiry.
    fn find_session(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<Session>, BrokerError>> + Send;
    /// Registers a connection and attaches it to its player (resume, takeover).
    fn attach(
        &self,
        conn: ConnHandle,
        attach: Attach,
    ) -> impl Future<Output = Result<(), BrokerError>> + Send;
    /// Carries out one validated request of an attached connection.
    fn request(
        &self,
        conn: ConnId,
        incoming: Incoming,
    ) -> impl Future<Output = Result<(), BrokerError>> + Send;
    /// The connection is gone.
    fn detach(&self, conn: ConnId) -> impl Future<Output = ()> + Send;
    /// Asks every connection to close (shutdown).
    fn close_all(&self, code: u16, reason: &'static str);
    fn stats(&self) -> BrokerStats;
    /// Whether the shared state is reachable (`/healthz` answers 503 when it is not, so a
    /// load balancer sends players to another node).
    fn healthy(&self) -> bool {
        true
    }
}

/// Everything in this process.
#[derive(Clone)]
pub struct LocalBroker {
    shared: Arc<Shared>,
}

/// One mutex over the state machine and the connection registry: the room order
/// (PROTOCOL.md §8.8) is the order frames are queued, so queueing happens under the same
/// lock that assigns the sequence numbers. Nothing under the lock awaits or does IO; it
/// is held for a state-machine step plus a few non-blocking `try_send`s.
struct Shared {
    state: Mutex<State>,
    sessions: Mutex<Sessions>,
    metrics: Arc<Metrics>,
    started: Instant,
    next_conn: AtomicU64,
    session_ttl: Duration,
    max_sessions: usize,
}

struct State {
    hub: Hub,
    conns: HashMap<ConnId, ConnHandle>,
    effects: Vec<Effect>,
}

struct StoredSession {
    session: Session,
    last_used: Instant,
}

#[derive(Default)]
struct Sessions {
    by_id: HashMap<Arc<str>, StoredSession>,
}

impl LocalBroker {
    /// A broker with its background timers (grace periods, session expiry) running until
    /// `stop` is cancelled.
    pub fn start(
        hub_config: HubConfig,
        session_ttl: Duration,
        max_sessions: usize,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> LocalBroker {
        let hub = Hub::new(hub_config, Box::new(crate::ids::RandomRoomIds));
        let broker = LocalBroker {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    hub,
                    conns: HashMap::new(),
                    effects: Vec::new(),
                }),
                sessions: Mutex::new(Sessions::default()),
                metrics,
                started: Instant::now(),
                next_conn: AtomicU64::new(1),
                session_ttl,
                max_sessions,
            }),
        };
        let ticker = broker.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(50));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_sweep = Instant::now();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = every.tick() => {}
                }
                ticker.tick();
                // `find_session` checks expiry itself; the sweep only frees memory, and it
                // walks every connection under the hub lock, so it runs rarely.
                let sweep_every = (ticker.shared.session_ttl / 4)
                    .clamp(Duration::from_secs(1), Duration::from_secs(60));
                if last_sweep.elapsed() >= sweep_every {
                    last_sweep = Instant::now();
                    ticker.expire_sessions();
                }
            }
        });
        broker
    }

    fn mono_ms(&self) -> u64 {
        u64::try_from(self.shared.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic under the lock would poison it; the state machine does not panic, and
        // if it ever did, serving on is better than taking every room down with it.
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sessions(&self) -> MutexGuard<'_, Sessions> {
        self.shared
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Runs one state-machine step and carries out its effects, under the lock.
    fn step(&self, f: impl FnOnce(&mut Hub, &mut Vec<Effect>)) {
        let mut guard = self.lock();
        let state = &mut *guard;
        f(&mut state.hub, &mut state.effects);
        carry_out(&mut state.effects, &mut state.conns, &self.shared.metrics);
    }

    fn tick(&self) {
        let now = self.mono_ms();
        let due = self.lock().hub.next_deadline().is_some_and(|d| d <= now);
        if due {
            self.step(|hub, out| hub.tick(now, out));
        }
    }

    fn expire_sessions(&self) {
        let ttl = self.shared.session_ttl;
        let expired: Vec<Session> = {
            let connected: std::collections::HashSet<PlayerId> = {
                let state = self.lock();
                state
                    .conns
                    .keys()
                    .filter_map(|c| state.hub.player_of(*c).cloned())
                    .collect()
            };
            let mut sessions = self.sessions();
            let now = Instant::now();
            let mut gone = Vec::new();
            sessions.by_id.retain(|_, s| {
                if connected.contains(&s.session.player) {
                    // In use right now: that counts as use.
                    s.last_used = now;
                    return true;
                }
                let keep = now.saturating_duration_since(s.last_used) < ttl;
                if !keep {
                    gone.push(s.session.clone());
                }
                keep
            });
            gone
        };
        for session in expired {
            self.step(|hub, out| hub.forget(&session.player, out));
        }
    }
}

/// Carries out a state-machine step's effects on the connections of this process, in
/// order (effects for connections elsewhere are skipped: their own process does them).
/// Called under the lock that ran the step, so frames are queued in room order.
pub(crate) fn carry_out(
    effects: &mut Vec<Effect>,
    conns: &mut HashMap<ConnId, ConnHandle>,
    metrics: &Metrics,
) {
    for effect in effects.drain(..) {
        match effect {
            Effect::Send {
                conn,
                kind,
                code,
                result,
            } => {
                if let Some(handle) = conns.get(&conn) {
                    if !matches!(
                        code,
                        Code::Success | Code::Matched | Code::ChatData | Code::PeerLeft
                    ) {
                        metrics.error(code);
                    }
                    handle.offer(Outbound::Result { kind, result }, metrics);
                }
            }
            Effect::Close { conn, code, reason } => {
                if let Some(handle) = conns.remove(&conn) {
                    handle.closer().close(code, reason);
                }
            }
        }
    }
}

pub(crate) fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Broker for LocalBroker {
    fn next_conn_id(&self) -> ConnId {
        ConnId(self.shared.next_conn.fetch_add(1, Ordering::Relaxed))
    }

    async fn create_session(&self, pool: PoolKey) -> Result<Session, BrokerError> {
        let mut sessions = self.sessions();
        if sessions.by_id.len() >= self.shared.max_sessions {
            return Err(BrokerError::AtCapacity);
        }
        let session = Session {
            id: crate::ids::session_id().into(),
            player: crate::ids::player_id().into(),
            pool,
        };
        sessions.by_id.insert(
            session.id.clone(),
            StoredSession {
                session: session.clone(),
                last_used: Instant::now(),
            },
        );
        Ok(session)
    }

    async fn find_session(&self, id: &str) -> Result<Option<Session>, BrokerError> {
        let mut sessions = self.sessions();
        let ttl = self.shared.session_ttl;
        let now = Instant::now();
        Ok(match sessions.by_id.get_mut(id) {
            Some(s) if now.saturating_duration_since(s.last_used) < ttl => {
                s.last_used = now;
                Some(s.session.clone())
            }
            _ => None,
        })
    }

    async fn attach(&self, conn: ConnHandle, attach: Attach) -> Result<(), BrokerError> {
        // Registered first, so the 20001 and replay of a resume have somewhere to go.
        self.lock().conns.insert(conn.id, conn);
        self.step(|hub, out| hub.attach(attach, out));
        Ok(())
    }

    async fn request(&self, conn: ConnId, incoming: Incoming) -> Result<(), BrokerError> {
        let now = epoch_ms();
        self.step(|hub, out| hub.handle(conn, incoming.id, incoming.request, now, out));
        Ok(())
    }

    async fn detach(&self, conn: ConnId) {
        let now = self.mono_ms();
        self.step(|hub, out| hub.detach(conn, now, out));
        self.lock().conns.remove(&conn);
    }

    fn close_all(&self, code: u16, reason: &'static str) {
        for handle in self.lock().conns.values() {
            handle.closer().close(code, reason);
        }
    }

    fn stats(&self) -> BrokerStats {
        let sessions = self.sessions().by_id.len();
        let state = self.lock();
        let hub = state.hub.stats();
        BrokerStats {
            sessions,
            players: hub.players,
            connections: state.conns.len(),
            rooms: hub.rooms,
            queued: hub.queued,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: usize) -> Outbound {
        Outbound::Text(n.to_string())
    }

    fn number(frame: Option<Outbound>) -> Option<usize> {
        match frame? {
            Outbound::Text(t) => t.parse().ok(),
            Outbound::Result { .. } => None,
        }
    }

    #[test]
    fn an_outlet_is_fifo_and_bounded() {
        let outlet = Outlet::new(3);
        for n in 0..3 {
            assert_eq!(outlet.push(text(n)), Pushed::Queued);
        }
        assert_eq!(outlet.push(text(3)), Pushed::Full);
        assert_eq!(number(outlet.try_pop()), Some(0));
        assert_eq!(outlet.push(text(4)), Pushed::Queued);
        let rest: Vec<_> = std::iter::from_fn(|| number(outlet.try_pop())).collect();
        assert_eq!(rest, [1, 2, 4]);
    }

    #[test]
    fn a_closed_outlet_takes_nothing_more() {
        let outlet = Outlet::new(8);
        outlet.closer.close(1008, "test");
        assert_eq!(outlet.push(text(0)), Pushed::Closed);
        assert!(outlet.try_pop().is_none());
        // The first close code wins.
        outlet.closer.close(1000, "later");
        assert_eq!(outlet.closer.reason(), Some((1008, "test")));
    }

    #[test]
    fn an_emptied_outlet_frees_a_burst() {
        let outlet = Outlet::new(10_000);
        for n in 0..1_000 {
            outlet.push(text(n));
        }
        while outlet.try_pop().is_some() {}
        assert_eq!(outlet.frames().capacity(), 0);
    }

    #[tokio::test]
    async fn pop_waits_for_a_push_from_another_task() {
        let outlet = Arc::new(Outlet::new(8));
        let waiter = tokio::spawn({
            let outlet = outlet.clone();
            async move { number(Some(outlet.pop().await)) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        outlet.push(text(7));
        let got = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert_eq!(got.ok().and_then(Result::ok).flatten(), Some(7));
    }

    #[tokio::test]
    async fn closed_resolves_for_a_close_before_or_while_waiting() {
        let early = Closer::default();
        early.close(1012, "restart");
        tokio::time::timeout(Duration::from_secs(5), early.closed())
            .await
            .expect("already closed");
        let late = Arc::new(Closer::default());
        let waiter = tokio::spawn({
            let late = late.clone();
            async move { late.closed().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        late.close(1001, "going away");
        let done = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert!(matches!(done, Ok(Ok(()))));
    }
}
