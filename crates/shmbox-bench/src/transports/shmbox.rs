//! shmbox itself: ping-pong in each wait strategy, one-direction
//! throughput with a spinning receiver, and many senders into one mailbox.
//!
//! Ping loans a chunk of the payload size, writes it in place and sends
//! it; pong reads it in place, loans a chunk of the same size for the
//! reply, sends it back to the sender and then drops the message.

use super::{check_echo, clock_mask, Meter, PEER_IDLE_TIMEOUT, ROUND_TIMEOUT};
use crate::measure::{new_histogram, sample, Ctx, LatencyBudget};
use crate::payload;
use crate::proc::Peer;
use crate::spec::{Role, Strategy, END};
use hdrhistogram::Histogram;
use shmbox::{Address, Config, Mailbox, Region, SizeClass, TryRecvError, WaitStrategy};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The region config: shmbox's default classes, plus a 16 MiB class when
/// the run needs it (4 chunks: 64 MiB more, 86 MiB in all).
pub(crate) fn config(max_size: usize) -> Config {
    let mut classes = Config::default().classes().to_vec();
    let largest = classes.last().map_or(0, |c| c.size);
    if max_size as u64 > largest {
        classes.push(SizeClass::new(crate::measure::MAX_SIZE as u64, 4));
    }
    Config::default()
        .with_classes(&classes)
        .with_max_participants(8)
}

/// A region of this run; removed (its name unlinked) when dropped, also
/// on error paths. Processes still attached keep their mapping.
pub(crate) struct BenchRegion {
    region: Region,
    name: String,
}

impl BenchRegion {
    /// Creates a fresh region for `tag` with [`config`].
    pub(crate) fn create(tag: &str, max_size: usize) -> Result<BenchRegion, String> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("bench-{}-{tag}-{n}", std::process::id());
        let region = Region::create(&name, &config(max_size))
            .map_err(|e| format!("creating region {name}: {e}"))?;
        Ok(BenchRegion { region, name })
    }

    /// The region's handle.
    pub(crate) fn region(&self) -> &Region {
        &self.region
    }
}

impl Drop for BenchRegion {
    fn drop(&mut self) {
        if let Err(e) = Region::remove(&self.name) {
            eprintln!("shmbox-bench: could not remove region '{}': {e}", self.name);
        }
    }
}

/// Memory held by a region of the default config, after one message of
/// every size class has gone through it.
pub(crate) fn memory() -> Result<crate::targets::MemoryRow, String> {
    let config = Config::default();
    let name = format!("bench-{}-memory", std::process::id());
    let region =
        Region::create(&name, &config).map_err(|e| format!("creating region {name}: {e}"))?;
    let guard = BenchRegion {
        region: region.clone(),
        name,
    };
    let me = join(&region, "memory", WaitStrategy::Spin)?;
    for class in config.classes() {
        let len = class.size as usize;
        let mut loan = me.try_loan(len).map_err(|e| e.to_string())?;
        loan.fill(0xa5);
        me.try_send(loan, &me.address())
            .map_err(|e| e.to_string())?;
        let msg = me.try_recv().map_err(|e| e.to_string())?;
        if msg.len() != len {
            return Err(format!("sent {len} bytes, received {}", msg.len()));
        }
    }
    let resident_bytes = region
        .resident_bytes()
        .map_err(|e| format!("reading the region's size in memory: {e}"))?;
    drop(me);
    drop(guard);
    Ok(crate::targets::MemoryRow {
        config: config.to_string(),
        total_size: config.total_size(),
        resident_bytes,
        payload_bytes: config
            .classes()
            .iter()
            .map(|c| c.size * u64::from(c.count))
            .sum(),
    })
}

fn join(region: &Region, name: &str, strategy: WaitStrategy) -> Result<Mailbox, String> {
    region
        .join_with(name, strategy)
        .map_err(|e| format!("joining as {name}: {e}"))
}

/// Waits for `name` to join (failing early if `peer` exits).
fn wait_for(peer: &mut Peer, region: &Region, name: &str) -> Result<Address, String> {
    peer.wait_ready(|| Ok(region.address(name).ok()))
}

/// Loans `size` bytes, writes `seq` (and with `written` the rest), sends.
#[inline]
fn send(
    from: &Mailbox,
    to: &Address,
    size: usize,
    seq: u64,
    written: bool,
    timeout: Duration,
) -> Result<(), String> {
    let mut loan = from
        .loan_timeout(size, timeout)
        .map_err(|e| format!("loan: {e}"))?;
    payload::write(&mut loan, seq, written);
    from.send_timeout(loan, to, timeout)
        .map_err(|e| format!("send: {e}"))
}

