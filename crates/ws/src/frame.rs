//! Frames: the header parser and the encoder both sides use, and the [`Decoder`] that
//! turns a peer's bytes into whole messages (fragments, UTF-8, close frames, limits).
//!
//! Everything here works on byte slices and does no I/O, so the fuzz target drives the
//! same code as the server socket and the raw client.

use bytes::Bytes;
use bytestring::ByteString;

use crate::{CloseFrame, Error, Message};

/// Opcode of a continuation frame.
pub const OP_CONTINUATION: u8 = 0x0;
/// Opcode of a text frame.
pub const OP_TEXT: u8 = 0x1;
/// Opcode of a binary frame.
pub const OP_BINARY: u8 = 0x2;
/// Opcode of a close frame.
pub const OP_CLOSE: u8 = 0x8;
/// Opcode of a ping frame.
pub const OP_PING: u8 = 0x9;
/// Opcode of a pong frame.
pub const OP_PONG: u8 = 0xA;

/// The largest payload of a control frame (close, ping, pong).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Which side reads the frames: a server reads client frames, which must be masked; a
/// client reads server frames, which must not be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Reading a client's frames.
    Server,
    /// Reading a server's frames.
    Client,
}

/// A frame's header, parsed from the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    /// Whether this is the last fragment of its message.
    pub fin: bool,
    /// The opcode: one of the `OP_*` constants (others are refused by the parser).
    pub opcode: u8,
    /// The header's length in bytes: 2, 4 or 10, plus 4 when masked.
    pub header_len: usize,
    /// The payload's length in bytes.
    pub payload_len: usize,
    /// The masking key, for frames from a client.
    pub mask: Option<[u8; 4]>,
}

impl FrameHead {
    /// Header plus payload: how many bytes the whole frame takes.
    pub fn total_len(&self) -> usize {
        self.header_len.saturating_add(self.payload_len)
    }
}

/// Parses the header of the frame at the start of `buf`: `None` while `buf` holds too
/// little of it. Refuses what RFC 6455 forbids a peer to send to `role` (reserved bits,
/// reserved opcodes, a mask that is missing or should not be there, fragmented or
/// oversized control frames), and payloads over `max_payload` bytes.
#[inline]
pub fn parse_frame_head(buf: &[u8], role: Role, max_payload: usize) -> Result<Option<FrameHead>, Error> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    if b0 & 0x70 != 0 {
        return Err(Error::protocol("reserved bits set, but no extension was negotiated"));
    }
    let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
    match opcode {
        OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG => {}
        3..=7 => return Err(Error::protocol(format!("reserved data opcode {opcode}"))),
        _ => return Err(Error::protocol(format!("reserved control opcode {opcode}"))),
    }
    let masked = b1 & 0x80 != 0;
    match (role, masked) {
        (Role::Server, false) => return Err(Error::protocol("unmasked frame from a client")),
        (Role::Client, true) => return Err(Error::protocol("masked frame from a server")),
        _ => {}
    }
    let (payload_len, length_end) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(&[high, low]) => (usize::from(u16::from_be_bytes([high, low])), 4),
            _ => return Ok(None),
        },
        127 => match buf.get(2..10).and_then(|bytes| <[u8; 8]>::try_from(bytes).ok()) {
            Some(be) => (usize::try_from(u64::from_be_bytes(be)).unwrap_or(usize::MAX), 10),
            None => return Ok(None),
        },
        short => (usize::from(short), 2),
    };
    if opcode >= OP_CLOSE {
        if !fin {
            return Err(Error::protocol("fragmented control frame"));
        }
        if payload_len > MAX_CONTROL_PAYLOAD {
            return Err(Error::protocol(format!("control frame of {payload_len} bytes (at most 125)")));
        }
    }
    if payload_len > max_payload {
        return Err(Error::TooBig { size: payload_len, limit: max_payload });
    }
    let (mask, header_len) = if masked {
        match buf.get(length_end..length_end + 4) {
            Some(&[a, b, c, d]) => (Some([a, b, c, d]), length_end + 4),
            _ => return Ok(None),
        }
    } else {
        (None, length_end)
    };
    Ok(Some(FrameHead { fin, opcode, header_len, payload_len, mask }))
}

