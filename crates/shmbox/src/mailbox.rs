//! [`Mailbox`]: a participant's handle for loaning, sending and receiving.

use crate::batch::{Batch, Records};
use crate::config::{MAX_CLASSES, MAX_PARTICIPANTS};
use crate::error::{
    Corruption, JoinError, LoanError, RecvError, RecvTimeoutError, SendCopyError, SendError,
    SendTimeoutError, TryLoanError, TryRecvError, TrySendError,
};
use crate::layout::{self, ChunkAt, ChunkRef, ChunkView, Counter, Mapped, BATCH_FLAG, COUNTERS};
use crate::notify::{EventCount, KeepNotice};
use crate::queue::{PushError, Pushed, Repaired};
use crate::region::Region;
use crate::registry::SlotLocks;
use crate::registry::{self, ClaimError};
use crate::sync::{spin_hint, time_left};
use crate::{sweep, sys};
use rustix::fd::OwnedFd;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long an [`WaitStrategy::Adaptive`] receiver spins before parking.
const ADAPTIVE_SPIN: Duration = Duration::from_micros(50);
/// How often a send that keeps finding a mailbox full checks whether its
/// receiver died.
const FULL_CHECK_EVERY: Duration = Duration::from_millis(1);
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
/// The longest a receive sleeps before it looks at its mailbox again,
/// rung or not (a sender killed between publishing and ringing never
/// rings).
const PARK_SLICE: Duration = Duration::from_millis(100);
/// How often a participant refused chunks of a class asks the others to
/// give back what they keep of it (see `Mailbox::ask_keepers`).
const ASK_KEEPERS_EVERY: Duration = Duration::from_millis(1);
/// How often a participant that nothing else makes sweep (a refused
/// `try_loan`, an idle receive while loaners wait) looks for the dead.
const DEAD_CHECK_EVERY: Duration = Duration::from_millis(100);

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
    /// Sleep on a futex in the mailbox: almost no CPU while idle (the
    /// receiver looks at its mailbox every 100 ms even if nobody woke it,
    /// in case a sender was killed between sending and waking it); a sender
    /// pays a `FUTEX_WAKE` only when the receiver is asleep.
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

