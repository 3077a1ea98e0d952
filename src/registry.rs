//! The plugin registry: the one place that names concrete plugins.
//!
//! Each `[[inputs]]`, `[[filters]]` and `[[outputs]]` table is matched on its
//! `type`; the plugin's own config struct reads the rest of the table and
//! builds the plugin. Building checks everything that can be checked without
//! starting (addresses, templates, paths) and starts nothing: what a plugin
//! runs beside its work (the protobuf filter's watcher) starts with its
//! pipeline (`Filter::start`), never under `validate`.
//!
//! Besides building, the registry answers the two other questions the
//! engine has for plugins: which of their keys default to an environment
//! variable, and the hash of a producer token (the gRPC input's tokens
//! file, for `eventstash token hash`).
//!
//! `[[event_stores]]` tables are matched the same way; an event store and
//! the outputs that can read back what they wrote are also replay sources,
//! which a gRPC input serves by id (see `config::build`).

use std::sync::Arc;

use eventstash_filter_protobuf as filter_protobuf;
use eventstash_input_grpc as input_grpc;
use eventstash_input_sqs as input_sqs;
use eventstash_output_dynamodb as output_dynamodb;
use eventstash_output_elasticsearch as output_elasticsearch;
use eventstash_output_file as output_file;
use eventstash_output_sqs as output_sqs;
use eventstash_output_stdout as output_stdout;
use eventstash_plugin_api::{EventStore, Filter, Input, Output, PluginContext, ReplaySource};
use serde::de::DeserializeOwned;

use crate::config::{KeyError, value_from_table};

const INPUTS: &[&str] = &[input_grpc::NAME, input_sqs::NAME];
const FILTERS: &[&str] = &[filter_protobuf::NAME];
const OUTPUTS: &[&str] = &[
    output_file::NAME,
    output_stdout::NAME,
    output_elasticsearch::NAME,
    output_dynamodb::NAME,
    output_sqs::NAME,
];

const EVENT_STORES: &[&str] = &[output_dynamodb::NAME];

/// What an input that serves the event store is given: the store for
/// appends and reads (already behind the pipeline's filters) and the
/// replay sources by id.
pub(crate) struct EventStoreWiring {
    pub(crate) store: Option<Arc<dyn EventStore>>,
    pub(crate) replay: Vec<(String, Arc<dyn ReplaySource>)>,
}

/// Builds the input whose `type` is `kind` from the rest of its table. With
/// `event_store`, the input also serves `hfx.v1.EventStore`.
pub(crate) fn build_input(
    kind: &str,
    table: toml::Table,
    event_store: Option<EventStoreWiring>,
) -> Result<Box<dyn Input>, KeyError> {
    if event_store.is_some() && kind != input_grpc::NAME {
        return Err(KeyError::new(
            "event_store",
            format!("only `{}` inputs serve the event store and replay", input_grpc::NAME),
        ));
    }
    match kind {
        input_grpc::NAME => {
            let input = parse::<input_grpc::GrpcInputConfig>(table)?
                .build()
                .map_err(build_error)?;
            Ok(match event_store {
                Some(wiring) => Box::new(input.with_event_store(input_grpc::EventStoreBackends {
                    store: wiring.store,
                    replay: wiring.replay,
                })),
                None => Box::new(input),
            })
        }
        input_sqs::NAME => Ok(Box::new(
            parse::<input_sqs::SqsInputConfig>(table)?
                .build()
                .map_err(build_error)?,
        )),
        other => Err(unknown("input", other, INPUTS)),
    }
}

/// Builds the filter whose `type` is `kind` from the rest of its table.
pub(crate) fn build_filter(
    kind: &str,
    table: toml::Table,
    context: &PluginContext,
) -> Result<Box<dyn Filter>, KeyError> {
    match kind {
        filter_protobuf::NAME => Ok(Box::new(
            parse::<filter_protobuf::ProtobufFilterConfig>(table)?
                .build()
                .map_err(build_error)?
                .in_context(context),
        )),
        #[cfg(feature = "fault-injection")]
        crate::fault_filter::NAME => Ok(Box::new(
            parse::<crate::fault_filter::FaultFilterConfig>(table)?.build(),
        )),
        other => Err(unknown("filter", other, FILTERS)),
    }
}

/// Builds the output whose `type` is `kind` from the rest of its table.
pub(crate) fn build_output(
    kind: &str,
    table: toml::Table,
    context: &PluginContext,
) -> Result<Box<dyn Output>, KeyError> {
    match kind {
        output_file::NAME => Ok(Box::new(
            parse::<output_file::FileOutputConfig>(table)?
                .build_in(context)
                .map_err(build_error)?,
        )),
        output_stdout::NAME => Ok(Box::new(
            parse::<output_stdout::StdoutOutputConfig>(table)?
                .build()
                .map_err(build_error)?,
        )),
        output_elasticsearch::NAME => Ok(Box::new(
            parse::<output_elasticsearch::ElasticsearchOutputConfig>(table)?
                .build(context)
                .map_err(build_error)?,
        )),
        output_dynamodb::NAME => Ok(Box::new(
            parse::<output_dynamodb::DynamoDbOutputConfig>(table)?
                .build(context)
                .map_err(build_error)?,
        )),
        output_sqs::NAME => Ok(Box::new(
            parse::<output_sqs::SqsOutputConfig>(table)?
                .build(context)
                .map_err(build_error)?,
        )),
        other => Err(unknown("output", other, OUTPUTS)),
    }
}

/// A built event store: it appends and reads, and replays by aggregate type.
pub(crate) struct BuiltEventStore {
    pub(crate) store: Arc<dyn EventStore>,
    pub(crate) replay: Arc<dyn ReplaySource>,
}

