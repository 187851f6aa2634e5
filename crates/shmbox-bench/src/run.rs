//! A whole run: the idle check, then every measurement one after the
//! other (never two at once), then the report.

use crate::machine::{idle_check, LoadProbe, Machine};
use crate::measure::{Ctx, LatencyBudget, Plan, FAN_IN_SENDERS, THROUGHPUT_SIZES};
use crate::proc::Launcher;
use crate::report::{
    FanInRow, LatencyRow, PairedRow, PayloadMode, Pinning, Report, StreamRow, ThroughputRow,
};
use crate::spec::{RawKind, Strategy};
use crate::transports::shmbox::{self as sb, BenchRegion};
use crate::transports::{kernel, raw, Latency, Throughput, LATENCY, THROUGHPUT};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use shmbox::WaitStrategy;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Time between two messages of the steady stream: well inside the
/// Adaptive spin window (50 µs).
const STREAM_INTERVAL: Duration = Duration::from_micros(10);

/// Shows progress on stderr when asked to and stderr is a terminal.
struct Progress(Option<ProgressBar>);

impl Progress {
    fn new(wanted: bool, total: usize) -> Progress {
        if !wanted || !std::io::stderr().is_terminal() {
            return Progress(None);
        }
        let bar = ProgressBar::new(total as u64);
        if let Ok(style) = ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {pos}/{len} {msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        Progress(Some(bar))
    }

    fn step(&self, what: &str) {
        if let Some(bar) = &self.0 {
            bar.set_message(what.to_string());
        }
    }

    fn done(&self) {
        if let Some(bar) = &self.0 {
            bar.inc(1);
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

/// The latency cells of `transport`: (size, mode).
fn cells(transport: Latency, sizes: &[usize]) -> Vec<(usize, PayloadMode)> {
    if !transport.has_payload() {
        return vec![(crate::payload::MIN_SIZE, PayloadMode::Untouched)];
    }
    sizes
        .iter()
        .flat_map(|&s| PayloadMode::ALL.map(|m| (s, m)))
        .collect()
}

fn latency_row(label: &str, size: usize, mode: PayloadMode, h: &Histogram<u64>) -> LatencyRow {
    let one_way = |ns: u64| ns as f64 / 2.0;
    LatencyRow {
        transport: label.into(),
        size,
        mode,
        rounds: h.len(),
        p50_ns: one_way(h.value_at_quantile(0.50)),
        p99_ns: one_way(h.value_at_quantile(0.99)),
        p999_ns: one_way(h.value_at_quantile(0.999)),
        max_ns: one_way(h.max()),
        mean_ns: h.mean() / 2.0,
        vs_floor: None,
        vs_unix: None,
    }
}

fn throughput_row(
    label: &str,
    size: usize,
    reads: bool,
    (messages, seconds): (u64, f64),
) -> ThroughputRow {
    let rate = messages as f64 / seconds;
    ThroughputRow {
        transport: label.into(),
        size,
        receiver_reads: reads,
        messages,
        seconds,
        msgs_per_sec: rate,
        gb_per_sec: rate * size as f64 / 1e9,
        vs_floor: None,
        vs_unix: None,
    }
}

/// One latency cell of `transport` (`region` for shmbox transports).
fn measure_latency(
    ctx: &mut Ctx,
    transport: Latency,
    region: Option<&BenchRegion>,
    size: usize,
    written: bool,
    budget: &LatencyBudget,
) -> Result<Histogram<u64>, String> {
    match (transport, region) {
        (Latency::Raw(kind), _) => raw::latency(ctx, kind, size, written, budget),
        (Latency::Shmbox(s), Some(region)) => sb::latency(ctx, region, s, size, written, budget),
        (Latency::Shmbox(_), None) => Err("shmbox transports need a region".into()),
        (Latency::Pipe, _) => kernel::latency(ctx, kernel::Kind::Pipe, size, written, budget),
        (Latency::Unix, _) => kernel::latency(ctx, kernel::Kind::Unix, size, written, budget),
        (Latency::Tcp, _) => kernel::latency(ctx, kernel::Kind::Tcp, size, written, budget),
    }
}

/// A latency cell: transport, payload size, mode.
type CellSpec = (Latency, usize, PayloadMode);

/// The latency targets whose two cells are also measured in turn (see
/// [`PairedRow`]): target, numerator, denominator.
const PAIRS: [(&str, CellSpec, CellSpec); 4] = [
    (
        "1",
        (Latency::Shmbox(Strategy::Spin), 8, PayloadMode::Written),
        (Latency::Raw(RawKind::Payload), 8, PayloadMode::Written),
    ),
    (
        "1d",
        (Latency::Shmbox(Strategy::Spin), 8, PayloadMode::Written),
        (
            Latency::Raw(RawKind::PayloadDemoted),
            8,
            PayloadMode::Written,
        ),
    ),
    (
        "2",
        (
            Latency::Shmbox(Strategy::Spin),
            1 << 20,
            PayloadMode::Untouched,
        ),
        (Latency::Shmbox(Strategy::Spin), 8, PayloadMode::Untouched),
    ),
    (
        "3",
        (Latency::Shmbox(Strategy::Park), 8, PayloadMode::Written),
        (Latency::Raw(RawKind::Futex), 8, PayloadMode::Written),
    ),
];

fn cell_label((transport, size, mode): CellSpec) -> String {
    let mode = match mode {
        PayloadMode::Written => "written",
        PayloadMode::Untouched => "untouched",
    };
    format!(
        "{}, {}, {mode}",
        transport.label(),
        crate::report::format_size(size)
    )
}

/// Measures each of [`PAIRS`] in `plan.pair_blocks` blocks, the two cells
/// in turn, each cell with half a table cell's budget.
fn paired(
    ctx: &mut Ctx,
    region: Option<&BenchRegion>,
    bar: &Progress,
    failures: &mut Vec<String>,
) -> Vec<PairedRow> {
    let mut rows = Vec::new();
    for (target, num, den) in PAIRS {
        let mut row = PairedRow {
            target: target.into(),
            num: cell_label(num),
            den: cell_label(den),
            num_p50_ns: Vec::new(),
            den_p50_ns: Vec::new(),
        };
        bar.step(&format!(
            "target {target} in turn: {} / {}",
            row.num, row.den
        ));
        'blocks: for block in 0..ctx.plan.pair_blocks {
            // p50 by role: 0 the numerator, 1 the denominator; the order
            // of measuring reverses every other block.
            let cells = [num, den];
            let order = match block % 2 {
                0 => [1, 0],
                _ => [0, 1],
            };
            let mut p50 = [0.0; 2];
            for role in order {
                let cell @ (transport, size, mode) = cells[role];
                let budget = ctx.plan.budget(transport).halved();
                let written = mode == PayloadMode::Written;
                match measure_latency(ctx, transport, region, size, written, &budget) {
                    Ok(h) => p50[role] = h.value_at_quantile(0.5) as f64 / 2.0,
                    Err(e) => {
                        failures.push(format!(
                            "target {target} in turn, {}: {e}",
                            cell_label(cell)
                        ));
                        break 'blocks;
                    }
                }
            }
            let [num_p50, den_p50] = p50;
            row.num_p50_ns.push(num_p50);
            row.den_p50_ns.push(den_p50);
        }
        bar.done();
        rows.push(row);
    }
    rows
}

/// Runs `plan`.
pub(crate) fn run(plan: Plan, progress: bool) -> Result<Report, String> {
    let started = Instant::now();
    let machine = Machine::describe();
    let mut idle = idle_check(plan.idle_window);
    let probe = LoadProbe::start();
    let launcher = Launcher::new()?;
    let mut ctx = Ctx { launcher, plan };
    let total = LATENCY
        .iter()
        .map(|&t| cells(t, &ctx.plan.sizes).len())
        .sum::<usize>()
        + THROUGHPUT
            .iter()
            .map(|t| THROUGHPUT_SIZES.iter().filter(|&&s| t.runs_at(s)).count() * 2)
            .sum::<usize>()
        + FAN_IN_SENDERS.len()
        + PAIRS.len();
    let bar = Progress::new(progress, total);
    let mut failures = Vec::new();

    let mut latency = Vec::new();
    for transport in LATENCY {
        let label = transport.label();
        let region = match transport {
            Latency::Shmbox(s) => match BenchRegion::create(&format!("{s:?}"), ctx.plan.max_size())
            {
                Ok(r) => Some(r),
                Err(e) => {
                    failures.push(format!("{label}: {e}"));
                    continue;
                }
            },
            _ => None,
        };
        let budget = ctx.plan.budget(transport);
        for (size, mode) in cells(transport, &ctx.plan.sizes) {
            let what = format!("{label}, {}, {mode:?}", crate::report::format_size(size));
            bar.step(&what);
            let written = mode == PayloadMode::Written;
            let result =
                measure_latency(&mut ctx, transport, region.as_ref(), size, written, &budget);
            match result {
                Ok(h) => latency.push(latency_row(label, size, mode, &h)),
                Err(e) => failures.push(format!("latency {what}: {e}")),
            }
            bar.done();
        }
    }

    let mut throughput = Vec::new();
    let region = BenchRegion::create("stream", THROUGHPUT_SIZES[1]);
    for transport in THROUGHPUT {
        let label = transport.label();
        for size in THROUGHPUT_SIZES
            .into_iter()
            .filter(|&s| transport.runs_at(s))
        {
            for reads in [false, true] {
                let what = format!(
                    "{label}, {}, reads {reads}",
                    crate::report::format_size(size)
                );
                bar.step(&what);
                let result = match (transport, &region) {
                    (Throughput::Ring, _) => raw::ring_throughput(&mut ctx, size, reads),
                    (Throughput::ShmboxSpin, Ok(region)) => {
                        sb::throughput(&mut ctx, region, size, reads)
                    }
                    (Throughput::ShmboxBatch, Ok(region)) => {
                        sb::batch_throughput(&mut ctx, region, size, reads)
                    }
                    (Throughput::ShmboxSpin | Throughput::ShmboxBatch, Err(e)) => Err(e.clone()),
                    (Throughput::Unix, _) => kernel::unix_throughput(&mut ctx, size, reads),
                };
                match result {
                    Ok(r) => throughput.push(throughput_row(label, size, reads, r)),
                    Err(e) => failures.push(format!("throughput {what}: {e}")),
                }
                bar.done();
            }
        }
    }

    // A steady stream faster than Adaptive's spin window: Adaptive should
    // stay awake and match Spin.
    let mut stream = Vec::new();
    let count = if ctx.plan.quick { 20_000 } else { 100_000 };
    for (strategy, label) in [
        (WaitStrategy::Spin, "shmbox spin"),
        (WaitStrategy::Adaptive, "shmbox adaptive"),
    ] {
        bar.step(&format!("steady stream, {label}"));
        let result = match &region {
            Ok(region) => sb::stream_latency(&mut ctx, region, strategy, STREAM_INTERVAL, count),
            Err(e) => Err(e.clone()),
        };
        match result {
            Ok(h) => stream.push(StreamRow {
                transport: label.into(),
                interval_ns: STREAM_INTERVAL.as_nanos() as u64,
                messages: h.len(),
                p50_ns: h.value_at_quantile(0.50) as f64,
                p99_ns: h.value_at_quantile(0.99) as f64,
                p999_ns: h.value_at_quantile(0.999) as f64,
                max_ns: h.max() as f64,
                vs_spin: None,
            }),
            Err(e) => failures.push(format!("steady stream, {label}: {e}")),
        }
        bar.done();
    }

    let mut fan_in = Vec::new();
    for senders in FAN_IN_SENDERS {
        bar.step(&format!("many-to-one, {senders} senders"));
        let result = match &region {
            Ok(region) => sb::fan_in(&mut ctx, region, senders),
            Err(e) => Err(e.clone()),
        };
        match result {
            Ok((messages, seconds)) => fan_in.push(FanInRow {
                senders,
                size: 8,
                messages,
                seconds,
                msgs_per_sec: messages as f64 / seconds,
            }),
            Err(e) => failures.push(format!("many-to-one, {senders} senders: {e}")),
        }
        bar.done();
    }
    drop(region);
    let paired = match BenchRegion::create("paired", 1 << 20) {
        Ok(region) => paired(&mut ctx, Some(&region), &bar, &mut failures),
        Err(e) => {
            failures.push(format!("targets in turn: {e}"));
            Vec::new()
        }
    };
    let memory = match sb::memory() {
        Ok(m) => Some(m),
        Err(e) => {
            failures.push(format!("memory: {e}"));
            None
        }
    };
    drop(bar);
    if let Some(probe) = probe {
        probe.finish(&mut idle);
    }

    let pinning = Pinning {
        parent_cpu: ctx.launcher.parent_cpu(),
        peer_cpus: ctx.launcher.peer_cpus().to_vec(),
        peers: ctx.launcher.spawned,
        peers_pinned: ctx.launcher.pinned,
    };
    let mut report = Report {
        machine,
        idle,
        pinning,
        quick: ctx.plan.quick,
        sizes: ctx.plan.sizes.clone(),
        shmbox_config: sb::config(ctx.plan.max_size()).to_string(),
        latency,
        throughput,
        fan_in,
        stream,
        memory,
        paired,
        failures,
        elapsed_secs: started.elapsed().as_secs_f64(),
    };
    report.compute_ratios();
    Ok(report)
}
