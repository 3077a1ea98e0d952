//! One record: a batch of events framed with its length and a checksum, and
//! the byte reader the progress file shares.
//!
//! ```text
//! record := body_len u32 | crc u32 | body
//!           crc = CRC32 (crc32fast) of body_len's 4 bytes, then body
//! body   := seq u64 | count u32 | event * count
//! event  := format u8 | state u8 | secs i64 | nanos u32
//!           | id_len u32 | id | kind_len u32 | kind
//!           | [source_len u32 | source]   (only if state has SOURCE_FLAG)
//!           | payload_len u32 | payload
//! ```
//!
//! Integers are little-endian. The checksum covers the length too, so a torn
//! or flipped length is caught as surely as a flipped payload byte. An event
//! keeps its payload's original bytes and is rebuilt with [`Event::new`], so a
//! replayed event goes through the same decoding as a received one; `state`
//! restores the two payload states `Event::new` cannot produce (a JSON tree,
//! protobuf a decoder rejected).

use bytes::Bytes;
use chrono::DateTime;
use eventstash_plugin_api::{Event, Format, Payload};
use serde_json::value::RawValue;

use super::{DecodeError, QueueLogError, SkipReason};

/// Bytes before a record's body: its length and its checksum.
pub(super) const FRAME_HEADER: usize = 8;

/// The smallest body: a seq and an event count.
const BODY_HEADER: usize = 12;

/// The smallest event: format, state, timestamp and three lengths.
const EVENT_HEADER: usize = 26;

/// Set in `state` when the event has a `source` (its producer), which then
/// follows `kind`; records written before sources existed never have it.
const SOURCE_FLAG: u8 = 0x80;

/// Which [`Payload`] variant an event had, so that replay restores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum PayloadState {
    Json = 0,
    Value = 1,
    InvalidJson = 2,
    Protobuf = 3,
    InvalidProto = 4,
}

/// Writes `events` as record `seq` into `buf`, replacing what it held.
pub(super) fn encode(seq: u64, events: &[Event], buf: &mut Vec<u8>) -> Result<(), QueueLogError> {
    let too_large = |_| QueueLogError::BatchTooLarge { events: events.len() };
    let count = u32::try_from(events.len()).map_err(too_large)?;
    buf.clear();
    buf.extend_from_slice(&[0; FRAME_HEADER]);
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&count.to_le_bytes());
    for event in events {
        encode_event(event, buf).map_err(|error| match error {
            EncodeError::TooLarge => QueueLogError::BatchTooLarge { events: events.len() },
            EncodeError::Json(source) => QueueLogError::Encode {
                id: event.id.clone(),
                source,
            },
        })?;
    }
    let body_len = u32::try_from(buf.len() - FRAME_HEADER).map_err(too_large)?;
    buf[..4].copy_from_slice(&body_len.to_le_bytes());
    let crc = checksum(&buf[..4], &buf[FRAME_HEADER..]);
    buf[4..FRAME_HEADER].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

enum EncodeError {
    TooLarge,
    Json(serde_json::Error),
}

fn encode_event(event: &Event, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
    buf.push(match event.format {
        Format::Protobuf => 0,
        Format::Json => 1,
    });
    let source_flag = if event.source.is_some() { SOURCE_FLAG } else { 0 };
    buf.push(payload_state(&event.payload) as u8 | source_flag);
    buf.extend_from_slice(&event.received_at.timestamp().to_le_bytes());
    buf.extend_from_slice(&event.received_at.timestamp_subsec_nanos().to_le_bytes());
    put_bytes(buf, event.id.as_bytes())?;
    put_bytes(buf, event.kind.as_bytes())?;
    if let Some(source) = &event.source {
        put_bytes(buf, source.as_bytes())?;
    }
    match &event.payload {
        Payload::Json(raw) => put_bytes(buf, raw.get().as_bytes()),
        // A tree has no original bytes: its JSON text parses back into it.
        Payload::Value(value) => {
            let at = buf.len();
            buf.extend_from_slice(&[0; 4]);
            serde_json::to_writer(&mut *buf, value).map_err(EncodeError::Json)?;
            let len = u32::try_from(buf.len() - at - 4).map_err(|_| EncodeError::TooLarge)?;
            buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
            Ok(())
        }
        // `raw` is kept exactly when `plain` had to be made lossy.
        Payload::InvalidJson { raw: Some(raw), .. } => put_bytes(buf, raw),
        Payload::InvalidJson { plain, raw: None } => put_bytes(buf, plain.as_bytes()),
        Payload::Protobuf(bytes) | Payload::InvalidProto(bytes) => put_bytes(buf, bytes),
    }
}

