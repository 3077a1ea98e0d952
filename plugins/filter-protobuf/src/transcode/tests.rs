//! The transcoder held to prost-reflect, its oracle: for random payloads of
//! every message of a corpus (`tests/fixtures/protos/transcode`: every
//! scalar type, presence, packed and unpacked lists, maps, oneofs,
//! recursion, proto2 defaults, groups, extensions and every well-known
//! type), whenever the transcoder writes JSON, prost-reflect decodes the
//! payload too and writes the same text — byte for byte, but for the order
//! of map entries, which prost-reflect does not fix. Malformed payloads
//! (random bytes, wrong wire types, invalid UTF-8, truncations) that
//! prost-reflect rejects, the transcoder must reject too.

use proptest::prelude::*;
use prost_reflect::{DynamicMessage, Kind, MessageDescriptor, SerializeOptions};

use super::Transcoder;
use crate::proto_set::{ProtoSet, ProtoSource};
use crate::transcode_schema::Fallback;

fn corpus() -> ProtoSet {
    let dir = format!("{}/tests/fixtures/protos/transcode", env!("CARGO_MANIFEST_DIR"));
    let source = ProtoSource::new(format!("{dir}/**/*.proto"), vec![dir]).unwrap();
    ProtoSet::load(&source).unwrap()
}

/// What prost-reflect writes for `bytes`, as the filter configures it.
fn oracle(set: &ProtoSet, kind: &str, bytes: &[u8], proto_names: bool) -> Option<String> {
    let descriptor = set.pool.get_message_by_name(kind).unwrap();
    let message = DynamicMessage::decode(descriptor, bytes).ok()?;
    let options = SerializeOptions::new()
        .use_proto_field_name(proto_names)
        .skip_default_fields(true)
        .stringify_64_bit_integers(true)
        .use_enum_numbers(false);
    let mut out = Vec::new();
    // Some well-known types fail to serialise (a timestamp out of range):
    // the filter keeps those undecoded.
    message
        .serialize_with_options(&mut serde_json::Serializer::new(&mut out), &options)
        .ok()?;
    Some(String::from_utf8(out).unwrap())
}

fn transcoded(set: &ProtoSet, kind: &str, bytes: &[u8], proto_names: bool) -> Result<String, Fallback> {
    let transcoder = Transcoder::new(&set.transcode, proto_names, 100);
    let message = set.schema.message(kind).unwrap();
    transcoder.transcode(message, bytes).map(|json| json.get().to_owned())
}

/// Whether `kind` holds a map anywhere below it (then only the parsed JSON
/// must match: prost-reflect's map order is a hash map's).
fn has_maps(message: &MessageDescriptor, seen: &mut Vec<String>) -> bool {
    if seen.iter().any(|name| name == message.full_name()) {
        return false;
    }
    seen.push(message.full_name().to_owned());
    message.fields().any(|field| {
        field.is_map()
            || match field.kind() {
                Kind::Message(inner) => has_maps(&inner, seen),
                _ => false,
            }
    })
}

/// Checks the transcoder against the oracle for one payload; returns
/// whether the transcoder wrote it itself.
fn check(set: &ProtoSet, kind: &str, bytes: &[u8]) -> bool {
    let maps = has_maps(&set.pool.get_message_by_name(kind).unwrap(), &mut Vec::new());
    let mut direct = false;
    for proto_names in [false, true] {
        let expected = oracle(set, kind, bytes, proto_names);
        // When the transcoder stops, the filter asks prost-reflect, whose
        // answer stands.
        if let Ok(json) = transcoded(set, kind, bytes, proto_names) {
            direct = true;
            let Some(expected) = expected else {
                panic!("{kind}: prost-reflect rejects {bytes:02x?}, the transcoder wrote {json}");
            };
            if maps {
                let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
                let wanted: serde_json::Value = serde_json::from_str(&expected).unwrap();
                assert_eq!(parsed, wanted, "{kind} {bytes:02x?}\n{json}\n{expected}");
            } else {
                assert_eq!(json, expected, "{kind} {bytes:02x?}");
            }
        }
    }
    direct
}

