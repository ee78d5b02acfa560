//! The chat features over the JSON protocol, on the real server: edits, deletes,
//! reactions, threads, read positions and unread counts across devices, direct rooms,
//! search, streamed messages, and their recovery after a restart.

use std::time::Duration;

use serde_json::{json, Value};

use crate::{helpers::*, jwt::*};

fn send(room: &str, text: &str) -> Value {
    json!({"op": "send", "room": room, "text": text})
}

/// A signed-in user's connection, joined to `room`.
async fn joined(server: &TestServer, user: &str, room: &str) -> JsonClient {
    let mut client = server.json_token(&token(user)).await;
    client.ok(json!({"op": "join", "room": room})).await;
    client
}

/// The room's messages by seq, as `history` returns them to `client`.
async fn history(client: &mut JsonClient, room: &str) -> Vec<Value> {
    let reply = client.ok(json!({"op": "history", "room": room})).await;
    reply["messages"].as_array().unwrap().clone()
}

fn seq_of(reply: &Value) -> u64 {
    reply["seq"].as_u64().unwrap_or_else(|| panic!("no seq: {reply}"))
}

#[tokio::test]
async fn an_author_edits_its_message_members_see_it_and_history_returns_the_new_text() {
    let server = spawn_with(with_secret).await;
    let mut alice = joined(&server, "alice", "edits").await;
    let mut bob = joined(&server, "bob", "edits").await;
    let seq = seq_of(&alice.ok(send("edits", "helo")).await);
    bob.next_event_of("message").await;

    let reply = alice.ok(json!({"op": "edit", "room": "edits", "seq": seq, "text": "hello"})).await;
    let rev = reply["rev"].as_u64().unwrap();
    assert!(rev >= 1, "{reply}");
    let event = bob.next_event_of("edited").await;
    assert_eq!((&event["seq"], &event["text"], &event["rev"]), (&json!(seq), &json!("hello"), &json!(rev)), "{event}");
    assert!(event["edited_at"].is_string(), "{event}");

    let messages = history(&mut bob, "edits").await;
    assert_eq!(messages[0]["text"], "hello");
    assert_eq!(messages[0]["seq"], seq);
    assert!(messages[0]["edited_at"].is_string(), "{}", messages[0]);

    // Only the author rewrites; a missing message is not found.
    assert_eq!(bob.refused(json!({"op": "edit", "room": "edits", "seq": seq, "text": "mine"})).await, "forbidden");
    assert_eq!(alice.refused(json!({"op": "edit", "room": "edits", "seq": 99, "text": "x"})).await, "not_found");
    assert_eq!(alice.refused(json!({"op": "edit", "room": "edits", "seq": 0, "text": "x"})).await, "bad_request");
    assert_eq!(alice.refused(json!({"op": "edit", "room": "edits", "seq": seq, "text": ""})).await, "bad_request");
}

#[tokio::test]
async fn a_delete_leaves_a_tombstone_and_moderators_may_delete_others_messages() {
    let server = spawn_with(with_secret).await;
    let mut olivia = crate::permissions::owner_of(&server, "olivia", "tombs", "public").await;
    let mut bob = joined(&server, "bob", "tombs").await;
    let first = seq_of(&bob.ok(send("tombs", "one")).await);
    let second = seq_of(&bob.ok(send("tombs", "two")).await);
    let mut carol = joined(&server, "carol", "tombs").await;

    assert_eq!(carol.refused(json!({"op": "delete", "room": "tombs", "seq": first})).await, "forbidden");
    bob.ok(json!({"op": "delete", "room": "tombs", "seq": first})).await;
    let event = carol.next_event_of("deleted").await;
    assert_eq!(event["seq"], first, "{event}");
    // The owner moderates: it deletes bob's other message.
    olivia.ok(json!({"op": "delete", "room": "tombs", "seq": second})).await;
    assert_eq!(carol.next_event_of("deleted").await["seq"], second);

    let messages = history(&mut carol, "tombs").await;
    let seqs: Vec<u64> = messages.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [first, second], "seqs stay gap-free");
    for message in &messages {
        assert_eq!((&message["deleted"], &message["text"]), (&json!(true), &json!("")), "{message}");
    }
    // A deleted message takes no edit; deleting again changes nothing.
    assert_eq!(bob.refused(json!({"op": "edit", "room": "tombs", "seq": first, "text": "back"})).await, "conflict");
    bob.ok(json!({"op": "delete", "room": "tombs", "seq": first})).await;
}

