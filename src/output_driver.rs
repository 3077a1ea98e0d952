//! Drives one output: gathers batches from its queue, writes them, settles
//! their acks, and keeps the output's metrics and health.
//!
//! A batch is written when it reaches the output's size or byte limit, when
//! its first event has waited `batch_delay_ms`, or at once when it holds the
//! last events of a producer that is now waiting for its acknowledgement —
//! waiting longer would only delay that producer. Up to `concurrency`
//! writes run at once; while all of them are busy, what arrives joins the
//! next batch (group commit: producers that end their streams during one
//! sync share the next). Writes are started in queue order (see
//! `Output::start_write`). When the queue closes, the driver writes what is
//! left, waits for its writes and closes the output: that is the drain.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use eventstash_plugin_api::{AckHandle, BoxError, Event, OutageReport, Output, OutputBatch};
use metrics::{Counter, Histogram, counter, histogram};
use tokio::sync::mpsc::error::TryRecvError;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};
use tracing::{debug, error, info};

use crate::config::{BatchSettings, OutputPlugin};
use crate::metrics::{BATCH_EVENTS, BATCH_SECONDS, EVENTS_FAILED, EVENTS_OUT};
use crate::queue::{QueueReceiver, Queued};

/// At most one "could not store" error line per output per this interval.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// What the pipeline puts on an output's queue: one input batch's events,
/// shared with the other outputs, and this output's claim on their ack.
#[derive(Debug)]
pub(crate) struct OutputItem {
    /// The events.
    pub(crate) events: Arc<Vec<Event>>,
    /// This output's claims: the producer's (while it waits for delivery)
    /// and the persisted record's.
    pub(crate) acks: Vec<AckHandle>,
    /// The producer is waiting: write without delay.
    pub(crate) flush: bool,
}

/// Queue items gathered into one write.
struct PendingWrite {
    items: Vec<Queued<OutputItem>>,
    events: usize,
    bytes: usize,
    flush: bool,
}

impl PendingWrite {
    fn new() -> Self {
        PendingWrite {
            items: Vec::new(),
            events: 0,
            bytes: 0,
            flush: false,
        }
    }

    fn push(&mut self, item: Queued<OutputItem>) {
        self.events += item.events;
        self.bytes += item.bytes;
        self.flush |= item.item.flush;
        self.items.push(item);
    }

    fn is_ready(&self, settings: &BatchSettings) -> bool {
        self.flush || self.is_full(settings)
    }

    fn is_full(&self, settings: &BatchSettings) -> bool {
        self.events >= settings.max_events || self.bytes >= settings.max_bytes
    }
}

/// Everything a write needs, shared by the concurrent writes of one output.
struct Writer {
    /// The output's id, on every log line.
    id: String,
    /// The plugin.
    output: Arc<dyn Output>,
    /// Failed writes: the output's health, and a few log lines per outage.
    outage: OutageReport,
    /// `eventstash_events_out_total` of this output.
    out: Counter,
    /// `eventstash_events_failed_total` of this output.
    failed: Counter,
    /// Events per write.
    batch_events: Histogram,
    /// Seconds per write.
    batch_seconds: Histogram,
    /// Events stored, for the drain report.
    delivered: Arc<AtomicU64>,
}

/// One output and its batching loop.
pub(crate) struct OutputDriver {
    writer: Arc<Writer>,
    settings: BatchSettings,
}

impl OutputDriver {
    pub(crate) fn new(pipeline: &str, plugin: OutputPlugin) -> OutputDriver {
        let labels = [("pipeline", pipeline.to_owned()), ("plugin", plugin.id.clone())];
        let writer = Writer {
            output: plugin.output,
            outage: OutageReport::new(plugin.health, ERROR_LOG_INTERVAL),
            out: counter!(EVENTS_OUT, &labels),
            failed: counter!(EVENTS_FAILED, &labels),
            batch_events: histogram!(BATCH_EVENTS, &labels),
            batch_seconds: histogram!(BATCH_SECONDS, &labels),
            delivered: Arc::new(AtomicU64::new(0)),
            id: plugin.id,
        };
        OutputDriver {
            writer: Arc::new(writer),
            settings: plugin.batch,
        }
    }

