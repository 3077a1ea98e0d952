//! `watch = true` starts inotify only when the pipeline starts the filter
//! (`Filter::start`), never when a config is built — which is all
//! `eventstash validate` does.

use eventstash_filter_protobuf::ProtobufFilterConfig;
use eventstash_plugin_api::Filter as _;

fn watching_config(dir: &std::path::Path) -> ProtobufFilterConfig {
    std::fs::write(
        dir.join("ping.proto"),
        "syntax = \"proto3\";\npackage t;\nmessage Ping { string id = 1; }\n",
    )
    .unwrap();
    toml::from_str(&format!(
        "protos = \"{}/**/*.proto\"\ninclude = [\"{}\"]\nwatch = true",
        dir.display(),
        dir.display()
    ))
    .unwrap()
}

#[test]
fn building_a_watching_filter_starts_no_watcher() {
    let dir = tempfile::tempdir().unwrap();
    let filter = watching_config(dir.path()).build().unwrap();
    assert!(!filter.is_watching());
}

#[test]
fn starting_a_watching_filter_starts_one_watcher() {
    let dir = tempfile::tempdir().unwrap();
    let filter = watching_config(dir.path()).build().unwrap();
    filter.start().unwrap();
    assert!(filter.is_watching());
    filter.start().unwrap();
    assert!(filter.is_watching());
}

#[test]
fn a_filter_without_watch_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = watching_config(dir.path());
    config.watch = false;
    let filter = config.build().unwrap();
    filter.start().unwrap();
    assert!(!filter.is_watching());
}
