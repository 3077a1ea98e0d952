//! The depth limit (`max_depth`): a walk over a payload's wire format, guided
//! by the message descriptors, that rejects it when messages nest too deep,
//! before prost-reflect decodes it.
//!
//! prost-reflect's decoder stops at 100 nested messages, but it keeps a
//! `google.protobuf.Any`'s value as bytes, and its JSON serialiser decodes
//! them on the way — recursively, with a fresh limit, copying everything
//! below at each level. An `Any` holding an `Any` … a few thousand deep (a
//! few hundred KB) overflowed a worker's stack and aborted the process. This
//! walk follows everything the decoder and the serialiser will follow —
//! message fields, map entries, groups (declared or unknown) and `Any`
//! contents, resolved through the descriptor pool — on a stack of its own
//! rather than by recursion. It reads each byte once (a type URL twice),
//! never copies, and stops at the first level past the limit: a payload
//! thousands of `Any`s deep is turned away after its first hundred levels.
//!
//! Depth is counted as prost counts it: the payload's message is level 0, a
//! message field or a group is one deeper than the message holding it, a map
//! entry's value one deeper than the message holding the map, and an `Any`'s
//! content one deeper than the `Any`. So with the default limit, payloads
//! without `Any` pass exactly when prost-reflect would decode them.
//!
//! Protobuf merges repeated occurrences of a singular message field (as if
//! their bytes were concatenated), so one `Any` can take its `type_url` from
//! one occurrence and its `value` from another. An `Any` is therefore
//! resolved only when the message instance it belongs to is complete: at the
//! end of its *merge scope* — the payload, an `Any`'s content, an element of
//! a repeated field or a map entry, which no later bytes can merge into.
//! Within a scope, occurrences of one `Any` are matched by their path of
//! field numbers (at most `max_depth` long).

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::ops::Range;

use crate::wire::{WireError, WireReader, WireType};
use crate::wire_schema::{Encoding, MessageIndex, WireSchema};

/// The deepest nesting the filter decodes: `max_depth`, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MaxDepth(u32);

impl MaxDepth {
    /// The default and the highest value accepted: prost's own recursion
    /// limit, so payloads without `Any` decode as they always did, and the
    /// depth the tests prove safe on a 2 MiB thread stack.
    pub(crate) const CEILING: u32 = 100;

    /// `None` unless `1 ..= CEILING`.
    pub(crate) fn new(value: u32) -> Option<MaxDepth> {
        (1..=MaxDepth::CEILING).contains(&value).then_some(MaxDepth(value))
    }

    /// The limit, in levels below the payload's message.
    pub(crate) fn get(self) -> u32 {
        self.0
    }
}

/// Why a payload is not walked to its end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NestingError {
    /// Messages nest deeper than `max_depth`.
    #[error("messages nest more than {limit} levels deep (`max_depth`) at byte {at}")]
    TooDeep { limit: u32, at: usize },
    /// The `Any` contents the serialiser would decode add up to more than
    /// [`any_budget`] of the payload: each level of an `Any` chain is
    /// decoded again, so a chain around a large value costs its depth times
    /// its size in memory.
    #[error("`Any` contents add up to more than {budget} bytes to decode for a payload of {len} bytes")]
    AnyTooLarge { budget: usize, len: usize },
    /// The bytes are not a protobuf encoding (prost-reflect would fail too).
    #[error(transparent)]
    Malformed(#[from] WireError),
}

/// How many bytes of `Any` contents the serialiser may decode for a payload
/// of `len` bytes: eight times the payload, and at least 1 MiB so that small
/// payloads nest `Any`s as deep as `max_depth` allows.
fn any_budget(len: usize) -> usize {
    len.saturating_mul(8).max(1024 * 1024)
}

