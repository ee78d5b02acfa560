//! Room names: 1 to 64 characters from `A-Z a-z 0-9 . _ -`.

use std::{fmt, ops::Deref, sync::Arc};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest room name the protocol accepts, in characters.
pub const MAX_ROOM_NAME_CHARS: usize = 64;

/// A validated room name. Cheap to clone (shared string).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomName(Arc<str>);

/// Why a string is not a room name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomNameError(String);

impl fmt::Display for RoomNameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid room name {:?}: use 1 to {MAX_ROOM_NAME_CHARS} characters from A-Z a-z 0-9 . _ -", self.0)
    }
}

impl std::error::Error for RoomNameError {}

impl RoomName {
    /// Validates `name`.
    pub fn new(name: &str) -> Result<Self, RoomNameError> {
        let valid = (1..=MAX_ROOM_NAME_CHARS).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if valid {
            Ok(Self(Arc::from(name)))
        } else {
            let shown: String = name.chars().take(80).collect();
            Err(RoomNameError(shown))
        }
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for RoomName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Serialize for RoomName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RoomName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
        Self::new(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        for name in ["chat", "a", "General-2.0_x", &"x".repeat(64)] {
            assert!(RoomName::new(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        for name in ["", "with space", "slash/", "émoji", "a#b", &"x".repeat(65)] {
            assert!(RoomName::new(name).is_err(), "{name}");
        }
    }
}