#[tokio::test]
async fn reactions_count_per_emoji_say_whether_i_reacted_and_are_bounded() {
    let server = spawn_with(with_secret).await;
    let mut alice = joined(&server, "alice", "reacts").await;
    let mut bob = joined(&server, "bob", "reacts").await;
    let seq = seq_of(&alice.ok(send("reacts", "vote")).await);

    let react = |emoji: &str| json!({"op": "react", "room": "reacts", "seq": seq, "emoji": emoji});
    alice.ok(react("👍")).await;
    let event = bob.next_event_of("reaction").await;
    assert_eq!((&event["emoji"], &event["count"], &event["added"]), (&json!("👍"), &json!(1), &json!(true)), "{event}");
    assert_eq!(event["user"]["id"], "alice");
    bob.ok(react("👍")).await;
    bob.ok(react("🎉")).await;
    // A repeated reaction changes nothing.
    let again = bob.ok(react("👍")).await;
    let rev = again["rev"].as_u64().unwrap();

    let messages = history(&mut alice, "reacts").await;
    assert_eq!(
        messages[0]["reactions"],
        json!([{"emoji": "👍", "count": 2, "me": true}, {"emoji": "🎉", "count": 1}]),
        "{}",
        messages[0]
    );
    assert_eq!(messages[0]["rev"], rev);

    bob.ok(json!({"op": "unreact", "room": "reacts", "seq": seq, "emoji": "👍"})).await;
    let event = alice.next_event_of("reaction").await;
    let event = if event["emoji"] == "👍" && event["added"] == false {
        event
    } else {
        // Skip bob's earlier reactions still queued.
        loop {
            let next = alice.next_event_of("reaction").await;
            if next["added"] == false {
                break next;
            }
        }
    };
    assert_eq!((&event["count"], &event["user"]["id"]), (&json!(1), &json!("bob")), "{event}");

    assert_eq!(alice.refused(react("a b")).await, "bad_request");
    for i in 0..18 {
        alice.ok(react(&format!("e{i}"))).await;
    }
    assert_eq!(alice.refused(react("one-too-many")).await, "forbidden");
    assert_eq!(alice.refused(json!({"op": "react", "room": "reacts", "seq": 42, "emoji": "x"})).await, "not_found");
}

#[tokio::test]
async fn replies_make_a_thread_that_history_pages_and_its_root_counts() {
    let server = spawn_with(with_secret).await;
    let mut alice = joined(&server, "alice", "threads").await;
    let root = seq_of(&alice.ok(send("threads", "question")).await);
    alice.ok(send("threads", "unrelated")).await;
    let mut replies = Vec::new();
    for text in ["a1", "a2", "a3"] {
        let reply = alice.ok(json!({"op": "send", "room": "threads", "text": text, "reply_to": root})).await;
        replies.push(seq_of(&reply));
    }
    let thread = alice.ok(json!({"op": "history", "room": "threads", "thread": root})).await;
    let texts: Vec<&str> = thread["messages"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["a1", "a2", "a3"], "{thread}");
    let page = alice.ok(json!({"op": "history", "room": "threads", "thread": root, "limit": 2})).await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 2);
    assert_eq!(page["has_more"], true);
    let rest = alice.ok(json!({"op": "history", "room": "threads", "thread": root, "after": replies[1]})).await;
    assert_eq!(rest["messages"][0]["text"], "a3", "{rest}");

    let messages = history(&mut alice, "threads").await;
    assert_eq!(messages[0]["reply_count"], 3, "{}", messages[0]);
    assert!(messages[0]["last_reply_at"].is_string());
    assert!(messages[1].get("reply_count").is_none());
    let missing = json!({"op": "send", "room": "threads", "text": "?", "reply_to": 999});
    assert_eq!(alice.refused(missing).await, "not_found");
}

