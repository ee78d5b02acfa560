//! The REST side of the chat features: edit, delete, react to a message, stream text
//! into it (`append`, `finish`), move one's read position, search a room, and open a
//! direct room. Each goes through the hub exactly as its WebSocket op does (same
//! checks, same events to the room's members). With the API key, the acting user is
//! the author it names (`api:NAME`, as a message published with `from`), so a bot can
//! edit and stream the messages it published.

use axum::{
    extract::{ConnectInfo, State},
    http::HeaderMap,
    Json,
};
use bavard_protocol::{
    check_emoji, check_query, check_search_page, check_text, check_user_id, ChangeReply, DmReply, ErrorCode, ReadReply,
    RoomName, SearchReply, User, DEFAULT_SEARCH_LIMIT, STREAM_TEXT_FACTOR,
};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::{
    access::{self, Peer},
    auth::{display_name, Caller},
    error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorReply},
    rooms::{exists, may_read, NOBODY},
    AppState,
};
use crate::{
    auth::Actor,
    hub::{Change, HubError},
};

/// Who acts through the API key when the body names nobody.
const DEFAULT_AUTHOR: &str = "api";

/// The body of `PATCH /api/rooms/{room}/messages/{seq}` and of `.../append`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct TextBody {
    /// The new text (edit), or the text to add (append).
    #[schema(min_length = 1)]
    text: String,
    /// With the API key: the author acting (`api:` + name; default `api`), as given to
    /// `POST /api/rooms/{room}/messages`.
    #[serde(default)]
    from: Option<super::rooms::Author>,
}

/// The body of the calls that act on a message without text (`finish`), or of
/// `DELETE` and reactions, all optional.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct ActingBody {
    /// With the API key: the author acting (`api:` + name; default `api`).
    #[serde(default)]
    from: Option<super::rooms::Author>,
}

/// The body of `POST /api/rooms/{room}/read`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ReadBody {
    /// The last seq read (a position never moves back; past the end counts as the end).
    #[serde(deserialize_with = "super::rooms::integral_no_null")]
    #[schema(value_type = i64, minimum = 0)]
    seq: Option<u64>,
}

/// The body of `POST /api/dm`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct DmBody {
    /// The other user's id (1 to 128 printable characters).
    #[schema(pattern = r"^[^\x00-\x1F\x7F-\x9F]{1,128}$")]
    user: String,
}

/// Query parameters of `GET /api/rooms/{room}/search`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// The words to look for (1 to 200 characters): a message matches when it has them
    /// all, the last as a prefix; a query without a letter or digit finds nothing.
    #[param(min_length = 1, max_length = 200)]
    q: String,
    /// Page size, 1 to 50 (default 20).
    #[param(minimum = 1, maximum = 50)]
    limit: Option<u32>,
    /// Results to skip (offset + limit at most 1000).
    #[param(maximum = 999)]
    offset: Option<u32>,
}

/// The actor of a change: a user's token acts as that user; the API key as the
/// author `from` names.
fn acting(caller: &Caller, from: Option<super::rooms::Author>) -> Result<Actor, ApiError> {
    let actor = caller.actor()?;
    if *actor != Actor::api() {
        return Ok(actor.clone());
    }
    let name = match from {
        Some(author) => display_name(&author.name).map_err(|e| ApiError::new(ErrorCode::BadRequest, e))?,
        None => DEFAULT_AUTHOR.to_owned(),
    };
    Ok(Actor { user: User { id: format!("api:{name}"), name }, standing: actor.standing })
}

async fn change(
    state: &AppState,
    peer: Peer,
    headers: &HeaderMap,
    (room, seq): (RoomName, u64),
    from: Option<super::rooms::Author>,
    what: Change,
) -> Result<Json<ChangeReply>, ApiError> {
    let caller = access::check_write(state, headers, peer)?;
    let actor = acting(&caller, from)?;
    if seq == 0 || seq > i64::MAX as u64 {
        return Err(ApiError::new(ErrorCode::BadRequest, "seq must be 1 to 2^63-1"));
    }
    exists(state, &room).await?;
    Ok(Json(state.hub.change_message(&actor, &room, seq, what).await?))
}

const SEQ_PATH: &str = "the message's seq";

/// Edits one's message: members receive `edited`; it keeps its seq.
#[utoipa::path(patch, path = "/api/rooms/{room}/messages/{seq}", tag = "messages", request_body = TextBody,
    security(("api_key" = [])),
    params(("room" = RoomName, Path, description = "the room's name"), ("seq" = u64, Path, minimum = 1, description = SEQ_PATH)),
    responses((status = 200, body = ChangeReply), (status = 400, body = ErrorReply), (status = 401, body = ErrorReply),
        (status = 403, description = "not the author", body = ErrorReply), (status = 404, body = ErrorReply),
        (status = 409, description = "deleted, or still streamed", body = ErrorReply), (status = 413, body = ErrorReply),
        (status = 415, body = ErrorReply), (status = 429, body = ErrorReply)))]
