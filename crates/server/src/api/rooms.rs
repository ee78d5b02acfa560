//! `/api/rooms`: the REST side of rooms. Create, read and retitle rooms, page through
//! their history, publish into them as a backend, and see who is online. Each call
//! goes through the hub exactly as the WebSocket ops do: the same validation, the same
//! seqs, an answer only once a message is durable, and delivery to every member.

use axum::{
    extract::{ConnectInfo, State},
    http::{HeaderMap, StatusCode},
    Json,
};
use bavard_protocol::{
    check_slow_mode, check_topic, ErrorCode, HistoryReply, HistoryRequest, MembersReply, MembersRequest, Request,
    RoomKind, RoomName, SendReply, SendRequest, Timestamp, User, DEFAULT_HISTORY_LIMIT, DEFAULT_MEMBERS_LIMIT,
};
use serde::{de::Error as _, Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    access::{self, Peer},
    auth::{display_name, Caller},
    error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorReply},
    AppState,
};
use crate::{
    auth::{Actor, Who},
    hub::{HubError, Post, RoomChanges, RoomListing},
    metrics::Route,
    store::PageQuery,
};

/// The most rooms one call lists.
const MAX_ROOMS: u32 = 1_000;
/// Who a REST message is from when the body names nobody.
const DEFAULT_AUTHOR: &str = "api";
/// The largest seq a query or a `reply_to` may name: the document gives seqs as int64
/// (the store keeps them signed), so larger numbers are refused rather than taken.
const MAX_SEQ: u64 = i64::MAX as u64;

/// Query parameters of `GET /api/rooms`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RoomsQuery {
    /// How many rooms (1 to 1,000; default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// The body of `GET /api/rooms`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoomDirectory {
    /// Most recently active first.
    rooms: Vec<RoomView>,
}

/// A room: what it is and how busy.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoomView {
    /// The room's name.
    room: RoomName,
    /// What it is about ("" when unset).
    topic: String,
    /// Who may join, read and write: `public` (anyone), `private` (members),
    /// `broadcast` (anyone reads, moderators write).
    kind: RoomKind,
    /// Users online in it now.
    online: usize,
    /// Its last seq (0 before the first message).
    last_seq: u64,
    /// When it was created (explicitly, or by its first message or member).
    created_ts: Timestamp,
    /// Its last activity: its last message, or its creation.
    last_ts: Timestamp,
    /// Seconds a member waits between two messages (0: no slow mode).
    slow_mode_secs: u32,
    /// Whether only moderators write.
    frozen: bool,
    /// In `GET /api/rooms` with a user's token: messages of others after the user's
    /// read position (at most 1000).
    #[serde(skip_serializing_if = "Option::is_none")]
    unread: Option<u64>,
}

impl From<RoomListing> for RoomView {
    fn from(listing: RoomListing) -> Self {
        let RoomListing { room, topic, kind, created, last_seq, last_ts, online, slow_mode_secs, frozen } = listing;
        Self { room, topic, kind, online, last_seq, created_ts: created, last_ts, slow_mode_secs, frozen, unread: None }
    }
}

/// The body of `POST /api/rooms`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NewRoom {
    /// The room's name.
    name: RoomName,
    /// What it is about (at most 256 characters, none of them control characters).
    #[serde(default)]
    #[schema(max_length = 256, pattern = r"^[^\x00-\x1F\x7F-\x9F]*$")]
    topic: String,
    /// Who may join, read and write (default `public`). Private and broadcast rooms need
    /// the API key or a user's token; a user creating a room owns it.
    #[serde(default)]
    kind: RoomKind,
}

