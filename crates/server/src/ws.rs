//! WebSocket framing (RFC 6455, server side) shaped for a chat server's two costs:
//! memory per idle connection and bytes per delivery.
//!
//! - Reading goes through a buffer on the stack; a connection keeps heap bytes only for
//!   an incomplete frame, so an idle one holds none.
//! - Queued frames are copied into one contiguous buffer and written with as few
//!   syscalls as the kernel allows; the buffer is given back once it is flushed. (Vectored
//!   writes straight from the shared frame bytes were tried: for chat-sized frames the
//!   per-slice cost and the 64-slice limit made them slower than one copy.)
//!
//! It speaks tungstenite's `Message` and `Error` types, so a session stays generic over
//! any `Sink`/`Stream` of messages (tests may still use tungstenite's own stream).
//! Not supported, by design: extensions (no compression is negotiated at upgrade).
//! Text is checked as UTF-8 fragment by fragment, so invalid text fails fast.

use std::{
    pin::Pin,
    task::{ready, Context, Poll},
};

use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tungstenite::{
    error::{CapacityError, ProtocolError},
    protocol::{
        frame::coding::{CloseCode, Data},
        CloseFrame,
    },
    Error, Message,
};

/// Bytes read per syscall (on the stack, not per connection).
const READ_CHUNK: usize = 4096;
/// Queued bytes beyond which `poll_ready` writes before taking more.
const WRITE_HIGH_WATER: usize = 64 * 1024;

/// The server side of one WebSocket connection over `io`; see the module docs.
pub struct ServerSocket<IO> {
    io: IO,
    /// Largest frame, and largest reassembled message, accepted (1009 beyond).
    max_message: usize,
    /// Bytes read but not yet parsed from `parsed` on: an incomplete frame, or frames
    /// after the one returned.
    inbuf: Vec<u8>,
    /// How much of `inbuf` has been parsed.
    parsed: usize,
    /// A fragmented data message being assembled: whether it is text, and its bytes.
    assembling: Option<Assembling>,
    /// Frames waiting to be written, encoded back to back.
    out: Vec<u8>,
    /// How much of `out` has been written.
    written: usize,
    close_sent: bool,
    close_received: bool,
    eof: bool,
}

/// A fragmented data message being put together.
struct Assembling {
    text: bool,
    bytes: Vec<u8>,
    /// For text: how many leading bytes are known to be valid UTF-8, so that each
    /// fragment is checked once and invalid text fails at the fragment that breaks it.
    checked: usize,
}

impl Assembling {
    fn check_utf8(&mut self) -> Result<(), Error> {
        if !self.text {
            return Ok(());
        }
        match std::str::from_utf8(&self.bytes[self.checked..]) {
            Ok(_) => self.checked = self.bytes.len(),
            // Only an incomplete character at the end may wait for the next fragment.
            Err(e) if e.error_len().is_none() => self.checked += e.valid_up_to(),
            Err(e) => return Err(Error::Utf8(e.to_string())),
        }
        Ok(())
    }
}

/// A parsed frame header: where the payload is and how to unmask it.
struct FrameHead {
    fin: bool,
    opcode: u8,
    payload_at: usize,
    payload_len: usize,
    mask: [u8; 4],
}

