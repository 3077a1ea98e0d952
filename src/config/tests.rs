//! Loading pipeline files: defaults, interpolation and errors that name the key.

use std::io::Write as _;

use std::time::Duration;

use super::*;

fn load_text(text: &str) -> Result<PipelineConfig, ConfigError> {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    load(file.path())
}

const MINIMAL: &str = r#"
[[inputs]]
type = "grpc"
bind = "127.0.0.1:0"

[[outputs]]
type = "file"
path = "data/%{index}.jsonl"
"#;

#[test]
fn minimal_file_gets_the_documented_defaults() {
    let config = load_text(MINIMAL).unwrap();
    assert_eq!(config.id, "main");
    assert_eq!(config.queue.max_events, 10_000);
    assert_eq!(config.queue.max_bytes, 256 * 1024 * 1024);
    assert_eq!(config.outputs[0].id, "file#0");
    assert_eq!(config.outputs[0].batch.max_events, 1000);
    assert_eq!(config.outputs[0].batch.delay, Duration::from_millis(50));
    // The file output's own default: it keeps queue order at any concurrency.
    assert_eq!(config.outputs[0].batch.concurrency, 4);
}

#[test]
fn an_outputs_concurrency_key_overrides_its_default() {
    let config = load_text(&format!("{MINIMAL}concurrency = 1\n")).unwrap();
    assert_eq!(config.outputs[0].batch.concurrency, 1);
    let config = load_text(
        &MINIMAL
            .replace(r#"type = "file""#, r#"type = "stdout""#)
            .replace(r#"path = "data/%{index}.jsonl""#, ""),
    )
    .unwrap();
    assert_eq!(
        config.outputs[0].batch.concurrency, 1,
        "other outputs default to one write at a time"
    );
}

#[test]
fn numbers_come_from_environment_defaults() {
    let text = format!(
        "[pipeline]\nshutdown_timeout_ms = \"${{EVENTSTASH_TEST_UNSET_TIMEOUT:2500}}\"\nbatch_size = \"${{EVENTSTASH_TEST_UNSET_BATCH:20}}\"\n{MINIMAL}"
    );
    let config = load_text(&text).unwrap();
    assert_eq!(config.shutdown_timeout, Duration::from_millis(2500));
    assert_eq!(config.outputs[0].batch.max_events, 20);
}

#[test]
fn output_batches_never_exceed_their_queue() {
    let text = format!("[queue]\nmax_events = 100\n{MINIMAL}batch_size = 5000\n");
    let config = load_text(&text).unwrap();
    assert_eq!(config.outputs[0].queue.max_events, 100);
    assert_eq!(config.outputs[0].batch.max_events, 100);
}

fn error_of(text: &str) -> ConfigError {
    match load_text(text) {
        Ok(_) => panic!("config was accepted:\n{text}"),
        Err(error) => error,
    }
}

#[test]
fn unknown_keys_are_named() {
    let error = error_of(&format!("{MINIMAL}colour = \"red\"\n"));
    assert_eq!(error.key, "outputs[0].colour");
    assert!(error.message.contains("unknown field `colour`"), "{error}");
    let error = error_of(&format!("[pipeline]\nbatchsize = 1\n{MINIMAL}"));
    assert!(error.message.contains("unknown field `batchsize`"), "{error}");
}

#[test]
fn wrong_types_are_named() {
    let error = error_of(&format!("[queue]\nmax_events = \"lots\"\n{MINIMAL}"));
    assert_eq!(error.key, "queue.max_events");
    assert!(
        error.to_string().contains("`queue.max_events`: invalid type"),
        "{error}"
    );
}

#[test]
fn unknown_plugin_types_list_the_known_ones() {
    let error = error_of("[[inputs]]\ntype = \"kafka\"\n[[outputs]]\ntype = \"stdout\"\n");
    assert_eq!(error.key, "inputs[0].type");
    assert!(
        error
            .message
            .contains("unknown input type \"kafka\" (known: grpc, sqs)"),
        "{error}"
    );
}

#[test]
fn plugin_build_errors_carry_the_section() {
    let error = error_of("[[inputs]]\ntype = \"grpc\"\nbind = \"nowhere\"\n[[outputs]]\ntype = \"stdout\"\n");
    assert!(error.key.starts_with("inputs[0]"), "{error}");
    assert!(error.message.contains("nowhere"), "{error}");
    let error = error_of("[[inputs]]\ntype = \"grpc\"\n[[outputs]]\ntype = \"file\"\npath = \"data/%{index\"\n");
    assert!(error.key.starts_with("outputs[0]"), "{error}");
    assert!(error.message.contains("unclosed"), "{error}");
}

#[test]
fn missing_variables_and_bad_toml_are_reported() {
    let error = error_of(&MINIMAL.replace("127.0.0.1:0", "${EVENTSTASH_TEST_SURELY_UNSET}"));
    assert_eq!(error.key, "inputs[0].bind");
    assert!(
        error.message.contains("EVENTSTASH_TEST_SURELY_UNSET is not set"),
        "{error}"
    );
    let error = error_of("[[inputs]\ntype = \"grpc\"");
    assert!(error.message.starts_with("not valid TOML"), "{error}");
}

#[test]
fn a_pipeline_needs_inputs_and_outputs() {
    assert_eq!(error_of("[[inputs]]\ntype = \"grpc\"\n").key, "outputs");
    assert_eq!(error_of("[[outputs]]\ntype = \"stdout\"\n").key, "inputs");
}

#[test]
fn queued_acks_need_the_persisted_queue() {
    let error = error_of(&format!("[queue]\nack = \"queued\"\n{MINIMAL}"));
    assert_eq!(error.key, "queue.ack");
}

#[test]
fn persisted_queue_defaults_to_queued_acks_and_batch_syncs() {
    let config = load_text(&format!("[queue]\ntype = \"persisted\"\n{MINIMAL}")).unwrap();
    let persisted = config.persisted.unwrap();
    assert_eq!(persisted.path, std::path::PathBuf::from("data/queue/main"));
    assert!(persisted.ack_queued);
    assert_eq!(persisted.sync_interval, None);

    let text = format!(
        "[queue]\ntype = \"persisted\"\nack = \"delivered\"\nsync = \"interval\"\nsync_interval_ms = 250\npath = \"q\"\n{MINIMAL}"
    );
    let persisted = load_text(&text).unwrap().persisted.unwrap();
    assert!(!persisted.ack_queued);
    assert_eq!(persisted.sync_interval, Some(Duration::from_millis(250)));
    assert_eq!(persisted.path, std::path::PathBuf::from("q"));
    assert!(load_text(MINIMAL).unwrap().persisted.is_none());
}