fn payload_state(payload: &Payload) -> PayloadState {
    match payload {
        Payload::Json(_) => PayloadState::Json,
        Payload::Value(_) => PayloadState::Value,
        Payload::InvalidJson { .. } => PayloadState::InvalidJson,
        Payload::Protobuf(_) => PayloadState::Protobuf,
        Payload::InvalidProto(_) => PayloadState::InvalidProto,
    }
}

fn put_bytes(buf: &mut Vec<u8>, bytes: &[u8]) -> Result<(), EncodeError> {
    let len = u32::try_from(bytes.len()).map_err(|_| EncodeError::TooLarge)?;
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(bytes);
    Ok(())
}

fn checksum(len: &[u8], body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(len);
    hasher.update(body);
    hasher.finalize()
}

/// Checks the record at the start of `bytes` and returns its body and its
/// whole length, or why it is not a whole, intact record.
pub(super) fn parse_frame(bytes: &[u8]) -> Result<(&[u8], usize), SkipReason> {
    let header = bytes.get(..FRAME_HEADER).ok_or(SkipReason::IncompleteRecord)?;
    let body_len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if (body_len as usize) < BODY_HEADER {
        return Err(SkipReason::BadLength(body_len));
    }
    let total = FRAME_HEADER + body_len as usize;
    let body = bytes.get(FRAME_HEADER..total).ok_or(SkipReason::IncompleteRecord)?;
    if checksum(&header[..4], body) != crc {
        return Err(SkipReason::ChecksumMismatch);
    }
    Ok((body, total))
}

/// Reads a checked body's seq and event count.
pub(super) fn body_header(body: &[u8]) -> Result<(u64, u32), SkipReason> {
    let mut reader = ByteReader::new(body);
    let seq = reader.u64().map_err(SkipReason::Undecodable)?;
    let count = reader.u32().map_err(SkipReason::Undecodable)?;
    Ok((seq, count))
}

/// Rebuilds the events of a checked body.
pub(super) fn decode_events(body: &[u8]) -> Result<Vec<Event>, SkipReason> {
    let mut reader = ByteReader::new(body);
    let decode = |reader: &mut ByteReader<'_>| -> Result<Vec<Event>, DecodeError> {
        reader.take(8)?;
        let count = reader.u32()? as usize;
        // The count passed the checksum, but a bound keeps a bug from
        // turning into a huge allocation.
        let mut events = Vec::with_capacity(count.min(reader.remaining() / EVENT_HEADER));
        for _ in 0..count {
            events.push(decode_event(reader)?);
        }
        match reader.remaining() {
            0 => Ok(events),
            extra => Err(DecodeError::TrailingBytes { extra, item: "event" }),
        }
    };
    decode(&mut reader).map_err(SkipReason::Undecodable)
}

fn decode_event(reader: &mut ByteReader<'_>) -> Result<Event, DecodeError> {
    let format = match reader.u8()? {
        0 => Format::Protobuf,
        1 => Format::Json,
        other => return Err(DecodeError::UnknownFormat(other)),
    };
    let state = reader.u8()?;
    let has_source = state & SOURCE_FLAG != 0;
    let state = match state & !SOURCE_FLAG {
        0 => PayloadState::Json,
        1 => PayloadState::Value,
        2 => PayloadState::InvalidJson,
        3 => PayloadState::Protobuf,
        4 => PayloadState::InvalidProto,
        other => return Err(DecodeError::UnknownPayloadState(other)),
    };
    let secs = reader.i64()?;
    let nanos = reader.u32()?;
    let received_at = DateTime::from_timestamp(secs, nanos).ok_or(DecodeError::ImpossibleTimestamp { secs, nanos })?;
    let id = reader.str()?.to_owned();
    let kind = reader.str()?.to_owned();
    let source = if has_source {
        Some(reader.str()?.to_owned())
    } else {
        None
    };
    let data = Bytes::copy_from_slice(reader.bytes()?);
    let payload = match state {
        // Checked when it was received: restored as it was, whatever the
        // limits of this run.
        PayloadState::Json => match std::str::from_utf8(&data).map(|text| RawValue::from_string(text.to_owned())) {
            Ok(Ok(raw)) => Payload::Json(raw),
            _ => return Err(DecodeError::JsonPayload),
        },
        PayloadState::Value => {
            let value = serde_json::from_slice(&data).map_err(|e| DecodeError::PayloadTree(e.to_string()))?;
            Payload::Value(value)
        }
        PayloadState::InvalidProto => Payload::InvalidProto(data),
        PayloadState::InvalidJson => Payload::invalid_json(data),
        PayloadState::Protobuf => Payload::Protobuf(data),
    };
    let mut event = Event::with_payload(format, payload, kind, id, received_at);
    event.source = source;
    Ok(event)
}

