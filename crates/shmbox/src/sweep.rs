//! Chunk hand-offs between holders, and the crash sweep.
//!
//! A chunk's holders word says who owns it (see `pool`). Hand-offs:
//!
//! * **send**: the sender (bit `S`) adds the receiver's bit `R` *before* it
//!   publishes the chunk's offset, so the chunk is never unowned: `S → S|R`.
//! * **take-over**: the receiver, on taking the entry from its queue, clears
//!   the sender's bit: `S|R → R`. After its publishing CAS the sender touches
//!   nothing, and the receiver announces the entry it is taking in its slot
//!   (`taking`) before removing it from the queue.
//! * **release**: a holder clears its bit; whoever clears the last one
//!   returns the chunk to the pool.
//!
//! **Sweep.** A participant's slot is tied to an OFD lock on one byte of the
//! region's file, which the kernel drops when the process dies, however it
//! dies. A sweeper that can take that lock owns the dead slot (the lock also
//! keeps two sweepers apart, and a sweeper killed mid-sweep releases it for
//! the next one; every step below is idempotent). It then:
//!
//! 1. marks the slot `LEAVING`, so lookups no longer find the participant;
//! 2. settles the entry announced in the slot's `taking` word, if any: the
//!    message the participant was receiving (`S|D`), or an entry of its
//!    queue that it, or a sweeper killed before this one, was releasing.
//!    Still in the queue, it is released with the queue (step 3); out of
//!    it, nobody else will read it, and it is released now;
//! 3. closes its queue, so senders see the participant gone, and releases
//!    every entry in it (messages that were addressed to the dead
//!    participant). Whoever closes a queue (its owner leaving, a joiner
//!    finding entries left in it, a sweeper) announces each entry it
//!    releases in the slot's `taking`, as a receive does, and withdraws the
//!    announcement once it holds the chunk, before freeing it: killed at
//!    any point, it leaves the entry queued, announced and held, or held
//!    by the slot alone;
//! 4. clears its bit on every chunk. A chunk it held alone returns to the
//!    pool. A chunk it was *sending* (`D|R`, sender `D`) that is neither in
//!    `R`'s queue nor announced by `R` was never published: `R` never saw it,
//!    so it returns to the pool too. Otherwise only `D`'s bit goes;
//! 5. repairs the free bitmap (a releaser killed between its two steps),
//!    and forgets its registration as a loaner waiting for a class (it was
//!    killed waiting in a `loan`);
//! 6. forgets its notice of chunks kept asleep, and frees the slot.
//!
//! Every update a sweeper makes is a compare-and-swap from the value the
//! decision was made on, so a receiver taking over concurrently either wins
//! (and the sweeper re-decides) or finds its bit gone and leaves the entry
//! alone. The two hand-offs of a live send are plain stores, not locked
//! read-modify-writes: while they run, the only other writer the word can
//! have is a sweeper of a dead sender, and it writes the same value (see
//! [`pool::take_over_announced`]). Entries taken out of a queue by anyone
//! else (a sweeper closing a dead participant's queue, a participant
//! closing its own) are taken over with a compare-and-swap, though they are
//! announced too: it costs nothing off the hot path, and keeps a closer
//! safe against any sweeper that frees what it finds in neither place.
//!
//! A sweeper's compare-and-swap compares values, not versions: `D|S` (a
//! message from the dead `D` to `S`) and `S|D` (`S`'s reply in the same
//! chunk) are the same word. The memory model would let `S`'s take-over
//! store stay invisible to a sweeper of `D` while `S` drops the message,
//! loans the chunk again and starts a reply to `D`; the sweeper could then
//! free the reply. On hardware that window is a store-buffer drain
//! (nanoseconds) against the sweeper's close of `D`'s queue and scan of
//! every chunk (microseconds).

