//! How the REST API fails: one JSON shape, `{"error": {"code": ..., "message": ...}}`,
//! with the protocol's error codes and the HTTP status each code stands for, and
//! extractors that turn axum's rejections (bad JSON, wrong content type, body too
//! large, bad query or path) into that shape instead of plain text.

use axum::{
    extract::{rejection::JsonRejection, FromRequest, FromRequestParts, Path, Query, Request},
    http::{request::Parts, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use bavard_protocol::{ErrorBody, ErrorCode};
use serde::{de::DeserializeOwned, Serialize};
use utoipa::ToSchema;

use crate::hub::HubError;

/// A failed REST call: its body, and the status it is answered with.
#[derive(Debug)]
pub struct ApiError {
    body: ErrorBody,
    status: StatusCode,
}

/// The body of every REST error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorReply {
    /// What went wrong.
    error: ErrorBody,
}

impl ApiError {
    /// An error with `code` and a message for humans, answered with the code's status.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::from(ErrorBody::new(code, message.into()))
    }

    /// The same error with another status (415, 408, for which the protocol has no code).
    pub(super) fn with_status(self, status: StatusCode) -> Self {
        Self { status, ..self }
    }
}

/// The HTTP status that goes with an error code.
fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::BadRequest | ErrorCode::UnknownOp => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::Conflict => StatusCode::CONFLICT,
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        // The store failed: the request itself was fine and may be retried.
        ErrorCode::Internal | ErrorCode::Unavailable | ErrorCode::Unknown => StatusCode::SERVICE_UNAVAILABLE,
    }
}

impl From<ErrorBody> for ApiError {
    fn from(body: ErrorBody) -> Self {
        Self { status: status_of(body.code), body }
    }
}

impl From<HubError> for ApiError {
    fn from(error: HubError) -> Self {
        Self::from(error.to_error_body())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(ErrorReply { error: self.body })).into_response()
    }
}

/// A JSON body, refused in the API's error shape: 415 without a JSON content type,
/// 413 past the body limit, 400 for anything else wrong with it.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        // Every body of the API is an object, but serde takes an array for a struct
        // whose fields all have defaults (`[]` was a valid `PUT .../members/{user}`,
        // schemathesis found): refuse arrays before decoding.
        let (parts, body) = request.into_parts();
        let bytes = axum::body::to_bytes(body, BODY_LIMIT).await.map_err(|e| {
            ApiError::new(
                ErrorCode::TooLarge,
                format!("cannot read the body whole ({e}): the limit is {BODY_LIMIT} bytes"),
            )
            .with_status(StatusCode::PAYLOAD_TOO_LARGE)
        })?;
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
            return Err(ApiError::new(ErrorCode::BadRequest, "the body must be a JSON object, not an array"));
        }
        let request = Request::from_parts(parts, axum::body::Body::from(bytes));
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(JsonRejection::MissingJsonContentType(_)) => {
                Err(ApiError::new(ErrorCode::BadRequest, "send the body as JSON, with Content-Type: application/json")
                    .with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE))
            }
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::new(ErrorCode::TooLarge, format!("{}: the limit is {BODY_LIMIT} bytes", e.body_text())))
            }
            Err(e) => Err(ApiError::new(ErrorCode::BadRequest, e.body_text())),
        }
    }
}

/// The largest request body the API reads.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Query parameters, refused in the API's error shape (400).
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(Self(value)),
            Err(e) => Err(ApiError::new(ErrorCode::BadRequest, e.body_text())),
        }
    }
}

/// Path parameters, refused in the API's error shape (400).
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(Self(value)),
            Err(e) => Err(ApiError::new(ErrorCode::BadRequest, e.body_text())),
        }
    }
}
