//! Replay from DynamoDB: events in time order through a global secondary
//! index, one `Query` page at a time, resumable by cursor.
//!
//! Two tables are replayed the same way: the event table of the output
//! (`Type-Index` by kind, `Source-Index` by source, one event per item) and
//! the event store's change sets (`AggregateType-Index` by aggregate type,
//! several events per item). A page is one `Query` with `Limit` (and
//! DynamoDB's own 1 MB cap), so memory stays bounded whatever the table
//! holds. Each event's cursor is the key of its item (see [`cursor`]); the
//! next query starts after it with `ExclusiveStartKey`. Index order within
//! equal sort keys is DynamoDB's, stable between queries.
//!
//! A time range becomes a key condition on the index's sort key, compared
//! as text: `from` and `until` are written in the sort key's own format
//! (`@timestamp`'s milliseconds for the event table, microseconds for
//! change sets). With both bounds the condition is `BETWEEN` and the replay
//! stops at the first item at or past `until`, so `until` is exclusive.

mod cursor;
mod event_table;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use eventstash_plugin_api::{
    ChangeSetRef, EventStoreError, ReplayCursor, ReplayError, ReplayQuery, ReplayReader, ReplaySelector, ReplayedEvent,
};
use tracing::debug;

pub use event_table::DynamoDbEventTableReplay;

use crate::event_store::AGGREGATE_TYPE_INDEX;
use crate::event_store::item::{AGGREGATE_ID, AGGREGATE_TYPE, Item, TIMESTAMP, VERSION, change_set_from_item};
use crate::event_store::store::{Attempt, RetrySettings, attempt_failed};
use cursor::Position;

/// What a replayed table looks like.
#[derive(Debug, Clone)]
pub(crate) struct IndexSpec {
    /// The table.
    pub(crate) table: String,
    /// The table's key attributes.
    pub(crate) table_key: Vec<String>,
    /// The indexes' sort key (every index of a table shares it).
    pub(crate) sort_key: String,
    /// `(index, partition attribute)` per selector this table has.
    pub(crate) by_kind: Option<(&'static str, &'static str)>,
    pub(crate) by_source: Option<(&'static str, &'static str)>,
    pub(crate) by_aggregate_type: Option<(&'static str, &'static str)>,
    /// How items become events.
    pub(crate) items: ItemShape,
}

/// What an item holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ItemShape {
    /// One event, as the DynamoDB output writes it.
    Event,
    /// A change set of the event store.
    ChangeSet,
}

impl IndexSpec {
    /// The event store's change sets table.
    pub(crate) fn change_sets(table: &str) -> IndexSpec {
        IndexSpec {
            table: table.to_owned(),
            table_key: vec![AGGREGATE_ID.to_owned(), VERSION.to_owned()],
            sort_key: TIMESTAMP.to_owned(),
            by_kind: None,
            by_source: None,
            by_aggregate_type: Some((AGGREGATE_TYPE_INDEX, AGGREGATE_TYPE)),
            items: ItemShape::ChangeSet,
        }
    }

    /// The time format of the sort key, for the range bounds.
    fn bound(&self, time: DateTime<Utc>) -> String {
        match self.items {
            ItemShape::Event => time.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            ItemShape::ChangeSet => crate::event_store::item::timestamp_text(time),
        }
    }
}

/// An open replay over one index.
pub(crate) struct IndexedReplay {
    client: Client,
    spec: IndexSpec,
    index: &'static str,
    /// The index's partition attribute and the value asked for.
    partition: (&'static str, String),
    from: Option<String>,
    until: Option<String>,
    page_size: i32,
    /// Key names a cursor holds: index partition, sort key, table key.
    key_names: Vec<String>,
    /// Where the next query starts; `None` at the start.
    start: Option<Item>,
    /// A change set to finish first: its key and the events already sent.
    resume_inside: Option<(Item, usize)>,
    /// Set once the last page was read.
    done: bool,
    retry: RetrySettings,
}

impl IndexedReplay {
    /// Checks the query and the cursor; sends nothing yet.
    pub(crate) fn open(
        client: Client,
        spec: IndexSpec,
        query: ReplayQuery,
        cursor: Option<ReplayCursor>,
        retry: RetrySettings,
    ) -> Result<IndexedReplay, ReplayError> {
        let (by, value) = match &query.selector {
            ReplaySelector::Kind(kind) => (spec.by_kind, kind),
            ReplaySelector::Source(source) => (spec.by_source, source),
            ReplaySelector::AggregateType(kind) => (spec.by_aggregate_type, kind),
        };
        let Some((index, attribute)) = by else {
            return Err(ReplayError::Unsupported(format!(
                "table `{}` cannot be replayed by {}",
                spec.table,
                query.selector.describe()
            )));
        };
        if value.is_empty() {
            return Err(ReplayError::Unsupported(format!(
                "the {} to replay must not be empty",
                query.selector.describe()
            )));
        }
        let mut key_names = vec![attribute.to_owned(), spec.sort_key.clone()];
        for name in &spec.table_key {
            if !key_names.contains(name) {
                key_names.push(name.clone());
            }
        }
        let names: Vec<&str> = key_names.iter().map(String::as_str).collect();
        let (start, resume_inside) = match cursor {
            Some(cursor) => {
                let position = Position::from_cursor(&cursor, &names, (attribute, value))?;
                let key = position.key();
                match position.events_sent() {
                    0 => (Some(key), None),
                    sent => (Some(key.clone()), Some((key, sent))),
                }
            }
            None => (None, None),
        };
        Ok(IndexedReplay {
            client,
            index,
            partition: (attribute, value.clone()),
            from: query.from.map(|time| spec.bound(time)),
            until: query.until.map(|time| spec.bound(time)),
            page_size: i32::try_from(query.page_size.max(1)).unwrap_or(i32::MAX),
            key_names,
            spec,
            start,
            resume_inside,
            done: false,
            retry,
        })
    }

