//! End to end: hostile producers cannot take the gRPC input's memory, file
//! descriptors or CPU, and error statuses stay short and say nothing about
//! the server. Needs only the built binary and `bash` (for `ulimit`).

mod support;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::grpc_limits::*;
use support::*;

/// A message of 4 MB announced, 3 MB of it sent, on each of 200 streams:
/// 600 MB that a producer can make the agent hold if nothing bounds it.
const DECLARED: u32 = 4_000_000;
const SENT: usize = 3_000_000;
const STREAMS: usize = 200;
const CONNECTIONS: usize = 4;

/// The limits of the memory test's input, and the bound they imply.
const MAX_INFLIGHT_MIB: u64 = 32;
const MAX_CONNECTIONS: u64 = 8;
const MAX_CONCURRENT_STREAMS: u64 = 64;
const CONNECTION_WINDOW_MIB: u64 = 1;
/// Memory one connection, and one open stream, may hold besides the budget
/// and the windows, as the input's documentation states them.
const PER_CONNECTION_KIB: u64 = 64;
const PER_STREAM_KIB: u64 = 48;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partly_sent_large_messages_hold_no_more_memory_than_the_documented_bound() {
    let config = format!(
        r#"
[[inputs]]
type = "grpc"
bind = "127.0.0.1:{{port}}"
max_inflight_bytes = "{MAX_INFLIGHT_MIB}MiB"
max_connections = {MAX_CONNECTIONS}
max_concurrent_streams = {MAX_CONCURRENT_STREAMS}
connection_window = "{CONNECTION_WINDOW_MIB}MiB"
inflight_timeout_ms = 3000

[[outputs]]
type = "file"
path = "events/%{{index}}.jsonl"

[metrics]
bind = "127.0.0.1:0"
"#
    );
    let agent = Agent::start(AgentOptions::new(&config));
    let base_rss = agent.peak_rss_kib();

    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS {
        channels.push(connect(agent.addr).await);
    }
    let streams: Vec<_> = (0..STREAMS)
        .map(|n| start_partial_message(&channels[n % CONNECTIONS], DECLARED, SENT))
        .collect();
    // Let the producers push all they can: until the in-flight budget is
    // taken and the agent's memory has stopped growing.
    let budget = (MAX_INFLIGHT_MIB * 1024 * 1024) as f64;
    wait_until("the in-flight budget to fill", Duration::from_secs(10), || {
        metric_value(&agent.metrics(), "eventstash_grpc_inflight_bytes", &[]).unwrap_or(0.0) >= 0.9 * budget
    });
    let mut last_rss = agent.peak_rss_kib();
    let mut steady_since = Instant::now();
    wait_until("the agent's memory to stop growing", Duration::from_secs(10), || {
        let rss = agent.peak_rss_kib();
        if rss != last_rss {
            (last_rss, steady_since) = (rss, Instant::now());
        }
        steady_since.elapsed() >= Duration::from_millis(500)
    });

    // A well-behaved producer is answered at once, stored or told to come
    // back later, never left hanging; retrying as gRPC clients do, it gets
    // through once the stalled streams have been ended.
    let mut client = agent.client().await;
    let small = || (0..100).map(|n| json_event("small-", n, "k", "{}")).collect();
    let large = || vec![json_event("large-", 0, "k", &format!("\"{}\"", "x".repeat(2_000_000)))];
    for (what, events) in [("small events", small as fn() -> Vec<_>), ("a large message", large)] {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let answer = tokio::time::timeout(Duration::from_secs(10), store(&mut client, events())).await;
            match answer {
                Ok(Ok(true)) => break,
                Ok(Err(status)) if status.code() == tonic::Code::ResourceExhausted => {
                    assert!(Instant::now() < deadline, "{what} still refused after 30 s: {status:?}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                other => panic!("{what} got neither success nor RESOURCE_EXHAUSTED within 10 s: {other:?}"),
            }
        }
    }

    let peak_rss = agent.peak_rss_kib();
    // 2 × max_inflight_bytes + max_connections × (connection_window + 64 KiB
    //   + max_concurrent_streams × 48 KiB)
    let receive_bound_kib = 2 * MAX_INFLIGHT_MIB * 1024
        + MAX_CONNECTIONS
            * (CONNECTION_WINDOW_MIB * 1024 + PER_CONNECTION_KIB + MAX_CONCURRENT_STREAMS * PER_STREAM_KIB);
    println!(
        "peak RSS {peak_rss} KiB: {base_rss} KiB at start + {} KiB receiving (bound {receive_bound_kib} KiB)",
        peak_rss - base_rss
    );
    assert!(
        peak_rss < base_rss + receive_bound_kib,
        "peak RSS {peak_rss} KiB is past {base_rss} KiB + the documented {receive_bound_kib} KiB"
    );

    // Stalled producers are told to give way rather than kept forever.
    let first = tokio::time::timeout(Duration::from_secs(10), streams.into_iter().next().unwrap())
        .await
        .expect("a stalled stream was never ended")
        .unwrap();
    assert_eq!(first, Ok(tonic::Code::ResourceExhausted));
    // ... and counted, with the input's labels.
    let refused = metric_value(
        &agent.metrics(),
        "eventstash_grpc_streams_refused_total",
        &[("pipeline", "main"), ("plugin", "grpc#0")],
    );
    assert!(refused.is_some_and(|n| n >= 1.0), "streams refused: {refused:?}");
}

/// The gRPC input's timeouts, short enough for a test.
const SHORT_TIMEOUTS: &str = r#"
[[inputs]]
type = "grpc"
bind = "127.0.0.1:{port}"
handshake_timeout_ms = 1000
idle_timeout_ms = 2000

[[outputs]]
type = "file"
path = "events/%{index}.jsonl"
"#;

#[test]
fn idle_connections_past_the_open_file_limit_neither_spin_the_agent_nor_stay_open() {
    let agent = start_with_open_file_limit(AgentOptions::new(SHORT_TIMEOUTS), 64, 64);
    let pid = agent.pid();
    // More idle connections than the agent has descriptors: the kernel
    // completes them all, the agent can accept only some.
    let idle: Vec<TcpStream> = (0..100).map(|_| TcpStream::connect(agent.addr).unwrap()).collect();

    // Once the agent has met the limit, a 3 s measuring window: how much
    // CPU it spends while nothing changes.
    wait_for_log(&agent, "cannot accept a connection");
    let before = cpu_time(pid);
    std::thread::sleep(Duration::from_secs(3));
    let spent = cpu_time(pid) - before;
    assert!(
        spent < Duration::from_millis(600),
        "the agent used {spent:?} of CPU in 3 s with idle connections:\n{}",
        agent.log()
    );
    wait_for_log(&agent, "cannot accept a connection");
    let accept_errors = agent.log().matches("cannot accept a connection").count();
    assert!(accept_errors <= 2, "accept errors are not throttled:\n{}", agent.log());

    // The agent closes the connections that never spoke HTTP/2, so the
    // descriptors come back and it serves again.
    let deadline = Instant::now() + Duration::from_secs(20);
    for mut connection in idle {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        connection.set_read_timeout(Some(left)).unwrap();
        let mut byte = [0; 1];
        match connection.read(&mut byte) {
            Ok(0) => {}
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("an idle connection was not closed by the agent: {other:?}"),
        }
    }
    assert!(
        healthcheck(agent.addr),
        "the agent does not serve again:\n{}",
        agent.log()
    );
    assert!(agent.log().contains("accepting connections again"), "{}", agent.log());
}

#[test]
fn a_connection_that_never_sends_the_http2_preface_is_closed_after_the_handshake_timeout() {
    let agent = Agent::start(AgentOptions::new(SHORT_TIMEOUTS));
    let mut connection = TcpStream::connect(agent.addr).unwrap();
    connection.write_all(b"PRI * HTTP/2.0\r\n").unwrap(); // half a preface
    let started = Instant::now();
    assert!(read_until_closed(&mut connection).is_some(), "still open after 10 s");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(3),
        "closed after {waited:?}, not after the 1 s handshake timeout"
    );
}

