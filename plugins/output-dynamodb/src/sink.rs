//! The running DynamoDB output: turns a batch into items, writes them in
//! `BatchWriteItem` requests of 25, several at once, and returns when every
//! event is stored or dead-lettered.
//!
//! The engine already batches by count, bytes and delay and runs
//! `concurrency` writes at once; within one write, `max_batches_in_flight`
//! requests run at once (see [`crate::batch_write`] for one request's
//! retries). Items are deduplicated by key first: DynamoDB refuses a request
//! naming one key twice, and the later event would overwrite the earlier
//! anyway, so the last one wins. A request of 25 items is at most 10 MB
//! (25 × 400 KB), within `BatchWriteItem`'s 16 MB, so count is the only
//! limit to split by.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use eventstash_plugin_api::{
    Backoff, BoxError, ComponentHealth, DeadLetterFile, Event, OutageReport, Output, OutputBatch, OutputMetrics,
    PluginContext,
};
use futures::StreamExt as _;
use tokio::sync::OnceCell;
use tracing::{debug, warn};

use crate::batch_write::{BatchWriter, Prepared};
use crate::client::{ConnectionSettings, connect};
use crate::error::DynamoDbOutputError;
use crate::item::{ItemKey, ItemSchema};
use crate::table::{TableSpec, wait_until_ready};

/// Items per `BatchWriteItem` request: DynamoDB's limit.
const ITEMS_PER_REQUEST: usize = 25;
/// At most one warning per this interval while requests keep failing.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// How writes are spread and retried: the checked write options.
#[derive(Debug, Clone)]
pub(crate) struct WriteSettings {
    /// Requests one write sends at once.
    pub(crate) batches_in_flight: usize,
    /// The backoff every retry loop starts from.
    pub(crate) backoff: Backoff,
}

/// The DynamoDB output, built by
/// [`DynamoDbOutputConfig::build`](crate::DynamoDbOutputConfig::build).
#[derive(Debug)]
pub struct DynamoDbOutput {
    /// Where to connect; used once, on the first write.
    connection: ConnectionSettings,
    /// The client, made and the table checked by the first write; later
    /// writes (and concurrent first writes) wait for the same one.
    client: OnceCell<Client>,
    /// How events become items.
    schema: ItemSchema,
    /// Request spreading and retry.
    settings: WriteSettings,
    /// Where refused events go.
    dead_letters: DeadLetterFile,
    /// Retried and dead-lettered counters.
    metrics: OutputMetrics,
    /// Reported failing while DynamoDB cannot be written.
    health: ComponentHealth,
    /// The plugin's id, for logs.
    plugin: String,
    /// Failing requests, shared by all requests in flight: reported on
    /// `health` and logged a few lines per outage.
    outage: OutageReport,
}

impl DynamoDbOutput {
    pub(crate) fn new(
        connection: ConnectionSettings,
        schema: ItemSchema,
        settings: WriteSettings,
        dead_letters: DeadLetterFile,
        ctx: &PluginContext,
    ) -> DynamoDbOutput {
        DynamoDbOutput {
            connection,
            client: OnceCell::new(),
            schema,
            settings,
            dead_letters,
            metrics: ctx.output_metrics(),
            health: ctx.health.clone(),
            plugin: ctx.plugin.clone(),
            outage: OutageReport::new(ctx.health.clone(), FAILURE_LOG_INTERVAL),
        }
    }

    /// The client, connecting and checking the table on first use.
    async fn client(&self) -> &Client {
        self.client
            .get_or_init(|| async {
                let client = connect(&self.connection, &self.plugin).await;
                let spec = TableSpec {
                    name: &self.connection.table,
                    partition_key: &self.schema.partition.name,
                    sort_key: &self.schema.sort.name,
                    create: self.connection.create_table,
                };
                wait_until_ready(&client, spec, self.settings.backoff.clone(), &self.health, &self.plugin).await;
                client
            })
            .await
    }

    /// Writes the batch; returns the events DynamoDB refused, with reasons.
    async fn store<'a>(&self, batch: &'a OutputBatch) -> Vec<(&'a Event, String)> {
        let client = self.client().await;
        let (items, mut refused) = self.prepare(batch);
        let writer = BatchWriter {
            client,
            table: &self.connection.table,
            schema: &self.schema,
            backoff: &self.settings.backoff,
            metrics: &self.metrics,
            plugin: &self.plugin,
            outage: &self.outage,
        };
        // The futures are made before the stream (rather than by a `map`
        // inside it) so that the stream holds no closure over a lifetime,
        // which would keep this future from being `Send`.
        let writes: Vec<_> = into_chunks(items)
            .into_iter()
            .map(|chunk| writer.write(chunk))
            .collect();
        let mut requests = futures::stream::iter(writes).buffer_unordered(self.settings.batches_in_flight);
        while let Some(chunk_refused) = requests.next().await {
            refused.extend(chunk_refused);
        }
        refused
    }

    /// Makes the items of a batch, keeping the last event of each key, and
    /// sets aside the events that cannot be items.
    fn prepare<'a>(&self, batch: &'a OutputBatch) -> (Vec<Prepared<'a>>, Vec<(&'a Event, String)>) {
        let mut items: Vec<Option<Prepared<'a>>> = Vec::with_capacity(batch.len());
        let mut positions: HashMap<ItemKey, usize> = HashMap::with_capacity(batch.len());
        let mut refused = Vec::new();
        for event in batch.iter() {
            match self.schema.item(event) {
                Ok(item) => {
                    if let Some(earlier) = positions.insert(item.key.clone(), items.len()) {
                        items[earlier] = None;
                    }
                    items.push(Some(Prepared { event, item }));
                }
                Err(error) => refused.push((event, error.to_string())),
            }
        }
        let superseded = items.len() - positions.len();
        if superseded > 0 {
            debug!(output = %self.plugin, superseded, "events overwritten by later events with the same key in one batch");
        }
        (items.into_iter().flatten().collect(), refused)
    }

    /// Writes refused events to the dead-letter file; only then do they
    /// count as finished.
    async fn dead_letter(&self, refused: &[(&Event, String)]) -> Result<(), DynamoDbOutputError> {
        if refused.is_empty() {
            return Ok(());
        }
        self.dead_letters
            .write(refused)
            .await
            .map_err(|error| DynamoDbOutputError::DeadLetter {
                events: refused.len(),
                error,
            })?;
        self.metrics.dead_lettered.increment(refused.len() as u64);
        warn!(
            output = %self.plugin,
            events = refused.len(),
            first_reason = %refused[0].1,
            path = %self.dead_letters.path().display(),
            "dynamodb refused events; they are in the dead-letter file"
        );
        Ok(())
    }
}

/// Splits items into requests of at most [`ITEMS_PER_REQUEST`].
fn into_chunks(items: Vec<Prepared<'_>>) -> Vec<Vec<Prepared<'_>>> {
    let mut chunks = Vec::with_capacity(items.len().div_ceil(ITEMS_PER_REQUEST));
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        chunks.push(items.by_ref().take(ITEMS_PER_REQUEST).collect());
    }
    chunks
}

#[async_trait]
impl Output for DynamoDbOutput {
    async fn write(&self, batch: OutputBatch) -> Result<(), BoxError> {
        if batch.is_empty() {
            return Ok(());
        }
        let refused = self.store(&batch).await;
        self.dead_letter(&refused).await?;
        Ok(())
    }
}
