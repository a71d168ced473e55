//! One load-generator run: N client tasks and a coordinator that moves them through the
//! phases together (connect → match → chat or hold → close) and gathers the figures.
//!
//! Each client is one task owning its WebSocket (no split, no channel): it sends when its
//! window or schedule allows and reads everything that comes. Every delivery is checked
//! against the sender's payload (see [`crate::proto`]): the sender is the matched peer
//! (its index, and in server mode its `send_player_id`), sequence numbers arrive in order,
//! each once. Losses are counted at the end, from what each sender reports having sent
//! (or, for a sender in another process, from its final marker message).
//!
//! Two open-loop extras for the reliability checks: `--stall-one` (client 0 stops reading
//! after its 20001 while its peer keeps sending to it; see `stall`) and `--flood-one`
//! (one more connection writes chat frames as fast as it can; see `flood`). Both are
//! kept out of the other clients' figures and reported apart. With `--server-pid`, the
//! server's RSS is also sampled every 250 ms over the whole run, for its maximum.

use crate::options::{Mode, Options, Target};
use crate::proto::{self, Incoming, Payload};
use crate::report::{Flooder, Outcome, Report, Samples, StallPart, StallPeerSide, StalledSide};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Latency samples are buffered per client and recorded this many at a time.
const SAMPLE_BATCH: usize = 256;
/// Missing sequence numbers remembered per sender (beyond: counted, not tracked).
const MISSING_CAP: usize = 100_000;
/// Receive buffer the stalled client asks for (the kernel doubles it), so that less of
/// what the server sends it is absorbed by the kernel before the server's queue.
const STALLED_RECV_BUFFER: u32 = 4096;
/// Most frames the stalled client reads when it reads again after the chat.
const STALLED_DRAIN_MAX: u64 = 10_000_000;
/// Most frames the flooder writes (it stops earlier: when closed, or at the chat's end).
const FLOOD_MAX_FRAMES: u64 = 50_000_000;
/// Frames the flooder writes per flush.
const FLOOD_BATCH: u64 = 64;
/// Server RSS sampling interval.
const RSS_EVERY: Duration = Duration::from_millis(250);

/// A failure of one client, named for the error counts.
#[derive(Debug)]
pub(crate) struct Fail(pub String);

impl Fail {
    fn new(kind: impl Into<String>) -> Fail {
        Fail(kind.into())
    }
}

/// Microseconds since the Unix epoch, from one reading of the wall clock mapped onto
/// the monotonic one (comparable across processes of this machine).
#[derive(Clone, Copy)]
struct Clock {
    base: Instant,
    base_epoch_us: u64,
}

impl Clock {
    fn new() -> Clock {
        let base_epoch_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        Clock {
            base: Instant::now(),
            base_epoch_us,
        }
    }

    fn us(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.base).as_micros();
        self.base_epoch_us
            .saturating_add(u64::try_from(since).unwrap_or(u64::MAX))
    }
}

/// Counts arrivals; the coordinator waits for all of them.
#[derive(Default)]
struct Gate {
    count: AtomicUsize,
    notify: Notify,
}

impl Gate {
    fn arrive(&self) {
        self.count.fetch_add(1, Relaxed);
        self.notify.notify_one();
    }

    /// Waits until `n` arrived or `deadline`; whether all did.
    async fn wait_all(&self, n: usize, deadline: tokio::time::Instant) -> bool {
        while self.count.load(Relaxed) < n {
            if tokio::time::timeout_at(deadline, self.notify.notified())
                .await
                .is_err()
            {
                return self.count.load(Relaxed) >= n;
            }
        }
        true
    }
}

/// The chat (or hold) window.
#[derive(Clone, Copy, Debug)]
struct Phase {
    start: Instant,
    end: Instant,
}

struct Shared {
    opts: Options,
    mode: Mode,
    /// `--stall-one`: the global index of the client that stops reading.
    stalled: Option<u64>,
    /// The nodes, `--addr` split on commas.
    addrs: Vec<SocketAddr>,
    url: String,
    clock: Clock,
    connect_slots: Semaphore,
    match_deadline: tokio::time::Instant,
    connected: Gate,
    matched: Gate,
    finished: Gate,
    go_match: watch::Receiver<bool>,
    go_chat: watch::Receiver<Option<Phase>>,
    go_close: watch::Receiver<bool>,
    /// Player id → global client index, for the identity check.
    ids: Mutex<HashMap<String, u64>>,
    /// Data messages each local client sent, published when it stops sending.
    sent: Vec<AtomicU64>,
    latency: Mutex<Histogram<u64>>,
}