/// Appends one whole frame (FIN set) to `out`: masked with `mask` when given (a client's
/// frames), as it is otherwise (a server's).
#[inline]
pub fn encode_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) {
    let len = payload.len();
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    out.reserve(14 + len);
    out.push(0x80 | opcode);
    match len {
        0..=125 => out.push(mask_bit | len as u8),
        126..=0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    match mask {
        None => out.extend_from_slice(payload),
        Some(mask) => {
            out.extend_from_slice(&mask);
            let start = out.len();
            out.extend_from_slice(payload);
            apply_mask(&mut out[start..], mask);
        }
    }
}

/// Masks or unmasks `bytes` in place (the same operation), counting from the key's first byte.
#[inline]
pub fn apply_mask(bytes: &mut [u8], mask: [u8; 4]) {
    let mut chunks = bytes.chunks_exact_mut(4);
    for chunk in &mut chunks {
        for (byte, key) in chunk.iter_mut().zip(mask) {
            *byte ^= key;
        }
    }
    for (byte, key) in chunks.into_remainder().iter_mut().zip(mask) {
        *byte ^= key;
    }
}

/// The payload of a close frame: nothing, or a code and a reason.
pub fn encode_close_payload(frame: Option<&CloseFrame>) -> Vec<u8> {
    let Some(frame) = frame else { return Vec::new() };
    let reason = crate::error::fit_close_reason(&frame.reason);
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&frame.code.to_be_bytes());
    payload.extend_from_slice(reason.as_bytes());
    payload
}

/// Whether a peer may send close code `code` (RFC 6455, 7.4): not 1004-1006, 1015 nor
/// unassigned codes below 3000.
pub fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1013 | 3000..=4999)
}

/// Reads a close frame's payload: nothing, or an allowed code and a UTF-8 reason.
pub fn parse_close_payload(payload: &[u8]) -> Result<Option<CloseFrame>, Error> {
    match payload {
        [] => Ok(None),
        [_] => Err(Error::protocol("close frame with a one-byte payload")),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            if !close_code_allowed(code) {
                return Err(Error::protocol(format!("close code {code} may not be sent")));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| Error::InvalidUtf8("a close reason"))?;
            Ok(Some(CloseFrame { code, reason: reason.to_owned() }))
        }
    }
}

/// Turns the bytes a peer sends into whole messages, frame by frame: assembles
/// fragments, checks text as UTF-8 fragment by fragment (so invalid text fails at the
/// fragment that breaks it, and each byte is checked once), enforces the message limit,
/// and ignores whatever follows a close frame.
///
/// It answers nothing itself: the caller replies to pings and close frames.
#[derive(Debug)]
pub struct Decoder {
    role: Role,
    /// Largest frame, and largest reassembled message, accepted.
    max_message: usize,
    /// A fragmented data message being put together.
    assembling: Option<Assembling>,
    close_received: bool,
}

/// A fragmented data message being put together.
#[derive(Debug)]
enum Assembling {
    /// Text: the valid UTF-8 so far, and the start of a character cut by a fragment's end.
    Text {
        text: String,
        tail: [u8; 4],
        tail_len: u8,
    },
    Binary(Vec<u8>),
}

impl Assembling {
    fn len(&self) -> usize {
        match self {
            Self::Text { text, tail_len, .. } => text.len() + usize::from(*tail_len),
            Self::Binary(bytes) => bytes.len(),
        }
    }

    /// Adds a fragment's payload (still masked when `mask` is given).
    fn push(&mut self, payload: &[u8], mask: Option<[u8; 4]>) -> Result<(), Error> {
        match self {
            Self::Binary(bytes) => {
                let start = bytes.len();
                bytes.extend_from_slice(payload);
                if let Some(mask) = mask {
                    apply_mask(&mut bytes[start..], mask);
                }
                Ok(())
            }
            Self::Text { text, tail, tail_len } => {
                let unmasked;
                let fragment = match mask {
                    Some(mask) => {
                        unmasked = unmask(payload, mask);
                        &unmasked[..]
                    }
                    None => payload,
                };
                push_text(text, tail, tail_len, fragment)
            }
        }
    }