/// A small deterministic generator of wire bytes for a message type,
/// driven by proptest's seed: mostly well-formed values of the declared
/// fields, sometimes unknown fields, repeats, wrong wire types, invalid
/// UTF-8 and corruption.
struct Generator {
    state: u64,
}

impl Generator {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn message(&mut self, message: &MessageDescriptor, depth: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let fields: Vec<_> = message.fields().collect();
        for _ in 0..self.below(7) {
            if fields.is_empty() || self.chance(8) {
                self.unknown_field(message, &mut out);
                continue;
            }
            let field = &fields[self.below(fields.len() as u64) as usize];
            if field.is_map() {
                let Kind::Message(entry) = field.kind() else {
                    unreachable!()
                };
                let entry_bytes = self.map_entry(&entry, depth);
                key(&mut out, field.number(), 2);
                length_delimited(&mut out, &entry_bytes);
            } else if field.is_group() {
                let Kind::Message(inner) = field.kind() else {
                    unreachable!()
                };
                key(&mut out, field.number(), 3);
                let body = self.message(&inner, depth + 1);
                out.extend_from_slice(&body);
                key(&mut out, field.number(), 4);
            } else if field.is_list() && packable(&field.kind()) && self.chance(50) {
                let mut packed = Vec::new();
                for _ in 0..self.below(4) {
                    self.value(&field.kind(), depth, &mut packed);
                }
                key(&mut out, field.number(), 2);
                length_delimited(&mut out, &packed);
            } else {
                self.field(field.number(), &field.kind(), depth, &mut out);
            }
        }
        // Extensions of proto2 messages.
        if message.extension_ranges().next().is_some() && self.chance(10) {
            key(&mut out, 100, 2);
            length_delimited(&mut out, b"x");
        }
        if self.chance(5) {
            self.corrupt(&mut out);
        }
        out
    }

    fn map_entry(&mut self, entry: &MessageDescriptor, depth: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let key_field = entry.map_entry_key_field();
        let value_field = entry.map_entry_value_field();
        let mut parts = vec![1, 2];
        if self.chance(20) {
            parts.swap(0, 1);
        }
        if self.chance(10) {
            parts.remove(self.below(2) as usize);
        }
        if self.chance(5) {
            parts.push(1 + self.below(3) as u32);
        }
        for part in parts {
            match part {
                1 => self.field(1, &key_field.kind(), depth, &mut out),
                2 => self.field(2, &value_field.kind(), depth + 1, &mut out),
                _ => {
                    key(&mut out, 3, 0);
                    varint(&mut out, self.next());
                }
            }
        }
        out
    }

    fn unknown_field(&mut self, message: &MessageDescriptor, out: &mut Vec<u8>) {
        let number = loop {
            let number = 1 + self.below(40) as u32;
            if message.get_field(number).is_none() && !(100..200).contains(&number) {
                break number;
            }
        };
        match self.below(5) {
            0 => {
                key(out, number, 0);
                varint(out, self.next());
            }
            1 => {
                key(out, number, 1);
                out.extend_from_slice(&self.next().to_le_bytes());
            }
            2 => {
                key(out, number, 5);
                out.extend_from_slice(&(self.next() as u32).to_le_bytes());
            }
            3 => {
                key(out, number, 2);
                length_delimited(out, b"unknown");
            }
            _ => {
                key(out, number, 3);
                key(out, 1, 0);
                varint(out, 1);
                key(out, number, 4);
            }
        }
    }

    /// A key and a value for field `number` of `kind`; now and then with a
    /// wrong wire type.
    fn field(&mut self, number: u32, kind: &Kind, depth: u32, out: &mut Vec<u8>) {
        if self.chance(3) {
            key(out, number, [0, 1, 2, 5][self.below(4) as usize]);
            varint(out, 1);
            return;
        }
        key(out, number, wire_type(kind));
        self.value(kind, depth, out);
    }

