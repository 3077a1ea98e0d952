//! [`EventStoreClient`]: `hfx.v1.EventStore` with typed requests and
//! answers — append a change set at an expected version, read an
//! aggregate, replay stored events — served by the agent on the same port.

use std::time::Duration;

use tonic::Streaming;

use crate::client::AuthorizedChannel;
use crate::connect::MAX_MESSAGE_SIZE;
use crate::proto::event_store_client::EventStoreClient as Generated;
use crate::proto::{AppendRequest, AppendResponse, ChangeSet, ReadRequest, ReplayRequest, ReplayedEvent};
use crate::{Error, Event};

/// The version an append expects its aggregate at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// The aggregate must not exist yet.
    NoAggregate,
    /// Any version: append after whatever is stored.
    Any,
    /// Exactly this version; otherwise the append fails with a conflict
    /// ([`Error::current_version`] says the aggregate's version).
    Exactly(u64),
}

impl ExpectedVersion {
    /// The proto's encoding: 0, -1 or N.
    fn wire(self) -> i64 {
        match self {
            ExpectedVersion::NoAggregate => 0,
            ExpectedVersion::Any => -1,
            ExpectedVersion::Exactly(version) => i64::try_from(version).unwrap_or(i64::MAX),
        }
    }
}

/// A change set to append: the events one command produced for one aggregate.
#[derive(Debug, Clone)]
pub struct Append {
    /// The aggregate's id.
    pub aggregate_id: String,
    /// The aggregate's type, checked against an existing aggregate.
    pub aggregate_type: String,
    /// The version the aggregate must be at.
    pub expected: ExpectedVersion,
    /// Makes resending safe: the same id is stored once. Empty: the agent
    /// chooses one, and a resend becomes a second change set.
    pub change_set_id: String,
    /// At least one event.
    pub events: Vec<Event>,
}

impl From<Append> for AppendRequest {
    fn from(append: Append) -> AppendRequest {
        AppendRequest {
            aggregate_id: append.aggregate_id,
            aggregate_type: append.aggregate_type,
            expected_version: append.expected.wire(),
            change_set_id: append.change_set_id,
            events: append.events.into_iter().map(Event::into_request).collect(),
        }
    }
}

/// A client of `hfx.v1.EventStore`; from [`crate::Client::event_store`].
#[derive(Debug, Clone)]
pub struct EventStoreClient {
    /// The generated client on the shared, authorized connection.
    inner: Generated<AuthorizedChannel>,
    /// The deadline of each call, sent to the agent as `grpc-timeout`.
    timeout: Option<Duration>,
}

impl EventStoreClient {
    pub(crate) fn new(channel: AuthorizedChannel) -> EventStoreClient {
        let inner = Generated::new(channel)
            .max_encoding_message_size(MAX_MESSAGE_SIZE)
            .max_decoding_message_size(MAX_MESSAGE_SIZE);
        EventStoreClient { inner, timeout: None }
    }

    /// The same client with a deadline on each call: past it the call fails
    /// with DEADLINE_EXCEEDED (an append may still have been stored: resend
    /// it with the same change set id).
    pub fn with_timeout(mut self, timeout: Duration) -> EventStoreClient {
        self.timeout = Some(timeout);
        self
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(timeout) = self.timeout {
            request.set_timeout(timeout);
        }
        request
    }

    /// Appends a change set ([`Append`], or a raw [`AppendRequest`]);
    /// returns the version it was stored as. A conflict is an error whose
    /// [`Error::current_version`] is set; UNAVAILABLE is resend safe with
    /// the same change set id.
    pub async fn append(&self, append: impl Into<AppendRequest>) -> Result<AppendResponse, Error> {
        let response = self.inner.clone().append(self.request(append.into())).await?;
        Ok(response.into_inner())
    }

    /// One aggregate's change sets from `from_version` on (0 or 1: all).
    pub async fn read(&self, aggregate_id: &str, from_version: i64) -> Result<Messages<ChangeSet>, Error> {
        let request = ReadRequest {
            aggregate_id: aggregate_id.to_owned(),
            from_version,
        };
        let stream = self.inner.clone().read(self.request(request)).await?.into_inner();
        Ok(Messages { stream })
    }

    /// Every change set of [`EventStoreClient::read`], collected.
    pub async fn read_all(&self, aggregate_id: &str, from_version: i64) -> Result<Vec<ChangeSet>, Error> {
        let mut messages = self.read(aggregate_id, from_version).await?;
        let mut change_sets = Vec::new();
        while let Some(change_set) = messages.next().await? {
            change_sets.push(change_set);
        }
        Ok(change_sets)
    }

    /// Stored events in time order, each with the cursor that resumes after it.
    pub async fn replay(&self, request: ReplayRequest) -> Result<Messages<ReplayedEvent>, Error> {
        let stream = self.inner.clone().replay(self.request(request)).await?.into_inner();
        Ok(Messages { stream })
    }
}

/// The messages of a server stream (a read or a replay), one at a time.
#[derive(Debug)]
pub struct Messages<T> {
    /// The response stream.
    stream: Streaming<T>,
}

impl<T> Messages<T> {
    /// The next message; `None` at the end of the stream.
    pub async fn next(&mut self) -> Result<Option<T>, Error> {
        Ok(self.stream.message().await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_versions_take_the_protos_encoding() {
        assert_eq!(ExpectedVersion::NoAggregate.wire(), 0);
        assert_eq!(ExpectedVersion::Any.wire(), -1);
        assert_eq!(ExpectedVersion::Exactly(7).wire(), 7);
    }
}
