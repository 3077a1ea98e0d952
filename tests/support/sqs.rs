//! Support for the SQS end-to-end tests: the moto server (SQS and DynamoDB
//! on one URL, `EVENTSTASH_TEST_SQS_URL`, set by `tests/run`), agents
//! started from pipeline files with nothing but environment variables, and
//! boto3 (installed with moto) to fill queues and read queues and tables.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{Agent, EVENTSTASH, healthcheck, logged_addr, python, run_ok};

/// The moto server's URL; the tests fail, not skip, without it.
pub fn sqs_url() -> String {
    std::env::var("EVENTSTASH_TEST_SQS_URL").unwrap_or_else(|_| {
        panic!("EVENTSTASH_TEST_SQS_URL is not set: run the tests with tests/run, which starts moto")
    })
}

/// The variables that point an agent's AWS clients at moto.
pub fn aws_env(url: &str) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", url),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Runs a boto3 script with `sqs` and `db` clients of moto at hand, and
/// the extra `args` in `sys.argv[1:]`; returns its stdout.
pub fn boto(url: &str, script: &str, args: &[&str]) -> String {
    let preamble = r#"
import sys, json, time, boto3
_kw = dict(endpoint_url=sys.argv[1], region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
sqs, db = boto3.client("sqs", **_kw), boto3.client("dynamodb", **_kw)
sys.argv = sys.argv[1:]
"#;
    let mut command = Command::new(python());
    command.args(["-c", &format!("{preamble}\n{script}"), url]).args(args);
    run_ok(&mut command)
}

/// Creates a standard queue and returns its URL.
pub fn create_queue(url: &str, name: &str) -> String {
    boto(
        url,
        r#"print(sqs.create_queue(QueueName=sys.argv[1])["QueueUrl"])"#,
        &[name],
    )
    .trim()
    .to_owned()
}

/// The queue's visible and in-flight message counts.
pub fn queue_counts(url: &str, queue_url: &str) -> (usize, usize) {
    let out = boto(
        url,
        r#"
a = sqs.get_queue_attributes(QueueUrl=sys.argv[1], AttributeNames=["All"])["Attributes"]
print(a["ApproximateNumberOfMessages"], a["ApproximateNumberOfMessagesNotVisible"])
"#,
        &[queue_url],
    );
    let mut counts = out.split_whitespace().map(|n| n.parse().unwrap());
    (counts.next().unwrap(), counts.next().unwrap())
}

/// How to start an agent from a pipeline file and variables.
pub struct AgentSpec<'a> {
    /// The pipeline file (a shipped one, or one the test wrote).
    pub pipeline: &'a Path,
    /// Its variables; `GRPC_BIND_ADDRESS` and `METRICS_BIND` are set to
    /// port 0 (the agent names the ports it bound: `Agent::addr`,
    /// `Agent::metrics_addr`) and `EVENTSTASH_DATA_DIR` to a private one.
    pub env: Vec<(String, String)>,
    /// Wait until this appears in the log (for agents without gRPC input);
    /// `None`: wait for the gRPC health check.
    pub ready_log: Option<&'a str>,
    /// Pipe the agent's stdout to the test (for the stdout output).
    pub pipe_stdout: bool,
}

/// Starts an agent in its own directory and waits until it is ready.
pub fn start_agent(spec: AgentSpec<'_>) -> Agent {
    let dir = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
    let child = Command::new(EVENTSTASH)
        .args(["run", "-c"])
        .arg(spec.pipeline)
        .current_dir(dir.path())
        .env("LOG_LEVEL", "info")
        .env("GRPC_BIND_ADDRESS", "127.0.0.1:0")
        .env("METRICS_BIND", "127.0.0.1:0")
        .env("EVENTSTASH_DATA_DIR", dir.path().join("data"))
        .env("SHUTDOWN_TIMEOUT", "10000")
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(if spec.pipe_stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(log)
        .spawn()
        .unwrap();
    let mut agent = Agent {
        dir,
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        child,
    };
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
        let ready = match spec.ready_log {
            Some(needle) => agent.log().contains(needle),
            None => agent.addr.port() != 0 && healthcheck(agent.addr),
        };
        if ready {
            return agent;
        }
        assert!(Instant::now() < deadline, "agent never became ready:\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for a TERM'd agent to exit 0 within `limit`.
pub fn stop_agent(agent: &mut Agent, limit: Duration) {
    agent.signal("TERM");
    let (status, _) = agent.wait_exit(limit);
    assert!(status.success(), "agent exited with {status}:\n{}", agent.log());
}

/// The protos shipped with the repository, for the protobuf filter.
pub fn protos_glob() -> String {
    super::repo_root().join("protos/**/*.proto").display().to_string()
}
