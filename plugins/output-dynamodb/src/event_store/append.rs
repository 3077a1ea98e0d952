//! Appending a change set: one `TransactWriteItems` of three conditional
//! writes, in this order:
//!
//! 1. the aggregate's move to version N+1, on condition that it is at the
//!    expected N with the requested type (or, for a new aggregate, that it
//!    does not exist);
//! 2. the put of the change set as version N+1, on condition that the
//!    version is not taken;
//! 3. the put of the change set id's marker (its aggregate and version), on
//!    condition that the id was never stored.
//!
//! All three happen or none. When DynamoDB cancels the transaction it says
//! which condition failed, with the item as it was (`ALL_OLD`), and that
//! decides the answer without another read: a failed marker means this
//! change set id is already stored, so the append is a re-send and gets the
//! version it was stored as (recognised for as long as the marker exists,
//! not only within DynamoDB's 10-minute `ClientRequestToken` window, which
//! is not used); a failed aggregate condition is a version conflict, whose
//! current version the old item holds. An append at any version (−1) reads
//! the version first and tries again when another writer wins in between.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use eventstash_plugin_api::{Appended, EventStoreError, ExpectedVersion, NewChangeSet};

use crate::event_store::item::{
    AGGREGATE_ID, AGGREGATE_TYPE, CHANGE_SET_ID, CREATED_AT, EVENTS, FOR_AGGREGATE_ID, FOR_VERSION, Item,
    MARKER_PREFIX, TIMESTAMP, UPDATED_AT, VERSION, append_time, check_id, events_attribute, number, number_of, string,
    text_of, timestamp_text,
};
use crate::event_store::store::{Attempt, DynamoDbEventStore, attempt_failed};

/// The change set being appended, as attributes.
struct Request<'a> {
    aggregate_id: &'a str,
    aggregate_type: &'a str,
    change_set_id: &'a str,
    timestamp: String,
    events: AttributeValue,
}

/// How a transaction ended, when it was not an error.
enum Outcome {
    /// Stored as this version.
    Stored(u64),
    /// The change set id's marker exists: the item as it is, if DynamoDB
    /// returned it.
    MarkerExists(Option<Item>),
    /// The aggregate is elsewhere: its item as it is, if any.
    Conflict(Option<Item>),
}

/// Cancellation reason codes worth sending the transaction again for.
const RETRY_CODES: &[&str] = &[
    "TransactionConflict",
    "ThrottlingError",
    "ProvisionedThroughputExceeded",
    "RequestLimitExceeded",
];
const CONDITION_FAILED: &str = "ConditionalCheckFailed";

impl DynamoDbEventStore {
    /// See the module documentation.
    pub(crate) async fn append_change_set(&self, change_set: NewChangeSet) -> Result<Appended, EventStoreError> {
        check_id("aggregate_id", &change_set.aggregate_id)?;
        check_id("aggregate_type", &change_set.aggregate_type)?;
        check_id("change_set_id", &change_set.change_set_id)?;
        if change_set.events.is_empty() {
            return Err(EventStoreError::Invalid(
                "a change set needs at least one event".to_owned(),
            ));
        }
        let client = self.client().await?;
        let stored_at = append_time();
        let mut events = change_set.events;
        for event in &mut events {
            event.received_at = stored_at;
        }
        let request = Request {
            aggregate_id: &change_set.aggregate_id,
            aggregate_type: &change_set.aggregate_type,
            change_set_id: &change_set.change_set_id,
            timestamp: timestamp_text(stored_at),
            events: events_attribute(&events)?,
        };
        let mut attempts_left = self.retry.any_version_attempts;
        loop {
            let expected = match change_set.expected {
                ExpectedVersion::Any => self.expected_now(&request).await?,
                expected => expected,
            };
            let current = match self.transact(client, &request, expected).await? {
                Outcome::Stored(version) => {
                    return Ok(Appended {
                        version,
                        already_stored: false,
                        events,
                    });
                }
                Outcome::MarkerExists(marker) => return self.already_stored(&request, marker).await,
                Outcome::Conflict(Some(aggregate)) => aggregate,
                Outcome::Conflict(None) => self.aggregate_item(request.aggregate_id).await?.unwrap_or_default(),
            };
            let version = number_of(&current, VERSION).unwrap_or(0);
            let stored_type = text_of(&current, AGGREGATE_TYPE).unwrap_or(request.aggregate_type);
            if expected == ExpectedVersion::Exactly(version) && stored_type != request.aggregate_type {
                return Err(wrong_type(&request, stored_type));
            }
            attempts_left = attempts_left.saturating_sub(1);
            if change_set.expected == ExpectedVersion::Any && attempts_left > 0 {
                continue;
            }
            return Err(EventStoreError::Conflict {
                aggregate_id: change_set.aggregate_id,
                expected: change_set.expected,
                current: version,
            });
        }
    }

