//! TLS on both sides, with rustls and its `ring` crypto provider.
//!
//! One provider serves the whole binary: `ring` builds with the machine's C compiler alone,
//! while aws-lc-rs needs cmake (and sometimes nasm or bindgen) on some targets. No other
//! provider is compiled in (`default-features = false` on every rustls crate).
//!
//! Everything here runs while a snapshot is compiled: PEM files are read and checked once,
//! the request path only clones `Arc`s. A renewed certificate is a config reload: the new
//! snapshot carries the new `ServerConfig`, new connections use it, open ones keep theirs, and
//! a file that does not load fails the reload so the old certificate keeps serving.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

pub use crate::config::ClientAuthMode;

/// How long a TLS handshake may take unless the listener says otherwise.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Makes [`provider`] the process default, so no library picks another one. Call once at
/// startup; a second call changes nothing.
pub fn install_default() {
    let _ = CryptoProvider::install_default((*provider()).clone());
}

/// The binary's one crypto provider.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())))
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The files TLS settings were read from: their paths (watched for reload) and a hash of
/// their bytes (part of the snapshot fingerprint, so a renewed file is a new generation).
#[derive(Debug, Default)]
pub struct Material {
    pub files: Vec<PathBuf>,
    hasher: DefaultHasher,
}

impl Material {
    fn read(&mut self, path: &Path) -> Result<Vec<u8>, String> {
        let bytes = crate::files::read_capped(path, crate::files::MAX_TLS_FILE)?;
        path.hash(&mut self.hasher);
        bytes.hash(&mut self.hasher);
        self.files.push(path.to_path_buf());
        Ok(bytes)
    }

    /// Adds what `other` read.
    pub fn absorb(&mut self, other: &Material) {
        self.files.extend(other.files.iter().cloned());
        other.hash().hash(&mut self.hasher);
    }

    pub fn hash(&self) -> u64 {
        self.hasher.finish()
    }
}

/// A TLS listener's settings, ready for new connections.
#[derive(Debug)]
pub struct ServerTls {
    pub config: Arc<ServerConfig>,
    pub handshake_timeout: Duration,
    /// What each certificate is, for the admin status (which one is live after a renewal).
    pub certificates: Vec<CertificateInfo>,
}

/// A served certificate as operators want to see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    pub subject: String,
    pub names: Vec<String>,
    /// The end of its validity, in seconds since the Unix epoch.
    pub not_after: i64,
    pub serial: String,
}

/// A certificate chain and key to serve, as file paths.
pub struct CertFiles<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
}

/// Builds a listener's TLS settings: certificates chosen by SNI (the first is the default),
/// TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`, and optional client certificates.
pub fn server(
    certificates: &[CertFiles<'_>],
    client_auth: Option<(&Path, ClientAuthMode)>,
    handshake_timeout: Duration,
    material: &mut Material,
) -> Result<ServerTls, String> {
    if certificates.is_empty() {
        return Err("`certificates` is empty: name at least one cert and key".to_string());
    }
    let mut entries = Vec::with_capacity(certificates.len());
    let mut infos = Vec::with_capacity(certificates.len());
    for files in certificates {
        let (info, key) = certified_key(files.cert, files.key, material)?;
        entries.push((info.names.clone(), key));
        infos.push(info);
    }
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| format!("TLS settings: {e}"))?;
    let builder = match client_auth {
        None => builder.with_no_client_auth(),
        Some((ca, mode)) => {
            let roots = root_store(ca, material)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            let verifier = match mode {
                ClientAuthMode::Required => verifier,
                ClientAuthMode::Optional => verifier.allow_unauthenticated(),
            };
            let verifier = verifier
                .build()
                .map_err(|e| format!("client CA bundle {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(SniResolver { entries }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(ServerTls {
        config: Arc::new(config),
        handshake_timeout,
        certificates: infos,
    })
}

/// Builds the client settings for an `https://` upstream: the CA bundle given (or the
/// system's roots) and an optional client certificate. ALPN is set by the connector.
pub fn client(
    ca: Option<&Path>,
    identity: Option<CertFiles<'_>>,
    material: &mut Material,
) -> Result<ClientConfig, String> {
    let roots = match ca {
        Some(ca) => root_store(ca, material)?,
        None => system_roots()?,
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| format!("TLS settings: {e}"))?
        .with_root_certificates(roots);
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some(files) => {
            let (chain, key) = read_pair(files.cert, files.key, material)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("{}: {e}", files.cert.display()))
        }
    }
}

