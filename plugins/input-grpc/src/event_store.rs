//! The `hfx.v1.EventStore` service: `Append`, `Read` and `Replay`, served
//! on the same port as `hfx.v1.EventStash` by a gRPC input the pipeline
//! file gives an event store or replay stores (see
//! [`GrpcInput::with_event_store`]).
//!
//! `Append` hands the request to the [`EventStore`] (the engine's wrapper
//! decodes payloads with the pipeline's filters first) and, once the change
//! set is committed, hands its events to the pipeline like `StoreEvent`
//! events, waiting for the same acknowledgement, so the other outputs
//! (Elasticsearch, files) get them too. If that hand-off fails or the agent
//! dies before it, the client gets no success and sends the append again:
//! the store recognises the change set id, answers with the stored version
//! and the stored events are handed on again. Appends in flight finish
//! before the drain; `Read` and `Replay` streams end at shutdown with
//! UNAVAILABLE, and a replay client resumes elsewhere from its last cursor.
//!
//! `Read` and `Replay` stream page by page through a small bounded channel:
//! a slow client holds one page and the channel, never a result set.

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use eventstash_plugin_api::{
    BoxError, ChangeSet, DEFAULT_REPLAY_PAGE, Event, EventBatch, EventSink, EventStore, EventStoreError,
    ExpectedVersion, Format, Input, InputContext, MAX_REPLAY_PAGE, MAX_VERSION, NewChangeSet, ReplayCursor,
    ReplayError, ReplayQuery, ReplayReader, ReplaySelector, ReplaySource, ReplayedEvent, ack_group, parse_timestamp,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::metadata::MetadataMap;
use tonic::service::Routes;
use tonic::{Code, Request, Response, Status};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tracing::{debug, info, warn};

use crate::auth::{Producer, kind_denied, producer_of, read_denied};
use crate::inflight::StreamCharge;
use crate::proto;
use crate::proto::event_store_server::{EventStore as EventStoreRpc, EventStoreServer};
use crate::proto::store_event_request::EventFormat;
use crate::proto::{AppendRequest, AppendResponse, ReadRequest, ReplayRequest, StoreEventRequest};
use crate::server::GrpcInput;
use crate::service::to_event;

/// The service's full name, as health checks name it.
const SERVICE_NAME: &str = "hfx.v1.EventStore";
/// Change sets fetched per `Read` page.
const READ_PAGE: usize = 100;
/// Messages a stream buffers ahead of a slow client.
const STREAM_BUFFER: usize = 256;
/// `Read` and `Replay` streams served at once by one input; each holds a
/// page and its buffer, so this bounds their memory. Beyond it a new one
/// gets RESOURCE_EXHAUSTED.
const MAX_READ_STREAMS: usize = 64;
/// Trailing metadata of a conflict: the aggregate's current version.
const CURRENT_VERSION: &str = "x-current-version";
/// Trailing metadata of a stored change set whose hand-off failed: its
/// version and its id.
const STORED_VERSION: &str = "x-stored-version";
const CHANGE_SET_ID: &str = "x-change-set-id";

/// What the event store service serves: the store (for `Append` and
/// `Read`) and the replay stores by id, the default first.
#[derive(Clone, Default)]
pub struct EventStoreBackends {
    /// The event store; `None`: `Append` and `Read` answer UNIMPLEMENTED.
    pub store: Option<Arc<dyn EventStore>>,
    /// Replay stores by their pipeline ids; empty: `Replay` answers
    /// UNIMPLEMENTED.
    pub replay: Vec<(String, Arc<dyn ReplaySource>)>,
}

impl std::fmt::Debug for EventStoreBackends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStoreBackends")
            .field("store", &self.store.is_some())
            .field("replay", &self.replay.iter().map(|(id, _)| id).collect::<Vec<_>>())
            .finish()
    }
}

/// A gRPC input that serves `hfx.v1.EventStore` beside `hfx.v1.EventStash`.
#[derive(Debug)]
pub struct GrpcInputWithEventStore {
    /// The input, its address and limits.
    input: GrpcInput,
    /// What the event store service serves.
    backends: EventStoreBackends,
}

impl GrpcInput {
    /// Serves `hfx.v1.EventStore` too, backed by `backends`.
    pub fn with_event_store(self, backends: EventStoreBackends) -> GrpcInputWithEventStore {
        GrpcInputWithEventStore { input: self, backends }
    }
}

