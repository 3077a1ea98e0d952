//! The queue, named in `queue_url` by name or by URL, and finding it.
//!
//! A name is turned into a URL with `GetQueueUrl`; either way
//! `GetQueueAttributes` then proves the queue exists and tells its message
//! size limit. A FIFO queue is known by its `.fifo` suffix, which SQS
//! requires of FIFO queue names.

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::QueueAttributeName;

use super::retry::{RequestFailure, classify};

/// The suffix SQS requires of FIFO queue names.
const FIFO_SUFFIX: &str = ".fifo";
/// SQS's longest queue name.
const MAX_NAME_CHARS: usize = 80;

/// A queue as the pipeline file names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueRef {
    /// A queue name, looked up in the client's region and account.
    Name(String),
    /// A queue URL, used as it is.
    Url(String),
}

/// A queue that exists: its URL and what SQS told about it.
#[derive(Debug, Clone)]
pub struct Queue {
    pub url: String,
    /// The queue's `MaximumMessageSize`, when SQS reported it.
    pub max_message_bytes: Option<usize>,
}

/// Why the queue cannot be used yet.
#[derive(Debug)]
pub enum QueueProblem {
    /// SQS says there is no such queue.
    Missing,
    /// The request failed; it may pass on a retry.
    Request(RequestFailure),
}

impl QueueRef {
    /// Reads `queue_url`: a URL (`http://`, `https://`) or a queue name.
    pub fn parse(text: &str) -> Result<QueueRef, &'static str> {
        if text.starts_with("https://") || text.starts_with("http://") {
            let name = text.rsplit('/').next().unwrap_or_default();
            if name.is_empty() {
                return Err("is a URL without a queue name at its end");
            }
            return Ok(QueueRef::Url(text.to_owned()));
        }
        let base = text.strip_suffix(FIFO_SUFFIX).unwrap_or(text);
        let allowed = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if text.is_empty() || text.len() > MAX_NAME_CHARS || base.is_empty() || !base.chars().all(allowed) {
            return Err(
                "must be a queue URL or a queue name of 1 to 80 letters, digits, `-` and `_` \
                        (FIFO queues end in `.fifo`)",
            );
        }
        Ok(QueueRef::Name(text.to_owned()))
    }

    /// True for a FIFO queue.
    pub fn is_fifo(&self) -> bool {
        match self {
            QueueRef::Name(text) | QueueRef::Url(text) => text.ends_with(FIFO_SUFFIX),
        }
    }

    /// The region an AWS queue URL names (`https://sqs.eu-west-1.amazonaws.com/...`).
    pub fn url_region(&self) -> Option<String> {
        let QueueRef::Url(url) = self else { return None };
        let host = url.split("://").nth(1)?.split('/').next()?;
        let mut labels = host.split('.');
        match (labels.next()?, labels.next()?, labels.next()?) {
            ("sqs", region, "amazonaws") => Some(region.to_owned()),
            (region, "queue", "amazonaws") => Some(region.to_owned()),
            _ => None,
        }
    }

    /// How the pipeline file names the queue, for messages.
    pub fn as_str(&self) -> &str {
        match self {
            QueueRef::Name(text) | QueueRef::Url(text) => text,
        }
    }
}

/// Finds the queue and reads its limits.
pub async fn find(client: &Client, queue: &QueueRef) -> Result<Queue, QueueProblem> {
    let url = match queue {
        QueueRef::Url(url) => url.clone(),
        QueueRef::Name(name) => match client.get_queue_url().queue_name(name).send().await {
            Ok(output) => output.queue_url.unwrap_or_default(),
            Err(error) if error.as_service_error().is_some_and(|e| e.is_queue_does_not_exist()) => {
                return Err(QueueProblem::Missing);
            }
            Err(error) => return Err(QueueProblem::Request(classify(&error))),
        },
    };
    let attributes = client
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::MaximumMessageSize)
        .send()
        .await;
    match attributes {
        Ok(output) => {
            let max_message_bytes = output
                .attributes
                .and_then(|attributes| attributes.get(&QueueAttributeName::MaximumMessageSize).cloned())
                .and_then(|size| size.parse().ok());
            Ok(Queue { url, max_message_bytes })
        }
        Err(error) if error.as_service_error().is_some_and(|e| e.is_queue_does_not_exist()) => {
            Err(QueueProblem::Missing)
        }
        Err(error) => Err(QueueProblem::Request(classify(&error))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_urls_are_told_apart_and_checked() {
        assert_eq!(QueueRef::parse("event-queue"), Ok(QueueRef::Name("event-queue".into())));
        assert!(QueueRef::parse("events.fifo").unwrap().is_fifo());
        assert!(!QueueRef::parse("event-queue").unwrap().is_fifo());
        let url = "https://sqs.eu-west-1.amazonaws.com/123456789012/events.fifo";
        let parsed = QueueRef::parse(url).unwrap();
        assert_eq!(parsed, QueueRef::Url(url.into()));
        assert!(parsed.is_fifo());
        assert_eq!(parsed.url_region().as_deref(), Some("eu-west-1"));
        assert_eq!(
            QueueRef::parse("http://127.0.0.1:5000/123/q").unwrap().url_region(),
            None
        );
        for bad in ["", "has space", "a.b", ".fifo", "https://sqs.x/", &"q".repeat(81)] {
            assert!(QueueRef::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
