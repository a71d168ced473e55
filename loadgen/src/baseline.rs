//! The baseline: the thinnest WebSocket relay on the server's stack (tokio +
//! tokio-tungstenite, one task per connection), so that every benchmark can state the
//! product's figures as a ratio to the stack's ceiling, measured side by side.
//!
//! It speaks just enough of the protocol for the same load generator to drive it, and
//! parses no JSON:
//! - the first text frame of a connection (the load generator's `game/match_player`)
//!   queues it; connections are paired in that arrival order, and both get a fixed
//!   20001-shaped frame naming them `c<n>` (player) and their peer;
//! - every later text frame is forwarded, as it came, to the peer, and echoed to the
//!   sender as its reply;
//! - anything before pairing other than the first frame, and every binary frame, is
//!   ignored; a connection whose peer is gone just stops being forwarded to.

use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// What one connection's task hears from others.
enum Cmd {
    /// Paired with connection `peer`, reachable through the sender.
    Paired(u64, mpsc::UnboundedSender<Cmd>),
    /// A frame the peer sent.
    Frame(Utf8Bytes),
}

type Waiting = Arc<Mutex<Option<(u64, mpsc::UnboundedSender<Cmd>)>>>;

/// A running baseline relay.
pub struct Baseline {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Baseline {
    /// The address bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting (open connections are dropped with the runtime or when idle).
    pub fn shutdown(self) {
        self.task.abort();
    }

    /// Serves until the task ends (never, unless accepting fails).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// The read buffer each connection starts with (tungstenite zero-fills its spare
/// capacity before every read, so this is both memory per connection and CPU per read).
pub const DEFAULT_READ_BUFFER: usize = 1024;

/// Binds `bind` and serves in the background of the current tokio runtime.
pub async fn start(bind: SocketAddr) -> std::io::Result<Baseline> {
    start_with(bind, Relay::default()).await
}

/// How the relay behaves.
#[derive(Clone, Copy, Debug)]
pub struct Relay {
    /// Read buffer per connection (tungstenite's own default is 128 KiB, which is what a
    /// warp server gets: useful to show what that costs).
    pub read_buffer: usize,
    /// Fault injection, for testing the load generator's checks (0: never). Each counts
    /// the frames one connection forwards: drop every n-th, send every n-th twice, hold
    /// every n-th back until after the next.
    pub drop_every: u64,
    pub dup_every: u64,
    pub swap_every: u64,
}

impl Default for Relay {
    fn default() -> Self {
        Relay {
            read_buffer: DEFAULT_READ_BUFFER,
            drop_every: 0,
            dup_every: 0,
            swap_every: 0,
        }
    }
}

/// [`start`] with another [`Relay`] configuration.
pub async fn start_with(bind: SocketAddr, relay: Relay) -> std::io::Result<Baseline> {
    let listener = TcpListener::bind(bind).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(accept_loop(listener, relay));
    Ok(Baseline { addr, task })
}

async fn accept_loop(listener: TcpListener, relay: Relay) {
    let waiting: Waiting = Arc::new(Mutex::new(None));
    let mut next = 0u64;
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, typically: back off instead of spinning.
                eprintln!("matchchat-baseline: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        next += 1;
        tokio::spawn(connection(stream, next, waiting.clone(), relay));
    }
}

fn matched_frame(me: u64, peer: u64) -> Message {
    Message::text(format!(
        "{{\"jsonrpc\":\"2.0\",\"result\":{{\"code\":20001,\"message\":\"匹配成功\",\"data\":{{\"room_id\":\"baseline{}\",\"player_id\":\"c{me}\",\"peer_ids\":[\"c{me}\",\"c{peer}\"]}}}},\"id\":\"00000000000000000000000000000000\"}}",
        me.min(peer)
    ))
}

/// Applies the fault injection of [`Relay`] to one forwarded frame.
fn forward(
    relay: &Relay,
    count: &mut u64,
    held: &mut Option<Utf8Bytes>,
    peer: &mpsc::UnboundedSender<Cmd>,
    text: &Utf8Bytes,
) {
    *count += 1;
    let nth = |every: u64| every > 0 && (*count).is_multiple_of(every);
    if nth(relay.drop_every) {
        return;
    }
    if nth(relay.swap_every) && held.is_none() {
        *held = Some(text.clone());
        return;
    }
    let _ = peer.send(Cmd::Frame(text.clone()));
    if nth(relay.dup_every) {
        let _ = peer.send(Cmd::Frame(text.clone()));
    }
    if let Some(late) = held.take() {
        let _ = peer.send(Cmd::Frame(late));
    }
}

async fn connection(stream: TcpStream, id: u64, waiting: Waiting, relay: Relay) {
    let _ = stream.set_nodelay(true);
    let config = WebSocketConfig::default().read_buffer_size(relay.read_buffer);
    let mut forwarded = 0u64;
    let mut held: Option<Utf8Bytes> = None;
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    // The channel is made when the connection asks to match: an idle connection holds
    // nothing but its socket and buffers.
    let mut me: Option<(mpsc::UnboundedSender<Cmd>, mpsc::UnboundedReceiver<Cmd>)> = None;
    let mut peer: Option<mpsc::UnboundedSender<Cmd>> = None;
    loop {
        let from_peer = async {
            match &mut me {
                Some((_, rx)) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            incoming = ws.next() => {
                let text = match incoming {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                    Some(Ok(_)) => continue,
                };
                if let Some(peer) = &peer {
                    forward(&relay, &mut forwarded, &mut held, peer, &text);
                    if ws.send(Message::Text(text)).await.is_err() {
                        break;
                    }
                } else if me.is_none() {
                    let (tx, rx) = mpsc::unbounded_channel::<Cmd>();
                    let partner = {
                        let mut slot = waiting.lock().unwrap_or_else(|p| p.into_inner());
                        match slot.take() {
                            Some(other) => Some(other),
                            None => {
                                *slot = Some((id, tx.clone()));
                                None
                            }
                        }
                    };
                    if let Some((other, other_tx)) = partner {
                        let _ = other_tx.send(Cmd::Paired(id, tx.clone()));
                        peer = Some(other_tx);
                        if ws.send(matched_frame(id, other)).await.is_err() {
                            break;
                        }
                    }
                    me = Some((tx, rx));
                }
            }
            cmd = from_peer => {
                // Our own sender lives in `me`, so the channel never closes under us.
                let Some(cmd) = cmd else { break };
                match cmd {
                    Cmd::Paired(other, other_tx) => {
                        peer = Some(other_tx);
                        if ws.send(matched_frame(id, other)).await.is_err() {
                            break;
                        }
                    }
                    Cmd::Frame(text) => {
                        // Everything already queued goes out with one flush.
                        let mut ok = ws.feed(Message::Text(text)).await.is_ok();
                        while ok {
                            let Some((_, rx)) = &mut me else { break };
                            let Ok(Cmd::Frame(more)) = rx.try_recv() else { break };
                            ok = ws.feed(Message::Text(more)).await.is_ok();
                        }
                        if !ok || ws.flush().await.is_err() {
                            break;
                        }
                    }
                }
            }
        }
    }
    // A connection that goes while queued leaves the queue.
    let mut slot = waiting.lock().unwrap_or_else(|p| p.into_inner());
    if slot.as_ref().is_some_and(|(w, _)| *w == id) {
        *slot = None;
    }
}
