//! Golden tests of the protobuf filter: what producers' bytes become.
//!
//! The golden corpus (`tests/fixtures/protobufjs/golden.json`) was written
//! by protobufjs itself (`generate.js` there): the bytes it encodes for
//! messages of every field type and well-known type, and what its
//! `toJSON()` gives for them — what HFXEventStash stored. The filter must
//! give the same JSON with `json = "protobufjs"`, and prost-reflect's
//! canonical JSON with `json = "canonical"`.

use std::fs;
use std::path::Path;

use bytes::Bytes;
use eventstash_filter_protobuf::ProtobufFilterConfig;
use eventstash_plugin_api::{Event, Filter, Format, Payload};
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage};
use serde_json::{Value, json};

/// The repository's example protos.
fn repo_protos() -> String {
    format!("{}/../../protos/**/*.proto", env!("CARGO_MANIFEST_DIR"))
}

fn filter_for(protos: &str, json_names: &str) -> Box<dyn Filter> {
    shaped_filter_for(protos, json_names, "protobufjs")
}

fn shaped_filter_for(protos: &str, json_names: &str, json: &str) -> Box<dyn Filter> {
    let table = format!("protos = {protos:?}\njson_names = {json_names:?}\njson = {json:?}\n");
    Box::new(config(&table).build().unwrap())
}

fn config(table: &str) -> ProtobufFilterConfig {
    toml::from_str(table).unwrap()
}

fn protobuf_event(kind: &str, bytes: Vec<u8>) -> Event {
    Event::new(
        Format::Protobuf,
        Bytes::from(bytes),
        kind.into(),
        "1".into(),
        chrono::Utc::now(),
    )
}

fn decoded(filter: &dyn Filter, kind: &str, bytes: Vec<u8>) -> Value {
    let mut events = vec![protobuf_event(kind, bytes)];
    filter.apply(&mut events);
    serde_json::to_value(&events[0]).unwrap()
}

#[path = "support/address_book.rs"]
mod support;
use support::{AddressBook, Person, PhoneNumber, address_book_bytes};

fn address_book() -> Vec<u8> {
    address_book_bytes(1)
}

#[test]
fn address_book_decodes_to_the_reference_document() {
    let filter = filter_for(&repo_protos(), "camel");
    let document = decoded(filter.as_ref(), "contact.AddressBook", address_book());
    // The PROTOBUF document of ../shared/reference/hfx-eventstash/README.md.
    let expected = json!({"id":"ab-1","people":[{"name":"John Doe","email":"john.doe@foo.bar","phones":[{"number":"+55 (11) 1111-1111","type":"HOME"}]}]});
    assert_eq!(document["data"], expected);
    assert_eq!(document["format"], "PROTOBUF");
    assert_eq!(document["index"], "contact-address-book");
    assert!(document.get("raw").is_none() && document.get("invalidProto").is_none());
}

const KITCHEN: &str = r#"
syntax = "proto3";
package kitchen.v1;
import "google/protobuf/timestamp.proto";
import "google/protobuf/any.proto";
import "kitchen/v1/common.proto";

message Sink {
  enum Colour { COLOUR_UNSPECIFIED = 0; RED = 1; BLUE = 2; }
  string display_name = 1;
  int64 big_signed = 2;
  uint64 big_unsigned = 3;
  bytes blob = 4;
  Colour colour = 5;
  repeated int32 counts = 6;
  map<string, int64> totals = 7;
  oneof choice { string text = 8; Tap tap = 9; }
  google.protobuf.Timestamp at = 10;
  google.protobuf.Any extra = 11;
  repeated Tap taps = 12;
  double ratio = 13;
  bool clean = 14;
}
"#;

const COMMON: &str = r#"
syntax = "proto3";
package kitchen.v1;
message Tap { string side = 1; Flow flow = 2; }
message Flow { uint32 litres_per_minute = 1; }
"#;

fn kitchen_protos() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("protos/kitchen/v1");
    fs::create_dir_all(&root).unwrap();
    fs::write(root.join("sink.proto"), KITCHEN).unwrap();
    fs::write(root.join("common.proto"), COMMON).unwrap();
    let glob = format!("{}/protos/**/*.proto", dir.path().display());
    (dir, glob)
}

