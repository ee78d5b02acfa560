//! Rooms of any size: the join reply's first 100 members and `member_count`, `op:
//! members` paging through the rest, `occupancy` events instead of per-user presence
//! (and no typing) above `--presence-events-max-members`, and the plain-text notice.

use bavard_client::Connection;
use bavard_protocol::{
    plain, ErrorCode, MembersRequest, OccupancyEvent, PresenceEvent, Request, RequestId, ServerFrame, User,
    JOIN_REPLY_MEMBERS,
};

use crate::helpers::*;
use crate::json::{raw_request, send};

fn names(users: &[User]) -> Vec<String> {
    users.iter().map(|u| u.name.clone()).collect()
}

fn page(room_name: &str, cursor: Option<String>, limit: Option<u32>) -> MembersRequest {
    MembersRequest { room: room(room_name), cursor, limit }
}

/// Every page of `room_name`'s members from the first, `limit` at a time: the names in
/// order, and the `member_count` of each page.
async fn all_pages(client: &mut Connection, room_name: &str, limit: Option<u32>) -> (Vec<String>, Vec<usize>) {
    let (mut listed, mut counts, mut cursor) = (Vec::new(), Vec::new(), None);
    loop {
        let reply = within(client.members(page(room_name, cursor, limit))).await.unwrap();
        assert_eq!(reply.room, room(room_name));
        listed.extend(names(&reply.members));
        counts.push(reply.member_count);
        match reply.cursor {
            Some(next) => cursor = Some(next),
            None => return (listed, counts),
        }
    }
}

/// The next event, which must be a `presence` event.
async fn next_presence(client: &mut Connection) -> PresenceEvent {
    match within(client.next_event()).await.unwrap() {
        ServerFrame::Presence(presence) => presence,
        other => panic!("expected presence, got {other:?}"),
    }
}

/// The next event, which must be an `occupancy` event.
async fn next_occupancy(client: &mut Connection) -> OccupancyEvent {
    match within(client.next_event()).await.unwrap() {
        ServerFrame::Occupancy(occupancy) => occupancy,
        other => panic!("expected occupancy, got {other:?}"),
    }
}

