//! The original plain-text protocol side of a session: every text frame is a message
//! in the session's one room; nothing is ever sent back but room traffic.

use bavard_protocol::RoomName;

use super::{End, Session, Socket};
use crate::{
    hub::{HubError, Post},
    metrics::Route,
};

impl<S> Session<S>
where
    S: Socket,
{
    pub(super) async fn plain_open(&mut self, room: RoomName) -> Result<(), End> {
        match self.hub.enter(&self.me, &room).await {
            Ok(()) => {
                self.rooms.insert(room);
                Ok(())
            }
            // Refused by the room's rules since the upgrade was let through.
            Err(HubError::Forbidden(reason)) => Err(End::Policy(reason)),
            Err(e) => {
                tracing::error!(error = %e, "cannot join the plain-text room");
                Err(End::Disconnected)
            }
        }
    }

    pub(super) async fn plain_text(&mut self, text: &str) -> Result<(), End> {
        // The read loop only reads when a token is available, so this always succeeds.
        self.rate.try_take();
        if text.is_empty() {
            // The protocol's texts have at least one character; an empty frame is no message.
            return Ok(());
        }
        let chars = text.chars().count();
        let max = self.settings.limits.max_text_chars;
        if chars > max {
            return Err(End::TooBig(format!("text of {chars} characters; the limit is {max}")));
        }
        let Some(room) = self.rooms.first().cloned() else {
            return Err(End::Disconnected);
        };
        let post = Post { room, text: text.to_owned(), key: None, reply_to: None, stream: false };
        match self.hub.publish(&self.me, post).await {
            // Delivery, to this client too, comes through the room once committed.
            Ok(_committing) => {
                self.settings.metrics.message_accepted(Route::Plain);
                Ok(())
            }
            // A plain-text client has no way to hear a refusal but the close frame's
            // reason: refused texts close it (1008 for the room's rules, 4029 for a
            // rate), rather than vanishing.
            Err(HubError::Forbidden(reason)) => Err(End::Policy(reason)),
            Err(HubError::NotMember(room)) => Err(End::Policy(format!("no longer a member of room {room}"))),
            Err(HubError::SlowMode { .. } | HubError::UserRate { .. }) => Err(End::RateLimited),
            Err(e) => {
                tracing::error!(error = %e, "cannot store a plain-text message");
                Err(End::Disconnected)
            }
        }
    }
}
