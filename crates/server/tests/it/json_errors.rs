//! Bad input on the JSON protocol: clear errors, the connection kept unless the
//! protocol says close; rate limits and heartbeats.

use std::time::Duration;

use bavard_client::ClientError;
use bavard_protocol::{ErrorCode, Request, ServerFrame};
use bavard_ws::client::{OP_CLOSE, OP_PING, OP_TEXT};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::{helpers::*, json::raw_request};

fn code_of(frame: &ServerFrame) -> ErrorCode {
    match frame {
        ServerFrame::Reply(reply) => {
            assert!(!reply.ok, "{reply:?}");
            reply.error.as_ref().unwrap().code
        }
        ServerFrame::Error { error } => error.code,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn each_malformed_request_gets_a_clear_error_and_the_connection_stays() {
    let server = spawn_with(|c| c.max_text_chars = 10).await;
    let mut client = server.json("bad").await;
    within(client.join(&room("r"), None)).await.unwrap();
    let cases = [
        ("{not json", ErrorCode::BadRequest),
        ("[1,2]", ErrorCode::BadRequest),
        (r#"{"id":1}"#, ErrorCode::BadRequest),
        (r#"{"op":"send","id":2,"room":"r"}"#, ErrorCode::BadRequest),
        (r#"{"op":"send","id":3,"room":"r","text":42}"#, ErrorCode::BadRequest),
        (r#"{"op":"join","id":4,"room":7}"#, ErrorCode::BadRequest),
        (r#"{"op":"join","id":5,"since":"x","room":"r"}"#, ErrorCode::BadRequest),
        (r#"{"op":"fly","id":6}"#, ErrorCode::UnknownOp),
        (r#"{"op":"join","id":7,"room":"no spaces"}"#, ErrorCode::BadRequest),
        (r#"{"op":"send","id":8,"room":"r","text":""}"#, ErrorCode::BadRequest),
        (r#"{"op":"send","id":9,"room":"r","text":"01234567890"}"#, ErrorCode::TooLarge),
        (r#"{"op":"history","id":10,"room":"r","limit":500}"#, ErrorCode::BadRequest),
        (r#"{"op":"send","id":11,"room":"r","text":"a","key":""}"#, ErrorCode::BadRequest),
    ];
    for (frame, expected) in cases {
        let answer = raw_request(&mut client, frame).await;
        assert_eq!(code_of(&answer), expected, "{frame}");
        if let ServerFrame::Reply(reply) = &answer {
            assert!(!reply.error.as_ref().unwrap().message.is_empty());
        }
    }
    // A number no float can hold is valid JSON syntax: the answer still carries the id.
    let answer = raw_request(&mut client, r#"{"op":"join","id":12,"room":"r","since":1e400}"#).await;
    match &answer {
        ServerFrame::Reply(reply) => {
            assert_eq!(reply.id, bavard_protocol::RequestId::Int(12));
            assert_eq!(reply.error.as_ref().map(|e| e.code), Some(ErrorCode::BadRequest));
        }
        other => panic!("expected a reply to id 12, got {other:?}"),
    }
    // Unknown fields are ignored, and the connection still works.
    let answer = raw_request(&mut client, r#"{"op":"ping","id":99,"future":"field"}"#).await;
    assert!(matches!(answer, ServerFrame::Reply(r) if r.ok));
}

#[tokio::test]
async fn an_oversized_frame_closes_with_1009() {
    let server = spawn_with(|c| c.max_frame_bytes = 1024).await;
    let mut client = server.json("big").await;
    let frame = format!(r#"{{"op":"send","room":"r","text":"{}"}}"#, "x".repeat(2000));
    within(client.send_text(frame)).await.unwrap();
    let end = within(client.next_event()).await.unwrap_err();
    assert_eq!(end.close_code(), Some(1009), "{end}");
}

#[tokio::test]
async fn a_binary_frame_closes_with_1003() {
    let server = spawn().await;
    let mut client = server.json("bin").await;
    within(client.send_message(WsMessage::Binary(vec![0u8; 4].into()))).await.unwrap();
    let end = within(client.next_event()).await.unwrap_err();
    assert_eq!(end.close_code(), Some(1003), "{end}");
}

#[tokio::test]
async fn a_flood_is_rate_limited_then_closed_with_4029() {
    let server = spawn_with(|c| {
        c.rate_per_second = 5.0;
        c.rate_burst = 5;
        c.rate_strikes = 3;
    })
    .await;
    let mut client = server.json("flood").await;
    let mut limited = 0;
    let end = loop {
        if let Err(e) = client.send_text(r#"{"op":"ping","id":1}"#.into()).await {
            break e;
        }
        match within(client.next_event()).await {
            Ok(ServerFrame::Reply(reply)) if reply.ok => {}
            Ok(ServerFrame::Reply(reply)) => {
                assert_eq!(reply.error.unwrap().code, ErrorCode::RateLimited);
                limited += 1;
            }
            Ok(other) => panic!("{other:?}"),
            Err(e) => break e,
        }
    };
    assert_eq!(limited, 2, "two rate_limited errors, then the third strike closes");
    assert_eq!(end.close_code(), Some(4029), "{end}");
}

#[tokio::test]
async fn a_plain_text_flood_is_slowed_down_not_dropped() {
    let server = spawn_with(|c| {
        c.rate_per_second = 50.0;
        c.rate_burst = 5;
    })
    .await;
    let mut client = server.plain("/ws/chat/slow").await;
    let started = std::time::Instant::now();
    for i in 0..30 {
        client.send(&format!("{i}")).await;
    }
    for i in 0..30 {
        assert_eq!(client.recv().await, format!("Message reçu : {i}"));
    }
    // 25 messages beyond the burst at 50/s take at least ~0.5 s.
    assert!(started.elapsed() >= Duration::from_millis(400), "{:?}", started.elapsed());
}

#[tokio::test]
async fn the_server_pings_idle_clients_and_closes_dead_ones() {
    let server = spawn_with(|c| {
        c.heartbeat_secs = 0.2;
        c.idle_timeout_secs = 0.7;
    })
    .await;
    // A live client answers pings (tungstenite does so while reading) and stays. It
    // reads for twice the idle timeout; then the reply to its ping shows the connection
    // is open: a close, however late the server sent it, would come before the reply.
    let mut alive = server.json("alive").await;
    alive.set_timeout(Duration::from_millis(1500));
    let heard = alive.next_event().await;
    assert!(matches!(heard, Err(ClientError::Timeout(_))), "nothing but pings while idle: {heard:?}");
    match within(alive.request(Request::Ping)).await {
        Ok(reply) => assert!(reply.ok, "{reply:?}"),
        Err(e) => panic!("the live client was closed: {e}"),
    }
    // A client that never reads never answers: it is pinged, then closed. It reads the
    // raw bytes afterwards, so that nothing answers on its behalf.
    let mut dead = raw_websocket(server.addr, "/ws?name=dead").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let frames = within(read_raw_frames(&mut dead)).await;
    let opcodes: Vec<u8> = frames.iter().map(|(opcode, _)| *opcode).collect();
    assert!(opcodes.contains(&OP_PING), "the server pinged before giving up: {opcodes:?}");
    let (last, payload) = frames.last().unwrap();
    assert_eq!(*last, OP_CLOSE, "{opcodes:?}");
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1000);
}

#[tokio::test]
async fn broken_framing_closes_with_1002_and_invalid_utf8_with_1007() {
    let server = spawn().await;
    let masked = |opcode: u8, payload: &[u8]| {
        let mut frame = Vec::new();
        bavard_ws::client::encode_frame(&mut frame, opcode, payload, [1, 2, 3, 4]);
        frame
    };
    let cases: [(Vec<u8>, u16); 3] = [
        (vec![0x81, 0x02, b'h', b'i'], 1002),   // a client frame must be masked
        (masked(0x3, b"x"), 1002),              // a reserved opcode
        (masked(OP_TEXT, &[0xff, 0xfe]), 1007), // not UTF-8
    ];
    for (frame, expected) in cases {
        let mut socket = raw_websocket(server.addr, "/ws?name=breaker").await;
        socket.queue_raw(&frame);
        // Answer the server's close at once, so that it does not linger waiting for us.
        socket.queue_frame(OP_CLOSE, &1000u16.to_be_bytes());
        within(socket.flush()).await.unwrap();
        let frames = within(read_raw_frames(&mut socket)).await;
        // The welcome, then the close, and nothing after it.
        let opcodes: Vec<u8> = frames.iter().map(|(opcode, _)| *opcode).collect();
        assert_eq!(opcodes, [OP_TEXT, OP_CLOSE], "{frame:?}");
        let payload = &frames[1].1;
        assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), expected, "{frame:?}");
        // The close says why, in words.
        let reason = std::str::from_utf8(&payload[2..]).unwrap();
        assert!(!reason.trim().is_empty(), "{frame:?}: a close code without a reason");
    }
}
