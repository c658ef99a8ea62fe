//! TLS to a backend, from the options of its URL, as MySQL's own clients
//! name them: `ssl-mode` (`disabled`, the default; `required`: encrypted,
//! certificate not checked; `verify-ca`: signed by `ssl-ca`; and
//! `verify-identity`: also issued for the URL's host), `ssl-ca` (PEM file),
//! and `ssl-cert` + `ssl-key` for servers that ask for a client
//! certificate. One `BackendTls` serves every connection Tandem opens to
//! that backend: the relay's pools (`backend::conn`) and, through
//! `backend::client_opts`, the applier, backfill, verify, cutover and shadow
//! reads.

use std::path::PathBuf;
use std::sync::Arc;
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

/// `ssl-mode` of a backend URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Required,
    VerifyCa,
    VerifyIdentity,
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Required => "required",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyIdentity => "verify-identity",
        }
    }
}

/// A backend's TLS settings, ready to connect with.
#[derive(Clone)]
pub struct BackendTls {
    pub mode: SslMode,
    pub ca: Option<PathBuf>,
    /// Client certificate and key (`ssl-cert`, `ssl-key`).
    pub identity: Option<(PathBuf, PathBuf)>,
    /// Of the mode and the files' contents: a reload that changes a CA or
    /// certificate file is a change of the backend (new connections).
    digest: u64,
    pub config: Arc<rustls::ClientConfig>,
    /// Under verify-ca: a DNS name the server's certificate holds, learned
    /// from the first chain that verified (see `ssl_opts`).
    learned_name: Arc<std::sync::Mutex<Option<String>>>,
}

impl PartialEq for BackendTls {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest
    }
}
impl Eq for BackendTls {}

impl std::fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendTls")
            .field("mode", &self.mode)
            .field("ca", &self.ca)
            .field("cert", &self.identity.as_ref().map(|(c, _)| c))
            .finish()
    }
}

/// The TLS options of a backend URL's query: `None` for plain text
/// (`ssl-mode=disabled` or no `ssl-mode`). Any other query key is an error,
/// so that a misspelt option never silently leaves a connection in clear.
pub fn from_query<'a>(
    pairs: impl Iterator<Item = (String, String)> + 'a,
) -> Result<Option<BackendTls>, String> {
    let (mut mode, mut ca, mut cert, mut key) = (None, None, None, None);
    for (k, v) in pairs {
        match k.to_ascii_lowercase().replace('_', "-").as_str() {
            "ssl-mode" | "sslmode" => mode = Some(v.to_ascii_lowercase().replace('_', "-")),
            "ssl-ca" => ca = Some(PathBuf::from(v)),
            "ssl-cert" => cert = Some(PathBuf::from(v)),
            "ssl-key" => key = Some(PathBuf::from(v)),
            other => {
                return Err(format!(
                    "unknown option {other:?} (known: ssl-mode, ssl-ca, ssl-cert, ssl-key)"
                ))
            }
        }
    }
    let mode = match mode.as_deref() {
        None | Some("disabled") => {
            if ca.is_some() || cert.is_some() {
                return Err("ssl-ca/ssl-cert are given but ssl-mode is disabled; \
                    add ssl-mode=verify-ca (or verify-identity)"
                    .into());
            }
            return Ok(None);
        }
        Some("required") => SslMode::Required,
        Some("verify-ca") => SslMode::VerifyCa,
        Some("verify-identity") => SslMode::VerifyIdentity,
        Some(other) => {
            return Err(format!(
                "ssl-mode {other:?} is not one of disabled, required, verify-ca, verify-identity"
            ))
        }
    };
    if mode != SslMode::Required && ca.is_none() {
        return Err(format!(
            "ssl-mode={} needs ssl-ca=<PEM file of the CA that signed the server's certificate>",
            mode.as_str()
        ));
    }
    let identity = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => return Err("ssl-cert and ssl-key go together".into()),
    };
    load(mode, ca, identity).map(Some)
}

