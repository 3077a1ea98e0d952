//! End to end: `eventstash validate` and `eventstash healthcheck` as
//! operators and container health checks use them.

mod support;

use std::process::Command;

use support::*;

fn validate(config: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.toml");
    std::fs::write(&file, config).unwrap();
    let output = Command::new(EVENTSTASH)
        .args(["validate", "-c"])
        .arg(&file)
        .output()
        .unwrap();
    (
        output.status.code().unwrap(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn validate_accepts_each_shipped_pipeline() {
    let mut checked = 0;
    for entry in std::fs::read_dir(repo_root().join("pipelines")).unwrap() {
        let file = entry.unwrap().path();
        // It needs certificates, which tests/security.rs makes before validating it.
        if file.ends_with("secure.toml") {
            continue;
        }
        let relative = file.strip_prefix(repo_root()).unwrap().to_owned();
        let stdout = run_ok(
            Command::new(EVENTSTASH)
                .args(["validate", "-c"])
                .arg(&relative)
                .current_dir(repo_root()),
        );
        assert!(stdout.contains(&format!("ok: {}", relative.display())), "{stdout}");
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} pipelines shipped");
}

#[test]
fn validate_rejects_an_unknown_key_naming_file_and_key() {
    let (code, _, stderr) = validate("[[inputs]]\ntype = \"grpc\"\nport = 42043\n[[outputs]]\ntype = \"stdout\"\n");
    assert_eq!(code, 2);
    assert!(stderr.contains("broken.toml"), "{stderr}");
    assert!(stderr.contains("`inputs[0].port`"), "{stderr}");
    assert!(stderr.contains("unknown field `port`"), "{stderr}");
}

#[test]
fn validate_rejects_a_bad_template() {
    let (code, _, stderr) =
        validate("[[inputs]]\ntype = \"grpc\"\n[[outputs]]\ntype = \"file\"\npath = \"data/%{index.jsonl\"\n");
    assert_eq!(code, 2);
    assert!(stderr.contains("broken.toml"), "{stderr}");
    assert!(stderr.contains("outputs[0]"), "{stderr}");
    assert!(stderr.contains("unclosed `%{`"), "{stderr}");
}

#[test]
fn validate_rejects_a_wrong_type_and_an_unset_variable() {
    let (code, _, stderr) =
        validate("[queue]\nmax_events = \"many\"\n[[inputs]]\ntype = \"grpc\"\n[[outputs]]\ntype = \"stdout\"\n");
    assert_eq!(code, 2);
    assert!(stderr.contains("`queue.max_events`: invalid type"), "{stderr}");

    let (code, _, stderr) = validate(
        "[[inputs]]\ntype = \"grpc\"\nbind = \"${EVENTSTASH_TEST_NOT_SET}\"\n[[outputs]]\ntype = \"stdout\"\n",
    );
    assert_eq!(code, 2);
    assert!(stderr.contains("`inputs[0].bind`"), "{stderr}");
    assert!(stderr.contains("EVENTSTASH_TEST_NOT_SET is not set"), "{stderr}");
}

#[test]
fn run_with_a_bad_config_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // A good input and persisted queue, a bad second output: starting any
    // of it leaves a trace that outlives the process — the input's
    // "listening" line, the queue's directory, the output's directory.
    let config = "[queue]\ntype = \"persisted\"\npath = \"queue\"\n\
                  [[inputs]]\ntype = \"grpc\"\nbind = \"127.0.0.1:0\"\n\
                  [[outputs]]\ntype = \"file\"\npath = \"events/x\"\n[[outputs]]\ntype = \"nope\"\n";
    std::fs::write(dir.path().join("p.toml"), config).unwrap();
    let output = Command::new(EVENTSTASH)
        .args(["run", "-c", "p.toml"])
        .current_dir(dir.path())
        .env("LOG_LEVEL", "debug")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unknown output type \"nope\""), "{stderr}");
    assert!(!stderr.contains("listening"), "the input started:\n{stderr}");
    assert!(!dir.path().join("queue").exists(), "the queue was opened:\n{stderr}");
    assert!(!dir.path().join("events").exists(), "the output started:\n{stderr}");
}

#[test]
fn queue_inspect_exits_one_when_the_queue_cannot_be_read() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[queue]\ntype = \"persisted\"\npath = \"queue\"\n\
                  [[inputs]]\ntype = \"grpc\"\n[[outputs]]\ntype = \"stdout\"\n";
    std::fs::write(dir.path().join("p.toml"), config).unwrap();
    // Where the queue's directory should be, a regular file.
    std::fs::write(dir.path().join("queue"), "not a queue").unwrap();
    let output = Command::new(EVENTSTASH)
        .args(["queue", "inspect", "-c", "p.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("queue"), "the queue is not named: {stderr}");
}

/// A pipeline `id` with a gRPC input on a port of its own and a file output
/// under `id/`.
fn numbered_pipeline(id: &str) -> String {
    format!(
        "[pipeline]\nid = \"{id}\"\n[[inputs]]\ntype = \"grpc\"\nbind = \"127.0.0.1:{{port}}\"\n\
         [[outputs]]\ntype = \"file\"\npath = \"{id}/%{{index}}.jsonl\"\n"
    )
}

/// Starts `run` with `args` over the pipelines `one`, `two` (and a third,
/// `three`, that only a glob picks up), sends an event to each input and
/// checks each pipeline stored its own.
async fn run_serves_every_pipeline(args: &[&str], expected: &[&str]) {
    let mut options = AgentOptions::new("");
    for id in ["one", "two"] {
        options.files.push((format!("conf/{id}.toml"), numbered_pipeline(id)));
    }
    options
        .files
        .push(("conf/more/three.toml".into(), numbered_pipeline("three")));
    let agent = Agent::start_with_args(options, args);
    wait_until("every input listening", std::time::Duration::from_secs(10), || {
        agent.grpc_addrs().len() == expected.len()
    });
    for (n, addr) in agent.grpc_addrs().into_iter().enumerate() {
        let mut client = eventstash_client::Client::connect(addr.to_string()).await.unwrap();
        store_ok(&mut client, vec![json_event("multi-", n, "k", "1")]).await;
    }
    let mut stored = Vec::new();
    for id in ["one", "two", "three"] {
        if let Ok(documents) = std::fs::read_to_string(agent.path(&format!("{id}/k.jsonl"))) {
            assert_eq!(documents.lines().count(), 1, "{id}: {documents}");
            stored.push(id);
        }
    }
    assert_eq!(stored, expected, "{}", agent.log());
}

#[tokio::test]
async fn run_takes_several_config_files() {
    run_serves_every_pipeline(&["-c", "conf/one.toml", "-c", "conf/two.toml"], &["one", "two"]).await;
}

#[tokio::test]
async fn run_takes_a_glob() {
    run_serves_every_pipeline(&["-c", "conf/**/*.toml"], &["one", "two", "three"]).await;
}

#[test]
fn healthcheck_exits_zero_on_a_running_agent_and_one_without() {
    let agent = Agent::start(AgentOptions::new(FILE_PIPELINE));
    let output = Command::new(EVENTSTASH)
        .args(["healthcheck"])
        .env("EVENTSTASH_RPC_URI", agent.addr.to_string())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stdout).contains("SERVING"));

    let nobody = format!("127.0.0.1:{}", free_port());
    let output = Command::new(EVENTSTASH)
        .args(["healthcheck", "--addr", &nobody, "--timeout-ms", "500"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
}
