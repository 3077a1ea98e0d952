//! `eventstash-loadgen`: the load generator behind the README's benchmark.
//!
//! Opens `--streams` concurrent `StoreEvent` streams, each sending
//! `--events` events and waiting for its acknowledgement, round after round
//! for `--seconds`. Prints acknowledged events/s, MB/s and the ack latency
//! of a stream (p50/p99/max), and with `--server-pid` the agent's memory.
//! Only acknowledged events count: an event is "done" when the agent said
//! it was stored.
//!
//! With `--serve-bare ADDR` it is the other side instead: a bare tonic
//! server for `hfx.v1.EventStash` that decodes every `StoreEventRequest`
//! and answers success, doing nothing else — the ceiling the transport
//! itself sets on this machine, which eventstash's figures are divided by
//! (`bench/compare`).
//!
//! With `--append` it loads `hfx.v1.EventStore/Append` instead (see
//! [`append_load`]), through the agent or, with `--direct-dynamodb`, with
//! the same DynamoDB transactions sent straight from this process.
//!
//! With `--batching` the same load goes through the client's
//! `BatchingSender` instead of whole streams: one producer per connection
//! sends events one at a time, the sender batches `--events` of them per
//! stream with up to `--streams` streams in flight over all connections.
//!
//! Everything it sends goes through `eventstash-client`, as a producer's
//! would.

use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use eventstash_client::proto::event_stash_server::{EventStash, EventStashServer};
use eventstash_client::proto::{StoreEventRequest, StoreEventResponse};
use eventstash_client::{BatchOptions, BatchingSender, Client, Error, Event, Format, RetryPolicy};
use prost::Message as _;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PayloadFormat {
    Json,
    Protobuf,
}

/// Streams events at an eventstash (or any HFXEventStash server) and
/// measures acknowledged throughput.
#[derive(Debug, Parser)]
#[command(name = "eventstash-loadgen")]
struct Args {
    /// The agent's gRPC address.
    #[arg(long, default_value = "127.0.0.1:42043")]
    addr: String,
    /// Concurrent streams.
    #[arg(long, default_value_t = 8)]
    streams: usize,
    /// Events per stream.
    #[arg(long, default_value_t = 500)]
    events: usize,
    /// HTTP/2 connections the streams are spread over.
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// How long to run.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Payload encoding.
    #[arg(long, value_enum, default_value_t = PayloadFormat::Json)]
    format: PayloadFormat,
    /// Approximate payload size in bytes (JSON is padded to it; protobuf
    /// address books get as many people as fit).
    #[arg(long, default_value_t = 200)]
    payload_size: usize,
    /// The agent's process id, to report its resident memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Serve a bare `hfx.v1.EventStash` on this address instead of
    /// generating load (until killed).
    #[arg(long, value_name = "ADDR")]
    serve_bare: Option<std::net::SocketAddr>,
    /// Connect with TLS, trusting the CA in this PEM file.
    #[arg(long)]
    tls_ca: Option<std::path::PathBuf>,
    /// The name the agent's certificate must carry (default: the host of --addr).
    #[arg(long, requires = "tls_ca")]
    tls_domain: Option<String>,
    /// Producer token, sent as `authorization: Bearer <token>`.
    #[arg(long, env = "EVENTSTASH_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Load `hfx.v1.EventStore/Append` instead of `StoreEvent`: `--streams`
    /// clients, each appending one-event change sets to its own aggregate.
    #[arg(long)]
    append: bool,
    /// Offered load, open loop: events per second over all streams (each
    /// stream of --events is started when due, and its latency counted from
    /// then); with --append, appends per second over all clients. 0: as fast
    /// as they go (closed loop, saturation).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Send events one at a time through the client's batching sender
    /// (`--events` per stream, `--streams` streams in flight) instead of
    /// whole streams.
    #[arg(long, conflicts_with = "append")]
    batching: bool,
    /// With --append: send the same DynamoDB transactions straight to this
    /// endpoint instead (the event store in-process, no agent), to show the
    /// agent's own overhead. Credentials come from the AWS environment.
    #[arg(long, value_name = "URL")]
    direct_dynamodb: Option<String>,
}

/// The bare server: reads every message of a stream, then says success.
struct BareServer;

