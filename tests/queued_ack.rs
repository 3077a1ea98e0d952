//! End to end: with the persisted queue and `ack = "queued"`, a producer is
//! answered as soon as its events are synced to the queue, whatever the
//! outputs are doing — down, failing or stalled.

mod support;

use std::time::Duration;

use support::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// A persisted queue acknowledging on sync, in front of an Elasticsearch
/// output whose cluster does not answer: the returned listener holds its
/// port (so no other process can take it) and never accepts.
fn queued_ack_with_output_down() -> (String, std::net::TcpListener) {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = silent.local_addr().unwrap().port();
    let config = format!(
        "[pipeline]\nshutdown_timeout_ms = 1000\n[queue]\ntype = \"persisted\"\nack = \"queued\"\n\
         [[inputs]]\ntype = \"grpc\"\nbind = \"127.0.0.1:{{port}}\"\n\
         [[outputs]]\ntype = \"elasticsearch\"\nhosts = [\"http://127.0.0.1:{dead}\"]\nindex = \"evt-%{{index}}\"\n"
    );
    (config, silent)
}

/// Sends `count` events, then ends the stream only after `end_after`.
async fn store_with_late_end(agent: &Agent, prefix: &str, count: usize, end_after: Duration) -> Result<bool, String> {
    let client = agent.client().await;
    let (sender, receiver) = mpsc::channel(count + 1);
    for n in 0..count {
        sender.send(json_event(prefix, n, "k", "{\"x\":1}")).await.unwrap();
    }
    let ending = tokio::spawn(async move {
        tokio::time::sleep(end_after).await;
        drop(sender);
    });
    let call = store_stream(&client, ReceiverStream::new(receiver));
    let outcome = tokio::time::timeout(Duration::from_secs(5), call).await;
    ending.await.unwrap();
    match outcome {
        Ok(Ok(success)) => Ok(success),
        Ok(Err(status)) => Err(format!("{:?}: {}", status.code(), status.message())),
        Err(_) => Err("no answer within 5 s".to_owned()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_ack_answers_streams_that_end_late_while_the_output_is_down() {
    let (config, _silent) = queued_ack_with_output_down();
    let agent = Agent::start(AgentOptions::new(&config));
    for (stream, end_after) in [0, 200, 600].into_iter().enumerate() {
        let prefix = format!("s{stream}-");
        let outcome = store_with_late_end(&agent, &prefix, 10, Duration::from_millis(end_after)).await;
        assert_eq!(
            outcome,
            Ok(true),
            "a stream whose end came {end_after} ms after its events was not acknowledged although they were queued"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_ack_answers_an_empty_stream_while_the_output_is_down() {
    let (config, _silent) = queued_ack_with_output_down();
    let agent = Agent::start(AgentOptions::new(&config));
    let outcome = store_with_late_end(&agent, "empty-", 0, Duration::from_millis(100)).await;
    assert_eq!(outcome, Ok(true));
}
