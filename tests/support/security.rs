//! Support for the security tests: test CAs and certificates made with
//! rcgen, agents started on TLS ports (and waited for with `eventstash
//! healthcheck --tls-ca`), clients (`eventstash-client`) over TLS that
//! send producer tokens, and a TLS-terminating proxy that puts a plain test
//! server behind HTTPS.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventstash_client::{Authorization, Client, ClientBuilder, Event};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::service::Interceptor;

use super::{Agent, AgentOptions, EVENTSTASH, answer, logged_addr, write_file};

/// A certificate and its key, as PEM text.
#[derive(Clone)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

/// A test certificate authority.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        TestCa { issuer }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn sign(&self, params: CertificateParams) -> Pem {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// A server certificate for `localhost` and 127.0.0.1, valid now.
    pub fn server(&self) -> Pem {
        self.sign(server_params())
    }

    /// A server certificate valid only between two dates (year, month, day).
    pub fn server_valid(&self, from: (i32, u8, u8), until: (i32, u8, u8)) -> Pem {
        let mut params = server_params();
        params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
        params.not_after = rcgen::date_time_ymd(until.0, until.1, until.2);
        self.sign(params)
    }

    /// A client certificate whose subject CN is `name`.
    pub fn client(&self, name: &str) -> Pem {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }
}

fn server_params() -> CertificateParams {
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, "localhost");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params
}

/// Files for an agent's directory: `tls/ca.crt`, `tls/server.crt`,
/// `tls/server.key`, and for each client `tls/NAME.crt` and `tls/NAME.key`.
pub fn tls_files(ca: &TestCa, server: &Pem, clients: &[(&str, &Pem)]) -> Vec<(String, String)> {
    let mut files = vec![
        ("tls/ca.crt".to_owned(), ca.pem()),
        ("tls/server.crt".to_owned(), server.cert.clone()),
        ("tls/server.key".to_owned(), server.key.clone()),
    ];
    for (name, pem) in clients {
        files.push((format!("tls/{name}.crt"), pem.cert.clone()));
        files.push((format!("tls/{name}.key"), pem.key.clone()));
    }
    files
}

/// A gRPC input on `{port}` with `{input}` extra keys and a file output.
pub fn secure_file_pipeline(input: &str) -> String {
    format!(
        "[pipeline]\nshutdown_timeout_ms = 10000\n\n[[inputs]]\ntype = \"grpc\"\nbind = \"127.0.0.1:{{port}}\"\n{input}\n\n\
         [[outputs]]\ntype = \"file\"\npath = \"events/%{{index}}.jsonl\"\n"
    )
}

/// How a test reaches a TLS port: the CA to trust, and perhaps a client
/// certificate; paths inside the agent's directory.
#[derive(Clone, Default)]
pub struct ClientTls {
    pub ca: String,
    pub client: Option<String>,
}

impl ClientTls {
    /// Trusts `tls/ca.crt`.
    pub fn ca() -> ClientTls {
        ClientTls {
            ca: "tls/ca.crt".to_owned(),
            client: None,
        }
    }

    /// Trusts `tls/ca.crt` and shows `tls/NAME.crt`.
    pub fn with_client(name: &str) -> ClientTls {
        ClientTls {
            client: Some(name.to_owned()),
            ..ClientTls::ca()
        }
    }

    /// `eventstash healthcheck` arguments for this TLS.
    pub fn healthcheck_args(&self, dir: &Path) -> Vec<String> {
        let mut args = vec![
            "--tls-ca".to_owned(),
            dir.join(&self.ca).display().to_string(),
            "--tls-domain".to_owned(),
            "localhost".to_owned(),
        ];
        if let Some(name) = &self.client {
            args.extend([
                "--tls-cert".to_owned(),
                dir.join(format!("tls/{name}.crt")).display().to_string(),
                "--tls-key".to_owned(),
                dir.join(format!("tls/{name}.key")).display().to_string(),
            ]);
        }
        args
    }

    /// `builder` with this TLS, the files read from `dir`.
    fn configure(&self, builder: ClientBuilder, dir: &Path) -> ClientBuilder {
        let builder = builder.ca_file(dir.join(&self.ca)).domain("localhost");
        match &self.client {
            Some(name) => {
                builder.identity_files(dir.join(format!("tls/{name}.crt")), dir.join(format!("tls/{name}.key")))
            }
            None => builder,
        }
    }
}