/// The next event, which must be the `message` with `text`.
async fn next_message_is(client: &mut Connection, text: &str) {
    match within(client.next_event()).await.unwrap() {
        ServerFrame::Message(message) => assert_eq!(message.text, text),
        other => panic!("expected the message {text:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn a_join_reply_lists_the_first_100_members_with_the_count_and_op_members_pages_through_the_rest() {
    let server = spawn().await;
    let crowd = room("crowd");
    let expected: Vec<String> = (0..150).map(|i| format!("c{i:03}")).collect();
    let mut clients = Vec::new();
    for (i, name) in expected.iter().enumerate() {
        let mut client = server.json(name).await;
        let reply = within(client.join(&crowd, None)).await.unwrap();
        assert_eq!(reply.member_count, i + 1, "{name}: the joiner counts");
        let listed = (i + 1).min(JOIN_REPLY_MEMBERS);
        assert_eq!(names(&reply.members), expected[..listed], "{name}: the first users, in the order they came");
        assert_eq!(reply.members_cursor.is_some(), i + 1 > JOIN_REPLY_MEMBERS, "{name}: a cursor only when more");
        clients.push((client, reply.members_cursor));
    }

    // The last joiner pages from its join reply's cursor: the 50 after the first 100.
    let (last, cursor) = clients.last_mut().unwrap();
    let rest = within(last.members(page("crowd", cursor.clone(), None))).await.unwrap();
    assert_eq!((rest.member_count, rest.cursor.as_deref()), (150, None));
    assert_eq!(names(&rest.members), expected[JOIN_REPLY_MEMBERS..]);

    // Anyone may list the room, without joining it, in pages of any size.
    let mut outsider = server.json("outsider").await;
    let (listed, counts) = all_pages(&mut outsider, "crowd", Some(40)).await;
    assert_eq!((listed, counts), (expected.clone(), vec![150; 4]));
    let (listed, counts) = all_pages(&mut outsider, "crowd", None).await;
    assert_eq!((listed.len(), counts), (150, vec![150, 150]), "100 a page by default");

    // Users who leave while a client pages are skipped; nobody is listed twice.
    let first = within(outsider.members(page("crowd", None, Some(30)))).await.unwrap();
    assert_eq!(names(&first.members), expected[..30]);
    for gone in [10, 70] {
        let reply = within(clients[gone].0.request(Request::Leave { room: crowd.clone() })).await.unwrap();
        assert!(reply.ok, "{reply:?}");
    }
    let mut listed = names(&first.members);
    let mut cursor = first.cursor;
    while let Some(after) = cursor.take() {
        let next = within(outsider.members(page("crowd", Some(after), Some(30)))).await.unwrap();
        assert_eq!(next.member_count, 148);
        listed.extend(names(&next.members));
        cursor = next.cursor;
    }
    let still_here: Vec<String> = expected.iter().filter(|name| *name != "c070").cloned().collect();
    assert_eq!(listed, still_here, "c010 was on the page already read; c070 left before its page");

    // A room nobody is in lists nobody.
    let empty = within(outsider.members(page("nobody-here", None, None))).await.unwrap();
    assert_eq!((empty.member_count, empty.members.len(), empty.cursor), (0, 0, None));
}

#[tokio::test]
async fn a_members_request_with_a_cursor_the_server_did_not_hand_out_gets_bad_request_with_its_id() {
    let server = spawn().await;
    let mut client = server.json("pager").await;
    within(client.join(&room("r"), None)).await.unwrap();
    let bad = [
        (r#"{"op":"members","id":"m-1","room":"r","cursor":"page-2"}"#, RequestId::Str("m-1".into()), "page-2"),
        (r#"{"op":"members","id":2,"room":"r","cursor":""}"#, RequestId::Int(2), "cursor"),
        (r#"{"op":"members","id":3,"room":"r","limit":0}"#, RequestId::Int(3), "limit"),
        (r#"{"op":"members","id":4,"room":"r","limit":1001}"#, RequestId::Int(4), "limit"),
    ];
    for (frame, id, mentioned) in bad {
        match raw_request(&mut client, frame).await {
            ServerFrame::Reply(reply) => {
                assert_eq!((&reply.id, reply.ok), (&id, false), "{frame}");
                let error = reply.error.unwrap();
                assert_eq!(error.code, ErrorCode::BadRequest, "{frame}");
                assert!(error.message.contains(mentioned), "{frame}: {}", error.message);
            }
            other => panic!("{frame}: {other:?}"),
        }
    }
    // Without an id, the failure is an error event; the connection stays usable.
    match raw_request(&mut client, r#"{"op":"members","room":"r","cursor":"x"}"#).await {
        ServerFrame::Error { error } => assert_eq!(error.code, ErrorCode::BadRequest),
        other => panic!("{other:?}"),
    }
    let reply = within(client.members(page("r", None, Some(1000)))).await.unwrap();
    assert_eq!((names(&reply.members), reply.member_count), (vec!["pager".to_owned()], 1));
}

#[tokio::test]
async fn above_the_presence_limit_occupancy_replaces_presence_and_typing_and_below_it_presence_returns() {
    let server = spawn_with(|c| c.presence_events_max_members = 3).await;
    let hall = room("hall");
    let mut watcher = server.json("watcher").await;
    within(watcher.join(&hall, None)).await.unwrap();
    let mut others = Vec::new();
    for name in ["a", "b"] {
        let mut other = server.json(name).await;
        within(other.join(&hall, None)).await.unwrap();
        let presence = next_presence(&mut watcher).await;
        assert_eq!((names(&presence.joined), presence.member_count), (vec![name.to_owned()], Some(others.len() + 2)));
        others.push(other);
    }

    // At the limit (3 online), typing still reaches the others.
    assert!(within(others[1].request(Request::Typing { room: hall.clone() })).await.unwrap().ok);
    match within(watcher.next_event()).await.unwrap() {
        ServerFrame::Typing(typing) => assert_eq!(typing.user.name, "b"),
        other => panic!("{other:?}"),
    }

    // A fourth user crosses the limit: no presence event, the count within a second.
    let mut c = server.json("c").await;
    let reply = within(c.join(&hall, None)).await.unwrap();
    assert_eq!((reply.member_count, reply.members.len(), reply.members_cursor), (4, 4, None));
    assert_eq!(next_occupancy(&mut watcher).await, OccupancyEvent { room: hall.clone(), member_count: 4 });
    assert_eq!(next_occupancy(&mut c).await.member_count, 4, "every JSON member gets the count");

    // Above the limit, typing is accepted but not delivered: the later message comes first.
    assert!(within(others[0].request(Request::Typing { room: hall.clone() })).await.unwrap().ok);
    assert!(within(others[0].request(send("hall", "after typing"))).await.unwrap().ok);
    next_message_is(&mut watcher, "after typing").await;

    // One more, then one less: each count is announced, with no presence in between.
    let mut d = server.json("d").await;
    within(d.join(&hall, None)).await.unwrap();
    assert_eq!(next_occupancy(&mut watcher).await.member_count, 5);
    assert!(within(d.request(Request::Leave { room: hall.clone() })).await.unwrap().ok);
    assert_eq!(next_occupancy(&mut watcher).await.member_count, 4);

    // Back at the limit: presence events again, each with the count.
    assert!(within(c.request(Request::Leave { room: hall.clone() })).await.unwrap().ok);
    let presence = next_presence(&mut watcher).await;
    assert_eq!((names(&presence.left), presence.member_count), (vec!["c".to_owned()], Some(3)));
    let mut e = server.json("e").await;
    within(e.join(&hall, None)).await.unwrap();
    assert_eq!(next_occupancy(&mut watcher).await.member_count, 4);
    drop(e);
    let presence = next_presence(&mut watcher).await;
    assert_eq!((names(&presence.left), presence.member_count), (vec!["e".to_owned()], Some(3)));
    // And typing too.
    assert!(within(others[0].request(Request::Typing { room: hall.clone() })).await.unwrap().ok);
    match within(watcher.next_event()).await.unwrap() {
        ServerFrame::Typing(typing) => assert_eq!(typing.user.name, "a"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_plain_text_disconnect_reaches_every_plain_text_member_of_a_room_with_json_members() {
    // Under the presence limit, and far above it (7 users online, limit 2).
    for limit in [1000, 2] {
        let server = spawn_with(|c| c.presence_events_max_members = limit).await;
        let mixed = room("mixed");
        let mut json = Vec::new();
        for name in ["j1", "j2"] {
            let mut client = server.json(name).await;
            within(client.join(&mixed, None)).await.unwrap();
            json.push(client);
        }
        // Each plain-text client's own echo shows it is in the room; each also receives
        // the echoes of those who came after it.
        let mut plain = Vec::new();
        for i in 0..5 {
            let mut client = server.plain(&format!("/ws/chat/mixed?name=p{i}")).await;
            client.send(&format!("p{i} here")).await;
            assert_eq!(client.recv().await, format!("Message reçu : p{i} here"));
            plain.push(client);
        }
        let mut gone = plain.remove(0);
        within(gone.socket.close(None)).await.unwrap();
        for (i, client) in plain.iter_mut().enumerate() {
            let i = i + 1;
            for later in i + 1..5 {
                assert_eq!(client.recv().await, format!("Message reçu : p{later} here"), "limit {limit}, p{i}");
            }
            assert_eq!(client.recv().await, plain::DISCONNECTED, "limit {limit}, p{i}");
        }
        // JSON members get no plain-text frame: only events, up to a later message.
        assert!(within(json[1].request(send("mixed", "marker"))).await.unwrap().ok);
        for client in &mut json {
            loop {
                match within(client.next_event()).await.unwrap() {
                    ServerFrame::Message(message) if message.text == "marker" => break,
                    ServerFrame::Message(_) | ServerFrame::Presence(_) | ServerFrame::Occupancy(_) => continue,
                    other => panic!("limit {limit}: {other:?}"),
                }
            }
        }
        server.stop().await;
    }
}