/// One latency measurement: both sides wait with `strategy`.
pub(crate) fn latency(
    ctx: &mut Ctx,
    region: &BenchRegion,
    strategy: Strategy,
    size: usize,
    written: bool,
    budget: &LatencyBudget,
) -> Result<Histogram<u64>, String> {
    let region_ref = region.region();
    let ping = join(region_ref, "ping", strategy.into())?;
    let role = Role::ShmboxPong {
        region: region.name.clone(),
        strategy,
        written,
    };
    let mut peer = ctx.launcher.spawn(role, false, ctx.plan.peer_deadline())?;
    let pong = wait_for(&mut peer, region_ref, "pong")?;
    let result = sample(budget, |seq| {
        send(&ping, &pong, size, seq, written, ROUND_TIMEOUT)?;
        let reply = ping
            .recv_timeout(ROUND_TIMEOUT)
            .map_err(|e| format!("recv: {e}"))?;
        check_echo(seq, payload::read(&reply, written)?)
    });
    let histogram = result.map_err(|e| peer.explain(e))?;
    send(&ping, &pong, 8, END, false, ROUND_TIMEOUT).map_err(|e| peer.explain(e))?;
    peer.finish()?;
    Ok(histogram)
}

/// The peer's side of the ping-pong.
pub(crate) fn pong(region: &str, strategy: Strategy, written: bool) -> Result<(), String> {
    let region = Region::open(region).map_err(|e| e.to_string())?;
    let pong = join(&region, "pong", strategy.into())?;
    loop {
        let msg = pong
            .recv_timeout(PEER_IDLE_TIMEOUT)
            .map_err(|e| format!("recv: {e}"))?;
        let seq = payload::read(&msg, written)?;
        if seq == END {
            return Ok(());
        }
        send(
            &pong,
            &msg.sender(),
            msg.len(),
            seq,
            written,
            PEER_IDLE_TIMEOUT,
        )?;
        drop(msg);
    }
}

/// One throughput measurement: the peer sends `size`-byte messages, this
/// process receives them spinning and checks every sequence number.
pub(crate) fn throughput(
    ctx: &mut Ctx,
    region: &BenchRegion,
    size: usize,
    reads: bool,
) -> Result<(u64, f64), String> {
    let region_ref = region.region();
    let rx = join(region_ref, "rx", WaitStrategy::Spin)?;
    let role = Role::ShmboxSender {
        region: region.name.clone(),
        name: "tx".into(),
        size,
        run_ms: (ctx.plan.stream_time + ctx.plan.warmup).as_millis() as u64,
        wait_for_go: false,
    };
    count_stream(ctx, &rx, role, size, reads, false)
}

/// Chunk size the batched transport packs messages into.
pub(crate) const BATCH_BYTES: usize = 16384;
/// Largest message the batched transport sends.
pub(crate) const BATCH_RECORD_MAX: usize = 64;

/// One throughput measurement with batches: the peer packs `size`-byte
/// messages into [`BATCH_BYTES`] chunks, this process receives the batches
/// spinning and checks every message's sequence number.
pub(crate) fn batch_throughput(
    ctx: &mut Ctx,
    region: &BenchRegion,
    size: usize,
    reads: bool,
) -> Result<(u64, f64), String> {
    let rx = join(region.region(), "rx", WaitStrategy::Spin)?;
    let role = Role::ShmboxBatchSender {
        region: region.name.clone(),
        size,
        run_ms: (ctx.plan.stream_time + ctx.plan.warmup).as_millis() as u64,
    };
    count_stream(ctx, &rx, role, size, reads, true)
}

/// Receives the stream `role` sends to `rx` (plain messages, or batches
/// with `batches`) and checks every message's sequence number, up to the
/// end marker: (messages, seconds) after the warm-up.
fn count_stream(
    ctx: &mut Ctx,
    rx: &Mailbox,
    role: Role,
    size: usize,
    reads: bool,
    batches: bool,
) -> Result<(u64, f64), String> {
    let mut meter = Meter::new(size, ctx.plan.warmup);
    receive_from_peer(ctx, rx, role, |msg| {
        if msg.is_batch() != batches {
            return Err(match batches {
                true => "a message that is not a batch".into(),
                false => "a batch where single messages were expected".into(),
            });
        }
        // A plain message is one record.
        for record in msg.records() {
            let record = record.map_err(|e| e.to_string())?;
            if let Some(done) = meter.count(payload::read(record, reads)?)? {
                return Ok(Some(done));
            }
        }
        Ok(None)
    })
}

