//! The in-flight budget: one count of the bytes received from producers and
//! not yet in the pipeline queue, shared by every stream and connection.
//!
//! tonic's decoder keeps a partly received message until it is complete,
//! up to `max_message_size` per stream, and a decoded batch waits outside
//! the queue while the queue is full; neither is bounded by the queue's
//! limits. So every request body is wrapped in a [`BudgetedBody`], which
//! reads gRPC's length-prefixed framing (a flag byte and a 4-byte length
//! before each message) as frames arrive and takes the whole size of each
//! message from a semaphore of `max_inflight_bytes` permits as soon as the
//! message's header is seen. The service gives the room back through the
//! stream's [`StreamCharge`] once the message's event is in the queue; a
//! stream that ends gives back whatever it still holds.
//!
//! While the budget is empty, the body holds the frame it just read and is
//! not read further, so HTTP/2 flow control pushes back on the producer.
//! Taking a message's whole size up front means a stream never waits while
//! holding room for a message it has not finished, so streams cannot
//! deadlock each other. Two bounded waits keep stalled producers from
//! starving the rest: a stream that waits longer than `inflight_timeout`
//! for room, or whose producer sends nothing for that long in the middle of
//! a message, ends with `RESOURCE_EXHAUSTED` and gives its room back.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use eventstash_plugin_api::{BoxError, LogThrottle, PluginContext};
use hyper::body::{Body, Frame, SizeHint};
use metrics::{Counter, Gauge, counter, gauge};
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio::time::Sleep;
use tonic::Status;
use tracing::warn;

use crate::config::{GRPC_HEADER_LEN, Limits};
use crate::framing::Framing;

/// Metric names of the budget.
const INFLIGHT_BYTES: &str = "eventstash_grpc_inflight_bytes";
const STREAMS_REFUSED: &str = "eventstash_grpc_streams_refused_total";

/// How often a refusal is logged at most.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// The budget of one gRPC input; cheap to clone.
#[derive(Clone)]
pub(crate) struct InflightBudget {
    shared: Arc<BudgetShared>,
}

struct BudgetShared {
    /// One permit per byte of `max_inflight_bytes`.
    permits: Arc<Semaphore>,
    /// `max_inflight_bytes`: no message takes more than all of it.
    capacity: usize,
    /// Longest wait for room, and longest stall in the middle of a message.
    timeout: Duration,
    /// Messages announced as larger are refused by the decoder unread, so
    /// they take no room.
    max_message_size: usize,
    /// Refusals are logged once per interval, with how many were not.
    refusal_log: LogThrottle,
    /// Bytes held now.
    held: Gauge,
    /// Streams ended for lack of room or for stalling.
    refused: Counter,
}

impl InflightBudget {
    pub(crate) fn new(limits: &Limits, context: &PluginContext) -> InflightBudget {
        let labels = [
            ("pipeline", context.pipeline.clone()),
            ("plugin", context.plugin.clone()),
        ];
        InflightBudget {
            shared: Arc::new(BudgetShared {
                permits: Arc::new(Semaphore::new(limits.max_inflight_bytes)),
                capacity: limits.max_inflight_bytes,
                timeout: limits.inflight_timeout,
                max_message_size: limits.max_message_size,
                refusal_log: LogThrottle::new(REFUSAL_LOG_INTERVAL),
                held: gauge!(INFLIGHT_BYTES, &labels),
                refused: counter!(STREAMS_REFUSED, &labels),
            }),
        }
    }

    /// Wraps the body of a request from `peer`; the charge is how the
    /// service gives the room of queued messages back.
    pub(crate) fn wrap<B>(&self, body: B, peer: SocketAddr) -> (BudgetedBody<B>, StreamCharge) {
        let charge = StreamCharge(Arc::new(Mutex::new(Charged {
            permit: None,
            messages: VecDeque::new(),
            held: self.shared.held.clone(),
        })));
        let body = BudgetedBody {
            inner: body,
            budget: self.shared.clone(),
            charge: charge.clone(),
            peer,
            framing: Framing::default(),
            sizes: Vec::new(),
            waiting: None,
            stall: None,
            ended: false,
        };
        (body, charge)
    }
}

