//! The offset queue: a bounded multi-producer, single-consumer queue of
//! 32-bit values living in shared memory (a mailbox's message list).
//!
//! Each cell is one `AtomicU64` packing `stamp << 32 | value`. The stamp is
//! the queue position the cell is waiting for: a cell waiting to be filled
//! at position `p` has stamp `p` and value `0`; once filled it has stamp
//! `p + 1` and the value; once the consumer has taken it, stamp
//! `p + capacity` (the position it serves in the next lap). Positions are
//! 32 bits and wrap; they are compared for equality only.
//!
//! `tail` packs `position << 32 | owner`: the next position to fill, and
//! the generation of the participant the queue belongs to. `head` is the
//! consumer's next position.
//!
//! A producer publishes by a single compare-and-swap on the cell (stamp `p`,
//! value `0` to stamp `p + 1` with its value), *then* advances `tail`.
//! Anyone who finds the cell at `tail` already filled advances `tail` for
//! it. So a producer that dies at any instant leaves either nothing or a
//! complete entry behind — never a hole that would block the consumer.
//!
//! The consumer owns `head`; it reads the cell at `head`, takes the value
//! by advancing `head`, then re-arms the cell for the next lap (a swap, so
//! that a producer's WAITER flag is not lost): at most one cell, the one
//! just before `head`, is ever taken and not yet re-armed (see
//! [`OffsetQueue::take_unarmed`]).
//!
//! **Closing.** When its owner leaves (or a sweep reclaims it), a queue is
//! closed: every empty cell gets the value [`CLOSED`] by compare-and-swap,
//! so no producer can publish into it any more (its CAS expects value `0`),
//! and the entries already published are drained. A producer racing the
//! close either published first (its entry is drained) or finds the cell
//! closed and gets [`PushError::Closed`]: nothing is lost and nothing stays
//! behind.
//!
//! **Reopening.** The next owner of the slot reopens the queue under its own
//! generation before anyone can address it, with positions a full lap past
//! the closed queue's `head`: past every position a producer of the
//! earlier owner may have read. Such a producer either read `tail` under
//! that owner's generation, and then expects a stamp no cell of the
//! reopened queue carries, or reads the new generation and is refused: a
//! message never lands in the queue of the slot's next occupant.

use crate::sync::{store_among_rmws, AtomicU64, Ordering};

/// The value of a closed cell.
pub(crate) const CLOSED: u32 = u32::MAX;
/// The value of the empty cell at `head` while its consumer sleeps waiting
/// for it: the producer that fills it knows it must ring the doorbell.
pub(crate) const PARKED: u32 = u32::MAX - 1;
/// Flag on a filled cell's value: a producer sleeps waiting for room, and
/// the consumer that takes the entry must ring the doorbell.
pub(crate) const WAITER: u32 = 1 << 31;
/// Entries are below this: the markers, and the two values that would read
/// as a marker once a producer sets [`WAITER`] on them, are excluded.
pub(crate) const MAX_VALUE: u32 = WAITER - 2;

/// What a successful push found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// The consumer is awake (or spinning); the entry is at position `at`
    /// (see [`OffsetQueue::consumer_behind`]).
    Quiet { at: u32 },
    /// The consumer was asleep on this entry: wake it.
    WakeConsumer,
}

/// Why a push failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushError {
    /// Every cell holds an entry.
    Full,
    /// The queue's owner has left (or the queue belongs to someone else).
    Closed,
}

#[inline]
fn pack(stamp: u32, value: u32) -> u64 {
    (u64::from(stamp) << 32) | u64::from(value)
}

#[inline]
fn stamp_of(cell: u64) -> u32 {
    (cell >> 32) as u32
}

/// Whether `cell`, at position `pos`, is room for the entry of that
/// position: stamped `pos`, empty or marked by a parked consumer.
fn is_room(cell: u64, pos: u32) -> bool {
    stamp_of(cell) == pos && matches!(cell as u32, 0 | PARKED)
}

/// A `tail` word: the position in the high half, so that moving it on is
/// one addition that wraps the position and leaves the owner alone.
#[inline]
fn tail_word(owner: u32, pos: u32) -> u64 {
    pack(pos, owner)
}

/// The owner half of a `tail` word.
#[inline]
fn owner_of(tail: u64) -> u32 {
    tail as u32
}

/// The position half of a `tail` word.
#[inline]
fn position_of(tail: u64) -> u32 {
    (tail >> 32) as u32
}

/// `tail` one position on, under the same owner.
#[inline]
fn next_tail(tail: u64) -> u64 {
    tail.wrapping_add(1 << 32)
}

/// A view of one queue: its indices and cells in (shared) memory.
pub(crate) struct OffsetQueue<'a> {
    /// Owner and next position to fill; written by producers (own cache
    /// line), and by the owner when it opens and closes the queue.
    tail: &'a AtomicU64,
    /// Next position to take; written by the consumer only (own cache line).
    head: &'a AtomicU64,
    /// `capacity` cells, a power of two.
    cells: &'a [AtomicU64],
}

impl<'a> OffsetQueue<'a> {
    pub(crate) fn new(tail: &'a AtomicU64, head: &'a AtomicU64, cells: &'a [AtomicU64]) -> Self {
        debug_assert!(cells.len().is_power_of_two() && cells.len() <= 1 << 30);
        Self { tail, head, cells }
    }

    /// Writes the initial state: empty, closed and owned by nobody, every
    /// cell waiting for its first lap.
    pub(crate) fn init(&self) {
        for (i, cell) in self.cells.iter().enumerate() {
            cell.store(pack(i as u32, CLOSED), Ordering::Relaxed);
        }
        self.tail.store(0, Ordering::Relaxed);
        self.head.store(0, Ordering::Relaxed);
    }

    #[inline]
    fn cell(&self, pos: u32) -> &AtomicU64 {
        &self.cells[(pos as usize) & (self.cells.len() - 1)]
    }

    /// Producer: appends `value` (non-zero, below [`MAX_VALUE`]) to the
    /// queue of `owner` (a generation): [`PushError::Closed`] if the queue
    /// is closed or now belongs to another owner.
    ///
    /// Bounded: every retry follows progress by another producer or the
    /// consumer, and a corrupt queue can make it report `Full` but not spin.
    #[inline]
    pub(crate) fn push(&self, owner: u32, value: u32) -> Result<Pushed, PushError> {
        debug_assert!(value != 0 && value < MAX_VALUE);
        let tail = self.tail.load(Ordering::Relaxed);
        if owner_of(tail) != owner {
            return Err(PushError::Closed);
        }
        let pos = position_of(tail);
        // First guess: the cell at `tail` is empty and waiting for us. The
        // CAS then fetches the line once, exclusively, instead of a load
        // fetching it shared and the CAS fetching it again; a wrong guess
        // costs nothing more, since the failed CAS returns what is there.
        let expected = pack(pos, 0);
        // SYNC POINT: as in `push_from`.
        match self.cell(pos).compare_exchange(
            expected,
            pack(pos.wrapping_add(1), value),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => {
                self.advance_tail(tail);
                Ok(Pushed::Quiet { at: pos })
            }
            Err(actual) => self.push_from(owner, value, tail, actual),
        }
    }

