//! The hub against a real store: two hubs on one in-process broker behave as two
//! nodes of a cluster.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use bavard_protocol::{RoomName, User};

use super::*;
use crate::{broker::InProcessBroker, store::SqliteStore};

async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), future).await.expect("timed out")
}

/// A node: a hub over its own SQLite store, its dispatcher running, on `broker`.
fn node(name: &str, broker: &Arc<InProcessBroker>, dir: &std::path::Path) -> Arc<Hub> {
    let (commits, stream) = commit_stream(64);
    let store = SqliteStore::open(&dir.join(format!("{name}.db")), commits, Arc::default()).unwrap();
    let settings = HubSettings {
        recovery_limit: 100,
        typing_interval: Duration::from_secs(2),
        presence_max_members: 1000,
        node: name.into(),
        user_rate_per_second: 0.0,
        user_rate_burst: 1,
        presence_lease: Duration::from_secs(15),
        max_text_chars: 4000,
        read_receipts_max_members: 100,
    };
    let hub = Arc::new(Hub::new(Arc::new(store), Arc::clone(broker) as Arc<dyn Broker>, settings, Arc::default()));
    tokio::spawn({
        let hub = Arc::clone(&hub);
        async move { hub.run_dispatcher(stream).await }
    });
    hub
}

fn member(hub: &Hub, name: &str) -> Arc<Subscriber> {
    let user = User { id: format!("u_{name}"), name: name.to_owned() };
    Arc::new(Subscriber {
        session: hub.next_session_id(),
        user,
        standing: crate::auth::Standing::Guest,
        protocol: Protocol::Json,
        outbox: Outbox::new(64, 1 << 20),
        quota: None,
    })
}

/// A reader with no role: public rooms are open to it.
const NOBODY: crate::auth::Who<'static> = crate::auth::Who { id: "u_nobody", admin: false };

fn post(room: &RoomName, text: &str) -> Post {
    Post { room: room.clone(), text: text.to_owned(), key: None, reply_to: None, stream: false }
}

/// The `(seq, text)` of every `message` event in the member's outbox, waiting until
/// there are `count` of them.
async fn messages(member: &Subscriber, count: usize) -> Vec<(u64, String)> {
    let events = events_of(member, "message", count).await;
    events.iter().map(|event| (event["seq"].as_u64().unwrap(), event["text"].as_str().unwrap().to_owned())).collect()
}

#[tokio::test]
async fn two_hubs_on_one_broker_deliver_each_others_commits_once_without_storing_them() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Arc::new(InProcessBroker::new(64));
    let (a, b) = (node("a", &broker, dir.path()), node("b", &broker, dir.path()));
    let room = RoomName::new("lobby").unwrap();
    let (alice, bob) = (member(&a, "alice"), member(&b, "bob"));
    within(a.join(&alice, &room, None, None, 0)).await.unwrap();
    within(b.join(&bob, &room, None, None, 0)).await.unwrap();

    for text in ["one", "two"] {
        let posted = within(within(a.publish(&alice, post(&room, text))).await.unwrap()).await.unwrap();
        assert!(!posted.duplicate);
    }
    let expected = vec![(1, "one".to_owned()), (2, "two".to_owned())];
    assert_eq!(messages(&bob, 2).await, expected, "the other node's member gets each message once, in order");

    // A marker published after the broker has echoed a's commits back to a: had the
    // echo been delivered again, it would come before the marker.
    within(within(a.publish(&alice, post(&room, "marker"))).await.unwrap()).await.unwrap();
    let mut seen = messages(&alice, 3).await;
    assert_eq!(seen.pop(), Some((3, "marker".to_owned())));
    assert_eq!(seen, expected, "the publishing node's member gets each message once");

    let stored_on_b = within(b.history(NOBODY, &room, None, None, 10)).await.unwrap();
    assert!(stored_on_b.messages.is_empty(), "b fans a's messages out without storing them");
    let stored_on_a = within(a.history(NOBODY, &room, None, None, 10)).await.unwrap();
    assert_eq!(stored_on_a.messages.len(), 3);
}

#[tokio::test]
async fn publishing_needs_membership_of_the_room() {
    let dir = tempfile::tempdir().unwrap();
    let hub = node("solo", &Arc::new(InProcessBroker::new(4)), dir.path());
    let room = RoomName::new("lobby").unwrap();
    let stranger = member(&hub, "stranger");
    match within(hub.publish(&stranger, post(&room, "hello"))).await {
        Err(HubError::NotMember(name)) => assert_eq!(name, room),
        Err(other) => panic!("expected NotMember, got {other}"),
        Ok(_) => panic!("a non-member published"),
    }
}

