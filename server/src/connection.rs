//! One WebSocket connection: a reader loop (this task) and a writer task.
//!
//! Reader: every client frame counts as activity; data frames pass the token bucket
//! (40009 beyond it, the frame dropped), then `core`'s parser, then the broker. A client
//! silent for the idle timeout is dropped. Writer: drains the bounded outbound queue,
//! envelopes each `result` (a fresh push id per push), batches writes before one flush,
//! pings on an interval, and closes with the code the [`Closer`] holds.

use crate::broker::{Broker, Closer, ConnHandle, Outbound};
use crate::listener::Socket;
use crate::server::{ConnectionSlot, Context};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use matchchat_core::hub::{Attach, FrameKind};
use matchchat_core::request::{parse_frame, peek_id};
use matchchat_core::{Code, wire};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{self, Message};

/// Close codes used by the server.
pub mod close {
    /// Server going away (process stopping).
    pub const GOING_AWAY: u16 = 1001;
    /// Text that is not UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// Policy: slow consumer or persistent flood.
    pub const POLICY: u16 = 1008;
    /// Message larger than the frame limit.
    pub const TOO_BIG: u16 = 1009;
    /// Server restarting: come back soon.
    pub const RESTART: u16 = 1012;
}

/// How long a closing connection waits for the client's close frame.
const CLOSE_HANDSHAKE_WAIT: Duration = Duration::from_secs(1);

/// Serves one upgraded socket until it closes.
pub async fn serve<B: Broker>(
    ws: Socket,
    ctx: Arc<Context<B>>,
    attach: Attach,
    slot: ConnectionSlot<B>,
) {
    let (sink, mut stream) = ws.split();
    // A resume replays up to the whole room history at once: the queue always has room
    // for that, so only a client that stops reading can fill it.
    let capacity = ctx.config.outbound_queue.max(ctx.config.history + 16);
    let (tx, rx) = mpsc::channel(capacity);
    let closer = Arc::new(Closer::default());
    let conn = attach.conn;
    let handle = ConnHandle {
        id: conn,
        tx,
        closer: closer.clone(),
    };
    let writer = tokio::spawn(write_loop(sink, rx, closer.clone(), ctx.clone()));
    if let Err(e) = ctx.broker.attach(handle.clone(), attach).await {
        tracing::warn!(conn = conn.0, error = %e, "attach failed");
        closer.close(close::RESTART, "shared state unavailable");
    }

    let config = &ctx.config;
    let idle = config.idle_timeout();
    let mut bucket =
        crate::rate_limit::TokenBucket::new(config.rate_per_sec, config.rate_burst, Instant::now());
    let mut strikes: u32 = 0;
    let mut last_activity = tokio::time::Instant::now();
    loop {
        let next = tokio::select! {
            biased;
            _ = closer.closed() => break,
            next = tokio::time::timeout_at(last_activity + idle, stream.next()) => next,
        };
        let message = match next {
            Err(_elapsed) => {
                tracing::debug!(conn = conn.0, "idle timeout");
                closer.close(close::GOING_AWAY, "idle timeout");
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                match e {
                    tungstenite::Error::Capacity(_) => {
                        ctx.metrics.error(Code::ProtocolError);
                        closer.close(close::TOO_BIG, "message too big");
                    }
                    tungstenite::Error::Utf8(_) => {
                        closer.close(close::INVALID_PAYLOAD, "text is not UTF-8");
                    }
                    e => tracing::debug!(conn = conn.0, error = %e, "read error"),
                }
                break;
            }
            Ok(Some(Ok(message))) => message,
        };
        last_activity = tokio::time::Instant::now();
        if message.is_close() {
            break;
        }
        if message.is_ping() || message.is_pong() {
            continue;
        }
        ctx.metrics.frames_in.fetch_add(1, Relaxed);
        // §8.1: the rate limit comes first and counts every data frame.
        if !bucket.try_take(Instant::now()) {
            strikes += 1;
            ctx.metrics.error(Code::RateLimited);
            if strikes >= config.flood_close_after.max(1) {
                closer.close(close::POLICY, "request flood");
                break;
            }
            let id = match &message {
                Message::Text(text) => peek_id(text.as_str()),
                _ => None,
            };
            let frame = match id {
                Some(id) => wire::reply_frame(&wire::error_result_json(Code::RateLimited), &id),
                None => format!(
                    "{{\"jsonrpc\":\"2.0\",\"result\":{},\"id\":null}}",
                    wire::error_result_json(Code::RateLimited)
                ),
            };
            handle.offer(Outbound::Text(frame), &ctx.metrics);
            continue;
        }
        strikes = 0;
        let Message::Text(text) = &message else {
            // A binary frame: protocol error, the connection stays open (§8.5: id null).
            ctx.metrics.error(Code::ProtocolError);
            handle.offer(
                Outbound::Text(wire::error_frame(Code::ProtocolError, None)),
                &ctx.metrics,
            );
            continue;
        };
        match parse_frame(text.as_str()) {
            Ok(incoming) => {
                let is_chat = matches!(
                    incoming.request,
                    matchchat_core::request::Request::SendChat { .. }
                );
                if let Err(e) = ctx.broker.request(conn, incoming).await {
                    tracing::warn!(conn = conn.0, error = %e, "request failed");
                    closer.close(close::RESTART, "shared state unavailable");
                    break;
                }
                if is_chat {
                    ctx.metrics.chat_messages.fetch_add(1, Relaxed);
                }
            }
            Err(rejection) => {
                ctx.metrics.error(rejection.code());
                handle.offer(Outbound::Text(rejection.to_frame()), &ctx.metrics);
            }
        }
    }
    ctx.broker.detach(conn).await;
    // The writer sends the close frame, if any, and ends.
    let server_initiated = closer.is_closed();
    if !server_initiated {
        closer.close(1000, "");
    }
    if server_initiated {
        // Complete the close handshake: wait (bounded) for the client's close reply.
        let _ = tokio::time::timeout(CLOSE_HANDSHAKE_WAIT, async {
            while let Some(Ok(message)) = stream.next().await {
                if message.is_close() {
                    break;
                }
            }
        })
        .await;
    }
    drop(handle);
    let _ = writer.await;
    drop(slot);
}

