//! Reading the protobuf wire format: field keys, varints and the extent of
//! each value, from a byte slice, without allocating or recursing.
//!
//! This is the layer a descriptor-guided walk stands on: `nesting.rs` uses it
//! today, a direct wire-to-JSON transcoder could share it. It rejects what
//! prost rejects for keys, varints and lengths, so a walk and prost-reflect's
//! decoder agree on where every field starts and ends.

use std::ops::Range;

/// The longest varint: ten bytes carry 64 bits.
const MAX_VARINT_LEN: usize = 10;

/// How a field's value is laid out after its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WireType {
    Varint,
    Fixed64,
    LengthDelimited,
    StartGroup,
    EndGroup,
    Fixed32,
}

/// Why bytes are not a protobuf encoding; `at` is the byte offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WireError {
    /// A value runs past the end of its message (or of the payload).
    #[error("truncated value at byte {at}")]
    Truncated { at: usize },
    /// A varint longer than ten bytes.
    #[error("invalid varint at byte {at}")]
    BadVarint { at: usize },
    /// Field number 0, a number past 2^32, or wire type 6 or 7.
    #[error("invalid field key at byte {at}")]
    BadKey { at: usize },
    /// An end-group key that closes no open group, or the wrong one.
    #[error("unexpected end-group key at byte {at}")]
    UnexpectedEndGroup { at: usize },
    /// A group whose message ends before its end-group key.
    #[error("group opened before byte {at} is never closed")]
    UnclosedGroup { at: usize },
    /// A message field sent with a wire type its declaration does not allow.
    #[error("field {number} has the wrong wire type at byte {at}")]
    WrongWireType { number: u32, at: usize },
}

