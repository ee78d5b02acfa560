//! `GET /api/rooms`: the room directory (rooms with stored messages, most recently
//! active first, and how many users are online in each). The web page lists it.

use axum::{
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use bavard_protocol::{RoomName, Timestamp};
use serde::{Deserialize, Serialize};

use super::AppState;
use crate::hub::RoomListing;

/// The most rooms one call returns.
const MAX_ROOMS: u32 = 1_000;

/// Query parameters of `GET /api/rooms`.
#[derive(Debug, Deserialize)]
pub struct RoomsQuery {
    /// How many rooms (1 to 1,000; default 100).
    limit: Option<u32>,
}

/// The body of `GET /api/rooms`.
#[derive(Debug, Serialize)]
pub struct RoomDirectory {
    /// Most recently active first.
    rooms: Vec<RoomEntry>,
}

/// One room of the directory.
#[derive(Debug, Serialize)]
pub struct RoomEntry {
    /// The room's name.
    room: RoomName,
    /// Its last seq.
    last_seq: u64,
    /// When its last message was stored.
    last_ts: Timestamp,
    /// Users online in it now.
    online: usize,
}

/// Lists rooms; 400 for a limit out of range, 503 when the store fails.
pub async fn list(State(state): State<AppState>, Query(query): Query<RoomsQuery>) -> Response {
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_ROOMS).contains(&limit) {
        let message = format!("limit must be between 1 and {MAX_ROOMS}");
        return (StatusCode::BAD_REQUEST, Json(serde_json::json!({ "error": message }))).into_response();
    }
    match state.hub.directory(limit).await {
        Ok(rooms) => {
            let rooms = rooms
                .into_iter()
                .map(|RoomListing { room, last_seq, last_ts, online }| RoomEntry { room, last_seq, last_ts, online })
                .collect();
            Json(RoomDirectory { rooms }).into_response()
        }
        Err(e) => {
            let message = format!("the store failed: {e}; retry later");
            (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({ "error": message }))).into_response()
        }
    }
}
