//! The chunk pool of one size class.
//!
//! The truth about a chunk is its **holders bitmask** (one bit per
//! participant slot, in the chunk's header): zero means free. A loan claims
//! a chunk with one compare-and-swap of its holders word from `0` to the
//! loaner's bit, so ownership and allocation are the same atomic step and a
//! process killed at any instant leaves every chunk either free or held by a
//! bit that a sweep can clear.
//!
//! A per-class **free bitmap** (one bit per chunk, set = probably free) only
//! tells loaners where to look. It is kept in this order:
//!
//! * claim: CAS holders `0 → bit`, then clear the bitmap bit;
//! * release: clear the holder bit; if it was the last one, set the bitmap
//!   bit, then wake loaners waiting for this class.
//!
//! The bitmap can therefore be stale in one direction only (a set bit for a
//! held chunk, which a loaner skips after a failed CAS), and a chunk with
//! holders `0` and a clear bitmap bit exists only inside a releaser's
//! window; a sweep repairs both by setting the bit of every chunk whose
//! holders are zero (setting a bit is idempotent).

use crate::sync::{AtomicU64, Ordering};

/// Access to the holders word of chunk `index`.
pub(crate) trait Holders {
    fn holders(&self, index: u32) -> &AtomicU64;
    /// Starts moving chunk `index`'s holders line here for writing (a hint).
    fn prefetch_for_write(&self, _index: u32) {}
}

/// What `release` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Released {
    /// Another holder remains.
    Shared,
    /// The caller was the last holder; the chunk is free again.
    Freed,
    /// The caller's bit was not set: the chunk was not the caller's.
    NotHeld,
}

/// A view of one size class's pool.
pub(crate) struct Pool<'a, H> {
    bitmap: &'a [AtomicU64],
    count: u32,
    chunks: H,
}

impl<'a, H: Holders> Pool<'a, H> {
    pub(crate) fn new(bitmap: &'a [AtomicU64], count: u32, chunks: H) -> Self {
        debug_assert!(bitmap.len() == (count as usize).div_ceil(64));
        Self {
            bitmap,
            count,
            chunks,
        }
    }

    /// Writes the initial state: every chunk free.
    pub(crate) fn init(&self) {
        for (w, word) in self.bitmap.iter().enumerate() {
            let bits_here = (self.count as usize - w * 64).min(64);
            let mask = if bits_here == 64 {
                u64::MAX
            } else {
                (1u64 << bits_here) - 1
            };
            word.store(mask, Ordering::Relaxed);
        }
        for i in 0..self.count {
            self.chunks.holders(i).store(0, Ordering::Relaxed);
        }
    }

    /// Claims one free chunk for `bit` (see [`try_claim_many`]); returns
    /// its index and the bitmap word it was found in.
    ///
    /// [`try_claim_many`]: Self::try_claim_many
    #[cfg(test)]
    pub(crate) fn try_claim(&self, bit: u64, hint: usize) -> Option<(u32, usize)> {
        let mut one = Vec::with_capacity(1);
        self.try_claim_many(bit, hint, 1, &mut one)
            .map(|word| (one[0], word))
    }

    /// Claims up to `max` free chunks for `bit` from one bitmap word (the
    /// first non-empty one from `hint`), appending their indices to `out`.
    /// Each claim is still a CAS of the chunk's holders word; their cache
    /// misses overlap (the lines are prefetched first) and the bitmap word
    /// is updated once. Returns the word used.
    #[cfg_attr(shmbox_loom, allow(dead_code))]
    pub(crate) fn try_claim_many(
        &self,
        bit: u64,
        hint: usize,
        max: usize,
        out: &mut Vec<u32>,
    ) -> Option<usize> {
        let words = self.bitmap.len();
        for k in 0..words {
            let w = (hint + k) % words;
            let candidates = self.bitmap[w].load(Ordering::Relaxed);
            if candidates == 0 {
                continue;
            }
            let valid = |b: u32| (w * 64) as u32 + b < self.count;
            let mut pending = candidates;
            let mut n = 0;
            while pending != 0 && n < max {
                let b = pending.trailing_zeros();
                pending &= pending - 1;
                if valid(b) {
                    self.chunks.prefetch_for_write((w * 64) as u32 + b);
                    n += 1;
                }
            }
            let mut claimed = 0u64;
            let mut pending = candidates;
            while pending != 0 && out.len() < max {
                let b = pending.trailing_zeros();
                pending &= pending - 1;
                if !valid(b) {
                    break;
                }
                let index = (w * 64) as u32 + b;
                // SYNC POINT: acquire pairs with the AcqRel `fetch_and` of
                // the chunk's last holder in `release` / `release_many`.
                if self
                    .chunks
                    .holders(index)
                    .compare_exchange(0, bit, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    claimed |= 1u64 << b;
                    out.push(index);
                }
            }
            if claimed != 0 {
                self.bitmap[w].fetch_and(!claimed, Ordering::Relaxed);
                return Some(w);
            }
        }
        None
    }

