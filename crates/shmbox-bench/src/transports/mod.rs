//! The transports under comparison. Each module has the parent's side of a
//! measurement and the peer's side, which runs in the re-executed process.

pub(crate) mod kernel;
pub(crate) mod raw;
pub(crate) mod shmbox;

use crate::spec::{RawKind, Strategy};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long the parent waits for one reply or one message.
pub(crate) const ROUND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a peer waits for the parent before giving up (orphaned).
pub(crate) const PEER_IDLE_TIMEOUT: Duration = Duration::from_secs(20);

/// Label of the floor the latency ratios are taken against.
pub const FLOOR: &str = "raw payload";
/// The raw payload floor with the cache hint a shmbox reply uses.
pub const FLOOR_DEMOTED: &str = "raw demoted";
/// Label of the ring floor the throughput ratios are taken against.
pub const RING_FLOOR: &str = "ring floor";
/// Label of the Unix socket, the second reference.
pub const UNIX: &str = "unix socket";

/// A ping-pong transport for the latency measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Latency {
    /// Raw shared mapping, spinning on flags (`Flag`, `Payload`) or
    /// sleeping in futexes (`Futex`).
    Raw(RawKind),
    /// shmbox with both sides waiting with this strategy.
    Shmbox(Strategy),
    /// A pair of pipes (the peer's stdin and stdout).
    Pipe,
    /// A connected Unix stream socket.
    Unix,
    /// TCP over 127.0.0.1 with `TCP_NODELAY`.
    Tcp,
}

/// Every latency transport, in table order.
pub(crate) const LATENCY: [Latency; 10] = [
    Latency::Raw(RawKind::Flag),
    Latency::Raw(RawKind::Payload),
    Latency::Raw(RawKind::PayloadDemoted),
    Latency::Raw(RawKind::Futex),
    Latency::Shmbox(Strategy::Spin),
    Latency::Shmbox(Strategy::Adaptive),
    Latency::Shmbox(Strategy::Park),
    Latency::Pipe,
    Latency::Unix,
    Latency::Tcp,
];

impl Latency {
    /// The name in tables, JSON and the plot.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Latency::Raw(RawKind::Flag) => "raw flag",
            Latency::Raw(RawKind::Payload) => FLOOR,
            Latency::Raw(RawKind::PayloadDemoted) => FLOOR_DEMOTED,
            Latency::Raw(RawKind::Futex) => "raw futex",
            Latency::Shmbox(Strategy::Spin) => "shmbox spin",
            Latency::Shmbox(Strategy::Adaptive) => "shmbox adaptive",
            Latency::Shmbox(Strategy::Park) => "shmbox park",
            Latency::Pipe => "pipe",
            Latency::Unix => UNIX,
            Latency::Tcp => "tcp loopback",
        }
    }

    /// Whether every round trip goes through the kernel's scheduler
    /// (futex wake-ups or syscalls): such transports get fewer rounds.
    pub(crate) fn slow(self) -> bool {
        !matches!(
            self,
            Latency::Raw(RawKind::Flag | RawKind::Payload | RawKind::PayloadDemoted)
                | Latency::Shmbox(Strategy::Spin | Strategy::Adaptive)
        )
    }

    /// Whether the payload size matters at all (the raw flag carries none).
    pub(crate) fn has_payload(self) -> bool {
        self != Latency::Raw(RawKind::Flag)
    }
}

/// A one-direction transport for the throughput measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Throughput {
    /// SPSC ring in shared memory (the floor).
    Ring,
    /// shmbox, receiver spinning.
    ShmboxSpin,
    /// shmbox batches (many messages per chunk), receiver spinning; small
    /// messages only.
    ShmboxBatch,
    /// Unix stream socket.
    Unix,
}

/// Every throughput transport, in table order.
pub(crate) const THROUGHPUT: [Throughput; 4] = [
    Throughput::Ring,
    Throughput::ShmboxSpin,
    Throughput::ShmboxBatch,
    Throughput::Unix,
];

/// Name of the batched shmbox transport.
pub const SHMBOX_BATCH: &str = "shmbox batch";

