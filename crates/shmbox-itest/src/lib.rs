//! Shared pieces of the multi-process tests: the message format the peer
//! program and the tests agree on, and the size mix the tests send.

/// Bytes at the start of every test message: sender id (u32), length
/// (u32), sequence number (u64), checksum of the body (u64).
pub const HEADER: usize = 24;

/// Splitmix64: a tiny, well-mixed generator, the same in every process.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Checksum of a message body.
pub fn checksum(body: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let mut words = body.chunks_exact(8);
    for w in &mut words {
        h = (h ^ u64::from_le_bytes(w.try_into().unwrap())).wrapping_mul(0x100_0000_01b3);
    }
    for &b in words.remainder() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// Length of message `seq` from `sender`: most are small, but every size
/// class of `class_sizes` is hit, from just above the previous class's
/// size up to the class's full size.
pub fn message_len(sender: u32, seq: u64, class_sizes: &[u64]) -> usize {
    let r = mix(seq ^ (u64::from(sender) << 40));
    // Class k is chosen with weight 2^-(k+1) (the last takes the rest).
    let mut class = (r & 0xffff).trailing_ones() as usize;
    class = class.min(class_sizes.len() - 1);
    let lo = if class == 0 {
        HEADER as u64
    } else {
        class_sizes[class - 1] + 1
    }
    .max(HEADER as u64);
    let hi = class_sizes[class].max(lo);
    (lo + (r >> 16) % (hi - lo + 1)) as usize
}

/// Writes message `seq` of `sender` into `buf` (whose length is the
/// message length): header, then a body derived from (sender, seq).
pub fn fill(buf: &mut [u8], sender: u32, seq: u64) {
    let len = buf.len();
    let (head, body) = buf.split_at_mut(HEADER);
    body.fill(mix(seq ^ u64::from(sender)) as u8);
    if let Some(first) = body.first_mut() {
        *first = seq as u8;
    }
    head[0..4].copy_from_slice(&sender.to_le_bytes());
    head[4..8].copy_from_slice(&(len as u32).to_le_bytes());
    head[8..16].copy_from_slice(&seq.to_le_bytes());
    head[16..24].copy_from_slice(&checksum(body).to_le_bytes());
}

/// Checks a received message; returns (sender, seq) or what is wrong.
pub fn verify(buf: &[u8]) -> Result<(u32, u64), String> {
    if buf.len() < HEADER {
        return Err(format!(
            "message of {} bytes is shorter than the header",
            buf.len()
        ));
    }
    let sender = u32::from_le_bytes(buf[0..4].try_into().unwrap());
    let len = u32::from_le_bytes(buf[4..8].try_into().unwrap()) as usize;
    let seq = u64::from_le_bytes(buf[8..16].try_into().unwrap());
    let sum = u64::from_le_bytes(buf[16..24].try_into().unwrap());
    if len != buf.len() {
        return Err(format!(
            "sender {sender} seq {seq}: length field {len}, message {} bytes",
            buf.len()
        ));
    }
    if checksum(&buf[HEADER..]) != sum {
        return Err(format!("sender {sender} seq {seq}: checksum mismatch"));
    }
    Ok((sender, seq))
}

/// A region name unique to this test run (`<prefix>-<tag>-<pid>-<nanos>`);
/// the region is removed on drop.
pub struct TestRegion(pub String);

impl TestRegion {
    pub fn new(prefix: &str, tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        TestRegion(format!("{prefix}-{tag}-{}-{nanos}", std::process::id()))
    }

    /// The object's path in `/dev/shm`.
    pub fn shm_path(&self) -> String {
        format!("/dev/shm/shmbox.{}", self.0)
    }
}

impl Drop for TestRegion {
    fn drop(&mut self) {
        let _ = shmbox::Region::remove(&self.0);
    }
}

/// Asserts that every chunk of every size class is back in the pool.
pub fn assert_pool_full(region: &shmbox::Region) {
    for class in region.pool_usage() {
        assert_eq!(
            class.free,
            class.count,
            "size class {} leaked chunks: {:?}",
            class.size,
            region.pool_usage()
        );
    }
}

/// Asserts that nobody is left in the region's table and that every chunk
/// is back in the pool.
pub fn assert_nothing_left(region: &shmbox::Region) {
    assert!(
        region.participants().is_empty(),
        "participants left behind: {:?}",
        region.participants()
    );
    assert_pool_full(region);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_corruption() {
        let classes = [64, 1024, 16384];
        let mut seen = [false; 3];
        for seq in 0..10_000 {
            let len = message_len(3, seq, &classes);
            assert!((HEADER..=16384).contains(&len));
            seen[classes.iter().position(|&c| len as u64 <= c).unwrap()] = true;
            let mut buf = vec![0u8; len];
            fill(&mut buf, 3, seq);
            assert_eq!(verify(&buf), Ok((3, seq)));
            let at = HEADER + (seq as usize % (len - HEADER).max(1));
            if at < len {
                buf[at] ^= 0x40;
                assert!(
                    verify(&buf).is_err(),
                    "flipped byte {at} of {len} went unnoticed"
                );
            }
        }
        assert_eq!(seen, [true; 3], "every class is hit");
    }
}
