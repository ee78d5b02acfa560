//! JWT verification: the key comes from `--jwt-secret` (HS256) or `--jwt-public-key` (a PEM
//! public key: RSA => RS256, EC P-256 => ES256, Ed25519 => EdDSA), and only that one algorithm
//! is accepted, whatever a token's header says (no `none`, no algorithm confusion).
//!
//! [`JwtVerifier::verify`] checks the signature with `jsonwebtoken`, then checks the claims
//! itself against the clock it is given (no leeway): `exp` required, `nbf` when present,
//! `aud` and `iss` when configured, and a `sub` usable as a user id. The header's `alg` is
//! read before anything else, so a token signed with another algorithm gets
//! [`TokenError::WrongAlgorithm`] rather than a vaguer error.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

/// Longer tokens are refused without being parsed.
const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Longest `sub`, in characters.
const MAX_SUBJECT_CHARS: usize = 128;
/// Longest display name, in characters (after trimming).
const MAX_NAME_CHARS: usize = 32;
/// 9999-12-31T23:59:59Z: later `exp`/`nbf` are refused, so that callers may turn them into
/// dates without overflowing.
const MAX_NUMERIC_DATE: u64 = 253_402_300_799;
/// Smallest RSA modulus accepted, in bits.
const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus the RustCrypto `rsa` crate verifies with, in bits.
const MAX_RSA_BITS: usize = 4096;

/// Verified claims of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The user id (`sub`): 1 to 128 characters, no control characters, not starting with
    /// `g_` (guests) or `api:` (REST authors).
    pub sub: String,
    /// The display name (`name`), trimmed; `None` when absent or unusable (not a string,
    /// empty, longer than 32 characters, control characters): the caller then defaults it.
    pub name: Option<String>,
    /// The server-wide role (`role`), when it is a string; `admin` is a server-wide moderator.
    pub role: Option<String>,
    /// When the token expires (`exp`), in seconds since the Unix epoch.
    pub exp: u64,
}

impl Claims {
    /// Whether the token makes a server admin (`role` is `admin`).
    pub fn is_admin(&self) -> bool {
        self.role.as_deref() == Some("admin")
    }
}

/// Why a token was refused; `Display` is a message for the client (the body of the 401).
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Not a JWT at all: too long, not three base64url parts, bad JSON, a claim of the wrong type.
    #[error("the token is not a well-formed JWT ({0}): send it exactly as its issuer made it")]
    Malformed(String),
    /// `exp` is now or in the past.
    #[error("the token has expired: get a fresh one")]
    Expired,
    /// `nbf` is in the future.
    #[error("the token is not valid yet (its nbf is in the future): wait, or check the issuer's clock")]
    NotYetValid,
    /// The signature does not match the configured key.
    #[error("the token's signature does not match the server's key: it was signed with another key, or altered")]
    BadSignature,
    /// The header names another algorithm than the key's (including `none`).
    #[error("the token is not signed with {expected}, the only algorithm this server accepts")]
    WrongAlgorithm {
        /// The one algorithm accepted, as [`JwtVerifier::algorithm`] names it.
        expected: &'static str,
    },
    /// `aud` does not name the configured audience.
    #[error("the token is meant for another audience (aud): get a token issued for this server")]
    WrongAudience,
    /// `iss` is not the configured issuer.
    #[error("the token comes from an issuer (iss) this server does not trust: get one from the configured issuer")]
    WrongIssuer,
    /// A claim the server requires is absent (`exp`, `sub`, and `aud`/`iss` when configured).
    #[error("the token has no {0} claim, which this server requires")]
    MissingClaim(&'static str),
    /// `sub` cannot be a user id; the text says why.
    #[error(
        "the token's sub claim cannot be a user id: {0}; it must be 1 to 128 characters, without control \
         characters, not starting with g_ or api:"
    )]
    BadSubject(String),
}

impl TokenError {
    /// A short label for metrics (`bavard_auth_failures_total{reason=...}`).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::BadSignature => "bad_signature",
            Self::WrongAlgorithm { .. } => "wrong_algorithm",
            Self::WrongAudience => "wrong_audience",
            Self::WrongIssuer => "wrong_issuer",
            Self::MissingClaim(_) => "missing_claim",
            Self::BadSubject(_) => "bad_subject",
        }
    }
}