#[tokio::test]
async fn a_join_since_the_largest_seq_recovers_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let hub = node("solo", &Arc::new(InProcessBroker::new(4)), dir.path());
    let room = RoomName::new("lobby").unwrap();
    let alice = member(&hub, "alice");
    within(hub.join(&alice, &room, None, None, 0)).await.unwrap();
    within(within(hub.publish(&alice, post(&room, "hello"))).await.unwrap()).await.unwrap();
    // Delivered, so the room's seq is 1 when bob joins.
    assert_eq!(messages(&alice, 1).await, vec![(1, "hello".to_owned())]);
    let bob = member(&hub, "bob");
    let reply = within(hub.join(&bob, &room, Some(u64::MAX), None, 10)).await.unwrap();
    assert!(reply.messages.is_empty(), "{:?}", reply.messages);
    assert_eq!(reply.seq, 1);
}

#[test]
fn members_cursors_are_the_numbers_the_hub_writes() {
    assert_eq!(parse_cursor("0"), Some(0));
    assert_eq!(parse_cursor("42"), Some(42));
    assert_eq!(parse_cursor("9999999999999999999"), Some(9_999_999_999_999_999_999));
    for refused in ["", "+1", "-1", "007", " 1", "1.0", "10000000000000000000", "x"] {
        assert_eq!(parse_cursor(refused), None, "{refused:?}");
    }
}

/// The events of type `kind` in the member's outbox, waiting until there are `count`.
async fn events_of(member: &Subscriber, kind: &str, count: usize) -> Vec<serde_json::Value> {
    let mut seen = Vec::new();
    within(async {
        while seen.len() < count {
            let mut frames = VecDeque::new();
            if let Taken::Frames = member.outbox.take(&mut frames) {
                for frame in frames {
                    let event: serde_json::Value = serde_json::from_str(frame.as_str()).unwrap();
                    if event["type"] == kind {
                        seen.push(event);
                    }
                }
            } else {
                member.outbox.changed().await;
            }
        }
    })
    .await;
    seen
}

#[tokio::test]
async fn changes_to_messages_reach_the_members_on_other_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Arc::new(InProcessBroker::new(64));
    let (a, b) = (node("a", &broker, dir.path()), node("b", &broker, dir.path()));
    let room = RoomName::new("lobby").unwrap();
    let (alice, bob) = (member(&a, "alice"), member(&b, "bob"));
    within(a.join(&alice, &room, None, None, 0)).await.unwrap();
    within(b.join(&bob, &room, None, None, 0)).await.unwrap();
    let posted = within(within(a.publish(&alice, post(&room, "helo"))).await.unwrap()).await.unwrap();
    let actor = crate::auth::Actor { user: alice.user.clone(), standing: crate::auth::Standing::Signed };
    within(a.change_message(&actor, &room, posted.seq, Change::Edit("hello".into()))).await.unwrap();
    within(a.change_message(&actor, &room, posted.seq, Change::React("👍".into(), true))).await.unwrap();
    let edited = events_of(&bob, "edited", 1).await;
    assert_eq!((&edited[0]["seq"], &edited[0]["text"]), (&serde_json::json!(posted.seq), &serde_json::json!("hello")));
    let reaction = events_of(&bob, "reaction", 1).await;
    assert_eq!((&reaction[0]["emoji"], &reaction[0]["count"]), (&serde_json::json!("👍"), &serde_json::json!(1)));
    // A read position told only to the reader's own connections stays on them.
    let bob_phone = member(&b, "bob");
    let bob_phone = Arc::new(Subscriber { user: bob.user.clone(), ..Arc::try_unwrap(bob_phone).ok().unwrap() });
    within(b.join(&bob_phone, &room, None, None, 0)).await.unwrap();
    b.tell_room(
        bavard_protocol::ServerFrame::Read(bavard_protocol::ReadEvent {
            room: room.clone(),
            user: bob.user.clone(),
            seq: 1,
        }),
        Some(bob.user.id.clone()),
    );
    assert_eq!(events_of(&bob_phone, "read", 1).await[0]["seq"], 1);
    // An event for everyone, told after it on the same node, reaches alice after it
    // would have: she must have seen no `read` by then.
    b.tell_room(
        bavard_protocol::ServerFrame::Deleted(bavard_protocol::DeletedEvent { room: room.clone(), seq: 1, rev: 9 }),
        None,
    );
    let mut seen = Vec::new();
    within(async {
        while !seen.iter().any(|e: &serde_json::Value| e["type"] == "deleted") {
            let mut frames = VecDeque::new();
            match alice.outbox.take(&mut frames) {
                Taken::Frames => seen.extend(frames.iter().map(|f| serde_json::from_str(f.as_str()).unwrap())),
                _ => alice.outbox.changed().await,
            }
        }
    })
    .await;
    assert!(seen.iter().all(|event| event["type"] != "read"), "{seen:?}");
}