    /// Clears `bit` from each of `indices` (all held by `bit`); returns the
    /// ones it was the last holder of to the bitmap with one update per
    /// bitmap word. Returns how many were freed.
    #[cfg_attr(shmbox_loom, allow(dead_code))]
    pub(crate) fn release_many(&self, indices: &[u32], bit: u64) -> u32 {
        let mut freed = 0;
        let mut word = usize::MAX;
        let mut mask = 0u64;
        for &index in indices {
            debug_assert!(index < self.count);
            // SYNC POINT: as in `release`.
            let prev = self.chunks.holders(index).fetch_and(!bit, Ordering::AcqRel);
            if prev != bit {
                continue; // not ours alone: another holder frees it
            }
            freed += 1;
            let w = index as usize / 64;
            if w != word && mask != 0 {
                self.bitmap[word].fetch_or(mask, Ordering::Release);
                mask = 0;
            }
            word = w;
            mask |= 1u64 << (index % 64);
        }
        if mask != 0 {
            self.bitmap[word].fetch_or(mask, Ordering::Release);
        }
        freed
    }

    /// Clears `bit` from chunk `index`'s holders; the last holder returns the
    /// chunk to the bitmap. The caller then notifies waiting loaners when
    /// this returns `Freed`.
    pub(crate) fn release(&self, index: u32, bit: u64) -> Released {
        debug_assert!(index < self.count);
        // SYNC POINT: release pairs with the acquire of the next claim.
        let prev = self.chunks.holders(index).fetch_and(!bit, Ordering::AcqRel);
        if prev & bit == 0 {
            Released::NotHeld
        } else if prev == bit {
            self.mark_free(index);
            Released::Freed
        } else {
            Released::Shared
        }
    }

    /// Sets chunk `index`'s free bit, after its holders word reached zero
    /// (in [`release`](Self::release), or in a sweep).
    pub(crate) fn mark_free(&self, index: u32) {
        debug_assert!(index < self.count);
        self.bitmap[index as usize / 64].fetch_or(1u64 << (index % 64), Ordering::Release);
    }

    /// Sets the free bit of every chunk whose holders word is zero: repairs
    /// the bitmap after a releaser died between its two steps. Returns how
    /// many bits it had to set. Setting a bit twice is harmless.
    #[cfg_attr(shmbox_loom, allow(dead_code))]
    pub(crate) fn repair(&self) -> u32 {
        let mut repaired = 0;
        for i in 0..self.count {
            let bit = 1u64 << (i % 64);
            let word = &self.bitmap[i as usize / 64];
            if self.chunks.holders(i).load(Ordering::Acquire) == 0
                && word.load(Ordering::Relaxed) & bit == 0
            {
                word.fetch_or(bit, Ordering::Release);
                repaired += 1;
            }
        }
        repaired
    }

    /// Clears `bit` from every chunk that has it, returning chunks whose last
    /// holder it was to the pool. Returns how many chunks were freed.
    #[cfg_attr(shmbox_loom, allow(dead_code))]
    pub(crate) fn release_all(&self, bit: u64) -> u32 {
        (0..self.count)
            .filter(|&i| {
                self.chunks.holders(i).load(Ordering::Relaxed) & bit != 0
                    && self.release(i, bit) == Released::Freed
            })
            .count() as u32
    }

    /// Number of chunks whose holders word satisfies `pred` (racy; for
    /// inspection).
    fn count_holders(&self, pred: impl Fn(u64) -> bool) -> u32 {
        (0..self.count)
            .filter(|&i| pred(self.chunks.holders(i).load(Ordering::Relaxed)))
            .count() as u32
    }

    /// Number of chunks held, but by none of `live` (racy; for inspection).
    #[cfg_attr(shmbox_loom, allow(dead_code))]
    pub(crate) fn held_without(&self, live: u64) -> u32 {
        self.count_holders(|h| h != 0 && h & live == 0)
    }

