//! What the examples `protocol_floor` and `receive_calls` share.

use rustix::thread::{sched_setaffinity, CpuSet};
use std::time::{Duration, Instant};

/// Pins the calling thread to `cpu` (best effort).
pub fn pin(cpu: usize) {
    let mut set = CpuSet::new();
    set.set(cpu);
    let _ = sched_setaffinity(None, &set);
}

/// Receives on `mailbox` with a `try_recv` loop, reading the clock only
/// every 4096 polls; panics (which ends a peer process too) if nothing
/// arrives within `limit`.
#[inline]
pub fn spin_receive(mailbox: &shmbox::Mailbox, limit: Duration) -> shmbox::Message<'_> {
    let mut spins = 0u32;
    let mut since = None;
    loop {
        match mailbox.try_recv() {
            Ok(m) => return m,
            Err(shmbox::TryRecvError::Empty) => {
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(4096)
                    && since.get_or_insert_with(Instant::now).elapsed() > limit
                {
                    panic!("no message within {limit:?}");
                }
                core::hint::spin_loop()
            }
            Err(e) => panic!("try_recv: {e}"),
        }
    }
}
