//! Reading the event store back: an aggregate's metadata, one change set,
//! and an aggregate's change sets page by page. Every read is strongly
//! consistent, so a writer that just appended reads its own change set.

use eventstash_plugin_api::{Aggregate, ChangeSet, ChangeSetPage, EventStoreError, MAX_VERSION};

use crate::event_store::append::marker_key;
use crate::event_store::item::{
    AGGREGATE_ID, AGGREGATE_TYPE, CREATED_AT, Item, UPDATED_AT, VERSION, change_set_from_item, check_id, number,
    number_of, string, text_of,
};
use crate::event_store::store::{Attempt, DynamoDbEventStore, attempt_failed};

/// The most change sets one page holds.
const MAX_PAGE: usize = 1000;

impl DynamoDbEventStore {
    /// The aggregate's metadata.
    pub(crate) async fn read_aggregate(&self, aggregate_id: &str) -> Result<Option<Aggregate>, EventStoreError> {
        check_id("aggregate_id", aggregate_id)?;
        let Some(item) = self.aggregate_item(aggregate_id).await? else {
            return Ok(None);
        };
        let text = |name: &str| text_of(&item, name).unwrap_or_default().to_owned();
        Ok(Some(Aggregate {
            id: aggregate_id.to_owned(),
            aggregate_type: text(AGGREGATE_TYPE),
            version: number_of(&item, VERSION).unwrap_or(0),
            created_at: text(CREATED_AT),
            updated_at: text(UPDATED_AT),
        }))
    }

    /// The aggregate's item, read consistently.
    pub(crate) async fn aggregate_item(&self, aggregate_id: &str) -> Result<Option<Item>, EventStoreError> {
        let table = self.tables.aggregates.clone();
        self.get_item("read an aggregate", table, vec![(AGGREGATE_ID, string(aggregate_id))])
            .await
    }

    /// The marker of a change set id, read consistently.
    pub(crate) async fn marker_item(&self, change_set_id: &str) -> Result<Option<Item>, EventStoreError> {
        let key = vec![(AGGREGATE_ID, string(&marker_key(change_set_id))), (VERSION, number(0))];
        self.get_item("read a change set marker", self.tables.change_sets.clone(), key)
            .await
    }

    /// One stored change set.
    pub(crate) async fn change_set(&self, aggregate_id: &str, version: u64) -> Result<ChangeSet, EventStoreError> {
        let key = vec![(AGGREGATE_ID, string(aggregate_id)), (VERSION, number(version))];
        let item = self
            .get_item("read a change set", self.tables.change_sets.clone(), key)
            .await?
            .ok_or_else(|| {
                EventStoreError::Inconsistent(format!(
                    "change set {version} of aggregate `{aggregate_id}` is marked as stored but is missing"
                ))
            })?;
        change_set_from_item(&item)
    }

    async fn get_item(
        &self,
        what: &str,
        table: String,
        key: Vec<(&str, aws_sdk_dynamodb::types::AttributeValue)>,
    ) -> Result<Option<Item>, EventStoreError> {
        let client = self.client().await?;
        let key: Item = key.into_iter().map(|(name, value)| (name.to_owned(), value)).collect();
        self.retrying(what, || {
            let request = client
                .get_item()
                .table_name(&table)
                .set_key(Some(key.clone()))
                .consistent_read(true);
            async move {
                match request.send().await {
                    Ok(output) => Ok(Attempt::Done(output.item)),
                    Err(error) => attempt_failed(&error),
                }
            }
        })
        .await
    }

    /// Up to `limit` change sets from `from_version` on, in version order.
    pub(crate) async fn read_change_sets(
        &self,
        aggregate_id: &str,
        from_version: u64,
        limit: usize,
    ) -> Result<ChangeSetPage, EventStoreError> {
        check_id("aggregate_id", aggregate_id)?;
        // Version 0 holds change set markers, never a change set.
        let from_version = from_version.max(1);
        if from_version > MAX_VERSION {
            return Ok(ChangeSetPage::default());
        }
        let client = self.client().await?;
        let limit = i32::try_from(limit.clamp(1, MAX_PAGE)).unwrap_or(1);
        let output = self
            .retrying("read change sets", || {
                let request = client
                    .query()
                    .table_name(&self.tables.change_sets)
                    .key_condition_expression("#id = :id AND #version >= :from")
                    .expression_attribute_names("#id", AGGREGATE_ID)
                    .expression_attribute_names("#version", VERSION)
                    .expression_attribute_values(":id", string(aggregate_id))
                    .expression_attribute_values(":from", number(from_version))
                    .consistent_read(true)
                    .limit(limit);
                async move {
                    match request.send().await {
                        Ok(output) => Ok(Attempt::Done(output)),
                        Err(error) => attempt_failed(&error),
                    }
                }
            })
            .await?;
        let change_sets = output
            .items()
            .iter()
            .map(change_set_from_item)
            .collect::<Result<Vec<_>, _>>()?;
        let next_version = match (&output.last_evaluated_key, change_sets.last()) {
            (Some(_), Some(last)) => Some(last.version + 1),
            _ => None,
        };
        Ok(ChangeSetPage {
            change_sets,
            next_version,
        })
    }
}
