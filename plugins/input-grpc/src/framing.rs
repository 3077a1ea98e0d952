//! gRPC's length-prefixed framing, read as it arrives: each message is a
//! flag byte and a 4-byte big-endian length, then that many bytes. The
//! in-flight budget needs each message's length as soon as its header has
//! arrived, before tonic's decoder has the whole message.

use crate::config::GRPC_HEADER_LEN;

/// Where a stream is in gRPC's length-prefixed framing.
#[derive(Debug, Default)]
pub(crate) struct Framing {
    /// The header read so far.
    header: [u8; GRPC_HEADER_LEN],
    /// How much of `header` is filled.
    header_len: usize,
    /// Body bytes of the current message still to come.
    body_left: usize,
}

impl Framing {
    /// Reads `chunk`, telling `on_header` the length of each message whose
    /// header it completes.
    pub(crate) fn advance(&mut self, mut chunk: &[u8], mut on_header: impl FnMut(usize)) {
        while !chunk.is_empty() {
            if self.body_left > 0 {
                let taken = self.body_left.min(chunk.len());
                self.body_left -= taken;
                chunk = &chunk[taken..];
                continue;
            }
            let taken = (GRPC_HEADER_LEN - self.header_len).min(chunk.len());
            self.header[self.header_len..self.header_len + taken].copy_from_slice(&chunk[..taken]);
            self.header_len += taken;
            chunk = &chunk[taken..];
            if self.header_len == GRPC_HEADER_LEN {
                let [_, length @ ..] = self.header;
                let length = u32::from_be_bytes(length) as usize;
                on_header(length);
                self.header_len = 0;
                self.body_left = length;
            }
        }
    }

    /// Whether a message's body has begun and not ended.
    pub(crate) fn mid_message(&self) -> bool {
        self.body_left > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(length: usize) -> Vec<u8> {
        let mut bytes = vec![0];
        bytes.extend_from_slice(&(length as u32).to_be_bytes());
        bytes.resize(GRPC_HEADER_LEN + length, 7);
        bytes
    }

    #[test]
    fn finds_every_header_however_the_frames_split_them() {
        let stream: Vec<u8> = [message(3), message(0), message(300)].concat();
        for split in [1, 2, 4, 5, 7, 64, stream.len()] {
            let mut framing = Framing::default();
            let mut found = Vec::new();
            for chunk in stream.chunks(split) {
                framing.advance(chunk, |length| found.push(length));
            }
            assert_eq!(found, [3, 0, 300], "frames of {split} bytes");
            assert!(!framing.mid_message());
        }
    }

    #[test]
    fn is_mid_message_only_inside_a_body() {
        let mut framing = Framing::default();
        let message = message(10);
        framing.advance(&message[..3], |_| {});
        assert!(!framing.mid_message(), "a partial header holds no body");
        framing.advance(&message[3..8], |_| {});
        assert!(framing.mid_message());
        framing.advance(&message[8..], |_| {});
        assert!(!framing.mid_message());
    }
}
