//! What shmbox's publication protocol costs on this machine, apart from
//! the code around it: two threads pinned to CPUs 0 and 1 ping-pong an
//! 8-byte value, round trip / 2, p50 of 200,000 rounds, five alternating
//! runs of each variant:
//!
//! * `raw flag + payload`: the latency floor (plain stores and loads);
//! * `protocol`: the same value moved the way shmbox moves it, and nothing
//!   else: the sender writes the chunk's payload and header, adds the
//!   receiver to the holders word (a plain store) and publishes with a CAS
//!   on the receiver's queue cell; the receiver polls the cell, re-arms it
//!   with a swap, takes the chunk over with a plain store to its holders
//!   word and reads the header and the payload. The chunks alternate as in a
//!   shmbox round trip (each side answers with the chunk it received one
//!   round before). Each side knows in advance which chunk comes next;
//! * `protocol, chunk named by the cell`: the same, except that the
//!   receiver learns which chunk it got from the value in the cell (the
//!   chunk's number, looked up in a table), as any design that passes
//!   offsets must: its header's fetch can only start once the cell's value
//!   is in;
//! * `shmbox`: the library itself (`try_loan`, `try_send`, `try_recv`,
//!   Spin), in-process.
//!
//! `cargo run --release -p shmbox-bench --example protocol_floor`

mod common;

use common::{p50_one_way, pin, spin_receive};
use shmbox::{Config, Region, WaitStrategy};
use std::sync::atomic::{AtomicU64, Ordering::*};
use std::time::{Duration, Instant};

const ROUNDS: u64 = 200_000;
const RUNS: usize = 5;
const CELLS: u64 = 256;
/// How long a side waits for the other before the run fails.
const WAIT_LIMIT: Duration = Duration::from_secs(1);

#[repr(C, align(128))]
struct Line([AtomicU64; 8]);