fn load(
    mode: SslMode,
    ca: Option<PathBuf>,
    identity: Option<(PathBuf, PathBuf)>,
) -> Result<BackendTls, String> {
    let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(mode.as_str().as_bytes());
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = &ca {
        let pem = read(ca)?;
        h.update(&pem);
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| format!("ssl-ca {}: {e}", ca.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("ssl-ca {}: {e}", ca.display()))?;
        }
        if roots.is_empty() {
            return Err(format!("ssl-ca {}: no certificate in it", ca.display()));
        }
    }
    // The process's provider (ring, the one compiled in), as the client
    // TLS listener uses it.
    let versions = rustls::ClientConfig::builder_with_protocol_versions(&[
        &rustls::version::TLS13,
        &rustls::version::TLS12,
    ]);
    let provider = versions.crypto_provider().clone();
    let learned_name = Arc::new(std::sync::Mutex::new(None));
    let verifier: Arc<dyn ServerCertVerifier> = match mode {
        SslMode::Required => Arc::new(Unverified(provider.clone())),
        SslMode::VerifyCa | SslMode::VerifyIdentity => {
            let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .build()
            .map_err(|e| format!("ssl-ca: {e}"))?;
            Arc::new(CaVerifier {
                webpki,
                check_name: mode == SslMode::VerifyIdentity,
                learned_name: learned_name.clone(),
            })
        }
    };
    let builder = versions
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match &identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            h.update(&read(cert)?);
            h.update(&read(key)?);
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("ssl-cert {}: {e}", cert.display()))?;
            let key_der = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("ssl-key {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| format!("ssl-cert with ssl-key: {e}"))?
        }
    };
    Ok(BackendTls {
        mode,
        ca,
        identity,
        digest: h.digest(),
        config: Arc::new(config),
        learned_name,
    })
}

impl BackendTls {
    /// The name the server's certificate is checked against (verify-identity)
    /// and sent as SNI: the URL's host.
    pub fn server_name(host: &str) -> ServerName<'static> {
        ServerName::try_from(host.to_string())
            .unwrap_or_else(|_| ServerName::try_from("localhost").expect("a valid DNS name"))
    }

    /// Whether `ssl_opts` needs a name learned from the server's certificate
    /// first (verify-ca, none learned yet): connect once with `config`.
    pub fn needs_name(&self) -> bool {
        self.mode == SslMode::VerifyCa && self.learned_name.lock().map_or(true, |n| n.is_none())
    }

    /// The same settings for mysql_async (Tandem's own connections).
    /// mysql_async 0.37's verify-ca ("skip domain validation") recognises
    /// the name error by an older rustls's wording and so refuses a
    /// certificate issued for another name; instead, it is given a name the
    /// certificate holds (learned when one of Tandem's connections verified
    /// that certificate's chain), so that it checks the chain as verify-ca
    /// must and the name always matches.
    pub fn ssl_opts(&self) -> mysql_async::SslOpts {
        let mut o = mysql_async::SslOpts::default()
            .with_danger_accept_invalid_certs(self.mode == SslMode::Required);
        if self.mode == SslMode::VerifyCa {
            if let Some(name) = self.learned_name.lock().ok().and_then(|n| n.clone()) {
                o = o.with_danger_tls_hostname_override(Some(name));
            }
        }
        if let Some(ca) = &self.ca {
            o = o
                .with_root_certs(vec![ca.clone().into()])
                .with_disable_built_in_roots(true);
        }
        if let Some((cert, key)) = &self.identity {
            o = o.with_client_identity(Some(mysql_async::ClientIdentity::new(
                cert.clone().into(),
                key.clone().into(),
            )));
        }
        o
    }
}

/// `verify-ca` and `verify-identity`: the chain must end at `ssl-ca`; the
/// host name is checked only under verify-identity.
#[derive(Debug)]
struct CaVerifier {
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
    check_name: bool,
    learned_name: Arc<std::sync::Mutex<Option<String>>>,
}

impl ServerCertVerifier for CaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => {
                // The chain verified (names are checked last).
                let name = webpki::EndEntityCert::try_from(end_entity)
                    .ok()
                    .and_then(|c| {
                        c.valid_dns_names()
                            .find(|n| !n.contains('*'))
                            .map(str::to_string)
                    });
                if let (Some(name), Ok(mut slot)) = (name, self.learned_name.lock()) {
                    *slot = Some(name);
                }
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// `required`: encrypted, any certificate (MySQL's REQUIRED); the
/// handshake's signatures are still checked against the certificate shown.
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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