/// Why the JWT settings cannot be used (an error at startup).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// `--jwt-secret` and `--jwt-public-key` both given.
    #[error(
        "both --jwt-secret and --jwt-public-key are set: give only one, the secret of HS256 tokens or the \
         PEM public key of RS256, ES256 or EdDSA tokens"
    )]
    BothGiven,
    /// `--jwt-secret` is empty (or only spaces).
    #[error("--jwt-secret is empty: give the secret the HS256 tokens are signed with")]
    EmptySecret,
    /// `--jwt-audience` or `--jwt-issuer` is empty.
    #[error("{flag} is empty: give the value tokens must carry, or leave the flag out")]
    EmptySetting {
        /// The flag, e.g. `--jwt-audience`.
        flag: &'static str,
    },
    /// The public key file cannot be read.
    #[error(
        "cannot read the JWT public key {}: {source}: check the path given to --jwt-public-key and that \
         the server may read it",
        path.display()
    )]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What reading it said.
        source: std::io::Error,
    },
    /// The file has no PEM block.
    #[error(
        "{} is not a PEM file: --jwt-public-key needs a PEM public key (-----BEGIN PUBLIC KEY-----), \
         e.g. from `openssl pkey -in private.pem -pubout -out public.pem`",
        path.display()
    )]
    NotPem {
        /// The file.
        path: PathBuf,
    },
    /// The file holds a private key.
    #[error(
        "{} holds a private key ({label}), not a public key: give --jwt-public-key the public key \
         (`openssl pkey -in {} -pubout -out public.pem`) and keep the private key with whoever issues the tokens",
        path.display(),
        path.display()
    )]
    PrivateKey {
        /// The file.
        path: PathBuf,
        /// Its PEM label, e.g. `PRIVATE KEY`.
        label: String,
    },
    /// The file holds a certificate.
    #[error(
        "{} holds a certificate, not a public key: give --jwt-public-key its public key \
         (`openssl x509 -in {} -pubkey -noout > public.pem`)",
        path.display(),
        path.display()
    )]
    Certificate {
        /// The file.
        path: PathBuf,
    },
    /// A PEM public key of a kind or size that is not supported, or damaged.
    #[error(
        "{} is not a supported public key ({detail}): give an RSA (RS256, 2048 to 4096 bits), EC P-256 \
         (ES256) or Ed25519 (EdDSA) public key in PEM",
        path.display()
    )]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
}

/// The kinds of key, each with its one algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Hmac,
    Rsa,
    Ec,
    Ed,
}

impl KeyKind {
    fn algorithm(self) -> Algorithm {
        match self {
            Self::Hmac => Algorithm::HS256,
            Self::Rsa => Algorithm::RS256,
            Self::Ec => Algorithm::ES256,
            Self::Ed => Algorithm::EdDSA,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Hmac => "HS256",
            Self::Rsa => "RS256",
            Self::Ec => "ES256",
            Self::Ed => "EdDSA",
        }
    }
}

/// Verifies tokens against the configured key, audience and issuer.
#[derive(Debug, Clone)]
pub struct JwtVerifier {
    key: DecodingKey,
    kind: KeyKind,
    /// Signature and algorithm only: the claims are checked by [`JwtVerifier::check_claims`].
    validation: Validation,
    audience: Option<String>,
    issuer: Option<String>,
}

impl JwtVerifier {
    /// From the flags; `Ok(None)` when neither `--jwt-secret` nor `--jwt-public-key` is given
    /// (`audience` and `issuer` are then ignored).
    pub fn from_settings(
        secret: Option<&str>,
        public_key: Option<&Path>,
        audience: Option<&str>,
        issuer: Option<&str>,
    ) -> Result<Option<Self>, KeyError> {
        let (key, kind) = match (secret, public_key) {
            (None, None) => return Ok(None),
            (Some(_), Some(_)) => return Err(KeyError::BothGiven),
            (Some(secret), None) => {
                if secret.trim().is_empty() {
                    return Err(KeyError::EmptySecret);
                }
                (DecodingKey::from_secret(secret.as_bytes()), KeyKind::Hmac)
            }
            (None, Some(path)) => load_public_key(path)?,
        };
        let audience = non_empty(audience, "--jwt-audience")?;
        let issuer = non_empty(issuer, "--jwt-issuer")?;
        let mut validation = Validation::new(kind.algorithm());
        // The time and audience checks are ours (against the clock given to `verify`).
        validation.required_spec_claims.clear();
        validation.leeway = 0;
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        Ok(Some(Self { key, kind, validation, audience, issuer }))
    }

