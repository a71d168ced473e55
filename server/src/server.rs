//! Routes and lifecycle: `/ws`, `/app/get_config`, `/healthz`, `/metrics`, static files;
//! binding, graceful shutdown, and the connection limits checked at upgrade time.

use crate::broker::{Broker, LocalBroker};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::redis_broker::{RedisBroker, RedisOptions, RedisStartError};
use matchchat_core::hub::{Attach, HubConfig, PoolKey};
use matchchat_core::wire::{ConfigData, ConfigResponse};
use matchchat_core::{Code, limits};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

/// What every handler shares.
pub struct Context<B: Broker> {
    pub config: Config,
    pub broker: B,
    pub metrics: Arc<Metrics>,
    draining: AtomicBool,
    /// Open connections per client address, for the per-IP limit.
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// A place among the open connections, given back on drop.
pub struct ConnectionSlot<B: Broker> {
    ctx: Arc<Context<B>>,
    ip: Option<IpAddr>,
}

impl<B: Broker> Drop for ConnectionSlot<B> {
    fn drop(&mut self) {
        self.ctx.metrics.connections_open.fetch_sub(1, Relaxed);
        if let Some(ip) = self.ip {
            let mut per_ip = self.ctx.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = per_ip.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
    }
}

impl<B: Broker> Context<B> {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Relaxed)
    }

    /// Takes a connection slot, or `None` when a limit is reached.
    fn take_slot(self: &Arc<Self>, ip: Option<IpAddr>) -> Option<ConnectionSlot<B>> {
        let open = self.metrics.connections_open.fetch_add(1, Relaxed);
        // The slot is built right away so that every early return gives the count back.
        let mut slot = ConnectionSlot {
            ctx: self.clone(),
            ip: None,
        };
        if open as usize >= self.config.max_connections {
            return None;
        }
        if let Some(ip) = ip {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            let n = per_ip.entry(ip).or_insert(0);
            if self.config.max_connections_per_ip > 0 && *n >= self.config.max_connections_per_ip {
                return None;
            }
            *n += 1;
            slot.ip = Some(ip);
        }
        Some(slot)
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Redis(#[from] RedisStartError),
}

/// A running server.
pub struct Running {
    local_addr: SocketAddr,
    stop: CancellationToken,
    done: tokio::task::JoinHandle<()>,
    metrics: Arc<Metrics>,
}

impl Running {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Stops accepting, tells every client (close 1012), waits for them to go (bounded
    /// by the shutdown grace) and returns.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.done.await;
    }

    /// Resolves when the server stopped.
    pub async fn wait(self) {
        let _ = self.done.await;
    }

    /// A token that starts the shutdown when cancelled.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }
}

/// Binds and starts the server: in-memory, or a node of a cluster with `--redis-url`.
/// Must run inside a tokio runtime.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.bind,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.bind,
        source,
    })?;
    let timers_stop = CancellationToken::new();
    let metrics = Arc::new(Metrics::default());
    let hub_config = HubConfig {
        room_size: usize::from(config.room_size),
        resume_grace: config.resume_grace_ms,
        history_limit: config.history,
        sn_memory: config.sn_memory,
    };
    match config.redis_url.clone() {
        None => {
            let broker = LocalBroker::start(
                hub_config,
                config.session_ttl(),
                config.max_sessions,
                metrics.clone(),
                timers_stop.clone(),
            );
            Ok(launch(
                config,
                listener,
                local_addr,
                broker,
                metrics,
                timers_stop,
            ))
        }
        Some(url) => {
            let options = RedisOptions {
                url,
                prefix: config.redis_prefix.clone(),
                heartbeat: Duration::from_millis(config.node_heartbeat_ms.max(10)),
                node_timeout: Duration::from_millis(config.node_timeout_ms.max(20)),
                session_ttl: config.session_ttl(),
                snapshot_every: Duration::from_millis(config.snapshot_every_ms.max(100)),
            };
            let broker =
                RedisBroker::start(options, hub_config, metrics.clone(), timers_stop.clone())
                    .await?;
            Ok(launch(
                config,
                listener,
                local_addr,
                broker,
                metrics,
                timers_stop,
            ))
        }
    }
}

