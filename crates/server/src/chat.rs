//! `bavard chat`: a terminal client for one room, built on [`bavard_client::Connection`].
//!
//! Standard input is read line by line on a thread of its own; each non-empty line is
//! sent to the room with an idempotency key, one at a time so the room gets them in
//! order. Standard output gets the room's messages (`[room #seq] name: text`) and
//! events (`* name joined`, `* name left`, `* name is typing`); status lines and errors
//! go to standard error. At the end of input the client waits for the server to store
//! what it sent, then exits 0, so it works in a pipe.
//!
//! It survives the network: when the connection drops it reconnects with backoff,
//! rejoins with `since` = the last seq it printed (paging with `history` if the server
//! could not recover the whole gap), never prints a seq twice, and resends the
//! unacknowledged line with the same key, which the server does not duplicate.

use std::{
    collections::VecDeque,
    io::{self, BufRead, Write},
    process::ExitCode,
    time::Duration,
};

use anyhow::{anyhow, bail, Context};
use bavard_client::{
    protocol::{
        ErrorCode, HistoryRequest, JoinReply, JoinRequest, Message, ReplyFrame, Request, RequestId, RoomName,
        SendReply, SendRequest, ServerFrame,
    },
    ClientError, Connection,
};
use tokio::{sync::mpsc, time::Instant};
use tokio_tungstenite::tungstenite::Error as WsError;

use crate::config::ChatArgs;

/// Silence on the socket after which the client pings the server; a second silence
/// that long without an answer counts as a lost connection.
const IDLE: Duration = Duration::from_secs(15);
/// First and longest wait between reconnection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long the client keeps trying to reconnect before it gives up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);
/// After the last ack at the end of input: how long to wait for the messages' own
/// `message` events, so they are printed too.
const ECHO_WAIT: Duration = Duration::from_secs(2);
/// Page size when recovering a gap with `history`.
const GAP_PAGE: u32 = 200;

/// Runs `bavard chat` to its end: 0 when everything read was sent, 1 otherwise.
pub fn main(args: ChatArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("bavard chat: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let lines = read_stdin()?;
        let mut chat = Chat::new(args, io::stdout())?;
        chat.run(lines).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bavard chat: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Reads standard input on a thread (blocking reads do not belong on the runtime) and
/// hands each line over, without its line ending. The channel closes at end of input.
fn read_stdin() -> anyhow::Result<mpsc::UnboundedReceiver<io::Result<String>>> {
    let (lines, received) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let stdin = io::stdin();
            let mut reader = stdin.lock();
            let mut buffer = Vec::new();
            loop {
                buffer.clear();
                match reader.read_until(b'\n', &mut buffer) {
                    Ok(0) => break,
                    Ok(_) => {
                        while matches!(buffer.last(), Some(b'\n' | b'\r')) {
                            buffer.pop();
                        }
                        if lines.send(Ok(String::from_utf8_lossy(&buffer).into_owned())).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        let _receiver_gone = lines.send(Err(e));
                        break;
                    }
                }
            }
        })
        .context("cannot start the thread reading standard input")?;
    Ok(received)
}

/// The WebSocket URL to connect to: `http(s)` becomes `ws(s)`, an empty path becomes
/// `/ws`, and the nickname is added to the query string.
pub fn endpoint(url: &str, name: Option<&str>) -> anyhow::Result<String> {
    let url = url.trim();
    let (scheme, rest) =
        url.split_once("://").ok_or_else(|| anyhow!("invalid URL {url:?}: expected ws://HOST:PORT/ws"))?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "ws" | "http" => "ws",
        "wss" | "https" => "wss",
        other => bail!("invalid URL {url:?}: unsupported scheme {other:?} (use ws:// or wss://)"),
    };
    let rest = rest.split('#').next().unwrap_or_default();
    let (location, query) = match rest.split_once('?') {
        Some((location, query)) => (location, Some(query)),
        None => (rest, None),
    };
    let (authority, path) = match location.find('/') {
        Some(slash) => location.split_at(slash),
        None => (location, ""),
    };
    if authority.is_empty() {
        bail!("invalid URL {url:?}: no host");
    }
    let path = if path.is_empty() || path == "/" { "/ws" } else { path };
    let mut params: Vec<String> = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter(|p| !p.is_empty())
        .filter(|p| name.is_none() || !p.starts_with("name="))
        .map(str::to_owned)
        .collect();
    if let Some(name) = name {
        params.push(format!("name={}", percent_encode(name)));
    }
    let mut endpoint = format!("{scheme}://{authority}{path}");
    if !params.is_empty() {
        endpoint.push('?');
        endpoint.push_str(&params.join("&"));
    }
    Ok(endpoint)
}

fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// Text from the network made safe for a terminal: control characters and bidi
/// overrides are shown escaped (`\u{1b}`), not obeyed; continuation lines are indented.
pub fn printable(text: &str) -> String {
    let mut shown = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => shown.push_str("\n    "),
            '\t' => shown.push('\t'),
            c if c.is_control()
                || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') =>
            {
                shown.extend(c.escape_unicode());
            }
            c => shown.push(c),
        }
    }
    shown
}

/// A connection error worth retrying (as opposed to the server refusing us for good).
fn is_transient(error: &ClientError) -> bool {
    match error {
        ClientError::WebSocket(WsError::Http(response)) => {
            response.status().is_server_error() || response.status().as_u16() == 429
        }
        ClientError::WebSocket(WsError::Url(_)) => false,
        ClientError::WebSocket(_) | ClientError::Timeout(_) => true,
        ClientError::Closed { code, .. } => !matches!(code, 1008 | 1003),
        ClientError::Protocol(_) => true,
        ClientError::Server(body) => matches!(body.code, ErrorCode::Internal | ErrorCode::RateLimited),
    }
}

/// Says what went wrong in words, including the body of a refused upgrade (the server
/// explains there, e.g. an invalid name).
fn describe(error: &ClientError) -> String {
    if let ClientError::WebSocket(WsError::Http(response)) = error {
        let body = response.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
        let body = body.trim();
        let status = response.status();
        return if body.is_empty() {
            format!("the server answered {status}")
        } else {
            format!("the server answered {status}: {body}")
        };
    }
    error.to_string()
}

/// Why connecting and joining failed.
enum OpenError {
    /// The connection or the server said no (maybe only for now: see [`is_transient`]).
    Client(ClientError),
    /// Something that retrying cannot fix (standard output is gone, say).
    Fatal(anyhow::Error),
}

impl From<ClientError> for OpenError {
    fn from(error: ClientError) -> Self {
        Self::Client(error)
    }
}

/// A line on its way to the room.
struct Outgoing {
    key: String,
    text: String,
    /// The id of the `send` request awaiting its reply on the current connection.
    in_flight: Option<RequestId>,
}

/// What woke the main loop up.
enum Step {
    Line(Option<io::Result<String>>),
    Event(Result<ServerFrame, ClientError>),
    Timer,
}

/// The client's state; see the module docs.
struct Chat<W: Write> {
    url: String,
    room: RoomName,
    history: u32,
    out: W,
    connection: Option<Connection>,
    /// The last seq printed; every message after it is printed exactly once.
    last_seq: u64,
    joined_once: bool,
    /// Lines not yet acknowledged, oldest first; only the first one is ever in flight.
    queue: VecDeque<Outgoing>,
    /// The highest seq the server acknowledged for our own lines.
    highest_acked: u64,
    key_prefix: String,
    next_key: u64,
    /// When the first queued line may be sent again after a retryable refusal.
    retry_at: Option<Instant>,
    retry_delay: Duration,
    /// Lines the server refused for good.
    failed: usize,
    max_text_chars: usize,
    /// The id of a liveness `ping` awaiting its reply.
    ping: Option<RequestId>,
}

impl<W: Write> Chat<W> {
    fn new(args: ChatArgs, out: W) -> anyhow::Result<Self> {
        let room = RoomName::new(args.room.trim()).map_err(|e| anyhow!("--room: {e}"))?;
        let name = args.name.as_deref().map(str::trim);
        if name == Some("") {
            bail!("--name must not be empty");
        }
        Ok(Self {
            url: endpoint(&args.url, name)?,
            room,
            history: args.history,
            out,
            connection: None,
            last_seq: 0,
            joined_once: false,
            queue: VecDeque::new(),
            highest_acked: 0,
            key_prefix: format!("t{:016x}", rand::random::<u64>()),
            next_key: 1,
            retry_at: None,
            retry_delay: BACKOFF_MIN,
            failed: 0,
            max_text_chars: usize::MAX,
            ping: None,
        })
    }

