//! Shared test helpers: start the server exactly as `main` does (in-process, or as a
//! child process for signal tests), and small WebSocket clients with timeouts.

use std::{
    future::Future,
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use bavard::{app, config::ServeConfig};
use bavard_client::Connection;
use bavard_ws::client::{Endpoint, WsConn};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    tungstenite::{self, client::IntoClientRequest, Message},
    MaybeTlsStream, WebSocketStream,
};

/// How long any single wait in a test may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// Awaits `future`, failing the test if it takes longer than [`WAIT`].
pub async fn within<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future).await.expect("timed out")
}

/// A server running in this process on a free port, with its own database.
pub struct TestServer {
    pub addr: SocketAddr,
    server: Option<app::Server>,
    pub db: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

/// Settings for tests: defaults, port 0, no rate limit (per connection or per user)
/// unless a test sets one.
pub fn test_config(db: &Path) -> ServeConfig {
    let mut config = ServeConfig::with("127.0.0.1:0".parse().unwrap(), db.to_owned());
    config.rate_per_second = 0.0;
    // The per-user message rate (10/s by default) is set by the tests about it.
    config.user_rate_per_second = 0.0;
    config
}

/// Starts a server with default test settings.
pub async fn spawn() -> TestServer {
    spawn_with(|_| {}).await
}

/// Starts a server after `adjust` changes its settings.
pub async fn spawn_with(adjust: impl FnOnce(&mut ServeConfig)) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bavard.db");
    let mut server = start_on(&db, adjust).await;
    server._dir = Some(dir);
    server
}

/// Starts a server on an existing database file.
pub async fn start_on(db: &Path, adjust: impl FnOnce(&mut ServeConfig)) -> TestServer {
    let mut config = test_config(db);
    adjust(&mut config);
    let server = within(app::start(config)).await.unwrap();
    TestServer { addr: server.addr(), server: Some(server), db: db.to_owned(), _dir: None }
}

impl TestServer {
    /// `ws://ADDR{path}`.
    pub fn ws(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// `http://ADDR{path}`.
    pub fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A JSON-protocol connection as `name`.
    pub async fn json(&self, name: &str) -> Connection {
        within(Connection::connect(&self.ws(&format!("/ws?name={name}")))).await.unwrap()
    }

    /// A plain-text connection on `path` (`/ws/chat` or `/ws/chat/{room}`).
    pub async fn plain(&self, path: &str) -> PlainClient {
        PlainClient::connect(&self.ws(path)).await
    }

    /// Graceful shutdown.
    pub async fn stop(mut self) -> Option<tempfile::TempDir> {
        if let Some(server) = self.server.take() {
            within(server.stop()).await.unwrap();
        }
        self._dir.take()
    }

    /// Stops and starts again on the same database (and a new port).
    pub async fn restart(self) -> TestServer {
        self.restart_with(|_| {}).await
    }

    /// Stops and starts again on the same database (and a new port), with the test
    /// settings `adjust` changes (give the same as at the first start to keep them).
    pub async fn restart_with(self, adjust: impl FnOnce(&mut ServeConfig)) -> TestServer {
        let db = self.db.clone();
        let dir = self.stop().await;
        let mut server = start_on(&db, adjust).await;
        server._dir = dir;
        server
    }

    /// A raw JSON connection on `/ws` presenting `token` as `?token=`.
    pub async fn json_token(&self, token: &str) -> JsonClient {
        JsonClient::connect(&self.ws(&format!("/ws?token={token}")), &[]).await.unwrap_or_else(|refused| {
            panic!("the token was refused: {refused:?}");
        })
    }

    /// A raw JSON connection on `/ws` as the guest `name` (no token).
    pub async fn json_guest(&self, name: &str) -> JsonClient {
        JsonClient::connect(&self.ws(&format!("/ws?name={name}")), &[]).await.unwrap()
    }

    /// The value of the metric sample `series` (name and labels, as written), if any.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let (status, text) = http_get(&self.http("/metrics")).await;
        assert_eq!(status, 200, "{text}");
        text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }
}

/// An upgrade the server refused: its HTTP status and body.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: String,
}

