//! Support for the gRPC input's resource-limit tests: an agent started under
//! a low open-file limit, the process's CPU time, and hostile producers —
//! idle TCP connections and streams that announce a large message but send
//! only part of it.

use std::fs;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{BufMut as _, Bytes, BytesMut};
use futures::StreamExt as _;
use tonic::codegen::Service as _;
use tonic::codegen::http;
use tonic::transport::{Channel, Endpoint};

use super::{Agent, AgentOptions, EVENTSTASH, healthcheck};

/// The path of the event service's one method.
const STORE_EVENT: &str = "/hfx.v1.EventStash/StoreEvent";

/// Starts an agent whose open-file limit is `soft` (and `hard`), set by the
/// shell that then becomes the agent, and waits until it is SERVING.
pub fn start_with_open_file_limit(options: AgentOptions, soft: u64, hard: u64) -> Agent {
    let dir = tempfile::tempdir().unwrap();
    // Port 0: the agent names the port it bound in its log.
    let config = options.config.replace("{port}", "0");
    fs::write(dir.path().join("pipeline.toml"), config).unwrap();
    let log = fs::File::create(dir.path().join("agent.log")).unwrap();
    let script = r#"ulimit -Sn "$2" && ulimit -Hn "$1" && exec "$3" run -c pipeline.toml"#;
    let child = Command::new("bash")
        .args(["-c", script, "limit", &hard.to_string(), &soft.to_string(), EVENTSTASH])
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
    agent.addr = agent.wait_for_listening(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !healthcheck(agent.addr) {
        if let Ok(Some(status)) = agent.child.try_wait() {
            panic!("agent exited early with {status}:\n{}", agent.log());
        }
        assert!(
            Instant::now() < deadline,
            "agent never became healthy:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    agent
}

/// CPU time (user + system) the process has used so far.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_secs_f64(ticks as f64 / clock_ticks_per_second() as f64)
}

fn clock_ticks_per_second() -> u64 {
    let output = Command::new("getconf").arg("CLK_TCK").output().unwrap();
    String::from_utf8_lossy(&output.stdout).trim().parse().unwrap()
}

/// The process's open file descriptors.
pub fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| dir.count())
        .unwrap_or(0)
}

/// A single HTTP/2 connection to the agent.
pub async fn connect(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// Opens a `StoreEvent` stream on `channel` whose first message announces
/// `declared` bytes but carries only `sent` of them, after which the
/// producer sends nothing more and never ends the stream. Resolves to the
/// gRPC status the agent answers with (`Ok` code if it ever acknowledges).
pub fn start_partial_message(
    channel: &Channel,
    declared: u32,
    sent: usize,
) -> tokio::task::JoinHandle<Result<tonic::Code, String>> {
    let mut frame = BytesMut::with_capacity(5 + sent);
    frame.put_u8(0);
    frame.put_u32(declared);
    frame.put_bytes(0, sent);
    let mut channel = channel.clone();
    let body = futures::stream::iter([Ok::<_, std::io::Error>(frame.freeze())]).chain(futures::stream::pending());
    let request = grpc_request(axum::body::Body::from_stream(body));
    tokio::spawn(async move {
        poll_fn(|cx| channel.poll_ready(cx)).await.map_err(|e| e.to_string())?;
        let response = channel.call(request).await.map_err(|e| e.to_string())?;
        Ok(grpc_code(response.headers()))
    })
}

/// The bytes of one length-prefixed gRPC message.
pub fn grpc_frame(message: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(5 + message.len());
    frame.put_u8(0);
    frame.put_u32(u32::try_from(message.len()).unwrap());
    frame.put_slice(message);
    frame.freeze()
}

fn grpc_request(body: axum::body::Body) -> http::Request<tonic::body::Body> {
    http::Request::builder()
        .method("POST")
        .uri(format!("http://eventstash{STORE_EVENT}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(body))
        .unwrap()
}

/// The `grpc-status` of a trailers-only response (`Ok` when absent: the
/// status then comes later, in trailers).
fn grpc_code(headers: &http::HeaderMap) -> tonic::Code {
    headers
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from_i32)
}