/// The subject common name of a verified client certificate (or the whole subject when it
/// has none), used as a tenant.
pub fn client_subject(certificate: &CertificateDer<'_>) -> Option<Arc<str>> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref()).ok()?;
    let subject = parsed.subject();
    // A common name in an encoding x509-parser does not turn into text (BMPString, say)
    // falls back to the whole subject, as one without a common name does.
    let name = match subject.iter_common_name().next().map(|cn| cn.as_str()) {
        Some(Ok(cn)) => cn.to_string(),
        _ => subject.to_string(),
    };
    (!name.is_empty()).then(|| Arc::from(name))
}

fn read_pair(
    cert: &Path,
    key: &Path,
    material: &mut Material,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let chain = certificates(cert, material)?;
    let key_bytes = material.read(key)?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| {
        format!(
            "{}: no usable private key (PKCS#8, RSA or EC PEM): {e}",
            key.display()
        )
    })?;
    Ok((chain, key_der))
}

fn certificates(
    path: &Path,
    material: &mut Material,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = material.read(path)?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not a PEM certificate file: {e}", path.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no CERTIFICATE block found", path.display()));
    }
    Ok(chain)
}

/// Loads a chain and its key, checks they belong together, and describes the leaf (the names
/// it is valid for pick it by SNI).
fn certified_key(
    cert: &Path,
    key: &Path,
    material: &mut Material,
) -> Result<(CertificateInfo, Arc<CertifiedKey>), String> {
    let (chain, key_der) = read_pair(cert, key, material)?;
    let info = describe(&chain[0])
        .ok_or_else(|| format!("{}: the first certificate does not parse", cert.display()))?;
    let certified = CertifiedKey::from_der(chain, key_der, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => format!(
            "{} and {} do not match: the key is not the certificate's",
            cert.display(),
            key.display()
        ),
        other => format!("{} with {}: {other}", cert.display(), key.display()),
    })?;
    Ok((info, Arc::new(certified)))
}

/// A certificate's subject, validity end, serial and DNS names: its subject alternative
/// names, lowercase, or its common name when it has none.
fn describe(certificate: &CertificateDer<'_>) -> Option<CertificateInfo> {
    use x509_parser::extensions::GeneralName;
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref()).ok()?;
    let mut names: Vec<String> = match parsed.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::DNSName(dns) => Some(dns.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if names.is_empty() {
        names.extend(
            parsed
                .subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_ascii_lowercase),
        );
    }
    Some(CertificateInfo {
        subject: parsed.subject().to_string(),
        names,
        not_after: parsed.validity().not_after.timestamp(),
        serial: parsed.raw_serial_as_string(),
    })
}

fn root_store(path: &Path, material: &mut Material) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for certificate in certificates(path, material)? {
        roots
            .add(certificate)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(format!(
            "no system CA certificates found ({}); name a CA bundle in `tls.ca`",
            found
                .errors
                .first()
                .map_or("none installed".to_string(), ToString::to_string)
        ));
    }
    Ok(roots)
}

/// Picks the certificate for the name the client asked for (SNI); the first certificate
/// answers clients that name no host or one no certificate covers.
#[derive(Debug)]
struct SniResolver {
    entries: Vec<(Vec<String>, Arc<CertifiedKey>)>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(asked) = hello.server_name() {
            let found = self
                .entries
                .iter()
                .find(|(names, _)| names.iter().any(|pattern| name_matches(pattern, asked)));
            if let Some((_, key)) = found {
                return Some(Arc::clone(key));
            }
        }
        self.entries.first().map(|(_, key)| Arc::clone(key))
    }
}

/// `pattern` is a certificate name (lowercase), possibly `*.example.com`, which covers exactly
/// one label.
fn name_matches(pattern: &str, asked: &str) -> bool {
    if pattern.eq_ignore_ascii_case(asked) {
        return true;
    }
    match (pattern.strip_prefix("*."), asked.split_once('.')) {
        (Some(suffix), Some((label, rest))) => {
            !label.is_empty() && rest.eq_ignore_ascii_case(suffix)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_one_label() {
        assert!(name_matches("api.example.com", "API.example.com"));
        assert!(name_matches("*.example.com", "api.example.com"));
        assert!(!name_matches("*.example.com", "a.b.example.com"));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(!name_matches("api.example.com", "web.example.com"));
    }

    #[test]
    fn one_provider_for_everything() {
        assert!(Arc::ptr_eq(&provider(), &provider()));
    }
}