/// The body of `PATCH /api/rooms/{room}`: the settings to change (at least one).
#[derive(Debug, Deserialize, ToSchema)]
#[schema(min_properties = 1)]
pub struct RoomPatch {
    /// The new topic (at most 256 characters, none of them control characters; "" clears it).
    #[serde(default, deserialize_with = "no_null")]
    #[schema(nullable = false, max_length = 256, pattern = r"^[^\x00-\x1F\x7F-\x9F]*$")]
    topic: Option<String>,
    /// The new kind (owners only). Making a room private takes its non-members out.
    #[serde(default, deserialize_with = "no_null")]
    #[schema(nullable = false)]
    kind: Option<RoomKind>,
    /// Seconds a member must wait between two messages, 0 (off) to 86,400.
    #[serde(default, deserialize_with = "integral_no_null")]
    #[schema(nullable = false, value_type = Option<u32>, minimum = 0, maximum = 86400)]
    slow_mode_secs: Option<u64>,
    /// Whether only moderators may write.
    #[serde(default, deserialize_with = "no_null")]
    #[schema(nullable = false)]
    frozen: Option<bool>,
}

/// Query parameters of `GET /api/rooms/{room}/messages`: the `history` op's paging.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MessagesQuery {
    /// Only messages with a seq below this one (the page nearest to it).
    before: Option<u64>,
    /// Only messages with a seq above this one (the page nearest to it).
    after: Option<u64>,
    /// Page size, at most 200 (default 50).
    #[param(maximum = 200)]
    limit: Option<u32>,
    /// Only the replies to this message (its thread), oldest first.
    #[param(minimum = 1)]
    thread: Option<u64>,
}

/// The body of `POST /api/rooms/{room}/messages`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NewMessage {
    /// The message text (1 to the server's `max_text_chars` characters: the
    /// document served gives the running server's limit as `maxLength`).
    #[schema(min_length = 1)]
    text: String,
    /// Who it is from (default: `api`).
    from: Option<Author>,
    /// The seq of the message it answers.
    #[serde(default, deserialize_with = "integral")]
    reply_to: Option<u64>,
    /// Starts a streamed message: `.../messages/{seq}/append` adds to it and
    /// `.../finish` ends it (as the same author).
    #[serde(default)]
    stream: bool,
}

/// The author of a message published through REST (a bot, a system user).
#[derive(Debug, Deserialize, ToSchema)]
pub struct Author {
    /// Display name, 1 to 32 printable characters once surrounding whitespace is
    /// trimmed; the user id is `api:` + name.
    #[schema(
        pattern = r"^[\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]([^\x00-\x1F\x7F-\x9F]{0,30}[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000])?[\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$"
    )]
    pub(super) name: String,
}

/// Query parameters of `GET /api/rooms/{room}/members`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MembersQuery {
    /// Where the previous page ended (its `cursor`); absent for the first page.
    #[param(pattern = "^(0|[1-9][0-9]{0,18})$")]
    cursor: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// Lists rooms, most recently active first.
#[utoipa::path(get, path = "/api/rooms", tag = "rooms", params(RoomsQuery),
    responses((status = 200, body = RoomDirectory), (status = 400, body = ErrorReply), (status = 503, body = ErrorReply)))]
pub async fn list(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<RoomsQuery>,
) -> Result<Json<RoomDirectory>, ApiError> {
    let caller = state.auth.rest(&headers, peer.0)?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_ROOMS).contains(&limit) {
        return Err(ApiError::new(ErrorCode::BadRequest, format!("limit must be between 1 and {MAX_ROOMS}")));
    }
    let rooms = state.hub.directory(caller.as_actor().map(|actor| actor.who()), limit).await?;
    let mut views: Vec<RoomView> = rooms.into_iter().map(RoomView::from).collect();
    // A user's token (not the API key) learns its unread count in each room.
    if let Caller::User(actor) | Caller::Admin(actor) = &caller {
        if *actor != Actor::api() && !actor.user.id.starts_with(crate::hub::GUEST_PREFIX) {
            for view in &mut views {
                view.unread = Some(state.hub.unread(&view.room, &actor.user.id).await?);
            }
        }
    }
    Ok(Json(RoomDirectory { rooms: views }))
}