impl Line {
    fn new() -> Line {
        Line(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

/// One direction: the receiver's queue cells and a flag for the floor.
struct Queue {
    cells: Vec<Line>,
    flag: Line,
}

impl Queue {
    fn new() -> Queue {
        let q = Queue {
            cells: (0..CELLS / 8).map(|_| Line::new()).collect(),
            flag: Line::new(),
        };
        for pos in 0..CELLS {
            q.cell(pos).store(pos << 32, Relaxed);
        }
        q
    }

    fn cell(&self, pos: u64) -> &AtomicU64 {
        let i = (pos % CELLS) as usize;
        &self.cells[i / 8].0[i % 8]
    }
}

/// A chunk: its header line and its first payload line, one 128-byte pair.
#[repr(C, align(128))]
struct Chunk {
    header: Line,
    payload: Line,
}

#[inline(always)]
fn prefetch_write(p: &AtomicU64) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it never faults and changes nothing.
    unsafe {
        core::arch::asm!("prefetchw [{}]", in(reg) p.as_ptr(), options(nostack, preserves_flags, readonly));
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    Raw,
    Protocol,
    /// The protocol, with the chunk named by the cell's value.
    Named,
}

#[inline(always)]
/// `number` is the chunk's index in the run's table; the `Named` variant
/// publishes it in the cell.
fn send(q: &Queue, k: &Chunk, v: Variant, pos: u64, value: u64, number: u64) {
    prefetch_write(&k.payload.0[0]);
    k.payload.0[0].store(value, Relaxed);
    if v == Variant::Raw {
        q.flag.0[0].store(pos + 1, Release);
        return;
    }
    let cell = q.cell(pos);
    prefetch_write(cell);
    k.header.0[1].store(8, Relaxed);
    k.header.0[2].store(1, Relaxed);
    k.header.0[3].store(2, Relaxed);
    k.header.0[0].store(3, Relaxed);
    let entry = if v == Variant::Named { number } else { 5 };
    cell.compare_exchange(pos << 32, ((pos + 1) << 32) | entry, AcqRel, Acquire)
        .expect("the cell is empty");
}

#[inline(always)]
/// `table` holds the run's chunks, for the `Named` variant.
fn recv<'a>(q: &Queue, k: &'a Chunk, v: Variant, pos: u64, table: &'a [Chunk]) -> u64 {
    if v == Variant::Raw {
        spin_until(|| q.flag.0[0].load(Acquire) == pos + 1);
        return k.payload.0[0].load(Relaxed);
    }
    let cell = q.cell(pos);
    let k = if v == Variant::Named {
        let mut current = 0;
        spin_until(|| {
            current = cell.load(Acquire);
            current >> 32 == pos + 1
        });
        &table[(current as u32 as usize) % table.len()]
    } else {
        spin_until(|| cell.load(Acquire) >> 32 == pos + 1);
        k
    };
    prefetch_write(&k.header.0[0]);
    cell.swap((pos + CELLS) << 32, AcqRel);
    let holders = &k.header.0[0];
    let current = holders.load(Acquire);
    assert!(current & 2 != 0, "the receiver holds the chunk");
    holders.store(current & !1, Release);
    let len = k.header.0[1].load(Relaxed);
    assert!(len == 8 && k.header.0[3].load(Relaxed) == 2);
    k.payload.0[0].load(Relaxed)
}

/// Spins until `done`; panics (ending the run, not hanging it) if the other
/// side has not answered within a second.
#[inline(always)]
fn spin_until(mut done: impl FnMut() -> bool) {
    let mut spins = 0u32;
    let mut since = None;
    while !done() {
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(4096)
            && since.get_or_insert_with(Instant::now).elapsed() > WAIT_LIMIT
        {
            panic!("no answer within {WAIT_LIMIT:?}");
        }
        core::hint::spin_loop();
    }
}

fn run_skeleton(v: Variant) -> u64 {
    let (to_pong, to_ping) = (Queue::new(), Queue::new());
    let chunks = [
        Chunk {
            header: Line::new(),
            payload: Line::new(),
        },
        Chunk {
            header: Line::new(),
            payload: Line::new(),
        },
    ];
    let chunk = |i: u64| &chunks[(i % 2) as usize];
    std::thread::scope(|s| {
        s.spawn(|| {
            pin(1);
            for pos in 0..ROUNDS {
                let value = recv(&to_pong, chunk(pos), v, pos, &chunks);
                send(&to_ping, chunk(pos + 1), v, pos, value, (pos + 1) % 2);
            }
        });
        pin(0);
        let mut rtt = Vec::with_capacity(ROUNDS as usize);
        for pos in 0..ROUNDS {
            let t = Instant::now();
            send(&to_pong, chunk(pos), v, pos, pos, pos % 2);
            let value = recv(&to_ping, chunk(pos + 1), v, pos, &chunks);
            rtt.push(t.elapsed().as_nanos() as u64);
            assert_eq!(value, pos);
        }
        p50_one_way(rtt)
    })
}

fn run_shmbox() -> u64 {
    let region = Region::in_process(&Config::default().with_max_participants(8)).expect("region");
    let ping = region.join_with("ping", WaitStrategy::Spin).expect("join");
    let pong = region.join_with("pong", WaitStrategy::Spin).expect("join");
    let (ping_at, pong_at) = (ping.address(), pong.address());
    std::thread::scope(|s| {
        s.spawn(move || {
            pin(1);
            common::pong(&pong, &ping_at, ROUNDS, |m| spin_receive(m, WAIT_LIMIT));
        });
        pin(0);
        common::ping(&ping, &pong_at, ROUNDS, |m| spin_receive(m, WAIT_LIMIT))
    })
}

fn main() {
    let mut results = [const { Vec::new() }; 4];
    for _ in 0..RUNS {
        results[0].push(run_skeleton(Variant::Raw));
        results[1].push(run_skeleton(Variant::Protocol));
        results[2].push(run_skeleton(Variant::Named));
        results[3].push(run_shmbox());
    }
    let median = |v: &Vec<u64>| {
        let mut v = v.clone();
        v.sort_unstable();
        v[v.len() / 2]
    };
    let floor = median(&results[0]) as f64;
    println!("one-way p50, ns (threads on CPUs 0 and 1; {RUNS} runs of {ROUNDS} round trips each)");
    for (name, runs) in [
        "raw flag + payload",
        "protocol",
        "protocol, chunk named by the cell",
        "shmbox",
    ]
    .iter()
    .zip(&results)
    {
        println!(
            "{name:<34} median {:>4}  ({:.2}x the floor)  runs {runs:?}",
            median(runs),
            median(runs) as f64 / floor
        );
    }
}
