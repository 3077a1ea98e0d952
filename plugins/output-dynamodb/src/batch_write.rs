//! One `BatchWriteItem` request of up to 25 items, retried until every item
//! is stored or refused.
//!
//! DynamoDB answers a batch in three ways. It stores everything; or it
//! stores part and hands the rest back as `UnprocessedItems` (the table or
//! a partition is busy), which are sent again after a backoff, the backoff
//! starting over whenever some items got through; or it fails the request
//! as a whole. A whole-request failure is retried (see [`crate::retry`]),
//! except a `ValidationException`: one bad item spoils the request, so the
//! items are then sent one by one to find which are refused, and only those
//! go to the dead-letter file. Writes are puts of the full item under its
//! key, so sending an item twice is harmless.

use std::collections::HashSet;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::WriteRequest;
use eventstash_plugin_api::{Backoff, Event, OutageReport, OutputMetrics};
use tracing::{debug, error, info, warn};

use crate::item::{Item, ItemKey, ItemSchema};
use crate::retry::{FailureKind, RequestFailure, classify};

/// An item and the event it came from, for the dead-letter file.
#[derive(Debug)]
pub(crate) struct Prepared<'a> {
    pub(crate) event: &'a Event,
    pub(crate) item: Item,
}

/// What writing one request needs, borrowed from the output.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchWriter<'a> {
    pub(crate) client: &'a Client,
    pub(crate) table: &'a str,
    pub(crate) schema: &'a ItemSchema,
    pub(crate) backoff: &'a Backoff,
    pub(crate) metrics: &'a OutputMetrics,
    pub(crate) plugin: &'a str,
    /// Failing requests (throttling aside): the output's health and a few
    /// log lines per outage, its recovery logged once.
    pub(crate) outage: &'a OutageReport,
}

/// The items of a request DynamoDB refused as a whole, and why.
struct Refused<'p, 'a> {
    items: Vec<&'p Prepared<'a>>,
    reason: String,
}

impl BatchWriter<'_> {
    /// Writes the items; returns the events DynamoDB refused, with reasons.
    pub(crate) async fn write<'a>(self, chunk: Vec<Prepared<'a>>) -> Vec<(&'a Event, String)> {
        let Err(refused) = self.send_until_done(chunk.iter().collect()).await else {
            return Vec::new();
        };
        if let [item] = refused.items[..] {
            return vec![(item.event, refused_reason(&refused.reason))];
        }
        debug!(
            output = self.plugin, items = refused.items.len(), reason = %refused.reason,
            "dynamodb refused a batch; sending its items one by one to find the bad ones"
        );
        let mut events = Vec::new();
        for item in refused.items {
            if let Err(alone) = self.send_until_done(vec![item]).await {
                events.push((item.event, refused_reason(&alone.reason)));
            }
        }
        events
    }

    /// Sends the items until all are stored, or DynamoDB refuses the request
    /// as invalid (then returns the items still unstored).
    async fn send_until_done<'p, 'a>(self, mut pending: Vec<&'p Prepared<'a>>) -> Result<(), Refused<'p, 'a>> {
        let mut backoff = self.backoff.clone();
        loop {
            let requests = pending.iter().map(|p| p.item.request.clone()).collect();
            let sent = self
                .client
                .batch_write_item()
                .request_items(self.table, requests)
                .send()
                .await;
            match sent {
                Ok(output) => {
                    self.succeeded();
                    let unprocessed = output
                        .unprocessed_items
                        .and_then(|mut tables| tables.remove(self.table))
                        .unwrap_or_default();
                    if unprocessed.is_empty() {
                        return Ok(());
                    }
                    let before = pending.len();
                    self.keep_unprocessed(&mut pending, &unprocessed);
                    if pending.len() < before {
                        backoff.reset();
                    }
                    debug!(
                        output = self.plugin,
                        unprocessed = pending.len(),
                        "dynamodb left items unprocessed; sending them again"
                    );
                }
                Err(error) => {
                    let failure = classify(&error);
                    if failure.kind == FailureKind::Refused {
                        return Err(Refused {
                            items: pending,
                            reason: failure.reason,
                        });
                    }
                    self.failed(&failure, pending.len());
                }
            }
            self.metrics.retried.increment(pending.len() as u64);
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// Narrows `pending` to the items DynamoDB handed back. If they cannot
    /// all be matched to ours (they always should), everything is sent
    /// again: a second put of a stored item changes nothing, a lost one
    /// would be lost.
    fn keep_unprocessed(&self, pending: &mut Vec<&Prepared<'_>>, unprocessed: &[WriteRequest]) {
        let keys: HashSet<ItemKey> = unprocessed
            .iter()
            .filter_map(|request| self.schema.key_of(request))
            .collect();
        let matched = pending.iter().filter(|p| keys.contains(&p.item.key)).count();
        if matched == unprocessed.len() {
            pending.retain(|p| keys.contains(&p.item.key));
        }
    }

    fn succeeded(&self) {
        if self.outage.recovered().is_some() {
            info!(output = self.plugin, "dynamodb requests succeed again");
        }
    }

    fn failed(&self, failure: &RequestFailure, items: usize) {
        let reason = &failure.reason;
        // Throttling is DynamoDB working as designed; when it lasts, the
        // retried counter shows it.
        if failure.kind == FailureKind::Throttled {
            debug!(output = self.plugin, items, %reason, "dynamodb throttled a batch; retrying");
            return;
        }
        let Some(line) = self.outage.failed(reason.clone()) else {
            debug!(output = self.plugin, items, %reason, "dynamodb request failed again; retrying");
            return;
        };
        let suppressed = line.suppressed;
        if failure.kind == FailureKind::NeedsOperator {
            error!(
                output = self.plugin, items, %reason, suppressed,
                "dynamodb refuses our requests; events wait and are retried until this is fixed"
            );
        } else {
            warn!(output = self.plugin, items, %reason, suppressed, "dynamodb request failed; retrying");
        }
    }
}

fn refused_reason(reason: &str) -> String {
    format!("DynamoDB refused the item: {reason}")
}
