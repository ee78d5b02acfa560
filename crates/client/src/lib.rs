//! A Rust client for Bavard's JSON protocol v1.
//!
//! [`Connection`] is one WebSocket: connect (reading `welcome`), request/reply matched
//! by id, and events in arrival order (events that arrive while a reply is awaited are
//! kept, not lost). [`Resilient`] wraps it with reconnection: it rejoins its rooms with
//! `since`, drops what it has already seen, and resends unacknowledged messages with
//! the same `key`, so a flaky network neither loses nor duplicates messages.
//! [`endpoint`] turns what a user types (`http://host:8000`) into the URL to connect to.
//! `wss://` URLs use rustls ([`TlsConfig`]: the Mozilla roots, plus a caller's own root
//! for a self-signed server).

mod endpoint;
mod resilient;
mod tls;

use std::{collections::VecDeque, time::Duration};

use bavard_protocol::{
    ChangeReply, ClientFrame, ErrorBody, HistoryReply, HistoryRequest, JoinReply, JoinRequest, MembersReply,
    MembersRequest, MessageRef, ReactRequest, ReplyFrame, Request, RequestId, RoomName, SendReply, SendRequest,
    ServerFrame, TextChange, Welcome,
};
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::{tungstenite, MaybeTlsStream, WebSocketStream};

pub use bavard_protocol as protocol;
pub use endpoint::{endpoint, InvalidUrl};
pub use resilient::{Event, Resilient};
pub use tls::{TlsConfig, TlsError};

/// The README's example, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExample;
pub use tungstenite::Message as WsMessage;

