//! The server side of a WebSocket connection, shaped for a chat server's two costs:
//! memory per idle connection and bytes per delivery.
//!
//! - Reading goes through a buffer on the stack; a connection keeps heap bytes only for
//!   an incomplete frame, so an idle one holds none. Frames are decoded by the same
//!   [`Decoder`] the fuzz target drives.
//! - Queued frames are copied into one contiguous buffer and written with as few
//!   syscalls as the kernel allows; the buffer is given back once it is flushed. (Vectored
//!   writes straight from the shared frame bytes were tried: for chat-sized frames the
//!   per-slice cost and the 64-slice limit made them slower than one copy.)
//! - Pings are answered and a client's close is echoed without waiting for the caller.

use std::{
    pin::Pin,
    task::{ready, Context, Poll},
};

use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::{
    frame::{encode_close_payload, encode_frame, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT},
    CloseFrame, Decoder, Error, Message, Role,
};

/// Bytes read per syscall (on the stack, not per connection).
const READ_CHUNK: usize = 4096;
/// Queued bytes beyond which `poll_ready` writes before taking more.
const WRITE_HIGH_WATER: usize = 64 * 1024;

/// The server side of one WebSocket connection over `io`, after the HTTP upgrade: a
/// `Stream` of the client's messages and a `Sink` of ours; see the module docs.
pub struct ServerSocket<IO> {
    io: IO,
    decoder: Decoder,
    /// Bytes read but not yet decoded from `parsed` on: an incomplete frame, or frames
    /// after the one returned.
    inbuf: Vec<u8>,
    /// How much of `inbuf` has been decoded.
    parsed: usize,
    /// Frames waiting to be written, encoded back to back.
    out: Vec<u8>,
    /// How much of `out` has been written.
    written: usize,
    close_sent: bool,
    eof: bool,
}