#[test]
fn an_http2_connection_without_streams_is_closed_after_the_idle_timeout() {
    let agent = Agent::start(AgentOptions::new(SHORT_TIMEOUTS));
    let mut connection = TcpStream::connect(agent.addr).unwrap();
    // The client preface and an empty SETTINGS frame; then nothing.
    connection.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    connection.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).unwrap();
    let started = Instant::now();
    let received = read_until_closed(&mut connection).expect("the idle connection is still open after 10 s");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(5),
        "closed after {waited:?}, not after the 2 s idle timeout"
    );
    // HTTP/2 frame type 7 is GOAWAY: a graceful close the client understands.
    assert!(has_frame_of_type(&received, 7), "no GOAWAY before the close");
}

/// Everything the server sends until it closes the connection, or `None`
/// if it is still open after 10 s.
fn read_until_closed(connection: &mut TcpStream) -> Option<Vec<u8>> {
    connection.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut received = Vec::new();
    loop {
        let mut buffer = [0; 256];
        match connection.read(&mut buffer) {
            Ok(0) => return Some(received),
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => return Some(received),
            Err(_) => return None,
        }
    }
}

/// Whether the server-to-client HTTP/2 byte stream holds a frame of `kind`.
fn has_frame_of_type(mut bytes: &[u8], kind: u8) -> bool {
    while bytes.len() >= 9 {
        let length = usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        if bytes[3] == kind {
            return true;
        }
        bytes = &bytes[(9 + length).min(bytes.len())..];
    }
    false
}

#[test]
fn the_soft_open_file_limit_is_raised_to_the_hard_limit_at_start() {
    let agent = start_with_open_file_limit(AgentOptions::new(SHORT_TIMEOUTS), 64, 4096);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", agent.pid())).unwrap();
    let open_files = limits.lines().find(|line| line.starts_with("Max open files")).unwrap();
    let values: Vec<&str> = open_files.split_whitespace().skip(3).take(2).collect();
    assert_eq!(values, ["4096", "4096"], "{open_files}");
    assert!(agent.log().contains("raised the open-file limit"), "{}", agent.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_store_answers_unavailable_with_a_short_message_free_of_paths_and_producer_data() {
    // Neither the event's file nor the dead-letter file can be created,
    // and the file name holds the event id.
    let config = r#"
[[inputs]]
type = "grpc"
bind = "127.0.0.1:{port}"

[[outputs]]
type = "file"
path = "/proc/eventstash-cannot-create/%{id}.jsonl"
dead_letter_path = "/proc/eventstash-cannot-create/dead_letter.jsonl"
"#;
    let agent = Agent::start(AgentOptions::new(config));
    let mut client = agent.client().await;
    let id = format!("id-{}", "z".repeat(10 * 1024));
    let event = json_event("", 0, "k", "{}").with_id(id.clone());

    let status = store(&mut client, vec![event]).await.expect_err("a store that failed");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let message = status.message();
    assert!(message.len() <= 256, "{} bytes: {message:?}", message.len());
    assert!(
        !message.contains("/proc"),
        "the message names a server path: {message:?}"
    );
    assert!(
        !message.contains("zzzz"),
        "the message echoes the producer's id: {message:?}"
    );
    assert!(
        message.contains("retry"),
        "the message does not say what to do: {message:?}"
    );
}
