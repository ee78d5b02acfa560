//! `Resilient`, the SDK's reconnecting client, against the real server: recovery past
//! the server's recovery limit, a room joined while empty, a replaced history, history
//! on the first join, events passed on, refusals, endpoint URLs. A gap in live
//! messages, which the real server never leaves, is played by a scripted server.

use bavard_client::{endpoint, ClientError, Connection, Event, Resilient};
use bavard_protocol::{
    encode_ok_reply, JoinReply, Limits, Message, Request, RequestId, ServerFrame, Timestamp, User, Welcome,
};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::{tungstenite::Message as WsMessage, WebSocketStream};

use crate::helpers::*;

/// The next event (any).
async fn next(client: &mut Resilient) -> Event {
    within(client.next_event()).await.unwrap()
}

/// Reads the client's news up to its reconnection and returns the online count then:
/// the server's `closing`, the lost connection, then the rejoined room; no message
/// may come before.
async fn reconnection(client: &mut Resilient) -> usize {
    loop {
        match next(client).await {
            Event::Server(ServerFrame::Closing { .. }) | Event::Disconnected(_) => continue,
            Event::Rejoined { member_count, .. } => return member_count,
            other => panic!("expected the reconnection, got {other:?}"),
        }
    }
}

/// The next `count` messages, skipping only presence events: their (seq, text).
async fn messages(client: &mut Resilient, count: usize) -> Vec<(u64, String)> {
    let mut got = Vec::new();
    while got.len() < count {
        match next(client).await {
            Event::Message(message) => got.push((message.seq, message.text)),
            Event::Server(ServerFrame::Presence(_)) => continue,
            other => panic!("expected a message after {got:?}, got {other:?}"),
        }
    }
    got
}

/// Stops `server` and starts it again on the same port (so that clients find it) and
/// on `db` (its own database unless another is given), after `adjust`.
async fn restart_in_place(
    server: TestServer,
    db: Option<&std::path::Path>,
    adjust: impl FnOnce(&mut bavard::config::ServeConfig),
) -> (TestServer, Option<tempfile::TempDir>) {
    let (addr, own_db) = (server.addr, server.db.clone());
    let dir = server.stop().await;
    let server = start_on(db.unwrap_or(&own_db), |config| {
        config.listen = addr;
        adjust(config);
    })
    .await;
    (server, dir)
}

#[tokio::test]
async fn a_gap_past_the_recovery_limit_is_paged_with_history_in_order() {
    let server = spawn_with(|c| c.recovery_limit = 5).await;
    let deep = room("deep");
    let mut reader = Resilient::new(server.ws("/ws?name=reader"));
    within(reader.join(&deep)).await.unwrap();
    let mut writer = server.json("writer").await;
    within(writer.join(&deep, None)).await.unwrap();
    within(writer.send(&deep, "m1", None)).await.unwrap();
    assert_eq!(messages(&mut reader, 1).await, [(1, "m1".to_owned())]);

    // While the reader is away, 20 messages: four times what one join may recover.
    let (server, _dir) = restart_in_place(server, None, |c| c.recovery_limit = 5).await;
    let mut writer = server.json("writer").await;
    within(writer.join(&deep, None)).await.unwrap();
    for seq in 2..=21 {
        within(writer.send(&deep, &format!("m{seq}"), None)).await.unwrap();
    }
    assert_eq!(reconnection(&mut reader).await, 2);
    let expected: Vec<(u64, String)> = (2..=21).map(|seq| (seq, format!("m{seq}"))).collect();
    assert_eq!(messages(&mut reader, 20).await, expected);
    assert_eq!(reader.last_seq(&deep), Some(21));

    // Live messages follow the recovered ones without a seam.
    within(writer.send(&deep, "live", None)).await.unwrap();
    assert_eq!(messages(&mut reader, 1).await, [(22, "live".to_owned())]);
}

#[tokio::test]
async fn a_room_joined_while_empty_is_recovered_from_its_start() {
    let server = spawn().await;
    let fresh = room("fresh");
    let mut reader = Resilient::new(server.ws("/ws?name=reader"));
    let joined = within(reader.join(&fresh)).await.unwrap();
    assert_eq!((joined.seq, reader.last_seq(&fresh)), (0, Some(0)));

    let (server, _dir) = restart_in_place(server, None, |_| {}).await;
    let mut writer = server.json("writer").await;
    within(writer.join(&fresh, None)).await.unwrap();
    for text in ["one", "two"] {
        within(writer.send(&fresh, text, None)).await.unwrap();
    }
    reconnection(&mut reader).await;
    assert_eq!(messages(&mut reader, 2).await, [(1, "one".to_owned()), (2, "two".to_owned())]);
}

