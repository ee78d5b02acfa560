//! The server's Prometheus metrics: one [`Metrics`] per server (each owns its registry,
//! so several servers in one process count apart), created in `app.rs` and handed to
//! the hub, the store, the sessions (through `SessionSettings`) and the api, which
//! serves them on `GET /metrics` and counts HTTP requests with [`track_http`].
//!
//! Hot-path rule: every handle a message or a delivery touches is resolved here, once
//! (a labelled value is looked up in its family at construction and kept), so counting
//! is an atomic add: no map lookup, no label formatting, no allocation. Deliveries are
//! added per room per commit batch, not per frame.

use std::{sync::Arc, time::Duration};

use axum::{
    extract::{MatchedPath, Request, State},
    http::{header, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use bavard_protocol::Timestamp;
use prometheus_client::{
    encoding::{prometheus_text, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

use crate::hub::Protocol;

/// The door a message came in by, for `bavard_messages_accepted_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// A `send` of the JSON protocol (`/ws`).
    Ws,
    /// A line of the plain-text protocol (`/ws/chat`).
    Plain,
    /// The REST publish route (which counts with [`Metrics::message_accepted`]).
    Rest,
}

impl Route {
    const ALL: [Self; 3] = [Self::Ws, Self::Plain, Self::Rest];

    fn label(self) -> &'static str {
        match self {
            Self::Ws => "ws",
            Self::Plain => "plain",
            Self::Rest => "rest",
        }
    }
}

/// An abuse limit, for `bavard_limit_refusals_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Messages per user across its connections.
    UserRate,
    /// WebSockets per client address.
    ConnectionsPerIp,
    /// Rooms joined by one connection.
    RoomsPerConnection,
    /// A room's slow mode.
    SlowMode,
    /// Connections closed without a complete request head in time (`net.rs`).
    RequestHead,
    /// Connections closed as the oldest of too many waiting for a first request head.
    UnfinishedRequests,
    /// Requests answered 408 for a body not complete in time (`net.rs`).
    RequestBody,
}

impl Limit {
    const ALL: [Self; 7] = [
        Self::UserRate,
        Self::ConnectionsPerIp,
        Self::RoomsPerConnection,
        Self::SlowMode,
        Self::RequestHead,
        Self::UnfinishedRequests,
        Self::RequestBody,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::UserRate => "user_rate",
            Self::ConnectionsPerIp => "connections_per_ip",
            Self::RoomsPerConnection => "rooms_per_connection",
            Self::SlowMode => "slow_mode",
            Self::RequestHead => "request_head",
            Self::UnfinishedRequests => "unfinished_requests",
            Self::RequestBody => "request_body",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LimitLabel {
    limit: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ActionLabel {
    action: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ProtocolLabel {
    protocol: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabel {
    route: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HttpLabels {
    /// The route pattern (`/ws/chat/{room}`), never the raw path.
    route: String,
    status: u16,
}

/// What `route` says of a request that matched no route (bounded cardinality: raw
/// paths are never labels).
const UNMATCHED_ROUTE: &str = "unmatched";

/// Every metric of one server; see the module docs.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    connections_json: Gauge,
    connections_plain: Gauge,
    rooms: Gauge,
    accepted_ws: Counter,
    accepted_plain: Counter,
    accepted_rest: Counter,
    deliveries: Counter,
    slow_consumer_closes: Counter,
    rate_limited_frames: Counter,
    commit_seconds: Histogram,
    commit_batch: Histogram,
    delivery_latency: Histogram,
    http_requests: Family<HttpLabels, Counter>,
    limit_refusals: [Counter; Limit::ALL.len()],
    auth_failures: Family<ReasonLabel, Counter>,
    moderation_actions: Family<ActionLabel, Counter>,
    message_changes: Family<ActionLabel, Counter>,
    searches: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh set of metrics, all zero, in a registry of its own.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("bavard");

        let connections = Family::<ProtocolLabel, Gauge>::default();
        let connections_json = connections.get_or_create_owned(&ProtocolLabel { protocol: "json" });
        let connections_plain = connections.get_or_create_owned(&ProtocolLabel { protocol: "plain" });
        registry.register("connections", "WebSocket connections open now, by protocol", connections);

        let rooms = Gauge::default();
        registry.register("rooms", "Rooms with at least one member on this node (or a join under way)", rooms.clone());

        let accepted = Family::<RouteLabel, Counter>::default();
        let [accepted_ws, accepted_plain, accepted_rest] =
            Route::ALL.map(|route| accepted.get_or_create_owned(&RouteLabel { route: route.label() }));
        registry.register(
            "messages_accepted",
            "Messages handed to the store for commit, by the route they came in by (ws: JSON send, \
             plain: plain-text line, rest: REST publish)",
            accepted,
        );

        let deliveries = Counter::default();
        registry.register(
            "deliveries",
            "Message frames pushed onto members' outboxes (one per message per member; counted per room \
             per commit batch)",
            deliveries.clone(),
        );

        let slow_consumer_closes = Counter::default();
        registry.register(
            "slow_consumer_closes",
            "Connections closed with 4008 because their outbox overflowed or a write stalled",
            slow_consumer_closes.clone(),
        );

        let rate_limited_frames = Counter::default();
        registry.register(
            "rate_limited_frames",
            "JSON frames refused by the per-connection rate limit (a rate_limited error, or the close \
             with 4029); plain-text clients are slowed down instead and not counted",
            rate_limited_frames.clone(),
        );

        let commit_seconds = Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0]);
        registry.register_with_unit(
            "store_commit",
            "Time the SQLite writer took for one group commit (deciding seqs, the transaction and its fsync)",
            Unit::Seconds,
            commit_seconds.clone(),
        );

        let commit_batch = Histogram::new((0..=12).map(|power| f64::from(1u32 << power)));
        registry.register(
            "store_commit_batch_messages",
            "Appends in one group commit of the SQLite writer",
            commit_batch.clone(),
        );

        let delivery_latency = Histogram::new([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]);
        registry.register_with_unit(
            "delivery_latency",
            "Time from a message's commit timestamp (Message.ts, set by the store as the group commit \
             starts, millisecond resolution) to its push onto the outboxes of its room's members on this \
             node, one observation per message per room with members; messages from other nodes included",
            Unit::Seconds,
            delivery_latency.clone(),
        );

        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route pattern (unmatched: no route) and status; WebSocket upgrades \
             count as 101",
            http_requests.clone(),
        );

        let limits = Family::<LimitLabel, Counter>::default();
        let limit_refusals = Limit::ALL.map(|limit| limits.get_or_create_owned(&LimitLabel { limit: limit.label() }));
        registry.register(
            "limit_refusals",
            "Requests refused by an abuse limit: user_rate (messages per user across its connections), \
             connections_per_ip (upgrades answered 429), rooms_per_connection (joins refused), slow_mode \
             (sends refused by a room's slow mode), request_head (connections closed without a complete \
             request head within --request-head-timeout-secs), unfinished_requests (connections closed as \
             the oldest past --max-unfinished-requests), request_body (requests answered 408 for a body \
             not complete within --request-body-timeout-secs)",
            limits,
        );

        let auth_failures = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "auth_failures",
            "Tokens refused (at upgrade, on REST, or in a refresh), by reason",
            auth_failures.clone(),
        );

        let moderation_actions = Family::<ActionLabel, Counter>::default();
        registry.register(
            "moderation_actions",
            "Changes to rooms' rules applied (create, configure, add_member, remove_member, set_role, kick, \
             ban, unban, mute, unmute)",
            moderation_actions.clone(),
        );

        let message_changes = Family::<ActionLabel, Counter>::default();
        registry.register(
            "message_changes",
            "Changes to stored messages (edit, delete, append, finish, react, unreact)",
            message_changes.clone(),
        );
        let searches = Counter::default();
        registry.register("searches", "Searches of rooms' messages served", searches.clone());

        Self {
            registry,
            limit_refusals,
            auth_failures,
            moderation_actions,
            message_changes,
            searches,
            connections_json,
            connections_plain,
            rooms,
            accepted_ws,
            accepted_plain,
            accepted_rest,
            deliveries,
            slow_consumer_closes,
            rate_limited_frames,
            commit_seconds,
            commit_batch,
            delivery_latency,
            http_requests,
        }
    }

    /// Counts a request refused by an abuse limit.
    pub fn limit_refused(&self, limit: Limit) {
        let index = Limit::ALL.iter().position(|l| *l == limit).unwrap_or_default();
        self.limit_refusals[index].inc();
    }

    /// Counts a token refused for `reason` (a short label).
    pub fn auth_failed(&self, reason: &'static str) {
        self.auth_failures.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Counts a change to a room's rules.
    pub fn moderation_action(&self, action: &str) {
        self.moderation_actions.get_or_create(&ActionLabel { action: action.to_owned() }).inc();
    }

    /// Counts a change to a stored message.
    pub fn message_changed(&self, action: &str) {
        self.message_changes.get_or_create(&ActionLabel { action: action.to_owned() }).inc();
    }

    /// Counts a search.
    pub fn searched(&self) {
        self.searches.inc();
    }

    /// The open-connections gauge of `protocol`.
    pub fn connections(&self, protocol: Protocol) -> &Gauge {
        match protocol {
            Protocol::Json => &self.connections_json,
            Protocol::Plain => &self.connections_plain,
        }
    }

    /// Sets the number of rooms with members on this node.
    pub fn set_rooms(&self, rooms: usize) {
        self.rooms.set(i64::try_from(rooms).unwrap_or(i64::MAX));
    }

    /// Counts a message the store accepted for commit, coming in by `route`.
    pub fn message_accepted(&self, route: Route) {
        match route {
            Route::Ws => &self.accepted_ws,
            Route::Plain => &self.accepted_plain,
            Route::Rest => &self.accepted_rest,
        }
        .inc();
    }

    /// Counts `frames` message frames pushed to members' outboxes (one room, one batch).
    pub fn delivered(&self, frames: u64) {
        if frames > 0 {
            self.deliveries.inc_by(frames);
        }
    }

    /// Records the latency of a message committed at `committed`, pushed at `now`.
    pub fn delivery_latency(&self, committed: Timestamp, now: Timestamp) {
        // Another node's clock may be ahead of ours: a negative latency reads as zero.
        let millis = now.millis().saturating_sub(committed.millis()).max(0);
        self.delivery_latency.observe(millis as f64 / 1000.0);
    }

    /// Counts a connection closed with 4008.
    pub fn slow_consumer_closed(&self) {
        self.slow_consumer_closes.inc();
    }

    /// Counts a frame refused by the rate limit.
    pub fn rate_limited(&self) {
        self.rate_limited_frames.inc();
    }

    /// Records one successful group commit of `messages` appends that took `took`.
    pub fn committed(&self, messages: usize, took: Duration) {
        self.commit_seconds.observe(took.as_secs_f64());
        self.commit_batch.observe(messages as f64);
    }

    /// Counts an answered HTTP request.
    fn http_request(&self, route: Option<&MatchedPath>, status: StatusCode) {
        let route = route.map_or(UNMATCHED_ROUTE, MatchedPath::as_str).to_owned();
        self.http_requests.get_or_create(&HttpLabels { route, status: status.as_u16() }).inc();
    }

    /// Every metric in the Prometheus text format (version 0.0.4).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::with_capacity(8 * 1024);
        prometheus_text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// `GET /metrics`: every metric in the Prometheus text format.
pub async fn serve(State(metrics): State<Arc<Metrics>>) -> Response {
    match metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode the metrics");
            (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode the metrics: {e}")).into_response()
        }
    }
}

/// Middleware counting every request by its matched route and the status answered.
pub async fn track_http(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    metrics.http_request(route.as_ref(), response.status());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_listed_with_its_labels_resolved_up_front() {
        let metrics = Metrics::new();
        metrics.message_accepted(Route::Plain);
        metrics.delivered(1010);
        metrics.committed(3, Duration::from_millis(2));
        metrics.delivery_latency(Timestamp(1_000), Timestamp(1_004));
        metrics.delivery_latency(Timestamp(2_000), Timestamp(1_000));
        // A labelled family with no value yet is left out; requests appear as answered.
        metrics.http_request(None, StatusCode::NOT_FOUND);
        let text = metrics.encode().unwrap();
        for line in [
            "# TYPE bavard_connections gauge",
            "bavard_connections{protocol=\"json\"} 0",
            "bavard_connections{protocol=\"plain\"} 0",
            "bavard_rooms 0",
            "bavard_messages_accepted_total{route=\"ws\"} 0",
            "bavard_messages_accepted_total{route=\"plain\"} 1",
            "bavard_messages_accepted_total{route=\"rest\"} 0",
            "bavard_deliveries_total 1010",
            "bavard_slow_consumer_closes_total 0",
            "bavard_rate_limited_frames_total 0",
            "bavard_store_commit_seconds_count 1",
            "bavard_store_commit_batch_messages_sum 3.0",
            "bavard_delivery_latency_seconds_count 2",
            "bavard_delivery_latency_seconds_bucket{le=\"0.005\"} 2",
            "# TYPE bavard_http_requests_total counter",
            "bavard_http_requests_total{route=\"unmatched\",status=\"404\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }
}