/// Checks payloads against the depth limit. Its buffers are kept from one
/// payload to the next: one walker per batch, no allocation per event.
#[derive(Debug)]
pub(crate) struct NestingWalker {
    limit: u32,
    /// The messages and groups open, outermost first; never deeper than
    /// `limit` (plus the map entries in between).
    stack: Vec<Frame>,
    /// The parts read so far of each `Any` open on `stack`, innermost last.
    anys: Vec<AnyParts>,
    /// `Any`s waiting for the end of their merge scope, by the scope's
    /// index on `stack` and their path of field numbers from it.
    pending: BTreeMap<(usize, Box<[u32]>), PendingAny>,
    /// `Any` contents waiting to be walked.
    contents: Vec<Content>,
}

impl NestingWalker {
    pub(crate) fn new(limit: MaxDepth) -> NestingWalker {
        NestingWalker {
            limit: limit.0,
            stack: Vec::new(),
            anys: Vec::new(),
            pending: BTreeMap::new(),
            contents: Vec::new(),
        }
    }

    /// Walks `bytes` as the message `message` of `schema`; `Ok` if nothing
    /// in it nests deeper than the limit.
    pub(crate) fn check(
        &mut self,
        schema: &WireSchema,
        message: MessageIndex,
        bytes: &[u8],
    ) -> Result<(), NestingError> {
        self.check_with_budget(schema, message, bytes, any_budget(bytes.len()))
    }

    /// [`check`](Self::check) with `Any` contents limited to `budget` bytes.
    fn check_with_budget(
        &mut self,
        schema: &WireSchema,
        message: MessageIndex,
        bytes: &[u8],
        budget: usize,
    ) -> Result<(), NestingError> {
        // What a walk that stopped early left behind.
        self.stack.clear();
        self.anys.clear();
        self.pending.clear();
        self.contents.clear();
        let mut walk = Walk {
            reader: WireReader::new(bytes),
            schema,
            walker: self,
            any_bytes: 0,
            any_budget: budget,
        };
        walk.walk(Content {
            message,
            range: 0..bytes.len(),
            depth: 0,
        })?;
        while let Some(content) = walk.walker.contents.pop() {
            walk.walk(content)?;
        }
        Ok(())
    }
}

/// A message to walk on its own: the payload, or an `Any`'s content.
#[derive(Debug)]
struct Content {
    message: MessageIndex,
    range: Range<usize>,
    depth: u32,
}

/// An `Any`'s fields as read so far: the last of each, as protobuf merges.
#[derive(Debug, Default)]
struct AnyParts {
    type_url: Option<Range<usize>>,
    value: Option<Range<usize>>,
}

impl AnyParts {
    fn merge(&mut self, later: AnyParts) {
        self.type_url = later.type_url.or(self.type_url.take());
        self.value = later.value.or(self.value.take());
    }
}

/// An `Any` met in a merge scope, resolved when the scope ends.
#[derive(Debug)]
struct PendingAny {
    depth: u32,
    parts: AnyParts,
}

/// One message or group being walked.
#[derive(Debug)]
struct Frame {
    /// Its type; `None` for a group of an undeclared field, walked for its
    /// shape only (prost-reflect keeps it as unknown fields).
    message: Option<MessageIndex>,
    /// Where its bytes end: a message's length; for a group, the end of the
    /// message holding it (its end-group key must come first).
    end: usize,
    /// For a group, its field number: the end-group key that closes it.
    group: Option<u32>,
    /// Its nesting level, as prost counts it.
    depth: u32,
    /// The field it was read from (0 for a `Content`): a step of an `Any`'s path.
    field: u32,
    /// The index on the stack of the frame that starts its merge scope
    /// (its own index if it starts one).
    scope: usize,
    /// It is a `google.protobuf.Any` (its parts are on `anys`).
    is_any: bool,
}

/// One payload's walk, over a `NestingWalker`'s buffers.
struct Walk<'a> {
    reader: WireReader<'a>,
    /// The message types, where `Any` type URLs are looked up too.
    schema: &'a WireSchema,
    walker: &'a mut NestingWalker,
    /// The `Any` contents met so far, in bytes, against `any_budget`.
    any_bytes: usize,
    /// Most bytes of `Any` contents to accept ([`any_budget`] of the payload).
    any_budget: usize,
}

