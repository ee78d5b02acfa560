//! Who is calling: the identity of a WebSocket upgrade (a verified JWT, or in open mode
//! a guest from `?name=`) and of a REST call (the API key, a user's JWT, or nobody).
//! Refusals happen here, before any session exists: a token that is presented and
//! bad is a 401, in every mode.

use std::{net::SocketAddr, sync::Arc};

use axum::http::{header, HeaderMap, StatusCode};
use bavard_protocol::{ErrorCode, User};

use super::error::ApiError;
use crate::{
    auth::{
        jwt::{Claims, JwtVerifier},
        Actor, Identity, Standing,
    },
    config::AuthMode,
    metrics::Metrics,
};

/// The longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 32;

/// How callers prove who they are; built once from the settings.
pub struct Authenticator {
    /// Whether WebSockets need a token.
    pub mode: AuthMode,
    /// Verifies tokens (None: no key configured; then no token is accepted).
    pub jwt: Option<Arc<JwtVerifier>>,
    /// The REST API key (None: REST calls from loopback act as the admin).
    pub api_key: Option<Arc<str>>,
    /// Refused tokens are counted here.
    pub metrics: Arc<Metrics>,
}

/// Who makes a REST call.
#[derive(Debug, Clone)]
pub enum Caller {
    /// The API key (or, without one, a client on this machine), or a token of a user
    /// with `role: admin`: every right everywhere.
    Admin(Actor),
    /// A user with a verified token: that user's rights.
    User(Actor),
    /// Nobody: reads of rooms that are not private, nothing more.
    Anonymous,
}

impl Caller {
    /// The caller as an actor, or 401 for an anonymous caller.
    pub fn actor(&self) -> Result<&Actor, ApiError> {
        match self {
            Self::Admin(actor) | Self::User(actor) => Ok(actor),
            Self::Anonymous => Err(ApiError::new(
                ErrorCode::Unauthorized,
                "this call needs the API key or a user's token: send Authorization: Bearer KEY_OR_TOKEN",
            )),
        }
    }

    /// The caller as an actor, if it is one.
    pub fn as_actor(&self) -> Option<&Actor> {
        self.actor().ok()
    }
}

/// The bearer token or key of a request's `Authorization` header (other schemes, such
/// as a proxy's Basic credentials, are not ours and are ignored).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl Authenticator {
    /// Verifies `token`, counting a refusal.
    fn verify(&self, token: &str) -> Result<Claims, String> {
        let Some(jwt) = &self.jwt else {
            self.metrics.auth_failed("no_key");
            return Err("this server accepts no tokens (no --jwt-secret or --jwt-public-key)".to_owned());
        };
        jwt.verify(token, crate::auth::unix_now()).map_err(|e| {
            self.metrics.auth_failed(e.reason());
            e.to_string()
        })
    }

    /// The identity of a WebSocket upgrade, or the status and text that refuse it.
    pub fn connection(
        &self,
        headers: &HeaderMap,
        query_token: Option<&str>,
        name: Option<&str>,
    ) -> Result<Identity, (StatusCode, String)> {
        let unauthorized = |message: String| (StatusCode::UNAUTHORIZED, message);
        match bearer(headers).or(query_token.filter(|token| !token.is_empty())) {
            Some(token) => {
                let claims = self.verify(token).map_err(unauthorized)?;
                Ok(identity_of(claims))
            }
            None if self.mode == AuthMode::Jwt => {
                self.metrics.auth_failed("missing");
                Err(unauthorized(
                    "this server needs a token: send Authorization: Bearer TOKEN, or ?token=TOKEN".to_owned(),
                ))
            }
            None => guest(name).map(Identity::guest).map_err(|message| (StatusCode::BAD_REQUEST, message)),
        }
    }

    /// Who makes a REST call from `peer`: see [`Caller`]. A key or token that is
    /// presented and wrong is a 401, never an anonymous call.
    pub fn rest(&self, headers: &HeaderMap, peer: SocketAddr) -> Result<Caller, ApiError> {
        let Some(presented) = bearer(headers) else {
            if self.api_key.is_none() && peer.ip().is_loopback() {
                return Ok(Caller::Admin(Actor::api()));
            }
            return Ok(Caller::Anonymous);
        };
        if let Some(key) = &self.api_key {
            if same_secret(presented.as_bytes(), key.as_bytes()) {
                return Ok(Caller::Admin(Actor::api()));
            }
        }
        // A JWT has three dot-separated parts; anything else was meant as the key.
        if self.jwt.is_none() || presented.split('.').count() != 3 {
            self.metrics.auth_failed("wrong_api_key");
            return Err(ApiError::new(ErrorCode::Unauthorized, "wrong API key"));
        }
        let claims = self.verify(presented).map_err(|e| ApiError::new(ErrorCode::Unauthorized, e))?;
        let Identity { user, standing, .. } = identity_of(claims);
        let actor = Actor { user, standing };
        Ok(if actor.is_admin() { Caller::Admin(actor) } else { Caller::User(actor) })
    }
}

