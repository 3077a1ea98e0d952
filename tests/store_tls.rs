//! End to end: the outputs reach their stores over HTTPS with a private CA
//! and credentials. Elasticsearch is osmem-server (started by tests/run,
//! EVENTSTASH_TEST_ELASTICSEARCH_URL) behind a TLS-terminating proxy that
//! checks the `authorization` header; DynamoDB and SQS are a moto_server of
//! the test's own (tests/run's tests/python/moto_server.py, in its
//! virtualenv) serving TLS (`--ssl-cert/--ssl-key`). Certificates are made by the test with rcgen. These tests
//! fail, not skip, without the servers.

mod support;

use std::collections::BTreeSet;
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use support::security::*;
use support::*;

fn elasticsearch() -> SocketAddr {
    let url = std::env::var("EVENTSTASH_TEST_ELASTICSEARCH_URL").unwrap_or_else(|_| {
        panic!("EVENTSTASH_TEST_ELASTICSEARCH_URL is not set: run the tests with tests/run, which starts osmem-server")
    });
    let authority = url.trim_start_matches("http://").trim_end_matches('/');
    authority.to_socket_addrs().unwrap().next().unwrap()
}

/// An agent with a gRPC input and one output table (`{output}` keys),
/// with the CAs and extra files in its directory.
fn agent_with_output(output: &str, files: Vec<(String, String)>, env: Vec<(String, String)>) -> Agent {
    let config = format!(
        "[pipeline]\nshutdown_timeout_ms = 3000\n[[inputs]]\ntype = \"grpc\"\nbind = \"127.0.0.1:{{port}}\"\n[[outputs]]\n{output}\n"
    );
    let mut options = AgentOptions::new(&config);
    options.files = files;
    options.env = env;
    Agent::start(options)
}

fn count_documents(es: SocketAddr, index: &str) -> u64 {
    let (status, body) = http_get(es, &format!("/{index}/_count"));
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["count"]
        .as_u64()
        .unwrap()
}