/// Which gates a client has passed; the rest are passed for it when it ends early, so
/// the coordinator never waits on a client that is gone.
#[derive(Default)]
struct Arrived {
    connected: bool,
    matched: bool,
    finished: bool,
}

impl Arrived {
    fn connected(&mut self, s: &Shared) {
        if !self.connected {
            self.connected = true;
            s.connected.arrive();
        }
    }
    fn matched(&mut self, s: &Shared) {
        self.connected(s);
        if !self.matched {
            self.matched = true;
            s.matched.arrive();
        }
    }
    fn finished(&mut self, s: &Shared) {
        self.matched(s);
        if !self.finished {
            self.finished = true;
            s.finished.arrive();
        }
    }
}

/// A histogram of microseconds, 1 µs to 1 h, 3 significant digits.
pub(crate) fn new_histogram() -> Result<Histogram<u64>, String> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).map_err(|e| format!("histogram: {e}"))
}

/// Runs the load described by `opts` on the current tokio runtime and returns its figures.
pub async fn run(opts: &Options) -> Result<Report, String> {
    let n = opts.connection_count();
    let mode = opts.mode();
    if n == 0 {
        return Err("no connections asked for".into());
    }
    if mode != Mode::Idle && !n.is_multiple_of(2) {
        return Err(format!(
            "{n} connections cannot all be paired: use an even number"
        ));
    }
    if opts.window == 0 {
        return Err("--window must be at least 1".into());
    }
    if let Some(rate) = opts.rate
        && !(rate > 0.0 && rate.is_finite())
    {
        return Err("--rate must be a positive number".into());
    }
    if !(opts.duration >= 0.0 && opts.duration.is_finite()) {
        return Err("--duration must be a non-negative number".into());
    }
    // Several nodes of one cluster: client i connects to node i mod n, so the players of
    // a pair (consecutive clients) sit on different nodes.
    let mut addrs = Vec::new();
    for one in opts
        .addr
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
    {
        let addr = tokio::net::lookup_host(one)
            .await
            .map_err(|e| format!("cannot resolve {one}: {e}"))?
            .find(SocketAddr::is_ipv4)
            .ok_or_else(|| format!("{one} has no IPv4 address"))?;
        addrs.push(addr);
    }
    let Some(&addr) = addrs.first() else {
        return Err("--addr names no server".into());
    };
    if opts.stall_one && !(opts.stall_rate > 0.0 && opts.stall_rate.is_finite()) {
        return Err("--stall-rate must be a positive number".into());
    }
    let started = Instant::now();
    let server = opts.server_pid;
    let mut samples = Samples {
        server_rss_before: server.and_then(crate::procfs::rss_kib),
        ..Samples::default()
    };
    // The server's RSS every 250 ms until the end of the run (bounded in time as well).
    let (stop_rss_tx, stop_rss) = watch::channel(false);
    let rss_deadline = tokio::time::Instant::now()
        + Duration::from_secs_f64(
            opts.match_timeout.max(0.1) + opts.duration + opts.drain_timeout.max(0.0) + 60.0,
        );
    let rss_sampler = server.map(|pid| tokio::spawn(sample_rss(pid, stop_rss, rss_deadline)));
    let (go_match_tx, go_match) = watch::channel(false);
    let (go_chat_tx, go_chat) = watch::channel(None);
    let (go_close_tx, go_close) = watch::channel(false);
    let match_deadline =
        tokio::time::Instant::now() + Duration::from_secs_f64(opts.match_timeout.max(0.1));
    let shared = Arc::new(Shared {
        opts: opts.clone(),
        mode,
        stalled: (opts.stall_one && mode == Mode::Open).then_some(opts.index_base),
        url: format!("ws://{addr}/ws"),
        addrs,
        clock: Clock::new(),
        connect_slots: Semaphore::new(opts.connect_concurrency.max(1)),
        match_deadline,
        connected: Gate::default(),
        matched: Gate::default(),
        finished: Gate::default(),
        go_match,
        go_chat,
        go_close,
        ids: Mutex::new(HashMap::with_capacity(n)),
        sent: (0..n).map(|_| AtomicU64::new(0)).collect(),
        latency: Mutex::new(new_histogram()?),
    });
    let tasks: Vec<_> = (0..n)
        .map(|i| tokio::spawn(client(shared.clone(), i)))
        .collect();

    // Connect (and, for a storm, ask everyone to match at one moment).
    if mode == Mode::Idle || mode == Mode::Match || opts.match_at_once {
        shared.connected.wait_all(n, match_deadline).await;
        samples.connected_after = Some(started.elapsed());
        samples.server_rss_connected = server.and_then(crate::procfs::rss_kib);
        let _ = go_match_tx.send(true);
    }
    let mut phase = None;
    let mut flooder = None;
    match mode {
        Mode::Idle => {
            let now = Instant::now();
            let p = Phase {
                start: now,
                end: now + Duration::from_secs_f64(opts.duration),
            };
            phase = Some(p);
            let _ = go_chat_tx.send(Some(p));
            tokio::time::sleep_until(p.end.into()).await;
            shared
                .finished
                .wait_all(n, tokio::time::Instant::now() + Duration::from_secs(10))
                .await;
            samples.server_rss_end = server.and_then(crate::procfs::rss_kib);
        }
        Mode::Match => {
            shared.matched.wait_all(n, match_deadline).await;
            samples.matched_after = Some(started.elapsed());
            samples.server_rss_end = server.and_then(crate::procfs::rss_kib);
        }
        Mode::Closed | Mode::Open => {
            shared.matched.wait_all(n, match_deadline).await;
            samples.matched_after = Some(started.elapsed());
            samples.server_rss_connected = server.and_then(crate::procfs::rss_kib);
            let start = Instant::now() + Duration::from_millis(100);
            let p = Phase {
                start,
                end: start + Duration::from_secs_f64(opts.duration),
            };
            phase = Some(p);
            let _ = go_chat_tx.send(Some(p));
            if opts.flood_one && mode == Mode::Open {
                flooder = Some(tokio::spawn(flood(shared.clone(), p)));
            }
            tokio::time::sleep_until(p.start.into()).await;
            let cpu_start = (
                server.and_then(crate::procfs::cpu_seconds),
                crate::procfs::cpu_seconds(std::process::id()),
            );
            tokio::time::sleep_until(p.end.into()).await;
            let cpu_end = (
                server.and_then(crate::procfs::cpu_seconds),
                crate::procfs::cpu_seconds(std::process::id()),
            );
            samples.server_cpu = cpu_start.0.zip(cpu_end.0).map(|(a, b)| b - a);
            samples.loadgen_cpu = cpu_start.1.zip(cpu_end.1).map(|(a, b)| b - a);
            samples.server_rss_end = server.and_then(crate::procfs::rss_kib);
            let drain = Duration::from_secs_f64(opts.drain_timeout.max(0.0) + 5.0);
            shared
                .finished
                .wait_all(n, tokio::time::Instant::now() + drain)
                .await;
        }
    }
    samples.loadgen_rss = crate::procfs::rss_kib(std::process::id());
    let _ = go_close_tx.send(true);
    let mut outcomes = Vec::with_capacity(n);
    let join_deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    for task in tasks {
        let abort = task.abort_handle();
        match tokio::time::timeout_at(join_deadline, task).await {
            Ok(Ok(outcome)) => outcomes.push(outcome),
            Ok(Err(_)) => outcomes.push(Outcome::failed("client task panicked")),
            Err(_) => {
                abort.abort();
                outcomes.push(Outcome::failed("client task did not finish"));
            }
        }
    }
    samples.flooder = match flooder {
        Some(task) => {
            let abort = task.abort_handle();
            match tokio::time::timeout(Duration::from_secs(15), task).await {
                Ok(Ok(f)) => Some(f),
                Ok(Err(_)) => Some(Flooder {
                    error: Some("flooder task panicked".into()),
                    ..Flooder::default()
                }),
                Err(_) => {
                    abort.abort();
                    Some(Flooder {
                        error: Some("flooder task did not finish".into()),
                        ..Flooder::default()
                    })
                }
            }
        }
        // Asked for, but the run never reached its chat.
        None if opts.flood_one => Some(Flooder {
            error: Some("no chat phase".into()),
            ..Flooder::default()
        }),
        None => None,
    };
    let _ = stop_rss_tx.send(true);
    if let Some(task) = rss_sampler
        && let Ok(Ok((max, count))) = tokio::time::timeout(Duration::from_secs(5), task).await
    {
        samples.server_rss_max = max;
        samples.server_rss_samples = count;
    }
    let sent: Vec<u64> = shared.sent.iter().map(|s| s.load(Relaxed)).collect();
    let latency = shared
        .latency
        .lock()
        .map(|h| h.clone())
        .unwrap_or_else(|p| p.into_inner().clone());
    Report::build(
        opts,
        n,
        phase.map(|p| p.end.saturating_duration_since(p.start)),
        outcomes,
        &sent,
        latency,
        samples,
    )
}

