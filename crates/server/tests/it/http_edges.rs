//! Slow-loris and half-open HTTP: connections that never send a complete request head
//! (silent, drip-fed, stuck in the TLS handshake) are closed after
//! `--request-head-timeout-secs`, at most `--max-unfinished-requests` of them are held
//! at once (a newcomer closes the oldest), idle keep-alive connections are closed after
//! the same time, and clients that are slow but finish in time, and open WebSockets,
//! are not disturbed. A request body not complete within `--request-body-timeout-secs`
//! of its head is answered 408 and its connection closed.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use serde_json::json;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::{
    helpers::{http_exchange, http_get, http_json, spawn_with, within, TestServer},
    tls::Pki,
};

/// A server whose request heads must be complete within `head_timeout` seconds (and
/// request bodies within as long of their heads), with at most `max_unfinished`
/// connections waiting for a head.
async fn server(head_timeout: f64, max_unfinished: usize) -> TestServer {
    spawn_with(|c| {
        c.request_head_timeout_secs = head_timeout;
        c.request_body_timeout_secs = head_timeout;
        c.max_unfinished_requests = max_unfinished;
    })
    .await
}

/// A server whose request bodies must be complete within 1 s of their heads (heads
/// have the default 10 s: only the body bound can cut anything off), with a room
/// `lobby` to post to.
async fn body_server() -> TestServer {
    let server = spawn_with(|c| c.request_body_timeout_secs = 1.0).await;
    let created = http_json("POST", &server.http("/api/rooms"), &json!({"name": "lobby"})).await;
    assert_eq!(created.status, 201, "{}", created.body);
    server
}

