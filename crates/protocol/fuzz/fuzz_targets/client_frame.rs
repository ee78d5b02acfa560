//! Fuzzes the JSON frame decoder of `/ws` in both directions, with what a peer could
//! send as a text frame:
//! - `ClientFrame::parse` (the server reading a client) never panics; an error always
//!   says why; a frame it accepts passes `validate` without panicking and survives a
//!   re-encoding (`to_json`, parsed again, is the same frame);
//! - a `ServerFrame` (a client reading the server) that decodes survives a re-encoding.

#![no_main]

use bavard_protocol::{ClientFrame, ServerFrame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match ClientFrame::parse(text) {
        Ok(frame) => {
            for max_text_chars in [1, 4000] {
                let _ = frame.request.validate(max_text_chars);
            }
            let again = frame.to_json();
            match ClientFrame::parse(&again) {
                Ok(reparsed) => assert_eq!(reparsed, frame, "{text} re-encoded as {again}"),
                Err(error) => panic!("{text} re-encoded as {again}, which does not parse: {error:?}"),
            }
        }
        Err(error) => assert!(!error.error.message.is_empty(), "an error without a message for {text}"),
    }
    if let Ok(frame) = serde_json::from_str::<ServerFrame>(text) {
        let again = frame.to_json();
        match serde_json::from_str::<ServerFrame>(&again) {
            Ok(reparsed) => assert_eq!(reparsed, frame, "{text} re-encoded as {again}"),
            Err(error) => panic!("{text} re-encoded as {again}, which does not parse: {error}"),
        }
    }
});