#[tonic::async_trait]
impl EventStash for BareServer {
    async fn store_event(
        &self,
        request: tonic::Request<tonic::Streaming<StoreEventRequest>>,
    ) -> Result<tonic::Response<StoreEventResponse>, tonic::Status> {
        let mut stream = request.into_inner();
        while stream.message().await?.is_some() {}
        Ok(tonic::Response::new(StoreEventResponse { success: true }))
    }
}

/// Serves [`BareServer`] with the same transport settings as the gRPC input
/// (windows, message size, `TCP_NODELAY`), so only the work differs.
async fn serve_bare(addr: std::net::SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("bare hfx.v1.EventStash server on {addr}");
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .initial_stream_window_size(1024 * 1024)
        .initial_connection_window_size(4 * 1024 * 1024)
        .add_service(EventStashServer::new(BareServer).max_decoding_message_size(4 * 1024 * 1024))
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}

/// HFXEventStash's example messages (`protos/examples/contact`), made by build.rs.
mod contact {
    tonic::include_proto!("contact");
}

use contact::person::PhoneNumber;
use contact::{AddressBook, Person};

impl prost::Name for AddressBook {
    const NAME: &'static str = "AddressBook";
    const PACKAGE: &'static str = "contact";
}

/// The event every stream repeats (with its own id).
fn payload(format: PayloadFormat, size: usize) -> Event {
    match format {
        PayloadFormat::Json => {
            let head = r#"{"id":"ab-1","people":[{"name":"John Doe","email":"john.doe@foo.bar","phones":[{"number":"+55 (11) 1111-1111","type":1}]}],"pad":""#;
            let pad = "x".repeat(size.saturating_sub(head.len() + 2));
            let text = format!("{head}{pad}\"}}");
            Event::bytes(Format::Json, "contact.AddressBook", Bytes::from(text))
        }
        PayloadFormat::Protobuf => {
            let person = Person {
                name: "John Doe".into(),
                email: "john.doe@foo.bar".into(),
                phones: vec![PhoneNumber {
                    number: "+55 (11) 1111-1111".into(),
                    r#type: 1,
                }],
            };
            let mut book = AddressBook {
                id: "ab-1".into(),
                people: vec![person.clone()],
            };
            while book.encoded_len() + person.encoded_len() + 2 <= size {
                book.people.push(person.clone());
            }
            Event::protobuf(&book)
        }
    }
}

/// When a client's next stream or append is due: every `interval` (open
/// loop, so a slow answer delays the next start but the latency is
/// measured from when it was due, not from when it could start) or at once
/// (closed loop).
struct Schedule {
    /// When the next one is due (open loop).
    next: Instant,
    /// Between two starts; `None` for the closed loop.
    interval: Option<Duration>,
    /// Nothing starts after this.
    until: Instant,
}

impl Schedule {
    async fn next(&mut self) -> Option<Instant> {
        let now = Instant::now();
        if now >= self.until {
            return None;
        }
        let Some(interval) = self.interval else {
            return Some(now);
        };
        let due = self.next;
        self.next += interval;
        tokio::time::sleep_until(due.into()).await;
        Some(due)
    }
}

struct WorkerReport {
    events: u64,
    bytes: u64,
    failed_streams: u64,
    latencies: Vec<Duration>,
}

/// One stream after another on `client`, each as soon as the last is
/// answered or, with `--rate`, when it is due.
async fn worker(worker: usize, client: Client, args: &Args, event: Event, mut schedule: Schedule) -> WorkerReport {
    let mut report = WorkerReport {
        events: 0,
        bytes: 0,
        failed_streams: 0,
        latencies: Vec::new(),
    };
    let mut round = 0u64;
    loop {
        let events: Vec<Event> = (0..args.events)
            .map(|i| event.clone().with_id(format!("lg-{worker}-{round}-{i}")))
            .collect();
        let Some(started) = schedule.next().await else { break };
        match client.store(events).await {
            Ok(()) => {
                report.latencies.push(started.elapsed());
                report.events += args.events as u64;
                report.bytes += (args.events * event.data().len()) as u64;
            }
            Err(error) => {
                report.failed_streams += 1;
                if report.failed_streams <= 3 {
                    report_failure("stream", &error);
                }
            }
        }
        round += 1;
    }
    report
}

