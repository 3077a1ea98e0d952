//! Making sure the table is there before the first write: checked with
//! `DescribeTable`, created with its two indexes when `create_table` is on.
//!
//! The check runs once, on the first write, and waits until it passes: a
//! missing table (without `create_table`), a table whose key differs from
//! the configured one, or a failing request is logged as an error and
//! retried with backoff, while the events wait unacknowledged. The key check
//! matters: writing to a table keyed differently would make DynamoDB refuse
//! every item, and everything would end up in the dead-letter file.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{BuildError, ProvideErrorMetadata};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, TableDescription, TableStatus,
};
use eventstash_plugin_api::{Backoff, ComponentHealth, OutageReport};
use tracing::{error, info, warn};

use crate::item::{SOURCE, TYPE};
use crate::retry::{RequestFailure, classify};

/// The index to read events by kind, sorted by the sort key.
pub(crate) const TYPE_INDEX: &str = "Type-Index";
/// The index to read events by source, sorted by the sort key.
pub(crate) const SOURCE_INDEX: &str = "Source-Index";
/// How often a table being created is asked whether it is active.
const CREATING_POLL: Duration = Duration::from_secs(1);
/// At most one log line per problem per this interval.
const LOG_INTERVAL: Duration = Duration::from_secs(30);

/// The table the output writes: name and key attribute names.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TableSpec<'a> {
    pub(crate) name: &'a str,
    pub(crate) partition_key: &'a str,
    pub(crate) sort_key: &'a str,
    pub(crate) create: bool,
}

/// Why the table cannot be written yet.
#[derive(Debug)]
enum TableProblem {
    Missing,
    KeyMismatch { found: String },
    Unusable { status: String },
    Request(RequestFailure),
    Build(BuildError),
}

/// Where the table stands.
enum TableState {
    Ready,
    Creating,
}

