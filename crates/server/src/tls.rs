//! TLS for a single node without a proxy (`--tls-cert`, `--tls-key`): loading the PEM
//! certificate chain and key into a rustls configuration (ring provider, ALPN
//! `http/1.1`). The handshakes themselves run in each connection's task (`net.rs`),
//! within the bounds every connection without a complete request head has: a client
//! that never finishes its handshake delays no one and is closed in time.

use std::{path::Path, sync::Arc};

use anyhow::{bail, ensure, Context};
use tokio_rustls::rustls::{
    self,
    pki_types::{
        pem::{self, PemObject},
        CertificateDer, PrivateKeyDer,
    },
};

/// Reads the PEM certificate chain `cert` and private key `key` and builds the server's
/// TLS configuration. Errors name the file at fault and what it should hold.
pub fn load_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let chain = read_chain(cert)?;
    let private_key = read_key(key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("the TLS library has no protocol version in common with its crypto provider")?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .with_context(|| {
            format!(
                "cannot use the TLS key {} with the certificate {}: the key must be the certificate's own \
                 private key (RSA, ECDSA P-256/P-384 or Ed25519), and the certificate's file must start \
                 with the server's certificate",
                key.display(),
                cert.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read_chain(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path)
        .with_context(|| format!("cannot read the TLS certificate file {} (--tls-cert)", path.display()))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("the TLS certificate file {} is not valid PEM (--tls-cert)", path.display()))?;
    ensure!(
        !chain.is_empty(),
        "the TLS certificate file {} holds no certificate (--tls-cert): it should hold PEM blocks \
         `-----BEGIN CERTIFICATE-----`, the server's certificate first, then its intermediates",
        path.display()
    );
    Ok(chain)
}

fn read_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let pem =
        std::fs::read(path).with_context(|| format!("cannot read the TLS key file {} (--tls-key)", path.display()))?;
    match PrivateKeyDer::from_pem_slice(&pem) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => bail!(
            "the TLS key file {} holds no private key (--tls-key): it should hold a PEM block \
             `-----BEGIN PRIVATE KEY-----` (or `RSA PRIVATE KEY`, `EC PRIVATE KEY`)",
            path.display()
        ),
        Err(e) => Err(e).with_context(|| format!("the TLS key file {} is not valid PEM (--tls-key)", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for `localhost`, as (certificate, key) PEM files.
    fn self_signed(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, CertificateDer<'static>) {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        (cert, key, certified.cert.der().clone())
    }

    #[test]
    fn files_that_are_not_pem_or_do_not_match_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, _) = self_signed(dir.path());
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").unwrap();
        let missing = dir.path().join("missing.pem");
        let other = dir.path().join("other");
        std::fs::create_dir(&other).unwrap();
        let (_, other_key, _) = self_signed(&other);

        let message = |cert: &Path, key: &Path| format!("{:#}", load_config(cert, key).err().unwrap());
        let m = message(&missing, &key);
        assert!(m.contains("cannot read the TLS certificate file") && m.contains("missing.pem"), "{m}");
        let m = message(&garbage, &key);
        assert!(m.contains("holds no certificate") && m.contains("garbage.pem"), "{m}");
        let m = message(&cert, &garbage);
        assert!(m.contains("holds no private key") && m.contains("garbage.pem"), "{m}");
        let m = message(&cert, &cert);
        assert!(m.contains("holds no private key") && m.contains("cert.pem"), "{m}");
        let m = message(&cert, &other_key);
        assert!(m.contains("cannot use the TLS key") && m.contains("other/key.pem"), "{m}");
        assert!(load_config(&cert, &key).is_ok());
    }
}