impl Walk<'_> {
    fn walk(&mut self, content: Content) -> Result<(), NestingError> {
        self.reader.seek(content.range.start);
        self.push(Some(content.message), content.range.end, None, content.depth, 0, true)?;
        while let Some(frame) = self.walker.stack.last() {
            let (end, group) = (frame.end, frame.group);
            let at = self.reader.pos();
            if at == end {
                if group.is_some() {
                    return Err(WireError::UnclosedGroup { at }.into());
                }
                self.close()?;
                continue;
            }
            let (number, wire_type) = self.reader.read_key(end)?;
            match (wire_type, group) {
                (WireType::EndGroup, Some(group)) if group == number => self.close()?,
                (WireType::EndGroup, Some(_)) => return Err(WireError::UnexpectedEndGroup { at }.into()),
                _ => self.field(number, wire_type, at)?,
            }
        }
        Ok(())
    }

    /// Reads one field of the innermost open frame, entering it if it holds
    /// a message.
    fn field(&mut self, number: u32, wire_type: WireType, at: usize) -> Result<(), NestingError> {
        let Some(frame) = self.walker.stack.last() else {
            return Ok(());
        };
        let (end, depth, message) = (frame.end, frame.depth, frame.message);
        if frame.is_any && wire_type == WireType::LengthDelimited && (number == 1 || number == 2) {
            let range = self.reader.read_length_delimited(end)?;
            if let Some(any) = self.walker.anys.last_mut() {
                if number == 1 {
                    any.type_url = Some(range);
                } else {
                    any.value = Some(range);
                }
            }
            return Ok(());
        }
        let Some(field) = message.and_then(|message| self.schema.message_field(message, number)) else {
            return self.other_field(number, wire_type, end, depth, at);
        };
        match field.encoding {
            // prost-reflect reads a map entry's length whatever wire type
            // its key says; the walk must stay in step with it.
            Encoding::MapEntry => {
                let range = self.reader.read_length_delimited(end)?;
                self.reader.seek(range.start);
                self.push(Some(field.message), range.end, None, depth, number, true)
            }
            Encoding::Group if wire_type == WireType::StartGroup => self.push(
                Some(field.message),
                end,
                Some(number),
                depth + 1,
                number,
                field.repeated,
            ),
            Encoding::LengthDelimited if wire_type == WireType::LengthDelimited => {
                let range = self.reader.read_length_delimited(end)?;
                self.reader.seek(range.start);
                self.push(Some(field.message), range.end, None, depth + 1, number, field.repeated)
            }
            Encoding::Group | Encoding::LengthDelimited => Err(WireError::WrongWireType { number, at }.into()),
        }
    }

    /// A scalar or an undeclared field: skipped, but groups are walked,
    /// since prost-reflect parses them (recursively) to keep them.
    fn other_field(
        &mut self,
        number: u32,
        wire_type: WireType,
        end: usize,
        depth: u32,
        at: usize,
    ) -> Result<(), NestingError> {
        match wire_type {
            WireType::Varint => self.reader.skip_varint(end)?,
            WireType::Fixed64 => self.reader.skip_fixed(8, end)?,
            WireType::Fixed32 => self.reader.skip_fixed(4, end)?,
            WireType::LengthDelimited => self.reader.skip_length_delimited(end)?,
            WireType::StartGroup => self.push(None, end, Some(number), depth + 1, number, false)?,
            WireType::EndGroup => return Err(WireError::UnexpectedEndGroup { at }.into()),
        }
        Ok(())
    }

    /// Opens a frame whose bytes start at the reader's position.
    fn push(
        &mut self,
        message: Option<MessageIndex>,
        end: usize,
        group: Option<u32>,
        depth: u32,
        field: u32,
        starts_scope: bool,
    ) -> Result<(), NestingError> {
        let walker = &mut *self.walker;
        if depth > walker.limit {
            return Err(NestingError::TooDeep {
                limit: walker.limit,
                at: self.reader.pos(),
            });
        }
        let scope = match walker.stack.last() {
            Some(parent) if !starts_scope => parent.scope,
            _ => walker.stack.len(),
        };
        let is_any = message.is_some_and(|message| self.schema.is_any(message));
        if is_any {
            walker.anys.push(AnyParts::default());
        }
        walker.stack.push(Frame {
            message,
            end,
            group,
            depth,
            field,
            scope,
            is_any,
        });
        Ok(())
    }

    /// Closes the innermost frame. An `Any` that starts its own merge scope
    /// is complete; any other joins its scope's pending ones, which are
    /// complete when that scope ends.
    fn close(&mut self) -> Result<(), NestingError> {
        let walker = &mut *self.walker;
        let Some(frame) = walker.stack.pop() else {
            return Ok(());
        };
        let index = walker.stack.len();
        let parts = if frame.is_any { walker.anys.pop() } else { None };
        if let Some(parts) = parts {
            let any = PendingAny {
                depth: frame.depth,
                parts,
            };
            if frame.scope == index {
                return self.defer_content(any);
            }
            let path = walker.stack[frame.scope + 1..]
                .iter()
                .map(|open| open.field)
                .chain([frame.field])
                .collect();
            match walker.pending.entry((frame.scope, path)) {
                Entry::Vacant(entry) => drop(entry.insert(any)),
                Entry::Occupied(mut entry) => entry.get_mut().parts.merge(any.parts),
            }
        }
        let scope_ends = frame.scope == index;
        if scope_ends
            && walker
                .pending
                .last_key_value()
                .is_some_and(|((scope, _), _)| *scope == index)
        {
            // Scopes opened later have ended already: this one's are last.
            let complete = walker.pending.split_off(&(index, Box::default()));
            for any in complete.into_values() {
                self.defer_content(any)?;
            }
        }
        Ok(())
    }

    /// Queues a complete `Any`'s content, one level deeper than the `Any`.
    /// Without a `type_url` naming a loaded message the serialiser fails
    /// before reading the value, so there is nothing to follow.
    fn defer_content(&mut self, any: PendingAny) -> Result<(), NestingError> {
        let Some(message) = any.parts.type_url.and_then(|type_url| self.resolve(type_url)) else {
            return Ok(());
        };
        let value = any.parts.value.unwrap_or(0..0);
        self.any_bytes = self.any_bytes.saturating_add(value.len());
        if self.any_bytes > self.any_budget {
            return Err(NestingError::AnyTooLarge {
                budget: self.any_budget,
                len: self.reader.len(),
            });
        }
        let depth = any.depth + 1;
        if depth > self.walker.limit {
            return Err(NestingError::TooDeep {
                limit: self.walker.limit,
                at: value.start,
            });
        }
        self.walker.contents.push(Content {
            message,
            range: value,
            depth,
        });
        Ok(())
    }

    /// The message a type URL names, as prost-reflect finds it: the name
    /// after the last `/`.
    fn resolve(&self, type_url: Range<usize>) -> Option<MessageIndex> {
        let type_url = std::str::from_utf8(self.reader.slice(type_url)).ok()?;
        let (_, name) = type_url.rsplit_once('/')?;
        self.schema.message(name)
    }
}

