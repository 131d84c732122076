//! TLS material: loads the operator's PEM certificate chain and key into a rustls server
//! configuration (ring provider, ALPN h2 and http/1.1). Owns no sockets.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file is unreadable or holds no PEM certificate.
    #[error("--cert {path:?}: {reason}")]
    Cert { path: PathBuf, reason: String },
    /// The key file is unreadable or holds no PEM private key.
    #[error("--key {path:?}: {reason}")]
    Key { path: PathBuf, reason: String },
    /// The `--backend-ca` file is unreadable or holds no certificate.
    #[error("--backend-ca {path:?}: {reason}")]
    Ca { path: PathBuf, reason: String },
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("--cert/--key: {0}")]
    Pair(String),
}

/// Installs the process-wide rustls crypto provider (ring) if none is installed yet.
pub fn install_crypto_provider() {
    // An error only means another provider was installed first, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Builds the server configuration from a PEM chain (leaf first) and a PEM private key.
pub(crate) fn server_config(
    cert: &Path,
    key: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    install_crypto_provider();
    let chain = read_certificates(cert).map_err(|reason| TlsError::Cert {
        path: cert.to_owned(),
        reason,
    })?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.to_owned(),
        reason: format!("no usable PEM private key ({e})"),
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| TlsError::Pair(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(chain, key_der)
    .map_err(|e| TlsError::Pair(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Loads the PEM CA certificates of `--backend-ca`.
pub(crate) fn ca_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    read_certificates(path).map_err(|reason| TlsError::Ca {
        path: path.to_owned(),
        reason,
    })
}

/// Every PEM certificate in a file (at least one), or why not.
fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read it ({e})"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not valid PEM ({e})"))?;
    if certs.is_empty() {
        return Err("holds no PEM CERTIFICATE block".into());
    }
    Ok(certs)
}
