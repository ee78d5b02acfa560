//! Which browser origins may open WebSockets: the origins the server is configured to
//! serve (`--public-url`, or by default its listen address and the localhost forms of
//! its port), and the `--allowed-origins` list. Clients that send no Origin header (not
//! browsers) are allowed.
//!
//! The request's `Host` header is never trusted as "our own origin": under DNS
//! rebinding, a page at `http://evil.example:PORT` whose name now resolves to this
//! server sends `Origin` and `Host` both `evil.example:PORT`.

use std::net::SocketAddr;

use anyhow::{bail, Context};
use http::{header, HeaderMap};

/// The allowed origins, each normalized as `scheme://host[:port]` in lower case
/// without a default port.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    any: bool,
    listed: Vec<String>,
}

impl OriginPolicy {
    /// The policy of a server listening on `listen` (the bound address, port included):
    /// the origins of `public_urls` when any are given, else the listen address (unless
    /// unspecified, `0.0.0.0` or `::`) and `127.0.0.1`, `localhost` and `[::1]` on its
    /// port, over http and https; plus the `allowed` entries (`*` allows any origin).
    pub fn new(listen: SocketAddr, public_urls: &[String], allowed: &[String]) -> anyhow::Result<Self> {
        let mut listed = Vec::new();
        let public: Vec<&str> = public_urls.iter().map(|u| u.trim()).filter(|u| !u.is_empty()).collect();
        if public.is_empty() {
            let port = listen.port();
            let mut hosts = vec!["127.0.0.1".to_owned(), "localhost".to_owned(), "[::1]".to_owned()];
            if !listen.ip().is_unspecified() {
                let own = SocketAddr::new(listen.ip(), port).to_string();
                if let Some((host, _)) = own.rsplit_once(':') {
                    hosts.push(host.to_ascii_lowercase());
                }
            }
            for host in hosts {
                for scheme in ["http", "https"] {
                    listed.push(normalize(&format!("{scheme}://{host}:{port}")));
                }
            }
        } else {
            for url in public {
                listed.push(origin_of_url(url).with_context(|| format!("--public-url {url:?}"))?);
            }
        }
        let allowed: Vec<String> = allowed.iter().map(|o| normalize(o.trim())).filter(|o| !o.is_empty()).collect();
        let any = allowed.iter().any(|o| o == "*");
        listed.extend(allowed);
        listed.dedup();
        Ok(Self { any, listed })
    }

    /// Whether a request with these headers may upgrade.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(header::ORIGIN) else { return true };
        if self.any {
            return true;
        }
        let Ok(origin) = origin.to_str() else { return false };
        self.listed.contains(&normalize(origin))
    }
}

/// `scheme://host[:port]` in lower case, without a trailing slash or a default port.
fn normalize(origin: &str) -> String {
    let origin = origin.trim_end_matches('/').to_ascii_lowercase();
    for (scheme, port) in [("http://", ":80"), ("https://", ":443")] {
        if origin.starts_with(scheme) {
            if let Some(bare) = origin.strip_suffix(port) {
                if bare.len() > scheme.len() {
                    return bare.to_owned();
                }
            }
        }
    }
    origin
}

