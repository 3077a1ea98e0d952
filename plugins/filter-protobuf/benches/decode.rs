//! Decode throughput of the protobuf filter alone: batches of 1,000
//! `contact.AddressBook` events (HFXEventStash's example) through `apply`;
//! and how fast the depth limit turns away an `Any` nested 6,000 deep.
//! Run with `cargo bench -p eventstash-filter-protobuf`.

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use eventstash_filter_protobuf::ProtobufFilterConfig;
use eventstash_plugin_api::{Event, Filter, Format};

#[path = "../tests/support/address_book.rs"]
mod address_book;
#[path = "../tests/support/wire.rs"]
mod wire;

const BATCH: usize = 1000;

fn address_book(people: usize) -> Bytes {
    Bytes::from(address_book::address_book_bytes(people))
}

fn decode(c: &mut Criterion) {
    let protos = format!("{}/../../protos/**/*.proto", env!("CARGO_MANIFEST_DIR"));
    let config: ProtobufFilterConfig = toml::from_str(&format!("protos = {protos:?}")).unwrap();
    let filter = config.build().unwrap();
    let mut group = c.benchmark_group("protobuf_filter");
    for people in [1, 3] {
        let data = address_book(people);
        let now = chrono::Utc::now();
        let batch: Vec<Event> = (0..BATCH)
            .map(|n| {
                Event::new(
                    Format::Protobuf,
                    data.clone(),
                    "contact.AddressBook".into(),
                    n.to_string(),
                    now,
                )
            })
            .collect();
        group.throughput(Throughput::Elements(BATCH as u64));
        group.bench_function(format!("address_book_{people}_people_{}_bytes", data.len()), |b| {
            b.iter_batched(
                || batch.clone(),
                |mut events| {
                    filter.apply(&mut events);
                    events
                },
                criterion::BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

fn reject_deep_any(c: &mut Criterion) {
    let protos = format!("{}/tests/fixtures/protos/**/*.proto", env!("CARGO_MANIFEST_DIR"));
    let config: ProtobufFilterConfig = toml::from_str(&format!("protos = {protos:?}")).unwrap();
    let filter = config.build().unwrap();
    let data = Bytes::from(wire::envelope_with_nested_any(6_000));
    let event = Event::new(
        Format::Protobuf,
        data.clone(),
        "nesting.v1.Envelope".into(),
        "1".into(),
        chrono::Utc::now(),
    );
    let mut group = c.benchmark_group("protobuf_filter_depth_limit");
    group.throughput(Throughput::Elements(1));
    group.bench_function(format!("any_6000_deep_{}_bytes", data.len()), |b| {
        b.iter_batched(
            || vec![event.clone()],
            |mut events| {
                filter.apply(&mut events);
                events
            },
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, decode, reject_deep_any);
criterion_main!(benches);