/// A participant's address: its slot and the slot's generation, in one
/// region. A stale address (its participant left and the slot was reused)
/// is refused by `send`, never delivered to the slot's new occupant. An
/// address is only good in the region it came from: sending to it
/// through another region's mailbox panics (see [`Mailbox::send`]),
/// however many handles of that one region the process has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Address {
    pub(crate) slot: u32,
    pub(crate) generation: u32,
    /// The region's instance (drawn at random when it was created).
    pub(crate) region: u32,
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

    /// The slot of the address [`pack`](Self::pack) made `word` of.
    #[inline]
    pub(crate) fn slot_of(word: u64) -> u32 {
        (word >> 32) as u32
    }

    /// The address [`pack`](Self::pack) made `word` of, in region
    /// instance `region`.
    #[inline]
    pub(crate) fn unpack(word: u64, region: u32) -> Address {
        Address {
            slot: Self::slot_of(word),
            generation: word as u32,
            region,
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
/// going to sleep keeps that share too, so that its first loan after
/// waking needs no shared pool, and says so in its slot: a loan that
/// finds a class exhausted wakes such sleepers, which give back what they
/// keep of it (a blocking loan waits for that; a refused `try_loan` lets a
/// later attempt find it), and participants awake give it back at their
/// next receive that finds nothing. A sender that goes to sleep, a
/// blocking loan that finds a class exhausted, and a participant that
/// leaves give back everything they keep. A participant awake that stops
/// calling in (busy elsewhere) keeps what it kept until it comes back;
/// [`give_back_kept`](Self::give_back_kept) returns it at once.
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
    cache: Kept,
    /// Where a refill from the shared pool lands first.
    refill: RefCell<Vec<u32>>,
    /// Receives in a row that found nothing.
    empty_polls: Cell<u32>,
    /// Why the last take gave no message (see `take_one`).
    refusal: Cell<Refusal>,
    /// When a `try_send` last checked each slot's receiver for liveness
    /// after finding its mailbox full.
    liveness_checked: [Cell<Option<Instant>>; MAX_PARTICIPANTS as usize],
    /// Per class, the count of refused loans when we last looked (see
    /// [`Mapped::loans_refused`] and `refusals_moved`).
    refused_seen: [Cell<u32>; MAX_CLASSES],
    /// Per class, when a refused loan of ours last asked keepers for
    /// chunks of it (see `ask_keepers`).
    keepers_asked: [Cell<Option<Instant>>; MAX_CLASSES],
    /// When [`sweep_the_dead_now_and_then`](Self::sweep_the_dead_now_and_then) last looked.
    dead_checked: Cell<Option<Instant>>,
    /// The CPU last written to our slot (see `note_cpu`).
    cpu: Cell<u32>,
    /// Whether we received a message since our last send (see
    /// `hand_over`).
    received_since_send: Cell<bool>,
    /// Chunks per class `cache` keeps between messages: at most
    /// [`CACHE_PER_CLASS`], and little enough that the caches of all
    /// participants together never hold more than half of a pool.
    keep: [usize; MAX_CLASSES],
    /// This participant's counters; copied to its slot now and then.
    counters: [Cell<u64>; COUNTERS],
    /// Counter updates not yet copied to the slot.
    unpublished: Cell<u32>,
}

/// The chunks a participant keeps, per class: a stack (the chunk freed
/// last is loaned first, its lines still in this core's cache), oldest at
/// the bottom. Local to the participant, so plain cells.
#[derive(Default)]
struct Kept {
    chunks: [[Cell<u32>; CACHE_PER_CLASS]; MAX_CLASSES],
    lens: [Cell<u8>; MAX_CLASSES],
}

impl Kept {
    #[inline]
    fn len(&self, class: u8) -> usize {
        usize::from(self.lens[class as usize].get())
    }

    /// The classes it keeps chunks of, one bit per class.
    fn classes(&self) -> u32 {
        (0..MAX_CLASSES)
            .filter(|&c| self.lens[c].get() != 0)
            .fold(0, |mask, c| mask | 1 << c)
    }

    /// The chunk of `class` kept last.
    #[inline]
    fn pop(&self, class: u8) -> Option<u32> {
        let len = self.len(class).checked_sub(1)?;
        self.lens[class as usize].set(len as u8);
        Some(self.chunks[class as usize][len].get())
    }

    /// Keeps `index`; `false` if the class's stack is full.
    #[inline]
    fn push(&self, class: u8, index: u32) -> bool {
        let len = self.len(class);
        let Some(top) = self.chunks[class as usize].get(len) else {
            return false;
        };
        top.set(index);
        self.lens[class as usize].set(len as u8 + 1);
        true
    }

    /// Moves up to `out.len()` of the oldest chunks of `class` into `out`;
    /// returns how many.
    fn take_oldest(&self, class: u8, out: &mut [u32]) -> usize {
        let stack = &self.chunks[class as usize];
        let len = self.len(class);
        let n = out.len().min(len);
        for (o, c) in out.iter_mut().zip(stack) {
            *o = c.get();
        }
        for i in n..len {
            stack[i - n].set(stack[i].get());
        }
        self.lens[class as usize].set((len - n) as u8);
        n
    }
}

/// A receive's outcome for a waiting receive: `None` to keep waiting.
fn received(r: Result<Message<'_>, TryRecvError>) -> Option<Result<Message<'_>, RecvTimeoutError>> {
    match r {
        Ok(msg) => Some(Ok(msg)),
        Err(TryRecvError::Corrupt(c)) => Some(Err(c.into())),
        Err(TryRecvError::Empty) => None,
    }
}

/// Whether `every` has passed since `last` (or it never was): then it
/// becomes now. A rate limit for slow-path work.
fn due(last: &Cell<Option<Instant>>, every: Duration) -> bool {
    let now = Instant::now();
    if last.get().is_some_and(|at| now.duration_since(at) < every) {
        return false;
    }
    last.set(Some(now));
    true
}

/// How long a blocked sender or loaner that started waiting at `start`
/// sleeps before its next check: at most [`CHECK_EVERY`], and no later
/// than its timeout; `None` once the timeout has passed.
fn next_slice(timeout: Option<Duration>, start: Instant) -> Option<Duration> {
    match timeout {
        Some(t) => time_left(t, start.elapsed()).map(|left| left.min(CHECK_EVERY)),
        None => Some(CHECK_EVERY),
    }
}

/// The state of a waiting receive between its takes.
struct Waiting {
    clock: WaitClock,
    /// Takes that gave nothing so far.
    polls: u32,
}

impl Waiting {
    #[inline]
    fn new(timeout: Option<Duration>) -> Waiting {
        Waiting {
            clock: WaitClock::new(timeout),
            polls: 0,
        }
    }
}

/// The clock of a waiting receive, started at its first reading.
struct WaitClock {
    start: Option<Instant>,
    timeout: Option<Duration>,
}

impl WaitClock {
    fn new(timeout: Option<Duration>) -> WaitClock {
        WaitClock {
            start: None,
            timeout,
        }
    }

    /// Time since the first reading (zero at the first).
    fn elapsed(&mut self) -> Duration {
        match self.start {
            Some(start) => start.elapsed(),
            None => {
                self.start = Some(Instant::now());
                Duration::ZERO
            }
        }
    }

    /// What is left of the timeout (`None`: no timeout), or `Timeout`.
    fn remaining(&mut self) -> Result<Option<Duration>, RecvTimeoutError> {
        let Some(timeout) = self.timeout else {
            return Ok(None);
        };
        time_left(timeout, self.elapsed())
            .map(Some)
            .ok_or(RecvTimeoutError::Timeout)
    }
}

/// Why the last take from a mailbox gave no message.
#[derive(Default)]
enum Refusal {
    /// There was no entry.
    #[default]
    Nothing,
    /// The entry was not a message for us: look at the next one.
    Skipped,
    /// The entry or its chunk is corrupt.
    Corrupt(Corruption),
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
        let address = Address {
            slot,
            generation,
            region: m.layout.instance,
        };
        let mailbox = Mailbox {
            _liveness: liveness,
            address,
            packed: address.pack(),
            bit: 1u64 << slot,
            name: name.into(),
            strategy: Cell::new(strategy),
            hints: Default::default(),
            cache: Kept::default(),
            refill: RefCell::new(Vec::with_capacity(CLAIM_BATCH)),
            empty_polls: Cell::new(0),
            refusal: Cell::default(),
            liveness_checked: std::array::from_fn(|_| Cell::new(None)),
            refused_seen: Default::default(),
            keepers_asked: Default::default(),
            dead_checked: Cell::new(None),
            cpu: Cell::new(0),
            received_since_send: Cell::new(false),
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
        mailbox.close_queue();
        queue.reopen(generation);
        registry::activate(mailbox.mapped(), slot, generation);
        Ok(mailbox)
    }

    #[inline]
    fn mapped(&self) -> &Mapped {
        self.region.mapped()
    }

    /// This participant's address, for others to send to.
    #[inline]
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

    /// A chunk for `len` bytes: one we keep if we have one, else a few
    /// from the shared pool.
    #[inline]
    fn claim(&self, len: usize) -> Result<ChunkRef, TryLoanError> {
        let m = self.mapped();
        let Some(class) = m.class_for(len) else {
            return Err(self.too_large(len));
        };
        if let Some(index) = self.cache.pop(class) {
            return Ok(ChunkRef { class, index });
        }
        self.claim_shared(class)
    }

    #[cold]
    fn too_large(&self, len: usize) -> TryLoanError {
        TryLoanError::TooLarge {
            requested: len,
            max: self.mapped().layout.config.max_message_size(),
        }
    }

    /// [`claim`](Self::claim) from the shared pool of `class` (our cache
    /// of it is empty).
    #[inline(never)]
    fn claim_shared(&self, class: u8) -> Result<ChunkRef, TryLoanError> {
        let m = self.mapped();
        let mut refill = self.refill.borrow_mut();
        refill.clear();
        // From a large pool take a few at once: one bitmap update, and the
        // holders lines fetched side by side.
        let layout = &m.layout.classes[class as usize];
        let batch = if layout.count >= BATCH_MIN_POOL {
            CLAIM_BATCH
        } else {
            1
        };
        let hint = &self.hints[class as usize];
        let Some(word) = m
            .pool(class)
            .try_claim_many(self.bit, hint.get(), batch, &mut refill)
        else {
            return Err(TryLoanError::Exhausted {
                class_size: layout.size,
            });
        };
        hint.set(word);
        let index = refill.pop().expect("claimed at least one");
        for &kept in refill.iter() {
            let pushed = self.cache.push(class, kept);
            debug_assert!(pushed, "an empty cache holds a claim batch");
        }
        Ok(ChunkRef { class, index })
    }

    #[inline]
    fn loan_from(&self, chunk: ChunkRef, len: usize) -> Loan<'_> {
        let at = self.mapped().chunk_at(chunk);
        // The loaner writes the payload next and the header when it sends:
        // the last receiver may still have both lines.
        layout::prefetch_for_writing(&at, len);
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
    /// `Exhausted` means no chunk of the class is free in the shared pool
    /// or kept by this participant. Other participants may keep a few
    /// each (see [`Mailbox`]): the refusal asks them to give those back
    /// (receivers asleep at once, the others at their next receive that
    /// finds nothing), so an attempt a little later can succeed;
    /// [`loan`](Self::loan) waits for them.
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
    #[inline]
    pub fn try_loan(&self, len: usize) -> Result<Loan<'_>, TryLoanError> {
        match self.claim(len) {
            Ok(c) => Ok(self.loan_from(c, len)),
            Err(e) => Err(self.try_loan_refused(len, e)),
        }
    }

    /// A `try_loan` refused: see [`ask_keepers`](Self::ask_keepers).
    #[cold]
    fn try_loan_refused(&self, len: usize, refused: TryLoanError) -> TryLoanError {
        if let TryLoanError::Exhausted { .. } = refused {
            if let Some(class) = self.mapped().class_for(len) {
                self.ask_keepers(class);
            }
            // Chunks the dead held come back only with a sweep, and a
            // loop of `try_loan`s never waits (where blocking loans sweep).
            self.sweep_the_dead_now_and_then();
        }
        refused
    }

    /// At most once every [`DEAD_CHECK_EVERY`], sweeps if a participant
    /// is dead: what it held (chunks, its registration as a waiting
    /// loaner) is given back only by a sweep, which otherwise runs only
    /// when someone joins or waits.
    #[cold]
    fn sweep_the_dead_now_and_then(&self) {
        if !due(&self.dead_checked, DEAD_CHECK_EVERY) {
            return;
        }
        // The sweep looks at each occupied slot's liveness itself.
        self.region.sweep();
    }

    /// A loan found `class` exhausted, and others may keep free chunks of
    /// it. At most once every [`ASK_KEEPERS_EVERY`] per class, counts the
    /// refusal on the class's pool line (where keepers look: those asleep
    /// when they wake, the others at their next empty receive) and wakes
    /// the receivers asleep keeping the class, so that they give it back.
    /// (Rate-limited: a loop of refused `try_loan`s must not keep taking
    /// the pool line from the participants whose releases would free
    /// chunks.)
    fn ask_keepers(&self, class: u8) {
        if !due(&self.keepers_asked[class as usize], ASK_KEEPERS_EVERY) {
            return;
        }
        // SYNC POINT: release pairs with the acquire load of a keeper
        // that sees the count move (`refusals_moved`).
        self.mapped()
            .loans_refused(class)
            .fetch_add(1, Ordering::Release);
        self.wake_keepers(class);
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
    /// if the size class is exhausted; but not for ever when this
    /// participant alone holds every chunk of the class, which only it could
    /// release ([`LoanError::HeldByCaller`], within a few tens of
    /// milliseconds).
    #[inline]
    pub fn loan(&self, len: usize) -> Result<Loan<'_>, LoanError> {
        self.loan_wait(len, None)
    }

    /// Like [`loan`](Self::loan), waiting at most `timeout`.
    #[inline]
    pub fn loan_timeout(&self, len: usize, timeout: Duration) -> Result<Loan<'_>, LoanError> {
        self.loan_wait(len, Some(timeout))
    }

    #[inline]
    fn loan_wait(&self, len: usize, timeout: Option<Duration>) -> Result<Loan<'_>, LoanError> {
        match self.claim(len) {
            Ok(c) => Ok(self.loan_from(c, len)),
            Err(e) => self.loan_refused(len, e, timeout),
        }
    }

    /// The rest of a waiting loan whose first attempt failed.
    #[inline(never)]
    fn loan_refused(
        &self,
        len: usize,
        refused: TryLoanError,
        timeout: Option<Duration>,
    ) -> Result<Loan<'_>, LoanError> {
        match refused {
            TryLoanError::TooLarge { requested, max } => {
                Err(LoanError::TooLarge { requested, max })
            }
            TryLoanError::Exhausted { class_size } => {
                // Others may be short of what we keep too.
                self.flush_cache();
                let m = self.mapped();
                let class = m.class_for(len).expect("class exists: claim found it");
                // Even if this wait ends before it registers (a zero or
                // short timeout), keepers learn that the class is wanted.
                self.ask_keepers(class);
                // Now and then, return what dead participants hold, and
                // see that we do not wait for ourselves.
                self.wait_checking(
                    &m.pool_waiters(class),
                    timeout,
                    || self.claim(len).ok().map(Some),
                    || {
                        self.region.sweep();
                        let claimed = self.claim(len).ok();
                        if claimed.is_none() && self.holds_all(class) {
                            return Some(None);
                        }
                        claimed.map(Some)
                    },
                    // Registered: receivers asleep keeping chunks of the
                    // class now give them back.
                    || self.wake_keepers(class),
                )
                .map_or_else(
                    || {
                        self.count(Counter::Timeouts);
                        Err(LoanError::Timeout { class_size })
                    },
                    |claimed| match claimed {
                        Some(c) => Ok(self.loan_from(c, len)),
                        None => Err(LoanError::HeldByCaller { class_size }),
                    },
                )
            }
        }
    }

    /// Whether we alone could give back a chunk of `class`: each is held
    /// by us alone, or queued in our own mailbox (see
    /// [`Pool::only_holder_is`](crate::pool::Pool::only_holder_is)).
    /// Nothing takes entries from our mailbox while we wait in a loan, and
    /// an entry added meanwhile names a chunk that was not ours alone.
    #[cold]
    fn holds_all(&self, class: u8) -> bool {
        let m = self.mapped();
        let queued = m.mailbox(self.address.slot).queue.entries();
        m.pool(class).only_holder_is(self.bit, |index| {
            queued
                .binary_search(&m.encode(ChunkRef { class, index }))
                .is_ok()
        })
    }

    /// Counts a rare event (a timeout) and publishes at once.
    fn count(&self, counter: Counter) {
        let c = &self.counters[counter as usize];
        c.set(c.get().wrapping_add(1));
        self.publish_counters();
    }

    /// Counts an event that may repeat fast (a full mailbox refusing a
    /// `try_send`); published with the message counts, every
    /// [`PUBLISH_EVERY`] events and whenever a receive finds nothing.
    fn count_lazily(&self, counter: Counter) {
        let c = &self.counters[counter as usize];
        c.set(c.get().wrapping_add(1));
        let pending = self.unpublished.get() + 1;
        self.unpublished.set(pending);
        if pending >= PUBLISH_EVERY {
            self.publish_counters();
        }
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
    #[inline(always)]
    fn release(&self, chunk: ChunkRef, holders: &AtomicU64) {
        // Sole holder, and nobody waiting for this class: keep the chunk
        // for our next loan instead of returning it to the shared pool.
        let keep = holders.load(Ordering::Relaxed) == self.bit
            && !self.mapped().loaners_waiting(chunk.class);
        if keep && self.cache.push(chunk.class, chunk.index) {
            return;
        }
        self.release_shared(chunk, keep);
    }

    /// The rest of a [`release`](Self::release) that did not keep the
    /// chunk: our cache of its class is full, or the chunk goes back to
    /// the shared pool.
    #[inline(never)]
    fn release_shared(&self, chunk: ChunkRef, cache_full: bool) {
        if cache_full {
            self.keep_when_full(chunk);
        } else {
            sweep::release(self.mapped(), &self.region.shared.futex, chunk, self.bit);
        }
    }

    /// Keeps `chunk` when the cache of its class is full: gives the older
    /// half back in one go first.
    #[cold]
    fn keep_when_full(&self, chunk: ChunkRef) {
        self.give_back(chunk.class, CACHE_PER_CLASS / 2);
        let pushed = self.cache.push(chunk.class, chunk.index);
        debug_assert!(pushed, "half the cache was given back");
    }

    /// Returns the `n` oldest kept chunks of `class` to the shared pool in
    /// one go, and wakes loaners waiting for the class if that freed any.
    fn give_back(&self, class: u8, n: usize) {
        let mut oldest = [0u32; CACHE_PER_CLASS];
        let n = self.cache.take_oldest(class, &mut oldest[..n]);
        let m = self.mapped();
        if m.pool(class).release_many(&oldest[..n], self.bit) > 0 {
            m.pool_waiters(class).notify(&self.region.shared.futex);
        }
    }

    /// Gives back every chunk this participant keeps for its next loans
    /// (see [`Mailbox`]): for a participant about to stop calling in for a
    /// while (a long computation, say), whose kept chunks others may need.
    /// They come back by themselves when it next receives and finds
    /// nothing, sleeps in a receive that a loaner needs them for, sleeps in
    /// a send, or leaves.
    pub fn give_back_kept(&self) {
        self.flush_cache();
    }

    /// Returns every cached chunk to the shared pool (before we sleep in a
    /// send, or a loan waits for a class, so nobody waits for chunks we are
    /// not using).
    fn flush_cache(&self) {
        self.trim_cache(|_| 0);
    }

    /// Our notice of the classes we keep chunks of while asleep.
    fn notice(&self) -> KeepNotice<'_> {
        KeepNotice::new(self.mapped().slot(self.address.slot).kept_asleep)
    }

    /// Going to sleep in a receive (after taking the doorbell ticket): keeps
    /// at most [`keep`](Self::keep) chunks per class, so that the first loan
    /// after waking needs no shared pool, and announces the classes kept:
    /// a loaner that finds one exhausted wakes us to give it back (see
    /// [`KeepNotice`]). A class a loaner already waits for goes back now.
    fn keep_while_asleep(&self) {
        self.trim_cache(|class| self.keep[class as usize]);
        let kept = self.cache.classes();
        if kept == 0 {
            return;
        }
        let m = self.mapped();
        // The refusals seen so far, before announcing: a refused loan that
        // counts after this and rings us (seeing our notice) finds us
        // giving the class back when we wake (see `ask_keepers`).
        for class in 0..m.layout.classes.len() as u8 {
            if kept & 1 << class != 0 {
                let refused = m.loans_refused(class).load(Ordering::Acquire);
                self.refused_seen[class as usize].set(refused);
            }
        }
        let give = self
            .notice()
            .announce(kept, |class| m.loaners_waiting(class));
        if give != 0 {
            // Exactly the classes no longer announced.
            self.trim_cache(|class| match give & 1 << class {
                0 => usize::MAX,
                _ => 0,
            });
        }
    }

    /// Awake after sleeping keeping chunks: gives back every kept chunk of
    /// a class a loaner waits for, or that a loan was refused while we
    /// slept.
    fn give_back_wanted(&self) {
        let m = self.mapped();
        self.trim_cache(
            |class| match m.loaners_waiting(class) || self.refusals_moved(class) {
                true => 0,
                false => usize::MAX,
            },
        );
    }

    /// Whether a loan of `class` was refused since we last looked (and
    /// remember the count).
    fn refusals_moved(&self, class: u8) -> bool {
        // SYNC POINT: acquire pairs with the release bump in `ask_keepers`.
        let now = self.mapped().loans_refused(class).load(Ordering::Acquire);
        let seen = &self.refused_seen[class as usize];
        now != seen.replace(now)
    }

    /// A loan waiting for `class`, registered: wakes every other receiver
    /// asleep keeping chunks of the class, to give them back.
    fn wake_keepers(&self, class: u8) {
        let m = self.mapped();
        for slot in 0..m.layout.config.max_participants {
            if slot != self.address.slot && KeepNotice::new(m.slot(slot).kept_asleep).keeps(class) {
                m.mailbox(slot).parker.ring(&self.region.shared.futex, 1);
            }
        }
    }

    /// Between messages (called by receives that found nothing: the first
    /// after a message, then every 16th; `idle` counts them all): gives
    /// back every chunk of a class somebody is waiting for or was refused
    /// since we last looked; once
    /// [`IDLE_POLLS`] receives in a row have found nothing, also keeps at
    /// most [`keep`](Self::keep) chunks per class. (A round trip sees a
    /// few empty polls per message and keeps its chunks; a receiver with
    /// nothing to do gives them back within microseconds.)
    fn trim_cache_between_messages(&self, idle: u32) {
        let m = self.mapped();
        self.trim_cache(|class| {
            if m.loaners_waiting(class) || self.refusals_moved(class) {
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
        for class in 0..MAX_CLASSES as u8 {
            let len = self.cache.len(class);
            if len == 0 {
                continue;
            }
            let keep = keep(class);
            if len > keep {
                self.give_back(class, len - keep);
            }
        }
    }

    /// Waits on `list` until `ready` gives a value or `timeout` passes;
    /// every [`CHECK_EVERY`] it runs `check` (liveness checks and sweeps,
    /// which cost syscalls and so stay off the fast path). Each time it has
    /// registered as a waiter it calls `registered` (see
    /// [`EventCount::wait_until_with`]).
    fn wait_checking<T>(
        &self,
        list: &EventCount<'_>,
        timeout: Option<Duration>,
        mut ready: impl FnMut() -> Option<T>,
        mut check: impl FnMut() -> Option<T>,
        mut registered: impl FnMut(),
    ) -> Option<T> {
        let start = Instant::now();
        loop {
            let Some(slice) = next_slice(timeout, start) else {
                // Out of time: one last check.
                return check();
            };
            let futex = &self.region.shared.futex;
            let waited =
                list.wait_until_with(futex, self.bit, Some(slice), &mut ready, &mut registered);
            if let Some(v) = waited {
                return Some(v);
            }
            if let Some(v) = check() {
                return Some(v);
            }
        }
    }

    // ---- sending -----------------------------------------------------------

    /// One delivery attempt: hand `loan`'s chunk to `to` by storing its
    /// entry (class and index) in `to`'s message list.
    #[inline(always)]
    fn deliver(&self, loan: &Loan<'_>, to: &Address) -> Result<(), Undelivered> {
        if self.publish(loan, to)? == Pushed::WakeConsumer {
            let rx = self.mapped().mailbox(to.slot);
            rx.parker.ring(&self.region.shared.futex, 1);
        }
        self.tally(Counter::Sent, Counter::BytesSent, loan.len as u64);
        Ok(())
    }

    /// [`deliver`](Self::deliver) up to its publishing CAS: whether the
    /// receiver sleeps on the entry and must be rung.
    #[inline(always)]
    fn publish(&self, loan: &Loan<'_>, to: &Address) -> Result<Pushed, Undelivered> {
        let m = self.mapped();
        if to.slot >= m.layout.config.max_participants {
            return Err(Undelivered::Disconnected);
        }
        let rx = m.mailbox(to.slot);
        // A departed participant's queue is closed (the push refuses its
        // address), then reopened under the generation of the slot's next
        // occupant (refused here, or by the push if the slot changes hands
        // meanwhile).
        let Some(cell) = rx.queue.tail_cell(to.generation) else {
            return Err(Undelivered::Disconnected);
        };
        // The receiver has the cell we are about to fill (it polls it):
        // start taking it over now, while the header is written.
        layout::prefetch_write(cell.as_ptr().cast());
        // A receiver that may sleep may need its doorbell rung: take that
        // line over at the same time, not after the cell.
        if m.slot(to.slot).strategy.load(Ordering::Relaxed) != WaitStrategy::Spin as u32 {
            layout::prefetch_write(rx.parker.word_ptr());
        }
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
        // publishing CAS the sender touches nothing. A loan is held by its
        // loaner alone, and nobody else writes the word of a chunk whose
        // only holder is alive (a sweeper only clears the bits of the
        // dead): a plain store does what `fetch_or` would, without a
        // locked instruction. (Release: a sweeper of the receiver that sees
        // both bits sees this send's sender and destination too, not an
        // earlier message's. After the CAS the sender only reads the
        // receiver's slot and may give a cache hint: `hand_over`.)
        if !to_self {
            chunk.holders.store(self.bit | rx_bit, Ordering::Release);
        }
        match rx.queue.push(to.generation, m.encode(loan.chunk)) {
            Ok(pushed) => {
                // Only a send in an exchange looks any further.
                if self.received_since_send.replace(false) {
                    if let Pushed::Quiet { at } = pushed {
                        if !rx.queue.consumer_behind(at) {
                            self.hand_over(chunk, m.slot(to.slot).cpu);
                        }
                    }
                }
                Ok(pushed)
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

    /// After a send in an exchange (we received since our last send, so
    /// the peer likely waits for this answer), with the receiver awake and
    /// not behind: if it waits on another CPU (`cpu`, its slot's word), it
    /// fetches the chunk's first line next, so leave that line in the
    /// shared cache, where its miss finds it sooner than in ours. Not from
    /// a sender that never receives (a one-way stream would pay for every
    /// hint while its receiver gains nothing); not for a receiver on our
    /// CPU, whose caches the line is in. Only on x86-64, the one
    /// architecture with the hint.
    #[inline(always)]
    fn hand_over(&self, chunk: &layout::ChunkHeader, cpu: &AtomicU32) {
        if cfg!(target_arch = "x86_64") {
            let theirs = cpu.load(Ordering::Relaxed);
            if theirs != 0 && theirs != sys::current_cpu() {
                layout::demote(std::ptr::from_ref(chunk).cast());
            }
        }
    }

    /// Delivers `loan` to `to`'s full mailbox, waiting for room (at most
    /// `timeout`).
    #[inline(never)]
    fn send_wait(
        &self,
        loan: &Loan<'_>,
        to: &Address,
        timeout: Option<Duration>,
    ) -> Result<(), Undelivered> {
        for _ in 0..SEND_SPINS {
            spin_hint();
            match self.deliver(loan, to) {
                Err(Undelivered::Full) => {}
                other => return other,
            }
        }
        let m = self.mapped();
        let rx = m.mailbox(to.slot);
        // Going to sleep: give back every chunk we keep (the receiver we
        // wait for may itself be waiting for one of them; we receive
        // nothing while we wait, so nothing comes back to keep).
        self.flush_cache();
        let start = Instant::now();
        loop {
            let Some(slice) = next_slice(timeout, start) else {
                return Err(Undelivered::Full);
            };
            // Flag the entry the receiver takes next, then sleep until it
            // rings the room doorbell on taking it.
            let ticket = rx.room.ticket();
            if rx.queue.mark_waiting(to.generation) {
                rx.room.wait(&self.region.shared.futex, ticket, Some(slice));
            }
            match self.deliver(loan, to) {
                Err(Undelivered::Full) => {}
                other => return other,
            }
            // A receiver that left closed its queue; but a queue a scribble
            // keeps full (a cell the close could not tell from a closed
            // one) would keep us here after it left: ask its slot too.
            if !registry::is_active(self.mapped(), to.slot, to.generation) {
                return Err(Undelivered::Disconnected);
            }
            // Now and then, make sure the receiver is still alive.
            if self.liveness_check_due(to.slot) && self.region.is_dead(to.slot) {
                self.region.sweep();
            }
        }
    }

    /// Sends `loan` to `to` without waiting. On failure the loan comes back
    /// inside the error: nothing is lost.
    ///
    /// # Panics
    ///
    /// If `loan` was loaned by another mailbox (of this region or another
    /// one): only the mailbox that loaned a chunk may send it. If `to` is
    /// an address of another region.
    #[inline]
    pub fn try_send<'m>(&self, loan: Loan<'m>, to: &Address) -> Result<(), TrySendError<'m>> {
        self.assert_sendable(&loan, to);
        match self.deliver(&loan, to) {
            Ok(()) => {
                loan.consume();
                Ok(())
            }
            Err(e) => self.try_send_refused(loan, to, e),
        }
    }

    /// The rest of [`try_send`](Self::try_send) after a first attempt
    /// failed.
    #[cold]
    fn try_send_refused<'m>(
        &self,
        loan: Loan<'m>,
        to: &Address,
        mut result: Undelivered,
    ) -> Result<(), TrySendError<'m>> {
        if matches!(result, Undelivered::Full)
            && self.liveness_check_due(to.slot)
            && self.region.is_dead(to.slot)
        {
            // A full mailbox may be a dead receiver's: reclaim it and say so.
            self.region.sweep();
            match self.deliver(&loan, to) {
                Ok(()) => {
                    loan.consume();
                    return Ok(());
                }
                Err(e) => result = e,
            }
        }
        match result {
            Undelivered::Full => {
                // Not published at once: a sender may retry in a loop.
                self.count_lazily(Counter::Full);
                Err(TrySendError::Full(loan))
            }
            Undelivered::Disconnected => Err(TrySendError::Disconnected(loan)),
        }
    }

    /// Panics unless `loan` is one of ours and `to` an address of our
    /// region. Sending another mailbox's loan would publish a chunk we do
    /// not hold (in another region, even: a chunk of ours at the same
    /// place), so this is checked in every build; so is the address, which
    /// in another region would reach whoever holds its slot there.
    #[inline(always)]
    fn assert_sendable(&self, loan: &Loan<'_>, to: &Address) {
        if !std::ptr::eq(loan.mailbox, self) {
            foreign_loan();
        }
        self.assert_local(to);
    }

    /// Panics unless `to` is an address of our region.
    #[inline(always)]
    fn assert_local(&self, to: &Address) {
        assert_region(to, self.address.region);
    }

    /// Whether a send that found `slot`'s mailbox full should check its
    /// receiver's liveness (a syscall): the first time, then at most every
    /// [`FULL_CHECK_EVERY`] for that slot, so a sender retrying in a loop
    /// (`try_send`, or `send` waiting for room) is not slowed down by a
    /// syscall per attempt, and a dead receiver is still found within that
    /// time.
    fn liveness_check_due(&self, slot: u32) -> bool {
        self.liveness_checked
            .get(slot as usize)
            .is_none_or(|checked| due(checked, FULL_CHECK_EVERY))
    }

    /// Sends `loan` to `to`, waiting while its mailbox is full; but not
    /// for our own full mailbox, which only we could empty
    /// ([`SendError::OwnMailboxFull`]).
    ///
    /// # Panics
    ///
    /// If `loan` was loaned by another mailbox (of this region or another
    /// one): only the mailbox that loaned a chunk may send it. If `to` is
    /// an address of another region.
    #[inline]
    pub fn send<'m>(&self, loan: Loan<'m>, to: &Address) -> Result<(), SendError<'m>> {
        self.assert_sendable(&loan, to);
        match self.deliver_or_wait(&loan, to, None) {
            Ok(()) => {
                loan.consume();
                Ok(())
            }
            // Without a timeout the wait only ends in success or
            // disconnection, but for our own full mailbox.
            Err(Undelivered::Full) => Err(SendError::OwnMailboxFull(loan)),
            Err(Undelivered::Disconnected) => Err(SendError::Disconnected(loan)),
        }
    }

    /// Sends `loan` to `to`, waiting at most `timeout` for room.
    ///
    /// # Panics
    ///
    /// If `loan` was loaned by another mailbox (of this region or another
    /// one): only the mailbox that loaned a chunk may send it. If `to` is
    /// an address of another region.
    #[inline]
    pub fn send_timeout<'m>(
        &self,
        loan: Loan<'m>,
        to: &Address,
        timeout: Duration,
    ) -> Result<(), SendTimeoutError<'m>> {
        self.assert_sendable(&loan, to);
        match self.deliver_or_wait(&loan, to, Some(timeout)) {
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

    /// One delivery attempt inline; if the mailbox is full, the wait for
    /// room (at most `timeout`) out of line.
    #[inline(always)]
    fn deliver_or_wait(
        &self,
        loan: &Loan<'_>,
        to: &Address,
        timeout: Option<Duration>,
    ) -> Result<(), Undelivered> {
        match self.deliver(loan, to) {
            // Only we can make room in our own mailbox, and we are here:
            // the wait would never end.
            Err(Undelivered::Full) if *to == self.address => Err(Undelivered::Full),
            Err(Undelivered::Full) => self.send_wait(loan, to, timeout),
            done => done,
        }
    }

    /// Copies `data` into a loaned chunk and sends it, waiting for a chunk
    /// and for room as needed.
    ///
    /// # Panics
    ///
    /// If `to` is an address of another region.
    pub fn send_copy(&self, data: &[u8], to: &Address) -> Result<(), SendCopyError> {
        // Before the loan, which may wait.
        self.assert_local(to);
        let mut loan = self.loan(data.len()).map_err(|e| match e {
            LoanError::TooLarge { requested, max } => SendCopyError::TooLarge { requested, max },
            LoanError::Timeout { .. } => unreachable!("loan without timeout does not time out"),
            LoanError::HeldByCaller { class_size } => SendCopyError::HeldByCaller { class_size },
        })?;
        loan.copy_from_slice(data);
        self.send(loan, to).map_err(|e| match e {
            SendError::Disconnected(_) => SendCopyError::Disconnected,
            SendError::OwnMailboxFull(_) => SendCopyError::OwnMailboxFull,
        })
    }

    // ---- receiving ---------------------------------------------------------

    /// Takes the next message without waiting.
    #[inline]
    pub fn try_recv(&self) -> Result<Message<'_>, TryRecvError> {
        match self.take_one() {
            Some(message) => Ok(message),
            None => self.try_recv_after(),
        }
    }

    /// The rest of a [`try_recv`](Self::try_recv) whose first take gave
    /// no message: the queue was empty, or the entry was refused (then
    /// report corruption, or look at the next entries). Entries it may
    /// skip (addressed to another participant, which only a scribble on the
    /// region makes, or reclaimed by a sweep) are bounded by the mailbox's
    /// capacity: a participant that
    /// keeps pushing such entries cannot keep a `try_` call going for ever.
    #[inline(never)]
    fn try_recv_after(&self) -> Result<Message<'_>, TryRecvError> {
        match self.refusal.take() {
            Refusal::Nothing => {
                return Err(match self.found_nothing() {
                    Some(c) => TryRecvError::Corrupt(c),
                    None => TryRecvError::Empty,
                });
            }
            Refusal::Corrupt(c) => return Err(TryRecvError::Corrupt(c)),
            Refusal::Skipped => {}
        }
        for _ in 1..self.mapped().layout.config.mailbox_capacity {
            if let Some(message) = self.take_one() {
                return Ok(message);
            }
            match self.refusal.take() {
                Refusal::Nothing => return Err(TryRecvError::Empty),
                Refusal::Skipped => {}
                Refusal::Corrupt(c) => return Err(TryRecvError::Corrupt(c)),
            }
        }
        Err(TryRecvError::Empty)
    }

    /// Takes the next entry from our message list, if there is one, and
    /// accepts it as a message. `None` if there is none, or if the entry
    /// was refused: [`refusal`](Self::refusal) then says why.
    #[inline(always)]
    fn take_one(&self) -> Option<Message<'_>> {
        let m = self.mapped();
        let mailbox = m.mailbox(self.address.slot);
        let taking = m.slot(self.address.slot).taking;
        // Announce the entry before it leaves the queue, so a sweep never
        // finds a message we are receiving in neither place. The chunk is
        // located once, and its header line starts moving here now, while
        // the cell is re-armed.
        // (Release: a sweeper that reads this announcement also sees that
        // the one before it was withdrawn after its take-over's store.)
        let (decoded, room) = mailbox.queue.take_with(|v| {
            taking.store(v, Ordering::Release);
            let at = m.entry(v);
            if let Ok(at) = &at {
                layout::prefetch_write(at.header as *const _ as *const u8);
            }
            at
        })?;
        // `take_with` re-armed the cell at once: a sender may be waiting
        // for exactly this room.
        if room {
            self.ring_room();
        }
        self.empty_polls.set(0);
        self.received_since_send.set(true);
        let message = match decoded {
            Ok(at) => self.accept(at),
            Err(e) => {
                self.refused(Refusal::Corrupt(Corruption {
                    reason: e.to_string(),
                    lasting: false,
                }));
                None
            }
        };
        taking.store(0, Ordering::Release);
        message
    }

    /// Records why the entry just taken gave no message.
    #[cold]
    fn refused(&self, why: Refusal) {
        self.refusal.set(why);
    }

    /// A receive found nothing. Housekeeping runs on the first empty poll
    /// after a message and on every 16th after that, not on each poll of a
    /// spin; so does the check that the cell we poll is not a scribble,
    /// which says so ([`head_corruption`](Self::head_corruption)).
    #[inline]
    fn found_nothing(&self) -> Option<Corruption> {
        let idle = self.empty_polls.get().wrapping_add(1);
        self.empty_polls.set(idle);
        if idle % 16 == 1 {
            return self.between_messages(idle);
        }
        None
    }

    #[inline(never)]
    fn between_messages(&self, idle: u32) -> Option<Corruption> {
        self.trim_cache_between_messages(idle);
        self.note_cpu();
        // A loaner killed while waiting stays registered until a sweep,
        // and every release of its class pays for it meanwhile.
        let m = self.mapped();
        if (0..m.layout.classes.len() as u8).any(|class| m.loaners_waiting(class)) {
            self.sweep_the_dead_now_and_then();
        }
        if self.unpublished.get() != 0 {
            self.publish_counters();
        }
        self.head_corruption()
    }

    /// Tells senders which CPU we wait for messages on (see `publish`),
    /// when it changed: the slot's line is read by every sender, and is
    /// written only then.
    fn note_cpu(&self) {
        // Read only by `hand_over`, which hints only on x86-64.
        if !cfg!(target_arch = "x86_64") {
            return;
        }
        let cpu = sys::current_cpu();
        if cpu != self.cpu.get() {
            self.cpu.set(cpu);
            let slot = self.mapped().slot(self.address.slot);
            slot.cpu.store(cpu, Ordering::Relaxed);
        }
    }

    /// The cell at our queue's head if it is neither empty nor an entry:
    /// only a scribble on the region makes one, and polling it would find
    /// nothing for ever. It is repaired where the queue's tail says what
    /// it held ([`OffsetQueue::repair_head`](crate::queue::OffsetQueue::repair_head)),
    /// so that it is reported once and the messages after it arrive;
    /// otherwise it is reported as lasting.
    fn head_corruption(&self) -> Option<Corruption> {
        let queue = self.mapped().mailbox(self.address.slot).queue;
        let mut cell = queue.corrupt_head()?;
        // A try again if the cell changed under the repair (a sender
        // flagged it meanwhile, say).
        for _ in 0..3 {
            let reason = match queue.repair_head(self.address.generation, cell) {
                Some(Repaired::Emptied) => format!(
                    "mailbox cell {cell:#x} was neither empty nor an entry; it is empty again"
                ),
                Some(Repaired::Skipped) => format!(
                    "mailbox cell {cell:#x} was neither empty nor an entry; the message it \
                     held is lost, the next ones follow"
                ),
                None => match queue.corrupt_head() {
                    Some(now) if now != cell => {
                        cell = now;
                        continue;
                    }
                    None => return None,
                    Some(_) => break,
                },
            };
            // Senders may be asleep waiting for room behind it.
            self.ring_room();
            return Some(Corruption {
                reason,
                lasting: false,
            });
        }
        Some(Corruption {
            reason: format!(
                "mailbox cell {cell:#x} is neither empty nor an entry, and the mailbox's head \
                 and tail do not say what it held: the mailbox stays unusable"
            ),
            lasting: true,
        })
    }

    /// Wakes the senders waiting for room in our mailbox.
    #[cold]
    fn ring_room(&self) {
        let m = self.mapped();
        m.mailbox(self.address.slot)
            .room
            .ring(&self.region.shared.futex, u32::MAX);
    }

    /// Closes our queue and releases every entry in it, each announced as
    /// the entry we are taking while it is released: if we are killed in
    /// the middle, the sweep finds it announced, as it finds a message we
    /// were receiving, and frees its chunk.
    fn close_queue(&self) {
        self.close_queue_then(|value| self.release_entry(value));
    }

    /// Releases `value`, an entry of our queue being closed, announced: the
    /// announcement is withdrawn once we hold the chunk, before we free it.
    fn release_entry(&self, value: u32) {
        let futex = &self.region.shared.futex;
        sweep::release_announced(self.mapped(), futex, self.address.slot, value);
    }

    /// [`close_queue`](Self::close_queue), calling `release` on each entry.
    /// (Separate so that tests can stop there.)
    fn close_queue_then(&self, release: impl FnMut(u32)) {
        sweep::close_announced(self.mapped(), self.address.slot, release);
    }

    /// Takes over chunk `at`, taken from our message list, if it is a
    /// well-formed message to us. Anything else is left to
    /// [`refuse`](Self::refuse), told whether we hold the chunk now.
    #[inline(always)]
    fn accept<'a>(&'a self, at: ChunkAt<'a>) -> Option<Message<'a>> {
        let header = at.header;
        let sender = header.sender.load(Ordering::Relaxed);
        if !sweep::take_over_announced(
            self.mapped(),
            &header.holders,
            Address::slot_of(sender),
            self.bit,
        ) {
            self.refuse(at, false);
            return None;
        }
        let word = header.len.load(Ordering::Relaxed);
        let len = word & !BATCH_FLAG;
        if header.dest.load(Ordering::Relaxed) != self.packed || len > at.capacity as u64 {
            self.refuse(at, true);
            return None;
        }
        layout::prefetch_rest(&at, len as usize);
        self.tally(Counter::Received, Counter::BytesReceived, len);
        Some(Message {
            mailbox: self,
            chunk: at.r,
            header,
            ptr: at.payload,
            len: len as usize,
        })
    }

    /// Why [`accept`](Self::accept) refused chunk `at`: an entry that is
    /// not ours to read is skipped (one a sweep has reclaimed, which we do
    /// not hold, is left alone; one addressed to another participant, which
    /// only a scribble on the region makes, is released); a message whose
    /// length exceeds its chunk is released and reported.
    #[cold]
    fn refuse(&self, at: ChunkAt<'_>, held: bool) {
        self.refusal.set(self.refusal_of(at, held));
    }

    fn refusal_of(&self, at: ChunkAt<'_>, held: bool) -> Refusal {
        // An announcement never names a chunk that is not ours, or may be
        // free (see `sweep::release_announced`): withdrawn before anything
        // else.
        let m = self.mapped();
        m.slot(self.address.slot).taking.store(0, Ordering::Release);
        if !held {
            return Refusal::Skipped;
        }
        let header = at.header;
        let len = header.len.load(Ordering::Relaxed) & !BATCH_FLAG;
        let to_us = header.dest.load(Ordering::Relaxed) == self.packed;
        self.release(at.r, &header.holders);
        if to_us && len > at.capacity as u64 {
            return Refusal::Corrupt(Corruption {
                reason: format!(
                    "message length {len} exceeds its chunk's {} bytes",
                    at.capacity
                ),
                lasting: false,
            });
        }
        Refusal::Skipped
    }

    /// Waits for the next message using this mailbox's [`WaitStrategy`].
    #[inline]
    pub fn recv(&self) -> Result<Message<'_>, RecvError> {
        self.recv_wait(None).map_err(|e| match e {
            RecvTimeoutError::Corrupt(c) => RecvError::Corrupt(c),
            RecvTimeoutError::Timeout => unreachable!("recv without timeout does not time out"),
        })
    }

    /// Waits at most `timeout` for the next message.
    #[inline]
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Message<'_>, RecvTimeoutError> {
        // Not counted as a timeout: a receiver that waits in slices (to
        // look at something else in between) is idle, not held back.
        self.recv_wait(Some(timeout))
    }

    /// A waiting receive. Each take is made here, inline in the caller,
    /// so a message that arrives while we wait is handed over without a
    /// return through the out-of-line wait; everything else a take that
    /// gave nothing leads to (refused entries, the clock, spinning or
    /// sleeping) is in [`recv_idle`](Self::recv_idle).
    #[inline(always)]
    fn recv_wait(&self, timeout: Option<Duration>) -> Result<Message<'_>, RecvTimeoutError> {
        let mut wait = Waiting::new(timeout);
        loop {
            if let Some(message) = self.take_one() {
                return Ok(message);
            }
            if let Some(r) = self.recv_idle(&mut wait) {
                return r;
            }
        }
    }

    /// A waiting receive's take gave nothing: look past a refused entry,
    /// then spin or sleep as the wait strategy says. `None` to take again.
    #[inline(never)]
    fn recv_idle(&self, wait: &mut Waiting) -> Option<Result<Message<'_>, RecvTimeoutError>> {
        // A message already waiting (behind a skipped entry) costs no
        // clock read.
        if let Some(r) = received(self.try_recv_after()) {
            return Some(r);
        }
        wait.polls = wait.polls.wrapping_add(1);
        let polls = wait.polls;
        let clock = &mut wait.clock;
        // The clock starts at the first check, after a few polls, not at
        // the first empty one: a message that arrives within a microsecond
        // or so, the common case for a spinning receiver, costs no clock
        // read at all. (A timeout can then run up to those polls late.)
        // It is read once every 64 polls, not on every one.
        let spinning = match self.strategy.get() {
            WaitStrategy::Spin => true,
            WaitStrategy::Park => false,
            WaitStrategy::Adaptive => polls % 64 != 0 || clock.elapsed() < ADAPTIVE_SPIN,
        };
        if spinning {
            if polls % 256 == 16 {
                if let Err(e) = clock.remaining() {
                    return Some(Err(e));
                }
            }
            spin_hint();
            return None;
        }
        let left = match clock.remaining() {
            Ok(left) => left,
            Err(e) => return Some(Err(e)),
        };
        // Going to sleep: take the doorbell's ticket, keep our share
        // of chunks and announce it (a loaner short of them rings
        // the doorbell), then mark the cell we wait on, and sleep
        // until a sender fills it.
        let mailbox = self.mapped().mailbox(self.address.slot);
        let ticket = mailbox.parker.ticket();
        self.keep_while_asleep();
        let parked = mailbox.queue.mark_parked();
        if parked {
            // In slices: the sender that fills the marked cell rings us,
            // but one killed between its publishing CAS and the ring would
            // leave us asleep with a message waiting (and later senders
            // find the mark gone, so they do not ring either).
            let slice = left.map_or(PARK_SLICE, |left| left.min(PARK_SLICE));
            mailbox
                .parker
                .wait(&self.region.shared.futex, ticket, Some(slice));
            mailbox.queue.unmark_parked();
        }
        // Awake: loaners need not wake us any more. One that rang
        // us may be waiting for what we keep (or a `try_loan` was
        // refused it), and we may leave now (a message, the
        // timeout) instead of sleeping again: give it back now.
        if self.notice().clear() {
            self.give_back_wanted();
        }
        if !parked {
            if let Some(c) = self.head_corruption() {
                return Some(Err(RecvTimeoutError::Corrupt(c)));
            }
        }
        None
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
        let Address {
            slot, generation, ..
        } = self.address;
        registry::begin_leave(m, slot, generation);
        self.notice().clear();
        let mailbox = m.mailbox(slot);
        self.close_queue();
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
    /// Its payload (from the chunk's block, like `ChunkAt::payload`).
    ptr: *mut u8,
    len: usize,
    capacity: usize,
    batch: bool,
}

