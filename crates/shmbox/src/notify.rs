//! Park/wake over shared futex words.
//!
//! Two patterns live here:
//!
//! * [`Doorbell`]: a futex word used as a sequence number. A sleeper takes
//!   a ticket (the current value), publishes *where* it sleeps, and waits
//!   while the word still equals its ticket; a waker bumps the word and
//!   issues `FUTEX_WAKE`. The mailbox uses two: the receiver's, rung by the
//!   producer whose push replaces the receiver's `PARKED` mark in the cell
//!   at `head`; and the room doorbell, rung by the receiver when it takes
//!   an entry a blocked sender flagged `WAITER` (see `queue`). Both hand-offs
//!   happen on the queue cell itself, so the fast path has no fence and no
//!   extra load: a sender learns from the cell it publishes into whether
//!   anyone sleeps.
//! * [`EventCount`]: many waiters (loaners waiting for a free chunk) and
//!   many notifiers. A waiter registers in `waiters` (its participant's
//!   bit, so a sweep can remove the registration of one killed while
//!   waiting), reads the `seq` futex word, re-checks its condition and
//!   sleeps on `seq`; a notifier that made progress bumps `seq` and wakes
//!   all, but only when `waiters` is non-zero. Dekker-style: each side
//!   stores, issues a `SeqCst` fence and then reads the other side's
//!   state, so no wake-up is lost.
//!
//! * [`KeepNotice`]: a receiver that goes to sleep keeping a few free
//!   chunks (so that its first loan after waking needs no shared pool)
//!   announces the classes it keeps; a blocking loaner that finds a class
//!   exhausted and registers as a waiter wakes every sleeper announcing
//!   that class (a refused `try_loan` does too, without the handshake: a
//!   later attempt finds what the sleepers gave back),
//!   which then gives its chunks back. Dekker-style again: the sleeper
//!   stores its notice, fences and reads the loaners' `waiters`; the loaner
//!   stores `waiters`, fences and reads the notice. Either the sleeper sees
//!   the loaner (and gives back before sleeping) or the loaner sees the
//!   notice (and rings the sleeper's doorbell, whose ticket the sleeper
//!   took before announcing).
//!
//! Every wait re-checks its condition and takes a timeout.

use crate::sync::{fence, time_left, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Futex wait/wake, behind a trait so loom models and in-process tests can
/// substitute them.
pub(crate) trait Futex {
    /// Sleeps while `*word == expected`, at most `timeout`. May return
    /// spuriously; callers re-check their condition.
    fn wait(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>);
    /// Wakes up to `count` waiters sleeping on `word`.
    fn wake(&self, word: &AtomicU32, count: u32);
}

/// A futex word used as a sequence number (see the module docs).
pub(crate) struct Doorbell<'a> {
    word: &'a AtomicU32,
}

impl<'a> Doorbell<'a> {
    pub(crate) fn new(word: &'a AtomicU32) -> Self {
        Self { word }
    }

    /// The futex word (to prefetch its line).
    #[cfg(not(shmbox_loom))]
    #[inline]
    pub(crate) fn word_ptr(&self) -> *const u8 {
        self.word.as_ptr().cast()
    }

    /// Takes a ticket, *before* publishing where one sleeps.
    #[inline]
    pub(crate) fn ticket(&self) -> u32 {
        // SYNC POINT: acquire pairs with the release bump in `ring`.
        self.word.load(Ordering::Acquire)
    }

    /// Sleeps until rung after `ticket` was taken, or `timeout` passes.
    pub(crate) fn wait<F: Futex>(&self, futex: &F, ticket: u32, timeout: Option<Duration>) {
        futex.wait(self.word, ticket, timeout);
    }

    /// Wakes up to `count` sleepers.
    pub(crate) fn ring<F: Futex>(&self, futex: &F, count: u32) {
        // SYNC POINT: pairs with the acquire load in `ticket`.
        self.word.fetch_add(1, Ordering::Release);
        futex.wake(self.word, count);
    }
}

/// Many waiters, many notifiers: `waiters` has the bit of each
/// participant registered, `seq` is the futex word they sleep on.
pub(crate) struct EventCount<'a> {
    waiters: &'a AtomicU64,
    seq: &'a AtomicU32,
}