pub async fn edit(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    ApiPath(at): ApiPath<(RoomName, u64)>,
    ApiJson(body): ApiJson<TextBody>,
) -> Result<Json<ChangeReply>, ApiError> {
    check_text(&body.text, state.sessions.limits.max_text_chars)?;
    change(&state, peer, &headers, at, body.from, Change::Edit(body.text)).await
}

/// Deletes a message (one's own, or any as a moderator): members receive `deleted`;
/// history keeps a tombstone.
#[utoipa::path(delete, path = "/api/rooms/{room}/messages/{seq}", tag = "messages", security(("api_key" = [])),
    params(("room" = RoomName, Path, description = "the room's name"), ("seq" = u64, Path, minimum = 1, description = SEQ_PATH)),
    responses((status = 200, body = ChangeReply), (status = 400, body = ErrorReply), (status = 401, body = ErrorReply),
        (status = 403, body = ErrorReply), (status = 404, body = ErrorReply), (status = 429, body = ErrorReply)))]
pub async fn delete(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    ApiPath(at): ApiPath<(RoomName, u64)>,
) -> Result<Json<ChangeReply>, ApiError> {
    change(&state, peer, &headers, at, None, Change::Delete).await
}

/// Adds text to one's streamed message (published with `stream: true`): members
/// receive `append`.
#[utoipa::path(post, path = "/api/rooms/{room}/messages/{seq}/append", tag = "messages", request_body = TextBody,
    security(("api_key" = [])),
    params(("room" = RoomName, Path, description = "the room's name"), ("seq" = u64, Path, minimum = 1, description = SEQ_PATH)),
    responses((status = 200, body = ChangeReply), (status = 400, body = ErrorReply), (status = 401, body = ErrorReply),
        (status = 403, body = ErrorReply), (status = 404, body = ErrorReply),
        (status = 409, description = "not streamed, or finished", body = ErrorReply), (status = 413, body = ErrorReply),
        (status = 415, body = ErrorReply), (status = 429, body = ErrorReply)))]
pub async fn append(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    ApiPath(at): ApiPath<(RoomName, u64)>,
    ApiJson(body): ApiJson<TextBody>,
) -> Result<Json<ChangeReply>, ApiError> {
    check_text(&body.text, state.sessions.limits.max_text_chars * STREAM_TEXT_FACTOR)?;
    change(&state, peer, &headers, at, body.from, Change::Append(body.text)).await
}

/// Ends one's streamed message: members receive `finished`.
#[utoipa::path(post, path = "/api/rooms/{room}/messages/{seq}/finish", tag = "messages", request_body = ActingBody,
    security(("api_key" = [])),
    params(("room" = RoomName, Path, description = "the room's name"), ("seq" = u64, Path, minimum = 1, description = SEQ_PATH)),
    responses((status = 200, body = ChangeReply), (status = 400, body = ErrorReply), (status = 401, body = ErrorReply),
        (status = 403, body = ErrorReply), (status = 404, body = ErrorReply), (status = 409, body = ErrorReply),
        (status = 415, body = ErrorReply), (status = 429, body = ErrorReply)))]
pub async fn finish(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    ApiPath(at): ApiPath<(RoomName, u64)>,
    ApiJson(body): ApiJson<ActingBody>,
) -> Result<Json<ChangeReply>, ApiError> {
    change(&state, peer, &headers, at, body.from, Change::Finish).await
}

/// Reacts to a message with an emoji (1 to 16 characters): members receive `reaction`.
#[utoipa::path(put, path = "/api/rooms/{room}/messages/{seq}/reactions/{emoji}", tag = "messages",
    security(("api_key" = [])),
    params(("room" = RoomName, Path, description = "the room's name"), ("seq" = u64, Path, minimum = 1, description = SEQ_PATH),
        ("emoji" = String, Path, pattern = r"^[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]{1,16}$", description = "the reaction: 1 to 16 characters, no spaces or control characters")),
    responses((status = 200, body = ChangeReply), (status = 400, body = ErrorReply), (status = 401, body = ErrorReply),
        (status = 403, body = ErrorReply), (status = 404, body = ErrorReply),
        (status = 409, description = "the message was deleted", body = ErrorReply), (status = 429, body = ErrorReply)))]
