//! The four guarantees of the protocol, plus the slow-consumer rule, each with a test
//! that fails without it.

use bavard_client::{Connection, Resilient};
use bavard_protocol::{HistoryRequest, Request, SendRequest, ServerFrame};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::{helpers::*, json::next_message};

#[tokio::test]
async fn concurrent_senders_produce_gap_free_seqs_delivered_in_order() {
    let server = spawn().await;
    let busy = room("busy");
    let mut watcher = server.json("watcher").await;
    within(watcher.join(&busy, None)).await.unwrap();
    let mut senders = Vec::new();
    for s in 0..5 {
        let url = server.ws(&format!("/ws?name=s{s}"));
        let busy = busy.clone();
        senders.push(tokio::spawn(async move {
            let mut client = within(Connection::connect(&url)).await.unwrap();
            within(client.join(&busy, None)).await.unwrap();
            // Pipelined: submit all, then collect the acks.
            let mut ids = Vec::new();
            for i in 0..40 {
                let send = SendRequest {
                    room: busy.clone(),
                    text: format!("s{s}-{i}"),
                    key: None,
                    reply_to: None,
                    stream: false,
                };
                ids.push(within(client.submit(Request::Send(send))).await.unwrap());
            }
            for id in ids {
                assert!(within(client.reply_to(&id)).await.unwrap().ok);
            }
        }));
    }
    let mut per_sender = [0; 5];
    for expected in 1..=200 {
        let message = next_message(&mut watcher).await;
        assert_eq!(message.seq, expected, "seqs arrive gap-free and in order");
        let (sender, index) = message.text[1..].split_once('-').unwrap();
        let (sender, index): (usize, usize) = (sender.parse().unwrap(), index.parse().unwrap());
        assert_eq!(index, per_sender[sender], "each sender's messages keep their order");
        per_sender[sender] += 1;
    }
    for sender in senders {
        within(sender).await.unwrap();
    }
}

#[tokio::test]
async fn a_reconnecting_client_gets_exactly_what_it_missed_even_across_a_restart() {
    let server = spawn().await;
    let news = room("news");
    let mut writer = server.json("writer").await;
    within(writer.join(&news, None)).await.unwrap();
    let mut reader = server.json("reader").await;
    within(reader.join(&news, None)).await.unwrap();
    for i in 1..=3 {
        within(writer.send(&news, &format!("seen {i}"), None)).await.unwrap();
    }
    let mut last_seen = 0;
    for _ in 0..3 {
        last_seen = next_message(&mut reader).await.seq;
    }
    reader.close().await;
    for i in 1..=4 {
        within(writer.send(&news, &format!("missed {i}"), None)).await.unwrap();
    }
    drop(writer);
    let server = server.restart().await;
    let mut reader = server.json("reader").await;
    let reply = within(reader.join(&news, Some(last_seen))).await.unwrap();
    assert_eq!(reply.recovered, Some(true));
    assert_eq!(reply.seq, 7);
    let texts: Vec<&str> = reply.messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["missed 1", "missed 2", "missed 3", "missed 4"]);
    assert_eq!(reply.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), [4, 5, 6, 7]);
    // Live messages continue right after the reply's seq.
    let mut writer = server.json("writer").await;
    within(writer.join(&news, None)).await.unwrap();
    within(writer.send(&news, "live", None)).await.unwrap();
    assert_eq!(next_message(&mut reader).await.seq, 8);
}

