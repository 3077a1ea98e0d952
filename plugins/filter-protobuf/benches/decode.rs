//! Decode throughput of the protobuf filter alone: batches of 1,000
//! `contact.AddressBook` events (HFXEventStash's example) through `apply`,
//! in the default shape (protobufjs') and the canonical one (`_canonical`);
//! a message of every well-known type (the golden corpus' `well_known_all`)
//! in both; and how fast the depth limit turns away an `Any` nested 6,000
//! deep.
//! Run with `cargo bench -p eventstash-filter-protobuf`.

use base64::prelude::{BASE64_STANDARD, Engine as _};
use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use eventstash_filter_protobuf::{ProtobufFilter, ProtobufFilterConfig};
use eventstash_plugin_api::{Event, Filter, Format};

#[path = "../tests/support/address_book.rs"]
mod address_book;
#[path = "../tests/support/wire.rs"]
mod wire;

const BATCH: usize = 1000;

fn address_book(people: usize) -> Bytes {
    Bytes::from(address_book::address_book_bytes(people))
}

fn filter(protos: &str, extra: &str) -> ProtobufFilter {
    let config: ProtobufFilterConfig = toml::from_str(&format!("protos = {protos:?}\n{extra}")).unwrap();
    config.build().unwrap()
}

fn batch_of(kind: &str, data: &Bytes) -> Vec<Event> {
    let now = chrono::Utc::now();
    (0..BATCH)
        .map(|n| Event::new(Format::Protobuf, data.clone(), kind.into(), n.to_string(), now))
        .collect()
}

fn bench_batch(group: &mut BenchmarkGroup<'_, WallTime>, name: String, filter: &ProtobufFilter, batch: &[Event]) {
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function(name, |b| {
        b.iter_batched(
            || batch.to_vec(),
            |mut events| {
                filter.apply(&mut events);
                events
            },
            criterion::BatchSize::LargeInput,
        )
    });
}

/// The bytes of one case of the golden corpus.
fn golden_case(name: &str) -> Bytes {
    let path = format!("{}/tests/fixtures/protobufjs/golden.json", env!("CARGO_MANIFEST_DIR"));
    let golden: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let case = golden["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|case| case["name"] == name)
        .unwrap();
    Bytes::from(BASE64_STANDARD.decode(case["bytes"].as_str().unwrap()).unwrap())
}

fn decode(c: &mut Criterion) {
    let protos = format!("{}/../../protos/**/*.proto", env!("CARGO_MANIFEST_DIR"));
    let golden_protos = format!(
        "{}/tests/fixtures/protobufjs/protos/**/*.proto",
        env!("CARGO_MANIFEST_DIR")
    );
    let well_known = golden_case("well_known_all");
    let mut group = c.benchmark_group("protobuf_filter");
    for (suffix, extra) in [("", ""), ("_canonical", "json = \"canonical\"")] {
        let address_books = filter(&protos, extra);
        for people in [1, 3] {
            let data = address_book(people);
            let name = format!("address_book_{people}_people_{}_bytes{suffix}", data.len());
            bench_batch(
                &mut group,
                name,
                &address_books,
                &batch_of("contact.AddressBook", &data),
            );
        }
        let name = format!("well_known_types_{}_bytes{suffix}", well_known.len());
        let batch = batch_of("golden.v1.WellKnown", &well_known);
        bench_batch(&mut group, name, &filter(&golden_protos, extra), &batch);
    }
    group.finish();
}

fn reject_deep_any(c: &mut Criterion) {
    // The canonical shape: protobufjs' writes an `Any` of an `Any` as
    // bytes, so the chain is not deep there.
    let protos = format!("{}/tests/fixtures/protos/**/*.proto", env!("CARGO_MANIFEST_DIR"));
    let filter = filter(&protos, "json = \"canonical\"");
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
