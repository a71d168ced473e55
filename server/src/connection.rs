//! One WebSocket connection, served by one task.
//!
//! The task waits on four things at once: the close signal ([`Closer`]), the bounded
//! outbound queue (the room's frames and its own replies, written in batches before one
//! flush), the socket (every client frame counts as activity; data frames pass the token
//! bucket — 40009 beyond it, the frame dropped — then `core`'s parser, then the broker),
//! and its timers (ping interval, idle drop). One task rather than a reader and a writer:
//! an idle connection costs one task and no split socket, and a reply to the client's own
//! request is written by the task that read it, with no wake-up of another task.
//! While a write is blocked the task reads nothing more from that client; a client that
//! stops reading fills its queue and is closed (1008), which the close signal delivers
//! even mid-write.

use crate::broker::{Broker, ConnHandle, Outbound, Outlet};
use crate::listener::Socket;
use crate::server::{ConnectionSlot, Context};
use futures_util::{SinkExt, StreamExt};
use matchchat_core::hub::{Attach, FrameKind};
use matchchat_core::request::{parse_frame, peek_id};
use matchchat_core::{Code, wire};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
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
    mut ws: Socket,
    ctx: Arc<Context<B>>,
    attach: Attach,
    slot: ConnectionSlot<B>,
) {
    // A resume replays up to the whole room history at once: the queue always has room
    // for that, so only a client that stops reading can fill it.
    let capacity = ctx.config.outbound_queue.max(ctx.config.history + 16);
    let outlet = Arc::new(Outlet::new(capacity));
    let closer = &outlet.closer;
    let conn = attach.conn;
    let handle = ConnHandle {
        id: conn,
        outlet: outlet.clone(),
    };
    if let Err(e) = Box::pin(ctx.broker.attach(handle.clone(), attach)).await {
        tracing::warn!(conn = conn.0, error = %e, "attach failed");
        closer.close(close::RESTART, "shared state unavailable");
    }

    let config = &ctx.config;
    let mut bucket =
        crate::rate_limit::TokenBucket::new(config.rate_per_sec, config.rate_burst, Instant::now());
    let mut strikes: u32 = 0;
    // Idleness is checked when the timer fires, not re-armed per frame: a frame only
    // moves `last_activity`.
    let idle = config.idle_timeout();
    let mut last_activity = tokio::time::Instant::now();
    let idle_check = tokio::time::sleep_until(last_activity + idle);
    tokio::pin!(idle_check);
    // Each connection starts its ping clock at a random point of the interval, so that
    // connections opened together do not all ping (and get pongs) in the same instant.
    let period = config.ping_interval();
    let offset = period.mul_f64(rand::random::<f64>());
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
    let closed = closer.closed();
    tokio::pin!(closed);
    loop {
        tokio::select! {
            biased;
            _ = &mut closed => break,
            // Queued frames go out before more is read: replies keep up with requests.
            frame = outlet.pop() => {
                let write = async {
                    // Batch: everything already queued goes out with one flush.
                    let mut batch = 1u64;
                    ws.feed(to_message(frame)).await?;
                    while batch < 64 {
                        let Some(next) = outlet.try_pop() else { break };
                        ws.feed(to_message(next)).await?;
                        batch += 1;
                    }
                    ws.flush().await?;
                    Ok::<u64, tungstenite::Error>(batch)
                };
                // A peer that stopped reading blocks the write: the closer still wins.
                let written = tokio::select! {
                    biased;
                    _ = &mut closed => break,
                    written = write => written,
                };
                match written {
                    Ok(batch) => {
                        ctx.metrics.frames_out.fetch_add(batch, Relaxed);
                    }
                    Err(_) => {
                        closer.close(ABNORMAL, "write failed");
                        break;
                    }
                }
            }
            next = ws.next() => {
                let message = match next {
                    None => break,
                    Some(Err(e)) => {
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
                    Some(Ok(message)) => message,
                };
                last_activity = tokio::time::Instant::now();
                match Box::pin(on_message(message, &ctx, &handle, &mut bucket, &mut strikes)).await {
                    Flow::Continue => {}
                    Flow::Stop => break,
                }
            }
            () = &mut idle_check => {
                let deadline = last_activity + idle;
                if deadline <= tokio::time::Instant::now() {
                    tracing::debug!(conn = conn.0, "idle timeout");
                    closer.close(close::GOING_AWAY, "idle timeout");
                    break;
                }
                idle_check.as_mut().reset(deadline);
            }
            _ = ping.tick() => {
                let sent = tokio::select! {
                    biased;
                    _ = &mut closed => break,
                    sent = ws.send(Message::Ping(bytes::Bytes::new())) => sent,
                };
                if sent.is_err() {
                    closer.close(ABNORMAL, "write failed");
                    break;
                }
            }
        }
    }
    Box::pin(ctx.broker.detach(conn)).await;
    drop(handle);
    let (code, reason) = closer.reason().unwrap_or((1000, ""));
    // Boxed, like the attach and each frame's handling below: each is a large future
    // that runs briefly (once, or once per frame), and inline it would make every
    // connection's task that much bigger for its whole life.
    Box::pin(finish_close(ws, closer.is_closed(), code, reason)).await;
    drop(slot);
}

/// Sends the close frame and, when the server closed, waits (bounded) for the reply.
async fn finish_close(mut ws: Socket, server_initiated: bool, code: u16, reason: &'static str) {
    if code == ABNORMAL {
        return;
    }
    // A peer that stopped reading may never take the close frame: bounded wait. When
    // the client closed first, tungstenite has queued its reply and this flushes it.
    let frame = tungstenite::protocol::CloseFrame {
        code: code.into(),
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(
        Duration::from_millis(500),
        ws.send(Message::Close(Some(frame))),
    )
    .await;
    if server_initiated {
        // Complete the close handshake: wait (bounded) for the client's close reply.
        let _ = tokio::time::timeout(CLOSE_HANDSHAKE_WAIT, async {
            while let Some(Ok(message)) = ws.next().await {
                if message.is_close() {
                    break;
                }
            }
        })
        .await;
    }
}

/// Close code recorded when the socket failed (no close frame is sent).
const ABNORMAL: u16 = 1006;

/// Whether the connection goes on after a client frame.
enum Flow {
    Continue,
    Stop,
}

/// One client frame: pings and pongs count as activity only; data frames pass the rate
/// limit (§8.1: it comes first and counts every data frame), then the parser, then the
/// broker.
async fn on_message<B: Broker>(
    message: Message,
    ctx: &Context<B>,
    handle: &ConnHandle,
    bucket: &mut crate::rate_limit::TokenBucket,
    strikes: &mut u32,
) -> Flow {
    let config = &ctx.config;
    let conn = handle.id;
    if message.is_close() {
        return Flow::Stop;
    }
    if message.is_ping() || message.is_pong() {
        return Flow::Continue;
    }
    ctx.metrics.frames_in.fetch_add(1, Relaxed);
    if !bucket.try_take(Instant::now()) {
        *strikes += 1;
        ctx.metrics.error(Code::RateLimited);
        if *strikes >= config.flood_close_after.max(1) {
            handle.closer().close(close::POLICY, "request flood");
            return Flow::Stop;
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
        return Flow::Continue;
    }
    *strikes = 0;
    let Message::Text(text) = &message else {
        // A binary frame: protocol error, the connection stays open (§8.5: id null).
        ctx.metrics.error(Code::ProtocolError);
        handle.offer(
            Outbound::Text(wire::error_frame(Code::ProtocolError, None)),
            &ctx.metrics,
        );
        return Flow::Continue;
    };
    match parse_frame(text.as_str()) {
        Ok(incoming) => {
            let is_chat = matches!(
                incoming.request,
                matchchat_core::request::Request::SendChat { .. }
            );
            if let Err(e) = ctx.broker.request(conn, incoming).await {
                tracing::warn!(conn = conn.0, error = %e, "request failed");
                handle
                    .closer()
                    .close(close::RESTART, "shared state unavailable");
                return Flow::Stop;
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
    Flow::Continue
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