    /// Prints one line to standard output.
    fn say(&mut self, line: &str) -> anyhow::Result<()> {
        writeln!(self.out, "{line}").and_then(|()| self.out.flush()).context("cannot write to standard output")
    }

    fn print_message(&mut self, message: &Message) -> anyhow::Result<()> {
        let line = format!(
            "[{} #{}] {}: {}",
            message.room,
            message.seq,
            printable(&message.from.name),
            printable(&message.text)
        );
        self.say(&line)
    }

    /// Prints `message` if it is news, keeping `last_seq` and catching up any gap first.
    async fn accept(&mut self, message: Message) -> anyhow::Result<()> {
        if message.room != self.room || message.seq <= self.last_seq {
            return Ok(());
        }
        if message.seq > self.last_seq + 1 {
            // Never expected from the server (its order is gap-free), but never print a hole.
            self.fill_gap(self.last_seq, message.seq).await?;
        }
        self.print_message(&message)?;
        self.last_seq = message.seq;
        Ok(())
    }

    /// Prints the stored messages with `after < seq < before`; false if the connection
    /// failed on the way.
    async fn fill_gap(&mut self, after: u64, before: u64) -> anyhow::Result<bool> {
        let mut from = after;
        while before > from + 1 {
            let Some(connection) = self.connection.as_mut() else { return Ok(false) };
            let request = HistoryRequest {
                room: self.room.clone(),
                after: Some(from),
                before: Some(before),
                limit: Some(GAP_PAGE),
            };
            let page = match connection.history(request).await {
                Ok(page) => page,
                Err(e) if is_transient(&e) => {
                    self.lost(&e);
                    return Ok(false);
                }
                Err(e) => bail!("cannot read the history of #{}: {}", self.room, describe(&e)),
            };
            let Some(newest) = page.messages.last().map(|m| m.seq) else { break };
            for message in &page.messages {
                if message.seq > self.last_seq {
                    self.print_message(message)?;
                    self.last_seq = message.seq;
                }
            }
            if !page.has_more {
                break;
            }
            from = newest;
        }
        Ok(true)
    }

    /// Connects and joins: the first time with the latest `--history` messages, later
    /// with `since` so that nothing is missed or repeated.
    async fn open(&mut self) -> Result<(), OpenError> {
        let mut connection = Connection::connect(&self.url).await?;
        connection.set_timeout(IDLE);
        self.max_text_chars = connection.welcome().limits.max_text_chars.max(1);
        let me = connection.welcome().user.name.clone();
        let since = self.joined_once.then_some(self.last_seq);
        let limit = if self.joined_once { None } else { Some(self.history) };
        let join = Request::Join(JoinRequest { room: self.room.clone(), since, limit });
        let reply: JoinReply = connection.call(join).await?;
        self.connection = Some(connection);
        self.ping = None;
        if let Some(front) = self.queue.front_mut() {
            front.in_flight = None; // request ids belong to the old connection
        }
        // `members` lists at most the first 100; servers before `member_count` listed all.
        let online = reply.member_count.max(reply.members.len());
        if !self.joined_once {
            eprintln!("* joined #{} as {} ({online} online)", self.room, printable(&me));
            for message in &reply.messages {
                self.print_message(message).map_err(OpenError::Fatal)?;
            }
            self.last_seq = reply.seq;
            self.joined_once = true;
            return Ok(());
        }
        eprintln!("* reconnected to #{} ({online} online)", self.room);
        if reply.seq < self.last_seq {
            eprintln!("* the server's history of #{} restarted at #{}", self.room, reply.seq);
            self.last_seq = reply.seq;
        }
        let newest = reply.messages.last().map_or(self.last_seq, |m| m.seq);
        for message in &reply.messages {
            if message.seq > self.last_seq {
                self.print_message(message).map_err(OpenError::Fatal)?;
                self.last_seq = message.seq;
            }
        }
        if reply.recovered == Some(false) {
            let complete = self.fill_gap(newest, reply.seq + 1).await.map_err(OpenError::Fatal)?;
            if !complete {
                return Err(ClientError::Closed { code: 1006, reason: "lost while recovering".into() }.into());
            }
        }
        Ok(())
    }

