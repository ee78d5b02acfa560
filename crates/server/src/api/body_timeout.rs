//! The time a request has to send its body. From the moment its head is complete (and
//! routed), a request has `--request-body-timeout-secs` to deliver its whole body;
//! past it, the handler waiting for the body gets an error, the request is answered
//! 408 and its connection closed (hyper does not reuse a connection whose request body
//! was not read to its end). Without it, a client could send a complete head with
//! `Content-Length: 100` and drip the body a byte every few seconds, holding its
//! connection and a request task for as long as it liked: `net.rs` bounds only the
//! time to a complete head.
//!
//! Requests without a body, WebSocket upgrades among them, pass untouched. The timer
//! is armed only when the handler waits for body bytes that have not come yet, so a
//! body that came with its head (the usual small JSON) costs none.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{ready, Context, Poll},
    time::Duration,
};

use axum::{
    body::{Body, Bytes, HttpBody},
    extract::{Request, State},
    http::{header, HeaderValue, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use bavard_protocol::ErrorCode;
use hyper::body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::error::ApiError;
use crate::metrics::{Limit, Metrics};

/// The middleware's settings: the bound, and where a request cut off by it is counted.
#[derive(Clone)]
pub struct BodyTimeout {
    /// Time from a complete head to a complete body.
    pub limit: Duration,
    /// Counts each request answered 408 (`bavard_limit_refusals_total{limit="request_body"}`).
    pub metrics: Arc<Metrics>,
}

/// Middleware: bounds the time to receive the request's body, and answers 408 when a
/// handler was cut off by the bound, whatever it answered itself (its extractor sees a
/// failed body: a 400, most likely).
pub async fn bound(State(bound): State<BodyTimeout>, request: Request, next: Next) -> Response {
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    // A bound too far in the future to represent (a huge flag value) is no bound.
    let Some(deadline) = Instant::now().checked_add(bound.limit) else { return next.run(request).await };
    let expired = Arc::new(AtomicBool::new(false));
    // For the log only (it shares its bytes, it does not copy them).
    let uri = request.uri().clone();
    let request = request.map(|body| {
        Body::new(Deadlined { body, deadline, limit: bound.limit, sleep: None, expired: Arc::clone(&expired) })
    });
    let response = next.run(request).await;
    if !expired.load(Ordering::Acquire) {
        return response;
    }
    bound.metrics.limit_refused(Limit::RequestBody);
    tracing::debug!(%uri, "answered 408: the request body was not complete within {:?}", bound.limit);
    let mut refused = ApiError::new(
        ErrorCode::BadRequest,
        format!(
            "the request body was not complete within {:?} of its head (--request-body-timeout-secs): send the \
             whole body right after the head, without pauses",
            bound.limit
        ),
    )
    .with_status(StatusCode::REQUEST_TIMEOUT)
    .into_response();
    let headers = refused.headers_mut();
    // The rest of the body is left unread: the connection cannot carry another request.
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    // The CORS headers of the handler's answer, so that a browser page can read the 408.
    for (name, value) in response.headers() {
        if name.as_str().starts_with("access-control-") || name == header::VARY {
            headers.append(name.clone(), value.clone());
        }
    }
    refused
}

/// Why a body read failed: it was not complete in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body was not complete within {0:?} (--request-body-timeout-secs)")]
struct LateBody(Duration);

/// A request body that fails once `deadline` has passed while it waits for more bytes.
struct Deadlined {
    body: Body,
    deadline: Instant,
    limit: Duration,
    /// Armed the first time the body has nothing ready.
    sleep: Option<Pin<Box<Sleep>>>,
    /// Set when the deadline cut the body off: the middleware then answers 408.
    expired: Arc<AtomicBool>,
}

impl HttpBody for Deadlined {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        // Bytes that came are taken, even late: the bound is on waiting for more.
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        ready!(sleep.as_mut().poll(cx));
        this.expired.store(true, Ordering::Release);
        Poll::Ready(Some(Err(Box::new(LateBody(this.limit)))))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
