//! A minimal WebSocket client over raw TCP: the HTTP upgrade written by hand, masked
//! client frames, and unmasked server frames parsed in place from the caller's buffer,
//! so reading costs no allocation per frame.

use std::{
    io,
    net::{IpAddr, SocketAddr, ToSocketAddrs},
};

use anyhow::{bail, Context};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};

/// Opcode of a continuation frame.
pub const OP_CONTINUATION: u8 = 0x0;
/// Opcode of a text frame.
pub const OP_TEXT: u8 = 0x1;
/// Opcode of a binary frame.
pub const OP_BINARY: u8 = 0x2;
/// Opcode of a close frame.
pub const OP_CLOSE: u8 = 0x8;
/// Opcode of a ping frame.
pub const OP_PING: u8 = 0x9;
/// Opcode of a pong frame.
pub const OP_PONG: u8 = 0xA;

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
    /// Parses `ws://host:port[/path]` (`http://` is accepted too; the port defaults to 80).
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let rest = url
            .strip_prefix("ws://")
            .or_else(|| url.strip_prefix("http://"))
            .with_context(|| format!("{url}: only ws:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let with_port = if authority.contains(':') { authority.to_owned() } else { format!("{authority}:80") };
        let addr = with_port
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve {with_port}"))?
            .next()
            .with_context(|| format!("{with_port} resolves to no address"))?;
        Ok(Self { addr, host: authority.to_owned(), path: path.to_owned() })
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

/// Opens a TCP connection (from `bind` when given), with Nagle off, and upgrades it to a
/// WebSocket on `path`. Returns the stream and the bytes that followed the 101 response.
pub async fn connect(endpoint: &Endpoint, path: &str, bind: Option<IpAddr>) -> anyhow::Result<(TcpStream, Vec<u8>)> {
    let socket = if endpoint.addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    if let Some(ip) = bind {
        // Let connect() pick the port for the whole 4-tuple: binding to port 0 would
        // reserve one per address, and fails (or crawls) once most of the address's
        // ports are held, e.g. in TIME_WAIT after an earlier run.
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::IpBindAddressNoPort, &true)?;
        socket.set_reuseaddr(true)?;
        socket.bind(SocketAddr::new(ip, 0)).with_context(|| format!("cannot bind to {ip}"))?;
    }
    let mut stream =
        socket.connect(endpoint.addr).await.with_context(|| format!("cannot connect to {}", endpoint.addr))?;
    stream.set_nodelay(true)?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        endpoint.host
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("the server closed the connection during the upgrade");
        }
        response.extend_from_slice(&chunk[..n]);
        if let Some(i) = response.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if response.len() > 64 * 1024 {
            bail!("upgrade response too long");
        }
    };
    let status = response.split(|&b| b == b'\r').next().unwrap_or_default();
    if !status.starts_with(b"HTTP/1.1 101") {
        bail!("upgrade refused: {}", String::from_utf8_lossy(status));
    }
    Ok((stream, response[end..].to_vec()))
}

/// Appends a masked client frame (FIN set) to `out`.
pub fn encode_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
}

/// The header of a server frame found at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Whether this is the last fragment of its message.
    pub fin: bool,
    /// The opcode.
    pub opcode: u8,
    /// The header's length in bytes (2, 4 or 10).
    pub header_len: usize,
    /// The payload's length in bytes.
    pub payload_len: usize,
}

impl FrameHeader {
    /// Header plus payload.
    pub fn total_len(&self) -> usize {
        self.header_len + self.payload_len
    }
}

/// Reads the header of the server frame starting `buf`; `None` when `buf` holds too
/// little of it yet. Masked frames (which servers must not send) are an error.
pub fn parse_header(buf: &[u8]) -> io::Result<Option<FrameHeader>> {
    let (Some(&b0), Some(&b1)) = (buf.first(), buf.get(1)) else { return Ok(None) };
    if b1 & 0x80 != 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "masked frame from the server"));
    }
    let (header_len, payload_len) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (4, u16::from_be_bytes([b[0], b[1]]) as usize),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(b);
                let len = usize::try_from(u64::from_be_bytes(bytes))
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "frame too large"))?;
                (10, len)
            }
            None => return Ok(None),
        },
        len => (2, len as usize),
    };
    Ok(Some(FrameHeader { fin: b0 & 0x80 != 0, opcode: b0 & 0x0f, header_len, payload_len }))
}

/// The close code carried by a close frame's payload (1005 when it has none).
pub fn close_code(payload: &[u8]) -> u16 {
    match payload {
        [a, b, ..] => u16::from_be_bytes([*a, *b]),
        _ => 1005,
    }
}

/// A cheap generator of masking keys (xorshift; masks need not be secret for a bench).
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