/// Opens a WebSocket on `url` with extra request `headers`; an HTTP answer instead of
/// the upgrade is returned as [`Refused`].
pub async fn open_websocket(
    url: &str,
    headers: &[(&str, &str)],
) -> Result<WebSocketStream<MaybeTlsStream<TcpStream>>, Refused> {
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        request
            .headers_mut()
            .insert(tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
    }
    match within(tokio_tungstenite::connect_async(request)).await {
        Ok((socket, _)) => Ok(socket),
        Err(tungstenite::Error::Http(response)) => Err(Refused {
            status: response.status().as_u16(),
            body: String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned(),
        }),
        Err(e) => panic!("unexpected connect error: {e}"),
    }
}

/// A JSON-protocol client that speaks raw JSON values, so tests read the wire exactly as
/// the protocol document writes it (new ops and events included). Events that arrive
/// while it waits for a reply are kept, in order, for [`JsonClient::next_event`].
pub struct JsonClient {
    pub socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The `welcome` frame.
    pub welcome: serde_json::Value,
    events: std::collections::VecDeque<serde_json::Value>,
    next_id: u64,
}

impl JsonClient {
    /// Connects and reads the `welcome` frame.
    pub async fn connect(url: &str, headers: &[(&str, &str)]) -> Result<Self, Refused> {
        let socket = open_websocket(url, headers).await?;
        let mut client = Self { socket, welcome: serde_json::Value::Null, events: Default::default(), next_id: 0 };
        let welcome = client.read_frame().await;
        assert_eq!(welcome["type"], "welcome", "the first frame: {welcome}");
        client.welcome = welcome;
        Ok(client)
    }