impl<'a> EventCount<'a> {
    pub(crate) fn new(waiters: &'a AtomicU64, seq: &'a AtomicU32) -> Self {
        Self { waiters, seq }
    }

    /// Whether anyone is registered.
    #[inline]
    fn has_waiters(&self) -> bool {
        self.waiters.load(Ordering::Relaxed) != 0
    }

    /// Sweep: removes the registration of the dead participant `bit` (one
    /// killed while waiting), which would otherwise make every notifier
    /// bump and wake for ever after. (Not a compare-and-swap from what was
    /// read, as the sweep's other updates are: the participant is dead, so
    /// nobody else sets or clears its bit.)
    pub(crate) fn forget(&self, bit: u64) {
        self.waiters.fetch_and(!bit, Ordering::Relaxed);
    }

    /// As a waiter killed while registered leaves it (for tests).
    #[cfg(all(test, not(shmbox_loom)))]
    pub(crate) fn leave_registered(&self, bit: u64) {
        self.waiters.fetch_or(bit, Ordering::Relaxed);
    }

    /// Waits until `ready()` returns `Some`, or `timeout` passes (then one
    /// last check). `ready` is re-checked after registering, so a
    /// notification between the caller's failed attempt and the sleep is
    /// not lost. Each time it has registered as a waiter and that re-check
    /// failed (after the fence, before sleeping), it calls `registered()`:
    /// whatever that reads is at least as new as what a party that missed
    /// our registration had stored before its own fence (see
    /// [`KeepNotice`]).
    /// `bit` is the waiting participant's (one wait at a time per
    /// participant).
    pub(crate) fn wait_until_with<F: Futex, T>(
        &self,
        futex: &F,
        bit: u64,
        timeout: Option<Duration>,
        mut ready: impl FnMut() -> Option<T>,
        mut registered: impl FnMut(),
    ) -> Option<T> {
        let start = std::time::Instant::now();
        loop {
            if let Some(v) = ready() {
                return Some(v);
            }
            let remaining = match timeout {
                Some(t) => match time_left(t, start.elapsed()) {
                    Some(left) => Some(left),
                    None => return ready(),
                },
                None => None,
            };
            self.waiters.fetch_or(bit, Ordering::Relaxed);
            // Withdrawn however the wait ends, a panic unwinding out of
            // `ready` or `registered` included (a process killed here
            // leaves it to the sweep: see `forget`).
            let registration = Registration { list: self, bit };
            // SYNC POINT: pairs with the fence in `notify`.
            fence(Ordering::SeqCst);
            // SYNC POINT: acquire pairs with the release bump in `notify`, so
            // a waiter that sees a new `seq` also sees the progress behind it.
            let seq = self.seq.load(Ordering::Acquire);
            let got = ready();
            if got.is_none() {
                registered();
                futex.wait(self.seq, seq, remaining);
            }
            drop(registration);
            if got.is_some() {
                return got;
            }
        }
    }

    /// Notifier, after making progress (freeing room or a chunk): wakes all
    /// sleepers. One load when nobody sleeps.
    #[inline]
    pub(crate) fn notify<F: Futex>(&self, futex: &F) {
        // SYNC POINT: pairs with the fence in `wait_until_with`.
        fence(Ordering::SeqCst);
        if self.has_waiters() {
            self.seq.fetch_add(1, Ordering::Release);
            futex.wake(self.seq, u32::MAX);
        }
    }
}

/// A waiter's registration in an [`EventCount`]: its bit, withdrawn when
/// dropped.
struct Registration<'l, 'a> {
    list: &'l EventCount<'a>,
    bit: u64,
}

impl Drop for Registration<'_, '_> {
    fn drop(&mut self) {
        self.list.forget(self.bit);
    }
}

/// The classes a receiver asleep keeps chunks of, as a bitmask in its slot
/// (see the module docs). Only the participant writes its notice; loaners
/// read it.
pub(crate) struct KeepNotice<'a> {
    word: &'a AtomicU32,
}

impl<'a> KeepNotice<'a> {
    pub(crate) fn new(word: &'a AtomicU32) -> Self {
        Self { word }
    }

