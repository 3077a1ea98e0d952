//! A hand-written protobuf encoder for the depth-limit tests: it builds
//! payloads nested thousands of levels deep from the inside out, each level
//! wrapping what is already built, in linear time. It shares no code with
//! prost-reflect or with the filter's own wire reader.
#![allow(dead_code, unreachable_pub)]

/// The type URL of an `Any` that holds another `Any`.
pub const ANY_IN_ANY: &str = "type.googleapis.com/google.protobuf.Any";

/// `(field << 3) | wire type`, as a varint.
pub fn key(field: u32, wire_type: u8) -> Vec<u8> {
    varint((u64::from(field) << 3) | u64::from(wire_type))
}

/// A base-128 varint.
pub fn varint(mut value: u64) -> Vec<u8> {
    let mut bytes = Vec::new();
    while value >= 0x80 {
        bytes.push((value as u8) | 0x80);
        value >>= 7;
    }
    bytes.push(value as u8);
    bytes
}

/// A length-delimited field (string, bytes or message).
pub fn len_delimited(field: u32, content: &[u8]) -> Vec<u8> {
    let mut bytes = key(field, 2);
    bytes.extend(varint(content.len() as u64));
    bytes.extend_from_slice(content);
    bytes
}

/// A message under construction, grown outwards: bytes put before what is
/// built so far are kept reversed in `head_rev`, bytes put after it in
/// `tail`, so wrapping a level costs only that level's own bytes.
#[derive(Debug, Default)]
pub struct Nest {
    head_rev: Vec<u8>,
    body: Vec<u8>,
    tail: Vec<u8>,
}

impl Nest {
    /// Starts from the innermost message's encoding.
    pub fn new(innermost: &[u8]) -> Nest {
        Nest {
            body: innermost.to_vec(),
            ..Nest::default()
        }
    }

    /// The length of the message built so far.
    pub fn encoded_len(&self) -> usize {
        self.head_rev.len() + self.body.len() + self.tail.len()
    }

    /// Puts encoded fields before what is built so far (same message).
    pub fn prepend(&mut self, fields: &[u8]) -> &mut Nest {
        self.head_rev.extend(fields.iter().rev());
        self
    }

    /// Makes what is built so far the length-delimited field `field` of a
    /// new, enclosing message.
    pub fn wrap(&mut self, field: u32) -> &mut Nest {
        let mut header = key(field, 2);
        header.extend(varint(self.encoded_len() as u64));
        self.prepend(&header)
    }

    /// Makes what is built so far the group `field` of a new, enclosing message.
    pub fn wrap_group(&mut self, field: u32) -> &mut Nest {
        self.prepend(&key(field, 3));
        self.tail.extend(key(field, 4));
        self
    }

    /// Makes what is built so far the `value` of a new `google.protobuf.Any`
    /// whose `type_url` is `type_url`.
    pub fn wrap_in_any(&mut self, type_url: &str) -> &mut Nest {
        self.wrap(2).prepend(&len_delimited(1, type_url.as_bytes()))
    }

    /// The encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.encoded_len());
        bytes.extend(self.head_rev.iter().rev());
        bytes.extend_from_slice(&self.body);
        bytes.extend_from_slice(&self.tail);
        bytes
    }
}

/// `nesting.v1.Node` with only a `label`.
pub fn leaf_node(label: &str) -> Vec<u8> {
    len_delimited(2, label.as_bytes())
}

/// A `nesting.v1.Envelope` whose `payload` is an `Any` holding an `Any`
/// holding … `levels` `Any`s deep, the innermost holding a `Node`.
pub fn envelope_with_nested_any(levels: usize) -> Vec<u8> {
    let mut nest = Nest::new(&leaf_node("leaf"));
    nest.wrap_in_any("type.googleapis.com/nesting.v1.Node");
    for _ in 1..levels {
        nest.wrap_in_any(ANY_IN_ANY);
    }
    nest.wrap(2);
    nest.to_bytes()
}

/// A `nesting.v1.Node` whose `child` chain is `levels` deep.
pub fn node_chain(levels: usize) -> Vec<u8> {
    let mut nest = Nest::new(&leaf_node("leaf"));
    for _ in 0..levels {
        nest.wrap(1);
    }
    nest.to_bytes()
}

/// A `google.protobuf.Value` alternating lists and structs: `levels` values
/// below the outermost, each one list or struct deeper (two message levels).
pub fn value_chain(levels: usize) -> Vec<u8> {
    let mut nest = Nest::new(&len_delimited(3, b"leaf"));
    for level in 0..levels {
        if level % 2 == 0 {
            // ListValue.values[0], then Value.list_value.
            nest.wrap(1).wrap(6);
        } else {
            // Struct.fields entry {key "a", value}, then Value.struct_value.
            nest.wrap(2).prepend(&len_delimited(1, b"a")).wrap(1).wrap(5);
        }
    }
    nest.to_bytes()
}

/// A `google.protobuf.Value` holding a list holding a value …: `levels`
/// lists, two message levels each.
pub fn list_value_chain(levels: usize) -> Vec<u8> {
    let mut nest = Nest::new(&len_delimited(3, b"leaf"));
    for _ in 0..levels {
        nest.wrap(1).wrap(6);
    }
    nest.to_bytes()
}

/// A `nesting.v1.Tree` whose Branch group holds a Tree, `levels` times.
pub fn tree_chain(levels: usize) -> Vec<u8> {
    let mut nest = Nest::new(&len_delimited(3, b"leaf"));
    nest.wrap_group(1);
    for _ in 1..levels {
        nest.wrap(2).wrap_group(1);
    }
    nest.to_bytes()
}

/// Groups of an unknown field number nested `levels` deep (any message
/// type reads them as unknown fields).
pub fn unknown_group_chain(levels: usize) -> Vec<u8> {
    let mut nest = Nest::new(&[]);
    for _ in 0..levels {
        nest.wrap_group(15);
    }
    nest.to_bytes()
}

/// A `google.protobuf.Any` with only the parts given.
pub fn any_message(type_url: Option<&str>, value: Option<&[u8]>) -> Vec<u8> {
    let mut bytes = Vec::new();
    if let Some(type_url) = type_url {
        bytes.extend(len_delimited(1, type_url.as_bytes()));
    }
    if let Some(value) = value {
        bytes.extend(len_delimited(2, value));
    }
    bytes
}

/// A `nesting.v1.Node` whose `extra` is an `Any` holding a Node whose
/// `extra` …, `rounds` times: two levels a round, alternating message and Any.
pub fn node_any_chain(rounds: usize) -> Vec<u8> {
    let mut nest = Nest::new(&leaf_node("leaf"));
    for _ in 0..rounds {
        nest.wrap_in_any("type.googleapis.com/nesting.v1.Node").wrap(3);
    }
    nest.to_bytes()
}
