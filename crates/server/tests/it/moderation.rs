//! Moderation: each action on live connections (JSON and plain text), after a restart,
//! over REST (bans, mutes, kicks, freeze, slow mode), who may act on whom, bad input,
//! and the audit log.

use serde_json::{json, Value};

use crate::{helpers::*, jwt::*, permissions::owner_of};

/// `olivia` owns `room` (of `kind`) and `mo` moderates it: olivia's connection, joined.
async fn moderated(server: &TestServer, room: &str, kind: &str) -> JsonClient {
    let mut olivia = owner_of(server, "olivia", room, kind).await;
    olivia.ok(json!({"op": "add_member", "room": room, "user": "mo", "role": "moderator"})).await;
    olivia
}

/// A signed-in user's connection, joined to `room`.
async fn joined(server: &TestServer, user: &str, room: &str) -> JsonClient {
    let mut client = server.json_token(&token(user)).await;
    client.ok(json!({"op": "join", "room": room})).await;
    client
}

/// Asserts the next `removed` event of `client` is for `room` with `action`; returns it.
async fn removed(client: &mut JsonClient, room: &str, action: &str) -> Value {
    let event = client.next_event_of("removed").await;
    assert_eq!((&event["room"], &event["action"]), (&json!(room), &json!(action)), "{event}");
    event
}

fn send(room: &str, text: &str) -> Value {
    json!({"op": "send", "room": room, "text": text})
}

fn join(room: &str) -> Value {
    json!({"op": "join", "room": room})
}

/// A moderation op on `user` in `room`, with extra fields.
fn act(op: &str, room: &str, user: &str, extra: Value) -> Value {
    let mut request = json!({"op": op, "room": room, "user": user});
    for (key, value) in extra.as_object().cloned().unwrap_or_default() {
        request[key] = value;
    }
    request
}

