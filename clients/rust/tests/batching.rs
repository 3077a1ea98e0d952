//! The batching sender against an in-process `hfx.v1.EventStash` server
//! (the generated server of the `server` feature) that can refuse, push
//! back and count: what it acknowledges is exactly what `flush` reports.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use eventstash_client::proto::event_stash_server::{EventStash, EventStashServer};
use eventstash_client::proto::{StoreEventRequest, StoreEventResponse};
use eventstash_client::{BatchOptions, BatchingSender, Client, Error, Event, RetryPolicy};
use tonic::{Code, Request, Response, Status, Streaming};

/// What the test server did.
#[derive(Default)]
struct Counts {
    /// Events of acknowledged streams.
    acknowledged: AtomicUsize,
    /// Streams open now, and the most ever open at once.
    open: AtomicUsize,
    most_open: AtomicUsize,
    /// Streams still to answer RESOURCE_EXHAUSTED before any is taken.
    busy_streams: AtomicUsize,
}

/// Acknowledges streams after a short delay, except: RESOURCE_EXHAUSTED
/// while `busy_streams` lasts, PERMISSION_DENIED for a stream with an
/// event of kind `denied`.
struct TestServer(Arc<Counts>);

#[tonic::async_trait]
impl EventStash for TestServer {
    async fn store_event(
        &self,
        request: Request<Streaming<StoreEventRequest>>,
    ) -> Result<Response<StoreEventResponse>, Status> {
        let counts = &self.0;
        let open = counts.open.fetch_add(1, Ordering::SeqCst) + 1;
        counts.most_open.fetch_max(open, Ordering::SeqCst);
        let answer = receive(counts, request.into_inner()).await;
        counts.open.fetch_sub(1, Ordering::SeqCst);
        answer
    }
}

async fn receive(
    counts: &Counts,
    mut stream: Streaming<StoreEventRequest>,
) -> Result<Response<StoreEventResponse>, Status> {
    let mut events = 0;
    let mut denied = false;
    while let Some(message) = stream.message().await? {
        events += 1;
        denied |= message.kind == "denied";
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    if counts
        .busy_streams
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return Err(Status::resource_exhausted("busy; retry later"));
    }
    if denied {
        return Err(Status::permission_denied("kind denied"));
    }
    counts.acknowledged.fetch_add(events, Ordering::SeqCst);
    Ok(Response::new(StoreEventResponse { success: true }))
}

async fn serve(counts: Arc<Counts>) -> Client {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(EventStashServer::new(TestServer(counts)))
            .serve_with_incoming(incoming),
    );
    Client::connect(addr.to_string()).await.unwrap()
}

fn options() -> BatchOptions {
    BatchOptions {
        max_events: 100,
        max_delay: Duration::from_millis(10),
        max_in_flight: 3,
        buffer: 50,
        retry: RetryPolicy {
            first_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            give_up_after: Duration::from_secs(10),
        },
    }
}

fn event(n: usize) -> Event {
    Event::json("test.Event", &serde_json::json!({ "n": n })).with_id(format!("e-{n}"))
}

/// Sends the events numbered `numbers`.
async fn send_all(sender: &BatchingSender, numbers: std::ops::Range<usize>) {
    for n in numbers {
        sender.send(event(n)).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_returns_once_every_event_is_acknowledged_within_the_stream_limit() {
    let counts = Arc::new(Counts::default());
    let sender = BatchingSender::new(serve(counts.clone()).await, options());
    send_all(&sender, 0..2_050).await;
    sender.flush().await.unwrap();
    assert_eq!(counts.acknowledged.load(Ordering::SeqCst), 2_050);
    assert!(
        counts.most_open.load(Ordering::SeqCst) <= 3,
        "more streams than allowed"
    );
    // A lone event goes out after max_delay, without a flush.
    sender.send(event(9_999)).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while counts.acknowledged.load(Ordering::SeqCst) < 2_051 {
        assert!(tokio::time::Instant::now() < deadline, "the lone event was never sent");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sender.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_agent_is_retried_with_backoff_until_it_takes_the_batches() {
    let counts = Arc::new(Counts::default());
    counts.busy_streams.store(5, Ordering::SeqCst);
    let sender = BatchingSender::new(serve(counts.clone()).await, options());
    send_all(&sender, 0..300).await;
    sender.close().await.unwrap();
    assert_eq!(counts.acknowledged.load(Ordering::SeqCst), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_batch_is_reported_by_flush_and_not_resent() {
    let counts = Arc::new(Counts::default());
    // Batches go out when full or flushed, never split by the clock.
    let options = BatchOptions {
        max_delay: Duration::from_secs(60),
        ..options()
    };
    let sender = BatchingSender::new(serve(counts.clone()).await, options);
    send_all(&sender, 0..100).await;
    sender.flush().await.unwrap();
    // A batch of its own: 10 events, one denied.
    send_all(&sender, 100..109).await;
    sender
        .send(Event::json("denied", &serde_json::json!({})))
        .await
        .unwrap();
    let error = sender.flush().await.unwrap_err();
    let Error::BatchesFailed { events, batches, .. } = &error else {
        panic!("{error:?}");
    };
    assert_eq!((*events, *batches), (10, 1));
    assert_eq!(error.code(), Some(Code::PermissionDenied));
    assert!(!error.is_resend_safe());
    assert_eq!(counts.acknowledged.load(Ordering::SeqCst), 100);
    // The failure was reported once; later batches start clean.
    sender.send(event(200)).await.unwrap();
    sender.close().await.unwrap();
    assert_eq!(counts.acknowledged.load(Ordering::SeqCst), 101);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_stays_busy_fails_the_batch_as_resend_safe() {
    let counts = Arc::new(Counts::default());
    counts.busy_streams.store(usize::MAX, Ordering::SeqCst);
    let mut options = options();
    options.retry.give_up_after = Duration::from_millis(50);
    let sender = BatchingSender::new(serve(counts.clone()).await, options);
    sender.send(event(0)).await.unwrap();
    let error = sender.close().await.unwrap_err();
    assert_eq!(error.code(), Some(Code::ResourceExhausted));
    assert!(error.is_resend_safe());
    assert_eq!(counts.acknowledged.load(Ordering::SeqCst), 0);
}