fn base64(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticsearch_over_https_with_a_private_ca_and_basic_auth_stores_every_event() {
    let ca = TestCa::new("es CA");
    let proxy = tls_proxy(
        elasticsearch(),
        &ca.server(),
        Some(format!("Basic {}", base64("elastic:pa55-word"))),
    )
    .await;
    let index = format!("tls-basic-{}", proxy.port());
    let output = format!(
        "type = \"elasticsearch\"\nhosts = [\"https://localhost:{}\"]\nindex = \"{index}\"\nca_file = \"tls/ca.crt\"\n\
         user = \"elastic\"\npassword = \"${{ES_PASSWORD}}\"\nretry_max_backoff_ms = 500",
        proxy.port()
    );
    let agent = agent_with_output(
        &output,
        vec![("tls/ca.crt".to_owned(), ca.pem())],
        vec![("ES_PASSWORD".to_owned(), "pa55-word".to_owned())],
    );
    let mut client = agent.client().await;
    store_ok(
        &mut client,
        (0..50).map(|n| json_event("es-", n, "tls.Basic", "{}")).collect(),
    )
    .await;
    assert_eq!(count_documents(elasticsearch(), &index), 50);
    assert!(!agent.log().contains("pa55-word"), "the password reached the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticsearch_over_https_with_an_api_key_stores_every_event() {
    let ca = TestCa::new("es CA");
    let proxy = tls_proxy(
        elasticsearch(),
        &ca.server(),
        Some(format!("ApiKey {}", base64("key-id:key-secret"))),
    )
    .await;
    let index = format!("tls-apikey-{}", proxy.port());
    let output = format!(
        "type = \"elasticsearch\"\nhosts = [\"https://localhost:{}\"]\nindex = \"{index}\"\nca_file = \"tls/ca.crt\"\n\
         api_key = \"${{ES_API_KEY}}\"",
        proxy.port()
    );
    let agent = agent_with_output(
        &output,
        vec![("tls/ca.crt".to_owned(), ca.pem())],
        vec![("ES_API_KEY".to_owned(), "key-id:key-secret".to_owned())],
    );
    let mut client = agent.client().await;
    store_ok(
        &mut client,
        (0..20).map(|n| json_event("key-", n, "tls.Key", "{}")).collect(),
    )
    .await;
    assert_eq!(count_documents(elasticsearch(), &index), 20);
    assert!(!agent.log().contains("key-secret"), "the API key reached the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticsearch_with_the_wrong_ca_says_so_and_keeps_the_events_unacknowledged() {
    let ca = TestCa::new("es CA");
    let other = TestCa::new("not the es CA");
    let proxy = tls_proxy(elasticsearch(), &ca.server(), None).await;
    let index = format!("tls-wrong-{}", proxy.port());
    let output = format!(
        "type = \"elasticsearch\"\nhosts = [\"https://localhost:{}\"]\nindex = \"{index}\"\nca_file = \"tls/other.crt\"\n\
         retry_max_backoff_ms = 500",
        proxy.port()
    );
    let agent = agent_with_output(&output, vec![("tls/other.crt".to_owned(), other.pem())], Vec::new());
    let mut client = agent.client().await;
    let events = (0..5).map(|n| json_event("wrong-", n, "tls.Wrong", "{}")).collect();
    let answer = tokio::time::timeout(Duration::from_secs(4), store(&mut client, events)).await;
    assert!(
        answer.is_err(),
        "the stream was answered although nothing could be stored: {answer:?}"
    );
    wait_for_log(&agent, "certificate");
    let log = agent.log().to_lowercase();
    assert!(
        log.contains("unknownissuer") || log.contains("unknown issuer") || log.contains("certificate verify"),
        "the log does not say the certificate was not trusted:\n{log}"
    );
    let (status, _) = http_get(elasticsearch(), &format!("/{index}/_count"));
    assert_ne!(status, 200, "nothing reached the index");
}

/// tests/run's moto_server (tests/python/moto_server.py: moto with its SQS
/// receive made whole) serving HTTPS with `pem`'s certificate; killed when
/// dropped.
struct TlsMoto {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl TlsMoto {
    fn start(pem: &Pem) -> TlsMoto {
        let dir = tempfile::tempdir().unwrap();
        write_file(&dir.path().join("server.crt"), &pem.cert);
        write_file(&dir.path().join("server.key"), &pem.key);
        let moto = repo_root().join("tests/python/moto_server.py");
        // Port 0: the server picks one and names it in its "Running on" line.
        let log = std::fs::File::create(dir.path().join("moto.log")).unwrap();
        let child = Command::new(python())
            .arg(&moto)
            .args(["-H", "127.0.0.1", "-p", "0"])
            .arg("--ssl-cert")
            .arg(dir.path().join("server.crt"))
            .arg("--ssl-key")
            .arg(dir.path().join("server.key"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", moto.display()));
        let mut port = None;
        wait_until("moto_server to name its port", Duration::from_secs(30), || {
            let text = std::fs::read_to_string(dir.path().join("moto.log")).unwrap_or_default();
            port = text.split("https://127.0.0.1:").nth(1).and_then(|rest| {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse::<u16>().ok()
            });
            port.is_some()
        });
        let port = port.unwrap();
        wait_until("moto_server to listen", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        TlsMoto { child, port, _dir: dir }
    }
}

impl Drop for TlsMoto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_over_https_with_a_ca_file_stores_every_event() {
    let ca = TestCa::new("dynamodb CA");
    let moto = TlsMoto::start(&ca.server());
    let output = format!(
        "type = \"dynamodb\"\ntable = \"tls-events\"\nregion = \"us-east-1\"\nendpoint_url = \"https://localhost:{}\"\n\
         ca_file = \"tls/ca.crt\"\naccess_key_id = \"test\"\nsecret_access_key = \"test\"\ncreate_table = true",
        moto.port
    );
    let agent = agent_with_output(&output, vec![("tls/ca.crt".to_owned(), ca.pem())], Vec::new());
    let mut client = agent.client().await;
    store_ok(
        &mut client,
        (0..30).map(|n| json_event("ddb-", n, "tls.Dynamo", "{}")).collect(),
    )
    .await;

    let script = r#"
import sys, boto3
url, ca = sys.argv[1], sys.argv[2]
db = boto3.client("dynamodb", endpoint_url=url, region_name="us-east-1", verify=ca,
                  aws_access_key_id="test", aws_secret_access_key="test")
print(db.scan(TableName="tls-events", Select="COUNT")["Count"])
"#;
    let url = format!("https://localhost:{}", moto.port);
    let ca_path = agent.path("tls/ca.crt").display().to_string();
    let stdout = run_ok(Command::new(python()).args(["-c", script, &url, &ca_path]));
    assert_eq!(stdout.trim(), "30");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_over_https_with_a_ca_file_carries_every_event_both_ways() {
    let ca = TestCa::new("sqs CA");
    let moto = TlsMoto::start(&ca.server());
    let url = format!("https://localhost:{}", moto.port);
    let ca_dir = tempfile::tempdir().unwrap();
    let ca_path = ca_dir.path().join("ca.crt");
    write_file(&ca_path, &ca.pem());
    let boto = |script: &str, args: &[&str]| {
        let prelude = r#"
import sys, boto3
sqs = boto3.client("sqs", endpoint_url=sys.argv[1], region_name="us-east-1", verify=sys.argv[2],
                   aws_access_key_id="test", aws_secret_access_key="test")
"#;
        let mut command = Command::new(python());
        command
            .args([
                "-c",
                &format!("{prelude}{script}"),
                &url,
                &ca_path.display().to_string(),
            ])
            .args(args);
        run_ok(&mut command)
    };
    boto(r#"sqs.create_queue(QueueName="tls-events")"#, &[]);

    // A front agent sends over HTTPS...
    let output = format!(
        "type = \"sqs\"\nqueue_url = \"tls-events\"\nregion = \"us-east-1\"\nendpoint_url = \"{url}\"\n\
         ca_file = \"tls/ca.crt\"\naccess_key_id = \"test\"\nsecret_access_key = \"test\""
    );
    let front = agent_with_output(&output, vec![("tls/ca.crt".to_owned(), ca.pem())], Vec::new());
    let mut client = front.client().await;
    store_ok(
        &mut client,
        (0..20).map(|n| json_event("sqs-", n, "tls.Queue", "{}")).collect(),
    )
    .await;
    let depth = boto(
        r#"print(sqs.get_queue_attributes(QueueUrl=sqs.get_queue_url(QueueName="tls-events")["QueueUrl"],
      AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]["ApproximateNumberOfMessages"])"#,
        &[],
    );
    assert_eq!(depth.trim(), "20");

    // ...and a store agent receives over HTTPS and stores them in files
    // (its gRPC input only answers the test's health checks).
    let config = format!(
        "[pipeline]\nshutdown_timeout_ms = 3000\n[[inputs]]\ntype = \"grpc\"\nbind = \"127.0.0.1:{{port}}\"\n\
         [[inputs]]\ntype = \"sqs\"\nqueue_url = \"tls-events\"\n\
         region = \"us-east-1\"\nendpoint_url = \"{url}\"\nca_file = \"tls/ca.crt\"\naccess_key_id = \"test\"\n\
         secret_access_key = \"test\"\nwait_time_seconds = 1\n[[outputs]]\ntype = \"file\"\npath = \"events/%{{index}}.jsonl\"\n"
    );
    let mut options = AgentOptions::new(&config);
    options.files = vec![("tls/ca.crt".to_owned(), ca.pem())];
    let store = Agent::start(options);
    // Every event arrives once, and nothing else. (A standard queue hands a
    // message out at least once; the moto here hands it out once unless its
    // visibility timeout ends, as real SQS almost always does.)
    let sent: BTreeSet<String> = (0..20).map(|n| format!("sqs-{n}")).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let stored = store.path("events/tls-queue.jsonl");
    loop {
        let text = std::fs::read_to_string(&stored).unwrap_or_default();
        let ids: BTreeSet<String> = complete_line_ids(&text).collect();
        assert!(ids.is_subset(&sent), "events never sent were stored: {ids:?}");
        if ids == sent {
            assert_eq!(complete_line_ids(&text).count(), 20, "an event stored twice: {text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of 20 events stored: {}",
            ids.len(),
            store.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
