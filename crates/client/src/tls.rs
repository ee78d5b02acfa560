//! TLS for `wss://` URLs: rustls with the ring provider (no OpenSSL, no C build beyond
//! ring's), trusting the Mozilla roots (webpki-roots) and any extra root the caller
//! names, such as a self-signed server's own certificate.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
};

use rustls::{
    pki_types::{pem::PemObject, CertificateDer},
    ClientConfig, RootCertStore,
};
use tokio_tungstenite::Connector;

/// A certificate file that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file cannot be read or holds no PEM certificate.
    #[error("cannot read a certificate from {path}: {problem} (expected PEM: -----BEGIN CERTIFICATE-----)")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        problem: String,
    },
    /// rustls refused the configuration.
    #[error("cannot set up TLS: {0}")]
    Config(String),
}

/// Whom a `wss://` connection trusts. Cheap to clone.
#[derive(Clone, Debug)]
pub struct TlsConfig {
    config: Arc<ClientConfig>,
}

impl TlsConfig {
    /// Trusts the Mozilla roots only (what a public server's certificate chains to).
    pub fn new() -> Result<Self, TlsError> {
        Self::with_roots(Vec::new())
    }

    /// Trusts the Mozilla roots and every certificate in the PEM file at `path`: a
    /// self-signed server's certificate, or a private certificate authority's.
    pub fn with_ca_file(path: impl AsRef<Path>) -> Result<Self, TlsError> {
        let path = path.as_ref();
        let problem = |problem: String| TlsError::Certificate { path: path.to_owned(), problem };
        let certificates = CertificateDer::pem_file_iter(path)
            .map_err(|e| problem(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| problem(e.to_string()))?;
        if certificates.is_empty() {
            return Err(problem("no certificate in the file".into()));
        }
        Self::with_roots(certificates)
    }

    /// Uses a rustls configuration made by the caller (client certificates, pinning...).
    pub fn from_rustls(config: Arc<ClientConfig>) -> Self {
        Self { config }
    }

    fn with_roots(extra: Vec<CertificateDer<'static>>) -> Result<Self, TlsError> {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for certificate in extra {
            roots.add(certificate).map_err(|e| TlsError::Config(format!("a certificate cannot be a root: {e}")))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self { config: Arc::new(config) })
    }

    pub(crate) fn connector(&self) -> Connector {
        Connector::Rustls(self.config.clone())
    }

    /// The configuration used when none is given (the Mozilla roots, made once), for a
    /// `wss://` URL; `None` for a plain one.
    pub(crate) fn default_for(url: &str) -> Result<Option<Self>, TlsError> {
        static DEFAULT: OnceLock<Result<TlsConfig, String>> = OnceLock::new();
        let secure = url.trim_start().get(..6).is_some_and(|scheme| scheme.eq_ignore_ascii_case("wss://"));
        if !secure {
            return Ok(None);
        }
        let default = DEFAULT.get_or_init(|| Self::new().map_err(|e| e.to_string()));
        default.clone().map(Some).map_err(TlsError::Config)
    }
}
