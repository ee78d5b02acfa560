//! CORS for the `/api` routes (`--cors-origins`): which browser origins' pages may call
//! the HTTP API, as an explicit list; with none configured the API sends no CORS
//! headers and browsers allow same-origin calls only. Which origins may open
//! WebSockets is a separate policy (`origin.rs`, `--allowed-origins`).

use anyhow::{bail, Context};
use axum::{
    http::{header, HeaderName, HeaderValue, Method, Uri},
    middleware,
    response::Response,
    Router,
};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The CORS policy of `/api`: tower-http's layer with an explicit origin list.
#[derive(Debug, Clone)]
pub struct ApiCors(CorsLayer);

impl ApiCors {
    /// Wraps every route of `router` (build it with the `/api` routes only).
    pub fn apply<S: Clone + Send + Sync + 'static>(self, router: Router<S>) -> Router<S> {
        router.layer(self.0).layer(middleware::map_response(without_ungranted))
    }
}

/// A response that grants no origin carries no other CORS header either (tower-http
/// lists the allowed methods and headers on every preflight): an unlisted origin
/// learns nothing, and sees what it would see from a server without CORS.
async fn without_ungranted(mut response: Response) -> Response {
    let headers = response.headers_mut();
    if !headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN) {
        headers.remove(header::ACCESS_CONTROL_ALLOW_METHODS);
        headers.remove(header::ACCESS_CONTROL_ALLOW_HEADERS);
    }
    response
}

/// The CORS policy for `/api`, or `None` when no origin is configured.
pub fn layer(configured: &[String]) -> anyhow::Result<Option<ApiCors>> {
    let origins = configured
        .iter()
        .map(|o| o.trim())
        .filter(|o| !o.is_empty())
        .map(|o| normalize(o).and_then(|o| HeaderValue::from_str(&o).map_err(anyhow::Error::from)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if origins.is_empty() {
        return Ok(None);
    }
    Ok(Some(ApiCors(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::PUT, Method::DELETE, Method::OPTIONS])
            .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION, HeaderName::from_static("idempotency-key")]),
    )))
}

/// An origin as browsers send it: `scheme://host[:port]`, lower case, without the
/// scheme's default port or a trailing slash.
fn normalize(origin: &str) -> anyhow::Result<String> {
    let hint = "write each origin as scheme://host[:port], e.g. https://app.example";
    if origin == "*" {
        bail!("--cors-origins does not take `*`: list the origins whose pages may call /api ({hint})");
    }
    let uri: Uri = origin.parse().with_context(|| format!("--cors-origins: {origin:?} is not an origin ({hint})"))?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        bail!("--cors-origins: {origin:?} is not an origin ({hint})");
    };
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        bail!("--cors-origins: {origin:?} is not an http or https origin ({hint})");
    }
    let path = uri.path_and_query().map_or("", |p| p.as_str());
    if authority.as_str().contains('@') || !(path.is_empty() || path == "/") {
        bail!("--cors-origins: {origin:?} has more than an origin: drop the user, path or query ({hint})");
    }
    let default_port = if scheme == "https" { 443 } else { 80 };
    let host = authority.host().to_ascii_lowercase();
    Ok(match authority.port_u16() {
        Some(port) if port != default_port => format!("{scheme}://{host}:{port}"),
        _ => format!("{scheme}://{host}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_normalized_as_browsers_send_them() {
        assert_eq!(normalize("https://App.Example/").unwrap(), "https://app.example");
        assert_eq!(normalize("https://app.example:443").unwrap(), "https://app.example");
        assert_eq!(normalize("http://localhost:3000").unwrap(), "http://localhost:3000");
        assert_eq!(normalize("http://[::1]:8080").unwrap(), "http://[::1]:8080");
    }

    #[test]
    fn what_is_not_an_origin_is_refused_with_the_reason() {
        for (bad, why) in [
            ("*", "does not take `*`"),
            ("app.example", "is not an origin"),
            ("ftp://app.example", "not an http or https origin"),
            ("https://app.example/chat", "drop the user, path or query"),
            ("https://me@app.example", "drop the user, path or query"),
        ] {
            let message = format!("{:#}", normalize(bad).err().unwrap());
            assert!(message.contains(why) && message.contains(bad), "{bad}: {message}");
        }
    }

    #[test]
    fn no_origin_means_no_layer() {
        assert!(layer(&[]).unwrap().is_none());
        assert!(layer(&[" ".into()]).unwrap().is_none());
        assert!(layer(&["https://app.example".into()]).unwrap().is_some());
    }
}