    fn finish(self) -> Result<Message, Error> {
        match self {
            Self::Text { tail_len: 1.., .. } => Err(Error::InvalidUtf8("a text message (it ends inside a character)")),
            Self::Text { text, .. } => Ok(Message::Text(ByteString::from(text))),
            Self::Binary(bytes) => Ok(Message::Binary(bytes.into())),
        }
    }
}

/// The number of bytes of the UTF-8 character that starts with `lead`.
fn utf8_width(lead: u8) -> usize {
    match lead {
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xff => 4,
        _ => 1,
    }
}

/// Whether `bytes` (a few) are the start of a valid character, cut short.
fn is_cut_character(bytes: &[u8]) -> bool {
    matches!(std::str::from_utf8(bytes), Err(e) if e.error_len().is_none())
}

/// Appends a text fragment to `text`, checking it once: a character cut by the end of
/// the fragment waits in `tail` for the next one.
fn push_text(text: &mut String, tail: &mut [u8; 4], tail_len: &mut u8, fragment: &[u8]) -> Result<(), Error> {
    const INVALID: Error = Error::InvalidUtf8("a text message");
    let mut rest = fragment;
    if *tail_len > 0 {
        let have = usize::from(*tail_len);
        let width = utf8_width(tail[0]);
        let take = width.saturating_sub(have).min(rest.len());
        tail[have..have + take].copy_from_slice(&rest[..take]);
        rest = &rest[take..];
        let have = have + take;
        *tail_len = have as u8;
        if have < width {
            // Still cut (the fragment was shorter than the character's rest).
            return if is_cut_character(&tail[..have]) { Ok(()) } else { Err(INVALID) };
        }
        let character = std::str::from_utf8(&tail[..have]).map_err(|_| INVALID)?;
        text.push_str(character);
        *tail_len = 0;
    }
    let mut chunks = rest.utf8_chunks().peekable();
    while let Some(chunk) = chunks.next() {
        text.push_str(chunk.valid());
        let invalid = chunk.invalid();
        if invalid.is_empty() {
            continue;
        }
        // Only a character cut by the fragment's end may wait for the next fragment.
        if chunks.peek().is_some() || !is_cut_character(invalid) {
            return Err(INVALID);
        }
        tail[..invalid.len()].copy_from_slice(invalid);
        *tail_len = invalid.len() as u8;
    }
    Ok(())
}

/// A copy of `payload`, unmasked.
fn unmask(payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut bytes = payload.to_vec();
    apply_mask(&mut bytes, mask);
    bytes
}

/// A copy of `payload`, unmasked when `mask` is given.
fn unmasked(payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    match mask {
        Some(mask) => unmask(payload, mask),
        None => payload.to_vec(),
    }
}

impl Decoder {
    /// A decoder of the frames `role` reads, accepting frames and messages of at most
    /// `max_message` bytes.
    pub fn new(role: Role, max_message: usize) -> Self {
        Self { role, max_message, assembling: None, close_received: false }
    }

    /// The largest frame or message accepted.
    pub fn max_message(&self) -> usize {
        self.max_message
    }

    /// Whether a close frame has been decoded (everything after it is ignored).
    pub fn close_received(&self) -> bool {
        self.close_received
    }

    /// Decodes frames from the start of `buf` until one completes a message. Returns
    /// how many bytes it used (whole frames only: the caller keeps the rest for the next
    /// call) and the message, or `None` when `buf` ends before one is complete.
    ///
    /// An error is final: the connection should be closed with [`Error::close_code`].
    pub fn decode(&mut self, buf: &[u8]) -> Result<(usize, Option<Message>), Error> {
        let mut used = 0;
        loop {
            let unparsed = buf.get(used..).unwrap_or_default();
            let Some(head) = parse_frame_head(unparsed, self.role, self.max_message)? else {
                return Ok((used, None));
            };
            let Some(payload) = unparsed.get(head.header_len..head.total_len()) else {
                return Ok((used, None));
            };
            used += head.total_len();
            if self.close_received {
                continue; // Nothing may follow a close frame.
            }
            if let Some(message) = self.on_frame(&head, payload)? {
                return Ok((used, Some(message)));
            }
        }
    }

