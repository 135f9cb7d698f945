//! The TLS client configuration for `https`/`wss` authorities, shared by the HTTP client
//! (JWKS, snapshot) and the WebSocket connector, so both trust the same roots and present the
//! same client certificate.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use zeroize::Zeroizing;

use crate::error::Error;

/// TLS settings of an [`AgentConfig`](crate::AgentConfig). Used only for `https` authorities.
#[derive(Clone, Default)]
pub struct TlsOptions {
    /// PEM CA certificates to trust *instead of* the system's roots (a private PKI).
    pub ca_pem: Option<Vec<u8>>,
    /// PEM client certificate chain, for an authority that requires mutual TLS.
    pub client_cert_pem: Option<Vec<u8>>,
    /// PEM private key of `client_cert_pem`.
    pub client_key_pem: Option<Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOptions")
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "<set>"))
            .field(
                "client_cert_pem",
                &self.client_cert_pem.as_ref().map(|_| "<set>"),
            )
            .field(
                "client_key_pem",
                &self.client_key_pem.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

fn certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Config(format!("{what}: {e}")))?;
    if certs.is_empty() {
        return Err(Error::Config(format!("{what}: no PEM certificate found")));
    }
    Ok(certs)
}

/// Build the client configuration: the given CAs (or the system's roots) and, if set, the
/// client certificate.
pub(crate) fn client_config(options: &TlsOptions) -> Result<Arc<rustls::ClientConfig>, Error> {
    let mut roots = RootCertStore::empty();
    match &options.ca_pem {
        Some(pem) => {
            for cert in certs(pem, "CA certificate")? {
                roots
                    .add(cert)
                    .map_err(|e| Error::Config(format!("CA certificate: {e}")))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for e in &native.errors {
                tracing::warn!(
                    error = e as &dyn std::error::Error,
                    "skipping unreadable system CA certificates"
                );
            }
            let (added, ignored) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                return Err(Error::Config(
                    "no usable system CA certificates; give the authority's CA explicitly".into(),
                ));
            }
            tracing::debug!(added, ignored, "system CA certificates loaded");
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots);
    let mut config = match (&options.client_cert_pem, &options.client_key_pem) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let chain = certs(cert, "client certificate")?;
            let key = PrivateKeyDer::from_pem_slice(key)
                .map_err(|e| Error::Config(format!("client key: {e}")))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| Error::Config(format!("client certificate and key: {e}")))?
        }
        _ => {
            return Err(Error::Config(
                "a client certificate and its key go together".into(),
            ));
        }
    };
    // The stream is a WebSocket upgrade: HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_material_is_a_configuration_error() {
        let garbage = TlsOptions {
            ca_pem: Some(b"not a certificate".to_vec()),
            ..TlsOptions::default()
        };
        assert!(matches!(client_config(&garbage), Err(Error::Config(_))));
        let debug = format!(
            "{:?}",
            TlsOptions {
                client_key_pem: Some(Zeroizing::new(b"SECRET KEY".to_vec())),
                ..TlsOptions::default()
            }
        );
        assert!(!debug.contains("SECRET"), "{debug}");
    }
}
