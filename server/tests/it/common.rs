//! Test harness: boots the server in-process on an ephemeral port and offers small
//! WebSocket and HTTP clients that speak the protocol.

#![allow(dead_code)]

use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use matchchat_server::{Config, Running};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for a frame that must come.
pub const WAIT: Duration = Duration::from_secs(5);

pub struct TestServer {
    pub running: Option<Running>,
    pub addr: SocketAddr,
}

/// A config with short timeouts, so the suite stays fast.
pub fn test_config() -> Config {
    Config {
        bind: "127.0.0.1:0".parse().unwrap(),
        static_dir: std::env::temp_dir().join("matchchat-no-client-here"),
        resume_grace_ms: 2_000,
        shutdown_grace_ms: 2_000,
        ..Config::default()
    }
}

pub async fn start() -> TestServer {
    start_with(|_| {}).await
}

pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
    let mut config = test_config();
    tweak(&mut config);
    let running = matchchat_server::start(config)
        .await
        .expect("server starts");
    let addr = running.local_addr();
    TestServer {
        running: Some(running),
        addr,
    }
}

impl TestServer {
    pub async fn anonymous(&self) -> Client {
        Client::connect(self.addr, "")
            .await
            .expect("anonymous connect")
    }

    /// A new session in `(id, zone)` and a connection with it.
    pub async fn session(&self, id: i64, zone: &str) -> (Client, Session) {
        let session = self.new_session(id, zone).await;
        let client = self.resume(&session, None).await;
        (client, session)
    }

    pub async fn new_session(&self, id: i64, zone: &str) -> Session {
        let (status, body) = self
            .post_json("/app/get_config", &json!({"id": id, "game_zone": zone}))
            .await;
        assert_eq!(status, 200, "{body}");
        Session {
            id: body["data"]["session_id"].as_str().unwrap().to_owned(),
            player: body["data"]["account"].as_str().unwrap().to_owned(),
        }
    }

    pub async fn resume(&self, session: &Session, last_seq: Option<u64>) -> Client {
        let mut query = format!("session_id={}", session.id);
        if let Some(n) = last_seq {
            query.push_str(&format!("&last_seq={n}"));
        }
        Client::connect(self.addr, &query)
            .await
            .expect("session connect")
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let (status, text) = self
            .post(
                path,
                Some("application/json"),
                body.to_string().into_bytes(),
            )
            .await;
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn post(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (u16, String) {
        let mut req = hyper::Request::post(format!("http://{}{}", self.addr, path))
            .header("host", self.addr.to_string());
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let req = req.body(http_body_util::Full::new(bytes_of(body))).unwrap();
        send(self.addr, req).await
    }

    pub async fn get(&self, path: &str) -> (u16, String, hyper::HeaderMap) {
        let req = hyper::Request::get(format!("http://{}{}", self.addr, path))
            .header("host", self.addr.to_string())
            .body(http_body_util::Full::new(bytes_of(Vec::new())))
            .unwrap();
        let stream = TcpStream::connect(self.addr).await.unwrap();
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        let resp = sender.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned(), headers)
    }

    /// A metric's value (the first sample whose line starts with `name`).
    pub async fn metric(&self, name: &str) -> f64 {
        let (_, text, _) = self.get("/metrics").await;
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("metric {name} missing"))
    }

    pub async fn shutdown(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }

    /// Two anonymous players matched with each other: (a, b, room_id).
    pub async fn matched_pair(&self) -> (Client, Client, String) {
        let mut a = self.anonymous().await;
        let mut b = self.anonymous().await;
        let room = match_two(&mut a, &mut b).await;
        (a, b, room)
    }
}

/// Matches two idle clients of the same pool; returns the room id.
pub async fn match_two(a: &mut Client, b: &mut Client) -> String {
    a.expect_reply("m-a", "game/match_player", json!([]), 20000)
        .await;
    b.expect_reply("m-b", "game/match_player", json!([]), 20000)
        .await;
    let pa = a.expect_push(20001).await;
    let pb = b.expect_push(20001).await;
    assert_eq!(
        pa["result"]["data"]["room_id"],
        pb["result"]["data"]["room_id"]
    );
    pa["result"]["data"]["room_id"].as_str().unwrap().to_owned()
}

