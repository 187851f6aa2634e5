//! [`Mailbox`]: a participant's handle for loaning, sending and receiving.

use crate::batch::{Batch, Records};
use crate::config::MAX_CLASSES;
use crate::error::{
    Corruption, JoinError, LoanError, RecvError, RecvTimeoutError, SendCopyError, SendError,
    SendTimeoutError, TryLoanError, TryRecvError, TrySendError,
};
use crate::layout::{
    self, BadEntry, ChunkAt, ChunkRef, ChunkView, Counter, Mapped, BATCH_FLAG, COUNTERS,
};
use crate::notify::EventCount;
use crate::queue::{PushError, Pushed};
use crate::region::Region;
use crate::registry::SlotLocks;
use crate::registry::{self, ClaimError};
use crate::sync::spin_hint;
use crate::{sweep, sys};
use rustix::fd::OwnedFd;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long an [`WaitStrategy::Adaptive`] receiver spins before parking.
const ADAPTIVE_SPIN: Duration = Duration::from_micros(50);
/// Retries a blocked sender spins through before it sleeps.
const SEND_SPINS: u32 = 64;
/// Messages counted between copies of the counters to shared memory.
const PUBLISH_EVERY: u32 = 64;
/// Chunks a loan claims at once from a pool of at least `BATCH_MIN_POOL`.
const CLAIM_BATCH: usize = 8;
const BATCH_MIN_POOL: u32 = 128;
/// Receives in a row finding nothing after which a participant gives back
/// the chunks it keeps beyond its share (see `trim_cache_between_messages`).
const IDLE_POLLS: u32 = 256;
/// Chunks per size class a participant keeps for its next loans.
const CACHE_PER_CLASS: usize = 16;
/// How often a blocked sender or loaner checks for dead participants.
const CHECK_EVERY: Duration = Duration::from_millis(20);

/// Slot liveness locks taken through a mailbox's own open file description
/// (no locks for an in-process region).
struct LivenessLock<'a>(Option<&'a OwnedFd>);

impl SlotLocks for LivenessLock<'_> {
    fn try_lock(&self, slot: u32) -> bool {
        self.0.is_none_or(|fd| {
            sys::ofd_try_lock(
                fd,
                sys::LockKind::Exclusive,
                crate::layout::LOCK_SLOTS + u64::from(slot),
            ) == Ok(true)
        })
    }
    fn unlock(&self, slot: u32) {
        if let Some(fd) = self.0 {
            sys::ofd_unlock(fd, crate::layout::LOCK_SLOTS + u64::from(slot));
        }
    }
}

/// How a receiver waits for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u32)]
pub enum WaitStrategy {
    /// Poll continuously: lowest latency, one busy core.
    Spin = 0,
    /// Sleep on a futex in the mailbox: no CPU while idle; a sender pays a
    /// `FUTEX_WAKE` only when the receiver is asleep.
    Park = 1,
    /// Spin for a short window (50 µs), then park. The default.
    #[default]
    Adaptive = 2,
}

impl WaitStrategy {
    pub(crate) fn from_raw(raw: u32) -> WaitStrategy {
        match raw {
            0 => WaitStrategy::Spin,
            1 => WaitStrategy::Park,
            _ => WaitStrategy::Adaptive,
        }
    }
}

/// A participant's address: its slot and the slot's generation. A stale
/// address (its participant left and the slot was reused) is refused by
/// `send`, never delivered to the slot's new occupant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Address {
    pub(crate) slot: u32,
    pub(crate) generation: u32,
}

impl Address {
    /// The participant's slot in the region's table.
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// The slot's generation when the participant joined.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    #[inline]
    pub(crate) fn pack(&self) -> u64 {
        (u64::from(self.slot) << 32) | u64::from(self.generation)
    }

    #[inline]
    pub(crate) fn unpack(word: u64) -> Address {
        Address {
            slot: (word >> 32) as u32,
            generation: word as u32,
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "slot {} (generation {})", self.slot, self.generation)
    }
}

