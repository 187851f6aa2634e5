//! The floors: what two processes sharing a plain mapping can do at best.
//!
//! * Ping-pong (`raw flag`, `raw payload`, `raw demoted`, `raw
//!   futex`): control line 0
//!   carries ping's sequence number, line 1 pong's echo; the byte area holds
//!   two payload buffers. Round `seq` sends in buffer `seq % 2` and replies
//!   in the other, so each side writes the buffer it read last (its lines
//!   are still in the writer's cache: only an invalidation crosses to the
//!   other core, not the data). This is the best case, and what shmbox's
//!   chunk reuse achieves too; fixed buffers per direction are up to twice
//!   as slow for large payloads. `raw demoted` also moves the
//!   first line of the buffer it wrote to the shared cache after its flag
//!   store (x86 `CLDEMOTE`), the hint a shmbox reply gives its chunk: the
//!   floor for a design that uses it. The flag variant has no payload; the
//!   futex variant sleeps in `FUTEX_WAIT` on the 32-bit words of the same
//!   lines and is woken with `FUTEX_WAKE` (shared futexes, never a spin).
//! * The ring floor: a single-producer single-consumer ring of fixed-size
//!   slots; line 0 is the producer's head, line 1 the consumer's tail,
//!   line 2 the producer's ready flag. Each side keeps the other's index
//!   cached and stores its own once per [`publish_every`] slots (and
//!   before it waits), so small messages do not cost a cache-line
//!   transfer each: the floor a batching design is measured against.

use super::{check_echo, clock_mask, spin_wait, Meter, PEER_IDLE_TIMEOUT, ROUND_TIMEOUT};
use crate::measure::{sample, Ctx, LatencyBudget};
use crate::payload;
use crate::shm::{self, SharedMem};
use crate::spec::{RawKind, Role, END};
use hdrhistogram::Histogram;
use rustix::io::Errno;
use rustix::thread::futex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const PING: usize = 0;
const PONG: usize = 1;
const HEAD: usize = 0;
const TAIL: usize = 1;
const RING_READY: usize = 2;
/// What a peer stores once it has mapped the object.
const READY: u64 = u64::MAX - 1;
/// The futex word's stop value.
const FUTEX_END: u32 = u32::MAX;

/// Slots in the ring floor for `slot_size`-byte messages: at most 2 MiB
/// (the ring stays in a core's L2 cache, so it is the best case: 2 slots of
/// 1 MiB beat 8 by half), at least 2 slots, at most 4096 (32 KiB of 8-byte
/// slots).
pub(crate) fn ring_slots(slot_size: usize) -> usize {
    ((2 << 20) / slot_size).clamp(2, 4096)
}

/// How many slots the ring floor's producer fills (and its consumer
/// empties) between two stores of its index: one index update for several
/// messages, as a batching ring does, so a stream of small messages is not
/// one cache-line transfer per message. An eighth of the ring, 1 to 64.
fn publish_every(slots: usize) -> u64 {
    (slots as u64 / 8).clamp(1, 64)
}

/// Byte range of the buffer that carries round `seq`'s message, and of
/// the one that carries its reply.
fn buffers(seq: u64, size: usize) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
    let (msg, reply) = match seq % 2 {
        0 => (0, size),
        _ => (size, 0),
    };
    (msg..msg + size, reply..reply + size)
}

fn data_len(kind: RawKind, size: usize) -> usize {
    match kind {
        RawKind::Flag => 0,
        RawKind::Payload | RawKind::PayloadDemoted | RawKind::Futex => 2 * size,
    }
}

