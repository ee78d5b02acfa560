//! A raw WebSocket client over TCP, for load generation and tests: the HTTP upgrade
//! written by hand, masked client frames, and server frames parsed in place from the
//! caller's buffer, so reading costs no allocation per frame. Frame headers are parsed
//! by the same [`parse_frame_head`] as the server's.
//!
//! [`WsConn`] is a connection with its own read buffer; the free functions are for
//! callers that keep their own buffers (thousands of connections on a few threads).

use std::{
    net::{SocketAddr, ToSocketAddrs},
    ops::Range,
};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};

pub use crate::frame::{OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT};
use crate::{frame, parse_frame_head, Error, FrameHead, Role};

/// The largest upgrade response read.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Where a server listens: the resolved address, the `Host` header and the URL's path.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The resolved socket address.
    pub addr: SocketAddr,
    /// The `Host` header value (`host:port`).
    pub host: String,
    /// The path (and query) of the URL, `/` when it had none.
    pub path: String,
}

impl Endpoint {
    /// Parses `ws://host:port[/path]` (`http://` is accepted too; the port defaults to
    /// 80) and resolves the host.
    pub fn parse(url: &str) -> Result<Self, Error> {
        let invalid = |reason: String| Error::InvalidUrl { url: url.to_owned(), reason };
        let rest = url
            .strip_prefix("ws://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or_else(|| invalid("only ws:// URLs are supported".to_owned()))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let with_port = if authority.contains(':') { authority.to_owned() } else { format!("{authority}:80") };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| invalid(format!("cannot resolve {with_port}: {e}")))?
            .next()
            .ok_or_else(|| invalid(format!("{with_port} resolves to no address")))?;
        Ok(Self { addr, host: authority.to_owned(), path: path.to_owned() })
    }

    /// The endpoint of a server at `addr`, with the path `/`.
    pub fn from_addr(addr: SocketAddr) -> Self {
        Self { addr, host: addr.to_string(), path: "/".to_owned() }
    }

    /// The URL's path when it has one, else `default`.
    pub fn path_or<'a>(&'a self, default: &'a str) -> &'a str {
        if self.path == "/" {
            default
        } else {
            &self.path
        }
    }
}

/// Opens a TCP connection with Nagle off and upgrades it to a WebSocket on `path`.
/// Returns the stream and the bytes that followed the 101 response (frames already sent).
pub async fn connect(endpoint: &Endpoint, path: &str) -> Result<(TcpStream, Vec<u8>), Error> {
    let socket = if endpoint.addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    connect_socket(socket, endpoint, path).await
}

/// [`connect`] from a socket the caller has set up (bound to a source address, say).
pub async fn connect_socket(socket: TcpSocket, endpoint: &Endpoint, path: &str) -> Result<(TcpStream, Vec<u8>), Error> {
    let addr = endpoint.addr;
    let mut stream = socket.connect(addr).await.map_err(|source| Error::Connect { addr, source })?;
    stream.set_nodelay(true)?;
    let leftover = upgrade(&mut stream, &endpoint.host, path).await?;
    Ok((stream, leftover))
}

/// Sends the HTTP upgrade request for `path` on `io` and reads the response. Returns
/// the bytes that followed the 101 response.
pub async fn upgrade<IO>(io: &mut IO, host: &str, path: &str) -> Result<Vec<u8>, Error>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    io.write_all(request.as_bytes()).await?;
    let mut response = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let end = loop {
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            return Err(Error::Handshake("the server closed the connection during the upgrade".to_owned()));
        }
        response.extend_from_slice(&chunk[..n]);
        if let Some(i) = response.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if response.len() > MAX_RESPONSE_HEAD {
            return Err(Error::Handshake(format!("upgrade response head over {MAX_RESPONSE_HEAD} bytes")));
        }
    };
    let status = response.split(|&b| b == b'\r').next().unwrap_or_default();
    if !status.starts_with(b"HTTP/1.1 101") {
        return Err(Error::Handshake(format!("upgrade refused: {}", String::from_utf8_lossy(status))));
    }
    Ok(response.split_off(end))
}

/// Appends a masked client frame (FIN set) to `out`.
#[inline]
pub fn encode_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    frame::encode_frame(out, opcode, payload, Some(mask));
}

/// Reads the header of the server frame starting `buf`; `None` when `buf` holds too
/// little of it yet. What a server may not send (masked frames, reserved bits or
/// opcodes, bad control frames) is an error.
#[inline]
pub fn parse_header(buf: &[u8]) -> Result<Option<FrameHead>, Error> {
    parse_frame_head(buf, Role::Client, usize::MAX)
}

/// The close code carried by a close frame's payload (1005 when it has none).
pub fn close_code(payload: &[u8]) -> u16 {
    match payload {
        [a, b, ..] => u16::from_be_bytes([*a, *b]),
        _ => 1005,
    }
}

/// A cheap generator of masking keys (xorshift: masks need not be secret for a load
/// generator or a test).
#[derive(Debug, Clone)]
pub struct Masker(u32);

impl Masker {
    /// A generator seeded with `seed` (any value).
    pub fn new(seed: u32) -> Self {
        Self(seed | 1)
    }

    /// The next masking key.
    pub fn next_mask(&mut self) -> [u8; 4] {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x.to_le_bytes()
    }
}

/// What [`WsConn::next`] read.
#[derive(Debug)]
pub enum Incoming<'a> {
    /// A text (or binary) message's payload.
    Data(&'a [u8]),
    /// The server closed the connection with this code (1006: without a close frame).
    Closed(u16),
}

