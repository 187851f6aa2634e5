//! The participant table: claiming a slot under a unique name, looking
//! names up, leaving.
//!
//! Each slot's `state` word packs `generation << 32 | status`. A slot moves
//! `FREE → RESERVED → CLAIMING → ACTIVE → LEAVING → FREE`; the generation
//! is bumped when a slot is reserved, so an [`Address`](crate::Address)
//! (slot, generation) to a departed participant never matches the slot's
//! next occupant.
//!
//! Names are unique among claiming and active slots without a lock: a
//! claimer publishes `CLAIMING` with its name, then scans the table. It
//! backs off if it finds the name `ACTIVE`, or `CLAIMING` in a lower slot;
//! a `CLAIMING` twin in a higher slot is waited for (briefly) until it
//! either backs off or becomes active. Of two concurrent claimers of one
//! name, the later scanner always sees the other, so exactly one wins.

use crate::layout::{Mapped, SlotView};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

pub(crate) const FREE: u32 = 0;
pub(crate) const RESERVED: u32 = 1;
pub(crate) const CLAIMING: u32 = 2;
pub(crate) const ACTIVE: u32 = 3;
pub(crate) const LEAVING: u32 = 4;

/// Longest participant name in bytes.
pub const MAX_PARTICIPANT_NAME: usize = 32;

/// How long a claimer waits for a `CLAIMING` twin to settle.
const TWIN_WAIT: Duration = Duration::from_secs(2);

#[inline]
pub(crate) const fn pack(generation: u32, status: u32) -> u64 {
    ((generation as u64) << 32) | status as u64
}

#[inline]
pub(crate) const fn status(state: u64) -> u32 {
    state as u32
}

#[inline]
pub(crate) const fn generation(state: u64) -> u32 {
    (state >> 32) as u32
}

/// A participant name packed into four words, zero-padded.
pub(crate) fn encode_name(name: &str) -> [u64; 4] {
    debug_assert!(name.len() <= MAX_PARTICIPANT_NAME);
    let mut bytes = [0u8; MAX_PARTICIPANT_NAME];
    bytes[..name.len()].copy_from_slice(name.as_bytes());
    std::array::from_fn(|i| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap()))
}

/// Decodes a stored name; `None` if the bytes are not a valid name.
pub(crate) fn decode_name(words: &[u64; 4]) -> Option<String> {
    let mut bytes = Vec::with_capacity(MAX_PARTICIPANT_NAME);
    for w in words {
        bytes.extend_from_slice(&w.to_le_bytes());
    }
    let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    bytes.truncate(len);
    let s = String::from_utf8(bytes).ok()?;
    crate::name::validate_participant(&s).ok()?;
    Some(s)
}

pub(crate) fn load_name(slot: &SlotView<'_>) -> [u64; 4] {
    std::array::from_fn(|i| slot.name[i].load(Ordering::Relaxed))
}

/// Why a claim failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClaimError {
    NameTaken,
    Full,
}

/// Per-slot liveness locks: a joiner locks a slot before claiming it, so a
/// sweeper never mistakes a slot being claimed for a dead one.
pub(crate) trait SlotLocks {
    /// Takes slot `slot`'s lock; `false` if someone holds it.
    fn try_lock(&self, slot: u32) -> bool;
    /// Releases slot `slot`'s lock.
    fn unlock(&self, slot: u32);
}