    pub(crate) fn id(&self) -> &str {
        &self.writer.id
    }

    /// Events this output has stored, for the drain report.
    pub(crate) fn delivered_counter(&self) -> Arc<AtomicU64> {
        self.writer.delivered.clone()
    }

    /// Runs until the queue is closed and drained, then closes the output.
    pub(crate) async fn run(self, mut queue: QueueReceiver<OutputItem>) {
        let settings = self.settings;
        let mut writes = JoinSet::new();
        let mut queue_closed = false;
        while let Some(first) = queue.recv().await {
            let mut pending = PendingWrite::new();
            pending.push(first);
            let deadline = Instant::now() + settings.delay;
            while !pending.is_ready(&settings) {
                // Take what is already queued before arming the timer.
                let next = match queue.try_recv() {
                    Ok(item) => Some(item),
                    Err(TryRecvError::Disconnected) => None,
                    Err(TryRecvError::Empty) => tokio::select! {
                        item = queue.recv() => item,
                        () = sleep_until(deadline) => break,
                    },
                };
                match next {
                    Some(item) => pending.push(item),
                    None => break,
                }
            }
            // Group commit: what arrives while every write slot is busy (a
            // sync in progress) joins this batch and shares its sync, instead
            // of each producer's last events costing a sync of their own.
            while writes.len() >= settings.concurrency {
                if pending.is_full(&settings) || queue_closed {
                    writes.join_next().await;
                    continue;
                }
                tokio::select! {
                    biased;
                    _ = writes.join_next() => {}
                    item = queue.recv() => match item {
                        Some(item) => pending.push(item),
                        None => queue_closed = true,
                    },
                }
            }
            writes.spawn(self.writer.clone().start(pending));
        }
        while writes.join_next().await.is_some() {}
        let id = &self.writer.id;
        match self.writer.output.close().await {
            Ok(()) => info!(output = %id, "output drained and closed"),
            Err(error) => error!(output = %id, %error, "output failed to close; its last writes may not be synced"),
        }
    }
}

impl Writer {
    /// Hands one batch to the output now, in queue order, and returns the
    /// rest of its write: waiting for the outcome, recording it and
    /// settling the batch's claims.
    fn start(self: Arc<Self>, pending: PendingWrite) -> impl Future<Output = ()> + Send + 'static {
        let mut batch = OutputBatch::default();
        for queued in &pending.items {
            batch.push(queued.item.events.clone());
        }
        let events = batch.len() as u64;
        let started = Instant::now();
        // Only flush markers: nothing to write, nothing to wait for.
        let write = (!batch.is_empty()).then(|| self.output.clone().start_write(batch));
        async move {
            let Some(write) = write else {
                settle(pending.items, Ok(()));
                return;
            };
            let outcome = write.await;
            self.record(events, started.elapsed(), &outcome);
            let id = &self.id;
            settle(pending.items, outcome.map_err(|e| format!("output {id}: {e}")));
        }
    }

    fn record(&self, events: u64, elapsed: Duration, outcome: &Result<(), BoxError>) {
        self.batch_events.record(events as f64);
        self.batch_seconds.record(elapsed.as_secs_f64());
        match outcome {
            Ok(()) => {
                debug!(output = %self.id, events, ?elapsed, "batch written");
                self.out.increment(events);
                self.delivered.fetch_add(events, Ordering::Relaxed);
                if self.outage.recovered().is_some() {
                    info!(output = %self.id, "output recovered");
                }
            }
            Err(error) => {
                self.failed.increment(events);
                if let Some(line) = self.outage.failed(error.to_string()) {
                    error!(
                        output = %self.id, events, %error, suppressed = line.suppressed,
                        "output could not store a batch; its producers get an error instead of success"
                    );
                }
            }
        }
    }
}

