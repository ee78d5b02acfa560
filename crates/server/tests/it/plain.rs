//! The original draft's plain-text protocol, byte for byte, with rooms and history.

use bavard_protocol::HistoryRequest;

use crate::helpers::*;

const RECEIVED: &str = "Message reçu : ";
const DISCONNECTED: &str = "Un utilisateur s'est déconnecté.";

#[tokio::test]
async fn every_client_including_the_sender_receives_each_message() {
    let server = spawn().await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(server.plain("/ws/chat").await);
    }
    clients[1].send("bonjour").await;
    for client in &mut clients {
        assert_eq!(client.recv().await, "Message reçu : bonjour");
    }
    clients[0].send("salut").await;
    for client in &mut clients {
        assert_eq!(client.recv().await, "Message reçu : salut");
    }
}

#[tokio::test]
async fn a_disconnect_is_announced_to_the_others() {
    let server = spawn().await;
    let mut alice = server.plain("/ws/chat").await;
    let mut bob = server.plain("/ws/chat").await;
    let leaving = server.plain("/ws/chat").await;
    // Make sure all three are in the room before one leaves.
    alice.send("ready").await;
    assert_eq!(bob.recv().await, "Message reçu : ready");
    assert_eq!(alice.recv().await, "Message reçu : ready");
    drop(leaving);
    assert_eq!(alice.recv().await, DISCONNECTED);
    assert_eq!(bob.recv().await, DISCONNECTED);
}

#[tokio::test]
async fn rooms_are_isolated() {
    let server = spawn().await;
    let mut default = server.plain("/ws/chat").await;
    let mut explicit_chat = server.plain("/ws/chat/chat").await;
    let mut a = server.plain("/ws/chat/a").await;
    let mut b = server.plain("/ws/chat/b").await;
    a.send("in a").await;
    assert_eq!(a.recv().await, "Message reçu : in a");
    b.send("in b").await;
    assert_eq!(b.recv().await, "Message reçu : in b");
    default.send("in chat").await;
    assert_eq!(explicit_chat.recv().await, "Message reçu : in chat", "/ws/chat is room chat");
    assert_eq!(default.recv().await, "Message reçu : in chat");
    // Each room gets only its own: the next frame a and b see is their own marker, sent
    // after the other rooms' messages were delivered (to everyone in those rooms).
    for (client, marker) in [(&mut a, "marker a"), (&mut b, "marker b")] {
        client.send(marker).await;
        assert_eq!(client.recv().await, format!("Message reçu : {marker}"));
    }
}

#[tokio::test]
async fn two_hundred_messages_arrive_in_order_everywhere() {
    let server = spawn().await;
    let mut sender = server.plain("/ws/chat/order").await;
    let mut watcher = server.plain("/ws/chat/order").await;
    for i in 0..200 {
        sender.send(&format!("m{i}")).await;
    }
    for client in [&mut sender, &mut watcher] {
        for i in 0..200 {
            assert_eq!(client.recv().await, format!("{RECEIVED}m{i}"));
        }
    }
}

#[tokio::test]
async fn unicode_survives_byte_for_byte() {
    let server = spawn().await;
    let mut client = server.plain("/ws/chat").await;
    for text in ["héllo ça va ?", "日本語のテキスト", "emoji 🎉👩‍👩‍👧", "مرحبا", "tab\tand\nnewline", " spaces "]
    {
        client.send(text).await;
        assert_eq!(client.recv().await, format!("{RECEIVED}{text}"));
    }
}

#[tokio::test]
async fn messages_are_stored_with_gap_free_seqs_before_they_are_broadcast() {
    let server = spawn().await;
    let mut client = server.plain("/ws/chat/stored").await;
    for i in 1..=5 {
        client.send(&format!("n{i}")).await;
        // Broadcast happens after commit: once received, the message is in history.
        client.recv().await;
        let mut reader = server.json("reader").await;
        let page = within(reader.history(HistoryRequest {
            room: room("stored"),
            before: None,
            after: None,
            limit: None,
            thread: None,
        }))
        .await
        .unwrap();
        let seqs: Vec<u64> = page.messages.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, (1..=i).collect::<Vec<_>>());
        assert_eq!(page.messages.last().unwrap().text, format!("n{i}"));
    }
}

#[tokio::test]
async fn an_empty_frame_is_not_a_message() {
    let server = spawn().await;
    let mut client = server.plain("/ws/chat").await;
    client.send("").await;
    client.send("after").await;
    assert_eq!(client.recv().await, "Message reçu : after");
}