/// A participant of a region: its own mailbox (message list) plus the
/// ability to loan chunks and send them to other participants.
///
/// A `Mailbox` is `Send` but not `Sync`: one thread receives from it at a
/// time. Dropping it leaves the region: its slot is freed and the messages
/// still queued for it are released.
///
/// **Kept chunks.** A chunk a participant frees as its last holder stays
/// with it (up to 16 per size class) for its next loans, so that loans and
/// releases do not touch the shared pool. Receives that find nothing (the
/// first one after a message, then every 16th) give back every chunk of a
/// class somebody is waiting for; once a few hundred receives in a row have
/// found nothing, the participant keeps at most
/// `min(16, count / (2 × max participants))` chunks of a class, so idle
/// participants together never keep more than half of a pool. A receiver
/// that goes to sleep, a blocking loan that finds a class exhausted, and a
/// participant that leaves give back everything they keep.
pub struct Mailbox {
    region: Region,
    /// Our own open file description of the region, holding our slot's
    /// liveness lock until we are dropped (or the kernel drops it for us).
    _liveness: Option<OwnedFd>,
    address: Address,
    packed: u64,
    bit: u64,
    name: String,
    strategy: Cell<WaitStrategy>,
    hints: [Cell<usize>; MAX_CLASSES],
    /// Chunks this participant freed as their last holder and kept, still
    /// carrying its holder bit (so a sweep reclaims them if it dies): the
    /// next loan of the class takes one without touching the shared pool.
    cache: [RefCell<Vec<u32>>; MAX_CLASSES],
    /// Chunks in `cache`, all classes.
    cached: Cell<u32>,
    /// Receives in a row that found nothing.
    empty_polls: Cell<u32>,
    /// Chunks per class `cache` keeps between messages: at most
    /// [`CACHE_PER_CLASS`], and little enough that the caches of all
    /// participants together never hold more than half of a pool.
    keep: [usize; MAX_CLASSES],
    /// This participant's counters; copied to its slot now and then.
    counters: [Cell<u64>; COUNTERS],
    /// Counter updates not yet copied to the slot.
    unpublished: Cell<u32>,
}

