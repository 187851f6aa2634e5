//! How long each measurement runs, the latency sampler, and the context
//! the transports share (the peer launcher and the plan).

use crate::proc::Launcher;
use hdrhistogram::Histogram;
use std::time::{Duration, Instant};

/// Largest payload size the harness accepts (the region's largest class).
pub const MAX_SIZE: usize = 16 << 20;
/// Payload sizes of a full run.
pub const FULL_SIZES: [usize; 6] = [8, 64, 1 << 10, 64 << 10, 1 << 20, 16 << 20];
/// Payload sizes of a quick run.
pub const QUICK_SIZES: [usize; 4] = [8, 1 << 10, 64 << 10, 1 << 20];
/// Message sizes of the throughput measurement.
pub const THROUGHPUT_SIZES: [usize; 2] = [8, 1 << 20];
/// Sender counts of the many-to-one measurement.
pub const FAN_IN_SENDERS: [usize; 3] = [1, 2, 4];

/// Budgets of one latency measurement (one transport, size and mode).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LatencyBudget {
    /// Measuring stops after this long, once `min_rounds` are done...
    pub(crate) time: Duration,
    /// ...or after this many round trips, whichever comes first.
    pub(crate) max_rounds: u64,
    /// Round trips measured however long they take.
    pub(crate) min_rounds: u64,
}

impl LatencyBudget {
    /// Half the time and half the rounds (at least `min_rounds`).
    pub(crate) fn halved(self) -> LatencyBudget {
        LatencyBudget {
            time: self.time / 2,
            max_rounds: (self.max_rounds / 2).max(self.min_rounds),
            min_rounds: self.min_rounds,
        }
    }
}

/// Everything a run measures and how long each part takes.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// Whether this is the quick variant.
    pub(crate) quick: bool,
    /// Latency payload sizes.
    pub(crate) sizes: Vec<usize>,
    /// Spinning transports.
    pub(crate) fast: LatencyBudget,
    /// Transports through the scheduler (futex, park, kernel).
    pub(crate) slow: LatencyBudget,
    /// One throughput stream, after `warmup`.
    pub(crate) stream_time: Duration,
    /// Ignored start of each stream.
    pub(crate) warmup: Duration,
    /// The idle check's sampling window.
    pub(crate) idle_window: Duration,
    /// Blocks of each latency target measured in turn (see
    /// [`PairedRow`](crate::report::PairedRow)).
    pub(crate) pair_blocks: usize,
}

impl Plan {
    /// The quick run (well under 30 s on a 2-CPU VM).
    pub(crate) fn quick() -> Plan {
        Plan {
            quick: true,
            sizes: QUICK_SIZES.to_vec(),
            fast: LatencyBudget {
                time: Duration::from_millis(80),
                max_rounds: 40_000,
                min_rounds: 50,
            },
            slow: LatencyBudget {
                time: Duration::from_millis(80),
                max_rounds: 10_000,
                min_rounds: 20,
            },
            stream_time: Duration::from_millis(150),
            warmup: Duration::from_millis(30),
            idle_window: Duration::from_millis(200),
            pair_blocks: 6,
        }
    }

    /// The full run (a few minutes).
    pub(crate) fn full() -> Plan {
        Plan {
            quick: false,
            sizes: FULL_SIZES.to_vec(),
            fast: LatencyBudget {
                time: Duration::from_millis(500),
                max_rounds: 500_000,
                min_rounds: 200,
            },
            slow: LatencyBudget {
                time: Duration::from_millis(400),
                max_rounds: 100_000,
                min_rounds: 50,
            },
            stream_time: Duration::from_millis(600),
            warmup: Duration::from_millis(100),
            idle_window: Duration::from_millis(200),
            pair_blocks: 10,
        }
    }

    /// A smoke-test run: every transport, a few milliseconds each.
    pub(crate) fn tiny(sizes: Vec<usize>) -> Plan {
        let budget = LatencyBudget {
            time: Duration::from_millis(2),
            max_rounds: 200,
            min_rounds: 3,
        };
        Plan {
            quick: true,
            sizes,
            fast: budget,
            slow: budget,
            stream_time: Duration::from_millis(15),
            warmup: Duration::from_millis(2),
            idle_window: Duration::from_millis(20),
            pair_blocks: 2,
        }
    }

    /// Checks and sorts the sizes.
    pub(crate) fn with_sizes(mut self, sizes: Option<&[usize]>) -> Result<Plan, String> {
        if let Some(sizes) = sizes {
            self.sizes = sizes.to_vec();
        }
        self.sizes.sort_unstable();
        self.sizes.dedup();
        match self.sizes.as_slice() {
            [] => Err("no payload sizes given".into()),
            [first, ..] if *first < crate::payload::MIN_SIZE => Err(format!(
                "payload size {first} is too small: at least {} bytes (the sequence number)",
                crate::payload::MIN_SIZE
            )),
            [.., last] if *last > MAX_SIZE => Err(format!(
                "payload size {last} is too large: at most {MAX_SIZE} bytes"
            )),
            _ => Ok(self),
        }
    }

    /// The budget of one latency cell of `transport`.
    pub(crate) fn budget(&self, transport: crate::transports::Latency) -> LatencyBudget {
        match transport.slow() {
            true => self.slow,
            false => self.fast,
        }
    }

    /// The largest latency size.
    pub(crate) fn max_size(&self) -> usize {
        self.sizes
            .last()
            .copied()
            .unwrap_or(0)
            .max(THROUGHPUT_SIZES[1])
    }

    /// How long a peer may live before its watchdog kills it.
    pub(crate) fn peer_deadline(&self) -> Duration {
        Duration::from_secs(60) + 4 * (self.fast.time + self.slow.time + self.stream_time)
    }
}

/// What the transports share during a run.
pub(crate) struct Ctx {
    /// Spawns and pins peers.
    pub(crate) launcher: Launcher,
    /// The plan.
    pub(crate) plan: Plan,
}

/// A histogram of round-trip times in nanoseconds (1 ns to 1 hour, 3
/// significant digits).
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid histogram bounds")
}

/// Warms up for a tenth of the budget, then times round trips one by one
/// until the budget is spent. `round_trip` gets a fresh sequence number
/// (1, 2, ...) each call.
pub(crate) fn sample(
    budget: &LatencyBudget,
    mut round_trip: impl FnMut(u64) -> Result<(), String>,
) -> Result<Histogram<u64>, String> {
    let mut seq = 0u64;
    let warm_until = Instant::now() + budget.time / 10;
    let warm_min = (budget.min_rounds / 10).max(3);
    let mut n = 0u64;
    loop {
        seq += 1;
        round_trip(seq)?;
        n += 1;
        if n >= budget.max_rounds / 10 || (n >= warm_min && Instant::now() >= warm_until) {
            break;
        }
    }
    let mut histogram = new_histogram();
    let end = Instant::now() + budget.time;
    let mut n = 0u64;
    loop {
        seq += 1;
        let t0 = Instant::now();
        round_trip(seq)?;
        let t1 = Instant::now();
        histogram.saturating_record((t1 - t0).as_nanos().max(1) as u64);
        n += 1;
        if n >= budget.max_rounds || (n >= budget.min_rounds && t1 >= end) {
            return Ok(histogram);
        }
    }
}
