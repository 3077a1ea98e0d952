//! Shared support for the end-to-end tests: starting the built `eventstash`
//! binary on a free port in its own directory, talking to it over gRPC, and
//! reading what its outputs wrote.
#![allow(dead_code)]

pub mod event_store;
pub mod grpc_limits;
pub mod security;
pub mod sqs;
mod sync_hold;
mod watchdog;

// Not every test binary uses them.
#[allow(unused_imports)]
pub use sync_hold::SyncHold;
#[allow(unused_imports)]
pub use watchdog::test_timeout;
use watchdog::{forget_agent, watch_agent};

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use eventstash_client::{Client, Event, Format};

/// `demo.Ping`, the small message the protobuf end-to-end tests send.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Ping {
    #[prost(string, tag = "1")]
    pub message: String,
    #[prost(int64, tag = "2")]
    pub sequence: i64,
}

impl prost::Name for Ping {
    const NAME: &'static str = "Ping";
    const PACKAGE: &'static str = "demo";
}

/// The `.proto` file of [`Ping`].
pub const PING_PROTO: &str =
    "syntax = \"proto3\";\npackage demo;\nmessage Ping {\n  string message = 1;\n  int64 sequence = 2;\n}\n";

/// The binary under test.
pub const EVENTSTASH: &str = env!("CARGO_BIN_EXE_eventstash");