fn launch<B: Broker>(
    config: Config,
    listener: tokio::net::TcpListener,
    local_addr: SocketAddr,
    broker: B,
    metrics: Arc<Metrics>,
    timers_stop: CancellationToken,
) -> Running {
    let stop = CancellationToken::new();
    let ctx = Arc::new(Context {
        config,
        broker,
        metrics: metrics.clone(),
        draining: AtomicBool::new(false),
        per_ip: Mutex::new(HashMap::new()),
    });
    let routes = routes(ctx.clone());
    let stop_signal = stop.clone();
    let drain_ctx = ctx.clone();
    let done = tokio::spawn(async move {
        let accept_stop = CancellationToken::new();
        let serve = tokio::spawn(crate::listener::serve(
            listener,
            drain_ctx.clone(),
            warp::service(routes),
            accept_stop.clone(),
        ));
        stop_signal.cancelled().await;
        drain(&drain_ctx).await;
        accept_stop.cancel();
        // HTTP keep-alive connections get a moment to finish, no more.
        let _ = tokio::time::timeout(std::time::Duration::from_millis(500), serve).await;
        timers_stop.cancel();
    });
    tracing::info!(%local_addr, "listening on http://{local_addr}");
    Running {
        local_addr,
        stop,
        done,
        metrics,
    }
}

async fn drain<B: Broker>(ctx: &Arc<Context<B>>) {
    ctx.draining.store(true, Relaxed);
    let open = ctx.metrics.connections_open.load(Relaxed);
    tracing::info!(open, "shutting down: closing connections with 1012");
    ctx.broker
        .close_all(crate::connection::close::RESTART, "server restarting");
    let deadline = tokio::time::Instant::now() + ctx.config.shutdown_grace();
    while ctx.metrics.connections_open.load(Relaxed) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        // Connections that attached after the first sweep are told too.
        ctx.broker
            .close_all(crate::connection::close::RESTART, "server restarting");
    }
    let left = ctx.metrics.connections_open.load(Relaxed);
    if left > 0 {
        tracing::warn!(left, "shutdown grace elapsed with connections still open");
    }
}

fn routes<B: Broker>(
    ctx: Arc<Context<B>>,
) -> impl Filter<Extract = (impl Reply,), Error = std::convert::Infallible> + Clone {
    let with_ctx = {
        let ctx = ctx.clone();
        warp::any().map(move || ctx.clone())
    };
    let get_config = warp::path!("app" / "get_config")
        .and(warp::post())
        .and(warp::header::optional::<String>("content-type"))
        .and(warp::body::content_length_limit(16 * 1024))
        .and(warp::body::bytes())
        .and(with_ctx.clone())
        .then(get_config);
    let healthz = warp::get()
        .and(warp::path("healthz"))
        .and(warp::path::end())
        .and(with_ctx.clone())
        .map(|ctx: Arc<Context<B>>| {
            if ctx.is_draining() {
                warp::reply::with_status("draining", StatusCode::SERVICE_UNAVAILABLE)
            } else if !ctx.broker.healthy() {
                warp::reply::with_status(
                    "shared state unavailable",
                    StatusCode::SERVICE_UNAVAILABLE,
                )
            } else {
                warp::reply::with_status("ok", StatusCode::OK)
            }
        });
    let metrics = warp::get()
        .and(warp::path("metrics"))
        .and(warp::path::end())
        .and(with_ctx.clone())
        .map(|ctx: Arc<Context<B>>| {
            let body = ctx.metrics.render(&ctx.broker.stats());
            warp::reply::with_header(
                body,
                "content-type",
                "text/plain; version=0.0.4; charset=utf-8",
            )
        });
    let static_dir = ctx.config.static_dir.clone();
    let index_path = static_dir.join("index.html");
    let index = warp::get().and(warp::path::end()).then(move || {
        let index_path = index_path.clone();
        async move {
            match tokio::fs::read(&index_path).await {
                Ok(bytes) => {
                    let csp = content_security_policy(&String::from_utf8_lossy(&bytes));
                    let mut resp =
                        warp::reply::with_header(bytes, "content-type", "text/html; charset=utf-8")
                            .into_response();
                    if let Ok(value) = warp::http::HeaderValue::from_str(&csp) {
                        resp.headers_mut().insert("content-security-policy", value);
                    }
                    resp
                }
                Err(_) => warp::reply::with_status(
                    warp::reply::with_header(
                        missing_client_page(&index_path).into_bytes(),
                        "content-type",
                        "text/html; charset=utf-8",
                    ),
                    StatusCode::NOT_FOUND,
                )
                .into_response(),
            }
        }
    });
    let files = warp::get().and(warp::fs::dir(static_dir));
    get_config
        .or(healthz)
        .or(metrics)
        .or(index)
        .or(files)
        .with(warp::reply::with::header(
            "x-content-type-options",
            "nosniff",
        ))
        .recover(handle_rejection)
}

