//! A connection's bounded outbound queue of encoded frames.

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// An encoded text frame. Cloning shares the bytes: one encoding serves every member.
pub type Frame = tungstenite::Utf8Bytes;

/// The sending side of a session's outbound queue.
///
/// The queue is bounded; when a push finds it full the member is too slow, and
/// `overflowed` fires so its session closes with 4008 instead of skipping frames.
#[derive(Debug, Clone)]
pub struct Outbox {
    frames: mpsc::Sender<Frame>,
    overflowed: CancellationToken,
}

impl Outbox {
    /// A queue of `capacity` frames: the outbox, its receiver, and the overflow signal.
    pub fn new(capacity: usize) -> (Self, mpsc::Receiver<Frame>, CancellationToken) {
        let (frames, receiver) = mpsc::channel(capacity.max(1));
        let overflowed = CancellationToken::new();
        (Self { frames, overflowed: overflowed.clone() }, receiver, overflowed)
    }

    /// Queues a frame without waiting. Returns false if the member overflowed (now or
    /// before) or is gone; the frame is then dropped and the session is closing.
    pub fn push(&self, frame: Frame) -> bool {
        if self.overflowed.is_cancelled() {
            return false;
        }
        match self.frames.try_send(frame) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.overflowed.cancel();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}
