//! The gRPC input on its own, with a sink in place of the engine: what it
//! hands the pipeline, what it answers producers, and how it stops.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use eventstash_input_grpc::GrpcInputConfig;
use eventstash_input_grpc::proto::StoreEventRequest;
use eventstash_input_grpc::proto::event_stash_client::EventStashClient;
use eventstash_input_grpc::proto::store_event_request::EventFormat;
use eventstash_plugin_api::{
    BoxError, CancellationToken, EventBatch, EventSink, Input as _, InputContext, PluginContext, SinkError,
};
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// Long enough for any machine; no assertion depends on it.
const PATIENCE: Duration = Duration::from_secs(30);

/// What the sink does with a batch's acknowledgement.
#[derive(Clone, Copy)]
enum Outcome {
    Stored,
    Failed,
}

/// Records `(kind, id)` of every event and settles each batch at once.
struct RecordingSink {
    events: Arc<Mutex<Vec<(String, String)>>>,
    outcome: Outcome,
}

#[async_trait]
impl EventSink for RecordingSink {
    async fn send(&self, batch: EventBatch) -> Result<(), SinkError> {
        let mut events = self.events.lock().unwrap();
        events.extend(batch.events.iter().map(|e| (e.kind.clone(), e.id.clone())));
        match self.outcome {
            Outcome::Stored => batch.ack.delivered(),
            Outcome::Failed => batch.ack.failed("the output is down"),
        }
        Ok(())
    }

    fn max_batch_events(&self) -> usize {
        1024
    }
}

/// A running input on a free port.
struct Running {
    addr: String,
    events: Arc<Mutex<Vec<(String, String)>>>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), BoxError>>,
}

fn start(outcome: Outcome) -> Running {
    // Bound here on port 0 and handed to the input: no port probed and
    // bound later.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let config: GrpcInputConfig = toml::from_str(&format!("bind = \"{addr}\"")).unwrap();
    let input = Box::new(config.build().unwrap().with_listener(listener));
    let events = Arc::new(Mutex::new(Vec::new()));
    let shutdown = CancellationToken::new();
    let (_serving, serving) = tokio::sync::watch::channel(true);
    let ctx = InputContext {
        context: PluginContext::new("main", "grpc#0"),
        sink: Box::new(RecordingSink {
            events: events.clone(),
            outcome,
        }),
        shutdown: shutdown.clone(),
        serving,
    };
    let task = tokio::spawn(input.run(ctx));
    Running {
        addr,
        events,
        shutdown,
        task,
    }
}

/// Connects once the input listens.
async fn client(addr: &str) -> EventStashClient<Channel> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match EventStashClient::connect(format!("http://{addr}")).await {
            Ok(client) => return client,
            Err(error) if tokio::time::Instant::now() > deadline => panic!("the input never listened: {error}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

fn json(kind: &str, id: &str) -> StoreEventRequest {
    StoreEventRequest {
        format: EventFormat::Json as i32,
        data: bytes::Bytes::from_static(b"{\"a\":1}"),
        kind: kind.into(),
        id: id.into(),
    }
}

#[tokio::test]
async fn a_stream_is_answered_success_once_its_events_are_stored() {
    let running = start(Outcome::Stored);
    let mut client = client(&running.addr).await;
    let requests = vec![json("contact.AddressBook", "a"), json("", "b")];
    let response = client.store_event(tokio_stream::iter(requests)).await.unwrap();
    assert!(response.into_inner().success);
    let events = running.events.lock().unwrap().clone();
    assert_eq!(
        events,
        [
            ("contact.AddressBook".to_owned(), "a".to_owned()),
            ("event".to_owned(), "b".to_owned())
        ],
        "in order, the missing kind defaulted"
    );
}

#[tokio::test]
async fn a_stream_whose_events_are_not_stored_ends_unavailable_never_success() {
    let running = start(Outcome::Failed);
    let mut client = client(&running.addr).await;
    let status = client
        .store_event(tokio_stream::iter(vec![json("k", "a")]))
        .await
        .expect_err("no success for events that were not stored");
    assert_eq!(status.code(), tonic::Code::Unavailable);
}

#[tokio::test]
async fn the_input_returns_when_shutdown_is_requested() {
    let running = start(Outcome::Stored);
    client(&running.addr).await;
    running.shutdown.cancel();
    let returned = tokio::time::timeout(PATIENCE, running.task)
        .await
        .expect("the input stops");
    returned.unwrap().unwrap();
}