    /// Whether only `bit` can give back any chunk: every chunk is held
    /// by `bit` alone (its loans, its messages received and not dropped)
    /// or is `queued(index)` for it (in its own mailbox, where the sender's
    /// bit stays until `bit` takes the entry). A loan of `bit`'s would then
    /// wait for ever.
    #[cfg_attr(shmbox_loom, allow(dead_code))]
    pub(crate) fn only_holder_is(&self, bit: u64, queued: impl Fn(u32) -> bool) -> bool {
        (0..self.count).all(|i| {
            let holders = self.chunks.holders(i).load(Ordering::Relaxed);
            holders == bit || (holders & bit != 0 && queued(i))
        })
    }

    /// Adds to `counts[slot]` the chunks carrying each slot's bit, in one
    /// pass over the chunks (racy; for inspection). `counts` has a place
    /// for every bit of a holders word.
    #[cfg_attr(shmbox_loom, allow(dead_code))]
    pub(crate) fn count_held(&self, counts: &mut [u32; 64]) {
        for i in 0..self.count {
            let mut holders = self.chunks.holders(i).load(Ordering::Relaxed);
            while holders != 0 {
                counts[holders.trailing_zeros() as usize] += 1;
                holders &= holders - 1;
            }
        }
    }

    /// Number of chunks whose holders word is zero (racy; for inspection).
    pub(crate) fn free_count(&self) -> u32 {
        self.count_holders(|h| h == 0)
    }
}