fn settle(items: Vec<Queued<OutputItem>>, outcome: Result<(), String>) {
    for queued in items {
        for ack in queued.item.acks {
            match &outcome {
                Ok(()) => ack.delivered(),
                Err(reason) => ack.failed(reason.clone()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use eventstash_plugin_api::{ComponentHealth, ack_group};

    use super::*;
    use crate::queue::{QueueLimits, bounded};

    /// An output whose first write blocks until released, recording the
    /// size of every write.
    struct SlowFirstWrite {
        sizes: Mutex<Vec<usize>>,
        release: tokio::sync::Semaphore,
    }

    #[async_trait]
    impl Output for SlowFirstWrite {
        async fn write(&self, batch: OutputBatch) -> Result<(), BoxError> {
            let first = {
                let mut sizes = self.sizes.lock().unwrap();
                sizes.push(batch.len());
                sizes.len() == 1
            };
            if first {
                self.release.acquire().await?.forget();
            }
            Ok(())
        }
    }

    fn item(id: &str) -> (OutputItem, eventstash_plugin_api::AckWait) {
        let event = crate::test_support::json_event(id);
        let (ack, wait) = ack_group();
        let item = OutputItem {
            events: Arc::new(vec![event]),
            acks: vec![ack],
            flush: true,
        };
        (item, wait)
    }

    #[tokio::test]
    async fn producers_that_end_during_a_write_share_the_next_one() {
        let output = Arc::new(SlowFirstWrite {
            sizes: Mutex::new(Vec::new()),
            release: tokio::sync::Semaphore::new(0),
        });
        let plugin = plugin("slow", output.clone(), ComponentHealth::default());
        let (sender, receiver) = bounded::<OutputItem>(plugin.queue);
        let driver = tokio::spawn(OutputDriver::new("main", plugin).run(receiver));

        let mut waits = Vec::new();
        for id in ["a", "b", "c", "d"] {
            let (item, wait) = item(id);
            sender.send(item, 1, 10).await.unwrap();
            waits.push(wait);
            // Let the driver take it before the next arrives.
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        output.release.add_permits(1);
        for wait in waits {
            wait.wait().await.unwrap();
        }
        drop(sender);
        driver.await.unwrap();
        // "a" alone, then the three that each ended a stream while "a" was
        // being written, in one write.
        assert_eq!(*output.sizes.lock().unwrap(), [1, 3]);
    }

    /// An output whose writes fail while `failing` is set, and which notes
    /// when it is closed.
    #[derive(Default)]
    struct SwitchableOutput {
        failing: std::sync::atomic::AtomicBool,
        closed: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl Output for SwitchableOutput {
        async fn write(&self, _batch: OutputBatch) -> Result<(), BoxError> {
            if self.failing.load(Ordering::Relaxed) {
                return Err("disk full".into());
            }
            Ok(())
        }

        async fn close(&self) -> Result<(), BoxError> {
            self.closed.store(true, Ordering::Relaxed);
            Ok(())
        }
    }

    /// One write at a time, batches of up to 100 events that wait 60 s to
    /// fill unless a producer waits.
    fn plugin(id: &str, output: Arc<dyn Output>, health: ComponentHealth) -> OutputPlugin {
        OutputPlugin {
            id: id.into(),
            health,
            output,
            queue: QueueLimits {
                max_events: 100,
                max_bytes: 1 << 20,
            },
            batch: BatchSettings {
                max_events: 100,
                max_bytes: 1 << 20,
                delay: Duration::from_secs(60),
                concurrency: 1,
            },
        }
    }

    #[tokio::test]
    async fn a_failed_write_fails_its_producers_and_marks_the_output_failing_until_a_write_succeeds() {
        let output = Arc::new(SwitchableOutput::default());
        output.failing.store(true, Ordering::Relaxed);
        let health = ComponentHealth::default();
        let plugin = plugin("switch", output.clone(), health.clone());
        let (sender, receiver) = bounded::<OutputItem>(plugin.queue);
        let driver = OutputDriver::new("main", plugin);
        let delivered = driver.delivered_counter();
        let driver = tokio::spawn(driver.run(receiver));

        let (failed, wait) = item("a");
        sender.send(failed, 1, 10).await.unwrap();
        let error = wait.wait().await.unwrap_err();
        assert!(error.to_string().contains("output switch: disk full"), "{error}");
        assert_eq!(health.snapshot().last_error.as_deref(), Some("disk full"));
        assert!(health.snapshot().failing_since.is_some());

        output.failing.store(false, Ordering::Relaxed);
        let (stored, wait) = item("b");
        sender.send(stored, 1, 10).await.unwrap();
        wait.wait().await.unwrap();
        assert_eq!(health.snapshot().failing_since, None, "recovered by the next write");
        assert_eq!(delivered.load(Ordering::Relaxed), 1, "only the stored event counts");
        drop(sender);
        driver.await.unwrap();
    }

    /// An output that notes the first event of each batch when its write
    /// is started, and finishes its writes in reverse order.
    #[derive(Default)]
    struct StartOrder {
        started: Mutex<Vec<String>>,
        gate: tokio::sync::Notify,
    }

    #[async_trait]
    impl Output for StartOrder {
        async fn write(&self, _batch: OutputBatch) -> Result<(), BoxError> {
            unreachable!("the driver starts writes with start_write")
        }

        fn start_write(self: Arc<Self>, batch: OutputBatch) -> eventstash_plugin_api::WriteFuture {
            let first = batch.iter().next().map(|event| event.id.clone()).unwrap_or_default();
            self.started.lock().unwrap().push(first);
            Box::pin(async move {
                // The later write goes first: only the start gives the order.
                self.gate.notified().await;
                Ok(())
            })
        }
    }

    #[tokio::test]
    async fn concurrent_writes_are_started_in_queue_order() {
        let output = Arc::new(StartOrder::default());
        let mut plugin = plugin("ordered", output.clone(), ComponentHealth::default());
        plugin.batch.concurrency = 4;
        let (sender, receiver) = bounded::<OutputItem>(plugin.queue);
        let driver = tokio::spawn(OutputDriver::new("main", plugin).run(receiver));

        let ids: Vec<String> = (0..12).map(|n| format!("e{n}")).collect();
        let mut waits = Vec::new();
        for id in &ids {
            let (item, wait) = item(id);
            sender.send(item, 1, 10).await.unwrap();
            waits.push(wait);
            tokio::task::yield_now().await;
        }
        // Let the writes in flight end, latest first, until all are done.
        let done = async {
            for wait in waits {
                wait.wait().await.unwrap();
            }
        };
        let releasing = async {
            loop {
                tokio::time::sleep(Duration::from_millis(5)).await;
                output.gate.notify_waiters();
            }
        };
        tokio::select! {
            () = done => {}
            () = releasing => unreachable!(),
        }
        drop(sender);
        driver.await.unwrap();
        let started = output.started.lock().unwrap().clone();
        let mut expected = started.clone();
        expected.sort_by_key(|id| id[1..].parse::<u32>().unwrap());
        assert_eq!(started, expected, "writes started out of queue order");
        assert!(started.len() >= 4, "the writes were not spread: {started:?}");
    }

    #[tokio::test]
    async fn when_its_queue_closes_the_driver_writes_what_is_left_and_closes_the_output() {
        let output = Arc::new(SwitchableOutput::default());
        let plugin = plugin("switch", output.clone(), ComponentHealth::default());
        let (sender, receiver) = bounded::<OutputItem>(plugin.queue);
        let mut waits = Vec::new();
        for id in ["a", "b", "c"] {
            let (mut item, wait) = item(id);
            // Nobody waits: the batch would sit for its 60 s delay.
            item.flush = false;
            sender.send(item, 1, 10).await.unwrap();
            waits.push(wait);
        }
        drop(sender);
        OutputDriver::new("main", plugin).run(receiver).await;
        for wait in waits {
            wait.wait().await.unwrap();
        }
        assert!(output.closed.load(Ordering::Relaxed));
    }
}
