//! HTTP surface: the WebSocket endpoints, the REST API (`/api/rooms...`, documented at
//! `/docs` and `/openapi.json`), health and readiness, the machine-readable protocol
//! description, the Prometheus metrics, and the embedded web client. Handlers stay thin: they parse,
//! call the hub, and map errors to status codes. The `/api` routes get the CORS layer
//! of `--cors-origins`, when there is one.
//! Every request is counted by route and status (the `metrics` layer around the whole
//! router), and has `--request-body-timeout-secs` to send its body ([`body_timeout`]).

mod access;
pub mod auth;
mod body_timeout;
pub mod cors;
mod error;
mod messaging;
mod moderation;
mod openapi;
mod origin;
mod rooms;
mod upgrade;

use std::{sync::Arc, time::Duration};

use axum::{
    http::{header, StatusCode},
    middleware,
    response::IntoResponse,
    routing::{delete, get, patch, post, put},
    Router,
};
use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use access::{IpConnections, Peer, WriteRate};
pub use origin::OriginPolicy;

use crate::{hub::Hub, metrics, metrics::Metrics, session::SessionSettings, web};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// Rooms and fan-out.
    pub hub: Arc<Hub>,
    /// Per-session limits.
    pub sessions: Arc<SessionSettings>,
    /// Allowed browser origins.
    pub origins: Arc<OriginPolicy>,
    /// One permit per open WebSocket.
    pub connections: Arc<Semaphore>,
    /// Fires at shutdown.
    pub shutdown: CancellationToken,
    /// Where session tasks are spawned, so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Who callers are: tokens, the API key, guests.
    pub auth: Arc<auth::Authenticator>,
    /// Open WebSockets per client address.
    pub ip_connections: Arc<IpConnections>,
    /// How fast each client address may write through REST.
    pub write_rate: Arc<access::WriteRate>,
    /// Time a request has, from its complete head, to send its whole body
    /// (`--request-body-timeout-secs`, [`body_timeout`]).
    pub body_timeout: Duration,
    /// This server's metrics (`GET /metrics`; the REST routes count what they accept).
    pub metrics: Arc<Metrics>,
}

/// The whole HTTP router; `cors` (see [`cors::layer`]) wraps the `/api` routes only.
/// `conformance_echo` adds `GET /conformance/echo` (`--conformance-echo`).
pub fn router(state: AppState, cors: Option<cors::ApiCors>, conformance_echo: bool) -> Router {
    // Every `/api` route goes here, so that CORS covers it.
    let mut api = Router::new()
        .route("/api/rooms", get(rooms::list).post(rooms::create))
        .route("/api/rooms/{room}", get(rooms::show).patch(rooms::update))
        .route("/api/rooms/{room}/messages", get(rooms::messages).post(rooms::publish))
        .route("/api/rooms/{room}/messages/{seq}", patch(messaging::edit).delete(messaging::delete))
        .route("/api/rooms/{room}/messages/{seq}/append", post(messaging::append))
        .route("/api/rooms/{room}/messages/{seq}/finish", post(messaging::finish))
        .route("/api/rooms/{room}/messages/{seq}/reactions/{emoji}", put(messaging::react).delete(messaging::unreact))
        .route("/api/rooms/{room}/read", post(messaging::read))
        .route("/api/rooms/{room}/search", get(messaging::search))
        .route("/api/dm", post(messaging::dm))
        .route("/api/rooms/{room}/members", get(rooms::members))
        .route("/api/rooms/{room}/members/{user}", put(moderation::put_member).delete(moderation::delete_member))
        .route("/api/rooms/{room}/bans", post(moderation::ban))
        .route("/api/rooms/{room}/bans/{user}", delete(moderation::unban))
        .route("/api/rooms/{room}/mutes", post(moderation::mute))
        .route("/api/rooms/{room}/mutes/{user}", delete(moderation::unmute))
        .route("/api/rooms/{room}/kicks", post(moderation::kick))
        .route("/api/rooms/{room}/audit", get(moderation::audit))
        .layer(axum::extract::DefaultBodyLimit::max(error::BODY_LIMIT));
    if let Some(cors) = cors {
        api = cors.apply(api);
    }
    let mut router = Router::new();
    if conformance_echo {
        router = router.route("/conformance/echo", get(upgrade::conformance_echo));
    }
    router
        .route("/ws", get(upgrade::json))
        .route("/ws/chat", get(upgrade::plain_default))
        .route("/ws/chat/{room}", get(upgrade::plain_room))
        .merge(api)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/asyncapi.json", get(asyncapi))
        .route("/metrics", get(metrics::serve).with_state(Arc::clone(&state.metrics)))
        .merge(web::router())
        .merge(openapi::router(state.sessions.limits.max_text_chars))
        // Inside the request counter, so that it counts the 408 of a late body.
        .layer(middleware::from_fn_with_state(
            body_timeout::BodyTimeout { limit: state.body_timeout, metrics: Arc::clone(&state.metrics) },
            body_timeout::bound,
        ))
        .layer(middleware::from_fn_with_state(Arc::clone(&state.metrics), metrics::track_http))
        .with_state(state)
}

/// Liveness: the process answers.
async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: the store answers.
async fn readyz(axum::extract::State(state): axum::extract::State<AppState>) -> impl IntoResponse {
    match state.hub.ready().await {
        Ok(()) => (StatusCode::OK, "ready".to_owned()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}")),
    }
}

/// The AsyncAPI 3.0 description of the JSON protocol.
async fn asyncapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], bavard_protocol::ASYNCAPI_JSON)
}
