//! PROTOCOL.md §1–2: `POST /app/get_config` (JSON and form, every failure), `/healthz`,
//! `/metrics`, and the static client.

use crate::common::*;
use serde_json::{Value, json};

fn assert_config_failure(body: &Value, code: i64, text: &str) {
    assert_eq!(
        body,
        &json!({"code": code, "status": 0, "msg": text, "message": text, "data": {}})
    );
}

#[tokio::test]
async fn get_config_json_success_shape() {
    let s = start().await;
    let (status, body) = s
        .post_json("/app/get_config", &json!({"id": 1, "game_zone": "cn-east"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            body["code"].clone(),
            body["status"].clone(),
            body["msg"].clone(),
            body["message"].clone()
        ),
        (json!(1), json!(1), json!(""), json!(""))
    );
    let d = &body["data"];
    let sid = d["session_id"].as_str().unwrap();
    assert_eq!(sid.len(), 40);
    assert!(sid.bytes().all(|b| b.is_ascii_alphanumeric()));
    let rid = d["request_id"].as_str().unwrap();
    assert_eq!(rid.len(), 40);
    assert!(rid.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
    let account = d["account"].as_str().unwrap();
    assert_eq!(account.len(), 10);
    assert!(account.bytes().all(|b| b.is_ascii_alphanumeric()));
    let (_, again) = s
        .post_json("/app/get_config", &json!({"id": 1, "game_zone": "cn-east"}))
        .await;
    assert_ne!(again["data"]["session_id"], d["session_id"]);
    assert_ne!(again["data"]["request_id"], d["request_id"]);
}

#[tokio::test]
async fn get_config_form_body() {
    let s = start().await;
    let (status, text) = s
        .post(
            "/app/get_config",
            Some("application/x-www-form-urlencoded"),
            b"id=1&game_zone=cn-east".to_vec(),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["status"], 1);
    // The session works at /ws.
    let sid = body["data"]["session_id"].as_str().unwrap();
    Client::connect(s.addr, &format!("session_id={sid}"))
        .await
        .unwrap();
}

#[tokio::test]
async fn get_config_bad_params_are_minus_1002_with_400() {
    let s = start().await;
    for body in [
        json!({"game_zone": "z"}),
        json!({"id": 1}),
        json!({"id": "1", "game_zone": "z"}),
        json!({"id": 1.5, "game_zone": "z"}),
        json!({"id": -1, "game_zone": "z"}),
        json!({"id": 2147483648u64, "game_zone": "z"}),
        json!({"id": 1, "game_zone": ""}),
        json!({"id": 1, "game_zone": "z".repeat(65)}),
        json!({"id": 1, "game_zone": 3}),
        json!([1, "z"]),
    ] {
        let (status, resp) = s.post_json("/app/get_config", &body).await;
        assert_eq!(status, 400, "{body}");
        assert_config_failure(&resp, -1002, "请求参数缺失");
    }
    let (status, text) = s
        .post(
            "/app/get_config",
            Some("application/json"),
            b"{not json".to_vec(),
        )
        .await;
    assert_eq!(status, 400);
    assert_config_failure(&serde_json::from_str(&text).unwrap(), -1002, "请求参数缺失");
    let (status, text) = s
        .post(
            "/app/get_config",
            Some("application/x-www-form-urlencoded"),
            b"id=abc&game_zone=z".to_vec(),
        )
        .await;
    assert_eq!(status, 400);
    assert_config_failure(&serde_json::from_str(&text).unwrap(), -1002, "请求参数缺失");
}

#[tokio::test]
async fn get_config_wrong_content_type_is_415_and_huge_body_is_413() {
    let s = start().await;
    let (status, text) = s
        .post(
            "/app/get_config",
            Some("text/plain"),
            b"id=1&game_zone=z".to_vec(),
        )
        .await;
    assert_eq!(status, 415);
    assert_config_failure(&serde_json::from_str(&text).unwrap(), -1002, "请求参数缺失");
    let huge = format!(
        r#"{{"id":1,"game_zone":"z","pad":"{}"}}"#,
        "x".repeat(1 << 20)
    );
    let (status, text) = s
        .post(
            "/app/get_config",
            Some("application/json"),
            huge.into_bytes(),
        )
        .await;
    assert_eq!(status, 413);
    assert_config_failure(&serde_json::from_str(&text).unwrap(), -1002, "请求参数缺失");
}

#[tokio::test]
async fn get_config_over_capacity_is_minus_20001_with_503() {
    let s = start_with(|c| c.max_sessions = 1).await;
    s.new_session(1, "z").await;
    let (status, body) = s
        .post_json("/app/get_config", &json!({"id": 1, "game_zone": "z"}))
        .await;
    assert_eq!(status, 503);
    assert_config_failure(&body, -20001, "系统处理中");
}

#[tokio::test]
async fn healthz_and_metrics() {
    let s = start().await;
    let (status, body, _) = s.get("/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    let _c = s.anonymous().await;
    let (status, text, headers) = s.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    for name in [
        "matchchat_connections ",
        "matchchat_rooms ",
        "matchchat_messages_in_total ",
        "matchchat_messages_out_total ",
        "matchchat_queued_players",
        "matchchat_errors_total{code=\"40009\"}",
    ] {
        assert!(text.contains(name), "{name} missing in\n{text}");
    }
    assert_eq!(s.metric("matchchat_connections").await, 1.0);
}

#[tokio::test]
async fn static_client_is_served_and_its_absence_explained() {
    let s = start().await;
    let (status, body, headers) = s.get("/").await;
    assert_eq!(status, 404);
    assert!(body.contains("cargo xtask run"), "{body}");
    assert_eq!(headers["x-content-type-options"], "nosniff");

    let dir = std::env::temp_dir().join(format!("matchchat-static-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("index.html"),
        "<!doctype html><title>client</title>",
    )
    .unwrap();
    std::fs::write(dir.join("app.js"), "console.log(1)").unwrap();
    let static_dir = dir.clone();
    let s = start_with(move |c| c.static_dir = static_dir).await;
    let (status, body, headers) = s.get("/").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "<!doctype html><title>client</title>")
    );
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("'wasm-unsafe-eval'"),
        "{csp}"
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let (status, body, _) = s.get("/app.js").await;
    assert_eq!((status, body.as_str()), (200, "console.log(1)"));
    let (status, _, _) = s.get("/../etc/passwd").await;
    assert_eq!(status, 404);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn websocket_origins_are_checked() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let s = start_with(|c| c.allowed_origins = vec!["http://127.0.0.1:8000".into()]).await;
    let connect = |origin: Option<String>| {
        let mut req = format!("ws://{}/ws", s.addr).into_client_request().unwrap();
        if let Some(o) = origin {
            req.headers_mut().insert("origin", o.parse().unwrap());
        }
        tokio_tungstenite::connect_async(req)
    };
    assert!(
        connect(None).await.is_ok(),
        "no Origin: not a browser, allowed"
    );
    assert!(
        connect(Some(format!("http://{}", s.addr))).await.is_ok(),
        "the page's own origin"
    );
    assert!(
        connect(Some("http://127.0.0.1:8000".into())).await.is_ok(),
        "an allowed origin"
    );
    match connect(Some("http://evil.example".into())).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 403)
        }
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn plain_get_of_ws_is_400() {
    let s = start().await;
    let (status, body, _) = s.get("/ws").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("WebSocket"), "{body}");
}