impl<IO> ServerSocket<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    /// A socket over an upgraded connection, accepting frames and messages of at most
    /// `max_message` bytes (larger ones fail with [`Error::TooBig`]).
    pub fn new(io: IO, max_message: usize) -> Self {
        Self {
            io,
            decoder: Decoder::new(Role::Server, max_message),
            inbuf: Vec::new(),
            parsed: 0,
            out: Vec::new(),
            written: 0,
            close_sent: false,
            eof: false,
        }
    }

    /// Decodes the next message out of `inbuf`, if it holds a whole one, and queues the
    /// answers it calls for (a pong, the echo of a close).
    fn next_buffered(&mut self) -> Result<Option<Message>, Error> {
        let (used, message) = self.decoder.decode(&self.inbuf[self.parsed..])?;
        self.parsed += used;
        if self.parsed == self.inbuf.len() && self.inbuf.capacity() > 0 {
            // An idle connection keeps no read memory.
            self.inbuf = Vec::new();
            self.parsed = 0;
        }
        match &message {
            // A client that pings without reading must not grow our buffer: past the
            // high-water mark, pongs are skipped (RFC 6455 lets a peer answer only the
            // most recent ping).
            Some(Message::Ping(payload)) if self.out.len() - self.written < WRITE_HIGH_WATER => {
                encode_frame(&mut self.out, OP_PONG, payload, None);
            }
            Some(Message::Close(frame)) if !self.close_sent => {
                // Echo the code, as RFC 6455 asks; the reason is ours to leave out.
                let reply = frame.as_ref().map(|f| CloseFrame { code: f.code, reason: String::new() });
                self.queue_close(reply.as_ref());
            }
            _ => {}
        }
        Ok(message)
    }

    fn queue_close(&mut self, frame: Option<&CloseFrame>) {
        encode_frame(&mut self.out, OP_CLOSE, &encode_close_payload(frame), None);
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
            if this.decoder.close_received() && this.close_sent {
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
                if !this.decoder.close_received() {
                    return Poll::Ready(Some(Err(Error::Reset)));
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
            return Err(Error::SendAfterClose);
        }
        match &message {
            Message::Text(text) => encode_frame(&mut this.out, OP_TEXT, text.as_bytes(), None),
            Message::Binary(bytes) => encode_frame(&mut this.out, OP_BINARY, bytes, None),
            Message::Ping(bytes) => encode_frame(&mut this.out, OP_PING, bytes, None),
            Message::Pong(bytes) => encode_frame(&mut this.out, OP_PONG, bytes, None),
            Message::Close(frame) => this.queue_close(frame.as_ref()),
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
    use bytes::Bytes;
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::*;
    use crate::frame::{OP_CLOSE, OP_CONTINUATION, OP_PING, OP_TEXT};

    /// A masked client frame.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut frame = Vec::new();
        encode_frame(&mut frame, opcode, payload, Some([0x12, 0x34, 0x56, 0x78]));
        if !fin {
            frame[0] &= 0x7f;
        }
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
        let mut bytes = client_frame(false, OP_TEXT, "héllo ".as_bytes());
        bytes.extend(client_frame(true, OP_CONTINUATION, "wörld".as_bytes()));
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
        client.write_all(&client_frame(true, OP_PING, b"hi")).await.unwrap();
        assert_eq!(next(&mut socket).await.unwrap(), Message::Ping(Bytes::from_static(b"hi")));
        let mut expected = vec![0x81, 1, b'a', 0x81, 126, 1, 44];
        expected.extend(std::iter::repeat_n(b'x', 300));
        expected.extend([0x8a, 2, b'h', b'i']);
        let mut got = vec![0u8; expected.len()];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(got, expected);
    }

    #[tokio::test]
    async fn refuses_broken_frames_with_the_error_that_names_the_close_code() {
        let cases: Vec<(Vec<u8>, u16)> = vec![
            (vec![0x81, 0x01, b'x'], 1002), // unmasked
            (client_frame(true, 3, b"x"), 1002),
            (client_frame(true, OP_TEXT, &[0xff, 0xfe]), 1007),
            (client_frame(true, OP_TEXT, &[b'x'; 2000]), 1009),
        ];
        for (bytes, expected) in cases {
            let (mut socket, mut client) = pair(1024);
            client.write_all(&bytes).await.unwrap();
            let error = next(&mut socket).await.expect_err("refused");
            assert_eq!(error.close_code(), Some(expected), "{bytes:02x?}: {error}");
        }
    }

    #[tokio::test]
    async fn a_peer_that_goes_away_without_a_close_is_a_reset() {
        let (mut socket, client) = pair(1024);
        drop(client);
        let error = next(&mut socket).await.expect_err("reset");
        assert!(matches!(error, Error::Reset), "{error}");
        assert_eq!(error.close_code(), None);
    }

    #[tokio::test]
    async fn pings_from_a_client_that_does_not_read_cannot_grow_the_write_buffer() {
        let (server, mut client) = tokio::io::duplex(1024);
        let mut socket = ServerSocket::new(server, 1024);
        let ping = client_frame(true, OP_PING, &[b'p'; 125]);
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
        let frame = client_frame(true, OP_TEXT, b"hello world");
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
        client.write_all(&client_frame(true, OP_CLOSE, &[0x03, 0xe8, b'b', b'y', b'e'])).await.unwrap();
        assert_eq!(next(&mut socket).await.unwrap(), Message::Close(Some(CloseFrame::new(1000, "bye"))));
        socket.flush().await.unwrap();
        assert!(socket.next().await.is_none());
        let mut reply = [0u8; 4];
        client.read_exact(&mut reply).await.unwrap();
        assert_eq!(reply, [0x88, 2, 0x03, 0xe8]);
        assert!(matches!(socket.send(Message::Text("late".into())).await, Err(Error::SendAfterClose)));
    }

    #[tokio::test]
    async fn close_reasons_are_cut_to_fit_a_close_frame() {
        let (mut socket, mut client) = pair(1024);
        socket.send(Message::Close(Some(CloseFrame::new(4008, "x".repeat(500))))).await.unwrap();
        let mut head = [0u8; 4];
        client.read_exact(&mut head).await.unwrap();
        assert_eq!(head, [0x88, 125, 0x0f, 0xa8]);
    }
}
