//! Fuzzes the frame parser and decoder with what a client could send: bytes read in
//! chunks of any size, with a small message limit so "too big" is reached. Checks that
//! nothing panics, that decoding does not depend on how the bytes were cut, that every
//! message respects RFC 6455 and the limit, and that messages survive a re-encoding.
//!
//! Input: one configuration byte (bits 0-2: the limit; bit 3: the reading role; bits
//! 4-7: the chunk size), then the bytes on the wire.

#![no_main]

use bavard_ws::{
    frame::{encode_close_payload, encode_frame, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT},
    parse_frame_head, Decoder, Error, Message, Role,
};
use libfuzzer_sys::fuzz_target;

const LIMITS: [usize; 8] = [0, 1, 7, 125, 126, 300, 4096, 65_536];

fuzz_target!(|data: &[u8]| {
    let Some((&config, wire)) = data.split_first() else { return };
    let limit = LIMITS[usize::from(config & 7)];
    let role = if config & 8 == 0 { Role::Server } else { Role::Client };
    let chunk = usize::from(config >> 4) + 1;

    check_head(wire, role, limit);
    let whole = decode(wire, role, limit, wire.len().max(1));
    let chunked = decode(wire, role, limit, chunk);
    assert_eq!(whole, chunked, "decoding depends on how the bytes were cut");
    let (messages, _) = whole;
    for message in &messages {
        check_round_trip(message, limit);
    }
});

/// What a decoder made of the bytes: the messages, then the close code of the error
/// that stopped it, if one did.
type Outcome = (Vec<Message>, Option<u16>);

/// Feeds `wire` to a decoder `chunk` bytes at a time, as a socket's reads would.
fn decode(wire: &[u8], role: Role, limit: usize, chunk: usize) -> Outcome {
    let mut decoder = Decoder::new(role, limit);
    let mut buf = Vec::new();
    let mut messages = Vec::new();
    for piece in wire.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&buf) {
                Ok((used, message)) => {
                    assert!(used <= buf.len(), "used {used} of {} bytes", buf.len());
                    buf.drain(..used);
                    let Some(message) = message else { break };
                    check_message(&message, limit);
                    assert!(
                        !matches!(messages.last(), Some(Message::Close(_))),
                        "a message after a close frame: {message:?}"
                    );
                    messages.push(message);
                }
                Err(error) => return (messages, Some(check_error(&error))),
            }
        }
    }
    (messages, None)
}

fn check_message(message: &Message, limit: usize) {
    match message {
        Message::Text(text) => {
            assert!(std::str::from_utf8(text.as_bytes()).is_ok());
            assert!(text.len() <= limit, "text of {} bytes over the limit of {limit}", text.len());
        }
        Message::Binary(bytes) => assert!(bytes.len() <= limit, "binary of {} bytes over {limit}", bytes.len()),
        Message::Ping(bytes) | Message::Pong(bytes) => assert!(bytes.len() <= 125.min(limit)),
        Message::Close(Some(frame)) => {
            assert!(frame.reason.len() <= 123);
            assert!(matches!(frame.code, 1000..=1003 | 1007..=1013 | 3000..=4999), "close code {}", frame.code);
        }
        Message::Close(None) => {}
    }
}

/// A decoding error always has a close code (the peer is still there to be told), and a
/// reason that fits a close frame.
fn check_error(error: &Error) -> u16 {
    assert!(error.close_reason().len() <= 123);
    match error.close_code() {
        Some(code @ (1002 | 1007 | 1009)) => code,
        other => panic!("decoding error {error} with close code {other:?}"),
    }
}

/// The message, encoded again as a client would and decoded, is the same message.
fn check_round_trip(message: &Message, limit: usize) {
    let mut wire = Vec::new();
    let mask = Some([0xa5, 0x01, 0x7e, 0xff]);
    match message {
        Message::Text(text) => encode_frame(&mut wire, OP_TEXT, text.as_bytes(), mask),
        Message::Binary(bytes) => encode_frame(&mut wire, OP_BINARY, bytes, mask),
        Message::Ping(bytes) => encode_frame(&mut wire, OP_PING, bytes, mask),
        Message::Pong(bytes) => encode_frame(&mut wire, OP_PONG, bytes, mask),
        Message::Close(frame) => encode_frame(&mut wire, OP_CLOSE, &encode_close_payload(frame.as_ref()), mask),
    }
    let mut decoder = Decoder::new(Role::Server, limit);
    let decoded = decoder.decode(&wire);
    assert!(
        matches!(&decoded, Ok((used, Some(again))) if *used == wire.len() && again == message),
        "{message:?} re-encoded decodes as {decoded:?}"
    );
}

/// The header parser alone, on the same bytes.
fn check_head(wire: &[u8], role: Role, limit: usize) {
    let Ok(Some(head)) = parse_frame_head(wire, role, limit) else { return };
    let masked = head.mask.is_some();
    assert_eq!(masked, role == Role::Server, "mask {:?} read by {role:?}", head.mask);
    let length_len = head.header_len - if masked { 4 } else { 0 };
    assert!(matches!(length_len, 2 | 4 | 10), "header of {} bytes", head.header_len);
    assert!(head.header_len <= wire.len());
    assert!(head.payload_len <= limit);
    assert!(matches!(head.opcode, 0 | 1 | 2 | 8 | 9 | 10), "opcode {}", head.opcode);
    if head.opcode >= 8 {
        assert!(head.fin && head.payload_len <= 125);
    }
}
