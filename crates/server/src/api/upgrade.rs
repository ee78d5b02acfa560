//! The WebSocket upgrade: origin and handshake checks, identity from the query string,
//! the connection limit, and handing the upgraded socket to a tracked session task.
//!
//! The handshake is done here rather than through axum's extractor so the session gets
//! our own framing (`bavard_ws::ServerSocket`: no read buffer per idle connection).

use std::sync::Arc;

use axum::{
    body::Body,
    extract::{Path, Query, Request, State},
    http::{header, HeaderMap, HeaderValue, Method, StatusCode},
    response::{IntoResponse, Response},
};
use bavard_protocol::{plain, RoomName, User};
use bavard_ws::{derive_accept_key, ServerSocket};
use hyper_util::rt::TokioIo;
use serde::Deserialize;

use super::AppState;
use crate::session::{self, SessionContext};

/// The longest nickname accepted with `?name=`, in characters.
const MAX_NAME_CHARS: usize = 32;

/// Query parameters of a WebSocket upgrade.
#[derive(Debug, Default, Deserialize)]
pub struct ConnectParams {
    /// Nickname in open mode.
    pub name: Option<String>,
}

/// `GET /ws`: the JSON protocol.
pub async fn json(State(state): State<AppState>, Query(params): Query<ConnectParams>, request: Request) -> Response {
    upgrade(state, params, request, None)
}

/// `GET /ws/chat`: the plain-text protocol in room `chat`.
pub async fn plain_default(
    State(state): State<AppState>,
    Query(params): Query<ConnectParams>,
    request: Request,
) -> Response {
    match RoomName::new(plain::DEFAULT_ROOM) {
        Ok(room) => upgrade(state, params, request, Some(room)),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `GET /ws/chat/{room}`: the plain-text protocol in `room`.
pub async fn plain_room(
    State(state): State<AppState>,
    Path(room): Path<String>,
    Query(params): Query<ConnectParams>,
    request: Request,
) -> Response {
    match RoomName::new(&room) {
        Ok(room) => upgrade(state, params, request, Some(room)),
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    (status, message.into()).into_response()
}

/// Upgrades to a session of the JSON protocol, or of the plain-text one in `plain_room`.
fn upgrade(state: AppState, params: ConnectParams, mut request: Request, plain_room: Option<RoomName>) -> Response {
    if !state.origins.allows(request.headers()) {
        return refuse(
            StatusCode::FORBIDDEN,
            "this Origin may not open WebSockets here (see --public-url and --allowed-origins)",
        );
    }
    let accept = match handshake_key(request.method(), request.headers()) {
        Ok(accept) => accept,
        Err(message) => return refuse(StatusCode::BAD_REQUEST, message),
    };
    let user = match identity(params) {
        Ok(user) => user,
        Err(message) => return refuse(StatusCode::BAD_REQUEST, message),
    };
    let Ok(permit) = Arc::clone(&state.connections).try_acquire_owned() else {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "too many connections; retry later");
    };
    let on_upgrade = hyper::upgrade::on(&mut request);
    let max_frame_bytes = state.sessions.limits.max_frame_bytes;
    let context = SessionContext {
        hub: Arc::clone(&state.hub),
        settings: Arc::clone(&state.sessions),
        shutdown: state.shutdown.clone(),
        user,
    };
    // This future lives as long as the connection: its size is memory per idle client.
    let task = async move {
        let _permit = permit;
        match on_upgrade.await {
            Ok(upgraded) => {
                let socket = ServerSocket::new(TokioIo::new(upgraded), max_frame_bytes);
                match plain_room {
                    None => session::run_json(socket, context).await,
                    Some(room) => session::run_plain(socket, context, room).await,
                }
            }
            Err(e) => tracing::debug!(error = %e, "upgrade failed"),
        }
    };
    state.tracker.spawn(task);
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    response
}

/// Checks the RFC 6455 handshake headers and computes `Sec-WebSocket-Accept`.
fn handshake_key(method: &Method, headers: &HeaderMap) -> Result<HeaderValue, &'static str> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|part| part.trim().eq_ignore_ascii_case(token)))
    };
    if method != Method::GET {
        return Err("a WebSocket upgrade must be a GET");
    }
    if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, "websocket") {
        return Err("this endpoint speaks WebSocket: send Connection: Upgrade and Upgrade: websocket");
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).map(HeaderValue::as_bytes) != Some(b"13") {
        return Err("unsupported Sec-WebSocket-Version: use 13");
    }
    let key = headers.get(header::SEC_WEBSOCKET_KEY).ok_or("missing Sec-WebSocket-Key")?;
    HeaderValue::from_str(&derive_accept_key(key.as_bytes())).map_err(|_| "invalid Sec-WebSocket-Key")
}

/// A display name as given (`?name=`, or a REST author's `name`), trimmed: 1 to
/// [`MAX_NAME_CHARS`] printable characters.
pub(super) fn display_name(name: &str) -> Result<String, String> {
    let name = name.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(format!("invalid name: use 1 to {MAX_NAME_CHARS} printable characters"));
    }
    Ok(name.to_owned())
}

/// The user of a connection in open mode: `?name=` (user id `g_NAME`), or a guest
/// with 64 random bits in its id (`g_` and 16 hex digits: collisions, which would let
/// two guests share idempotency keys, are out of reach) and a short display name.
fn identity(params: ConnectParams) -> Result<User, String> {
    match params.name.filter(|name| !name.trim().is_empty()) {
        Some(name) => {
            let name = display_name(&name)?;
            Ok(User { id: format!("g_{name}"), name })
        }
        None => {
            let random = rand::random::<u64>();
            Ok(User { id: format!("g_{random:016x}"), name: format!("guest-{:04x}", random >> 48) })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn unnamed_guests_get_ids_with_64_random_bits() {
        let ids: HashSet<String> =
            (0..100_000).map(|_| identity(ConnectParams::default()).map(|user| user.id).unwrap()).collect();
        assert_eq!(ids.len(), 100_000, "no two guests share an id");
        let guest = identity(ConnectParams::default()).unwrap();
        assert!(guest.id.starts_with("g_") && guest.id.len() == 18, "{}", guest.id);
        assert!(guest.name.starts_with("guest-") && guest.name.len() == 10, "{}", guest.name);
    }

    #[test]
    fn a_named_user_keeps_its_name_as_id() {
        let named = identity(ConnectParams { name: Some(" alice ".to_owned()) }).unwrap();
        assert_eq!((named.id.as_str(), named.name.as_str()), ("g_alice", "alice"));
        assert!(identity(ConnectParams { name: Some("a\u{7}b".to_owned()) }).is_err());
    }
}
