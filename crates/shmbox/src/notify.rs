//! Park/wake over a shared futex word.
//!
//! Two patterns live here:
//!
//! * [`Parker`]: the handshake between one receiver and any number of
//!   senders. The receiver announces it is about to sleep by storing `1` in
//!   the mailbox's futex word, re-checks its queue, then waits. A sender pays
//!   one load of that word after publishing; only when it reads `1` does it
//!   swap it back to `0` and issue `FUTEX_WAKE`.
//! * [`EventCount`]: many waiters (senders waiting for room in a mailbox,
//!   loaners waiting for a free chunk) and many notifiers. A waiter registers
//!   in `waiters`, reads the `seq` futex word, re-checks its condition and
//!   sleeps on `seq`; a notifier that made progress bumps `seq` and wakes all,
//!   but only when `waiters` is non-zero.
//!
//! Both are Dekker-style: each side stores its own flag, issues a `SeqCst`
//! fence and then reads the other side's state, so at least one side sees
//! the other and no wake-up is lost. Every wait re-checks its condition and
//! takes a timeout.

use crate::sync::{fence, AtomicU32, Ordering};
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

/// Value of the parker word while the receiver is (about to be) asleep.
const PARKED: u32 = 1;

/// The receiver side of a mailbox's park/wake handshake.
pub(crate) struct Parker<'a> {
    word: &'a AtomicU32,
}

impl<'a> Parker<'a> {
    pub(crate) fn new(word: &'a AtomicU32) -> Self {
        Self { word }
    }

    /// Receiver: sleeps until `ready()` may have become true or `timeout`
    /// passes. Returns without sleeping when `ready()` already holds.
    pub(crate) fn park<F: Futex>(
        &self,
        futex: &F,
        timeout: Option<Duration>,
        ready: impl Fn() -> bool,
    ) {
        self.word.store(PARKED, Ordering::Relaxed);
        // SYNC POINT: pairs with the fence in `unpark` — either we see the
        // sender's published item, or the sender sees PARKED and wakes us.
        fence(Ordering::SeqCst);
        if !ready() {
            futex.wait(self.word, PARKED, timeout);
        }
        self.word.store(0, Ordering::Relaxed);
    }

    /// Whether the receiver has announced it is parked (for inspection).
    #[cfg_attr(shmbox_loom, allow(dead_code))]
    pub(crate) fn is_parked(&self) -> bool {
        self.word.load(Ordering::Relaxed) == PARKED
    }

    /// Sender, after publishing an item: wakes the receiver if it announced
    /// it is parking. One load when nobody sleeps.
    #[inline]
    pub(crate) fn unpark<F: Futex>(&self, futex: &F) {
        // SYNC POINT: pairs with the fence in `park`.
        fence(Ordering::SeqCst);
        if self.word.load(Ordering::Relaxed) == PARKED
            && self.word.swap(0, Ordering::Relaxed) == PARKED
        {
            futex.wake(self.word, 1);
        }
    }
}

/// Many waiters, many notifiers: `waiters` counts sleepers, `seq` is the
/// futex word they sleep on.
pub(crate) struct EventCount<'a> {
    waiters: &'a AtomicU32,
    seq: &'a AtomicU32,
}

impl<'a> EventCount<'a> {
    pub(crate) fn new(waiters: &'a AtomicU32, seq: &'a AtomicU32) -> Self {
        Self { waiters, seq }
    }

    /// Waits until `ready()` returns `Some`, or `timeout` passes (then one
    /// last check). `ready` is re-checked after registering, so a
    /// notification between the caller's failed attempt and the sleep is
    /// not lost.
    pub(crate) fn wait_until<F: Futex, T>(
        &self,
        futex: &F,
        timeout: Option<Duration>,
        mut ready: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        let start = std::time::Instant::now();
        loop {
            if let Some(v) = ready() {
                return Some(v);
            }
            let remaining = match timeout {
                Some(t) => match t.checked_sub(start.elapsed()) {
                    Some(r) if !r.is_zero() => Some(r),
                    _ => return ready(),
                },
                None => None,
            };
            self.waiters.fetch_add(1, Ordering::Relaxed);
            // SYNC POINT: pairs with the fence in `notify`.
            fence(Ordering::SeqCst);
            // SYNC POINT: acquire pairs with the release bump in `notify`, so
            // a waiter that sees a new `seq` also sees the progress behind it.
            let seq = self.seq.load(Ordering::Acquire);
            let got = ready();
            if got.is_none() {
                futex.wait(self.seq, seq, remaining);
            }
            self.waiters.fetch_sub(1, Ordering::Relaxed);
            if got.is_some() {
                return got;
            }
        }
    }

    /// Number of registered sleepers.
    #[cfg_attr(shmbox_loom, allow(dead_code))]
    #[inline]
    pub(crate) fn waiters(&self) -> u32 {
        self.waiters.load(Ordering::Relaxed)
    }

    /// Notifier, after making progress (freeing room or a chunk): wakes all
    /// sleepers. One load when nobody sleeps.
    #[inline]
    pub(crate) fn notify<F: Futex>(&self, futex: &F) {
        // SYNC POINT: pairs with the fence in `wait_until`.
        fence(Ordering::SeqCst);
        if self.waiters.load(Ordering::Relaxed) != 0 {
            self.seq.fetch_add(1, Ordering::Release);
            futex.wake(self.seq, u32::MAX);
        }
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

    /// The park/wake handshake never loses a wake-up: a receiver that parks
    /// (no timeout) always sees the item a sender publishes.
    #[test]
    fn park_wake_handshake() {
        loom::model(|| {
            let state = Arc::new((AtomicU32::new(0), AtomicU64::new(0), LoomFutex::default()));
            let s = state.clone();
            let sender = loom::thread::spawn(move || {
                s.1.store(42, Ordering::Relaxed);
                Parker::new(&s.0).unpark(&s.2);
            });
            let parker = Parker::new(&state.0);
            while state.1.load(Ordering::Relaxed) == 0 {
                parker.park(&state.2, None, || state.1.load(Ordering::Relaxed) != 0);
            }
            sender.join().unwrap();
        });
    }

    /// An event-count waiter is woken by a notifier that made progress.
    #[test]
    fn event_count_no_lost_wakeup() {
        loom::model(|| {
            let state = Arc::new((
                AtomicU32::new(0),
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
            let got = ec.wait_until(&state.3, None, || {
                (state.2.load(Ordering::Relaxed) == 1).then_some(())
            });
            assert!(got.is_some());
            notifier.join().unwrap();
        });
    }
}