use crate::layout::{ChunkRef, Mapped};
use crate::mailbox::Address;
use crate::notify::Futex;
use crate::pool::{self, Released};
use crate::registry;
use std::sync::atomic::{AtomicU64, Ordering};

/// What a sweep reclaimed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    /// Dead participants whose slots were freed.
    pub participants: u32,
    /// Messages that were queued for them (released unread).
    pub messages: u32,
    /// Chunks returned to the pool.
    pub chunks: u32,
}

impl std::ops::AddAssign for SweepReport {
    fn add_assign(&mut self, other: Self) {
        self.participants += other.participants;
        self.messages += other.messages;
        self.chunks += other.chunks;
    }
}

/// Receiver side of a send: clears the sender's bit on `chunk` (see
/// [`pool::take_over`]). Returns whether `bit` (the receiver) holds it.
#[inline]
pub(crate) fn take_over(m: &Mapped, chunk: ChunkRef, bit: u64) -> bool {
    let header = m.chunk(chunk);
    let sender = Address::slot_of(header.sender.load(Ordering::Relaxed));
    pool::take_over(&header.holders, bit, sender_bit(m, sender))
}

/// [`take_over`] by the receiver itself, of the entry it announced in its
/// slot (`taking`), with the chunk's holders word and its (unchecked)
/// sender's slot already read (see [`pool::take_over_announced`]).
#[inline]
pub(crate) fn take_over_announced(m: &Mapped, holders: &AtomicU64, sender: u32, bit: u64) -> bool {
    pool::take_over_announced(holders, bit, sender_bit(m, sender))
}

/// The holder bit of slot `sender`; none for a slot the region does not
/// have.
fn sender_bit(m: &Mapped, sender: u32) -> u64 {
    if sender < m.layout.config.max_participants {
        1u64 << sender
    } else {
        0
    }
}

/// Clears `bit` from `chunk`; the last holder returns it to the pool and
/// wakes blocked loaners. Returns whether the chunk was freed.
pub(crate) fn release<F: Futex>(m: &Mapped, futex: &F, chunk: ChunkRef, bit: u64) -> bool {
    if m.pool(chunk.class).release(chunk.index, bit) == Released::Freed {
        m.pool_waiters(chunk.class).notify(futex);
        true
    } else {
        false
    }
}

/// Whether the send of `chunk` reached its destination: the entry is in
/// the receiver's queue, or the receiver announced it is taking it.
fn published(m: &Mapped, chunk: ChunkRef) -> bool {
    let dest = Address::slot_of(m.chunk(chunk).dest.load(Ordering::Relaxed));
    if dest >= m.layout.config.max_participants {
        return false;
    }
    let value = m.encode(chunk);
    // SYNC POINT: a receiver announces before it re-arms the cell (release);
    // our acquire loads of the cells then of `taking` see one or the other.
    m.mailbox(dest).queue.contains(value) || m.slot(dest).taking.load(Ordering::Acquire) == value
}

/// Clears dead slot `slot`'s bit from `chunk` (the entry it announced
/// taking is settled before). Returns whether the chunk was freed.
fn reclaim_chunk(m: &Mapped, chunk: ChunkRef, slot: u32) -> bool {
    let header = m.chunk(chunk);
    // A send of ours that never reached the receiver's queue: nobody else
    // will ever look at the chunk again.
    let abandoned =
        || Address::slot_of(header.sender.load(Ordering::Relaxed)) == slot && !published(m, chunk);
    let freed = pool::reclaim(&header.holders, 1u64 << slot, abandoned);
    if freed {
        m.pool(chunk.class).mark_free(chunk.index);
    }
    freed
}

/// Reclaims the slot of a dead participant. The caller holds the slot's
/// liveness lock (so the owner is dead and no other sweeper is here).
pub(crate) fn reclaim<F: Futex>(m: &Mapped, futex: &F, slot: u32) -> SweepReport {
    reclaim_releasing(m, futex, slot, |value| {
        release_announced(m, futex, slot, value)
    })
}