/// Receiver side of a send: clears `sender_bit` from a chunk's holders
/// word if `bit` (the receiver) holds it. Returns whether `bit` holds the
/// chunk; `false` means the entry is not (or no longer) the receiver's and
/// must not be touched.
///
/// Bounded: only a participant scribbling on the word can make the CAS
/// fail more than once.
#[cfg_attr(shmbox_loom, allow(dead_code))]
#[inline]
pub(crate) fn take_over(holders: &AtomicU64, bit: u64, sender_bit: u64) -> bool {
    for _ in 0..64 {
        let current = holders.load(Ordering::Acquire);
        if current & bit == 0 {
            return false;
        }
        if sender_bit == bit || current & sender_bit == 0 {
            return true;
        }
        if holders
            .compare_exchange(
                current,
                current & !sender_bit,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
        {
            return true;
        }
    }
    holders.load(Ordering::Acquire) & bit != 0
}

/// [`take_over`] by a receiver that announced the entry (in its slot's
/// `taking`) before it took it from its queue. From the sender's push until
/// the receiver's announcement is withdrawn, the entry is in the queue or
/// announced, so a sweeper of the dead sender never finds it abandoned:
/// the only value it can write meanwhile is the one written here (the
/// word without the sender's bit), and nobody else writes the word (the
/// sender touches nothing after its push; the receiver's own bit cannot
/// be swept while it lives). A plain store then does what the
/// compare-and-swap would, without a locked instruction on the receive
/// path.
#[cfg_attr(shmbox_loom, allow(dead_code))]
#[inline]
pub(crate) fn take_over_announced(holders: &AtomicU64, bit: u64, sender_bit: u64) -> bool {
    let current = holders.load(Ordering::Acquire);
    if current & bit == 0 {
        return false;
    }
    if sender_bit != bit && current & sender_bit != 0 {
        // Every other writer (a sweeper) uses a compare-and-swap.
        crate::sync::store_among_rmws(holders, current & !sender_bit, Ordering::Release);
    }
    true
}

/// Sweeper side: clears dead holder `bit` from a chunk's holders word.
/// `abandoned()` tells whether the other holders will never look at the
/// chunk (an unfinished send, a half-received message); then the chunk is
/// freed outright. Every update is a CAS from the value the decision was
/// made on. Returns whether the chunk became free (the caller marks it in
/// the bitmap).
#[cfg_attr(shmbox_loom, allow(dead_code))]
pub(crate) fn reclaim(holders: &AtomicU64, bit: u64, abandoned: impl Fn() -> bool) -> bool {
    for _ in 0..64 {
        let current = holders.load(Ordering::Acquire);
        if current & bit == 0 {
            return false;
        }
        let others = current & !bit;
        let new = if others != 0 && abandoned() {
            0
        } else {
            others
        };
        if holders
            .compare_exchange(current, new, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            return new == 0;
        }
    }
    false
}

#[cfg(all(test, not(shmbox_loom)))]
mod tests {
    use super::*;

    struct Vec64(Vec<AtomicU64>);
    impl Holders for &Vec64 {
        fn holders(&self, index: u32) -> &AtomicU64 {
            &self.0[index as usize]
        }
    }

    fn pool_parts(count: u32) -> (Vec<AtomicU64>, Vec64) {
        (
            (0..(count as usize).div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
            Vec64((0..count).map(|_| AtomicU64::new(0)).collect()),
        )
    }

    #[test]
    fn claim_until_exhausted_then_release() {
        let (bitmap, holders) = pool_parts(70);
        let pool = Pool::new(&bitmap, 70, &holders);
        pool.init();
        let mut got: Vec<u32> = (0..70).map(|_| pool.try_claim(1, 0).unwrap().0).collect();
        assert!(pool.try_claim(1, 0).is_none());
        got.sort();
        assert_eq!(got, (0..70).collect::<Vec<_>>());
        assert_eq!(pool.free_count(), 0);
        assert_eq!(pool.release(5, 2), Released::NotHeld);
        assert_eq!(pool.release(5, 1), Released::Freed);
        assert_eq!(pool.try_claim(4, 1).unwrap().0, 5);
        holders.0[5].fetch_or(8, Ordering::Relaxed);
        assert_eq!(pool.release(5, 4), Released::Shared);
        assert_eq!(pool.release(5, 8), Released::Freed);
        assert_eq!(pool.free_count(), 1);
    }

    #[test]
    fn stale_bitmap_bits_are_skipped() {
        let (bitmap, holders) = pool_parts(3);
        let pool = Pool::new(&bitmap, 3, &holders);
        pool.init();
        holders.0[0].store(1, Ordering::Relaxed); // held, bit still set
        bitmap[0].store(u64::MAX, Ordering::Relaxed); // garbage past the end too
        let (i, _) = pool.try_claim(2, 0).unwrap();
        assert_eq!(i, 1);
    }
}

#[cfg(all(test, shmbox_loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    struct Parts {
        bitmap: Vec<AtomicU64>,
        holders: Vec<AtomicU64>,
    }
    impl Holders for &Parts {
        fn holders(&self, index: u32) -> &AtomicU64 {
            &self.holders[index as usize]
        }
    }

    fn parts(count: u32) -> Arc<Parts> {
        let p = Arc::new(Parts {
            bitmap: (0..1).map(|_| AtomicU64::new(0)).collect(),
            holders: (0..count).map(|_| AtomicU64::new(0)).collect(),
        });
        Pool::new(&p.bitmap, count, &*p).init();
        p
    }

    /// Two participants claim and release concurrently from a 2-chunk pool:
    /// never the same chunk twice at once, and everything is free after.
    #[test]
    fn concurrent_claim_release() {
        loom::model(|| {
            let p = parts(2);
            let threads: Vec<_> = (0..2u64)
                .map(|t| {
                    let p = p.clone();
                    loom::thread::spawn(move || {
                        let pool = Pool::new(&p.bitmap, 2, &*p);
                        let bit = 1u64 << t;
                        for _ in 0..2 {
                            if let Some((i, _)) = pool.try_claim(bit, 0) {
                                assert_eq!(p.holders[i as usize].load(Ordering::Relaxed), bit);
                                assert_eq!(pool.release(i, bit), Released::Freed);
                            }
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            let pool = Pool::new(&p.bitmap, 2, &*p);
            assert_eq!(pool.free_count(), 2);
            // Every free chunk is findable again.
            assert!(pool.try_claim(1, 0).is_some());
            assert!(pool.try_claim(1, 0).is_some());
        });
    }

    /// A sender died after publishing a chunk to a live receiver; the
    /// receiver takes it while a sweeper reclaims the dead sender's bit.
    /// The sweeper decides "abandoned" from the queue and the receiver's
    /// announcement, exactly as `sweep` does. Whatever the interleaving,
    /// the chunk is never both freed by the sweeper and kept by the
    /// receiver, and it is freed exactly once in the end.
    #[test]
    fn sweep_races_receiver_take_over() {
        use crate::queue::OffsetQueue;
        use crate::sync::AtomicU32;
        const S: u64 = 1; // dead sender
        const R: u64 = 2; // live receiver
        const VALUE: u32 = 5;
        loom::model(|| {
            struct Shared {
                holders: AtomicU64,
                taking: AtomicU32,
                tail: AtomicU64,
                head: AtomicU64,
                cells: Vec<AtomicU64>,
            }
            let sh = Arc::new(Shared {
                holders: AtomicU64::new(S | R),
                taking: AtomicU32::new(0),
                tail: AtomicU64::new(0),
                head: AtomicU64::new(0),
                cells: (0..2).map(|_| AtomicU64::new(0)).collect(),
            });
            {
                let q = OffsetQueue::new(&sh.tail, &sh.head, &sh.cells);
                q.init();
                q.reopen(1);
                q.push(1, VALUE).unwrap(); // published before the sender died
            }
            let s2 = sh.clone();
            let receiver = loom::thread::spawn(move || {
                let q = OffsetQueue::new(&s2.tail, &s2.head, &s2.cells);
                // Taken; the receiver dies, or is slow, before re-arming the cell.
                let (v, _) = q
                    .take_unarmed(|v| {
                        s2.taking.store(v, Ordering::Release);
                        v
                    })
                    .unwrap();
                let mine = take_over_announced(&s2.holders, R, S);
                s2.taking.store(0, Ordering::Release);
                assert_eq!(v, VALUE);
                // The receiver reads the message, then releases it.
                mine && s2.holders.fetch_and(!R, Ordering::AcqRel) == R
            });
            // The sweeper runs in a thread of its own too: loom then
            // interleaves its steps with every step of the receiver's.
            let s3 = sh.clone();
            let sweeper = loom::thread::spawn(move || {
                let q = OffsetQueue::new(&s3.tail, &s3.head, &s3.cells);
                reclaim(&s3.holders, S, || {
                    !(q.contains(VALUE) || s3.taking.load(Ordering::Acquire) == VALUE)
                })
            });
            let swept_free = sweeper.join().unwrap();
            let receiver_freed = receiver.join().unwrap();
            // Published and received: the sweeper must only drop S's bit.
            assert!(!swept_free, "sweeper freed a chunk the receiver was taking");
            assert!(receiver_freed, "the receiver did not end up freeing it");
            assert_eq!(sh.holders.load(Ordering::Relaxed), 0);
        });
    }

    /// A sweeper closing dead receiver R's queue takes over an entry from
    /// dead sender D, while a sweeper of D, which found the entry in
    /// neither place (it has left the queue, and nobody announced it),
    /// frees the chunk and a claimer takes it at once. The closer's
    /// take-over must be a compare-and-swap (`take_over`): a plain store
    /// from the value it read (`take_over_announced`) would write R over
    /// the claimer's bit, and the chunk would be freed twice.
    #[test]
    fn discard_races_sweeper_of_its_sender() {
        const D: u64 = 1; // dead sender
        const R: u64 = 2; // dead receiver, its queue being closed
        const X: u64 = 4; // a live claimer
        loom::model(|| {
            let holders = Arc::new(AtomicU64::new(D | R));
            let h1 = holders.clone();
            let closer = loom::thread::spawn(move || {
                take_over(&h1, R, D) && h1.fetch_and(!R, Ordering::AcqRel) == R
            });
            let h2 = holders.clone();
            let sweeper = loom::thread::spawn(move || {
                reclaim(&h2, D, || true)
                    && h2
                        .compare_exchange(0, X, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
            });
            let closer_freed = closer.join().unwrap();
            let claimed = sweeper.join().unwrap();
            assert!(!(closer_freed && claimed), "the chunk was freed twice");
            let expect = if claimed { X } else { 0 };
            assert_eq!(holders.load(Ordering::Relaxed), expect);
        });
    }

    /// A sender died between marking the receiver and publishing: the
    /// sweeper frees the chunk, and a (live) receiver never sees it.
    #[test]
    fn sweep_frees_an_unpublished_send() {
        loom::model(|| {
            let holders = Arc::new(AtomicU64::new(1 | 2));
            let h2 = holders.clone();
            let other = loom::thread::spawn(move || h2.load(Ordering::Acquire));
            assert!(reclaim(&holders, 1, || true));
            let seen = other.join().unwrap();
            assert!(seen == 3 || seen == 0);
            assert_eq!(holders.load(Ordering::Relaxed), 0);
        });
    }

    /// A chunk shared by two holders is returned exactly once, by whichever
    /// releases last, while a third party tries to claim it.
    #[test]
    fn last_holder_frees_once() {
        loom::model(|| {
            let p = parts(1);
            let pool = Pool::new(&p.bitmap, 1, &*p);
            let (i, _) = pool.try_claim(1, 0).unwrap();
            p.holders[0].fetch_or(2, Ordering::Relaxed);
            let p2 = p.clone();
            let other = loom::thread::spawn(move || Pool::new(&p2.bitmap, 1, &*p2).release(i, 2));
            let p3 = p.clone();
            let claimer = loom::thread::spawn(move || {
                Pool::new(&p3.bitmap, 1, &*p3)
                    .try_claim(4, 0)
                    .map(|(i, _)| i)
            });
            let mine = pool.release(i, 1);
            let theirs = other.join().unwrap();
            let claimed = claimer.join().unwrap();
            let freed = [mine, theirs]
                .iter()
                .filter(|r| **r == Released::Freed)
                .count();
            assert_eq!(freed, 1);
            let expect = if claimed.is_some() { 4 } else { 0 };
            assert_eq!(p.holders[0].load(Ordering::Relaxed), expect);
        });
    }
}