fn bytes_of(v: Vec<u8>) -> bytes::Bytes {
    bytes::Bytes::from(v)
}

async fn send(
    addr: SocketAddr,
    req: hyper::Request<http_body_util::Full<bytes::Bytes>>,
) -> (u16, String) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[derive(Clone, Debug)]
pub struct Session {
    pub id: String,
    pub player: String,
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// How a connection ended, as the client saw it.
#[derive(Debug, PartialEq)]
pub enum Ended {
    Closed(Option<u16>),
    Dropped,
}

impl Client {
    pub async fn connect(
        addr: SocketAddr,
        query: &str,
    ) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        let url = if query.is_empty() {
            format!("ws://{addr}/ws")
        } else {
            format!("ws://{addr}/ws?{query}")
        };
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        Ok(Client { ws })
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.ws
            .send(Message::text(text.into()))
            .await
            .expect("send");
    }

    pub async fn request(&mut self, id: &str, method: &str, params: Value) {
        let frame = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.send_text(frame.to_string()).await;
    }

    pub async fn chat(&mut self, id: &str, msg: &str, sn: &str) {
        self.request(
            id,
            "game/send_chat_msg",
            json!({"chat_msg": msg, "chat_sn": sn}),
        )
        .await;
    }

    /// The next text frame as JSON (pings and pongs skipped).
    pub async fn next_json(&mut self) -> Value {
        self.try_next_json(WAIT)
            .await
            .expect("a frame within the wait")
    }

    pub async fn try_next_json(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??;
            match msg {
                Ok(Message::Text(t)) => {
                    return Some(serde_json::from_str(t.as_str()).expect("server sends JSON"));
                }
                Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => continue,
                Ok(other) => panic!("unexpected frame {other:?}"),
                Err(e) => panic!("socket error {e}"),
            }
        }
    }

    /// Asserts that nothing arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Some(v) = self.try_next_json(wait).await {
            panic!("expected no frame, got {v}");
        }
    }

    /// Sends a request and checks its reply: `result.code`, `message`, the request id echoed.
    pub async fn expect_reply(
        &mut self,
        id: &str,
        method: &str,
        params: Value,
        code: i64,
    ) -> Value {
        self.request(id, method, params).await;
        let v = self.next_json().await;
        assert_result(&v, code);
        assert_eq!(v["id"], id, "reply carries the request id: {v}");
        v
    }

    /// The next frame, which must be a push with `code` and a 32-hex id.
    pub async fn expect_push(&mut self, code: i64) -> Value {
        let v = self.next_json().await;
        assert_result(&v, code);
        assert_push_id(&v);
        v
    }

    /// Reads until the connection ends; returns the close code.
    pub async fn ended(&mut self) -> Ended {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => panic!("connection did not end"),
                Ok(None) => return Ended::Dropped,
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return Ended::Closed(frame.map(|f| u16::from(f.code)));
                }
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(_))) => return Ended::Dropped,
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self
            .ws
            .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            }))
            .await;
        // Drain until the server's close arrives, so the close is complete.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
}

/// A `result` envelope with `code` and that code's exact text.
pub fn assert_result(v: &Value, code: i64) {
    assert_eq!(v["jsonrpc"], "2.0", "{v}");
    assert_eq!(v["result"]["code"], code, "{v}");
    let text = matchchat_core::Code::from_value(code)
        .expect("known code")
        .message();
    assert_eq!(v["result"]["message"], text, "{v}");
    assert!(v.get("error").is_none(), "{v}");
}

/// A JSON-RPC `error` envelope with `code`, its exact text, and `id`.
pub fn assert_error(v: &Value, code: i64, id: Value) {
    assert_eq!(v["jsonrpc"], "2.0", "{v}");
    assert_eq!(v["error"]["code"], code, "{v}");
    let text = matchchat_core::Code::from_value(code)
        .expect("known code")
        .message();
    assert_eq!(v["error"]["message"], text, "{v}");
    assert_eq!(v["id"], id, "{v}");
    assert!(v.get("result").is_none(), "{v}");
}

pub fn assert_push_id(v: &Value) {
    let id = v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("push id is a string: {v}"));
    assert_eq!(id.len(), 32, "{v}");
    assert!(
        id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "{v}"
    );
}
