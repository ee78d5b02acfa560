//! JSON protocol v1: each op, replies and events, and the two protocols in one room.

use std::time::Duration;

use bavard_client::Connection;
use bavard_protocol::{
    ErrorCode, HistoryRequest, JoinRequest, Message, ReplyFrame, Request, RequestId, SendRequest, ServerFrame,
};

use crate::helpers::*;

/// The next `message` event, skipping presence and typing.
pub async fn next_message(client: &mut Connection) -> Message {
    loop {
        match within(client.next_event()).await.unwrap() {
            ServerFrame::Message(message) => return message,
            ServerFrame::Presence(_) | ServerFrame::Typing(_) => continue,
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

/// Sends a raw frame and returns the next non-event frame (reply or error).
pub async fn raw_request(client: &mut Connection, text: &str) -> ServerFrame {
    within(client.send_text(text.into())).await.unwrap();
    loop {
        match within(client.next_event()).await.unwrap() {
            frame @ (ServerFrame::Reply(_) | ServerFrame::Error { .. }) => return frame,
            _ => continue,
        }
    }
}

pub fn send(room_name: &str, text: &str) -> Request {
    Request::Send(SendRequest { room: room(room_name), text: text.into(), key: None, reply_to: None, stream: false })
}

fn error_code(reply: &ReplyFrame) -> ErrorCode {
    assert!(!reply.ok, "expected an error reply: {reply:?}");
    reply.error.as_ref().unwrap().code
}

#[tokio::test]
async fn welcome_is_the_first_frame() {
    let server = spawn_with(|c| c.max_frame_bytes = 2048).await;
    let client = server.json("alice").await;
    let welcome = client.welcome();
    assert_eq!(welcome.protocol, 1);
    assert!(welcome.server.starts_with("bavard "), "{}", welcome.server);
    assert_eq!(welcome.user.name, "alice");
    assert!(welcome.session.starts_with("s_"));
    assert_eq!((welcome.limits.max_frame_bytes, welcome.limits.max_text_chars), (2048, 4000));
    let guest = within(Connection::connect(&server.ws("/ws"))).await.unwrap();
    assert!(guest.welcome().user.name.starts_with("guest-"), "{:?}", guest.welcome().user);
}

#[tokio::test]
async fn send_reaches_every_member_including_the_sender_with_its_reply() {
    let server = spawn().await;
    let general = room("general");
    let mut alice = server.json("alice").await;
    let mut bob = server.json("bob").await;
    within(alice.join(&general, None)).await.unwrap();
    within(bob.join(&general, None)).await.unwrap();
    let reply = within(alice.send(&general, "hello", Some("c-17"))).await.unwrap();
    assert_eq!((reply.seq, reply.duplicate), (1, false));
    for client in [&mut alice, &mut bob] {
        let message = next_message(client).await;
        assert_eq!((message.seq, message.text.as_str(), message.key.as_deref()), (1, "hello", Some("c-17")));
        assert_eq!(message.from.name, "alice");
        assert_eq!(message.ts, reply.ts);
        assert!(message.ts.to_string().ends_with('Z') && message.ts.to_string().len() == 24);
    }
}

#[tokio::test]
async fn replies_echo_string_and_integer_ids() {
    let server = spawn().await;
    let mut client = server.json("ids").await;
    for (frame, id) in
        [(r#"{"op":"ping","id":7}"#, RequestId::Int(7)), (r#"{"op":"ping","id":"abc"}"#, RequestId::Str("abc".into()))]
    {
        match raw_request(&mut client, frame).await {
            ServerFrame::Reply(reply) => assert_eq!((reply.id, reply.ok), (id, true)),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn a_request_without_id_gets_no_reply_and_its_failure_an_error_event() {
    let server = spawn().await;
    let mut client = server.json("noid").await;
    within(client.join(&room("r"), None)).await.unwrap();
    within(client.send_text(r#"{"op":"send","room":"r","text":"quiet"}"#.into())).await.unwrap();
    assert_eq!(next_message(&mut client).await.text, "quiet");
    match raw_request(&mut client, r#"{"op":"send","room":"elsewhere","text":"x"}"#).await {
        ServerFrame::Error { error } => assert_eq!(error.code, ErrorCode::Forbidden),
        other => panic!("{other:?}"),
    }
    // The ping reply is the next frame: nothing else was sent in between.
    within(client.send_text(r#"{"op":"ping","id":1}"#.into())).await.unwrap();
    assert!(matches!(within(client.next_event()).await.unwrap(), ServerFrame::Reply(r) if r.ok));
}

#[tokio::test]
async fn send_and_typing_need_a_join_and_leave_ends_membership() {
    let server = spawn().await;
    let ops = room("ops");
    let mut client = server.json("m").await;
    let reply = within(client.request(send("ops", "too early"))).await.unwrap();
    assert_eq!(error_code(&reply), ErrorCode::Forbidden);
    assert!(reply.error.unwrap().message.contains("ops"));
    let reply = within(client.request(Request::Typing { room: ops.clone() })).await.unwrap();
    assert_eq!(error_code(&reply), ErrorCode::Forbidden);
    within(client.join(&ops, None)).await.unwrap();
    assert!(within(client.request(send("ops", "now"))).await.unwrap().ok);
    assert!(within(client.request(Request::Leave { room: ops.clone() })).await.unwrap().ok);
    assert_eq!(error_code(&within(client.request(send("ops", "gone"))).await.unwrap()), ErrorCode::Forbidden);
    let reply = within(client.request(Request::Leave { room: ops })).await.unwrap();
    assert_eq!(error_code(&reply), ErrorCode::NotFound);
}

#[tokio::test]
async fn join_without_since_returns_the_latest_messages_and_the_members() {
    let server = spawn().await;
    let lobby = room("lobby");
    let mut alice = server.json("alice").await;
    within(alice.join(&lobby, None)).await.unwrap();
    for i in 1..=60 {
        within(alice.send(&lobby, &format!("m{i}"), None)).await.unwrap();
    }
    let mut bob = server.json("bob").await;
    let reply = within(bob.join(&lobby, None)).await.unwrap();
    assert_eq!(reply.seq, 60);
    assert_eq!(reply.recovered, None);
    assert_eq!(reply.messages.len(), 50);
    assert_eq!((reply.messages[0].seq, reply.messages[49].seq), (11, 60));
    let mut names: Vec<&str> = reply.members.iter().map(|u| u.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["alice", "bob"]);
    let reply: bavard_protocol::JoinReply = within(bob.call(Request::Join(JoinRequest {
        room: lobby.clone(),
        since: None,
        limit: Some(3),
        since_rev: None,
    })))
    .await
    .unwrap();
    assert_eq!(reply.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), [58, 59, 60]);
}

#[tokio::test]
async fn history_pages_backwards_and_forwards() {
    let server = spawn().await;
    let archive = room("archive");
    let mut client = server.json("h").await;
    within(client.join(&archive, None)).await.unwrap();
    for i in 1..=25 {
        within(client.send(&archive, &format!("m{i}"), None)).await.unwrap();
    }
    let page = |before, after, limit| HistoryRequest { room: archive.clone(), before, after, limit, thread: None };
    let seqs = |messages: &[Message]| messages.iter().map(|m| m.seq).collect::<Vec<_>>();
    let latest = within(client.history(page(None, None, Some(10)))).await.unwrap();
    assert_eq!((seqs(&latest.messages), latest.has_more), ((16..=25).collect(), true));
    let older = within(client.history(page(Some(16), None, Some(10)))).await.unwrap();
    assert_eq!((seqs(&older.messages), older.has_more), ((6..=15).collect(), true));
    let oldest = within(client.history(page(Some(6), None, Some(10)))).await.unwrap();
    assert_eq!((seqs(&oldest.messages), oldest.has_more), ((1..=5).collect(), false));
    let forward = within(client.history(page(None, Some(20), Some(3)))).await.unwrap();
    assert_eq!((seqs(&forward.messages), forward.has_more), (vec![21, 22, 23], true));
    let window = within(client.history(page(Some(24), Some(20), Some(10)))).await.unwrap();
    assert_eq!((seqs(&window.messages), window.has_more), (vec![21, 22, 23], false));
    let empty = within(client.history(HistoryRequest {
        room: room("never-used"),
        before: None,
        after: None,
        limit: None,
        thread: None,
    }))
    .await
    .unwrap();
    assert!(empty.messages.is_empty() && !empty.has_more);
}

#[tokio::test]
async fn reply_to_is_kept() {
    let server = spawn().await;
    let thread = room("thread");
    let mut client = server.json("t").await;
    within(client.join(&thread, None)).await.unwrap();
    within(client.send(&thread, "question", None)).await.unwrap();
    let answer =
        SendRequest { room: thread.clone(), text: "answer".into(), key: None, reply_to: Some(1), stream: false };
    within(client.request(Request::Send(answer))).await.unwrap();
    next_message(&mut client).await;
    assert_eq!(next_message(&mut client).await.reply_to, Some(1));
}

#[tokio::test]
async fn presence_announces_users_coming_and_going() {
    let server = spawn().await;
    let hall = room("hall");
    let mut alice = server.json("alice").await;
    within(alice.join(&hall, None)).await.unwrap();
    let mut bob = server.json("bob").await;
    within(bob.join(&hall, None)).await.unwrap();
    match within(alice.next_event()).await.unwrap() {
        ServerFrame::Presence(p) => {
            assert_eq!(p.room, hall);
            assert_eq!(p.joined.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(), ["bob"]);
            assert!(p.left.is_empty());
        }
        other => panic!("{other:?}"),
    }
    // A second connection of bob's does not make bob join twice.
    let mut bob_again = server.json("bob").await;
    within(bob_again.join(&hall, None)).await.unwrap();
    drop(bob_again);
    within(bob.request(Request::Leave { room: hall.clone() })).await.unwrap();
    match within(alice.next_event()).await.unwrap() {
        ServerFrame::Presence(p) => {
            assert_eq!(p.left.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(), ["bob"]);
            assert!(p.joined.is_empty());
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn typing_reaches_the_others_only_and_is_throttled() {
    let server = spawn().await;
    let desk = room("desk");
    let mut alice = server.json("alice").await;
    let mut bob = server.json("bob").await;
    within(alice.join(&desk, None)).await.unwrap();
    within(bob.join(&desk, None)).await.unwrap();
    within(alice.next_event()).await.unwrap(); // bob's presence
    for _ in 0..3 {
        assert!(within(alice.request(Request::Typing { room: desk.clone() })).await.unwrap().ok);
    }
    match within(bob.next_event()).await.unwrap() {
        ServerFrame::Typing(t) => assert_eq!((t.room, t.user.name.as_str()), (desk.clone(), "alice")),
        other => panic!("{other:?}"),
    }
    // Alice's typing reached bob's queue before her requests were answered; a message
    // she sends now comes after it. So the next event either sees must be that message:
    // a second typing for bob means no throttle, any typing for alice an echo.
    within(alice.send(&desk, "after typing", None)).await.unwrap();
    for (client, rule) in [(&mut bob, "typing is throttled"), (&mut alice, "typing is never echoed")] {
        match within(client.next_event()).await.unwrap() {
            ServerFrame::Message(message) => assert_eq!(message.text, "after typing", "{rule}"),
            other => panic!("{rule}: expected the later message, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn plain_and_json_clients_share_a_room() {
    let server = spawn().await;
    let mut plain = server.plain("/ws/chat?name=old-timer").await;
    let mut json = server.json("modern").await;
    let reply = within(json.join(&room("chat"), None)).await.unwrap();
    assert!(reply.members.iter().any(|u| u.name == "old-timer"), "{:?}", reply.members);
    plain.send("from plain").await;
    assert_eq!(plain.recv().await, "Message reçu : from plain");
    let message = next_message(&mut json).await;
    assert_eq!((message.seq, message.text.as_str(), message.from.name.as_str()), (1, "from plain", "old-timer"));
    within(json.send(&room("chat"), "from json", None)).await.unwrap();
    assert_eq!(plain.recv().await, "Message reçu : from json");
    drop(plain);
    match within(json.next_event()).await.unwrap() {
        ServerFrame::Message(m) => assert_eq!(m.text, "from json"),
        other => panic!("{other:?}"),
    }
    match within(json.next_event()).await.unwrap() {
        ServerFrame::Presence(p) => assert_eq!(p.left[0].name, "old-timer"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn try_next_event_takes_what_has_arrived_without_waiting() {
    let server = spawn().await;
    let lobby = room("lobby");
    let mut alice = server.json("alice").await;
    within(alice.join(&lobby, None)).await.unwrap();
    assert!(alice.try_next_event().is_none(), "nothing has arrived yet");
    // The event arrives around the ack (before or after it): poll until it is here.
    within(alice.send(&lobby, "hello", None)).await.unwrap();
    let mut waited = 0;
    let event = loop {
        if let Some(event) = alice.try_next_event() {
            break event.unwrap();
        }
        waited += 1;
        assert!(waited < 500, "the event never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    match event {
        ServerFrame::Message(message) => assert_eq!(message.text, "hello"),
        other => panic!("{other:?}"),
    }
    assert_eq!(alice.pending_events(), 0);
}
