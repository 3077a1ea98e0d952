//! Replay from the output's event table: by kind through `Type-Index`, by
//! source through `Source-Index`, in the order of the table's sort key
//! (`Timestamp`, the events' `@timestamp`, unless configured otherwise).
//!
//! The source is built from the same `[[outputs]] type = "dynamodb"` table
//! as the output, so it reads exactly the table the output writes. The item
//! keeps no `format`: data that was decoded comes back as JSON, bytes that
//! were not as protobuf.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use bytes::Bytes;
use chrono::DateTime;
use eventstash_plugin_api::{
    Backoff, Event, Format, PluginContext, ReplayCursor, ReplayError, ReplayQuery, ReplayReader, ReplaySource,
    StoredPayload, parse_timestamp,
};
use serde_json::value::RawValue;
use tokio::sync::OnceCell;

use crate::attribute_json::to_json_text;
use crate::client::{ConnectionSettings, connect};
use crate::config::DynamoDbOutputConfig;
use crate::error::DynamoDbOutputError;
use crate::event_store::item::Item;
use crate::event_store::store::RetrySettings;
use crate::item::{SOURCE, TYPE};
use crate::replay::{IndexSpec, IndexedReplay, ItemShape};
use crate::table::{SOURCE_INDEX, TYPE_INDEX};

/// How long a replay request keeps retrying before the client is told
/// (longer if two attempts of `request_timeout_ms` need more).
const REPLAY_RETRY_TIMEOUT: Duration = Duration::from_secs(20);

/// Replays the event table a DynamoDB output writes.
#[derive(Debug)]
pub struct DynamoDbEventTableReplay {
    /// Where to connect (the output's settings).
    connection: ConnectionSettings,
    /// The table and its indexes.
    spec: IndexSpec,
    /// Retry timing.
    retry: RetrySettings,
    /// The client, made on the first replay.
    client: OnceCell<Client>,
    /// The output's id, for logs.
    plugin: String,
}

impl DynamoDbOutputConfig {
    /// Builds the replay source of the table this output writes; connects
    /// to nothing.
    pub fn build_replay(&self, ctx: &PluginContext) -> Result<DynamoDbEventTableReplay, DynamoDbOutputError> {
        crate::config::check_table_name(&self.table)?;
        let connection = self.connection_settings()?;
        let spec = IndexSpec {
            table: self.table.clone(),
            table_key: vec![self.partition_key.name.clone(), self.sort_key.name.clone()],
            sort_key: self.sort_key.name.clone(),
            by_kind: Some((TYPE_INDEX, TYPE)),
            by_source: Some((SOURCE_INDEX, SOURCE)),
            by_aggregate_type: None,
            items: ItemShape::Event,
        };
        let retry = RetrySettings {
            backoff: Backoff::new(
                Duration::from_millis(self.retry_initial_backoff_ms.max(1)),
                Duration::from_millis(self.retry_max_backoff_ms.max(1)),
            ),
            // At least two attempts, however long one may take.
            timeout: REPLAY_RETRY_TIMEOUT.max(connection.request_timeout * 2),
            any_version_attempts: 1,
        };
        Ok(DynamoDbEventTableReplay {
            connection,
            spec,
            retry,
            client: OnceCell::new(),
            plugin: ctx.plugin.clone(),
        })
    }
}

#[async_trait]
impl ReplaySource for DynamoDbEventTableReplay {
    async fn open(
        &self,
        query: ReplayQuery,
        cursor: Option<ReplayCursor>,
    ) -> Result<Box<dyn ReplayReader>, ReplayError> {
        let client = self
            .client
            .get_or_init(|| connect(&self.connection, &self.plugin))
            .await
            .clone();
        let reader = IndexedReplay::open(client, self.spec.clone(), query, cursor, self.retry.clone())?;
        Ok(Box::new(reader))
    }
}

/// An event-table item read back into its event.
pub(crate) fn event_from_item(item: &Item, sort_key: &str) -> Result<Event, String> {
    let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
    let flag = |name: &str| matches!(item.get(name), Some(AttributeValue::Bool(true)));
    let timestamp = text(sort_key).unwrap_or_default();
    // A sort key that is not a time (a custom template) still orders the
    // replay; the event then carries the epoch as its time.
    let received_at = parse_timestamp(&timestamp).unwrap_or(DateTime::UNIX_EPOCH);
    let data = match item.get("Data") {
        Some(value) => Some(RawValue::from_string(to_json_text(value)).map_err(|error| error.to_string())?),
        None => None,
    };
    let raw = item
        .get("Raw")
        .and_then(|v| v.as_b().ok())
        .map(|blob| Bytes::copy_from_slice(blob.as_ref()));
    let invalid_json = flag("InvalidJson");
    let format = if raw.is_some() && !invalid_json {
        Format::Protobuf
    } else {
        Format::Json
    };
    let payload = StoredPayload {
        data,
        plain: text("Plain"),
        raw,
        invalid_json,
        invalid_proto: flag("InvalidProto"),
    }
    .into_payload();
    let mut event = Event::with_payload(
        format,
        payload,
        text(TYPE).unwrap_or_default(),
        text("Id").unwrap_or_default(),
        received_at,
    );
    event.source = text(SOURCE);
    Ok(event)
}