/// Encodes canonical JSON with prost-reflect, from the same files.
fn encode(glob_dir: &Path, message: &str, value: &Value) -> Vec<u8> {
    let mut compiler = protox::Compiler::new([glob_dir.join("protos")]).unwrap();
    compiler.open_file("kitchen/v1/sink.proto").unwrap();
    let pool: DescriptorPool = compiler.descriptor_pool();
    let descriptor = pool.get_message_by_name(message).unwrap();
    let message = DynamicMessage::deserialize(descriptor, value).unwrap();
    message.encode_to_vec()
}

fn kitchen_sink() -> Value {
    json!({
        "displayName": "main sink",
        "bigSigned": "-9007199254740993",
        "bigUnsigned": "18446744073709551615",
        "blob": "AAEC/w==",
        "colour": "BLUE",
        "counts": [1, 2, 3],
        "totals": {"a": "1", "b": "-2"},
        "tap": {"side": "left", "flow": {"litresPerMinute": 12}},
        "at": "2026-11-23T09:01:40.500Z",
        "extra": {"@type": "type.googleapis.com/kitchen.v1.Flow", "litresPerMinute": 3},
        "taps": [{"side": "a"}, {"side": "b", "flow": {}}],
        "ratio": 0.25,
        "clean": true
    })
}

#[test]
fn every_kind_of_field_follows_the_proto3_json_mapping() {
    let (dir, glob) = kitchen_protos();
    let filter = shaped_filter_for(&glob, "camel", "canonical");
    let bytes = encode(dir.path(), "kitchen.v1.Sink", &kitchen_sink());
    let document = decoded(filter.as_ref(), "kitchen.v1.Sink", bytes);
    assert_eq!(document["data"], kitchen_sink());
}

#[test]
fn proto_field_names_on_request() {
    let (dir, glob) = kitchen_protos();
    let filter = shaped_filter_for(&glob, "proto", "canonical");
    let bytes = encode(
        dir.path(),
        "kitchen.v1.Sink",
        &json!({"displayName": "x", "tap": {"flow": {"litresPerMinute": 1}}}),
    );
    let document = decoded(filter.as_ref(), "kitchen.v1.Sink", bytes);
    assert_eq!(
        document["data"],
        json!({"display_name": "x", "tap": {"flow": {"litres_per_minute": 1}}})
    );
}

#[test]
fn default_values_are_left_out_like_protobufjs_to_json() {
    let filter = filter_for(&repo_protos(), "camel");
    let bytes = AddressBook {
        id: String::new(),
        people: vec![Person {
            name: "A".into(),
            email: String::new(),
            phones: vec![PhoneNumber {
                number: "1".into(),
                r#type: 0,
            }],
        }],
    }
    .encode_to_vec();
    let document = decoded(filter.as_ref(), "contact.AddressBook", bytes);
    assert_eq!(
        document["data"],
        json!({"people":[{"name":"A","phones":[{"number":"1"}]}]})
    );
}

#[test]
fn unknown_kinds_and_broken_bytes_are_kept_and_flagged() {
    let filter = filter_for(&repo_protos(), "camel");
    let mut truncated = address_book();
    truncated.truncate(truncated.len() - 5);
    for (kind, bytes) in [
        ("contact.NoSuchBook", address_book()),
        ("contact.AddressBook", truncated.clone()),
        ("contact.AddressBook", vec![0xff, 0xff, 0xff]),
    ] {
        let document = decoded(filter.as_ref(), kind, bytes.clone());
        assert_eq!(document["invalidProto"], true, "{kind} {bytes:?}");
        let raw = document["raw"].as_str().unwrap();
        assert_eq!(raw, base64_of(&bytes));
        assert!(document.get("data").is_none());
    }
}

#[test]
fn json_events_pass_through_untouched() {
    let filter = filter_for(&repo_protos(), "camel");
    let mut events = vec![Event::new(
        Format::Json,
        Bytes::from_static(b"{\"a\":1}"),
        "contact.AddressBook".into(),
        "1".into(),
        chrono::Utc::now(),
    )];
    filter.apply(&mut events);
    assert!(matches!(&events[0].payload, Payload::Json(raw) if raw.get() == "{\"a\":1}"));
}