    /// After a push that filled position `at` ([`Pushed::Quiet`]):
    /// whether the entry before it, on the cell line the push has just
    /// taken over, is still there, so the consumer is busy with earlier
    /// entries rather than waiting for this one. A hint: the first cell of
    /// a line says `false` without looking at the line before.
    #[cfg(not(shmbox_loom))]
    #[inline(always)]
    pub(crate) fn consumer_behind(&self, at: u32) -> bool {
        let first_of_line =
            std::ptr::from_ref(self.cell(at)) as usize % crate::layout::LINE as usize == 0;
        let before = at.wrapping_sub(1);
        // An entry at `before` is stamped `before + 1`.
        !first_of_line && stamp_of(self.cell(before).load(Ordering::Relaxed)) == at
    }

    /// Moves `tail` past a filled cell at `tail` (whoever filled it).
    #[inline]
    fn advance_tail(&self, tail: u64) {
        let _ =
            self.tail
                .compare_exchange(tail, next_tail(tail), Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Whether the cell of position `pos`, holding `current`, was filled,
    /// taken and re-armed for the next lap: stamped `pos + cap`, empty or
    /// closed, with the consumer past `pos` (it moves `head` before it
    /// re-arms). A scribble can write the same value on a cell whose
    /// position was never filled; `head` then says so.
    fn taken_and_rearmed(&self, pos: u32, current: u64) -> bool {
        let cap = self.cells.len() as u32;
        stamp_of(current) == pos.wrapping_add(cap)
            && matches!(current as u32, 0 | CLOSED)
            && (self.head.load(Ordering::Acquire) as u32)
                .wrapping_sub(pos)
                .wrapping_sub(1)
                < cap
    }

    /// `tail` (read again) and the cell it names, unless the queue has
    /// changed owners.
    fn reload(&self, owner: u32, tail: u64) -> Result<(u64, u64), PushError> {
        if owner_of(tail) != owner {
            return Err(PushError::Closed);
        }
        Ok((tail, self.cell(position_of(tail)).load(Ordering::Acquire)))
    }

    /// The rest of [`push`](Self::push) after its first guess failed: the
    /// cell at `tail` holds `current`.
    #[inline(never)]
    fn push_from(
        &self,
        owner: u32,
        value: u32,
        mut tail: u64,
        mut current: u64,
    ) -> Result<Pushed, PushError> {
        let cap = self.cells.len() as u32;
        // Each retry re-reads `tail`; a hostile region could keep changing
        // it, so give up (as full) after a generous bound.
        for _ in 0..(4 * cap as usize + 64) {
            let pos = position_of(tail);
            let cell = self.cell(pos);
            let stamp = stamp_of(current);
            if stamp == pos {
                let marker = current as u32;
                if marker == CLOSED {
                    return Err(PushError::Closed);
                }
                if marker == 0 || marker == PARKED {
                    // SYNC POINT: the release half publishes the chunk's
                    // header and payload; pairs with the acquire load in
                    // `take_unarmed`. The acquire half pairs with the
                    // consumer's PARKED mark.
                    match cell.compare_exchange(
                        current,
                        pack(pos.wrapping_add(1), value),
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => {
                            self.advance_tail(tail);
                            return Ok(if marker == PARKED {
                                Pushed::WakeConsumer
                            } else {
                                Pushed::Quiet { at: pos }
                            });
                        }
                        Err(actual) => {
                            // Decide again on what the cell really holds.
                            current = actual;
                            continue;
                        }
                    }
                }
            } else if stamp == pos.wrapping_add(1) || self.taken_and_rearmed(pos, current) {
                // Filled by another producer that has not advanced `tail`
                // yet; or filled, taken and re-armed for the next lap
                // already (that producer was killed before it advanced
                // `tail`, and nobody else has pushed since: without this,
                // every push would find the queue full for ever).
                self.advance_tail(tail);
            } else if stamp == pos.wrapping_sub(cap).wrapping_add(1) {
                // Still holds the entry of the previous lap: full, unless
                // our `tail` is stale.
                let now = self.tail.load(Ordering::Relaxed);
                if now == tail {
                    return Err(PushError::Full);
                }
                (tail, current) = self.reload(owner, now)?;
                continue;
            }
            (tail, current) = self.reload(owner, self.tail.load(Ordering::Relaxed))?;
            crate::sync::spin_hint();
        }
        Err(PushError::Full)
    }

    /// Consumer: takes the next value, if one is published, and re-arms
    /// its cell at once.
    ///
    /// Only the queue's owner may call `pop`, one thread at a time.
    #[cfg(any(test, shmbox_loom))]
    pub(crate) fn pop(&self) -> Option<u32> {
        self.take_with(|v| v).map(|(v, _)| v)
    }

    /// Consumer: takes the next value, if one is published, calling
    /// `take(value)` after reading the entry and before it leaves the queue
    /// (so that at no instant the value is neither queued nor announced),
    /// then re-arms its cell for the next lap. Returns what `take` returned
    /// and whether a producer is asleep waiting for room (then ring its
    /// doorbell).
    #[inline]
    pub(crate) fn take_with<T>(&self, take: impl FnOnce(u32) -> T) -> Option<(T, bool)> {
        let (taken, pos) = self.take_unarmed(take)?;
        Some((taken, self.rearm(pos)))
    }

    /// The first half of [`take_with`](Self::take_with): the entry leaves
    /// the queue when `head` moves past it, but its cell still holds it
    /// until [`rearm`](Self::rearm)`(position)`. A consumer killed between
    /// the two leaves that one cell, just before `head`, taken and not
    /// re-armed; [`close`](Self::close) re-arms it. (Separate so that tests
    /// and models can stop there.)
    #[inline]
    pub(crate) fn take_unarmed<T>(&self, take: impl FnOnce(u32) -> T) -> Option<(T, u32)> {
        let head = self.head.load(Ordering::Relaxed) as u32;
        let cell = self.cell(head);
        // SYNC POINT: pairs with the release half of the CAS in `push`.
        let current = cell.load(Ordering::Acquire);
        if stamp_of(current) != head.wrapping_add(1) {
            return None;
        }
        let taken = take(current as u32 & !WAITER);
        // SYNC POINT: publishes the announcement to sweepers, which read
        // `head` (acquire) before they look for the entry in the queue.
        self.head
            .store(u64::from(head.wrapping_add(1)), Ordering::Release);
        Some((taken, head))
    }

    /// Consumer: re-arms the cell of position `pos`, taken by
    /// [`take_unarmed`](Self::take_unarmed), for the next lap. Returns
    /// whether a producer is asleep waiting for room.
    #[inline]
    pub(crate) fn rearm(&self, pos: u32) -> bool {
        let cap = self.cells.len() as u32;
        // SYNC POINT: releases the cell to producers of the next lap (pairs
        // with their acquire load). A swap, not a store: a blocked producer
        // may have flagged the entry WAITER since we read it, and that flag
        // must not be lost.
        let taken = self
            .cell(pos)
            .swap(pack(pos.wrapping_add(cap), 0), Ordering::AcqRel);
        taken as u32 & WAITER != 0
    }

    /// Producer, finding `owner`'s queue full: flags the entry the consumer
    /// takes next, so that the consumer rings the room doorbell when it
    /// takes it. Returns `false` if the queue is no longer full, or no
    /// longer `owner`'s (try again instead of sleeping). A cell that is
    /// neither room nor an entry (only a scribble makes one) returns `true`
    /// unflagged: the producer sleeps its time slice instead of spinning on
    /// it.
    pub(crate) fn mark_waiting(&self, owner: u32) -> bool {
        let cap = self.cells.len() as u32;
        let tail = self.tail.load(Ordering::Relaxed);
        if owner_of(tail) != owner {
            return false;
        }
        let pos = position_of(tail);
        let cell = self.cell(pos);
        let current = cell.load(Ordering::Acquire);
        let stamp = stamp_of(current);
        let closed = current == pack(pos, CLOSED);
        if is_room(current, pos)
            || closed
            || stamp == pos.wrapping_add(1)
            || self.taken_and_rearmed(pos, current)
        {
            // Room (or closed meanwhile), or filled by a producer that has
            // not moved `tail` yet (and maybe taken already).
            return false;
        }
        // Not the entry a lap back (room with a stray value included: a
        // push refuses it as full): a scribble.
        if stamp != pos.wrapping_sub(cap).wrapping_add(1) {
            return true;
        }
        current as u32 & WAITER != 0
            || cell
                .compare_exchange(
                    current,
                    current | u64::from(WAITER),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    /// Consumer, finding the queue empty: marks the cell it waits on, so the
    /// producer that fills it rings the doorbell. Returns `false` if an
    /// entry arrived (or the queue closed) meanwhile: do not sleep.
    pub(crate) fn mark_parked(&self) -> bool {
        let head = self.head.load(Ordering::Relaxed) as u32;
        let cell = self.cell(head);
        let current = cell.load(Ordering::Acquire);
        if stamp_of(current) != head {
            return false;
        }
        match current as u32 {
            PARKED => true,
            // SYNC POINT: release pairs with the acquire half of the
            // producer's CAS that replaces the mark.
            0 => cell
                .compare_exchange(
                    current,
                    pack(head, PARKED),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok(),
            _ => false,
        }
    }

    /// Producer: the cell the next push to `owner` fills (to prefetch
    /// it), or `None` if the queue belongs to another owner (a push would
    /// be refused).
    #[cfg_attr(shmbox_loom, allow(dead_code))]
    #[inline]
    pub(crate) fn tail_cell(&self, owner: u32) -> Option<&AtomicU64> {
        let tail = self.tail.load(Ordering::Relaxed);
        (owner_of(tail) == owner).then(|| self.cell(position_of(tail)))
    }

    /// Consumer: the cell at `head` if it is neither room (stamp `head`,
    /// value empty or parked) nor an entry (stamp `head + 1`; a bad value
    /// there is the entry's to report): only a scribble on the region
    /// makes one, and a receiver must report it rather than poll it for
    /// ever. A closed cell is one too: the consumer asking is alive and
    /// still owns the queue.
    #[cfg_attr(shmbox_loom, allow(dead_code))]
    pub(crate) fn corrupt_head(&self) -> Option<u64> {
        let head = self.head.load(Ordering::Relaxed) as u32;
        let current = self.cell(head).load(Ordering::Acquire);
        let entry = stamp_of(current) == head.wrapping_add(1);
        (!is_room(current, head) && !entry).then_some(current)
    }

    /// Consumer, having found the cell at `head` corrupt (holding `seen`,
    /// see [`corrupt_head`](Self::corrupt_head)): puts it back in order if
    /// `tail` (still `owner`'s) agrees on where `head` is. At `head`, the
    /// queue was empty there: the cell is room again. Past it, but by no
    /// more than the capacity, the cell held an entry, now lost: `head`
    /// moves past it and it is re-armed for the next lap, in the order of
    /// a take. Anything else is left as it is: a closed cell (the queue
    /// was closed under its consumer), an entry of the next lap (only a
    /// scribbled `head` makes it look corrupt), `head` or `tail` scribbled
    /// out of each other's reach. A compare-and-swap from `seen`: a cell
    /// that changed since is left alone too.
    #[cfg_attr(shmbox_loom, allow(dead_code))]
    pub(crate) fn repair_head(&self, owner: u32, seen: u64) -> Option<Repaired> {
        let cap = self.cells.len() as u32;
        let head = self.head.load(Ordering::Relaxed) as u32;
        let tail = self.tail.load(Ordering::Relaxed);
        if owner_of(tail) != owner || seen == pack(head, CLOSED) {
            return None;
        }
        let cell = self.cell(head);
        match position_of(tail).wrapping_sub(head) {
            0 => {
                cell.compare_exchange(seen, pack(head, 0), Ordering::AcqRel, Ordering::Relaxed)
                    .ok()?;
                Some(Repaired::Emptied)
            }
            ahead if ahead <= cap => {
                let next_lap = head.wrapping_add(cap);
                if stamp_of(seen) == next_lap.wrapping_add(1)
                    || cell.load(Ordering::Acquire) != seen
                {
                    return None;
                }
                // SYNC POINT: as in `take_unarmed`.
                self.head
                    .store(u64::from(head.wrapping_add(1)), Ordering::Release);
                // Only a producer of the next lap could have changed the
                // cell since (if `seen` was room for it): its entry stays.
                let _ = cell.compare_exchange(
                    seen,
                    pack(next_lap, 0),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                );
                Some(Repaired::Skipped)
            }
            _ => None,
        }
    }

    /// Consumer, awake again: removes its mark if no entry replaced it.
    pub(crate) fn unmark_parked(&self) {
        let head = self.head.load(Ordering::Relaxed) as u32;
        let parked = pack(head, PARKED);
        let cell = self.cell(head);
        // Usually a producer replaced the mark (that is what woke us): a
        // plain load then avoids taking the line exclusively for nothing.
        if cell.load(Ordering::Relaxed) != parked {
            return;
        }
        let _ = cell.compare_exchange(parked, pack(head, 0), Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Whether the consumer is asleep waiting for an entry (for inspection).
    #[cfg_attr(shmbox_loom, allow(dead_code))]
    pub(crate) fn is_parked(&self) -> bool {
        let head = self.head.load(Ordering::Relaxed) as u32;
        self.cell(head).load(Ordering::Relaxed) == pack(head, PARKED)
    }

    /// The published entries the consumer has not taken, in queue order
    /// (read one cell at a time: a snapshot only for the consumer itself).
    #[cfg_attr(shmbox_loom, allow(dead_code))]
    fn queued(&self) -> impl Iterator<Item = u32> + '_ {
        // SYNC POINT: pairs with the release store of `head` in `take_unarmed`:
        // an entry taken since is announced by the consumer.
        let head = self.head.load(Ordering::Acquire) as u32;
        (0..self.cells.len() as u32).filter_map(move |k| {
            let pos = head.wrapping_add(k);
            let current = self.cell(pos).load(Ordering::Acquire);
            // An entry at `pos` (not the taken cell before `head`, nor an
            // entry of an earlier lap).
            (stamp_of(current) == pos.wrapping_add(1)).then_some(current as u32 & !WAITER)
        })
    }

    /// The published entries the consumer has not taken, sorted (see
    /// [`queued`](Self::queued)).
    #[cfg_attr(shmbox_loom, allow(dead_code))]
    pub(crate) fn entries(&self) -> Vec<u32> {
        let mut found: Vec<u32> = self.queued().collect();
        found.sort_unstable();
        found
    }

    /// Whether `value` is a published entry the consumer has not taken.
    #[cfg_attr(shmbox_loom, allow(dead_code))]
    pub(crate) fn contains(&self, value: u32) -> bool {
        self.queued().any(|v| v == value)
    }

    /// Consumer (or whoever took over from a dead one): closes the queue and
    /// hands every entry still in it to `on_entry`. Afterwards no push can
    /// succeed until [`reopen`](Self::reopen). Idempotent, but for `head`:
    /// a close after a joiner killed in the middle of reopening moves it
    /// past the cells that joiner armed (they look like cells a killed
    /// closer emptied), further past every entry.
    pub(crate) fn close(&self, on_entry: impl FnMut(u32)) {
        self.close_announcing(|_| {}, on_entry);
    }

    /// [`close`](Self::close), calling `announce(value)` before each entry
    /// leaves the queue, as [`take_with`](Self::take_with) does, and
    /// `announce(0)` at the end: a closer killed at any instant leaves
    /// every entry queued or announced.
    pub(crate) fn close_announcing(
        &self,
        mut announce: impl FnMut(u32),
        mut on_entry: impl FnMut(u32),
    ) {
        let cap = self.cells.len() as u32;
        let mut head = self.head.load(Ordering::Relaxed) as u32;
        // A closer killed while draining left the cells it emptied closed
        // for their next lap, and `head` where it was: move past them, so
        // that the entries behind them are drained too.
        for _ in 0..cap {
            if self.cell(head).load(Ordering::Acquire) != pack(head.wrapping_add(cap), CLOSED) {
                break;
            }
            head = head.wrapping_add(1);
        }
        // A consumer that took the entry before `head` and died before
        // re-arming its cell: re-arm it (closed) for the next lap. Bounded
        // like the loop below.
        let taken = head.wrapping_sub(1);
        for _ in 0..64 {
            let current = self.cell(taken).load(Ordering::Acquire);
            if stamp_of(current) != head
                || self
                    .cell(taken)
                    .compare_exchange(
                        current,
                        pack(taken.wrapping_add(cap), CLOSED),
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    )
                    .is_ok()
            {
                break;
            }
        }
        for k in 0..cap {
            let pos = head.wrapping_add(k);
            let cell = self.cell(pos);
            // Bounded: only a participant scribbling on the cell can make
            // the CAS fail more than a few times.
            for _ in 0..64 {
                let current = cell.load(Ordering::Acquire);
                if stamp_of(current) == pos.wrapping_add(1) || current as u32 == CLOSED {
                    break; // an entry (drained below), or already closed
                }
                let closed = pack(stamp_of(current), CLOSED);
                if cell
                    .compare_exchange(current, closed, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    break;
                }
            }
        }
        // Entries sit contiguously from `head`: a position is filled only
        // after every earlier one was.
        for _ in 0..cap {
            let cell = self.cell(head);
            let current = cell.load(Ordering::Acquire);
            if stamp_of(current) != head.wrapping_add(1) {
                break;
            }
            let value = current as u32 & !WAITER;
            announce(value);
            cell.store(pack(head.wrapping_add(cap), CLOSED), Ordering::Release);
            head = head.wrapping_add(1);
            on_entry(value);
        }
        announce(0);
        self.head.store(u64::from(head), Ordering::Release);
        // Producers write `tail` by compare-and-swap only.
        let owner = owner_of(self.tail.load(Ordering::Relaxed));
        store_among_rmws(self.tail, tail_word(owner, head), Ordering::Release);
    }

    /// New owner `owner` (its generation), after [`close`](Self::close):
    /// accepts pushes again, a full lap past the closed queue's `head`, so
    /// that no cell carries a stamp a producer of an earlier owner may
    /// still expect (a producer fills a position less than a lap past the
    /// consumer's `head`, and `close` leaves `head` past every entry).
    pub(crate) fn reopen(&self, owner: u32) {
        let start = self.reopen_partly(owner, self.cells.len() as u32);
        self.head.store(u64::from(start), Ordering::Relaxed);
    }

    /// [`reopen`](Self::reopen) up to the first `armed` cells, without the
    /// final store of `head`: where a joiner killed in the middle leaves the
    /// queue. Returns the new owner's first position. (Separate so that
    /// tests can stop there.)
    fn reopen_partly(&self, owner: u32, armed: u32) -> u32 {
        let cap = self.cells.len() as u32;
        let start = (self.head.load(Ordering::Relaxed) as u32).wrapping_add(cap);
        // The new owner first: from here on, a producer addressing an
        // earlier owner is refused at once, whatever the cells hold. Nobody
        // addresses the new owner before it is active; its producers see
        // the cells armed through the registry (its activation is a SeqCst
        // store after this, their lookup an acquire load).
        store_among_rmws(self.tail, tail_word(owner, start), Ordering::Release);
        for k in 0..armed.min(cap) {
            let pos = start.wrapping_add(k);
            self.cell(pos).store(pack(pos, 0), Ordering::Release);
        }
        start
    }

    /// Entries published and not yet taken (racy; for inspection). A
    /// `tail` behind `head` (a producer between its two steps, or killed
    /// there, whose entry was taken already) counts as empty, not full.
    #[cfg_attr(shmbox_loom, allow(dead_code))]
    pub(crate) fn len(&self) -> u64 {
        let tail = position_of(self.tail.load(Ordering::Relaxed));
        let head = self.head.load(Ordering::Relaxed) as u32;
        let ahead = u64::from(tail.wrapping_sub(head));
        if ahead > self.cells.len() as u64 {
            0
        } else {
            ahead
        }
    }
}

/// What [`OffsetQueue::repair_head`] made of a corrupt cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Repaired {
    /// The queue was empty there: the cell is room again.
    Emptied,
    /// The cell held an entry (now lost): the queue goes on past it.
    Skipped,
}

#[cfg(all(test, not(shmbox_loom)))]
mod tests {
    use super::*;

    /// The generation the tests' queues belong to.
    const OWNER: u32 = 7;

    fn queue(cap: usize) -> (AtomicU64, AtomicU64, Vec<AtomicU64>) {
        (
            AtomicU64::new(0),
            AtomicU64::new(0),
            (0..cap).map(|_| AtomicU64::new(0)).collect(),
        )
    }

    /// A queue of capacity `cap`, initialised and opened for [`OWNER`].
    fn opened(cap: usize) -> (AtomicU64, AtomicU64, Vec<AtomicU64>) {
        let (t, h, c) = queue(cap);
        let q = OffsetQueue::new(&t, &h, &c);
        q.init();
        q.reopen(OWNER);
        (t, h, c)
    }

    /// Puts an empty queue of [`OWNER`] at position `start`, every cell
    /// armed for it.
    fn start_at(t: &AtomicU64, h: &AtomicU64, c: &[AtomicU64], start: u32) {
        for (i, cell) in c.iter().enumerate() {
            let pos = start.wrapping_add((i as u32).wrapping_sub(start) % c.len() as u32);
            cell.store(pack(pos, 0), Ordering::Relaxed);
        }
        t.store(tail_word(OWNER, start), Ordering::Relaxed);
        h.store(u64::from(start), Ordering::Relaxed);
    }

    /// `owner`'s empty queue of capacity 4 takes 4 entries, refuses a
    /// fifth as full, and gives the 4 back in order.
    fn assert_serves_a_lap(q: &OffsetQueue<'_>, owner: u32) {
        for v in 1..=4 {
            q.push(owner, v).unwrap();
        }
        assert_eq!(q.push(owner, 5), Err(PushError::Full));
        for v in 1..=4 {
            assert_eq!(q.pop(), Some(v));
        }
    }

    /// No cell of `q` is armed for a position in `stale`, which an earlier
    /// `owner`'s `tail` held, and a producer of that owner whose first
    /// guess at such a `tail` failed is refused on its retry.
    fn assert_refuses_positions(
        q: &OffsetQueue<'_>,
        owner: u32,
        stale: std::ops::RangeInclusive<u32>,
    ) {
        for pos in stale {
            for cell in q.cells {
                assert_ne!(
                    cell.load(Ordering::Relaxed),
                    pack(pos, 0),
                    "a cell is armed for position {pos} of the earlier owner"
                );
            }
            let current = q.cell(pos).load(Ordering::Relaxed);
            assert_eq!(
                q.push_from(owner, 9, tail_word(owner, pos), current),
                Err(PushError::Closed)
            );
        }
    }

    #[test]
    fn fifo_full_and_wraparound() {
        let (t, h, c) = opened(4);
        let q = OffsetQueue::new(&t, &h, &c);
        for lap in 0..10u32 {
            for i in 0..4 {
                q.push(OWNER, lap * 10 + i + 1).unwrap();
            }
            assert_eq!(q.push(OWNER, 99), Err(PushError::Full));
            assert_eq!(q.len(), 4);
            for i in 0..4 {
                assert_eq!(q.pop(), Some(lap * 10 + i + 1));
            }
            assert_eq!(q.pop(), None);
        }
    }

    #[test]
    fn stamps_wrap_around_u32() {
        let (t, h, c) = queue(2);
        let q = OffsetQueue::new(&t, &h, &c);
        start_at(&t, &h, &c, u32::MAX - 3);
        for v in 1..=20 {
            q.push(OWNER, v).unwrap();
            assert_eq!(q.pop(), Some(v));
        }
    }

    #[test]
    fn garbage_cells_do_not_hang_push() {
        let (t, h, c) = queue(8);
        let q = OffsetQueue::new(&t, &h, &c);
        for cell in &c {
            cell.store(0xdead_beef_dead_beef, Ordering::Relaxed);
        }
        t.store(tail_word(OWNER, 12345), Ordering::Relaxed);
        assert_eq!(q.push(OWNER, 1), Err(PushError::Full));
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn only_a_scribbled_head_cell_is_corrupt() {
        let (t, h, c) = queue(2);
        let q = OffsetQueue::new(&t, &h, &c);
        q.init();
        let closed = c[0].load(Ordering::Relaxed);
        assert_eq!(q.corrupt_head(), Some(closed), "closed under its consumer");
        q.reopen(OWNER);
        assert_eq!(q.corrupt_head(), None, "empty");
        assert!(q.mark_parked());
        assert_eq!(q.corrupt_head(), None, "parked");
        q.unmark_parked();
        q.push(OWNER, 1).unwrap();
        q.push(OWNER, 2).unwrap();
        assert_eq!(q.corrupt_head(), None, "an entry");
        assert!(q.mark_waiting(OWNER));
        assert_eq!(q.corrupt_head(), None, "an entry a producer waits behind");
        for v in 3..=8 {
            assert_eq!(q.pop(), Some(v - 2));
            assert_eq!(q.corrupt_head(), None, "after a take");
            q.push(OWNER, v).unwrap();
        }
        // Stamps wrapping past u32::MAX.
        start_at(&t, &h, &c, u32::MAX - 1);
        for v in 1..=4 {
            assert_eq!(q.corrupt_head(), None, "empty, wrapping");
            q.push(OWNER, v).unwrap();
            assert_eq!(q.corrupt_head(), None, "an entry, wrapping");
            assert_eq!(q.pop(), Some(v));
        }
        // Scribbles: another lap's stamp, and room with a stray value.
        let head = h.load(Ordering::Relaxed);
        let cell = &c[(head % 2) as usize];
        for scribble in [pack(head as u32 + 7, 0), pack(head as u32, 5)] {
            cell.store(scribble, Ordering::Relaxed);
            assert_eq!(q.corrupt_head(), Some(scribble));
        }
    }

    /// A producer killed between its publishing CAS and moving `tail`,
    /// whose entry the consumer took (and re-armed for the next lap)
    /// before anyone else pushed: the next push moves `tail` on instead of
    /// finding the queue full for ever, at every position of a lap and
    /// across the wrap of positions.
    #[test]
    fn a_producer_killed_before_moving_tail_does_not_wedge_the_queue() {
        for start in [0, u32::MAX - 1] {
            let (t, h, c) = opened(4);
            start_at(&t, &h, &c, start);
            let q = OffsetQueue::new(&t, &h, &c);
            for i in 0..6u32 {
                let pos = start.wrapping_add(2 * i);
                // The killed producer's CAS, and nothing after it.
                let cell = &c[(pos % 4) as usize];
                assert_eq!(cell.load(Ordering::Relaxed), pack(pos, 0));
                cell.store(pack(pos.wrapping_add(1), 100 + i), Ordering::Relaxed);
                assert_eq!(q.pop(), Some(100 + i));
                assert_eq!(
                    position_of(t.load(Ordering::Relaxed)),
                    pos,
                    "tail left behind"
                );
                assert_eq!(q.len(), 0, "empty, not full");
                // Past the killed producer's position.
                let next = pos.wrapping_add(1);
                assert_eq!(q.push(OWNER, i + 1), Ok(Pushed::Quiet { at: next }));
                assert_eq!(q.pop(), Some(i + 1));
            }
        }
    }

    /// After a push, the queue tells whether the entry before it, on the
    /// cell line the push has just taken over, is still there (the
    /// consumer is behind); the first cell of a line says not, without
    /// looking at the line before.
    #[test]
    fn a_push_tells_whether_the_consumer_is_behind() {
        #[repr(align(64))]
        struct Line([AtomicU64; 16]);
        let cells = Line(std::array::from_fn(|_| AtomicU64::new(0)));
        let (t, h) = (AtomicU64::new(0), AtomicU64::new(0));
        let q = OffsetQueue::new(&t, &h, &cells.0);
        q.init();
        q.reopen(OWNER);
        start_at(&t, &h, &cells.0, 0);
        let behind = |v: u32| match q.push(OWNER, v) {
            Ok(Pushed::Quiet { at }) => q.consumer_behind(at),
            other => panic!("{other:?}"),
        };
        assert!(!behind(1));
        assert!(behind(2));
        assert_eq!((q.pop(), q.pop()), (Some(1), Some(2)));
        assert!(!behind(3), "entry 2 was taken");
        for v in 4..=8 {
            assert!(behind(v));
        }
        // Position 8 starts the next line.
        assert!(!behind(9));
        assert!(behind(10));
    }

    /// A scribble that writes a re-armed cell's value on the head cell of
    /// an empty queue does not make producers skip that position: pushes
    /// find the queue full until the consumer repairs the cell, then go
    /// on in order.
    #[test]
    fn a_scribbled_rearmed_value_at_an_unfilled_position_is_not_skipped() {
        let (t, h, c) = opened(4);
        start_at(&t, &h, &c, 0);
        let q = OffsetQueue::new(&t, &h, &c);
        let scribble = pack(4, 0);
        c[0].store(scribble, Ordering::Relaxed);
        assert_eq!(q.push(OWNER, 1), Err(PushError::Full));
        assert_eq!(position_of(t.load(Ordering::Relaxed)), 0);
        assert_eq!(q.corrupt_head(), Some(scribble));
        assert_eq!(q.repair_head(OWNER, scribble), Some(Repaired::Emptied));
        for v in 1..=4 {
            q.push(OWNER, v).unwrap();
        }
        assert_eq!(
            (q.pop(), q.pop(), q.pop(), q.pop()),
            (Some(1), Some(2), Some(3), Some(4))
        );
    }

    /// A scribbled cell at `head` is repaired as what `tail` says it was:
    /// room (the queue was empty there), or an entry now lost (the queue
    /// goes on past it, the entries behind it in order). A head or tail
    /// that does not agree, another owner, or a cell that changed since
    /// it was seen, leave everything as it is.
    #[test]
    fn a_scribbled_head_cell_is_repaired_as_what_the_tail_says_it_was() {
        let scribble = 0xdead_beef_dead_beef;
        // Empty, across the wrap of positions too.
        for start in [0, u32::MAX] {
            let (t, h, c) = opened(4);
            start_at(&t, &h, &c, start);
            let q = OffsetQueue::new(&t, &h, &c);
            let cell = &c[(start % 4) as usize];
            cell.store(scribble, Ordering::Relaxed);
            assert_eq!(q.repair_head(OWNER + 1, scribble), None, "another owner");
            assert_eq!(q.repair_head(OWNER, 1), None, "changed since seen");
            assert_eq!(cell.load(Ordering::Relaxed), scribble);
            assert_eq!(q.repair_head(OWNER, scribble), Some(Repaired::Emptied));
            assert_eq!(q.corrupt_head(), None);
            q.push(OWNER, 5).unwrap();
            assert_eq!(q.pop(), Some(5));
        }
        // An entry overwritten: the two behind it still arrive, and the
        // queue takes a full lap after.
        let (t, h, c) = opened(4);
        let q = OffsetQueue::new(&t, &h, &c);
        for v in 1..=3 {
            q.push(OWNER, v).unwrap();
        }
        c[0].store(scribble, Ordering::Relaxed);
        assert_eq!(q.repair_head(OWNER, scribble), Some(Repaired::Skipped));
        assert_eq!((q.pop(), q.pop(), q.pop()), (Some(2), Some(3), None));
        for v in 4..=7 {
            q.push(OWNER, v).unwrap();
        }
        assert_eq!(q.push(OWNER, 8), Err(PushError::Full));
        assert_eq!((q.pop(), q.len()), (Some(4), 3));
        // `head` a lap behind a full queue's `tail` (as a scribbled `head`
        // can be), on a cell holding an entry of the next lap whose
        // producer has not moved `tail` yet: not the repair's to drop.
        let (t, h, c) = opened(4);
        let q = OffsetQueue::new(&t, &h, &c);
        let next_lap_entry = pack(2 + 4 + 1, 6);
        c[2].store(next_lap_entry, Ordering::Relaxed);
        h.store(2, Ordering::Relaxed);
        t.store(tail_word(OWNER, 2 + 4), Ordering::Relaxed);
        assert_eq!(q.corrupt_head(), Some(next_lap_entry));
        assert_eq!(q.repair_head(OWNER, next_lap_entry), None);
        assert_eq!(c[2].load(Ordering::Relaxed), next_lap_entry);
        // A queue closed under its consumer is not reopened by it.
        let (t, h, c) = opened(4);
        let q = OffsetQueue::new(&t, &h, &c);
        q.close(|_| {});
        let closed = q.corrupt_head().unwrap();
        assert_eq!(q.repair_head(OWNER, closed), None);
        assert_eq!(q.corrupt_head(), Some(closed));
        // A head scribbled too, more than a lap from the tail.
        let (t, h, c) = opened(4);
        let q = OffsetQueue::new(&t, &h, &c);
        h.store(1000, Ordering::Relaxed);
        let seen = q.corrupt_head().unwrap();
        assert_eq!(q.repair_head(OWNER, seen), None);
        assert_eq!(
            (h.load(Ordering::Relaxed), q.corrupt_head()),
            (1000, Some(seen))
        );
    }

    #[test]
    fn close_drains_refuses_and_reopens() {
        let (t, h, c) = queue(4);
        let q = OffsetQueue::new(&t, &h, &c);
        q.init();
        assert_eq!(
            q.push(OWNER, 1),
            Err(PushError::Closed),
            "a new queue is closed"
        );
        q.reopen(OWNER);
        for round in 0..3u32 {
            q.push(OWNER, 10 + round).unwrap();
            q.push(OWNER, 20 + round).unwrap();
            assert_eq!(q.pop(), Some(10 + round));
            let mut drained = Vec::new();
            q.close(|v| drained.push(v));
            assert_eq!(drained, [20 + round]);
            assert_eq!(q.push(OWNER, 5), Err(PushError::Closed));
            assert_eq!(q.pop(), None);
            q.close(|_| panic!("close is idempotent"));
            q.reopen(OWNER);
            assert_eq!(q.len(), 0);
            assert_serves_a_lap(&q, OWNER);
        }
    }

    /// A producer of the queue's earlier owner never fills a cell of the
    /// reopened queue: no cell is armed for any position that owner's
    /// `tail` held, and a retry that reads the new `tail` is refused.
    #[test]
    fn a_reopened_queue_refuses_the_earlier_owner() {
        let (t, h, c) = opened(4);
        let q = OffsetQueue::new(&t, &h, &c);
        for round in 0..6u32 {
            let (owner, next) = (OWNER + round, OWNER + round + 1);
            let start = position_of(t.load(Ordering::Relaxed));
            // Some traffic, leaving `round % 5` entries queued (one lap
            // taken first, so that stamps have moved on).
            for v in 1..=4 {
                q.push(owner, v).unwrap();
            }
            for v in 1..=4 {
                assert_eq!(q.pop(), Some(v));
            }
            for v in 0..round % 5 {
                q.push(owner, 10 + v).unwrap();
            }
            let mut drained = Vec::new();
            q.close(|v| drained.push(v));
            assert_eq!(drained.len() as u32, round % 5);
            let end = position_of(t.load(Ordering::Relaxed));
            q.reopen(next);
            assert_refuses_positions(&q, owner, start..=end);
            assert_eq!(q.push(owner, 9), Err(PushError::Closed));
            assert!(!q.mark_waiting(owner), "no sleep on another owner's queue");
            assert_eq!(q.pop(), None);
            // The new owner's queue works, to capacity.
            assert_serves_a_lap(&q, next);
        }
    }

    /// Closing announces each entry while it is still queued, releases it
    /// announced, and withdraws the announcement at the end: at no instant
    /// is an entry neither queued nor announced.
    #[test]
    fn close_announces_each_entry_before_it_leaves() {
        let (t, h, c) = opened(4);
        let q = OffsetQueue::new(&t, &h, &c);
        for v in 1..=3 {
            q.push(OWNER, v).unwrap();
        }
        let announced = std::cell::Cell::new(0);
        let events = std::cell::RefCell::new(Vec::new());
        q.close_announcing(
            |v| {
                assert!(v == 0 || q.contains(v), "{v} announced after it left");
                announced.set(v);
                events.borrow_mut().push(('a', v));
            },
            |v| {
                assert!(
                    !q.contains(v) && announced.get() == v,
                    "{v} released unannounced"
                );
                events.borrow_mut().push(('r', v));
            },
        );
        let expected = [
            ('a', 1),
            ('r', 1),
            ('a', 2),
            ('r', 2),
            ('a', 3),
            ('r', 3),
            ('a', 0),
        ];
        assert_eq!(events.into_inner(), expected);
    }

    /// A closer killed while draining leaves `head` behind the cells it
    /// emptied: the next close drains the entries behind them, and the
    /// reopened queue still refuses every position a producer of the
    /// earlier owner may hold.
    #[test]
    fn a_closer_killed_while_draining_leaves_nothing_behind() {
        let (t, h, c) = opened(4);
        let q = OffsetQueue::new(&t, &h, &c);
        let start = position_of(t.load(Ordering::Relaxed));
        for v in 1..=4 {
            q.push(OWNER, v).unwrap();
        }
        let end = position_of(t.load(Ordering::Relaxed));
        // The closer drained the first entry (its cell closed for the next
        // lap, as `close` leaves it) and was killed before storing `head`.
        let head = h.load(Ordering::Relaxed) as u32;
        q.cell(head)
            .store(pack(head.wrapping_add(4), CLOSED), Ordering::Relaxed);
        let mut drained = Vec::new();
        q.close(|v| drained.push(v)); // the sweeper
        assert_eq!(drained, [2, 3, 4]);
        q.close(|_| panic!("close is idempotent"));
        q.reopen(OWNER + 1);
        assert_refuses_positions(&q, OWNER, start..=end);
        assert_eq!(q.pop(), None);
        assert_serves_a_lap(&q, OWNER + 1);
    }

    /// A joiner killed in the middle of reopening, at any point: producers
    /// of the earlier owner are refused at once, not told `Full` (which
    /// would keep a blocking send waiting for room), and after the
    /// sweeper's close the next owner's reopen works.
    #[test]
    fn a_joiner_killed_while_reopening_leaves_a_refusing_queue() {
        for armed in 0..=4 {
            let (t, h, c) = opened(4);
            let q = OffsetQueue::new(&t, &h, &c);
            q.push(OWNER, 1).unwrap();
            assert_eq!(q.pop(), Some(1));
            q.close(|_| panic!("nothing was queued")); // OWNER leaves
            q.close(|_| panic!("nothing was queued")); // the joiner's close
            q.reopen_partly(OWNER + 1, armed); // the joiner is killed here
            assert_eq!(q.push(OWNER, 9), Err(PushError::Closed), "{armed}");
            assert!(!q.mark_waiting(OWNER), "{armed}");
            q.close(|_| panic!("nothing was queued")); // the sweeper
            assert_eq!(q.push(OWNER, 9), Err(PushError::Closed), "{armed}");
            assert!(q.push(OWNER + 1, 9).is_err(), "{armed}");
            q.reopen(OWNER + 2);
            assert_serves_a_lap(&q, OWNER + 2);
        }
    }

    #[test]
    fn close_rearms_the_cell_of_a_consumer_killed_mid_take() {
        let (t, h, c) = opened(4);
        let q = OffsetQueue::new(&t, &h, &c);
        for v in 1..=3 {
            q.push(OWNER, v).unwrap();
        }
        // The consumer took entry 1 (advanced `head`) and died before
        // re-arming its cell; entry 1 is no longer in the queue.
        assert_eq!(q.take_unarmed(|v| v).map(|(v, _)| v), Some(1));
        assert!(!q.contains(1) && q.contains(2));
        let mut drained = Vec::new();
        q.close(|v| drained.push(v));
        assert_eq!(drained, [2, 3]);
        q.reopen(OWNER);
        // Every cell serves its lap again: the queue fills to capacity.
        assert_serves_a_lap(&q, OWNER);
    }

    #[test]
    fn rearm_keeps_the_waiter_flag() {
        let (t, h, c) = opened(2);
        let q = OffsetQueue::new(&t, &h, &c);
        q.push(OWNER, 1).unwrap();
        q.push(OWNER, 2).unwrap();
        let (v, pos) = q.take_unarmed(|v| v).unwrap();
        assert_eq!(v, 1);
        // Until the cell is re-armed the queue is still full, and a
        // producer can ask to be woken when it is.
        assert_eq!(q.push(OWNER, 3), Err(PushError::Full));
        assert!(q.mark_waiting(OWNER));
        assert!(q.rearm(pos), "the re-arm reports the waiting producer");
        q.push(OWNER, 3).unwrap();
        assert_eq!(q.pop(), Some(2));
        assert_eq!(q.pop(), Some(3));
    }

    /// A producer facing a scribbled cell at `tail` (room's stamp, a stray
    /// value) is told the queue is full and may sleep: it must not spin.
    #[test]
    fn a_scribbled_tail_cell_is_full_and_lets_the_producer_sleep() {
        let (t, h, c) = opened(2);
        let q = OffsetQueue::new(&t, &h, &c);
        q.push(OWNER, 1).unwrap();
        let pos = position_of(t.load(Ordering::Relaxed));
        let cell = &c[(pos % 2) as usize];
        cell.store(pack(pos, 5), Ordering::Relaxed);
        assert_eq!(q.push(OWNER, 2), Err(PushError::Full));
        assert!(q.mark_waiting(OWNER), "sleep, not spin");
        // Real room is still room.
        cell.store(pack(pos, 0), Ordering::Relaxed);
        assert!(!q.mark_waiting(OWNER));
        q.push(OWNER, 2).unwrap();
    }

    #[test]
    fn mpsc_threads_lose_nothing() {
        let (t, h, c) = opened(16);
        let q = OffsetQueue::new(&t, &h, &c);
        const PER: u32 = 20_000;
        let seen = std::thread::scope(|s| {
            for p in 0..3u32 {
                let q = &q;
                s.spawn(move || {
                    for i in 0..PER {
                        let v = p * PER + i + 1;
                        while q.push(OWNER, v).is_err() {
                            std::thread::yield_now();
                        }
                    }
                });
            }
            let mut last = [0u32; 3];
            let mut n = 0;
            while n < 3 * PER {
                if let Some(v) = q.pop() {
                    let p = ((v - 1) / PER) as usize;
                    assert!(v > last[p], "per-producer order broken");
                    last[p] = v;
                    n += 1;
                } else {
                    std::thread::yield_now();
                }
            }
            n
        });
        assert_eq!(seen, 3 * PER);
        assert_eq!(q.pop(), None);
    }
}

#[cfg(all(test, shmbox_loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    /// The generation the models' queues belong to.
    const OWNER: u32 = 1;

    struct Q {
        tail: AtomicU64,
        head: AtomicU64,
        cells: Vec<AtomicU64>,
    }

    fn new_q(cap: usize) -> Arc<Q> {
        let q = Q {
            tail: AtomicU64::new(0),
            head: AtomicU64::new(0),
            cells: (0..cap).map(|_| AtomicU64::new(0)).collect(),
        };
        let view = OffsetQueue::new(&q.tail, &q.head, &q.cells);
        view.init();
        view.reopen(OWNER);
        Arc::new(q)
    }

    /// Two producers and a consumer on a 2-cell queue: every pushed value
    /// is popped exactly once, `Full` only when it really was full.
    #[test]
    fn two_producers_one_consumer() {
        loom::model(|| {
            let q = new_q(2);
            let producers: Vec<_> = (0..2u32)
                .map(|p| {
                    let q = q.clone();
                    loom::thread::spawn(move || {
                        let view = OffsetQueue::new(&q.tail, &q.head, &q.cells);
                        view.push(OWNER, p + 1).is_ok()
                    })
                })
                .collect();
            let view = OffsetQueue::new(&q.tail, &q.head, &q.cells);
            let mut got = Vec::new();
            if let Some(v) = view.pop() {
                got.push(v);
            }
            let pushed: u32 = producers
                .into_iter()
                .map(|h| u32::from(h.join().unwrap()))
                .sum();
            while let Some(v) = view.pop() {
                got.push(v);
            }
            got.sort();
            got.dedup();
            // Capacity 2 and at most 2 pushes: both must succeed.
            assert_eq!(pushed, 2);
            assert_eq!(got, vec![1, 2]);
        });
    }

    /// A producer racing a close: its value is either drained by the close
    /// or refused with `Closed` — never lost, never left behind.
    #[test]
    fn push_races_close() {
        push_races_close_then(None);
    }

    /// A producer addressing the queue's owner races the owner's close and
    /// the next owner's reopen: as above, and its value is never left in
    /// the next owner's queue.
    #[test]
    fn push_races_close_and_reopen() {
        push_races_close_then(Some(OWNER + 1));
    }

    /// A producer pushes to [`OWNER`]'s queue while it is closed, and, with
    /// `next`, reopened for that owner at once.
    fn push_races_close_then(next: Option<u32>) {
        loom::model(move || {
            let q = new_q(2);
            let q2 = q.clone();
            let producer = loom::thread::spawn(move || {
                OffsetQueue::new(&q2.tail, &q2.head, &q2.cells).push(OWNER, 7)
            });
            let view = OffsetQueue::new(&q.tail, &q.head, &q.cells);
            let mut drained = Vec::new();
            view.close(|v| drained.push(v));
            if let Some(owner) = next {
                view.reopen(owner);
            }
            let pushed = producer.join().unwrap();
            match pushed {
                Ok(_) => assert_eq!(drained, [7]),
                Err(e) => {
                    assert_eq!(e, PushError::Closed);
                    assert!(drained.is_empty());
                }
            }
            let owner = match next {
                Some(owner) => {
                    let got = view.pop();
                    assert_eq!(got, None, "the next owner got the earlier owner's entry");
                    owner
                }
                None => {
                    view.close(|_| panic!("entry left behind after close"));
                    view.reopen(OWNER);
                    OWNER
                }
            };
            view.push(owner, 9).unwrap();
            assert_eq!(view.pop(), Some(9));
        });
    }

    /// A full queue: a producer racing the consumer either gets `Full` and
    /// its value is absent, or succeeds and the value is delivered.
    #[test]
    fn full_queue_race() {
        loom::model(|| {
            let q = new_q(2);
            {
                let view = OffsetQueue::new(&q.tail, &q.head, &q.cells);
                view.push(OWNER, 1).unwrap();
                view.push(OWNER, 2).unwrap();
            }
            let q2 = q.clone();
            let producer = loom::thread::spawn(move || {
                OffsetQueue::new(&q2.tail, &q2.head, &q2.cells)
                    .push(OWNER, 3)
                    .is_ok()
            });
            let view = OffsetQueue::new(&q.tail, &q.head, &q.cells);
            assert_eq!(view.pop(), Some(1));
            let ok = producer.join().unwrap();
            assert_eq!(view.pop(), Some(2));
            assert_eq!(view.pop(), if ok { Some(3) } else { None });
            assert_eq!(view.pop(), None);
        });
    }

    /// A value that is neither room nor an entry at any position a model
    /// reaches: what a scribble leaves in a cell.
    const SCRIBBLE: u64 = 0x5c12_1b1e_0000_0042;

    /// The consumer repairs a scribbled cell at `head` (after `filled`
    /// pushes, all lost to the scribble if any) while a producer pushes
    /// `pushes` values: the repair is `expected`, every value the producer
    /// was told it pushed is taken exactly once and in order, none it was
    /// refused is, and the queue works afterwards.
    fn repair_races_producer(filled: u32, pushes: u32, expected: Repaired) {
        loom::model(move || {
            let q = new_q(2);
            let head = {
                let view = OffsetQueue::new(&q.tail, &q.head, &q.cells);
                for v in 0..filled {
                    view.push(OWNER, 100 + v).unwrap();
                }
                let head = q.head.load(Ordering::Relaxed) as u32;
                view.cell(head).store(SCRIBBLE, Ordering::Relaxed);
                head
            };
            let q2 = q.clone();
            let producer = loom::thread::spawn(move || {
                let view = OffsetQueue::new(&q2.tail, &q2.head, &q2.cells);
                (1..=pushes)
                    .filter(|&v| view.push(OWNER, v).is_ok())
                    .collect::<Vec<_>>()
            });
            let view = OffsetQueue::new(&q.tail, &q.head, &q.cells);
            // Nothing a producer does can make the scribble an entry.
            assert_eq!(view.pop(), None);
            let seen = view.corrupt_head().expect("the scribble is seen");
            assert_eq!(seen, SCRIBBLE);
            assert_eq!(view.repair_head(OWNER, seen), Some(expected));
            assert_eq!(view.corrupt_head(), None);
            let mut got = Vec::new();
            got.extend(view.pop());
            let pushed = producer.join().unwrap();
            while let Some(v) = view.pop() {
                got.push(v);
            }
            assert_eq!(got, pushed, "taken once each, in order");
            let lost = match expected {
                Repaired::Emptied => 0,
                Repaired::Skipped => 1,
            };
            assert_eq!(
                q.head.load(Ordering::Relaxed) as u32,
                head.wrapping_add(lost + got.len() as u32)
            );
            view.push(OWNER, 9).unwrap();
            assert_eq!(view.pop(), Some(9));
        });
    }

    /// A scribbled head cell of an empty queue is room again, and a
    /// producer that met the scribble meanwhile was refused (`Full`), not
    /// stuck.
    #[test]
    fn repair_of_an_empty_cell_races_a_producer() {
        repair_races_producer(0, 1, Repaired::Emptied);
    }

    /// A scribbled head cell that held an entry: the entry is lost, `head`
    /// moves past it and the cell is re-armed while a producer fills the
    /// other cell and then, in a second push, wants the repaired one.
    #[test]
    fn repair_of_a_lost_entry_races_a_producer() {
        repair_races_producer(1, 2, Repaired::Skipped);
    }
}