    /// One `Query` page, retried; its items and where the next page starts.
    async fn query(&self) -> Result<(Vec<Item>, Option<Item>), ReplayError> {
        let (condition, bounds) = match (&self.from, &self.until) {
            (Some(from), Some(until)) => ("#p = :p AND #s BETWEEN :from AND :until", vec![from, until]),
            (Some(from), None) => ("#p = :p AND #s >= :from", vec![from]),
            (None, Some(until)) => ("#p = :p AND #s < :until", vec![until]),
            (None, None) => ("#p = :p", vec![]),
        };
        let mut values = vec![(":p", self.partition.1.clone())];
        match bounds[..] {
            [from, until] => values.extend([(":from", from.clone()), (":until", until.clone())]),
            [only] if self.from.is_some() => values.push((":from", only.clone())),
            [only] => values.push((":until", only.clone())),
            _ => {}
        }
        let mut request = self
            .client
            .query()
            .table_name(&self.spec.table)
            .index_name(self.index)
            .key_condition_expression(condition)
            .expression_attribute_names("#p", self.partition.0)
            .set_exclusive_start_key(self.start.clone())
            .limit(self.page_size);
        if condition.contains("#s") {
            request = request.expression_attribute_names("#s", &self.spec.sort_key);
        }
        for (name, value) in values {
            request = request.expression_attribute_values(name, AttributeValue::S(value));
        }
        let output = self
            .retry
            .run(&self.spec.table, "replay query", || {
                let request = request.clone();
                async move {
                    match request.send().await {
                        Ok(output) => Ok(Attempt::Done(output)),
                        Err(error) => attempt_failed(&error),
                    }
                }
            })
            .await
            .map_err(unavailable)?;
        Ok((output.items.unwrap_or_default(), output.last_evaluated_key))
    }

    /// The rest of a change set a cursor stopped inside.
    async fn finish_change_set(&self, key: Item, sent: usize) -> Result<Vec<ReplayedEvent>, ReplayError> {
        let table_key: Item = key
            .iter()
            .filter(|(name, _)| self.spec.table_key.contains(name))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        let request = self
            .client
            .get_item()
            .table_name(&self.spec.table)
            .set_key(Some(table_key))
            .consistent_read(true);
        let output = self
            .retry
            .run(&self.spec.table, "replay read", || {
                let request = request.clone();
                async move {
                    match request.send().await {
                        Ok(output) => Ok(Attempt::Done(output)),
                        Err(error) => attempt_failed(&error),
                    }
                }
            })
            .await
            .map_err(unavailable)?;
        let Some(item) = output.item else {
            return Ok(Vec::new());
        };
        Ok(self.events_of(&item)?.into_iter().skip(sent).collect())
    }

    /// The events of one item, each with its cursor.
    fn events_of(&self, item: &Item) -> Result<Vec<ReplayedEvent>, ReplayError> {
        let names: Vec<&str> = self.key_names.iter().map(String::as_str).collect();
        match self.spec.items {
            ItemShape::Event => {
                let event =
                    event_table::event_from_item(item, &self.spec.sort_key).map_err(ReplayError::Unavailable)?;
                Ok(vec![ReplayedEvent {
                    event,
                    cursor: Position::after(item, &names, 1, 1).to_cursor(),
                    change_set: None,
                }])
            }
            ItemShape::ChangeSet => {
                let change_set =
                    change_set_from_item(item).map_err(|error| ReplayError::Unavailable(error.to_string()))?;
                let total = change_set.events.len();
                let reference = ChangeSetRef {
                    aggregate_id: change_set.aggregate_id,
                    aggregate_type: change_set.aggregate_type,
                    version: change_set.version,
                    change_set_id: change_set.change_set_id,
                };
                Ok(change_set
                    .events
                    .into_iter()
                    .enumerate()
                    .map(|(n, event)| ReplayedEvent {
                        event,
                        cursor: Position::after(item, &names, n + 1, total).to_cursor(),
                        change_set: Some(reference.clone()),
                    })
                    .collect())
            }
        }
    }
}

#[async_trait::async_trait]
impl ReplayReader for IndexedReplay {
    async fn next_page(&mut self) -> Result<Vec<ReplayedEvent>, ReplayError> {
        if let Some((key, sent)) = self.resume_inside.take() {
            let rest = self.finish_change_set(key, sent).await?;
            if !rest.is_empty() {
                return Ok(rest);
            }
        }
        // A page whose items all fall outside the range (or a page DynamoDB
        // returned empty) is not the end: ask again until the index says so.
        while !self.done {
            let (items, next) = self.query().await?;
            self.start = next;
            self.done = self.start.is_none();
            let mut events = Vec::new();
            for item in &items {
                let sort_value = item.get(&self.spec.sort_key).and_then(|v| v.as_s().ok());
                if let (Some(until), Some(value)) = (&self.until, sort_value)
                    && value >= until
                {
                    self.done = true;
                    break;
                }
                events.extend(self.events_of(item)?);
            }
            debug!(table = %self.spec.table, items = items.len(), events = events.len(), "replay page");
            if !events.is_empty() {
                return Ok(events);
            }
        }
        Ok(Vec::new())
    }
}

fn unavailable(error: EventStoreError) -> ReplayError {
    ReplayError::Unavailable(error.to_string())
}