/// Creates a room.
#[utoipa::path(post, path = "/api/rooms", tag = "rooms", request_body = NewRoom, security(("api_key" = [])),
    responses((status = 201, body = RoomView), (status = 400, body = ErrorReply), (status = 401, body = ErrorReply), (status = 429, description = "too many writes from this address", body = ErrorReply),
        (status = 403, description = "a kind the caller may not create (direct rooms are made by POST /api/dm)", body = ErrorReply),
        (status = 409, description = "the name is taken", body = ErrorReply), (status = 413, body = ErrorReply),
        (status = 415, body = ErrorReply)))]
pub async fn create(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    ApiJson(room): ApiJson<NewRoom>,
) -> Result<(StatusCode, Json<RoomView>), ApiError> {
    let caller = access::check_write(&state, &headers, peer)?;
    check_topic(&room.topic)?;
    let created = state.hub.create_room(caller.actor()?, &room.name, room.kind, room.topic).await?;
    Ok((StatusCode::CREATED, Json(created.into())))
}

/// Describes one room.
#[utoipa::path(get, path = "/api/rooms/{room}", tag = "rooms", params(("room" = RoomName, Path, description = "the room's name")),
    responses((status = 200, body = RoomView), (status = 400, body = ErrorReply), (status = 404, body = ErrorReply)))]
pub async fn show(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    ApiPath(room): ApiPath<RoomName>,
) -> Result<Json<RoomView>, ApiError> {
    let listing = known(&state, &room).await?;
    may_read(&state, &state.auth.rest(&headers, peer.0)?, &room).await?;
    Ok(Json(listing.into()))
}

/// Changes a room's topic, kind, slow mode or freeze: moderators (the kind: owners).
#[utoipa::path(patch, path = "/api/rooms/{room}", tag = "rooms", request_body = RoomPatch, security(("api_key" = [])),
    params(("room" = RoomName, Path, description = "the room's name")),
    responses((status = 200, body = RoomView), (status = 400, body = ErrorReply), (status = 401, body = ErrorReply), (status = 429, description = "too many writes from this address", body = ErrorReply),
        (status = 403, body = ErrorReply), (status = 404, body = ErrorReply), (status = 415, body = ErrorReply)))]
pub async fn update(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    ApiPath(room): ApiPath<RoomName>,
    ApiJson(patch): ApiJson<RoomPatch>,
) -> Result<Json<RoomView>, ApiError> {
    let caller = access::check_write(&state, &headers, peer)?;
    let RoomPatch { topic, kind, slow_mode_secs, frozen } = patch;
    if topic.is_none() && kind.is_none() && slow_mode_secs.is_none() && frozen.is_none() {
        return Err(ApiError::new(ErrorCode::BadRequest, "give at least one of topic, kind, slow_mode_secs, frozen"));
    }
    topic.as_deref().map_or(Ok(()), check_topic)?;
    let slow_mode_secs = slow_mode_secs.map(|secs| u32::try_from(secs).unwrap_or(u32::MAX));
    slow_mode_secs.map_or(Ok(()), check_slow_mode)?;
    let changes = RoomChanges { kind, topic, slow_mode_secs, frozen };
    Ok(Json(state.hub.configure(caller.actor()?, &room, changes).await?.into()))
}

/// Pages through a room's history, oldest first: the `history` op over HTTP.
#[utoipa::path(get, path = "/api/rooms/{room}/messages", tag = "messages",
    params(("room" = RoomName, Path, description = "the room's name"), MessagesQuery),
    responses((status = 200, body = HistoryReply), (status = 400, body = ErrorReply), (status = 404, body = ErrorReply)))]