/// One latency measurement of a raw floor.
pub(crate) fn latency(
    ctx: &mut Ctx,
    kind: RawKind,
    size: usize,
    written: bool,
    budget: &LatencyBudget,
) -> Result<Histogram<u64>, String> {
    let object = shm::object_name("raw");
    let (mut mem, unlink) = SharedMem::create(&object, 2, data_len(kind, size))?;
    let role = Role::RawPong {
        object,
        kind,
        size,
        written,
    };
    let mut peer = ctx.launcher.spawn(role, false, ctx.plan.peer_deadline())?;
    peer.wait_ready(|| Ok((mem.line(PONG).word.load(Ordering::Acquire) == READY).then_some(())))?;
    // Both sides have it mapped: the name is not needed any more.
    drop(unlink);
    let result = sample(budget, |seq| match kind {
        RawKind::Flag => flag_round(&mem, seq),
        RawKind::Payload => payload_round(&mut mem, size, written, seq, false),
        RawKind::PayloadDemoted => payload_round(&mut mem, size, written, seq, true),
        RawKind::Futex => futex_round(&mut mem, size, written, seq),
    });
    let histogram = result.map_err(|e| peer.explain(e))?;
    match kind {
        RawKind::Futex => {
            let word = &mem.line(PING).futex;
            word.store(FUTEX_END, Ordering::Release);
            futex::wake(word, futex::Flags::empty(), 1).map_err(|e| format!("futex wake: {e}"))?;
        }
        _ => mem.line(PING).word.store(END, Ordering::Release),
    }
    peer.finish()?;
    Ok(histogram)
}

#[inline]
fn flag_round(mem: &SharedMem, seq: u64) -> Result<(), String> {
    mem.line(PING).word.store(seq, Ordering::Release);
    spin_wait(&mem.line(PONG).word, ROUND_TIMEOUT, |v| v == seq)?;
    Ok(())
}

#[inline]
fn payload_round(
    mem: &mut SharedMem,
    size: usize,
    written: bool,
    seq: u64,
    demote: bool,
) -> Result<(), String> {
    let (msg, reply) = buffers(seq, size);
    payload::write(&mut mem.data_mut()[msg.clone()], seq, written);
    mem.line(PING).word.store(seq, Ordering::Release);
    if demote {
        mem.demote_data(msg.start);
    }
    spin_wait(&mem.line(PONG).word, ROUND_TIMEOUT, |v| v == seq)?;
    check_echo(seq, payload::read(&mem.data()[reply], written)?)
}

#[inline]
fn futex_round(mem: &mut SharedMem, size: usize, written: bool, seq: u64) -> Result<(), String> {
    let (msg, reply) = buffers(seq, size);
    payload::write(&mut mem.data_mut()[msg], seq, written);
    let (ping, pong) = (&mem.line(PING).futex, &mem.line(PONG).futex);
    ping.store(seq as u32, Ordering::Release);
    futex::wake(ping, futex::Flags::empty(), 1).map_err(|e| format!("futex wake: {e}"))?;
    futex_wait_for(pong, ROUND_TIMEOUT, |v| v == seq as u32)?;
    check_echo(seq, payload::read(&mem.data()[reply], written)?)
}

/// Sleeps on the shared futex `word` until `done(word)` holds; never spins.
/// Gives up when one wait times out without `done`.
fn futex_wait_for(
    word: &AtomicU32,
    timeout: Duration,
    done: impl Fn(u32) -> bool,
) -> Result<u32, String> {
    let ts = futex::Timespec {
        tv_sec: timeout.as_secs() as _,
        tv_nsec: timeout.subsec_nanos() as _,
    };
    loop {
        let value = word.load(Ordering::Acquire);
        if done(value) {
            return Ok(value);
        }
        match futex::wait(word, futex::Flags::empty(), value, Some(&ts)) {
            Ok(()) | Err(Errno::AGAIN) | Err(Errno::INTR) => {}
            Err(Errno::TIMEDOUT) if done(word.load(Ordering::Acquire)) => {}
            Err(Errno::TIMEDOUT) => {
                return Err(format!("nothing from the other side within {timeout:?}"))
            }
            Err(e) => return Err(format!("futex wait: {e}")),
        }
    }
}

/// The peer's side of a raw ping-pong: echo until told to stop.
pub(crate) fn pong(object: &str, kind: RawKind, size: usize, written: bool) -> Result<(), String> {
    let mut mem = SharedMem::open(object, 2, data_len(kind, size))?;
    mem.line(PONG).word.store(READY, Ordering::Release);
    let mut last = 0u64;
    loop {
        let seq = match kind {
            RawKind::Futex => {
                let last32 = last as u32;
                let v = futex_wait_for(&mem.line(PING).futex, PEER_IDLE_TIMEOUT, |v| v != last32)?;
                if v == FUTEX_END {
                    return Ok(());
                }
                u64::from(v)
            }
            _ => {
                let v = spin_wait(&mem.line(PING).word, PEER_IDLE_TIMEOUT, |v| v != last)?;
                if v == END {
                    return Ok(());
                }
                v
            }
        };
        if kind != RawKind::Flag {
            let (msg, reply) = buffers(seq, size);
            let got = payload::read(&mem.data()[msg], written)?;
            if got as u32 != seq as u32 {
                return Err(format!("flag says {seq}, payload says {got}"));
            }
            payload::write(&mut mem.data_mut()[reply], got, written);
        }
        match kind {
            RawKind::Futex => {
                let word = &mem.line(PONG).futex;
                word.store(seq as u32, Ordering::Release);
                futex::wake(word, futex::Flags::empty(), 1)
                    .map_err(|e| format!("futex wake: {e}"))?;
            }
            _ => mem.line(PONG).word.store(seq, Ordering::Release),
        }
        if kind == RawKind::PayloadDemoted {
            mem.demote_data(buffers(seq, size).1.start);
        }
        last = seq;
    }
}