/// The highest RSS of `pid` and the number of readings, one every [`RSS_EVERY`] until
/// `stop` or `deadline`.
async fn sample_rss(
    pid: u32,
    mut stop: watch::Receiver<bool>,
    deadline: tokio::time::Instant,
) -> (Option<u64>, u64) {
    let mut max: Option<u64> = None;
    let mut count = 0;
    let mut tick = tokio::time::interval(RSS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Some(rss) = crate::procfs::rss_kib(pid) {
                    max = max.max(Some(rss));
                    count += 1;
                }
            }
            _ = stop.wait_for(|s| *s) => break,
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    if let Some(rss) = crate::procfs::rss_kib(pid) {
        max = max.max(Some(rss));
        count += 1;
    }
    (max, count)
}

async fn client(shared: Arc<Shared>, local: usize) -> Outcome {
    let mut out = Outcome::default();
    let mut arrived = Arrived::default();
    let ws = client_inner(&shared, local, &mut out, &mut arrived).await;
    arrived.finished(&shared);
    match ws {
        Ok(mut ws) => {
            // Everyone closes together, after everyone is done.
            let mut go = shared.go_close.clone();
            let wait = async {
                loop {
                    tokio::select! {
                        changed = go.wait_for(|c| *c) => { let _ = changed; break; }
                        incoming = ws.next() => match incoming {
                            Some(Ok(_)) => {}
                            _ => break,
                        },
                    }
                }
            };
            wait.await;
            let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
        }
        Err(fail) => out.error(fail.0),
    }
    out
}

