//! HFXEventStash's environment variables, read one way: by `${VAR:default}`
//! interpolation.
//!
//! `SHUTDOWN_TIMEOUT`, `GRPC_BIND_ADDRESS` and `PROTOS_GLOB` are the
//! defaults of their keys, so a file that leaves the key out still follows
//! the variable. Rather than a second, hidden reading of the environment in
//! serde defaults, a missing key is given its default as a pipeline file
//! would write it (`"${SHUTDOWN_TIMEOUT:15000}"`) before interpolation; the
//! plugins' own defaults (the registry knows which) come from
//! [`registry::environment_defaults`].

use crate::registry;

/// `[pipeline]` keys whose default names a variable.
const PIPELINE_DEFAULTS: &[(&str, &str)] = &[("shutdown_timeout_ms", "${SHUTDOWN_TIMEOUT:15000}")];

/// Plugin sections whose tables may have such keys.
const PLUGIN_SECTIONS: [&str; 2] = ["inputs", "filters"];

/// Gives every key of `file` that is missing and whose default names an
/// environment variable that default, uninterpolated. Tables of the wrong
/// shape are left for the parser to name.
pub(super) fn fill_defaults(file: &mut toml::Table) {
    let pipeline = file
        .entry("pipeline")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let Some(pipeline) = pipeline.as_table_mut() {
        insert_missing(pipeline, PIPELINE_DEFAULTS);
    }
    for section in PLUGIN_SECTIONS {
        let Some(tables) = file.get_mut(section).and_then(toml::Value::as_array_mut) else {
            continue;
        };
        for table in tables.iter_mut().filter_map(toml::Value::as_table_mut) {
            let Some(kind) = table.get("type").and_then(toml::Value::as_str) else {
                continue;
            };
            let defaults = registry::environment_defaults(section, kind);
            insert_missing(table, defaults);
        }
    }
}

fn insert_missing(table: &mut toml::Table, defaults: &[(&str, &str)]) {
    for (key, value) in defaults {
        if !table.contains_key(*key) {
            table.insert((*key).to_owned(), toml::Value::String((*value).to_owned()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(text: &str) -> toml::Table {
        let mut file: toml::Table = toml::from_str(text).unwrap();
        fill_defaults(&mut file);
        file
    }

    #[test]
    fn missing_keys_get_their_variable_as_the_file_would_write_it() {
        let file =
            filled("[[inputs]]\ntype = \"grpc\"\n[[filters]]\ntype = \"protobuf\"\n[[outputs]]\ntype = \"stdout\"");
        assert_eq!(
            file["pipeline"]["shutdown_timeout_ms"].as_str(),
            Some("${SHUTDOWN_TIMEOUT:15000}")
        );
        assert_eq!(
            file["inputs"][0]["bind"].as_str(),
            Some("${GRPC_BIND_ADDRESS:0.0.0.0:42043}")
        );
        assert_eq!(
            file["filters"][0]["protos"].as_str(),
            Some("${PROTOS_GLOB:protos/**/*.proto}")
        );
        assert_eq!(file["outputs"][0].as_table().map(toml::Table::len), Some(1));
    }

    #[test]
    fn keys_the_file_gives_are_kept() {
        let file = filled("[pipeline]\nshutdown_timeout_ms = 5\n[[inputs]]\ntype = \"grpc\"\nbind = \"127.0.0.1:1\"");
        assert_eq!(file["pipeline"]["shutdown_timeout_ms"].as_integer(), Some(5));
        assert_eq!(file["inputs"][0]["bind"].as_str(), Some("127.0.0.1:1"));
    }

    #[test]
    fn tables_of_other_types_and_wrong_shapes_are_left_alone() {
        let file = filled("pipeline = 3\n[[inputs]]\ntype = \"sqs\"\n[[filters]]\nprotos = \"x\"");
        assert_eq!(file["pipeline"].as_integer(), Some(3));
        assert!(!file["inputs"][0].as_table().unwrap().contains_key("bind"));
        assert_eq!(file["filters"][0].as_table().map(toml::Table::len), Some(1));
    }
}