    /// The expectation an append at any version uses: where the aggregate is now.
    async fn expected_now(&self, request: &Request<'_>) -> Result<ExpectedVersion, EventStoreError> {
        let Some(aggregate) = self.aggregate_item(request.aggregate_id).await? else {
            return Ok(ExpectedVersion::NoAggregate);
        };
        let stored_type = text_of(&aggregate, AGGREGATE_TYPE).unwrap_or_default();
        if stored_type != request.aggregate_type {
            return Err(wrong_type(request, stored_type));
        }
        Ok(ExpectedVersion::Exactly(number_of(&aggregate, VERSION).unwrap_or(0)))
    }

    /// The answer to a re-send: the version the marker names, and the
    /// change set's events as stored the first time.
    async fn already_stored(&self, request: &Request<'_>, marker: Option<Item>) -> Result<Appended, EventStoreError> {
        let marker = match marker {
            Some(marker) => marker,
            None => self.marker_item(request.change_set_id).await?.unwrap_or_default(),
        };
        let owner = text_of(&marker, FOR_AGGREGATE_ID).unwrap_or_default();
        if owner != request.aggregate_id {
            return Err(EventStoreError::ChangeSetIdTaken {
                change_set_id: request.change_set_id.to_owned(),
                aggregate_id: owner.to_owned(),
            });
        }
        let version = number_of(&marker, FOR_VERSION).ok_or_else(|| {
            EventStoreError::Inconsistent(format!(
                "the marker of change set id `{}` holds no version",
                request.change_set_id
            ))
        })?;
        let stored = self.change_set(request.aggregate_id, version).await?;
        Ok(Appended {
            version,
            already_stored: true,
            events: stored.events,
        })
    }

    /// Sends the transaction until it is decided.
    async fn transact(
        &self,
        client: &Client,
        request: &Request<'_>,
        expected: ExpectedVersion,
    ) -> Result<Outcome, EventStoreError> {
        let version = match expected {
            ExpectedVersion::NoAggregate => 1,
            ExpectedVersion::Exactly(version) => version + 1,
            ExpectedVersion::Any => unreachable!("an append at any version reads the version first"),
        };
        let items = self
            .transaction(request, expected, version)
            .map_err(|error| EventStoreError::Inconsistent(format!("cannot build the append transaction: {error}")))?;
        self.retrying("append", || {
            let items = items.clone();
            async move {
                let sent = client
                    .transact_write_items()
                    .set_transact_items(Some(items))
                    .send()
                    .await;
                match sent {
                    Ok(_) => Ok(Attempt::Done(Outcome::Stored(version))),
                    Err(SdkError::ServiceError(context)) => match context.err() {
                        TransactWriteItemsError::TransactionCanceledException(cancelled) => {
                            decide(cancelled.cancellation_reasons(), request)
                        }
                        _ => attempt_failed(&SdkError::ServiceError(context)),
                    },
                    Err(error) => attempt_failed(&error),
                }
            }
        })
        .await
    }