/// A receive's outcome for a waiting receive: `None` to keep waiting.
fn received(r: Result<Message<'_>, TryRecvError>) -> Option<Result<Message<'_>, RecvTimeoutError>> {
    match r {
        Ok(msg) => Some(Ok(msg)),
        Err(TryRecvError::Corrupt(c)) => Some(Err(c.into())),
        Err(TryRecvError::Empty) => None,
    }
}

/// Why one delivery attempt failed.
enum Undelivered {
    Full,
    Disconnected,
}

impl Mailbox {
    pub(crate) fn join(
        region: Region,
        name: &str,
        strategy: WaitStrategy,
    ) -> Result<Mailbox, JoinError> {
        let m = region.mapped();
        // Dead participants give their slots, names and chunks back first.
        region.sweep();
        let liveness = match &region.shared.fd {
            Some(fd) => Some(sys::reopen(fd).map_err(|e| JoinError::Io(e.to_string()))?),
            None => None,
        };
        let locks = LivenessLock(liveness.as_ref());
        let (slot, generation) =
            registry::claim(m, name, strategy as u32, &locks).map_err(|e| match e {
                ClaimError::NameTaken => JoinError::NameTaken(name.into()),
                ClaimError::Full => JoinError::Full {
                    max: m.layout.config.max_participants,
                },
            })?;
        let address = Address { slot, generation };
        let mailbox = Mailbox {
            _liveness: liveness,
            address,
            packed: address.pack(),
            bit: 1u64 << slot,
            name: name.into(),
            strategy: Cell::new(strategy),
            hints: Default::default(),
            cache: Default::default(),
            cached: Cell::new(0),
            empty_polls: Cell::new(0),
            keep: std::array::from_fn(|class| {
                m.layout.classes.get(class).map_or(0, |c| {
                    let share = c.count / (2 * m.layout.config.max_participants);
                    (share as usize).min(CACHE_PER_CLASS)
                })
            }),
            counters: Default::default(),
            unpublished: Cell::new(0),
            region: region.clone(),
        };
        // The previous occupant closed the queue when it left; anything
        // still in it is released, then the queue accepts messages again.
        let queue = &mailbox.mapped().mailbox(slot).queue;
        queue.close(|value| mailbox.discard(value));
        queue.reopen();
        registry::activate(mailbox.mapped(), slot, generation);
        Ok(mailbox)
    }

    #[inline]
    fn mapped(&self) -> &Mapped {
        self.region.mapped()
    }

    /// This participant's address, for others to send to.
    pub fn address(&self) -> Address {
        self.address
    }

    /// This participant's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The region this mailbox belongs to.
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// How `recv` waits.
    pub fn wait_strategy(&self) -> WaitStrategy {
        self.strategy.get()
    }

    /// Changes how `recv` waits.
    pub fn set_wait_strategy(&self, strategy: WaitStrategy) {
        self.strategy.set(strategy);
        self.mapped()
            .slot(self.address.slot)
            .strategy
            .store(strategy as u32, Ordering::Relaxed);
    }

    /// Messages waiting in this mailbox.
    pub fn pending(&self) -> usize {
        self.mapped().mailbox(self.address.slot).queue.len() as usize
    }

    // ---- loans -------------------------------------------------------------

    #[inline]
    fn claim(&self, len: usize) -> Result<ChunkRef, TryLoanError> {
        let m = self.mapped();
        let class = m.class_for(len).ok_or(TryLoanError::TooLarge {
            requested: len,
            max: m.layout.config.max_message_size(),
        })?;
        let mut cache = self.cache[class as usize].borrow_mut();
        if cache.is_empty() {
            // From a large pool take a few at once: one bitmap update, and
            // the holders lines fetched side by side.
            let layout = &m.layout.classes[class as usize];
            let batch = if layout.count >= BATCH_MIN_POOL {
                CLAIM_BATCH
            } else {
                1
            };
            let hint = &self.hints[class as usize];
            match m
                .pool(class)
                .try_claim_many(self.bit, hint.get(), batch, &mut cache)
            {
                Some(word) => {
                    hint.set(word);
                    self.cached.set(self.cached.get() + cache.len() as u32);
                }
                None => {
                    return Err(TryLoanError::Exhausted {
                        class_size: layout.size,
                    })
                }
            }
        }
        let index = cache.pop().expect("cache refilled above");
        self.cached.set(self.cached.get() - 1);
        Ok(ChunkRef { class, index })
    }

    fn loan_from(&self, chunk: ChunkRef, len: usize) -> Loan<'_> {
        let at = self.mapped().chunk_at(chunk);
        // The loaner writes the payload next and the header when it sends:
        // the last receiver may still have both lines.
        layout::prefetch_chunk(&at, true);
        Loan {
            mailbox: self,
            chunk,
            header: at.header,
            ptr: at.payload,
            len,
            capacity: at.capacity,
            batch: false,
        }
    }

    /// Loans a chunk of at least `len` bytes from the smallest size class
    /// that fits, without waiting.
    ///
    /// # Examples
    ///
    /// ```
    /// # let region = shmbox::Region::in_process(&shmbox::Config::default())?;
    /// let me = region.join("me")?;
    /// let mut loan = me.try_loan(5)?;
    /// loan.copy_from_slice(b"hello");
    /// me.try_send(loan, &me.address()).map_err(|e| e.to_string())?;
    /// assert_eq!(&*me.try_recv()?, b"hello");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_loan(&self, len: usize) -> Result<Loan<'_>, TryLoanError> {
        self.claim(len).map(|c| self.loan_from(c, len))
    }

    /// Starts a [`Batch`] of small messages in one chunk of at least
    /// `capacity` bytes (the smallest class that fits), without waiting.
    pub fn try_batch(&self, capacity: usize) -> Result<Batch<'_>, TryLoanError> {
        self.try_loan(capacity).map(Batch::new)
    }

    /// Like [`try_batch`](Self::try_batch), waiting for a chunk as
    /// [`loan`](Self::loan) does.
    pub fn batch(&self, capacity: usize) -> Result<Batch<'_>, LoanError> {
        self.loan(capacity).map(Batch::new)
    }

    /// Like [`batch`](Self::batch), waiting at most `timeout`.
    pub fn batch_timeout(
        &self,
        capacity: usize,
        timeout: Duration,
    ) -> Result<Batch<'_>, LoanError> {
        self.loan_timeout(capacity, timeout).map(Batch::new)
    }

    /// Loans a chunk of at least `len` bytes, waiting for one to be released
    /// if the size class is exhausted.
    pub fn loan(&self, len: usize) -> Result<Loan<'_>, LoanError> {
        self.loan_wait(len, None)
    }

    /// Like [`loan`](Self::loan), waiting at most `timeout`.
    pub fn loan_timeout(&self, len: usize, timeout: Duration) -> Result<Loan<'_>, LoanError> {
        self.loan_wait(len, Some(timeout))
    }

    fn loan_wait(&self, len: usize, timeout: Option<Duration>) -> Result<Loan<'_>, LoanError> {
        match self.claim(len) {
            Ok(c) => Ok(self.loan_from(c, len)),
            Err(TryLoanError::TooLarge { requested, max }) => {
                Err(LoanError::TooLarge { requested, max })
            }
            Err(TryLoanError::Exhausted { class_size }) => {
                // Others may be short of what we keep too.
                self.flush_cache();
                let m = self.mapped();
                let class = m.class_for(len).expect("class exists: claim found it");
                // Now and then, return what dead participants hold.
                self.wait_checking(
                    &m.pool_waiters(class),
                    timeout,
                    || self.claim(len).ok(),
                    || {
                        self.region.sweep();
                        self.claim(len).ok()
                    },
                )
                .map(|c| self.loan_from(c, len))
                .ok_or_else(|| {
                    self.count(Counter::Timeouts);
                    LoanError::Timeout { class_size }
                })
            }
        }
    }

    /// Counts a rare event (a refusal or a timeout) and publishes at once.
    fn count(&self, counter: Counter) {
        let c = &self.counters[counter as usize];
        c.set(c.get().wrapping_add(1));
        self.publish_counters();
    }

    /// Counts one message of `bytes` in this process; the shared copy is
    /// refreshed every [`PUBLISH_EVERY`] messages and whenever we go idle,
    /// so the per-message cost is two local adds, not stores to shared
    /// memory.
    #[inline]
    fn tally(&self, messages: Counter, byte_count: Counter, bytes: u64) {
        for (counter, n) in [(messages, 1), (byte_count, bytes)] {
            let c = &self.counters[counter as usize];
            c.set(c.get().wrapping_add(n));
        }
        let pending = self.unpublished.get() + 1;
        self.unpublished.set(pending);
        if pending >= PUBLISH_EVERY {
            self.publish_counters();
        }
    }

    /// Copies this participant's counters to its slot, where `participants`
    /// (and `shmbox info`/`watch`) read them.
    fn publish_counters(&self) {
        let slot = self.mapped().slot(self.address.slot);
        for (shared, local) in slot.counters.iter().zip(&self.counters) {
            shared.store(local.get(), Ordering::Relaxed);
        }
        self.unpublished.set(0);
    }

    /// Gives up this participant's hold on a chunk (`holders` is its
    /// holders word); the last holder returns it to the pool and wakes
    /// blocked loaners.
    #[inline]
    fn release(&self, chunk: ChunkRef, holders: &AtomicU64) {
        let m = self.mapped();
        // Sole holder, and nobody waiting for this class: keep the chunk
        // for our next loan instead of returning it to the shared pool.
        if holders.load(Ordering::Relaxed) == self.bit && m.pool_waiters(chunk.class).waiters() == 0
        {
            let mut cache = self.cache[chunk.class as usize].borrow_mut();
            if cache.len() >= CACHE_PER_CLASS {
                // Full: give the older half back in one go.
                self.give_back(chunk.class, &mut cache, CACHE_PER_CLASS / 2);
            }
            cache.push(chunk.index);
            self.cached.set(self.cached.get() + 1);
            return;
        }
        sweep::release(m, &self.region.shared.futex, chunk, self.bit);
    }

    /// Returns the `n` oldest kept chunks of `class` to the shared pool in
    /// one go, and wakes loaners waiting for the class if that freed any.
    fn give_back(&self, class: u8, cache: &mut Vec<u32>, n: usize) {
        let m = self.mapped();
        if m.pool(class).release_many(&cache[..n], self.bit) > 0 {
            m.pool_waiters(class).notify(&self.region.shared.futex);
        }
        cache.drain(..n);
        self.cached.set(self.cached.get() - n as u32);
    }

    /// Returns every cached chunk to the shared pool (before we sleep, so
    /// nobody waits for chunks we are not using).
    fn flush_cache(&self) {
        self.trim_cache(|_| 0);
    }

    /// Between messages (called by receives that found nothing: the first
    /// after a message, then every 16th; `idle` counts them all): gives
    /// back every chunk of a class somebody is waiting for; once
    /// [`IDLE_POLLS`] receives in a row have found nothing, also keeps at
    /// most [`keep`](Self::keep) chunks per class. (A round trip sees a
    /// few empty polls per message and keeps its chunks; a receiver with
    /// nothing to do gives them back within microseconds.)
    fn trim_cache_between_messages(&self, idle: u32) {
        let m = self.mapped();
        self.trim_cache(|class| {
            if m.pool_waiters(class).waiters() != 0 {
                0
            } else if idle >= IDLE_POLLS {
                self.keep[class as usize]
            } else {
                CACHE_PER_CLASS
            }
        });
    }

    /// Returns cached chunks to the shared pool, oldest first, until each
    /// class keeps at most `keep(class)`.
    fn trim_cache(&self, keep: impl Fn(u8) -> usize) {
        if self.cached.get() == 0 {
            return;
        }
        for (class, cache) in self.cache.iter().enumerate() {
            let mut cache = cache.borrow_mut();
            if cache.is_empty() {
                continue;
            }
            let keep = keep(class as u8);
            if cache.len() > keep {
                let excess = cache.len() - keep;
                self.give_back(class as u8, &mut cache, excess);
            }
        }
    }

    /// Waits on `list` until `ready` gives a value or `timeout` passes;
    /// every [`CHECK_EVERY`] it runs `check` (liveness checks and sweeps,
    /// which cost syscalls and so stay off the fast path).
    fn wait_checking<T>(
        &self,
        list: &EventCount<'_>,
        timeout: Option<Duration>,
        mut ready: impl FnMut() -> Option<T>,
        mut check: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        let start = Instant::now();
        loop {
            let slice = match timeout {
                Some(t) => t.saturating_sub(start.elapsed()).min(CHECK_EVERY),
                None => CHECK_EVERY,
            };
            if let Some(v) = list.wait_until(&self.region.shared.futex, Some(slice), &mut ready) {
                return Some(v);
            }
            if let Some(v) = check() {
                return Some(v);
            }
            if timeout.is_some_and(|t| start.elapsed() >= t) {
                return None;
            }
        }
    }

    // ---- sending -----------------------------------------------------------

    /// One delivery attempt: hand `loan`'s chunk to `to` by storing its
    /// entry (class and index) in `to`'s message list.
    #[inline]
    fn deliver(&self, loan: &Loan<'_>, to: &Address) -> Result<(), Undelivered> {
        let m = self.mapped();
        if to.slot >= m.layout.config.max_participants
            || !registry::is_active(m, to.slot, to.generation)
        {
            return Err(Undelivered::Disconnected);
        }
        let rx = m.mailbox(to.slot);
        // The receiver has the cell we are about to fill (it polls it):
        // start taking it over now, while the header is written.
        layout::prefetch_write(rx.queue.tail_cell().as_ptr().cast());
        let chunk = &loan.header;
        let kind = if loan.batch { BATCH_FLAG } else { 0 };
        chunk.len.store(loan.len as u64 | kind, Ordering::Relaxed);
        chunk.sender.store(self.packed, Ordering::Relaxed);
        chunk.dest.store(to.pack(), Ordering::Relaxed);
        let rx_bit = 1u64 << to.slot;
        let to_self = rx_bit == self.bit;
        // The receiver becomes a holder before the offset is published, so
        // at every instant some live or sweepable bit owns the chunk. The
        // receiver clears our bit when it takes the message: after the
        // publishing CAS the sender touches nothing.
        if !to_self {
            chunk.holders.fetch_or(rx_bit, Ordering::Relaxed);
        }
        match rx.queue.push(m.encode(loan.chunk)) {
            Ok(pushed) => {
                if pushed == Pushed::WakeConsumer {
                    rx.parker.ring(&self.region.shared.futex, 1);
                }
                self.tally(Counter::Sent, Counter::BytesSent, loan.len as u64);
                Ok(())
            }
            Err(e) => {
                if !to_self {
                    chunk.holders.fetch_and(!rx_bit, Ordering::Relaxed);
                }
                Err(match e {
                    PushError::Full => Undelivered::Full,
                    PushError::Closed => Undelivered::Disconnected,
                })
            }
        }
    }

    fn send_wait(
        &self,
        loan: &Loan<'_>,
        to: &Address,
        timeout: Option<Duration>,
    ) -> Result<(), Undelivered> {
        match self.deliver(loan, to) {
            Err(Undelivered::Full) => {}
            other => return other,
        }
        for _ in 0..SEND_SPINS {
            spin_hint();
            match self.deliver(loan, to) {
                Err(Undelivered::Full) => {}
                other => return other,
            }
        }
        let m = self.mapped();
        let rx = m.mailbox(to.slot);
        let start = Instant::now();
        let mut checked = start;
        loop {
            let slice = match timeout {
                Some(t) => match t.checked_sub(start.elapsed()) {
                    Some(left) if !left.is_zero() => left.min(CHECK_EVERY),
                    _ => return Err(Undelivered::Full),
                },
                None => CHECK_EVERY,
            };
            // Flag the entry the receiver takes next, then sleep until it
            // rings the room doorbell on taking it.
            let ticket = rx.room.ticket();
            if rx.queue.mark_waiting() {
                rx.room.wait(&self.region.shared.futex, ticket, Some(slice));
            }
            match self.deliver(loan, to) {
                Err(Undelivered::Full) => {}
                other => return other,
            }
            // Now and then, make sure the receiver is still alive.
            if checked.elapsed() >= CHECK_EVERY {
                checked = Instant::now();
                if self.region.is_dead(to.slot) {
                    self.region.sweep();
                }
            }
        }
    }

    /// Sends `loan` to `to` without waiting. On failure the loan comes back
    /// inside the error: nothing is lost.
    pub fn try_send<'m>(&self, loan: Loan<'m>, to: &Address) -> Result<(), TrySendError<'m>> {
        debug_assert!(
            std::ptr::eq(loan.mailbox, self),
            "loan sent from another mailbox"
        );
        let mut result = self.deliver(&loan, to);
        if matches!(result, Err(Undelivered::Full)) && self.region.is_dead(to.slot) {
            // A full mailbox may be a dead receiver's: reclaim it and say so.
            self.region.sweep();
            result = self.deliver(&loan, to);
        }
        match result {
            Ok(()) => {
                loan.consume();
                Ok(())
            }
            Err(Undelivered::Full) => {
                self.count(Counter::Full);
                Err(TrySendError::Full(loan))
            }
            Err(Undelivered::Disconnected) => Err(TrySendError::Disconnected(loan)),
        }
    }

    /// Sends `loan` to `to`, waiting while its mailbox is full.
    pub fn send<'m>(&self, loan: Loan<'m>, to: &Address) -> Result<(), SendError<'m>> {
        debug_assert!(
            std::ptr::eq(loan.mailbox, self),
            "loan sent from another mailbox"
        );
        match self.send_wait(&loan, to, None) {
            Ok(()) => {
                loan.consume();
                Ok(())
            }
            // Without a timeout the wait only ends in success or disconnection.
            Err(_) => Err(SendError::Disconnected(loan)),
        }
    }

    /// Sends `loan` to `to`, waiting at most `timeout` for room.
    pub fn send_timeout<'m>(
        &self,
        loan: Loan<'m>,
        to: &Address,
        timeout: Duration,
    ) -> Result<(), SendTimeoutError<'m>> {
        debug_assert!(
            std::ptr::eq(loan.mailbox, self),
            "loan sent from another mailbox"
        );
        match self.send_wait(&loan, to, Some(timeout)) {
            Ok(()) => {
                loan.consume();
                Ok(())
            }
            Err(Undelivered::Full) => {
                self.count(Counter::Timeouts);
                Err(SendTimeoutError::Timeout(loan))
            }
            Err(Undelivered::Disconnected) => Err(SendTimeoutError::Disconnected(loan)),
        }
    }

    /// Copies `data` into a loaned chunk and sends it, waiting for a chunk
    /// and for room as needed.
    pub fn send_copy(&self, data: &[u8], to: &Address) -> Result<(), SendCopyError> {
        let mut loan = self.loan(data.len()).map_err(|e| match e {
            LoanError::TooLarge { requested, max } => SendCopyError::TooLarge { requested, max },
            LoanError::Timeout { .. } => unreachable!("loan without timeout does not time out"),
        })?;
        loan.copy_from_slice(data);
        self.send(loan, to).map_err(|_| SendCopyError::Disconnected)
    }

    // ---- receiving ---------------------------------------------------------

    /// Takes the next message without waiting.
    pub fn try_recv(&self) -> Result<Message<'_>, TryRecvError> {
        let m = self.mapped();
        let mailbox = m.mailbox(self.address.slot);
        let taking = m.slot(self.address.slot).taking;
        // Entries this call may skip (addressed to an earlier occupant of
        // our slot, or reclaimed by a sweep) before it reports `Empty`: a
        // participant that keeps pushing such entries cannot keep a `try_`
        // call going for ever.
        for _ in 0..m.layout.config.mailbox_capacity {
            // Announce the entry before it leaves the queue, so a sweep never
            // finds a message we are receiving in neither place. The chunk is
            // located once, and its lines start moving here now, while the
            // cell is re-armed.
            let Some((decoded, room)) = mailbox.queue.take_with(|v| {
                taking.store(v, Ordering::Relaxed);
                let at = m.decode(v).map(|chunk| m.chunk_at(chunk));
                if let Ok(at) = &at {
                    layout::prefetch_chunk(at, false);
                }
                at
            }) else {
                // Housekeeping on the first empty poll after a message and
                // on every 16th after that, not on each poll of a spin.
                let idle = self.empty_polls.get().wrapping_add(1);
                self.empty_polls.set(idle);
                if idle % 16 == 1 {
                    self.trim_cache_between_messages(idle);
                    if self.unpublished.get() != 0 {
                        self.publish_counters();
                    }
                }
                return Err(TryRecvError::Empty);
            };
            // `take_with` re-armed the cell at once: a sender may be
            // waiting for exactly this room.
            if room {
                mailbox.room.ring(&self.region.shared.futex, u32::MAX);
            }
            self.empty_polls.set(0);
            let accepted = self.accept(decoded);
            taking.store(0, Ordering::Release);
            if let Some(message) = accepted? {
                return Ok(message);
            }
        }
        Err(TryRecvError::Empty)
    }

    /// Releases an entry nobody will read (a queue being closed).
    fn discard(&self, value: u32) {
        sweep::discard(self.mapped(), &self.region.shared.futex, value, self.bit);
    }

    /// Validates a value popped from our message list. `Ok(None)` for an
    /// entry that is not ours to read: one addressed to an earlier occupant
    /// of our slot (released), or one a sweep has reclaimed (skipped).
    #[inline]
    fn accept<'a>(
        &'a self,
        decoded: Result<ChunkAt<'a>, BadEntry>,
    ) -> Result<Option<Message<'a>>, Corruption> {
        let m = self.mapped();
        let at = decoded.map_err(|e| Corruption {
            reason: e.to_string(),
        })?;
        let header = at.header;
        let sender = Address::unpack(header.sender.load(Ordering::Relaxed));
        if !sweep::take_over_from(m, header.holders, sender, self.bit) {
            return Ok(None);
        }
        if header.dest.load(Ordering::Relaxed) != self.packed {
            self.release(at.r, header.holders);
            return Ok(None);
        }
        let word = header.len.load(Ordering::Relaxed);
        let (len, batch) = (word & !BATCH_FLAG, word & BATCH_FLAG != 0);
        if len > at.capacity as u64 {
            self.release(at.r, header.holders);
            return Err(Corruption {
                reason: format!(
                    "message length {len} exceeds its chunk's {} bytes",
                    at.capacity
                ),
            });
        }
        self.tally(Counter::Received, Counter::BytesReceived, len);
        Ok(Some(Message {
            mailbox: self,
            chunk: at.r,
            holders: header.holders,
            ptr: at.payload,
            len: len as usize,
            sender,
            batch,
        }))
    }

    /// Waits for the next message using this mailbox's [`WaitStrategy`].
    pub fn recv(&self) -> Result<Message<'_>, RecvError> {
        self.recv_wait(None).map_err(|e| match e {
            RecvTimeoutError::Corrupt(c) => RecvError::Corrupt(c),
            RecvTimeoutError::Timeout => unreachable!("recv without timeout does not time out"),
        })
    }

    /// Waits at most `timeout` for the next message.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Message<'_>, RecvTimeoutError> {
        let r = self.recv_wait(Some(timeout));
        if matches!(r, Err(RecvTimeoutError::Timeout)) {
            self.count(Counter::Timeouts);
        }
        r
    }

    fn recv_wait(&self, timeout: Option<Duration>) -> Result<Message<'_>, RecvTimeoutError> {
        // A message already waiting costs no clock read.
        if let Some(r) = received(self.try_recv()) {
            return r;
        }
        let start = Instant::now();
        let remaining = || match timeout {
            None => Ok(None),
            Some(t) => match t.checked_sub(start.elapsed()) {
                Some(r) if !r.is_zero() => Ok(Some(r)),
                _ => Err(RecvTimeoutError::Timeout),
            },
        };
        let strategy = self.strategy.get();
        let mailbox = self.mapped().mailbox(self.address.slot);
        let mut polls = 0u32;
        loop {
            polls = polls.wrapping_add(1);
            // The clock is read once every 64 polls, not on every one.
            let spinning = match strategy {
                WaitStrategy::Spin => true,
                WaitStrategy::Park => false,
                WaitStrategy::Adaptive => polls % 64 != 0 || start.elapsed() < ADAPTIVE_SPIN,
            };
            if spinning {
                if polls % 256 == 0 {
                    remaining()?;
                }
                spin_hint();
            } else {
                let left = remaining()?;
                // Going to sleep: give back every chunk we keep. Then mark
                // the cell we wait on, and sleep until a sender fills it.
                self.flush_cache();
                let ticket = mailbox.parker.ticket();
                if mailbox.queue.mark_parked() {
                    mailbox.parker.wait(&self.region.shared.futex, ticket, left);
                    mailbox.queue.unmark_parked();
                } else if let Some(cell) = mailbox.queue.corrupt_head() {
                    // Neither empty nor an entry: polling it would spin for
                    // ever.
                    return Err(RecvTimeoutError::Corrupt(Corruption {
                        reason: format!("mailbox cell {cell:#x} is neither empty nor an entry"),
                    }));
                }
            }
            if let Some(r) = received(self.try_recv()) {
                return r;
            }
        }
    }

    /// Releases every chunk that still carries our holder bit: orphans of
    /// sends that never completed, and anything a racing sender marked for
    /// us before our queue closed.
    fn release_all_held(&self) {
        let m = self.mapped();
        for class in 0..m.layout.classes.len() as u8 {
            if m.pool(class).release_all(self.bit) > 0 {
                m.pool_waiters(class).notify(&self.region.shared.futex);
            }
        }
    }
}