async fn connect(shared: &Shared, local: usize) -> Result<Ws, Fail> {
    let opts = &shared.opts;
    let ips = u64::from(opts.source_ip_count());
    let offset = u8::try_from((opts.index_base + local as u64) % ips).unwrap_or(0);
    let source = Ipv4Addr::new(127, 0, 0, opts.source_ip_first.saturating_add(offset));
    let socket = TcpSocket::new_v4().map_err(|e| Fail::new(format!("socket: {e}")))?;
    if shared.stalled == Some(opts.index_base + local as u64) {
        socket
            .set_recv_buffer_size(STALLED_RECV_BUFFER)
            .map_err(|e| Fail::new(format!("receive buffer: {e}")))?;
    }
    if ips > 1 || opts.source_ip_first != 1 {
        socket
            .bind(SocketAddr::new(source.into(), 0))
            .map_err(|e| Fail::new(format!("bind {source}: {e}")))?;
    }
    let node = shared.addrs[(opts.index_base + local as u64) as usize % shared.addrs.len()];
    let stream = socket
        .connect(node)
        .await
        .map_err(|e| Fail::new(format!("connect: {e}")))?;
    let _ = stream.set_nodelay(true);
    let config = WebSocketConfig::default().read_buffer_size(8 * 1024);
    let (ws, _) = tokio_tungstenite::client_async_with_config(
        shared.url.as_str(),
        MaybeTlsStream::Plain(stream),
        Some(config),
    )
    .await
    .map_err(|e| Fail::new(format!("handshake: {e}")))?;
    Ok(ws)
}

/// Waits for a watch value while reading (and ignoring) what the socket brings, so that
/// pings are answered; fails if the socket closes.
async fn hold_until<T: Clone>(
    ws: &mut Ws,
    rx: &watch::Receiver<T>,
    ready: impl Fn(&T) -> bool,
) -> Result<T, Fail> {
    let mut rx = rx.clone();
    loop {
        {
            let value = rx.borrow_and_update();
            if ready(&*value) {
                return Ok((*value).clone());
            }
        }
        tokio::select! {
            changed = rx.changed() => changed.map_err(|_| Fail::new("coordinator gone"))?,
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Close(_))) | None => return Err(Fail::new("closed by server while waiting")),
                Some(Err(e)) => return Err(Fail::new(format!("read: {e}"))),
                Some(Ok(_)) => {}
            },
        }
    }
}

