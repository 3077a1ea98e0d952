//! A tiny HTTP proxy between the SDK and moto that makes `BatchWriteItem`
//! behave like DynamoDB under load: some calls are throttled
//! (`ProvisionedThroughputExceededException`), some store only part of
//! their items and hand the rest back as `UnprocessedItems`, some get a 500
//! (`InternalServerError`) or lose their connection unanswered, and calls
//! carrying a marker string are refused as invalid (`ValidationException`).
//! Every other call passes through unchanged.
//!
//! It speaks just enough HTTP/1.1 for the SDK's requests (bodies with
//! `Content-Length`, keep-alive from the SDK's side) and opens one upstream
//! connection per request. Moto does not check signatures, so a request
//! whose items were thinned out still goes through.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const BATCH_WRITE_ITEM: &str = "DynamoDB_20120810.BatchWriteItem";

/// What happens to one `BatchWriteItem` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forwarded unchanged.
    Pass,
    /// Answered with a 400 `ProvisionedThroughputExceededException`.
    Throttle,
    /// Half the items forwarded, the other half returned as unprocessed.
    Unprocessed,
    /// Answered with a 500 `InternalServerError`, nothing stored.
    ServerError,
    /// The connection is closed without an answer, nothing stored.
    Disconnect,
}

/// What the proxy did, for the tests' assertions.
#[derive(Debug, Default)]
pub struct ProxyStats {
    pub batch_calls: AtomicUsize,
    pub throttled_calls: AtomicUsize,
    pub unprocessed_items: AtomicUsize,
    pub refused_calls: AtomicUsize,
    pub server_errors: AtomicUsize,
    pub disconnects: AtomicUsize,
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    /// Where the SDK should send its requests.
    pub url: String,
    pub stats: Arc<ProxyStats>,
    task: JoinHandle<()>,
}

struct Plan {
    upstream: String,
    /// Applied to `BatchWriteItem` calls in turn, round and round.
    pattern: Vec<Fault>,
    /// Calls whose body contains this are refused as invalid.
    refuse_marker: Option<String>,
    stats: Arc<ProxyStats>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (`http://host:port`) on a free port.
    pub async fn start(upstream: &str, pattern: Vec<Fault>, refuse_marker: Option<&str>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy address"));
        let stats = Arc::new(ProxyStats::default());
        let plan = Arc::new(Plan {
            upstream: upstream.trim_start_matches("http://").trim_end_matches('/').to_owned(),
            pattern: if pattern.is_empty() { vec![Fault::Pass] } else { pattern },
            refuse_marker: refuse_marker.map(str::to_owned),
            stats: stats.clone(),
        });
        let task = tokio::spawn(async move {
            while let Ok((connection, _)) = listener.accept().await {
                let plan = plan.clone();
                tokio::spawn(async move {
                    // A connection the SDK drops mid-request is its business.
                    let _ = serve(connection, &plan).await;
                });
            }
        });
        FaultProxy { url, stats, task }
    }