    /// The algorithm accepted: "HS256", "RS256", "ES256" or "EdDSA".
    pub fn algorithm(&self) -> &'static str {
        self.kind.name()
    }

    /// Verifies `token` at time `now_secs` (seconds since the Unix epoch; pass the real clock
    /// in production, a fixed one in tests).
    pub fn verify(&self, token: &str, now_secs: u64) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed(format!(
                "it is {} bytes long, more than the {MAX_TOKEN_BYTES} allowed",
                token.len()
            )));
        }
        let mut parts = token.split('.');
        let (Some(header), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(TokenError::Malformed("a JWT is three base64url parts separated by dots".to_owned()));
        };
        let header = json_part(header, "header")?;
        match header.get("alg") {
            Some(Value::String(alg)) if alg == self.algorithm() => {}
            Some(Value::String(_)) => return Err(TokenError::WrongAlgorithm { expected: self.algorithm() }),
            _ => return Err(TokenError::Malformed("its header has no alg".to_owned())),
        }
        if header.contains_key("crit") {
            return Err(TokenError::Malformed(
                "its header lists critical extensions (crit), which this server does not support".to_owned(),
            ));
        }
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation)
            .map_err(|err| self.decode_error(&err))?;
        self.check_claims(&data.claims, now_secs)
    }

    /// Maps what `jsonwebtoken` refused (the signature, the algorithm, the encoding).
    fn decode_error(&self, err: &jsonwebtoken::errors::Error) -> TokenError {
        match err.kind() {
            ErrorKind::InvalidSignature => TokenError::BadSignature,
            ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
                TokenError::WrongAlgorithm { expected: self.algorithm() }
            }
            ErrorKind::InvalidToken => {
                TokenError::Malformed("a JWT is three base64url parts separated by dots".to_owned())
            }
            ErrorKind::Base64(e) => TokenError::Malformed(format!("a part is not base64url: {e}")),
            ErrorKind::Json(e) => TokenError::Malformed(format!("a part is not the JSON expected: {e}")),
            ErrorKind::Utf8(_) => TokenError::Malformed("a part is not UTF-8".to_owned()),
            // Key errors cannot happen (the key was checked at startup); never accept.
            _ => TokenError::BadSignature,
        }
    }

    /// Checks the claims of a token whose signature is good.
    fn check_claims(&self, claims: &Map<String, Value>, now: u64) -> Result<Claims, TokenError> {
        let exp = numeric_date(claims, "exp")?.ok_or(TokenError::MissingClaim("exp"))?;
        if now >= exp {
            return Err(TokenError::Expired);
        }
        if let Some(nbf) = numeric_date(claims, "nbf")? {
            if now < nbf {
                return Err(TokenError::NotYetValid);
            }
        }
        if let Some(expected) = &self.audience {
            match claims.get("aud") {
                None | Some(Value::Null) => return Err(TokenError::MissingClaim("aud")),
                Some(Value::String(aud)) if aud == expected => {}
                Some(Value::String(_)) => return Err(TokenError::WrongAudience),
                Some(Value::Array(auds)) if auds.iter().all(Value::is_string) => {
                    if !auds.iter().any(|aud| aud.as_str() == Some(expected)) {
                        return Err(TokenError::WrongAudience);
                    }
                }
                Some(_) => {
                    return Err(TokenError::Malformed(
                        "the aud claim must be a string or an array of strings".to_owned(),
                    ))
                }
            }
        }
        if let Some(expected) = &self.issuer {
            match claims.get("iss") {
                None | Some(Value::Null) => return Err(TokenError::MissingClaim("iss")),
                Some(Value::String(iss)) if iss == expected => {}
                Some(Value::String(_)) => return Err(TokenError::WrongIssuer),
                Some(_) => return Err(TokenError::Malformed("the iss claim must be a string".to_owned())),
            }
        }
        let sub = match claims.get("sub") {
            None | Some(Value::Null) => return Err(TokenError::MissingClaim("sub")),
            Some(Value::String(sub)) => check_subject(sub)?,
            Some(_) => return Err(TokenError::BadSubject("it is not a string".to_owned())),
        };
        let name = claims.get("name").and_then(Value::as_str).and_then(display_name);
        let role = claims.get("role").and_then(Value::as_str).map(str::to_owned);
        Ok(Claims { sub, name, role, exp })
    }
}

/// `None` for an absent setting, an error for an empty one.
fn non_empty(value: Option<&str>, flag: &'static str) -> Result<Option<String>, KeyError> {
    match value {
        None => Ok(None),
        Some(v) if v.trim().is_empty() => Err(KeyError::EmptySetting { flag }),
        Some(v) => Ok(Some(v.to_owned())),
    }
}

/// Decodes the base64url JSON object `part` of a token (`what` names it in errors).
fn json_part(part: &str, what: &str) -> Result<Map<String, Value>, TokenError> {
    let bytes =
        URL_SAFE_NO_PAD.decode(part).map_err(|e| TokenError::Malformed(format!("its {what} is not base64url: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| TokenError::Malformed(format!("its {what} is not a JSON object: {e}")))
}

/// A NumericDate claim (`exp`, `nbf`): `None` when absent; fractions are dropped.
fn numeric_date(claims: &Map<String, Value>, claim: &'static str) -> Result<Option<u64>, TokenError> {
    let secs = match claims.get(claim) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_u64().or_else(|| {
            n.as_f64().filter(|f| f.is_finite() && *f >= 0.0 && *f <= MAX_NUMERIC_DATE as f64).map(|f| f as u64)
        }),
        Some(_) => None,
    };
    match secs {
        Some(secs) if secs <= MAX_NUMERIC_DATE => Ok(Some(secs)),
        _ => Err(TokenError::Malformed(format!(
            "the {claim} claim must be a number of seconds since 1970, before the year 10000"
        ))),
    }
}

/// `sub` as a user id, or why it cannot be one.
fn check_subject(sub: &str) -> Result<String, TokenError> {
    let chars = sub.chars().count();
    let why = if chars == 0 {
        "it is empty".to_owned()
    } else if chars > MAX_SUBJECT_CHARS {
        format!("it is {chars} characters long")
    } else if sub.chars().any(char::is_control) {
        "it contains control characters".to_owned()
    } else if sub.starts_with("g_") {
        "it starts with g_, which is reserved for guests".to_owned()
    } else if sub.starts_with("api:") {
        "it starts with api:, which is reserved for REST API authors".to_owned()
    } else {
        return Ok(sub.to_owned());
    };
    Err(TokenError::BadSubject(why))
}

/// The trimmed display name, when it is usable.
fn display_name(name: &str) -> Option<String> {
    let name = name.trim();
    let chars = name.chars().count();
    ((1..=MAX_NAME_CHARS).contains(&chars) && !name.chars().any(char::is_control)).then(|| name.to_owned())
}

/// Reads the PEM public key at `path` and finds its kind.
fn load_public_key(path: &Path) -> Result<(DecodingKey, KeyKind), KeyError> {
    let pem = std::fs::read(path).map_err(|source| KeyError::Unreadable { path: path.to_owned(), source })?;
    parse_public_key(&pem, path)
}

/// The key in `pem` (read from `path`, named in errors) and its kind.
fn parse_public_key(pem: &[u8], path: &Path) -> Result<(DecodingKey, KeyKind), KeyError> {
    let unsupported = |detail: &str| KeyError::Unsupported { path: path.to_owned(), detail: detail.to_owned() };
    let label = pem_label(pem).ok_or_else(|| KeyError::NotPem { path: path.to_owned() })?;
    if label.ends_with("PRIVATE KEY") {
        return Err(KeyError::PrivateKey { path: path.to_owned(), label });
    }
    if label.ends_with("CERTIFICATE") {
        return Err(KeyError::Certificate { path: path.to_owned() });
    }
    if label != "PUBLIC KEY" && label != "RSA PUBLIC KEY" {
        return Err(unsupported(&format!("its PEM block is a {label}, not a PUBLIC KEY")));
    }
    // Each of these only accepts its own kind of key (by the key's algorithm OID).
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        // jsonwebtoken parses an RSA key only when verifying, and then refuses keys
        // over 4096 bits: check it now, so a bad key is a startup error, not 401s.
        return match rsa_modulus_bits(key.as_bytes()) {
            Some(bits) if (MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) => Ok((key, KeyKind::Rsa)),
            Some(bits) => Err(unsupported(&format!("an RSA key of {bits} bits"))),
            None => Err(unsupported("a damaged RSA key")),
        };
    }
    if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        return if usable(&key, KeyKind::Ec) {
            Ok((key, KeyKind::Ec))
        } else {
            Err(unsupported("an EC key on another curve than P-256, or damaged"))
        };
    }
    if let Ok(key) = DecodingKey::from_ed_pem(pem) {
        // The length is checked first: jsonwebtoken 10 slices the key to 32 bytes, and
        // would panic on a shorter one.
        return if key.as_bytes().len() == 32 && usable(&key, KeyKind::Ed) {
            Ok((key, KeyKind::Ed))
        } else {
            Err(unsupported("a damaged Ed25519 key"))
        };
    }
    Err(unsupported("neither RSA, EC nor Ed25519, or damaged"))
}

