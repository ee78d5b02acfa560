//! `/api/rooms/{room}/members/{user}`, `/bans`, `/mutes`, `/kicks` and `/audit`: the
//! REST side of room membership and moderation. Each call needs the API key (a server
//! admin) or a user's token (that user's rights in the room) and goes through the hub
//! exactly as the WebSocket ops do: the same rank checks, the same audit entries, the
//! same effect on live connections.

use axum::{
    extract::{ConnectInfo, State},
    http::{HeaderMap, StatusCode},
    Json,
};
use bavard_protocol::{check_sanction, check_user_id, ErrorCode, Role, RoomName, Timestamp, User};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    access::{self, Peer},
    error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorReply},
    AppState,
};
use crate::{hub::Sanctioning, store::AuditRecord};

/// The most audit entries one call returns.
const MAX_AUDIT: u32 = 200;

/// The body of `PUT /api/rooms/{room}/members/{user}`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct MemberRole {
    /// The user's role in the room (default `member`). Moderators may add members;
    /// owners give any role.
    #[serde(default = "member")]
    role: Role,
}

fn member() -> Role {
    Role::Member
}

/// A user's role in a room.
#[derive(Debug, Serialize, ToSchema)]
pub struct Membership {
    /// The room.
    room: RoomName,
    /// The user's id.
    user: String,
    /// The user's role.
    role: Role,
}

/// The body of `POST /api/rooms/{room}/bans`, `/mutes` and `/kicks`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SanctionBody {
    /// The user's id (1 to 128 printable characters).
    #[schema(min_length = 1, max_length = 128, pattern = r"^[^\x00-\x1F\x7F-\x9F]+$")]
    user: String,
    /// How long it lasts, 1 to 315,360,000 seconds (absent: until lifted; for a kick,
    /// the user may join again at once).
    #[serde(default, deserialize_with = "super::rooms::integral_no_null")]
    #[schema(nullable = false, minimum = 1, maximum = 315_360_000)]
    duration_secs: Option<u64>,
    /// Why (at most 256 characters), for the audit log and the user.
    #[serde(default, deserialize_with = "super::rooms::no_null")]
    #[schema(nullable = false, max_length = 256)]
    reason: Option<String>,
}

/// When a sanction ends.
#[derive(Debug, Serialize, ToSchema)]
pub struct SanctionReply {
    /// The room.
    room: RoomName,
    /// The user.
    user: String,
    /// When it ends (absent: until lifted, or a kick without a duration).
    #[serde(skip_serializing_if = "Option::is_none")]
    until: Option<Timestamp>,
}

/// Query parameters of `GET /api/rooms/{room}/audit`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only entries with an id below this one (the `id` of the last entry of the
    /// previous page).
    #[param(minimum = 1, maximum = 9_223_372_036_854_775_807_i64)]
    before: Option<u64>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
}

/// One entry of a room's audit log.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditView {
    /// Its place in the log (newer entries have larger ids).
    id: u64,
    /// When.
    ts: Timestamp,
    /// Who acted.
    actor: User,
    /// What they did: create, configure, add_member, remove_member, set_role, kick,
    /// ban, unban, mute, unmute.
    action: String,
    /// To whom.
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    /// Why, as given.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// What changed (a role, a duration, settings).
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

impl From<AuditRecord> for AuditView {
    fn from(record: AuditRecord) -> Self {
        let AuditRecord { id, entry } = record;
        Self {
            id,
            ts: entry.ts,
            actor: entry.actor,
            action: entry.action,
            target: entry.target,
            reason: entry.reason,
            detail: entry.detail,
        }
    }
}

/// A page of a room's audit log.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    /// Newest first.
    entries: Vec<AuditView>,
    /// Whether older entries exist (page with `before` = the last entry's id).
    has_more: bool,
}

fn target(user: &str) -> Result<(), ApiError> {
    Ok(check_user_id(user)?)
}