/// The room's REST view.
async fn view(server: &TestServer, room: &str) -> Value {
    let (status, body) = http_get(&server.http(&format!("/api/rooms/{room}"))).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// `PATCH /api/rooms/{room}` with `body` as `bearer`.
async fn patch(server: &TestServer, room: &str, bearer: &str, body: Value) -> HttpResponse {
    rest("PATCH", &server.http(&format!("/api/rooms/{room}")), Some(bearer), Some(&body)).await
}

#[tokio::test]
async fn a_kick_takes_every_connection_of_the_user_out_and_it_may_rejoin_at_once() {
    let server = spawn_with(with_secret).await;
    let mut olivia = moderated(&server, "kick-room", "public").await;
    olivia.ok(join("side-room")).await;
    let mut mark_1 = joined(&server, "mark", "kick-room").await;
    let mut mark_2 = joined(&server, "mark", "kick-room").await;
    mark_2.ok(join("side-room")).await;
    let mut sam = joined(&server, "sam", "kick-room").await;

    let reply = olivia.ok(act("kick", "kick-room", "mark", json!({"reason": "calm down"}))).await;
    assert!(reply["until"].is_null(), "{reply}");
    for mark in [&mut mark_1, &mut mark_2] {
        let event = removed(mark, "kick-room", "kick").await;
        assert_eq!(event["reason"], "calm down");
        assert_eq!(mark.refused(send("kick-room", "still here?")).await, "forbidden");
    }
    sam.next_left("kick-room", "mark").await;
    olivia.next_left("kick-room", "mark").await;
    // Nothing more of the room reaches a removed connection: its next message is a
    // marker sent in another room after a message in this one.
    sam.ok(send("kick-room", "while mark is out")).await;
    assert_eq!(sam.next_message_text().await, "while mark is out");
    olivia.ok(send("side-room", "marker")).await;
    assert_eq!(mark_2.next_message_text().await, "marker");
    // Without a duration, a kick is no ban.
    mark_1.ok(join("kick-room")).await;
    mark_1.ok(send("kick-room", "back")).await;
}

#[tokio::test]
async fn a_kick_with_a_duration_keeps_the_user_out_until_it_ends() {
    let server = spawn_with(with_secret).await;
    let mut olivia = moderated(&server, "timeout-room", "public").await;
    let mut mark = joined(&server, "mark", "timeout-room").await;
    let reply = olivia.ok(act("kick", "timeout-room", "mark", json!({"duration_secs": 3600}))).await;
    assert!(reply["until"].is_string(), "{reply}");
    let event = removed(&mut mark, "timeout-room", "kick").await;
    assert!(event["until"].is_string(), "{event}");
    assert_eq!(mark.refused(join("timeout-room")).await, "forbidden");
    let mut mark_again = server.json_token(&token("mark")).await;
    assert_eq!(mark_again.refused(join("timeout-room")).await, "forbidden");

    // A one-second kick ends by itself.
    let mut sam = joined(&server, "sam", "timeout-room").await;
    olivia.ok(act("kick", "timeout-room", "sam", json!({"duration_secs": 1}))).await;
    removed(&mut sam, "timeout-room", "kick").await;
    within(async {
        while sam.request(join("timeout-room")).await["ok"] != true {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_ban_keeps_the_user_from_joining_reading_and_writing_until_unbanned() {
    let server = spawn_with(with_secret).await;
    let mut olivia = moderated(&server, "ban-room", "public").await;
    olivia.ok(send("ban-room", "before the ban")).await;
    let mut mark = joined(&server, "mark", "ban-room").await;
    let mut sam = joined(&server, "sam", "ban-room").await;

    let reply = olivia.ok(act("ban", "ban-room", "mark", json!({"reason": "spam"}))).await;
    assert!(reply["until"].is_null(), "{reply}");
    assert_eq!(removed(&mut mark, "ban-room", "ban").await["reason"], "spam");
    sam.next_left("ban-room", "mark").await;
    for request in [
        join("ban-room"),
        json!({"op": "history", "room": "ban-room"}),
        json!({"op": "join", "room": "ban-room", "since": 0}),
        send("ban-room", "let me back"),
    ] {
        assert_eq!(mark.refused(request.clone()).await, "forbidden", "{request}");
    }
    let messages = server.http("/api/rooms/ban-room/messages");
    let mark_token = token("mark");
    assert_eq!(rest("GET", &messages, Some(&mark_token), None).await.status, 403);
    assert_eq!(rest("POST", &messages, Some(&mark_token), Some(&json!({"text": "x"}))).await.status, 403);
    let plain = format!("/ws/chat/ban-room?token={mark_token}");
    assert_eq!(PlainClient::connect_with(&server.ws(&plain), &[]).await.err(), Some(403));

    olivia.ok(act("unban", "ban-room", "mark", json!({}))).await;
    mark.ok(join("ban-room")).await;
    mark.ok(json!({"op": "history", "room": "ban-room"})).await;
    mark.ok(send("ban-room", "thanks")).await;
    assert_eq!(rest("GET", &messages, Some(&mark_token), None).await.status, 200);

    let timed = olivia.ok(act("ban", "ban-room", "sam", json!({"duration_secs": 600}))).await;
    assert!(timed["until"].is_string(), "{timed}");
    assert!(removed(&mut sam, "ban-room", "ban").await["until"].is_string());
}

#[tokio::test]
async fn a_mute_stops_sending_and_typing_but_not_reading_until_unmuted() {
    let server = spawn_with(with_secret).await;
    let mut olivia = moderated(&server, "mute-room", "public").await;
    let mut mark = joined(&server, "mark", "mute-room").await;
    olivia.ok(act("mute", "mute-room", "mark", json!({"reason": "noise"}))).await;
    assert_eq!(mark.refused(send("mute-room", "but")).await, "forbidden");
    assert_eq!(mark.refused(json!({"op": "typing", "room": "mute-room"})).await, "forbidden");
    let messages = server.http("/api/rooms/mute-room/messages");
    let published = rest("POST", &messages, Some(&token("mark")), Some(&json!({"text": "over rest"}))).await;
    assert_eq!(published.status, 403, "{}", published.body);
    olivia.ok(send("mute-room", "you can still read")).await;
    assert_eq!(mark.next_message_text().await, "you can still read");

    olivia.ok(act("unmute", "mute-room", "mark", json!({}))).await;
    mark.ok(json!({"op": "typing", "room": "mute-room"})).await;
    mark.ok(send("mute-room", "thanks")).await;
    let timed = olivia.ok(act("mute", "mute-room", "mark", json!({"duration_secs": 600}))).await;
    assert!(timed["until"].is_string(), "{timed}");
}

#[tokio::test]
async fn removing_a_member_of_a_private_room_takes_it_out_for_good() {
    let server = spawn_with(with_secret).await;
    let mut olivia = moderated(&server, "members-only", "private").await;
    olivia.ok(act("add_member", "members-only", "mark", json!({}))).await;
    let mut mark = joined(&server, "mark", "members-only").await;
    olivia.ok(json!({"op": "remove_member", "room": "members-only", "user": "mark"})).await;
    removed(&mut mark, "members-only", "remove_member").await;
    olivia.next_left("members-only", "mark").await;
    for request in
        [send("members-only", "hello?"), join("members-only"), json!({"op": "history", "room": "members-only"})]
    {
        assert_eq!(mark.refused(request.clone()).await, "forbidden", "{request}");
    }
}

/// `user`'s plain-text connection to `room`, in it (its first line echoed).
async fn plain_member(server: &TestServer, user: &str, room: &str) -> PlainClient {
    let mut client = server.plain(&format!("/ws/chat/{room}?token={}", token(user))).await;
    client.send("present").await;
    assert_eq!(client.recv().await, "Message reçu : present");
    client
}

#[tokio::test]
async fn a_plain_text_client_is_closed_with_1008_when_kicked_banned_or_refused_a_write() {
    let server = spawn_with(with_secret).await;
    let mut olivia = moderated(&server, "plain-mod", "public").await;
    let mut mark = plain_member(&server, "mark", "plain-mod").await;
    let mut sam = plain_member(&server, "sam", "plain-mod").await;
    let mut pat = plain_member(&server, "pat", "plain-mod").await;
    let mut guest = server.plain("/ws/chat/plain-mod?name=gina").await;
    guest.send("present").await;
    assert_eq!(guest.recv().await, "Message reçu : present");

    olivia.ok(act("kick", "plain-mod", "mark", json!({"reason": "out"}))).await;
    assert_eq!(mark.close_code().await, 1008);
    olivia.ok(act("ban", "plain-mod", "sam", json!({}))).await;
    assert_eq!(sam.close_code().await, 1008);
    let path = format!("/ws/chat/plain-mod?token={}", token("sam"));
    assert_eq!(PlainClient::connect_with(&server.ws(&path), &[]).await.err(), Some(403), "banned at the door");
    olivia.ok(act("kick", "plain-mod", "g_gina", json!({}))).await;
    assert_eq!(guest.close_code().await, 1008);
    olivia.ok(act("mute", "plain-mod", "pat", json!({}))).await;
    pat.send("muted now").await;
    assert_eq!(pat.close_code().await, 1008);
}

#[tokio::test]
async fn moderation_state_survives_a_restart() {
    let server = spawn_with(with_secret).await;
    let olivia_token = token("olivia");
    let mut olivia = moderated(&server, "keep-rules", "public").await;
    olivia.ok(act("ban", "keep-rules", "bad", json!({}))).await;
    olivia.ok(act("mute", "keep-rules", "quiet", json!({}))).await;
    olivia.ok(json!({"op": "create", "room": "keep-stage", "kind": "broadcast"})).await;
    olivia.ok(json!({"op": "create", "room": "keep-vault", "kind": "private"})).await;
    olivia.ok(act("add_member", "keep-vault", "mark", json!({}))).await;
    olivia.ok(json!({"op": "create", "room": "keep-frozen"})).await;
    assert_eq!(patch(&server, "keep-frozen", &olivia_token, json!({"frozen": true})).await.status, 200);
    olivia.ok(json!({"op": "create", "room": "keep-slow"})).await;
    assert_eq!(patch(&server, "keep-slow", &olivia_token, json!({"slow_mode_secs": 60})).await.status, 200);
    drop(olivia);

    let server = server.restart_with(with_secret).await;
    let mut bad = server.json_token(&token("bad")).await;
    assert_eq!(bad.refused(join("keep-rules")).await, "forbidden", "the ban holds");
    let mut quiet = joined(&server, "quiet", "keep-rules").await;
    assert_eq!(quiet.refused(send("keep-rules", "hello")).await, "forbidden", "the mute holds");
    let mut mo = server.json_token(&token("mo")).await;
    mo.ok(act("unmute", "keep-rules", "quiet", json!({}))).await;
    quiet.ok(send("keep-rules", "hello")).await;
    assert_eq!(mo.refused(act("set_role", "keep-rules", "quiet", json!({"role": "moderator"}))).await, "forbidden");
    let mut olivia = server.json_token(&olivia_token).await;
    olivia.ok(act("set_role", "keep-rules", "quiet", json!({"role": "moderator"}))).await;

    let mut mark = joined(&server, "mark", "keep-stage").await;
    assert_eq!(mark.refused(send("keep-stage", "hi")).await, "forbidden", "still a broadcast room");
    mark.ok(join("keep-vault")).await;
    let mut sam = server.json_token(&token("sam")).await;
    assert_eq!(sam.refused(join("keep-vault")).await, "forbidden", "still private");
    mark.ok(join("keep-frozen")).await;
    assert_eq!(mark.refused(send("keep-frozen", "hi")).await, "forbidden", "still frozen");
    olivia.ok(join("keep-frozen")).await;
    olivia.ok(send("keep-frozen", "owners may")).await;

    let views =
        [view(&server, "keep-stage").await, view(&server, "keep-frozen").await, view(&server, "keep-slow").await];
    assert_eq!(views[0]["kind"], "broadcast");
    assert_eq!(views[1]["frozen"], true);
    assert_eq!(views[2]["slow_mode_secs"], 60);
}

#[tokio::test]
async fn the_rest_api_bans_mutes_and_kicks_and_lifts_them() {
    let server = spawn_with(with_secret_and_key).await;
    let _olivia = moderated(&server, "rest-mod", "public").await;
    let owner = token("olivia");
    let url = |path: &str| server.http(&format!("/api/rooms/rest-mod{path}"));
    let mut mark = joined(&server, "mark", "rest-mod").await;

    let banned = rest("POST", &url("/bans"), Some(&owner), Some(&json!({"user": "mark", "reason": "spam"}))).await;
    assert_eq!(banned.status, 201, "{}", banned.body);
    assert_eq!(removed(&mut mark, "rest-mod", "ban").await["reason"], "spam");
    assert_eq!(mark.refused(join("rest-mod")).await, "forbidden");
    let unbanned = rest("DELETE", &url("/bans/mark"), Some(&owner), None).await;
    assert_eq!(unbanned.status, 204, "{}", unbanned.body);
    mark.ok(join("rest-mod")).await;

    let muted = rest("POST", &url("/mutes"), Some(&owner), Some(&json!({"user": "mark", "duration_secs": 600}))).await;
    assert_eq!(muted.status, 201, "{}", muted.body);
    assert!(muted.json()["until"].is_string(), "{}", muted.body);
    assert_eq!(mark.refused(send("rest-mod", "hm")).await, "forbidden");
    assert_eq!(rest("DELETE", &url("/mutes/mark"), Some(&owner), None).await.status, 204);
    mark.ok(send("rest-mod", "back")).await;

    let kicked = rest("POST", &url("/kicks"), Some(&owner), Some(&json!({"user": "mark", "reason": "out"}))).await;
    assert_eq!(kicked.status, 201, "{}", kicked.body);
    removed(&mut mark, "rest-mod", "kick").await;
    mark.ok(join("rest-mod")).await;

    // The API key is a server admin; a member and an anonymous caller are not.
    let by_key = rest("POST", &url("/bans"), Some(API_KEY), Some(&json!({"user": "sam"}))).await;
    assert_eq!(by_key.status, 201, "{}", by_key.body);
    assert_eq!(rest("DELETE", &url("/bans/sam"), Some(API_KEY), None).await.status, 204);
    let by_member = rest("POST", &url("/bans"), Some(&token("mark")), Some(&json!({"user": "sam"}))).await;
    assert_eq!(by_member.status, 403, "{}", by_member.body);
    let anonymous = rest("POST", &url("/kicks"), None, Some(&json!({"user": "sam"}))).await;
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
    let unknown =
        rest("POST", &server.http("/api/rooms/nowhere-rest/bans"), Some(API_KEY), Some(&json!({"user": "sam"}))).await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
}

#[tokio::test]
async fn a_frozen_room_takes_writes_from_its_moderators_and_the_api_only() {
    let server = spawn_with(with_secret_and_key).await;
    let mut olivia = moderated(&server, "freezer", "public").await;
    let mut mo = joined(&server, "mo", "freezer").await;
    let mut mark = joined(&server, "mark", "freezer").await;
    let frozen = patch(&server, "freezer", &token("mo"), json!({"frozen": true})).await;
    assert_eq!(frozen.status, 200, "{}", frozen.body);
    assert_eq!(frozen.json()["frozen"], true);
    assert_eq!(mark.refused(send("freezer", "hello?")).await, "forbidden");
    let messages = server.http("/api/rooms/freezer/messages");
    assert_eq!(rest("POST", &messages, Some(&token("mark")), Some(&json!({"text": "x"}))).await.status, 403);
    mo.ok(send("freezer", "moderators may")).await;
    olivia.ok(send("freezer", "owners may")).await;
    let by_key = rest("POST", &messages, Some(API_KEY), Some(&json!({"text": "the api may"}))).await;
    assert_eq!(by_key.status, 201, "{}", by_key.body);

    // Who may patch what.
    assert_eq!(patch(&server, "freezer", &token("mark"), json!({"frozen": false})).await.status, 403);
    assert_eq!(patch(&server, "freezer", &token("mo"), json!({"kind": "private"})).await.status, 403, "kind: owners");
    assert_eq!(patch(&server, "freezer", &token("olivia"), json!({})).await.status, 400);
    let thawed = patch(&server, "freezer", &token("mo"), json!({"frozen": false})).await;
    assert_eq!((thawed.status, &thawed.json()["frozen"]), (200, &json!(false)));
    mark.ok(send("freezer", "thawed")).await;
}

#[tokio::test]
async fn slow_mode_limits_members_and_not_moderators() {
    let server = spawn_with(with_secret).await;
    let mut olivia = moderated(&server, "slow-room", "public").await;
    let mut mo = joined(&server, "mo", "slow-room").await;
    let mut mark = joined(&server, "mark", "slow-room").await;
    let slowed = patch(&server, "slow-room", &token("olivia"), json!({"slow_mode_secs": 60, "topic": "calm"})).await;
    assert_eq!(slowed.status, 200, "{}", slowed.body);
    assert_eq!((&slowed.json()["slow_mode_secs"], &slowed.json()["topic"]), (&json!(60), &json!("calm")));
    mark.ok(send("slow-room", "one")).await;
    let reply = mark.request(send("slow-room", "two")).await;
    assert_eq!(reply["error"]["code"], "rate_limited", "{reply}");
    assert!(!reply["error"]["message"].as_str().unwrap_or_default().is_empty(), "it says how long to wait");
    for client in [&mut mo, &mut olivia] {
        client.ok(send("slow-room", "first")).await;
        client.ok(send("slow-room", "second")).await;
    }
    let off = patch(&server, "slow-room", &token("mo"), json!({"slow_mode_secs": 0})).await;
    assert_eq!(off.status, 200, "{}", off.body);
    mark.ok(send("slow-room", "three")).await;
}

#[tokio::test]
async fn moderation_needs_a_role_that_outranks_the_target() {
    let server = spawn_with(with_secret).await;
    let mut olivia = moderated(&server, "ranks", "public").await;
    olivia.ok(act("add_member", "ranks", "mo2", json!({"role": "moderator"}))).await;
    olivia.ok(act("set_role", "ranks", "otto", json!({"role": "owner"}))).await;
    let mut mo = server.json_token(&token("mo")).await;
    let mut mark = server.json_token(&token("mark")).await;
    let refusals = [
        ("mo", act("ban", "ranks", "olivia", json!({})), "a moderator on an owner"),
        ("mo", act("kick", "ranks", "mo2", json!({})), "a moderator on a moderator"),
        ("mo", act("add_member", "ranks", "x", json!({"role": "moderator"})), "a moderator adds members only"),
        ("mo", act("set_role", "ranks", "mark", json!({"role": "moderator"})), "roles are the owners'"),
        ("mo", act("kick", "ranks", "mo", json!({})), "nobody on themselves"),
        ("mark", act("kick", "ranks", "sam", json!({})), "a member cannot kick"),
        ("mark", act("mute", "ranks", "sam", json!({})), "a member cannot mute"),
        ("mark", act("add_member", "ranks", "sam", json!({})), "a member cannot add members"),
        ("olivia", act("ban", "ranks", "otto", json!({})), "an owner on another owner"),
        ("olivia", act("kick", "ranks", "olivia", json!({})), "an owner on itself"),
    ];
    for (who, request, rule) in refusals {
        let actor = match who {
            "mo" => &mut mo,
            "mark" => &mut mark,
            _ => &mut olivia,
        };
        assert_eq!(actor.refused(request).await, "forbidden", "{rule}");
    }
    mo.ok(act("mute", "ranks", "mark", json!({}))).await;
    mo.ok(act("add_member", "ranks", "amy", json!({}))).await;
    olivia.ok(act("ban", "ranks", "mo2", json!({}))).await;
    let mut admin = server.json_token(&admin_token("root")).await;
    admin.ok(act("ban", "ranks", "olivia", json!({"reason": "admins act on anyone"}))).await;
}

#[tokio::test]
async fn moderation_of_an_unknown_room_is_not_found_and_bad_input_is_a_bad_request() {
    let server = spawn_with(with_secret).await;
    let mut olivia = moderated(&server, "inputs", "public").await;
    for request in [
        act("kick", "nowhere-mod", "mark", json!({})),
        act("ban", "nowhere-mod", "mark", json!({})),
        act("unban", "nowhere-mod", "mark", json!({})),
        act("mute", "nowhere-mod", "mark", json!({})),
        act("unmute", "nowhere-mod", "mark", json!({})),
        act("add_member", "nowhere-mod", "mark", json!({})),
        act("remove_member", "nowhere-mod", "mark", json!({})),
        act("set_role", "nowhere-mod", "mark", json!({"role": "member"})),
    ] {
        assert_eq!(olivia.refused(request.clone()).await, "not_found", "{request}");
    }
    for request in [
        act("ban", "inputs", "mark", json!({"duration_secs": 0})),
        act("kick", "inputs", "mark", json!({"duration_secs": 315_360_001u64})),
        act("mute", "inputs", "mark", json!({"reason": "r".repeat(300)})),
        act("mute", "inputs", "", json!({})),
        act("kick", "inputs", "ma\u{7}rk", json!({})),
        act("ban", "inputs", &"u".repeat(129), json!({})),
        act("add_member", "inputs", "", json!({})),
        act("set_role", "inputs", "mark", json!({"role": "king"})),
        json!({"op": "create", "room": "long-topic", "topic": "t".repeat(300)}),
        json!({"op": "create", "room": "odd-kind", "kind": "secret"}),
    ] {
        assert_eq!(olivia.refused(request.clone()).await, "bad_request", "{request}");
    }
    // The edges are accepted.
    olivia.ok(act("ban", "inputs", "mark", json!({"duration_secs": 315_360_000u64, "reason": "r".repeat(256)}))).await;
    olivia.ok(act("unban", "inputs", "mark", json!({}))).await;

    let owner = token("olivia");
    let bans = server.http("/api/rooms/inputs/bans");
    for body in [
        json!({"user": ""}),
        json!({"user": "mark", "duration_secs": 0}),
        json!({"user": "mark", "reason": "r".repeat(300)}),
    ] {
        let response = rest("POST", &bans, Some(&owner), Some(&body)).await;
        assert_eq!(response.status, 400, "{body}: {}", response.body);
    }
    for body in [json!({}), json!({"kind": "secret"}), json!({"slow_mode_secs": -1})] {
        assert_eq!(patch(&server, "inputs", &owner, body.clone()).await.status, 400, "{body}");
    }
    let member = server.http("/api/rooms/inputs/members/mark");
    assert_eq!(rest("PUT", &member, Some(&owner), Some(&json!({"role": "king"}))).await.status, 400);
}

/// An audit entry's target user id (written as a string or as a user object).
fn target_id(entry: &Value) -> Option<&str> {
    entry["target"].as_str().or_else(|| entry["target"]["id"].as_str())
}

/// `GET /api/rooms/{room}/audit{query}` as `bearer`.
async fn audit(server: &TestServer, room: &str, query: &str, bearer: Option<&str>) -> HttpResponse {
    rest("GET", &server.http(&format!("/api/rooms/{room}/audit{query}")), bearer, None).await
}

#[tokio::test]
async fn the_audit_lists_what_was_done_newest_first_to_moderators_only() {
    let server = spawn_with(with_secret_and_key).await;
    let mut olivia = moderated(&server, "audited", "public").await;
    olivia.ok(act("mute", "audited", "mark", json!({"reason": "noise"}))).await;
    olivia.ok(act("ban", "audited", "sam", json!({"reason": "spam"}))).await;
    olivia.ok(act("unban", "audited", "sam", json!({}))).await;
    olivia.ok(act("kick", "audited", "mark", json!({"reason": "out"}))).await;

    let owner = token("olivia");
    let response = audit(&server, "audited", "", Some(&owner)).await;
    assert_eq!(response.status, 200, "{}", response.body);
    let log = response.json();
    let entries = log["entries"].as_array().unwrap().clone();
    let actions: Vec<(&str, Option<&str>)> =
        entries.iter().map(|e| (e["action"].as_str().unwrap(), target_id(e))).collect();
    assert_eq!(
        actions,
        [
            ("kick", Some("mark")),
            ("unban", Some("sam")),
            ("ban", Some("sam")),
            ("mute", Some("mark")),
            ("add_member", Some("mo")),
            ("create", None),
        ],
        "{log}"
    );
    assert_eq!(log["has_more"], false);
    for entry in &entries {
        assert_eq!(entry["actor"], json!({"id": "olivia", "name": "olivia"}), "{entry}");
        assert!(entry["ts"].is_string() && !entry["id"].is_null(), "{entry}");
    }
    assert_eq!(
        (&entries[0]["reason"], &entries[2]["reason"], &entries[3]["reason"]),
        (&json!("out"), &json!("spam"), &json!("noise"))
    );

    // Pages, newest first.
    let first = audit(&server, "audited", "?limit=2", Some(&owner)).await.json();
    assert_eq!(first["entries"].as_array().unwrap().len(), 2, "{first}");
    assert_eq!(first["has_more"], true);
    let before = match &first["entries"][1]["id"] {
        Value::String(id) => id.clone(),
        id => id.to_string(),
    };
    let rest_page = audit(&server, "audited", &format!("?before={before}&limit=10"), Some(&owner)).await.json();
    let older: Vec<&str> =
        rest_page["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(older, ["ban", "mute", "add_member", "create"], "{rest_page}");

    // A room change is recorded too.
    assert_eq!(patch(&server, "audited", &owner, json!({"frozen": true})).await.status, 200);
    let after = audit(&server, "audited", "", Some(&owner)).await.json();
    assert_eq!(after["entries"].as_array().unwrap().len(), entries.len() + 1, "{after}");
    assert_eq!(after["entries"][0]["actor"]["id"], "olivia");

    // Who may read it.
    olivia.ok(act("add_member", "audited", "amy", json!({}))).await;
    for (who, bearer, status) in [
        ("the moderator", Some(token("mo")), 200),
        ("the API key", Some(API_KEY.to_owned()), 200),
        ("a plain member", Some(token("amy")), 403),
        ("a user without a role", Some(token("mark")), 403),
        ("anonymous", None, 401),
    ] {
        let response = audit(&server, "audited", "", bearer.as_deref()).await;
        assert_eq!(response.status, status, "{who}: {}", response.body);
    }
}

#[tokio::test]
async fn a_plain_text_client_taken_out_is_a_departure_for_the_others() {
    let server = spawn_with(with_secret).await;
    let mut olivia = moderated(&server, "plain-notice", "public").await;
    let mut mark = plain_member(&server, "mark", "plain-notice").await;
    let mut sam = plain_member(&server, "sam", "plain-notice").await;
    olivia.ok(act("kick", "plain-notice", "mark", json!({}))).await;
    assert_eq!(mark.close_code().await, 1008);
    assert_eq!(sam.recv().await, "Un utilisateur s'est déconnecté.");
}

#[tokio::test]
async fn a_moderator_cannot_take_a_server_admin_out() {
    let server = spawn_with(with_secret).await;
    let mut olivia = moderated(&server, "admin-stays", "public").await;
    let mut boss = server.json_token(&admin_token("boss")).await;
    boss.ok(join("admin-stays")).await;
    olivia.ok(act("kick", "admin-stays", "boss", json!({}))).await;
    olivia.ok(act("ban", "admin-stays", "boss", json!({}))).await;
    boss.ok(send("admin-stays", "still here")).await;
    assert_eq!(olivia.next_message_text().await, "still here");
}