/// The origin of an http(s) URL such as `https://chat.example.com/` or
/// `https://chat.example.com:8443/app`.
fn origin_of_url(url: &str) -> anyhow::Result<String> {
    let lower = url.to_ascii_lowercase();
    let Some((scheme, rest)) = lower.split_once("://") else {
        bail!("expected an http or https URL such as https://chat.example.com")
    };
    if scheme != "http" && scheme != "https" {
        bail!("the scheme must be http or https, not {scheme:?}");
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') || authority.contains(char::is_whitespace) {
        bail!("expected scheme://host[:port], without user information");
    }
    Ok(normalize(&format!("{scheme}://{authority}")))
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

    fn policy(listen: &str, public: &[&str], allowed: &[&str]) -> OriginPolicy {
        let strings = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        OriginPolicy::new(listen.parse().unwrap(), &strings(public), &strings(allowed)).unwrap()
    }

    #[test]
    fn by_default_allows_non_browsers_and_the_localhost_forms_of_its_port() {
        let policy = policy("127.0.0.1:8000", &[], &[]);
        assert!(policy.allows(&headers(None, "evil.example:8000")));
        for own in ["http://localhost:8000", "http://127.0.0.1:8000/", "https://[::1]:8000", "HTTP://LOCALHOST:8000"] {
            assert!(policy.allows(&headers(Some(own), "localhost:8000")), "{own}");
        }
        for other in ["http://localhost:3000", "http://127.0.0.1", "http://localhost.evil.example:8000"] {
            assert!(!policy.allows(&headers(Some(other), "localhost:8000")), "{other}");
        }
    }

    #[test]
    fn the_host_header_does_not_make_an_origin_own() {
        // DNS rebinding: the attacker's name resolves to us, so Host matches Origin.
        let policy = policy("127.0.0.1:8000", &[], &[]);
        assert!(!policy.allows(&headers(Some("http://evil.example:8000"), "evil.example:8000")));
        let policy = policy_wildcard_listen();
        assert!(!policy.allows(&headers(Some("http://evil.example:8000"), "evil.example:8000")));
    }

    fn policy_wildcard_listen() -> OriginPolicy {
        policy("0.0.0.0:8000", &[], &[])
    }

    #[test]
    fn a_specific_listen_address_is_an_own_origin_and_a_wildcard_is_not() {
        let policy = policy("192.0.2.7:8000", &[], &[]);
        assert!(policy.allows(&headers(Some("http://192.0.2.7:8000"), "x")));
        assert!(policy.allows(&headers(Some("https://192.0.2.7:8000"), "x")));
        let v6 = self::policy("[2001:db8::1]:8000", &[], &[]);
        assert!(v6.allows(&headers(Some("http://[2001:db8::1]:8000"), "x")));
        let wildcard = policy_wildcard_listen();
        assert!(!wildcard.allows(&headers(Some("http://0.0.0.0:8000"), "x")));
        assert!(wildcard.allows(&headers(Some("http://localhost:8000"), "x")));
    }

    #[test]
    fn default_ports_match_origins_without_a_port() {
        let policy = policy("127.0.0.1:443", &[], &[]);
        assert!(policy.allows(&headers(Some("https://localhost"), "x")));
        assert!(policy.allows(&headers(Some("http://localhost:443"), "x")));
        assert!(!policy.allows(&headers(Some("http://localhost"), "x")));
    }

    #[test]
    fn public_urls_replace_the_default_origins() {
        let policy = policy("0.0.0.0:8000", &["https://chat.example.com/", "http://Chat.Example.com:8080/app"], &[]);
        assert!(policy.allows(&headers(Some("https://chat.example.com"), "anything")));
        assert!(policy.allows(&headers(Some("http://chat.example.com:8080"), "anything")));
        assert!(!policy.allows(&headers(Some("http://chat.example.com"), "chat.example.com")));
        assert!(!policy.allows(&headers(Some("http://localhost:8000"), "localhost:8000")));
        assert!(policy.allows(&headers(None, "anything")));
    }

    #[test]
    fn bad_public_urls_are_refused() {
        for bad in ["chat.example.com", "ftp://chat.example.com", "https://", "https://u@chat.example.com"] {
            let result = OriginPolicy::new("127.0.0.1:0".parse().unwrap(), &[bad.to_string()], &[]);
            assert!(result.is_err(), "{bad}");
        }
    }

    #[test]
    fn allows_listed_origins_or_any() {
        let policy = policy("127.0.0.1:8000", &[], &["https://app.example/"]);
        assert!(policy.allows(&headers(Some("https://app.example"), "chat.example")));
        assert!(!policy.allows(&headers(Some("https://other.example"), "chat.example")));
        assert!(self::policy("127.0.0.1:8000", &[], &["*"]).allows(&headers(Some("https://other.example"), "x")));
    }
}
