//! The SQS requests a plugin makes, counted as SQS bills them.
//!
//! SQS bills every API request, and a request's payload counts as one
//! request per 64 KiB started: a `SendMessageBatch` of ten 64 KiB messages
//! is billed as ten. Each plugin counts, per request type, the calls it
//! made (`eventstash_sqs_requests_total`, failed and retried ones
//! included) and what they are billed as
//! (`eventstash_sqs_billed_requests_total`, from the payload it sent or
//! received: message bodies and attributes), so an operator can read the
//! bill per event off `/metrics`, and so could the benchmark in the README.

use metrics::counter;

/// Calls made, by `request` (`SendMessageBatch`, `ReceiveMessage`, ...).
pub const SQS_REQUESTS: &str = "eventstash_sqs_requests_total";
/// The same calls as SQS bills them: one per 64 KiB of payload started.
pub const SQS_BILLED_REQUESTS: &str = "eventstash_sqs_billed_requests_total";
/// The payload one billed request covers.
pub const BILLING_CHUNK_BYTES: usize = 64 * 1024;

/// Counts one plugin's requests; cheap to clone.
#[derive(Debug, Clone)]
pub struct RequestMetrics {
    /// The `pipeline` and `plugin` labels.
    pipeline: String,
    plugin: String,
}

impl RequestMetrics {
    /// The counters of the plugin `plugin` of `pipeline`.
    pub fn new(pipeline: &str, plugin: &str) -> RequestMetrics {
        RequestMetrics {
            pipeline: pipeline.to_owned(),
            plugin: plugin.to_owned(),
        }
    }

    /// One `request` call with `payload_bytes` of messages.
    pub fn record(&self, request: &'static str, payload_bytes: usize) {
        let labels = [
            ("pipeline", self.pipeline.clone()),
            ("plugin", self.plugin.clone()),
            ("request", request.to_owned()),
        ];
        counter!(SQS_REQUESTS, &labels).increment(1);
        counter!(SQS_BILLED_REQUESTS, &labels).increment(billed(payload_bytes));
    }
}

/// What SQS bills a request with this payload as.
pub fn billed(payload_bytes: usize) -> u64 {
    payload_bytes.div_ceil(BILLING_CHUNK_BYTES).max(1) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_64_kib_started_is_billed_as_a_request() {
        assert_eq!(billed(0), 1);
        assert_eq!(billed(1), 1);
        assert_eq!(billed(64 * 1024), 1);
        assert_eq!(billed(64 * 1024 + 1), 2);
        assert_eq!(billed(256 * 1024), 4);
    }
}
