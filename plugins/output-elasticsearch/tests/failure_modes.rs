//! How the output rides out a cluster that hangs, refuses its credentials,
//! fails items on the server, or does all of it to gzip requests: each
//! fault injected by the proxy (`support::fault_proxy`) in front of
//! osmem-server, each event stored exactly once in the end, and sent again
//! only after a failure.

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;
use support::fault_proxy::FaultProxy;
use support::{
    Server, assert_stored_once_and_resent_only_after_failures, dead_letters, events, new_year_2021, output, server_url,
    unique, write_all,
};

fn ids(prefix: &str, count: usize) -> impl Iterator<Item = String> + '_ {
    (0..count).map(move |n| format!("{prefix}-{n}"))
}

#[tokio::test]
async fn a_hung_node_times_out_and_the_request_is_sent_again() {
    let server = Server::connect();
    let proxy = FaultProxy::start(&server_url()).await;
    let index = unique("hung");
    // Long enough that the request after the two hung ones is answered in
    // time even on a loaded machine: it must not time out as well.
    let timeout = Duration::from_millis(1500);
    let options = json!({"index": index, "request_timeout_ms": timeout.as_millis() as u64});
    let under_test = output(&[proxy.url()], options);
    proxy.faults(|f| f.hang_bulk = 2);
    let started = Instant::now();
    write_all(&under_test.output, events("kind", "h", 100, new_year_2021()), 100).await;

    assert!(started.elapsed() >= timeout * 2, "two requests cannot have timed out");
    let stats = proxy.stats();
    assert_eq!(stats.hung_requests.load(Ordering::Relaxed), 2);
    assert_eq!(stats.bulk_requests.load(Ordering::Relaxed), 3);
    assert_eq!(server.count(&index).await, 100);
    assert_stored_once_and_resent_only_after_failures(&stats.item_counts(), ids("h", 100));
    assert!(dead_letters(&under_test.dead_letter_path).is_empty());
}

#[tokio::test]
async fn requests_answered_401_or_403_are_sent_again_until_they_are_let_through() {
    let server = Server::connect();
    let proxy = FaultProxy::start(&server_url()).await;
    let index = unique("denied");
    let under_test = output(&[proxy.url()], json!({"index": index, "user": "u", "password": "p"}));
    // Credentials an operator fixes meanwhile: the events wait, not fail.
    proxy.faults(|f| f.fail_bulk.extend([401, 403, 401]));
    write_all(&under_test.output, events("kind", "d", 200, new_year_2021()), 200).await;

    let stats = proxy.stats();
    assert_eq!(stats.failed_requests.load(Ordering::Relaxed), 3);
    assert_eq!(server.count(&index).await, 200);
    let items = stats.item_counts();
    assert_eq!(
        assert_stored_once_and_resent_only_after_failures(&items, ids("d", 200)),
        600
    );
    assert!(dead_letters(&under_test.dead_letter_path).is_empty());
}

#[tokio::test]
async fn items_failed_with_a_5xx_are_sent_again_and_only_they() {
    let server = Server::connect();
    let proxy = FaultProxy::start(&server_url()).await;
    let index = unique("item5xx");
    let under_test = output(&[proxy.url()], json!({"index": index, "retry_max_backoff_ms": 50}));
    proxy.faults(|f| {
        f.throttle_status = Some(503);
        f.throttle_rounds = 6;
        f.throttle_every = 3;
    });
    write_all(&under_test.output, events("kind", "x", 600, new_year_2021()), 300).await;

    let stats = proxy.stats();
    let failed = stats.throttled_items.load(Ordering::Relaxed);
    assert!(failed >= 100, "only {failed} items failed");
    assert_eq!(server.count(&index).await, 600);
    let resent = assert_stored_once_and_resent_only_after_failures(&stats.item_counts(), ids("x", 600));
    assert_eq!(resent, failed, "only the failed items were sent again");
    assert!(dead_letters(&under_test.dead_letter_path).is_empty());
}

#[tokio::test]
async fn gzip_requests_meet_failed_requests_and_items_and_lose_nothing() {
    let server = Server::connect();
    let proxy = FaultProxy::start(&server_url()).await;
    let index = unique("gzipfault");
    let options = json!({"index": index, "gzip": true, "retry_max_backoff_ms": 50});
    let under_test = output(&[proxy.url()], options);
    proxy.faults(|f| {
        f.fail_bulk.extend([503, 429]);
        f.throttle_rounds = 4;
        f.throttle_every = 2;
    });
    write_all(&under_test.output, events("kind", "z", 400, new_year_2021()), 200).await;

    let stats = proxy.stats();
    let bulk = stats.bulk_requests.load(Ordering::Relaxed);
    assert!(bulk >= 2 + 4 + 2, "{bulk} bulk requests");
    assert_eq!(
        stats.gzip_bulk_requests.load(Ordering::Relaxed),
        bulk,
        "a retry was sent without gzip"
    );
    assert_eq!(stats.failed_requests.load(Ordering::Relaxed), 2);
    let throttled = stats.throttled_items.load(Ordering::Relaxed);
    assert!(throttled >= 100, "only {throttled} items throttled");
    assert_eq!(server.count(&index).await, 400);
    let resent = assert_stored_once_and_resent_only_after_failures(&stats.item_counts(), ids("z", 400));
    assert_eq!(
        resent,
        throttled + 400,
        "throttled items, and the 2 × 200 of the failed requests"
    );
}
