//! Side-by-side benchmark of shmbox against the floor of what shared memory
//! allows and against kernel IPC, between real processes.
//!
//! Transports, all in one run:
//!
//! * **floors**: `raw flag` (two atomics on separate cache lines of a
//!   shared mapping, ping-pong), `raw payload` (the same with the payload
//!   in a shared buffer per direction), `raw futex` (the same, each side
//!   asleep in `FUTEX_WAIT` on a shared word and woken by the other's
//!   `FUTEX_WAKE`, never spinning), and for throughput the `ring floor`
//!   (a single-producer single-consumer ring of fixed-size slots);
//! * **shmbox** in [`Spin`](shmbox::WaitStrategy::Spin),
//!   [`Adaptive`](shmbox::WaitStrategy::Adaptive) and
//!   [`Park`](shmbox::WaitStrategy::Park) mode;
//! * **kernel**: a pipe pair, a Unix stream socket, TCP over 127.0.0.1
//!   with `TCP_NODELAY`.
//!
//! Measurements: one-way latency (half of each round trip, timed one by
//! one, in an HDR histogram) per payload size, with the payload untouched
//! beyond its 8-byte sequence number and with it written in full by the
//! sender and read in full by the receiver; one-direction lossless
//! throughput at 8 B and 1 MiB; many sender processes into one mailbox.
//!
//! Peers are real processes: the harness re-executes
//! [`std::env::current_exe`] with the environment variable
//! `SHMBOX_BENCH_PEER` describing the peer's role, so every binary that
//! runs the harness must call [`peer_main_if_requested`] first thing in
//! `main`. Parent and peers are pinned to different CPUs when at least two
//! are allowed. Measurements run strictly one after the other.
//!
//! ```no_run
//! // First thing in main():
//! shmbox_bench::peer_main_if_requested();
//! let options = shmbox_bench::Options { quick: true, ..Default::default() };
//! let report = shmbox_bench::run(&options)?;
//! println!("{}", report.table());
//! report.write_svg(std::path::Path::new("latency.svg"))?;
//! # Ok::<(), String>(())
//! ```
//!
//! `cargo bench -p shmbox-bench` runs the quick variant (`-- --full` for
//! the full one) and writes `target/side_by_side.{svg,json}`.
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

mod machine;
mod measure;
mod payload;
mod peer;
mod plot;
mod proc;
mod report;
mod run;
mod shm;
mod spec;
mod targets;
mod transports;

pub use machine::{IdleCheck, Machine, BUSY_THRESHOLD};
pub use measure::{FAN_IN_SENDERS, FULL_SIZES, MAX_SIZE, QUICK_SIZES, THROUGHPUT_SIZES};
pub use report::{
    format_ns, format_size, FanInRow, LatencyRow, PayloadMode, Pinning, Report, StreamRow,
    ThroughputRow,
};
pub use targets::{median_targets, write_targets, MemoryRow, TargetRow};
pub use transports::{FLOOR, FLOOR_DEMOTED, RING_FLOOR, SHMBOX_BATCH, UNIX};

/// What to run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// The quick variant: fewer sizes ([`QUICK_SIZES`]) and shorter
    /// measurements; well under 30 s on a 2-CPU machine. Otherwise the
    /// full run ([`FULL_SIZES`]), a few minutes.
    pub quick: bool,
    /// Latency payload sizes in bytes (8 to [`MAX_SIZE`]) instead of the
    /// variant's.
    pub sizes: Option<Vec<usize>>,
    /// Show a progress bar on stderr (only if stderr is a terminal).
    pub progress: bool,
}

/// Must be called first thing in `main` of any binary that runs the
/// harness: if this process was started as a benchmark peer, it runs the
/// peer role and exits the process (status 0 on success, 1 with a message
/// on stderr otherwise); otherwise it returns at once.
pub fn peer_main_if_requested() {
    let Some(spec) = std::env::var_os(spec::PEER_ENV) else {
        return;
    };
    let code = match spec
        .to_str()
        .ok_or("peer spec is not UTF-8".to_string())
        .and_then(peer::run)
    {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("shmbox-bench peer: {e}");
            1
        }
    };
    std::process::exit(code);
}

/// Runs the benchmark. Measurements that fail are listed in
/// [`Report::failures`] and the others go on; an error is returned only
/// for bad options or when nothing can be started.
///
/// Pins the calling thread to one CPU while it runs (restored before
/// returning); do not run two at once.
pub fn run(options: &Options) -> Result<Report, String> {
    let plan = match options.quick {
        true => measure::Plan::quick(),
        false => measure::Plan::full(),
    };
    let plan = plan.with_sizes(options.sizes.as_deref())?;
    run::run(plan, options.progress)
}

/// For tests of this crate and of binaries that embed it: not part of the
/// API.
#[doc(hidden)]
pub mod testing {
    /// Runs every measurement with tiny budgets (a few milliseconds each)
    /// at `sizes`: a smoke test, not a benchmark.
    pub fn run_tiny(sizes: &[usize]) -> Result<crate::Report, String> {
        let plan = crate::measure::Plan::tiny(Vec::new()).with_sizes(Some(sizes))?;
        crate::run::run(plan, false)
    }
}
