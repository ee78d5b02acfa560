//! A minimal HTTP/1.1 client over one keep-alive TCP connection, written by hand for
//! the REST scenario: the caller writes whole requests, responses are read into one
//! buffer and parsed in place (status, `Content-Length`, body), so a request costs a
//! write and usually one read, and no allocation once the buffer has grown.

use std::net::SocketAddr;

use anyhow::{bail, Context};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// The longest response head read.
const MAX_HEAD: usize = 16 * 1024;
/// The largest response body read.
const MAX_BODY: usize = 1024 * 1024;

/// One keep-alive connection.
pub struct HttpConn {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

/// A response as read: its status and its body, borrowed from the connection's buffer.
#[derive(Debug)]
pub struct Response<'a> {
    /// The status code.
    pub status: u16,
    /// The body.
    pub body: &'a [u8],
}

impl HttpConn {
    /// Connects to `addr` with Nagle off.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr).await.with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Self { stream, buf: vec![0; 4096], start: 0, end: 0 })
    }

    /// Writes a whole request (head and body).
    pub async fn send(&mut self, request: &[u8]) -> anyhow::Result<()> {
        self.stream.write_all(request).await?;
        Ok(())
    }

    /// Reads the next response. Bodies must come with `Content-Length` (chunked bodies,
    /// which the server does not send for JSON, are refused).
    pub async fn response(&mut self) -> anyhow::Result<Response<'_>> {
        let (head_len, status, body_len) = loop {
            if let Some(head) = parse_head(&self.buf[self.start..self.end])? {
                break head;
            }
            if self.end - self.start > MAX_HEAD {
                bail!("a response head over {MAX_HEAD} bytes");
            }
            self.fill(self.end - self.start + 1).await?;
        };
        let whole = head_len + body_len;
        while self.end - self.start < whole {
            self.fill(whole).await?;
        }
        let body = self.start + head_len..self.start + whole;
        self.start += whole;
        Ok(Response { status, body: &self.buf[body] })
    }

    /// Reads more bytes after the unread ones, first making room for `want` unread
    /// bytes in all (moving them to the front, growing the buffer).
    async fn fill(&mut self, want: usize) -> anyhow::Result<()> {
        if self.start + want > self.buf.len() || self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if want > self.buf.len() || self.end == self.buf.len() {
                self.buf.resize(want.max(self.buf.len() * 2), 0);
            }
        }
        let n = self.stream.read(&mut self.buf[self.end..]).await?;
        if n == 0 {
            bail!("the server closed the connection");
        }
        self.end += n;
        Ok(())
    }
}

/// Parses a response head at the start of `bytes`: (its length with the blank line,
/// the status, the body's length), or None when it is not all there yet.
fn parse_head(bytes: &[u8]) -> anyhow::Result<Option<(usize, u16, usize)>> {
    let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else { return Ok(None) };
    let head = std::str::from_utf8(&bytes[..end]).context("a response head that is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = match status_line.split(' ').collect::<Vec<_>>()[..] {
        [version, code, ..] if version.starts_with("HTTP/1.") => {
            code.parse::<u16>().with_context(|| format!("bad status line {status_line:?}"))?
        }
        _ => bail!("bad status line {status_line:?}"),
    };
    let mut body_len = 0;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { bail!("bad header line {line:?}") };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            body_len = value.parse().with_context(|| format!("bad content-length {value:?}"))?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") && !value.eq_ignore_ascii_case("identity") {
            bail!("a response with transfer-encoding {value:?}: only content-length is read");
        }
    }
    if body_len > MAX_BODY {
        bail!("a response body of {body_len} bytes");
    }
    Ok(Some((end + 4, status, body_len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_heads() {
        let head =
            b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 12\r\n\r\n{\"seq\":1}...";
        assert_eq!(parse_head(head).unwrap(), Some((head.len() - 12, 201, 12)));
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-le").unwrap(), None);
        assert_eq!(parse_head(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap(), Some((27, 204, 0)));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").is_err());
        assert!(parse_head(b"SSH-2.0\r\n\r\n").is_err());
    }

    #[tokio::test]
    async fn reads_pipelined_responses_split_anywhere() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let body = "b".repeat(10_000);
        let one = format!("HTTP/1.1 201 Created\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let all = format!("{one}{one}HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{{}}");
            for chunk in all.as_bytes().chunks(777) {
                socket.write_all(chunk).await.unwrap();
                socket.flush().await.unwrap();
            }
        });
        let mut conn = HttpConn::connect(addr).await.unwrap();
        for _ in 0..2 {
            let response =
                tokio::time::timeout(std::time::Duration::from_secs(10), conn.response()).await.unwrap().unwrap();
            assert_eq!((response.status, response.body.len()), (201, 10_000));
            assert!(response.body.iter().all(|&b| b == b'b'));
        }
        let last = tokio::time::timeout(std::time::Duration::from_secs(10), conn.response()).await.unwrap().unwrap();
        assert_eq!((last.status, last.body), (400, &b"{}"[..]));
        server.await.unwrap();
    }
}
