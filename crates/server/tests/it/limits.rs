//! Bad input at the door and on the wire: every limit answers clearly and leaves other
//! clients undisturbed.

use bavard_protocol::Request;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

#[tokio::test]
async fn an_oversized_frame_closes_with_1009_and_others_carry_on() {
    let server = spawn_with(|c| c.max_frame_bytes = 1024).await;
    let mut bystander = server.plain("/ws/chat").await;
    let mut offender = server.plain("/ws/chat").await;
    offender.send(&"x".repeat(2048)).await;
    assert_eq!(offender.close_code().await, 1009);
    assert_eq!(bystander.recv().await, "Un utilisateur s'est déconnecté.");
    bystander.send("still here").await;
    assert_eq!(bystander.recv().await, "Message reçu : still here");
}

#[tokio::test]
async fn a_text_over_the_character_limit_closes_a_plain_client_with_1009() {
    let server = spawn_with(|c| c.max_text_chars = 10).await;
    let mut client = server.plain("/ws/chat").await;
    client.send("0123456789").await;
    assert_eq!(client.recv().await, "Message reçu : 0123456789");
    client.send("0123456789a").await;
    assert_eq!(client.close_code().await, 1009);
}

#[tokio::test]
async fn a_binary_frame_closes_with_1003() {
    let server = spawn().await;
    let mut bystander = server.plain("/ws/chat").await;
    let mut offender = server.plain("/ws/chat").await;
    within(futures_util::SinkExt::send(&mut offender.socket, Message::Binary(vec![1, 2, 3].into()))).await.unwrap();
    assert_eq!(offender.close_code().await, 1003);
    assert_eq!(bystander.recv().await, "Un utilisateur s'est déconnecté.");
    bystander.send("fine").await;
    assert_eq!(bystander.recv().await, "Message reçu : fine");
}

#[tokio::test]
async fn a_foreign_origin_gets_403_and_known_ones_get_in() {
    let server = spawn_with(|c| c.allowed_origins = vec!["https://app.example".into()]).await;
    let url = server.ws("/ws/chat");
    assert_eq!(PlainClient::connect_with(&url, &[("origin", "https://evil.example")]).await.err(), Some(403));
    assert!(PlainClient::connect_with(&url, &[("origin", "https://app.example")]).await.is_ok());
    // localhost on another port is another origin: a dev server there needs --allowed-origins.
    assert_eq!(PlainClient::connect_with(&url, &[("origin", "http://localhost:3000")]).await.err(), Some(403));
    let own = format!("http://{}", server.addr);
    assert!(PlainClient::connect_with(&url, &[("origin", own.as_str())]).await.is_ok());
    assert!(PlainClient::connect_with(&url, &[]).await.is_ok(), "no Origin: not a browser");
}

/// DNS rebinding: `evil.example` now resolves to this server, so the attacker's page
/// sends `Origin` and `Host` both `http://evil.example:PORT`. The Host header must not
/// make that origin "own".
#[tokio::test]
async fn a_rebound_origin_gets_403_and_the_localhost_ones_get_in() {
    let server = spawn().await;
    let port = server.addr.port();
    let evil_host = format!("evil.example:{port}");
    let evil_origin = format!("http://{evil_host}");
    for path in ["/ws", "/ws/chat"] {
        let url = server.ws(path);
        let rebound = [("origin", evil_origin.as_str()), ("host", evil_host.as_str())];
        assert_eq!(PlainClient::connect_with(&url, &rebound).await.err(), Some(403), "{path}");
        for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
            let origin = format!("http://{host}");
            let headers = [("origin", origin.as_str()), ("host", host.as_str())];
            assert!(PlainClient::connect_with(&url, &headers).await.is_ok(), "{path} from {origin}");
        }
        assert!(PlainClient::connect_with(&url, &[]).await.is_ok(), "{path} without an Origin");
    }
}

#[tokio::test]
async fn a_public_url_origin_gets_in_whatever_the_host() {
    let server = spawn_with(|c| c.public_url = vec!["https://chat.example.com".into()]).await;
    let port = server.addr.port();
    let evil_host = format!("evil.example:{port}");
    for path in ["/ws", "/ws/chat"] {
        let url = server.ws(path);
        for host in ["chat.example.com", evil_host.as_str()] {
            let headers = [("origin", "https://chat.example.com"), ("host", host)];
            assert!(PlainClient::connect_with(&url, &headers).await.is_ok(), "{path} with Host {host}");
        }
        let rebound = [("origin", "http://evil.example"), ("host", "evil.example")];
        assert_eq!(PlainClient::connect_with(&url, &rebound).await.err(), Some(403), "{path}");
        assert!(PlainClient::connect_with(&url, &[]).await.is_ok(), "{path} without an Origin");
    }
}

#[tokio::test]
async fn an_invalid_room_name_gets_400() {
    let server = spawn().await;
    for bad in ["/ws/chat/has%20space", "/ws/chat/semi;colon", &format!("/ws/chat/{}", "x".repeat(65))] {
        assert_eq!(PlainClient::connect_with(&server.ws(bad), &[]).await.err(), Some(400), "{bad}");
    }
    assert!(PlainClient::connect_with(&server.ws(&format!("/ws/chat/{}", "x".repeat(64))), &[]).await.is_ok());
}

#[tokio::test]
async fn a_bad_name_gets_400() {
    let server = spawn().await;
    let long = "n".repeat(33);
    assert_eq!(PlainClient::connect_with(&server.ws(&format!("/ws?name={long}")), &[]).await.err(), Some(400));
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let server = spawn().await;
    let (status, body) = http_get(&server.http("/healthz")).await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    let (status, body) = http_get(&server.http("/readyz")).await;
    assert_eq!((status, body.as_str()), (200, "ready"));
}

#[tokio::test]
async fn the_room_directory_lists_active_rooms_with_who_is_online() {
    let server = spawn().await;
    let mut alice = server.json("alice").await;
    within(alice.join(&room("older"), None)).await.unwrap();
    within(alice.send(&room("older"), "first", None)).await.unwrap();
    within(alice.join(&room("newer"), None)).await.unwrap();
    within(alice.send(&room("newer"), "one", None)).await.unwrap();
    within(alice.send(&room("newer"), "two", None)).await.unwrap();
    let left = within(alice.request(Request::Leave { room: room("older") })).await.unwrap();
    assert!(left.ok, "{left:?}");
    let (status, body) = http_get(&server.http("/api/rooms")).await;
    assert_eq!(status, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    let rooms: Vec<(&str, u64, u64)> = body["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["room"].as_str().unwrap(), r["last_seq"].as_u64().unwrap(), r["online"].as_u64().unwrap()))
        .collect();
    assert_eq!(rooms, [("newer", 2, 1), ("older", 1, 0)]);
    let (status, body) = http_get(&server.http("/api/rooms?limit=0")).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("limit must be between 1 and 1000"), "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "bad_request");
}