    fn value(&mut self, kind: &Kind, depth: u32, out: &mut Vec<u8>) {
        const VARINTS: [u64; 12] = [
            0,
            1,
            2,
            99,
            u64::MAX,
            i32::MIN as i64 as u64,
            i32::MAX as u64,
            u32::MAX as u64,
            1 << 32,
            i64::MIN as u64,
            i64::MAX as u64,
            0x8000_0001,
        ];
        const FLOATS: [f32; 9] = [
            0.0,
            -0.0,
            1.5,
            -2.25,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            1e-42,
        ];
        const DOUBLES: [f64; 10] = [
            0.0,
            -0.0,
            0.1,
            -2.5e300,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MIN_POSITIVE,
            5e-324,
            1e21,
        ];
        const STRINGS: [&[u8]; 8] = [
            b"",
            b"a",
            b"John Doe",
            "caf\u{e9} \u{1f600}".as_bytes(),
            b"quote \" backslash \\ newline \n tab \t",
            b"\x01\x1f\x7f",
            b"\xff\xfe",
            b"\xc3",
        ];
        match kind {
            Kind::Double | Kind::Fixed64 | Kind::Sfixed64 => {
                let bits = if self.chance(50) {
                    DOUBLES[self.below(DOUBLES.len() as u64) as usize].to_bits()
                } else {
                    VARINTS[self.below(VARINTS.len() as u64) as usize] ^ (self.next() & self.below(2).wrapping_neg())
                };
                out.extend_from_slice(&bits.to_le_bytes());
            }
            Kind::Float | Kind::Fixed32 | Kind::Sfixed32 => {
                let bits = if self.chance(50) {
                    FLOATS[self.below(FLOATS.len() as u64) as usize].to_bits()
                } else {
                    self.next() as u32
                };
                out.extend_from_slice(&bits.to_le_bytes());
            }
            Kind::String | Kind::Bytes => {
                let text = STRINGS[self.below(STRINGS.len() as u64) as usize];
                length_delimited(out, text);
            }
            Kind::Message(inner) => {
                let body = if depth < 4 {
                    self.message(inner, depth + 1)
                } else {
                    Vec::new()
                };
                length_delimited(out, &body);
            }
            Kind::Enum(_) => varint(out, [0, 1, 2, 5, u64::MAX][self.below(5) as usize]),
            _ => {
                let value = if self.chance(70) {
                    VARINTS[self.below(VARINTS.len() as u64) as usize]
                } else {
                    self.next() >> self.below(64)
                };
                varint(out, value);
            }
        }
    }

    fn corrupt(&mut self, out: &mut Vec<u8>) {
        if out.is_empty() {
            out.push(self.next() as u8);
            return;
        }
        let at = self.below(out.len() as u64) as usize;
        match self.below(3) {
            0 => out[at] ^= 1 << self.below(8),
            1 => out.truncate(at),
            _ => out.insert(at, self.next() as u8),
        }
    }
}

fn packable(kind: &Kind) -> bool {
    !matches!(kind, Kind::String | Kind::Bytes | Kind::Message(_))
}

fn wire_type(kind: &Kind) -> u32 {
    match kind {
        Kind::Double | Kind::Fixed64 | Kind::Sfixed64 => 1,
        Kind::Float | Kind::Fixed32 | Kind::Sfixed32 => 5,
        Kind::String | Kind::Bytes | Kind::Message(_) => 2,
        _ => 0,
    }
}