    /// Reconnects with exponential backoff, giving up after [`GIVE_UP_AFTER`].
    async fn reconnect(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut delay = BACKOFF_MIN;
        loop {
            match self.open().await {
                Ok(()) => return Ok(()),
                Err(OpenError::Fatal(e)) => return Err(e),
                Err(OpenError::Client(e)) if !is_transient(&e) => {
                    bail!("cannot rejoin #{} at {}: {}", self.room, self.url, describe(&e))
                }
                Err(OpenError::Client(e)) if started.elapsed() >= GIVE_UP_AFTER => bail!(
                    "lost the connection to {} and could not reconnect within {GIVE_UP_AFTER:?}: {}",
                    self.url,
                    describe(&e)
                ),
                Err(OpenError::Client(e)) => tracing::debug!(error = %e, "reconnect failed; retrying in {delay:?}"),
            }
            self.connection = None;
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(BACKOFF_MAX);
        }
    }

    /// Forgets a broken connection; the line in flight will be resent with its key.
    fn lost(&mut self, error: &ClientError) {
        if self.connection.take().is_some() {
            eprintln!("* connection lost ({}); reconnecting", describe(error));
        }
        if let Some(front) = self.queue.front_mut() {
            front.in_flight = None;
        }
        self.ping = None;
    }

    /// Sends the first queued line if nothing is in flight and no retry is waiting.
    async fn pump(&mut self) {
        if self.retry_at.is_some_and(|at| at > Instant::now()) {
            return;
        }
        self.retry_at = None;
        let (Some(connection), Some(front)) = (self.connection.as_mut(), self.queue.front_mut()) else { return };
        if front.in_flight.is_some() {
            return;
        }
        let request = SendRequest {
            room: self.room.clone(),
            text: front.text.clone(),
            key: Some(front.key.clone()),
            reply_to: None,
        };
        match connection.submit(Request::Send(request)).await {
            Ok(id) => front.in_flight = Some(id),
            Err(e) => self.lost(&e),
        }
    }

    /// Queues a line read from standard input.
    fn queue_line(&mut self, line: String) {
        if line.trim().is_empty() {
            return;
        }
        let chars = line.chars().count();
        if chars > self.max_text_chars {
            eprintln!("bavard chat: line not sent: it has {chars} characters; the limit is {}", self.max_text_chars);
            self.failed += 1;
            return;
        }
        let key = format!("{}-{}", self.key_prefix, self.next_key);
        self.next_key += 1;
        self.queue.push_back(Outgoing { key, text: line, in_flight: None });
    }

    /// Handles the reply to our `send` (or `ping`).
    fn replied(&mut self, reply: ReplyFrame) {
        if self.ping.as_ref() == Some(&reply.id) {
            self.ping = None;
            return;
        }
        let Some(front) = self.queue.front_mut() else { return };
        if front.in_flight.as_ref() != Some(&reply.id) {
            return;
        }
        front.in_flight = None;
        if reply.ok {
            if let Ok(sent) = reply.result_as::<SendReply>() {
                self.highest_acked = self.highest_acked.max(sent.seq);
            }
            self.queue.pop_front();
            self.retry_delay = BACKOFF_MIN;
            return;
        }
        let error = reply.error.unwrap_or_else(|| {
            bavard_client::protocol::ErrorBody::new(ErrorCode::Internal, "error reply without an error body")
        });
        match error.code {
            ErrorCode::RateLimited | ErrorCode::Internal => {
                self.retry_at = Some(Instant::now() + self.retry_delay);
                self.retry_delay = (self.retry_delay * 2).min(BACKOFF_MAX);
            }
            ErrorCode::Forbidden => {
                // Not (or no longer) a member: rejoin on a new connection, then resend.
                self.lost(&ClientError::Server(error));
            }
            _ => {
                let text: String = front.text.chars().take(40).collect();
                eprintln!("bavard chat: line not sent ({}): {}", error.message, printable(&text));
                self.failed += 1;
                self.queue.pop_front();
            }
        }
    }

