//! `bavard chat`, the terminal client, run as a real process in a pipe against a server
//! started in this process.

use std::{
    io::{BufRead, BufReader, Write},
    process::{Child, ChildStdin, ExitStatus, Stdio},
    time::Duration,
};

use bavard_client::Connection;
use bavard_protocol::{HistoryRequest, Message, Request, ServerFrame};
use tokio::sync::mpsc;

use crate::helpers::*;

/// `bavard chat` as a child process, its output read line by line on threads.
struct ChatProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: mpsc::UnboundedReceiver<String>,
    stderr: mpsc::UnboundedReceiver<String>,
    /// Every line read so far, for the failure messages.
    seen: Vec<String>,
}

fn lines_of(reader: impl std::io::Read + Send + 'static) -> mpsc::UnboundedReceiver<String> {
    let (sender, receiver) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    receiver
}

impl ChatProcess {
    fn start(args: &[&str]) -> Self {
        let mut child = bavard_command()
            .arg("chat")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = lines_of(child.stdout.take().unwrap());
        let stderr = lines_of(child.stderr.take().unwrap());
        Self { stdin: child.stdin.take(), child, stdout, stderr, seen: Vec::new() }
    }

    /// `bavard chat ws://ADDR/ws --room ROOM --name NAME`.
    fn join(server_ws: &str, room: &str, name: &str) -> Self {
        Self::start(&[server_ws, "--room", room, "--name", name])
    }

