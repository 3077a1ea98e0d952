//! The running Elasticsearch output: one bulk request per batch, then only
//! the items that need it sent again, until every event has its outcome.
//!
//! A batch ends in exactly one of three ways per event: stored, rejected
//! for good (written to the dead-letter file with Elasticsearch's reason), or
//! — when the dead-letter file cannot be written or the cluster refuses the
//! request itself — an error for the whole batch, so its producers hear that
//! their events were not stored. Throttled items, server errors and an
//! unreachable cluster are retried with backoff for as long as it takes; the
//! engine's shutdown deadline is the limit. `write` returns only then, so an
//! event is acknowledged only after its outcome.
//!
//! One event must never fail the others of its batch. So an event whose
//! `_id` would make Elasticsearch refuse the whole request is dead-lettered
//! before sending (see [`crate::bulk`]), and a request answered
//! `413 Request Entity Too Large` (AWS-hosted clusters take at most 10 MiB)
//! is sent again in halves, recursively; an event too large on its own is
//! dead-lettered with the cluster's answer.

use std::time::Duration;

use async_trait::async_trait;
use eventstash_plugin_api::{
    Backoff, BoxError, DeadLetterFile, Event, LogThrottle, Output, OutputBatch, OutputMetrics, PluginContext,
};
use tokio::sync::OnceCell;
use tracing::{info, warn};

use crate::bulk::{BulkEncoder, EncodedBatch};
use crate::cluster::Cluster;
use crate::error::ElasticsearchOutputError;
use crate::index_template::IndexTemplate;
use crate::response::{BulkResponse, ItemOutcome};
use crate::retry::{FailureKind, FailureReport, RequestFailure};

/// The Elasticsearch output, built by
/// [`ElasticsearchOutputConfig::build`](crate::ElasticsearchOutputConfig::build).
#[derive(Debug)]
pub struct ElasticsearchOutput {
    /// The output's id, for logs.
    id: String,
    cluster: Cluster,
    /// Renders action lines and documents.
    encoder: BulkEncoder,
    /// The template to install before the first write, if managed.
    template: Option<IndexTemplate>,
    /// Set once the template is installed (or found); concurrent first
    /// writes wait for the same installation.
    template_ready: OnceCell<()>,
    /// Where rejected events go.
    dead_letters: DeadLetterFile,
    metrics: OutputMetrics,
    /// The retry schedule every write starts from.
    backoff: Backoff,
    /// Requests that get no usable answer (and template installation).
    request_failures: FailureReport,
    /// Items the cluster throttles or fails with a server error.
    item_failures: FailureReport,
    /// Keeps the warnings about requests split for their size to a few.
    split_log: LogThrottle,
}

/// How often requests split for their size are logged again.
const SPLIT_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// A part of a batch the cluster answered 413 for.
struct TooLarge {
    /// Its batch positions still unstored.
    pending: Vec<usize>,
    /// The cluster's answer.
    reason: String,
}

/// What one bulk round left to do.
struct RoundResult<'a> {
    /// Batch positions to send again.
    retry: Vec<usize>,
    /// Why the first of them failed, for the log.
    retry_reason: Option<String>,
    /// Events refused for good, with the reason.
    rejected: Vec<(&'a Event, String)>,
    /// How many were stored.
    stored: usize,
}

impl ElasticsearchOutput {
    pub(crate) fn new(
        ctx: &PluginContext,
        cluster: Cluster,
        encoder: BulkEncoder,
        template: Option<IndexTemplate>,
        dead_letters: DeadLetterFile,
        backoff: Backoff,
        log_interval: Duration,
    ) -> ElasticsearchOutput {
        ElasticsearchOutput {
            id: ctx.plugin.clone(),
            cluster,
            encoder,
            template,
            template_ready: OnceCell::new(),
            dead_letters,
            metrics: ctx.output_metrics(),
            backoff,
            request_failures: FailureReport::for_requests(&ctx.plugin, ctx.health.clone(), log_interval),
            item_failures: FailureReport::for_items(&ctx.plugin, ctx.health.clone(), log_interval),
            split_log: LogThrottle::new(SPLIT_LOG_INTERVAL),
        }
    }

