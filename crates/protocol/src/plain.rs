//! The original plain-text protocol of `/ws/chat`, kept byte for byte from the draft.

/// What every plain-text client in the room receives for a message `text`.
pub fn received(text: &str) -> String {
    format!("{RECEIVED_PREFIX}{text}")
}

/// The prefix of [`received`], exactly as the draft wrote it.
pub const RECEIVED_PREFIX: &str = "Message reçu : ";

/// What the other plain-text clients receive when one disconnects.
pub const DISCONNECTED: &str = "Un utilisateur s'est déconnecté.";

/// The room of `/ws/chat`.
pub const DEFAULT_ROOM: &str = "chat";