#[cfg(test)]
#[path = "../tests/support/wire.rs"]
mod wire_builder;

#[cfg(test)]
mod tests {
    use super::wire_builder::{self as build, ANY_IN_ANY, len_delimited};
    use super::*;

    fn pool() -> prost_reflect::DescriptorPool {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/protos");
        let mut compiler = protox::Compiler::new([root]).unwrap();
        compiler
            .open_files(["nesting/v1/nesting.proto", "nesting/v1/groups.proto"])
            .unwrap();
        compiler.descriptor_pool()
    }

    fn check(kind: &str, bytes: &[u8], limit: u32) -> Result<(), NestingError> {
        let schema = WireSchema::new(&pool());
        let message = schema.message(kind).unwrap();
        NestingWalker::new(MaxDepth::new(limit).unwrap()).check(&schema, message, bytes)
    }

    fn too_deep(result: Result<(), NestingError>) -> bool {
        matches!(result, Err(NestingError::TooDeep { .. }))
    }

    #[test]
    fn nesting_up_to_the_limit_passes_and_one_level_more_does_not() {
        for limit in [1, 7, MaxDepth::CEILING] {
            let levels = limit as usize;
            assert_eq!(check("nesting.v1.Node", &build::node_chain(levels), limit), Ok(()));
            assert!(too_deep(check(
                "nesting.v1.Node",
                &build::node_chain(levels + 1),
                limit
            )));
        }
    }

