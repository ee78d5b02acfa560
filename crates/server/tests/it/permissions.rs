//! Rooms' kinds and roles: a private room on every read path (join, history, join with
//! since, REST, plain text, the room list), members added over the WebSocket and REST,
//! broadcast rooms, and who may create what.

use serde_json::{json, Value};

use crate::{helpers::*, jwt::*};

/// `user` (a signed-in user) creates `room` of `kind` over the WebSocket, joins it and
/// returns its connection.
pub async fn owner_of(server: &TestServer, user: &str, room: &str, kind: &str) -> JsonClient {
    let mut owner = server.json_token(&token(user)).await;
    let reply = owner.ok(json!({"op": "create", "room": room, "kind": kind})).await;
    assert_eq!((&reply["room"], &reply["kind"]), (&json!(room), &json!(kind)), "{reply}");
    owner.ok(json!({"op": "join", "room": room})).await;
    owner
}

/// The texts of a `join` or `history` reply's messages.
fn texts(reply: &Value) -> Vec<String> {
    let messages = reply["messages"].as_array().unwrap_or_else(|| panic!("no messages: {reply}"));
    messages.iter().map(|m| m["text"].as_str().unwrap().to_owned()).collect()
}

/// The room names of `GET /api/rooms` as `bearer` sees them.
async fn listed_rooms(server: &TestServer, bearer: Option<&str>) -> Vec<String> {
    let response = rest("GET", &server.http("/api/rooms"), bearer, None).await;
    assert_eq!(response.status, 200, "{}", response.body);
    response.json()["rooms"].as_array().unwrap().iter().map(|r| r["room"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn a_private_room_cannot_be_joined_or_read_by_a_non_member_over_the_websocket() {
    let server = spawn_with(with_secret).await;
    let mut olivia = server.json_token(&token("olivia")).await;
    let reply = olivia.ok(json!({"op": "create", "room": "vault-ws", "kind": "private", "topic": "secrets"})).await;
    assert_eq!(reply["topic"], "secrets", "{reply}");
    olivia.ok(json!({"op": "join", "room": "vault-ws"})).await;
    olivia.ok(json!({"op": "send", "room": "vault-ws", "text": "the code is 42"})).await;

    let mut sam = server.json_token(&token("sam")).await;
    let why = sam.refused_with("forbidden", json!({"op": "join", "room": "vault-ws"})).await;
    assert!(why.contains("private"), "{why}");
    sam.refused_with("forbidden", json!({"op": "history", "room": "vault-ws"})).await;
    sam.refused_with("forbidden", json!({"op": "join", "room": "vault-ws", "since": 0})).await;
    sam.refused_with("forbidden", json!({"op": "send", "room": "vault-ws", "text": "let me in"})).await;
    let mut guest = server.json_guest("gina").await;
    guest.refused_with("forbidden", json!({"op": "join", "room": "vault-ws"})).await;
    guest.refused_with("forbidden", json!({"op": "history", "room": "vault-ws"})).await;
}

#[tokio::test]
async fn a_private_room_cannot_be_read_by_a_non_member_over_rest_or_plain_text() {
    let server = spawn_with(with_secret_and_key).await;
    let mut olivia = owner_of(&server, "olivia", "vault-rest", "private").await;
    olivia.ok(json!({"op": "send", "room": "vault-rest", "text": "the code is 42"})).await;
    let messages = server.http("/api/rooms/vault-rest/messages");
    let sam = token("sam");
    assert_eq!(rest("GET", &messages, Some(&sam), None).await.status, 403, "a non-member's JWT");
    assert_eq!(rest("GET", &messages, None, None).await.status, 401, "anonymous, with an API key configured");
    for reader in [API_KEY.to_owned(), token("olivia")] {
        let response = rest("GET", &messages, Some(&reader), None).await;
        assert_eq!(response.status, 200, "{}", response.body);
        assert!(response.body.contains("the code is 42"), "{}", response.body);
    }
    for path in [format!("/ws/chat/vault-rest?token={sam}"), "/ws/chat/vault-rest?name=gina".to_owned()] {
        assert_eq!(PlainClient::connect_with(&server.ws(&path), &[]).await.err(), Some(403), "{path}");
    }
    let mut owner_plain = server.plain(&format!("/ws/chat/vault-rest?token={}", token("olivia"))).await;
    owner_plain.send("plain owner").await;
    assert_eq!(owner_plain.recv().await, "Message reçu : plain owner");
}

#[tokio::test]
async fn a_member_added_over_the_websocket_can_join_read_and_write() {
    let server = spawn_with(with_secret).await;
    let mut olivia = owner_of(&server, "olivia", "vault-add", "private").await;
    olivia.ok(json!({"op": "send", "room": "vault-add", "text": "before mark"})).await;
    assert_eq!(olivia.next_message_text().await, "before mark");
    let mut mark = server.json_token(&token("mark")).await;
    mark.refused_with("forbidden", json!({"op": "join", "room": "vault-add"})).await;

    olivia.ok(json!({"op": "add_member", "room": "vault-add", "user": "mark"})).await;
    let joined = mark.ok(json!({"op": "join", "room": "vault-add"})).await;
    assert_eq!(texts(&joined), ["before mark"]);
    let history = mark.ok(json!({"op": "history", "room": "vault-add"})).await;
    assert_eq!(texts(&history), ["before mark"]);
    let since = mark.ok(json!({"op": "join", "room": "vault-add", "since": 0})).await;
    assert_eq!(texts(&since), ["before mark"]);
    mark.ok(json!({"op": "send", "room": "vault-add", "text": "hello from mark"})).await;
    assert_eq!(olivia.next_message_text().await, "hello from mark");
    assert_eq!(mark.next_message_text().await, "hello from mark");
}

#[tokio::test]
async fn a_member_added_over_rest_can_join_read_and_write_until_removed() {
    let server = spawn_with(with_secret_and_key).await;
    let olivia = token("olivia");
    let mark = token("mark");
    let created =
        rest("POST", &server.http("/api/rooms"), Some(&olivia), Some(&json!({"name": "vault-put", "kind": "private"})))
            .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.json()["kind"], "private");
    let messages = server.http("/api/rooms/vault-put/messages");
    assert_eq!(rest("GET", &messages, Some(&mark), None).await.status, 403);

    let member = server.http("/api/rooms/vault-put/members/mark");
    let added = rest("PUT", &member, Some(&olivia), Some(&json!({"role": "member"}))).await;
    assert_eq!(added.status, 200, "{}", added.body);
    assert_eq!(added.json(), json!({"room": "vault-put", "user": "mark", "role": "member"}));
    let published = rest("POST", &messages, Some(&mark), Some(&json!({"text": "over rest"}))).await;
    assert_eq!(published.status, 201, "{}", published.body);
    let read = rest("GET", &messages, Some(&mark), None).await;
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(read.json()["messages"][0]["from"]["id"], "mark", "{}", read.body);
    let mut ws = server.json_token(&mark).await;
    assert_eq!(texts(&ws.ok(json!({"op": "join", "room": "vault-put"})).await), ["over rest"]);
    ws.ok(json!({"op": "send", "room": "vault-put", "text": "over ws"})).await;
    let mut plain = server.plain(&format!("/ws/chat/vault-put?token={mark}")).await;
    plain.send("over plain").await;
    assert_eq!(plain.recv().await, "Message reçu : over plain");
    drop(plain);

    let removed = rest("DELETE", &member, Some(&olivia), None).await;
    assert_eq!(removed.status, 204, "{}", removed.body);
    assert_eq!(rest("GET", &messages, Some(&mark), None).await.status, 403);
}

#[tokio::test]
async fn the_room_list_shows_a_private_room_to_its_members_and_the_api_key_only() {
    let server = spawn_with(with_secret_and_key).await;
    let olivia = token("olivia");
    for (name, kind) in [("hidden-list", "private"), ("open-list", "public")] {
        let body = json!({"name": name, "kind": kind});
        let created = rest("POST", &server.http("/api/rooms"), Some(&olivia), Some(&body)).await;
        assert_eq!(created.status, 201, "{}", created.body);
    }
    let member = server.http("/api/rooms/hidden-list/members/mark");
    assert_eq!(rest("PUT", &member, Some(&olivia), Some(&json!({"role": "member"}))).await.status, 200);
    for (who, bearer, sees_private) in [
        ("a non-member", Some(token("sam")), false),
        ("anonymous", None, false),
        ("a member", Some(token("mark")), true),
        ("the owner", Some(olivia.clone()), true),
        ("the API key", Some(API_KEY.to_owned()), true),
    ] {
        let rooms = listed_rooms(&server, bearer.as_deref()).await;
        assert!(rooms.contains(&"open-list".to_owned()), "{who}: {rooms:?}");
        assert_eq!(rooms.contains(&"hidden-list".to_owned()), sees_private, "{who}: {rooms:?}");
    }
}

#[tokio::test]
async fn a_server_admin_joins_and_reads_any_private_room() {
    let server = spawn_with(with_secret).await;
    let mut olivia = owner_of(&server, "olivia", "vault-admin", "private").await;
    olivia.ok(json!({"op": "send", "room": "vault-admin", "text": "for members"})).await;
    let mut admin = server.json_token(&admin_token("root")).await;
    assert_eq!(texts(&admin.ok(json!({"op": "join", "room": "vault-admin"})).await), ["for members"]);
    assert_eq!(texts(&admin.ok(json!({"op": "history", "room": "vault-admin"})).await), ["for members"]);
}

#[tokio::test]
async fn a_broadcast_room_takes_writes_from_its_owner_moderators_and_the_api_only() {
    let server = spawn_with(with_secret_and_key).await;
    let mut olivia = owner_of(&server, "olivia", "news", "broadcast").await;
    olivia.ok(json!({"op": "add_member", "room": "news", "user": "mo", "role": "moderator"})).await;
    let mut mark = server.json_token(&token("mark")).await;
    mark.ok(json!({"op": "join", "room": "news"})).await;
    mark.refused_with("forbidden", json!({"op": "send", "room": "news", "text": "me too"})).await;
    mark.refused_with("forbidden", json!({"op": "typing", "room": "news"})).await;
    let mut guest = server.json_guest("gina").await;
    guest.ok(json!({"op": "join", "room": "news"})).await;
    guest.refused_with("forbidden", json!({"op": "send", "room": "news", "text": "me too"})).await;

    let messages = server.http("/api/rooms/news/messages");
    let by_key = rest("POST", &messages, Some(API_KEY), Some(&json!({"text": "breaking"}))).await;
    assert_eq!(by_key.status, 201, "{}", by_key.body);
    assert_eq!(mark.next_message_text().await, "breaking");
    let by_member = rest("POST", &messages, Some(&token("mark")), Some(&json!({"text": "me too"}))).await;
    assert_eq!(by_member.status, 403, "{}", by_member.body);

    olivia.ok(json!({"op": "send", "room": "news", "text": "from the owner"})).await;
    assert_eq!(mark.next_message_text().await, "from the owner");
    let mut mo = server.json_token(&token("mo")).await;
    mo.ok(json!({"op": "join", "room": "news"})).await;
    mo.ok(json!({"op": "send", "room": "news", "text": "from a moderator"})).await;
    assert_eq!(mark.next_message_text().await, "from a moderator");
}

#[tokio::test]
async fn a_guest_creates_public_rooms_only_and_they_have_no_owner() {
    let server = spawn_with(with_secret).await;
    let mut guest = server.json_guest("gus").await;
    for kind in ["private", "broadcast"] {
        guest.refused_with("forbidden", json!({"op": "create", "room": format!("guest-{kind}"), "kind": kind})).await;
    }
    let reply = guest.ok(json!({"op": "create", "room": "guest-public", "kind": "public"})).await;
    assert_eq!(reply["kind"], "public");
    assert_eq!(guest.ok(json!({"op": "create", "room": "guest-default"})).await["kind"], "public");
    // Nobody owns it: neither its creator nor a signed-in user may manage it.
    guest.refused_with("forbidden", json!({"op": "add_member", "room": "guest-public", "user": "mark"})).await;
    let mut olivia = server.json_token(&token("olivia")).await;
    olivia.refused_with("forbidden", json!({"op": "add_member", "room": "guest-public", "user": "mark"})).await;
    olivia.refused_with("forbidden", json!({"op": "kick", "room": "guest-public", "user": "g_gus"})).await;
    let (status, body) = http_get(&server.http("/api/rooms/guest-public")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["kind"], "public");
}

#[tokio::test]
async fn a_signed_in_creator_owns_its_room_and_a_taken_name_is_a_conflict() {
    let server = spawn_with(with_secret).await;
    let mut olivia = server.json_token(&token("olivia")).await;
    let reply = olivia.ok(json!({"op": "create", "room": "club"})).await;
    assert_eq!((&reply["room"], &reply["kind"]), (&json!("club"), &json!("public")), "{reply}");
    olivia.ok(json!({"op": "add_member", "room": "club", "user": "mark", "role": "moderator"})).await;
    olivia.ok(json!({"op": "set_role", "room": "club", "user": "mark", "role": "member"})).await;

    let mut sam = server.json_token(&token("sam")).await;
    assert_eq!(sam.refused(json!({"op": "create", "room": "club"})).await, "conflict");
    assert_eq!(olivia.refused(json!({"op": "create", "room": "club"})).await, "conflict");
    let mut guest = server.json_guest("gus").await;
    guest.ok(json!({"op": "join", "room": "joined-first"})).await;
    assert_eq!(olivia.refused(json!({"op": "create", "room": "joined-first", "kind": "private"})).await, "conflict");
    let again = rest("POST", &server.http("/api/rooms"), Some(&token("sam")), Some(&json!({"name": "club"}))).await;
    assert_eq!(again.status, 409, "{}", again.body);
}

#[tokio::test]
async fn making_a_public_room_private_takes_its_non_members_out() {
    let server = spawn_with(with_secret).await;
    let mut olivia = owner_of(&server, "olivia", "turning", "public").await;
    olivia.ok(json!({"op": "add_member", "room": "turning", "user": "amy"})).await;
    let mut amy = server.json_token(&token("amy")).await;
    amy.ok(json!({"op": "join", "room": "turning"})).await;
    let mut mark = server.json_token(&token("mark")).await;
    mark.ok(json!({"op": "join", "room": "turning"})).await;

    let patched =
        rest("PATCH", &server.http("/api/rooms/turning"), Some(&token("olivia")), Some(&json!({"kind": "private"})))
            .await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    assert_eq!(patched.json()["kind"], "private");
    let removed = mark.next_event_of("removed").await;
    assert_eq!((&removed["room"], &removed["action"]), (&json!("turning"), &json!("kind")), "{removed}");
    mark.refused_with("forbidden", json!({"op": "send", "room": "turning", "text": "still here?"})).await;
    mark.refused_with("forbidden", json!({"op": "join", "room": "turning"})).await;
    amy.ok(json!({"op": "send", "room": "turning", "text": "members stay"})).await;
    assert_eq!(amy.next_message_text().await, "members stay");
}

#[tokio::test]
async fn who_is_online_in_a_private_room_is_for_its_members_only() {
    let server = spawn_with(with_secret).await;
    let _olivia = owner_of(&server, "olivia", "vault-members", "private").await;
    let mut sam = server.json_token(&token("sam")).await;
    let why = sam.refused_with("forbidden", json!({"op": "members", "room": "vault-members"})).await;
    assert!(why.contains("private"), "{why}");
    let mut olivia = server.json_token(&token("olivia")).await;
    let page = olivia.ok(json!({"op": "members", "room": "vault-members"})).await;
    assert_eq!(page["member_count"], 1, "{page}");
}

#[tokio::test]
async fn guests_hold_no_roles_because_anyone_can_take_their_name() {
    let server = spawn_with(with_secret).await;
    let mut olivia = owner_of(&server, "olivia", "vault-guests", "private").await;
    let why =
        olivia.refused_with("forbidden", json!({"op": "add_member", "room": "vault-guests", "user": "g_gina"})).await;
    assert!(why.contains("guest"), "{why}");
    let mut gina = server.json_guest("gina").await;
    gina.refused_with("forbidden", json!({"op": "join", "room": "vault-guests"})).await;
}

#[tokio::test]
async fn an_admins_token_publishes_over_rest_as_that_admin() {
    let server = spawn_with(with_secret_and_key).await;
    let mut olivia = owner_of(&server, "olivia", "news-admin", "broadcast").await;
    let body = json!({"text": "from the top"});
    let url = server.http("/api/rooms/news-admin/messages");
    let response = rest("POST", &url, Some(&admin_token("boss")), Some(&body)).await;
    assert_eq!(response.status, 201, "{}", response.body);
    let message = olivia.next_event_of("message").await;
    assert_eq!(message["from"]["id"], "boss", "{message}");
}