impl Loan<'_> {
    /// Bytes this chunk can hold (its size class).
    #[inline]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Shortens the message to `len` bytes (no effect if already shorter).
    /// (On a batch's loan, see [`resize`](Self::resize).)
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Lengthens or shortens the message to `len` bytes, at most
    /// [`capacity`](Self::capacity); returns the new length.
    /// On a [`Batch`](crate::Batch)'s loan, a length other than its
    /// records' makes the receiver's [`records`](Message::records) report
    /// the batch corrupt where the length cuts it.
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
    #[inline]
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr..ptr+len` lies inside our chunk's payload (len <=
        // capacity) and our holder bit makes this participant the chunk's
        // only user until it is sent.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl DerefMut for Loan<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`; `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for Loan<'_> {
    #[inline]
    fn drop(&mut self) {
        self.mailbox.release(self.chunk, &self.header.holders);
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
    /// Its chunk's header, which we hold: nobody writes it until we drop.
    header: ChunkView<'m>,
    /// Its payload (`ChunkAt::payload`).
    ptr: *const u8,
    len: usize,
}

impl Message<'_> {
    /// Who sent it; send a reply to this address.
    #[inline]
    pub fn sender(&self) -> Address {
        Address::unpack(
            self.header.sender.load(Ordering::Relaxed),
            self.mailbox.address.region,
        )
    }

    /// Whether it is a [`Batch`](crate::Batch) of records (its bytes are
    /// then the records' headers and bytes; read them with
    /// [`records`](Self::records)).
    pub fn is_batch(&self) -> bool {
        self.header.len.load(Ordering::Relaxed) & BATCH_FLAG != 0
    }

    /// Its records, in order: those of a batch, or the whole message as
    /// one record if it was sent on its own.
    pub fn records(&self) -> Records<'_> {
        Records::new(self)
    }
}

impl Deref for Message<'_> {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` is the chunk's payload (`ChunkAt::payload`),
        // `accept` checked `len` against the chunk's capacity, and our
        // holder bit keeps the chunk from being loaned again until we drop.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for Message<'_> {
    #[inline]
    fn drop(&mut self) {
        self.mailbox.release(self.chunk, &self.header.holders);
    }
}

