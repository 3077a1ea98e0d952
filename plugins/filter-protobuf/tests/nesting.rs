//! The depth limit (`max_depth`): payloads nested too deep — through `Any`,
//! `Struct`/`Value`/`ListValue`, recursive messages or groups — are kept
//! flagged `invalidProto` with their bytes, never crash the process; payloads
//! within it decode exactly as prost-reflect alone decodes them. Both JSON
//! shapes are held to the limit: the canonical one (compared with
//! prost-reflect's output) and protobufjs' (whose transcoder writes `Any`
//! and `Struct` itself).

use std::sync::OnceLock;

use bytes::Bytes;
use eventstash_filter_protobuf::{ProtobufFilter, ProtobufFilterConfig};
use eventstash_plugin_api::{Event, Filter, Format, Payload};
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};

#[path = "support/wire.rs"]
mod wire;
use wire::{ANY_IN_ANY, Nest, any_message, len_delimited};

fn fixture_protos() -> String {
    format!("{}/tests/fixtures/protos/**/*.proto", env!("CARGO_MANIFEST_DIR"))
}

fn config(extra: &str) -> ProtobufFilterConfig {
    toml::from_str(&format!("protos = {:?}\n{extra}", fixture_protos())).unwrap()
}

/// The filter with the default settings but the canonical shape (held to
/// prost-reflect's JSON), built once for the whole file.
fn default_filter() -> &'static ProtobufFilter {
    static FILTER: OnceLock<ProtobufFilter> = OnceLock::new();
    FILTER.get_or_init(|| config("json = \"canonical\"").build().unwrap())
}

/// The filter with the default settings: protobufjs' shape.
fn protobufjs_filter() -> &'static ProtobufFilter {
    static FILTER: OnceLock<ProtobufFilter> = OnceLock::new();
    FILTER.get_or_init(|| config("").build().unwrap())
}

/// Both shapes' filters.
fn both_filters() -> [&'static ProtobufFilter; 2] {
    [default_filter(), protobufjs_filter()]
}

fn apply(filter: &dyn Filter, kind: &str, bytes: &[u8]) -> Payload {
    let mut events = vec![Event::new(
        Format::Protobuf,
        Bytes::copy_from_slice(bytes),
        kind.into(),
        "1".into(),
        chrono::Utc::now(),
    )];
    filter.apply(&mut events);
    events.pop().unwrap().payload
}

fn kept_flagged(payload: &Payload, bytes: &[u8]) -> bool {
    matches!(payload, Payload::InvalidProto(kept) if kept.as_ref() == bytes)
}

/// What the filter made of the bytes before the depth limit: prost-reflect
/// alone, with the filter's JSON options. `None` where it fails. Parsed
/// back from text (as the filter's is), since maps come out in a different
/// order each time.
fn prost_reflect_json(kind: &str, bytes: &[u8]) -> Option<serde_json::Value> {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    let pool = POOL.get_or_init(|| default_filter().current().pool.clone());
    let options = SerializeOptions::new()
        .skip_default_fields(true)
        .stringify_64_bit_integers(true);
    let message = DynamicMessage::decode(pool.get_message_by_name(kind)?, bytes).ok()?;
    let mut json = serde_json::Serializer::new(Vec::new());
    message.serialize_with_options(&mut json, &options).ok()?;
    serde_json::from_slice(&json.into_inner()).ok()
}

fn parsed(json: &serde_json::value::RawValue) -> Option<serde_json::Value> {
    serde_json::from_str(json.get()).ok()
}

#[test]
fn any_nested_thousands_deep_is_kept_flagged_not_a_crash() {
    let bytes = wire::envelope_with_nested_any(6_000);
    assert!(bytes.len() > 200_000, "{}", bytes.len());
    let payload = apply(default_filter(), "nesting.v1.Envelope", &bytes);
    assert!(kept_flagged(&payload, &bytes));
}

#[test]
fn an_any_of_an_any_is_one_level_in_protobufjs_shape() {
    // protobufjs writes the `Any` inside an `Any` as its two fields (the
    // bytes base64), so the chain above is no deeper than two levels there.
    let bytes = wire::envelope_with_nested_any(6_000);
    let Payload::Json(json) = apply(protobufjs_filter(), "nesting.v1.Envelope", &bytes) else {
        panic!("not decoded");
    };
    let json = parsed(&json).unwrap();
    assert_eq!(json["payload"]["type_url"], ANY_IN_ANY);
    assert!(json["payload"]["value"].as_str().unwrap().len() > 200_000);
    assert_eq!(json["payload"].as_object().unwrap().len(), 2);
}