impl<IO> ServerSocket<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    /// A socket over an upgraded connection, accepting frames and messages of at most
    /// `max_message` bytes.
    pub fn new(io: IO, max_message: usize) -> Self {
        Self {
            io,
            max_message,
            inbuf: Vec::new(),
            parsed: 0,
            assembling: None,
            out: Vec::new(),
            written: 0,
            close_sent: false,
            close_received: false,
            eof: false,
        }
    }

    /// Parses one frame header at the start of `buf`; None while incomplete.
    fn parse_head(buf: &[u8], max_message: usize) -> Result<Option<FrameHead>, Error> {
        let [b0, b1, ..] = *buf else { return Ok(None) };
        if b0 & 0x70 != 0 {
            return Err(ProtocolError::NonZeroReservedBits.into());
        }
        if b1 & 0x80 == 0 {
            return Err(ProtocolError::UnmaskedFrameFromClient.into());
        }
        let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
        let (payload_len, mask_at) = match b1 & 0x7f {
            126 => match buf.get(2..4) {
                Some(bytes) => (usize::from(u16::from_be_bytes([bytes[0], bytes[1]])), 4),
                None => return Ok(None),
            },
            127 => match buf.get(2..10) {
                Some(bytes) => {
                    let mut be = [0u8; 8];
                    be.copy_from_slice(bytes);
                    (usize::try_from(u64::from_be_bytes(be)).unwrap_or(usize::MAX), 10)
                }
                None => return Ok(None),
            },
            short => (usize::from(short), 2),
        };
        if opcode >= 8 {
            if !fin {
                return Err(ProtocolError::FragmentedControlFrame.into());
            }
            if payload_len > 125 {
                return Err(ProtocolError::ControlFrameTooBig.into());
            }
        }
        if payload_len > max_message {
            return Err(CapacityError::MessageTooLong { size: payload_len, max_size: max_message }.into());
        }
        let Some(mask) = buf.get(mask_at..mask_at + 4) else { return Ok(None) };
        let mask = [mask[0], mask[1], mask[2], mask[3]];
        Ok(Some(FrameHead { fin, opcode, payload_at: mask_at + 4, payload_len, mask }))
    }

    /// Takes the next complete frame out of `inbuf` and turns it into a message, if any.
    fn next_buffered(&mut self) -> Result<Option<Message>, Error> {
        loop {
            let unparsed = &self.inbuf[self.parsed..];
            let Some(head) = Self::parse_head(unparsed, self.max_message)? else { return Ok(None) };
            let end = head.payload_at + head.payload_len;
            if unparsed.len() < end {
                return Ok(None);
            }
            let mut payload = unparsed[head.payload_at..end].to_vec();
            for (i, byte) in payload.iter_mut().enumerate() {
                *byte ^= head.mask[i % 4];
            }
            self.parsed += end;
            if self.parsed == self.inbuf.len() {
                // An idle connection keeps no read memory.
                self.inbuf = Vec::new();
                self.parsed = 0;
            }
            if self.close_received {
                continue; // Nothing may follow a close frame.
            }
            if let Some(message) = self.on_frame(head.fin, head.opcode, payload)? {
                return Ok(Some(message));
            }
        }
    }

    fn on_frame(&mut self, fin: bool, opcode: u8, payload: Vec<u8>) -> Result<Option<Message>, Error> {
        match opcode {
            0 => {
                let Some(assembling) = self.assembling.as_mut() else {
                    return Err(ProtocolError::UnexpectedContinueFrame.into());
                };
                let size = assembling.bytes.len() + payload.len();
                if size > self.max_message {
                    return Err(CapacityError::MessageTooLong { size, max_size: self.max_message }.into());
                }
                assembling.bytes.extend_from_slice(&payload);
                assembling.check_utf8()?;
                if !fin {
                    return Ok(None);
                }
                match self.assembling.take() {
                    Some(done) => data_message(done.text, done.bytes).map(Some),
                    None => Ok(None),
                }
            }
            1 | 2 => {
                if self.assembling.is_some() {
                    return Err(ProtocolError::ExpectedFragment(Data::Continue).into());
                }
                if fin {
                    data_message(opcode == 1, payload).map(Some)
                } else {
                    let mut assembling = Assembling { text: opcode == 1, bytes: payload, checked: 0 };
                    assembling.check_utf8()?;
                    self.assembling = Some(assembling);
                    Ok(None)
                }
            }
            8 => {
                let frame = close_frame(&payload)?;
                self.close_received = true;
                if !self.close_sent {
                    // Echo the code, as RFC 6455 asks; the reason is ours to leave out.
                    let reply = frame.as_ref().map(|f| CloseFrame { code: f.code, reason: Default::default() });
                    self.queue_close(reply);
                }
                Ok(Some(Message::Close(frame)))
            }
            9 => {
                // A client that pings without reading must not grow our buffer: past the
                // high-water mark, pongs are skipped (RFC 6455 lets a peer answer only
                // the most recent ping).
                if self.out.len() - self.written < WRITE_HIGH_WATER {
                    self.queue(0xa, &payload);
                }
                Ok(Some(Message::Ping(payload.into())))
            }
            10 => Ok(Some(Message::Pong(payload.into()))),
            3..=7 => Err(ProtocolError::UnknownDataFrameType(opcode).into()),
            _ => Err(ProtocolError::UnknownControlFrameType(opcode).into()),
        }
    }

    /// Queues one frame (header and payload) at the end of `out`.
    fn queue(&mut self, opcode: u8, payload: &[u8]) {
        let len = payload.len();
        self.out.reserve(10 + len);
        self.out.push(0x80 | opcode);
        match len {
            0..=125 => self.out.push(len as u8),
            126..=0xffff => {
                self.out.push(126);
                self.out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                self.out.push(127);
                self.out.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        self.out.extend_from_slice(payload);
    }

    fn queue_close(&mut self, frame: Option<CloseFrame>) {
        let mut payload = Vec::new();
        if let Some(frame) = frame {
            payload.extend_from_slice(&u16::from(frame.code).to_be_bytes());
            payload.extend_from_slice(frame.reason.as_bytes());
        }
        self.queue(0x8, &payload);
        self.close_sent = true;
    }

    /// Writes everything queued.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        while self.written < self.out.len() {
            let written = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[self.written..]))?;
            if written == 0 {
                return Poll::Ready(Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into()));
            }
            self.written += written;
        }
        // Everything is out: give the buffer back, so idle connections hold nothing.
        if self.out.capacity() > 0 {
            self.out = Vec::new();
            self.written = 0;
        }
        Poll::Ready(Ok(()))
    }
}

