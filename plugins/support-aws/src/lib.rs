//! What the AWS plugins (the DynamoDB output and event store, the SQS input
//! and output) share beyond `plugins/api`: an `https://` endpoint signed by
//! a private CA, given as `ca_file`, read when the pipeline is built (so
//! `validate` reports a missing or empty file) and trusted by the SDK's own
//! rustls client besides the system's roots; and, with the `sqs` feature,
//! the SQS plugins' client, queue lookup and failure classification.

#[cfg(feature = "sqs")]
pub mod sqs;

use aws_smithy_http_client::tls;
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

/// Reads `ca_file`: PEM text holding at least one certificate.
pub fn read_ca_file(path: &str) -> Result<Vec<u8>, String> {
    let pem = std::fs::read(path).map_err(|error| format!("cannot read it: {error}"))?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("not PEM certificates: {error}"))?;
    if certificates.is_empty() {
        return Err("holds no PEM `CERTIFICATE`".to_owned());
    }
    Ok(pem)
}

/// An HTTPS client for the SDK that trusts the system's roots and the CAs
/// of `ca_pem` (as [`read_ca_file`] returned it).
pub fn https_client_trusting(ca_pem: &[u8]) -> Result<SharedHttpClient, String> {
    let context = tls::TlsContext::builder()
        .with_trust_store(tls::TrustStore::default().with_pem_certificate(ca_pem.to_vec()))
        .build()
        .map_err(|error| error.to_string())?;
    Ok(aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::AwsLc))
        .tls_context(context)
        .build_https())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_must_hold_pem_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name).display().to_string();
        assert!(
            read_ca_file(&path("missing.pem"))
                .unwrap_err()
                .starts_with("cannot read it")
        );
        std::fs::write(path("empty.pem"), "no certificate here\n").unwrap();
        assert_eq!(
            read_ca_file(&path("empty.pem")).unwrap_err(),
            "holds no PEM `CERTIFICATE`"
        );
    }
}