/// What a [`WsConn`] read.
#[derive(Debug)]
pub enum Incoming<'a> {
    /// A text (or binary) message's payload.
    Data(&'a [u8]),
    /// The server closed the connection with this code.
    Closed(u16),
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
    /// Connects and upgrades on `path` (from `bind` when given), with a read buffer of
    /// `buf_bytes` to start with (it grows to fit a larger frame; scenarios holding
    /// thousands of connections start small).
    pub async fn connect_with_buffer(
        endpoint: &Endpoint,
        path: &str,
        bind: Option<IpAddr>,
        buf_bytes: usize,
    ) -> anyhow::Result<Self> {
        let (stream, leftover) = connect(endpoint, path, bind).await?;
        let mut buf = vec![0u8; buf_bytes.max(16)];
        let end = leftover.len();
        if end > buf.len() {
            buf.resize(end, 0);
        }
        buf[..end].copy_from_slice(&leftover);
        let seed = stream.local_addr().map_or(7, |a| u32::from(a.port()).wrapping_mul(2_654_435_761));
        Ok(Self { stream, buf, start: 0, end, out: Vec::with_capacity(256), masker: Masker::new(seed) })
    }

    /// Queues a text frame; [`WsConn::flush`] writes the queue.
    pub fn queue_text(&mut self, text: &[u8]) {
        let mask = self.masker.next_mask();
        encode_frame(&mut self.out, OP_TEXT, text, mask);
    }

    /// Writes the queued frames.
    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Sends one text frame now.
    pub async fn send_text(&mut self, text: &[u8]) -> io::Result<()> {
        self.queue_text(text);
        self.flush().await
    }

    /// The next data message, answering pings on the way. Fragmented messages are
    /// returned fragment by fragment (servers do not fragment these small frames).
    pub async fn next(&mut self) -> io::Result<Incoming<'_>> {
        let range = loop {
            if let Some(header) = parse_header(&self.buf[self.start..self.end])? {
                let total = header.total_len();
                if self.end - self.start >= total {
                    let payload = self.start + header.header_len..self.start + total;
                    self.start += total;
                    match header.opcode {
                        OP_TEXT | OP_BINARY | OP_CONTINUATION => break payload,
                        OP_PING => {
                            let data = self.buf[payload].to_vec();
                            let mask = self.masker.next_mask();
                            encode_frame(&mut self.out, OP_PONG, &data, mask);
                            self.flush().await?;
                        }
                        OP_CLOSE => return Ok(Incoming::Closed(close_code(&self.buf[payload]))),
                        _ => {}
                    }
                    continue;
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
                return Ok(Incoming::Closed(1006));
            }
            self.end += n;
        };
        Ok(Incoming::Data(&self.buf[range]))
    }

    /// Sends a close frame and shuts the socket's write side.
    pub async fn close(mut self) {
        let mask = self.masker.next_mask();
        encode_frame(&mut self.out, OP_CLOSE, &1000u16.to_be_bytes(), mask);
        let _gone = self.flush().await;
        let _gone = self.stream.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_length_forms() {
        let h = parse_header(&[0x81, 5]).unwrap().unwrap();
        assert_eq!((h.fin, h.opcode, h.header_len, h.payload_len), (true, 1, 2, 5));
        let h = parse_header(&[0x01, 126, 1, 0]).unwrap().unwrap();
        assert_eq!((h.fin, h.header_len, h.payload_len), (false, 4, 256));
        let h = parse_header(&[0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]).unwrap().unwrap();
        assert_eq!((h.header_len, h.payload_len), (10, 65536));
        assert_eq!(parse_header(&[0x81]).unwrap(), None);
        assert_eq!(parse_header(&[0x81, 126, 1]).unwrap(), None);
        assert!(parse_header(&[0x81, 0x85]).is_err());
    }

    #[test]
    fn masks_client_frames() {
        let mut out = Vec::new();
        encode_frame(&mut out, OP_TEXT, b"abc", [1, 2, 3, 4]);
        assert_eq!(out, [0x81, 0x83, 1, 2, 3, 4, b'a' ^ 1, b'b' ^ 2, b'c' ^ 3]);
        out.clear();
        encode_frame(&mut out, OP_TEXT, &[0; 300], [0; 4]);
        assert_eq!(&out[..4], &[0x81, 0xfe, 1, 44]);
        assert_eq!(out.len(), 4 + 4 + 300);
    }

    #[test]
    fn parses_urls() {
        let e = Endpoint::parse("ws://127.0.0.1:8000").unwrap();
        assert_eq!((e.host.as_str(), e.path.as_str(), e.path_or("/ws/chat")), ("127.0.0.1:8000", "/", "/ws/chat"));
        let e = Endpoint::parse("ws://127.0.0.1:9/ws/chat/x").unwrap();
        assert_eq!(e.path_or("/ws/chat"), "/ws/chat/x");
        assert!(Endpoint::parse("wss://x:1").is_err());
    }
}
