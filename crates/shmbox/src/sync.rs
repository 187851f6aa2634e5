//! The one door to atomics for the core algorithms.
//!
//! Normal builds use `std::sync::atomic`; `--cfg shmbox_loom` switches to
//! `loom` so the lock-free algorithms in `queue`, `pool` and `notify` can be
//! model-checked. Nothing in those three names `std::sync::atomic`
//! directly. (`registry` and `sweep` work on the mapped region's views,
//! which hold std atomics, and are not model-checked as a whole.)

#[cfg(shmbox_loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
#[cfg(not(shmbox_loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

/// A plain store to a word whose other writers all update it by a
/// read-modify-write.
///
/// Under loom, a swap whose read is ignored: loom lets a plain store fall
/// between the read and the write of another thread's read-modify-write
/// (tokio-rs/loom#254), which neither the memory model nor the hardware
/// allows. With every other writer a read-modify-write, the swap lands
/// where the store may.
#[inline]
pub(crate) fn store_among_rmws(word: &AtomicU64, value: u64, order: Ordering) {
    #[cfg(not(shmbox_loom))]
    word.store(value, order);
    #[cfg(shmbox_loom)]
    word.swap(value, order);
}

/// One step of a busy-wait: `PAUSE` on the CPU, a yield under loom.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(shmbox_loom)]
    loom::thread::yield_now();
    #[cfg(not(shmbox_loom))]
    core::hint::spin_loop();
}

/// What is left of `timeout` after `elapsed`; `None` once nothing is.
#[inline]
pub(crate) fn time_left(
    timeout: std::time::Duration,
    elapsed: std::time::Duration,
) -> Option<std::time::Duration> {
    timeout.checked_sub(elapsed).filter(|left| !left.is_zero())
}