#[tokio::test]
async fn unread_counts_follow_the_read_position_across_two_devices_of_one_user() {
    let server = spawn_with(with_secret).await;
    let mut bob = joined(&server, "bob", "reads").await;
    let mut phone = joined(&server, "alice", "reads").await;
    let mut laptop = joined(&server, "alice", "reads").await;
    let mut last = 0;
    for text in ["one", "two", "three"] {
        last = seq_of(&bob.ok(send("reads", text)).await);
    }
    phone.ok(send("reads", "mine")).await;
    let reply = phone.ok(json!({"op": "read", "room": "reads", "seq": last - 1})).await;
    assert_eq!((&reply["seq"], &reply["unread"]), (&json!(last - 1), &json!(1)), "{reply}");
    let event = laptop.next_event_of("read").await;
    assert_eq!((&event["user"]["id"], &event["seq"]), (&json!("alice"), &json!(last - 1)), "{event}");
    // bob, a member of this small room, sees it too.
    assert_eq!(bob.next_event_of("read").await["user"]["id"], "alice");

    // A third device learns the count on join; a position never moves back.
    let mut tablet = server.json_token(&token("alice")).await;
    let join = tablet.ok(json!({"op": "join", "room": "reads"})).await;
    assert_eq!(join["unread"], 1, "alice's own message is not unread: {join}");
    let back = tablet.ok(json!({"op": "read", "room": "reads", "seq": 1})).await;
    assert_eq!(back["seq"], last - 1);
    // Past the end counts as the end.
    let end = tablet.ok(json!({"op": "read", "room": "reads", "seq": 1000})).await;
    assert_eq!((&end["seq"], &end["unread"]), (&json!(last + 1), &json!(0)), "{end}");
    // A read that moved nothing told nobody: bob's next read event is the move.
    assert_eq!(bob.next_event_of("read").await["seq"], last + 1);
    // Deleted messages of others are not unread.
    let fresh = seq_of(&bob.ok(send("reads", "oops")).await);
    bob.ok(json!({"op": "delete", "room": "reads", "seq": fresh})).await;
    let join = server.json_token(&token("alice")).await.ok(json!({"op": "join", "room": "reads"})).await;
    assert_eq!(join["unread"], 0, "{join}");
}

#[tokio::test]
async fn a_direct_room_is_the_same_for_both_users_and_closed_to_everyone_else() {
    let server = spawn_with(with_secret).await;
    let mut alice = server.json_token(&token("alice")).await;
    let mut bob = server.json_token(&token("bob")).await;
    let room = alice.ok(json!({"op": "dm", "user": "bob"})).await["room"].clone();
    assert!(room.as_str().unwrap().starts_with("dm-"), "{room}");
    assert_eq!(bob.ok(json!({"op": "dm", "user": "alice"})).await["room"], room);
    alice.ok(json!({"op": "join", "room": room})).await;
    bob.ok(json!({"op": "join", "room": room})).await;
    alice.ok(json!({"op": "send", "room": room, "text": "psst"})).await;
    assert_eq!(bob.next_message_text().await, "psst");

    let mut carol = server.json_token(&token("carol")).await;
    assert_eq!(carol.refused(json!({"op": "join", "room": room})).await, "forbidden");
    assert_eq!(carol.refused(json!({"op": "history", "room": room})).await, "forbidden");
    let mut admin = server.json_token(&admin_token("root")).await;
    assert_eq!(admin.refused(json!({"op": "join", "room": room})).await, "forbidden");
    let add = json!({"op": "add_member", "room": room, "user": "carol"});
    assert_eq!(alice.refused(add).await, "forbidden");
    // Nobody takes a direct room's name first, and guests have none.
    assert_eq!(carol.refused(json!({"op": "create", "room": "dm-0123"})).await, "forbidden");
    assert_eq!(carol.refused(json!({"op": "join", "room": "dm-abc"})).await, "forbidden");
    let mut guest = server.json_guest("gus").await;
    assert_eq!(guest.refused(json!({"op": "dm", "user": "alice"})).await, "forbidden");
    assert_eq!(alice.refused(json!({"op": "dm", "user": "alice"})).await, "bad_request");

    // The room directory lists a direct room to its two users only (with their unread).
    let listed = |body: Value| body["rooms"].as_array().unwrap().iter().find(|r| r["room"] == room).cloned();
    let url = server.http("/api/rooms");
    let for_bob = listed(rest("GET", &url, Some(&token("bob")), None).await.json());
    assert_eq!(for_bob.expect("bob's directory lists his direct room")["unread"], 1);
    assert!(listed(rest("GET", &url, Some(&token("alice")), None).await.json()).is_some());
    for caller in [None, Some(token("carol")), Some(admin_token("root"))] {
        let body = rest("GET", &url, caller.as_deref(), None).await.json();
        assert!(listed(body.clone()).is_none(), "{caller:?} sees the direct room of alice and bob: {body}");
    }
}