pub async fn messages(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    ApiPath(room): ApiPath<RoomName>,
    ApiQuery(query): ApiQuery<MessagesQuery>,
) -> Result<Json<HistoryReply>, ApiError> {
    let MessagesQuery { before, after, limit, thread } = query;
    check_seq("before", before)?;
    check_seq("after", after)?;
    check_seq("thread", thread)?;
    if thread == Some(0) {
        return Err(ApiError::new(ErrorCode::BadRequest, "thread is a message's seq: at least 1"));
    }
    Request::History(HistoryRequest { room: room.clone(), before, after, limit, thread }).validate(usize::MAX)?;
    exists(&state, &room).await?;
    let caller = state.auth.rest(&headers, peer.0)?;
    may_read(&state, &caller, &room).await?;
    let who = caller.as_actor().map_or(NOBODY, |actor| actor.who());
    let limit = limit.unwrap_or(DEFAULT_HISTORY_LIMIT);
    let page = match thread {
        Some(root) => {
            let query = match (after, before) {
                (Some(after), before) => PageQuery::After { after, before, limit },
                (None, Some(before)) => PageQuery::Before { before: Some(before), limit },
                (None, None) => PageQuery::After { after: 0, before: None, limit },
            };
            state.hub.thread(who, &room, root, query).await?
        }
        None => state.hub.history(who, &room, before, after, limit).await?,
    };
    Ok(Json(page))
}

/// Publishes a message as a backend: stored, numbered and delivered exactly like a
/// WebSocket `send`. `Idempotency-Key` plays the part of `key`: a retry with the same
/// key (and author) answers the original seq and delivers nothing new.
#[utoipa::path(post, path = "/api/rooms/{room}/messages", tag = "messages", request_body = NewMessage,
    security(("api_key" = [])),
    params(("room" = RoomName, Path, description = "the room's name"),
        ("Idempotency-Key" = Option<String>, Header, pattern = r"^[!-~]([\t -~]{0,62}[!-~])?$",
            description = "1 to 64 printable ASCII characters; a retry with the same key is not stored twice")),
    responses((status = 201, description = "stored (or, with `duplicate`, stored before)", body = SendReply),
        (status = 400, body = ErrorReply), (status = 401, body = ErrorReply), (status = 429, description = "too many writes from this address", body = ErrorReply), (status = 404, body = ErrorReply),
        (status = 413, body = ErrorReply), (status = 415, body = ErrorReply), (status = 503, body = ErrorReply)))]
pub async fn publish(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    ApiPath(room): ApiPath<RoomName>,
    ApiJson(message): ApiJson<NewMessage>,
) -> Result<(StatusCode, Json<SendReply>), ApiError> {
    let caller = access::check_write(&state, &headers, peer)?;
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| ApiError::new(ErrorCode::BadRequest, "Idempotency-Key must be printable ASCII"))?
                .to_owned(),
        ),
    };
    let NewMessage { text, from, reply_to, stream } = message;
    check_seq("reply_to", reply_to)?;
    let send = SendRequest { room: room.clone(), text, key, reply_to, stream };
    send.validate(state.sessions.limits.max_text_chars)?;
    let name = match from {
        Some(author) => display_name(&author.name).map_err(|e| ApiError::new(ErrorCode::BadRequest, e))?,
        None => DEFAULT_AUTHOR.to_owned(),
    };
    exists(&state, &room).await?;
    let actor = caller.actor()?;
    // A user's token (an admin's too) writes as that user; the API key as the author
    // it names.
    let author = match &caller {
        Caller::Admin(actor) if *actor == Actor::api() => User { id: format!("api:{name}"), name },
        _ => actor.user.clone(),
    };
    let SendRequest { room, text, key, reply_to, stream } = send;
    let pending = state.hub.publish_as(actor, author, Post { room: room.clone(), text, key, reply_to, stream }).await?;
    state.metrics.message_accepted(Route::Rest);
    let posted = pending.await?;
    let reply = SendReply { room, seq: posted.seq, ts: posted.ts, duplicate: posted.duplicate };
    Ok((StatusCode::CREATED, Json(reply)))
}