impl fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("len", &self.len)
            .field("sender", &self.sender())
            .finish()
    }
}

/// See [`Mailbox::assert_sendable`].
#[cold]
#[inline(never)]
#[track_caller]
fn foreign_loan() -> ! {
    panic!("a loan can only be sent by the mailbox that loaned it")
}

/// Panics unless `to` is an address of region instance `region`: in
/// another region it would reach whoever holds its slot there.
#[inline(always)]
#[track_caller]
pub(crate) fn assert_region(to: &Address, region: u32) {
    if to.region != region {
        foreign_address();
    }
}

/// See [`assert_region`].
#[cold]
#[inline(never)]
#[track_caller]
fn foreign_address() -> ! {
    panic!("an address can only be used in the region it came from")
}

#[cfg(test)]
mod tests {
    use super::{Address, Kept, Mailbox, CACHE_PER_CLASS};
    #[cfg(not(shmbox_loom))]
    use crate::sweep;

    #[test]
    fn kept_chunks_are_a_stack_per_class_with_the_oldest_given_back_first() {
        let kept = Kept::default();
        assert_eq!(kept.classes(), 0);
        assert_eq!(kept.pop(0), None);
        for i in 0..CACHE_PER_CLASS as u32 {
            assert!(kept.push(0, 100 + i));
        }
        assert!(!kept.push(0, 999), "a full class refuses");
        assert!(kept.push(1, 7), "other classes are separate");
        assert_eq!(kept.len(0), CACHE_PER_CLASS);
        // Last kept, first loaned.
        assert_eq!(kept.pop(0), Some(100 + CACHE_PER_CLASS as u32 - 1));
        // The oldest go back first; the rest move down and stay in order.
        let mut out = [0u32; 4];
        assert_eq!(kept.take_oldest(0, &mut out), 4);
        assert_eq!(out, [100, 101, 102, 103]);
        assert_eq!(kept.len(0), CACHE_PER_CLASS - 5);
        assert_eq!(kept.pop(0), Some(100 + CACHE_PER_CLASS as u32 - 2));
        let mut all = [0u32; CACHE_PER_CLASS];
        let n = kept.take_oldest(0, &mut all);
        assert_eq!(n, CACHE_PER_CLASS - 6);
        let expected: Vec<u32> = (104..104 + n as u32).collect();
        assert_eq!(&all[..n], &expected[..]);
        assert_eq!(kept.len(0), 0);
        assert_eq!(kept.pop(1), Some(7));
        assert_eq!(kept.classes(), 0);
    }

