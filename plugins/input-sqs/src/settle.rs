//! Settling one receive: keeping its messages hidden while the outputs
//! work, then deleting them once every output stored their events, or
//! leaving them to come back.
//!
//! The task waits on the receive's ack group. Every third of the visibility
//! timeout it extends the messages' visibility
//! (`ChangeMessageVisibilityBatch`), so a slow output never lets SQS hand
//! them to a second agent. When the group resolves:
//! - stored by every output: `DeleteMessageBatch`, retried until SQS
//!   answers, because a message not deleted is stored a second time (under
//!   the same id, so the stores overwrite it, but still work);
//! - not stored, while running: the messages are left alone and come back
//!   when their visibility timeout ends (a message that keeps failing is
//!   moved to the queue's dead-letter queue by its redrive policy);
//! - not stored, during shutdown: their visibility is set to 0, so another
//!   agent receives them at once.
//!
//! The in-flight permits are released only at the end, which is what keeps
//! the pollers from receiving more than the input can hold.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::{ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry};
use eventstash_plugin_api::AckWait;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, info, warn};

use crate::poller::{Consumer, Receipt};
use crate::retry::{FailureKind, classify};

/// The shortest pause between two visibility extensions.
const MIN_EXTEND_INTERVAL: Duration = Duration::from_secs(1);

/// Waits for the receive's events to be stored, then deletes or releases
/// its messages; see the module documentation.
pub(crate) async fn settle(
    consumer: Arc<Consumer>,
    receipts: Vec<Receipt>,
    stored: AckWait,
    permits: OwnedSemaphorePermit,
) {
    let visibility = consumer.settings.visibility_timeout;
    let every = (visibility / 3).max(MIN_EXTEND_INTERVAL);
    let mut extend = tokio::time::interval_at(Instant::now() + every, every);
    extend.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut stored = pin!(stored.wait());
    let outcome = loop {
        tokio::select! {
            outcome = &mut stored => break outcome,
            _ = extend.tick() => consumer.change_visibility(&receipts, visibility).await,
        }
    };
    match outcome {
        Ok(()) => consumer.delete(&receipts).await,
        Err(error) if consumer.shutdown.is_cancelled() => {
            debug!(input = %consumer.plugin, messages = receipts.len(), %error, "releasing messages not stored before shutdown");
            consumer.change_visibility(&receipts, Duration::ZERO).await;
        }
        Err(error) => warn!(
            input = %consumer.plugin, messages = receipts.len(), %error,
            "messages were not stored; they come back when their visibility timeout ends"
        ),
    }
    drop(permits);
}

impl Consumer {
    /// Deletes the messages, retrying until SQS has answered for each.
    async fn delete(&self, receipts: &[Receipt]) {
        let mut pending: Vec<&Receipt> = receipts.iter().collect();
        let mut backoff = self.settings.backoff.clone();
        while !pending.is_empty() {
            let entries = pending
                .iter()
                .enumerate()
                .map(|(id, handle)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(id.to_string())
                        .receipt_handle(handle.as_str())
                        .build()
                        .expect("the id and the receipt handle, the required fields, are set")
                })
                .collect();
            self.requests.record("DeleteMessageBatch", 0);
            let sent = self
                .client
                .delete_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await;
            match sent {
                Ok(output) => {
                    let mut retry = vec![false; pending.len()];
                    for failed in output.failed() {
                        let Some(index) = failed.id().parse::<usize>().ok().filter(|&i| i < pending.len()) else {
                            continue;
                        };
                        if failed.sender_fault() {
                            // An expired receipt handle: the message was handed
                            // out again and its new holder will delete it.
                            debug!(input = %self.plugin, code = failed.code(), "sqs did not delete a message; it will be stored again under the same id");
                        } else {
                            retry[index] = true;
                        }
                    }
                    let mut index = 0;
                    pending.retain(|_| {
                        index += 1;
                        retry[index - 1]
                    });
                    if pending.is_empty() {
                        return;
                    }
                }
                Err(error) => {
                    let failure = classify(&error);
                    if failure.kind != FailureKind::Throttled {
                        warn!(input = %self.plugin, messages = pending.len(), reason = %failure.reason, "deleting stored messages failed; retrying");
                    }
                }
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// Sets the messages' visibility timeout from now; failures are logged
    /// and left to the next extension (or to the timeout).
    async fn change_visibility(&self, receipts: &[Receipt], timeout: Duration) {
        if receipts.is_empty() {
            return;
        }
        let entries = receipts
            .iter()
            .enumerate()
            .map(|(id, handle)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(id.to_string())
                    .receipt_handle(handle)
                    .visibility_timeout(timeout.as_secs() as i32)
                    .build()
                    .expect("the id and the receipt handle, the required fields, are set")
            })
            .collect();
        self.requests.record("ChangeMessageVisibilityBatch", 0);
        let sent = self
            .client
            .change_message_visibility_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await;
        match sent {
            Ok(output) if output.failed().is_empty() => {}
            Ok(output) => debug!(
                input = %self.plugin, failed = output.failed().len(), first = output.failed()[0].code(),
                "sqs did not change the visibility of some messages"
            ),
            Err(error) => {
                let failure = classify(&error);
                info!(input = %self.plugin, messages = receipts.len(), reason = %failure.reason, "changing message visibility failed");
            }
        }
    }
}
