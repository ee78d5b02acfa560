//! CORS on `/api` (`--cors-origins`): listed origins get the headers on preflights and
//! requests, other origins get none, routes outside `/api` get none, and without
//! the flag the API sends none at all.

use std::net::SocketAddr;

use tokio::net::TcpStream;

use crate::helpers::{http_exchange, spawn, spawn_with, within};

const ALLOWED: &str = "https://app.example";

/// Sends `request_head` (without its Host) to `addr`: (status, headers).
async fn ask(addr: SocketAddr, request_head: &str) -> (u16, Vec<(String, String)>) {
    let tcp = within(TcpStream::connect(addr)).await.unwrap();
    let (status, headers, _) = http_exchange(tcp, &format!("{request_head}\r\nHost: {addr}")).await;
    (status, headers)
}

fn preflight(path: &str, origin: &str) -> String {
    format!(
        "OPTIONS {path} HTTP/1.1\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: POST\r\n\
         Access-Control-Request-Headers: content-type, idempotency-key"
    )
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

fn cors_headers(headers: &[(String, String)]) -> Vec<&(String, String)> {
    headers.iter().filter(|(name, _)| name.starts_with("access-control-")).collect()
}

#[tokio::test]
async fn a_listed_origin_gets_the_cors_headers_and_others_none() {
    let server = spawn_with(|c| c.cors_origins = vec![ALLOWED.into(), "http://localhost:3000".into()]).await;

    let (status, headers) = ask(server.addr, &preflight("/api/rooms", ALLOWED)).await;
    assert!((200..300).contains(&status), "{status} {headers:?}");
    assert_eq!(header(&headers, "access-control-allow-origin"), Some(ALLOWED), "{headers:?}");
    let methods = header(&headers, "access-control-allow-methods").unwrap_or_default().to_ascii_uppercase();
    for method in ["GET", "POST", "PATCH", "PUT", "DELETE", "OPTIONS"] {
        assert!(methods.contains(method), "{method} missing from {methods}");
    }
    let allowed_headers = header(&headers, "access-control-allow-headers").unwrap_or_default().to_ascii_lowercase();
    for name in ["content-type", "authorization", "idempotency-key"] {
        assert!(allowed_headers.contains(name), "{name} missing from {allowed_headers}");
    }

    // The actual request gets its grant too.
    let (status, headers) = ask(server.addr, &format!("GET /api/rooms HTTP/1.1\r\nOrigin: {ALLOWED}")).await;
    assert_eq!(status, 200, "{headers:?}");
    assert_eq!(header(&headers, "access-control-allow-origin"), Some(ALLOWED), "{headers:?}");

    // An origin that is not listed gets no CORS header: the browser refuses the call.
    for origin in ["https://evil.example", "http://app.example", "https://app.example:8443"] {
        let (_, headers) = ask(server.addr, &preflight("/api/rooms", origin)).await;
        assert_eq!(cors_headers(&headers), Vec::<&(String, String)>::new(), "{origin}");
        let (status, headers) = ask(server.addr, &format!("GET /api/rooms HTTP/1.1\r\nOrigin: {origin}")).await;
        assert_eq!(status, 200, "{headers:?}");
        assert_eq!(cors_headers(&headers), Vec::<&(String, String)>::new(), "{origin}");
    }

    // Routes outside /api are not covered.
    let (_, headers) = ask(server.addr, &format!("GET /healthz HTTP/1.1\r\nOrigin: {ALLOWED}")).await;
    assert_eq!(cors_headers(&headers), Vec::<&(String, String)>::new(), "{headers:?}");
    let (_, headers) = ask(server.addr, &preflight("/healthz", ALLOWED)).await;
    assert_eq!(cors_headers(&headers), Vec::<&(String, String)>::new(), "{headers:?}");
    server.stop().await;
}

#[tokio::test]
async fn without_the_flag_the_api_sends_no_cors_headers() {
    let server = spawn().await;
    let (_, headers) = ask(server.addr, &preflight("/api/rooms", ALLOWED)).await;
    assert_eq!(cors_headers(&headers), Vec::<&(String, String)>::new(), "{headers:?}");
    let (status, headers) = ask(server.addr, &format!("GET /api/rooms HTTP/1.1\r\nOrigin: {ALLOWED}")).await;
    assert_eq!(status, 200);
    assert_eq!(cors_headers(&headers), Vec::<&(String, String)>::new(), "{headers:?}");
    server.stop().await;
}