/// One producer on `client` sending events one at a time through a
/// batching sender until `until`; then waits for every acknowledgement.
async fn batching_worker(worker: usize, client: Client, args: &Args, event: Event, until: Instant) -> WorkerReport {
    let connections = args.connections.max(1);
    let options = BatchOptions {
        max_events: args.events.max(1),
        max_in_flight: args.streams.div_ceil(connections).max(1),
        buffer: args.events.max(1) * 2,
        // A resend would count events twice: a failure is a failure here.
        retry: RetryPolicy::never(),
        ..BatchOptions::default()
    };
    let sender = BatchingSender::new(client, options);
    let mut sent = 0u64;
    while Instant::now() < until {
        // Checking the clock per batch, not per event, keeps it off the hot path.
        for _ in 0..args.events {
            let event = event.clone().with_id(format!("lg-{worker}-{sent}"));
            if sender.send(event).await.is_err() {
                break;
            }
            sent += 1;
        }
    }
    let (failed_events, failed_batches) = match sender.close().await {
        Ok(()) => (0, 0),
        Err(Error::BatchesFailed { events, batches, first }) => {
            report_failure("batch", &first);
            (events as u64, batches as u64)
        }
        Err(error) => {
            report_failure("batching sender", &error);
            (sent, 1)
        }
    };
    let events = sent - failed_events;
    WorkerReport {
        events,
        bytes: events * event.data().len() as u64,
        failed_streams: failed_batches,
        latencies: Vec::new(),
    }
}

fn report_failure(what: &str, error: &Error) {
    match error.status() {
        Some(status) => eprintln!("{what} failed: {:?}: {}", status.code(), status.message()),
        None => eprintln!("{what} failed: {error}"),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

/// CPU seconds (user + system) the process has used so far, from
/// `/proc/<pid>/stat` (in USER_HZ ticks, 100 per second on Linux).
fn cpu_seconds_of(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields are counted after its `)`.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let ticks = |n: usize| fields.get(n)?.parse::<u64>().ok();
    // utime and stime are the 14th and 15th fields; the 3rd follows `)`.
    Some((ticks(11)? + ticks(12)?) as f64 / 100.0)
}

fn memory_of(pid: u32) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|line| line.starts_with(name))
            .map(|line| line[name.len()..].trim().to_owned())
    };
    Some(format!("VmRSS {} (peak VmHWM {})", field("VmRSS:")?, field("VmHWM:")?))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if let Some(addr) = args.serve_bare {
        return serve_bare(addr).await;
    }
    if let (true, Some(url)) = (args.append, &args.direct_dynamodb) {
        return append_load::direct(&args, url).await;
    }
    let event = payload(args.format, args.payload_size);
    let mut clients = Vec::new();
    for _ in 0..args.connections.max(1) {
        let mut builder = Client::builder(args.addr.clone());
        if let Some(ca) = &args.tls_ca {
            builder = builder.ca_file(ca);
        }
        if let Some(domain) = &args.tls_domain {
            builder = builder.domain(domain.clone());
        }
        if let Some(token) = &args.token {
            builder = builder.token(token.clone());
        }
        clients.push(builder.connect().await?);
    }
    if args.append {
        return append_load::through_agent(&args, clients).await;
    }
    println!(
        "eventstash-loadgen: {} streams x {} events{}, {:?} payload of {} bytes, {} connection(s), {} s",
        args.streams,
        args.events,
        if args.batching { " (batching sender)" } else { "" },
        args.format,
        event.data().len(),
        clients.len(),
        args.seconds
    );

    let cpu_before = args.server_pid.and_then(cpu_seconds_of);
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(args.seconds);
    let args = &args;
    let reports = if args.batching {
        let workers = (0..clients.len()).map(|n| batching_worker(n, clients[n].clone(), args, event.clone(), until));
        futures::future::join_all(workers).await
    } else {
        // With --rate, each stream of --events is due every
        // streams × events / rate seconds, the streams' starts spread.
        let interval = (args.rate > 0.0)
            .then(|| Duration::from_secs_f64(args.streams.max(1) as f64 * args.events as f64 / args.rate));
        let workers = (0..args.streams).map(|n| {
            let offset = interval.map_or(Duration::ZERO, |i| i.mul_f64(n as f64 / args.streams.max(1) as f64));
            let schedule = Schedule {
                next: started + offset,
                interval,
                until,
            };
            worker(n, clients[n % clients.len()].clone(), args, event.clone(), schedule)
        });
        futures::future::join_all(workers).await
    };
    let elapsed = started.elapsed().as_secs_f64();

    let events: u64 = reports.iter().map(|r| r.events).sum();
    let bytes: u64 = reports.iter().map(|r| r.bytes).sum();
    let failed: u64 = reports.iter().map(|r| r.failed_streams).sum();
    let mut latencies: Vec<Duration> = reports.into_iter().flat_map(|r| r.latencies).collect();
    latencies.sort();
    println!("acknowledged events: {events} in {elapsed:.2} s, failed streams: {failed}");
    println!(
        "throughput: {:.0} events/s, {:.1} MB/s of payload",
        events as f64 / elapsed,
        bytes as f64 / elapsed / 1e6
    );
    if args.batching {
        println!("stream ack latency: not measured with --batching (the sender's streams are its own)");
    } else {
        println!(
            "stream ack latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} streams)",
            percentile(&latencies, 0.50).as_secs_f64() * 1e3,
            percentile(&latencies, 0.99).as_secs_f64() * 1e3,
            latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
            latencies.len()
        );
    }
    if let Some(pid) = args.server_pid {
        match memory_of(pid) {
            Some(memory) => println!("agent memory: {memory}"),
            None => println!("agent memory: cannot read /proc/{pid}/status"),
        }
        // The agent's own cost per event, steadier between runs than
        // events/s on a shared machine.
        if let (Some(before), Some(after)) = (cpu_before, cpu_seconds_of(pid))
            && events > 0
        {
            let seconds = after - before;
            println!(
                "agent cpu: {seconds:.2} s, {:.2} cores, {:.3} µs per acknowledged event",
                seconds / elapsed,
                seconds * 1e6 / events as f64
            );
        }
    }
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// `--append`: change sets appended by `--streams` clients, each to its own
/// aggregate at the version it holds, open loop at `--rate` appends/s (or
/// closed loop, as fast as they go); the latency of each append.
mod append_load {
    use std::future::Future;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use eventstash_client::{Append, Client};
    use eventstash_output_dynamodb::DynamoDbEventStoreConfig;
    use eventstash_plugin_api::{Event, EventStore, ExpectedVersion, Format, NewChangeSet, PluginContext};

