//! The commit stream: how the store tells the hub, in commit order, what it committed,
//! and the barrier handshake that orders a join against that stream.
//!
//! The store holds a [`CommitSender`] and reports every commit on it, from its writer
//! thread, in the order it committed; the hub's dispatcher consumes the [`CommitStream`].
//! A barrier is a marker the store puts in that order on the hub's request: once the
//! dispatcher has processed it, the room is in step with everything committed before.

use std::sync::Arc;

use bavard_protocol::{Message, RoomName};
use tokio::sync::{mpsc, oneshot};

/// What travels on the commit stream.
#[derive(Debug)]
pub(super) enum CommitEvent {
    /// Messages just committed, in seq order within each room.
    Committed(Vec<Arc<Message>>),
    /// Every commit before this point has been reported; `last_seq` is the room's last
    /// committed seq. The dispatcher fires `done` once it has taken note.
    Barrier { room: RoomName, last_seq: u64, done: oneshot::Sender<()> },
}

/// The store's end of the commit stream.
#[derive(Debug, Clone)]
pub struct CommitSender(mpsc::Sender<CommitEvent>);

/// The hub's end of the commit stream.
#[derive(Debug)]
pub struct CommitStream(mpsc::Receiver<CommitEvent>);

/// A commit stream holding at most `depth` reports the hub has not processed yet (the
/// store's writer waits beyond that).
pub fn commit_stream(depth: usize) -> (CommitSender, CommitStream) {
    let (sender, receiver) = mpsc::channel(depth);
    (CommitSender(sender), CommitStream(receiver))
}

impl CommitSender {
    /// Reports committed messages, waiting (blocking the calling thread) while the
    /// stream is full. False once the hub is gone.
    pub fn blocking_committed(&self, messages: Vec<Arc<Message>>) -> bool {
        self.0.blocking_send(CommitEvent::Committed(messages)).is_ok()
    }

    /// Puts a barrier for `room` in commit order (blocking the calling thread while the
    /// stream is full); the hub fires `done` once it has processed it. False once the
    /// hub is gone.
    pub fn blocking_barrier(&self, room: RoomName, last_seq: u64, done: oneshot::Sender<()>) -> bool {
        self.0.blocking_send(CommitEvent::Barrier { room, last_seq, done }).is_ok()
    }
}

/// The same reports from async code (a networked store's writer task, the in-memory
/// store of the tests).
impl CommitSender {
    /// Reports committed messages; false once the hub is gone.
    pub async fn committed(&self, messages: Vec<Arc<Message>>) -> bool {
        self.0.send(CommitEvent::Committed(messages)).await.is_ok()
    }

    /// Puts a barrier for `room` in commit order; false once the hub is gone.
    pub async fn barrier(&self, room: RoomName, last_seq: u64, done: oneshot::Sender<()>) -> bool {
        self.0.send(CommitEvent::Barrier { room, last_seq, done }).await.is_ok()
    }
}

impl CommitStream {
    /// The next report, in commit order; None once the store has closed its end.
    pub(super) async fn next(&mut self) -> Option<CommitEvent> {
        self.0.recv().await
    }

    /// The messages of every commit reported so far, without waiting (barriers are
    /// skipped). For the store's tests.
    #[cfg(test)]
    pub(crate) fn drain_committed(&mut self) -> Vec<Arc<Message>> {
        let mut messages = Vec::new();
        while let Ok(event) = self.0.try_recv() {
            if let CommitEvent::Committed(batch) = event {
                messages.extend(batch);
            }
        }
        messages
    }

    /// The next report, waiting for it (a barrier is acknowledged at once). For the
    /// store's tests.
    #[cfg(test)]
    pub(crate) async fn next_reported(&mut self) -> Option<Reported> {
        Some(match self.0.recv().await? {
            CommitEvent::Committed(messages) => Reported::Committed(messages),
            CommitEvent::Barrier { room, last_seq, done } => {
                let _store_gone = done.send(());
                Reported::Barrier(room, last_seq)
            }
        })
    }
}

/// A report as the store's tests see it (see [`CommitStream::next_reported`]).
#[cfg(test)]
#[derive(Debug)]
pub(crate) enum Reported {
    /// Messages committed, in commit order.
    Committed(Vec<Arc<Message>>),
    /// A barrier for the room, with the room's last seq.
    Barrier(RoomName, u64),
}