#[test]
fn every_other_deep_path_is_kept_flagged_too() {
    let cases = [
        ("nesting.v1.Node", wire::node_chain(5_000)),
        ("nesting.v1.Node", wire::node_any_chain(3_000)),
        ("google.protobuf.Value", wire::value_chain(3_000)),
        ("nesting.v1.Tree", wire::tree_chain(3_000)),
        ("nesting.v1.Tree", wire::unknown_group_chain(5_000)),
    ];
    for (kind, bytes) in cases {
        for filter in both_filters() {
            let payload = apply(filter, kind, &bytes);
            assert!(kept_flagged(&payload, &bytes), "{kind}, {} bytes", bytes.len());
        }
    }
}

#[test]
fn an_any_split_across_two_occurrences_is_followed_like_a_whole_one() {
    // Protobuf merges the two `payload`s: the type of the first, the value
    // of the second. The serialiser reads the merged Any, so must the limit.
    let split = |levels: usize| {
        let mut chain = Nest::new(&wire::leaf_node("leaf"));
        chain.wrap_in_any("type.googleapis.com/nesting.v1.Node");
        for _ in 1..levels {
            chain.wrap_in_any(ANY_IN_ANY);
        }
        [
            len_delimited(2, &any_message(Some(ANY_IN_ANY), None)),
            len_delimited(2, &any_message(None, Some(&chain.to_bytes()))),
        ]
        .concat()
    };
    let shallow = split(2);
    let Payload::Json(json) = apply(default_filter(), "nesting.v1.Envelope", &shallow) else {
        panic!("a shallow split Any decodes");
    };
    assert_eq!(
        json.get(),
        r#"{"payload":{"@type":"type.googleapis.com/google.protobuf.Any","value":{"@type":"type.googleapis.com/google.protobuf.Any","value":{"@type":"type.googleapis.com/nesting.v1.Node","label":"leaf"}}}}"#
    );
    let deep = split(6_000);
    assert!(kept_flagged(
        &apply(default_filter(), "nesting.v1.Envelope", &deep),
        &deep
    ));
}

/// Builds a payload of a shape, so many levels deep.
type Shape = fn(usize) -> Vec<u8>;

#[test]
fn nesting_up_to_the_default_limit_decodes_exactly_as_before() {
    // Each shape at depth 100, the default `max_depth`, then one level deeper.
    let shapes: [(&str, Shape, usize); 5] = [
        ("nesting.v1.Node", wire::node_chain, 100),
        ("nesting.v1.Node", wire::node_any_chain, 50),
        ("nesting.v1.Envelope", wire::envelope_with_nested_any, 99),
        ("google.protobuf.Value", wire::list_value_chain, 50),
        ("nesting.v1.Tree", wire::unknown_group_chain, 100),
    ];
    for (kind, build, at_limit) in shapes {
        let bytes = build(at_limit);
        assert_decodes_as_before(kind, &bytes);
        let deeper = build(at_limit + 1);
        assert!(kept_flagged(&apply(default_filter(), kind, &deeper), &deeper), "{kind}");
    }
    // Groups: Tree 0, Branch 1, … the 50th Branch is 99.
    assert_decodes_as_before("nesting.v1.Tree", &wire::tree_chain(50));
    // Structs: prost-types, which the serialiser converts them to, counts
    // map entries as a level too and stops at 100 of its own; so Structs
    // and lists alternating stop there, below `max_depth`, as before.
    assert_decodes_as_before("google.protobuf.Value", &wire::value_chain(40));
}

fn assert_decodes_as_before(kind: &str, bytes: &[u8]) {
    let before = prost_reflect_json(kind, bytes).expect("prost-reflect alone decodes it");
    match apply(default_filter(), kind, bytes) {
        Payload::Json(json) => assert_eq!(parsed(&json), Some(before), "{kind}"),
        other => panic!("{kind}, {} bytes: {other:?}", bytes.len()),
    }
}