    use super::{Args, Schedule, percentile, report_failure};

    /// What one client measured.
    #[derive(Default)]
    struct ClientReport {
        latencies: Vec<Duration>,
        errors: u64,
    }

    /// The event of every change set.
    const DATA: &[u8] = br#"{"orderId":"o-1","sku":"ab-1","quantity":2,"price":"12.50"}"#;

    /// Appends through the agent's `hfx.v1.EventStore`.
    pub(super) async fn through_agent(args: &Args, connections: Vec<Client>) -> Result<(), Box<dyn std::error::Error>> {
        let run = run_id();
        println!("append load through the agent at {}: {}", args.addr, describe(args));
        let reports = clients(args, |n, mut next| {
            let client = connections[n % connections.len()].event_store();
            let aggregate = format!("lg-{run}-{n}");
            async move {
                let mut version = 0u64;
                let mut report = ClientReport::default();
                while let Some(at) = next.next().await {
                    let append = Append {
                        aggregate_id: aggregate.clone(),
                        aggregate_type: "loadgen.Order".to_owned(),
                        expected: match version {
                            0 => eventstash_client::ExpectedVersion::NoAggregate,
                            v => eventstash_client::ExpectedVersion::Exactly(v),
                        },
                        change_set_id: String::new(),
                        events: vec![eventstash_client::Event::bytes(
                            eventstash_client::Format::Json,
                            "loadgen.OrderLine",
                            Bytes::from_static(DATA),
                        )],
                    };
                    match client.append(append).await {
                        Ok(response) => {
                            version = u64::try_from(response.version).unwrap_or_default();
                            report.latencies.push(at.elapsed());
                        }
                        Err(error) => {
                            report.errors += 1;
                            if report.errors <= 3 {
                                report_failure("append", &error);
                            }
                        }
                    }
                }
                report
            }
        })
        .await;
        summarize(args, reports);
        Ok(())
    }