/// A cursor over one payload. Every read takes the end of the enclosing
/// message, so no value is read across its boundary.
#[derive(Debug)]
pub(crate) struct WireReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> WireReader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> WireReader<'a> {
        WireReader { bytes, pos: 0 }
    }

    /// The length of the whole payload.
    pub(crate) fn len(&self) -> usize {
        self.bytes.len()
    }

    /// The offset of the next byte to read.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// Moves to `pos`: the start of a value read earlier, to walk into it.
    pub(crate) fn seek(&mut self, pos: usize) {
        self.pos = pos;
    }

    /// The bytes of a range read earlier.
    pub(crate) fn slice(&self, range: Range<usize>) -> &'a [u8] {
        &self.bytes[range]
    }

    /// Reads a field key: its number and wire type.
    #[inline]
    pub(crate) fn read_key(&mut self, end: usize) -> Result<(u32, WireType), WireError> {
        let at = self.pos;
        let bad_key = WireError::BadKey { at };
        // As prost: a key is at most 32 bits, so numbers stop at 2^29 - 1.
        let key = u32::try_from(self.read_varint(end)?).map_err(|_| bad_key.clone())?;
        let number = key >> 3;
        let wire_type = match key & 7 {
            0 => WireType::Varint,
            1 => WireType::Fixed64,
            2 => WireType::LengthDelimited,
            3 => WireType::StartGroup,
            4 => WireType::EndGroup,
            5 => WireType::Fixed32,
            _ => return Err(bad_key),
        };
        if number == 0 {
            return Err(bad_key);
        }
        Ok((number, wire_type))
    }

    /// Reads a length prefix and moves past the bytes it covers, returning
    /// their range.
    #[inline]
    pub(crate) fn read_length_delimited(&mut self, end: usize) -> Result<Range<usize>, WireError> {
        let at = self.pos;
        let len = self.read_varint(end)?;
        let start = self.pos;
        match usize::try_from(len) {
            Ok(len) if len <= end - start => {
                self.pos = start + len;
                Ok(start..self.pos)
            }
            _ => Err(WireError::Truncated { at }),
        }
    }

    /// Moves past a length prefix and the bytes it covers.
    pub(crate) fn skip_length_delimited(&mut self, end: usize) -> Result<(), WireError> {
        self.read_length_delimited(end).map(drop)
    }

    /// Moves past a varint.
    pub(crate) fn skip_varint(&mut self, end: usize) -> Result<(), WireError> {
        self.read_varint(end).map(drop)
    }

    /// Reads a little-endian value of `width` bytes (4 or 8).
    #[inline]
    pub(crate) fn read_fixed(&mut self, width: usize, end: usize) -> Result<u64, WireError> {
        let start = self.pos;
        self.skip_fixed(width, end)?;
        Ok(self.bytes[start..self.pos]
            .iter()
            .rev()
            .fold(0u64, |value, &byte| (value << 8) | u64::from(byte)))
    }

    /// Moves past a fixed-width value of `width` bytes (4 or 8).
    pub(crate) fn skip_fixed(&mut self, width: usize, end: usize) -> Result<(), WireError> {
        let at = self.pos;
        if width > end - at {
            return Err(WireError::Truncated { at });
        }
        self.pos = at + width;
        Ok(())
    }

    /// Reads a varint.
    #[inline]
    pub(crate) fn read_varint(&mut self, end: usize) -> Result<u64, WireError> {
        let at = self.pos;
        // Most keys and lengths take one byte.
        if let Some(&byte) = self.bytes[..end].get(at)
            && byte < 0x80
        {
            self.pos = at + 1;
            return Ok(u64::from(byte));
        }
        let mut value = 0u64;
        for (index, &byte) in self.bytes[at..end].iter().take(MAX_VARINT_LEN).enumerate() {
            value |= u64::from(byte & 0x7f) << (7 * index);
            if byte < 0x80 {
                // As prost: a tenth byte may only carry the 64th bit.
                if index == MAX_VARINT_LEN - 1 && byte > 1 {
                    return Err(WireError::BadVarint { at });
                }
                self.pos = at + index + 1;
                return Ok(value);
            }
        }
        if end - at >= MAX_VARINT_LEN {
            Err(WireError::BadVarint { at })
        } else {
            Err(WireError::Truncated { at })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_into_number_and_wire_type() {
        let bytes = [0x08, 0x96, 0x01, 0x0b];
        let mut reader = WireReader::new(&bytes);
        assert_eq!(reader.read_key(4), Ok((1, WireType::Varint)));
        reader.skip_varint(4).unwrap();
        assert_eq!(reader.read_key(4), Ok((1, WireType::StartGroup)));
        assert_eq!(reader.pos(), 4);
    }

    #[test]
    fn keys_prost_rejects_are_rejected() {
        for bytes in [&[0x00][..], &[0x0e], &[0x0f], &[0x80, 0x80, 0x80, 0x80, 0x80, 0x01]] {
            let mut reader = WireReader::new(bytes);
            assert_eq!(
                reader.read_key(bytes.len()),
                Err(WireError::BadKey { at: 0 }),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn values_never_run_past_the_end_they_are_given() {
        // A 3-byte string whose message ends after 2 of them.
        let bytes = [0x03, b'a', b'b', b'c'];
        let mut reader = WireReader::new(&bytes);
        assert_eq!(reader.read_length_delimited(3), Err(WireError::Truncated { at: 0 }));
        let mut reader = WireReader::new(&bytes);
        assert_eq!(reader.read_length_delimited(4), Ok(1..4));
        let mut reader = WireReader::new(&bytes);
        assert_eq!(reader.skip_fixed(4, 3), Err(WireError::Truncated { at: 0 }));
    }

    #[test]
    fn varints_longer_than_ten_bytes_are_rejected() {
        let bytes = [0xff; 11];
        let mut reader = WireReader::new(&bytes);
        assert_eq!(reader.skip_varint(11), Err(WireError::BadVarint { at: 0 }));
        let mut reader = WireReader::new(&bytes[..5]);
        assert_eq!(reader.skip_varint(5), Err(WireError::Truncated { at: 0 }));
    }

    #[test]
    fn a_tenth_varint_byte_carries_only_the_last_bit() {
        let mut max = [0xff; 10];
        max[9] = 0x01;
        let mut reader = WireReader::new(&max);
        assert_eq!(reader.read_varint(10), Ok(u64::MAX));
        max[9] = 0x02;
        let mut reader = WireReader::new(&max);
        assert_eq!(reader.read_varint(10), Err(WireError::BadVarint { at: 0 }));
    }

    #[test]
    fn fixed_values_are_little_endian() {
        let bytes = [0x01, 0x02, 0x03, 0x04];
        let mut reader = WireReader::new(&bytes);
        assert_eq!(reader.read_fixed(4, 4), Ok(0x0403_0201));
        assert_eq!(reader.pos(), 4);
    }
}
