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
    let port = free_port();
    let config = format!(
        "[[inputs]]\ntype = \"grpc\"\nbind = \"127.0.0.1:{port}\"\n[[outputs]]\ntype = \"file\"\npath = \"x\"\n[[outputs]]\ntype = \"nope\"\n"
    );
    std::fs::write(dir.path().join("p.toml"), config).unwrap();
    let output = Command::new(EVENTSTASH)
        .args(["run", "-c", "p.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown output type \"nope\""));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the input must not have started"
    );
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
