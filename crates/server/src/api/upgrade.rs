//! The WebSocket upgrade: origin and handshake checks, identity (a token, or a guest's
//! `?name=`: [`super::auth`]), the connection limits (in all and per address), the
//! rules of a plain-text client's room, and handing the upgraded socket to a tracked
//! session task.
//!
//! The handshake is done here rather than through axum's extractor so the session gets
//! our own framing (`bavard_ws::ServerSocket`: no read buffer per idle connection).

use std::sync::Arc;

use axum::{
    body::Body,
    extract::{ConnectInfo, Path, Query, Request, State},
    http::{header, HeaderMap, HeaderValue, Method, StatusCode},
    response::{IntoResponse, Response},
};
use bavard_protocol::{plain, RoomName};
use bavard_ws::{derive_accept_key, ServerSocket};
use hyper_util::rt::TokioIo;
use serde::Deserialize;

use super::{access::Peer, AppState};
use crate::{
    hub::HubError,
    metrics::Limit,
    session::{self, SessionContext},
};

/// Query parameters of a WebSocket upgrade.
#[derive(Debug, Default, Deserialize)]
pub struct ConnectParams {
    /// Nickname in open mode.
    pub name: Option<String>,
    /// A JWT, for clients that cannot set `Authorization` (browsers).
    pub token: Option<String>,
}

/// `GET /ws`: the JSON protocol.
pub async fn json(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Query(params): Query<ConnectParams>,
    request: Request,
) -> Response {
    upgrade(state, peer, params, request, None).await
}

/// `GET /ws/chat`: the plain-text protocol in room `chat`.
pub async fn plain_default(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Query(params): Query<ConnectParams>,
    request: Request,
) -> Response {
    match RoomName::new(plain::DEFAULT_ROOM) {
        Ok(room) => upgrade(state, peer, params, request, Some(room)).await,
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `GET /ws/chat/{room}`: the plain-text protocol in `room`.
pub async fn plain_room(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path(room): Path<String>,
    Query(params): Query<ConnectParams>,
    request: Request,
) -> Response {
    match RoomName::new(&room) {
        Ok(room) => upgrade(state, peer, params, request, Some(room)).await,
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    (status, message.into()).into_response()
}

/// Upgrades to a session of the JSON protocol, or of the plain-text one in `plain_room`.
async fn upgrade(
    state: AppState,
    Peer(peer): Peer,
    params: ConnectParams,
    mut request: Request,
    plain_room: Option<RoomName>,
) -> Response {
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
    let identity = match state.auth.connection(request.headers(), params.token.as_deref(), params.name.as_deref()) {
        Ok(identity) => identity,
        Err((status, message)) => return refuse(status, message),
    };
    if let Some(room) = &plain_room {
        // A plain-text client cannot be told why later: a room it may not join is
        // refused here, as an HTTP status.
        match state.hub.check_join(identity.who(), room).await {
            Ok(()) => {}
            Err(HubError::Forbidden(reason)) => return refuse(StatusCode::FORBIDDEN, reason),
            Err(e) => return refuse(StatusCode::SERVICE_UNAVAILABLE, format!("{e}; retry later")),
        }
    }
    let Some(ip_slot) = state.ip_connections.open(peer.ip()) else {
        state.metrics.limit_refused(Limit::ConnectionsPerIp);
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many connections from {}: close one first (--max-connections-per-ip)", peer.ip()),
        );
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
        identity,
    };
    // This future lives as long as the connection: its size is memory per idle client.
    let task = async move {
        let _permits = (permit, ip_slot);
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
    switching_protocols(accept)
}

/// `GET /conformance/echo` (only with `--conformance-echo`): the echo the Autobahn
/// suite drives, with the upgrade checks and connection limits of `/ws` (origin,
/// handshake, per address, in all) but no identity, and the same socket and frame limit.
pub async fn conformance_echo(
    State(state): State<AppState>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    mut request: Request,
) -> Response {
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
    let Some(ip_slot) = state.ip_connections.open(peer.ip()) else {
        state.metrics.limit_refused(Limit::ConnectionsPerIp);
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many connections from {}: close one first (--max-connections-per-ip)", peer.ip()),
        );
    };
    let Ok(permit) = Arc::clone(&state.connections).try_acquire_owned() else {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "too many connections; retry later");
    };
    let on_upgrade = hyper::upgrade::on(&mut request);
    let (max_frame_bytes, idle_timeout) = (state.sessions.limits.max_frame_bytes, state.sessions.idle_timeout);
    let shutdown = state.shutdown.clone();
    state.tracker.spawn(async move {
        let _permits = (permit, ip_slot);
        match on_upgrade.await {
            Ok(upgraded) => {
                let socket = ServerSocket::new(TokioIo::new(upgraded), max_frame_bytes);
                session::run_echo(socket, idle_timeout, shutdown).await;
            }
            Err(e) => tracing::debug!(error = %e, "upgrade failed"),
        }
    });
    switching_protocols(accept)
}

/// The 101 answer to a WebSocket handshake whose key gave `accept`.
fn switching_protocols(accept: HeaderValue) -> Response {
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