fn data_message(text: bool, payload: Vec<u8>) -> Result<Message, Error> {
    if text {
        let text = String::from_utf8(payload)?;
        Ok(Message::Text(text.into()))
    } else {
        Ok(Message::Binary(payload.into()))
    }
}

/// Reads a close frame's payload: nothing, or a valid code and a UTF-8 reason.
fn close_frame(payload: &[u8]) -> Result<Option<CloseFrame>, Error> {
    match payload {
        [] => Ok(None),
        [_] => Err(ProtocolError::InvalidCloseSequence.into()),
        [high, low, reason @ ..] => {
            let code = CloseCode::from(u16::from_be_bytes([*high, *low]));
            if !code.is_allowed() {
                return Err(ProtocolError::InvalidCloseSequence.into());
            }
            let reason = std::str::from_utf8(reason)?;
            Ok(Some(CloseFrame { code, reason: reason.to_owned().into() }))
        }
    }
}

impl<IO> Stream for ServerSocket<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    type Item = Result<Message, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match this.next_buffered() {
                Ok(Some(message)) => {
                    // Pongs and close replies go out without waiting for the session.
                    if this.written < this.out.len() {
                        let _written_or_later = this.poll_write_out(cx);
                    }
                    return Poll::Ready(Some(Ok(message)));
                }
                Ok(None) => {}
                Err(error) => return Poll::Ready(Some(Err(error))),
            }
            if this.close_received && this.close_sent {
                // The closing handshake is done once our close frame is out.
                let _written_or_gone = ready!(this.poll_write_out(cx));
                return Poll::Ready(None);
            }
            if this.eof {
                return Poll::Ready(None);
            }
            let mut chunk = [0u8; READ_CHUNK];
            let mut read = ReadBuf::new(&mut chunk);
            if let Err(error) = ready!(Pin::new(&mut this.io).poll_read(cx, &mut read)) {
                return Poll::Ready(Some(Err(error.into())));
            }
            if read.filled().is_empty() {
                this.eof = true;
                if !this.close_received {
                    return Poll::Ready(Some(Err(ProtocolError::ResetWithoutClosingHandshake.into())));
                }
            }
            // Drop what is parsed before appending: a client that streams frames may
            // never leave the buffer empty, and it must not grow with the stream.
            this.inbuf.drain(..this.parsed);
            this.parsed = 0;
            this.inbuf.extend_from_slice(read.filled());
        }
    }
}