#[tokio::test]
async fn search_ranks_matches_leaves_out_deleted_ones_and_respects_the_room_rules() {
    let server = spawn_with(with_secret).await;
    let mut alice = joined(&server, "alice", "find").await;
    for text in [
        "the weather is nice",
        "bavard bavard bavard: the chat server",
        "nothing to see",
        "I like bavard",
        "a bavardage",
    ] {
        alice.ok(send("find", text)).await;
    }
    let hidden = seq_of(&alice.ok(send("find", "bavard secret")).await);
    alice.ok(json!({"op": "delete", "room": "find", "seq": hidden})).await;
    alice.ok(json!({"op": "join", "room": "elsewhere"})).await;
    alice.ok(send("elsewhere", "bavard in another room")).await;

    // A search sees every acknowledged message at once, archived or not.
    let found = alice.ok(json!({"op": "search", "room": "find", "q": "bavard"})).await;
    let texts: Vec<&str> = found["messages"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts[0], "bavard bavard bavard: the chat server", "best first: {texts:?}");
    assert_eq!(texts.len(), 3, "prefix match, nothing deleted, nothing of another room: {texts:?}");
    assert!(texts.contains(&"a bavardage"));
    let page = alice.ok(json!({"op": "search", "room": "find", "q": "bavard", "limit": 1, "offset": 1})).await;
    assert_eq!((page["messages"].as_array().unwrap().len(), &page["has_more"]), (1, &json!(true)), "{page}");
    let both = alice.ok(json!({"op": "search", "room": "find", "q": "CHAT Server"})).await;
    assert_eq!(both["messages"].as_array().unwrap().len(), 1, "{both}");
    // An edit of an indexed message is searched by its new words only, at once.
    let weather = seq_of(&found_one(&mut alice, "weather").await);
    alice.ok(json!({"op": "edit", "room": "find", "seq": weather, "text": "the forecast is nice"})).await;
    assert_eq!(seq_of(&found_one(&mut alice, "forecast").await), weather);
    let old = alice.ok(json!({"op": "search", "room": "find", "q": "weather"})).await;
    assert_eq!(old["messages"], json!([]), "the old words are gone: {old}");
    let wordless = alice.ok(json!({"op": "search", "room": "find", "q": " ;; "})).await;
    assert_eq!(wordless["messages"], json!([]), "a query without words finds nothing: {wordless}");
    assert_eq!(alice.refused(json!({"op": "search", "room": "find", "q": ""})).await, "bad_request");

    let mut olivia = crate::permissions::owner_of(&server, "olivia", "vault", "private").await;
    olivia.ok(send("vault", "bavard")).await;
    assert_eq!(alice.refused(json!({"op": "search", "room": "vault", "q": "bavard"})).await, "forbidden");
}

/// The one message of room `find` that a search for `q` finds.
async fn found_one(client: &mut JsonClient, q: &str) -> Value {
    let reply = client.ok(json!({"op": "search", "room": "find", "q": q})).await;
    let messages = reply["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{reply}");
    messages[0].clone()
}

#[tokio::test]
async fn a_streamed_message_grows_by_appends_and_a_late_joiner_sees_the_text_so_far() {
    let server = spawn_with(with_secret).await;
    let mut bot = joined(&server, "bot", "llm").await;
    let mut early = joined(&server, "early", "llm").await;
    let sent = bot.ok(json!({"op": "send", "room": "llm", "text": "Once", "stream": true})).await;
    let seq = seq_of(&sent);
    let message = early.next_event_of("message").await;
    assert_eq!((&message["streaming"], &message["text"]), (&json!(true), &json!("Once")), "{message}");
    let append = |text: &str| json!({"op": "append", "room": "llm", "seq": seq, "text": text});
    bot.ok(append(" upon")).await;
    bot.ok(append(" a time")).await;
    let first = early.next_event_of("append").await;
    assert_eq!((&first["text"], &first["offset"]), (&json!(" upon"), &json!(4)), "{first}");
    assert_eq!(early.next_event_of("append").await["offset"], 9);

    let mut late = server.json_token(&token("late")).await;
    let join = late.ok(json!({"op": "join", "room": "llm"})).await;
    let so_far = &join["messages"][0];
    assert_eq!((&so_far["text"], &so_far["streaming"]), (&json!("Once upon a time"), &json!(true)), "{join}");

    assert_eq!(early.refused(append(" not mine")).await, "forbidden");
    assert_eq!(bot.refused(json!({"op": "edit", "room": "llm", "seq": seq, "text": "x"})).await, "conflict");
    bot.ok(json!({"op": "finish", "room": "llm", "seq": seq})).await;
    assert_eq!(late.next_event_of("finished").await["seq"], seq);
    assert_eq!(bot.refused(append(" more")).await, "conflict");
    let plain = seq_of(&bot.ok(send("llm", "plain")).await);
    assert_eq!(bot.refused(json!({"op": "append", "room": "llm", "seq": plain, "text": "x"})).await, "conflict");
    let done = history(&mut late, "llm").await;
    assert_eq!(done[0]["text"], "Once upon a time");
    assert!(done[0].get("streaming").is_none(), "{}", done[0]);
}

