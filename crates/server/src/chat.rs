//! `bavard chat`, the terminal client: a module of the `bavard` binary (main.rs declares
//! it), not of the server library. It owns the terminal side only: reading lines,
//! printing the room. Connecting, reconnecting with backoff, recovering missed messages
//! and resending with the same key are [`Resilient`]'s.
//!
//! Standard input is read line by line on a thread of its own; each non-empty line is
//! sent to the room, one at a time so the room gets them in order. Standard output gets
//! the room's messages (`[room #seq] name: text`) and events (`* name joined`, `* name
//! left`, `* name is typing`); status lines and errors go to standard error. At the end
//! of input the client waits for the server to store what it sent, then exits 0, so it
//! works in a pipe.

use std::{
    io::{self, BufRead, Write},
    process::ExitCode,
    time::Duration,
};

use anyhow::{anyhow, bail, Context};
use bavard::config::ChatArgs;
use bavard_client::{
    endpoint,
    protocol::{Message, RoomName, ServerFrame},
    ClientError, Event, Resilient, TlsConfig,
};
use tokio::{sync::mpsc, time::Instant};

/// After the last ack at the end of input: how long to wait for the messages' own
/// `message` events, so they are printed too.
const ECHO_WAIT: Duration = Duration::from_secs(2);
/// Failed connection attempts in a row after which a lost connection is given up
/// (about a minute, with the backoff).
const RECONNECT_ATTEMPTS: u32 = 20;

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
        Chat::new(&args, io::stdout())?.run(args.history, lines).await
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
            let mut reader = io::stdin().lock();
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