    /// Sends the same transactions straight to DynamoDB, in this process.
    pub(super) async fn direct(args: &Args, url: &str) -> Result<(), Box<dyn std::error::Error>> {
        let run = run_id();
        let config: DynamoDbEventStoreConfig = serde_json::from_value(serde_json::json!({
            "aggregates_table": std::env::var("DYNAMODB_AGGREGATES_TABLE").unwrap_or_else(|_| "aggregates".into()),
            "change_sets_table": std::env::var("DYNAMODB_CHANGE_SETS_TABLE").unwrap_or_else(|_| "change-sets".into()),
            "endpoint_url": url,
            "create_table": true,
            "request_timeout_ms": 60_000,
            "retry_timeout_ms": 120_000,
        }))?;
        let store: Arc<dyn EventStore> = Arc::new(config.build(&PluginContext::new("loadgen", "direct"))?);
        store.ready().await?;
        println!("append load straight to DynamoDB at {url}: {}", describe(args));
        let reports = clients(args, |n, mut next| {
            let store = store.clone();
            let aggregate = format!("lg-{run}-{n}");
            async move {
                let mut version = 0u64;
                let mut report = ClientReport::default();
                while let Some(at) = next.next().await {
                    let event = Event::new(
                        Format::Json,
                        Bytes::from_static(DATA),
                        "loadgen.OrderLine".to_owned(),
                        String::new(),
                        chrono::Utc::now(),
                    );
                    let change_set = NewChangeSet {
                        aggregate_id: aggregate.clone(),
                        aggregate_type: "loadgen.Order".to_owned(),
                        expected: match version {
                            0 => ExpectedVersion::NoAggregate,
                            v => ExpectedVersion::Exactly(v),
                        },
                        change_set_id: NewChangeSet::new_id(),
                        events: vec![event],
                    };
                    match store.append(change_set).await {
                        Ok(appended) => {
                            version = appended.version;
                            report.latencies.push(at.elapsed());
                        }
                        Err(error) => {
                            report.errors += 1;
                            if report.errors <= 3 {
                                eprintln!("append failed: {error}");
                            }
                        }
                    }
                }
                report
            }
        })
        .await;
        summarize(args, reports);
        Ok(())
    }

    async fn clients<F, Fut>(args: &Args, mut client: F) -> Vec<ClientReport>
    where
        F: FnMut(usize, Schedule) -> Fut,
        Fut: Future<Output = ClientReport> + Send + 'static,
    {
        let clients = args.streams.max(1);
        let started = Instant::now();
        let until = started + Duration::from_secs_f64(args.seconds);
        let interval = (args.rate > 0.0).then(|| Duration::from_secs_f64(clients as f64 / args.rate));
        let tasks: Vec<_> = (0..clients)
            .map(|n| {
                // Spread the clients' starts over one interval.
                let offset = interval.map_or(Duration::ZERO, |i| i.mul_f64(n as f64 / clients as f64));
                let schedule = Schedule {
                    next: started + offset,
                    interval,
                    until,
                };
                tokio::spawn(client(n, schedule))
            })
            .collect();
        let mut reports = Vec::with_capacity(clients);
        for task in tasks {
            reports.push(task.await.unwrap_or_default());
        }
        reports
    }

    /// Prints the appends' rate and latency; exits 1 if any failed.
    fn summarize(args: &Args, reports: Vec<ClientReport>) {
        let errors: u64 = reports.iter().map(|r| r.errors).sum();
        let mut latencies: Vec<Duration> = reports.into_iter().flat_map(|r| r.latencies).collect();
        latencies.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "appends: {} in {:.1} s = {:.1}/s, errors {errors}",
            latencies.len(),
            args.seconds,
            latencies.len() as f64 / args.seconds
        );
        println!(
            "append latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            ms(percentile(&latencies, 0.50)),
            ms(percentile(&latencies, 0.99)),
            ms(latencies.last().copied().unwrap_or_default())
        );
        if errors > 0 {
            // As for streams: a run with failures is no measurement.
            std::process::exit(1);
        }
    }

    fn describe(args: &Args) -> String {
        let rate = if args.rate > 0.0 {
            format!("{} appends/s", args.rate)
        } else {
            "saturation".to_owned()
        };
        format!("{} clients, {rate}, {} s", args.streams, args.seconds)
    }

    fn run_id() -> u128 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    }
}
