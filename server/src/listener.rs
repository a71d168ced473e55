//! The accept loop: HTTP/1 connections served by hyper, `/ws` upgrades handled here, all
//! other requests handed to the warp routes.
//!
//! Why not warp's own `ws()` filter: it cannot set tungstenite's buffer sizes, and
//! tungstenite's default 128 KiB read buffer is zero-filled before every read — 140 KiB
//! of RSS per idle connection and a memset per message. Doing the upgrade ourselves (a
//! few header checks and hyper's upgrade) lets every socket start with a small buffer
//! that grows only for large messages.

use crate::broker::Broker;
use crate::server::{Context, admit, plain};
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::sync::CancellationToken;
use warp::http::{HeaderValue, Request, StatusCode, header};
use warp::reply::{Reply, Response};

/// The socket type every connection task works with.
pub type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Initial read buffer per socket; it grows for larger messages (up to the frame limit).
const READ_BUFFER: usize = 256;

/// Accepts until `stop`, then lets open HTTP exchanges finish (bounded by the caller).
pub async fn serve<B, W>(
    listener: TcpListener,
    ctx: Arc<Context<B>>,
    routes: W,
    stop: CancellationToken,
) where
    B: Broker,
    W: tower_service::Service<Request<Incoming>, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    W::Future: Send + 'static,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors, usually: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let service = Dispatch {
            ctx: ctx.clone(),
            routes: routes.clone(),
            peer,
        };
        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(tcp), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "http connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

#[derive(Clone)]
struct Dispatch<B: Broker, W> {
    ctx: Arc<Context<B>>,
    routes: W,
    peer: SocketAddr,
}

impl<B, W> Service<Request<Incoming>> for Dispatch<B, W>
where
    B: Broker,
    W: tower_service::Service<Request<Incoming>, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    W::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        if req.uri().path() == "/ws" {
            let ctx = self.ctx.clone();
            let peer = self.peer;
            Box::pin(async move { Ok(upgrade(req, peer, ctx).await) })
        } else {
            let mut routes = self.routes.clone();
            Box::pin(async move { tower_service::Service::call(&mut routes, req).await })
        }
    }
}

fn header_has_token(req: &Request<Incoming>, name: header::HeaderName, token: &str) -> bool {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// RFC 6455 §4.2: checks the handshake, admits the player, answers 101 and serves the
/// socket once hyper hands it over.
async fn upgrade<B: Broker>(
    mut req: Request<Incoming>,
    peer: SocketAddr,
    ctx: Arc<Context<B>>,
) -> Response {
    let is_upgrade = req.method() == warp::http::Method::GET
        && header_has_token(&req, header::CONNECTION, "upgrade")
        && header_has_token(&req, header::UPGRADE, "websocket")
        && req
            .headers()
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v == "13");
    let key = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| derive_accept_key(k.as_bytes()));
    let (true, Some(accept)) = (is_upgrade, key) else {
        return plain(
            StatusCode::BAD_REQUEST,
            "expected a WebSocket upgrade (version 13)",
        );
    };
    let header_str = |name: header::HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let origin = header_str(header::ORIGIN);
    let host = header_str(header::HOST);
    let query = req.uri().query().unwrap_or("").to_owned();
    let (attach, slot) =
        match admit(&query, Some(peer), origin.as_deref(), host.as_deref(), &ctx).await {
            Ok(admitted) => admitted,
            Err(refusal) => return refusal,
        };
    let Ok(accept) = HeaderValue::from_str(&accept) else {
        return plain(StatusCode::BAD_REQUEST, "bad Sec-WebSocket-Key");
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let max = ctx.config.max_frame_bytes;
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        // A batch of frames fed by the writer goes out in one send at its flush (0 would
        // write every frame on its own); the buffer only grows under load.
        .write_buffer_size(8 * 1024)
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let socket = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                crate::connection::serve(socket, ctx, attach, slot).await;
            }
            Err(e) => tracing::debug!(error = %e, "upgrade failed"),
        }
    });
    let mut resp = warp::reply::reply().into_response();
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = resp.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    resp
}
