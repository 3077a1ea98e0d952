//! One `SendMessageBatch` request of up to 10 messages, retried until every
//! message is in SQS or refused.
//!
//! SQS answers a batch in three ways. It takes everything; or it takes some
//! entries and lists the others under `Failed`, each with a code and
//! whether it was the sender's fault: those are sent again alone (the
//! entries SQS took are not resent), after a backoff that starts over
//! whenever some got through, except an entry refused for its content,
//! which goes to the dead-letter file; or it fails the request as a whole.
//! A whole-request failure is retried (see [`crate::retry`]), unless SQS
//! blames the content: then each message is sent on its own to find which
//! are refused, and only those are dead-lettered.

use aws_sdk_sqs::Client;
use aws_sdk_sqs::operation::send_message_batch::SendMessageBatchOutput;
use eventstash_plugin_api::{Backoff, Event, OutageReport, OutputMetrics};
use tracing::{debug, error, info, warn};

use crate::message::Message;
use crate::metrics::RequestMetrics;
use crate::retry::{FailureKind, RequestFailure, classify, entry_kind};

/// What sending one request needs, borrowed from the output.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchSender<'a> {
    pub(crate) client: &'a Client,
    pub(crate) queue_url: &'a str,
    pub(crate) backoff: &'a Backoff,
    pub(crate) metrics: &'a OutputMetrics,
    pub(crate) plugin: &'a str,
    /// Failing requests (throttling aside): the output's health and a few
    /// log lines per outage, its recovery logged once.
    pub(crate) outage: &'a OutageReport,
    /// Counts the calls, as SQS bills them.
    pub(crate) requests: &'a RequestMetrics,
}

/// Events SQS refused, with the reasons for the dead-letter file.
type RefusedEvents<'a> = Vec<(&'a Event, String)>;

/// The messages of a request SQS refused as a whole, and why.
struct RequestRefused<'m, 'a> {
    messages: Vec<&'m Message<'a>>,
    reason: String,
}

impl BatchSender<'_> {
    /// Sends the messages; returns the events SQS refused, with reasons.
    pub(crate) async fn send<'a>(self, messages: Vec<Message<'a>>) -> RefusedEvents<'a> {
        let mut refused = Vec::new();
        let Err(whole) = self.send_until_done(messages.iter().collect(), &mut refused).await else {
            return refused;
        };
        if let [message] = whole.messages[..] {
            refused.extend(
                message
                    .events
                    .iter()
                    .map(|event| (*event, refused_reason(&whole.reason))),
            );
            return refused;
        }
        debug!(
            output = self.plugin, messages = whole.messages.len(), reason = %whole.reason,
            "sqs refused a batch; sending its messages one by one to find the bad ones"
        );
        for message in whole.messages {
            if let Err(alone) = self.send_until_done(vec![message], &mut refused).await {
                let reason = refused_reason(&alone.reason);
                refused.extend(message.events.iter().map(|event| (*event, reason.clone())));
            }
        }
        refused
    }

    /// Sends the messages until each is in SQS or refused alone (added to
    /// `refused`), or SQS refuses the request as a whole (then returns the
    /// messages still unsent).
    async fn send_until_done<'m, 'a>(
        self,
        mut pending: Vec<&'m Message<'a>>,
        refused: &mut RefusedEvents<'a>,
    ) -> Result<(), RequestRefused<'m, 'a>> {
        let mut backoff = self.backoff.clone();
        loop {
            let entries = pending.iter().enumerate().map(|(id, m)| m.entry(id)).collect();
            let payload = pending.iter().map(|message| message.size).sum();
            self.requests.record("SendMessageBatch", payload);
            let sent = self
                .client
                .send_message_batch()
                .queue_url(self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await;
            match sent {
                Ok(output) => {
                    self.succeeded();
                    let before = pending.len();
                    let failure = self.keep_failed(&mut pending, &output, refused);
                    if pending.is_empty() {
                        return Ok(());
                    }
                    if pending.len() < before {
                        backoff.reset();
                    }
                    if let Some(failure) = failure {
                        self.failed(&failure, pending.len());
                    }
                }
                Err(error) => {
                    let failure = classify(&error);
                    if failure.kind == FailureKind::Refused {
                        return Err(RequestRefused {
                            messages: pending,
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

    /// Narrows `pending` to the entries to send again: neither taken by SQS
    /// nor refused for their content (those are moved to `refused`). An
    /// entry the answer does not mention is sent again: a duplicate is
    /// harmless downstream, a lost event is not. Returns the first failure
    /// to retry, for the log.
    fn keep_failed<'a>(
        &self,
        pending: &mut Vec<&Message<'a>>,
        output: &SendMessageBatchOutput,
        refused: &mut RefusedEvents<'a>,
    ) -> Option<RequestFailure> {
        let mut done = vec![false; pending.len()];
        for entry in output.successful() {
            if let Some(slot) = entry.id.parse::<usize>().ok().and_then(|id| done.get_mut(id)) {
                *slot = true;
            }
        }
        let mut retry = None;
        for entry in output.failed() {
            let Some(index) = entry.id.parse::<usize>().ok().filter(|&id| id < pending.len()) else {
                continue;
            };
            let reason = match entry.message() {
                Some(message) => format!("{}: {message}", entry.code()),
                None => entry.code().to_owned(),
            };
            match entry_kind(entry.code(), entry.sender_fault()) {
                FailureKind::Refused => {
                    let reason = refused_reason(&reason);
                    refused.extend(pending[index].events.iter().map(|event| (*event, reason.clone())));
                    done[index] = true;
                }
                kind => {
                    retry.get_or_insert(RequestFailure { kind, reason });
                }
            }
        }
        let mut index = 0;
        pending.retain(|_| {
            index += 1;
            !done[index - 1]
        });
        retry
    }

    fn succeeded(&self) {
        if self.outage.recovered().is_some() {
            info!(output = self.plugin, "sqs requests succeed again");
        }
    }

    fn failed(&self, failure: &RequestFailure, messages: usize) {
        let reason = &failure.reason;
        // Throttling is SQS working as designed; when it lasts, the retried
        // counter shows it.
        if failure.kind == FailureKind::Throttled {
            debug!(output = self.plugin, messages, %reason, "sqs throttled a batch; retrying");
            return;
        }
        let Some(line) = self.outage.failed(reason.clone()) else {
            debug!(output = self.plugin, messages, %reason, "sqs request failed again; retrying");
            return;
        };
        let suppressed = line.suppressed;
        if failure.kind == FailureKind::NeedsOperator {
            error!(
                output = self.plugin, messages, %reason, suppressed,
                "sqs refuses our requests; events wait and are retried until this is fixed"
            );
        } else {
            warn!(output = self.plugin, messages, %reason, suppressed, "sqs request failed; retrying");
        }
    }
}

fn refused_reason(reason: &str) -> String {
    format!("SQS refused the message: {reason}")
}