#[tokio::test]
async fn a_gap_larger_than_the_recovery_limit_says_so_and_the_rest_can_be_paged() {
    let server = spawn_with(|c| c.recovery_limit = 5).await;
    let big = room("big");
    let mut writer = server.json("writer").await;
    within(writer.join(&big, None)).await.unwrap();
    for i in 1..=12 {
        within(writer.send(&big, &format!("m{i}"), None)).await.unwrap();
    }
    let mut reader = server.json("reader").await;
    let reply = within(reader.join(&big, Some(2))).await.unwrap();
    assert_eq!(reply.recovered, Some(false));
    assert_eq!(reply.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), [3, 4, 5, 6, 7]);
    let rest = within(reader.history(HistoryRequest {
        room: big.clone(),
        before: Some(reply.seq + 1),
        after: Some(7),
        limit: Some(200),
        thread: None,
    }))
    .await
    .unwrap();
    assert_eq!(rest.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), [8, 9, 10, 11, 12]);
    assert!(!rest.has_more);
}

#[tokio::test]
async fn a_repeated_key_never_creates_a_second_message() {
    let server = spawn().await;
    let pay = room("pay");
    let mut alice = server.json("alice").await;
    let mut watcher = server.json("watcher").await;
    within(alice.join(&pay, None)).await.unwrap();
    within(watcher.join(&pay, None)).await.unwrap();
    let first = within(alice.send(&pay, "pay 10€", Some("k-1"))).await.unwrap();
    let again = within(alice.send(&pay, "pay 10€", Some("k-1"))).await.unwrap();
    assert_eq!((again.seq, again.ts, again.duplicate), (first.seq, first.ts, true));
    // Even after a restart.
    drop(alice);
    drop(watcher);
    let server = server.restart().await;
    let mut alice = server.json("alice").await;
    within(alice.join(&pay, None)).await.unwrap();
    let after_restart = within(alice.send(&pay, "pay 10€", Some("k-1"))).await.unwrap();
    assert_eq!((after_restart.seq, after_restart.duplicate), (first.seq, true));
    // The same key from someone else is their own message.
    let mut bob = server.json("bob").await;
    within(bob.join(&pay, None)).await.unwrap();
    assert_eq!(within(bob.send(&pay, "mine", Some("k-1"))).await.unwrap().seq, 2);
    let page =
        within(alice.history(HistoryRequest { room: pay, before: None, after: None, limit: None, thread: None }))
            .await
            .unwrap();
    assert_eq!(page.messages.len(), 2);
    // Only bob's message reaches alice live: the duplicates were never delivered.
    assert_eq!(next_message(&mut alice).await.text, "mine");
}

#[tokio::test]
async fn a_resilient_client_loses_and_duplicates_nothing_across_restarts() {
    let server = spawn().await;
    let flaky = room("flaky");
    let addr_file = server.addr;
    let mut reader = Resilient::new(server.ws("/ws?name=reader"));
    within(reader.join(&flaky)).await.unwrap();
    let mut writer = server.json("writer").await;
    within(writer.join(&flaky, None)).await.unwrap();
    within(writer.send(&flaky, "before", None)).await.unwrap();
    assert_eq!(within(reader.next_message()).await.unwrap().text, "before");
    drop(writer);
    // Restart on the same port so the resilient client can find it again.
    let db = server.db.clone();
    let dir = server.stop().await;
    let server = start_on(&db, |c| c.listen = addr_file).await;
    let mut writer = server.json("writer").await;
    within(writer.join(&flaky, None)).await.unwrap();
    for i in 1..=3 {
        within(writer.send(&flaky, &format!("after {i}"), None)).await.unwrap();
    }
    for i in 1..=3 {
        let message = within(reader.next_message()).await.unwrap();
        assert_eq!((message.seq, message.text), (i + 1, format!("after {i}")));
    }
    let sent = within(reader.send(&flaky, "from reader")).await.unwrap();
    assert_eq!(sent.seq, 5);
    assert_eq!(within(reader.next_message()).await.unwrap().seq, 5);
    drop(dir);
}

