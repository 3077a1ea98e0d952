//! TLS on the gRPC port: the server certificate and key (`tls.cert_file`,
//! `tls.key_file`, PEM), and with `tls.client_ca_file` mutual TLS, where a
//! client must show a certificate signed by that CA and the certificate's
//! name (its subject's CN, else its first subject alternative name) names
//! the producer.
//!
//! The whole rustls configuration sits behind one swappable `Arc`: each new
//! connection takes the current one, and [`TlsServer::reload`] (SIGHUP, or
//! a changed file, see [`crate::security`]) builds a new one from the files
//! and swaps it in. Connections already open keep the configuration they
//! were accepted with, so no stream is dropped by a certificate rotation. A
//! reload that fails (a half-written file, a key that does not match)
//! leaves the previous configuration serving.
//!
//! TLS 1.2 is the oldest version offered, ALPN offers only `h2` (gRPC
//! clients insist on it), and the crypto is rustls's ring provider, named
//! explicitly because the HTTP clients of the outputs build another one
//! into the same binary.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::DateTime;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer as _, X509Certificate};

use crate::error::GrpcInputError;

/// The files of a `tls` table.
#[derive(Debug, Clone)]
pub(crate) struct TlsFiles {
    /// The server's certificate chain, leaf first.
    pub(crate) cert_file: PathBuf,
    /// The server's private key (PKCS#8, PKCS#1 or SEC1).
    pub(crate) key_file: PathBuf,
    /// CAs whose client certificates are accepted; `None`: no client
    /// certificate is asked for.
    pub(crate) client_ca_file: Option<PathBuf>,
}