/// What can go wrong talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The WebSocket failed (connect, read or write).
    #[error("websocket error: {0}")]
    WebSocket(#[from] tungstenite::Error),
    /// The server answered the WebSocket upgrade with an HTTP error (a bad name, a
    /// foreign origin, too many connections...); `body` is its explanation.
    #[error("the server refused the connection with HTTP {status}{}", explained(.body))]
    Refused {
        /// The HTTP status code.
        status: u16,
        /// The response body, trimmed (the server says there what was wrong).
        body: String,
    },
    /// The server closed the connection.
    #[error("connection closed by the server (code {code}: {reason})")]
    Closed {
        /// The close code (1005 when the server sent none).
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// The server sent something this client does not understand.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The server answered the request with an error.
    #[error("request failed: {0}")]
    Server(ErrorBody),
    /// No answer within the time allowed.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// TLS cannot be set up (a certificate file that cannot be used).
    #[error(transparent)]
    Tls(#[from] TlsError),
}

impl ClientError {
    /// The WebSocket close code, if the server closed the connection.
    pub fn close_code(&self) -> Option<u16> {
        match self {
            Self::Closed { code, .. } => Some(*code),
            _ => None,
        }
    }
}

fn explained(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    }
}

/// An HTTP refusal of the upgrade becomes [`ClientError::Refused`], with its body.
fn connect_error(error: tungstenite::Error) -> ClientError {
    match error {
        tungstenite::Error::Http(response) => {
            let body = response.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
            ClientError::Refused { status: response.status().as_u16(), body: body.trim().to_owned() }
        }
        other => ClientError::WebSocket(other),
    }
}

/// One connection speaking the JSON protocol.
pub struct Connection {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    welcome: Welcome,
    events: VecDeque<ServerFrame>,
    next_id: i64,
    timeout: Duration,
}

impl Connection {
    /// Connects to a `ws://host:port/ws?name=...` URL (see [`endpoint`]) and reads the
    /// `welcome` frame. A server that refuses the upgrade gives [`ClientError::Refused`].
    /// A `wss://` URL trusts the Mozilla roots; see [`Connection::connect_with`] for others.
    pub async fn connect(url: &str) -> Result<Self, ClientError> {
        let tls = TlsConfig::default_for(url)?;
        Self::connect_with(url, tls.as_ref()).await
    }

    /// Like [`Connection::connect`], with `wss://` trusting whom `tls` trusts (e.g.
    /// [`TlsConfig::with_ca_file`] for a self-signed server). `tls` is unused for `ws://`.
    pub async fn connect_with(url: &str, tls: Option<&TlsConfig>) -> Result<Self, ClientError> {
        let timeout = Duration::from_secs(10);
        let connector = tls.map(TlsConfig::connector);
        let connecting = tokio_tungstenite::connect_async_tls_with_config(url, None, true, connector);
        let (socket, _) = tokio::time::timeout(timeout, connecting)
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
            .map_err(connect_error)?;
        let mut connection =
            Self { socket, welcome: placeholder_welcome(), events: VecDeque::new(), next_id: 1, timeout };
        match connection.read_frame().await? {
            ServerFrame::Welcome(welcome) => connection.welcome = welcome,
            other => return Err(ClientError::Protocol(format!("expected welcome, got {other:?}"))),
        }
        Ok(connection)
    }

    /// The server's `welcome` frame.
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// Sets how long [`Connection::request`] and [`Connection::next_event`] wait (default 10 s).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Sends a request with a fresh id without waiting; returns the id.
    pub async fn submit(&mut self, request: Request) -> Result<RequestId, ClientError> {
        let id = RequestId::Int(self.next_id);
        self.next_id += 1;
        let frame = ClientFrame { id: Some(id.clone()), request };
        self.send_text(frame.to_json()).await?;
        Ok(id)
    }

    /// Sends a request and waits for its reply (ok or not). Events that arrive
    /// meanwhile are kept for [`Connection::next_event`].
    pub async fn request(&mut self, request: Request) -> Result<ReplyFrame, ClientError> {
        let id = self.submit(request).await?;
        self.reply_to(&id).await
    }

    /// Waits for the reply to `id`, keeping other frames as events.
    pub async fn reply_to(&mut self, id: &RequestId) -> Result<ReplyFrame, ClientError> {
        loop {
            match self.read_frame().await? {
                ServerFrame::Reply(reply) if reply.id == *id => return Ok(reply),
                other => self.events.push_back(other),
            }
        }
    }

    /// Sends a request and returns its typed result, or the server's error.
    pub async fn call<T: serde::de::DeserializeOwned>(&mut self, request: Request) -> Result<T, ClientError> {
        let reply = self.request(request).await?;
        if !reply.ok {
            let error = reply.error.unwrap_or_else(|| {
                ErrorBody::new(bavard_protocol::ErrorCode::Internal, "error reply without an error body")
            });
            return Err(ClientError::Server(error));
        }
        reply.result_as().map_err(|e| ClientError::Protocol(format!("unexpected reply fields: {e}")))
    }

    /// Joins `room`, recovering everything after `since` when given.
    pub async fn join(&mut self, room: &RoomName, since: Option<u64>) -> Result<JoinReply, ClientError> {
        self.call(Request::Join(JoinRequest { room: room.clone(), since, limit: None, since_rev: None })).await
    }

    /// Sends `text` to `room` (optionally idempotent with `key`) and waits for the ack.
    pub async fn send(&mut self, room: &RoomName, text: &str, key: Option<&str>) -> Result<SendReply, ClientError> {
        let request = SendRequest {
            room: room.clone(),
            text: text.into(),
            key: key.map(Into::into),
            reply_to: None,
            stream: false,
        };
        self.call(Request::Send(request)).await
    }

    /// Reads a page of history.
    pub async fn history(&mut self, request: HistoryRequest) -> Result<HistoryReply, ClientError> {
        self.call(Request::History(request)).await
    }

    /// Opens (or finds) the direct room shared with `user` (signed-in users only).
    pub async fn dm(&mut self, user: &str) -> Result<bavard_protocol::DmReply, ClientError> {
        self.call(Request::Dm(bavard_protocol::DmRequest { user: user.into() })).await
    }

    /// Replaces the text of one's message `seq` in `room`.
    pub async fn edit(&mut self, room: &RoomName, seq: u64, text: &str) -> Result<ChangeReply, ClientError> {
        self.call(Request::Edit(TextChange { room: room.clone(), seq, text: text.into() })).await
    }

    /// Deletes message `seq` of `room` (one's own, or any as a moderator).
    pub async fn delete(&mut self, room: &RoomName, seq: u64) -> Result<ChangeReply, ClientError> {
        self.call(Request::Delete(MessageRef { room: room.clone(), seq })).await
    }

    /// Reacts to message `seq` of `room` with `emoji` (`on`), or takes the reaction back.
    pub async fn react(
        &mut self,
        room: &RoomName,
        seq: u64,
        emoji: &str,
        on: bool,
    ) -> Result<ChangeReply, ClientError> {
        let request = ReactRequest { room: room.clone(), seq, emoji: emoji.into() };
        self.call(if on { Request::React(request) } else { Request::Unreact(request) }).await
    }

    /// Moves one's read position in `room` to `seq`; answers the unread count.
    pub async fn read(&mut self, room: &RoomName, seq: u64) -> Result<bavard_protocol::ReadReply, ClientError> {
        self.call(Request::Read(bavard_protocol::ReadRequest { room: room.clone(), seq })).await
    }

    /// Searches `room` for the words of `q`, best first (`limit` from `offset`).
    pub async fn search(
        &mut self,
        room: &RoomName,
        q: &str,
        limit: Option<u32>,
        offset: Option<u32>,
    ) -> Result<bavard_protocol::SearchReply, ClientError> {
        self.call(Request::Search(bavard_protocol::SearchRequest { room: room.clone(), q: q.into(), limit, offset }))
            .await
    }

    /// Starts a streamed message in `room` (complete it with [`Connection::append`] and
    /// [`Connection::finish`]).
    pub async fn send_stream(&mut self, room: &RoomName, text: &str) -> Result<SendReply, ClientError> {
        let request = SendRequest { room: room.clone(), text: text.into(), key: None, reply_to: None, stream: true };
        self.call(Request::Send(request)).await
    }

    /// Adds `text` to one's streamed message `seq`.
    pub async fn append(&mut self, room: &RoomName, seq: u64, text: &str) -> Result<ChangeReply, ClientError> {
        self.call(Request::Append(TextChange { room: room.clone(), seq, text: text.into() })).await
    }

    /// Ends one's streamed message `seq`.
    pub async fn finish(&mut self, room: &RoomName, seq: u64) -> Result<ChangeReply, ClientError> {
        self.call(Request::Finish(MessageRef { room: room.clone(), seq })).await
    }

    /// Reads a page of the users online in a room (start without a cursor, then pass the
    /// reply's `cursor`, or a join reply's `members_cursor`, until it is `None`).
    pub async fn members(&mut self, request: MembersRequest) -> Result<MembersReply, ClientError> {
        self.call(Request::Members(request)).await
    }

    /// The next event (anything but a reply to a pending request).
    pub async fn next_event(&mut self) -> Result<ServerFrame, ClientError> {
        match self.events.pop_front() {
            Some(event) => Ok(event),
            None => self.read_frame().await,
        }
    }

    /// The next event if one has already arrived, without waiting. A client that sends
    /// and listens on one task calls it between requests, so that events do not pile up
    /// in memory while it is busy sending.
    pub fn try_next_event(&mut self) -> Option<Result<ServerFrame, ClientError>> {
        match self.events.pop_front() {
            Some(event) => Some(Ok(event)),
            // Reading a frame is cancel-safe: an unfinished frame stays in the socket.
            None => self.read_frame().now_or_never(),
        }
    }

    /// Events received while waiting for replies, not yet taken.
    pub fn pending_events(&self) -> usize {
        self.events.len()
    }

    /// Sends a raw text frame (for testing how the server takes bad input).
    pub async fn send_text(&mut self, text: String) -> Result<(), ClientError> {
        self.socket.send(WsMessage::Text(text.into())).await?;
        Ok(())
    }

    /// Sends any WebSocket message as is.
    pub async fn send_message(&mut self, message: WsMessage) -> Result<(), ClientError> {
        self.socket.send(message).await?;
        Ok(())
    }

    /// Reads the next JSON frame from the socket, answering pings on the way.
    async fn read_frame(&mut self) -> Result<ServerFrame, ClientError> {
        let timeout = self.timeout;
        // One deadline for the whole read: skipped control frames (pings) must not extend it.
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let message = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .map_err(|_| ClientError::Timeout(timeout))?;
            match message {
                Some(Ok(WsMessage::Text(text))) => {
                    return serde_json::from_str(&text)
                        .map_err(|e| ClientError::Protocol(format!("cannot read {text}: {e}")));
                }
                Some(Ok(WsMessage::Close(frame))) => {
                    let (code, reason) = frame.map_or((1005, String::new()), |f| (f.code.into(), f.reason.to_string()));
                    return Err(ClientError::Closed { code, reason });
                }
                Some(Ok(WsMessage::Binary(_))) => return Err(ClientError::Protocol("unexpected binary frame".into())),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.into()),
                None => return Err(ClientError::Closed { code: 1006, reason: "connection lost".into() }),
            }
        }
    }

    /// Closes the connection normally.
    pub async fn close(mut self) {
        let _already_closed = self.socket.close(None).await;
    }
}

fn placeholder_welcome() -> Welcome {
    Welcome {
        protocol: 0,
        server: String::new(),
        user: bavard_protocol::User { id: String::new(), name: String::new() },
        session: String::new(),
        limits: bavard_protocol::Limits { max_frame_bytes: 0, max_text_chars: 0 },
    }
}