#[tokio::test]
async fn a_streamed_message_is_bounded_in_length() {
    let server = spawn_with(|config| {
        with_secret(config);
        config.max_text_chars = 10;
    })
    .await;
    let mut bot = joined(&server, "bot", "long").await;
    let seq = seq_of(&bot.ok(json!({"op": "send", "room": "long", "text": "0123456789", "stream": true})).await);
    for _ in 0..3 {
        bot.ok(json!({"op": "append", "room": "long", "seq": seq, "text": "0123456789"})).await;
    }
    let over = json!({"op": "append", "room": "long", "seq": seq, "text": "x"});
    assert_eq!(bot.refused(over).await, "too_large");
}

#[tokio::test]
async fn edits_deletes_and_reactions_are_recovered_in_order_after_a_restart() {
    let server = spawn_with(with_secret).await;
    let mut alice = joined(&server, "alice", "durable").await;
    let mut seqs = Vec::new();
    for text in ["a", "b", "c"] {
        seqs.push(seq_of(&alice.ok(send("durable", text)).await));
    }
    let seen = alice.ok(json!({"op": "join", "room": "durable"})).await;
    let since_rev = seen["rev"].as_u64().unwrap_or(0);
    alice.ok(json!({"op": "react", "room": "durable", "seq": seqs[2], "emoji": "👀"})).await;
    alice.ok(json!({"op": "edit", "room": "durable", "seq": seqs[0], "text": "A"})).await;
    alice.ok(json!({"op": "delete", "room": "durable", "seq": seqs[1]})).await;
    let server = server.restart_with(with_secret).await;

    let mut back = server.json_token(&token("alice")).await;
    let since = seqs[2];
    let join = back.ok(json!({"op": "join", "room": "durable", "since": since, "since_rev": since_rev})).await;
    assert_eq!(join["recovered"], true, "{join}");
    let changed = join["changed"].as_array().unwrap_or_else(|| panic!("no changed: {join}"));
    let order: Vec<u64> = changed.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(order, [seqs[2], seqs[0], seqs[1]], "in the order of their last change: {join}");
    assert_eq!(changed[0]["reactions"], json!([{"emoji": "👀", "count": 1, "me": true}]));
    assert_eq!(changed[1]["text"], "A");
    assert_eq!(changed[2]["deleted"], true);
    let revs: Vec<u64> = changed.iter().map(|m| m["rev"].as_u64().unwrap()).collect();
    assert!(revs.windows(2).all(|w| w[0] < w[1]), "{revs:?}");
    assert_eq!(join["rev"], revs[2]);
    // Up to date: nothing changed since the last rev.
    let again = back.ok(json!({"op": "join", "room": "durable", "since": since, "since_rev": revs[2]})).await;
    assert!(again.get("changed").is_none(), "{again}");
}