/// The TLS side of one gRPC input.
#[derive(Debug)]
pub(crate) struct TlsServer {
    /// Where the configuration is read from, on start and on reload.
    files: TlsFiles,
    /// The configuration new connections are accepted with.
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsServer {
    /// Reads and checks the files: the certificate must be valid now.
    pub(crate) fn load(files: TlsFiles) -> Result<TlsServer, GrpcInputError> {
        let config = server_config(&files)?;
        Ok(TlsServer {
            files,
            current: RwLock::new(config),
        })
    }

    /// The files, to watch them for changes.
    pub(crate) fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Whether clients must show a certificate.
    pub(crate) fn mutual(&self) -> bool {
        self.files.client_ca_file.is_some()
    }

    /// An acceptor with the current configuration.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(
            self.current
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone(),
        )
    }

    /// Reads the files again and serves new connections with them; on
    /// error the previous configuration stays.
    pub(crate) fn reload(&self) -> Result<(), GrpcInputError> {
        let config = server_config(&self.files)?;
        *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = config;
        Ok(())
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, GrpcInputError> {
    let chain = read_certificates("cert_file", &files.cert_file)?;
    check_valid_now(&files.cert_file, &chain[0])?;
    let key = PrivateKeyDer::from_pem_file(&files.key_file).map_err(|error| GrpcInputError::TlsFile {
        key: "key_file",
        path: files.key_file.clone(),
        reason: format!(
            "no private key read: {error} (a PEM `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` is needed)"
        ),
    })?;
    let config_error = |reason: String| GrpcInputError::TlsConfig {
        cert: files.cert_file.clone(),
        key: files.key_file.clone(),
        reason,
    };
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|error| config_error(error.to_string()))?;
    let builder = match &files.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for certificate in read_certificates("client_ca_file", path)? {
                roots.add(certificate).map_err(|error| GrpcInputError::TlsFile {
                    key: "client_ca_file",
                    path: path.clone(),
                    reason: format!("not a usable CA certificate: {error}"),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|error| GrpcInputError::TlsFile {
                    key: "client_ca_file",
                    path: path.clone(),
                    reason: error.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|error| config_error(format!("{error} (does the key belong to the certificate?)")))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

fn read_certificates(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, GrpcInputError> {
    let fail = |reason: String| GrpcInputError::TlsFile {
        key,
        path: path.to_owned(),
        reason,
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| fail(format!("cannot read it: {error}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| fail(format!("not PEM certificates: {error}")))?;
    if certificates.is_empty() {
        return Err(fail("holds no PEM `CERTIFICATE`".to_owned()));
    }
    Ok(certificates)
}

/// Refuses a server certificate that has expired or is not valid yet: every
/// client would refuse it, so the agent says so at start (and `validate`).
fn check_valid_now(path: &Path, der: &CertificateDer<'_>) -> Result<(), GrpcInputError> {
    let (_, certificate) = X509Certificate::from_der(der).map_err(|error| GrpcInputError::TlsFile {
        key: "cert_file",
        path: path.to_owned(),
        reason: format!("the first certificate cannot be parsed: {error}"),
    })?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() as i64);
    let validity = certificate.validity();
    let at =
        |seconds: i64| DateTime::from_timestamp(seconds, 0).map_or_else(|| seconds.to_string(), |t| t.to_rfc3339());
    let problem = if now < validity.not_before.timestamp() {
        format!("is not valid before {}", at(validity.not_before.timestamp()))
    } else if now > validity.not_after.timestamp() {
        format!("expired at {}", at(validity.not_after.timestamp()))
    } else {
        return Ok(());
    };
    Err(GrpcInputError::CertificateNotValidNow {
        path: path.to_owned(),
        problem,
    })
}

/// The name of a verified client certificate: its subject's common name,
/// else its first DNS, URI or e-mail subject alternative name.
pub(crate) fn client_name(der: &CertificateDer<'_>) -> Option<String> {
    let (_, certificate) = X509Certificate::from_der(der).ok()?;
    if let Some(common_name) = certificate
        .subject()
        .iter_common_name()
        .find_map(|name| name.as_str().ok())
        .filter(|name| !name.is_empty())
    {
        return Some(common_name.to_owned());
    }
    let names = certificate.subject_alternative_name().ok()??;
    names.value.general_names.iter().find_map(|name| match name {
        GeneralName::DNSName(name) | GeneralName::URI(name) | GeneralName::RFC822Name(name) => Some((*name).to_owned()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    use super::*;

    fn write_pair(dir: &Path, params: CertificateParams) -> TlsFiles {
        let key = KeyPair::generate().unwrap();
        let certificate = params.self_signed(&key).unwrap();
        let cert_file = dir.join("server.crt");
        let key_file = dir.join("server.key");
        std::fs::write(&cert_file, certificate.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        TlsFiles {
            cert_file,
            key_file,
            client_ca_file: None,
        }
    }

    #[test]
    fn a_certificate_and_key_make_a_server_that_offers_h2() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_pair(dir.path(), CertificateParams::new(vec!["localhost".into()]).unwrap());
        let server = TlsServer::load(files).unwrap();
        assert!(!server.mutual());
        assert_eq!(server.current.read().unwrap().alpn_protocols, vec![b"h2".to_vec()]);
    }

    #[test]
    fn an_expired_or_future_certificate_is_refused_with_its_dates() {
        let dir = tempfile::tempdir().unwrap();
        let mut expired = CertificateParams::new(vec!["localhost".into()]).unwrap();
        expired.not_before = rcgen::date_time_ymd(2020, 1, 1);
        expired.not_after = rcgen::date_time_ymd(2021, 1, 1);
        let message = TlsServer::load(write_pair(dir.path(), expired))
            .unwrap_err()
            .to_string();
        assert!(message.contains("the certificate expired at 2021-01-01"), "{message}");
        let mut future = CertificateParams::new(vec!["localhost".into()]).unwrap();
        future.not_before = rcgen::date_time_ymd(2999, 1, 1);
        future.not_after = rcgen::date_time_ymd(3000, 1, 1);
        let message = TlsServer::load(write_pair(dir.path(), future)).unwrap_err().to_string();
        assert!(message.contains("is not valid before 2999-01-01"), "{message}");
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_pair(dir.path(), CertificateParams::new(vec!["localhost".into()]).unwrap());
        std::fs::write(&files.key_file, KeyPair::generate().unwrap().serialize_pem()).unwrap();
        let message = TlsServer::load(files).unwrap_err().to_string();
        assert!(message.contains("does the key belong to the certificate?"), "{message}");
    }

    #[test]
    fn missing_or_empty_files_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = write_pair(dir.path(), CertificateParams::new(vec!["localhost".into()]).unwrap());
        files.client_ca_file = Some(dir.path().join("missing-ca.pem"));
        let message = TlsServer::load(files.clone()).unwrap_err().to_string();
        assert!(message.starts_with("`tls.client_ca_file` = "), "{message}");
        std::fs::write(&files.cert_file, "not pem").unwrap();
        let message = TlsServer::load(files).unwrap_err().to_string();
        assert!(message.contains("holds no PEM `CERTIFICATE`"), "{message}");
    }

    #[test]
    fn the_client_name_is_the_common_name_else_the_first_san() {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["san.example".into()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "billing-service");
        let der = params.self_signed(&key).unwrap().der().clone();
        assert_eq!(client_name(&der).as_deref(), Some("billing-service"));
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI("spiffe://example/billing".try_into().unwrap())];
        let der = params.self_signed(&key).unwrap().der().clone();
        assert_eq!(client_name(&der).as_deref(), Some("spiffe://example/billing"));
    }
}