    /// A region with a 4-chunk pool, `s` having sent `messages` to `r`, and
    /// `r` leaving (`LEAVING`, its queue not closed yet).
    #[cfg(not(shmbox_loom))]
    fn leaving_with_queued(messages: &[&[u8]]) -> (crate::Region, Mailbox, Mailbox) {
        use crate::{registry, Config, Region, SizeClass};
        let config = Config::default()
            .with_classes(&[SizeClass::new(64, 4)])
            .with_max_participants(4)
            .with_mailbox_capacity(4);
        let region = Region::in_process(&config).unwrap();
        let s = region.join("s").unwrap();
        let r = region.join("r").unwrap();
        for message in messages {
            s.send_copy(message, &r.address()).unwrap();
        }
        let Address {
            slot, generation, ..
        } = r.address();
        registry::begin_leave(region.mapped(), slot, generation);
        (region, s, r)
    }

    /// `s`, alive and idle, can loan all 4 chunks of the region at once.
    #[cfg(not(shmbox_loom))]
    fn assert_every_chunk_loanable(s: &Mailbox) {
        let loans: Vec<_> = (0..4)
            .map(|i| {
                s.try_loan(1)
                    .unwrap_or_else(|e| panic!("chunk {i} of 4 lost: {e}"))
            })
            .collect();
        drop(loans);
    }