/// The room one stream holds: its permits and, oldest first, the size of
/// each message it has received and not yet handed to the pipeline queue.
#[derive(Clone)]
pub(crate) struct StreamCharge(Arc<Mutex<Charged>>);

struct Charged {
    permit: Option<OwnedSemaphorePermit>,
    messages: VecDeque<usize>,
    held: Gauge,
}

impl Drop for Charged {
    fn drop(&mut self) {
        if let Some(permit) = &self.permit {
            self.held.decrement(permit.num_permits() as f64);
        }
    }
}

impl StreamCharge {
    fn lock(&self) -> MutexGuard<'_, Charged> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn add(&self, permit: OwnedSemaphorePermit, sizes: &[usize]) {
        let mut charged = self.lock();
        charged.held.increment(permit.num_permits() as f64);
        charged.messages.extend(sizes);
        match &mut charged.permit {
            Some(held) => held.merge(permit),
            None => charged.permit = Some(permit),
        }
    }

    /// Gives back the room of the oldest `count` messages, whose events the
    /// pipeline queue has taken.
    pub(crate) fn release_messages(&self, count: usize) {
        let mut charged = self.lock();
        let count = count.min(charged.messages.len());
        let bytes: usize = charged.messages.drain(..count).sum();
        let Some(permit) = &mut charged.permit else {
            return;
        };
        let bytes = bytes.min(permit.num_permits());
        if let Some(released) = permit.split(bytes) {
            drop(released);
            charged.held.decrement(bytes as f64);
        }
    }
}

type Acquire = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

/// A frame whose messages wait for room.
struct WaitingFrame {
    frame: Frame<Bytes>,
    sizes: Vec<usize>,
    acquire: Acquire,
    deadline: Pin<Box<Sleep>>,
}

/// A request body whose messages take room from the budget; see the module
/// documentation.
pub(crate) struct BudgetedBody<B> {
    inner: B,
    budget: Arc<BudgetShared>,
    charge: StreamCharge,
    /// The producer, for logs.
    peer: SocketAddr,
    framing: Framing,
    /// The sizes of the messages a frame starts (kept to reuse its buffer).
    sizes: Vec<usize>,
    waiting: Option<WaitingFrame>,
    /// Runs while the producer sends nothing in the middle of a message.
    stall: Option<Pin<Box<Sleep>>>,
    /// Set once the body has ended or failed.
    ended: bool,
}

impl<B> BudgetedBody<B> {
    /// Takes room for a frame's new messages: the frame if it may go on
    /// now, `None` if it waits for room (in `self.waiting`).
    fn charge(&mut self, frame: Frame<Bytes>) -> Option<Frame<Bytes>> {
        let Some(data) = frame.data_ref() else {
            return Some(frame);
        };
        let budget = &self.budget;
        // Oversized messages are refused by the decoder from their header.
        let sizes = &mut self.sizes;
        sizes.clear();
        self.framing.advance(data, |length| {
            sizes.push(if length > budget.max_message_size {
                0
            } else {
                GRPC_HEADER_LEN + length
            })
        });
        let need = sizes.iter().sum::<usize>().min(budget.capacity);
        if need == 0 {
            return Some(frame);
        }
        // Only the last message of a frame can be larger than the frame, so
        // `need` is at most a frame plus `max_message_size` (< 4 GiB).
        let permits = u32::try_from(need).unwrap_or(u32::MAX);
        match budget.permits.clone().try_acquire_many_owned(permits) {
            Ok(permit) => {
                self.charge.add(permit, sizes);
                Some(frame)
            }
            Err(TryAcquireError::NoPermits | TryAcquireError::Closed) => {
                self.waiting = Some(WaitingFrame {
                    frame,
                    sizes: std::mem::take(sizes),
                    acquire: Box::pin(budget.permits.clone().acquire_many_owned(permits)),
                    deadline: Box::pin(tokio::time::sleep(budget.timeout)),
                });
                None
            }
        }
    }