/// Whether jsonwebtoken can make a verifier of `kind` from `key` (it parses EC and Ed25519
/// keys then; the result of verifying an empty signature does not matter).
fn usable(key: &DecodingKey, kind: KeyKind) -> bool {
    jsonwebtoken::crypto::verify("", b"", key, kind.algorithm()).is_ok()
}

/// The label of the first PEM block (`PUBLIC KEY` in `-----BEGIN PUBLIC KEY-----`).
fn pem_label(pem: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(pem);
    let start = text.find("-----BEGIN ")? + "-----BEGIN ".len();
    let rest = text.get(start..)?;
    let label = rest.get(..rest.find("-----")?)?;
    (!label.is_empty() && !label.contains('\n')).then(|| label.to_owned())
}

/// The size in bits of the modulus of a PKCS#1 `RSAPublicKey` (DER `SEQUENCE { n INTEGER,
/// e INTEGER }`), or `None` when `der` is not one (or its exponent is out of bounds).
fn rsa_modulus_bits(der: &[u8]) -> Option<usize> {
    let (0x30, seq, []) = der_element(der)? else { return None };
    let (0x02, n, seq) = der_element(seq)? else { return None };
    let (0x02, e, []) = der_element(seq)? else { return None };
    let n = strip_leading_zeros(n);
    let e = strip_leading_zeros(e);
    if e.len() > 8 {
        return None;
    }
    let e = e.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    // The bounds of the RustCrypto `rsa` crate.
    if !(2..(1 << 33)).contains(&e) {
        return None;
    }
    let first = n.first()?;
    Some(n.len() * 8 - first.leading_zeros() as usize)
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let zeros = bytes.iter().take_while(|&&b| b == 0).count();
    bytes.get(zeros..).unwrap_or_default()
}