impl fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailbox")
            .field("name", &self.name)
            .field("address", &self.address)
            .finish()
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        let m = self.mapped();
        let Address { slot, generation } = self.address;
        registry::begin_leave(m, slot, generation);
        let mailbox = m.mailbox(slot);
        mailbox.queue.close(|value| self.discard(value));
        // Blocked senders wake up and see that we left.
        mailbox.room.ring(&self.region.shared.futex, u32::MAX);
        self.release_all_held();
        registry::finish_leave(m, slot, generation);
    }
}

/// A chunk of the message buffer loaned to one participant: write the
/// message into it in place, then send it. Dropping an unsent loan returns
/// the chunk to the pool.
pub struct Loan<'m> {
    mailbox: &'m Mailbox,
    chunk: ChunkRef,
    header: ChunkView<'m>,
    ptr: *mut u8,
    len: usize,
    capacity: usize,
    batch: bool,
}

impl Loan<'_> {
    /// Bytes this chunk can hold (its size class).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Shortens the message to `len` bytes (no effect if already shorter).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Lengthens or shortens the message to `len` bytes, at most
    /// [`capacity`](Self::capacity); returns the new length.
    pub fn resize(&mut self, len: usize) -> usize {
        self.len = len.min(self.capacity);
        self.len
    }

    /// Whether this loan carries a [`Batch`](crate::Batch) of records.
    pub fn is_batch(&self) -> bool {
        self.batch
    }

    pub(crate) fn set_batch(&mut self) {
        self.batch = true;
    }

    fn consume(self) {
        let _ = ManuallyDrop::new(self);
    }
}