    /// Handles one frame from the server.
    async fn event(&mut self, frame: ServerFrame) -> anyhow::Result<()> {
        match frame {
            ServerFrame::Message(message) => self.accept(message).await?,
            ServerFrame::Reply(reply) => self.replied(reply),
            ServerFrame::Presence(presence) if presence.room == self.room => {
                for user in &presence.joined {
                    self.say(&format!("* {} joined", printable(&user.name)))?;
                }
                for user in &presence.left {
                    self.say(&format!("* {} left", printable(&user.name)))?;
                }
            }
            ServerFrame::Typing(typing) if typing.room == self.room => {
                self.say(&format!("* {} is typing", printable(&typing.user.name)))?;
            }
            ServerFrame::Closing { reason } => eprintln!("* the server is going away: {}", printable(&reason)),
            ServerFrame::Error { error } => eprintln!("* the server reports an error: {}", printable(&error.message)),
            _ => {}
        }
        Ok(())
    }

    /// Runs until the end of input and the last ack (or a fatal error).
    async fn run(&mut self, mut lines: mpsc::UnboundedReceiver<io::Result<String>>) -> anyhow::Result<()> {
        match self.open().await {
            Ok(()) => {}
            Err(OpenError::Fatal(e)) => return Err(e),
            Err(OpenError::Client(e)) => bail!("cannot join #{} at {}: {}", self.room, self.url, describe(&e)),
        }
        let mut input_open = true;
        let mut echo_deadline: Option<Instant> = None;
        loop {
            if !input_open && self.queue.is_empty() {
                // Everything is stored; give our own messages a moment to be printed.
                let deadline = *echo_deadline.get_or_insert_with(|| Instant::now() + ECHO_WAIT);
                if self.last_seq >= self.highest_acked || Instant::now() >= deadline {
                    break;
                }
            }
            if self.connection.is_none() {
                self.reconnect().await?;
                continue;
            }
            self.pump().await;
            let wake_at = match (self.retry_at, echo_deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let Some(connection) = self.connection.as_mut() else { continue };
            let step = tokio::select! {
                line = lines.recv(), if input_open => Step::Line(line),
                event = connection.next_event() => Step::Event(event),
                () = tokio::time::sleep_until(wake_at.unwrap_or_else(Instant::now)), if wake_at.is_some() => Step::Timer,
            };
            match step {
                Step::Line(Some(Ok(line))) => self.queue_line(line),
                Step::Line(Some(Err(e))) => return Err(e).context("cannot read standard input"),
                Step::Line(None) => input_open = false,
                Step::Event(Ok(frame)) => {
                    self.ping = None;
                    self.event(frame).await?;
                }
                Step::Event(Err(ClientError::Timeout(_))) if self.ping.is_none() => {
                    // Quiet for a while: make sure the server is still there.
                    if let Some(connection) = self.connection.as_mut() {
                        match connection.submit(Request::Ping).await {
                            Ok(id) => self.ping = Some(id),
                            Err(e) => self.lost(&e),
                        }
                    }
                }
                Step::Event(Err(ClientError::Protocol(problem))) => {
                    // A frame this version does not know (a newer server): skip it.
                    tracing::debug!(%problem, "skipped a frame");
                }
                Step::Event(Err(e)) if is_transient(&e) => self.lost(&e),
                Step::Event(Err(e)) => bail!("the server ended the session: {}", describe(&e)),
                Step::Timer => {}
            }
        }
        if let Some(connection) = self.connection.take() {
            connection.close().await;
        }
        if self.failed > 0 {
            bail!("{} line(s) could not be sent", self.failed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_adds_the_path_and_the_encoded_name() -> anyhow::Result<()> {
        assert_eq!(endpoint("ws://127.0.0.1:8000/ws", Some("al ice"))?, "ws://127.0.0.1:8000/ws?name=al%20ice");
        assert_eq!(endpoint("http://h:1", None)?, "ws://h:1/ws");
        assert_eq!(endpoint("https://h/", Some("é&x"))?, "wss://h/ws?name=%C3%A9%26x");
        assert_eq!(endpoint("ws://h/ws?token=t&name=old#frag", Some("new"))?, "ws://h/ws?token=t&name=new");
        assert!(endpoint("127.0.0.1:8000", None).is_err());
        assert!(endpoint("ftp://h/ws", None).is_err());
        assert!(endpoint("ws:///ws", None).is_err());
        Ok(())
    }

    #[test]
    fn printable_neutralises_terminal_escapes() {
        assert_eq!(printable("hi\u{1b}[2J"), "hi\\u{1b}[2J");
        assert_eq!(printable("a\nb"), "a\n    b");
        assert_eq!(printable("x\u{202e}y"), "x\\u{202e}y");
        assert_eq!(printable("tab\there"), "tab\there");
    }
}