impl Throughput {
    /// The name in tables and JSON.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Throughput::Ring => RING_FLOOR,
            Throughput::ShmboxSpin => "shmbox spin",
            Throughput::ShmboxBatch => SHMBOX_BATCH,
            Throughput::Unix => UNIX,
        }
    }

    /// Whether it runs at message size `size`: batches only carry small
    /// messages (a record must fit in a chunk with others).
    pub(crate) fn runs_at(self, size: usize) -> bool {
        self != Throughput::ShmboxBatch || size <= crate::transports::shmbox::BATCH_RECORD_MAX
    }
}

/// Spins until `done(word)` holds; gives up after `timeout`. The clock is
/// read only every few thousand spins, so the fast path is a bare load.
#[inline]
pub(crate) fn spin_wait(
    word: &AtomicU64,
    timeout: Duration,
    done: impl Fn(u64) -> bool,
) -> Result<u64, String> {
    let mut spins = 0u32;
    let mut started = None;
    loop {
        let value = word.load(Ordering::Acquire);
        if done(value) {
            return Ok(value);
        }
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(4096)
            && started.get_or_insert_with(Instant::now).elapsed() > timeout
        {
            return Err(format!("nothing from the other side within {timeout:?}"));
        }
        core::hint::spin_loop();
    }
}

/// Checks that a reply carries the sequence number sent.
#[inline]
pub(crate) fn check_echo(sent: u64, got: u64) -> Result<(), String> {
    match sent == got {
        true => Ok(()),
        false => Err(format!("sent message {sent}, the reply carries {got}")),
    }
}

/// Mask of the message numbers at which streams read the clock: about once
/// per 64 KiB of payload, so that small messages do not pay for it.
pub(crate) fn clock_mask(size: usize) -> u64 {
    (65_536 / size.max(1)).max(1).next_power_of_two() as u64 - 1
}

/// Times a one-direction stream as the receiver sees it: from the first
/// message after a warm-up to the end marker (from the first message if
/// the stream ended within the warm-up). The clock is read only on every
/// `2^k`-th message, so small messages are not slowed by it.
pub(crate) struct Meter {
    mask: u64,
    /// The next message number [`count`](Self::count) expects.
    expected: u64,
    warmup: Duration,
    first: Option<(Instant, u64)>,
    warmed: Option<(Instant, u64)>,
}

impl Meter {
    /// A meter for messages of `size` bytes, ignoring the first `warmup`.
    pub(crate) fn new(size: usize, warmup: Duration) -> Meter {
        Meter {
            mask: clock_mask(size),
            expected: 1,
            warmup,
            first: None,
            warmed: None,
        }
    }

    /// Counts message `seq` (1, 2, 3, ...).
    #[inline]
    pub(crate) fn message(&mut self, seq: u64) {
        if seq & self.mask != 0 && seq != 1 {
            return;
        }
        let now = Instant::now();
        match self.first {
            None => self.first = Some((now, seq)),
            Some((first, _)) if self.warmed.is_none() && now - first >= self.warmup => {
                self.warmed = Some((now, seq));
            }
            Some(_) => {}
        }
    }

    /// Counts the next message of a lossless stream, numbered `seq`:
    /// `Ok(Some((messages, seconds)))` at the end marker, an error if a
    /// message is missing or out of order.
    #[inline]
    pub(crate) fn count(&mut self, seq: u64) -> Result<Option<(u64, f64)>, String> {
        if seq == crate::spec::END {
            return self.finish(self.expected - 1).map(Some);
        }
        if seq != self.expected {
            return Err(format!("expected message {}, got {seq}", self.expected));
        }
        self.message(seq);
        self.expected += 1;
        Ok(None)
    }

    /// The end marker arrived after message `last`: (messages, seconds)
    /// measured.
    pub(crate) fn finish(&self, last: u64) -> Result<(u64, f64), String> {
        let end = Instant::now();
        [self.warmed, self.first]
            .into_iter()
            .flatten()
            .map(|(start, seq0)| (last.saturating_sub(seq0), (end - start).as_secs_f64()))
            .find(|&(messages, secs)| messages > 0 && secs > 0.0)
            .ok_or_else(|| format!("too few messages to time ({last})"))
    }
}
