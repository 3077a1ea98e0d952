//! The running event store: the client (made, and both tables checked, on
//! first use), the retry loop every request goes through, and the
//! [`EventStore`] and [`ReplaySource`] impls.
//!
//! Throttling, outages and `TransactionConflict` (another transaction on
//! the same items at the same instant) are retried with the shared backoff
//! for up to `retry_timeout_ms`; the client then gets UNAVAILABLE. An
//! append retried after a lost response is safe: its marker makes the
//! second attempt find the first one's change set (see [`super::append`]).

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use eventstash_plugin_api::{
    Aggregate, Appended, Backoff, ChangeSetPage, EventStore, EventStoreError, NewChangeSet, PluginContext,
    ReplayCursor, ReplayError, ReplayQuery, ReplayReader, ReplaySource,
};
use tokio::sync::OnceCell;
use tokio::time::Instant;
use tracing::{debug, info};

use crate::client::{ConnectionSettings, connect};
use crate::event_store::tables::{TableRole, ensure_table};
use crate::replay::{IndexSpec, IndexedReplay};
use crate::retry::{FailureKind, classify};

/// The two tables' names.
#[derive(Debug, Clone)]
pub(crate) struct StoreTables {
    pub(crate) aggregates: String,
    pub(crate) change_sets: String,
}

/// How requests are retried: the checked retry options.
#[derive(Debug, Clone)]
pub(crate) struct RetrySettings {
    /// The backoff every retry loop starts from.
    pub(crate) backoff: Backoff,
    /// How long one operation keeps retrying.
    pub(crate) timeout: Duration,
    /// Attempts of an append at any version that lost to another writer.
    pub(crate) any_version_attempts: u32,
}

/// The DynamoDB event store, built by
/// [`DynamoDbEventStoreConfig::build`](crate::DynamoDbEventStoreConfig::build).
#[derive(Debug)]
pub struct DynamoDbEventStore {
    /// Where to connect; used on first use.
    connection: ConnectionSettings,
    /// The aggregates and change sets tables.
    pub(crate) tables: StoreTables,
    /// Retry timing.
    pub(crate) retry: RetrySettings,
    /// The client, once connected and both tables are ready. A failed
    /// setup is tried again by the next request.
    client: OnceCell<Client>,
    /// The store's id, for logs.
    pub(crate) plugin: String,
}

/// What one attempt of a request came to, when it did not fail for good.
pub(crate) enum Attempt<T> {
    /// It worked.
    Done(T),
    /// It may work if sent again; why it did not now.
    Retry(String),
}

impl DynamoDbEventStore {
    pub(crate) fn new(
        connection: ConnectionSettings,
        tables: StoreTables,
        retry: RetrySettings,
        ctx: &PluginContext,
    ) -> DynamoDbEventStore {
        DynamoDbEventStore {
            connection,
            tables,
            retry,
            client: OnceCell::new(),
            plugin: ctx.plugin.clone(),
        }
    }

    /// The client, connecting and checking (or creating) both tables first.
    pub(crate) async fn client(&self) -> Result<&Client, EventStoreError> {
        self.client
            .get_or_try_init(|| async {
                let client = connect(&self.connection, &self.plugin).await;
                let create = self.connection.create_table;
                ensure_table(&client, &self.tables.aggregates, TableRole::Aggregates, create)
                    .await
                    .map_err(EventStoreError::Unavailable)?;
                ensure_table(&client, &self.tables.change_sets, TableRole::ChangeSets, create)
                    .await
                    .map_err(EventStoreError::Unavailable)?;
                info!(
                    store = %self.plugin, aggregates = %self.tables.aggregates,
                    change_sets = %self.tables.change_sets, "dynamodb event store is ready"
                );
                Ok(client)
            })
            .await
    }

    /// Runs `attempt` until it is done or fails for good (see
    /// [`RetrySettings::run`]).
    pub(crate) async fn retrying<T, F, Fut>(&self, what: &str, attempt: F) -> Result<T, EventStoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Attempt<T>, EventStoreError>>,
    {
        self.retry.run(&self.plugin, what, attempt).await
    }
}

impl RetrySettings {
    /// Runs `attempt` until it is done or fails for good, retrying for up
    /// to `timeout`.
    pub(crate) async fn run<T, F, Fut>(&self, plugin: &str, what: &str, mut attempt: F) -> Result<T, EventStoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Attempt<T>, EventStoreError>>,
    {
        let deadline = Instant::now() + self.timeout;
        let mut backoff = self.backoff.clone();
        loop {
            let reason = match attempt().await? {
                Attempt::Done(value) => return Ok(value),
                Attempt::Retry(reason) => reason,
            };
            let delay = backoff.next_delay();
            if Instant::now() + delay > deadline {
                return Err(EventStoreError::Unavailable(format!(
                    "{what} kept failing for {:?}: {reason}",
                    self.timeout
                )));
            }
            debug!(plugin, what, %reason, ?delay, "dynamodb request failed; retrying");
            tokio::time::sleep(delay).await;
        }
    }
}

/// Sorts a failed request into "send again" and "give up".
pub(crate) fn attempt_failed<T, E>(error: &SdkError<E>) -> Result<Attempt<T>, EventStoreError>
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    let failure = classify(error);
    match failure.kind {
        FailureKind::Throttled | FailureKind::Transient => Ok(Attempt::Retry(failure.reason)),
        FailureKind::Refused => Err(EventStoreError::Invalid(format!(
            "DynamoDB refused the request: {}",
            failure.reason
        ))),
        FailureKind::NeedsOperator => Err(EventStoreError::Unavailable(failure.reason)),
    }
}

#[async_trait]
impl EventStore for DynamoDbEventStore {
    async fn ready(&self) -> Result<(), EventStoreError> {
        self.client().await.map(|_| ())
    }

    async fn append(&self, change_set: NewChangeSet) -> Result<Appended, EventStoreError> {
        self.append_change_set(change_set).await
    }

    async fn aggregate(&self, aggregate_id: &str) -> Result<Option<Aggregate>, EventStoreError> {
        self.read_aggregate(aggregate_id).await
    }

    async fn read_page(
        &self,
        aggregate_id: &str,
        from_version: u64,
        limit: usize,
    ) -> Result<ChangeSetPage, EventStoreError> {
        self.read_change_sets(aggregate_id, from_version, limit).await
    }
}

/// Replays change sets by aggregate type, through `AggregateType-Index`.
#[async_trait]
impl ReplaySource for DynamoDbEventStore {
    async fn open(
        &self,
        query: ReplayQuery,
        cursor: Option<ReplayCursor>,
    ) -> Result<Box<dyn ReplayReader>, ReplayError> {
        let client = self
            .client()
            .await
            .map_err(|error| ReplayError::Unavailable(error.to_string()))?
            .clone();
        let spec = IndexSpec::change_sets(&self.tables.change_sets);
        let reader = IndexedReplay::open(client, spec, query, cursor, self.retry.clone())?;
        Ok(Box::new(reader))
    }
}