impl<IO> Sink<Message> for ServerSocket<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        if this.out.len() - this.written >= WRITE_HIGH_WATER {
            ready!(this.poll_write_out(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, message: Message) -> Result<(), Error> {
        let this = self.get_mut();
        if this.close_sent {
            return Err(ProtocolError::SendAfterClosing.into());
        }
        match message {
            Message::Text(text) => this.queue(0x1, text.as_bytes()),
            Message::Binary(bytes) => this.queue(0x2, &bytes),
            Message::Ping(bytes) => this.queue(0x9, &bytes),
            Message::Pong(bytes) => this.queue(0xa, &bytes),
            Message::Close(frame) => this.queue_close(frame),
            Message::Frame(_) => {
                let unsupported = std::io::Error::new(std::io::ErrorKind::Unsupported, "raw frames are not sent");
                return Err(unsupported.into());
            }
        }
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.io).poll_flush(cx).map_err(Error::from)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx).map_err(Error::from)
    }
}

#[cfg(test)]
mod tests {
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::*;

    /// A masked client frame.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut frame = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            len @ 0..=125 => frame.push(0x80 | len as u8),
            len @ 126..=0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        frame
    }

    fn pair(max: usize) -> (ServerSocket<DuplexStream>, DuplexStream) {
        let (server, client) = tokio::io::duplex(1 << 20);
        (ServerSocket::new(server, max), client)
    }

    async fn next(socket: &mut ServerSocket<DuplexStream>) -> Result<Message, Error> {
        tokio::time::timeout(std::time::Duration::from_secs(5), socket.next()).await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn reads_masked_text_split_across_reads_and_fragments() {
        let (mut socket, mut client) = pair(1024);
        let mut bytes = client_frame(false, 1, "héllo ".as_bytes());
        bytes.extend(client_frame(true, 0, "wörld".as_bytes()));
        let (first, rest) = bytes.split_at(5);
        client.write_all(first).await.unwrap();
        let reading = tokio::spawn(async move {
            let message = next(&mut socket).await.unwrap();
            (message, socket)
        });
        tokio::task::yield_now().await;
        client.write_all(rest).await.unwrap();
        let (message, socket) = reading.await.unwrap();
        assert_eq!(message, Message::Text("héllo wörld".into()));
        assert!(socket.inbuf.capacity() == 0, "an idle socket keeps no read buffer");
    }

    #[tokio::test]
    async fn writes_queued_frames_unmasked_in_order_and_answers_pings() {
        let (mut socket, mut client) = pair(1024);
        socket.feed(Message::Text("a".into())).await.unwrap();
        socket.feed(Message::Text("x".repeat(300).into())).await.unwrap();
        socket.flush().await.unwrap();
        assert_eq!(socket.out.capacity(), 0, "a flushed socket keeps no write buffer");
        client.write_all(&client_frame(true, 9, b"hi")).await.unwrap();
        assert_eq!(next(&mut socket).await.unwrap(), Message::Ping(bytes::Bytes::from_static(b"hi")));
        let mut expected = vec![0x81, 1, b'a', 0x81, 126, 1, 44];
        expected.extend(std::iter::repeat_n(b'x', 300));
        expected.extend([0x8a, 2, b'h', b'i']);
        let mut got = vec![0u8; expected.len()];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(got, expected);
    }

    #[tokio::test]
    async fn rejects_what_rfc_6455_forbids() {
        fn kind(error: &Error) -> &'static str {
            match error {
                Error::Protocol(_) => "protocol",
                Error::Utf8(_) => "utf8",
                Error::Capacity(_) => "capacity",
                _ => "other",
            }
        }
        let unmasked = {
            let mut frame = client_frame(true, 1, b"x");
            frame[1] &= 0x7f;
            frame.truncate(2);
            frame.push(b'x');
            frame
        };
        let reserved_bit = {
            let mut frame = client_frame(true, 1, b"x");
            frame[0] |= 0x40;
            frame
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (unmasked, "protocol"),
            (reserved_bit, "protocol"),
            (client_frame(false, 9, b"x"), "protocol"), // fragmented control frame
            (client_frame(true, 9, &[b'x'; 126]), "protocol"), // control frame over 125 bytes
            (client_frame(true, 0, b"x"), "protocol"),  // continuation with nothing to continue
            (client_frame(true, 3, b"x"), "protocol"),  // reserved opcode
            (client_frame(true, 8, &[0x03]), "protocol"), // close payload of one byte
            (client_frame(true, 8, &[0x03, 0xed]), "protocol"), // close code 1005 may not be sent
            (client_frame(true, 1, &[0xff, 0xfe]), "utf8"),
            (client_frame(false, 1, &[b'o', b'k', 0xff]), "utf8"), // fails at the first fragment
            (client_frame(true, 1, &[b'x'; 2000]), "capacity"),
        ];
        for (bytes, expected) in cases {
            let (mut socket, mut client) = pair(1024);
            client.write_all(&bytes).await.unwrap();
            let error = next(&mut socket).await.expect_err(expected);
            assert_eq!(kind(&error), expected, "{bytes:02x?}: {error}");
        }
    }

    #[tokio::test]
    async fn pings_from_a_client_that_does_not_read_cannot_grow_the_write_buffer() {
        let (server, mut client) = tokio::io::duplex(1024);
        let mut socket = ServerSocket::new(server, 1024);
        let ping = client_frame(true, 9, &[b'p'; 125]);
        let reading = tokio::spawn(async move {
            for _ in 0..5_000 {
                next(&mut socket).await.unwrap();
            }
            socket.out.len() - socket.written
        });
        for _ in 0..5_000 {
            client.write_all(&ping).await.unwrap();
        }
        let unsent = reading.await.unwrap();
        assert!(unsent < WRITE_HIGH_WATER + 200, "{unsent} bytes of pongs queued");
    }

    #[tokio::test]
    async fn a_stream_of_frames_split_across_reads_keeps_the_read_buffer_small() {
        let (mut socket, mut client) = pair(1024);
        // 17-byte frames: 4 KiB reads end in the middle of one, every time.
        let frame = client_frame(true, 1, b"hello world");
        let stream: Vec<u8> = std::iter::repeat_n(frame, 10_000).flatten().collect();
        client.write_all(&stream).await.unwrap();
        let mut largest = 0;
        for _ in 0..10_000 {
            assert_eq!(next(&mut socket).await.unwrap(), Message::Text("hello world".into()));
            largest = largest.max(socket.inbuf.len());
        }
        assert!(largest <= READ_CHUNK + 17, "the read buffer grew to {largest} bytes");
    }

    #[tokio::test]
    async fn a_client_close_is_echoed_and_ends_the_stream() {
        let (mut socket, mut client) = pair(1024);
        client.write_all(&client_frame(true, 8, &[0x03, 0xe8, b'b', b'y', b'e'])).await.unwrap();
        match next(&mut socket).await.unwrap() {
            Message::Close(Some(frame)) => assert_eq!((u16::from(frame.code), frame.reason.as_str()), (1000, "bye")),
            other => panic!("{other:?}"),
        }
        socket.flush().await.unwrap();
        assert!(socket.next().await.is_none());
        let mut reply = [0u8; 4];
        client.read_exact(&mut reply).await.unwrap();
        assert_eq!(reply, [0x88, 2, 0x03, 0xe8]);
    }
}