async fn client_inner(
    shared: &Arc<Shared>,
    local: usize,
    out: &mut Outcome,
    arrived: &mut Arrived,
) -> Result<Ws, Fail> {
    let index = shared.opts.index_base + local as u64;
    let t0 = Instant::now();
    let mut ws = {
        let _slot = shared
            .connect_slots
            .acquire()
            .await
            .map_err(|_| Fail::new("connect semaphore closed"))?;
        connect(shared, local).await?
    };
    out.connect_us = Some(micros(t0.elapsed()));
    arrived.connected(shared);

    if shared.mode == Mode::Idle {
        let phase = hold_until(&mut ws, &shared.go_chat, Option::is_some)
            .await?
            .ok_or_else(|| Fail::new("no phase"))?;
        let end = tokio::time::Instant::from_std(phase.end);
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(end) => break,
                incoming = ws.next() => match incoming {
                    Some(Ok(Message::Close(_))) | None => return Err(Fail::new("closed by server while idle")),
                    Some(Err(e)) => return Err(Fail::new(format!("read while idle: {e}"))),
                    Some(Ok(_)) => {}
                },
            }
        }
        out.alive = true;
        return Ok(ws);
    }

    if shared.mode == Mode::Match || shared.opts.match_at_once {
        hold_until(&mut ws, &shared.go_match, |go| *go).await?;
    }
    let asked = Instant::now();
    ws.send(Message::text(proto::match_frame(&format!("m{index}"))))
        .await
        .map_err(|e| Fail::new(format!("send match: {e}")))?;
    let (player, peer) = loop {
        let incoming = tokio::time::timeout_at(shared.match_deadline, ws.next())
            .await
            .map_err(|_| Fail::new("no 20001 before the match timeout"))?;
        let text = match incoming {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | None => {
                return Err(Fail::new("closed by server before 20001"));
            }
            Some(Err(e)) => return Err(Fail::new(format!("read before 20001: {e}"))),
            Some(Ok(_)) => continue,
        };
        match proto::classify(&text) {
            Incoming::Success => {}
            Incoming::Matched => break proto::matched(&text).map_err(Fail)?,
            Incoming::Error(code) => return Err(Fail::new(format!("error {code} before 20001"))),
            _ => out.error("unexpected frame before 20001"),
        }
    };
    let now = Instant::now();
    out.match_us = Some(micros(now - asked));
    out.connect_match_us = Some(micros(now - t0));
    out.matched = true;
    shared
        .ids
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(player.clone(), index);
    arrived.matched(shared);
    if shared.mode == Mode::Match {
        return Ok(ws);
    }
    if shared.stalled == Some(index) {
        out.stall = Some(StallPart::Stalled(stall(shared, &mut ws, index).await));
        return Ok(ws);
    }
    chat(shared, &mut ws, local, index, (player, peer), out, arrived).await?;
    Ok(ws)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The receiving side's view of the peer's messages.
struct Receiver {
    peer_player: String,
    check_player: bool,
    last: u64,
    missing: std::collections::HashSet<u64>,
    overflow: u64,
    samples: Vec<u64>,
}

