//! The JSON protocol (`/ws`) over `bavard_ws::client`, the raw client, for scenarios with
//! thousands of connections: connect and read `welcome`, requests matched by integer id,
//! and cheap field scanning of the server's frames (full parsing only for replies that
//! are needed).

use std::net::IpAddr;

use anyhow::{bail, Context};
use bavard_ws::client::{Endpoint, Incoming, WsConn};
use serde_json::Value;

use crate::dial;

/// Connects to `/ws?name={name}` and reads the `welcome` frame.
pub async fn connect(endpoint: &Endpoint, name: &str, bind: Option<IpAddr>) -> anyhow::Result<WsConn> {
    connect_with_buffer(endpoint, name, bind, 16 * 1024).await
}

/// [`connect`] with a read buffer of `buf_bytes` to start with (see [`dial::connect_conn`]).
pub async fn connect_with_buffer(
    endpoint: &Endpoint,
    name: &str,
    bind: Option<IpAddr>,
    buf_bytes: usize,
) -> anyhow::Result<WsConn> {
    let mut conn = dial::connect_conn(endpoint, &format!("/ws?name={name}"), bind, buf_bytes).await?;
    match conn.next().await? {
        Incoming::Data(frame) if frame_type(frame) == Some(b"welcome") => Ok(conn),
        Incoming::Data(frame) => bail!("expected welcome, got {}", String::from_utf8_lossy(frame)),
        Incoming::Closed(code) => bail!("closed with code {code} before welcome"),
    }
}

/// The `type` of a server frame (the server writes it first; scanned, not parsed).
pub fn frame_type(frame: &[u8]) -> Option<&[u8]> {
    str_field(frame, b"\"type\":\"")
}

/// The string value after the first occurrence of `key` (e.g. `"text":"`), up to the next
/// quote; values with escapes are cut at the first escaped quote, which benchmark texts never have.
pub fn str_field<'a>(frame: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let start = find(frame, key)? + key.len();
    let len = frame[start..].iter().position(|&b| b == b'"')?;
    Some(&frame[start..start + len])
}

/// The integer value after the first occurrence of `key` (e.g. `"id":`).
pub fn int_field(frame: &[u8], key: &[u8]) -> Option<u64> {
    let start = find(frame, key)? + key.len();
    let digits = frame[start..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&frame[start..start + digits]).ok()?.parse().ok()
}

/// Where `needle` first occurs in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Sends `request` (a JSON object without `id`) with `id` and waits for its reply,
/// skipping any other frame; returns the parsed reply, or an error if it is not ok.
pub async fn request(conn: &mut WsConn, id: u64, request: Value) -> anyhow::Result<Value> {
    let mut request = request;
    if let Value::Object(object) = &mut request {
        object.insert("id".into(), id.into());
    }
    conn.send_text(request.to_string().as_bytes()).await?;
    loop {
        match conn.next().await? {
            Incoming::Data(frame) => {
                if frame_type(frame) == Some(b"reply") && int_field(frame, b"\"id\":") == Some(id) {
                    let reply: Value = serde_json::from_slice(frame).context("unreadable reply")?;
                    if reply["ok"] != Value::Bool(true) {
                        bail!("request failed: {}", reply["error"]);
                    }
                    return Ok(reply);
                }
            }
            Incoming::Closed(code) => bail!("closed with code {code} while waiting for reply {id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_fields() {
        let frame = br#"{"type":"message","room":"r","seq":42,"from":{"id":"u_1"},"text":"1:2:3"}"#;
        assert_eq!(frame_type(frame), Some(&b"message"[..]));
        assert_eq!(str_field(frame, b"\"text\":\""), Some(&b"1:2:3"[..]));
        assert_eq!(int_field(frame, b"\"seq\":"), Some(42));
        assert_eq!(int_field(br#"{"type":"reply","id":7,"ok":true}"#, b"\"id\":"), Some(7));
        assert_eq!(str_field(frame, b"\"nope\":\""), None);
    }
}