    /// Polls the wait for room: the waiting frame once there is room, a
    /// refusal past the deadline.
    fn poll_waiting(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let acquired = match &mut self.waiting {
            None => return Poll::Pending,
            Some(waiting) => match waiting.acquire.as_mut().poll(cx) {
                Poll::Ready(acquired) => acquired.ok(),
                Poll::Pending if waiting.deadline.as_mut().poll(cx).is_ready() => None,
                Poll::Pending => return Poll::Pending,
            },
        };
        // The semaphore is never closed: no permit means the deadline passed.
        match (acquired, self.waiting.take()) {
            (Some(permit), Some(waiting)) => {
                self.charge.add(permit, &waiting.sizes);
                Poll::Ready(Some(Ok(waiting.frame)))
            }
            _ => self.refuse(Refusal::NoRoom),
        }
    }

    /// Ends the stream with `RESOURCE_EXHAUSTED`; its room comes back as
    /// the service drops the stream.
    fn refuse(&mut self, why: Refusal) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.ended = true;
        self.waiting = None;
        self.stall = None;
        self.budget.refused.increment(1);
        let timeout = self.budget.timeout;
        if let Some(suppressed) = self.budget.refusal_log.allow() {
            let peer = self.peer;
            match why {
                Refusal::NoRoom => warn!(
                    %peer, ?timeout, suppressed,
                    "a stream waited too long for room in `max_inflight_bytes`; ended it with RESOURCE_EXHAUSTED"
                ),
                Refusal::Stalled => warn!(
                    %peer, ?timeout, suppressed,
                    "a producer stopped sending in the middle of a message; ended its stream with RESOURCE_EXHAUSTED"
                ),
            }
        }
        let status = match why {
            Refusal::NoRoom => Status::resource_exhausted("the agent is receiving more than it can hold; retry later"),
            Refusal::Stalled => Status::resource_exhausted("message incomplete: no data arrived in time; retry"),
        };
        Poll::Ready(Some(Err(Box::new(status))))
    }
}

/// Why a stream was ended.
#[derive(Clone, Copy)]
enum Refusal {
    /// It waited longer than the timeout for room.
    NoRoom,
    /// Its producer sent nothing in the middle of a message for that long.
    Stalled,
}

