//! Metrics: the names the engine records, the Prometheus recorder, and the
//! HTTP endpoint that serves `/metrics` and `/health`.
//!
//! Plugins record through the `metrics` facade too (the gRPC input's
//! streams, outputs' retries and dead letters). Every series carries a
//! `pipeline` label and, for plugin series, a `plugin` label. Queue gauges
//! are read from the queues at scrape time, so they are never stale.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use eventstash_plugin_api::CancellationToken;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing::{info, warn};

use crate::health::AgentHealth;

/// Events an input put on the pipeline queue.
pub(crate) const EVENTS_IN: &str = "eventstash_events_in_total";
/// Events an output stored.
pub(crate) const EVENTS_OUT: &str = "eventstash_events_out_total";
/// Events an output failed to store (their producers got an error).
pub(crate) const EVENTS_FAILED: &str = "eventstash_events_failed_total";
/// Events kept undecoded, by `kind` and `reason` (`invalidJson`, `invalidProto`).
pub(crate) const INVALID_EVENTS: &str = "eventstash_invalid_events_total";
/// Events held by a queue, queued or being written.
pub(crate) const QUEUE_EVENTS: &str = "eventstash_queue_events";
/// Estimated bytes held by a queue.
pub(crate) const QUEUE_BYTES: &str = "eventstash_queue_bytes";
/// Events per output write.
pub(crate) const BATCH_EVENTS: &str = "eventstash_batch_events";
/// Time an output write took.
pub(crate) const BATCH_SECONDS: &str = "eventstash_batch_duration_seconds";
/// Events a filter panicked on, passed on unfiltered.
pub(crate) const FILTER_PANICS: &str = "eventstash_filter_panics_total";
/// Persisted records set aside to the queue's dead-letter file because the
/// agent kept dying while processing them.
pub(crate) const POISON_RECORDS: &str = "eventstash_poison_records_total";
/// Filter reloads (SIGHUP), by `outcome` (`ok`, `failed`).
pub(crate) const RELOADS: &str = "eventstash_reloads_total";

const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const EVENTS_BUCKETS: &[f64] = &[1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0];

/// Installs the process-wide Prometheus recorder (once) and returns its handle.
pub(crate) fn recorder() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BATCH_EVENTS.into()), EVENTS_BUCKETS));
            match builder.and_then(|b| b.install_recorder()) {
                Ok(handle) => {
                    spawn_upkeep(handle.clone());
                    Some(handle)
                }
                Err(error) => {
                    warn!(%error, "metrics recorder not installed; /metrics will be empty");
                    None
                }
            }
        })
        .clone()
}

/// Installs the Prometheus recorder before the pipelines are built.
///
/// Plugins take their counters (events retried, dead-lettered) when they are
/// built, and a counter taken before a recorder exists counts into nothing
/// for the life of the process; so `run` installs it first, whether or not
/// a pipeline serves `/metrics`.
pub fn install_recorder() {
    recorder();
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// A recorder installed with `install_recorder` keeps every histogram
/// sample until upkeep folds it into its buckets (a scrape does too); with
/// nobody scraping `/metrics`, two samples per output write would pile up
/// without bound. A plain thread, so that it needs no runtime.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                handle.run_upkeep();
            }
        });
    if let Err(error) = spawned {
        warn!(%error, "cannot start the metrics upkeep thread; histograms are folded only when /metrics is scraped");
    }
}

struct Endpoint {
    prometheus: Option<PrometheusHandle>,
    health: Arc<AgentHealth>,
}

/// Serves `/metrics` and `/health` on `bind` until `shutdown`.
pub(crate) async fn serve(
    bind: SocketAddr,
    health: Arc<AgentHealth>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let endpoint = Arc::new(Endpoint {
        prometheus: recorder(),
        health,
    });
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health_report))
        .with_state(endpoint);
    let listener = tokio::net::TcpListener::bind(bind).await?;
    // The bound address, so that port 0 can be used and read back.
    let bind = listener.local_addr().unwrap_or(bind);
    info!(%bind, "metrics and health endpoint listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn metrics(State(endpoint): State<Arc<Endpoint>>) -> impl IntoResponse {
    endpoint.health.record_queue_gauges();
    let text = endpoint
        .prometheus
        .as_ref()
        .map(PrometheusHandle::render)
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

async fn health_report(State(endpoint): State<Arc<Endpoint>>) -> impl IntoResponse {
    let report = endpoint.health.report();
    let status = if report.serving {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::to_string_pretty(&report).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, "application/json")], body)
}
