//! TLS with rustls, following libpq's `sslmode` semantics.
//!
//! * `require`: encrypted, server not authenticated — unless a root certificate file exists,
//!   in which case libpq (and we) verify like `verify-ca`.
//! * `verify-ca`: the chain must lead to `sslrootcert`; the host name is not checked.
//! * `verify-full`: chain and host name.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::Digest;

use crate::conninfo::{Resolved, SslMode};
use crate::error::{Error, Result};

/// How the server certificate is checked.
#[derive(Debug)]
enum Verify {
    Nothing,
    Chain,
    ChainAndName,
}

/// Builds the client configuration for `cfg`'s `sslmode`.
pub(crate) fn client_config(cfg: &Resolved) -> Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let root_file = cfg.sslrootcert.as_deref().filter(|p| p.exists());
    let verify = match cfg.sslmode {
        SslMode::VerifyFull => Verify::ChainAndName,
        SslMode::VerifyCa => Verify::Chain,
        _ if root_file.is_some() && cfg.sslmode == SslMode::Require => Verify::Chain,
        _ => Verify::Nothing,
    };
    let verifier: Arc<dyn ServerCertVerifier> = match verify {
        Verify::Nothing => Arc::new(NoVerify(provider.clone())),
        Verify::Chain | Verify::ChainAndName => {
            let Some(path) = cfg.sslrootcert.as_deref() else {
                return Err(Error::Tls(
                    "sslmode verify-ca/verify-full needs sslrootcert".into(),
                ));
            };
            if path.as_os_str() == "system" {
                return Err(Error::Tls(
                    "sslrootcert=system is not supported; name a PEM file of trusted roots".into(),
                ));
            }
            let roots = load_roots(path)?;
            let inner =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| {
                        Error::Tls(format!("root certificates in {}: {e}", path.display()))
                    })?;
            match verify {
                Verify::Chain => Arc::new(ChainOnly(inner)),
                _ => inner,
            }
        }
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match (cfg.sslcert.as_deref(), cfg.sslkey.as_deref()) {
        (Some(cert), Some(key)) if cert.exists() => {
            let certs = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
                .map_err(|e| Error::Tls(format!("client certificate {}: {e}", cert.display())))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| Error::Tls(format!("client key {}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| Error::Tls(format!("client certificate: {e}")))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

fn load_roots(path: &Path) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| Error::Tls(format!("root certificate file {}: {e}", path.display())))?;
    for c in certs {
        let c =
            c.map_err(|e| Error::Tls(format!("root certificate file {}: {e}", path.display())))?;
        roots
            .add(c)
            .map_err(|e| Error::Tls(format!("root certificate in {}: {e}", path.display())))?;
    }
    if roots.is_empty() {
        return Err(Error::Tls(format!(
            "no certificates in root certificate file {}",
            path.display()
        )));
    }
    Ok(roots)
}

/// The server name to present (SNI) and verify.
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>> {
    ServerName::try_from(host.to_string())
        .map_err(|_| Error::Tls(format!("\"{host}\" is not a valid TLS server name")))
}

/// `tls-server-end-point` channel binding data (RFC 5929): the certificate's hash, with SHA-256
/// unless its signature uses SHA-384 or SHA-512.
pub(crate) fn server_end_point(cert: &[u8]) -> Vec<u8> {
    match signature_hash(cert) {
        Some(384) => sha2::Sha384::digest(cert).to_vec(),
        Some(512) => sha2::Sha512::digest(cert).to_vec(),
        _ => sha2::Sha256::digest(cert).to_vec(),
    }
}

/// The hash size named by a certificate's signatureAlgorithm OID, found by walking the DER
/// `Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature }`.
fn signature_hash(der: &[u8]) -> Option<u32> {
    fn header(b: &[u8]) -> Option<(u8, usize, usize)> {
        let tag = *b.first()?;
        let l0 = *b.get(1)?;
        if l0 < 0x80 {
            return Some((tag, 2, l0 as usize));
        }
        let n = (l0 & 0x7f) as usize;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *b.get(2 + i)? as usize;
        }
        Some((tag, 2 + n, len))
    }
    let (_, h, _) = header(der)?;
    let tbs = der.get(h..)?;
    let (_, th, tl) = header(tbs)?;
    let alg = tbs.get(th + tl..)?;
    let (_, ah, _) = header(alg)?;
    let (tag, oh, ol) = header(alg.get(ah..)?)?;
    if tag != 0x06 {
        return None;
    }
    let oid = alg.get(ah + oh..ah + oh + ol)?;
    // sha384WithRSAEncryption 1.2.840.113549.1.1.12, ecdsa-with-SHA384 1.2.840.10045.4.3.3
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03];
    match oid {
        [p @ .., 12] if p == RSA => Some(384),
        [p @ .., 13] if p == RSA => Some(512),
        [p @ .., 3] if p == ECDSA => Some(384),
        [p @ .., 4] if p == ECDSA => Some(512),
        _ => Some(256),
    }
}

/// `sslmode=require` without a root certificate: encryption only. Handshake signatures are
/// still checked so the session keys belong to whoever holds the presented certificate.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain is verified; a name mismatch alone is accepted.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
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
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
