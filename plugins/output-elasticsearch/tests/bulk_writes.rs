//! The output against a real Elasticsearch API (osmem-server, see
//! `support`): documents, indices, ids, templates and the dead-letter file.

mod support;

use std::path::Path;

use chrono::{TimeZone, Utc};
use elasticsearch::http::Method;
use eventstash_plugin_api::{Output, OutputBatch};
use serde_json::json;
use support::{Server, dead_letters, events, new_year_2021, output, server_url, unique, write_all};

#[tokio::test]
async fn ten_thousand_events_land_in_weekly_indices_with_their_ids_and_the_template() {
    let server = Server::connect();
    let url = server_url();
    // HFXEventStash's template under a name and pattern of this test's own,
    // so that no other test's template on the shared server can shape the
    // index in its place.
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../templates/evt.json");
    let mut evt: serde_json::Value = serde_json::from_slice(&std::fs::read(shipped).unwrap()).unwrap();
    let prefix = unique("evt-ten");
    evt["index_patterns"] = json!([format!("{prefix}-*")]);
    let dir = tempfile::tempdir().unwrap();
    let template = support::template_file(dir.path(), &evt);
    let template_name = unique("evt-tpl");
    let under_test = output(
        &[&url],
        json!({
            "template": template,
            "template_name": template_name,
            "index": format!("{prefix}-%{{index}}-%{{+xxxx-MM-ww}}"),
        }),
    );
    let kind = unique("bulk.Ten");
    // Half in ISO week 53 of 2020, half in week 1 of 2025 (Monday 2024-12-30).
    let new_year_eve = Utc.with_ymd_and_hms(2024, 12, 30, 8, 0, 0).unwrap();
    let mut batch = events(&kind, "a", 5_000, new_year_2021());
    batch.extend(events(&kind, "b", 5_000, new_year_eve));
    let first = batch[0].clone();
    write_all(&under_test.output, batch, 1_000).await;

    let week_53 = format!("{prefix}-{}-2020-01-53", first.index);
    let week_1 = format!("{prefix}-{}-2025-12-01", first.index);
    assert_eq!(server.count(&week_53).await, 5_000);
    assert_eq!(server.count(&week_1).await, 5_000);
    let stored = server.document(&week_53, "a-4321").await.expect("a-4321 stored");
    assert_eq!(stored["id"], "a-4321");
    assert_eq!(stored["kind"], kind.as_str());
    assert_eq!(stored["index"], first.index.as_str());
    assert_eq!(stored["format"], "JSON");
    assert_eq!(stored["data"]["n"], 4321);
    assert_eq!(stored["@timestamp"], "2021-01-01T10:00:00.000Z");

    let (status, installed) = server
        .request(Method::Get, &format!("_template/{template_name}"), None)
        .await;
    assert_eq!(status, 200, "template {template_name} not installed: {installed}");
    assert_eq!(
        installed[&template_name]["index_patterns"],
        json!([format!("{prefix}-*")])
    );
    // The template shaped the index: HFXEventStash's settings and mappings.
    let (_, settings) = server.request(Method::Get, &format!("{week_53}/_settings"), None).await;
    assert_eq!(settings[&week_53]["settings"]["index"]["refresh_interval"], "15s");
    let (_, mapping) = server.request(Method::Get, &format!("{week_53}/_mapping"), None).await;
    assert_eq!(mapping[&week_53]["mappings"]["properties"]["format"]["type"], "keyword");
    assert!(dead_letters(&under_test.dead_letter_path).is_empty());
}