/// The identity a verified token gives.
fn identity_of(claims: Claims) -> Identity {
    let standing = if claims.is_admin() { Standing::Admin } else { Standing::Signed };
    let name = claims.name.clone().unwrap_or_else(|| claims.sub.chars().take(MAX_NAME_CHARS).collect());
    Identity { user: User { id: claims.sub, name }, standing, expires: Some(claims.exp) }
}

/// A display name as given (`?name=`, or a REST author's `name`), trimmed: 1 to
/// [`MAX_NAME_CHARS`] printable characters.
pub fn display_name(name: &str) -> Result<String, String> {
    let name = name.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(format!("invalid name: use 1 to {MAX_NAME_CHARS} printable characters"));
    }
    Ok(name.to_owned())
}

/// The user of a connection in open mode: `?name=` (user id `g_NAME`), or a guest
/// with 64 random bits in its id (`g_` and 16 hex digits: collisions, which would let
/// two guests share idempotency keys, are out of reach) and a short display name.
fn guest(name: Option<&str>) -> Result<User, String> {
    match name.filter(|name| !name.trim().is_empty()) {
        Some(name) => {
            let name = display_name(name)?;
            Ok(User { id: format!("g_{name}"), name })
        }
        None => {
            let random = rand::random::<u64>();
            Ok(User { id: format!("g_{random:016x}"), name: format!("guest-{:04x}", random >> 48) })
        }
    }
}

/// Compares two secrets in time that depends on their lengths only.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |differ, (x, y)| differ | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn authenticator(api_key: Option<&str>) -> Authenticator {
        Authenticator { mode: AuthMode::Open, jwt: None, api_key: api_key.map(Arc::from), metrics: Arc::default() }
    }

    fn bearer_headers(key: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, format!("Bearer {key}").parse().unwrap());
        headers
    }

    #[test]
    fn unnamed_guests_get_ids_with_64_random_bits() {
        let ids: HashSet<String> = (0..100_000).map(|_| guest(None).map(|user| user.id).unwrap()).collect();
        assert_eq!(ids.len(), 100_000, "no two guests share an id");
        let one = guest(None).unwrap();
        assert!(one.id.starts_with("g_") && one.id.len() == 18, "{}", one.id);
        assert!(one.name.starts_with("guest-") && one.name.len() == 10, "{}", one.name);
    }

    #[test]
    fn a_named_guest_keeps_its_name_as_id() {
        let named = guest(Some(" alice ")).unwrap();
        assert_eq!((named.id.as_str(), named.name.as_str()), ("g_alice", "alice"));
        assert!(guest(Some("a\u{7}b")).is_err());
    }

    #[test]
    fn without_a_key_only_loopback_rest_callers_are_admins() {
        let open = authenticator(None);
        for local in ["127.0.0.1:5000", "127.0.9.2:5000", "[::1]:5000"] {
            let caller = open.rest(&HeaderMap::new(), local.parse().unwrap()).unwrap();
            assert!(matches!(caller, Caller::Admin(_)), "{local}");
        }
        for remote in ["10.0.0.7:5000", "[2001:db8::1]:5000"] {
            let caller = open.rest(&HeaderMap::new(), remote.parse().unwrap()).unwrap();
            assert!(matches!(caller, Caller::Anonymous), "{remote}");
            assert!(open.rest(&bearer_headers("anything"), remote.parse().unwrap()).is_err(), "{remote}");
        }
    }

    #[test]
    fn with_a_key_every_rest_caller_needs_it_loopback_included() {
        let keyed = authenticator(Some("k3y"));
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let remote: SocketAddr = "10.0.0.7:5000".parse().unwrap();
        assert!(matches!(keyed.rest(&HeaderMap::new(), local).unwrap(), Caller::Anonymous));
        assert!(keyed.rest(&bearer_headers("nope"), remote).is_err());
        assert!(matches!(keyed.rest(&bearer_headers("k3y"), remote).unwrap(), Caller::Admin(_)));
    }

    #[test]
    fn secrets_compare_by_content() {
        assert!(same_secret(b"k3y", b"k3y"));
        assert!(!same_secret(b"k3y", b"k3z"));
        assert!(!same_secret(b"k3y", b"k3y!"));
        assert!(!same_secret(b"", b"k"));
    }
}