#[tokio::test]
async fn a_member_that_stops_reading_is_closed_with_4008_and_recovers_with_since() {
    let server = spawn_with(|c| c.outbox_frames = 16).await;
    let flood = room("flood");
    let (mut slow, _) = within(tokio_tungstenite::connect_async(server.ws("/ws?name=slow"))).await.unwrap();
    within(slow.send(WsMessage::Text(r#"{"op":"join","room":"flood","id":1}"#.into()))).await.unwrap();
    // Read the welcome and the join reply, then stop reading.
    for _ in 0..2 {
        within(slow.next()).await.unwrap().unwrap();
    }
    let mut fast = server.json("fast").await;
    within(fast.join(&flood, None)).await.unwrap();
    let total = 1500u64;
    // The fast member reads while the flood is sent.
    let fast_reader = tokio::spawn(async move {
        for expected in 1..=total {
            assert_eq!(next_message(&mut fast).await.seq, expected);
        }
        total
    });
    let mut writer = server.json("writer").await;
    within(writer.join(&flood, None)).await.unwrap();
    let text = "x".repeat(3900);
    let mut ids = Vec::new();
    for _ in 0..total {
        let send = SendRequest { room: flood.clone(), text: text.clone(), key: None, reply_to: None, stream: false };
        ids.push(within(writer.submit(Request::Send(send))).await.unwrap());
        // The writer is a member too: it keeps reading so that it does not overflow.
        if ids.len() == 4 {
            for id in ids.drain(..) {
                assert!(within(writer.reply_to(&id)).await.unwrap().ok);
            }
        }
    }
    // The slow one got a prefix, then 4008.
    let mut last_seen = 0;
    let code = loop {
        match within(slow.next()).await {
            Some(Ok(WsMessage::Text(text))) => {
                if let Ok(ServerFrame::Message(m)) = serde_json::from_str::<ServerFrame>(&text) {
                    assert_eq!(m.seq, last_seen + 1, "never skipped silently");
                    last_seen = m.seq;
                }
            }
            Some(Ok(WsMessage::Close(frame))) => break frame.map_or(1005, |f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            other => panic!("expected frames then a close, got {other:?} after seq {last_seen}"),
        }
    };
    assert_eq!(code, 4008);
    // The fast member is not held back: it gets everything, in order.
    assert_eq!(within(fast_reader).await.unwrap(), total);
    assert!(last_seen < total, "the slow member fell behind");
    let mut back = server.json("slow").await;
    let reply = within(back.join(&flood, Some(last_seen))).await.unwrap();
    let mut recovered: Vec<u64> = reply.messages.iter().map(|m| m.seq).collect();
    let mut after = recovered.last().copied().unwrap_or(last_seen);
    while after < total {
        let page = within(back.history(HistoryRequest {
            room: flood.clone(),
            before: Some(reply.seq + 1),
            after: Some(after),
            limit: Some(200),
            thread: None,
        }))
        .await
        .unwrap();
        recovered.extend(page.messages.iter().map(|m| m.seq));
        after = *recovered.last().unwrap();
    }
    assert_eq!(recovered, (last_seen + 1..=total).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_member_that_pauses_reading_gets_the_whole_burst_including_its_tail() {
    // While a member's socket is full, its writes wait; the frames queued meanwhile
    // (up to the very last one) must still go out once it reads again, without any
    // later message to wake its session.
    let server = spawn().await;
    let mut paused = server.plain("/ws/chat/burst").await;
    let mut sender = server.plain("/ws/chat/burst").await;
    let text = "y".repeat(3_000);
    let total = 1_500;
    let sending = tokio::spawn(async move {
        for _ in 0..total {
            sender.send(&text).await;
        }
        // The sender reads its own copies so that it never becomes the slow one.
        for _ in 0..total {
            sender.recv().await;
        }
    });
    // The paused member reads only once the sender has its own copy of the last
    // message: by then the whole burst is queued for the paused member too.
    within(sending).await.unwrap();
    for i in 0..total {
        let frame = paused.recv().await;
        assert!(frame.starts_with("Message reçu : yyy"), "frame {i}: {}", &frame[..40.min(frame.len())]);
    }
}
