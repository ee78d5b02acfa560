//! Which browser origins may open WebSockets: the server's own origin, localhost, and
//! the configured list. Clients that send no Origin header (not browsers) are allowed.

use http::{header, HeaderMap};

/// The allowed origins.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    any: bool,
    listed: Vec<String>,
}

impl OriginPolicy {
    /// A policy from `--allowed-origins` entries (`*` allows any origin).
    pub fn new(configured: &[String]) -> Self {
        let listed: Vec<String> = configured
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
            .filter(|o| !o.is_empty())
            .collect();
        Self { any: listed.iter().any(|o| o == "*"), listed }
    }

    /// Whether a request with these headers may upgrade.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(header::ORIGIN) else { return true };
        let Ok(origin) = origin.to_str() else { return false };
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        if self.any || self.listed.contains(&origin) {
            return true;
        }
        let Some((_, authority)) = origin.split_once("://") else { return false };
        let host = host_of(authority);
        if matches!(host, "localhost" | "127.0.0.1" | "[::1]") {
            return true;
        }
        let own = headers.get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_ascii_lowercase);
        own.is_some_and(|own| own == authority)
    }
}

/// The host part of `host[:port]`, keeping IPv6 brackets.
fn host_of(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority.split_inclusive(']').next().unwrap_or(authority);
    }
    authority.split(':').next().unwrap_or(authority)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, host.parse().unwrap());
        if let Some(origin) = origin {
            headers.insert(header::ORIGIN, origin.parse().unwrap());
        }
        headers
    }

    #[test]
    fn allows_non_browsers_localhost_and_the_own_origin() {
        let policy = OriginPolicy::new(&[]);
        assert!(policy.allows(&headers(None, "chat.example:8000")));
        assert!(policy.allows(&headers(Some("http://localhost:3000"), "chat.example:8000")));
        assert!(policy.allows(&headers(Some("http://127.0.0.1:9"), "chat.example:8000")));
        assert!(policy.allows(&headers(Some("http://[::1]:9"), "chat.example:8000")));
        assert!(policy.allows(&headers(Some("https://chat.example:8000"), "chat.example:8000")));
        assert!(!policy.allows(&headers(Some("https://evil.example"), "chat.example:8000")));
        assert!(!policy.allows(&headers(Some("http://localhost.evil.example"), "chat.example:8000")));
    }

    #[test]
    fn allows_listed_origins_or_any() {
        let policy = OriginPolicy::new(&["https://app.example/".into()]);
        assert!(policy.allows(&headers(Some("https://app.example"), "chat.example")));
        assert!(!policy.allows(&headers(Some("https://other.example"), "chat.example")));
        assert!(OriginPolicy::new(&["*".into()]).allows(&headers(Some("https://other.example"), "x")));
    }
}