impl Deref for Loan<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr..ptr+len` lies inside our chunk's payload (len <=
        // capacity) and our holder bit makes this participant the chunk's
        // only user until it is sent.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl DerefMut for Loan<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`; `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for Loan<'_> {
    fn drop(&mut self) {
        self.mailbox.release(self.chunk, self.header.holders);
    }
}

impl fmt::Debug for Loan<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loan")
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .finish()
    }
}

/// A received message, read in place in the shared buffer. Dropping it
/// releases the chunk.
pub struct Message<'m> {
    mailbox: &'m Mailbox,
    chunk: ChunkRef,
    holders: &'m AtomicU64,
    ptr: *const u8,
    len: usize,
    sender: Address,
    batch: bool,
}

impl Message<'_> {
    /// Who sent it; send a reply to this address.
    pub fn sender(&self) -> Address {
        self.sender
    }

    /// Whether it is a [`Batch`](crate::Batch) of records (its bytes are
    /// then the records' headers and bytes; read them with
    /// [`records`](Self::records)).
    pub fn is_batch(&self) -> bool {
        self.batch
    }

    /// Its records, in order: those of a batch, or the whole message as
    /// one record if it was sent on its own.
    pub fn records(&self) -> Records<'_> {
        Records::new(self)
    }
}

impl Deref for Message<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `accept` checked `len` against the chunk's capacity, and our
        // holder bit keeps the chunk from being loaned again until we drop.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for Message<'_> {
    fn drop(&mut self) {
        self.mailbox.release(self.chunk, self.holders);
    }
}

impl fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("len", &self.len)
            .field("sender", &self.sender)
            .finish()
    }
}