#[allow(clippy::too_many_arguments)]
async fn chat(
    shared: &Arc<Shared>,
    ws: &mut Ws,
    local: usize,
    index: u64,
    (player, peer_player): (String, String),
    out: &mut Outcome,
    arrived: &mut Arrived,
) -> Result<(), Fail> {
    let opts = &shared.opts;
    let clock = shared.clock;
    let mut go = shared.go_chat.clone();
    let mut phase: Option<Phase> = *go.borrow_and_update();
    let mut rx = Receiver {
        peer_player,
        check_player: opts.target == Target::Server,
        last: 0,
        missing: Default::default(),
        overflow: 0,
        samples: Vec::with_capacity(SAMPLE_BATCH),
    };
    let mut interval = opts.rate.map(|r| Duration::from_secs_f64(1.0 / r));
    // `--stall-one`: whether this client's peer is the one that stopped reading (known
    // once the chat starts: by then every client has published its player id).
    let mut stall_peer: Option<StallPeerSide> = None;
    let mut role_known = false;
    let mut next_intended: Option<Instant> = None;
    let mut data_sent = 0u64;
    let mut data_acked = 0u64;
    let mut fin_seq: Option<u64> = None;
    let mut fin_acked = false;
    let drain = Duration::from_secs_f64(opts.drain_timeout.max(0.0));
    let sleep = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(sleep);
    let mut wake: Option<Instant> = None;

    let result = loop {
        let now = Instant::now();
        if let Some(p) = phase {
            if !role_known {
                role_known = true;
                if let Some(stalled) = shared.stalled
                    && stalled != index
                    && lookup(shared, &rx.peer_player) == Some(stalled)
                {
                    stall_peer = Some(StallPeerSide::default());
                    interval = Some(Duration::from_secs_f64(1.0 / opts.stall_rate));
                }
            }
            let wide = stall_peer.is_some();
            if fin_seq.is_none() {
                let mut fed = 0;
                if now >= p.end {
                    let seq = data_sent + 1;
                    shared.sent[local].store(data_sent, Relaxed);
                    let payload = Payload {
                        sender: index,
                        seq,
                        ts_us: clock.us(now),
                        fin: true,
                    };
                    feed(ws, payload, opts.msg_bytes, wide).await?;
                    fin_seq = Some(seq);
                    fed += 1;
                } else if let Some(interval) = interval {
                    let first = *next_intended
                        .get_or_insert_with(|| p.start + phase_offset(index, interval));
                    let mut at = first;
                    while at <= now && at < p.end {
                        data_sent += 1;
                        let payload = Payload {
                            sender: index,
                            seq: data_sent,
                            ts_us: clock.us(at),
                            fin: false,
                        };
                        feed(ws, payload, opts.msg_bytes, wide).await?;
                        fed += 1;
                        at += interval;
                    }
                    next_intended = Some(at);
                } else if now >= p.start {
                    while data_sent - data_acked < opts.window as u64 {
                        data_sent += 1;
                        let payload = Payload {
                            sender: index,
                            seq: data_sent,
                            ts_us: clock.us(Instant::now()),
                            fin: false,
                        };
                        feed(ws, payload, opts.msg_bytes, wide).await?;
                        fed += 1;
                    }
                }
                if fed > 0 {
                    ws.flush()
                        .await
                        .map_err(|e| Fail::new(format!("send: {e}")))?;
                }
            }
            // The stalled client sends nothing: its peer does not wait for a final marker.
            if fin_acked && (out.fin_seq.is_some() || stall_peer.is_some()) {
                break Ok(());
            }
            if now >= p.end + drain {
                if !fin_acked {
                    out.error("drain timeout: own messages not all acknowledged");
                }
                if out.fin_seq.is_none() && stall_peer.is_none() {
                    out.error("drain timeout: peer's final message missing");
                }
                break Ok(());
            }
            let next_wake = match (fin_seq, next_intended) {
                (Some(_), _) => p.end + drain,
                (None, Some(at)) => at.min(p.end),
                (None, None) if now < p.start => p.start,
                (None, None) => p.end,
            };
            if wake != Some(next_wake) {
                wake = Some(next_wake);
                sleep.as_mut().reset(next_wake.into());
            }
        }
        tokio::select! {
            biased;
            incoming = ws.next() => {
                let text = match incoming {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) | None => break Err(Fail::new("closed by server during chat")),
                    Some(Err(e)) => break Err(Fail::new(format!("read during chat: {e}"))),
                    Some(Ok(_)) => continue,
                };
                let now = Instant::now();
                match proto::classify(&text) {
                    Incoming::Chat { payload, from } if payload.sender == index => {
                        // Our own message, acknowledged (the server's reply, the baseline's echo).
                        if payload.fin {
                            fin_acked = true;
                        } else {
                            if payload.seq != data_acked + 1 {
                                out.error("acknowledgement out of order");
                            }
                            data_acked += 1;
                        }
                        if rx.check_player && from != Some(player.as_str()) {
                            out.identity_errors += 1;
                        }
                    }
                    Incoming::Chat { payload, from } => {
                        deliver(shared, &mut rx, out, payload, from, now, phase);
                    }
                    Incoming::PeerLeft => {
                        if let Some(side) = stall_peer.as_mut() {
                            // The server dropped the stalled client: the room is closed,
                            // nothing more to send.
                            side.peer_left_after_ms = phase
                                .map(|p| now.saturating_duration_since(p.start).as_secs_f64() * 1000.0);
                            break Ok(());
                        }
                        out.error("peer left during chat (20003)");
                    }
                    Incoming::Error(code) => out.error(format!("error {code} during chat")),
                    Incoming::Success | Incoming::Matched | Incoming::Unknown => {
                        out.error("unexpected frame during chat");
                    }
                }
            }
            _ = &mut sleep, if phase.is_some() => {}
            changed = go.changed(), if phase.is_none() => {
                if changed.is_err() {
                    break Err(Fail::new("coordinator gone"));
                }
                phase = *go.borrow_and_update();
            }
        }
    };
    // Publish even on failure, so the peer's losses are counted against what was sent.
    shared.sent[local].store(data_sent, Relaxed);
    if out.peer_index.is_none() {
        out.peer_index = lookup(shared, &rx.peer_player);
    }
    if let Some(mut side) = stall_peer {
        side.sent = data_sent;
        side.acked = data_acked;
        out.stall = Some(StallPart::Peer(side));
    }
    flush_samples(shared, &mut rx.samples);
    out.sent = data_sent;
    out.acked = data_acked;
    out.last_seq = rx.last;
    out.missing = rx.missing.len() as u64 + rx.overflow;
    arrived.finished(shared);
    result
}

