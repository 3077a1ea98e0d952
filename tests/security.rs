//! End to end: TLS and mutual TLS on the gRPC port, producer tokens and the
//! kinds each producer may write, rotation by SIGHUP, certificate checks in
//! `validate`, `healthcheck` over TLS, `token hash`, and a Python grpcio
//! client over TLS. Needs the built binary; the Python test needs the
//! virtualenv of `tests/run` (EVENTSTASH_PYTHON).

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::security::*;
use support::*;

const TLS: &str = r#"tls = { cert_file = "tls/server.crt", key_file = "tls/server.key" }"#;
const MTLS: &str =
    r#"tls = { cert_file = "tls/server.crt", key_file = "tls/server.key", client_ca_file = "tls/ca.crt" }"#;
const TOKENS: &str = r#"auth = { tokens_file = "tokens.toml" }"#;

fn events(prefix: &str, count: usize, kind: &str) -> Vec<eventstash_client::Event> {
    (0..count).map(|n| json_event(prefix, n, kind, r#"{"n":1}"#)).collect()
}

/// A tokens file: (name, token, kinds TOML array or "" for the default).
fn tokens_file(producers: &[(&str, &str, &str)]) -> String {
    producers
        .iter()
        .map(|(name, token, kinds)| {
            let hash = token_sha256(token);
            let kinds = if kinds.is_empty() {
                String::new()
            } else {
                format!("kinds = {kinds}\n")
            };
            format!("[[producers]]\nname = \"{name}\"\ntoken_sha256 = \"{hash}\"\n{kinds}\n")
        })
        .collect()
}

fn tls_agent(input: &str, files: Vec<(String, String)>, healthcheck: &ClientTls) -> Agent {
    let mut options = AgentOptions::new(&secure_file_pipeline(input));
    options.files = files;
    start_tls_agent(options, healthcheck)
}

/// The stream failed because no (trusted) connection came about: the
/// client could not connect, or the transport broke (the handshake or the
/// HTTP/2 preface failed), never an answer of the service.
#[track_caller]
fn assert_refused_at_connection(result: Result<bool, tonic::Status>, who: &str) {
    let status = match result {
        Err(status) => status,
        Ok(answer) => panic!("{who} got an answer: success = {answer}"),
    };
    let not_connected = status.code() == tonic::Code::Unavailable && status.message().starts_with("connect:");
    let transport_broke =
        std::error::Error::source(&status).is_some_and(|source| source.is::<tonic::transport::Error>());
    assert!(
        not_connected || transport_broke,
        "{who} got {status:?}, not a refused connection"
    );
}

#[tokio::test]
async fn a_plain_client_is_refused_on_a_tls_port_and_a_tls_client_is_stored() {
    let ca = TestCa::new("test CA");
    let agent = tls_agent(TLS, tls_files(&ca, &ca.server(), &[]), &ClientTls::ca());

    let plain = send(&agent, None, None, events("plain-", 3, "tls.Plain")).await;
    assert_refused_at_connection(plain, "a plain client");
    assert!(!healthcheck(agent.addr), "plain healthcheck passed on a TLS port");

    let stored = send(&agent, Some(&ClientTls::ca()), None, events("tls-", 3, "tls.Secure")).await;
    assert_stored(stored);
    let documents = documents_of(&agent, "tls-secure");
    assert_eq!(documents.len(), 3);
    assert!(
        documents[0].get("source").is_none(),
        "no producer, no source: {}",
        documents[0]
    );
    assert!(documents_of(&agent, "tls-plain").is_empty());
}

#[tokio::test]
async fn a_client_that_trusts_another_ca_does_not_connect() {
    let ca = TestCa::new("test CA");
    let stranger = TestCa::new("another CA");
    let mut files = tls_files(&ca, &ca.server(), &[]);
    files.push(("tls/other-ca.crt".to_owned(), stranger.pem()));
    let agent = tls_agent(TLS, files, &ClientTls::ca());
    let wrong = ClientTls {
        ca: "tls/other-ca.crt".to_owned(),
        client: None,
    };
    let wrong_ca = send(&agent, Some(&wrong), None, events("x-", 1, "k")).await;
    assert_refused_at_connection(wrong_ca, "a client that trusts another CA");
    let (healthy, output) = healthcheck_with(agent.addr, &wrong.healthcheck_args(agent.dir.path()));
    assert!(!healthy, "{output}");
}

#[tokio::test]
async fn mutual_tls_needs_a_client_certificate_of_the_ca_and_names_the_producer_after_it() {
    let ca = TestCa::new("test CA");
    let stranger = TestCa::new("another CA");
    let clients = [
        ("billing", &ca.client("billing-service")),
        ("forged", &stranger.client("billing-service")),
    ];
    let agent = tls_agent(
        MTLS,
        tls_files(&ca, &ca.server(), &clients),
        &ClientTls::with_client("billing"),
    );

    let without = send(&agent, Some(&ClientTls::ca()), None, events("none-", 2, "m.Tls")).await;
    assert_refused_at_connection(without, "no client certificate");
    let forged = send(
        &agent,
        Some(&ClientTls::with_client("forged")),
        None,
        events("forged-", 2, "m.Tls"),
    )
    .await;
    assert_refused_at_connection(forged, "a certificate of another CA");
    assert!(documents_of(&agent, "m-tls").is_empty());

    let right = send(
        &agent,
        Some(&ClientTls::with_client("billing")),
        None,
        events("right-", 2, "m.Tls"),
    )
    .await;
    assert_stored(right);
    let documents = documents_of(&agent, "m-tls");
    assert_eq!(documents.len(), 2);
    assert!(
        documents.iter().all(|doc| doc["source"] == "billing-service"),
        "{documents:?}"
    );

    // Health checks need the client certificate too: the port asks for it
    // in the TLS handshake, before any request.
    let (healthy, _) = healthcheck_with(agent.addr, &ClientTls::ca().healthcheck_args(agent.dir.path()));
    assert!(!healthy);
    assert!(agent.log().contains("TLS handshake failed"), "{}", agent.log());
}

#[tokio::test]
async fn tokens_missing_or_wrong_are_unauthenticated_and_the_right_one_names_the_source() {
    let ca = TestCa::new("test CA");
    let mut files = tls_files(&ca, &ca.server(), &[]);
    files.push((
        "tokens.toml".to_owned(),
        tokens_file(&[("billing", "s3cret-billing", "")]),
    ));
    // A `[metrics]` table after the input's keys, to count the refusals.
    let agent = tls_agent(
        &format!("{TLS}\n{TOKENS}\n[metrics]\nbind = \"127.0.0.1:0\""),
        files,
        &ClientTls::ca(),
    );
    let tls = Some(ClientTls::ca());

    for token in [None, Some("wrong-token")] {
        let status = send(&agent, tls.as_ref(), token, events("bad-", 2, "t.Event"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{token:?}: {status:?}");
    }
    assert_stored(
        send(
            &agent,
            tls.as_ref(),
            Some("s3cret-billing"),
            events("ok-", 2, "t.Event"),
        )
        .await,
    );
    let documents = documents_of(&agent, "t-event");
    assert_eq!(documents.len(), 2, "only the authenticated stream is stored");
    assert!(documents.iter().all(|doc| doc["source"] == "billing"));
    assert!(!agent.log().contains("s3cret-billing"), "a token reached the log");
    let (_, text) = http_get(agent.metrics_addr(), "/metrics");
    let refused = text
        .lines()
        .find(|line| {
            line.starts_with("eventstash_grpc_requests_refused_total{") && line.contains(r#"code="UNAUTHENTICATED""#)
        })
        .unwrap_or_else(|| panic!("no refused-requests series:\n{text}"));
    assert!(refused.ends_with(" 2"), "{refused}");
}

#[tokio::test]
async fn health_is_open_without_a_token_and_reflection_is_not() {
    let ca = TestCa::new("test CA");
    let mut files = tls_files(&ca, &ca.server(), &[]);
    files.push(("tokens.toml".to_owned(), tokens_file(&[("ops", "ops-token", "")])));
    let agent = tls_agent(&format!("{TLS}\n{TOKENS}"), files, &ClientTls::ca());
    // start_tls_agent waited on `eventstash healthcheck`, which has no token.
    let channel = connect(&agent, Some(&ClientTls::ca()), None).await.unwrap().channel();
    let list = |token: Option<&'static str>| {
        let channel = channel.clone();
        async move {
            use tonic_reflection::pb::v1::ServerReflectionRequest;
            use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
            use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
            let mut client = ServerReflectionClient::with_interceptor(channel, Bearer::new(token));
            let request = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let mut responses = client
                .server_reflection_info(tokio_stream::iter([request]))
                .await?
                .into_inner();
            responses.message().await.map(|response| response.is_some())
        }
    };
    assert_eq!(list(None).await.unwrap_err().code(), tonic::Code::Unauthenticated);
    assert!(matches!(list(Some("ops-token")).await, Ok(true)));
}

#[tokio::test]
async fn a_stream_with_a_kind_outside_the_producers_globs_stores_none_of_its_events() {
    let ca = TestCa::new("test CA");
    let mut files = tls_files(&ca, &ca.server(), &[]);
    files.push((
        "tokens.toml".to_owned(),
        tokens_file(&[("billing", "billing-token", r#"["billing.*", "audit.Entry"]"#)]),
    ));
    // Small batches: a long stream spans many of them.
    let input = format!("{TLS}\n{TOKENS}\nmax_batch_events = 10");
    let agent = tls_agent(&input, files, &ClientTls::ca());
    let tls = Some(ClientTls::ca());

    let mut stream = events("mixed-", 500, "billing.Invoice");
    stream.push(json_event("mixed-", 500, "payroll.Salary", "{}"));
    stream.extend(events("after-", 10, "billing.Invoice"));
    let status = send(&agent, tls.as_ref(), Some("billing-token"), stream)
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("payroll.Salary"), "{}", status.message());

    // A later stream is acknowledged only once stored: by then anything of
    // the refused stream would have been written before it.
    let allowed = [events("ok-", 20, "billing.Invoice"), events("audit-", 1, "audit.Entry")].concat();
    assert_stored(send(&agent, tls.as_ref(), Some("billing-token"), allowed).await);
    let invoices = documents_of(&agent, "billing-invoice");
    assert_eq!(
        invoices.len(),
        20,
        "none of the refused stream's 500 allowed events may be stored"
    );
    assert!(
        invoices
            .iter()
            .all(|doc| doc["id"].as_str().unwrap().starts_with("ok-"))
    );
    assert!(documents_of(&agent, "payroll-salary").is_empty());
    assert_eq!(documents_of(&agent, "audit-entry").len(), 1);
}

#[tokio::test]
async fn a_token_rotated_in_the_file_and_signalled_with_sighup_replaces_the_old_one() {
    let ca = TestCa::new("test CA");
    let mut files = tls_files(&ca, &ca.server(), &[]);
    files.push(("tokens.toml".to_owned(), tokens_file(&[("billing", "old-token", "")])));
    let agent = tls_agent(&format!("{TLS}\n{TOKENS}"), files, &ClientTls::ca());
    let tls = Some(ClientTls::ca());
    assert_stored(send(&agent, tls.as_ref(), Some("old-token"), events("a-", 1, "r.Event")).await);

    // A connection opened before the rotation keeps working with the new token.
    let open = connect(&agent, tls.as_ref(), Some("new-token")).await.unwrap();
    write_file(
        &agent.path("tokens.toml"),
        &tokens_file(&[("billing", "new-token", "")]),
    );
    agent.signal("HUP");
    wait_for_log(&agent, "reloaded the gRPC input's producer tokens");

    let old = send(&agent, tls.as_ref(), Some("old-token"), events("b-", 1, "r.Event")).await;
    assert_eq!(old.unwrap_err().code(), tonic::Code::Unauthenticated);
    assert_stored(send_on(&open.clone(), events("c-", 1, "r.Event")).await);
    assert_eq!(documents_of(&agent, "r-event").len(), 2);
}

#[tokio::test]
async fn a_certificate_renewed_under_the_agent_serves_new_connections_and_keeps_open_ones() {
    let ca = TestCa::new("first CA");
    let agent = tls_agent(TLS, tls_files(&ca, &ca.server(), &[]), &ClientTls::ca());
    let tls = Some(ClientTls::ca());
    let open = connect(&agent, tls.as_ref(), None).await.unwrap();
    assert_stored(send_on(&open, events("before-", 1, "c.Event")).await);

    // A new CA and certificate, written as cert-manager would, then SIGHUP.
    let renewed = TestCa::new("second CA");
    for (relative, text) in tls_files(&renewed, &renewed.server(), &[]) {
        write_file(&agent.path(&relative), &text);
    }
    agent.signal("HUP");
    wait_for_log(&agent, "reloaded the gRPC input's TLS certificate");

    // The connection opened before the renewal still streams...
    assert_stored(send_on(&open, events("open-", 1, "c.Event")).await);
    // ...and new connections get the new certificate, which only the new CA verifies.
    assert_stored(send(&agent, tls.as_ref(), None, events("new-", 1, "c.Event")).await);
    let (healthy, output) = healthcheck_with(agent.addr, &ClientTls::ca().healthcheck_args(agent.dir.path()));
    assert!(healthy, "{output}");
    assert_eq!(documents_of(&agent, "c-event").len(), 3);
}

#[tokio::test]
async fn a_broken_certificate_file_is_reported_and_the_previous_certificate_stays() {
    let ca = TestCa::new("test CA");
    let agent = tls_agent(TLS, tls_files(&ca, &ca.server(), &[]), &ClientTls::ca());
    write_file(
        &agent.path("tls/server.crt"),
        "-----BEGIN CERTIFICATE-----\nnot base64\n",
    );
    // No signal: the input notices the file changed by itself.
    wait_for_log(&agent, "cannot reload the gRPC input's TLS certificate");
    let tls = Some(ClientTls::ca());
    assert_stored(send(&agent, tls.as_ref(), None, events("still-", 1, "b.Event")).await);
}

#[test]
fn validate_reports_an_expired_or_not_yet_valid_server_certificate() {
    let ca = TestCa::new("test CA");
    for (server, expected) in [
        (
            ca.server_valid((2020, 1, 1), (2021, 1, 1)),
            "the certificate expired at 2021-01-01",
        ),
        (
            ca.server_valid((2999, 1, 1), (3000, 1, 1)),
            "the certificate is not valid before 2999-01-01",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        for (relative, text) in tls_files(&ca, &server, &[]) {
            write_file(&dir.path().join(relative), &text);
        }
        let config = secure_file_pipeline(TLS).replace("{port}", "0");
        std::fs::write(dir.path().join("pipeline.toml"), config).unwrap();
        let output = Command::new(EVENTSTASH)
            .args(["validate", "-c", "pipeline.toml"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("tls.cert_file") && stderr.contains(expected),
            "{stderr}"
        );
    }
}

#[test]
fn validate_does_not_print_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let config = r#"
[[inputs]]
type = "grpc"
bind = "127.0.0.1:1"

[[outputs]]
type = "elasticsearch"
hosts = ["https://localhost:9200"]
user = "elastic"
password = "${ES_PASSWORD}"
"#;
    std::fs::write(dir.path().join("pipeline.toml"), config).unwrap();
    let output = Command::new(EVENTSTASH)
        .args(["validate", "-c", "pipeline.toml"])
        .current_dir(dir.path())
        .env("ES_PASSWORD", "hunter2-secret")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{text}");
    assert!(!text.contains("hunter2-secret"), "{text}");
}

#[test]
fn the_secure_pipeline_validates_with_the_certificates_of_make_test_ca() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let script = repo_root().join("tests/certs/make-test-ca");
    run_ok(Command::new("bash").arg(&script).arg(&certs).arg("producer-a"));
    for file in [
        "ca.crt",
        "server.crt",
        "server.key",
        "client-producer-a.crt",
        "client-producer-a.key",
    ] {
        assert!(certs.join(file).is_file(), "make-test-ca wrote no {file}");
    }
    write_file(
        &certs.join("tokens.toml"),
        &tokens_file(&[("billing", "t", r#"["billing.*"]"#)]),
    );
    let validate = |env: &[(&str, String)]| {
        let output = Command::new(EVENTSTASH)
            .args(["validate", "-c"])
            .arg(repo_root().join("pipelines/secure.toml"))
            .current_dir(repo_root())
            .env("EVENTSTASH_TLS_DIR", &certs)
            .env("EVENTSTASH_TOKENS_FILE", certs.join("tokens.toml"))
            .envs(env.iter().map(|(k, v)| (*k, v)))
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (ok, stderr) = validate(&[]);
    assert!(ok, "{stderr}");
    let (ok, stderr) = validate(&[("EVENTSTASH_CLIENT_CA", certs.join("ca.crt").display().to_string())]);
    assert!(ok, "with mutual TLS: {stderr}");
    let (ok, stderr) = validate(&[("EVENTSTASH_TLS_DIR", dir.path().join("missing").display().to_string())]);
    assert!(!ok && stderr.contains("tls.cert_file"), "{stderr}");
}

#[test]
fn token_hash_prints_the_sha256_of_the_token_on_stdin() {
    use std::io::Write as _;
    let mut child = Command::new(EVENTSTASH)
        .args(["token", "hash"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"abc\n").unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let empty = Command::new(EVENTSTASH)
        .args(["token", "hash"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(empty.status.code(), Some(2));
}

#[test]
fn a_python_grpcio_client_streams_over_tls_with_a_client_certificate_and_a_token() {
    let ca = TestCa::new("test CA");
    let mut files = tls_files(&ca, &ca.server(), &[("py", &ca.client("python-producer"))]);
    files.push((
        "tokens.toml".to_owned(),
        tokens_file(&[("python", "py-token", r#"["python.*"]"#)]),
    ));
    let agent = tls_agent(&format!("{MTLS}\n{TOKENS}"), files, &ClientTls::with_client("py"));
    let run = |token: &str, kind: &str| {
        let dir = agent.dir.path();
        let output = Command::new(python())
            .arg(repo_root().join("tests/python/hfx_tls_client.py"))
            .args(["--addr", &format!("localhost:{}", agent.addr.port())])
            .args(["--count", "25", "--kind", kind])
            .arg("--ca")
            .arg(dir.join("tls/ca.crt"))
            .arg("--cert")
            .arg(dir.join("tls/py.crt"))
            .arg("--key")
            .arg(dir.join("tls/py.key"))
            .args(["--token", token])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let last = stdout.lines().last().unwrap_or_default().to_owned();
        let result: serde_json::Value = serde_json::from_str(&last)
            .unwrap_or_else(|_| panic!("no JSON result: {stdout}{}", String::from_utf8_lossy(&output.stderr)));
        result
    };
    let stored = run("py-token", "python.Event");
    assert_eq!(stored["success"], true, "{stored}");
    let documents = documents_of(&agent, "python-event");
    assert_eq!(documents.len(), 25);
    assert_eq!(documents[0]["source"], "python", "the token names the producer");

    assert_eq!(run("nope", "python.Event")["code"], "UNAUTHENTICATED");
    assert_eq!(run("py-token", "other.Event")["code"], "PERMISSION_DENIED");
}

#[tokio::test]
async fn connections_that_never_finish_the_tls_handshake_are_closed_in_time() {
    use tokio::io::AsyncReadExt as _;
    let ca = TestCa::new("test CA");
    let input = format!("{TLS}\nhandshake_timeout_ms = 500");
    let agent = tls_agent(&input, tls_files(&ca, &ca.server(), &[]), &ClientTls::ca());
    let mut silent = tokio::net::TcpStream::connect(agent.addr).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
}