    /// Handles one whole frame (its payload still masked).
    fn on_frame(&mut self, head: &FrameHead, payload: &[u8]) -> Result<Option<Message>, Error> {
        match head.opcode {
            OP_CONTINUATION => {
                let Some(assembling) = self.assembling.as_mut() else {
                    return Err(Error::protocol("continuation frame with no message to continue"));
                };
                let size = assembling.len() + payload.len();
                if size > self.max_message {
                    return Err(Error::TooBig { size, limit: self.max_message });
                }
                assembling.push(payload, head.mask)?;
                if !head.fin {
                    return Ok(None);
                }
                match self.assembling.take() {
                    Some(done) => done.finish().map(Some),
                    None => Ok(None),
                }
            }
            OP_TEXT | OP_BINARY => {
                if self.assembling.is_some() {
                    return Err(Error::protocol("new data frame before the fragmented message ended"));
                }
                let text = head.opcode == OP_TEXT;
                if head.fin {
                    let bytes = Bytes::from(unmasked(payload, head.mask));
                    return if text {
                        // The one UTF-8 check of a single-frame text message.
                        let text = ByteString::try_from(bytes).map_err(|_| Error::InvalidUtf8("a text message"))?;
                        Ok(Some(Message::Text(text)))
                    } else {
                        Ok(Some(Message::Binary(bytes)))
                    };
                }
                let mut assembling = if text {
                    Assembling::Text { text: String::new(), tail: [0; 4], tail_len: 0 }
                } else {
                    Assembling::Binary(Vec::new())
                };
                assembling.push(payload, head.mask)?;
                self.assembling = Some(assembling);
                Ok(None)
            }
            OP_CLOSE => {
                let frame = parse_close_payload(&unmasked(payload, head.mask))?;
                self.close_received = true;
                Ok(Some(Message::Close(frame)))
            }
            OP_PING => Ok(Some(Message::Ping(unmasked(payload, head.mask).into()))),
            OP_PONG => Ok(Some(Message::Pong(unmasked(payload, head.mask).into()))),
            other => Err(Error::protocol(format!("reserved opcode {other}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    pub(crate) fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut frame = Vec::new();
        encode_frame(&mut frame, opcode, payload, Some([0x12, 0x34, 0x56, 0x78]));
        if !fin {
            frame[0] &= 0x7f;
        }
        frame
    }

    fn decode_all(bytes: &[u8], max: usize) -> Result<Vec<Message>, Error> {
        let mut decoder = Decoder::new(Role::Server, max);
        let mut at = 0;
        let mut messages = Vec::new();
        loop {
            let (used, message) = decoder.decode(&bytes[at..])?;
            at += used;
            match message {
                Some(message) => messages.push(message),
                None => return Ok(messages),
            }
        }
    }

    #[test]
    fn parses_the_three_length_forms_for_both_roles() {
        let h = parse_frame_head(&[0x81, 5], Role::Client, 1 << 20).unwrap().unwrap();
        assert_eq!((h.fin, h.opcode, h.header_len, h.payload_len, h.mask), (true, 1, 2, 5, None));
        let h = parse_frame_head(&[0x01, 126, 1, 0], Role::Client, 1 << 20).unwrap().unwrap();
        assert_eq!((h.fin, h.header_len, h.payload_len), (false, 4, 256));
        let h = parse_frame_head(&[0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0], Role::Client, 1 << 20).unwrap().unwrap();
        assert_eq!((h.header_len, h.payload_len), (10, 65536));
        let h = parse_frame_head(&[0x81, 0x85, 1, 2, 3, 4], Role::Server, 1 << 20).unwrap().unwrap();
        assert_eq!((h.header_len, h.payload_len, h.mask), (6, 5, Some([1, 2, 3, 4])));
        assert_eq!(parse_frame_head(&[0x81], Role::Client, 10).unwrap(), None);
        assert_eq!(parse_frame_head(&[0x81, 126, 1], Role::Client, 1000).unwrap(), None);
        assert_eq!(parse_frame_head(&[0x81, 0x85, 1, 2, 3], Role::Server, 10).unwrap(), None);
        assert!(parse_frame_head(&[0x81, 0x85], Role::Client, 10).is_err(), "a server does not mask");
        assert!(parse_frame_head(&[0x81, 0x05], Role::Server, 10).is_err(), "a client masks");
        let huge = [0x82, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(parse_frame_head(&huge, Role::Server, 10), Err(Error::TooBig { limit: 10, .. })));
    }

    #[test]
    fn encodes_masked_and_unmasked_frames() {
        let mut out = Vec::new();
        encode_frame(&mut out, OP_TEXT, b"abc", Some([1, 2, 3, 4]));
        assert_eq!(out, [0x81, 0x83, 1, 2, 3, 4, b'a' ^ 1, b'b' ^ 2, b'c' ^ 3]);
        out.clear();
        encode_frame(&mut out, OP_TEXT, &[0; 300], Some([0; 4]));
        assert_eq!(&out[..4], &[0x81, 0xfe, 1, 44]);
        assert_eq!(out.len(), 4 + 4 + 300);
        out.clear();
        encode_frame(&mut out, OP_BINARY, &[7; 70_000], None);
        assert_eq!(&out[..10], &[0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
        assert_eq!(out.len(), 10 + 70_000);
    }

    #[test]
    fn masking_twice_gives_the_bytes_back() {
        let original: Vec<u8> = (0..=255).collect();
        for len in 0..12 {
            let mut bytes = original[..len].to_vec();
            apply_mask(&mut bytes, [9, 8, 7, 6]);
            let expected: Vec<u8> = original[..len].iter().enumerate().map(|(i, b)| b ^ [9, 8, 7, 6][i % 4]).collect();
            assert_eq!(bytes, expected);
            apply_mask(&mut bytes, [9, 8, 7, 6]);
            assert_eq!(bytes, &original[..len]);
        }
    }

    /// However a text message is cut into fragments, it is accepted exactly when the
    /// whole is valid UTF-8, and comes out whole.
    #[test]
    fn fragmented_text_is_checked_once_whatever_the_cuts() {
        let samples: [&[u8]; 8] = [
            "héllo wörld".as_bytes(),
            "κόσμε 𝄞 ok".as_bytes(),
            "€𐍈".as_bytes(),
            b"ok\xff",
            b"\xe2\x82",             // ends inside a character
            b"\xe2\x41\x42",         // a character broken by its second byte
            b"\xf0\x90\x80\x80\x80", // a lone continuation byte after a whole character
            b"\xed\xa0\x80",         // a surrogate
        ];
        for sample in samples {
            let valid = std::str::from_utf8(sample).is_ok();
            for first in 0..=sample.len() {
                for second in first..=sample.len() {
                    let mut bytes = client_frame(false, OP_TEXT, &sample[..first]);
                    bytes.extend(client_frame(false, OP_CONTINUATION, &sample[first..second]));
                    bytes.extend(client_frame(true, OP_CONTINUATION, &sample[second..]));
                    match decode_all(&bytes, 1024) {
                        Ok(messages) => {
                            assert!(valid, "{sample:02x?} cut at {first}, {second} was accepted");
                            assert_eq!(
                                messages,
                                [Message::Text(ByteString::from(std::str::from_utf8(sample).unwrap()))]
                            );
                        }
                        Err(error) => {
                            assert!(!valid, "{sample:02x?} cut at {first}, {second}: {error}");
                            assert_eq!(error.close_code(), Some(1007));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn invalid_text_fails_at_the_fragment_that_breaks_it() {
        let mut decoder = Decoder::new(Role::Server, 1024);
        let error = decoder.decode(&client_frame(false, OP_TEXT, b"ok\xff")).unwrap_err();
        assert_eq!(error.close_code(), Some(1007));
        let mut decoder = Decoder::new(Role::Server, 1024);
        let mut bytes = client_frame(false, OP_TEXT, b"ok\xe2");
        bytes.extend(client_frame(false, OP_CONTINUATION, b"\x41"));
        assert!(decoder.decode(&bytes).is_err(), "a cut character is checked with the next fragment");
    }

    #[test]
    fn decodes_every_kind_of_message_and_ignores_what_follows_a_close() {
        let mut bytes = client_frame(true, OP_BINARY, &[1, 2, 3]);
        bytes.extend(client_frame(true, OP_PING, b"p"));
        bytes.extend(client_frame(false, OP_BINARY, &[4]));
        bytes.extend(client_frame(true, OP_PONG, b""));
        bytes.extend(client_frame(true, OP_CONTINUATION, &[5]));
        bytes.extend(client_frame(true, OP_CLOSE, &[0x03, 0xe8, b'b', b'y', b'e']));
        bytes.extend(client_frame(true, OP_TEXT, b"ignored"));
        let messages = decode_all(&bytes, 1024).unwrap();
        assert_eq!(
            messages,
            [
                Message::Binary(Bytes::from_static(&[1, 2, 3])),
                Message::Ping(Bytes::from_static(b"p")),
                Message::Pong(Bytes::new()),
                Message::Binary(Bytes::from_static(&[4, 5])),
                Message::Close(Some(CloseFrame::new(1000, "bye"))),
            ]
        );
    }

    #[test]
    fn returns_only_whole_frames() {
        let frame = client_frame(true, OP_TEXT, b"hello");
        for cut in 0..frame.len() {
            let mut decoder = Decoder::new(Role::Server, 1024);
            assert_eq!(decoder.decode(&frame[..cut]).unwrap(), (0, None));
        }
        let mut decoder = Decoder::new(Role::Server, 1024);
        assert_eq!(decoder.decode(&frame).unwrap(), (frame.len(), Some(Message::Text("hello".into()))));
    }

    #[test]
    fn rejects_what_rfc_6455_forbids() {
        let unmasked = vec![0x81, 0x01, b'x'];
        let reserved_bit = {
            let mut frame = client_frame(true, OP_TEXT, b"x");
            frame[0] |= 0x40;
            frame
        };
        let cases: Vec<(Vec<u8>, u16)> = vec![
            (unmasked, 1002),
            (reserved_bit, 1002),
            (client_frame(false, OP_PING, b"x"), 1002), // fragmented control frame
            (client_frame(true, OP_PING, &[b'x'; 126]), 1002), // control frame over 125 bytes
            (client_frame(true, OP_CONTINUATION, b"x"), 1002), // nothing to continue
            (client_frame(true, 3, b"x"), 1002),        // reserved opcode
            (client_frame(true, 11, b"x"), 1002),       // reserved control opcode
            (client_frame(true, OP_CLOSE, &[0x03]), 1002), // close payload of one byte
            (client_frame(true, OP_CLOSE, &[0x03, 0xed]), 1002), // close code 1005 may not be sent
            (client_frame(true, OP_CLOSE, &[0x03, 0xe8, 0xff]), 1007), // close reason not UTF-8
            (client_frame(true, OP_TEXT, &[0xff, 0xfe]), 1007),
            (client_frame(false, OP_TEXT, &[b'o', b'k', 0xff]), 1007), // fails at the first fragment
            (client_frame(true, OP_TEXT, &[b'x'; 2000]), 1009),
            (
                [client_frame(false, OP_TEXT, &[b'x'; 1000]), client_frame(true, OP_CONTINUATION, &[b'x'; 100])]
                    .concat(),
                1009,
            ),
            ([client_frame(false, OP_TEXT, b"a"), client_frame(true, OP_TEXT, b"b")].concat(), 1002),
        ];
        for (bytes, expected) in cases {
            let error = decode_all(&bytes, 1024).expect_err("refused");
            assert_eq!(error.close_code(), Some(expected), "{bytes:02x?}: {error}");
        }
    }
}