/// The head of a JSON `POST /api/rooms/lobby/messages` whose body is `body`.
fn post_head(body: &str) -> String {
    format!(
        "POST /api/rooms/lobby/messages HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
}

async fn connect(addr: SocketAddr) -> TcpStream {
    within(TcpStream::connect(addr)).await.unwrap()
}

/// Reads (and drops) what the server sends until it closes the connection, for at most
/// `limit`: how long that took, or None if the connection was still open.
async fn closed_within<S: AsyncRead + Unpin>(stream: &mut S, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

/// Whether the connection is still open (nothing to read, no end) after `wait`.
async fn still_open(stream: &mut TcpStream, wait: Duration) -> bool {
    closed_within(stream, wait).await.is_none()
}

/// Reads one response with a `Content-Length` body off a keep-alive connection.
async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let text = String::from_utf8_lossy(&received).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= length {
                let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
                return (status, body[..length].to_owned());
            }
        }
        let n = within(stream.read(&mut buf)).await.unwrap();
        assert!(n > 0, "the connection closed mid-response: {text:?}");
        received.extend_from_slice(&buf[..n]);
    }
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_head_timeout() {
    let server = server(1.0, 1024).await;
    let mut silent = connect(server.addr).await;
    let took = closed_within(&mut silent, Duration::from_secs(6)).await.expect("the silent connection is still open");
    assert!(took >= Duration::from_millis(900), "closed after {took:?}, before the bound");
    // A connection that sent part of a head is held no longer.
    let mut partial = connect(server.addr).await;
    partial.write_all(b"GET /healthz HTTP/1.1\r\nHost: loc").await.unwrap();
    assert!(closed_within(&mut partial, Duration::from_secs(6)).await.is_some(), "a half-sent head is still open");
    let (status, _, body) = http_exchange(connect(server.addr).await, "GET /healthz HTTP/1.1\r\nHost: x").await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    let counted = server.metric(r#"bavard_limit_refusals_total{limit="request_head"}"#).await;
    assert_eq!(counted, Some(2.0), "both closes are counted");
    server.stop().await;
}

#[tokio::test]
async fn a_drip_fed_request_head_is_closed_at_the_head_timeout() {
    let server = server(1.0, 1024).await;
    let stream = connect(server.addr).await;
    let (mut reader, mut writer) = stream.into_split();
    // A head that would take 8 s at one byte every 200 ms.
    let head = format!("GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Drip: {}\r\n\r\n", "a".repeat(8));
    let dripping = tokio::spawn(async move {
        for byte in head.bytes() {
            if writer.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let started = Instant::now();
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), reader.read_to_end(&mut answer)).await;
    assert!(closed.is_ok(), "the drip-feeding connection was still open after 5 s");
    assert!(started.elapsed() < Duration::from_secs(4), "closed only after {:?}", started.elapsed());
    let answer = String::from_utf8_lossy(&answer);
    assert!(!answer.starts_with("HTTP/1.1 200"), "the drip-fed request was served: {answer}");
    dripping.abort();
    server.stop().await;
}

#[tokio::test]
async fn a_new_connection_past_the_bound_closes_the_oldest_unfinished_one() {
    // A long head timeout: only the bound in number can close these.
    let server = server(30.0, 3).await;
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(connect(server.addr).await);
    }
    // Let the server accept all three, in order.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fourth = connect(server.addr).await;
    assert!(
        closed_within(&mut silent[0], Duration::from_secs(5)).await.is_some(),
        "the oldest unfinished connection is still open past the bound"
    );
    // A real client gets in (closing the next oldest), and is served.
    let (status, _, body) = http_exchange(connect(server.addr).await, "GET /healthz HTTP/1.1\r\nHost: x").await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    assert!(closed_within(&mut silent[1], Duration::from_secs(5)).await.is_some(), "the second oldest is still open");
    // The newer ones stay: the bound holds three.
    assert!(still_open(&mut silent[2], Duration::from_millis(300)).await, "a connection within the bound was closed");
    let mut fourth = fourth;
    assert!(still_open(&mut fourth, Duration::from_millis(100)).await, "a connection within the bound was closed");
    // A burst of silent sockets never holds more than the bound.
    let mut burst = Vec::new();
    for _ in 0..10 {
        burst.push(connect(server.addr).await);
    }
    // Until the server has accepted them all (a busy machine may take a moment).
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut open = Vec::new();
    while open.len() != 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        open.clear();
        for (i, stream) in burst.iter_mut().enumerate() {
            if still_open(stream, Duration::from_millis(20)).await {
                open.push(i);
            }
        }
    }
    assert_eq!(open, [7, 8, 9], "the silent connections held of 10 (the bound is 3: the newest)");
    // s0, s1, then s2, the fourth and the burst's first seven; the metrics request
    // itself closes the burst's eighth when it is accepted.
    let counted = server.metric(r#"bavard_limit_refusals_total{limit="unfinished_requests"}"#).await;
    assert_eq!(counted, Some(12.0));
    server.stop().await;
}

#[tokio::test]
async fn a_slow_client_that_completes_in_time_is_served_and_keep_alive_works_within_the_bound() {
    let server = server(2.0, 1024).await;
    let mut stream = connect(server.addr).await;
    // 1.2 s to send the head, within the 2 s bound.
    for piece in HEALTHZ.chunks(HEALTHZ.len() / 4 + 1) {
        stream.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(read_response(&mut stream).await, (200, "ok".to_owned()));
    // The same connection, idle for less than the bound, serves another request.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stream.write_all(HEALTHZ).await.unwrap();
    assert_eq!(read_response(&mut stream).await, (200, "ok".to_owned()));
    server.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_head_timeout() {
    let server = server(1.0, 1024).await;
    let mut stream = connect(server.addr).await;
    stream.write_all(HEALTHZ).await.unwrap();
    assert_eq!(read_response(&mut stream).await, (200, "ok".to_owned()));
    let took =
        closed_within(&mut stream, Duration::from_secs(6)).await.expect("the idle keep-alive connection is open");
    assert!(took >= Duration::from_millis(900), "closed after {took:?}, before the bound");
    server.stop().await;
}

/// The body bound too (the server's is 1 s as well): an upgrade has no body.
#[tokio::test]
async fn an_open_websocket_outlives_the_head_timeout() {
    let server = server(1.0, 1024).await;
    let mut client = server.json_guest("patient").await;
    tokio::time::sleep(Duration::from_millis(1800)).await;
    client.ok(json!({"op": "ping"})).await;
    client.close().await;
    server.stop().await;
}

#[tokio::test]
async fn a_request_body_dripped_slower_than_the_body_timeout_is_answered_408_and_closed() {
    let server = body_server().await;
    let body = json!({"text": "dripped, a byte every 200 ms"}).to_string();
    let stream = connect(server.addr).await;
    let (mut reader, mut writer) = stream.into_split();
    // A complete head at once, then a body that would take some 8 s.
    writer.write_all(post_head(&body).as_bytes()).await.unwrap();
    let started = Instant::now();
    let dripping = tokio::spawn(async move {
        for byte in body.bytes() {
            if writer.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    // What the server sends until it closes (a reset after its answer ends it too:
    // the dripper may still be writing into the closed connection).
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let took = started.elapsed();
    dripping.abort();
    let answer = String::from_utf8_lossy(&answer);
    assert!(closed.is_ok(), "the connection dripping its body was still open after 5 s (answer so far: {answer:?})");
    assert!(took >= Duration::from_millis(900), "cut off after {took:?}, before the bound");
    assert!(took < Duration::from_secs(4), "cut off only after {took:?}");
    assert!(answer.starts_with("HTTP/1.1 408"), "not a 408: {answer:?}");
    assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer:?}");
    assert!(answer.contains(r#""code":"bad_request""#) && answer.contains("--request-body-timeout-secs"), "{answer:?}");
    let counted = server.metric(r#"bavard_limit_refusals_total{limit="request_body"}"#).await;
    assert_eq!(counted, Some(1.0), "the 408 is counted");
    let answered =
        server.metric(r#"bavard_http_requests_total{route="/api/rooms/{room}/messages",status="408"}"#).await;
    assert_eq!(answered, Some(1.0), "the request counter saw the 408");
    // Nothing was stored, and the server serves the next client.
    let (status, history) = http_get(&server.http("/api/rooms/lobby/messages")).await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&history).unwrap()["messages"], json!([]), "{history}");
    server.stop().await;
}

#[tokio::test]
async fn a_request_body_sent_in_pieces_within_the_body_timeout_is_served() {
    let server = body_server().await;
    let body = json!({"text": "in four pieces"}).to_string();
    let mut stream = connect(server.addr).await;
    stream.write_all(post_head(&body).as_bytes()).await.unwrap();
    // 0.6 s of pauses in the body, within the 1 s bound.
    for piece in body.as_bytes().chunks(body.len() / 4 + 1) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        stream.write_all(piece).await.unwrap();
    }
    let (status, reply) = read_response(&mut stream).await;
    assert_eq!(status, 201, "{reply}");
    // The connection is kept and serves the next request.
    stream.write_all(HEALTHZ).await.unwrap();
    assert_eq!(read_response(&mut stream).await, (200, "ok".to_owned()));
    let counted = server.metric(r#"bavard_limit_refusals_total{limit="request_body"}"#).await;
    assert_eq!(counted, Some(0.0), "a body in time was counted as cut off");
    server.stop().await;
}

#[tokio::test]
async fn over_tls_unfinished_handshakes_are_bounded_in_time_and_number() {
    let pki = Pki::new();
    let server = spawn_with(|c| {
        pki.configure(c);
        c.request_head_timeout_secs = 2.0;
        c.max_unfinished_requests = 2;
    })
    .await;
    // A client that never starts its handshake, and one that stops halfway through its hello.
    let mut silent = connect(server.addr).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut halfway = connect(server.addr).await;
    halfway.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A full client past the bound of 2 closes the oldest (the silent one) and is served.
    let (status, body) = pki.get(server.addr, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    // Well before its 2 s are up.
    assert!(closed_within(&mut silent, Duration::from_millis(1000)).await.is_some(), "the oldest handshake is open");
    // The other is closed by the time bound.
    assert!(closed_within(&mut halfway, Duration::from_secs(5)).await.is_some(), "a stalled handshake is open");
    // A finished handshake without a request is closed too.
    let mut handshaken = pki.connect(server.addr).await;
    let took =
        closed_within(&mut handshaken, Duration::from_secs(5)).await.expect("a TLS connection without a request");
    assert!(took >= Duration::from_millis(1000), "closed after {took:?}");
    server.stop().await;
}
