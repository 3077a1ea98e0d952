//! A JSON producer: stores a few events as one stream, then a burst through
//! the batching sender.
//!
//! ```sh
//! eventstash run -c pipelines/default.toml &
//! cargo run -p eventstash-client --example json_producer -- 127.0.0.1:42043
//! ```
//! With TLS and a token: `EVENTSTASH_CA=tls/ca.crt EVENTSTASH_TOKEN=... `.

use eventstash_client::{BatchOptions, BatchingSender, Client, Error, Event};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:42043".to_owned());
    let mut builder = Client::builder(addr);
    if let Ok(ca) = std::env::var("EVENTSTASH_CA") {
        builder = builder.ca_file(ca);
    }
    if let Ok(token) = std::env::var("EVENTSTASH_TOKEN") {
        builder = builder.token(token);
    }
    let client = builder.connect().await?;

    // One stream: returns once the agent has stored all three.
    let orders = (1..=3).map(|n| {
        Event::json("shop.OrderPlaced", &json!({"order": n, "total": 12.5 * f64::from(n)}))
            .with_id(format!("order-{n}"))
    });
    match client.store(orders.collect::<Vec<_>>()).await {
        Ok(()) => println!("3 orders stored"),
        // Ids make the resend overwrite what the first attempt may have stored.
        Err(error) if error.is_resend_safe() => eprintln!("not stored, send again: {error}"),
        Err(error) => return Err(error),
    }

    // Many events, one at a time: batched into streams, several in flight.
    let sender = BatchingSender::new(client, BatchOptions::default());
    for n in 0..10_000 {
        let event = Event::json("shop.PageViewed", &json!({"page": format!("/item/{}", n % 100)}));
        sender.send(event.with_id(format!("view-{n}"))).await?;
    }
    // Until close (or flush) returns Ok, nothing is known to be stored.
    sender.close().await?;
    println!("10000 page views stored");
    Ok(())
}
