//! A tiny HTTP proxy between the SDK and moto that makes `SendMessageBatch`
//! behave like SQS under load: some calls are throttled
//! (`RequestThrottled`), some take only half of their entries and list the
//! rest under `Failed` as SQS's own fault (`InternalError`), and entries
//! whose body carries a marker string are failed as the sender's fault
//! (`InvalidMessageContents`). Every other call passes through unchanged.
//!
//! It speaks just enough HTTP/1.1 for the SDK's requests (bodies with
//! `Content-Length`, keep-alive from the SDK's side) and opens one upstream
//! connection per request. Moto does not check signatures, so a request
//! whose entries were thinned out still goes through. (The HTTP plumbing
//! mirrors the DynamoDB output's test proxy.)

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const SEND_MESSAGE_BATCH: &str = "AmazonSQS.SendMessageBatch";

/// What happens to one `SendMessageBatch` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forwarded unchanged.
    Pass,
    /// Answered with a 400 `RequestThrottled`.
    Throttle,
    /// The first half of the entries forwarded, the rest failed as SQS's fault.
    FailHalf,
}

/// What the proxy did, for the tests' assertions.
#[derive(Debug, Default)]
pub struct ProxyStats {
    pub batch_calls: AtomicUsize,
    pub throttled_calls: AtomicUsize,
    pub failed_entries: AtomicUsize,
    pub refused_entries: AtomicUsize,
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
    /// Applied to `SendMessageBatch` calls in turn, round and round.
    pattern: Vec<Fault>,
    /// Entries whose body contains this are refused as the sender's fault.
    refuse_marker: Option<String>,
    stats: Arc<ProxyStats>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (`http://host:port`) on a free port.
    pub async fn start(upstream: &str, pattern: Vec<Fault>, refuse_marker: Option<&str>) -> Self {
        Self::start_at("127.0.0.1:0".parse().unwrap(), upstream, pattern, refuse_marker).await
    }

    /// Starts a proxy listening on `addr`.
    pub async fn start_at(addr: SocketAddr, upstream: &str, pattern: Vec<Fault>, refuse_marker: Option<&str>) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind proxy");
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
struct HttpMessage {
    start: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpMessage {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The message with a fresh `Content-Length` and no connection-specific
    /// headers (and no checksum of an old body).
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
    async fn answer(&self, mut request: HttpMessage) -> io::Result<HttpMessage> {
        if request.header("x-amz-target") != Some(SEND_MESSAGE_BATCH) {
            return self.forward(&request).await;
        }
        let call = self.stats.batch_calls.fetch_add(1, Ordering::Relaxed);
        let fault = self.pattern[call % self.pattern.len()];
        if fault == Fault::Throttle {
            self.stats.throttled_calls.fetch_add(1, Ordering::Relaxed);
            return Ok(error_response("RequestThrottled", "Rate exceeded (test proxy)"));
        }
        let mut body: Value = serde_json::from_slice(&request.body).map_err(io::Error::other)?;
        let entries = body["Entries"].as_array().cloned().unwrap_or_default();
        let mut failed = Vec::new();
        let mut forwarded = Vec::new();
        let keep = if fault == Fault::FailHalf {
            entries.len().div_ceil(2)
        } else {
            entries.len()
        };
        for (index, entry) in entries.into_iter().enumerate() {
            let refused = self
                .refuse_marker
                .as_deref()
                .is_some_and(|marker| entry["MessageBody"].as_str().unwrap_or_default().contains(marker));
            if refused {
                self.stats.refused_entries.fetch_add(1, Ordering::Relaxed);
                failed.push(
                    json!({"Id": entry["Id"], "SenderFault": true, "Code": "InvalidMessageContents",
                                   "Message": "refused by the test proxy"}),
                );
            } else if index >= keep {
                self.stats.failed_entries.fetch_add(1, Ordering::Relaxed);
                failed.push(json!({"Id": entry["Id"], "SenderFault": false, "Code": "InternalError",
                                   "Message": "failed by the test proxy"}));
            } else {
                forwarded.push(entry);
            }
        }
        let mut answer = if forwarded.is_empty() {
            json!({"Successful": [], "Failed": []})
        } else {
            body["Entries"] = Value::Array(forwarded);
            request.body = body.to_string().into_bytes();
            let response = self.forward(&request).await?;
            if !response.start.contains(" 200 ") {
                return Ok(response);
            }
            serde_json::from_slice(&response.body).map_err(io::Error::other)?
        };
        let list = answer
            .as_object_mut()
            .expect("SendMessageBatch answers with an object")
            .entry("Failed")
            .or_insert_with(|| json!([]));
        list.as_array_mut().expect("a list of failures").extend(failed);
        Ok(ok_response(answer))
    }

    /// Sends the request to moto on a fresh connection and reads its answer.
    async fn forward(&self, request: &HttpMessage) -> io::Result<HttpMessage> {
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

fn ok_response(body: Value) -> HttpMessage {
    HttpMessage {
        start: "HTTP/1.1 200 OK".to_owned(),
        headers: vec![("Content-Type".into(), "application/x-amz-json-1.0".into())],
        body: body.to_string().into_bytes(),
    }
}

fn error_response(code: &str, message: &str) -> HttpMessage {
    HttpMessage {
        start: "HTTP/1.1 400 Bad Request".to_owned(),
        headers: vec![
            ("Content-Type".into(), "application/x-amz-json-1.0".into()),
            ("x-amzn-RequestId".into(), "test-proxy".into()),
        ],
        body: json!({"__type": format!("com.amazonaws.sqs#{code}"), "message": message})
            .to_string()
            .into_bytes(),
    }
}

/// Reads one request (head and `Content-Length` body); `None` at a clean
/// end of the connection. Bytes past the request stay in `buffer`.
async fn read_request(connection: &mut TcpStream, buffer: &mut Vec<u8>) -> io::Result<Option<HttpMessage>> {
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

fn parse_head(head: &[u8]) -> io::Result<HttpMessage> {
    let head = std::str::from_utf8(head).map_err(io::Error::other)?;
    let mut lines = head.split("\r\n");
    let start = lines.next().unwrap_or_default().to_owned();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
        .collect();
    Ok(HttpMessage {
        start,
        headers,
        body: Vec::new(),
    })
}