/// Gives a user a role in a room (adds a member to a private room).
#[utoipa::path(put, path = "/api/rooms/{room}/members/{user}", tag = "moderation", request_body = MemberRole,
    security(("api_key" = [])),
    params(("room" = RoomName, Path, description = "the room's name"), ("user" = String, Path, pattern = r"^[^\x00-\x1F\x7F-\x9F]{1,128}$", description = "the user's id (1 to 128 printable characters)")),
    responses((status = 200, body = Membership), (status = 400, body = ErrorReply), (status = 401, body = ErrorReply),
        (status = 403, body = ErrorReply), (status = 404, body = ErrorReply), (status = 415, body = ErrorReply),
        (status = 429, body = ErrorReply)))]
pub async fn put_member(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    ApiPath((room, user)): ApiPath<(RoomName, String)>,
    ApiJson(body): ApiJson<MemberRole>,
) -> Result<Json<Membership>, ApiError> {
    let caller = access::check_write(&state, &headers, peer)?;
    target(&user)?;
    state.hub.set_role(caller.actor()?, &room, &user, Some(body.role), "add_member").await?;
    Ok(Json(Membership { room, user, role: body.role }))
}

/// Takes a user's role in a room away; in a private room the user leaves it.
#[utoipa::path(delete, path = "/api/rooms/{room}/members/{user}", tag = "moderation", security(("api_key" = [])),
    params(("room" = RoomName, Path, description = "the room's name"), ("user" = String, Path, pattern = r"^[^\x00-\x1F\x7F-\x9F]{1,128}$", description = "the user's id (1 to 128 printable characters)")),
    responses((status = 204, description = "done"), (status = 400, body = ErrorReply), (status = 401, body = ErrorReply),
        (status = 403, body = ErrorReply), (status = 404, body = ErrorReply), (status = 429, body = ErrorReply)))]
pub async fn delete_member(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    ApiPath((room, user)): ApiPath<(RoomName, String)>,
) -> Result<StatusCode, ApiError> {
    let caller = access::check_write(&state, &headers, peer)?;
    target(&user)?;
    state.hub.set_role(caller.actor()?, &room, &user, None, "remove_member").await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn sanction(
    state: AppState,
    peer: Peer,
    headers: HeaderMap,
    room: RoomName,
    body: SanctionBody,
    what: Sanctioning,
) -> Result<(StatusCode, Json<SanctionReply>), ApiError> {
    let caller = access::check_write(&state, &headers, peer)?;
    let SanctionBody { user, duration_secs, reason } = body;
    target(&user)?;
    check_sanction(duration_secs, reason.as_deref())?;
    let until = state.hub.sanction(caller.actor()?, &room, &user, what, duration_secs, reason).await?;
    Ok((StatusCode::CREATED, Json(SanctionReply { room, user, until })))
}

async fn lift(
    state: AppState,
    peer: Peer,
    headers: HeaderMap,
    room: RoomName,
    user: String,
    what: Sanctioning,
) -> Result<StatusCode, ApiError> {
    let caller = access::check_write(&state, &headers, peer)?;
    target(&user)?;
    state.hub.lift(caller.actor()?, &room, &user, what, None).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Bans a user from a room: out at once, and no join, read or write until lifted.
#[utoipa::path(post, path = "/api/rooms/{room}/bans", tag = "moderation", request_body = SanctionBody,
    security(("api_key" = [])), params(("room" = RoomName, Path, description = "the room's name")),
    responses((status = 201, body = SanctionReply), (status = 400, body = ErrorReply), (status = 401, body = ErrorReply),
        (status = 403, body = ErrorReply), (status = 404, body = ErrorReply), (status = 415, body = ErrorReply),
        (status = 429, body = ErrorReply)))]
pub async fn ban(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    ApiPath(room): ApiPath<RoomName>,
    ApiJson(body): ApiJson<SanctionBody>,
) -> Result<(StatusCode, Json<SanctionReply>), ApiError> {
    sanction(state, peer, headers, room, body, Sanctioning::Ban).await
}

/// Lifts a ban.
#[utoipa::path(delete, path = "/api/rooms/{room}/bans/{user}", tag = "moderation", security(("api_key" = [])),
    params(("room" = RoomName, Path, description = "the room's name"), ("user" = String, Path, pattern = r"^[^\x00-\x1F\x7F-\x9F]{1,128}$", description = "the user's id (1 to 128 printable characters)")),
    responses((status = 204, description = "done"), (status = 400, body = ErrorReply), (status = 401, body = ErrorReply),
        (status = 403, body = ErrorReply), (status = 404, body = ErrorReply), (status = 429, body = ErrorReply)))]