    pub fn count(counter: &AtomicUsize) -> usize {
        counter.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One HTTP message: start line, headers, body.
struct Message {
    start: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Message {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The message with `body`, a fresh `Content-Length` and no
    /// connection-specific headers (and no checksum of the old body).
    fn to_bytes(&self, connection: Option<&str>) -> Vec<u8> {
        let mut out = format!("{}\r\n", self.start);
        for (key, value) in &self.headers {
            let skip = ["content-length", "connection", "transfer-encoding", "x-amz-crc32"];
            if !skip.iter().any(|s| key.eq_ignore_ascii_case(s)) {
                out.push_str(&format!("{key}: {value}\r\n"));
            }
        }
        out.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        if let Some(connection) = connection {
            out.push_str(&format!("Connection: {connection}\r\n"));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

async fn serve(mut connection: TcpStream, plan: &Plan) -> io::Result<()> {
    let mut buffer = Vec::new();
    while let Some(request) = read_request(&mut connection, &mut buffer).await? {
        let response = plan.answer(request).await?;
        connection.write_all(&response.to_bytes(None)).await?;
    }
    Ok(())
}

impl Plan {
    async fn answer(&self, mut request: Message) -> io::Result<Message> {
        if request.header("x-amz-target") != Some(BATCH_WRITE_ITEM) {
            return self.forward(&request).await;
        }
        let call = self.stats.batch_calls.fetch_add(1, Ordering::Relaxed);
        if let Some(marker) = &self.refuse_marker
            && String::from_utf8_lossy(&request.body).contains(marker.as_str())
        {
            self.stats.refused_calls.fetch_add(1, Ordering::Relaxed);
            return Ok(error_response(
                "ValidationException",
                "One or more parameter values were invalid: refused by the test proxy",
            ));
        }
        match self.pattern[call % self.pattern.len()] {
            Fault::Pass => self.forward(&request).await,
            Fault::Throttle => {
                self.stats.throttled_calls.fetch_add(1, Ordering::Relaxed);
                Ok(error_response(
                    "ProvisionedThroughputExceededException",
                    "The level of configured provisioned throughput for the table was exceeded",
                ))
            }
            Fault::ServerError => {
                self.stats.server_errors.fetch_add(1, Ordering::Relaxed);
                let mut response = error_response("InternalServerError", "Internal server error (test proxy)");
                response.start = "HTTP/1.1 500 Internal Server Error".to_owned();
                Ok(response)
            }
            Fault::Disconnect => {
                self.stats.disconnects.fetch_add(1, Ordering::Relaxed);
                // `serve` ends on the error: the connection closes unanswered.
                Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "dropped by the test proxy",
                ))
            }
            Fault::Unprocessed => {
                let mut body: Value = serde_json::from_slice(&request.body).map_err(io::Error::other)?;
                let withheld = withhold_half(&mut body);
                let held = withheld
                    .values()
                    .map(|items| items.as_array().map_or(0, Vec::len))
                    .sum::<usize>();
                self.stats.unprocessed_items.fetch_add(held, Ordering::Relaxed);
                let mut response = if nothing_left(&body) {
                    ok_response(json!({}))
                } else {
                    request.body = body.to_string().into_bytes();
                    self.forward(&request).await?
                };
                let mut answer: Value = serde_json::from_slice(&response.body).map_err(io::Error::other)?;
                merge_unprocessed(&mut answer, withheld);
                response.body = answer.to_string().into_bytes();
                Ok(response)
            }
        }
    }

    /// Sends the request to moto on a fresh connection and reads its answer.
    async fn forward(&self, request: &Message) -> io::Result<Message> {
        let mut upstream = TcpStream::connect(&self.upstream).await?;
        upstream.write_all(&request.to_bytes(Some("close"))).await?;
        let mut raw = Vec::new();
        upstream.read_to_end(&mut raw).await?;
        let head_end = find_head_end(&raw).ok_or_else(|| io::Error::other("no response head"))?;
        let mut response = parse_head(&raw[..head_end])?;
        let mut body = raw[head_end + 4..].to_vec();
        if let Some(length) = response.header("content-length").and_then(|v| v.trim().parse().ok()) {
            body.truncate(length);
        }
        response.body = body;
        Ok(response)
    }
}

/// Moves the second half of each table's requests out of the body (all of
/// them when there is one), returning them by table.
fn withhold_half(body: &mut Value) -> serde_json::Map<String, Value> {
    let mut withheld = serde_json::Map::new();
    if let Some(Value::Object(tables)) = body.get_mut("RequestItems") {
        for (table, requests) in tables.iter_mut() {
            if let Value::Array(requests) = requests {
                let keep = requests.len() / 2;
                withheld.insert(table.clone(), Value::Array(requests.split_off(keep)));
            }
        }
    }
    withheld
}

fn nothing_left(body: &Value) -> bool {
    body["RequestItems"].as_object().is_none_or(|tables| {
        tables
            .values()
            .all(|requests| requests.as_array().is_none_or(Vec::is_empty))
    })
}

fn merge_unprocessed(answer: &mut Value, withheld: serde_json::Map<String, Value>) {
    let unprocessed = answer
        .as_object_mut()
        .expect("BatchWriteItem answers with an object")
        .entry("UnprocessedItems")
        .or_insert_with(|| json!({}));
    for (table, requests) in withheld {
        let Value::Array(requests) = requests else { continue };
        if requests.is_empty() {
            continue;
        }
        let entry = unprocessed
            .as_object_mut()
            .expect("UnprocessedItems is an object")
            .entry(table)
            .or_insert_with(|| json!([]));
        entry.as_array_mut().expect("a list of requests").extend(requests);
    }
}

fn ok_response(body: Value) -> Message {
    Message {
        start: "HTTP/1.1 200 OK".to_owned(),
        headers: vec![("Content-Type".into(), "application/x-amz-json-1.0".into())],
        body: body.to_string().into_bytes(),
    }
}

fn error_response(code: &str, message: &str) -> Message {
    Message {
        start: "HTTP/1.1 400 Bad Request".to_owned(),
        headers: vec![
            ("Content-Type".into(), "application/x-amz-json-1.0".into()),
            ("x-amzn-RequestId".into(), "test-proxy".into()),
        ],
        body: json!({
            "__type": format!("com.amazonaws.dynamodb.v20120810#{code}"),
            "message": message,
        })
        .to_string()
        .into_bytes(),
    }
}

/// Reads one request (head and `Content-Length` body); `None` at a clean
/// end of the connection. Bytes past the request stay in `buffer`.
async fn read_request(connection: &mut TcpStream, buffer: &mut Vec<u8>) -> io::Result<Option<Message>> {
    let head_end = loop {
        if let Some(end) = find_head_end(buffer) {
            break end;
        }
        if read_more(connection, buffer).await? == 0 {
            return if buffer.is_empty() {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
    };
    let mut request = parse_head(&buffer[..head_end])?;
    let length: usize = request
        .header("content-length")
        .map_or(Ok(0), |value| value.trim().parse())
        .map_err(io::Error::other)?;
    let body_start = head_end + 4;
    while buffer.len() < body_start + length {
        if read_more(connection, buffer).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    request.body = buffer[body_start..body_start + length].to_vec();
    buffer.drain(..body_start + length);
    Ok(Some(request))
}

async fn read_more(connection: &mut TcpStream, buffer: &mut Vec<u8>) -> io::Result<usize> {
    let mut chunk = [0u8; 16 * 1024];
    let n = connection.read(&mut chunk).await?;
    buffer.extend_from_slice(&chunk[..n]);
    Ok(n)
}

fn find_head_end(bytes: &[u8]) -> Option<usize> {
    bytes.windows(4).position(|window| window == b"\r\n\r\n")
}

fn parse_head(head: &[u8]) -> io::Result<Message> {
    let head = std::str::from_utf8(head).map_err(io::Error::other)?;
    let mut lines = head.split("\r\n");
    let start = lines.next().unwrap_or_default().to_owned();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
        .collect();
    Ok(Message {
        start,
        headers,
        body: Vec::new(),
    })
}