/// Builds the event store whose `type` is `kind` from the rest of its table.
pub(crate) fn build_event_store(
    kind: &str,
    table: toml::Table,
    context: &PluginContext,
) -> Result<BuiltEventStore, KeyError> {
    match kind {
        output_dynamodb::NAME => {
            let store = Arc::new(
                parse::<output_dynamodb::DynamoDbEventStoreConfig>(table)?
                    .build(context)
                    .map_err(build_error)?,
            );
            Ok(BuiltEventStore {
                store: store.clone(),
                replay: store,
            })
        }
        other => Err(unknown("event store", other, EVENT_STORES)),
    }
}

/// The replay source of an output whose `type` is `kind`, built from the
/// same table as the output; `None` for outputs that cannot replay.
pub(crate) fn build_replay_source(
    kind: &str,
    table: &toml::Table,
    context: &PluginContext,
) -> Result<Option<Arc<dyn ReplaySource>>, KeyError> {
    match kind {
        output_dynamodb::NAME => Ok(Some(Arc::new(
            parse::<output_dynamodb::DynamoDbOutputConfig>(table.clone())?
                .build_replay(context)
                .map_err(build_error)?,
        ))),
        output_elasticsearch::NAME => Ok(Some(Arc::new(
            parse::<output_elasticsearch::ElasticsearchOutputConfig>(table.clone())?
                .build_replay(context)
                .map_err(build_error)?,
        ))),
        _ => Ok(None),
    }
}

/// Keys of a plugin's table whose default is an environment variable
/// (HFXEventStash's), as a pipeline file would write them; `section` is
/// `inputs` or `filters`. The engine gives a table that leaves such a key
/// out this value before interpolation (see `config/environment.rs`), so
/// the environment is read one way only.
pub(crate) fn environment_defaults(section: &str, kind: &str) -> &'static [(&'static str, &'static str)] {
    match (section, kind) {
        ("inputs", input_grpc::NAME) => &[("bind", "${GRPC_BIND_ADDRESS:0.0.0.0:42043}")],
        ("filters", filter_protobuf::NAME) => &[("protos", "${PROTOS_GLOB:protos/**/*.proto}")],
        _ => &[],
    }
}

/// The `token_sha256` of a producer token, as the gRPC input's tokens file
/// lists it (`eventstash token hash`).
pub fn producer_token_sha256(token: &str) -> String {
    input_grpc::token_sha256(token)
}

fn parse<T: DeserializeOwned>(table: toml::Table) -> Result<T, KeyError> {
    value_from_table(table)
}

/// A plugin's own build error is about its table as a whole.
fn build_error(error: impl std::fmt::Display) -> KeyError {
    KeyError::whole(error.to_string())
}

fn unknown(what: &str, kind: &str, known: &[&str]) -> KeyError {
    let known = if known.is_empty() {
        "none in this version".to_owned()
    } else {
        known.join(", ")
    };
    KeyError::new("type", format!("unknown {what} type {kind:?} (known: {known})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn only_the_hfx_variables_are_environment_defaults() {
        assert_eq!(
            environment_defaults("inputs", input_grpc::NAME),
            [("bind", "${GRPC_BIND_ADDRESS:0.0.0.0:42043}")]
        );
        assert_eq!(
            environment_defaults("filters", filter_protobuf::NAME),
            [("protos", "${PROTOS_GLOB:protos/**/*.proto}")]
        );
        assert!(environment_defaults("inputs", input_sqs::NAME).is_empty());
        assert!(
            environment_defaults("outputs", input_grpc::NAME).is_empty(),
            "by section, not just type"
        );
    }

    #[test]
    fn an_unknown_type_names_the_type_key_and_the_known_ones() {
        let Err(error) = build_output("kafka", toml::Table::new(), &PluginContext::new("main", "kafka#0")) else {
            panic!("an unknown output was built");
        };
        assert_eq!(error.key, "type");
        assert!(error.message.contains("\"kafka\""), "{}", error.message);
        assert!(error.message.contains(output_file::NAME), "{}", error.message);
    }

    #[test]
    fn a_wrong_key_is_named_relative_to_the_plugin_table() {
        let Err(error) = build_output(
            output_file::NAME,
            table("path = \"data/x.jsonl\"\nsynk = true"),
            &PluginContext::new("main", "file#0"),
        ) else {
            panic!("an unknown key was accepted");
        };
        assert_eq!(error.key, "synk");
    }

    #[test]
    fn only_grpc_inputs_take_the_event_store() {
        let wiring = EventStoreWiring {
            store: None,
            replay: Vec::new(),
        };
        let Err(error) = build_input(input_sqs::NAME, toml::Table::new(), Some(wiring)) else {
            panic!("an sqs input took the event store");
        };
        assert_eq!(error.key, "event_store");
    }

    #[test]
    fn a_plugin_that_does_not_build_blames_its_whole_table() {
        let Err(error) = build_filter(
            filter_protobuf::NAME,
            table("protos = \"no/such/dir/**/*.proto\""),
            &PluginContext::new("main", "protobuf#0"),
        ) else {
            panic!("a filter without protos was built");
        };
        assert_eq!(error.key, "");
        assert!(!error.message.is_empty());
    }

    #[test]
    fn outputs_that_cannot_replay_have_no_replay_source() {
        let source = build_replay_source(output_file::NAME, &table("path = \"x\""), &PluginContext::new("m", "f"));
        assert!(source.unwrap().is_none());
    }

    #[test]
    fn the_token_hash_is_the_hex_sha256_of_the_token() {
        assert_eq!(
            producer_token_sha256("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