#[tokio::test]
async fn the_rest_api_edits_streams_reacts_searches_reads_and_opens_direct_rooms() {
    let server = spawn_with(with_secret).await;
    let mut alice = joined(&server, "alice", "api").await;
    let url = |path: &str| server.http(path);
    // A bot streams through the API key (loopback, no key configured: the admin).
    let body = json!({"text": "Thinking", "stream": true, "from": {"name": "bot"}});
    let sent = rest("POST", &url("/api/rooms/api/messages"), None, Some(&body)).await;
    assert_eq!(sent.status, 201, "{}", sent.body);
    let seq = sent.json()["seq"].as_u64().unwrap();
    let streamed = alice.next_event_of("message").await;
    assert_eq!((&streamed["streaming"], &streamed["from"]["id"]), (&json!(true), &json!("api:bot")), "{streamed}");
    let more = json!({"text": "... done", "from": {"name": "bot"}});
    let appended = rest("POST", &url(&format!("/api/rooms/api/messages/{seq}/append")), None, Some(&more)).await;
    assert_eq!(appended.status, 200, "{}", appended.body);
    assert_eq!(alice.next_event_of("append").await["text"], "... done");
    // Another author cannot finish it.
    let other = json!({"from": {"name": "intruder"}});
    let refused = rest("POST", &url(&format!("/api/rooms/api/messages/{seq}/finish")), None, Some(&other)).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    let bot = json!({"from": {"name": "bot"}});
    let finished = rest("POST", &url(&format!("/api/rooms/api/messages/{seq}/finish")), None, Some(&bot)).await;
    assert_eq!(finished.status, 200, "{}", finished.body);
    assert_eq!(alice.next_event_of("finished").await["seq"], seq);

    // A user edits and reacts with its token; a reply goes into a thread.
    let mine = seq_of(&alice.ok(send("api", "typo")).await);
    let alice_token = token("alice");
    let edited = rest(
        "PATCH",
        &url(&format!("/api/rooms/api/messages/{mine}")),
        Some(&alice_token),
        Some(&json!({"text": "fixed"})),
    )
    .await;
    assert_eq!(edited.status, 200, "{}", edited.body);
    let not_mine =
        rest("PATCH", &url(&format!("/api/rooms/api/messages/{seq}")), Some(&alice_token), Some(&json!({"text": "x"})))
            .await;
    assert_eq!(not_mine.status, 403, "{}", not_mine.body);
    let reacted =
        rest("PUT", &url(&format!("/api/rooms/api/messages/{mine}/reactions/%F0%9F%91%8D")), Some(&alice_token), None)
            .await;
    assert_eq!(reacted.status, 200, "{}", reacted.body);
    alice.ok(json!({"op": "send", "room": "api", "text": "in thread", "reply_to": mine})).await;
    let thread = rest("GET", &url(&format!("/api/rooms/api/messages?thread={mine}")), None, None).await;
    assert_eq!(thread.json()["messages"][0]["text"], "in thread", "{}", thread.body);
    let page = rest("GET", &url("/api/rooms/api/messages"), Some(&alice_token), None).await.json();
    let fixed = page["messages"].as_array().unwrap().iter().find(|m| m["seq"] == mine).unwrap().clone();
    assert_eq!(
        (&fixed["text"], &fixed["reactions"][0]["me"], &fixed["reply_count"]),
        (&json!("fixed"), &json!(true), &json!(1)),
        "{fixed}"
    );

    // Search, anonymously in a public room, once archived.
    let found = within(async {
        loop {
            let found = rest("GET", &url("/api/rooms/api/search?q=fix"), None, None).await;
            assert_eq!(found.status, 200, "{}", found.body);
            if found.json()["messages"].as_array().is_some_and(|m| !m.is_empty()) {
                break found.json();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(found["messages"][0]["seq"], mine);
    let bad = rest("GET", &url("/api/rooms/api/search?q="), None, None).await;
    assert_eq!(bad.status, 400, "{}", bad.body);

    // bob reads part of the room; the directory reports his unread count.
    let bob_token = token("bob");
    let read = rest("POST", &url("/api/rooms/api/read"), Some(&bob_token), Some(&json!({"seq": seq}))).await;
    assert_eq!(read.status, 200, "{}", read.body);
    let unread = read.json()["unread"].as_u64().unwrap();
    assert_eq!(unread, 2, "alice's two messages after the bot's: {}", read.body);
    let listed = rest("GET", &url("/api/rooms"), Some(&bob_token), None).await.json();
    let room = listed["rooms"].as_array().unwrap().iter().find(|r| r["room"] == "api").unwrap().clone();
    assert_eq!(room["unread"], unread, "{room}");
    let anonymous = rest("GET", &url("/api/rooms"), None, None).await.json();
    assert!(anonymous["rooms"][0].get("unread").is_none(), "{anonymous}");

    // Direct rooms over REST: the same room as over the WebSocket.
    let dm = rest("POST", &url("/api/dm"), Some(&bob_token), Some(&json!({"user": "alice"}))).await;
    assert_eq!(dm.status, 200, "{}", dm.body);
    assert_eq!(dm.json()["room"], alice.ok(json!({"op": "dm", "user": "bob"})).await["room"]);
    let by_key = rest("POST", &url("/api/dm"), None, Some(&json!({"user": "alice"}))).await;
    assert_eq!(by_key.status, 403, "{}", by_key.body);
}

#[tokio::test]
async fn on_postgresql_every_feature_works_and_is_recovered_after_a_restart() {
    let pg = crate::services::PgDatabase::create();
    let server = start_on(pg.path(), with_secret).await;
    let mut alice = joined(&server, "alice", "pg").await;
    let mut bob = joined(&server, "bob", "pg").await;
    let first = seq_of(&alice.ok(send("pg", "the first message")).await);
    let second = seq_of(&bob.ok(send("pg", "a second one")).await);
    let since_rev = alice.ok(json!({"op": "join", "room": "pg"})).await["rev"].as_u64().unwrap_or(0);
    alice.ok(json!({"op": "edit", "room": "pg", "seq": first, "text": "the first message, edited"})).await;
    assert_eq!(bob.next_event_of("edited").await["seq"], first);
    bob.ok(json!({"op": "react", "room": "pg", "seq": first, "emoji": "👍"})).await;
    bob.ok(json!({"op": "delete", "room": "pg", "seq": second})).await;
    let root = json!({"op": "send", "room": "pg", "text": "a reply", "reply_to": first});
    alice.ok(root).await;
    let stream = seq_of(&alice.ok(json!({"op": "send", "room": "pg", "text": "thin", "stream": true})).await);
    alice.ok(json!({"op": "append", "room": "pg", "seq": stream, "text": "king"})).await;
    alice.ok(json!({"op": "finish", "room": "pg", "seq": stream})).await;
    let found = alice.ok(json!({"op": "search", "room": "pg", "q": "edited"})).await;
    assert_eq!(found["messages"][0]["seq"], first, "{found}");
    let thinking = alice.ok(json!({"op": "search", "room": "pg", "q": "thinking"})).await;
    assert_eq!(thinking["messages"][0]["seq"], stream, "{thinking}");
    let none = alice.ok(json!({"op": "search", "room": "pg", "q": "second"})).await;
    assert_eq!(none["messages"], json!([]), "deleted: {none}");
    let read = bob.ok(json!({"op": "read", "room": "pg", "seq": first})).await;
    assert_eq!(read["unread"], 2, "the reply and the streamed message: {read}");

    let server = server.restart_with(with_secret).await;
    let mut back = server.json_token(&token("bob")).await;
    let join = back.ok(json!({"op": "join", "room": "pg", "since": second, "since_rev": since_rev})).await;
    assert_eq!(join["unread"], 2, "{join}");
    let changed: Vec<u64> = join["changed"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(changed, [first, second], "{join}");
    assert_eq!(join["changed"][0]["reactions"], json!([{"emoji": "👍", "count": 1, "me": true}]));
    assert_eq!((&join["changed"][0]["reply_count"], &join["changed"][1]["deleted"]), (&json!(1), &json!(true)));
    let streamed = join["messages"].as_array().unwrap().iter().find(|m| m["seq"] == stream).unwrap().clone();
    assert_eq!(streamed["text"], "thinking", "{streamed}");
    let thread = back.ok(json!({"op": "history", "room": "pg", "thread": first})).await;
    assert_eq!(thread["messages"][0]["text"], "a reply", "{thread}");
}

#[tokio::test]
async fn the_room_rules_apply_to_every_new_op() {
    let server = spawn_with(with_secret).await;
    let mut olivia = crate::permissions::owner_of(&server, "olivia", "ruled", "public").await;
    let mut alice = joined(&server, "alice", "ruled").await;
    let mine = seq_of(&alice.ok(send("ruled", "before the mute")).await);
    let hers = seq_of(&olivia.ok(send("ruled", "the owner's")).await);
    olivia.ok(json!({"op": "mute", "room": "ruled", "user": "alice"})).await;
    // Muted: no edit, append, reaction; reading, searching and deleting one's own stay.
    let edit = json!({"op": "edit", "room": "ruled", "seq": mine, "text": "after"});
    assert_eq!(alice.refused(edit).await, "forbidden");
    let react = json!({"op": "react", "room": "ruled", "seq": hers, "emoji": "👍"});
    assert_eq!(alice.refused(react.clone()).await, "forbidden");
    alice.ok(json!({"op": "read", "room": "ruled", "seq": hers})).await;
    alice.ok(json!({"op": "search", "room": "ruled", "q": "owner"})).await;
    alice.ok(json!({"op": "delete", "room": "ruled", "seq": mine})).await;
    olivia.ok(json!({"op": "unmute", "room": "ruled", "user": "alice"})).await;
    alice.ok(react).await;
    // Banned: nothing, not even reading.
    olivia.ok(json!({"op": "ban", "room": "ruled", "user": "alice"})).await;
    let mut again = server.json_token(&token("alice")).await;
    for request in [
        json!({"op": "search", "room": "ruled", "q": "owner"}),
        json!({"op": "read", "room": "ruled", "seq": hers}),
        json!({"op": "history", "room": "ruled", "thread": hers}),
        json!({"op": "unreact", "room": "ruled", "seq": hers, "emoji": "👍"}),
        json!({"op": "delete", "room": "ruled", "seq": mine}),
    ] {
        assert_eq!(again.refused(request.clone()).await, "forbidden", "{request}");
    }
    // A frozen room: members' changes wait, moderators' do not.
    olivia.ok(json!({"op": "unban", "room": "ruled", "user": "alice"})).await;
    let body = json!({"frozen": true});
    let frozen = rest("PATCH", &server.http("/api/rooms/ruled"), None, Some(&body)).await;
    assert_eq!(frozen.status, 200, "{}", frozen.body);
    let mut bob = joined(&server, "bob", "ruled").await;
    assert_eq!(bob.refused(json!({"op": "react", "room": "ruled", "seq": hers, "emoji": "🎉"})).await, "forbidden");
    olivia.ok(json!({"op": "edit", "room": "ruled", "seq": hers, "text": "the owner's, edited"})).await;
}

#[tokio::test]
async fn the_rust_sdk_speaks_every_chat_op() {
    use bavard_client::{protocol::ServerFrame, Connection};
    let server = spawn_with(with_secret).await;
    let url = |user: &str| format!("{}?token={}", server.ws("/ws"), token(user));
    let mut alice = within(Connection::connect(&url("alice"))).await.unwrap();
    let mut bob = within(Connection::connect(&url("bob"))).await.unwrap();
    let dm = within(alice.dm("bob")).await.unwrap().room;
    assert_eq!(within(bob.dm("alice")).await.unwrap().room, dm);
    within(alice.join(&dm, None)).await.unwrap();
    within(bob.join(&dm, None)).await.unwrap();
    let sent = within(alice.send(&dm, "hi bob", None)).await.unwrap();
    within(alice.edit(&dm, sent.seq, "hi, bob")).await.unwrap();
    within(bob.react(&dm, sent.seq, "👋", true)).await.unwrap();
    let stream = within(alice.send_stream(&dm, "Let me")).await.unwrap();
    within(alice.append(&dm, stream.seq, " think")).await.unwrap();
    within(alice.finish(&dm, stream.seq)).await.unwrap();
    let read = within(bob.read(&dm, sent.seq)).await.unwrap();
    assert_eq!(read.unread, 1);
    let deleted = within(alice.delete(&dm, stream.seq)).await.unwrap();
    assert!(deleted.rev > 0);
    let mut seen = Vec::new();
    while !seen.contains(&"deleted") {
        let event = within(bob.next_event()).await.unwrap();
        seen.push(event.type_name());
        if let ServerFrame::Edited(edited) = event {
            assert_eq!(edited.text, "hi, bob");
        }
    }
    assert_eq!(
        seen.iter().filter(|t| ["edited", "reaction", "append", "finished", "deleted"].contains(t)).count(),
        5,
        "{seen:?}"
    );
    let found = within(async {
        loop {
            let found = bob.search(&dm, "bob", None, None).await.unwrap();
            if !found.messages.is_empty() {
                break found;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!((found.messages[0].seq, found.messages[0].text.as_str()), (sent.seq, "hi, bob"));
    assert_eq!(found.messages[0].reactions[0].emoji, "👋");
}