#[async_trait]
impl Input for GrpcInputWithEventStore {
    async fn run(self: Box<Self>, ctx: InputContext) -> Result<(), BoxError> {
        self.input.serve(ctx, Some(self.backends)).await
    }
}

/// What the server lends the service: the pipeline queue, the drain's
/// tracker, the health reporter and the agent's signals.
pub(crate) struct ServeContext<'a> {
    /// The pipeline queue, held weakly by the service.
    pub(crate) sink: &'a Arc<dyn EventSink>,
    /// Appends in flight count as streams the drain waits for.
    pub(crate) appends: &'a TaskTracker,
    /// Where `hfx.v1.EventStore`'s status is reported.
    pub(crate) health: &'a HealthReporter,
    /// Whether the agent is fit to take traffic.
    pub(crate) serving: &'a tokio::sync::watch::Receiver<bool>,
    /// Cancelled when the agent shuts down.
    pub(crate) shutdown: &'a CancellationToken,
    /// The largest request accepted.
    pub(crate) max_message_size: usize,
    /// Deepest nesting of a JSON payload stored as `data`.
    pub(crate) max_json_depth: usize,
}

impl EventStoreBackends {
    /// Adds the service to `routes`, mirrors the agent's health under its
    /// name (NOT_SERVING until the store is ready), and readies the store
    /// (its tables) in the background.
    pub(crate) fn serve_on(self, routes: Routes, ctx: ServeContext<'_>) -> Routes {
        let (store_ready, ready_now) = tokio::sync::watch::channel(self.store.is_none());
        tokio::spawn(report_health(
            ctx.health.clone(),
            ctx.serving.clone(),
            ready_now,
            ctx.shutdown.clone(),
        ));
        if let Some(store) = &self.store {
            tokio::spawn(ready(store.clone(), store_ready, ctx.shutdown.clone()));
        }
        let service = EventStoreService {
            backends: self,
            sink: Arc::downgrade(ctx.sink),
            appends: ctx.appends.clone(),
            shutdown: ctx.shutdown.clone(),
            max_json_depth: ctx.max_json_depth,
            readers: Arc::new(Semaphore::new(MAX_READ_STREAMS)),
        };
        routes.add_service(EventStoreServer::new(service).max_decoding_message_size(ctx.max_message_size))
    }
}

