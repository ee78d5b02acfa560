//! An echo server over Bavard's WebSocket framing ([`bavard_ws::ServerSocket`]), for
//! protocol conformance runs with the Autobahn test suite, which expects every text
//! and binary message to come back unchanged:
//!
//! ```sh
//! cargo run --release -p bavard-ws --example echo -- 127.0.0.1:9002 &   # or port 0: it prints its address
//! kosoku -m fuzzingclient -x '12.*' -x '13.*' 127.0.0.1:9002
//! ```
//!
//! Framing errors close the connection with [`bavard_ws::Error::close_code`], the
//! mapping the server's sessions use. The handshake here is the bare minimum for the
//! test suite; the server's real one is in `crates/server/src/api/upgrade.rs`.

use bavard_ws::{derive_accept_key, CloseFrame, Message, ServerSocket};
use futures_util::{SinkExt, StreamExt};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// The largest message echoed (Autobahn's 9.x cases send up to 16 MiB).
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9002".to_owned());
    let listener = TcpListener::bind(&addr).await?;
    eprintln!("echo listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            if let Err(e) = echo(stream).await {
                eprintln!("connection ended: {e}");
            }
        });
    }
}

async fn echo(mut stream: TcpStream) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await?;
        head.push(byte[0]);
        anyhow::ensure!(head.len() < 16 * 1024, "request head too long");
    }
    let head = String::from_utf8_lossy(&head);
    let key = head
        .lines()
        .find_map(|line| line.split_once(':').filter(|(name, _)| name.eq_ignore_ascii_case("sec-websocket-key")))
        .map(|(_, value)| value.trim().to_owned())
        .ok_or_else(|| anyhow::anyhow!("not a WebSocket upgrade"))?;
    let accept = derive_accept_key(key.as_bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    stream.write_all(response.as_bytes()).await?;
    let mut socket = ServerSocket::new(stream, MAX_MESSAGE);
    while let Some(message) = socket.next().await {
        match message {
            Ok(message @ (Message::Text(_) | Message::Binary(_))) => socket.send(message).await?,
            Ok(Message::Close(_)) => socket.flush().await?,
            Ok(_) => {}
            Err(e) => {
                // What the server's sessions do: close with the code the error calls for.
                if let Some(code) = e.close_code() {
                    let _gone = socket.send(Message::Close(Some(CloseFrame::new(code, e.close_reason())))).await;
                }
                return Err(e.into());
            }
        }
    }
    Ok(())
}
