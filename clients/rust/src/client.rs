//! [`Client`]: a connection to an agent, and `store`, which sends events as
//! one `hfx.v1.EventStash/StoreEvent` stream and returns once the agent
//! acknowledged them.

use futures::{Stream, StreamExt as _};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::connect::{Authorization, MAX_MESSAGE_SIZE};
use crate::proto::event_stash_client::EventStashClient;
use crate::{ClientBuilder, Error, Event, EventStoreClient};

/// The channel every call goes through: the connection, with the producer
/// token added to each request.
pub type AuthorizedChannel = InterceptedService<Channel, Authorization>;

/// A connection to an eventstash agent (or any `hfx.v1.EventStash` server).
///
/// Cheap to clone: clones share the HTTP/2 connection, and calls on them
/// run concurrently as separate streams.
#[derive(Debug, Clone)]
pub struct Client {
    /// The generated `EventStash` client on the shared connection.
    stash: EventStashClient<AuthorizedChannel>,
    /// The connection, shared by every clone and service client.
    channel: Channel,
    /// The producer token's header, added to every request.
    authorization: Authorization,
}

impl Client {
    /// Connects to `uri` (`host:port` or `http://host:port`) in plain text
    /// without a token; [`Client::builder`] for TLS and tokens.
    pub async fn connect(uri: impl Into<String>) -> Result<Client, Error> {
        ClientBuilder::new(uri).connect().await
    }

    /// A builder for a connection with TLS, mutual TLS or a producer token.
    pub fn builder(uri: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(uri)
    }

    pub(crate) fn new(channel: Channel, authorization: Authorization) -> Client {
        let stash = EventStashClient::new(InterceptedService::new(channel.clone(), authorization.clone()))
            .max_encoding_message_size(MAX_MESSAGE_SIZE)
            .max_decoding_message_size(MAX_MESSAGE_SIZE);
        Client {
            stash,
            channel,
            authorization,
        }
    }

    /// Sends `events` as one stream and returns when the agent acknowledged
    /// every one of them: they are stored (or safely queued, as the agent's
    /// `ack` setting says). On an error, none, some or all of them may be
    /// stored; [`Error::is_resend_safe`] says whether to send them again.
    pub async fn store<I>(&self, events: I) -> Result<(), Error>
    where
        I: IntoIterator<Item = Event>,
        I::IntoIter: Send + 'static,
    {
        self.store_stream(futures::stream::iter(events)).await
    }

    /// Like [`Client::store`], for events produced while the stream is open
    /// (read from a channel, a file, ...): the agent acknowledges once the
    /// stream has ended and all of it is stored. The stream is sent as fast
    /// as the agent takes it; HTTP/2 flow control slows it when the agent's
    /// queues are full.
    pub async fn store_stream<S>(&self, events: S) -> Result<(), Error>
    where
        S: Stream<Item = Event> + Send + 'static,
    {
        let response = self.stash.clone().store_event(events.map(Event::into_request)).await?;
        match response.into_inner().success {
            true => Ok(()),
            false => Err(Error::NotAcknowledged),
        }
    }

    /// A client of the agent's `hfx.v1.EventStore` on the same connection.
    pub fn event_store(&self) -> EventStoreClient {
        EventStoreClient::new(InterceptedService::new(
            self.channel.clone(),
            self.authorization.clone(),
        ))
    }

    /// The connection itself (TLS included, the token not: wrap it in
    /// [`Authorization`]), for other services the agent serves on the same
    /// port, such as `grpc.health.v1.Health`.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The generated `hfx.v1.EventStash` client on this connection (token
    /// included), for what [`Client::store`] does not cover.
    pub fn event_stash(&self) -> EventStashClient<AuthorizedChannel> {
        self.stash.clone()
    }
}