    #[test]
    fn an_any_chain_around_a_large_value_is_rejected_before_it_is_expanded() {
        // 99 levels around 2 MB: within `max_depth`, but the serialiser
        // would decode ~200 MB of `Any` contents.
        let chain = |levels: usize, label_bytes: usize| {
            let mut nest = build::Nest::new(&build::leaf_node(&"x".repeat(label_bytes)));
            nest.wrap_in_any("type.googleapis.com/nesting.v1.Node");
            for _ in 1..levels {
                nest.wrap_in_any(ANY_IN_ANY);
            }
            nest.wrap(2);
            nest.to_bytes()
        };
        let big = chain(99, 2 << 20);
        assert!(matches!(
            check("nesting.v1.Envelope", &big, 100),
            Err(NestingError::AnyTooLarge { len, .. }) if len == big.len()
        ));
        // A few levels around the same value, and many around a small one, pass.
        assert_eq!(check("nesting.v1.Envelope", &chain(4, 2 << 20), 100), Ok(()));
        assert_eq!(check("nesting.v1.Envelope", &chain(99, 1000), 100), Ok(()));
    }

    #[test]
    fn a_deep_any_is_rejected_within_its_first_levels() {
        // ~270 KB of Any in Any: the walk stops a hundred levels in, having
        // read a few KB — it never goes through the rest. (With the default
        // `Any` budget the chain is turned away even earlier, a few levels
        // in, for what it would expand to; with a budget wide enough, the
        // depth limit does it.)
        let bytes = build::envelope_with_nested_any(6_000);
        assert!(matches!(
            check("nesting.v1.Envelope", &bytes, 100),
            Err(NestingError::AnyTooLarge { .. })
        ));
        let schema = WireSchema::new(&pool());
        let message = schema.message("nesting.v1.Envelope").unwrap();
        let walker = &mut NestingWalker::new(MaxDepth::new(100).unwrap());
        match walker.check_with_budget(&schema, message, &bytes, usize::MAX) {
            Err(NestingError::TooDeep { limit: 100, at }) => assert!(at < 5_000, "{at} of {}", bytes.len()),
            other => panic!("{other:?}"),
        }
        // Envelope 0, its Any 1, 98 Anys more, the Node inside the last: 100.
        assert_eq!(
            check("nesting.v1.Envelope", &build::envelope_with_nested_any(99), 100),
            Ok(())
        );
        assert!(too_deep(check(
            "nesting.v1.Envelope",
            &build::envelope_with_nested_any(100),
            100
        )));
    }

    #[test]
    fn struct_and_list_values_count_two_levels_each() {
        assert_eq!(check("google.protobuf.Value", &build::value_chain(50), 100), Ok(()));
        assert!(too_deep(check("google.protobuf.Value", &build::value_chain(51), 100)));
    }

    #[test]
    fn a_map_entry_adds_no_level_its_value_does() {
        let entry = [len_delimited(1, b"k"), len_delimited(2, &build::node_chain(1))].concat();
        let envelope = len_delimited(5, &entry);
        assert_eq!(check("nesting.v1.Envelope", &envelope, 2), Ok(()));
        assert!(too_deep(check("nesting.v1.Envelope", &envelope, 1)));
    }

