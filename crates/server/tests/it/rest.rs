//! The REST API on the real server: rooms, history, publish (reaching live WebSocket
//! and plain-text members), members, the API key, errors for bad input, and the
//! OpenAPI document and `/docs` page.

use bavard_protocol::ServerFrame;
use serde_json::json;

use crate::helpers::*;

/// The next `message` event of `connection` (other events skipped): (seq, author, text).
async fn next_message(connection: &mut bavard_client::Connection) -> (u64, String, String) {
    loop {
        if let ServerFrame::Message(message) = within(connection.next_event()).await.unwrap() {
            return (message.seq, message.from.name, message.text);
        }
    }
}

fn error_code(response: &HttpResponse) -> String {
    response.json()["error"]["code"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn rooms_are_created_described_retitled_and_listed() {
    let server = spawn().await;
    let created = http_json("POST", &server.http("/api/rooms"), &json!({"name": "lobby", "topic": "say hi"})).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let lobby = created.json();
    assert_eq!(
        (&lobby["room"], &lobby["topic"], &lobby["kind"]),
        (&json!("lobby"), &json!("say hi"), &json!("public"))
    );
    assert_eq!((&lobby["online"], &lobby["last_seq"]), (&json!(0), &json!(0)));
    assert!(lobby["created_ts"].is_string() && lobby["last_ts"].is_string(), "{lobby}");

    let again = http_json("POST", &server.http("/api/rooms"), &json!({"name": "lobby"})).await;
    assert_eq!((again.status, error_code(&again).as_str()), (409, "conflict"), "{}", again.body);

    let patched = http_json("PATCH", &server.http("/api/rooms/lobby"), &json!({"topic": "new topic"})).await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    assert_eq!(patched.json()["topic"], "new topic");
    let (status, body) = http_get(&server.http("/api/rooms/lobby")).await;
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["topic"], "new topic");

    // A room written to over the WebSocket is listed too, most recently active first.
    let mut alice = server.json("alice").await;
    within(alice.join(&room("chatter"), None)).await.unwrap();
    within(alice.send(&room("chatter"), "hello", None)).await.unwrap();
    let (status, body) = http_get(&server.http("/api/rooms")).await;
    assert_eq!(status, 200, "{body}");
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = listed["rooms"].as_array().unwrap().iter().map(|r| r["room"].as_str().unwrap()).collect();
    assert_eq!(names, ["chatter", "lobby"]);
    assert_eq!(listed["rooms"][0]["online"], 1);
}

/// A request that must fail: method, path, headers, body, status and error code.
type BadRequest<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, Vec<u8>, u16, &'a str);

#[tokio::test]
async fn unknown_rooms_and_bad_input_get_json_errors_with_the_right_status() {
    let server = spawn().await;
    let url = |path: &str| server.http(path);
    let (status, body) = http_get(&url("/api/rooms/nowhere")).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains(r#""code":"not_found""#), "{body}");
    for path in ["/api/rooms/nowhere/messages", "/api/rooms/nowhere/members"] {
        assert_eq!(http_get(&url(path)).await.0, 404, "{path}");
    }
    let patched = http_json("PATCH", &url("/api/rooms/nowhere"), &json!({"topic": "x"})).await;
    assert_eq!(patched.status, 404, "{}", patched.body);
    let posted = http_json("POST", &url("/api/rooms/nowhere/messages"), &json!({"text": "x"})).await;
    assert_eq!(posted.status, 404, "{}", posted.body);

    let cases: Vec<BadRequest> = vec![
        ("GET", "/api/rooms/bad%20name", vec![], vec![], 400, "bad_request"),
        ("GET", "/api/rooms?limit=abc", vec![], vec![], 400, "bad_request"),
        ("POST", "/api/rooms", vec![("Content-Type", "application/json")], b"{not json".to_vec(), 400, "bad_request"),
        (
            "POST",
            "/api/rooms",
            vec![("Content-Type", "application/json")],
            br#"{"name": "bad name"}"#.to_vec(),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/rooms",
            vec![("Content-Type", "application/json")],
            br#"{"topic": "no name"}"#.to_vec(),
            400,
            "bad_request",
        ),
        ("POST", "/api/rooms", vec![("Content-Type", "text/plain")], br#"{"name": "x"}"#.to_vec(), 415, "bad_request"),
        ("POST", "/api/rooms", vec![], br#"{"name": "x"}"#.to_vec(), 415, "bad_request"),
        ("POST", "/api/rooms", vec![("Content-Type", "application/json")], vec![b' '; 70_000], 413, "too_large"),
        (
            "POST",
            "/api/rooms",
            vec![("Content-Type", "application/json")],
            format!(r#"{{"name": "x", "topic": "{}"}}"#, "t".repeat(300)).into_bytes(),
            400,
            "bad_request",
        ),
    ];
    for (method, path, headers, body, status, code) in cases {
        let response = http(method, &url(path), &headers, Some(&body)).await;
        assert_eq!(
            (response.status, error_code(&response).as_str()),
            (status, code),
            "{method} {path}: {}",
            response.body
        );
    }
}

#[tokio::test]
async fn a_rest_publish_reaches_json_and_plain_members_and_a_retried_key_stores_one_message() {
    let server = spawn().await;
    let lobby = room("lobby");
    let mut alice = server.json("alice").await;
    within(alice.join(&lobby, None)).await.unwrap();
    let mut plain = server.plain("/ws/chat/lobby").await;

    let url = server.http("/api/rooms/lobby/messages");
    let body = json!({"text": "from the backend", "from": {"name": "bot"}}).to_string();
    let headers = [("Content-Type", "application/json"), ("Idempotency-Key", "order-42")];
    let first = http("POST", &url, &headers, Some(body.as_bytes())).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let reply = first.json();
    assert_eq!(reply["seq"], 1);
    assert_eq!(reply.get("duplicate"), None, "a first publish is no duplicate: {reply}");
    assert!(reply["ts"].is_string(), "{reply}");
    assert_eq!(next_message(&mut alice).await, (1, "bot".to_owned(), "from the backend".to_owned()));
    assert_eq!(plain.recv().await, "Message reçu : from the backend");

    let retry = http("POST", &url, &headers, Some(body.as_bytes())).await;
    assert_eq!(retry.status, 201, "{}", retry.body);
    assert_eq!((&retry.json()["seq"], &retry.json()["duplicate"]), (&json!(1), &json!(true)));
    // The retry delivered nothing: the next message each member gets is a later marker.
    within(alice.send(&lobby, "marker", None)).await.unwrap();
    assert_eq!(next_message(&mut alice).await, (2, "alice".to_owned(), "marker".to_owned()));
    assert_eq!(plain.recv().await, "Message reçu : marker");

    let (status, body) = http_get(&server.http("/api/rooms/lobby/messages")).await;
    assert_eq!(status, 200, "{body}");
    let history: serde_json::Value = serde_json::from_str(&body).unwrap();
    let texts: Vec<&str> =
        history["messages"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["from the backend", "marker"]);
    assert_eq!(history["messages"][0]["from"], json!({"id": "api:bot", "name": "bot"}));

    let (_, metrics) = http_get(&server.http("/metrics")).await;
    let rest_accepted = metrics
        .lines()
        .find_map(|line| line.strip_prefix(r#"bavard_messages_accepted_total{route="rest"} "#))
        .and_then(|count| count.trim().parse::<f64>().ok());
    assert_eq!(rest_accepted, Some(2.0), "the publish and its retry were accepted for commit:\n{metrics}");

    // The same validation as a WebSocket send.
    let empty = http_json("POST", &url, &json!({"text": ""})).await;
    assert_eq!((empty.status, error_code(&empty).as_str()), (400, "bad_request"));
    let long = http_json("POST", &url, &json!({"text": "x".repeat(5000)})).await;
    assert_eq!((long.status, error_code(&long).as_str()), (413, "too_large"), "{}", long.body);
    let key = "k".repeat(65);
    let bad_key = http(
        "POST",
        &url,
        &[("Content-Type", "application/json"), ("Idempotency-Key", &key)],
        Some(br#"{"text":"x"}"#),
    )
    .await;
    assert_eq!(bad_key.status, 400, "{}", bad_key.body);
    let nameless = http_json("POST", &url, &json!({"text": "x", "from": {"name": "  "}})).await;
    assert_eq!(nameless.status, 400, "{}", nameless.body);
}

/// What schemathesis (CI) found: the server accepts what `/openapi.json` calls valid and
/// refuses what it calls invalid, at the edges the document draws.
#[tokio::test]
async fn the_api_takes_what_its_document_allows_and_refuses_the_rest() {
    let server = spawn().await;
    let created = http_json("POST", &server.http("/api/rooms"), &json!({"name": "lobby"})).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let url = server.http("/api/rooms/lobby/messages");
    // A reply answers a message that exists: seq 1.
    let first = http_json("POST", &url, &json!({"text": "first"})).await;
    assert_eq!(first.status, 201, "{}", first.body);
    // JSON Schema counts 1.0 as an integer.
    let whole =
        http("POST", &url, &[("Content-Type", "application/json")], Some(br#"{"text":"a","reply_to":1.0}"#)).await;
    assert_eq!(whole.status, 201, "{}", whole.body);
    let (status, body) = http_get(&server.http("/api/rooms/lobby/messages")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["messages"][1]["reply_to"], 1);
    let fraction =
        http("POST", &url, &[("Content-Type", "application/json")], Some(br#"{"text":"a","reply_to":1.5}"#)).await;
    assert_eq!(fraction.status, 400, "{}", fraction.body);
    // Seqs are int64 in the document.
    let beyond = http_json("POST", &url, &json!({"text": "a", "reply_to": 9_223_372_036_854_775_808u64})).await;
    assert_eq!(beyond.status, 400, "{}", beyond.body);
    for query in ["before=9223372036854775808", "after=9223372036854775808"] {
        let (status, body) = http_get(&server.http(&format!("/api/rooms/lobby/messages?{query}"))).await;
        assert_eq!(status, 400, "{query}: {body}");
    }
    let (status, body) = http_get(&server.http("/api/rooms/lobby/messages?after=9223372036854775807&before=5")).await;
    assert_eq!(status, 200, "{body}");
    // A members cursor is a number as the server writes it.
    assert_eq!(http_get(&server.http("/api/rooms/lobby/members?cursor=0")).await.0, 200);
    for cursor in ["007", "%2B7", "10000000000000000000"] {
        let (status, body) = http_get(&server.http(&format!("/api/rooms/lobby/members?cursor={cursor}"))).await;
        assert_eq!(status, 400, "{cursor}: {body}");
    }
    // The document gives this server's text limit.
    let (status, body) = http_get(&server.http("/openapi.json")).await;
    assert_eq!(status, 200);
    let document: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(document["components"]["schemas"]["NewMessage"]["properties"]["text"]["maxLength"], 4000);
}

#[tokio::test]
async fn history_pages_like_the_history_op_and_members_lists_who_is_online() {
    let server = spawn().await;
    let mut alice = server.json("alice").await;
    let lobby = room("lobby");
    within(alice.join(&lobby, None)).await.unwrap();
    for n in 1..=5 {
        within(alice.send(&lobby, &format!("m{n}"), None)).await.unwrap();
    }
    let page = |query: &'static str| {
        let url = server.http(&format!("/api/rooms/lobby/messages{query}"));
        async move {
            let (status, body) = http_get(&url).await;
            assert_eq!(status, 200, "{body}");
            let page: serde_json::Value = serde_json::from_str(&body).unwrap();
            let seqs: Vec<u64> =
                page["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect();
            (seqs, page["has_more"].as_bool().unwrap())
        }
    };
    assert_eq!(page("?limit=2").await, (vec![4, 5], true));
    assert_eq!(page("?before=4&limit=2").await, (vec![2, 3], true));
    assert_eq!(page("?after=1&limit=2").await, (vec![2, 3], true));
    assert_eq!(page("?after=3").await, (vec![4, 5], false));
    assert_eq!(http_get(&server.http("/api/rooms/lobby/messages?limit=201")).await.0, 400);

    let (status, body) = http_get(&server.http("/api/rooms/lobby/members")).await;
    assert_eq!(status, 200, "{body}");
    let members: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(members["member_count"], 1);
    assert_eq!(members["members"][0]["name"], "alice");
    assert_eq!(http_get(&server.http("/api/rooms/lobby/members?limit=0")).await.0, 400);
    assert_eq!(http_get(&server.http("/api/rooms/lobby/members?cursor=nope")).await.0, 400);
}

#[tokio::test]
async fn writes_need_the_api_key_when_one_is_configured() {
    let server = spawn_with(|config| config.api_key = Some("s3cret".to_owned())).await;
    let url = server.http("/api/rooms");
    let body = br#"{"name": "lobby"}"#;
    let json = ("Content-Type", "application/json");
    for headers in [vec![json], vec![json, ("Authorization", "Bearer wrong")], vec![json, ("Authorization", "s3cret")]]
    {
        let refused = http("POST", &url, &headers, Some(body)).await;
        assert_eq!((refused.status, error_code(&refused).as_str()), (401, "unauthorized"), "{headers:?}");
    }
    let accepted = http("POST", &url, &[json, ("Authorization", "Bearer s3cret")], Some(body)).await;
    assert_eq!(accepted.status, 201, "{}", accepted.body);
    // Reads stay open.
    assert_eq!(http_get(&server.http("/api/rooms/lobby")).await.0, 200);
}

#[tokio::test]
async fn the_openapi_document_and_the_docs_page_are_served_from_the_binary() {
    let server = spawn().await;
    let served = http("GET", &server.http("/openapi.json"), &[], None).await;
    assert_eq!(served.status, 200);
    assert_eq!(served.header("content-type"), Some("application/json"));
    let document = served.json();
    assert!(document["openapi"].as_str().unwrap().starts_with("3.1"));
    assert!(document["paths"]["/api/rooms/{room}/messages"]["post"].is_object());

    let page = http("GET", &server.http("/docs/"), &[], None).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("swagger-ui"), "{}", page.body);
    // Every asset the page names is served here, and no address outside the server.
    let assets: Vec<&str> = page
        .body
        .split(['"', '\''])
        .filter(|part| part.ends_with(".js") || part.ends_with(".css") || part.ends_with(".png"))
        .collect();
    assert!(!assets.is_empty(), "{}", page.body);
    for asset in assets {
        assert!(!asset.contains("://"), "the page loads {asset} from outside");
        let asset = asset.trim_start_matches("./");
        let response = http("GET", &server.http(&format!("/docs/{asset}")), &[], None).await;
        assert_eq!(response.status, 200, "/docs/{asset}");
    }
    let initializer = http("GET", &server.http("/docs/swagger-initializer.js"), &[], None).await;
    assert_eq!(initializer.status, 200);
    assert!(initializer.body.contains("/openapi.json"), "{}", initializer.body);
    assert!(!initializer.body.contains("https://"), "{}", initializer.body);
}

#[tokio::test]
async fn writes_past_the_rate_of_one_address_get_429() {
    let server = spawn_with(|config| {
        config.api_rate_per_second = 0.001;
        config.api_rate_burst = 2;
    })
    .await;
    let url = server.http("/api/rooms");
    for name in ["one", "two"] {
        let created = http_json("POST", &url, &json!({"name": name})).await;
        assert_eq!(created.status, 201, "{}", created.body);
    }
    let refused = http_json("POST", &url, &json!({"name": "three"})).await;
    assert_eq!((refused.status, error_code(&refused).as_str()), (429, "rate_limited"), "{}", refused.body);
    // Reads are not counted.
    assert_eq!(http_get(&server.http("/api/rooms/one")).await.0, 200);
}
