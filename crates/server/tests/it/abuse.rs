//! Abuse limits: a user's message rate across its connections and REST, connections per
//! client address, rooms per connection; each refusal counted.

use std::time::Duration;

use serde_json::json;

use crate::{helpers::*, jwt::*};

fn send(room: &str, text: &str) -> serde_json::Value {
    json!({"op": "send", "room": room, "text": text})
}

#[tokio::test]
async fn a_users_rate_counts_every_connection_of_it_and_no_one_elses() {
    let server = spawn_with(|c| {
        with_secret(c);
        c.user_rate_per_second = 1.0;
        c.user_rate_burst = 2;
    })
    .await;
    let mut mark_1 = server.json_token(&token("mark")).await;
    let mut mark_2 = server.json_token(&token("mark")).await;
    let mut sam = server.json_token(&token("sam")).await;
    for client in [&mut mark_1, &mut mark_2, &mut sam] {
        client.ok(json!({"op": "join", "room": "busy"})).await;
    }
    let mut limited = 0;
    for i in 0..4 {
        let client = if i % 2 == 0 { &mut mark_1 } else { &mut mark_2 };
        let reply = client.request(send("busy", &format!("m{i}"))).await;
        if reply["ok"] != true {
            assert_eq!(reply["error"]["code"], "rate_limited", "{reply}");
            limited += 1;
        }
    }
    assert!(limited >= 1, "4 sends at once over a burst of 2 on two connections of one user");
    for i in 0..2 {
        sam.ok(send("busy", &format!("sam {i}"))).await;
    }
    let refusals = server.metric(r#"bavard_limit_refusals_total{limit="user_rate"}"#).await;
    assert!(refusals.unwrap_or(0.0) >= 1.0, "{refusals:?}");
}

#[tokio::test]
async fn a_users_rate_covers_its_rest_publishes() {
    let server = spawn_with(|c| {
        with_secret(c);
        c.user_rate_per_second = 0.01;
        c.user_rate_burst = 1;
    })
    .await;
    let mut mark = server.json_token(&token("mark")).await;
    mark.ok(json!({"op": "join", "room": "busy-rest"})).await;
    mark.ok(send("busy-rest", "the one")).await;
    let url = server.http("/api/rooms/busy-rest/messages");
    let refused = rest("POST", &url, Some(&token("mark")), Some(&json!({"text": "one more"}))).await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    let accepted = rest("POST", &url, Some(&token("sam")), Some(&json!({"text": "sam's"}))).await;
    assert_eq!(accepted.status, 201, "{}", accepted.body);
}

#[tokio::test]
async fn a_third_connection_from_one_address_gets_429_until_one_closes() {
    let server = spawn_with(|c| c.max_connections_per_ip = 2).await;
    let first = server.json_guest("one").await;
    let _second = server.plain("/ws/chat").await;
    for path in ["/ws?name=three", "/ws/chat"] {
        let Err(refused) = open_websocket(&server.ws(path), &[]).await else {
            panic!("{path}: a third connection was accepted")
        };
        assert_eq!(refused.status, 429, "{path}: {refused:?}");
    }
    first.close().await;
    // The server lets the address in again once it has seen the close.
    let third = within(async {
        loop {
            match JsonClient::connect(&server.ws("/ws?name=three"), &[]).await {
                Ok(client) => break client,
                Err(refused) => assert_eq!(refused.status, 429, "{refused:?}"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(third.welcome["user"]["id"], "g_three");
    let refusals = server.metric(r#"bavard_limit_refusals_total{limit="connections_per_ip"}"#).await;
    assert!(refusals.unwrap_or(0.0) >= 2.0, "{refusals:?}");
}

#[tokio::test]
async fn a_connection_joins_only_so_many_rooms_at_once() {
    let server = spawn_with(|c| c.max_rooms_per_connection = 2).await;
    let mut client = server.json_guest("roamer").await;
    client.ok(json!({"op": "join", "room": "first"})).await;
    client.ok(json!({"op": "join", "room": "second"})).await;
    let why = client.refused_with("forbidden", json!({"op": "join", "room": "third"})).await;
    assert!(why.contains('2'), "{why}");
    client.ok(json!({"op": "leave", "room": "first"})).await;
    client.ok(json!({"op": "join", "room": "third"})).await;
    client.ok(send("third", "made it")).await;
    // The limit is per connection.
    let mut other = server.json_guest("roamer").await;
    other.ok(json!({"op": "join", "room": "first"})).await;
    other.ok(json!({"op": "join", "room": "second"})).await;
    let refusals = server.metric(r#"bavard_limit_refusals_total{limit="rooms_per_connection"}"#).await;
    assert!(refusals.unwrap_or(0.0) >= 1.0, "{refusals:?}");
}