fn key(out: &mut Vec<u8>, number: u32, wire: u32) {
    varint(out, u64::from(number << 3 | wire));
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn length_delimited(out: &mut Vec<u8>, bytes: &[u8]) {
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

const KINDS: [&str; 11] = [
    "transcode.v1.Scalars",
    "transcode.v1.Optionals",
    "transcode.v1.Lists",
    "transcode.v1.Maps",
    "transcode.v1.Choices",
    "transcode.v1.Node",
    "transcode.v1.WellKnown",
    "transcode.v1.Legacy",
    "transcode.v1.Legacy.Extra",
    // Map entries sent as messages of their own.
    "transcode.v1.Maps.StringToStringEntry",
    "transcode.v1.Maps.Fixed32ToMessageEntry",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn generated_payloads_transcode_as_prost_reflect_writes_them(seed in any::<u64>(), kind in 0..KINDS.len()) {
        thread_local!(static SET: ProtoSet = corpus());
        SET.with(|set| {
            let kind = KINDS[kind];
            let descriptor = set.pool.get_message_by_name(kind).unwrap();
            let bytes = Generator { state: seed }.message(&descriptor, 0);
            check(set, kind, &bytes);
        });
    }

    #[test]
    fn random_bytes_are_rejected_whenever_prost_reflect_rejects_them(
        bytes in proptest::collection::vec(any::<u8>(), 0..48),
        kind in 0..KINDS.len(),
    ) {
        thread_local!(static SET: ProtoSet = corpus());
        SET.with(|set| {
            check(set, KINDS[kind], &bytes);
        });
    }
}

/// The generator must exercise the transcoder itself, not only its
/// fallbacks: a good share of the generated payloads of the covered types
/// (which include corrupt ones, merges and keys sent twice) are written
/// directly.
#[test]
fn most_generated_payloads_of_covered_types_are_transcoded_directly() {
    let set = corpus();
    let mut total = 0;
    for kind in &KINDS[..6] {
        let descriptor = set.pool.get_message_by_name(kind).unwrap();
        let direct = (0..500u64)
            .filter(|&seed| check(&set, kind, &Generator { state: seed }.message(&descriptor, 0)))
            .count();
        // Recursive `Node`s often hold a corrupt or merged level somewhere,
        // and `Choices` often gets two members of a oneof.
        assert!(
            direct >= 100,
            "{kind}: only {direct} of 500 payloads transcoded directly"
        );
        total += direct;
    }
    assert!(total >= 1500, "only {total} of 3000 payloads transcoded directly");
}

#[test]
fn what_the_transcoder_leaves_to_prost_reflect_is_named() {
    let set = corpus();
    let wkt = [0x0a, 0x02, 0x08, 0x01]; // WellKnown.at = { seconds: 1 }
    assert_eq!(
        transcoded(&set, "transcode.v1.WellKnown", &wkt, false),
        Err(Fallback::WellKnownType)
    );
    let group = [0x43, 0x4a, 0x00, 0x44, 0x18, 0x01]; // Legacy.Extra { note: "" }
    assert_eq!(
        transcoded(&set, "transcode.v1.Legacy", &group, false),
        Err(Fallback::Group)
    );
    let extension = [0xa2, 0x06, 0x01, b'x']; // Legacy.tag = "x"
    assert_eq!(
        transcoded(&set, "transcode.v1.Legacy", &extension, false),
        Err(Fallback::Extension)
    );
    let merged = [0xa2, 0x01, 0x00, 0xa2, 0x01, 0x00]; // Optionals.scalars twice
    assert_eq!(
        transcoded(&set, "transcode.v1.Optionals", &merged, false),
        Err(Fallback::Merge)
    );
    let two_members = [0x0a, 0x00, 0x10, 0x01]; // Choices.text, then .number
    assert_eq!(
        transcoded(&set, "transcode.v1.Choices", &two_members, false),
        Err(Fallback::Merge)
    );
    let same_key = [0x0a, 0x02, 0x0a, 0x00, 0x0a, 0x02, 0x0a, 0x00]; // "" twice
    assert_eq!(
        transcoded(&set, "transcode.v1.Maps", &same_key, false),
        Err(Fallback::DuplicateMapKey)
    );
    let many: Vec<u8> = [0x18, 0x01].repeat(super::MAX_OCCURRENCES + 1); // Scalars.an_int32
    assert_eq!(
        transcoded(&set, "transcode.v1.Scalars", &many, false),
        Err(Fallback::Large)
    );
    assert_eq!(
        transcoded(&set, "transcode.v1.Scalars", &many[2..], false).as_deref(),
        Ok(r#"{"anInt32":1}"#)
    );
    let bad_utf8 = [0x72, 0x01, 0xff]; // Scalars.a_string
    assert_eq!(
        transcoded(&set, "transcode.v1.Scalars", &bad_utf8, false),
        Err(Fallback::Malformed)
    );
}

#[test]
fn nesting_past_max_depth_is_left_to_the_depth_check() {
    let set = corpus();
    let mut bytes = Vec::new();
    for _ in 0..5 {
        let mut outer = Vec::new();
        key(&mut outer, 2, 2);
        length_delimited(&mut outer, &bytes);
        bytes = outer;
    }
    let message = set.schema.message("transcode.v1.Node").unwrap();
    let shallow = Transcoder::new(&set.transcode, false, 4);
    assert_eq!(shallow.transcode(message, &bytes).map(drop), Err(Fallback::TooDeep));
    let deep_enough = Transcoder::new(&set.transcode, false, 5);
    assert_eq!(
        deep_enough.transcode(message, &bytes).map(|json| json.get().to_owned()),
        Ok(r#"{"child":{"child":{"child":{"child":{"child":{}}}}}}"#.to_owned())
    );
}

#[test]
fn the_reference_address_book_is_transcoded_directly() {
    let dir = format!("{}/../../protos", env!("CARGO_MANIFEST_DIR"));
    let source = ProtoSource::new(format!("{dir}/**/*.proto"), vec![dir]).unwrap();
    let set = ProtoSet::load(&source).unwrap();
    let bytes = [
        &[0x0a, 0x04][..],
        b"ab-1",
        &[0x12, 0x34, 0x0a, 0x08],
        b"John Doe",
        &[0x12, 0x10],
        b"john.doe@foo.bar",
        &[0x1a, 0x16, 0x0a, 0x12],
        b"+55 (11) 1111-1111",
        &[0x10, 0x01],
    ]
    .concat();
    let expected = r#"{"id":"ab-1","people":[{"name":"John Doe","email":"john.doe@foo.bar","phones":[{"number":"+55 (11) 1111-1111","type":"HOME"}]}]}"#;
    assert_eq!(
        oracle(&set, "contact.AddressBook", &bytes, false).as_deref(),
        Some(expected)
    );
    assert_eq!(
        transcoded(&set, "contact.AddressBook", &bytes, false).as_deref(),
        Ok(expected)
    );
}

/// protobufjs' shape has no prost-reflect oracle of its own; its two paths
/// are held to each other instead (and both to protobufjs' own output by
/// the golden corpus, `protobufjs::tests`). A decoded message has lost
/// what only the wire shows (defaults sent, merges, a oneof's earlier
/// members), so both are given the bytes prost-reflect writes back for the
/// payload, where nothing of that is left: there, whenever the transcoder
/// writes the payload itself, prost-reflect's path writes the same JSON.
fn check_protobufjs(set: &ProtoSet, kind: &str, bytes: &[u8]) -> bool {
    use prost::Message as _;

    let descriptor = set.pool.get_message_by_name(kind).unwrap();
    let Ok(message) = DynamicMessage::decode(descriptor.clone(), bytes) else {
        return false;
    };
    let canonical = message.encode_to_vec();
    let message = DynamicMessage::decode(descriptor, canonical.as_slice()).unwrap();
    let transcoder = Transcoder::new(&set.transcode, false, 100).with_protobufjs(&set.schema);
    let Ok(direct) = transcoder.transcode(set.schema.message(kind).unwrap(), &canonical) else {
        return false;
    };
    let fallback = serde_json::to_string(&crate::protobufjs::ProtobufjsMessage {
        message: &message,
        pool: &set.pool,
        proto_names: false,
    });
    let Ok(fallback) = fallback else {
        panic!("{kind}: the transcoder wrote {canonical:02x?}, prost-reflect's path could not");
    };
    let direct: serde_json::Value = serde_json::from_str(direct.get()).unwrap();
    let fallback: serde_json::Value = serde_json::from_str(&fallback).unwrap();
    assert_eq!(direct, fallback, "{kind} {canonical:02x?}");
    true
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5_000))]

    #[test]
    fn protobufjs_shape_is_the_same_on_both_paths(seed in any::<u64>(), kind in 0..KINDS.len()) {
        thread_local!(static SET: ProtoSet = corpus());
        SET.with(|set| {
            let kind = KINDS[kind];
            let descriptor = set.pool.get_message_by_name(kind).unwrap();
            check_protobufjs(set, kind, &Generator { state: seed }.message(&descriptor, 0));
        });
    }
}

/// The comparison above must not pass by comparing nothing.
#[test]
fn most_generated_payloads_are_compared_in_protobufjs_shape() {
    let set = corpus();
    for kind in KINDS {
        let descriptor = set.pool.get_message_by_name(kind).unwrap();
        let compared = (0..300u64)
            .filter(|&seed| check_protobufjs(&set, kind, &Generator { state: seed }.message(&descriptor, 0)))
            .count();
        let floor = 50;
        assert!(compared >= floor, "{kind}: only {compared} of 300 payloads compared");
    }
}
