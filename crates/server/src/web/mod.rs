//! The browser client, embedded in the binary: no CDN, no build step.
//!
//! Four files compiled in with `include_str!`: the page at `/`, its script at
//! `/assets/app.js`, its style sheet at `/assets/style.css`, and the JavaScript SDK at
//! `/assets/bavard.js` (the compiled module committed in `clients/js/dist`, so building
//! the server needs no Node). The page speaks the JSON protocol on `/ws` of the same
//! origin through the SDK, which owns the connection, reconnects and recovery.

use axum::{
    http::{header, HeaderValue},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};

const INDEX_HTML: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const STYLE_CSS: &str = include_str!("style.css");
const SDK_JS: &str = include_str!("../../../../clients/js/dist/bavard.js");

/// Routes serving the web client (merged into the API router).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/assets/app.js", get(app_js))
        .route("/assets/bavard.js", get(sdk_js))
        .route("/assets/style.css", get(style_css))
}

/// An embedded file with its content type. `no-cache` makes browsers revalidate, so a
/// new binary's client is picked up on the next reload; `nosniff` keeps the types strict.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ],
        body,
    )
        .into_response()
}

/// What the page may load: only its own files and WebSockets. Everything users type is
/// rendered as text anyway; this is the second line of defence.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// `GET /`: the chat page.
async fn index() -> Response {
    let mut response = asset("text/html; charset=utf-8", INDEX_HTML);
    response.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    response
}

/// `GET /assets/app.js`: the page's script.
async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

/// `GET /assets/bavard.js`: the JavaScript SDK, an ES module (`import { Client } from
/// '/assets/bavard.js'`), for this page and any other.
async fn sdk_js() -> Response {
    asset("text/javascript; charset=utf-8", SDK_JS)
}

/// `GET /assets/style.css`: the page's style sheet.
async fn style_css() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}