/// Text from the network made safe for a terminal: control characters and bidi
/// overrides are shown escaped (`\u{1b}`), not obeyed; continuation lines are indented.
fn printable(text: &str) -> String {
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

/// What woke the main loop up.
enum Step {
    Line(Option<io::Result<String>>),
    Event(Result<Event, ClientError>),
}

/// The terminal's state; see the module docs.
struct Chat<W: Write> {
    client: Resilient,
    url: String,
    room: RoomName,
    out: W,
    /// The longest line the server takes, from its last `welcome`.
    max_text_chars: usize,
    /// The highest seq the server acknowledged for our own lines.
    highest_acked: u64,
    /// Lines not sent: refused by the server, or too long.
    failed: usize,
}

impl<W: Write> Chat<W> {
    fn new(args: &ChatArgs, out: W) -> anyhow::Result<Self> {
        let room = RoomName::new(args.room.trim()).map_err(|e| anyhow!("--room: {e}"))?;
        let name = args.name.as_deref().map(str::trim);
        if name == Some("") {
            bail!("--name must not be empty");
        }
        let url = endpoint(&args.url, name)?;
        let mut client = Resilient::new(url.clone());
        if let Some(path) = &args.ca_cert {
            client.set_tls(TlsConfig::with_ca_file(path).context("--ca-cert")?);
        }
        Ok(Self { client, url, room, out, max_text_chars: usize::MAX, highest_acked: 0, failed: 0 })
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

    /// Joins with the latest `history` messages, then runs until the end of input and
    /// the last ack (or a fatal error).
    async fn run(mut self, history: u32, mut lines: mpsc::UnboundedReceiver<io::Result<String>>) -> anyhow::Result<()> {
        // A first connection that fails is a mistake to report, not a network to wait for.
        self.client.set_max_attempts(1);
        let joined = match self.client.join_with_history(&self.room, history).await {
            Ok(joined) => joined,
            Err(e) => bail!("cannot join #{} at {}: {e}", self.room, self.url),
        };
        self.client.set_max_attempts(RECONNECT_ATTEMPTS);
        let me = self.client.welcome().map(|welcome| printable(&welcome.user.name)).unwrap_or_default();
        let online = joined.member_count.max(joined.members.len());
        eprintln!("* joined #{} as {me} ({online} online)", self.room);
        for message in &joined.messages {
            self.print_message(message)?;
        }
        loop {
            let step = tokio::select! {
                line = lines.recv() => Step::Line(line),
                event = self.client.next_event() => Step::Event(event),
            };
            match step {
                Step::Line(Some(Ok(line))) => self.send(line).await?,
                Step::Line(Some(Err(e))) => return Err(e).context("cannot read standard input"),
                Step::Line(None) => break,
                Step::Event(event) => self.show(event)?,
            }
        }
        // Everything is stored; give our own messages a moment to be printed.
        let deadline = Instant::now() + ECHO_WAIT;
        while self.client.last_seq(&self.room).unwrap_or(0) < self.highest_acked {
            match tokio::time::timeout_at(deadline, self.client.next_event()).await {
                Ok(event) => self.show(event)?,
                Err(_) => break,
            }
        }
        self.client.close().await;
        if self.failed > 0 {
            bail!("{} line(s) could not be sent", self.failed);
        }
        Ok(())
    }

    /// Sends a line read from standard input and waits for its ack.
    async fn send(&mut self, line: String) -> anyhow::Result<()> {
        if line.trim().is_empty() {
            return Ok(());
        }
        if let Some(welcome) = self.client.welcome() {
            self.max_text_chars = welcome.limits.max_text_chars.max(1);
        }
        let chars = line.chars().count();
        if chars > self.max_text_chars {
            eprintln!("bavard chat: line not sent: it has {chars} characters; the limit is {}", self.max_text_chars);
            self.failed += 1;
            return Ok(());
        }
        match self.client.send(&self.room, &line).await {
            Ok(sent) => self.highest_acked = self.highest_acked.max(sent.seq),
            Err(ClientError::Server(error)) => {
                let text: String = line.chars().take(40).collect();
                eprintln!("bavard chat: line not sent ({}): {}", error.message, printable(&text));
                self.failed += 1;
            }
            Err(e) => bail!("lost the connection to {} and could not get it back: {e}", self.url),
        }
        Ok(())
    }

    /// Shows one event: the room's on standard output, the connection's on standard error.
    fn show(&mut self, event: Result<Event, ClientError>) -> anyhow::Result<()> {
        match event {
            Ok(Event::Message(message)) => self.print_message(&message)?,
            Ok(Event::Server(ServerFrame::Presence(presence))) => {
                for user in &presence.joined {
                    self.say(&format!("* {} joined", printable(&user.name)))?;
                }
                for user in &presence.left {
                    self.say(&format!("* {} left", printable(&user.name)))?;
                }
            }
            Ok(Event::Server(ServerFrame::Typing(typing))) => {
                self.say(&format!("* {} is typing", printable(&typing.user.name)))?;
            }
            Ok(Event::Server(ServerFrame::Closing { reason })) => {
                eprintln!("* the server is going away: {}", printable(&reason));
            }
            Ok(Event::Server(ServerFrame::Error { error })) => {
                eprintln!("* the server reports an error: {}", printable(&error.message));
            }
            Ok(Event::Server(_)) => {}
            Ok(Event::Disconnected(error)) => eprintln!("* connection lost ({error}); reconnecting"),
            Ok(Event::Rejoined { room, member_count }) => eprintln!("* reconnected to #{room} ({member_count} online)"),
            Ok(Event::HistoryRestarted { room, seq }) => {
                eprintln!("* the server's history of #{room} restarted at #{seq}");
            }
            // A frame this version cannot read (the connection goes on): skip it.
            Err(ClientError::Protocol(problem)) => eprintln!("* skipped a frame: {}", printable(&problem)),
            Err(e) => bail!("lost the connection to {} and could not get it back: {e}", self.url),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_neutralises_terminal_escapes() {
        assert_eq!(printable("hi\u{1b}[2J"), "hi\\u{1b}[2J");
        assert_eq!(printable("a\nb"), "a\n    b");
        assert_eq!(printable("x\u{202e}y"), "x\\u{202e}y");
        assert_eq!(printable("tab\there"), "tab\there");
    }
}
