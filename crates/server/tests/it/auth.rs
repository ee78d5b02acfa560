//! Identity: tokens checked at the upgrade (header or `?token=`), the user a good one
//! makes, expiry closing a live connection, and `refresh` keeping it open.

use std::time::{Duration, SystemTime};

use bavard::{app, config::AuthMode};
use jsonwebtoken::Algorithm;
use serde_json::json;

use crate::{helpers::*, jwt::*};

/// Every way of presenting `token` at an upgrade must be refused with 401 and a reason.
async fn assert_refused(server: &TestServer, what: &str, token: &str) {
    let bearer = format!("Bearer {token}");
    let header = JsonClient::connect(&server.ws("/ws"), &[("authorization", &bearer)]).await.err();
    let query = JsonClient::connect(&server.ws(&format!("/ws?token={token}")), &[]).await.err();
    let plain = open_websocket(&server.ws(&format!("/ws/chat/door?token={token}")), &[]).await.err();
    for (how, refused) in [("header", header), ("query", query), ("plain query", plain)] {
        let refused = refused.unwrap_or_else(|| panic!("{what} ({how}): accepted"));
        assert_eq!(refused.status, 401, "{what} ({how}): {refused:?}");
        assert!(!refused.body.trim().is_empty(), "{what} ({how}): a 401 says why");
    }
}

/// Connects with `token` as a bearer header and returns the welcome's user.
async fn welcome_user(server: &TestServer, token: &str) -> serde_json::Value {
    let bearer = format!("Bearer {token}");
    let client = JsonClient::connect(&server.ws("/ws"), &[("authorization", &bearer)]).await.unwrap();
    client.welcome["user"].clone()
}

#[tokio::test]
async fn each_rejected_token_kind_is_refused_with_401_at_upgrade_and_gets_no_session() {
    let server = spawn_with(jwt_only).await;
    for path in ["/ws", "/ws/chat", "/ws/chat/door", "/ws?name=guest"] {
        let Err(refused) = open_websocket(&server.ws(path), &[]).await else {
            panic!("{path}: no token in jwt mode was accepted")
        };
        assert_eq!(refused.status, 401, "{path} without a token: {refused:?}");
    }
    let in_an_hour = now() + 3600;
    let cases = [
        ("malformed", "not-a-jwt".to_owned()),
        ("malformed parts", "a.b.c".to_owned()),
        ("expired", hs256(SECRET, "alice", None, None, -30)),
        ("not yet valid", sign_hs256(SECRET, &json!({"sub": "alice", "exp": in_an_hour, "nbf": now() + 600}))),
        ("wrong signature", hs256("another-secret-0123456789abcdefgh", "alice", None, None, 3600)),
        ("alg none", unsigned(&claims("alice", 3600))),
        ("missing exp", sign_hs256(SECRET, &json!({"sub": "alice"}))),
        ("missing sub", sign_hs256(SECRET, &json!({"exp": in_an_hour}))),
        ("empty sub", token("")),
        ("guest sub", token("g_alice")),
        ("rest author sub", token("api:bot")),
        ("control character in sub", token("ali\u{7}ce")),
        ("sub too long", token(&"a".repeat(129))),
    ];
    for (what, token) in &cases {
        assert_refused(&server, what, token).await;
    }
    // No session was made: no connection counted, no room entered.
    for series in [r#"bavard_connections{protocol="json"}"#, r#"bavard_connections{protocol="plain"}"#] {
        assert_eq!(server.metric(series).await.unwrap_or(0.0), 0.0, "{series}");
    }
    assert_eq!(http_get(&server.http("/api/rooms/door")).await.0, 404, "the refused plain clients never joined");
    let (_, metrics) = http_get(&server.http("/metrics")).await;
    let failures: f64 = metrics
        .lines()
        .filter(|line| line.starts_with("bavard_auth_failures_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(failures >= cases.len() as f64, "auth failures are counted:\n{metrics}");
}

#[tokio::test]
async fn a_good_token_in_the_header_or_the_query_signs_the_user_in() {
    let server = spawn_with(jwt_only).await;
    let alice = hs256(SECRET, "alice-1", Some("Alice"), None, 3600);
    assert_eq!(welcome_user(&server, &alice).await, json!({"id": "alice-1", "name": "Alice"}));
    let mut by_query = server.json_token(&alice).await;
    assert_eq!(by_query.welcome["user"], json!({"id": "alice-1", "name": "Alice"}));
    // Without a name claim, the name is the sub cut to 32 characters.
    let long_sub = "u-0123456789abcdefghijklmnopqrstuvwxyz";
    let user = welcome_user(&server, &token(long_sub)).await;
    assert_eq!(user, json!({"id": long_sub, "name": &long_sub[..32]}));
    // Messages carry the token's user.
    by_query.ok(json!({"op": "join", "room": "signed"})).await;
    by_query.ok(json!({"op": "send", "room": "signed", "text": "hi"})).await;
    let message = by_query.next_event_of("message").await;
    assert_eq!(message["from"], json!({"id": "alice-1", "name": "Alice"}));
    // The plain-text route takes a token too.
    let mut plain = server.plain(&format!("/ws/chat/signed?token={alice}")).await;
    plain.send("plain hi").await;
    assert_eq!(plain.recv().await, "Message reçu : plain hi");
    let bearer = format!("Bearer {alice}");
    assert!(PlainClient::connect_with(&server.ws("/ws/chat/signed"), &[("authorization", &bearer)]).await.is_ok());
}

#[tokio::test]
async fn in_open_mode_guests_come_in_and_a_presented_token_is_verified() {
    let server = spawn_with(with_secret).await;
    let guest = server.json_guest("bob").await;
    assert_eq!(guest.welcome["user"]["id"], "g_bob");
    let user = welcome_user(&server, &hs256(SECRET, "alice", Some("Alice"), None, 3600)).await;
    assert_eq!(user, json!({"id": "alice", "name": "Alice"}));
    // A bad token is refused, not turned into a guest.
    assert_refused(&server, "expired in open mode", &hs256(SECRET, "alice", None, None, -30)).await;
    assert_refused(
        &server,
        "wrong signature in open mode",
        &hs256("not-the-secret-0123456789abcdef", "a", None, None, 60),
    )
    .await;
}

#[tokio::test]
async fn jwt_mode_without_a_key_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&dir.path().join("b.db"));
    config.auth = AuthMode::Jwt;
    assert!(within(app::start(config)).await.is_err(), "--auth jwt needs --jwt-secret or --jwt-public-key");
}