    /// Sleeper, after taking its doorbell ticket and before sleeping:
    /// announces that it keeps chunks of the classes in `kept`. Returns the
    /// classes it must give back now, because `waiting(class)` says a
    /// loaner already waits for them; those are no longer announced.
    pub(crate) fn announce(&self, kept: u32, waiting: impl Fn(u8) -> bool) -> u32 {
        self.word.store(kept, Ordering::Relaxed);
        // SYNC POINT: pairs with the fence in `EventCount::wait_until_with`
        // of a loaner that reads the notice in `keeps`.
        fence(Ordering::SeqCst);
        let give = (0..32u8)
            .filter(|&class| kept & (1 << class) != 0 && waiting(class))
            .fold(0u32, |give, class| give | 1 << class);
        if give != 0 {
            self.word.store(kept & !give, Ordering::Relaxed);
        }
        give
    }

    /// Awake again (or leaving): no loaner needs to wake us. Returns
    /// whether anything was announced.
    #[cfg_attr(shmbox_loom, allow(dead_code))]
    pub(crate) fn clear(&self) -> bool {
        let announced = self.word.load(Ordering::Relaxed) != 0;
        if announced {
            self.word.store(0, Ordering::Relaxed);
        }
        announced
    }

    /// Loaner, registered as a waiter for `class`: whether this sleeper
    /// announced that it keeps chunks of it.
    pub(crate) fn keeps(&self, class: u8) -> bool {
        self.word.load(Ordering::Relaxed) & (1 << class) != 0
    }
}

#[cfg(all(test, shmbox_loom))]
pub(crate) mod loom_futex {
    //! A futex emulation for loom: the value check and the sleep happen
    //! under one mutex, like the kernel's hash-bucket lock.
    use super::Futex;
    use crate::sync::{AtomicU32, Ordering};
    use loom::sync::{Condvar, Mutex};
    use std::time::Duration;

    #[derive(Default)]
    pub(crate) struct LoomFutex {
        lock: Mutex<()>,
        cond: Condvar,
    }

    impl Futex for LoomFutex {
        fn wait(&self, word: &AtomicU32, expected: u32, _timeout: Option<Duration>) {
            let guard = self.lock.lock().unwrap();
            if word.load(Ordering::SeqCst) == expected {
                drop(self.cond.wait(guard).unwrap());
            }
        }
        fn wake(&self, _word: &AtomicU32, _count: u32) {
            let _guard = self.lock.lock().unwrap();
            self.cond.notify_all();
        }
    }
}

#[cfg(all(test, shmbox_loom))]
mod loom_tests {
    use super::loom_futex::LoomFutex;
    use super::*;
    use crate::sync::AtomicU64;
    use loom::sync::Arc;

    /// The generation the models' mailboxes belong to.
    const OWNER: u32 = 1;

    /// A two-cell mailbox for the doorbell models: queue, doorbell, futex.
    struct Mailbox {
        tail: AtomicU64,
        head: AtomicU64,
        cells: Vec<AtomicU64>,
        bell: AtomicU32,
        futex: LoomFutex,
    }

    impl Mailbox {
        /// An open, empty mailbox holding `entries`.
        fn new(entries: &[u32]) -> Arc<Mailbox> {
            let m = Arc::new(Mailbox {
                tail: AtomicU64::new(0),
                head: AtomicU64::new(0),
                cells: (0..2).map(|_| AtomicU64::new(0)).collect(),
                bell: AtomicU32::new(0),
                futex: LoomFutex::default(),
            });
            let queue = m.queue();
            queue.init();
            queue.reopen(OWNER);
            for &e in entries {
                queue.push(OWNER, e).unwrap();
            }
            m
        }

        fn queue(&self) -> crate::queue::OffsetQueue<'_> {
            crate::queue::OffsetQueue::new(&self.tail, &self.head, &self.cells)
        }

