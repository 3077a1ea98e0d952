//! A fault-injecting HTTP proxy between the output and a real server.
//!
//! It is not a fake Elasticsearch: every request it lets through is
//! forwarded to osmem-server and osmem's answer is what the output reads,
//! except for the faults a real cluster produces under load and that osmem
//! cannot: whole bulk requests answered 429/503, bulk requests over a size
//! limit answered 413 (as AWS-hosted clusters answer those over 10 MiB),
//! items throttled with a 429 or refused with a 400 mapping error, and
//! outages during which the port refuses connections. A throttled or refused item is taken out of the
//! request before it is forwarded and its answer put back into osmem's
//! response at its place, so, as with a real cluster, it is really not
//! stored: an output that does not send it again loses it. Bulk requests
//! may also hang unanswered (a stalled node). A gzip body is unpacked, so
//! its items meet the same faults, and forwarded plain.

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};

/// The faults still to inject; tests change them at any time.
#[derive(Debug, Default)]
pub struct Faults {
    /// Statuses to answer the next bulk requests with, without forwarding.
    pub fail_bulk: VecDeque<u16>,
    /// How many more bulk requests get throttled items.
    pub throttle_rounds: usize,
    /// In a throttled request, every n-th item (counted across requests, so
    /// that an item sent alone is not always the one) is answered with a 429.
    pub throttle_every: usize,
    /// Event ids whose items are refused with a 400 mapping error.
    pub reject_ids: HashSet<String>,
    /// Bulk requests with a body over this many bytes are answered 413
    /// without forwarding, like a cluster's `http.max_content_length`.
    pub max_bulk_bytes: Option<usize>,
    /// The status a throttled item gets: 429 when unset; a 5xx makes it an
    /// item the cluster failed on the server.
    pub throttle_status: Option<u16>,
    /// How many more bulk requests are read and never answered.
    pub hang_bulk: usize,
}

/// What the proxy saw and did.
#[derive(Debug, Default)]
pub struct Stats {
    /// Bulk requests received (including refused connections' retries
    /// once the port is back).
    pub bulk_requests: AtomicUsize,
    /// Bulk requests answered with an injected error status.
    pub failed_requests: AtomicUsize,
    /// Bulk requests answered 413 for their size.
    pub too_large_requests: AtomicUsize,
    /// The largest bulk body forwarded to the server.
    pub largest_forwarded: AtomicUsize,
    /// Items seen in requests that are being throttled.
    pub throttle_candidates: AtomicUsize,
    /// Items answered with `throttle_status` (429 unless set).
    pub throttled_items: AtomicUsize,
    /// Items refused with a 400.
    pub rejected_items: AtomicUsize,
    /// Requests with a gzip body.
    pub gzip_requests: AtomicUsize,
    /// Bulk requests with a gzip body.
    pub gzip_bulk_requests: AtomicUsize,
    /// Bulk requests left unanswered.
    pub hung_requests: AtomicUsize,
    /// The last `Authorization` header seen.
    pub last_authorization: Mutex<Option<String>>,
    /// Per document `_id`, what happened to its items.
    pub items: Mutex<HashMap<String, ItemCounts>>,
}

/// What the proxy did with the items of one document `_id`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ItemCounts {
    /// Times the output sent it (in any bulk request that reached the proxy).
    pub received: usize,
    /// Times it was forwarded to the server, which stores it each time.
    pub forwarded: usize,
    /// Times the proxy answered it with `throttle_status` instead.
    pub throttled: usize,
    /// Times the proxy refused it with a 400 instead.
    pub refused: usize,
    /// Times it came in a whole request the proxy failed (429/5xx).
    pub in_failed_requests: usize,
}

impl Stats {
    /// A copy of the per-`_id` counts.
    pub fn item_counts(&self) -> HashMap<String, ItemCounts> {
        self.items.lock().unwrap().clone()
    }
}