/// One DER element: (tag, contents, what follows).
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (len, rest) = rest.split_at(count);
        (len.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b)), rest)
    };
    if rest.len() < len {
        return None;
    }
    let (contents, rest) = rest.split_at(len);
    Some((tag, contents, rest))
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    use super::*;

    const SECRET: &str = "a test secret, long enough for HS256";
    const NOW: u64 = 1_800_000_000;

    const RSA_PRIVATE: &[u8] = include_bytes!("../../tests/keys/rsa_private.pem");
    const RSA_PUBLIC: &[u8] = include_bytes!("../../tests/keys/rsa_public.pem");
    const EC_PRIVATE: &[u8] = include_bytes!("../../tests/keys/ec_private.pem");
    const EC_PUBLIC: &[u8] = include_bytes!("../../tests/keys/ec_public.pem");
    const ED_PRIVATE: &[u8] = include_bytes!("../../tests/keys/ed25519_private.pem");
    const ED_PUBLIC: &[u8] = include_bytes!("../../tests/keys/ed25519_public.pem");

    fn file(contents: &[u8]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(contents).unwrap();
        file
    }

    fn hs() -> JwtVerifier {
        JwtVerifier::from_settings(Some(SECRET), None, None, None).unwrap().unwrap()
    }

    fn public(pem: &[u8]) -> JwtVerifier {
        public_with(pem, None, None)
    }

    fn public_with(pem: &[u8], audience: Option<&str>, issuer: Option<&str>) -> JwtVerifier {
        let file = file(pem);
        JwtVerifier::from_settings(None, Some(file.path()), audience, issuer).unwrap().unwrap()
    }

    fn key_error(pem: &[u8]) -> KeyError {
        let file = file(pem);
        JwtVerifier::from_settings(None, Some(file.path()), None, None).unwrap_err()
    }

    fn hs_key() -> EncodingKey {
        EncodingKey::from_secret(SECRET.as_bytes())
    }

    fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
        encode(&Header::new(alg), claims, key).unwrap()
    }

    fn hs_token(claims: &Value) -> String {
        sign(Algorithm::HS256, &hs_key(), claims)
    }

    fn rs_token(claims: &Value) -> String {
        sign(Algorithm::RS256, &EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(), claims)
    }

    fn b64(json: &Value) -> String {
        URL_SAFE_NO_PAD.encode(json.to_string())
    }

    fn good() -> Value {
        json!({"sub": "alice", "name": "Alice", "role": "admin", "exp": NOW + 60})
    }

    fn expect_good(verifier: &JwtVerifier, token: &str) {
        let claims = verifier.verify(token, NOW).unwrap();
        assert_eq!(
            claims,
            Claims { sub: "alice".into(), name: Some("Alice".into()), role: Some("admin".into()), exp: NOW + 60 }
        );
        assert!(claims.is_admin());
    }

    #[test]
    fn each_algorithm_accepts_a_good_token() {
        let verifier = hs();
        assert_eq!(verifier.algorithm(), "HS256");
        expect_good(&verifier, &hs_token(&good()));

        let verifier = public(RSA_PUBLIC);
        assert_eq!(verifier.algorithm(), "RS256");
        expect_good(&verifier, &rs_token(&good()));

        let verifier = public(EC_PUBLIC);
        assert_eq!(verifier.algorithm(), "ES256");
        expect_good(&verifier, &sign(Algorithm::ES256, &EncodingKey::from_ec_pem(EC_PRIVATE).unwrap(), &good()));

        let verifier = public(ED_PUBLIC);
        assert_eq!(verifier.algorithm(), "EdDSA");
        expect_good(&verifier, &sign(Algorithm::EdDSA, &EncodingKey::from_ed_pem(ED_PRIVATE).unwrap(), &good()));
    }

    #[test]
    fn optional_claims_may_be_absent() {
        let claims = hs().verify(&hs_token(&json!({"sub": "bob", "exp": NOW + 1})), NOW).unwrap();
        assert_eq!(claims, Claims { sub: "bob".into(), name: None, role: None, exp: NOW + 1 });
        assert!(!claims.is_admin());
        let claims = hs().verify(&hs_token(&json!({"sub": "bob", "exp": NOW + 1, "role": "Admin"})), NOW).unwrap();
        assert!(!claims.is_admin());
    }

    #[test]
    fn expiry_is_checked_against_the_given_clock_without_leeway() {
        let verifier = hs();
        let token = hs_token(&good());
        assert!(verifier.verify(&token, NOW + 59).is_ok());
        assert!(matches!(verifier.verify(&token, NOW + 60), Err(TokenError::Expired)));
        assert!(matches!(verifier.verify(&token, NOW + 61), Err(TokenError::Expired)));
        // Long expired by the real clock: only the given one counts.
        let old = hs_token(&json!({"sub": "alice", "exp": 1_000_000}));
        assert!(verifier.verify(&old, 999_999).is_ok());
        assert!(matches!(verifier.verify(&old, NOW), Err(TokenError::Expired)));
    }

    #[test]
    fn nbf_is_checked_when_present() {
        let verifier = hs();
        let token = hs_token(&json!({"sub": "alice", "exp": NOW + 60, "nbf": NOW + 10}));
        assert!(matches!(verifier.verify(&token, NOW), Err(TokenError::NotYetValid)));
        assert!(matches!(verifier.verify(&token, NOW + 9), Err(TokenError::NotYetValid)));
        assert!(verifier.verify(&token, NOW + 10).is_ok());
    }

    #[test]
    fn exp_is_required_and_must_be_a_date() {
        let verifier = hs();
        let err = verifier.verify(&hs_token(&json!({"sub": "alice"})), NOW).unwrap_err();
        assert!(matches!(err, TokenError::MissingClaim("exp")), "{err:?}");
        assert!(err.to_string().contains("exp"));
        for exp in [json!("soon"), json!(-5), json!(1e300), json!(MAX_NUMERIC_DATE + 1), json!([1])] {
            let err = verifier.verify(&hs_token(&json!({"sub": "alice", "exp": exp})), NOW).unwrap_err();
            assert!(matches!(err, TokenError::Malformed(_)), "{exp}: {err:?}");
        }
        let claims = verifier.verify(&hs_token(&json!({"sub": "alice", "exp": (NOW + 60) as f64 + 0.5})), NOW);
        assert_eq!(claims.unwrap().exp, NOW + 60);
    }

    #[test]
    fn a_token_signed_with_another_key_is_refused() {
        let other = sign(Algorithm::HS256, &EncodingKey::from_secret(b"another secret"), &good());
        assert!(matches!(hs().verify(&other, NOW), Err(TokenError::BadSignature)));

        let other_ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let other_ec = EncodingKey::from_ec_pem(other_ec.serialize_pem().as_bytes()).unwrap();
        let token = sign(Algorithm::ES256, &other_ec, &good());
        assert!(matches!(public(EC_PUBLIC).verify(&token, NOW), Err(TokenError::BadSignature)));

        // Claims changed after signing.
        let forged = b64(&json!({"sub": "mallory", "exp": NOW + 60}));
        for (verifier, token) in [
            (public(RSA_PUBLIC), rs_token(&good())),
            (public(ED_PUBLIC), sign(Algorithm::EdDSA, &EncodingKey::from_ed_pem(ED_PRIVATE).unwrap(), &good())),
            (hs(), hs_token(&good())),
        ] {
            let parts: Vec<&str> = token.split('.').collect();
            let tampered = format!("{}.{forged}.{}", parts[0], parts[2]);
            let err = verifier.verify(&tampered, NOW).unwrap_err();
            assert!(matches!(err, TokenError::BadSignature), "{}: {err:?}", verifier.algorithm());
            let truncated = format!("{}.{}.", parts[0], parts[1]);
            assert!(verifier.verify(&truncated, NOW).is_err());
        }
    }

    #[test]
    fn alg_none_is_refused() {
        let header = b64(&json!({"alg": "none", "typ": "JWT"}));
        let token = format!("{header}.{}.", b64(&good()));
        for verifier in [hs(), public(RSA_PUBLIC), public(EC_PUBLIC), public(ED_PUBLIC)] {
            let err = verifier.verify(&token, NOW).unwrap_err();
            assert!(matches!(err, TokenError::WrongAlgorithm { .. }), "{err:?}");
            assert_eq!(err.reason(), "wrong_algorithm");
            assert!(err.to_string().contains(verifier.algorithm()));
        }
        let header = b64(&json!({"alg": "None"}));
        let token = format!("{header}.{}.", b64(&good()));
        assert!(matches!(hs().verify(&token, NOW), Err(TokenError::WrongAlgorithm { expected: "HS256" })));
    }

    #[test]
    fn algorithm_confusion_is_refused() {
        // HS256 with the RSA public key (as the PEM text) as the HMAC secret.
        let token = sign(Algorithm::HS256, &EncodingKey::from_secret(RSA_PUBLIC), &good());
        assert!(matches!(
            public(RSA_PUBLIC).verify(&token, NOW),
            Err(TokenError::WrongAlgorithm { expected: "RS256" })
        ));
        // Even through jsonwebtoken alone, with our validation (the header check bypassed).
        let verifier = public(RSA_PUBLIC);
        let err = jsonwebtoken::decode::<Map<String, Value>>(&token, &verifier.key, &verifier.validation).unwrap_err();
        assert!(matches!(verifier.decode_error(&err), TokenError::WrongAlgorithm { .. }));

        let token = sign(Algorithm::HS256, &EncodingKey::from_secret(EC_PUBLIC), &good());
        assert!(matches!(public(EC_PUBLIC).verify(&token, NOW), Err(TokenError::WrongAlgorithm { .. })));
    }

    #[test]
    fn a_token_of_another_algorithm_is_refused() {
        let err = public(EC_PUBLIC).verify(&rs_token(&good()), NOW).unwrap_err();
        assert!(matches!(err, TokenError::WrongAlgorithm { expected: "ES256" }), "{err:?}");
        assert!(matches!(hs().verify(&rs_token(&good()), NOW), Err(TokenError::WrongAlgorithm { .. })));
        assert!(matches!(public(RSA_PUBLIC).verify(&hs_token(&good()), NOW), Err(TokenError::WrongAlgorithm { .. })));
        // RS384 with the right RSA key: still only RS256.
        let token = sign(Algorithm::RS384, &EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(), &good());
        assert!(matches!(public(RSA_PUBLIC).verify(&token, NOW), Err(TokenError::WrongAlgorithm { .. })));
    }

    #[test]
    fn audience_is_checked_when_configured() {
        let verifier = public_with(RSA_PUBLIC, Some("bavard"), None);
        let with = |aud: Value| {
            let mut claims = good();
            claims["aud"] = aud;
            verifier.verify(&rs_token(&claims), NOW)
        };
        assert!(with(json!("bavard")).is_ok());
        assert!(with(json!(["other", "bavard"])).is_ok());
        assert!(matches!(with(json!("other")), Err(TokenError::WrongAudience)));
        assert!(matches!(with(json!(["other"])), Err(TokenError::WrongAudience)));
        assert!(matches!(with(json!([])), Err(TokenError::WrongAudience)));
        assert!(matches!(with(json!(7)), Err(TokenError::Malformed(_))));
        assert!(matches!(verifier.verify(&rs_token(&good()), NOW), Err(TokenError::MissingClaim("aud"))));
        // Not configured: any aud goes.
        let mut claims = good();
        claims["aud"] = json!("elsewhere");
        assert!(public(RSA_PUBLIC).verify(&rs_token(&claims), NOW).is_ok());
    }

    #[test]
    fn issuer_is_checked_when_configured() {
        let verifier =
            JwtVerifier::from_settings(Some(SECRET), None, None, Some("https://id.example")).unwrap().unwrap();
        let with = |iss: Value| {
            let mut claims = good();
            claims["iss"] = iss;
            verifier.verify(&hs_token(&claims), NOW)
        };
        assert!(with(json!("https://id.example")).is_ok());
        assert!(matches!(with(json!("https://evil.example")), Err(TokenError::WrongIssuer)));
        assert!(matches!(with(json!(["https://id.example"])), Err(TokenError::Malformed(_))));
        assert!(matches!(verifier.verify(&hs_token(&good()), NOW), Err(TokenError::MissingClaim("iss"))));
        let mut claims = good();
        claims["iss"] = json!("anyone");
        assert!(hs().verify(&hs_token(&claims), NOW).is_ok());
    }

    #[test]
    fn bad_subjects_are_refused() {
        let verifier = hs();
        let with = |sub: Value| verifier.verify(&hs_token(&json!({"sub": sub, "exp": NOW + 60})), NOW);
        for sub in [json!(""), json!("g_x"), json!("api:x"), json!("x".repeat(129)), json!("a\u{7}b"), json!(42)] {
            let err = with(sub.clone()).unwrap_err();
            assert!(matches!(err, TokenError::BadSubject(_)), "{sub}: {err:?}");
            assert_eq!(err.reason(), "bad_subject");
        }
        assert!(with(json!("g_x")).unwrap_err().to_string().contains("guests"));
        assert!(matches!(
            verifier.verify(&hs_token(&json!({"exp": NOW + 60})), NOW),
            Err(TokenError::MissingClaim("sub"))
        ));
        // 128 characters (256 bytes) is fine, and so are prefixes that only look alike.
        for sub in ["é".repeat(128), "G_x".to_owned(), "gx".to_owned(), "api".to_owned(), "x".to_owned()] {
            assert_eq!(with(json!(sub)).unwrap().sub, sub);
        }
    }

    #[test]
    fn unusable_names_fall_back_to_none() {
        let verifier = hs();
        let name = |name: Value| {
            verifier.verify(&hs_token(&json!({"sub": "s", "exp": NOW + 1, "name": name})), NOW).unwrap().name
        };
        assert_eq!(name(json!("  Alice B.  ")), Some("Alice B.".to_owned()));
        assert_eq!(name(json!("é".repeat(32))), Some("é".repeat(32)));
        assert_eq!(name(json!("Ali\u{1b}ce")), None);
        assert_eq!(name(json!("Alice\n")), Some("Alice".to_owned()));
        assert_eq!(name(json!("   ")), None);
        assert_eq!(name(json!("x".repeat(33))), None);
        assert_eq!(name(json!(12)), None);
        assert_eq!(name(Value::Null), None);
    }

    /// `message` (header.payload) with its HS256 signature.
    fn signed(message: &str) -> String {
        let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &hs_key(), Algorithm::HS256).unwrap();
        format!("{message}.{signature}")
    }

    #[test]
    fn garbage_is_malformed() {
        let verifier = hs();
        let header = b64(&json!({"alg": "HS256", "typ": "JWT"}));
        let valid = hs_token(&good());
        let signature = valid.rsplit('.').next().unwrap();
        let garbage = [
            String::new(),
            "garbage".to_owned(),
            "a.b".to_owned(),
            "a.b.c.d".to_owned(),
            "..".to_owned(),
            "!!!.@@@.###".to_owned(),
            format!("{valid}.{signature}"),
            format!("{}.{}.sig", b64(&json!("a string")), b64(&good())),
            format!("{}.{}.sig", b64(&json!({"typ": "JWT"})), b64(&good())),
            signed(&format!("{header}.bm90IGpzb24")),
            signed(&format!("{header}.{}", b64(&json!([1, 2])))),
            format!("{header}.{}.%%%", b64(&good())),
        ];
        for token in garbage {
            let err = verifier.verify(&token, NOW).unwrap_err();
            assert!(matches!(err, TokenError::Malformed(_)), "{token:?}: {err:?}");
            assert_eq!(err.reason(), "malformed");
        }
        let crit =
            encode(&Header { crit: Some(vec!["exp".into()]), ..Header::new(Algorithm::HS256) }, &good(), &hs_key());
        assert!(matches!(verifier.verify(&crit.unwrap(), NOW), Err(TokenError::Malformed(_))));
    }

    #[test]
    fn tokens_over_8_kib_are_refused_unparsed() {
        let verifier = hs();
        let mut claims = good();
        claims["pad"] = json!("x".repeat(MAX_TOKEN_BYTES));
        let token = hs_token(&claims);
        let err = verifier.verify(&token, NOW).unwrap_err();
        assert!(matches!(&err, TokenError::Malformed(m) if m.contains("bytes long")), "{err:?}");
        assert!(
            matches!(verifier.verify(&"a".repeat(MAX_TOKEN_BYTES + 1), NOW), Err(TokenError::Malformed(m)) if m.contains("bytes long"))
        );
        // Just under the limit is parsed.
        claims["pad"] = json!("");
        let overhead = hs_token(&claims).len();
        claims["pad"] = json!("x".repeat((MAX_TOKEN_BYTES - overhead) / 4 * 3));
        let token = hs_token(&claims);
        assert!(token.len() <= MAX_TOKEN_BYTES);
        assert!(verifier.verify(&token, NOW).is_ok());
    }

    #[test]
    fn every_error_has_a_reason_and_a_message() {
        let errors = [
            (TokenError::Malformed("x".into()), "malformed"),
            (TokenError::Expired, "expired"),
            (TokenError::NotYetValid, "not_yet_valid"),
            (TokenError::BadSignature, "bad_signature"),
            (TokenError::WrongAlgorithm { expected: "RS256" }, "wrong_algorithm"),
            (TokenError::WrongAudience, "wrong_audience"),
            (TokenError::WrongIssuer, "wrong_issuer"),
            (TokenError::MissingClaim("exp"), "missing_claim"),
            (TokenError::BadSubject("it is empty".into()), "bad_subject"),
        ];
        for (err, reason) in errors {
            assert_eq!(err.reason(), reason);
            assert!(err.to_string().starts_with("the token"), "{err}");
        }
    }

    #[test]
    fn no_key_means_no_verifier() {
        assert!(JwtVerifier::from_settings(None, None, None, None).unwrap().is_none());
        assert!(JwtVerifier::from_settings(None, None, Some("aud"), Some("iss")).unwrap().is_none());
    }

    #[test]
    fn bad_settings_are_refused_with_a_clear_message() {
        let err = JwtVerifier::from_settings(Some(""), None, None, None).unwrap_err();
        assert!(matches!(err, KeyError::EmptySecret));
        assert!(matches!(JwtVerifier::from_settings(Some("  "), None, None, None), Err(KeyError::EmptySecret)));
        let key = file(RSA_PUBLIC);
        assert!(matches!(
            JwtVerifier::from_settings(Some(SECRET), Some(key.path()), None, None),
            Err(KeyError::BothGiven)
        ));
        assert!(matches!(
            JwtVerifier::from_settings(Some(SECRET), None, Some(""), None),
            Err(KeyError::EmptySetting { flag: "--jwt-audience" })
        ));
        assert!(matches!(
            JwtVerifier::from_settings(Some(SECRET), None, None, Some(" ")),
            Err(KeyError::EmptySetting { flag: "--jwt-issuer" })
        ));

        let missing = Path::new("/nonexistent/bavard/jwt.pem");
        let err = JwtVerifier::from_settings(None, Some(missing), None, None).unwrap_err();
        assert!(matches!(err, KeyError::Unreadable { .. }), "{err:?}");
        assert!(err.to_string().contains("/nonexistent/bavard/jwt.pem"), "{err}");

        for not_pem in [&b"just some text"[..], b"", &[0xff, 0x00, 0x30, 0x82]] {
            assert!(matches!(key_error(not_pem), KeyError::NotPem { .. }));
        }

        for private in [RSA_PRIVATE, EC_PRIVATE, ED_PRIVATE] {
            let err = key_error(private);
            assert!(matches!(err, KeyError::PrivateKey { .. }), "{err:?}");
            assert!(err.to_string().contains("private key") && err.to_string().contains("-pubout"), "{err}");
        }
        let pkcs1 = b"-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----\n";
        assert!(matches!(key_error(pkcs1), KeyError::PrivateKey { .. }));

        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        assert!(matches!(key_error(cert.cert.pem().as_bytes()), KeyError::Certificate { .. }));

        let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let err = key_error(p384.public_key_pem().as_bytes());
        assert!(matches!(&err, KeyError::Unsupported { detail, .. } if detail.contains("P-256")), "{err:?}");

        let damaged = b"-----BEGIN PUBLIC KEY-----\nMAA=\n-----END PUBLIC KEY-----\n";
        assert!(matches!(key_error(damaged), KeyError::Unsupported { .. }));
        let other = b"-----BEGIN DH PARAMETERS-----\nMAA=\n-----END DH PARAMETERS-----\n";
        assert!(matches!(key_error(other), KeyError::Unsupported { .. }));
    }

    #[test]
    fn rsa_key_sizes_are_checked() {
        // A public key as PKCS#1, from the PKCS#8 test key: 2048 bits.
        let key = DecodingKey::from_rsa_pem(RSA_PUBLIC).unwrap();
        assert_eq!(rsa_modulus_bits(key.as_bytes()), Some(2048));
        // SEQUENCE { INTEGER 0x00ff (8 bits), INTEGER 65537 }.
        assert_eq!(rsa_modulus_bits(&[0x30, 0x09, 0x02, 0x02, 0x00, 0xff, 0x02, 0x03, 0x01, 0x00, 0x01]), Some(8));
        // Exponent 1, trailing bytes, truncated.
        assert_eq!(rsa_modulus_bits(&[0x30, 0x07, 0x02, 0x02, 0x00, 0xff, 0x02, 0x01, 0x01]), None);
        assert_eq!(rsa_modulus_bits(&[0x30, 0x09, 0x02, 0x02, 0x00, 0xff, 0x02, 0x03, 0x01, 0x00, 0x01, 0x00]), None);
        assert_eq!(rsa_modulus_bits(&[0x30, 0x09, 0x02, 0x02, 0x00]), None);
        // A private key's DER is not a public key.
        let private = pem_der(RSA_PRIVATE);
        assert_eq!(rsa_modulus_bits(&private), None);
    }

    /// The DER inside a single-block PEM.
    fn pem_der(pem: &[u8]) -> Vec<u8> {
        let text = std::str::from_utf8(pem).unwrap();
        let b64: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD.decode(b64).unwrap()
    }
}
