//! Restarts, signals and crashes: what was acknowledged stays, clients are told.

use bavard_client::Connection;
use bavard_protocol::{HistoryRequest, ServerFrame};
use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};

use crate::helpers::*;

#[tokio::test]
async fn a_restart_keeps_stored_messages_and_seqs_continue() {
    let server = spawn().await;
    let mut client = server.plain("/ws/chat/keep").await;
    for text in ["one", "two"] {
        client.send(text).await;
        client.recv().await;
    }
    drop(client);
    let server = server.restart().await;
    let mut client = server.plain("/ws/chat/keep").await;
    client.send("three").await;
    assert_eq!(client.recv().await, "Message reçu : three");
    let mut reader = server.json("reader").await;
    let page = within(reader.history(HistoryRequest {
        room: room("keep"),
        before: None,
        after: None,
        limit: None,
        thread: None,
    }))
    .await
    .unwrap();
    let stored: Vec<(u64, &str)> = page.messages.iter().map(|m| (m.seq, m.text.as_str())).collect();
    assert_eq!(stored, [(1, "one"), (2, "two"), (3, "three")]);
}

#[tokio::test]
async fn sigterm_closes_every_client_with_1001_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ChildServer::start(&dir.path().join("b.db"), &[]);
    let mut plain = PlainClient::connect(&server.ws("/ws/chat")).await;
    let mut json = within(Connection::connect(&server.ws("/ws?name=j"))).await.unwrap();
    plain.send("before the signal").await;
    assert_eq!(plain.recv().await, "Message reçu : before the signal");
    kill(Pid::from_raw(server.child.id() as i32), Signal::SIGTERM).unwrap();
    assert_eq!(plain.close_code().await, 1001);
    match within(json.next_event()).await {
        Ok(ServerFrame::Closing { .. }) => {}
        other => panic!("expected a closing event, got {other:?}"),
    }
    let closed = within(json.next_event()).await.unwrap_err();
    assert_eq!(closed.close_code(), Some(1001), "{closed}");
    assert_eq!(server.wait_exit(), Some(0));
}

#[tokio::test]
async fn an_acknowledged_send_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let server = ChildServer::start(&db, &["--rate-per-second", "0", "--user-rate-per-second", "0"]);
    let mut client = within(Connection::connect(&server.ws("/ws?name=c"))).await.unwrap();
    let crash = room("crash");
    within(client.join(&crash, None)).await.unwrap();
    // Pipeline many sends so several group commits are in flight, then crash right
    // after the last acknowledgement.
    let mut ids = Vec::new();
    for i in 0..300 {
        let send = bavard_protocol::SendRequest {
            room: crash.clone(),
            text: format!("m{i}"),
            key: None,
            reply_to: None,
            stream: false,
        };
        ids.push(within(client.submit(bavard_protocol::Request::Send(send))).await.unwrap());
    }
    let mut acked = Vec::new();
    for id in &ids {
        let reply = within(client.reply_to(id)).await.unwrap();
        assert!(reply.ok, "{reply:?}");
        acked.push(reply.result["seq"].as_u64().unwrap());
    }
    let mut server = server;
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    let restarted = start_on(&db, |_| {}).await;
    let mut reader = restarted.json("reader").await;
    let mut stored = Vec::new();
    let mut after = 0;
    loop {
        let page = within(reader.history(HistoryRequest {
            room: crash.clone(),
            before: None,
            after: Some(after),
            limit: Some(200),
            thread: None,
        }))
        .await
        .unwrap();
        stored.extend(page.messages.iter().map(|m| m.seq));
        after = stored.last().copied().unwrap_or(0);
        if !page.has_more {
            break;
        }
    }
    assert_eq!(acked, (1..=300).collect::<Vec<u64>>());
    assert_eq!(stored, acked, "every acknowledged message is stored after kill -9");
}
