//! The bad-input table: malformed, oversized, mistyped and tricky input on each door of
//! the server (the JSON protocol on `/ws`, the plain-text one on `/ws/chat`, the upgrade
//! itself, the REST API), each case with the answer docs/protocol.md promises. One test
//! per door; a failing case reports its name. After each batch the server must still
//! answer a ping (and `/healthz`): no input takes it down.

use std::time::Duration;

use bavard_ws::client::{WsConn, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_TEXT};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

/// What the server must answer.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// A failed `reply` to the request's `id` (always 1 in the table), with this code.
    Refused(&'static str),
    /// An `error` event without id (the id could not be read), with this code.
    ErrorEvent(&'static str),
    /// A successful `reply` to id 1.
    Accepted,
    /// The connection is closed with this code.
    Closed(u16),
}

/// One case on the JSON protocol: the frame's opcode and payload.
struct WsCase {
    name: &'static str,
    opcode: u8,
    payload: Vec<u8>,
    answer: Answer,
}

fn text(name: &'static str, frame: impl Into<String>, answer: Answer) -> WsCase {
    WsCase { name, opcode: OP_TEXT, payload: frame.into().into_bytes(), answer }
}

fn raw(name: &'static str, opcode: u8, payload: impl Into<Vec<u8>>, answer: Answer) -> WsCase {
    WsCase { name, opcode, payload: payload.into(), answer }
}

/// A value nested `depth` arrays deep.
fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

fn json_cases() -> Vec<WsCase> {
    use Answer::*;
    let long_room = "r".repeat(65);
    let max_room = "r".repeat(64);
    vec![
        // Malformed JSON: the id cannot be read, so an error event answers.
        text("not JSON", "{not json", ErrorEvent("bad_request")),
        text("empty frame", "", ErrorEvent("bad_request")),
        text("trailing comma", r#"{"op":"ping","id":1,}"#, ErrorEvent("bad_request")),
        text("two objects in one frame", r#"{"op":"ping","id":1}{"op":"ping","id":2}"#, ErrorEvent("bad_request")),
        text("truncated object", r#"{"op":"ping","id":1"#, ErrorEvent("bad_request")),
        text("single quotes", "{'op':'ping','id':1}", ErrorEvent("bad_request")),
        text("NaN", r#"{"op":"join","id":1,"room":"r","since":NaN}"#, ErrorEvent("bad_request")),
        text("byte order mark", "\u{feff}{\"op\":\"ping\",\"id\":1}", ErrorEvent("bad_request")),
        // Not JSON, but the object's `id` can still be read: a failed reply to it.
        text("lone surrogate escape", r#"{"op":"send","id":1,"room":"r","text":"\ud800"}"#, Refused("bad_request")),
        text("null", "null", ErrorEvent("bad_request")),
        text("an array", r#"[{"op":"ping","id":1}]"#, ErrorEvent("bad_request")),
        text("a string", r#""ping""#, ErrorEvent("bad_request")),
        // Deep nesting: past 128 levels the frame is refused (its id can still be read);
        // within them, an unknown field is ignored.
        text(
            "nesting 10,000 deep",
            format!(r#"{{"op":"ping","id":1,"x":{}}}"#, nested(10_000)),
            Refused("bad_request"),
        ),
        text(
            "nesting 100 deep in an unknown field",
            format!(r#"{{"op":"ping","id":1,"x":{}}}"#, nested(100)),
            Accepted,
        ),
        // Huge numbers.
        text("since 1e400", r#"{"op":"join","id":1,"room":"r","since":1e400}"#, Refused("bad_request")),
        text("since 2^64", r#"{"op":"join","id":1,"room":"r","since":18446744073709551616}"#, Refused("bad_request")),
        text("since -1", r#"{"op":"join","id":1,"room":"r","since":-1}"#, Refused("bad_request")),
        text("history limit 201", r#"{"op":"history","id":1,"room":"r","limit":201}"#, Refused("bad_request")),
        text("members limit 0", r#"{"op":"members","id":1,"room":"r","limit":0}"#, Refused("bad_request")),
        text("id 1e400", r#"{"op":"ping","id":1e400}"#, ErrorEvent("bad_request")),
        text("id 2^63", r#"{"op":"ping","id":9223372036854775808}"#, ErrorEvent("bad_request")),
        text("id 1.5", r#"{"op":"ping","id":1.5}"#, ErrorEvent("bad_request")),
        // Wrong types.
        text("id true", r#"{"op":"ping","id":true}"#, ErrorEvent("bad_request")),
        text("op a number", r#"{"op":42,"id":1}"#, Refused("bad_request")),
        text("room an array", r#"{"op":"join","id":1,"room":["r"]}"#, Refused("bad_request")),
        text("text an object", r#"{"op":"send","id":1,"room":"r","text":{"a":1}}"#, Refused("bad_request")),
        text("since a string", r#"{"op":"join","id":1,"room":"r","since":"7"}"#, Refused("bad_request")),
        text("key empty", r#"{"op":"send","id":1,"room":"r","text":"x","key":""}"#, Refused("bad_request")),
        text(
            "key of 65 characters",
            format!(r#"{{"op":"send","id":1,"room":"r","text":"x","key":"{}"}}"#, "k".repeat(65)),
            Refused("bad_request"),
        ),
        // Unknown ops.
        text("unknown op", r#"{"op":"fly","id":1}"#, Refused("unknown_op")),
        text("op in capitals", r#"{"op":"PING","id":1}"#, Refused("unknown_op")),
        text("op empty", r#"{"op":"","id":1}"#, Refused("unknown_op")),
        // Missing fields.
        text("no op", r#"{"id":1}"#, Refused("bad_request")),
        text("send without text", r#"{"op":"send","id":1,"room":"r"}"#, Refused("bad_request")),
        text("join without room", r#"{"op":"join","id":1}"#, Refused("bad_request")),
        text("set_role without role", r#"{"op":"set_role","id":1,"room":"r","user":"u_1"}"#, Refused("bad_request")),
        // Control characters: texts take any character; names and ids do not.
        text(
            "control characters in a text",
            r#"{"op":"send","id":1,"room":"r","text":"\u0000bell\u0007\u001b[2J"}"#,
            Accepted,
        ),
        text("control character in a room name", r#"{"op":"join","id":1,"room":"r\u0000"}"#, Refused("bad_request")),
        text(
            "control character in a topic",
            r#"{"op":"create","id":1,"room":"topical","topic":"a\nb"}"#,
            Refused("bad_request"),
        ),
        text(
            "control character in a user id",
            r#"{"op":"kick","id":1,"room":"r","user":"u\u0007"}"#,
            Refused("bad_request"),
        ),
        // Path tricks in room names: names are not paths, only the documented characters.
        text("room ../etc", r#"{"op":"join","id":1,"room":"../etc"}"#, Refused("bad_request")),
        text("room %2e%2e", r#"{"op":"join","id":1,"room":"%2e%2e"}"#, Refused("bad_request")),
        text("room .. (only allowed characters)", r#"{"op":"join","id":1,"room":".."}"#, Accepted),
        text("room with a Cyrillic e", r#"{"op":"join","id":1,"room":"g\u0435neral"}"#, Refused("bad_request")),
        text("room in fullwidth letters", r#"{"op":"join","id":1,"room":"\uff47eneral"}"#, Refused("bad_request")),
        text("room with a slash", r#"{"op":"join","id":1,"room":"a/b"}"#, Refused("bad_request")),
        text("room empty", r#"{"op":"join","id":1,"room":""}"#, Refused("bad_request")),
        text(
            "room of 65 characters",
            format!(r#"{{"op":"join","id":1,"room":"{long_room}"}}"#),
            Refused("bad_request"),
        ),
        text("room of 64 characters", format!(r#"{{"op":"join","id":1,"room":"{max_room}"}}"#), Accepted),
        // Oversize texts (the frame itself is within the limit).
        text(
            "text of 4001 characters",
            format!(r#"{{"op":"send","id":1,"room":"r","text":"{}"}}"#, "a".repeat(4001)),
            Refused("too_large"),
        ),
        text(
            "text of 4000 two-byte characters",
            format!(r#"{{"op":"send","id":1,"room":"r","text":"{}"}}"#, "é".repeat(4000)),
            Accepted,
        ),
        // What closes the connection (each on a connection of its own).
        raw("binary frame", OP_BINARY, br#"{"op":"ping","id":1}"#.to_vec(), Closed(1003)),
        raw(
            "text frame with invalid UTF-8",
            OP_TEXT,
            b"{\"op\":\"send\",\"text\":\"\xff\xfe\"}".to_vec(),
            Closed(1007),
        ),
        raw("frame over max_frame_bytes", OP_TEXT, vec![b' '; 64 * 1024 + 1], Closed(1009)),
        raw("reserved opcode", 0x3, b"x".to_vec(), Closed(1002)),
        raw("ping over 125 bytes", OP_PING, vec![b'p'; 126], Closed(1002)),
        raw("continuation without a start", OP_CONTINUATION, b"x".to_vec(), Closed(1002)),
        raw("close code 999", OP_CLOSE, 999u16.to_be_bytes().to_vec(), Closed(1002)),
        raw("close reason with invalid UTF-8", OP_CLOSE, vec![0x03, 0xe8, 0xff], Closed(1007)),
    ]
}

/// A raw connection on `path`, past the upgrade and (for `/ws`) its welcome.
async fn raw_connection(server: &TestServer, path: &str) -> WsConn {
    let mut conn = raw_websocket(server.addr, path).await;
    if path.starts_with("/ws?") {
        let welcome = next_text(&mut conn).await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
    }
    conn
}

/// The next text frame as JSON (pings and pongs skipped).
async fn next_text(conn: &mut WsConn) -> Value {
    loop {
        let frame = within(conn.next_frame()).await.unwrap().expect("the connection closed");
        match frame.opcode {
            OP_TEXT => return serde_json::from_slice(frame.payload).unwrap(),
            OP_CLOSE => panic!("closed with {}", bavard_ws::client::close_code(frame.payload)),
            _ => continue,
        }
    }
}

/// Sends a frame as is (built by hand, so an odd opcode goes out exactly as written),
/// then reads until the server closes: its close code (1006 when none came).
async fn close_code_after(conn: WsConn, opcode: u8, payload: &[u8]) -> u16 {
    let mut frame = Vec::new();
    bavard_ws::client::encode_frame(&mut frame, opcode, payload, [0x11, 0x22, 0x33, 0x44]);
    close_code_after_raw(conn, &frame).await
}

async fn assert_alive(server: &TestServer) {
    let mut probe = raw_connection(server, "/ws?name=probe").await;
    probe.send_text(br#"{"op":"ping","id":"alive"}"#).await.unwrap();
    let reply = next_text(&mut probe).await;
    assert_eq!((reply["id"].as_str(), reply["ok"].as_bool()), (Some("alive"), Some(true)), "{reply}");
    assert_eq!(http_get(&server.http("/healthz")).await, (200, "ok".to_owned()));
}

#[tokio::test]
async fn the_json_protocol_answers_each_bad_frame_as_documented() {
    let server = spawn().await;
    let mut conn = raw_connection(&server, "/ws?name=tester").await;
    conn.send_text(br#"{"op":"join","room":"r","id":"setup"}"#).await.unwrap();
    assert_eq!(next_text(&mut conn).await["ok"], true);
    let mut failures = Vec::new();
    let cases = json_cases();
    assert!(cases.len() >= 55, "{} cases", cases.len());
    for case in &cases {
        let got = match case.answer {
            Answer::Closed(expected) => {
                let fresh = raw_connection(&server, "/ws?name=breaker").await;
                let code = close_code_after(fresh, case.opcode, &case.payload).await;
                (code != expected).then(|| format!("closed with {code}, expected {expected}"))
            }
            answer => {
                conn.queue_frame(case.opcode, &case.payload);
                within(conn.flush()).await.unwrap();
                // Skip the room's own traffic (a message event for an accepted send).
                let frame = loop {
                    let frame = next_text(&mut conn).await;
                    if frame["type"] != "message" {
                        break frame;
                    }
                };
                check_answer(answer, &frame)
            }
        };
        if let Some(wrong) = got {
            failures.push(format!("{}: {wrong}", case.name));
        }
    }
    assert_alive(&server).await;
    assert!(
        failures.is_empty(),
        "{} of {} cases answered otherwise:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    server.stop().await;
}

/// What is wrong with `frame` as the answer `expected`, if anything.
fn check_answer(expected: Answer, frame: &Value) -> Option<String> {
    let ok = match expected {
        Answer::Refused(code) => {
            frame["type"] == "reply" && frame["id"] == 1 && frame["ok"] == false && frame["error"]["code"] == code
        }
        Answer::ErrorEvent(code) => frame["type"] == "error" && frame["error"]["code"] == code,
        Answer::Accepted => frame["type"] == "reply" && frame["id"] == 1 && frame["ok"] == true,
        Answer::Closed(_) => false,
    };
    (!ok).then(|| format!("expected {expected:?}, got {frame}"))
}

/// One case on the plain-text protocol: frames to send, and the texts or close that
/// must follow.
struct PlainCase {
    name: &'static str,
    frames: Vec<(u8, Vec<u8>)>,
    expect: PlainAnswer,
}

enum PlainAnswer {
    /// These texts come back, in order.
    Texts(Vec<String>),
    /// The connection is closed with this code.
    Closed(u16),
}

/// In a plain case's frames: the first fragment of a text (no FIN bit)...
const TEXT_START: u8 = 0x41;
/// ...and its last continuation.
const LAST_CONTINUATION: u8 = 0x40;

fn plain_cases() -> Vec<PlainCase> {
    let t = |s: &str| (OP_TEXT, s.as_bytes().to_vec());
    let echo = |s: &str| PlainAnswer::Texts(vec![format!("Message reçu : {s}")]);
    vec![
        PlainCase { name: "a text", frames: vec![t("bonjour")], expect: echo("bonjour") },
        PlainCase { name: "an empty frame is ignored", frames: vec![t(""), t("after")], expect: echo("after") },
        PlainCase {
            name: "control characters are relayed as they are",
            frames: vec![t("\u{0}bell\u{7}\u{1b}[2J")],
            expect: echo("\u{0}bell\u{7}\u{1b}[2J"),
        },
        PlainCase {
            name: "JSON is just text here",
            frames: vec![t(r#"{"op":"send","room":"x","text":"y"}"#)],
            expect: echo(r#"{"op":"send","room":"x","text":"y"}"#),
        },
        PlainCase { name: "4000 characters", frames: vec![t(&"é".repeat(4000))], expect: echo(&"é".repeat(4000)) },
        PlainCase {
            name: "a text over max_text_chars",
            frames: vec![t(&"a".repeat(4001))],
            expect: PlainAnswer::Closed(1009),
        },
        PlainCase {
            name: "a binary frame",
            frames: vec![(OP_BINARY, b"hi".to_vec())],
            expect: PlainAnswer::Closed(1003),
        },
        PlainCase {
            name: "invalid UTF-8",
            frames: vec![(OP_TEXT, b"caf\xc3".to_vec())],
            expect: PlainAnswer::Closed(1007),
        },
        PlainCase {
            name: "a frame over max_frame_bytes",
            frames: vec![(OP_TEXT, vec![b'a'; 64 * 1024 + 1])],
            expect: PlainAnswer::Closed(1009),
        },
        PlainCase {
            name: "a fragmented text with a control frame between the pieces",
            frames: vec![
                (TEXT_START, b"frag".to_vec()),
                (OP_PING, b"p".to_vec()),
                (LAST_CONTINUATION, b"ment".to_vec()),
            ],
            expect: echo("fragment"),
        },
    ]
}

#[tokio::test]
async fn the_plain_text_protocol_answers_each_bad_frame_as_documented() {
    let server = spawn().await;
    let mut failures = Vec::new();
    let cases = plain_cases();
    for (i, case) in cases.iter().enumerate() {
        // A room per case, so that no case hears another's texts.
        let mut conn = raw_connection(&server, &format!("/ws/chat/plain-{i}")).await;
        let mut bytes = Vec::new();
        for (first_byte, payload) in &case.frames {
            let mut frame = Vec::new();
            let (opcode, fin) = match *first_byte {
                TEXT_START => (OP_TEXT, false),
                LAST_CONTINUATION => (OP_CONTINUATION, true),
                opcode => (opcode, true),
            };
            bavard_ws::client::encode_frame(&mut frame, opcode, payload, [9, 8, 7, 6]);
            if !fin {
                frame[0] &= 0x7f;
            }
            bytes.extend(frame);
        }
        let wrong = match &case.expect {
            PlainAnswer::Closed(expected) => {
                let code = close_code_after_raw(conn, &bytes).await;
                (code != *expected).then(|| format!("closed with {code}, expected {expected}"))
            }
            PlainAnswer::Texts(texts) => {
                conn.queue_raw(&bytes);
                within(conn.flush()).await.unwrap();
                let mut got = Vec::new();
                while got.len() < texts.len() {
                    let Ok(Ok(Some(frame))) = tokio::time::timeout(WAIT, conn.next_frame()).await else {
                        got.push("<nothing, or the connection ended>".to_owned());
                        break;
                    };
                    match frame.opcode {
                        OP_TEXT => got.push(String::from_utf8(frame.payload.to_vec()).unwrap()),
                        OP_CLOSE => {
                            got.push(format!("<close {}>", bavard_ws::client::close_code(frame.payload)));
                            break;
                        }
                        _ => {}
                    }
                }
                (&got != texts).then(|| format!("got {got:?}"))
            }
        };
        if let Some(wrong) = wrong {
            failures.push(format!("{}: {wrong}", case.name));
        }
    }
    assert_alive(&server).await;
    assert!(
        failures.is_empty(),
        "{} of {} cases answered otherwise:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    server.stop().await;
}

/// Sends `bytes` (whole frames), then reads until the server closes: its close code
/// (1006 when none came). The close is answered, so that the server does not linger.
async fn close_code_after_raw(mut conn: WsConn, bytes: &[u8]) -> u16 {
    conn.queue_raw(bytes);
    within(conn.flush()).await.unwrap();
    let mut code = 1006;
    while let Ok(Ok(Some(frame))) = tokio::time::timeout(WAIT, conn.next_frame()).await {
        if frame.opcode == OP_CLOSE {
            code = bavard_ws::client::close_code(frame.payload);
            conn.queue_frame(OP_CLOSE, &code.to_be_bytes());
            let _ = conn.flush().await;
        }
    }
    code
}

/// One raw HTTP request (upgrade or REST) and the status it must get, with the REST
/// error code when the answer is an error of the API.
struct HttpCase {
    name: &'static str,
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Option<Vec<u8>>,
    status: u16,
    code: Option<&'static str>,
}

fn upgrade(name: &'static str, path: impl Into<String>, status: u16) -> HttpCase {
    let headers = vec![
        ("Connection", "Upgrade".to_owned()),
        ("Upgrade", "websocket".to_owned()),
        ("Sec-WebSocket-Version", "13".to_owned()),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==".to_owned()),
    ];
    HttpCase { name, method: "GET", path: path.into(), headers, body: None, status, code: None }
}

fn rest(
    name: &'static str,
    method: &'static str,
    path: impl Into<String>,
    body: Option<&[u8]>,
    status: u16,
    code: &'static str,
) -> HttpCase {
    let headers = match body {
        Some(_) => vec![("Content-Type", "application/json".to_owned())],
        None => Vec::new(),
    };
    HttpCase { name, method, path: path.into(), headers, body: body.map(<[u8]>::to_vec), status, code: Some(code) }
}

fn http_cases() -> Vec<HttpCase> {
    let long = "r".repeat(65);
    let messages = "/api/rooms/general/messages";
    let mut cases = vec![
        // Upgrades: names, path tricks, handshakes.
        upgrade("plain-text room ../../etc, encoded", "/ws/chat/..%2F..%2Fetc", 400),
        upgrade("plain-text room %2e%2e is the name .. (allowed characters)", "/ws/chat/%2e%2e", 101),
        upgrade("plain-text room with a Cyrillic e", "/ws/chat/g%D0%B5neral", 400),
        upgrade("plain-text room of 65 characters", format!("/ws/chat/{long}"), 400),
        upgrade("plain-text room with a NUL", "/ws/chat/a%00b", 400),
        upgrade("name with a control character", "/ws?name=bad%07name", 400),
        upgrade("name of 33 characters", format!("/ws?name={}", "n".repeat(33)), 400),
        {
            let mut case = upgrade("WebSocket version 8", "/ws", 400);
            case.headers[2].1 = "8".to_owned();
            case
        },
        {
            let mut case = upgrade("no Sec-WebSocket-Key", "/ws", 400);
            case.headers.pop();
            case
        },
        {
            let mut case = upgrade("no Upgrade header", "/ws", 400);
            case.headers.remove(1);
            case
        },
        {
            let mut case = upgrade("an origin that is not the server's", "/ws", 403);
            case.headers.push(("Origin", "http://evil.example".to_owned()));
            case
        },
        // REST: bodies.
        rest("malformed JSON body", "POST", "/api/rooms", Some(b"{\"name\":"), 400, "bad_request"),
        rest("body an array", "POST", "/api/rooms", Some(b"[]"), 400, "bad_request"),
        // serde reads `[]` as a struct whose fields all have defaults: refused as not an object.
        rest("member body an empty array", "PUT", "/api/rooms/r/members/bob", Some(b"[]"), 400, "bad_request"),
        rest("name missing", "POST", "/api/rooms", Some(b"{}"), 400, "bad_request"),
        rest("name a number", "POST", "/api/rooms", Some(b"{\"name\":42}"), 400, "bad_request"),
        rest("name ../etc", "POST", "/api/rooms", Some(br#"{"name":"../etc"}"#), 400, "bad_request"),
        rest(
            "name with a Cyrillic e",
            "POST",
            "/api/rooms",
            Some("{\"name\":\"g\u{435}neral\"}".as_bytes()),
            400,
            "bad_request",
        ),
        rest(
            "name of 65 characters",
            "POST",
            "/api/rooms",
            Some(format!(r#"{{"name":"{long}"}}"#).as_bytes()),
            400,
            "bad_request",
        ),
        // Unknown fields are ignored, whatever they hold (skipped without recursion).
        rest(
            "deep nesting in an unknown field",
            "POST",
            messages,
            Some(format!(r#"{{"text":"x","n":{}}}"#, nested(10_000)).as_bytes()),
            201,
            "",
        ),
        rest(
            "deep nesting in a known field",
            "POST",
            messages,
            Some(format!(r#"{{"text":{}}}"#, nested(10_000)).as_bytes()),
            400,
            "bad_request",
        ),
        rest("text empty", "POST", messages, Some(br#"{"text":""}"#), 400, "bad_request"),
        rest("text a number", "POST", messages, Some(br#"{"text":42}"#), 400, "bad_request"),
        rest(
            "text of 4001 characters",
            "POST",
            messages,
            Some(format!(r#"{{"text":"{}"}}"#, "a".repeat(4001)).as_bytes()),
            413,
            "too_large",
        ),
        rest("text with control characters", "POST", messages, Some(br#"{"text":"\u0000bell\u0007"}"#), 201, ""),
        rest("body of invalid UTF-8", "POST", messages, Some(b"{\"text\":\"\xff\xfe\"}"), 400, "bad_request"),
        rest(
            "body over 64 KiB",
            "POST",
            messages,
            Some(format!(r#"{{"text":"{}"}}"#, "a".repeat(70_000)).as_bytes()),
            413,
            "too_large",
        ),
        rest("reply_to 1e400", "POST", messages, Some(br#"{"text":"x","reply_to":1e400}"#), 400, "bad_request"),
        rest(
            "from.name of 33 characters",
            "POST",
            messages,
            Some(format!(r#"{{"text":"x","from":{{"name":"{}"}}}}"#, "n".repeat(33)).as_bytes()),
            400,
            "bad_request",
        ),
        rest("PATCH with no field", "PATCH", "/api/rooms/general", Some(b"{}"), 400, "bad_request"),
        rest(
            "topic with a control character",
            "PATCH",
            "/api/rooms/general",
            Some(br#"{"topic":"a\u0007"}"#),
            400,
            "bad_request",
        ),
        rest(
            "ban for 0 seconds",
            "POST",
            "/api/rooms/general/bans",
            Some(br#"{"user":"u_1","duration_secs":0}"#),
            400,
            "bad_request",
        ),
        rest(
            "ban of a user id with a newline",
            "POST",
            "/api/rooms/general/bans",
            Some(br#"{"user":"u\n1"}"#),
            400,
            "bad_request",
        ),
        // REST: paths and queries.
        rest("room ../../etc, encoded", "GET", "/api/rooms/..%2F..%2Fetc", None, 400, "bad_request"),
        rest("room %2e%2e is the unknown room ..", "GET", "/api/rooms/%2e%2e", None, 404, "not_found"),
        rest("room with a NUL", "GET", "/api/rooms/a%00b", None, 400, "bad_request"),
        rest("room of 65 characters", "GET", format!("/api/rooms/{long}"), None, 400, "bad_request"),
        rest("room in fullwidth letters", "GET", "/api/rooms/%EF%BD%87eneral", None, 400, "bad_request"),
        rest("limit 1e400", "GET", "/api/rooms?limit=1e400", None, 400, "bad_request"),
        rest("limit 0", "GET", "/api/rooms?limit=0", None, 400, "bad_request"),
        rest("limit a word", "GET", "/api/rooms?limit=many", None, 400, "bad_request"),
        rest("before 2^64", "GET", "/api/rooms/general/messages?before=18446744073709551616", None, 400, "bad_request"),
        rest("before -1", "GET", "/api/rooms/general/messages?before=-1", None, 400, "bad_request"),
    ];
    // A body that is not declared JSON.
    let mut case = rest("body sent as text/plain", "POST", messages, Some(br#"{"text":"x"}"#), 415, "bad_request");
    case.headers = vec![("Content-Type", "text/plain".to_owned())];
    cases.push(case);
    let mut case =
        rest("Idempotency-Key of 65 characters", "POST", messages, Some(br#"{"text":"x"}"#), 400, "bad_request");
    case.headers.push(("Idempotency-Key", "k".repeat(65)));
    cases.push(case);
    cases
}

/// Sends `case` over a fresh connection: the status and body.
async fn exchange(server: &TestServer, case: &HttpCase) -> (u16, String) {
    let mut stream = within(tokio::net::TcpStream::connect(server.addr)).await.unwrap();
    let mut request =
        format!("{} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n", case.method, case.path, server.addr);
    for (name, value) in &case.headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = &case.body {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(case.body.as_deref().unwrap_or_default());
    within(stream.write_all(&bytes)).await.unwrap();
    // Read the head (a 101 never ends: stop at the head then).
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = within(stream.read(&mut buf)).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        received.extend_from_slice(&buf[..n]);
        if received.starts_with(b"HTTP/1.1 101") && received.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&received).to_string();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn upgrades_and_the_rest_api_answer_each_bad_request_as_documented() {
    let server = spawn().await;
    // A room the REST cases can write to.
    assert_eq!(rest_call(&server, "POST", "/api/rooms", br#"{"name":"general"}"#).await, 201);
    let mut failures = Vec::new();
    let cases = http_cases();
    for case in &cases {
        let (status, body) = exchange(&server, case).await;
        let mut wrong = (status != case.status).then(|| format!("status {status}, expected {}: {body}", case.status));
        if wrong.is_none() && status >= 400 {
            if let Some(code) = case.code {
                let answer: Value = serde_json::from_str(chunk_payload(&body).trim()).unwrap_or(Value::Null);
                if answer["error"]["code"] != code || answer["error"]["message"].as_str().unwrap_or("").is_empty() {
                    wrong = Some(format!("body {body:?}, expected code {code} and a message"));
                }
            }
        }
        if let Some(wrong) = wrong {
            failures.push(format!("{}: {wrong}", case.name));
        }
    }
    assert_alive(&server).await;
    assert!(
        failures.is_empty(),
        "{} of {} cases answered otherwise:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    server.stop().await;
}

/// The payload of a body that may be chunked (one chunk is enough for these answers).
fn chunk_payload(body: &str) -> &str {
    match body.split_once("\r\n") {
        Some((size, rest)) if usize::from_str_radix(size.trim(), 16).is_ok() && !body.starts_with('{') => {
            let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            rest.get(..size).unwrap_or(rest)
        }
        _ => body,
    }
}

async fn rest_call(server: &TestServer, method: &str, path: &str, body: &[u8]) -> u16 {
    http(method, &server.http(path), &[("Content-Type", "application/json")], Some(body)).await.status
}

#[tokio::test]
async fn oversize_heads_slow_handshakes_and_half_open_connections_leave_the_server_serving() {
    let server = spawn_with(|c| {
        c.request_head_timeout_secs = 1.0;
        c.heartbeat_secs = 0.3;
        c.idle_timeout_secs = 0.8;
    })
    .await;
    let mut failures = Vec::new();
    // A header line of 500 KiB, and 200 header lines: refused with 431, never served.
    // (The server stops reading at its limit, about 400 KiB, so the kernel may reset the
    // connection before the 431 of the first one is read: a reset counts as refused.)
    for (name, head) in [
        (
            "a header of 500 KiB",
            format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(500 << 10)),
        ),
        (
            "200 header lines",
            format!(
                "GET /healthz HTTP/1.1\r\nHost: x\r\n{}\r\n",
                (0..200).map(|i| format!("X-H{i}: v\r\n")).collect::<String>()
            ),
        ),
    ] {
        let mut stream = within(tokio::net::TcpStream::connect(server.addr)).await.unwrap();
        let _ = within(stream.write_all(head.as_bytes())).await;
        let mut answer = Vec::new();
        let reset = within(stream.read_to_end(&mut answer)).await.is_err();
        let answer = String::from_utf8_lossy(&answer);
        if !(answer.starts_with("HTTP/1.1 431") || (reset && name.contains("KiB") && answer.is_empty())) {
            failures.push(format!("{name}: answered {:?}", answer.lines().next()));
        }
    }
    // A slow handshake: an upgrade request that is never finished is closed at the bound.
    let mut slow = within(tokio::net::TcpStream::connect(server.addr)).await.unwrap();
    slow.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n").await.unwrap();
    let mut sink = Vec::new();
    if tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut sink)).await.is_err() {
        failures.push("an unfinished upgrade request: still open after 5 s".to_owned());
    }
    // A half-open WebSocket: upgraded, then nothing, not even pongs: pinged, then closed
    // with 1000 `idle timeout`.
    let mut silent = raw_websocket(server.addr, "/ws?name=ghost").await;
    let frames = within(read_raw_frames(&mut silent)).await;
    match frames.last() {
        Some((OP_CLOSE, payload)) if bavard_ws::client::close_code(payload) == 1000 => {}
        other => failures.push(format!("a half-open WebSocket: ended with {other:?}")),
    }
    assert_alive(&server).await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    server.stop().await;
}