/// A strict policy for the client page: its own origin only, no plugins, no framing;
/// `'wasm-unsafe-eval'` because the client is WebAssembly, and the page's own inline
/// scripts (trunk's loader) allowed by their SHA-256 hash rather than `'unsafe-inline'`.
fn content_security_policy(html: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let mut script_src = String::from("'self' 'wasm-unsafe-eval'");
    let mut rest = html;
    while let Some(open) = rest.find("<script") {
        let after = &rest[open..];
        let Some(tag_end) = after.find('>') else {
            break;
        };
        let tag = &after[..tag_end];
        let body_and_more = &after[tag_end + 1..];
        let Some(close) = body_and_more.find("</script>") else {
            break;
        };
        if !tag.contains(" src=") {
            let hash = sha2::Sha256::digest(&body_and_more.as_bytes()[..close]);
            script_src.push_str(&format!(
                " 'sha256-{}'",
                base64::engine::general_purpose::STANDARD.encode(hash)
            ));
        }
        rest = &body_and_more[close..];
    }
    format!(
        "default-src 'self'; script-src {script_src}; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    )
}

fn missing_client_page(index_path: &std::path::Path) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>matchchat: client not built</title></head>\
         <body><h1>The browser client is not built</h1>\
         <p>No <code>{}</code> was found. Build it with <code>cargo xtask run</code> \
         (builds the client with trunk, then starts this server), or point \
         <code>--static-dir</code> at a trunk output directory.</p>\
         <p>The API is up: <code>/ws</code>, <code>POST /app/get_config</code>, <code>/healthz</code>, <code>/metrics</code>.</p></body></html>",
        html_escape(&index_path.display().to_string())
    )
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn config_reply(status: StatusCode, body: &ConfigResponse) -> warp::reply::Response {
    warp::reply::with_status(warp::reply::json(body), status).into_response()
}

async fn handle_rejection(
    rejection: Rejection,
) -> Result<warp::reply::Response, std::convert::Infallible> {
    if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        return Ok(config_reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            &ConfigResponse::failure(Code::ParamsMissing),
        ));
    }
    if rejection.is_not_found() {
        return Ok(warp::reply::with_status("not found", StatusCode::NOT_FOUND).into_response());
    }
    if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        return Ok(
            warp::reply::with_status("method not allowed", StatusCode::METHOD_NOT_ALLOWED)
                .into_response(),
        );
    }
    tracing::debug!(?rejection, "request rejected");
    Ok(warp::reply::with_status("bad request", StatusCode::BAD_REQUEST).into_response())
}

/// §2 and §8.4: `id` an integer 0..=2147483647, `game_zone` a non-empty string of at most
/// 64 characters.
fn parse_config_request(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<PoolKey, (StatusCode, Code)> {
    let bad = (StatusCode::BAD_REQUEST, Code::ParamsMissing);
    let media = content_type
        .and_then(|c| c.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let (id, zone) = match media.as_str() {
        "application/x-www-form-urlencoded" => {
            let form: HashMap<String, String> =
                serde_urlencoded::from_bytes(body).map_err(|_| bad)?;
            let id = form.get("id").ok_or(bad)?;
            // Digits only: no sign, no fraction, no exponent.
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad);
            }
            let id: i64 = id.parse().map_err(|_| bad)?;
            (id, form.get("game_zone").cloned().ok_or(bad)?)
        }
        // JSON is the default: a client that sends none still gets a JSON reading.
        "application/json" | "" => {
            // An object, not just anything serde could read as a struct (an array would do).
            let mut body: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(body).map_err(|_| bad)?;
            let id = body
                .get("id")
                .and_then(serde_json::Value::as_i64)
                .ok_or(bad)?;
            let zone = match body.remove("game_zone") {
                Some(serde_json::Value::String(z)) => z,
                _ => return Err(bad),
            };
            (id, zone)
        }
        _ => return Err((StatusCode::UNSUPPORTED_MEDIA_TYPE, Code::ParamsMissing)),
    };
    if !(0..=limits::PRODUCT_ID_MAX).contains(&id) {
        return Err(bad);
    }
    let chars = zone.chars().count();
    if chars == 0 || chars > limits::GAME_ZONE_MAX_CHARS {
        return Err(bad);
    }
    Ok(PoolKey {
        product_id: id,
        zone: zone.into(),
    })
}