    fn write(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is still open");
        stdin.write_all(text.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// Ends the input, as at the end of a pipe.
    fn close_stdin(&mut self) {
        self.stdin.take();
    }

    /// Waits for a line of standard output equal to `expected`.
    async fn expect_stdout(&mut self, expected: &str) {
        Self::expect(&mut self.stdout, &mut self.seen, |line| line == expected, expected).await;
    }

    /// Waits for a line of standard error containing `expected`.
    async fn expect_stderr(&mut self, expected: &str) {
        Self::expect(&mut self.stderr, &mut self.seen, |line| line.contains(expected), expected).await;
    }

    async fn expect(
        lines: &mut mpsc::UnboundedReceiver<String>,
        seen: &mut Vec<String>,
        matches: impl Fn(&str) -> bool,
        expected: &str,
    ) {
        let waiting = async {
            while let Some(line) = lines.recv().await {
                seen.push(line.clone());
                if matches(&line) {
                    return true;
                }
            }
            false
        };
        match tokio::time::timeout(WAIT, waiting).await {
            Ok(true) => {}
            Ok(false) => panic!("the output ended without {expected:?}; seen: {seen:#?}"),
            Err(_) => panic!("timed out waiting for {expected:?}; seen: {seen:#?}"),
        }
    }

    /// Waits (bounded) for the process to end.
    async fn wait_exit(&mut self) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(tokio::time::Instant::now() < deadline, "bavard chat did not exit; seen: {:#?}", self.seen);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Everything left on standard output and standard error once the process ended.
    async fn rest(&mut self) -> (Vec<String>, Vec<String>) {
        let mut out = Vec::new();
        while let Ok(Some(line)) = tokio::time::timeout(WAIT, self.stdout.recv()).await {
            out.push(line);
        }
        let mut err = Vec::new();
        while let Ok(Some(line)) = tokio::time::timeout(WAIT, self.stderr.recv()).await {
            err.push(line);
        }
        (out, err)
    }
}

impl Drop for ChatProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The next `message` event on `connection`, skipping presence and typing.
async fn next_message(connection: &mut Connection) -> Message {
    loop {
        match within(connection.next_event()).await.unwrap() {
            ServerFrame::Message(message) => return message,
            ServerFrame::Presence(_) | ServerFrame::Typing(_) => continue,
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn piped_lines_arrive_in_the_room_and_the_client_exits_0() {
    let server = spawn().await;
    let pipe = room("pipe");
    let mut observer = server.json("observer").await;
    within(observer.join(&pipe, None)).await.unwrap();

    let mut chat = ChatProcess::join(&server.ws("/ws"), "pipe", "alice");
    chat.write("hello\n\n   \nworld, été\r\n");
    chat.close_stdin();

    let first = next_message(&mut observer).await;
    let second = next_message(&mut observer).await;
    let got: Vec<(u64, &str, &str)> =
        [&first, &second].iter().map(|m| (m.seq, m.from.name.as_str(), m.text.as_str())).collect();
    assert_eq!(got, [(1, "alice", "hello"), (2, "alice", "world, été")]);

    let status = chat.wait_exit().await;
    let (out, err) = chat.rest().await;
    assert!(status.success(), "exit {status}; stdout {out:?}; stderr {err:?}");
    assert_eq!(out, ["[pipe #1] alice: hello", "[pipe #2] alice: world, été"], "stderr {err:?}");

    // Empty lines were not sent: the room holds exactly the two.
    let page =
        within(observer.history(HistoryRequest { room: pipe, before: None, after: None, limit: None, thread: None }))
            .await
            .unwrap();
    assert_eq!(page.messages.len(), 2);
}

#[tokio::test]
async fn messages_presence_and_typing_of_others_are_printed() {
    let server = spawn().await;
    let talk = room("talk");
    let mut chat = ChatProcess::join(&server.ws("/ws"), "talk", "alice");
    chat.expect_stderr("* joined #talk as alice").await;

    let mut bob = server.json("bob").await;
    let joined = within(bob.join(&talk, None)).await.unwrap();
    assert!(joined.members.iter().any(|u| u.name == "alice"), "{joined:?}");
    chat.expect_stdout("* bob joined").await;

    within(bob.request(Request::Typing { room: talk.clone() })).await.unwrap();
    chat.expect_stdout("* bob is typing").await;

    within(bob.send(&talk, "hi alice", None)).await.unwrap();
    chat.expect_stdout("[talk #1] bob: hi alice").await;

    // What others write cannot drive the terminal: escapes are shown, not obeyed.
    within(bob.send(&talk, "clear\u{1b}[2J\nsecond line", None)).await.unwrap();
    chat.expect_stdout("[talk #2] bob: clear\\u{1b}[2J").await;
    chat.expect_stdout("    second line").await;

    // Alice answers from her terminal; bob gets it.
    chat.write("hi bob\n");
    let mut answer = next_message(&mut bob).await;
    while answer.from.name == "bob" {
        // Bob's own messages come back to him too.
        answer = next_message(&mut bob).await;
    }
    assert_eq!((answer.seq, answer.from.name.as_str(), answer.text.as_str()), (3, "alice", "hi bob"));
    chat.expect_stdout("[talk #3] alice: hi bob").await;

    bob.close().await;
    chat.expect_stdout("* bob left").await;

    chat.close_stdin();
    let status = chat.wait_exit().await;
    assert!(status.success(), "exit {status}; seen {:#?}", chat.seen);
}

#[tokio::test]
async fn the_online_count_counts_everyone_in_a_room_of_more_than_100() {
    let server = spawn().await;
    let packed = room("packed");
    let mut crowd = Vec::new();
    for i in 0..100 {
        let mut client = server.json(&format!("u{i}")).await;
        within(client.join(&packed, None)).await.unwrap();
        crowd.push(client);
    }
    let mut chat = ChatProcess::join(&server.ws("/ws"), "packed", "zoe");
    chat.expect_stderr("* joined #packed as zoe (101 online)").await;
    chat.close_stdin();
    let status = chat.wait_exit().await;
    assert!(status.success(), "exit {status}; seen {:#?}", chat.seen);
}

#[tokio::test]
async fn the_history_flag_prints_earlier_messages_first() {
    let server = spawn().await;
    let old = room("old");
    let mut writer = server.json("writer").await;
    within(writer.join(&old, None)).await.unwrap();
    for text in ["one", "two", "three"] {
        within(writer.send(&old, text, None)).await.unwrap();
    }
    let mut chat = ChatProcess::start(&[&server.ws("/ws"), "--room", "old", "--name", "reader", "--history", "2"]);
    chat.close_stdin();
    let status = chat.wait_exit().await;
    let (out, err) = chat.rest().await;
    assert!(status.success(), "exit {status}; stderr {err:?}");
    assert_eq!(out, ["[old #2] writer: two", "[old #3] writer: three"]);
}

#[tokio::test]
async fn errors_go_to_stderr_with_a_non_zero_exit() {
    // Nobody listens on this port any more.
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut chat = ChatProcess::start(&[&format!("ws://{addr}/ws"), "--room", "r", "--name", "alice"]);
    let status = chat.wait_exit().await;
    let (out, err) = chat.rest().await;
    assert_eq!(status.code(), Some(1), "stdout {out:?}; stderr {err:?}");
    assert!(out.is_empty(), "{out:?}");
    assert!(err.iter().any(|l| l.starts_with("bavard chat: cannot join #r at ws://")), "{err:?}");

    let server = spawn().await;
    let mut chat = ChatProcess::start(&[&server.ws("/ws"), "--room", "not a room"]);
    let status = chat.wait_exit().await;
    let (_, err) = chat.rest().await;
    assert_eq!(status.code(), Some(1));
    assert!(err.iter().any(|l| l.contains("invalid room name")), "{err:?}");

    // The server refuses the name: its explanation is shown.
    let long = "n".repeat(100);
    let mut chat = ChatProcess::start(&[&server.ws("/ws"), "--room", "r", "--name", &long]);
    let status = chat.wait_exit().await;
    let (_, err) = chat.rest().await;
    assert_eq!(status.code(), Some(1));
    assert!(err.iter().any(|l| l.contains("400") && l.contains("invalid name")), "{err:?}");
}

#[tokio::test]
async fn a_line_written_while_the_server_restarts_arrives_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("restart.db");
    let server = start_on(&db, |_| {}).await;
    let addr = server.addr;
    let mut chat = ChatProcess::join(&server.ws("/ws"), "again", "alice");
    chat.expect_stderr("* joined #again").await;
    chat.write("before\n");
    chat.expect_stdout("[again #1] alice: before").await;

    server.stop().await;
    chat.expect_stderr("* connection lost").await;
    chat.write("during\n");

    let server = start_on(&db, |config| config.listen = addr).await;
    chat.expect_stderr("* reconnected to #again").await;
    chat.expect_stdout("[again #2] alice: during").await;
    chat.close_stdin();
    let status = chat.wait_exit().await;
    let (out, err) = chat.rest().await;
    assert!(status.success(), "exit {status}; stdout {out:?}; stderr {err:?}");
    assert!(out.is_empty(), "nothing printed twice: {out:?}");

    let mut reader = server.json("reader").await;
    let page = within(reader.history(HistoryRequest {
        room: room("again"),
        before: None,
        after: None,
        limit: None,
        thread: None,
    }))
    .await
    .unwrap();
    let stored: Vec<(u64, &str)> = page.messages.iter().map(|m| (m.seq, m.text.as_str())).collect();
    assert_eq!(stored, [(1, "before"), (2, "during")]);
}