/// Lists the users online in a room, in the order they came online: the `members` op
/// over HTTP.
#[utoipa::path(get, path = "/api/rooms/{room}/members", tag = "rooms",
    params(("room" = RoomName, Path, description = "the room's name"), MembersQuery),
    responses((status = 200, body = MembersReply), (status = 400, body = ErrorReply), (status = 404, body = ErrorReply)))]
pub async fn members(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    ApiPath(room): ApiPath<RoomName>,
    ApiQuery(query): ApiQuery<MembersQuery>,
) -> Result<Json<MembersReply>, ApiError> {
    let MembersQuery { cursor, limit } = query;
    Request::Members(MembersRequest { room: room.clone(), cursor: cursor.clone(), limit }).validate(usize::MAX)?;
    exists(&state, &room).await?;
    may_read(&state, &state.auth.rest(&headers, peer.0)?, &room).await?;
    let limit = limit.unwrap_or(DEFAULT_MEMBERS_LIMIT) as usize;
    Ok(Json(state.hub.members(&room, cursor.as_deref(), limit)?))
}

/// An anonymous caller, as permission checks see it: no id, so no role and no sanction.
pub(super) const NOBODY: Who<'static> = Who { id: "", admin: false };

/// Nothing, or the refusal of a caller who may not read the room: 401 for an anonymous
/// caller (who might be let in with a token), 403 for a user.
pub(super) async fn may_read(state: &AppState, caller: &Caller, room: &RoomName) -> Result<(), ApiError> {
    let who = caller.as_actor().map_or(NOBODY, |actor| actor.who());
    match state.hub.check_read(who, room).await {
        Err(HubError::Forbidden(reason)) if caller.as_actor().is_none() => {
            Err(ApiError::new(ErrorCode::Unauthorized, format!("{reason}; send a token")))
        }
        other => Ok(other?),
    }
}

/// Nothing, or 404 for a room never created, written to or joined (cheaper than
/// [`known`] for a room with members: no store read).
pub(super) async fn exists(state: &AppState, room: &RoomName) -> Result<(), ApiError> {
    if state.hub.knows_room(room).await? {
        return Ok(());
    }
    Err(unknown_room(room))
}

fn unknown_room(room: &RoomName) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("there is no room {room}: create it, or join it, first"))
}

/// The room, or 404.
async fn known(state: &AppState, room: &RoomName) -> Result<RoomListing, ApiError> {
    state.hub.room_info(room).await?.ok_or_else(|| unknown_room(room))
}

/// An optional field of a JSON body that may be absent but not `null` (the document
/// says so: a request it calls invalid must be refused).
pub(super) fn no_null<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

/// [`integral`], for a field that may be absent but not `null`.
pub(super) fn integral_no_null<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    match integral(deserializer)? {
        Some(value) => Ok(Some(value)),
        None => Err(D::Error::custom("invalid type: null, expected a non-negative integer")),
    }
}

/// A non-negative integer field of a JSON body, which may also be written with a zero
/// fraction (`7.0`): JSON Schema, and so the document, counts that as an integer.
pub(super) fn integral<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else { return Ok(None) };
    if let Some(value) = number.as_u64() {
        return Ok(Some(value));
    }
    match number.as_f64() {
        // 2^64 is exactly representable; integral values below it convert exactly.
        Some(value) if value >= 0.0 && value.fract() == 0.0 && value < 18_446_744_073_709_551_616.0 => {
            Ok(Some(value as u64))
        }
        _ => Err(D::Error::custom(format!("invalid value {number}, expected a non-negative integer"))),
    }
}

fn check_seq(name: &str, seq: Option<u64>) -> Result<(), ApiError> {
    match seq {
        Some(seq) if seq > MAX_SEQ => {
            Err(ApiError::new(ErrorCode::BadRequest, format!("{name} must be at most {MAX_SEQ}")))
        }
        _ => Ok(()),
    }
}
