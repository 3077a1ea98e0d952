//! [`ClientBuilder`]: where the agent is and how to reach it — TLS (a CA to
//! trust, a client certificate for mutual TLS, the name to expect) and the
//! producer token — turned into a connected [`Client`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::{Client, Error};

/// Largest message the client sends or accepts: event store reads return
/// whole change sets, which may be large.
pub(crate) const MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// PEM text given inline or read from a file when connecting.
#[derive(Debug, Clone)]
enum Pem {
    Text(Vec<u8>),
    File(PathBuf),
}

impl Pem {
    fn read(&self) -> Result<Vec<u8>, Error> {
        match self {
            Pem::Text(text) => Ok(text.clone()),
            Pem::File(path) => std::fs::read(path).map_err(|source| Error::ReadFile {
                path: path.clone(),
                source,
            }),
        }
    }
}

/// How to connect to an agent; [`ClientBuilder::connect`] makes the [`Client`].
///
/// ```no_run
/// # async fn example() -> Result<(), eventstash_client::Error> {
/// let client = eventstash_client::Client::builder("agent.example:42043")
///     .ca_file("tls/ca.crt")
///     .token("s3cret")
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    /// The agent's address: `host:port`, or a URI with `http://`/`https://`.
    uri: String,
    /// The CA certificate(s) that sign the agent's certificate; TLS is on
    /// when this is set.
    ca: Option<Pem>,
    /// The client certificate and key shown for mutual TLS.
    identity: Option<(Pem, Pem)>,
    /// The name the agent's certificate must carry, if not the URI's host.
    domain: Option<String>,
    /// The producer token, sent as `authorization: Bearer <token>`.
    token: Option<String>,
    /// How long a connection attempt may take.
    connect_timeout: Duration,
}

impl ClientBuilder {
    /// A plain-text connection to `uri` (`host:port` or a full URI).
    pub fn new(uri: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            uri: uri.into(),
            ca: None,
            identity: None,
            domain: None,
            token: None,
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// Connects over TLS, trusting the CA certificate(s) in this PEM file.
    pub fn ca_file(mut self, path: impl AsRef<Path>) -> ClientBuilder {
        self.ca = Some(Pem::File(path.as_ref().to_owned()));
        self
    }

    /// Connects over TLS, trusting these PEM CA certificate(s).
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> ClientBuilder {
        self.ca = Some(Pem::Text(pem.into()));
        self
    }

    /// Shows this client certificate and key (PEM files) for mutual TLS.
    pub fn identity_files(mut self, cert: impl AsRef<Path>, key: impl AsRef<Path>) -> ClientBuilder {
        self.identity = Some((Pem::File(cert.as_ref().to_owned()), Pem::File(key.as_ref().to_owned())));
        self
    }

    /// Shows this client certificate and key (PEM text) for mutual TLS.
    pub fn identity_pem(mut self, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> ClientBuilder {
        self.identity = Some((Pem::Text(cert.into()), Pem::Text(key.into())));
        self
    }

    /// The name the agent's certificate must carry (default: the host of
    /// the URI), for agents reached by an address their certificate lacks.
    pub fn domain(mut self, name: impl Into<String>) -> ClientBuilder {
        self.domain = Some(name.into());
        self
    }

    /// Sends this producer token with every request.
    pub fn token(mut self, token: impl Into<String>) -> ClientBuilder {
        self.token = Some(token.into());
        self
    }

    /// How long a connection attempt may take (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.connect_timeout = timeout;
        self
    }

    /// Connects to the agent.
    pub async fn connect(self) -> Result<Client, Error> {
        let authorization = Authorization::new(self.token.as_deref())?;
        let endpoint = self.endpoint()?;
        let uri = endpoint.uri().to_string();
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| Error::Connect { uri, source })?;
        Ok(Client::new(channel, authorization))
    }

    /// The endpoint, with TLS when a CA is given. A bare `host:port` gets
    /// `https://` with TLS and `http://` without.
    fn endpoint(&self) -> Result<Endpoint, Error> {
        let uri = match (self.uri.contains("://"), &self.ca) {
            (true, _) => self.uri.clone(),
            (false, Some(_)) => format!("https://{}", self.uri),
            (false, None) => format!("http://{}", self.uri),
        };
        let invalid = |reason: String| Error::InvalidUri {
            uri: self.uri.clone(),
            reason,
        };
        let endpoint = Endpoint::from_shared(uri)
            .map_err(|error| invalid(error.to_string()))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .initial_stream_window_size(1024 * 1024)
            .initial_connection_window_size(4 * 1024 * 1024);
        let Some(tls) = self.tls()? else {
            return Ok(endpoint);
        };
        endpoint.tls_config(tls).map_err(|error| invalid(error.to_string()))
    }

    fn tls(&self) -> Result<Option<ClientTlsConfig>, Error> {
        let Some(ca) = &self.ca else {
            if self.identity.is_some() || self.domain.is_some() {
                return Err(Error::InvalidSetting {
                    setting: "identity/domain",
                    reason: "a client certificate or domain needs TLS: set ca_file or ca_pem".to_owned(),
                });
            }
            return Ok(None);
        };
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca.read()?));
        if let Some((cert, key)) = &self.identity {
            tls = tls.identity(Identity::from_pem(cert.read()?, key.read()?));
        }
        if let Some(domain) = &self.domain {
            tls = tls.domain_name(domain.clone());
        }
        Ok(Some(tls))
    }
}

/// Adds `authorization: Bearer <token>` to every request when a token is
/// set: the header the agent reads a producer token from. A tonic
/// interceptor, also for generated clients of other services on the port.
#[derive(Clone, Debug)]
pub struct Authorization(Option<MetadataValue<Ascii>>);

impl Authorization {
    /// The header for `token`, none without one.
    pub fn new(token: Option<&str>) -> Result<Authorization, Error> {
        let Some(token) = token else {
            return Ok(Authorization(None));
        };
        let mut value: MetadataValue<Ascii> = format!("Bearer {token}").parse().map_err(|_| Error::InvalidSetting {
            setting: "token",
            reason: "a token must be printable ASCII".to_owned(),
        })?;
        // Kept out of debug output of the request.
        value.set_sensitive(true);
        Ok(Authorization(Some(value)))
    }
}

impl Interceptor for Authorization {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_address_gets_the_scheme_tls_asks_for() {
        let plain = ClientBuilder::new("127.0.0.1:42043").endpoint().unwrap();
        assert_eq!(plain.uri().scheme_str(), Some("http"));
        let tls = ClientBuilder::new("localhost:42043")
            .ca_pem(Vec::new())
            .endpoint()
            .unwrap();
        assert_eq!(tls.uri().scheme_str(), Some("https"));
    }

    #[test]
    fn a_missing_ca_file_names_the_file() {
        let error = ClientBuilder::new("localhost:1")
            .ca_file("/nonexistent/ca.crt")
            .endpoint()
            .unwrap_err();
        assert!(error.to_string().contains("/nonexistent/ca.crt"), "{error}");
    }

    #[test]
    fn a_token_that_is_no_header_value_is_refused() {
        let error = Authorization::new(Some("line\nbreak")).unwrap_err();
        assert!(
            matches!(error, Error::InvalidSetting { setting: "token", .. }),
            "{error}"
        );
    }
}
