//! Support for the event store's end-to-end tests: agents whose gRPC input
//! serves `hfx.v1.EventStore` over moto (DynamoDB, `EVENTSTASH_TEST_DYNAMODB_URL`)
//! and osmem-server (Elasticsearch, `EVENTSTASH_TEST_ELASTICSEARCH_URL`), both
//! started by `tests/run`; the tests fail, not skip, without them.

use std::sync::atomic::{AtomicUsize, Ordering};

use eventstash_client::proto::{AppendRequest, AppendResponse, ChangeSet, ReplayRequest, ReplayedEvent};
use eventstash_client::{Client, Event, EventStoreClient, Format};
use tonic::{Code, Status};

use super::{Agent, AgentOptions, into_status};

/// moto's URL.
pub fn dynamodb_url() -> String {
    std::env::var("EVENTSTASH_TEST_DYNAMODB_URL").unwrap_or_else(|_| {
        panic!("EVENTSTASH_TEST_DYNAMODB_URL is not set: run the tests with tests/run, which starts moto")
    })
}

/// osmem-server's URL.
pub fn elasticsearch_url() -> String {
    std::env::var("EVENTSTASH_TEST_ELASTICSEARCH_URL").unwrap_or_else(|_| {
        panic!("EVENTSTASH_TEST_ELASTICSEARCH_URL is not set: run the tests with tests/run, which starts osmem-server")
    })
}

/// A local address that hands connections to moto one at a time, and its
/// URL for agents.
///
/// moto runs each request on its own thread, and its `TransactWriteItems`
/// is not atomic across them: it checks and writes action by action, and a
/// cancelled transaction rolls back by restoring the table as it was when
/// it started (`tests/python/moto_server.py` only makes that copy cheaper),
/// which erases whatever other transactions committed meanwhile. DynamoDB itself serializes transactions. moto closes
/// every connection after its response, so forwarding one connection at a
/// time gives its requests DynamoDB's isolation (at the cost of running
/// them one by one, which moto's interpreter lock does anyway).
pub async fn serialized_dynamodb() -> String {
    use tokio::io::AsyncWriteExt as _;
    let upstream = dynamodb_url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let turn = std::sync::Arc::new(tokio::sync::Mutex::new(()));
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let upstream = upstream.clone();
            let turn = turn.clone();
            tokio::spawn(async move {
                // A connection opened but unused must not hold the turn.
                let mut first = [0u8; 1];
                if client.peek(&mut first).await.unwrap_or(0) == 0 {
                    return;
                }
                let _turn = turn.lock().await;
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                // moto closes after its answer: that ends the turn, whether
                // or not the client has closed its side yet.
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let request = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                });
                let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                let _ = client_write.shutdown().await;
                request.abort();
            });
        }
    });
    url
}