        fn bell(&self) -> Doorbell<'_> {
            Doorbell::new(&self.bell)
        }
    }

    /// The receiver's park handshake never loses a wake-up: a receiver that
    /// marks the cell at `head` PARKED and sleeps is always woken by the
    /// producer whose push replaces the mark.
    #[test]
    fn park_wake_handshake() {
        use crate::queue::Pushed;
        loom::model(|| {
            let m = Mailbox::new(&[]);
            let p = m.clone();
            let producer = loom::thread::spawn(move || {
                if p.queue().push(OWNER, 7) == Ok(Pushed::WakeConsumer) {
                    p.bell().ring(&p.futex, 1);
                }
            });
            let queue = m.queue();
            let got = loop {
                if let Some(v) = queue.pop() {
                    break v;
                }
                let ticket = m.bell().ticket();
                if queue.mark_parked() {
                    m.bell().wait(&m.futex, ticket, None);
                    queue.unmark_parked();
                }
            };
            assert_eq!(got, 7);
            producer.join().unwrap();
        });
    }

    /// A producer blocked on a full queue flags the entry the consumer takes
    /// next and is always woken when the consumer takes it.
    #[test]
    fn room_wake_handshake() {
        loom::model(|| {
            let m = Mailbox::new(&[1, 2]);
            let p = m.clone();
            let producer = loom::thread::spawn(move || {
                let queue = p.queue();
                while queue.push(OWNER, 3).is_err() {
                    let ticket = p.bell().ticket();
                    if queue.mark_waiting(OWNER) {
                        p.bell().wait(&p.futex, ticket, None);
                    }
                }
            });
            let queue = m.queue();
            // The consumer takes the entry, then re-arms its cell, as
            // `Mailbox::try_recv` does.
            let (first, waiter) = queue.take_with(|v| v).unwrap();
            assert_eq!(first, 1);
            if waiter {
                m.bell().ring(&m.futex, u32::MAX);
            }
            producer.join().unwrap();
            assert_eq!(queue.pop(), Some(2));
            assert_eq!(queue.pop(), Some(3));
        });
    }

    /// A loaner waiting for a class that a receiver keeps while asleep
    /// always gets the chunk: either the sleeper sees the loaner before it
    /// sleeps and gives the chunk back, or the loaner sees the sleeper's
    /// notice and wakes it. (Without the ring, or with the notice stored
    /// after the sleeper's check instead of before it, loom finds both
    /// asleep.)
    #[test]
    fn sleeper_gives_back_what_a_loaner_waits_for() {
        loom::model(|| {
            // waiters, seq, free chunks in the pool, notice, doorbell, futex.
            let s = Arc::new((
                AtomicU64::new(0),
                AtomicU32::new(0),
                AtomicU32::new(0),
                AtomicU32::new(0),
                AtomicU32::new(0),
                LoomFutex::default(),
            ));
            let t = s.clone();
            let sleeper = loom::thread::spawn(move || {
                let (pool, notice, bell) = (
                    EventCount::new(&t.0, &t.1),
                    KeepNotice::new(&t.3),
                    Doorbell::new(&t.4),
                );
                // It keeps the only chunk, finds no message and sleeps
                // until it has given the chunk back.
                loop {
                    let ticket = bell.ticket();
                    let waiting = |_| t.0.load(Ordering::Relaxed) != 0;
                    if notice.announce(1, waiting) != 0 {
                        t.2.fetch_add(1, Ordering::Release);
                        pool.notify(&t.5);
                        return;
                    }
                    bell.wait(&t.5, ticket, None);
                }
            });
            let (pool, notice, bell) = (
                EventCount::new(&s.0, &s.1),
                KeepNotice::new(&s.3),
                Doorbell::new(&s.4),
            );
            let take = || (s.2.swap(0, Ordering::Acquire) == 1).then_some(());
            let got = pool.wait_until_with(&s.5, 1, None, take, || {
                if notice.keeps(0) {
                    bell.ring(&s.5, 1);
                }
            });
            assert!(got.is_some());
            sleeper.join().unwrap();
        });
    }

    /// An event-count waiter is woken by a notifier that made progress.
    #[test]
    fn event_count_no_lost_wakeup() {
        loom::model(|| {
            let state = Arc::new((
                AtomicU64::new(0),
                AtomicU32::new(0),
                AtomicU64::new(0),
                LoomFutex::default(),
            ));
            let s = state.clone();
            let notifier = loom::thread::spawn(move || {
                s.2.store(1, Ordering::Relaxed);
                EventCount::new(&s.0, &s.1).notify(&s.3);
            });
            let ec = EventCount::new(&state.0, &state.1);
            let ready = || (state.2.load(Ordering::Relaxed) == 1).then_some(());
            let got = ec.wait_until_with(&state.3, 1, None, ready, || {});
            assert!(got.is_some());
            notifier.join().unwrap();
        });
    }
}