/// One frame as [`WsConn::next_frame`] read it, its payload borrowed from the read buffer.
#[derive(Debug)]
pub struct RawFrame<'a> {
    /// Whether this is the last fragment of its message.
    pub fin: bool,
    /// The opcode (`OP_*`).
    pub opcode: u8,
    /// The payload.
    pub payload: &'a [u8],
}

/// One WebSocket connection with its own read buffer, for request/reply traffic.
pub struct WsConn {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    out: Vec<u8>,
    masker: Masker,
}

impl WsConn {
    /// Connects and upgrades on `path`, with a read buffer of `buf_bytes` to start with
    /// (it grows to fit a larger frame; callers holding thousands of connections start small).
    pub async fn connect(endpoint: &Endpoint, path: &str, buf_bytes: usize) -> Result<Self, Error> {
        let (stream, leftover) = connect(endpoint, path).await?;
        Ok(Self::new(stream, &leftover, buf_bytes))
    }

    /// A connection over an upgraded `stream`, given the bytes read after the upgrade
    /// response (see [`connect`]) and the read buffer's starting size.
    pub fn new(stream: TcpStream, leftover: &[u8], buf_bytes: usize) -> Self {
        let mut buf = vec![0u8; buf_bytes.max(16).max(leftover.len())];
        let end = leftover.len();
        buf[..end].copy_from_slice(leftover);
        let seed = stream.local_addr().map_or(7, |a| u32::from(a.port()).wrapping_mul(2_654_435_761));
        Self { stream, buf, start: 0, end, out: Vec::with_capacity(256), masker: Masker::new(seed) }
    }

    /// Queues a masked frame; [`WsConn::flush`] writes the queue.
    pub fn queue_frame(&mut self, opcode: u8, payload: &[u8]) {
        let mask = self.masker.next_mask();
        encode_frame(&mut self.out, opcode, payload, mask);
    }

    /// Queues a text frame; [`WsConn::flush`] writes the queue.
    pub fn queue_text(&mut self, text: &[u8]) {
        self.queue_frame(OP_TEXT, text);
    }

    /// Queues bytes as they are: for tests that send what a client must not.
    pub fn queue_raw(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// Writes the queued frames.
    pub async fn flush(&mut self) -> Result<(), Error> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Sends one text frame now.
    pub async fn send_text(&mut self, text: &[u8]) -> Result<(), Error> {
        self.queue_text(text);
        self.flush().await
    }

    /// The next frame, whatever it is, answering nothing (not even pings); `None` once
    /// the server has closed the TCP connection.
    pub async fn next_frame(&mut self) -> Result<Option<RawFrame<'_>>, Error> {
        let Some((head, payload)) = self.read_frame().await? else { return Ok(None) };
        Ok(Some(RawFrame { fin: head.fin, opcode: head.opcode, payload: &self.buf[payload] }))
    }

    /// The next data message, answering pings on the way. Fragmented messages are
    /// returned fragment by fragment (servers do not fragment these small frames).
    pub async fn next(&mut self) -> Result<Incoming<'_>, Error> {
        let payload = loop {
            let Some((head, payload)) = self.read_frame().await? else { return Ok(Incoming::Closed(1006)) };
            match head.opcode {
                OP_TEXT | OP_BINARY | OP_CONTINUATION => break payload,
                OP_PING => {
                    let mask = self.masker.next_mask();
                    encode_frame(&mut self.out, OP_PONG, &self.buf[payload], mask);
                    self.flush().await?;
                }
                OP_CLOSE => return Ok(Incoming::Closed(close_code(&self.buf[payload]))),
                _ => {}
            }
        };
        Ok(Incoming::Data(&self.buf[payload]))
    }

    /// Reads until the buffer holds a whole frame and takes it: its header and where
    /// its payload is in `buf`. `None` at the end of the stream.
    async fn read_frame(&mut self) -> Result<Option<(FrameHead, Range<usize>)>, Error> {
        loop {
            if let Some(head) = parse_header(&self.buf[self.start..self.end])? {
                let total = head.total_len();
                if self.end - self.start >= total {
                    let payload = self.start + head.header_len..self.start + total;
                    self.start += total;
                    return Ok(Some((head, payload)));
                }
                if total > self.buf.len() {
                    self.buf.resize(total, 0);
                }
            }
            // Need more bytes: compact, then read.
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
            let n = self.stream.read(&mut self.buf[self.end..]).await?;
            if n == 0 {
                return Ok(None);
            }
            self.end += n;
        }
    }

    /// Sends a close frame (1000) and shuts the socket's write side.
    pub async fn close(mut self) {
        self.queue_frame(OP_CLOSE, &1000u16.to_be_bytes());
        let _gone = self.flush().await;
        let _gone = self.stream.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let e = Endpoint::parse("ws://127.0.0.1:8000").unwrap();
        assert_eq!((e.host.as_str(), e.path.as_str(), e.path_or("/ws/chat")), ("127.0.0.1:8000", "/", "/ws/chat"));
        let e = Endpoint::parse("ws://127.0.0.1:9/ws/chat/x").unwrap();
        assert_eq!(e.path_or("/ws/chat"), "/ws/chat/x");
        assert!(matches!(Endpoint::parse("wss://x:1"), Err(Error::InvalidUrl { .. })));
    }

    #[test]
    fn reads_server_frame_headers_and_close_codes() {
        let h = parse_header(&[0x81, 5]).unwrap().unwrap();
        assert_eq!((h.fin, h.opcode, h.header_len, h.payload_len, h.total_len()), (true, OP_TEXT, 2, 5, 7));
        assert!(parse_header(&[0x81, 0x85]).is_err(), "servers do not mask");
        assert_eq!(close_code(&[0x0f, 0xa8, b'x']), 4008);
        assert_eq!(close_code(&[]), 1005);
    }
}