    /// The three writes; see the module documentation.
    fn transaction(
        &self,
        request: &Request<'_>,
        expected: ExpectedVersion,
        version: u64,
    ) -> Result<Vec<TransactWriteItem>, aws_sdk_dynamodb::error::BuildError> {
        let mut names = HashMap::from([
            ("#version".to_owned(), VERSION.to_owned()),
            ("#type".to_owned(), AGGREGATE_TYPE.to_owned()),
            ("#updated".to_owned(), UPDATED_AT.to_owned()),
        ]);
        let mut values = HashMap::from([
            (":version".to_owned(), number(version)),
            (":type".to_owned(), string(request.aggregate_type)),
            (":now".to_owned(), string(&request.timestamp)),
        ]);
        let (update, condition) = match expected {
            ExpectedVersion::Exactly(current) => {
                values.insert(":expected".to_owned(), number(current));
                (
                    "SET #version = :version, #updated = :now",
                    "#version = :expected AND #type = :type",
                )
            }
            _ => {
                // DynamoDB refuses names an expression does not use.
                names.insert("#id".to_owned(), AGGREGATE_ID.to_owned());
                names.insert("#created".to_owned(), CREATED_AT.to_owned());
                (
                    "SET #version = :version, #type = :type, #created = :now, #updated = :now",
                    "attribute_not_exists(#id)",
                )
            }
        };
        let aggregate = Update::builder()
            .table_name(&self.tables.aggregates)
            .key(AGGREGATE_ID, string(request.aggregate_id))
            .update_expression(update)
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()?;
        let change_set = HashMap::from([
            (AGGREGATE_ID.to_owned(), string(request.aggregate_id)),
            (VERSION.to_owned(), number(version)),
            (AGGREGATE_TYPE.to_owned(), string(request.aggregate_type)),
            (CHANGE_SET_ID.to_owned(), string(request.change_set_id)),
            (TIMESTAMP.to_owned(), string(&request.timestamp)),
            (EVENTS.to_owned(), request.events.clone()),
        ]);
        let marker = HashMap::from([
            (AGGREGATE_ID.to_owned(), string(&marker_key(request.change_set_id))),
            (VERSION.to_owned(), number(0)),
            (CHANGE_SET_ID.to_owned(), string(request.change_set_id)),
            (FOR_AGGREGATE_ID.to_owned(), string(request.aggregate_id)),
            (FOR_VERSION.to_owned(), number(version)),
            (TIMESTAMP.to_owned(), string(&request.timestamp)),
        ]);
        let put = |item: Item| {
            Put::builder()
                .table_name(&self.tables.change_sets)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(#id)")
                .expression_attribute_names("#id", AGGREGATE_ID)
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                .build()
        };
        Ok(vec![
            TransactWriteItem::builder().update(aggregate).build(),
            TransactWriteItem::builder().put(put(change_set)?).build(),
            TransactWriteItem::builder().put(put(marker)?).build(),
        ])
    }
}

/// The marker item's partition key for a change set id.
pub(crate) fn marker_key(change_set_id: &str) -> String {
    format!("{MARKER_PREFIX}{change_set_id}")
}

/// Decides a cancelled transaction from its reasons, one per write.
fn decide(reasons: &[CancellationReason], request: &Request<'_>) -> Result<Attempt<Outcome>, EventStoreError> {
    let code = |index: usize| reasons.get(index).and_then(CancellationReason::code).unwrap_or("None");
    let item = |index: usize| reasons.get(index).and_then(|reason| reason.item().cloned());
    if code(2) == CONDITION_FAILED {
        return Ok(Attempt::Done(Outcome::MarkerExists(item(2))));
    }
    if code(0) == CONDITION_FAILED {
        return Ok(Attempt::Done(Outcome::Conflict(item(0))));
    }
    if code(1) == CONDITION_FAILED {
        return Err(EventStoreError::Inconsistent(format!(
            "aggregate `{}`: its next change set is already stored but the aggregate's version is behind; \
             the aggregates and change sets tables disagree and need an operator",
            request.aggregate_id
        )));
    }
    let summary = reasons
        .iter()
        .filter_map(|reason| match (reason.code(), reason.message()) {
            (Some("None") | None, _) => None,
            (Some(code), Some(message)) => Some(format!("{code}: {message}")),
            (Some(code), None) => Some(code.to_owned()),
        })
        .collect::<Vec<_>>()
        .join("; ");
    if reasons.iter().any(|reason| reason.code() == Some("ValidationError")) {
        return Err(EventStoreError::Invalid(format!(
            "DynamoDB refused the change set: {summary}"
        )));
    }
    if reasons
        .iter()
        .any(|reason| RETRY_CODES.contains(&reason.code().unwrap_or("")))
        || summary.is_empty()
    {
        return Ok(Attempt::Retry(format!("transaction cancelled: {summary}")));
    }
    Err(EventStoreError::Unavailable(format!(
        "transaction cancelled: {summary}"
    )))
}

fn wrong_type(request: &Request<'_>, stored: &str) -> EventStoreError {
    EventStoreError::WrongType {
        aggregate_id: request.aggregate_id.to_owned(),
        stored: stored.to_owned(),
        requested: request.aggregate_type.to_owned(),
    }
}