    /// Runs `f`, which stops with a panic where a process would be killed.
    #[cfg(not(shmbox_loom))]
    fn killed_in<T>(f: impl FnOnce() -> T) {
        let stopped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        assert!(stopped.is_err(), "it was to stop with a panic");
    }

    /// Sweeps the dead slot `slot` of [`leaving_with_queued`]'s region:
    /// it releases `messages` queued entries and frees `chunks` chunks in
    /// all (each once), after which `s` can loan every chunk.
    #[cfg(not(shmbox_loom))]
    fn assert_swept(region: &crate::Region, slot: u32, s: &Mailbox, messages: u32, chunks: u32) {
        let report = sweep::reclaim(region.mapped(), &region.shared.futex, slot);
        assert_eq!(
            (report.messages, report.chunks),
            (messages, chunks),
            "{report:?}"
        );
        assert_every_chunk_loanable(s);
    }

    /// A sender killed between its publishing CAS and the doorbell's ring:
    /// the receiver asleep on that entry still takes it, within one sleep
    /// slice (before, it slept until its timeout, for ever in `recv`).
    #[cfg(not(shmbox_loom))]
    #[test]
    fn a_sender_killed_before_ringing_leaves_no_receiver_asleep() {
        use crate::queue::Pushed;
        use crate::{Config, Region, WaitStrategy};
        use std::time::{Duration, Instant};
        let config = Config::default()
            .with_max_participants(4)
            .with_mailbox_capacity(4);
        let region = Region::in_process(&config).unwrap();
        let r = region.join_with("r", WaitStrategy::Park).unwrap();
        let s = region.join("s").unwrap();
        let to = r.address();
        let queue = region.mapped().mailbox(to.slot).queue;
        std::thread::scope(|scope| {
            let receiver = scope.spawn(move || {
                let got = r.recv_timeout(Duration::from_secs(10)).map(|m| m.to_vec());
                (got, Instant::now())
            });
            let deadline = Instant::now() + Duration::from_secs(5);
            while !queue.is_parked() {
                assert!(Instant::now() < deadline, "the receiver never slept");
                std::thread::sleep(Duration::from_millis(1));
            }
            let mut loan = s.try_loan(1).unwrap();
            loan[0] = 7;
            // (Quiet if the receiver's sleep slice ended just now: it then
            // looks again within microseconds, and takes it all the same.)
            assert!(matches!(
                s.publish(&loan, &to),
                Ok(Pushed::WakeConsumer | Pushed::Quiet { .. })
            ));
            let killed = Instant::now();
            loan.consume(); // killed here: published, never rung
            let (got, at) = receiver.join().unwrap();
            assert_eq!(got.unwrap(), [7]);
            let late = at - killed;
            assert!(late < Duration::from_secs(2), "taken after {late:?}");
        });
    }