/// A port nobody listens on right now, for a client that must find no
/// server there. Never bind it later: servers bind port 0 and report the
/// port (see [`Agent::start`]).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A suffix that makes the names a test gives things on a shared server
/// (queues, tables, indices, templates) its own: the process id and a
/// count within the process.
pub fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("{}x{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A running agent in a temporary directory; killed when dropped.
pub struct Agent {
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    pub child: Child,
}

/// How to start an agent.
pub struct AgentOptions {
    /// The pipeline file; `{port}` is replaced by the gRPC port.
    pub config: String,
    /// Pipe the agent's stdout to the test (for the stdout output).
    pub pipe_stdout: bool,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Files written into the agent's directory before it starts.
    pub files: Vec<(String, String)>,
    /// Largest file the agent may write, in KiB (`ulimit -f`), to make a
    /// disk that is full for it.
    pub file_size_limit_kib: Option<u64>,
}

impl AgentOptions {
    pub fn new(config: &str) -> Self {
        AgentOptions {
            config: config.to_owned(),
            pipe_stdout: false,
            env: Vec::new(),
            files: Vec::new(),
            file_size_limit_kib: None,
        }
    }
}

/// A gRPC input on `{port}` and a file output writing `events/%{index}.jsonl`.
pub const FILE_PIPELINE: &str = r#"
[pipeline]
shutdown_timeout_ms = 10000

[[inputs]]
type = "grpc"
bind = "127.0.0.1:{port}"

[[outputs]]
type = "file"
path = "events/%{index}.jsonl"
"#;

/// A gRPC input on `{port}` and the stdout output, with the agent's stdout
/// piped to the test so that the test decides how fast the output goes.
/// `{pipeline}` and `{queue}` take extra keys for those tables.
pub fn stdout_pipeline(pipeline: &str, queue: &str) -> AgentOptions {
    let config = format!(
        "[pipeline]\n{pipeline}\n[queue]\n{queue}\n[[inputs]]\ntype = \"grpc\"\nbind = \"127.0.0.1:{{port}}\"\n[[outputs]]\ntype = \"stdout\"\n"
    );
    let mut options = AgentOptions::new(&config);
    options.pipe_stdout = true;
    options
}

impl Agent {
    /// Starts an agent and waits until its health service says SERVING.
    /// `{port}` in the config becomes 0: the agent binds a port the system
    /// picks and names it in its "gRPC input listening" log line, which is
    /// where `addr` comes from (no free port probed and bound later).
    pub fn start(options: AgentOptions) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let config = options.config.replace("{port}", "0");
        fs::write(dir.path().join("pipeline.toml"), config).unwrap();
        for (relative, text) in &options.files {
            write_file(&dir.path().join(relative), text);
        }
        let child = launch(
            dir.path(),
            &options.env,
            options.pipe_stdout,
            options.file_size_limit_kib,
        );
        let mut agent = Agent {
            dir,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            child,
        };
        agent.addr = agent.wait_for_listening(0);
        agent.wait_until_serving();
        agent
    }

    /// Starts `eventstash run` with `run_args` (`-c` files or globs, which
    /// `options.files` can provide) and waits until the first gRPC input it
    /// reports is SERVING; `{port}` in the files becomes 0. `addr` is that
    /// first input; [`Agent::grpc_addrs`] lists them all.
    pub fn start_with_args(options: AgentOptions, run_args: &[&str]) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        for (relative, text) in &options.files {
            write_file(&dir.path().join(relative), &text.replace("{port}", "0"));
        }
        let child = launch_with(dir.path(), &options.env, options.pipe_stdout, None, run_args);
        let mut agent = Agent {
            dir,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            child,
        };
        agent.addr = agent.wait_for_listening(0);
        agent.wait_until_serving();
        agent
    }

    /// Every gRPC input's address, in the order their "listening" lines came.
    pub fn grpc_addrs(&self) -> Vec<SocketAddr> {
        self.log()
            .lines()
            .filter_map(|line| logged_addr(line, "gRPC input listening"))
            .collect()
    }

    /// Starts the agent again in the same directory once the previous
    /// process has exited (or been killed), on the port it reports (a new
    /// one when the config says port 0). Its log is appended.
    pub fn restart(&mut self, env: &[(String, String)], pipe_stdout: bool) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        forget_agent(self.child.id());
        let log_offset = self.log().len();
        self.child = launch(self.dir.path(), env, pipe_stdout, None);
        self.addr = self.wait_for_listening(log_offset);
        self.wait_until_serving();
    }

    /// Starts the agent again in the same directory like [`Agent::restart`],
    /// but returns at once, waiting for nothing; the result is the log
    /// offset from which the new process's lines start.
    pub fn relaunch(&mut self, env: &[(String, String)]) -> usize {
        let _ = self.child.kill();
        let _ = self.child.wait();
        forget_agent(self.child.id());
        let log_offset = self.log().len();
        self.child = launch(self.dir.path(), env, false, None);
        log_offset
    }

    /// The address in the first "gRPC input listening" line of the log
    /// after `log_offset`, once it is there.
    fn wait_for_listening(&mut self, log_offset: usize) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = self.log();
            if let Some(addr) = logged_addr(log.get(log_offset..).unwrap_or_default(), "gRPC input listening") {
                return addr;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("agent exited early with {status}:\n{log}");
            }
            assert!(Instant::now() < deadline, "agent never said where it listens:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The address of the first "gRPC input listening" line after byte
    /// `log_offset` of the log, if there is one yet: where an agent started
    /// again (on port 0) listens now.
    pub fn listening_since(&self, log_offset: usize) -> Option<SocketAddr> {
        logged_addr(self.log().get(log_offset..).unwrap_or_default(), "gRPC input listening")
    }

    /// The metrics endpoint's address (`[metrics] bind`, port 0 allowed),
    /// from the last "metrics and health endpoint listening" log line: the
    /// current process's after a restart.
    pub fn metrics_addr(&self) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            let last = log
                .rfind("metrics and health endpoint listening")
                .and_then(|at| log[..at].rfind('\n').map(|start| start + 1).or(Some(0)));
            if let Some(addr) =
                last.and_then(|start| logged_addr(&log[start..], "metrics and health endpoint listening"))
            {
                return addr;
            }
            assert!(Instant::now() < deadline, "no metrics endpoint in the log:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The agent's `/metrics` text.
    pub fn metrics(&self) -> String {
        http_get(self.metrics_addr(), "/metrics").1
    }

    fn wait_until_serving(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("agent exited early with {status}:\n{}", self.log());
            }
            if healthcheck(self.addr) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("agent never became healthy:\n{}", self.log());
    }

    /// The agent's log (its stderr) so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// A path inside the agent's directory.
    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `INT`, `KILL`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit; panics after `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> (ExitStatus, Duration) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, started.elapsed());
            }
            if started.elapsed() > limit {
                panic!("agent did not exit within {limit:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The agent's resident memory high-water mark, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|line| line.starts_with("VmHWM:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// A connected client.
    pub async fn client(&self) -> Client {
        Client::connect(self.addr.to_string()).await.unwrap()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        forget_agent(self.child.id());
    }
}

/// The address a log line containing `message` names: the text format's
/// `addr=` / `bind=` field or the JSON format's `"addr"` / `"bind"`.
pub fn logged_addr(log: &str, message: &str) -> Option<SocketAddr> {
    let line = log.lines().find(|line| line.contains(message))?;
    ["addr=", "bind=", "\"addr\":\"", "\"bind\":\""].iter().find_map(|key| {
        let start = line.find(key)? + key.len();
        let rest = &line[start..];
        let end = rest
            .find(|c: char| c.is_whitespace() || c == '"' || c == ',')
            .unwrap_or(rest.len());
        rest[..end].parse().ok()
    })
}

/// Writes a file, creating its directories.
pub fn write_file(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

/// Polls the agent's log until it contains `needle`.
pub fn wait_for_log(agent: &Agent, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !agent.log().contains(needle) {
        assert!(Instant::now() < deadline, "log never said {needle:?}:\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn launch(dir: &Path, env: &[(String, String)], pipe_stdout: bool, file_size_limit_kib: Option<u64>) -> Child {
    launch_with(dir, env, pipe_stdout, file_size_limit_kib, &["-c", "pipeline.toml"])
}

fn launch_with(
    dir: &Path,
    env: &[(String, String)],
    pipe_stdout: bool,
    file_size_limit_kib: Option<u64>,
    run_args: &[&str],
) -> Child {
    let stderr = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("agent.log"))
        .unwrap();
    let mut command = match file_size_limit_kib {
        // Writes past the limit fail with EFBIG instead of killing the
        // process (SIGXFSZ ignored), as writes to a full disk fail.
        Some(limit) => {
            let mut bash = Command::new("bash");
            let script = r#"trap '' XFSZ; ulimit -f "$1"; shift; exec "$@""#;
            bash.args(["-c", script, "limit", &limit.to_string(), EVENTSTASH, "run"]);
            bash.args(run_args);
            bash
        }
        None => {
            let mut agent = Command::new(EVENTSTASH);
            agent.arg("run").args(run_args);
            agent
        }
    };
    let child = command
        .current_dir(dir)
        .env("LOG_LEVEL", "info")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(if pipe_stdout { Stdio::piped() } else { Stdio::null() })
        .stderr(stderr)
        .spawn()
        .unwrap();
    watch_agent(child.id());
    child
}

/// Runs `eventstash healthcheck` against `addr`: true when it exits 0.
pub fn healthcheck(addr: SocketAddr) -> bool {
    Command::new(EVENTSTASH)
        .args(["healthcheck", "--addr", &addr.to_string(), "--timeout-ms", "1000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// A JSON event with id `{prefix}{n}`; `data` is sent as it is, valid
/// JSON or not.
pub fn json_event(prefix: &str, n: usize, kind: &str, data: &str) -> Event {
    Event::bytes(Format::Json, kind, data.as_bytes().to_vec()).with_id(format!("{prefix}{n}"))
}

/// Sends `events` as one stream: `Ok(success)` or the error status.
pub async fn store(client: &mut Client, events: Vec<Event>) -> Result<bool, tonic::Status> {
    answer(client.store(events).await)
}

/// Sends `events` as one stream, however long they take to come:
/// `Ok(success)` or the error status.
pub async fn store_stream<S>(client: &Client, events: S) -> Result<bool, tonic::Status>
where
    S: futures::Stream<Item = Event> + Send + 'static,
{
    answer(client.store_stream(events).await)
}

/// A stream's outcome as the agent answered it: `Ok(success)` or the
/// error status (a failure to connect as UNAVAILABLE).
pub fn answer(outcome: Result<(), eventstash_client::Error>) -> Result<bool, tonic::Status> {
    match outcome {
        Ok(()) => Ok(true),
        Err(eventstash_client::Error::NotAcknowledged) => Ok(false),
        Err(error) => Err(into_status(error)),
    }
}

/// The status the agent answered with; a client-side failure (no
/// connection) as UNAVAILABLE.
pub fn into_status(error: eventstash_client::Error) -> tonic::Status {
    match error {
        eventstash_client::Error::Status(status) => status,
        error => tonic::Status::unavailable(format!("{error:?}")),
    }
}

/// The `token_sha256` of a tokens file for `token`.
pub fn token_sha256(token: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// Every JSON document in a JSON-lines file.
pub fn read_documents(path: &Path) -> Vec<serde_json::Value> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("bad line {line:?}: {e}")))
        .collect()
}

/// The `id` of every complete line of JSON-lines text, in order; a last
/// line without its newline (a write still under way) is not counted.
/// Every complete line must be a document with a string `id`.
pub fn complete_line_ids(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split_inclusive('\n')
        .filter(|line| line.ends_with('\n'))
        .map(|line| {
            let document: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("bad line {line:?}: {e}"));
            document["id"]
                .as_str()
                .unwrap_or_else(|| panic!("line without a string id: {line:?}"))
                .to_owned()
        })
}

/// The Python interpreter with grpcio, set up by `tests/run`.
pub fn python() -> String {
    std::env::var("EVENTSTASH_PYTHON").unwrap_or_else(|_| {
        panic!(
            "EVENTSTASH_PYTHON is not set: run the tests with tests/run, which installs the Python client's packages"
        )
    })
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Sends `events` as one stream and asserts the agent answered `success: true`.
pub async fn store_ok(client: &mut Client, events: Vec<Event>) {
    match store(client, events).await {
        Ok(true) => {}
        other => panic!("stream not acknowledged: {other:?}"),
    }
}

/// A plain HTTP/1.1 GET: the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
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

/// The value of the Prometheus sample `name` whose labels include every
/// `labels` pair, or `None`.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| line.starts_with(name) && line[name.len()..].starts_with(['{', ' ']))
        .find(|line| labels.iter().all(|(k, v)| line.contains(&format!("{k}=\"{v}\""))))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// Runs `command` and returns its stdout, failing the test with both
/// streams if it did not exit 0.
pub fn run_ok(command: &mut Command) -> String {
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Waits until `condition` holds, polling every 10 ms; fails the test,
/// saying `what`, after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What the queue `queue` (`pipeline`, `output <id>`) holds, as
/// (events, bytes), from a `/metrics` text; zeros before it is reported.
pub fn queue_gauge(metrics: &str, queue: &str) -> (f64, f64) {
    let labels = [("queue", queue)];
    (
        metric_value(metrics, "eventstash_queue_events", &labels).unwrap_or(0.0),
        metric_value(metrics, "eventstash_queue_bytes", &labels).unwrap_or(0.0),
    )
}

/// Waits until a producer's count of events `sent` stays put for 300 ms —
/// the producer is held — and returns it; fails after 15 s.
pub fn wait_until_held(sent: &std::sync::atomic::AtomicUsize) -> usize {
    use std::sync::atomic::Ordering;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = sent.load(Ordering::Relaxed);
    let mut since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let now = sent.load(Ordering::Relaxed);
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() >= Duration::from_millis(300) {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "the producer was never held: {now} events taken"
        );
    }
}
