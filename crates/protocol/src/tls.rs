//! TLS with rustls, following libpq's `sslmode` semantics.
//!
//! * `require`: encrypted, server not authenticated — unless a root certificate file exists,
//!   in which case libpq (and we) verify like `verify-ca`.
//! * `verify-ca`: the chain must lead to `sslrootcert`; the host name is not checked.
//! * `verify-full`: chain and host name.
//!
//! A client certificate (`sslcert`/`sslkey`) is presented when its file exists, after libpq's
//! checks on the key file (regular, not readable by group or others).

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
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
    let config = match client_identity(cfg.sslcert.as_deref(), cfg.sslkey.as_deref())? {
        Some(id) => builder
            .with_client_auth_cert(id.certs, id.key)
            .map_err(|e| {
                Error::Tls(format!(
                    "could not use the client certificate with private key file \"{}\": {e}",
                    id.key_path.display()
                ))
            })?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// A client certificate chain and the key that goes with it.
struct ClientIdentity {
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    key_path: PathBuf,
}

/// The client certificate chain and key to present, picked as libpq does: no certificate file
/// (`sslcert`, default `~/.postgresql/postgresql.crt`) means none is sent; once there is one,
/// the key file (`sslkey`, default `~/.postgresql/postgresql.key`) must exist, be a regular file
/// and be private to its owner (or readable by root's group when root owns it).
fn client_identity(cert: Option<&Path>, key: Option<&Path>) -> Result<Option<ClientIdentity>> {
    let Some(cert) = cert.filter(|p| !p.as_os_str().is_empty()) else {
        return Ok(None);
    };
    match std::fs::metadata(cert) {
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
            return Ok(None)
        }
        Err(e) => {
            return Err(Error::Tls(format!(
                "could not open certificate file \"{}\": {e}",
                cert.display()
            )))
        }
        Ok(_) => {}
    }
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| {
            Error::Tls(format!(
                "could not read certificate file \"{}\": {e}",
                cert.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(Error::Tls(format!(
            "no certificate in certificate file \"{}\" (expected PEM)",
            cert.display()
        )));
    }
    let Some(key) = key.filter(|p| !p.as_os_str().is_empty()) else {
        return Err(Error::Tls(format!(
            "certificate file \"{}\" given, but no private key file (sslkey)",
            cert.display()
        )));
    };
    let meta = std::fs::metadata(key).map_err(|e| {
        Error::Tls(if e.kind() == ErrorKind::NotFound {
            format!(
                "certificate present, but not private key file \"{}\"",
                key.display()
            )
        } else {
            format!("could not stat private key file \"{}\": {e}", key.display())
        })
    })?;
    check_key_file(key, &meta)?;
    let bytes = std::fs::read(key).map_err(|e| {
        Error::Tls(format!(
            "could not read private key file \"{}\": {e}",
            key.display()
        ))
    })?;
    let der = parse_key(&bytes).map_err(|why| {
        Error::Tls(format!(
            "could not load private key file \"{}\": {why}",
            key.display()
        ))
    })?;
    Ok(Some(ClientIdentity {
        certs,
        key: der,
        key_path: key.to_path_buf(),
    }))
}

/// libpq's checks on the key file: a regular file with no group or other access (mode 0600 or
/// less), or, owned by root, at most group read (0640).
fn check_key_file(path: &Path, meta: &std::fs::Metadata) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    if !meta.is_file() {
        return Err(Error::Tls(format!(
            "private key file \"{}\" is not a regular file",
            path.display()
        )));
    }
    let forbidden = if meta.uid() == 0 { 0o037 } else { 0o077 };
    if meta.mode() & forbidden != 0 {
        return Err(Error::Tls(format!(
            "private key file \"{}\" has group or world access (mode {:04o}); it must have \
             permissions u=rw (0600) or less if owned by the current user, or u=rw,g=r (0640) \
             or less if owned by root: chmod 600 it",
            path.display(),
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// A PKCS#8, PKCS#1 (RSA) or SEC1 (EC) key, PEM or, as libpq also accepts, DER. The reasons
/// never quote the file's bytes: they are key material.
fn parse_key(bytes: &[u8]) -> std::result::Result<PrivateKeyDer<'static>, &'static str> {
    use rustls::pki_types::pem::Error as PemError;
    let parsed = match PrivateKeyDer::from_pem_slice(bytes) {
        Ok(k) => Ok(k),
        Err(PemError::NoItemsFound) => PrivateKeyDer::try_from(bytes)
            .map(|k| k.clone_key())
            .map_err(|_| {
                "no PEM PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block and not a DER key"
            }),
        Err(_) => Err("malformed PEM (bad section markers or base64)"),
    };
    // An encrypted key fails either way; say why rather than how.
    if parsed.is_err() && bytes.windows(9).any(|w| w == b"ENCRYPTED") {
        return Err(
            "the key is encrypted; pgincr needs an unencrypted key (sslpassword is not supported)",
        );
    }
    parsed
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(dir: &Path, name: &str, text: &[u8], mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn client_identity_follows_libpq() {
        let d = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let crt = write(d.path(), "c.crt", cert.pem().as_bytes(), 0o644);
        let pem = key.serialize_pem();
        let k600 = write(d.path(), "k600", pem.as_bytes(), 0o600);
        let der = write(d.path(), "kder", &key.serialize_der(), 0o600);
        let k644 = write(d.path(), "k644", pem.as_bytes(), 0o644);
        let junk = write(
            d.path(),
            "junk",
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n",
            0o600,
        );

        // No certificate file: nothing is sent, whatever the key.
        let none = client_identity(Some(&d.path().join("absent.crt")), Some(&k644)).unwrap();
        assert!(none.is_none());
        assert!(client_identity(None, None).unwrap().is_none());

        for k in [&k600, &der] {
            let id = client_identity(Some(&crt), Some(k)).unwrap().unwrap();
            assert_eq!(id.certs.len(), 1);
        }
        let err = |k: &Path| match client_identity(Some(&crt), Some(k)) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{k:?} accepted"),
        };
        let e = err(&k644);
        assert!(
            e.contains("k644") && e.contains("group or world access"),
            "{e}"
        );
        let e = err(&d.path().join("absent.key"));
        assert!(e.contains("not private key file"), "{e}");
        let e = err(d.path());
        assert!(e.contains("not a regular file"), "{e}");
        let e = err(&junk);
        assert!(e.contains("encrypted"), "{e}");
        // Not a key: the error names the file and never quotes its text.
        let not_key = write(d.path(), "not-key", cert.pem().as_bytes(), 0o600);
        let e = err(&not_key);
        assert!(
            e.contains("not-key") && e.contains("no PEM PRIVATE KEY") && !e.contains("BEGIN"),
            "{e}"
        );
    }

    #[test]
    fn key_mode_rule_depends_on_owner() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "k", b"x", 0o640);
        let meta = std::fs::metadata(&p).unwrap();
        use std::os::unix::fs::MetadataExt;
        // 0640 is fine for a root-owned key only.
        assert_eq!(check_key_file(&p, &meta).is_ok(), meta.uid() == 0);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(check_key_file(&p, &std::fs::metadata(&p).unwrap()).is_ok());
    }
}