/// Sets up the store at start (its tables), retrying until it works, so
/// that the first append does not pay for it.
async fn ready(store: Arc<dyn EventStore>, store_ready: tokio::sync::watch::Sender<bool>, shutdown: CancellationToken) {
    let mut backoff = eventstash_plugin_api::Backoff::default();
    loop {
        match store.ready().await {
            Ok(()) => {
                info!("event store ready");
                store_ready.send_replace(true);
                return;
            }
            Err(error) => warn!(%error, "event store not ready; appends fail until it is"),
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.next_delay()) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// Mirrors the agent's health as `hfx.v1.EventStore`, NOT_SERVING until the
/// store is ready (its tables exist) and from the start of the drain.
async fn report_health(
    health: HealthReporter,
    mut serving: tokio::sync::watch::Receiver<bool>,
    mut store_ready: tokio::sync::watch::Receiver<bool>,
    shutdown: CancellationToken,
) {
    // Readying ends (ready, or shutdown) by dropping its sender.
    let mut readying = true;
    loop {
        let up = *serving.borrow_and_update() && *store_ready.borrow_and_update();
        let status = if up && !shutdown.is_cancelled() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        health.set_service_status(SERVICE_NAME, status).await;
        tokio::select! {
            changed = serving.changed() => if changed.is_err() { return },
            changed = store_ready.changed(), if readying => readying = changed.is_ok(),
            () = shutdown.cancelled() => {
                health.set_service_status(SERVICE_NAME, ServingStatus::NotServing).await;
                return;
            }
        }
    }
}

/// Serves the three rpcs.
struct EventStoreService {
    /// The store and the replay stores.
    backends: EventStoreBackends,
    /// The pipeline queue, gone once the input has stopped.
    sink: Weak<dyn EventSink>,
    /// Appends in flight, which the drain waits for.
    appends: TaskTracker,
    /// Ends `Read` and `Replay` streams at shutdown.
    shutdown: CancellationToken,
    /// Deepest nesting of a JSON payload stored as `data`.
    max_json_depth: usize,
    /// Room for `Read` and `Replay` streams.
    readers: Arc<Semaphore>,
}

type MessageStream<T> = ReceiverStream<Result<T, Status>>;

#[tonic::async_trait]
impl EventStoreRpc for EventStoreService {
    async fn append(&self, request: Request<AppendRequest>) -> Result<Response<AppendResponse>, Status> {
        let _in_flight = self.appends.token();
        // The request's room in the in-flight budget is held until its
        // events are in the pipeline queue, as for `StoreEvent`.
        let charge = request.extensions().get::<StreamCharge>().cloned();
        let producer = producer_of(&request).cloned();
        let store = self.store()?;
        let mut change_set = new_change_set(request.into_inner(), self.max_json_depth)?;
        if let Some(producer) = &producer {
            stamp_producer(&mut change_set, producer)?;
        }
        let change_set_id = change_set.change_set_id.clone();
        let appended = store.append(change_set).await.map_err(|error| store_status(&error))?;
        let version = appended.version;
        self.hand_off(appended.events, version, &change_set_id, charge).await?;
        Ok(Response::new(AppendResponse {
            version: version as i64,
            already_stored: appended.already_stored,
            change_set_id,
        }))
    }

    type ReadStream = MessageStream<proto::ChangeSet>;

    async fn read(&self, request: Request<ReadRequest>) -> Result<Response<Self::ReadStream>, Status> {
        let producer = producer_of(&request).cloned();
        let store = self.store()?;
        let reading = self.reader()?;
        let ReadRequest {
            aggregate_id,
            from_version,
        } = request.into_inner();
        if aggregate_id.is_empty() {
            return Err(Status::invalid_argument("aggregate_id must not be empty"));
        }
        let from_version = match u64::try_from(from_version) {
            Ok(version) if version <= MAX_VERSION => version.max(1),
            _ => {
                return Err(Status::invalid_argument(format!(
                    "from_version {from_version} is not a version: use 0 (from the start) up to {MAX_VERSION}"
                )));
            }
        };
        if store
            .aggregate(&aggregate_id)
            .await
            .map_err(|e| store_status(&e))?
            .is_none()
        {
            return Err(store_status(&EventStoreError::NotFound(aggregate_id)));
        }
        let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let _reading = reading;
            let mut next = Some(from_version);
            while let Some(version) = next {
                let page = tokio::select! {
                    page = store.read_page(&aggregate_id, version, READ_PAGE) => page,
                    () = shutdown.cancelled() => Err(EventStoreError::Unavailable("the agent is shutting down".to_owned())),
                };
                let page = match page {
                    Ok(page) => page,
                    Err(error) => {
                        let _ = sender.send(Err(store_status(&error))).await;
                        return;
                    }
                };
                next = page.next_version;
                for change_set in page.change_sets {
                    // A change set is read whole or not at all.
                    if let Some(producer) = &producer
                        && let Some(event) = change_set.events.iter().find(|event| !producer.may_read(&event.kind))
                    {
                        let _ = sender.send(Err(read_denied(producer, &event.kind))).await;
                        return;
                    }
                    if sender.send(Ok(change_set_message(change_set))).await.is_err() {
                        return; // the client went away
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    type ReplayStream = MessageStream<proto::ReplayedEvent>;

    async fn replay(&self, request: Request<ReplayRequest>) -> Result<Response<Self::ReplayStream>, Status> {
        let producer = producer_of(&request).cloned();
        let request = request.into_inner();
        let source = self.replay_source(&request.store)?;
        let (query, cursor) = replay_query(&request)?;
        if let (Some(producer), ReplaySelector::Kind(kind)) = (&producer, &query.selector)
            && !producer.may_read(kind)
        {
            return Err(read_denied(producer, kind));
        }
        let reading = self.reader()?;
        let reader = source
            .open(query, cursor)
            .await
            .map_err(|error| replay_status(&error))?;
        let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let _reading = reading;
            stream_replay(reader, sender, producer, shutdown).await;
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}

impl EventStoreService {
    /// Room for one more `Read` or `Replay` stream, held until it ends.
    fn reader(&self) -> Result<OwnedSemaphorePermit, Status> {
        self.readers.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "{MAX_READ_STREAMS} Read and Replay streams are open on this agent; retry later"
            ))
        })
    }

    fn store(&self) -> Result<Arc<dyn EventStore>, Status> {
        self.backends.store.clone().ok_or_else(|| {
            Status::unimplemented("this agent has no event store: its gRPC input names no `event_store`")
        })
    }

    fn replay_source(&self, id: &str) -> Result<Arc<dyn ReplaySource>, Status> {
        let sources = &self.backends.replay;
        if sources.is_empty() {
            return Err(Status::unimplemented(
                "this agent replays nothing: its gRPC input names no `replay` stores",
            ));
        }
        let found = if id.is_empty() {
            sources.first()
        } else {
            sources.iter().find(|(name, _)| name == id)
        };
        found.map(|(_, source)| source.clone()).ok_or_else(|| {
            let known: Vec<&str> = sources.iter().map(|(name, _)| name.as_str()).collect();
            Status::invalid_argument(format!("no replay store `{id}` (known: {})", known.join(", ")))
        })
    }

    /// Hands the committed events to the pipeline and waits for their
    /// acknowledgement, as `StoreEvent` does; gives the request's room in
    /// the in-flight budget (`charge`) back once they are queued.
    async fn hand_off(
        &self,
        events: Vec<Event>,
        version: u64,
        change_set_id: &str,
        charge: Option<StreamCharge>,
    ) -> Result<(), Status> {
        let not_handed_on = |reason: &str| {
            debug!(version, %reason, "appended change set not handed to the pipeline");
            let mut metadata = MetadataMap::new();
            metadata.insert(STORED_VERSION, version.into());
            // A client that left the id to the agent learns it here, to
            // send the same append again.
            if let Ok(id) = change_set_id.parse() {
                metadata.insert(CHANGE_SET_ID, id);
            }
            Status::with_metadata(
                Code::Unavailable,
                format!(
                    "the change set is stored as version {version} but not yet handed to every output; \
                     send the same append (same change_set_id) again"
                ),
                metadata,
            )
        };
        let sink = self
            .sink
            .upgrade()
            .ok_or_else(|| not_handed_on("the input has stopped"))?;
        let (ack, stored) = ack_group();
        let batch = EventBatch {
            events,
            ack: ack.share(),
            flush: true,
        };
        let sent = sink.send(batch).await;
        if let Some(charge) = charge {
            // The request is one message; its events are queued now.
            charge.release_messages(1);
        }
        ack.delivered();
        sent.map_err(|error| not_handed_on(&error.to_string()))?;
        stored.wait().await.map_err(|error| not_handed_on(&error.reason))
    }
}

/// Checks an append and turns it into a change set. Events get the ids
/// `<change_set_id>-<n>` when they have none, so that a change set handed
/// on twice (a re-send) overwrites itself in outputs keyed by event id.
fn new_change_set(request: AppendRequest, max_json_depth: usize) -> Result<NewChangeSet, Status> {
    let expected = ExpectedVersion::from_wire(request.expected_version).map_err(|error| store_status(&error))?;
    if request.aggregate_id.is_empty() {
        return Err(Status::invalid_argument("aggregate_id must not be empty"));
    }
    if request.aggregate_type.is_empty() {
        return Err(Status::invalid_argument("aggregate_type must not be empty"));
    }
    if request.events.is_empty() {
        return Err(Status::invalid_argument("a change set needs at least one event"));
    }
    let change_set_id = if request.change_set_id.is_empty() {
        NewChangeSet::new_id()
    } else {
        request.change_set_id
    };
    let received_at = Utc::now();
    let events = request
        .events
        .into_iter()
        .enumerate()
        .map(|(n, message)| {
            let id = if message.id.is_empty() {
                format!("{change_set_id}-{n}")
            } else {
                message.id
            };
            to_event(StoreEventRequest { id, ..message }, received_at, max_json_depth)
        })
        .collect();
    Ok(NewChangeSet {
        aggregate_id: request.aggregate_id,
        aggregate_type: request.aggregate_type,
        expected,
        change_set_id,
        events,
    })
}

/// Refuses a change set with a kind its producer may not write, and
/// records the producer as the `source` of its events.
fn stamp_producer(change_set: &mut NewChangeSet, producer: &Producer) -> Result<(), Status> {
    if let Some(event) = change_set.events.iter().find(|event| !producer.may_write(&event.kind)) {
        return Err(kind_denied(producer, &event.kind));
    }
    for event in &mut change_set.events {
        event.source = Some(producer.name().to_owned());
    }
    Ok(())
}

/// Checks a replay request.
fn replay_query(request: &ReplayRequest) -> Result<(ReplayQuery, Option<ReplayCursor>), Status> {
    let selectors = [
        (!request.kind.is_empty()).then(|| ReplaySelector::Kind(request.kind.clone())),
        (!request.aggregate_type.is_empty()).then(|| ReplaySelector::AggregateType(request.aggregate_type.clone())),
        (!request.event_source.is_empty()).then(|| ReplaySelector::Source(request.event_source.clone())),
    ];
    let mut chosen = selectors.into_iter().flatten();
    let (Some(selector), None) = (chosen.next(), chosen.next()) else {
        return Err(Status::invalid_argument(
            "set exactly one of kind, aggregate_type and event_source",
        ));
    };
    let time = |name: &str, text: &str| -> Result<Option<DateTime<Utc>>, Status> {
        if text.is_empty() {
            return Ok(None);
        }
        parse_timestamp(text)
            .map(Some)
            .map_err(|_| Status::invalid_argument(format!("{name} {text:?} is not an RFC 3339 time")))
    };
    let from = time("from", &request.from)?;
    let until = time("until", &request.until)?;
    if let (Some(from), Some(until)) = (from, until)
        && from >= until
    {
        return Err(Status::invalid_argument("from must be before until"));
    }
    let page_size = match request.page_size as usize {
        0 => DEFAULT_REPLAY_PAGE,
        n => n.min(MAX_REPLAY_PAGE),
    };
    let cursor = (!request.cursor.is_empty()).then(|| ReplayCursor::from_client(request.cursor.clone()));
    Ok((
        ReplayQuery {
            selector,
            from,
            until,
            page_size,
        },
        cursor,
    ))
}

/// Sends a replay's pages to the client until the end, a failure, the
/// client's departure or shutdown; then releases the reader. Events of
/// kinds `producer` may not read are left out (a replay by kind was
/// refused up front if that kind is not readable).
async fn stream_replay(
    mut reader: Box<dyn ReplayReader>,
    sender: mpsc::Sender<Result<proto::ReplayedEvent, Status>>,
    producer: Option<Arc<Producer>>,
    shutdown: CancellationToken,
) {
    let mut sent = 0u64;
    loop {
        let page = tokio::select! {
            page = reader.next_page() => page,
            () = shutdown.cancelled() => Err(ReplayError::Unavailable(
                "the agent is shutting down; resume from the last cursor".to_owned(),
            )),
        };
        match page {
            Ok(events) if events.is_empty() => break,
            Ok(events) => {
                let readable = |replayed: &ReplayedEvent| {
                    producer
                        .as_ref()
                        .is_none_or(|producer| producer.may_read(&replayed.event.kind))
                };
                for event in events.into_iter().filter(readable) {
                    if sender.send(Ok(replayed_message(event))).await.is_err() {
                        debug!(sent, "replay client went away");
                        reader.close().await;
                        return;
                    }
                    sent += 1;
                }
            }
            Err(error) => {
                let _ = sender.send(Err(replay_status(&error))).await;
                break;
            }
        }
    }
    reader.close().await;
    info!(events = sent, "replay finished");
}

fn event_message(event: &Event) -> StoreEventRequest {
    let (format, data) = event.stored_payload();
    StoreEventRequest {
        format: match format {
            Format::Json => EventFormat::Json as i32,
            Format::Protobuf => EventFormat::Protobuf as i32,
        },
        data,
        kind: event.kind.clone(),
        id: event.id.clone(),
    }
}

fn change_set_message(change_set: ChangeSet) -> proto::ChangeSet {
    proto::ChangeSet {
        events: change_set.events.iter().map(event_message).collect(),
        aggregate_id: change_set.aggregate_id,
        aggregate_type: change_set.aggregate_type,
        version: change_set.version as i64,
        change_set_id: change_set.change_set_id,
        timestamp: change_set
            .stored_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    }
}

fn replayed_message(replayed: ReplayedEvent) -> proto::ReplayedEvent {
    let change_set = replayed
        .change_set
        .unwrap_or_else(|| eventstash_plugin_api::ChangeSetRef {
            aggregate_id: String::new(),
            aggregate_type: String::new(),
            version: 0,
            change_set_id: String::new(),
        });
    proto::ReplayedEvent {
        event: Some(event_message(&replayed.event)),
        source: replayed.event.source.clone().unwrap_or_default(),
        timestamp: replayed.event.timestamp(),
        cursor: replayed.cursor.as_str().to_owned(),
        aggregate_id: change_set.aggregate_id,
        aggregate_type: change_set.aggregate_type,
        version: change_set.version as i64,
        change_set_id: change_set.change_set_id,
    }
}

/// The status of a store error. Conflicts carry the current version in the
/// message and in `x-current-version`. Store failures are logged and
/// answered with a fixed sentence: their text names tables and endpoints.
fn store_status(error: &EventStoreError) -> Status {
    match error {
        EventStoreError::Conflict { current, .. } => {
            let mut metadata = MetadataMap::new();
            metadata.insert(CURRENT_VERSION, (*current).into());
            Status::with_metadata(Code::Aborted, error.to_string(), metadata)
        }
        EventStoreError::WrongType { .. } => Status::failed_precondition(error.to_string()),
        EventStoreError::ChangeSetIdTaken { .. } => Status::already_exists(error.to_string()),
        EventStoreError::NotFound(_) => Status::not_found(error.to_string()),
        EventStoreError::Invalid(_) => Status::invalid_argument(error.to_string()),
        EventStoreError::Inconsistent(reason) => {
            warn!(%reason, "event store data is inconsistent");
            Status::internal("the event store's tables disagree; an operator must check them")
        }
        EventStoreError::Unavailable(reason) => {
            warn!(%reason, "event store request failed");
            Status::unavailable("the event store cannot be reached; retry later")
        }
    }
}

fn replay_status(error: &ReplayError) -> Status {
    match error {
        ReplayError::BadCursor(_) | ReplayError::Unsupported(_) => Status::invalid_argument(error.to_string()),
        ReplayError::Unavailable(reason) => {
            warn!(%reason, "replay failed");
            Status::unavailable("the replay store cannot be read; resume from the last cursor later")
        }
    }
}

#[cfg(test)]
mod tests {
    use eventstash_plugin_api::DEFAULT_MAX_JSON_DEPTH;

    use super::*;

    fn request() -> AppendRequest {
        AppendRequest {
            aggregate_id: "order-1".into(),
            aggregate_type: "Order".into(),
            expected_version: 0,
            change_set_id: "cs-1".into(),
            events: vec![StoreEventRequest {
                format: EventFormat::Json as i32,
                data: bytes::Bytes::from_static(b"{}"),
                kind: "order.Placed".into(),
                id: String::new(),
            }],
        }
    }

    #[test]
    fn events_without_ids_are_named_after_their_change_set() {
        let change_set = new_change_set(request(), DEFAULT_MAX_JSON_DEPTH).unwrap();
        assert_eq!(change_set.events[0].id, "cs-1-0");
        let mut anonymous = request();
        anonymous.change_set_id.clear();
        assert!(
            !new_change_set(anonymous, DEFAULT_MAX_JSON_DEPTH)
                .unwrap()
                .change_set_id
                .is_empty()
        );
    }

    #[test]
    fn bad_appends_are_invalid_arguments() {
        let mut cases = vec![request(), request(), request(), request(), request()];
        cases[0].aggregate_id.clear();
        cases[1].aggregate_type.clear();
        cases[2].events.clear();
        cases[3].expected_version = -7;
        cases[4].expected_version = i64::MAX;
        for case in cases {
            assert_eq!(
                new_change_set(case, DEFAULT_MAX_JSON_DEPTH).unwrap_err().code(),
                Code::InvalidArgument
            );
        }
    }

    #[test]
    fn conflicts_carry_the_current_version_in_metadata() {
        let status = store_status(&EventStoreError::Conflict {
            aggregate_id: "a".into(),
            expected: ExpectedVersion::Exactly(3),
            current: 5,
        });
        assert_eq!(status.code(), Code::Aborted);
        assert_eq!(status.metadata().get(CURRENT_VERSION).unwrap(), "5");
        assert!(status.message().contains("version 5"), "{}", status.message());
    }

    #[test]
    fn replay_requests_need_exactly_one_selector_and_real_times() {
        let mut request = ReplayRequest::default();
        assert!(replay_query(&request).is_err());
        request.kind = "k".into();
        assert!(replay_query(&request).is_ok());
        request.aggregate_type = "T".into();
        assert!(replay_query(&request).is_err());
        request.aggregate_type.clear();
        request.from = "yesterday".into();
        assert_eq!(replay_query(&request).unwrap_err().code(), Code::InvalidArgument);
    }
}