#[tokio::test]
async fn a_mapping_error_is_dead_lettered_with_its_reason_and_the_rest_stored() {
    let server = Server::connect();
    let url = server_url();
    let prefix = unique("mapfail");
    let dir = tempfile::tempdir().unwrap();
    // A composable template that maps data.n as a number.
    let template = support::template_file(
        dir.path(),
        &json!({
            "index_patterns": [format!("{prefix}-*")],
            "template": {"mappings": {"properties": {"data": {"properties": {"n": {"type": "long"}}}}}}
        }),
    );
    let template_name = unique("tpl");
    let under_test = output(
        &[&url],
        json!({
            "template": template,
            "template_name": template_name,
            "index": format!("{prefix}-%{{index}}"),
        }),
    );
    let mut batch = events("kind", "m", 3, new_year_2021());
    batch[1] = eventstash_plugin_api::Event::new(
        eventstash_plugin_api::Format::Json,
        bytes::Bytes::from_static(br#"{"n":"not a number"}"#),
        "kind".into(),
        "m-bad".into(),
        new_year_2021(),
    );
    under_test.output.write(OutputBatch::from(batch)).await.unwrap();

    let (status, _) = server
        .request(Method::Get, &format!("_index_template/{template_name}"), None)
        .await;
    assert_eq!(status, 200, "the composable template was not installed");
    assert_eq!(server.count(&format!("{prefix}-kind")).await, 2);
    let letters = dead_letters(&under_test.dead_letter_path);
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["event"]["id"], "m-bad");
    assert_eq!(letters[0]["event"]["data"]["n"], "not a number");
    assert_eq!(letters[0]["output"], "elasticsearch#0");
    let reason = letters[0]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("400 mapper_parsing_exception") && reason.contains("data.n"),
        "{reason}"
    );
}

#[tokio::test]
async fn create_counts_an_already_stored_document_as_stored() {
    let server = Server::connect();
    let url = server_url();
    let prefix = unique("create");
    let under_test = output(
        &[&url],
        json!({"action": "create", "index": format!("{prefix}-%{{index}}")}),
    );
    let batch = events("kind", "c", 50, new_year_2021());
    under_test.output.write(OutputBatch::from(batch.clone())).await.unwrap();
    // Sent again, as after a crash: every item is a 409 conflict.
    under_test.output.write(OutputBatch::from(batch)).await.unwrap();
    assert_eq!(server.count(&format!("{prefix}-kind")).await, 50);
    assert!(dead_letters(&under_test.dead_letter_path).is_empty());
}

#[tokio::test]
async fn an_installed_template_is_kept_unless_overwrite_is_set() {
    let server = Server::connect();
    let url = server_url();
    let name = unique("keep");
    let old = json!({"index_patterns": [format!("{name}-old-*")], "mappings": {}});
    let (status, body) = server
        .request(Method::Put, &format!("_template/{name}"), Some(old))
        .await;
    assert_eq!(status, 200, "{body}");
    let dir = tempfile::tempdir().unwrap();
    let new = json!({"index_patterns": [format!("{name}-new-*")], "mappings": {}});
    let template = support::template_file(dir.path(), &new);
    let patterns = |body: serde_json::Value| body[&name]["index_patterns"].clone();
    let options = |overwrite: bool| {
        json!({
            "template": template,
            "template_name": name,
            "template_overwrite": overwrite,
            "index": format!("{name}-docs"),
        })
    };

    let kept = output(&[&url], options(false));
    let batch = events("kind", "k", 1, new_year_2021());
    kept.output.write(OutputBatch::from(batch.clone())).await.unwrap();
    let (_, body) = server.request(Method::Get, &format!("_template/{name}"), None).await;
    assert_eq!(patterns(body), json!([format!("{name}-old-*")]));

    let replaced = output(&[&url], options(true));
    replaced.output.write(OutputBatch::from(batch)).await.unwrap();
    let (_, body) = server.request(Method::Get, &format!("_template/{name}"), None).await;
    assert_eq!(patterns(body), json!([format!("{name}-new-*")]));
}

#[tokio::test]
async fn a_refused_template_fails_the_write_with_the_clusters_reason() {
    let server = Server::connect();
    let url = server_url();
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("refused");
    let template = support::template_file(
        dir.path(),
        &json!({
            "index_patterns": [format!("{prefix}-*")],
            "mappings": {"properties": {"x": {"type": "no_such_type"}}}
        }),
    );
    let under_test = output(
        &[&url],
        json!({
            "template": template,
            "template_name": prefix,
            "index": format!("{prefix}-%{{index}}"),
        }),
    );
    let error = under_test
        .output
        .write(OutputBatch::from(events("kind", "r", 1, new_year_2021())))
        .await
        .expect_err("a refused template must fail the write");
    let message = error.to_string();
    assert!(
        message.contains("refused index template") && message.contains("no_such_type"),
        "{message}"
    );
    // Nothing was written without the template.
    let (status, _) = server
        .request(Method::Get, &format!("{prefix}-kind/_count"), None)
        .await;
    assert_eq!(status, 404);
}
