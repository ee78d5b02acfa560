//! Endpoint URLs: what a user types (`http://host:8000`, `wss://host/ws?token=t`) made
//! into the URL of the JSON WebSocket, with the nickname in the query string.

use url::Url;

/// A URL that cannot lead to a Bavard WebSocket endpoint, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid URL {url:?}: {problem}")]
pub struct InvalidUrl {
    url: String,
    problem: String,
}

/// The URL of the JSON WebSocket endpoint at `url`: `http(s)` becomes `ws(s)`, an empty
/// path becomes `/ws`, a fragment is dropped, and `name`, when given, replaces any
/// `name` already in the query string (form-encoded, as the server reads it).
pub fn endpoint(url: &str, name: Option<&str>) -> Result<String, InvalidUrl> {
    let input = url.trim();
    let invalid = |problem: String| InvalidUrl { url: input.to_owned(), problem };
    let mut parsed = Url::parse(input).map_err(|e| invalid(format!("{e} (expected ws://HOST:PORT/ws)")))?;
    let scheme = match parsed.scheme() {
        "ws" | "http" => "ws",
        "wss" | "https" => "wss",
        other => return Err(invalid(format!("unsupported scheme {other:?} (use ws://HOST:PORT/ws or wss://)"))),
    };
    parsed.set_scheme(scheme).map_err(|()| invalid(format!("cannot switch to {scheme}://")))?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("no host (expected ws://HOST:PORT/ws)".into()));
    }
    if parsed.path() == "/" || parsed.path().is_empty() {
        parsed.set_path("/ws");
    }
    parsed.set_fragment(None);
    if let Some(name) = name {
        let kept: Vec<(String, String)> = parsed
            .query_pairs()
            .filter(|(key, _)| key != "name")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(kept).append_pair("name", name);
    }
    Ok(parsed.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_the_scheme_and_the_encoded_name_are_filled_in() {
        let cases = [
            ("ws://127.0.0.1:8000/ws", Some("al ice"), "ws://127.0.0.1:8000/ws?name=al+ice"),
            ("  http://h:1 ", None, "ws://h:1/ws"),
            ("https://h/", Some("é&x=y"), "wss://h/ws?name=%C3%A9%26x%3Dy"),
            ("ws://h/ws?token=t&name=old#frag", Some("new"), "ws://h/ws?token=t&name=new"),
            ("ws://h/ws?name=kept", None, "ws://h/ws?name=kept"),
            ("WSS://H:443/chat/ws", None, "wss://h/chat/ws"),
        ];
        for (url, name, expected) in cases {
            assert_eq!(endpoint(url, name).as_deref(), Ok(expected), "{url} {name:?}");
        }
    }

    #[test]
    fn what_cannot_be_an_endpoint_says_why() {
        let problem = |url: &str| endpoint(url, None).unwrap_err().to_string();
        assert!(problem("127.0.0.1:8000").contains("expected ws://HOST:PORT/ws"), "{}", problem("127.0.0.1:8000"));
        assert!(problem("ftp://h/ws").contains("unsupported scheme \"ftp\""), "{}", problem("ftp://h/ws"));
        assert!(problem("ws://").starts_with("invalid URL \"ws://\""), "{}", problem("ws://"));
    }
}