#[tokio::test]
async fn an_es256_server_takes_es256_tokens_only_and_refuses_algorithm_confusion() {
    let keys = KeyPair::es256();
    let public_file = keys.public_file.clone();
    let server = spawn_with(|c| {
        c.auth = AuthMode::Jwt;
        c.jwt_public_key = Some(public_file);
    })
    .await;
    let user = welcome_user(&server, &keys.sign(&json!({"sub": "erin", "name": "Erin", "exp": now() + 3600}))).await;
    assert_eq!(user, json!({"id": "erin", "name": "Erin"}));
    // HS256 "signed" with the public key's PEM: a verifier that takes the token's alg
    // would check it with the PEM bytes as an HMAC secret.
    assert_refused(
        &server,
        "HS256 with the public key as secret",
        &sign_hs256(&keys.public_pem, &claims("erin", 3600)),
    )
    .await;
    assert_refused(&server, "another EC key", &KeyPair::es256().sign(&claims("erin", 3600))).await;
    assert_refused(&server, "EdDSA", &KeyPair::ed25519().sign(&claims("erin", 3600))).await;
    assert_refused(&server, "HS256 with the test secret", &token("erin")).await;
    assert_refused(&server, "alg none", &unsigned(&claims("erin", 3600))).await;
}

#[tokio::test]
async fn an_eddsa_server_takes_eddsa_tokens_only() {
    let keys = KeyPair::ed25519();
    assert_eq!(keys.algorithm, Algorithm::EdDSA);
    let public_file = keys.public_file.clone();
    let server = spawn_with(|c| {
        c.auth = AuthMode::Jwt;
        c.jwt_public_key = Some(public_file);
    })
    .await;
    assert_eq!(welcome_user(&server, &keys.sign(&claims("dan", 3600))).await, json!({"id": "dan", "name": "dan"}));
    assert_refused(&server, "HS256 with the public key as secret", &sign_hs256(&keys.public_pem, &claims("dan", 3600)))
        .await;
    assert_refused(&server, "ES256", &KeyPair::es256().sign(&claims("dan", 3600))).await;
    assert_refused(&server, "another Ed25519 key", &KeyPair::ed25519().sign(&claims("dan", 3600))).await;
}