/// Starts an agent whose gRPC port needs TLS, and waits until `eventstash
/// healthcheck` over TLS (as `healthcheck_tls` says) reports SERVING.
/// `{port}` becomes 0: the agent names the port it bound in its log.
pub fn start_tls_agent(options: AgentOptions, healthcheck_tls: &ClientTls) -> Agent {
    let dir = tempfile::tempdir().unwrap();
    let config = options.config.replace("{port}", "0");
    fs::write(dir.path().join("pipeline.toml"), config).unwrap();
    for (relative, text) in &options.files {
        write_file(&dir.path().join(relative), text);
    }
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.path().join("agent.log"))
        .unwrap();
    let child = Command::new(EVENTSTASH)
        .args(["run", "-c", "pipeline.toml"])
        .current_dir(dir.path())
        .env("LOG_LEVEL", "info")
        .envs(options.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut agent = Agent {
        dir,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        child,
    };
    let args = healthcheck_tls.healthcheck_args(agent.dir.path());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = agent.child.try_wait() {
            panic!("agent exited early with {status}:\n{}", agent.log());
        }
        if agent.addr.port() == 0
            && let Some(addr) = logged_addr(&agent.log(), "gRPC input listening")
        {
            agent.addr = addr;
        }
        if agent.addr.port() != 0 && healthcheck_with(agent.addr, &args).0 {
            return agent;
        }
        assert!(
            Instant::now() < deadline,
            "agent never became healthy:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `eventstash healthcheck --addr ADDR ARGS...`: whether it exited 0,
/// and what it printed on both streams.
pub fn healthcheck_with(addr: SocketAddr, args: &[String]) -> (bool, String) {
    let output = Command::new(EVENTSTASH)
        .args(["healthcheck", "--addr", &addr.to_string(), "--timeout-ms", "2000"])
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// Adds `authorization: Bearer <token>` to every request, if given: the
/// client's own header, for the generated clients of other services.
#[derive(Clone)]
pub struct Bearer(Authorization);

impl Bearer {
    pub fn new(token: Option<&str>) -> Bearer {
        Bearer(Authorization::new(token).unwrap())
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        self.0.call(request)
    }
}

/// A client of the agent over TLS (or plain HTTP/2 with `tls` = `None`)
/// sending `token`; the connection error if there is one.
pub async fn connect(
    agent: &Agent,
    tls: Option<&ClientTls>,
    token: Option<&str>,
) -> Result<Client, eventstash_client::Error> {
    let mut builder = Client::builder(agent.addr.to_string()).connect_timeout(Duration::from_secs(5));
    if let Some(tls) = tls {
        builder = tls.configure(builder, agent.dir.path());
    }
    if let Some(token) = token {
        builder = builder.token(token);
    }
    builder.connect().await
}

/// Connects and sends one stream: `Ok(success)`, or the connection's or
/// the stream's error as a status.
pub async fn send(
    agent: &Agent,
    tls: Option<&ClientTls>,
    token: Option<&str>,
    events: Vec<Event>,
) -> Result<bool, tonic::Status> {
    let client = connect(agent, tls, token)
        .await
        .map_err(|error| tonic::Status::unavailable(format!("connect: {error:?}")))?;
    send_on(&client, events).await
}

/// Fails the test unless the stream was acknowledged.
#[track_caller]
pub fn assert_stored(result: Result<bool, tonic::Status>) {
    match result {
        Ok(true) => {}
        other => panic!("stream not acknowledged: {other:?}"),
    }
}

/// Sends one stream on a client.
pub async fn send_on(client: &Client, events: Vec<Event>) -> Result<bool, tonic::Status> {
    let outcome = tokio::time::timeout(Duration::from_secs(20), client.store(events))
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("no answer in 20 s"))?;
    answer(outcome)
}

/// The documents of `events/<index>.jsonl`, none if the file is missing.
pub fn documents_of(agent: &Agent, index: &str) -> Vec<serde_json::Value> {
    let path = agent.path(&format!("events/{index}.jsonl"));
    if !path.exists() {
        return Vec::new();
    }
    super::read_documents(&path)
}

/// A TLS-terminating proxy on 127.0.0.1 in front of a plain TCP server,
/// serving `server`'s certificate. With `require_authorization`, the first
/// request of each connection must carry exactly that `authorization`
/// header, or it is answered 401 and the connection closed. Runs until the
/// test's runtime ends.
pub async fn tls_proxy(upstream: SocketAddr, server: &Pem, require_authorization: Option<String>) -> SocketAddr {
    use rustls::pki_types::pem::PemObject as _;
    let chain = rustls::pki_types::CertificateDer::pem_slice_iter(server.cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(server.key.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let required = require_authorization.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let Some(head) = read_head(&mut tls).await else { return };
                if let Some(required) = required {
                    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
                    let expected = format!("\r\nauthorization: {}\r\n", required.to_ascii_lowercase());
                    if !text.contains(&expected) {
                        let _ = tls
                            .write_all(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                            .await;
                        return;
                    }
                }
                let Ok(mut plain) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                if plain.write_all(&head).await.is_err() {
                    return;
                }
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    addr
}

/// Reads up to the end of an HTTP request's header block.
async fn read_head<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 64 * 1024 || stream.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    Some(head)
}