/// Closes slot `slot`'s queue, announcing each entry in the slot's `taking`
/// word before it leaves the queue, and handing it to `release` (which
/// withdraws the announcement: [`release_announced`]). Whoever closes a
/// queue, its owner or a sweeper, closes it so.
pub(crate) fn close_announced(m: &Mapped, slot: u32, release: impl FnMut(u32)) {
    let taking = m.slot(slot).taking;
    m.mailbox(slot)
        .queue
        .close_announcing(|value| taking.store(value, Ordering::Release), release);
}

/// Releases `value`, an entry taken out of slot `slot`'s queue being
/// closed, which nobody will read, and announced in the slot's `taking`
/// word: takes its chunk over, withdraws the announcement (from then on the
/// slot holds the chunk, or the chunk is not its to free), then frees it.
/// An announcement must never name a chunk that may be free: a sweep would
/// take a new send in it for this entry. Returns whether the chunk went
/// back to the pool.
pub(crate) fn release_announced<F: Futex>(m: &Mapped, futex: &F, slot: u32, value: u32) -> bool {
    let bit = 1u64 << slot;
    let held = m
        .decode(value)
        .ok()
        .filter(|&chunk| take_over(m, chunk, bit));
    m.slot(slot).taking.store(0, Ordering::Release);
    held.is_some_and(|chunk| release(m, futex, chunk, bit))
}

/// [`reclaim`], releasing each entry of the dead participant's queue with
/// `release` (which withdraws its announcement once it holds the chunk).
/// Separate so that tests can stop there.
pub(crate) fn reclaim_releasing<F: Futex>(
    m: &Mapped,
    futex: &F,
    slot: u32,
    mut release: impl FnMut(u32) -> bool,
) -> SweepReport {
    let view = m.slot(slot);
    let state = view.state.load(Ordering::Acquire);
    if registry::status(state) == registry::FREE {
        return SweepReport::default();
    }
    let generation = registry::generation(state);
    registry::mark_leaving(m, slot, generation);
    let mailbox = m.mailbox(slot);
    let mut report = SweepReport {
        participants: 1,
        ..SweepReport::default()
    };
    // An announcement left in the slot: by the dead participant (a message
    // it was receiving, or an entry of its queue it was releasing), or by
    // a sweeper killed while releasing an entry of its queue. An entry
    // still queued is released with the queue below. One that has left the
    // queue is released now, as a closer releases an entry (taken over,
    // the announcement withdrawn, then freed: killed at any point, this
    // sweep leaves the entry announced and held, or held alone), before
    // this sweep announces entries of its own in the same word.
    let announced = view.taking.load(Ordering::Acquire);
    if announced != 0 && !mailbox.queue.contains(announced) {
        report.chunks += u32::from(release_announced(m, futex, slot, announced));
    }
    view.taking.store(0, Ordering::Release);
    // Each entry is announced while it is released, as when a participant
    // closes its own queue: a sweeper killed in the middle leaves it for
    // the next one.
    close_announced(m, slot, |value| {
        report.messages += 1;
        report.chunks += u32::from(release(value));
    });
    mailbox.room.ring(futex, u32::MAX);
    for (class, layout) in m.layout.classes.iter().enumerate() {
        let class = class as u8;
        let mut freed = 0;
        for index in 0..layout.count {
            freed += u32::from(reclaim_chunk(m, ChunkRef { class, index }, slot));
        }
        freed += m.pool(class).repair();
        let waiters = m.pool_waiters(class);
        // A loan it was waiting in when it died: no longer waiting.
        waiters.forget(1u64 << slot);
        if freed > 0 {
            waiters.notify(futex);
        }
        report.chunks += freed;
    }
    // Its notice of chunks kept asleep: they are reclaimed.
    view.kept_asleep.store(0, Ordering::Relaxed);
    registry::finish_leave(m, slot, generation);
    report
}