/// The peer's side of [`batch_throughput`]: fill a batch with messages,
/// send it, repeat for `run_ms`; the last message is the end marker.
pub(crate) fn batch_sender(region: &str, size: usize, run_ms: u64) -> Result<(), String> {
    let region = Region::open(region).map_err(|e| e.to_string())?;
    let tx = join(&region, "tx", WaitStrategy::Park)?;
    let rx = region.address("rx").map_err(|e| e.to_string())?;
    let run = Duration::from_millis(run_ms);
    let mask = clock_mask(size);
    let started = Instant::now();
    let mut seq = 1u64;
    loop {
        let mut batch = tx
            .batch_timeout(BATCH_BYTES, PEER_IDLE_TIMEOUT)
            .map_err(|e| format!("batch: {e}"))?;
        let mut ended = false;
        while !ended {
            let Some(record) = batch.push(size) else {
                break; // full: send it and start the next
            };
            ended = seq & mask == 0 && started.elapsed() >= run;
            payload::write(record, if ended { END } else { seq }, true);
            seq += 1;
        }
        tx.send_timeout(batch.finish(), &rx, PEER_IDLE_TIMEOUT)
            .map_err(|e| format!("send: {e}"))?;
        if ended {
            return Ok(());
        }
    }
}

/// Spawns `role` as the peer, then hands every message arriving in `rx` to
/// `each` until it returns a result. A failure is explained by what
/// happened to the peer; the peer is reaped either way.
fn receive_from_peer<T>(
    ctx: &mut Ctx,
    rx: &Mailbox,
    role: Role,
    mut each: impl FnMut(shmbox::Message<'_>) -> Result<Option<T>, String>,
) -> Result<T, String> {
    let mut peer = ctx.launcher.spawn(role, false, ctx.plan.peer_deadline())?;
    let first = peer.wait_ready(|| match rx.try_recv() {
        Ok(m) => Ok(Some(m)),
        Err(TryRecvError::Empty) => Ok(None),
        Err(e) => Err(e.to_string()),
    })?;
    let result = (|| {
        let mut msg = first;
        loop {
            if let Some(done) = each(msg)? {
                return Ok(done);
            }
            msg = rx
                .recv_timeout(ROUND_TIMEOUT)
                .map_err(|e| format!("recv: {e}"))?;
        }
    })();
    let result = result.map_err(|e| peer.explain(e))?;
    peer.finish()?;
    Ok(result)
}

/// The peer's side of throughput and many-to-one: join as `name`,
/// optionally wait for a go message, then send to "rx" for `run_ms`, then
/// the end marker.
pub(crate) fn sender(
    region: &str,
    name: &str,
    size: usize,
    run_ms: u64,
    wait_for_go: bool,
) -> Result<(), String> {
    let region = Region::open(region).map_err(|e| e.to_string())?;
    let tx = join(&region, name, WaitStrategy::Park)?;
    let rx = region.address("rx").map_err(|e| e.to_string())?;
    if wait_for_go {
        drop(
            tx.recv_timeout(PEER_IDLE_TIMEOUT)
                .map_err(|e| format!("waiting for go: {e}"))?,
        );
    }
    let run = Duration::from_millis(run_ms);
    let mask = clock_mask(size);
    let started = Instant::now();
    let mut seq = 1u64;
    loop {
        let done = seq & mask == 0 && started.elapsed() >= run;
        let value = if done { END } else { seq };
        send(&tx, &rx, size, value, true, PEER_IDLE_TIMEOUT)?;
        if done {
            return Ok(());
        }
        seq += 1;
    }
}

/// Many-to-one: `senders` peers send 8-byte messages into one spinning
/// mailbox at once; every message is checked per sender. Returns
/// (messages, seconds) counted while all senders were sending: after the
/// warm-up, until the first end marker.
pub(crate) fn fan_in(
    ctx: &mut Ctx,
    region: &BenchRegion,
    senders: usize,
) -> Result<(u64, f64), String> {
    let region_ref = region.region();
    let rx = join(region_ref, "rx", WaitStrategy::Spin)?;
    ctx.launcher.reset_cpus();
    let mut peers = Vec::with_capacity(senders);
    let mut addresses = Vec::with_capacity(senders);
    for i in 0..senders {
        let name = format!("tx{i}");
        let role = Role::ShmboxSender {
            region: region.name.clone(),
            name: name.clone(),
            size: 8,
            run_ms: (ctx.plan.stream_time + ctx.plan.warmup).as_millis() as u64,
            wait_for_go: true,
        };
        let mut peer = ctx.launcher.spawn(role, false, ctx.plan.peer_deadline())?;
        addresses.push(wait_for(&mut peer, region_ref, &name)?);
        peers.push(peer);
    }
    for to in &addresses {
        rx.send_copy(&0u64.to_le_bytes(), to)
            .map_err(|e| format!("sending go: {e}"))?;
    }
    let warmup = ctx.plan.warmup;
    let result = (|| {
        let mut expected: HashMap<u32, u64> = addresses.iter().map(|a| (a.slot(), 1)).collect();
        let mut meter = Meter::new(8, warmup);
        let (mut ended, mut messages, mut measured) = (0, 0u64, None);
        while ended < senders {
            let msg = rx
                .recv_timeout(ROUND_TIMEOUT)
                .map_err(|e| format!("recv: {e}"))?;
            let seq = payload::read(&msg, false)?;
            let slot = msg.sender().slot();
            let next = expected
                .get_mut(&slot)
                .ok_or_else(|| format!("message from unknown sender {}", msg.sender()))?;
            if seq == END {
                ended += 1;
                if measured.is_none() {
                    measured = Some(meter.finish(messages)?);
                }
            } else if seq != *next {
                return Err(format!("sender {slot}: expected message {next}, got {seq}"));
            } else {
                *next += 1;
                messages += 1;
                meter.message(messages);
            }
        }
        measured.ok_or_else(|| "no sender finished".to_string())
    })();
    let result = result.map_err(|e| peers.iter_mut().fold(e, |e, p| p.explain(e)))?;
    for peer in peers {
        peer.finish()?;
    }
    Ok(result)
}

/// Nanoseconds on CLOCK_MONOTONIC, the same clock in every process.
fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// A steady stream: the peer sends one 8-byte timestamp every `interval`,
/// faster than the Adaptive spin window; this process receives with
/// `strategy` and records each message's one-way latency (receive time
/// minus send time, on the shared monotonic clock). The first tenth is a
/// warm-up.
pub(crate) fn stream_latency(
    ctx: &mut Ctx,
    region: &BenchRegion,
    strategy: WaitStrategy,
    interval: Duration,
    count: u64,
) -> Result<Histogram<u64>, String> {
    let region_ref = region.region();
    let rx = join(region_ref, "rx", strategy)?;
    let role = Role::ShmboxPaced {
        region: region.name.clone(),
        interval_ns: interval.as_nanos() as u64,
        count,
    };
    let mut histogram = new_histogram();
    let mut n = 0u64;
    receive_from_peer(ctx, &rx, role, |msg| {
        let now = monotonic_ns();
        let sent = u64::from_le_bytes(msg[..8].try_into().map_err(|_| "short message")?);
        if sent == END {
            return Ok(Some(std::mem::replace(&mut histogram, new_histogram())));
        }
        n += 1;
        if n > count / 10 {
            histogram.saturating_record(now.saturating_sub(sent).max(1));
        }
        Ok(None)
    })
}

/// The peer's side of [`stream_latency`].
pub(crate) fn paced_sender(region: &str, interval_ns: u64, count: u64) -> Result<(), String> {
    let region = Region::open(region).map_err(|e| e.to_string())?;
    let tx = join(&region, "tx", WaitStrategy::Park)?;
    let rx = region.address("rx").map_err(|e| e.to_string())?;
    let start = monotonic_ns();
    for i in 0..count {
        let due = start + i * interval_ns;
        while monotonic_ns() < due {
            std::hint::spin_loop();
        }
        let mut loan = tx
            .loan_timeout(8, PEER_IDLE_TIMEOUT)
            .map_err(|e| e.to_string())?;
        loan.copy_from_slice(&monotonic_ns().to_le_bytes());
        tx.send_timeout(loan, &rx, PEER_IDLE_TIMEOUT)
            .map_err(|e| e.to_string())?;
    }
    let mut end = tx
        .loan_timeout(8, PEER_IDLE_TIMEOUT)
        .map_err(|e| e.to_string())?;
    end.copy_from_slice(&END.to_le_bytes());
    tx.send_timeout(end, &rx, PEER_IDLE_TIMEOUT)
        .map_err(|e| e.to_string())
}
