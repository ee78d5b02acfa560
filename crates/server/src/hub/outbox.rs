//! A connection's bounded outbound queue of encoded frames.
//!
//! The hub pushes (one lock per member per batch of messages); the session takes
//! everything queued at once, in one swap, and writes it with one flush. An idle
//! outbox holds no heap memory: the queue allocates when frames arrive, its buffer
//! moves to the session with the frames, and the session drops it once they are
//! written (one allocation per batch, against a write syscall per batch).

use std::{
    collections::VecDeque,
    sync::{Mutex, MutexGuard},
};

use tokio::sync::Notify;

/// An encoded text frame, ready for any member's socket. Cloning shares the bytes:
/// one encoding serves every member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame(Text);

/// The bytes of a frame, as the WebSocket layer takes them.
type Text = bytestring::ByteString;

impl Frame {
    /// A frame of constant text (no allocation).
    pub fn from_static(text: &'static str) -> Self {
        Self(Text::from_static(text))
    }

    /// The frame's text.
    #[cfg(test)]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The length of the frame's text in bytes (what it costs an outbox's byte budget).
    pub fn byte_len(&self) -> usize {
        self.0.len()
    }

    /// The frame's bytes, for the socket (no copy).
    pub fn into_text(self) -> Text {
        self.0
    }
}

impl From<String> for Frame {
    fn from(text: String) -> Self {
        Self(Text::from(text))
    }
}

/// Frames bound for many members, their total size counted once (not once per member
/// it is pushed to).
#[derive(Debug, Default)]
pub struct Batch {
    frames: Vec<Frame>,
    bytes: usize,
}

impl FromIterator<Frame> for Batch {
    fn from_iter<I: IntoIterator<Item = Frame>>(frames: I) -> Self {
        let frames: Vec<Frame> = frames.into_iter().collect();
        let bytes = frames.iter().map(Frame::byte_len).sum();
        Self { frames, bytes }
    }
}

/// A bounded queue of frames owed to one connection, bounded both in frames and in the
/// bytes of their text (frames are shared, but a queue holding frames nobody else holds
/// any more pins their memory: the byte bound caps that per connection).
///
/// When a push finds it full (either bound) the member is too slow: the queue is marked overflowed,
/// its frames are dropped (the member will recover them from the store with `since`),
/// and its session closes with 4008 instead of skipping frames silently.
#[derive(Debug)]
pub struct Outbox {
    queue: Mutex<Queue>,
    /// Wakes the session when the queue goes from empty to non-empty or overflows.
    changed: Notify,
}

#[derive(Debug)]
struct Queue {
    frames: VecDeque<Frame>,
    capacity: usize,
    /// Bytes of the frames in `frames`.
    bytes: usize,
    /// Most bytes `frames` may hold.
    capacity_bytes: usize,
    overflowed: bool,
    /// Set when a moderator took the member out of a plain-text connection's only
    /// room: the session closes with 1008 and this reason.
    evicted: Option<Box<str>>,
}

/// What the session finds when it looks at its outbox.
#[derive(Debug)]
pub enum Taken {
    /// Nothing queued.
    Empty,
    /// The member fell too far behind.
    Overflowed,
    /// Frames to write, oldest first (moved into the caller's buffer).
    Frames,
    /// The connection must close with 1008, for this reason (see [`Outbox::evict`]).
    Evicted(String),
}

impl Outbox {
    /// An empty queue of at most `capacity` frames holding at most `capacity_bytes` bytes.
    pub fn new(capacity: usize, capacity_bytes: usize) -> Self {
        let queue = Queue {
            frames: VecDeque::new(),
            capacity: capacity.max(1),
            bytes: 0,
            capacity_bytes: capacity_bytes.max(1),
            overflowed: false,
            evicted: None,
        };
        Self { queue: Mutex::new(queue), changed: Notify::new() }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Frames are only moved in and out under the lock; a poisoned queue is still whole.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues one frame without waiting; false if the member overflowed (now or before).
    pub fn push(&self, frame: Frame) -> bool {
        let bytes = frame.byte_len();
        self.push_frames(std::slice::from_ref(&frame), bytes)
    }

    /// Queues a batch's frames in order without waiting; false if the member
    /// overflowed (now or before), in which case none of them is queued.
    pub fn push_all(&self, batch: &Batch) -> bool {
        self.push_frames(&batch.frames, batch.bytes)
    }

    /// Queues `frames`, which hold `bytes` of text, in order (see [`Outbox::push_all`]).
    fn push_frames(&self, frames: &[Frame], bytes: usize) -> bool {
        let mut queue = self.lock();
        if queue.overflowed || queue.evicted.is_some() {
            return false;
        }
        let bytes = queue.bytes.saturating_add(bytes);
        if queue.frames.len() + frames.len() > queue.capacity || bytes > queue.capacity_bytes {
            queue.overflowed = true;
            queue.frames = VecDeque::new();
            queue.bytes = 0;
            drop(queue);
            self.changed.notify_one();
            return false;
        }
        let was_empty = queue.frames.is_empty();
        queue.bytes = bytes;
        queue.frames.extend(frames.iter().cloned());
        drop(queue);
        if was_empty {
            self.changed.notify_one();
        }
        true
    }

    /// Moves every queued frame to the back of `into` (its buffer too, when `into` is
    /// empty: the queue is then left without one).
    pub fn take(&self, into: &mut VecDeque<Frame>) -> Taken {
        let mut queue = self.lock();
        if queue.overflowed {
            return Taken::Overflowed;
        }
        if let Some(reason) = &queue.evicted {
            return Taken::Evicted(reason.to_string());
        }
        if queue.frames.is_empty() {
            return Taken::Empty;
        }
        if into.is_empty() {
            std::mem::swap(into, &mut queue.frames);
            queue.frames = VecDeque::new();
        } else {
            into.append(&mut queue.frames);
        }
        // Taken frames are the session's: they no longer count against the budget.
        queue.bytes = 0;
        Taken::Frames
    }

    /// Asks the connection to close with 1008 and `reason`, dropping what is queued: a
    /// plain-text member cannot be told it left its only room any other way.
    pub fn evict(&self, reason: &str) {
        let mut queue = self.lock();
        queue.evicted = Some(reason.into());
        queue.frames = VecDeque::new();
        queue.bytes = 0;
        drop(queue);
        self.changed.notify_one();
    }

    /// Whether the member overflowed.
    pub fn overflowed(&self) -> bool {
        self.lock().overflowed
    }

    /// Waits until frames may have arrived or the queue overflowed. Spurious wakeups
    /// happen; call [`Outbox::take`] after, and before waiting again.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(text: &'static str) -> Frame {
        Frame::from_static(text)
    }

