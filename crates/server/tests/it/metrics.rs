//! `GET /metrics`: the Prometheus text format, and metrics that follow the traffic.
//!
//! Tests run in parallel in one process, each with its own server: the exact counts
//! asserted here also check that every server counts in its own registry.

use std::time::Duration;

use bavard_protocol::{Request, SendRequest};

use crate::{helpers::*, json::next_message};

const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every metric family, with its type.
const FAMILIES: [(&str, &str); 10] = [
    ("bavard_connections", "gauge"),
    ("bavard_rooms", "gauge"),
    ("bavard_messages_accepted_total", "counter"),
    ("bavard_deliveries_total", "counter"),
    ("bavard_slow_consumer_closes_total", "counter"),
    ("bavard_rate_limited_frames_total", "counter"),
    ("bavard_store_commit_seconds", "histogram"),
    ("bavard_store_commit_batch_messages", "histogram"),
    ("bavard_delivery_latency_seconds", "histogram"),
    ("bavard_http_requests_total", "counter"),
];

/// `GET /metrics` over a real socket: (status, content type, body).
async fn scrape(server: &TestServer) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = within(tokio::net::TcpStream::connect(server.addr)).await.unwrap();
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", server.addr);
    within(stream.write_all(request.as_bytes())).await.unwrap();
    let mut response = Vec::new();
    within(stream.read_to_end(&mut response)).await.unwrap();
    let response = String::from_utf8(response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head[9..12].parse().unwrap();
    let content_type = head.lines().find_map(|line| line.strip_prefix("content-type: ")).unwrap_or_default().to_owned();
    (status, content_type, body.to_owned())
}

