//! Both paths of `json = "protobufjs"` held to protobufjs' own output, the
//! golden corpus generate.js wrote (`tests/fixtures/protobufjs`): the
//! transcoder writes every case itself but the group and the extension,
//! and gives protobufjs' JSON; prost-reflect's path (`ProtobufjsMessage`)
//! gives it too, but for the cases whose decoded message has lost what
//! protobufjs keeps — listed, and checked to differ, so the list stays true.

use base64::prelude::{BASE64_STANDARD, Engine as _};
use prost_reflect::DynamicMessage;
use serde_json::Value;

use super::ProtobufjsMessage;
use crate::proto_set::{ProtoSet, ProtoSource};
use crate::transcode::Transcoder;
use crate::transcode_schema::Fallback;

fn fixtures() -> String {
    format!("{}/tests/fixtures/protobufjs", env!("CARGO_MANIFEST_DIR"))
}

fn corpus() -> ProtoSet {
    let dir = format!("{}/protos", fixtures());
    let source = ProtoSource::new(format!("{dir}/**/*.proto"), vec![dir]).unwrap();
    ProtoSet::load(&source).unwrap()
}

/// Each case: its name, message type, bytes and protobufjs' JSON.
fn golden() -> Vec<(String, String, Vec<u8>, Value)> {
    let text = std::fs::read_to_string(format!("{}/golden.json", fixtures())).unwrap();
    let golden: Value = serde_json::from_str(&text).unwrap();
    golden["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|case| {
            let text = |key: &str| case[key].as_str().unwrap().to_owned();
            let bytes = BASE64_STANDARD.decode(text("bytes")).unwrap();
            (text("name"), text("kind"), bytes, case["json"].clone())
        })
        .collect()
}

/// JSON equality with numbers compared by value.
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

/// protobufjs writes 64-bit map keys as its internal hash (see README).
const INT64_MAP_KEYS: &str = "maps_int64_keys";

#[test]
fn the_transcoder_writes_what_protobufjs_wrote() {
    let set = corpus();
    let transcoder = Transcoder::new(&set.transcode, false, 100).with_protobufjs(&set.schema);
    for (name, kind, bytes, expected) in golden() {
        let written = transcoder.transcode(set.schema.message(&kind).unwrap(), &bytes);
        match name.as_str() {
            "legacy_group" => assert_eq!(written.unwrap_err(), Fallback::Group),
            "legacy_extension" => assert_eq!(written.unwrap_err(), Fallback::Extension),
            INT64_MAP_KEYS => {}
            _ => {
                let written = written.unwrap_or_else(|reason| panic!("{name}: left to prost-reflect ({reason:?})"));
                let written: Value = serde_json::from_str(written.get()).unwrap();
                assert!(same_json(&written, &expected), "{name}: {written} != {expected}");
            }
        }
    }
}

/// What a decoded message no longer knows: a proto3 field sent with its
/// default value (`-0.0` is one too), a message sent twice (merged, not
/// replaced; a map's value message too) and a oneof's members sent both
/// (the last kept).
const LOST_IN_DECODING: &[&str] = &[
    "scalars_explicit_defaults",
    "scalars_negative_zero",
    "well_known_defaults",
    "raw_singular_message_twice",
    "raw_two_oneof_members",
    "raw_map_value_message_twice",
    "well_known_all",
];

#[test]
fn prost_reflects_path_writes_what_protobufjs_wrote() {
    let set = corpus();
    for (name, kind, bytes, expected) in golden() {
        if name == INT64_MAP_KEYS {
            continue;
        }
        let descriptor = set.pool.get_message_by_name(&kind).unwrap();
        let message = DynamicMessage::decode(descriptor, bytes.as_slice()).unwrap();
        let written = serde_json::to_string(&ProtobufjsMessage {
            message: &message,
            pool: &set.pool,
            proto_names: false,
        })
        .unwrap();
        // Parsed as the golden text is, so both numbers round alike.
        let written: Value = serde_json::from_str(&written).unwrap();
        let same = same_json(&written, &expected);
        if LOST_IN_DECODING.contains(&name.as_str()) {
            assert!(!same, "{name} is listed as lost in decoding, but is not");
        } else {
            assert!(same, "{name}: {written} != {expected}");
        }
    }
}