/// A deterministic spread of the clients' first send over one interval, so that an open
/// loop does not start with every client sending at the same instant.
fn phase_offset(index: u64, interval: Duration) -> Duration {
    let frac = (index as f64 * 0.618_033_988_749_895).fract();
    interval.mul_f64(frac)
}

/// The global index of the client with player id `player`, if it is in this process.
fn lookup(shared: &Shared, player: &str) -> Option<u64> {
    shared
        .ids
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(player)
        .copied()
}

/// `--stall-one`: the client that stops reading. From its 20001 on it does not touch its
/// socket until the chat is over; then it reads what is left, to see how the server ended
/// the connection.
async fn stall(shared: &Shared, ws: &mut Ws, index: u64) -> StalledSide {
    let mut side = StalledSide {
        index,
        ended: "not reached".into(),
        ..StalledSide::default()
    };
    let mut go = shared.go_chat.clone();
    let phase = go.wait_for(Option::is_some).await.ok().and_then(|p| *p);
    let Some(p) = phase else {
        side.ended = "error: no chat phase".into();
        return side;
    };
    tokio::time::sleep_until(p.end.into()).await;
    let deadline = tokio::time::Instant::from_std(p.end)
        + Duration::from_secs_f64(shared.opts.drain_timeout.max(1.0));
    side.ended = "open".into();
    for _ in 0..STALLED_DRAIN_MAX {
        let (ended, code) = match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => break,
            Ok(Some(Ok(Message::Close(frame)))) => {
                ("close frame".to_owned(), frame.map(|f| u16::from(f.code)))
            }
            Ok(Some(Ok(message))) => {
                side.drained_frames += 1;
                side.drained_bytes += message.len() as u64;
                continue;
            }
            Ok(None)
            | Ok(Some(Err(tungstenite::Error::Protocol(
                tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
            ))))
            | Ok(Some(Err(tungstenite::Error::ConnectionClosed))) => ("eof".to_owned(), None),
            Ok(Some(Err(tungstenite::Error::Io(e))))
                if e.kind() == std::io::ErrorKind::ConnectionReset =>
            {
                ("reset".to_owned(), None)
            }
            Ok(Some(Err(e))) => (format!("error: {e}"), None),
        };
        side.ended = ended;
        side.close_code = code;
        side.closed = true;
        break;
    }
    side
}

