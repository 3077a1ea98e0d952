//! The replay cursor of the DynamoDB sources: the key of the item the
//! cursor's event came from (table and index key attributes, as DynamoDB's
//! `ExclusiveStartKey` takes it) and, for a change set whose events were
//! not all sent, how many were.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::types::AttributeValue;
use eventstash_plugin_api::{ReplayCursor, ReplayError};
use serde::{Deserialize, Serialize};

use crate::event_store::item::Item;

/// A key attribute's value: DynamoDB keys are strings or numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum KeyValue {
    S(String),
    N(String),
}

/// Where a replay resumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Position {
    /// The item's key.
    k: BTreeMap<String, KeyValue>,
    /// Events of the item already sent; 0: all of them.
    #[serde(default, skip_serializing_if = "is_zero")]
    e: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Position {
    /// The position after event `sent - 1` of `item`, `total` events long.
    pub(crate) fn after(item: &Item, key_names: &[&str], sent: usize, total: usize) -> Position {
        let k = key_names
            .iter()
            .filter_map(|name| {
                let value = match item.get(*name)? {
                    AttributeValue::S(text) => KeyValue::S(text.clone()),
                    AttributeValue::N(number) => KeyValue::N(number.clone()),
                    _ => return None,
                };
                Some(((*name).to_owned(), value))
            })
            .collect();
        Position {
            k,
            e: if sent >= total { 0 } else { sent },
        }
    }

    /// Reads a client's cursor, checking it names every key attribute and
    /// the partition value the query asks for.
    pub(crate) fn from_cursor(
        cursor: &ReplayCursor,
        key_names: &[&str],
        partition: (&str, &str),
    ) -> Result<Position, ReplayError> {
        let position: Position = cursor.decode()?;
        if position.k.len() != key_names.len() || key_names.iter().any(|name| !position.k.contains_key(*name)) {
            return Err(ReplayError::BadCursor("not a cursor of this store".to_owned()));
        }
        let (name, value) = partition;
        if position.k.get(name) != Some(&KeyValue::S(value.to_owned())) {
            return Err(ReplayError::BadCursor(format!(
                "it was given for another `{name}`: repeat the query the cursor came from"
            )));
        }
        Ok(position)
    }

    /// The key as an `ExclusiveStartKey` / `GetItem` key.
    pub(crate) fn key(&self) -> Item {
        self.k
            .iter()
            .map(|(name, value)| {
                let value = match value {
                    KeyValue::S(text) => AttributeValue::S(text.clone()),
                    KeyValue::N(number) => AttributeValue::N(number.clone()),
                };
                (name.clone(), value)
            })
            .collect()
    }

    /// Events of the item already sent (0: all).
    pub(crate) fn events_sent(&self) -> usize {
        self.e
    }

    /// The opaque form.
    pub(crate) fn to_cursor(&self) -> ReplayCursor {
        ReplayCursor::encode(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_round_trips_and_is_checked_against_the_query() {
        let item: Item = [
            ("Type", AttributeValue::S("billing.Invoice".into())),
            ("Timestamp", AttributeValue::S("2026-01-01T00:00:00.000Z".into())),
            ("RequestId", AttributeValue::S("r-1".into())),
            ("Data", AttributeValue::M(Default::default())),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let names = ["Type", "Timestamp", "RequestId"];
        let cursor = Position::after(&item, &names, 1, 1).to_cursor();
        let back = Position::from_cursor(&cursor, &names, ("Type", "billing.Invoice")).unwrap();
        assert_eq!(back.key().len(), 3);
        assert_eq!(back.events_sent(), 0);
        let other = Position::from_cursor(&cursor, &names, ("Type", "audit.Login"));
        assert!(matches!(other, Err(ReplayError::BadCursor(_))));
        let wrong_store = Position::from_cursor(&cursor, &["AggregateType", "Timestamp"], ("Type", "billing.Invoice"));
        assert!(matches!(wrong_store, Err(ReplayError::BadCursor(_))));
    }
}