fn base64_of(bytes: &[u8]) -> String {
    let event = protobuf_event("x", bytes.to_vec());
    serde_json::to_value(&event).unwrap()["raw"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn a_glob_matching_nothing_or_a_broken_file_fails_the_build() {
    let dir = tempfile::tempdir().unwrap();
    let filter_config = config(&format!(
        "protos = {:?}",
        format!("{}/none/**/*.proto", dir.path().display())
    ));
    let error = filter_config.build().unwrap_err().to_string();
    assert!(error.contains("matches no file"), "{error}");

    fs::write(
        dir.path().join("broken.proto"),
        "syntax = \"proto3\";\nmessage A {\n  strin x = 1;\n}\n",
    )
    .unwrap();
    let filter_config = config(&format!("protos = {:?}", format!("{}/*.proto", dir.path().display())));
    let error = filter_config.build().unwrap_err().to_string();
    assert!(error.contains("broken.proto"), "{error}");
    assert!(error.contains(":3:"), "the error names the line: {error}");
}

mod random_bytes {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn never_panic_and_either_decode_or_keep_the_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let filter = filter_for(&repo_protos(), "camel");
            let mut events = vec![protobuf_event("contact.AddressBook", bytes.clone())];
            filter.apply(&mut events);
            match &events[0].payload {
                Payload::Json(raw) => {
                    // Bytes that happen to be a valid encoding decode to valid JSON.
                    prop_assert!(serde_json::from_str::<Value>(raw.get()).is_ok());
                }
                Payload::InvalidProto(kept) => prop_assert_eq!(kept.as_ref(), bytes.as_slice()),
                other => prop_assert!(false, "unexpected payload {:?}", other),
            }
        }
    }
}

mod protobufjs_golden {
    //! The filter against protobufjs' own `toJSON()` output.

    use super::*;
    use base64::prelude::{BASE64_STANDARD, Engine as _};
    use prost_reflect::SerializeOptions;

    /// One message of the corpus, as generate.js recorded it.
    #[derive(Debug, serde::Deserialize)]
    struct GoldenCase {
        name: String,
        kind: String,
        bytes: String,
        json: Value,
    }

    #[derive(Debug, serde::Deserialize)]
    struct Golden {
        protobufjs: String,
        cases: Vec<GoldenCase>,
    }

    fn fixtures() -> String {
        format!("{}/tests/fixtures/protobufjs", env!("CARGO_MANIFEST_DIR"))
    }

    fn golden() -> Golden {
        let text = fs::read_to_string(format!("{}/golden.json", fixtures())).unwrap();
        let golden: Golden = serde_json::from_str(&text).unwrap();
        assert!(
            golden.protobufjs.starts_with("7."),
            "generated by protobufjs {}",
            golden.protobufjs
        );
        assert!(golden.cases.len() >= 40, "the corpus has {} cases", golden.cases.len());
        golden
    }

    fn golden_protos() -> String {
        format!("{}/protos/**/*.proto", fixtures())
    }

    /// The `data` the filter writes for a case, and its text.
    fn decode_case(filter: &dyn Filter, case: &GoldenCase) -> (Value, String) {
        let bytes = BASE64_STANDARD.decode(&case.bytes).unwrap();
        let mut events = vec![protobuf_event(&case.kind, bytes)];
        filter.apply(&mut events);
        match &events[0].payload {
            Payload::Json(raw) => (serde_json::from_str(raw.get()).unwrap(), raw.get().to_owned()),
            other => panic!("{}: not decoded: {other:?}", case.name),
        }
    }