async fn get_config<B: Broker>(
    content_type: Option<String>,
    body: bytes::Bytes,
    ctx: Arc<Context<B>>,
) -> warp::reply::Response {
    if ctx.is_draining() {
        ctx.metrics.error(Code::SystemBusy);
        return config_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            &ConfigResponse::failure(Code::SystemBusy),
        );
    }
    let pool = match parse_config_request(content_type.as_deref(), &body) {
        Ok(pool) => pool,
        Err((status, code)) => {
            ctx.metrics.error(code);
            return config_reply(status, &ConfigResponse::failure(code));
        }
    };
    match ctx.broker.create_session(pool).await {
        Ok(session) => {
            ctx.metrics.sessions_created.fetch_add(1, Relaxed);
            let data = ConfigData {
                session_id: session.id.to_string(),
                request_id: crate::ids::request_id(),
                account: session.player.to_string(),
            };
            config_reply(StatusCode::OK, &ConfigResponse::success(&data))
        }
        Err(crate::broker::BrokerError::AtCapacity) => {
            ctx.metrics.error(Code::SystemBusy);
            config_reply(
                StatusCode::SERVICE_UNAVAILABLE,
                &ConfigResponse::failure(Code::SystemBusy),
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "get_config failed");
            ctx.metrics.error(Code::SystemError);
            config_reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                &ConfigResponse::failure(Code::SystemError),
            )
        }
    }
}

pub(crate) fn plain(status: StatusCode, text: &'static str) -> warp::reply::Response {
    warp::reply::with_status(text, status).into_response()
}

/// Browsers send `Origin`; a page of another site must not open sockets in its visitors'
/// names. Allowed: no `Origin` (not a browser), the page's own origin (same host and
/// port as the request), or one of `--allowed-origin`.
fn origin_allowed(origin: Option<&str>, host: Option<&str>, allowed: &[String]) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    if allowed
        .iter()
        .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h))
}