/// One throughput measurement of the ring floor: the peer produces for
/// `stream_time` plus warm-up, this process consumes and checks every
/// message. Returns (messages, seconds) after the warm-up.
pub(crate) fn ring_throughput(
    ctx: &mut Ctx,
    size: usize,
    reads: bool,
) -> Result<(u64, f64), String> {
    let slots = ring_slots(size);
    let object = shm::object_name("ring");
    let (mem, unlink) = SharedMem::create(&object, 3, slots * size)?;
    let role = Role::RingSender {
        object,
        slot_size: size,
        slots,
        run_ms: (ctx.plan.stream_time + ctx.plan.warmup).as_millis() as u64,
    };
    let mut peer = ctx.launcher.spawn(role, false, ctx.plan.peer_deadline())?;
    peer.wait_ready(|| {
        Ok((mem.line(RING_READY).word.load(Ordering::Acquire) == READY).then_some(()))
    })?;
    drop(unlink);
    let result = consume(&mem, size, slots, reads, ctx.plan.warmup).map_err(|e| peer.explain(e))?;
    peer.finish()?;
    Ok(result)
}

fn consume(
    mem: &SharedMem,
    size: usize,
    slots: usize,
    reads: bool,
    warmup: Duration,
) -> Result<(u64, f64), String> {
    let (head, tail) = (&mem.line(HEAD).word, &mem.line(TAIL).word);
    let mut meter = Meter::new(size, warmup);
    let every = publish_every(slots);
    let (mut pos, mut cached_head) = (0u64, 0u64);
    loop {
        if pos == cached_head {
            // Hand back what we consumed before waiting for more.
            tail.store(pos, Ordering::Release);
            cached_head = spin_wait(head, ROUND_TIMEOUT, |h| h != pos)?;
        }
        let at = (pos % slots as u64) as usize * size;
        let seq = payload::read(&mem.data()[at..at + size], reads)?;
        pos += 1;
        if pos.is_multiple_of(every) {
            tail.store(pos, Ordering::Release);
        }
        if let Some(done) = meter.count(seq)? {
            return Ok(done);
        }
    }
}

/// The peer's side of the ring floor: produce until `run_ms` has passed,
/// then the end marker.
pub(crate) fn ring_sender(
    object: &str,
    size: usize,
    slots: usize,
    run_ms: u64,
) -> Result<(), String> {
    let mut mem = SharedMem::open(object, 3, slots * size)?;
    mem.line(RING_READY).word.store(READY, Ordering::Release);
    let run = Duration::from_millis(run_ms);
    let mask = clock_mask(size);
    let started = Instant::now();
    let every = publish_every(slots);
    let (mut head, mut cached_tail, mut seq) = (0u64, 0u64, 1u64);
    loop {
        let done = seq & mask == 0 && started.elapsed() >= run;
        let value = if done { END } else { seq };
        if head - cached_tail == slots as u64 {
            // Publish what we wrote before waiting for room.
            mem.line(HEAD).word.store(head, Ordering::Release);
            let tail = &mem.line(TAIL).word;
            cached_tail = spin_wait(tail, PEER_IDLE_TIMEOUT, |t| head - t < slots as u64)?;
        }
        let at = (head % slots as u64) as usize * size;
        payload::write(&mut mem.data_mut()[at..at + size], value, true);
        head += 1;
        if done || head.is_multiple_of(every) {
            mem.line(HEAD).word.store(head, Ordering::Release);
        }
        if done {
            return Ok(());
        }
        seq += 1;
    }
}