pub async fn unban(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    ApiPath((room, user)): ApiPath<(RoomName, String)>,
) -> Result<StatusCode, ApiError> {
    lift(state, peer, headers, room, user, Sanctioning::Ban).await
}

/// Mutes a user in a room: no writing until lifted.
#[utoipa::path(post, path = "/api/rooms/{room}/mutes", tag = "moderation", request_body = SanctionBody,
    security(("api_key" = [])), params(("room" = RoomName, Path, description = "the room's name")),
    responses((status = 201, body = SanctionReply), (status = 400, body = ErrorReply), (status = 401, body = ErrorReply),
        (status = 403, body = ErrorReply), (status = 404, body = ErrorReply), (status = 415, body = ErrorReply),
        (status = 429, body = ErrorReply)))]
pub async fn mute(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    ApiPath(room): ApiPath<RoomName>,
    ApiJson(body): ApiJson<SanctionBody>,
) -> Result<(StatusCode, Json<SanctionReply>), ApiError> {
    sanction(state, peer, headers, room, body, Sanctioning::Mute).await
}

/// Lifts a mute.
#[utoipa::path(delete, path = "/api/rooms/{room}/mutes/{user}", tag = "moderation", security(("api_key" = [])),
    params(("room" = RoomName, Path, description = "the room's name"), ("user" = String, Path, pattern = r"^[^\x00-\x1F\x7F-\x9F]{1,128}$", description = "the user's id (1 to 128 printable characters)")),
    responses((status = 204, description = "done"), (status = 400, body = ErrorReply), (status = 401, body = ErrorReply),
        (status = 403, body = ErrorReply), (status = 404, body = ErrorReply), (status = 429, body = ErrorReply)))]
pub async fn unmute(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    ApiPath((room, user)): ApiPath<(RoomName, String)>,
) -> Result<StatusCode, ApiError> {
    lift(state, peer, headers, room, user, Sanctioning::Mute).await
}

/// Kicks a user out of a room on every connection (with a duration: kept out until it ends).
#[utoipa::path(post, path = "/api/rooms/{room}/kicks", tag = "moderation", request_body = SanctionBody,
    security(("api_key" = [])), params(("room" = RoomName, Path, description = "the room's name")),
    responses((status = 201, body = SanctionReply), (status = 400, body = ErrorReply), (status = 401, body = ErrorReply),
        (status = 403, body = ErrorReply), (status = 404, body = ErrorReply), (status = 415, body = ErrorReply),
        (status = 429, body = ErrorReply)))]
pub async fn kick(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    ApiPath(room): ApiPath<RoomName>,
    ApiJson(body): ApiJson<SanctionBody>,
) -> Result<(StatusCode, Json<SanctionReply>), ApiError> {
    sanction(state, peer, headers, room, body, Sanctioning::Kick).await
}

/// A room's audit log, newest first: its owners and moderators, and admins.
#[utoipa::path(get, path = "/api/rooms/{room}/audit", tag = "moderation", security(("api_key" = [])),
    params(("room" = RoomName, Path, description = "the room's name"), AuditQuery),
    responses((status = 200, body = AuditPage), (status = 400, body = ErrorReply), (status = 401, body = ErrorReply),
        (status = 403, body = ErrorReply), (status = 404, body = ErrorReply)))]
pub async fn audit(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    ApiPath(room): ApiPath<RoomName>,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let caller = state.auth.rest(&headers, peer.0)?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=MAX_AUDIT).contains(&limit) {
        return Err(ApiError::new(ErrorCode::BadRequest, format!("limit must be 1 to {MAX_AUDIT}")));
    }
    if query.before.is_some_and(|before| before == 0 || before > i64::MAX as u64) {
        return Err(ApiError::new(ErrorCode::BadRequest, "before must be 1 to 2^63 - 1"));
    }
    // One more than asked tells whether older entries exist.
    let mut records = state.hub.audit_log(caller.actor()?, &room, query.before, limit + 1).await?;
    let has_more = records.len() > limit as usize;
    records.truncate(limit as usize);
    Ok(Json(AuditPage { entries: records.into_iter().map(AuditView::from).collect(), has_more }))
}
