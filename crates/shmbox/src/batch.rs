//! Batches: many small messages written in place into one chunk and sent
//! as one mailbox entry (see [`Batch`] for why and for the record format).

use crate::error::Corruption;
use crate::mailbox::{Loan, Message};

/// Bytes in front of every record of a batch.
pub const RECORD_HEADER: usize = 8;

/// Bytes a record of `len` bytes takes in a batch, header and padding
/// included.
pub const fn record_size(len: usize) -> usize {
    RECORD_HEADER + len.next_multiple_of(8)
}

/// Small messages being written into one loaned chunk, to be sent as one
/// mailbox entry. Made by [`Mailbox::try_batch`](crate::Mailbox::try_batch)
/// and its blocking variants; [`finish`](Self::finish) turns it into a
/// [`Loan`] to send like any other.
///
/// Every message sent on its own costs a chunk, a queue entry and the
/// hand-over of the chunk's lines between the two cores; for messages of a
/// few bytes that is most of the work. A batch packs messages as *records*
/// into one chunk; the receiver reads them in place with
/// [`Message::records`], in order, and releases the chunk when it drops
/// the message. Nothing is copied, and the batch arrives whole or not at
/// all.
///
/// A record is a [`RECORD_HEADER`]-byte header (its length as a
/// little-endian `u32`, then four zero bytes) followed by its bytes, padded
/// to a multiple of 8, so every record starts 8-byte aligned. The receiver
/// checks every length against the bytes the batch has before it hands
/// out a record.
///
/// # Examples
///
/// ```
/// # let region = shmbox::Region::in_process(&shmbox::Config::default())?;
/// let me = region.join("me")?;
/// let mut batch = me.try_batch(1024)?;
/// for i in 0u64..10 {
///     // Written in place, in the shared buffer.
///     batch.push(8).expect("room for ten").copy_from_slice(&i.to_le_bytes());
/// }
/// me.try_send(batch.finish(), &me.address()).map_err(|e| e.to_string())?;
///
/// let msg = me.try_recv()?;
/// let mut expected = 0u64;
/// for record in msg.records() {
///     assert_eq!(u64::from_le_bytes(record?.try_into()?), expected);
///     expected += 1;
/// }
/// assert_eq!(expected, 10);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Batch<'m> {
    loan: Loan<'m>,
    used: usize,
    records: usize,
}

impl<'m> Batch<'m> {
    pub(crate) fn new(mut loan: Loan<'m>) -> Batch<'m> {
        let capacity = loan.capacity();
        loan.resize(capacity);
        Batch {
            loan,
            used: 0,
            records: 0,
        }
    }

    /// Appends a record of `len` bytes and returns its bytes to write in
    /// place, or `None` if it does not fit (send this batch and start
    /// another). The bytes hold whatever the chunk held before.
    pub fn push(&mut self, len: usize) -> Option<&mut [u8]> {
        let size = u32::try_from(len).ok().map(|_| record_size(len))?;
        let start = self.used;
        if size > self.loan.capacity() - start {
            return None;
        }
        let header = &mut self.loan[start..start + RECORD_HEADER];
        header[..4].copy_from_slice(&(len as u32).to_le_bytes());
        header[4..].fill(0);
        self.used += size;
        self.records += 1;
        let data = start + RECORD_HEADER;
        Some(&mut self.loan[data..data + len])
    }

    /// Appends a copy of `data` as a record; `false` if it does not fit.
    pub fn push_copy(&mut self, data: &[u8]) -> bool {
        match self.push(data.len()) {
            Some(record) => {
                record.copy_from_slice(data);
                true
            }
            None => false,
        }
    }

    /// Records in the batch.
    pub fn len(&self) -> usize {
        self.records
    }

    /// Whether no record was pushed.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Bytes left for records (each takes [`record_size`] of them).
    pub fn remaining(&self) -> usize {
        self.loan.capacity() - self.used
    }

    /// Ends the batch: the loan of its records, marked as a batch, to send
    /// with any of the mailbox's send methods. (A failed send hands it back
    /// in the error, still a batch.)
    pub fn finish(mut self) -> Loan<'m> {
        self.loan.truncate(self.used);
        self.loan.set_batch();
        self.loan
    }
}

impl std::fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("records", &self.records)
            .field("bytes", &self.used)
            .field("capacity", &self.loan.capacity())
            .finish()
    }
}

/// The records of a received message, in order: those of a batch, or the
/// whole message as one record if it was sent on its own. Made by
/// [`Message::records`].
///
/// A record whose length runs past the end of the batch yields a
/// [`Corruption`] error and ends the iteration.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    bytes: &'a [u8],
    batch: bool,
    done: bool,
}

impl<'a> Records<'a> {
    pub(crate) fn new(message: &'a Message<'_>) -> Records<'a> {
        Records {
            bytes: message,
            batch: message.is_batch(),
            done: false,
        }
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<&'a [u8], Corruption>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if !self.batch {
            self.done = true;
            return Some(Ok(self.bytes));
        }
        if self.bytes.is_empty() {
            self.done = true;
            return None;
        }
        let bad = |reason: String| {
            Some(Err(Corruption {
                reason,
                lasting: false,
            }))
        };
        let Some((header, rest)) = self.bytes.split_first_chunk::<RECORD_HEADER>() else {
            self.done = true;
            return bad(format!(
                "batch ends with {} bytes, less than a record header",
                self.bytes.len()
            ));
        };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let padded = len.next_multiple_of(8);
        if padded > rest.len() {
            self.done = true;
            return bad(format!(
                "batch record of {len} bytes runs past the batch's last {} bytes",
                rest.len()
            ));
        }
        self.bytes = &rest[padded..];
        Some(Ok(&rest[..len]))
    }
}