#[tokio::test]
async fn a_replaced_history_is_announced_and_followed_from_its_new_end() {
    let server = spawn().await;
    let moved = room("moved");
    let mut reader = Resilient::new(server.ws("/ws?name=reader"));
    within(reader.join(&moved)).await.unwrap();
    let mut writer = server.json("writer").await;
    within(writer.join(&moved, None)).await.unwrap();
    for text in ["a", "b", "c"] {
        within(writer.send(&moved, text, None)).await.unwrap();
    }
    assert_eq!(messages(&mut reader, 3).await.last().map(|m| m.0), Some(3));

    // The server comes back with another database: the room's history starts over.
    let other = tempfile::tempdir().unwrap();
    let (server, _dir) = restart_in_place(server, Some(&other.path().join("other.db")), |_| {}).await;
    assert_eq!(reconnection(&mut reader).await, 1);
    match next(&mut reader).await {
        Event::HistoryRestarted { room, seq } => assert_eq!((room, seq), (moved.clone(), 0)),
        other => panic!("expected the restart of the history, got {other:?}"),
    }
    let mut writer = server.json("writer").await;
    within(writer.join(&moved, None)).await.unwrap();
    within(writer.send(&moved, "new a", None)).await.unwrap();
    loop {
        match next(&mut reader).await {
            Event::Server(ServerFrame::Presence(_)) => continue,
            Event::Message(message) => break assert_eq!((message.seq, message.text.as_str()), (1, "new a")),
            other => panic!("expected the first message of the new history, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_first_join_can_bring_history_and_the_servers_events_are_passed_on() {
    let server = spawn().await;
    let hall = room("hall");
    let mut writer = server.json("writer").await;
    within(writer.join(&hall, None)).await.unwrap();
    for text in ["one", "two", "three"] {
        within(writer.send(&hall, text, None)).await.unwrap();
    }
    let mut reader = Resilient::new(server.ws("/ws?name=reader"));
    let joined = within(reader.join_with_history(&hall, 2)).await.unwrap();
    let earlier: Vec<(u64, &str)> = joined.messages.iter().map(|m| (m.seq, m.text.as_str())).collect();
    assert_eq!((earlier, joined.member_count), (vec![(2, "two"), (3, "three")], 2));
    assert_eq!(reader.last_seq(&hall), Some(3), "history is not handed out again");
    assert_eq!(reader.welcome().map(|w| w.user.name.as_str()), Some("reader"));

    let mut bob = server.json("bob").await;
    within(bob.join(&hall, None)).await.unwrap();
    match next(&mut reader).await {
        Event::Server(ServerFrame::Presence(presence)) => assert_eq!(presence.joined[0].name, "bob"),
        other => panic!("expected bob's arrival, got {other:?}"),
    }
    assert!(within(bob.request(Request::Typing { room: hall.clone() })).await.unwrap().ok);
    match next(&mut reader).await {
        Event::Server(ServerFrame::Typing(typing)) => assert_eq!(typing.user.name, "bob"),
        other => panic!("expected bob typing, got {other:?}"),
    }
    let sent = within(reader.send(&hall, "four")).await.unwrap();
    assert_eq!(messages(&mut reader, 1).await, [(sent.seq, "four".to_owned())]);
    assert_eq!(sent.seq, 4);
}

#[tokio::test]
async fn a_refused_connection_is_reported_at_once_with_the_servers_reason() {
    let server = spawn().await;
    let url = endpoint(&server.http("/"), Some(&"n".repeat(100))).unwrap();
    let mut client = Resilient::new(url);
    // 100 attempts with backoff would outlast `within`: a refusal is final.
    let error = within(client.join(&room("r"))).await.unwrap_err();
    match &error {
        ClientError::Refused { status, body } => {
            assert_eq!(*status, 400);
            assert!(body.starts_with("invalid name"), "{body}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(error.to_string().contains("HTTP 400: invalid name"), "{error}");
}

#[tokio::test]
async fn an_endpoint_built_from_an_http_url_carries_the_encoded_name_to_the_server() {
    let server = spawn().await;
    let url = endpoint(&format!("http://{}", server.addr), Some("al ice & co=1+1")).unwrap();
    let connection = within(Connection::connect(&url)).await.unwrap();
    assert_eq!(connection.welcome().user.name, "al ice & co=1+1");
}

/// A scripted server's connection: accepted, welcomed.
async fn scripted_connection(listener: &TcpListener) -> WebSocketStream<TcpStream> {
    let (stream, _) = within(listener.accept()).await.unwrap();
    let mut socket = within(tokio_tungstenite::accept_async(stream)).await.unwrap();
    let welcome = ServerFrame::Welcome(Welcome {
        protocol: 1,
        server: "script".into(),
        user: user(),
        session: "s".into(),
        limits: Limits { max_frame_bytes: 65_536, max_text_chars: 4_000 },
    });
    within(socket.send(WsMessage::Text(welcome.to_json().into()))).await.unwrap();
    socket
}

fn user() -> User {
    User { id: "g_reader".into(), name: "reader".into() }
}

/// Reads the client's next request and answers it with a join reply: returns the
/// request's `since`.
async fn answer_join(socket: &mut WebSocketStream<TcpStream>, seq: u64, messages: Vec<Message>) -> Option<u64> {
    let request: serde_json::Value = loop {
        match within(socket.next()).await {
            Some(Ok(WsMessage::Text(text))) => break serde_json::from_str(&text).unwrap(),
            Some(Ok(_)) => continue,
            other => panic!("expected a request, got {other:?}"),
        }
    };
    assert_eq!(request["op"], "join", "{request}");
    let id: RequestId = serde_json::from_value(request["id"].clone()).unwrap();
    let reply = JoinReply {
        room: room("r"),
        seq,
        member_count: 1,
        members: vec![user()],
        members_cursor: None,
        messages,
        recovered: request["since"].as_u64().map(|_| true),
        rev: 0,
        changed: Vec::new(),
        unread: None,
    };
    within(socket.send(WsMessage::Text(encode_ok_reply(&id, &reply).into()))).await.unwrap();
    request["since"].as_u64()
}

fn message(seq: u64) -> Message {
    Message::new(room("r"), seq, Timestamp::now(), user(), format!("m{seq}"))
}

#[tokio::test]
async fn a_gap_in_live_messages_is_recovered_before_anything_after_it() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let script = tokio::spawn(async move {
        let mut first = scripted_connection(&listener).await;
        assert_eq!(answer_join(&mut first, 1, Vec::new()).await, None);
        for seq in [2, 5] {
            let frame = ServerFrame::Message(message(seq)).to_json();
            within(first.send(WsMessage::Text(frame.into()))).await.unwrap();
        }
        // The client leaves, comes back and recovers from the last seq it handed out.
        let mut second = scripted_connection(&listener).await;
        let since = answer_join(&mut second, 5, vec![message(3), message(4), message(5)]).await;
        (since, second)
    });
    let mut client = Resilient::new(url);
    within(client.join(&room("r"))).await.unwrap();
    assert_eq!(messages(&mut client, 1).await, [(2, "m2".to_owned())]);
    match next(&mut client).await {
        Event::Disconnected(error) => assert!(error.to_string().contains("went from seq 2 to 5"), "{error}"),
        other => panic!("expected the client to drop the connection with the gap, got {other:?}"),
    }
    assert_eq!(reconnection(&mut client).await, 1);
    let recovered: Vec<u64> = messages(&mut client, 3).await.into_iter().map(|(seq, _)| seq).collect();
    assert_eq!(recovered, [3, 4, 5]);
    let (since, _second) = within(script).await.unwrap();
    assert_eq!(since, Some(2));
}

#[tokio::test]
async fn other_ops_go_through_call_and_their_events_come_out_of_next_event() {
    use bavard_protocol::{MessageRef, TextChange};

    let server = spawn().await;
    let general = room("calls");
    let mut client = Resilient::new(server.ws("/ws?name=caller"));
    within(client.join(&general)).await.unwrap();
    assert_eq!(within(client.send(&general, "helo")).await.unwrap().seq, 1);
    let edit = TextChange { room: general.clone(), seq: 1, text: "hello".into() };
    let edited: serde_json::Value = within(client.call(Request::Edit(edit))).await.unwrap();
    assert_eq!((edited["seq"].as_u64(), edited["rev"].as_u64().is_some()), (Some(1), true), "{edited}");
    let refused =
        within(client.call::<serde_json::Value>(Request::Delete(MessageRef { room: general.clone(), seq: 9 })))
            .await
            .unwrap_err();
    assert!(matches!(&refused, ClientError::Server(body) if body.code.as_str() == "not_found"), "{refused}");
    // The message, then the edit, in the order they happened.
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match next(&mut client).await {
            Event::Message(message) => seen.push(format!("message {}", message.text)),
            Event::Server(ServerFrame::Edited(edit)) => seen.push(format!("edited {}", edit.text)),
            _ => {}
        }
    }
    assert_eq!(seen, ["message helo", "edited hello"]);
    client.close().await;
    server.stop().await;
}