struct Shared {
    upstream: SocketAddr,
    faults: Mutex<Faults>,
    stats: Stats,
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    url: String,
    shared: Arc<Shared>,
    commands: mpsc::Sender<(Duration, oneshot::Sender<()>)>,
    accept_task: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy on a free local port in front of `upstream_url`
    /// (`http://127.0.0.1:PORT`).
    pub async fn start(upstream_url: &str) -> FaultProxy {
        let upstream = upstream_url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .unwrap_or_else(|e| panic!("upstream {upstream_url} is not http://IP:PORT: {e}"));
        let shared = Arc::new(Shared {
            upstream,
            faults: Mutex::new(Faults::default()),
            stats: Stats::default(),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (commands, receiver) = mpsc::channel(4);
        let accept_task = tokio::spawn(accept_loop(listener, addr, Arc::clone(&shared), receiver));
        FaultProxy {
            url: format!("http://{addr}"),
            shared,
            commands,
            accept_task,
        }
    }

    /// The proxy's URL, for `hosts`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Changes the faults to inject.
    pub fn faults(&self, change: impl FnOnce(&mut Faults)) {
        change(&mut self.shared.faults.lock().unwrap());
    }

    /// What the proxy has seen so far.
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// Closes the port and every open connection for `duration`; returns
    /// once the port refuses connections.
    pub async fn go_down_for(&self, duration: Duration) {
        let (done, down) = oneshot::channel();
        self.commands.send((duration, done)).await.unwrap();
        down.await.unwrap();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

async fn accept_loop(
    mut listener: TcpListener,
    addr: SocketAddr,
    shared: Arc<Shared>,
    mut commands: mpsc::Receiver<(Duration, oneshot::Sender<()>)>,
) {
    // Aborted with the loop, so an outage or the proxy's drop closes them.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                connections.spawn(serve(stream, Arc::clone(&shared)));
            }
            Some((duration, down)) = commands.recv() => {
                drop(listener);
                connections.abort_all();
                let _ = down.send(());
                tokio::time::sleep(duration).await;
                listener = rebind(addr).await;
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn rebind(addr: SocketAddr) -> TcpListener {
    let socket = TcpSocket::new_v4().unwrap();
    // The old connections' TIME_WAIT must not keep the port.
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    socket.listen(128).unwrap()
}

async fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let service = service_fn(move |request| handle(Arc::clone(&shared), request));
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn handle(shared: Arc<Shared>, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Ok(respond(StatusCode::BAD_REQUEST, Bytes::new())),
    };
    let stats = &shared.stats;
    if let Some(auth) = parts.headers.get("authorization") {
        *stats.last_authorization.lock().unwrap() = auth.to_str().ok().map(str::to_owned);
    }
    let mut parts = parts;
    let gzip = parts.headers.remove("content-encoding").is_some();
    stats.gzip_requests.fetch_add(usize::from(gzip), Ordering::Relaxed);
    let body = if gzip { gunzip(&body) } else { body };
    if !parts.uri.path().ends_with("/_bulk") {
        return Ok(forward(shared.upstream, parts, body).await);
    }
    stats.bulk_requests.fetch_add(1, Ordering::Relaxed);
    stats.gzip_bulk_requests.fetch_add(usize::from(gzip), Ordering::Relaxed);
    let hang = {
        let mut faults = shared.faults.lock().unwrap();
        let hang = faults.hang_bulk > 0;
        faults.hang_bulk = faults.hang_bulk.saturating_sub(1);
        hang
    };
    if hang {
        stats.hung_requests.fetch_add(1, Ordering::Relaxed);
        std::future::pending::<()>().await;
    }
    let (fail, throttle_every, reject_ids, throttle_status) = {
        let mut faults = shared.faults.lock().unwrap();
        if faults.max_bulk_bytes.is_some_and(|max| body.len() > max) {
            stats.too_large_requests.fetch_add(1, Ordering::Relaxed);
            return Ok(too_large_response());
        }
        let fail = faults.fail_bulk.pop_front();
        let throttle = (fail.is_none() && faults.throttle_rounds > 0).then(|| {
            faults.throttle_rounds -= 1;
            faults.throttle_every.max(1)
        });
        (
            fail,
            throttle,
            faults.reject_ids.clone(),
            faults.throttle_status.unwrap_or(429),
        )
    };
    if let Some(status) = fail {
        stats.failed_requests.fetch_add(1, Ordering::Relaxed);
        count_failed_request(&body, stats);
        return Ok(error_response(status));
    }
    stats.largest_forwarded.fetch_max(body.len(), Ordering::Relaxed);
    let (body, removed) = take_out_items(&body, &reject_ids, throttle_every, stats);
    let response = if body.is_empty() {
        respond(StatusCode::OK, Bytes::from_static(b"{\"errors\":false,\"items\":[]}"))
    } else {
        forward(shared.upstream, parts, body).await
    };
    if !response.status().is_success() || removed.is_empty() {
        return Ok(response);
    }
    let (status, upstream_body) = (response.status(), response.into_body());
    let upstream_body = upstream_body.collect().await.unwrap().to_bytes();
    Ok(respond(
        status,
        put_back_items(&upstream_body, &removed, throttle_status),
    ))
}

/// The plain body of a gzip request.
fn gunzip(body: &[u8]) -> Bytes {
    use std::io::Read as _;
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(body)
        .read_to_end(&mut plain)
        .expect("a gzip body the proxy can unpack");
    Bytes::from(plain)
}

/// The `_id` of each item's action line of a plain bulk body.
fn item_ids(body: &[u8]) -> Vec<Option<String>> {
    let text = std::str::from_utf8(body).expect("bulk body is UTF-8");
    let lines: Vec<&str> = text.lines().filter(|line| !line.is_empty()).collect();
    lines.chunks(2).map(|pair| action_id(pair[0])).collect()
}

/// The `_id` of a bulk action line.
fn action_id(line: &str) -> Option<String> {
    let action: Value = serde_json::from_str(line).expect("action line is JSON");
    action
        .as_object()
        .and_then(|map| map.values().next())
        .and_then(|meta| meta["_id"].as_str())
        .map(str::to_owned)
}

/// Counts the items of a whole request the proxy failed.
fn count_failed_request(body: &[u8], stats: &Stats) {
    let mut items = stats.items.lock().unwrap();
    for id in item_ids(body).into_iter().flatten() {
        let counts = items.entry(id).or_default();
        counts.received += 1;
        counts.in_failed_requests += 1;
    }
}

/// An item the proxy answers itself.
#[derive(Debug, Clone, Copy)]
enum Injected {
    Throttled,
    Refused,
}

/// Takes the action and document lines of the items to refuse (their `_id`
/// is in `reject_ids`) or throttle (every n-th of the others) out of the
/// body; returns the rest and the taken items' positions.
fn take_out_items(
    body: &[u8],
    reject_ids: &HashSet<String>,
    throttle_every: Option<usize>,
    stats: &Stats,
) -> (Bytes, Vec<(usize, Injected)>) {
    let text = std::str::from_utf8(body).expect("bulk body is UTF-8");
    let lines: Vec<&str> = text.lines().filter(|line| !line.is_empty()).collect();
    let mut kept = String::new();
    let mut removed = Vec::new();
    let mut items = stats.items.lock().unwrap();
    for (position, pair) in lines.chunks(2).enumerate() {
        let id = action_id(pair[0]);
        let mut counts = ItemCounts {
            received: 1,
            ..ItemCounts::default()
        };
        let injected = if id.as_ref().is_some_and(|id| reject_ids.contains(id)) {
            stats.rejected_items.fetch_add(1, Ordering::Relaxed);
            counts.refused = 1;
            Some(Injected::Refused)
        } else if throttle_every.is_some_and(|every| {
            stats
                .throttle_candidates
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(every)
        }) {
            stats.throttled_items.fetch_add(1, Ordering::Relaxed);
            counts.throttled = 1;
            Some(Injected::Throttled)
        } else {
            counts.forwarded = 1;
            None
        };
        if let Some(id) = id {
            let total = items.entry(id).or_default();
            total.received += counts.received;
            total.forwarded += counts.forwarded;
            total.throttled += counts.throttled;
            total.refused += counts.refused;
        }
        match injected {
            Some(injected) => removed.push((position, injected)),
            None => pair.iter().for_each(|line| {
                kept.push_str(line);
                kept.push('\n');
            }),
        }
    }
    (Bytes::from(kept), removed)
}

/// Puts the proxy's own answers back at the taken items' positions.
fn put_back_items(body: &[u8], removed: &[(usize, Injected)], throttle_status: u16) -> Bytes {
    let mut response: Value = serde_json::from_slice(body).expect("bulk response is JSON");
    let upstream_items = match response["items"].take() {
        Value::Array(items) => items,
        _ => Vec::new(),
    };
    let total = upstream_items.len() + removed.len();
    let mut upstream_items = upstream_items.into_iter();
    let mut removed = removed.iter().peekable();
    let items: Vec<Value> = (0..total)
        .map(|position| match removed.next_if(|(at, _)| *at == position) {
            Some((_, Injected::Refused)) => item(
                400,
                "mapper_parsing_exception",
                "injected: failed to parse field [data]",
            ),
            Some((_, Injected::Throttled)) if throttle_status == 429 => {
                item(429, "es_rejected_execution_exception", "injected: write queue full")
            }
            Some((_, Injected::Throttled)) => item(
                throttle_status,
                "unavailable_shards_exception",
                "injected: primary shard is not active",
            ),
            None => upstream_items.next().expect("upstream answered every forwarded item"),
        })
        .collect();
    response["items"] = Value::Array(items);
    response["errors"] = Value::Bool(true);
    Bytes::from(serde_json::to_vec(&response).unwrap())
}

fn item(status: u16, kind: &str, reason: &str) -> Value {
    json!({"index": {"status": status, "error": {"type": kind, "reason": reason}}})
}

fn error_response(status: u16) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(status).unwrap();
    let body = json!({
        "error": {"type": "injected_fault", "reason": format!("injected {status}")},
        "status": status.as_u16()
    });
    respond(status, Bytes::from(body.to_string()))
}

/// What a size-limited front end answers: a 413 with a short text body.
fn too_large_response() -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::PAYLOAD_TOO_LARGE)
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from_static(b"Request Entity Too Large")))
        .unwrap()
}

fn respond(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(body))
        .unwrap()
}

/// Sends the request on to the server over a new connection.
async fn forward(upstream: SocketAddr, parts: hyper::http::request::Parts, body: Bytes) -> Response<Full<Bytes>> {
    let bad_gateway = |error: String| respond(StatusCode::BAD_GATEWAY, Bytes::from(error));
    let stream = match TcpStream::connect(upstream).await {
        Ok(stream) => stream,
        Err(error) => return bad_gateway(error.to_string()),
    };
    let (mut sender, connection) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
        Ok(pair) => pair,
        Err(error) => return bad_gateway(error.to_string()),
    };
    tokio::spawn(connection);
    let mut request = Request::from_parts(parts, Full::new(body));
    request.headers_mut().remove("content-length");
    let response = match sender.send_request(request).await {
        Ok(response) => response,
        Err(error) => return bad_gateway(error.to_string()),
    };
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let mut response = Response::from_parts(parts, Full::new(body));
    response.headers_mut().remove("content-length");
    response.headers_mut().remove("transfer-encoding");
    response
}