impl<B> Body for BudgetedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        if this.waiting.is_some() {
            return this.poll_waiting(cx);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.stall = None;
                match this.charge(frame) {
                    Some(frame) => Poll::Ready(Some(Ok(frame))),
                    None => this.poll_waiting(cx),
                }
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error.into()))),
            Poll::Ready(None) => {
                this.ended = true;
                Poll::Ready(None)
            }
            Poll::Pending if this.framing.mid_message() => {
                let timeout = this.budget.timeout;
                let stall = this.stall.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if stall.as_mut().poll(cx).is_ready() {
                    return this.refuse(Refusal::Stalled);
                }
                Poll::Pending
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || (self.waiting.is_none() && self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    /// A body that yields the given frames, then ends (or stays pending).
    struct Frames {
        frames: VecDeque<Bytes>,
        then_pending: bool,
    }

    impl Body for Frames {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            match self.frames.pop_front() {
                Some(bytes) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
                None if self.then_pending => Poll::Pending,
                None => Poll::Ready(None),
            }
        }
    }

    fn limits(budget: usize, timeout: Duration) -> Limits {
        Limits {
            max_inflight_bytes: budget,
            max_message_size: budget - GRPC_HEADER_LEN,
            inflight_timeout: timeout,
            ..Limits::for_tests()
        }
    }

    fn message(length: usize) -> Vec<u8> {
        let mut bytes = vec![0];
        bytes.extend_from_slice(&(length as u32).to_be_bytes());
        bytes.resize(GRPC_HEADER_LEN + length, 7);
        bytes
    }

    fn peer() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 1))
    }

    async fn next<B: Body<Data = Bytes, Error = BoxError> + Unpin>(body: &mut B) -> Option<Result<Bytes, BoxError>> {
        std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx))
            .await
            .map(|frame| frame.map(|frame| frame.into_data().unwrap_or_default()))
    }

    #[tokio::test]
    async fn a_message_holds_its_whole_size_until_its_event_is_queued() {
        let budget = InflightBudget::new(
            &limits(1000, Duration::from_secs(5)),
            &PluginContext::new("p", "grpc#0"),
        );
        let whole = message(195);
        let frames = Frames {
            frames: VecDeque::from([
                Bytes::copy_from_slice(&whole[..50]),
                Bytes::copy_from_slice(&whole[50..]),
            ]),
            then_pending: false,
        };
        let (mut body, charge) = budget.wrap(frames, peer());
        next(&mut body).await.unwrap().unwrap();
        assert_eq!(
            budget.shared.permits.available_permits(),
            800,
            "the header takes the message's whole size"
        );
        next(&mut body).await.unwrap().unwrap();
        assert_eq!(budget.shared.permits.available_permits(), 800, "held until queued");
        charge.release_messages(1);
        assert_eq!(budget.shared.permits.available_permits(), 1000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_that_finds_no_room_waits_then_is_refused() {
        let budget = InflightBudget::new(
            &limits(1000, Duration::from_secs(5)),
            &PluginContext::new("p", "grpc#0"),
        );
        let big = |bytes: usize| Frames {
            frames: VecDeque::from([Bytes::from(message(bytes)[..100].to_vec())]),
            then_pending: true,
        };
        let (mut first, first_charge) = budget.wrap(big(795), peer());
        next(&mut first).await.unwrap().unwrap();
        let (mut second, _) = budget.wrap(big(500), peer());
        let waited = tokio::time::Instant::now();
        let refused = next(&mut second).await.unwrap().unwrap_err();
        let status = refused.downcast::<Status>().unwrap();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(waited.elapsed(), Duration::from_secs(5));
        assert!(next(&mut second).await.is_none(), "a refused body ends");
        drop((first, first_charge));
        assert_eq!(
            budget.shared.permits.available_permits(),
            1000,
            "an ended stream gives its room back"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_stream_gets_room_when_another_message_is_queued() {
        let budget = InflightBudget::new(
            &limits(1000, Duration::from_secs(5)),
            &PluginContext::new("p", "grpc#0"),
        );
        let (mut first, first_charge) = budget.wrap(
            Frames {
                frames: VecDeque::from([Bytes::from(message(795))]),
                then_pending: true,
            },
            peer(),
        );
        next(&mut first).await.unwrap().unwrap();
        let (mut second, _) = budget.wrap(
            Frames {
                frames: VecDeque::from([Bytes::from(message(500))]),
                then_pending: false,
            },
            peer(),
        );
        let releasing = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            first_charge.release_messages(1);
        };
        let (received, ()) = tokio::join!(next(&mut second), releasing);
        assert_eq!(received.unwrap().unwrap().len(), 505);
    }

    #[tokio::test(start_paused = true)]
    async fn a_producer_that_stalls_mid_message_is_refused_and_its_room_returned() {
        let budget = InflightBudget::new(
            &limits(1000, Duration::from_secs(5)),
            &PluginContext::new("p", "grpc#0"),
        );
        let (mut body, _charge) = budget.wrap(
            Frames {
                frames: VecDeque::from([Bytes::from(message(500)[..10].to_vec())]),
                then_pending: true,
            },
            peer(),
        );
        next(&mut body).await.unwrap().unwrap();
        let stalled = tokio::time::Instant::now();
        let status = next(&mut body)
            .await
            .unwrap()
            .unwrap_err()
            .downcast::<Status>()
            .unwrap();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(stalled.elapsed(), Duration::from_secs(5));
        drop(body);
        drop(_charge);
        assert_eq!(budget.shared.permits.available_permits(), 1000);
    }

    #[tokio::test]
    async fn oversized_messages_take_no_room() {
        let mut limits = limits(1000, Duration::from_secs(5));
        limits.max_message_size = 100;
        let budget = InflightBudget::new(&limits, &PluginContext::new("p", "grpc#0"));
        let (mut body, _charge) = budget.wrap(
            Frames {
                frames: VecDeque::from([Bytes::from(message(900)[..20].to_vec())]),
                then_pending: false,
            },
            peer(),
        );
        next(&mut body).await.unwrap().unwrap();
        assert_eq!(budget.shared.permits.available_permits(), 1000);
    }
}