/// Reads little-endian fields off a slice; running out is an error that
/// says so.
pub(super) struct ByteReader<'a> {
    bytes: &'a [u8],
}

impl<'a> ByteReader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> ByteReader<'a> {
        ByteReader { bytes }
    }

    pub(super) fn remaining(&self) -> usize {
        self.bytes.len()
    }

    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.bytes.len() {
            return Err(DecodeError::EndsEarly {
                wanted: n,
                left: self.bytes.len(),
            });
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(super) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    pub(super) fn u32(&mut self) -> Result<u32, DecodeError> {
        self.array().map(u32::from_le_bytes)
    }

    pub(super) fn u64(&mut self) -> Result<u64, DecodeError> {
        self.array().map(u64::from_le_bytes)
    }

    pub(super) fn i64(&mut self) -> Result<i64, DecodeError> {
        self.array().map(i64::from_le_bytes)
    }

    /// A `u32` length, then that many bytes.
    pub(super) fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    /// Like [`bytes`](Self::bytes), as UTF-8 text.
    pub(super) fn str(&mut self) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.bytes()?).map_err(DecodeError::NotUtf8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue_log::tests::{assert_same_events, sample_events};

    #[test]
    fn encoded_batch_decodes_to_identical_events() {
        let events = sample_events();
        let mut buf = Vec::new();
        encode(42, &events, &mut buf).unwrap();
        let (body, len) = parse_frame(&buf).unwrap();
        assert_eq!(len, buf.len());
        assert_eq!(body_header(body).unwrap(), (42, events.len() as u32));
        assert_same_events(&decode_events(body).unwrap(), &events);
    }

    #[test]
    fn the_producer_source_survives_the_record() {
        let mut events = sample_events();
        events[0].source = Some("billing".to_owned());
        let mut buf = Vec::new();
        encode(3, &events, &mut buf).unwrap();
        let (body, _) = parse_frame(&buf).unwrap();
        let decoded = decode_events(body).unwrap();
        assert_eq!(decoded[0].source.as_deref(), Some("billing"));
        assert_eq!(decoded[1].source, None);
        assert_same_events(&decoded, &events);
    }

    #[test]
    fn every_single_byte_flip_is_detected() {
        let mut buf = Vec::new();
        encode(7, &sample_events()[..2], &mut buf).unwrap();
        for at in 0..buf.len() {
            let mut damaged = buf.clone();
            damaged[at] ^= 0x40;
            assert!(parse_frame(&damaged).is_err(), "flip at byte {at} went unnoticed");
        }
    }

    #[test]
    fn a_cut_record_is_incomplete() {
        let mut buf = Vec::new();
        encode(1, &sample_events()[..1], &mut buf).unwrap();
        for len in [0, 3, FRAME_HEADER, buf.len() - 1] {
            assert_eq!(
                parse_frame(&buf[..len]),
                Err(SkipReason::IncompleteRecord),
                "cut at {len}"
            );
        }
    }

    #[test]
    fn zeroed_bytes_are_not_a_record() {
        // A crash can leave a file longer than what was written, filled
        // with zeros; the CRC of nothing is zero, so length zero must fail.
        assert_eq!(parse_frame(&[0; 64]), Err(SkipReason::BadLength(0)));
    }
}