    /// A receiver finding its own queue closed under it (only a scribble
    /// does that: the queue closes when its owner leaves) reports the
    /// region corrupt instead of polling it for ever without sleeping.
    #[cfg(not(shmbox_loom))]
    #[test]
    fn a_queue_closed_under_its_receiver_is_corruption() {
        use crate::{Config, RecvTimeoutError, Region, WaitStrategy};
        use std::time::{Duration, Instant};
        let region = Region::in_process(&Config::default().with_max_participants(4)).unwrap();
        for strategy in [
            WaitStrategy::Spin,
            WaitStrategy::Adaptive,
            WaitStrategy::Park,
        ] {
            let r = region.join_with("r", strategy).unwrap();
            region
                .mapped()
                .mailbox(r.address().slot)
                .queue
                .close(|_| {});
            let started = Instant::now();
            let got = r.recv_timeout(Duration::from_secs(5)).map(|m| m.to_vec());
            assert!(
                matches!(got, Err(RecvTimeoutError::Corrupt(_))),
                "{strategy:?}: {got:?}"
            );
            assert!(started.elapsed() < Duration::from_secs(2), "{strategy:?}");
        }
    }

    /// A loaner killed while waiting for an exhausted class: the sweep
    /// removes its registration. (Left behind, it made every release of
    /// the class skip the kept chunks and bump and wake, for ever.)
    #[cfg(not(shmbox_loom))]
    #[test]
    fn a_loaner_killed_while_waiting_is_no_longer_waiting() {
        use crate::{Config, Region, SizeClass};
        let config = Config::default()
            .with_classes(&[SizeClass::new(64, 4)])
            .with_max_participants(4);
        let region = Region::in_process(&config).unwrap();
        let m = region.mapped();
        // A panic unwinding out of a wait withdraws the registration.
        let alive = region.join("alive").unwrap();
        killed_in(|| {
            m.pool_waiters(0).wait_until_with(
                &region.shared.futex,
                alive.bit,
                None,
                || None::<()>,
                || panic!("stopped while registered"),
            )
        });
        assert!(!m.loaners_waiting(0), "withdrawn while unwinding");
        // Killed while registered: only the sweep can withdraw it.
        let loaner = region.join("loaner").unwrap();
        m.pool_waiters(0).leave_registered(alive.bit);
        m.pool_waiters(0).leave_registered(loaner.bit);
        let slot = loaner.address().slot;
        std::mem::forget(loaner);
        sweep::reclaim(m, &region.shared.futex, slot);
        assert!(m.loaners_waiting(0), "the live one is still registered");
        m.pool_waiters(0).forget(alive.bit);
        assert!(!m.loaners_waiting(0), "the dead loaner still waits");
    }