    /// Writes `events` until each is stored or dead-lettered.
    async fn write_events(&self, events: &[&Event]) -> Result<(), ElasticsearchOutputError> {
        self.template_ready.get_or_try_init(|| self.install_template()).await?;
        let encoded = self.encoder.encode(events)?;
        let refused = encoded.refused().iter();
        let refused = refused.map(|(position, reason)| (events[*position], reason.clone()));
        self.dead_letter(refused.collect()).await?;
        // A part too large for the cluster is split in halves, each written
        // on its own; the first half goes first, so order is kept.
        let sendable = encoded.sendable();
        let mut parts = if sendable.is_empty() {
            Vec::new()
        } else {
            vec![sendable]
        };
        while let Some(part) = parts.pop() {
            let Some(too_large) = self.write_part(events, &encoded, part).await? else {
                continue;
            };
            let mut pending = too_large.pending;
            if let [position] = pending[..] {
                let size = encoded.size(&pending);
                let reason = format!(
                    "the bulk request for this event alone ({size} bytes) is over the cluster's \
                     request size limit: {}",
                    too_large.reason
                );
                self.dead_letter(vec![(events[position], reason)]).await?;
                continue;
            }
            self.log_split(pending.len(), encoded.size(&pending), &too_large.reason);
            let second = pending.split_off(pending.len() / 2);
            parts.push(second);
            parts.push(pending);
        }
        Ok(())
    }

    /// Writes the events at `pending` until each is stored or dead-lettered,
    /// or the cluster answers that the request is too large.
    async fn write_part(
        &self,
        events: &[&Event],
        encoded: &EncodedBatch,
        mut pending: Vec<usize>,
    ) -> Result<Option<TooLarge>, ElasticsearchOutputError> {
        let mut backoff = self.backoff.clone();
        let mut first_round = true;
        loop {
            let round = match self.send_round(events, encoded, &pending).await {
                Ok(round) => round,
                Err(failure) => match failure.kind {
                    FailureKind::Transient => {
                        let delay = backoff.next_delay();
                        self.request_failures.failed(pending.len(), &failure.message, delay);
                        self.retry_after(pending.len(), delay).await;
                        continue;
                    }
                    FailureKind::TooLarge => {
                        return Ok(Some(TooLarge {
                            pending,
                            reason: failure.message,
                        }));
                    }
                    FailureKind::Refused => {
                        return Err(ElasticsearchOutputError::BulkRejected {
                            reason: failure.message,
                        });
                    }
                },
            };
            self.dead_letter(round.rejected).await?;
            if round.retry.is_empty() {
                // Only a batch that went through at once shows the cluster
                // has stopped throttling; one that needed retries does not.
                if first_round {
                    self.item_failures.succeeded();
                }
                return Ok(None);
            }
            let delay = backoff.next_delay();
            let message = format!(
                "{} of {} items throttled or failed on the server ({} stored), first: {}",
                round.retry.len(),
                pending.len(),
                round.stored,
                round.retry_reason.as_deref().unwrap_or("no reason given")
            );
            // A round that stored something is slow progress, not an outage.
            if round.stored == 0 {
                self.item_failures.failed(round.retry.len(), &message, delay);
            } else {
                self.item_failures.slowed(round.retry.len(), &message, delay);
            }
            pending = round.retry;
            first_round = false;
            self.retry_after(pending.len(), delay).await;
        }
    }

    /// A split is how every batch over the cluster's limit is written, so
    /// it is logged at most once per interval, with the way to avoid it.
    fn log_split(&self, events: usize, bytes: usize, reason: &str) {
        let Some(held_back) = self.split_log.allow() else {
            return;
        };
        warn!(
            output = %self.id, events, bytes, held_back, %reason,
            "bulk request over the cluster's size limit; sending it in halves \
             (a smaller `batch_bytes` for this output avoids the extra requests)"
        );
    }

