//! Bad input at the door and on the wire: every limit answers clearly and leaves other
//! clients undisturbed.

use bavard_protocol::{Request, SendRequest, ServerFrame};
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

#[tokio::test]
async fn a_member_that_stops_reading_is_closed_with_4008_once_its_outbox_holds_too_many_bytes() {
    // Frames alone would never overflow here, nor would a stalled write time out: only
    // the byte bound can close the member that reads nothing.
    let server = spawn_with(|c| {
        c.outbox_bytes = 64 * 1024;
        c.outbox_frames = 1_000_000;
        c.idle_timeout_secs = 600.0;
    })
    .await;
    let hoard = room("hoard");
    let (mut slow, _) = within(tokio_tungstenite::connect_async(server.ws("/ws?name=slow"))).await.unwrap();
    within(futures_util::SinkExt::send(&mut slow, Message::Text(r#"{"op":"join","room":"hoard","id":1}"#.into())))
        .await
        .unwrap();
    // Read the welcome and the join reply, then stop reading.
    for _ in 0..2 {
        within(futures_util::StreamExt::next(&mut slow)).await.unwrap().unwrap();
    }
    let mut writer = server.json("writer").await;
    within(writer.join(&hoard, None)).await.unwrap();
    let text = "x".repeat(4000);
    // Loopback buffers hold a few MB for a reader that reads nothing; after that the
    // slow member's outbox fills up to 64 KiB and it leaves the room at once, which the
    // writer sees as a presence event. 12,000 messages (48 MB) bound the wait.
    let mut left = false;
    'sending: for _ in 0..1500 {
        let mut ids = Vec::new();
        for _ in 0..8 {
            let send =
                SendRequest { room: hoard.clone(), text: text.clone(), key: None, reply_to: None, stream: false };
            ids.push(within(writer.submit(Request::Send(send))).await.unwrap());
        }
        for id in &ids {
            assert!(within(writer.reply_to(id)).await.unwrap().ok);
        }
        while let Some(event) = writer.try_next_event() {
            if let ServerFrame::Presence(presence) = event.unwrap() {
                if presence.left.iter().any(|user| user.name == "slow") {
                    left = true;
                    break 'sending;
                }
            }
        }
    }
    assert!(left, "the member that reads nothing never left the room");
    // Once it reads, it finds what the socket held, then 4008.
    assert_eq!(close_code_of(&mut slow).await, 4008);
    // The writer, who reads, is still served.
    let reply = within(writer.send(&hoard, "still here", None)).await.unwrap();
    assert!(reply.seq > 1);
}