/// Returns once the table exists, has the configured key and is active;
/// creates it first if asked to. Never gives up: see the module comment.
pub(crate) async fn wait_until_ready(
    client: &Client,
    spec: TableSpec<'_>,
    mut backoff: Backoff,
    health: &ComponentHealth,
    plugin: &str,
) {
    let outage = OutageReport::new(health.clone(), LOG_INTERVAL);
    loop {
        match check(client, spec).await {
            Ok(TableState::Ready) => {
                outage.recovered();
                info!(output = plugin, table = spec.name, "dynamodb table is ready");
                return;
            }
            Ok(TableState::Creating) => tokio::time::sleep(CREATING_POLL).await,
            Err(problem) => {
                let message = problem.describe(spec);
                if let Some(line) = outage.failed(message.clone()) {
                    error!(
                        output = plugin, table = spec.name, problem = %message, suppressed = line.suppressed,
                        "dynamodb table is not usable; events wait until it is"
                    );
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

async fn check(client: &Client, spec: TableSpec<'_>) -> Result<TableState, TableProblem> {
    let described = client.describe_table().table_name(spec.name).send().await;
    let table = match described {
        Ok(output) => output.table.ok_or(TableProblem::Missing)?,
        Err(error) if error.code() == Some("ResourceNotFoundException") => {
            if !spec.create {
                return Err(TableProblem::Missing);
            }
            create(client, spec).await?;
            return Ok(TableState::Creating);
        }
        Err(error) => return Err(TableProblem::Request(classify(&error))),
    };
    // Types matter as much as names: string values under a number key
    // would all be refused, and all end up in the dead-letter file.
    let found = table_key(&table);
    let expected = [(spec.partition_key, "S"), (spec.sort_key, "S")];
    if !found.iter().map(|(n, k)| (n.as_str(), k.as_str())).eq(expected) {
        let found = found
            .iter()
            .map(|(name, kind)| format!("`{name}` ({kind})"))
            .collect::<Vec<_>>()
            .join(" + ");
        return Err(TableProblem::KeyMismatch { found });
    }
    match table.table_status() {
        Some(TableStatus::Active | TableStatus::Updating) => {
            warn_about_missing_indexes(&table, spec);
            Ok(TableState::Ready)
        }
        Some(TableStatus::Creating) | None => Ok(TableState::Creating),
        Some(other) => Err(TableProblem::Unusable {
            status: other.as_str().to_owned(),
        }),
    }
}

/// The key of a described table as `(name, type)`, partition key first.
fn table_key(table: &TableDescription) -> Vec<(String, String)> {
    let mut key: Vec<(bool, String, String)> = table
        .key_schema()
        .iter()
        .map(|element| {
            let name = element.attribute_name();
            let kind = table
                .attribute_definitions()
                .iter()
                .find(|definition| definition.attribute_name() == name)
                .map_or("?", |definition| definition.attribute_type().as_str());
            (*element.key_type() == KeyType::Range, name.to_owned(), kind.to_owned())
        })
        .collect();
    key.sort(); // the partition (HASH) key before the sort (RANGE) key
    key.into_iter().map(|(_, name, kind)| (name, kind)).collect()
}

/// Reading by type or source needs the indexes; writing does not, so their
/// absence is worth a warning, not a wait.
fn warn_about_missing_indexes(table: &TableDescription, spec: TableSpec<'_>) {
    let present: Vec<&str> = table
        .global_secondary_indexes()
        .iter()
        .filter_map(|index| index.index_name())
        .collect();
    for index in [TYPE_INDEX, SOURCE_INDEX] {
        if !present.contains(&index) {
            warn!(
                table = spec.name,
                index, "dynamodb table has no such index; events are written, but cannot be queried by it"
            );
        }
    }
}

async fn create(client: &Client, spec: TableSpec<'_>) -> Result<(), TableProblem> {
    let (attributes, key, indexes) = table_layout(spec).map_err(TableProblem::Build)?;
    info!(
        table = spec.name,
        "creating dynamodb table with {TYPE_INDEX} and {SOURCE_INDEX}"
    );
    let created = client
        .create_table()
        .table_name(spec.name)
        .set_attribute_definitions(Some(attributes))
        .set_key_schema(Some(key))
        .set_global_secondary_indexes(Some(indexes))
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await;
    match created {
        Ok(_) => Ok(()),
        // Another agent created it first: wait for it like our own.
        Err(error) if error.code() == Some("ResourceInUseException") => Ok(()),
        Err(error) => Err(TableProblem::Request(classify(&error))),
    }
}

type TableLayout = (
    Vec<AttributeDefinition>,
    Vec<KeySchemaElement>,
    Vec<GlobalSecondaryIndex>,
);

/// The attribute definitions, key schema and indexes of a new event table.
fn table_layout(spec: TableSpec<'_>) -> Result<TableLayout, BuildError> {
    let key_names = BTreeSet::from([spec.partition_key, spec.sort_key, TYPE, SOURCE]);
    let attributes = key_names
        .into_iter()
        .map(|name| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
        })
        .collect::<Result<_, _>>()?;
    let key = |hash: &str| -> Result<Vec<KeySchemaElement>, BuildError> {
        Ok(vec![
            KeySchemaElement::builder()
                .attribute_name(hash)
                .key_type(KeyType::Hash)
                .build()?,
            KeySchemaElement::builder()
                .attribute_name(spec.sort_key)
                .key_type(KeyType::Range)
                .build()?,
        ])
    };
    let index = |name: &str, hash: &str| {
        GlobalSecondaryIndex::builder()
            .index_name(name)
            .set_key_schema(Some(key(hash)?))
            .projection(Projection::builder().projection_type(ProjectionType::All).build())
            .build()
    };
    let indexes = vec![index(TYPE_INDEX, TYPE)?, index(SOURCE_INDEX, SOURCE)?];
    Ok((attributes, key(spec.partition_key)?, indexes))
}

impl TableProblem {
    fn describe(&self, spec: TableSpec<'_>) -> String {
        Described(self, spec).to_string()
    }
}

struct Described<'a>(&'a TableProblem, TableSpec<'a>);

impl fmt::Display for Described<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Described(problem, spec) = self;
        match problem {
            TableProblem::Missing => write!(
                f,
                "table `{}` does not exist: create it with partition key `{}` and sort key `{}` \
                 (strings), or set `create_table = true`",
                spec.name, spec.partition_key, spec.sort_key
            ),
            TableProblem::KeyMismatch { found } => write!(
                f,
                "table `{}` is keyed by {found}, but the output writes string keys `{}` + `{}`: \
                 fix `partition_key`/`sort_key` or use another table",
                spec.name, spec.partition_key, spec.sort_key
            ),
            TableProblem::Unusable { status } => {
                write!(f, "table `{}` is {status}", spec.name)
            }
            TableProblem::Request(failure) => write!(f, "{}", failure.reason),
            TableProblem::Build(error) => write!(f, "cannot build the table's definition: {error}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_table_has_the_key_and_both_indexes_sorted_by_the_sort_key() {
        let spec = TableSpec {
            name: "event",
            partition_key: "RequestId",
            sort_key: "Timestamp",
            create: true,
        };
        let (attributes, key, indexes) = table_layout(spec).unwrap();
        let names: Vec<&str> = attributes.iter().map(|a| a.attribute_name()).collect();
        assert_eq!(names, ["RequestId", "Source", "Timestamp", "Type"]);
        assert_eq!(key[0].attribute_name(), "RequestId");
        assert_eq!(key[1].attribute_name(), "Timestamp");
        let layout: Vec<(&str, &str, &str)> = indexes
            .iter()
            .map(|index| {
                (
                    index.index_name(),
                    index.key_schema()[0].attribute_name(),
                    index.key_schema()[1].attribute_name(),
                )
            })
            .collect();
        assert_eq!(
            layout,
            [
                ("Type-Index", "Type", "Timestamp"),
                ("Source-Index", "Source", "Timestamp")
            ]
        );
    }
}