    /// Sends the events at `pending` once and sorts them by their items'
    /// outcomes.
    async fn send_round<'a>(
        &self,
        events: &[&'a Event],
        encoded: &EncodedBatch,
        pending: &[usize],
    ) -> Result<RoundResult<'a>, RequestFailure> {
        let response = self.cluster.bulk(encoded.body(pending)).await?;
        let round = self.settle(events, pending, response)?;
        self.request_failures.succeeded();
        Ok(round)
    }

    /// Sorts the events of one round by their item's outcome.
    fn settle<'a>(
        &self,
        events: &[&'a Event],
        pending: &[usize],
        response: BulkResponse,
    ) -> Result<RoundResult<'a>, RequestFailure> {
        if response.items.len() != pending.len() {
            return Err(RequestFailure::transient(format!(
                "the bulk response has {} items for {} actions",
                response.items.len(),
                pending.len()
            )));
        }
        let mut round = RoundResult {
            retry: Vec::new(),
            retry_reason: None,
            rejected: Vec::new(),
            stored: pending.len(),
        };
        if !response.errors {
            return Ok(round);
        }
        let action = self.encoder.action();
        for (&position, item) in pending.iter().zip(&response.items) {
            match item.outcome(action) {
                ItemOutcome::Stored => {}
                ItemOutcome::Retry => {
                    round.retry_reason.get_or_insert_with(|| item.reason());
                    round.retry.push(position);
                }
                ItemOutcome::Reject(reason) => round.rejected.push((events[position], reason)),
            }
        }
        round.stored -= round.retry.len() + round.rejected.len();
        Ok(round)
    }

    async fn dead_letter(&self, rejected: Vec<(&Event, String)>) -> Result<(), ElasticsearchOutputError> {
        if rejected.is_empty() {
            return Ok(());
        }
        self.dead_letters.write(&rejected).await?;
        self.metrics.dead_lettered.increment(rejected.len() as u64);
        warn!(
            output = %self.id,
            events = rejected.len(),
            path = %self.dead_letters.path().display(),
            first_reason = %rejected[0].1,
            "Elasticsearch rejected events; written to the dead-letter file"
        );
        Ok(())
    }

    async fn retry_after(&self, events: usize, delay: Duration) {
        self.metrics.retried.increment(events as u64);
        tokio::time::sleep(delay).await;
    }

    /// Installs the managed template, retrying while the cluster cannot be
    /// reached; fails only when the cluster refuses the template.
    async fn install_template(&self) -> Result<(), ElasticsearchOutputError> {
        let Some(template) = &self.template else {
            return Ok(());
        };
        let mut backoff = self.backoff.clone();
        loop {
            match self.try_install_template(template).await {
                Ok(()) => {
                    self.request_failures.succeeded();
                    return Ok(());
                }
                Err(failure) if failure.kind == FailureKind::Transient => {
                    let delay = backoff.next_delay();
                    self.request_failures.failed(0, &failure.message, delay);
                    tokio::time::sleep(delay).await;
                }
                Err(failure) => {
                    return Err(ElasticsearchOutputError::TemplateRejected {
                        name: template.name.clone(),
                        path: template.source.clone(),
                        reason: failure.message,
                    });
                }
            }
        }
    }

    async fn try_install_template(&self, template: &IndexTemplate) -> Result<(), RequestFailure> {
        let path = template.path();
        let exists = self.cluster.template_exists(&path).await?;
        if exists && !template.overwrite {
            info!(output = %self.id, template = %path, "index template already installed; kept (template_overwrite = false)");
            return Ok(());
        }
        self.cluster.put_template(&path, template.body.clone()).await?;
        info!(
            output = %self.id,
            template = %path,
            file = %template.source.display(),
            hosts = self.cluster.hosts(),
            replaced = exists,
            "index template installed"
        );
        Ok(())
    }
}

#[async_trait]
impl Output for ElasticsearchOutput {
    async fn write(&self, batch: OutputBatch) -> Result<(), BoxError> {
        if batch.is_empty() {
            return Ok(());
        }
        let events: Vec<&Event> = batch.iter().collect();
        self.write_events(&events).await?;
        Ok(())
    }
}