    /// JSON equality with numbers compared by value (`2` and `2.0` alike),
    /// as JavaScript's numbers are all doubles.
    fn same_json(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
            (Value::Array(a), Value::Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same_json(a, b)),
            (Value::Object(a), Value::Object(b)) => {
                a.len() == b.len() && a.iter().all(|(key, a)| b.get(key).is_some_and(|b| same_json(a, b)))
            }
            (a, b) => a == b,
        }
    }

    /// protobufjs stores a 64-bit map key under its internal 8-byte hash
    /// (`util.longToHash`), not its value; eventstash writes the decimal
    /// key in both shapes (README, "Decoding protobuf").
    const INT64_MAP_KEYS: &str = "maps_int64_keys";

    #[test]
    fn protobufjs_shape_is_what_protobufjs_to_json_gave() {
        let filter = shaped_filter_for(&golden_protos(), "camel", "protobufjs");
        let mut checked = 0;
        for case in golden().cases {
            let (data, _) = decode_case(filter.as_ref(), &case);
            if case.name == INT64_MAP_KEYS {
                assert_eq!(data, json!({"byBig": {"1": "one", "-5": "minus five"}}));
                let hashed = case.json["byBig"].as_object().unwrap();
                assert!(hashed.keys().all(|key| key.chars().count() == 8), "{hashed:?}");
                continue;
            }
            assert!(
                same_json(&data, &case.json),
                "{}: eventstash wrote\n{data}\nprotobufjs wrote\n{}",
                case.name,
                case.json
            );
            checked += 1;
        }
        assert!(checked >= 40);
    }

    #[test]
    fn protobufjs_is_the_default_shape() {
        let table = format!("protos = {:?}", golden_protos());
        let filter = config(&table).build().unwrap();
        let case = golden()
            .cases
            .into_iter()
            .find(|case| case.name == "well_known_all")
            .unwrap();
        let (data, _) = decode_case(&filter, &case);
        assert!(same_json(&data, &case.json), "{data}");
        assert_eq!(data["at"], json!({"seconds": "1700000000", "nanos": 5000000}));
    }

    #[test]
    fn integral_doubles_are_printed_as_javascript_prints_them() {
        // Elasticsearch maps `2` as a long and `2.0` as a float: the text
        // matters, not only the value.
        let filter = shaped_filter_for(&golden_protos(), "camel", "protobufjs");
        let cases = golden().cases;
        let text = |name: &str| decode_case(filter.as_ref(), cases.iter().find(|case| case.name == name).unwrap()).1;
        assert_eq!(text("scalars_integral_doubles"), r#"{"aDouble":2,"aFloat":3}"#);
        assert_eq!(text("scalars_negative_zero"), r#"{"aDouble":0,"aFloat":0}"#);
        assert_eq!(
            text("scalars_float32_precision"),
            r#"{"aDouble":1.1,"aFloat":1.100000023841858}"#
        );
    }

    #[test]
    fn canonical_shape_is_what_prost_reflect_writes() {
        let filter = shaped_filter_for(&golden_protos(), "camel", "canonical");
        let table = format!("protos = {:?}\njson = \"canonical\"", golden_protos());
        let set = config(&table).build().unwrap().current();
        let options = SerializeOptions::new()
            .skip_default_fields(true)
            .stringify_64_bit_integers(true)
            .use_enum_numbers(false);
        let mut checked = 0;
        for case in golden().cases {
            let bytes = BASE64_STANDARD.decode(&case.bytes).unwrap();
            let descriptor = set.pool.get_message_by_name(&case.kind).unwrap();
            let message = DynamicMessage::decode(descriptor, bytes.as_slice()).unwrap();
            let mut out = Vec::new();
            let serialized = message.serialize_with_options(&mut serde_json::Serializer::new(&mut out), &options);
            if serialized.is_err() {
                // An `Any` of an unknown type, or with no type URL, has no
                // canonical JSON.
                assert!(
                    ["any_of_unknown_type", "any_empty"].contains(&case.name.as_str()),
                    "{}",
                    case.name
                );
                let mut events = vec![protobuf_event(&case.kind, bytes)];
                filter.apply(&mut events);
                assert!(matches!(events[0].payload, Payload::InvalidProto(_)), "{}", case.name);
                continue;
            }
            let expected: Value = serde_json::from_slice(&out).unwrap();
            let (data, _) = decode_case(filter.as_ref(), &case);
            assert_eq!(data, expected, "{}", case.name);
            checked += 1;
        }
        assert!(checked >= 40);
        // The differences issue #17 lists, in this corpus.
        let well_known = golden()
            .cases
            .into_iter()
            .find(|case| case.name == "well_known_all")
            .unwrap();
        let (data, _) = decode_case(filter.as_ref(), &well_known);
        assert_eq!(data["at"], "2023-11-14T22:13:20.005Z");
        assert_eq!(data["took"], "3.500s");
        assert_eq!(data["int64Value"], "42");
        assert_eq!(well_known.json["int64Value"], json!({"value": "42"}));
    }
}
