//! The one piece of the HTTP handshake that belongs with the framing (the server uses it):
//! `Sec-WebSocket-Accept` from the client's `Sec-WebSocket-Key` (RFC 6455, 4.2.2).

use sha1::{Digest, Sha1};

/// The GUID RFC 6455 appends to the key before hashing.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The `Sec-WebSocket-Accept` value answering a `Sec-WebSocket-Key` of `key`: the
/// base64 of the SHA-1 of the key followed by RFC 6455's GUID.
pub fn derive_accept_key(key: &[u8]) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(key);
    sha1.update(ACCEPT_GUID);
    data_encoding::BASE64.encode(&sha1.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_the_rfc_example() {
        assert_eq!(derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }
}