/// `--flood-one`: one more connection, in no room, writing chat frames as fast as the
/// socket takes them from the start of the chat until the server closes it (or the chat
/// ends), and counting the replies.
async fn flood(shared: Arc<Shared>, p: Phase) -> Flooder {
    let mut f = Flooder::default();
    let local = shared.sent.len();
    let sender = shared.opts.index_base + local as u64;
    let ws = match tokio::time::timeout(Duration::from_secs(10), connect(&shared, local)).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(fail)) => {
            f.error = Some(fail.0);
            return f;
        }
        Err(_) => {
            f.error = Some("connect timed out".into());
            return f;
        }
    };
    f.connected = true;
    let (mut sink, mut stream) = ws.split();
    tokio::time::sleep_until(p.start.into()).await;
    let started = Instant::now();
    let ms = |at: Instant| at.saturating_duration_since(started).as_secs_f64() * 1000.0;
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, written) = (stop.clone(), written.clone());
        let end = tokio::time::Instant::from_std(p.end);
        tokio::spawn(async move {
            let write = async {
                let mut frame = String::with_capacity(160);
                let mut seq = 0u64;
                while seq < FLOOD_MAX_FRAMES && !stop.load(Relaxed) {
                    for _ in 0..FLOOD_BATCH {
                        seq += 1;
                        let payload = Payload {
                            sender,
                            seq,
                            ts_us: 0,
                            fin: false,
                        };
                        proto::chat_frame(&mut frame, payload, 32);
                        sink.feed(Message::text(frame.as_str())).await?;
                        written.store(seq, Relaxed);
                    }
                    sink.flush().await?;
                }
                Ok::<(), tungstenite::Error>(())
            };
            match tokio::time::timeout_at(end, write).await {
                // Stopped (closed or capped) or the chat is over.
                Ok(Ok(())) | Err(_) => None,
                Ok(Err(e)) => Some(e.to_string()),
            }
        })
    };
    let deadline = tokio::time::Instant::from_std(p.end) + Duration::from_secs(2);
    for _ in 0..FLOOD_MAX_FRAMES {
        let next = tokio::time::timeout_at(deadline, stream.next()).await;
        let now = Instant::now();
        match next {
            Err(_) => break,
            Ok(Some(Ok(Message::Text(text)))) => match proto::classify(&text) {
                Incoming::Error(40009) => {
                    f.rate_limited_40009 += 1;
                    f.first_40009_after_ms.get_or_insert_with(|| ms(now));
                }
                Incoming::Error(40004) => f.not_in_room_40004 += 1,
                _ => f.other_replies += 1,
            },
            Ok(Some(Ok(Message::Close(frame)))) => {
                f.closed = true;
                f.close_code = frame.map(|c| u16::from(c.code));
                f.after_ms = Some(ms(now));
                break;
            }
            Ok(Some(Ok(_))) => {}
            Ok(None) => {
                f.closed = true;
                f.after_ms = Some(ms(now));
                break;
            }
            Ok(Some(Err(e))) => {
                f.closed = true;
                f.after_ms = Some(ms(now));
                f.error = Some(format!("read: {e}"));
                break;
            }
        }
    }
    stop.store(true, Relaxed);
    match tokio::time::timeout(Duration::from_secs(5), writer).await {
        // A write failing once the server has closed is expected.
        Ok(Ok(Some(e))) if !f.closed => f.error = Some(format!("write: {e}")),
        Ok(Ok(_)) => {}
        Ok(Err(_)) => f.error = Some("flood writer panicked".into()),
        Err(_) => f.error = Some("flood writer did not stop".into()),
    }
    f.sent = written.load(Relaxed);
    f
}

async fn feed(ws: &mut Ws, payload: Payload, msg_bytes: usize, wide: bool) -> Result<(), Fail> {
    let mut frame = String::with_capacity(msg_bytes + 120);
    if wide {
        proto::wide_chat_frame(&mut frame, payload);
    } else {
        proto::chat_frame(&mut frame, payload, msg_bytes);
    }
    ws.feed(Message::text(frame))
        .await
        .map_err(|e| Fail::new(format!("send: {e}")))
}

fn deliver(
    shared: &Shared,
    rx: &mut Receiver,
    out: &mut Outcome,
    payload: Payload,
    from: Option<&str>,
    now: Instant,
    phase: Option<Phase>,
) {
    let expected = *out.peer_index.get_or_insert_with(|| {
        shared
            .ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&rx.peer_player)
            .copied()
            // A peer in another process: its first message names it.
            .unwrap_or(payload.sender)
    });
    if payload.sender != expected || (rx.check_player && from != Some(rx.peer_player.as_str())) {
        out.identity_errors += 1;
        return;
    }
    let seq = payload.seq;
    let fresh = if seq == rx.last + 1 {
        rx.last = seq;
        true
    } else if seq > rx.last {
        for s in rx.last + 1..seq {
            if rx.missing.len() < MISSING_CAP {
                rx.missing.insert(s);
            } else {
                rx.overflow += 1;
            }
        }
        rx.last = seq;
        true
    } else if rx.missing.remove(&seq) {
        out.reorder += 1;
        true
    } else {
        out.dup += 1;
        false
    };
    if !fresh {
        return;
    }
    if payload.fin {
        out.fin_seq = Some(seq);
        return;
    }
    out.delivered += 1;
    if phase.is_some_and(|p| now <= p.end) {
        out.delivered_in_window += 1;
    }
    let latency = shared.clock.us(now).saturating_sub(payload.ts_us).max(1);
    rx.samples.push(latency);
    if rx.samples.len() >= SAMPLE_BATCH {
        flush_samples(shared, &mut rx.samples);
    }
}

fn flush_samples(shared: &Shared, samples: &mut Vec<u64>) {
    if samples.is_empty() {
        return;
    }
    let mut h = shared.latency.lock().unwrap_or_else(|p| p.into_inner());
    for s in samples.drain(..) {
        h.saturating_record(s);
    }
}