#[test]
fn a_lower_max_depth_bounds_every_path() {
    for shape in ["canonical", "protobufjs"] {
        lower_max_depth_bounds_every_path(shape);
    }
}

fn lower_max_depth_bounds_every_path(shape: &str) {
    let filter = config(&format!("max_depth = 9\njson = {shape:?}")).build().unwrap();
    // (kind, bytes 9 levels deep, bytes 10 or 11 levels deep)
    let in_envelope_value = |levels| len_delimited(3, &wire::value_chain(levels));
    let mut cases = vec![
        ("nesting.v1.Node", wire::node_chain(9), wire::node_chain(10)),
        ("nesting.v1.Node", wire::node_any_chain(4), wire::node_any_chain(5)),
        ("nesting.v1.Envelope", in_envelope_value(4), in_envelope_value(5)),
        ("nesting.v1.Tree", wire::tree_chain(5), wire::tree_chain(6)),
        (
            "nesting.v1.Tree",
            wire::unknown_group_chain(9),
            wire::unknown_group_chain(10),
        ),
    ];
    if shape == "canonical" {
        // One level of `Any` of `Any` in protobufjs' shape (above).
        cases.push((
            "nesting.v1.Envelope",
            wire::envelope_with_nested_any(8),
            wire::envelope_with_nested_any(9),
        ));
    }
    for (kind, at_limit, deeper) in cases {
        assert!(
            matches!(apply(&filter, kind, &at_limit), Payload::Json(_)),
            "{shape} {kind}"
        );
        assert!(kept_flagged(&apply(&filter, kind, &deeper), &deeper), "{shape} {kind}");
    }
}

#[test]
fn the_default_limit_is_safe_on_a_two_mib_stack() {
    // Tokio's worker threads have 2 MiB stacks. The deepest payload of each
    // shape the default limit lets through must decode there, in a debug
    // build (larger frames) as in release.
    let payloads = [
        ("nesting.v1.Envelope", wire::envelope_with_nested_any(99)),
        ("nesting.v1.Node", wire::node_any_chain(50)),
        ("nesting.v1.Node", wire::node_chain(100)),
        ("google.protobuf.Value", wire::list_value_chain(50)),
        ("google.protobuf.Value", wire::value_chain(40)),
        ("nesting.v1.Tree", wire::tree_chain(50)),
        ("nesting.v1.Tree", wire::unknown_group_chain(100)),
    ];
    let decoded = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            both_filters()
                .into_iter()
                .flat_map(|filter| {
                    payloads
                        .iter()
                        .map(move |(kind, bytes)| matches!(apply(filter, kind, bytes), Payload::Json(_)))
                })
                .collect::<Vec<_>>()
        })
        .unwrap()
        .join()
        .expect("no stack overflow");
    assert_eq!(decoded, [true; 14]);
}

#[test]
fn max_depth_out_of_range_fails_the_build() {
    for value in [0, 101, 100_000] {
        let error = config(&format!("max_depth = {value}")).build().unwrap_err().to_string();
        assert!(error.contains(&format!("`max_depth` = {value}")), "{error}");
        assert!(error.contains("use 1 to 100"), "{error}");
    }
}

mod random_bytes {
    use super::*;
    use proptest::prelude::*;

    /// Message types that can nest, and the well-known types that do.
    const KINDS: [&str; 6] = [
        "nesting.v1.Envelope",
        "nesting.v1.Node",
        "nesting.v1.Tree",
        "google.protobuf.Any",
        "google.protobuf.Value",
        "google.protobuf.Struct",
    ];

    const TYPE_URLS: [&str; 6] = [
        ANY_IN_ANY,
        "type.googleapis.com/nesting.v1.Node",
        "type.googleapis.com/nesting.v1.Envelope",
        "type.googleapis.com/google.protobuf.Value",
        "type.googleapis.com/no.such.Type",
        "no-slash",
    ];