    #[test]
    fn groups_declared_or_unknown_count_like_messages() {
        // Tree 0, Branch 1, Tree 2, … the fifth Branch is 9.
        assert_eq!(check("nesting.v1.Tree", &build::tree_chain(5), 9), Ok(()));
        assert!(too_deep(check("nesting.v1.Tree", &build::tree_chain(5), 8)));
        assert_eq!(check("nesting.v1.Tree", &build::unknown_group_chain(9), 9), Ok(()));
        assert!(too_deep(check("nesting.v1.Tree", &build::unknown_group_chain(10), 9)));
    }

    #[test]
    fn an_any_takes_its_parts_from_every_occurrence_in_its_scope() {
        // Protobuf merges the two `payload`s into one Any: the type of the
        // first, the deep value of the second.
        let deep = build::any_message(Some(ANY_IN_ANY), Some(&build::any_message(Some(ANY_IN_ANY), None)));
        let split = [
            len_delimited(2, &build::any_message(Some(ANY_IN_ANY), None)),
            len_delimited(2, &build::any_message(None, Some(&deep))),
        ]
        .concat();
        // Envelope 0, payload 1, deep 2, its Any 3, the empty content 4.
        assert_eq!(check("nesting.v1.Envelope", &split, 4), Ok(()));
        assert!(too_deep(check("nesting.v1.Envelope", &split, 3)));
        // Also when the merge happens higher up: two `node`s, each holding
        // half of the same `extra`.
        let node = |extra: Vec<u8>| len_delimited(4, &len_delimited(3, &extra));
        let split = [
            node(build::any_message(Some(ANY_IN_ANY), None)),
            node(build::any_message(None, Some(&deep))),
        ]
        .concat();
        assert_eq!(check("nesting.v1.Envelope", &split, 5), Ok(()));
        assert!(too_deep(check("nesting.v1.Envelope", &split, 4)));
    }

    #[test]
    fn elements_of_a_repeated_any_are_never_merged() {
        let deep = build::any_message(Some(ANY_IN_ANY), Some(&build::any_message(Some(ANY_IN_ANY), None)));
        let apart = [
            len_delimited(6, &build::any_message(Some(ANY_IN_ANY), None)),
            len_delimited(6, &build::any_message(None, Some(&deep))),
        ]
        .concat();
        // The second element has no type: the serialiser never reads its value.
        assert_eq!(check("nesting.v1.Envelope", &apart, 2), Ok(()));
    }

    #[test]
    fn a_map_field_is_read_whatever_its_wire_type_as_prost_reflect_reads_it() {
        let entry = [len_delimited(1, b"k"), len_delimited(2, &build::node_chain(3))].concat();
        // Field 5 with the varint wire type, then the entry's length and bytes.
        let mut envelope = build::key(5, 0);
        envelope.extend(build::varint(entry.len() as u64));
        envelope.extend(&entry);
        let message = pool().get_message_by_name("nesting.v1.Envelope").unwrap();
        let decoded = prost_reflect::DynamicMessage::decode(message, envelope.as_slice());
        assert!(decoded.is_ok(), "prost-reflect reads it as an entry: {decoded:?}");
        assert_eq!(check("nesting.v1.Envelope", &envelope, 4), Ok(()));
        assert!(too_deep(check("nesting.v1.Envelope", &envelope, 3)));
    }

    #[test]
    fn malformed_bytes_are_reported_where_prost_would_fail() {
        let cases = [
            ("unclosed group", build::key(9, 3), WireError::UnclosedGroup { at: 1 }),
            (
                "stray end group",
                build::key(9, 4),
                WireError::UnexpectedEndGroup { at: 0 },
            ),
            (
                "wrong end group",
                [build::key(9, 3), build::key(8, 4)].concat(),
                WireError::UnexpectedEndGroup { at: 1 },
            ),
            (
                "group field sent as a varint",
                [build::key(1, 0), vec![1]].concat(),
                WireError::WrongWireType { number: 1, at: 0 },
            ),
            (
                "group field sent length-delimited",
                len_delimited(1, b""),
                WireError::WrongWireType { number: 1, at: 0 },
            ),
        ];
        for (case, bytes, error) in cases {
            assert_eq!(check("nesting.v1.Tree", &bytes, 100), Err(error.into()), "{case}");
        }
    }
}
