//! How requests reach the cluster: several hosts in turn, credentials and
//! compression, observed through the fault proxy (`support::fault_proxy`)
//! in front of osmem-server.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;
use support::fault_proxy::FaultProxy;
use support::{Server, events, new_year_2021, output, server_url, unique, write_all};

#[tokio::test]
async fn requests_rotate_across_hosts_and_skip_a_dead_one() {
    let server = Server::connect();
    let (first, second) = (
        FaultProxy::start(&server_url()).await,
        FaultProxy::start(&server_url()).await,
    );
    let index = unique("hosts");
    let under_test = output(&[first.url(), second.url()], json!({"index": index}));
    write_all(&under_test.output, events("kind", "h", 1_000, new_year_2021()), 100).await;
    let bulk = |proxy: &FaultProxy| proxy.stats().bulk_requests.load(Ordering::Relaxed);
    assert!(
        bulk(&first) >= 4 && bulk(&second) >= 4,
        "{} / {}",
        bulk(&first),
        bulk(&second)
    );

    // One node down: requests that meet it are sent again, to the other.
    second.go_down_for(Duration::from_secs(3)).await;
    let before = bulk(&first);
    write_all(&under_test.output, events("kind", "d", 1_000, new_year_2021()), 100).await;
    assert!(bulk(&first) >= before + 10);
    assert_eq!(server.count(&index).await, 2_000);
}

#[tokio::test]
async fn basic_auth_and_api_keys_are_sent() {
    let proxy = FaultProxy::start(&server_url()).await;
    let index = unique("auth");
    let batch = || events("kind", "a", 1, new_year_2021());
    let last_authorization = || proxy.stats().last_authorization.lock().unwrap().clone();

    let basic = output(
        &[proxy.url()],
        json!({"index": index, "user": "user", "password": "pass"}),
    );
    write_all(&basic.output, batch(), 1).await;
    assert_eq!(last_authorization().as_deref(), Some("Basic dXNlcjpwYXNz"));

    let key = output(&[proxy.url()], json!({"index": index, "api_key": "id:secret"}));
    write_all(&key.output, batch(), 1).await;
    assert_eq!(last_authorization().as_deref(), Some("ApiKey aWQ6c2VjcmV0"));

    let encoded = output(&[proxy.url()], json!({"index": index, "api_key": "ZW5jb2RlZA=="}));
    write_all(&encoded.output, batch(), 1).await;
    assert_eq!(last_authorization().as_deref(), Some("ApiKey ZW5jb2RlZA=="));
}

#[tokio::test]
async fn gzipped_bulk_requests_are_stored() {
    let server = Server::connect();
    let proxy = FaultProxy::start(&server_url()).await;
    let index = unique("gzip");
    let under_test = output(&[proxy.url()], json!({"gzip": true, "index": index}));
    write_all(&under_test.output, events("kind", "g", 500, new_year_2021()), 250).await;
    assert_eq!(proxy.stats().gzip_requests.load(Ordering::Relaxed), 2);
    assert_eq!(server.count(&index).await, 500);
}
