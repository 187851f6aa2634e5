//! What a message carries: an 8-byte sequence number first, then (when the
//! payload is "written") a fill pattern derived from the sequence number,
//! which the receiver reads back in full and checks.

/// Smallest payload: the sequence number.
pub(crate) const MIN_SIZE: usize = 8;

/// The fill byte for sequence number `seq` (never zero, changes every
/// message so a stale buffer is caught).
fn pattern(seq: u64) -> u8 {
    (seq as u8) | 1
}

/// Writes `seq` into the first 8 bytes of `buf`; with `written`, fills the
/// rest too.
///
/// # Panics
///
/// If `buf` is shorter than [`MIN_SIZE`].
#[inline]
pub(crate) fn write(buf: &mut [u8], seq: u64, written: bool) {
    buf[..MIN_SIZE].copy_from_slice(&seq.to_le_bytes());
    if written {
        buf[MIN_SIZE..].fill(pattern(seq));
    }
}

/// Reads the sequence number from `buf`; with `written`, reads every byte
/// and checks it against the pattern [`write`] used.
#[inline]
pub(crate) fn read(buf: &[u8], written: bool) -> Result<u64, String> {
    let head: [u8; MIN_SIZE] = buf
        .get(..MIN_SIZE)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("message of {} bytes has no sequence number", buf.len()))?;
    let seq = u64::from_le_bytes(head);
    if written {
        let body = &buf[MIN_SIZE..];
        let sum = checksum(body);
        let expected = expected_checksum(body.len(), pattern(seq));
        if sum != expected {
            return Err(format!(
                "payload of message {seq} ({} bytes) is corrupt: checksum {sum:#x}, expected {expected:#x}",
                buf.len()
            ));
        }
    }
    Ok(seq)
}

/// Wrapping sum of `bytes` read as little-endian words (the tail byte by
/// byte): touches every byte at memory speed.
#[inline]
fn checksum(bytes: &[u8]) -> u64 {
    let mut words = bytes.chunks_exact(8);
    let mut sum = 0u64;
    for w in &mut words {
        sum = sum.wrapping_add(u64::from_le_bytes(w.try_into().expect("8-byte chunk")));
    }
    words
        .remainder()
        .iter()
        .fold(sum, |s, &b| s.wrapping_add(u64::from(b)))
}

/// [`checksum`] of `len` bytes that all hold `byte`.
fn expected_checksum(len: usize, byte: u8) -> u64 {
    let word = u64::from(byte).wrapping_mul(0x0101_0101_0101_0101);
    ((len / 8) as u64)
        .wrapping_mul(word)
        .wrapping_add((len % 8) as u64 * u64::from(byte))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        for len in [8, 9, 15, 64, 1000, 4096] {
            let mut buf = vec![0u8; len];
            write(&mut buf, 77, true);
            assert_eq!(read(&buf, true), Ok(77));
            if len > 8 {
                buf[len - 1] ^= 0x10;
                assert!(read(&buf, true).is_err());
                // Untouched: only the sequence number counts.
                assert_eq!(read(&buf, false), Ok(77));
            }
        }
        assert!(read(&[1, 2, 3], false).is_err());
    }
}
