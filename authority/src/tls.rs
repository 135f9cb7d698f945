//! HTTPS: the rustls server configuration from `--tls-cert`, `--tls-key` and `--client-ca`.
//! Public because it is how an embedder fills [`Config::tls`](crate::Config::tls).
//!
//! With `--client-ca`, clients may present a certificate signed by that CA; the handshake
//! verifies it if presented, and the stream and snapshot routes then require one (mutual TLS
//! for subscribers). Other routes stay usable with an API key alone, so an operator's `curl`
//! does not need a client certificate to revoke a token.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use crate::error::Error;

/// Where the TLS material lives (validated configuration; the files are read at start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM: the server certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM: the server's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM: CA certificates that sign subscribers' client certificates.
    pub client_ca: Option<PathBuf>,
}

fn config_error(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Config(format!("{what} {}: {e}", path.display()))
}

/// Every certificate in a PEM file; at least one.
pub(crate) fn load_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| config_error(path, what, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| config_error(path, what, e))?;
    if certs.is_empty() {
        return Err(config_error(path, what, "no PEM certificate in the file"));
    }
    Ok(certs)
}

/// Build the server configuration. Errors are configuration errors (exit code 2).
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = load_certs(&files.cert, "--tls-cert")?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| config_error(&files.key, "--tls-key", e))?;
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in load_certs(path, "--client-ca")? {
                roots
                    .add(cert)
                    .map_err(|e| config_error(path, "--client-ca", e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                // Verified when presented; required by the subscribe routes (see the module
                // doc), not by the handshake.
                .allow_unauthenticated()
                .build()
                .map_err(|e| config_error(path, "--client-ca", e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| Error::Config(format!("--tls-cert and --tls-key do not make a pair: {e}")))?;
    // WebSocket upgrades need HTTP/1.1, and it is all this server speaks.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