    /// A participant killed while releasing the entries of its own queue
    /// (as it leaves): the entry it was releasing is announced, so the
    /// sweep frees its chunk (rather than leaving it with its sender), and
    /// the sweep's close releases the entries behind it.
    #[cfg(not(shmbox_loom))]
    #[test]
    fn a_participant_killed_while_closing_its_queue_leaks_no_chunk() {
        let (region, s, r) = leaving_with_queued(&[b"one", b"two", b"three"]);
        let slot = r.address().slot;
        // `r` is killed while releasing its first entry: the entry has left
        // the queue, its chunk is not yet taken over.
        killed_in(|| r.close_queue_then(|_| panic!("killed while releasing an entry")));
        std::mem::forget(r);
        // The two entries behind the first, and the three chunks.
        assert_swept(&region, slot, &s, 2, 3);
    }

    /// A participant killed while receiving, its message out of the queue
    /// and announced, not yet taken over: the sweep releases it (the
    /// sender's send is over), and the entries behind it with the queue.
    #[cfg(not(shmbox_loom))]
    #[test]
    fn a_participant_killed_while_receiving_leaks_no_chunk() {
        use std::sync::atomic::Ordering;
        let (region, s, r) = leaving_with_queued(&[b"one", b"two"]);
        let m = region.mapped();
        let slot = r.address().slot;
        let taking = m.slot(slot).taking;
        let taken = m.mailbox(slot).queue.take_unarmed(|value| {
            taking.store(value, Ordering::Release);
        });
        assert!(taken.is_some());
        // Killed before re-arming the cell. The sweep releases the entry
        // behind it, and both chunks.
        std::mem::forget(r);
        assert_swept(&region, slot, &s, 1, 2);
        assert_eq!(taking.load(Ordering::Relaxed), 0);
    }

    /// A sweeper killed while releasing an entry of a dead participant's
    /// queue leaves it announced: the next sweep frees its chunk (rather
    /// than leaving it with its sender) and releases the entries behind it.
    #[cfg(not(shmbox_loom))]
    #[test]
    fn a_sweeper_killed_while_releasing_an_entry_leaks_no_chunk() {
        let (region, s, r) = leaving_with_queued(&[b"one", b"two", b"three"]);
        let slot = r.address().slot;
        std::mem::forget(r); // killed, its queue full
        killed_in(|| {
            sweep::reclaim_releasing(region.mapped(), &region.shared.futex, slot, |_| {
                panic!("sweeper killed")
            })
        });
        // The two entries behind the first, and the three chunks.
        assert_swept(&region, slot, &s, 2, 3);
    }

    /// A participant killed after releasing an entry of its own queue, as
    /// it leaves, no longer announces that entry: its chunk, free again,
    /// may already carry another participant's send to it, and the sweep
    /// must leave that send alone.
    #[cfg(not(shmbox_loom))]
    #[test]
    fn a_released_entry_is_no_longer_announced() {
        use std::sync::atomic::Ordering;
        let (region, s, r) = leaving_with_queued(&[b"one", b"two"]);
        let m = region.mapped();
        let slot = r.address().slot;
        let mut released = 0;
        killed_in(|| {
            r.close_queue_then(|value| {
                r.release_entry(value);
                released = value;
                panic!("killed after releasing an entry");
            })
        });
        let (r_bit, r_packed) = (r.bit, r.packed);
        std::mem::forget(r);
        // `s` loans the chunk just freed (one of the three not queued for
        // `r`), and is sending it to `r`: the holders word names both, the
        // push has not failed yet.
        let freed = m.entry(released).unwrap();
        let loans: Vec<_> = (0..3).map(|_| s.try_loan(1).unwrap()).collect();
        assert!(loans
            .iter()
            .any(|l| l.as_ptr() == freed.payload.cast_const()));
        let header = freed.header;
        header.holders.store(s.bit | r_bit, Ordering::Relaxed);
        header.sender.store(s.packed, Ordering::Relaxed);
        header.dest.store(r_packed, Ordering::Relaxed);
        sweep::reclaim(m, &region.shared.futex, slot);
        assert_eq!(
            header.holders.load(Ordering::Relaxed),
            s.bit,
            "the sweep freed a chunk the sender holds"
        );
        drop(loans);
        drop(s);
        let usage = region.pool_usage();
        assert_eq!(usage[0].free, usage[0].count, "{usage:?}");
    }
}
