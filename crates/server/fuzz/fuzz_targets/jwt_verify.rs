//! Fuzzes the token verifier (`src/auth/jwt.rs`, compiled here as it is) with every kind
//! of key the server accepts: it must never panic, never accept a token it did not see
//! signed with its own key, and whatever it accepts must hold claims the server can use
//! (a `sub` that is a valid user id, an `exp` after the clock, a usable display name).
//!
//! Input: one configuration byte (bits 0-2: the verifier, see `setups`, modulo 5; bit 3: sign
//! the token with the verifier's own private key), four bytes of clock (seconds, little
//! endian), then either the token's text, or (signing) the header's and the claims' JSON
//! separated by one 0xff byte, which the target encodes and signs.

#![no_main]

#[allow(dead_code)]
#[path = "../../src/auth/jwt.rs"]
mod jwt;

use std::sync::OnceLock;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use jsonwebtoken::{Algorithm, EncodingKey};
use jwt::{Claims, JwtVerifier};
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "fuzz-secret";

/// A verifier and what signs for it.
struct Setup {
    verifier: JwtVerifier,
    signer: EncodingKey,
    algorithm: Algorithm,
}

fn key_file(name: &str, pem: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("bavard-fuzz-{}-{name}", std::process::id()));
    std::fs::write(&path, pem).unwrap();
    path
}

fn setups() -> &'static [Setup] {
    static SETUPS: OnceLock<Vec<Setup>> = OnceLock::new();
    SETUPS.get_or_init(|| {
        let secret = |audience, issuer| JwtVerifier::from_settings(Some(SECRET), None, audience, issuer);
        let public = |name, pem| {
            let path = key_file(name, pem);
            let verifier = JwtVerifier::from_settings(None, Some(&path), None, None);
            let _ = std::fs::remove_file(&path);
            verifier
        };
        let hmac = EncodingKey::from_secret(SECRET.as_bytes());
        vec![
            Setup { verifier: secret(None, None).unwrap().unwrap(), signer: hmac.clone(), algorithm: Algorithm::HS256 },
            Setup {
                verifier: secret(Some("bavard"), Some("https://issuer.example")).unwrap().unwrap(),
                signer: hmac,
                algorithm: Algorithm::HS256,
            },
            Setup {
                verifier: public("rsa", include_str!("../../tests/keys/rsa_public.pem")).unwrap().unwrap(),
                signer: EncodingKey::from_rsa_pem(include_bytes!("../../tests/keys/rsa_private.pem")).unwrap(),
                algorithm: Algorithm::RS256,
            },
            Setup {
                verifier: public("ec", include_str!("../../tests/keys/ec_public.pem")).unwrap().unwrap(),
                signer: EncodingKey::from_ec_pem(include_bytes!("../../tests/keys/ec_private.pem")).unwrap(),
                algorithm: Algorithm::ES256,
            },
            Setup {
                verifier: public("ed", include_str!("../../tests/keys/ed25519_public.pem")).unwrap().unwrap(),
                signer: EncodingKey::from_ed_pem(include_bytes!("../../tests/keys/ed25519_private.pem")).unwrap(),
                algorithm: Algorithm::EdDSA,
            },
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&config, rest)) = data.split_first() else { return };
    let Some((clock, body)) = rest.split_first_chunk::<4>() else { return };
    let now = u64::from(u32::from_le_bytes(*clock));
    let setups = setups();
    let signed = config & 8 != 0;
    let mut index = usize::from(config & 7) % setups.len();
    if signed && setups[index].algorithm == Algorithm::RS256 {
        // An RSA signature costs milliseconds here, a hundred times an HS256 one: signed
        // inputs go to the HS256 verifier instead (the claims checks after the signature
        // are the same code for every algorithm; unsigned inputs still reach RS256).
        index = 0;
    }
    let setup = &setups[index];
    let token = if signed {
        let (header, claims) = match body.iter().position(|&b| b == 0xff) {
            Some(at) => (&body[..at], &body[at + 1..]),
            None => (body, &[][..]),
        };
        let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
        let signature = jsonwebtoken::crypto::sign(input.as_bytes(), &setup.signer, setup.algorithm).unwrap();
        format!("{input}.{signature}")
    } else {
        String::from_utf8_lossy(body).into_owned()
    };
    match setup.verifier.verify(&token, now) {
        Ok(claims) => {
            assert!(signed, "accepted a token nobody signed: {token}");
            check_claims(&claims, now);
        }
        Err(error) => {
            assert!(!error.to_string().is_empty());
            assert!(!error.reason().is_empty());
        }
    }
});

/// What the server relies on in accepted claims.
fn check_claims(claims: &Claims, now: u64) {
    let sub = &claims.sub;
    let chars = sub.chars().count();
    assert!((1..=128).contains(&chars), "sub of {chars} characters");
    assert!(!sub.chars().any(char::is_control), "sub with control characters: {sub:?}");
    assert!(!sub.starts_with("g_") && !sub.starts_with("api:"), "reserved sub {sub:?}");
    assert!(claims.exp > now, "exp {} accepted at {now}", claims.exp);
    assert!(claims.exp <= 253_402_300_799, "exp {} past the year 9999", claims.exp);
    if let Some(name) = &claims.name {
        assert_eq!(name.trim(), name, "untrimmed name {name:?}");
        assert!((1..=32).contains(&name.chars().count()) && !name.chars().any(char::is_control), "name {name:?}");
    }
}
