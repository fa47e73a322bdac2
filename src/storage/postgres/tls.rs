//! TLS to PostgreSQL with rustls (ring): the connector each `sslmode` of the connection string
//! asks for (see [`crate::config::SslMode`]), and which failures of it waiting does not fix.
//!
//! - `disable`: the driver never starts TLS (the connector is there for its type only);
//! - `prefer` (the default, as in libpq) and `require`: TLS with any certificate (encrypted,
//!   not authenticated: what libpq does), `prefer` going on in plain text when the server has
//!   no TLS;
//! - `verify-ca` (or `require` with `sslrootcert`, as libpq): the certificate must chain to the
//!   roots, whatever host name it is for;
//! - `verify-full`: and it must be for the host connected to.
//!
//! The roots are `sslrootcert`'s PEM file, or the system's (`sslrootcert` unset or `system`).

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{DatabaseTls, RootCerts, SslMode};

/// The connector for `tls`.
///
/// # Errors
/// Why the roots cannot be used, naming the file: it cannot be read, holds no PEM certificate,
/// or (system roots) none were found.
pub(super) fn connector(tls: &DatabaseTls) -> Result<Connector, String> {
    // ring builds in a fraction of aws-lc's time (C and assembly, no CMake). rustls 0.23.48
    // deprecates its provider for having no post-quantum key exchange (X25519MLKEM768); the
    // `aws-lc-rs` feature of rustls and tokio-postgres-rustls is the switch when that matters.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS cannot be set up: {e}"))?;
    let config = if tls.verifies() {
        let roots = Arc::new(roots(&tls.roots)?);
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| format!("TLS cannot be set up: {e}"))?;
        let verifier: Arc<dyn ServerCertVerifier> = match tls.mode {
            SslMode::VerifyFull => webpki,
            _ => Arc::new(AnyHostName(webpki)),
        };
        builder.dangerous().with_custom_certificate_verifier(verifier)
    } else {
        let algorithms = provider.signature_verification_algorithms;
        builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyCertificate(algorithms)))
    };
    Ok(Connector(MakeRustlsConnect::new(config.with_no_client_auth())))
}

/// The driver's TLS connector (rustls), shown in `Debug` by name only.
#[derive(Clone)]
pub(super) struct Connector(pub(super) MakeRustlsConnect);

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connector(rustls)")
    }
}

/// The driver's own `sslmode` for `mode`: the verifying modes are `require` to it (TLS or no
/// connection); the connector does the verifying.
pub(super) fn driver_mode(mode: SslMode) -> tokio_postgres::config::SslMode {
    use tokio_postgres::config::SslMode as Driver;
    match mode {
        SslMode::Disable => Driver::Disable,
        SslMode::Prefer => Driver::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Driver::Require,
    }
}

fn roots(roots: &RootCerts) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    match roots {
        RootCerts::File(path) => {
            let shown = path.display();
            let certificates = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("sslrootcert={shown}: cannot read its certificates: {e}"))?;
            let (added, _) = store.add_parsable_certificates(certificates);
            if added == 0 {
                let expected = "expected PEM certificates (-----BEGIN CERTIFICATE-----)";
                return Err(format!("sslrootcert={shown} holds no usable certificate: {expected}"));
            }
        }
        RootCerts::System => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
                return Err(format!(
                    "no system root certificates were found ({}): install the system's CA \
                     certificates, or give sslrootcert=PATH in the connection string",
                    if errors.is_empty() { "none installed".into() } else { errors.join("; ") }
                ));
            }
        }
    }
    Ok(store)
}

/// Whether `e` is a TLS failure waiting does not fix: the server has no TLS where the
/// connection string requires it, or rustls refused the handshake (a certificate that does not
/// chain to the roots or is for another host, no protocol in common). A connection that broke
/// during the handshake is not one.
pub(super) fn is_tls_refusal(e: &tokio_postgres::Error) -> bool {
    let handshake = e.to_string().starts_with("error performing TLS handshake");
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let inner = match cause.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => Some(cause),
        };
        if inner.is_some_and(|inner| inner.is::<rustls::Error>()) {
            return true;
        }
        if handshake && cause.to_string() == "server does not support TLS" {
            return true;
        }
        source = cause.source();
    }
    false
}

/// `prefer`, `require`: any certificate (the handshake's signatures are still checked).
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// `verify-ca`: the chain as `verify-full` checks it, any host name. WebPKI checks the chain
/// (and its dates) first, then the name, so a name error means the chain passed.
#[derive(Debug)]
struct AnyHostName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified =
            self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now);
        match verified {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
