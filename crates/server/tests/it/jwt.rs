//! Signing test tokens: HS256 with a shared secret for most tests, ES256 and EdDSA with
//! keys generated here (rcgen), and hand-made tokens the signing library refuses to
//! write (`alg: none`).

use std::{path::PathBuf, time::SystemTime};

use bavard::config::ServeConfig;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// The HS256 secret of the test servers.
pub const SECRET: &str = "bavard-test-secret-0123456789abcdef";

/// Now, in seconds since the epoch (as `exp` and `nbf` count).
pub fn now() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Claims for `sub` expiring `exp_offset_secs` from now (negative: already expired).
pub fn claims(sub: &str, exp_offset_secs: i64) -> Value {
    json!({"sub": sub, "exp": now() + exp_offset_secs})
}

/// `claims` signed with HS256 and `secret`.
pub fn sign_hs256(secret: &str, claims: &Value) -> String {
    sign(Algorithm::HS256, &EncodingKey::from_secret(secret.as_bytes()), claims)
}

/// `claims` signed with `algorithm` and `key`.
pub fn sign(algorithm: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(algorithm), claims, key).unwrap()
}

/// An HS256 token for `sub` with an optional `name` and `role`, expiring
/// `exp_offset_secs` from now.
pub fn hs256(secret: &str, sub: &str, name: Option<&str>, role: Option<&str>, exp_offset_secs: i64) -> String {
    let mut claims = claims(sub, exp_offset_secs);
    if let Some(name) = name {
        claims["name"] = name.into();
    }
    if let Some(role) = role {
        claims["role"] = role.into();
    }
    sign_hs256(secret, &claims)
}

/// A token of the test secret for `sub`, valid for an hour (`name` defaults to the sub).
pub fn token(sub: &str) -> String {
    hs256(SECRET, sub, None, None, 3600)
}

/// A server admin's token (`role: admin`), valid for an hour.
pub fn admin_token(sub: &str) -> String {
    hs256(SECRET, sub, None, Some("admin"), 3600)
}

/// An unsigned token: header `{"alg":"none"}`, the claims, and an empty signature.
pub fn unsigned(claims: &Value) -> String {
    let header = base64url(br#"{"alg":"none","typ":"JWT"}"#);
    format!("{header}.{}.", base64url(claims.to_string().as_bytes()))
}

/// Base64url without padding, as JWTs write their parts.
pub fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, byte)| n | (u32::from(*byte) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Settings: open mode (guests welcome) where tokens of [`SECRET`] sign users in.
pub fn with_secret(config: &mut ServeConfig) {
    config.jwt_secret = Some(SECRET.to_owned());
}

/// The REST API key of the servers that have one.
pub const API_KEY: &str = "test-api-key";

/// Settings: [`with_secret`], and REST callers need the API key to be admins (without
/// it, they are anonymous or the user of their JWT).
pub fn with_secret_and_key(config: &mut ServeConfig) {
    with_secret(config);
    config.api_key = Some(API_KEY.to_owned());
}

/// Settings: every WebSocket needs a token of [`SECRET`].
pub fn jwt_only(config: &mut ServeConfig) {
    config.auth = bavard::config::AuthMode::Jwt;
    config.jwt_secret = Some(SECRET.to_owned());
}

/// A key pair generated for one test: the private key to sign with, and the public key
/// in PEM, also written to a file for `jwt_public_key`.
pub struct KeyPair {
    pub algorithm: Algorithm,
    pub private: EncodingKey,
    pub public_pem: String,
    pub public_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl KeyPair {
    /// A fresh EC P-256 key pair (ES256).
    pub fn es256() -> Self {
        Self::generate(&rcgen::PKCS_ECDSA_P256_SHA256, Algorithm::ES256, EncodingKey::from_ec_pem)
    }

    /// A fresh Ed25519 key pair (EdDSA).
    pub fn ed25519() -> Self {
        Self::generate(&rcgen::PKCS_ED25519, Algorithm::EdDSA, EncodingKey::from_ed_pem)
    }

    fn generate(
        kind: &'static rcgen::SignatureAlgorithm,
        algorithm: Algorithm,
        private: fn(&[u8]) -> jsonwebtoken::errors::Result<EncodingKey>,
    ) -> Self {
        let pair = rcgen::KeyPair::generate_for(kind).unwrap();
        let private = private(pair.serialize_pem().as_bytes()).unwrap();
        let public_pem = pair.public_key_pem();
        let dir = tempfile::tempdir().unwrap();
        let public_file = dir.path().join("public.pem");
        std::fs::write(&public_file, &public_pem).unwrap();
        Self { algorithm, private, public_pem, public_file, _dir: dir }
    }

    /// `claims` signed with this pair's private key and algorithm.
    pub fn sign(&self, claims: &Value) -> String {
        sign(self.algorithm, &self.private, claims)
    }
}

/// The helpers themselves, checked with the library's own verifier, so that a failure
/// elsewhere is the server's and not a badly made token's.
#[test]
fn the_helpers_make_tokens_the_library_verifies() {
    use jsonwebtoken::{decode, DecodingKey, Validation};
    assert_eq!(base64url(b"f"), "Zg");
    assert_eq!(base64url(b"fo"), "Zm8");
    assert_eq!(base64url(b"foo"), "Zm9v");
    assert_eq!(base64url(b"\xfb\xff"), "-_8");
    let hs = hs256(SECRET, "alice", Some("Alice"), Some("admin"), 60);
    let decoded =
        decode::<Value>(&hs, &DecodingKey::from_secret(SECRET.as_bytes()), &Validation::new(Algorithm::HS256)).unwrap();
    assert_eq!((&decoded.claims["sub"], &decoded.claims["name"]), (&json!("alice"), &json!("Alice")));
    let es = KeyPair::es256();
    let key = DecodingKey::from_ec_pem(es.public_pem.as_bytes()).unwrap();
    decode::<Value>(&es.sign(&claims("e", 60)), &key, &Validation::new(Algorithm::ES256)).unwrap();
    let ed = KeyPair::ed25519();
    let key = DecodingKey::from_ed_pem(ed.public_pem.as_bytes()).unwrap();
    decode::<Value>(&ed.sign(&claims("d", 60)), &key, &Validation::new(Algorithm::EdDSA)).unwrap();
    let none = unsigned(&claims("n", 60));
    assert_eq!(none.split('.').count(), 3);
    assert!(none.ends_with('.'));
}