/// Claims a free slot under `name`. On success the slot is `CLAIMING`
/// under the returned generation and its lock is held; the caller prepares
/// the mailbox and then calls [`activate`].
pub(crate) fn claim(
    mapped: &Mapped,
    name: &str,
    strategy: u32,
    locks: &dyn SlotLocks,
) -> Result<(u32, u32), ClaimError> {
    let words = encode_name(name);
    let n = mapped.layout.config.max_participants;
    if lookup_words(mapped, &words).is_some() {
        return Err(ClaimError::NameTaken);
    }
    for slot in 0..n {
        let view = mapped.slot(slot);
        if status(view.state.load(Ordering::Acquire)) != FREE || !locks.try_lock(slot) {
            continue;
        }
        let state = view.state.load(Ordering::Acquire);
        let gen = generation(state).wrapping_add(1);
        if status(state) != FREE
            || view
                .state
                .compare_exchange(
                    state,
                    pack(gen, RESERVED),
                    Ordering::Acquire,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            locks.unlock(slot);
            continue;
        }
        for (w, v) in view.name.iter().zip(words) {
            w.store(v, Ordering::Relaxed);
        }
        view.pid.store(crate::sys::pid(), Ordering::Relaxed);
        view.strategy.store(strategy, Ordering::Relaxed);
        view.cpu.store(0, Ordering::Relaxed);
        view.taking.store(0, Ordering::Relaxed);
        view.kept_asleep.store(0, Ordering::Relaxed);
        for c in view.counters {
            c.store(0, Ordering::Relaxed);
        }
        // SYNC POINT: SeqCst publication and scan; see the module docs.
        view.state.store(pack(gen, CLAIMING), Ordering::SeqCst);
        if name_is_contested(mapped, slot, &words) {
            view.state.store(pack(gen, FREE), Ordering::Release);
            locks.unlock(slot);
            return Err(ClaimError::NameTaken);
        }
        return Ok((slot, gen));
    }
    Err(ClaimError::Full)
}

/// Marks a claimed slot active: senders may now address it.
pub(crate) fn activate(mapped: &Mapped, slot: u32, gen: u32) {
    mapped
        .slot(slot)
        .state
        .store(pack(gen, ACTIVE), Ordering::SeqCst);
}

fn name_is_contested(mapped: &Mapped, me: u32, words: &[u64; 4]) -> bool {
    // One deadline for the whole scan: a corrupt table cannot make a join
    // wait TWIN_WAIT once per slot.
    let deadline = Instant::now() + TWIN_WAIT;
    for other in 0..mapped.layout.config.max_participants {
        if other == me {
            continue;
        }
        let view = mapped.slot(other);
        loop {
            let state = view.state.load(Ordering::SeqCst);
            let st = status(state);
            if (st != CLAIMING && st != ACTIVE) || load_name(&view) != *words {
                break;
            }
            if st == ACTIVE || other < me {
                return true;
            }
            // A higher twin still claiming: it will see us and back off, or
            // it scanned before we claimed and will become active.
            if Instant::now() > deadline {
                break;
            }
            std::thread::yield_now();
        }
    }
    false
}

fn lookup_words(mapped: &Mapped, words: &[u64; 4]) -> Option<(u32, u32)> {
    (0..mapped.layout.config.max_participants).find_map(|slot| {
        let view = mapped.slot(slot);
        let state = view.state.load(Ordering::Acquire);
        (status(state) == ACTIVE && load_name(&view) == *words).then_some((slot, generation(state)))
    })
}

/// The active participant called `name`, as (slot, generation).
pub(crate) fn lookup(mapped: &Mapped, name: &str) -> Option<(u32, u32)> {
    lookup_words(mapped, &encode_name(name))
}

/// Whether slot `slot` is held, active, by generation `gen`: its
/// participant has not left (or begun to), and the slot was not reused.
/// `false` for a slot the region does not have.
pub(crate) fn is_active(mapped: &Mapped, slot: u32, gen: u32) -> bool {
    slot < mapped.layout.config.max_participants
        && mapped.slot(slot).state.load(Ordering::Acquire) == pack(gen, ACTIVE)
}

/// Marks a slot whose owner died as leaving, whatever state it was in.
pub(crate) fn mark_leaving(mapped: &Mapped, slot: u32, gen: u32) {
    mapped
        .slot(slot)
        .state
        .store(pack(gen, LEAVING), Ordering::SeqCst);
}

/// First step of leaving: lookups no longer find the participant (senders
/// see it gone once its queue is closed).
pub(crate) fn begin_leave(mapped: &Mapped, slot: u32, gen: u32) {
    let _ = mapped.slot(slot).state.compare_exchange(
        pack(gen, ACTIVE),
        pack(gen, LEAVING),
        Ordering::SeqCst,
        Ordering::Relaxed,
    );
}

/// Last step of leaving: the slot can be claimed again.
pub(crate) fn finish_leave(mapped: &Mapped, slot: u32, gen: u32) {
    let view = mapped.slot(slot);
    for w in view.name {
        w.store(0, Ordering::Relaxed);
    }
    view.state.store(pack(gen, FREE), Ordering::Release);
}