#[tokio::test]
async fn a_wrong_audience_or_issuer_is_refused_when_they_are_configured() {
    let server = spawn_with(|c| {
        jwt_only(c);
        c.jwt_audience = Some("bavard-chat".to_owned());
        c.jwt_issuer = Some("https://id.example".to_owned());
    })
    .await;
    let with = |aud: Option<&str>, iss: Option<&str>| {
        let mut claims = claims("ines", 3600);
        if let Some(aud) = aud {
            claims["aud"] = aud.into();
        }
        if let Some(iss) = iss {
            claims["iss"] = iss.into();
        }
        sign_hs256(SECRET, &claims)
    };
    let good = with(Some("bavard-chat"), Some("https://id.example"));
    assert_eq!(welcome_user(&server, &good).await["id"], "ines");
    assert_refused(&server, "wrong audience", &with(Some("other-app"), Some("https://id.example"))).await;
    assert_refused(&server, "wrong issuer", &with(Some("bavard-chat"), Some("https://evil.example"))).await;
    assert_refused(&server, "no audience", &with(None, Some("https://id.example"))).await;
    assert_refused(&server, "no issuer", &with(Some("bavard-chat"), None)).await;
    // Unconfigured, they are not checked.
    let lenient = spawn_with(jwt_only).await;
    let user = welcome_user(&lenient, &with(Some("other-app"), Some("https://anyone.example"))).await;
    assert_eq!(user["id"], "ines");
}

#[tokio::test]
async fn an_expired_token_closes_its_connection_with_1008() {
    let server = spawn_with(with_secret).await;
    let short = hs256(SECRET, "eve", None, None, 2);
    let mut json_client = server.json_token(&short).await;
    json_client.ok(json!({"op": "join", "room": "clock"})).await;
    let mut plain = server.plain(&format!("/ws/chat/clock?token={short}")).await;
    let (code, reason) = json_client.closed().await;
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("expired"), "{reason}");
    assert_eq!(plain.close_code().await, 1008);
}

#[tokio::test]
async fn a_refresh_before_expiry_keeps_the_connection_open_past_the_first_exp() {
    let server = spawn_with(with_secret).await;
    let first_exp = now() + 2;
    let mut client = server.json_token(&sign_hs256(SECRET, &json!({"sub": "rita", "exp": first_exp}))).await;
    let reply = client.ok(json!({"op": "refresh", "token": hs256(SECRET, "rita", None, None, 60)})).await;
    let expires = reply["expires"].as_str().unwrap_or_else(|| panic!("an RFC 3339 expiry: {reply}"));
    assert!(expires.contains('T') && expires.len() >= 20, "{expires}");
    // Waiting for the wall clock to pass the first token's exp is the behaviour itself.
    let past_first_exp = SystemTime::UNIX_EPOCH + Duration::from_secs(first_exp as u64 + 1);
    if let Ok(wait) = past_first_exp.duration_since(SystemTime::now()) {
        tokio::time::sleep(wait).await;
    }
    let reply = client.ok(json!({"op": "ping"})).await;
    assert_eq!(reply["type"], "reply");
}

#[tokio::test]
async fn a_refresh_with_another_users_or_a_bad_token_is_unauthorized_and_the_old_expiry_stands() {
    let server = spawn_with(with_secret).await;
    let mut client = server.json_token(&hs256(SECRET, "alice", None, None, 3)).await;
    let other_user = hs256(SECRET, "bob", None, None, 60);
    assert_eq!(client.refused(json!({"op": "refresh", "token": other_user})).await, "unauthorized");
    let expired = hs256(SECRET, "alice", None, None, -30);
    assert_eq!(client.refused(json!({"op": "refresh", "token": expired})).await, "unauthorized");
    let forged = hs256("not-the-secret-0123456789abcdef", "alice", None, None, 60);
    assert_eq!(client.refused(json!({"op": "refresh", "token": forged})).await, "unauthorized");
    client.ok(json!({"op": "ping"})).await;
    let (code, reason) = client.closed().await;
    assert_eq!(code, 1008, "the first token's expiry still closes the connection: {reason}");
}

#[tokio::test]
async fn a_guest_refresh_is_a_bad_request() {
    let server = spawn_with(with_secret).await;
    let mut guest = server.json_guest("gus").await;
    assert_eq!(guest.refused(json!({"op": "refresh", "token": token("gus")})).await, "bad_request");
    guest.ok(json!({"op": "ping"})).await;
}