pub async fn react(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    ApiPath((room, seq, emoji)): ApiPath<(RoomName, u64, String)>,
) -> Result<Json<ChangeReply>, ApiError> {
    check_emoji(&emoji)?;
    change(&state, peer, &headers, (room, seq), None, Change::React(emoji, true)).await
}

/// Takes one's reaction back: members receive `reaction` with `added: false`.
#[utoipa::path(delete, path = "/api/rooms/{room}/messages/{seq}/reactions/{emoji}", tag = "messages",
    security(("api_key" = [])),
    params(("room" = RoomName, Path, description = "the room's name"), ("seq" = u64, Path, minimum = 1, description = SEQ_PATH),
        ("emoji" = String, Path, pattern = r"^[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]{1,16}$", description = "the reaction: 1 to 16 characters, no spaces or control characters")),
    responses((status = 200, body = ChangeReply), (status = 400, body = ErrorReply), (status = 401, body = ErrorReply),
        (status = 403, body = ErrorReply), (status = 404, body = ErrorReply),
        (status = 409, description = "the message was deleted", body = ErrorReply), (status = 429, body = ErrorReply)))]
pub async fn unreact(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    ApiPath((room, seq, emoji)): ApiPath<(RoomName, u64, String)>,
) -> Result<Json<ChangeReply>, ApiError> {
    check_emoji(&emoji)?;
    change(&state, peer, &headers, (room, seq), None, Change::React(emoji, false)).await
}

/// Moves the caller's read position in a room; answers its unread count.
#[utoipa::path(post, path = "/api/rooms/{room}/read", tag = "messages", request_body = ReadBody,
    security(("api_key" = [])), params(("room" = RoomName, Path, description = "the room's name")),
    responses((status = 200, body = ReadReply), (status = 400, body = ErrorReply), (status = 401, body = ErrorReply),
        (status = 403, body = ErrorReply), (status = 404, body = ErrorReply), (status = 415, body = ErrorReply),
        (status = 429, body = ErrorReply)))]
pub async fn read(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    ApiPath(room): ApiPath<RoomName>,
    ApiJson(body): ApiJson<ReadBody>,
) -> Result<Json<ReadReply>, ApiError> {
    let caller = access::check_write(&state, &headers, peer)?;
    let seq = body.seq.ok_or_else(|| ApiError::new(ErrorCode::BadRequest, "seq is required"))?;
    if seq > i64::MAX as u64 {
        return Err(ApiError::new(ErrorCode::BadRequest, "seq must be at most 2^63-1"));
    }
    let actor = caller.actor()?;
    Ok(Json(state.hub.mark_read(actor.who(), &actor.user, &room, seq).await?))
}

/// Searches a room's messages, best first: the `search` op over HTTP.
#[utoipa::path(get, path = "/api/rooms/{room}/search", tag = "messages",
    params(("room" = RoomName, Path, description = "the room's name"), SearchQuery),
    responses((status = 200, body = SearchReply), (status = 400, body = ErrorReply), (status = 401, body = ErrorReply),
        (status = 403, body = ErrorReply), (status = 404, body = ErrorReply)))]
pub async fn search(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    ApiPath(room): ApiPath<RoomName>,
    ApiQuery(query): ApiQuery<SearchQuery>,
) -> Result<Json<SearchReply>, ApiError> {
    check_query(&query.q)?;
    check_search_page(query.limit, query.offset)?;
    exists(&state, &room).await?;
    let caller = state.auth.rest(&headers, peer.0)?;
    may_read(&state, &caller, &room).await?;
    let who = caller.as_actor().map_or(NOBODY, |actor| actor.who());
    let limit = query.limit.unwrap_or(DEFAULT_SEARCH_LIMIT);
    Ok(Json(state.hub.search(who, &room, &query.q, limit, query.offset.unwrap_or(0)).await?))
}

/// Opens (or finds) the direct room of the caller (a user's token) and another user.
#[utoipa::path(post, path = "/api/dm", tag = "rooms", request_body = DmBody, security(("api_key" = [])),
    responses((status = 200, body = DmReply), (status = 400, body = ErrorReply), (status = 401, body = ErrorReply),
        (status = 403, body = ErrorReply), (status = 415, body = ErrorReply), (status = 429, body = ErrorReply)))]
pub async fn dm(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<DmBody>,
) -> Result<Json<DmReply>, ApiError> {
    let caller = access::check_write(&state, &headers, peer)?;
    check_user_id(&body.user)?;
    let actor = caller.actor()?;
    if *actor == Actor::api() {
        let message = "direct rooms are a user's: call with the user's token, not the API key";
        return Err(HubError::Forbidden(message.into()).into());
    }
    Ok(Json(DmReply { room: state.hub.direct_room(actor, &body.user).await? }))
}