/// Decides whether a `/ws` upgrade may proceed: origin, draining, session, limits. The
/// refusal is the HTTP response to send instead of 101.
pub(crate) async fn admit<B: Broker>(
    query: &str,
    remote: Option<SocketAddr>,
    origin: Option<&str>,
    host: Option<&str>,
    ctx: &Arc<Context<B>>,
) -> Result<(Attach, ConnectionSlot<B>), warp::reply::Response> {
    if !origin_allowed(origin, host, &ctx.config.allowed_origins) {
        ctx.metrics.connections_refused.fetch_add(1, Relaxed);
        return Err(plain(StatusCode::FORBIDDEN, "origin not allowed"));
    }
    if ctx.is_draining() {
        ctx.metrics.connections_refused.fetch_add(1, Relaxed);
        return Err(plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "server is shutting down",
        ));
    }
    let params: HashMap<String, String> = serde_urlencoded::from_str(query).unwrap_or_default();
    let resume_after = match params.get("last_seq") {
        None => None,
        Some(v) => match v.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                return Err(plain(
                    StatusCode::BAD_REQUEST,
                    "last_seq must be a non-negative integer",
                ));
            }
        },
    };
    let (player, pool, resumable) = match params.get("session_id") {
        Some(id) => match ctx.broker.find_session(id).await {
            Ok(Some(session)) => (session.player, session.pool, true),
            Ok(None) => {
                ctx.metrics.connections_refused.fetch_add(1, Relaxed);
                return Err(plain(
                    StatusCode::UNAUTHORIZED,
                    "unknown or expired session: call /app/get_config",
                ));
            }
            Err(e) => {
                tracing::error!(error = %e, "session lookup failed");
                return Err(plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "shared state unavailable",
                ));
            }
        },
        None => (crate::ids::player_id().into(), PoolKey::anonymous(), false),
    };
    let Some(slot) = ctx.take_slot(remote.map(|a| a.ip())) else {
        ctx.metrics.connections_refused.fetch_add(1, Relaxed);
        return Err(plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many connections",
        ));
    };
    ctx.metrics.connections_total.fetch_add(1, Relaxed);
    let attach = Attach {
        conn: ctx.broker.next_conn_id(),
        player,
        pool,
        resumable,
        resume_after,
    };
    Ok((attach, slot))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csp_hashes_inline_scripts_only() {
        let html = "<script type=\"module\">import init from '/a.js';</script><script src=\"/x.js\"></script>";
        let csp = content_security_policy(html);
        // sha256 of `import init from '/a.js';`, base64.
        use base64::Engine as _;
        use sha2::Digest as _;
        let expected = base64::engine::general_purpose::STANDARD
            .encode(sha2::Sha256::digest(b"import init from '/a.js';"));
        assert!(
            csp.contains(&format!(
                "script-src 'self' 'wasm-unsafe-eval' 'sha256-{expected}';"
            )),
            "{csp}"
        );
        assert_eq!(csp.matches("sha256-").count(), 1);
        assert!(!csp.contains("unsafe-inline"));
        assert!(csp.contains("frame-ancestors 'none'"));
    }

    #[test]
    fn origins() {
        let extra = vec!["http://127.0.0.1:8000".to_owned()];
        assert!(origin_allowed(None, Some("h:1"), &[]));
        assert!(origin_allowed(Some("http://h:1"), Some("h:1"), &[]));
        assert!(origin_allowed(Some("https://H:1"), Some("h:1"), &[]));
        assert!(!origin_allowed(
            Some("http://evil.example"),
            Some("h:1"),
            &[]
        ));
        assert!(!origin_allowed(Some("http://h:2"), Some("h:1"), &[]));
        assert!(!origin_allowed(Some("null"), Some("h:1"), &[]));
        assert!(!origin_allowed(Some("http://h:1"), None, &[]));
        assert!(origin_allowed(
            Some("http://127.0.0.1:8000"),
            Some("h:1"),
            &extra
        ));
    }

    #[test]
    fn config_request_validation() {
        let json = Some("application/json");
        let ok = |ct, body: &str| parse_config_request(ct, body.as_bytes());
        assert_eq!(
            ok(json, r#"{"id":1,"game_zone":"cn-east"}"#).unwrap(),
            PoolKey {
                product_id: 1,
                zone: "cn-east".into()
            }
        );
        assert!(ok(None, r#"{"id":0,"game_zone":"z"}"#).is_ok());
        assert!(ok(json, r#"{"id":2147483647,"game_zone":"z"}"#).is_ok());
        assert!(
            ok(
                Some("application/json; charset=utf-8"),
                r#"{"id":1,"game_zone":"z"}"#
            )
            .is_ok()
        );
        let form = Some("application/x-www-form-urlencoded");
        assert_eq!(
            ok(form, "id=7&game_zone=cn%20east").unwrap().zone.as_ref(),
            "cn east"
        );
        let bad = Err((StatusCode::BAD_REQUEST, Code::ParamsMissing));
        for body in [
            r#"{"id":"1","game_zone":"z"}"#,
            r#"{"id":1.5,"game_zone":"z"}"#,
            r#"{"id":1.0,"game_zone":"z"}"#,
            r#"{"id":-1,"game_zone":"z"}"#,
            r#"{"id":2147483648,"game_zone":"z"}"#,
            r#"{"id":1e400,"game_zone":"z"}"#,
            r#"{"id":1}"#,
            r#"{"game_zone":"z"}"#,
            r#"{"id":1,"game_zone":""}"#,
            r#"{"id":1,"game_zone":5}"#,
            r#"{"id":null,"game_zone":"z"}"#,
            "[1]",
            r#"[1,"z"]"#,
            "not json",
            "",
        ] {
            assert_eq!(ok(json, body), bad, "{body}");
        }
        let long_zone = format!(r#"{{"id":1,"game_zone":"{}"}}"#, "区".repeat(65));
        assert_eq!(ok(json, &long_zone), bad);
        assert!(
            ok(
                json,
                &format!(r#"{{"id":1,"game_zone":"{}"}}"#, "区".repeat(64))
            )
            .is_ok()
        );
        for body in [
            "id=-1&game_zone=z",
            "id=1.5&game_zone=z",
            "id=&game_zone=z",
            "id=1",
            "game_zone=z",
            "id=99999999999&game_zone=z",
            "id=%2B1&game_zone=z",
        ] {
            assert_eq!(ok(form, body), bad, "{body}");
        }
        assert_eq!(
            ok(Some("text/plain"), "id=1&game_zone=z"),
            Err((StatusCode::UNSUPPORTED_MEDIA_TYPE, Code::ParamsMissing))
        );
    }
}