/// A name no other test (or earlier run against the same server) uses.
pub fn unique(purpose: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{purpose}-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The tables of one test's event store.
pub struct StoreTables {
    pub aggregates: String,
    pub change_sets: String,
}

impl StoreTables {
    pub fn new(purpose: &str) -> StoreTables {
        StoreTables {
            aggregates: unique(&format!("{purpose}-aggregates")),
            change_sets: unique(&format!("{purpose}-change-sets")),
        }
    }

    /// The `[[event_stores]]` table `store` on moto, reached at `endpoint`.
    pub fn toml(&self, endpoint: &str) -> String {
        format!(
            r#"
[[event_stores]]
id = "store"
type = "dynamodb"
aggregates_table = "{}"
change_sets_table = "{}"
region = "us-east-1"
endpoint_url = "{}"
create_table = true
# moto handles one request at a time here, slower as tables grow.
request_timeout_ms = 120000
retry_timeout_ms = 300000
"#,
            self.aggregates, self.change_sets, endpoint
        )
    }
}

/// The variables that give an agent's AWS clients credentials for moto.
pub fn aws_env() -> Vec<(String, String)> {
    [
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// An agent serving the event store in `tables` on moto (through
/// [`serialized_dynamodb`]), replaying `replay`, with `outputs` (TOML) as
/// its outputs.
pub async fn start_agent(tables: &StoreTables, replay: &[&str], outputs: &str) -> Agent {
    start_agent_with_files(tables, replay, outputs, Vec::new()).await
}

/// [`start_agent`] with files written into the agent's directory first.
pub async fn start_agent_with_files(
    tables: &StoreTables,
    replay: &[&str],
    outputs: &str,
    files: Vec<(String, String)>,
) -> Agent {
    start_agent_with_input(tables, replay, outputs, files, "").await
}

/// [`start_agent_with_files`] with `input` (TOML keys) added to the gRPC
/// input's table.
pub async fn start_agent_with_input(
    tables: &StoreTables,
    replay: &[&str],
    outputs: &str,
    files: Vec<(String, String)>,
    input: &str,
) -> Agent {
    let endpoint = serialized_dynamodb().await;
    let replay: Vec<String> = replay.iter().map(|id| format!("{id:?}")).collect();
    let config = format!(
        r#"
[pipeline]
id = "event-store-test"
shutdown_timeout_ms = 10000

[[inputs]]
type = "grpc"
bind = "127.0.0.1:{{port}}"
event_store = "store"
replay = [{}]
{}
{}
{}
"#,
        replay.join(", "),
        input,
        tables.toml(&endpoint),
        outputs
    );
    let mut options = AgentOptions::new(&config);
    options.env = aws_env();
    options.files = files;
    tokio::task::block_in_place(|| Agent::start(options))
}

/// A file output writing `events/%{index}.jsonl`.
pub const FILE_OUTPUT: &str = r#"
[[outputs]]
id = "files"
type = "file"
path = "events/%{index}.jsonl"
"#;

/// A connected event store client.
pub async fn store_client(agent: &Agent) -> EventStoreClient {
    Client::connect(agent.addr.to_string()).await.unwrap().event_store()
}

/// A connected event store client that sends the producer token `token`.
pub async fn store_client_with_token(agent: &Agent, token: &str) -> EventStoreClient {
    let client = Client::builder(agent.addr.to_string()).token(token).connect().await;
    client.unwrap().event_store()
}

/// A JSON event (`data` sent as it is).
pub fn json(kind: &str, data: &str) -> Event {
    Event::bytes(Format::Json, kind, data.as_bytes().to_vec())
}

/// An append request; raw, so that tests can send what the typed
/// `eventstash_client::Append` would not let them (a bad version, no type).
pub fn append_request(aggregate: &str, expected: i64, change_set_id: &str, events: Vec<Event>) -> AppendRequest {
    AppendRequest {
        aggregate_id: aggregate.to_owned(),
        aggregate_type: "test.Order".to_owned(),
        expected_version: expected,
        change_set_id: change_set_id.to_owned(),
        events: events.into_iter().map(Event::into_request).collect(),
    }
}

/// Sends an append.
pub async fn append(client: &mut EventStoreClient, request: AppendRequest) -> Result<AppendResponse, Status> {
    client.append(request).await.map_err(into_status)
}

/// The `x-current-version` of a conflict.
pub fn current_version(status: &Status) -> i64 {
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    status
        .metadata()
        .get("x-current-version")
        .unwrap_or_else(|| panic!("no x-current-version in {status:?}"))
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Every change set of an aggregate from `from`.
pub async fn read_all(client: &mut EventStoreClient, aggregate: &str, from: i64) -> Result<Vec<ChangeSet>, Status> {
    client.read_all(aggregate, from).await.map_err(into_status)
}

/// Replays up to `limit` events (all with `None`); returns them and
/// whether the stream ended.
pub async fn replay(
    client: &mut EventStoreClient,
    request: ReplayRequest,
    limit: Option<usize>,
) -> Result<(Vec<ReplayedEvent>, bool), Status> {
    let mut stream = client.replay(request).await.map_err(into_status)?;
    let mut events = Vec::new();
    while limit.is_none_or(|limit| events.len() < limit) {
        match stream.next().await.map_err(into_status)? {
            Some(event) => events.push(event),
            None => return Ok((events, true)),
        }
    }
    Ok((events, false))
}

/// A JSON POST (or other method) to Elasticsearch; the status and body.
pub fn elasticsearch(method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let url = elasticsearch_url();
    let host = url.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}
