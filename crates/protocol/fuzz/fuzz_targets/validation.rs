//! Fuzzes the validation of what users name and write: room names, message texts and
//! idempotency keys, user ids and topics. Each check must not panic and must agree with
//! the rule the protocol document states, checked here independently (by characters);
//! a room name must be read the same from a JSON frame as from `RoomName::new`.
//!
//! Input: one byte picking the text limit (1 to 256 characters), then a UTF-8 string.

#![no_main]

use bavard_protocol::{
    check_topic, check_user_id, ClientFrame, ErrorCode, Request, RoomName, SendRequest, MAX_KEY_CHARS,
    MAX_ROOM_NAME_CHARS, MAX_TOPIC_CHARS, MAX_USER_ID_CHARS,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&limit, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let max_text_chars = usize::from(limit) + 1;
    let chars = text.chars().count();

    // Room names: 1 to 64 characters of A-Z a-z 0-9 . _ -
    let valid_name = (1..=MAX_ROOM_NAME_CHARS).contains(&chars)
        && text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    let name = RoomName::new(text);
    assert_eq!(name.is_ok(), valid_name, "RoomName::new({text:?}) = {name:?}");
    if let Err(error) = &name {
        assert!(error.to_string().contains("invalid room name"), "{error}");
    }
    let frame = serde_json::json!({ "op": "join", "room": text }).to_string();
    match (ClientFrame::parse(&frame), &name) {
        (Ok(ClientFrame { request: Request::Join(join), .. }), Ok(name)) => assert_eq!(&join.room, name),
        (Err(error), Err(_)) => assert_eq!(error.error.code, ErrorCode::BadRequest),
        (parsed, name) => panic!("{frame} parsed as {parsed:?}, but RoomName::new gave {name:?}"),
    }

    // Message texts: 1 to max_text_chars characters (too_large past it); keys: 1 to 64.
    let room = RoomName::new("fuzz").ok();
    let Some(room) = room else { return };
    let send = SendRequest { room: room.clone(), text: text.to_owned(), key: None, reply_to: None, stream: false };
    let expected = match chars {
        0 => Some(ErrorCode::BadRequest),
        n if n > max_text_chars => Some(ErrorCode::TooLarge),
        _ => None,
    };
    assert_eq!(send.validate(max_text_chars).err().map(|e| e.code), expected, "text {text:?}");
    let keyed = SendRequest { room, text: "x".to_owned(), key: Some(text.to_owned()), reply_to: None, stream: false };
    let key_ok = (1..=MAX_KEY_CHARS).contains(&chars);
    assert_eq!(keyed.validate(max_text_chars).is_ok(), key_ok, "key {text:?}");

    // User ids: 1 to 128 characters; topics: at most 256; neither with control characters.
    let control = text.chars().any(char::is_control);
    assert_eq!(check_user_id(text).is_ok(), (1..=MAX_USER_ID_CHARS).contains(&chars) && !control, "user {text:?}");
    assert_eq!(check_topic(text).is_ok(), chars <= MAX_TOPIC_CHARS && !control, "topic {text:?}");
});