    /// Bytes shaped like protobuf: fields 1 to 6 of every wire type, nested
    /// messages, groups and Anys — so that the walk and the decoder meet
    /// more than their first byte, and Anys often name their content's
    /// type. Random bytes alone rarely get that far.
    fn wire_shaped() -> impl Strategy<Value = Vec<u8>> {
        let text = proptest::collection::vec(b'a'..=b'z', 0..6);
        let scalar = (1..7u32, 0..4u8, text).prop_map(|(field, wire_type, text)| match wire_type {
            0 => [wire::key(field, 0), wire::varint(text.len() as u64 * 37)].concat(),
            1 => [wire::key(field, 1), vec![7; 8]].concat(),
            2 => len_delimited(field, &text),
            _ => [wire::key(field, 5), vec![9; 4]].concat(),
        });
        let leaf = proptest::collection::vec(scalar.clone(), 0..3).prop_map(|fields| fields.concat());
        leaf.prop_recursive(6, 64, 4, move |inner| {
            let field = prop_oneof![
                scalar.clone(),
                (1..7u32, inner.clone()).prop_map(|(field, message)| len_delimited(field, &message)),
                (1..7u32, inner.clone()).prop_map(|(field, message)| [
                    wire::key(field, 3),
                    message,
                    wire::key(field, 4)
                ]
                .concat()),
                // Where Envelope and Node hold an Any.
                (
                    proptest::sample::select(&[2u32, 3, 6][..]),
                    proptest::sample::select(&TYPE_URLS[..]),
                    inner.clone()
                )
                    .prop_map(|(field, url, value)| len_delimited(field, &any_message(Some(url), Some(&value)))),
            ];
            proptest::collection::vec(field, 0..4).prop_map(|fields| fields.concat())
        })
    }

    /// `nesting.v1.Node`s with children, labels and Anys in any order and
    /// number — so occurrences merge, and an Any's parts can come from
    /// different ones — holding Nodes, Anys of Nodes, or half an Any.
    fn node_shaped() -> impl Strategy<Value = Vec<u8>> {
        const NODE: &str = "type.googleapis.com/nesting.v1.Node";
        let label = proptest::collection::vec(b'a'..=b'z', 0..4).prop_map(|text| len_delimited(2, &text));
        label.clone().prop_recursive(8, 64, 4, move |node| {
            let any = prop_oneof![
                node.clone().prop_map(|node| any_message(Some(NODE), Some(&node))),
                node.clone()
                    .prop_map(|node| any_message(Some(ANY_IN_ANY), Some(&any_message(Some(NODE), Some(&node))))),
                node.clone().prop_map(|node| any_message(None, Some(&node))),
                Just(any_message(Some(NODE), None)),
                Just(any_message(Some(ANY_IN_ANY), None)),
            ];
            let field = prop_oneof![
                node.prop_map(|node| len_delimited(1, &node)),
                label.clone(),
                any.prop_map(|any| len_delimited(3, &any)),
            ];
            proptest::collection::vec(field, 0..4).prop_map(|fields| fields.concat())
        })
    }

    /// Never a panic; always decoded or kept flagged with the very bytes;
    /// and, these payloads being shallow, the same outcome and JSON as
    /// prost-reflect alone: the walk rejects nothing the decoder accepts.
    /// protobufjs' shape decodes at least what the canonical one does (an
    /// `Any` of an unknown type has no canonical JSON, but has protobufjs').
    fn check(kind: &str, bytes: &[u8]) -> Result<(), TestCaseError> {
        let before = prost_reflect_json(kind, bytes);
        match apply(default_filter(), kind, bytes) {
            Payload::Json(json) => prop_assert_eq!(parsed(&json), before.clone()),
            Payload::InvalidProto(kept) => {
                prop_assert_eq!(kept.as_ref(), bytes);
                prop_assert_eq!(before.clone(), None);
            }
            other => prop_assert!(false, "unexpected payload {:?}", other),
        }
        match apply(protobufjs_filter(), kind, bytes) {
            Payload::Json(json) => prop_assert!(parsed(&json).is_some()),
            Payload::InvalidProto(kept) => {
                prop_assert_eq!(kept.as_ref(), bytes);
                prop_assert_eq!(before, None);
            }
            other => prop_assert!(false, "unexpected payload {:?}", other),
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn arbitrary_bytes(kind in proptest::sample::select(&KINDS[..]), bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            check(kind, &bytes)?;
        }

        #[test]
        fn wire_shaped_bytes(kind in proptest::sample::select(&KINDS[..]), bytes in wire_shaped()) {
            check(kind, &bytes)?;
        }

        #[test]
        fn node_shaped_bytes(bytes in node_shaped()) {
            check("nesting.v1.Node", &bytes)?;
        }
    }
}