type Sink = SplitSink<Socket, Message>;

async fn write_loop<B: Broker>(
    mut sink: Sink,
    mut rx: mpsc::Receiver<Outbound>,
    closer: Arc<Closer>,
    ctx: Arc<Context<B>>,
) {
    // Each connection starts its ping clock at a random point of the interval, so that
    // connections opened together do not all ping (and get pongs) in the same instant.
    let period = ctx.config.ping_interval();
    let offset = period.mul_f64(rand::random::<f64>());
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
    loop {
        tokio::select! {
            biased;
            _ = closer.closed() => break,
            frame = rx.recv() => {
                let Some(frame) = frame else { break };
                let write = async {
                    // Batch: everything already queued goes out with one flush.
                    let mut batch = 1u64;
                    sink.feed(to_message(frame)).await?;
                    while batch < 64 {
                        let Ok(next) = rx.try_recv() else { break };
                        sink.feed(to_message(next)).await?;
                        batch += 1;
                    }
                    sink.flush().await?;
                    Ok::<u64, tungstenite::Error>(batch)
                };
                // A peer that stopped reading blocks the write: the closer still wins.
                let written = tokio::select! {
                    biased;
                    _ = closer.closed() => break,
                    written = write => written,
                };
                match written {
                    Ok(batch) => {
                        ctx.metrics.frames_out.fetch_add(batch, Relaxed);
                    }
                    Err(_) => {
                        closer.close(1006, "write failed");
                        return;
                    }
                }
            }
            _ = ping.tick() => {
                if sink.send(Message::Ping(bytes::Bytes::new())).await.is_err() {
                    closer.close(1006, "write failed");
                    return;
                }
            }
        }
    }
    let (code, reason) = closer.reason().unwrap_or((1000, ""));
    if code != 1006 {
        // A peer that stopped reading may never take the close frame: bounded wait.
        let frame = tungstenite::protocol::CloseFrame {
            code: code.into(),
            reason: reason.into(),
        };
        let close = sink.send(Message::Close(Some(frame)));
        let _ = tokio::time::timeout(Duration::from_millis(500), close).await;
    }
}

fn to_message(frame: Outbound) -> Message {
    match frame {
        Outbound::Result {
            kind: FrameKind::Reply(id),
            result,
        } => Message::text(wire::reply_frame(&result, &id)),
        Outbound::Result {
            kind: FrameKind::Push,
            result,
        } => Message::text(wire::push_frame(&result, &crate::ids::push_id())),
        Outbound::Text(text) => Message::text(text),
    }
}
