//! The event store's two tables: checked with `DescribeTable` before the
//! first request, created (with the aggregate-type index, on-demand
//! billing) when `create_table` is on, and waited for until active.
//!
//! A table keyed otherwise than the store writes is refused by name: every
//! append would fail its conditions or be rejected, and saying so at start
//! is what an operator needs.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{BuildError, ProvideErrorMetadata};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, TableDescription, TableStatus,
};
use tracing::info;

use crate::event_store::AGGREGATE_TYPE_INDEX;
use crate::event_store::item::{AGGREGATE_ID, AGGREGATE_TYPE, TIMESTAMP, VERSION};
use crate::retry::classify;

/// How often a table being created is asked whether it is active.
const CREATING_POLL: Duration = Duration::from_millis(500);
/// How long a table may take to become active.
const CREATING_LIMIT: Duration = Duration::from_secs(120);

/// Which of the two tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TableRole {
    Aggregates,
    ChangeSets,
}

impl TableRole {
    /// The key the role needs: `(name, type)`, partition key first.
    fn key(self) -> &'static [(&'static str, ScalarAttributeType)] {
        match self {
            TableRole::Aggregates => &[(AGGREGATE_ID, ScalarAttributeType::S)],
            TableRole::ChangeSets => &[
                (AGGREGATE_ID, ScalarAttributeType::S),
                (VERSION, ScalarAttributeType::N),
            ],
        }
    }
}

/// Returns once the table exists with the right key and is active, creating
/// it first if `create` is set. The error says what is wrong.
pub(crate) async fn ensure_table(client: &Client, name: &str, role: TableRole, create: bool) -> Result<(), String> {
    let started = tokio::time::Instant::now();
    loop {
        let described = client.describe_table().table_name(name).send().await;
        let table = match described {
            Ok(output) => output
                .table
                .ok_or_else(|| format!("table `{name}`: DescribeTable returned nothing"))?,
            Err(error) if error.code() == Some("ResourceNotFoundException") => {
                if !create {
                    return Err(format!(
                        "table `{name}` does not exist: create it (see the README's event store section) \
                         or set `create_table = true`"
                    ));
                }
                create_table(client, name, role).await?;
                continue;
            }
            Err(error) => return Err(format!("table `{name}`: {}", classify(&error).reason)),
        };
        check_key(&table, name, role)?;
        match table.table_status() {
            Some(TableStatus::Active | TableStatus::Updating) => return Ok(()),
            Some(TableStatus::Creating) | None if started.elapsed() < CREATING_LIMIT => {
                tokio::time::sleep(CREATING_POLL).await;
            }
            status => return Err(format!("table `{name}` is not usable: {status:?}")),
        }
    }
}

fn check_key(table: &TableDescription, name: &str, role: TableRole) -> Result<(), String> {
    let type_of = |attribute: &str| {
        table
            .attribute_definitions()
            .iter()
            .find(|definition| definition.attribute_name() == attribute)
            .map(|definition| definition.attribute_type().clone())
    };
    let mut found: Vec<(bool, &str)> = table
        .key_schema()
        .iter()
        .map(|element| (*element.key_type() == KeyType::Range, element.attribute_name()))
        .collect();
    found.sort();
    let matches = found.len() == role.key().len()
        && found
            .iter()
            .zip(role.key())
            .all(|((_, attribute), (want, kind))| attribute == want && type_of(attribute).as_ref() == Some(kind));
    if matches {
        Ok(())
    } else {
        let want: Vec<String> = role
            .key()
            .iter()
            .map(|(n, k)| format!("`{n}` ({})", k.as_str()))
            .collect();
        Err(format!(
            "table `{name}` is not keyed as the event store needs ({}): use another table name",
            want.join(" + ")
        ))
    }
}

async fn create_table(client: &Client, name: &str, role: TableRole) -> Result<(), String> {
    let layout = layout(role).map_err(|error| format!("table `{name}`: cannot build its definition: {error}"))?;
    info!(table = name, ?role, "creating event store table");
    let created = client
        .create_table()
        .table_name(name)
        .set_attribute_definitions(Some(layout.attributes))
        .set_key_schema(Some(layout.key))
        .set_global_secondary_indexes(layout.index.map(|index| vec![index]))
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await;
    match created {
        Ok(_) => Ok(()),
        // Another agent created it first.
        Err(error) if error.code() == Some("ResourceInUseException") => Ok(()),
        Err(error) => Err(format!("creating table `{name}`: {}", classify(&error).reason)),
    }
}

/// The definition of a new table.
struct Layout {
    attributes: Vec<AttributeDefinition>,
    key: Vec<KeySchemaElement>,
    index: Option<GlobalSecondaryIndex>,
}

fn layout(role: TableRole) -> Result<Layout, BuildError> {
    let attribute = |name: &str, kind: ScalarAttributeType| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(kind)
            .build()
    };
    let element = |name: &str, kind: KeyType| KeySchemaElement::builder().attribute_name(name).key_type(kind).build();
    let mut attributes = role
        .key()
        .iter()
        .map(|(name, kind)| attribute(name, kind.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    let mut key = vec![element(role.key()[0].0, KeyType::Hash)?];
    if let Some((sort, _)) = role.key().get(1) {
        key.push(element(sort, KeyType::Range)?);
    }
    let index = match role {
        TableRole::Aggregates => None,
        TableRole::ChangeSets => {
            attributes.push(attribute(AGGREGATE_TYPE, ScalarAttributeType::S)?);
            attributes.push(attribute(TIMESTAMP, ScalarAttributeType::S)?);
            Some(
                GlobalSecondaryIndex::builder()
                    .index_name(AGGREGATE_TYPE_INDEX)
                    .key_schema(element(AGGREGATE_TYPE, KeyType::Hash)?)
                    .key_schema(element(TIMESTAMP, KeyType::Range)?)
                    .projection(Projection::builder().projection_type(ProjectionType::All).build())
                    .build()?,
            )
        }
    };
    Ok(Layout { attributes, key, index })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_change_sets_table_is_keyed_by_aggregate_and_version_with_the_type_index() {
        let layout = layout(TableRole::ChangeSets).unwrap();
        let key: Vec<&str> = layout.key.iter().map(|k| k.attribute_name()).collect();
        assert_eq!(key, ["AggregateId", "Version"]);
        let index = layout.index.unwrap();
        assert_eq!(index.index_name(), "AggregateType-Index");
        let index_key: Vec<&str> = index.key_schema().iter().map(|k| k.attribute_name()).collect();
        assert_eq!(index_key, ["AggregateType", "Timestamp"]);
        assert!(layout_of_aggregates_has_no_index());
    }

    fn layout_of_aggregates_has_no_index() -> bool {
        layout(TableRole::Aggregates).unwrap().index.is_none()
    }
}