    #[test]
    fn frames_come_out_in_order_and_all_at_once() {
        let outbox = Outbox::new(8, 1024);
        assert!(outbox.push(frame("a")));
        assert!(outbox.push_all(&Batch::from_iter([frame("b"), frame("c")])));
        let mut taken = VecDeque::new();
        assert!(matches!(outbox.take(&mut taken), Taken::Frames));
        assert_eq!(taken.iter().map(|f| f.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(outbox.lock().frames.capacity(), 0, "the buffer left with the frames");
        assert!(matches!(outbox.take(&mut taken), Taken::Empty));
    }

    #[test]
    fn a_full_queue_overflows_drops_its_frames_and_refuses_more() {
        let outbox = Outbox::new(2, 1024);
        assert!(outbox.push_all(&Batch::from_iter([frame("a"), frame("b")])));
        assert!(!outbox.push(frame("c")));
        assert!(outbox.overflowed());
        assert!(!outbox.push(frame("d")));
        let mut taken = VecDeque::new();
        assert!(matches!(outbox.take(&mut taken), Taken::Overflowed));
        assert!(taken.is_empty());
    }

    #[test]
    fn a_queue_full_in_bytes_overflows_drops_its_frames_and_refuses_more() {
        let outbox = Outbox::new(64, 10);
        assert!(outbox.push_all(&Batch::from_iter([frame("abcd"), frame("efgh")])));
        assert_eq!(outbox.lock().bytes, 8);
        assert!(outbox.push(frame("ij")), "exactly the budget fits");
        assert!(!outbox.push(frame("k")), "one byte past the budget overflows");
        assert!(outbox.overflowed());
        let queue = outbox.lock();
        assert_eq!((queue.frames.capacity(), queue.bytes), (0, 0), "the frames were dropped at once");
        drop(queue);
        assert!(!outbox.push(frame("")));
        let mut taken = VecDeque::new();
        assert!(matches!(outbox.take(&mut taken), Taken::Overflowed));
        assert!(taken.is_empty());
    }

    #[test]
    fn a_batch_past_the_byte_budget_is_refused_whole() {
        let outbox = Outbox::new(64, 10);
        assert!(outbox.push(frame("abcd")));
        assert!(!outbox.push_all(&Batch::from_iter([frame("efg"), frame("hijk")])));
        assert!(outbox.overflowed());
    }

    #[test]
    fn taking_the_queue_gives_its_bytes_back_to_the_budget() {
        let outbox = Outbox::new(64, 10);
        let mut taken = VecDeque::new();
        for _ in 0..10 {
            assert!(outbox.push_all(&Batch::from_iter([frame("abcde"), frame("fghij")])));
            assert!(matches!(outbox.take(&mut taken), Taken::Frames));
            assert_eq!(outbox.lock().bytes, 0);
        }
        // Also when the frames are appended to frames the session still holds.
        assert!(outbox.push(frame("abcdefghij")));
        assert!(matches!(outbox.take(&mut taken), Taken::Frames));
        assert!(outbox.push(frame("abcdefghij")));
        assert_eq!(taken.len(), 21);
        assert!(!outbox.overflowed());
    }

    #[test]
    fn a_frame_bigger_than_the_whole_byte_budget_overflows_an_empty_queue() {
        let outbox = Outbox::new(64, 4);
        assert!(!outbox.push(frame("abcde")));
        assert!(outbox.overflowed());
        let mut taken = VecDeque::new();
        assert!(matches!(outbox.take(&mut taken), Taken::Overflowed));
    }

    #[test]
    fn an_evicted_member_gets_nothing_more_and_learns_why() {
        let outbox = Outbox::new(8, 1024);
        assert!(outbox.push(frame("a")));
        outbox.evict("banned");
        assert!(!outbox.push(frame("b")));
        let mut taken = VecDeque::new();
        assert!(matches!(outbox.take(&mut taken), Taken::Evicted(reason) if reason == "banned"));
        assert!(taken.is_empty());
    }

    #[tokio::test]
    async fn a_push_to_an_empty_queue_wakes_the_session() {
        let outbox = std::sync::Arc::new(Outbox::new(4, 1024));
        let waiter = tokio::spawn({
            let outbox = std::sync::Arc::clone(&outbox);
            async move { outbox.changed().await }
        });
        tokio::task::yield_now().await;
        assert!(outbox.push(frame("a")));
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await.unwrap().unwrap();
    }
}
