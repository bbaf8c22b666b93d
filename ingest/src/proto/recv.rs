//! The receive buffer both sessions frame stream bytes with.
//!
//! Contract: the buffer holds only bytes that were received and not yet consumed; it grows
//! with received bytes and never by an announced length (a frame header cannot make it
//! allocate). Consumed bytes are dropped lazily: the next [`RecvBuf::push`] moves the
//! unconsumed rest to the front, so every byte is moved at most once after its frame's
//! predecessors completed.

use crate::wire::FRAME_HEADER_LEN;

/// Bytes received on a stream and not yet consumed by the session.
#[derive(Debug, Default)]
pub(crate) struct RecvBuf {
    buf: Vec<u8>,
    /// Start of the unconsumed bytes in `buf`.
    pos: usize,
}

impl RecvBuf {
    /// Appends received bytes.
    pub(crate) fn push(&mut self, data: &[u8]) {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Unconsumed bytes.
    pub(crate) fn len(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Consumes and returns the next `n` bytes.
    ///
    /// # Panics
    /// If fewer than `n` bytes are buffered (a bug in the caller, which checks [`Self::len`]).
    pub(crate) fn take(&mut self, n: usize) -> &[u8] {
        assert!(
            n <= self.len(),
            "take({n}) with {} bytes buffered",
            self.len()
        );
        let start = self.pos;
        self.pos += n;
        &self.buf[start..start + n]
    }

    /// Consumes and returns a frame header when one is buffered.
    pub(crate) fn take_header(&mut self) -> Option<[u8; FRAME_HEADER_LEN]> {
        if self.len() < FRAME_HEADER_LEN {
            return None;
        }
        let mut header = [0u8; FRAME_HEADER_LEN];
        header.copy_from_slice(self.take(FRAME_HEADER_LEN));
        Some(header)
    }

    /// Drops every buffered byte and the memory holding them.
    pub(crate) fn release(&mut self) {
        *self = RecvBuf::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumed_bytes_are_dropped_and_the_rest_kept_in_order() {
        let mut r = RecvBuf::default();
        r.push(&[1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(r.take_header(), Some([1, 2, 3, 4, 5]));
        assert_eq!(r.len(), 2);
        assert_eq!(r.take_header(), None, "a header needs 5 bytes");
        r.push(&[8, 9]);
        assert_eq!(r.len(), 4);
        assert_eq!(r.take(3), &[6, 7, 8]);
        r.push(&[]);
        assert_eq!(r.take(1), &[9]);
        assert_eq!(r.len(), 0);
        r.release();
        assert_eq!(r.len(), 0);
    }
}