    /// The next frame from the socket (pings skipped); panics on a close.
    async fn read_frame(&mut self) -> serde_json::Value {
        loop {
            match within(self.socket.next()).await {
                Some(Ok(Message::Text(text))) => {
                    return serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Sends a raw text frame.
    pub async fn send_text(&mut self, text: &str) {
        within(self.socket.send(Message::Text(text.into()))).await.unwrap();
    }

    /// Sends `request` (an object with its `op`) with a fresh `id` and returns the
    /// `reply` frame to it, whether ok or not.
    pub async fn request(&mut self, mut request: serde_json::Value) -> serde_json::Value {
        self.next_id += 1;
        let id = self.next_id;
        request["id"] = id.into();
        self.send_text(&request.to_string()).await;
        loop {
            let frame = self.read_frame().await;
            if frame["type"] == "reply" && frame["id"] == id {
                return frame;
            }
            self.events.push_back(frame);
        }
    }

    /// Sends `request` and asserts it succeeded; returns the reply.
    pub async fn ok(&mut self, request: serde_json::Value) -> serde_json::Value {
        let reply = self.request(request.clone()).await;
        assert_eq!(reply["ok"], true, "{request} failed: {reply}");
        reply
    }

    /// Sends `request` and asserts it failed; returns the error `code`.
    pub async fn refused(&mut self, request: serde_json::Value) -> String {
        let reply = self.request(request.clone()).await;
        assert_eq!(reply["ok"], false, "{request} was accepted: {reply}");
        let message = reply["error"]["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "an error says why: {reply}");
        reply["error"]["code"].as_str().unwrap_or_default().to_owned()
    }

    /// Sends `request` and returns the error `message`, asserting its `code`.
    pub async fn refused_with(&mut self, code: &str, request: serde_json::Value) -> String {
        let reply = self.request(request.clone()).await;
        assert_eq!(reply["error"]["code"], code, "{request}: {reply}");
        reply["error"]["message"].as_str().unwrap_or_default().to_owned()
    }

    /// The next frame that is not a reply this client waited for (events, or errors of
    /// requests without id).
    pub async fn next_event(&mut self) -> serde_json::Value {
        match self.events.pop_front() {
            Some(event) => event,
            None => self.read_frame().await,
        }
    }

    /// The next event of type `kind`, skipping others (presence, typing, ...).
    pub async fn next_event_of(&mut self, kind: &str) -> serde_json::Value {
        loop {
            let event = self.next_event().await;
            if event["type"] == kind {
                return event;
            }
        }
    }

    /// The next `message` event's text.
    pub async fn next_message_text(&mut self) -> String {
        self.next_event_of("message").await["text"].as_str().unwrap().to_owned()
    }

    /// The next presence event in `room` that says `user_id` left.
    pub async fn next_left(&mut self, room: &str, user_id: &str) -> serde_json::Value {
        loop {
            let event = self.next_event_of("presence").await;
            let left = event["left"].as_array().cloned().unwrap_or_default();
            if event["room"] == room && left.iter().any(|user| user["id"] == user_id) {
                return event;
            }
        }
    }

    /// Reads (skipping buffered events) until the server closes: (code, reason); code
    /// 1006 if the socket just ended.
    pub async fn closed(&mut self) -> (u16, String) {
        loop {
            match within(self.socket.next()).await {
                Some(Ok(Message::Close(frame))) => {
                    return frame.map_or((1005, String::new()), |f| (f.code.into(), f.reason.to_string()))
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return (1006, String::new()),
            }
        }
    }

    /// Closes the connection and waits for the server's close.
    pub async fn close(mut self) {
        let _ = within(self.socket.close(None)).await;
        while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, self.socket.next()).await {}
    }
}

/// One HTTP request with a JSON body (if any) and `Authorization: Bearer <bearer>` (if
/// any): an API key or a JWT.
pub async fn rest(method: &str, url: &str, bearer: Option<&str>, body: Option<&serde_json::Value>) -> HttpResponse {
    let authorization = bearer.map(|token| format!("Bearer {token}"));
    let mut headers = Vec::new();
    if let Some(value) = &authorization {
        headers.push(("Authorization", value.as_str()));
    }
    let body = body.map(|body| body.to_string());
    if body.is_some() {
        headers.push(("Content-Type", "application/json"));
    }
    http(method, url, &headers, body.as_deref().map(str::as_bytes)).await
}

/// A client of the original plain-text protocol.
pub struct PlainClient {
    pub socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl PlainClient {
    pub async fn connect(url: &str) -> Self {
        let (socket, _) = within(tokio_tungstenite::connect_async(url)).await.unwrap();
        Self { socket }
    }

    /// Connects with extra request headers; returns the HTTP error status if refused.
    pub async fn connect_with(url: &str, headers: &[(&str, &str)]) -> Result<Self, u16> {
        let mut request = url.into_client_request().unwrap();
        for (name, value) in headers {
            request
                .headers_mut()
                .insert(tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
        }
        match within(tokio_tungstenite::connect_async(request)).await {
            Ok((socket, _)) => Ok(Self { socket }),
            Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
            Err(e) => panic!("unexpected connect error: {e}"),
        }
    }

    pub async fn send(&mut self, text: &str) {
        within(self.socket.send(Message::Text(text.into()))).await.unwrap();
    }

    /// The next text frame (pings are answered and skipped).
    pub async fn recv(&mut self) -> String {
        loop {
            match within(self.socket.next()).await {
                Some(Ok(Message::Text(text))) => return text.to_string(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Reads until the server closes; returns the close code.
    pub async fn close_code(&mut self) -> u16 {
        close_code_of(&mut self.socket).await
    }
}

/// Reads frames until a close frame; returns its code (1006 if the socket just ended).
pub async fn close_code_of<S>(socket: &mut S) -> u16
where
    S: futures_util::Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    loop {
        match within(socket.next()).await {
            Some(Ok(Message::Close(frame))) => return frame.map_or(1005, |f| f.code.into()),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return 1006,
        }
    }
}

/// The `bavard` binary, to run as a child process with no `BAVARD_*` variable from the
/// test's environment: what a test does not pass on the command line is the documented
/// default, whatever is exported where the tests run (`BAVARD_LOG=warn` would even hide
/// the line that tells the test the server's address).
pub fn bavard_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bavard"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("BAVARD_") {
            command.env_remove(key);
        }
    }
    command
}

/// The `bavard` binary running as a child process.
pub struct ChildServer {
    pub child: Child,
    pub addr: SocketAddr,
    /// Whether its listening line said `https://`.
    pub https: bool,
    /// What it wrote on stderr so far (its log), line by line.
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl ChildServer {
    /// Starts `bavard --listen 127.0.0.1:0 --db DB` and waits for its listening line
    /// (`listening on http://ADDR`, or `https://ADDR` with TLS).
    pub fn start(db: &Path, extra: &[&str]) -> Self {
        let mut child = bavard_command()
            .args(["--listen", "127.0.0.1:0", "--db"])
            .arg(db)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (found, addr) = std::sync::mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let log_lines = log.clone();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = log_lines.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
                drop(log);
                if !sent {
                    if let Some(url) = line.split("listening on ").nth(1) {
                        let url = url.split_whitespace().next().unwrap_or_default().to_owned();
                        sent = found.send(url).is_ok();
                    }
                }
            }
        });
        let url = addr.recv_timeout(WAIT).expect("the server did not report its address");
        let (https, addr) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
            (Some(addr), _) => (true, addr),
            (None, Some(addr)) => (false, addr),
            _ => panic!("unexpected listening line: {url}"),
        };
        Self { child, addr: addr.parse().unwrap(), https, log }
    }

    pub fn ws(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let deadline = std::time::Instant::now() + WAIT;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the server did not exit in time");
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A room name (panics on an invalid one: tests use valid names).
pub fn room(name: &str) -> bavard_protocol::RoomName {
    bavard_protocol::RoomName::new(name).unwrap()
}

/// Opens a WebSocket with the raw client of `bavard_ws` (a TCP stream upgraded by
/// hand), so that nothing reads or answers behind the test's back.
pub async fn raw_websocket(addr: SocketAddr, path: &str) -> WsConn {
    within(WsConn::connect(&Endpoint::from_addr(addr), path, 4096)).await.unwrap()
}

/// Reads server frames, answering nothing, until the server ends the connection:
/// (opcode, payload).
pub async fn read_raw_frames(conn: &mut WsConn) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while let Ok(Some(frame)) = conn.next_frame().await {
        frames.push((frame.opcode, frame.payload.to_vec()));
    }
    frames
}

/// An HTTP response: status, headers (names lower-cased) and body.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request over a real socket (`Connection: close`), every wait bounded.
/// `headers` are sent as given; a body gets its `Content-Length`.
pub async fn http(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> HttpResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut stream = within(TcpStream::connect(host)).await.unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body.unwrap_or_default());
    within(stream.write_all(&bytes)).await.unwrap();
    let mut response = Vec::new();
    within(stream.read_to_end(&mut response)).await.unwrap();
    parse_response(&response)
}

/// Splits a whole HTTP/1.1 response into status, headers and (de-chunked) body.
fn parse_response(response: &[u8]) -> HttpResponse {
    let response = String::from_utf8_lossy(response).to_string();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|line| line.get(9..12)).and_then(|code| code.parse().ok()).unwrap_or(0);
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { unchunk(body) } else { body.to_owned() };
    HttpResponse { status, headers, body }
}

/// The payload of a chunked body.
fn unchunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].strip_prefix("\r\n").unwrap_or(&rest[size..]);
    }
    out
}

/// GET `url`: its status and body.
pub async fn http_get(url: &str) -> (u16, String) {
    let response = http("GET", url, &[], None).await;
    (response.status, response.body)
}

/// Sends `body` as JSON with `method`.
pub async fn http_json(method: &str, url: &str, body: &serde_json::Value) -> HttpResponse {
    http(method, url, &[("Content-Type", "application/json")], Some(body.to_string().as_bytes())).await
}

/// Sends one raw HTTP/1.1 request (`Connection: close` is added) over `stream`, plain
/// or TLS, and reads the response: (status, lower-cased header lines, body).
pub async fn http_exchange<S>(mut stream: S, request_head: &str) -> (u16, Vec<(String, String)>, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!("{}\r\nConnection: close\r\n\r\n", request_head.trim_end());
    within(stream.write_all(request.as_bytes())).await.unwrap();
    let mut response = Vec::new();
    // A TLS peer may end without close_notify once the body is complete.
    let _ = within(stream.read_to_end(&mut response)).await;
    let HttpResponse { status, headers, body } = parse_response(&response);
    (status, headers, body)
}