/// The value of the sample `series` (name and labels, as written) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Scrapes until every `(series, value)` reads as expected (bounded by [`WAIT`]): the
/// dispatcher adds its counts just after the pushes a client may already have read.
async fn expect_samples(server: &TestServer, expected: &[(&str, f64)]) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, _, text) = scrape(server).await;
        let wrong: Vec<_> = expected
            .iter()
            .filter(|(series, value)| sample(&text, series) != Some(*value))
            .map(|(series, value)| format!("{series}: expected {value}, got {:?}", sample(&text, series)))
            .collect();
        if wrong.is_empty() {
            return text;
        }
        assert!(tokio::time::Instant::now() < deadline, "{wrong:#?}\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn metrics_are_served_in_the_prometheus_text_format_with_help_and_type_lines() {
    let server = spawn().await;
    // Requests are counted once answered: the first scrape shows the second's route.
    let (status, _) = http_get(&server.http("/healthz")).await;
    assert_eq!(status, 200);
    let (status, content_type, text) = scrape(&server).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(content_type, PROMETHEUS_TEXT);
    for (family, kind) in FAMILIES {
        assert!(text.lines().any(|l| l.starts_with(&format!("# HELP {family} "))), "no HELP for {family}:\n{text}");
        assert!(text.lines().any(|l| l == format!("# TYPE {family} {kind}")), "no TYPE for {family}:\n{text}");
    }
    for series in [
        r#"bavard_connections{protocol="json"}"#,
        r#"bavard_connections{protocol="plain"}"#,
        r#"bavard_messages_accepted_total{route="ws"}"#,
        r#"bavard_messages_accepted_total{route="plain"}"#,
        r#"bavard_messages_accepted_total{route="rest"}"#,
        "bavard_delivery_latency_seconds_count",
        "bavard_store_commit_seconds_count",
        "bavard_store_commit_batch_messages_count",
    ] {
        assert_eq!(sample(&text, series), Some(0.0), "{series} on a fresh server:\n{text}");
    }
    assert_eq!(sample(&text, r#"bavard_http_requests_total{route="/healthz",status="200"}"#), Some(1.0), "{text}");
}

#[tokio::test]
async fn metrics_follow_connections_messages_deliveries_commits_and_requests() {
    let server = spawn().await;
    let m = room("m");
    let mut alice = server.json("alice").await;
    within(alice.join(&m, None)).await.unwrap();
    let mut plain = server.plain("/ws/chat/m").await;
    // The plain client's own message coming back shows it is in the room.
    plain.send("bonjour").await;
    assert_eq!(plain.recv().await, "Message reçu : bonjour");
    assert_eq!(next_message(&mut alice).await.text, "bonjour");
    within(alice.send(&m, "hello", None)).await.unwrap();
    assert_eq!(next_message(&mut alice).await.text, "hello");
    assert_eq!(plain.recv().await, "Message reçu : hello");

    let text = expect_samples(
        &server,
        &[
            (r#"bavard_connections{protocol="json"}"#, 1.0),
            (r#"bavard_connections{protocol="plain"}"#, 1.0),
            ("bavard_rooms", 1.0),
            (r#"bavard_messages_accepted_total{route="ws"}"#, 1.0),
            (r#"bavard_messages_accepted_total{route="plain"}"#, 1.0),
            (r#"bavard_messages_accepted_total{route="rest"}"#, 0.0),
            // Two messages, each to two members.
            ("bavard_deliveries_total", 4.0),
            ("bavard_delivery_latency_seconds_count", 2.0),
            ("bavard_store_commit_batch_messages_sum", 2.0),
            (r#"bavard_http_requests_total{route="/ws",status="101"}"#, 1.0),
            (r#"bavard_http_requests_total{route="/ws/chat/{room}",status="101"}"#, 1.0),
            ("bavard_slow_consumer_closes_total", 0.0),
            ("bavard_rate_limited_frames_total", 0.0),
        ],
    )
    .await;
    // One commit per message, or both in one batch.
    let commits = sample(&text, "bavard_store_commit_seconds_count").unwrap();
    assert!((1.0..=2.0).contains(&commits), "{commits} commits:\n{text}");
    assert_eq!(sample(&text, r#"bavard_delivery_latency_seconds_bucket{le="+Inf"}"#), Some(2.0), "{text}");

    // Requests are labelled by route pattern, never by raw path.
    assert_eq!(http_get(&server.http("/api/rooms")).await.0, 200);
    assert_eq!(http_get(&server.http("/no/such/page")).await.0, 404);
    assert_eq!(http_get(&server.http("/api/rooms?limit=0")).await.0, 400);
    let text = expect_samples(
        &server,
        &[
            (r#"bavard_http_requests_total{route="/api/rooms",status="200"}"#, 1.0),
            (r#"bavard_http_requests_total{route="/api/rooms",status="400"}"#, 1.0),
            (r#"bavard_http_requests_total{route="unmatched",status="404"}"#, 1.0),
        ],
    )
    .await;
    assert!(!text.contains("/no/such/page"), "{text}");

    // Closed connections leave the gauges, and the emptied room goes with them.
    alice.close().await;
    drop(plain);
    expect_samples(
        &server,
        &[
            (r#"bavard_connections{protocol="json"}"#, 0.0),
            (r#"bavard_connections{protocol="plain"}"#, 0.0),
            ("bavard_rooms", 0.0),
        ],
    )
    .await;
}

#[tokio::test]
async fn rate_limited_frames_are_counted() {
    let server = spawn_with(|c| {
        c.rate_per_second = 5.0;
        c.rate_burst = 5;
        c.rate_strikes = 3;
    })
    .await;
    let mut client = server.json("flood").await;
    // Pings until the third strike closes the connection with 4029.
    let end = loop {
        if let Err(e) = client.send_text(r#"{"op":"ping","id":1}"#.into()).await {
            break e;
        }
        if let Err(e) = within(client.next_event()).await {
            break e;
        }
    };
    assert_eq!(end.close_code(), Some(4029), "{end}");
    // Two rate_limited errors, then the frame of the third strike.
    expect_samples(&server, &[("bavard_rate_limited_frames_total", 3.0), ("bavard_slow_consumer_closes_total", 0.0)])
        .await;
}

#[tokio::test]
async fn a_slow_consumer_close_is_counted() {
    let server = spawn_with(|c| {
        c.outbox_frames = 16;
        c.max_text_chars = 60_000;
    })
    .await;
    let flood = room("flood");
    // A plain-text member that never reads.
    let _slow = raw_websocket(server.addr, "/ws/chat/flood").await;
    let mut writer = server.json("writer").await;
    within(writer.join(&flood, None)).await.unwrap();
    let text = "x".repeat(60_000);
    // Up to 24 MB for a member that reads nothing: more than loopback buffers hold, so
    // its outbox overflows. The writer reads its own copies while it waits for acks.
    for _ in 0..400 {
        let send = SendRequest { room: flood.clone(), text: text.clone(), key: None, reply_to: None, stream: false };
        let id = within(writer.submit(Request::Send(send))).await.unwrap();
        assert!(within(writer.reply_to(&id)).await.unwrap().ok);
        let (_, _, metrics) = scrape(&server).await;
        if sample(&metrics, "bavard_slow_consumer_closes_total") == Some(1.0) {
            return;
        }
        while let Some(Ok(_)) = writer.try_next_event() {}
    }
    panic!("the member that reads nothing was never closed with 4008");
}
