//! The results of a run: plain data with public fields, a text table and
//! JSON.

use crate::machine::{IdleCheck, Machine};
use crate::transports::{FLOOR, RING_FLOOR, UNIX};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// What the payload of a latency measurement goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadMode {
    /// Only the 8-byte sequence number is written and read; the rest of
    /// the payload is left as it is (kernel transports still copy it all).
    Untouched,
    /// The sender writes every byte, the receiver reads every byte (and
    /// checks them).
    Written,
}

impl PayloadMode {
    /// Both modes, in table order.
    pub const ALL: [PayloadMode; 2] = [PayloadMode::Untouched, PayloadMode::Written];

    /// A short description for the table.
    pub fn describe(self) -> &'static str {
        match self {
            PayloadMode::Untouched => {
                "payload untouched (only the 8-byte sequence number is written and read; \
                 kernel transports still copy every byte)"
            }
            PayloadMode::Written => {
                "payload written in full by the sender and read in full by the receiver"
            }
        }
    }
}

/// One-way latency (half the round trip) of one transport at one size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyRow {
    /// Transport name.
    pub transport: String,
    /// Payload bytes per message, each way.
    pub size: usize,
    /// What happens to the payload.
    pub mode: PayloadMode,
    /// Round trips measured (after the warm-up).
    pub rounds: u64,
    /// Median one-way latency, ns.
    pub p50_ns: f64,
    /// 99th percentile, ns.
    pub p99_ns: f64,
    /// 99.9th percentile, ns.
    pub p999_ns: f64,
    /// Largest, ns.
    pub max_ns: f64,
    /// Mean, ns.
    pub mean_ns: f64,
    /// p50 over the floor's (`raw payload`, same size and mode).
    pub vs_floor: Option<f64>,
    /// p50 over the Unix socket's (same size and mode).
    pub vs_unix: Option<f64>,
}

/// Throughput of one transport, one direction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThroughputRow {
    /// Transport name.
    pub transport: String,
    /// Bytes per message.
    pub size: usize,
    /// Whether the receiver read (and checked) every payload byte; the
    /// sender always writes all of them.
    pub receiver_reads: bool,
    /// Messages counted after the warm-up.
    pub messages: u64,
    /// Over how long.
    pub seconds: f64,
    /// Messages per second.
    pub msgs_per_sec: f64,
    /// Payload gigabytes (10^9 bytes) per second.
    pub gb_per_sec: f64,
    /// Rate over the ring floor's (same size and receiver); below 1 is
    /// slower.
    pub vs_floor: Option<f64>,
    /// Rate over the Unix socket's.
    pub vs_unix: Option<f64>,
}

/// Many sender processes into one shmbox mailbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FanInRow {
    /// Sender processes.
    pub senders: usize,
    /// Bytes per message.
    pub size: usize,
    /// Messages received in all.
    pub messages: u64,
    /// From the go signal to the last sender's end marker.
    pub seconds: f64,
    /// Messages per second, all senders together.
    pub msgs_per_sec: f64,
}

/// One-way latency of a steady stream (one message every `interval_ns`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamRow {
    /// Transport name.
    pub transport: String,
    /// Time between two messages, ns.
    pub interval_ns: u64,
    /// Messages measured (after the warm-up).
    pub messages: u64,
    /// Median one-way latency (send to receive, shared clock), ns.
    pub p50_ns: f64,
    /// 99th percentile, ns.
    pub p99_ns: f64,
    /// 99.9th percentile, ns.
    pub p999_ns: f64,
    /// Largest, ns.
    pub max_ns: f64,
    /// p50 over shmbox spin's in the same stream.
    pub vs_spin: Option<f64>,
}

/// Which CPUs the processes ran on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pinning {
    /// The parent's CPU (`None`: not pinned, fewer than two CPUs allowed).
    pub parent_cpu: Option<usize>,
    /// The CPUs peers were spread over.
    pub peer_cpus: Vec<usize>,
    /// Peer processes started.
    pub peers: usize,
    /// Of those, pinned successfully.
    pub peers_pinned: usize,
}

/// Everything a run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The machine.
    pub machine: Machine,
    /// The idle check before measuring.
    pub idle: IdleCheck,
    /// CPU pinning.
    pub pinning: Pinning,
    /// Whether this was a quick run.
    pub quick: bool,
    /// Latency payload sizes.
    pub sizes: Vec<usize>,
    /// The shmbox region config used for latency.
    pub shmbox_config: String,
    /// One-way latencies.
    pub latency: Vec<LatencyRow>,
    /// One-direction throughput.
    pub throughput: Vec<ThroughputRow>,
    /// Many-to-one.
    pub fan_in: Vec<FanInRow>,
    /// Steady streams (Adaptive against Spin below its spin window).
    #[serde(default)]
    pub stream: Vec<StreamRow>,
    /// Memory held by a region of the default config.
    #[serde(default)]
    pub memory: Option<crate::targets::MemoryRow>,
    /// The latency targets' two cells measured in turn, block after block.
    #[serde(default)]
    pub paired: Vec<PairedRow>,
    /// Measurements that failed (the others went on).
    pub failures: Vec<String>,
    /// Wall-clock time of the whole run, seconds.
    pub elapsed_secs: f64,
}

/// A latency target's two cells (say shmbox spin and the raw floor at
/// 8 B), measured in turn: block `i` measures both, in the order `den`,
/// `num` when `i` is even and `num`, `den` when it is odd. The host moves
/// the two vCPUs around and their distance sets the floor (it moves by a
/// third between minutes), so a ratio of two cells measured seconds apart
/// mixes that drift in; a block's ratio does not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairedRow {
    /// The target (`1`, `2`, `3`).
    pub target: String,
    /// The numerator's cell, e.g. `shmbox spin, 8 B, written`.
    pub num: String,
    /// The denominator's cell.
    pub den: String,
    /// One-way p50 of the numerator in each block, nanoseconds.
    pub num_p50_ns: Vec<f64>,
    /// One-way p50 of the denominator in each block, nanoseconds.
    pub den_p50_ns: Vec<f64>,
}

impl PairedRow {
    /// Each block's ratio, `num / den`.
    pub fn ratios(&self) -> Vec<f64> {
        self.num_p50_ns
            .iter()
            .zip(&self.den_p50_ns)
            .filter(|&(_, &d)| d > 0.0)
            .map(|(n, d)| n / d)
            .collect()
    }
}

/// The median of `values` (the mean of the middle two for an even count),
/// sorting them.
pub(crate) fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// `n` bytes as `8 B`, `64 KiB`, `16 MiB`.
pub fn format_size(n: usize) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} B"),
    }
}

/// Nanoseconds with a unit that keeps 3 significant digits.
pub fn format_ns(ns: f64) -> String {
    match ns {
        ns if ns < 1e3 => format!("{ns:.0} ns"),
        ns if ns < 1e4 => format!("{:.2} µs", ns / 1e3),
        ns if ns < 1e6 => format!("{:.1} µs", ns / 1e3),
        ns if ns < 1e7 => format!("{:.2} ms", ns / 1e6),
        ns => format!("{:.1} ms", ns / 1e6),
    }
}

/// A rate with an SI suffix (`12.3 M`).
fn format_rate(r: f64) -> String {
    match r {
        r if r >= 1e9 => format!("{:.2} G", r / 1e9),
        r if r >= 1e6 => format!("{:.2} M", r / 1e6),
        r if r >= 1e3 => format!("{:.1} k", r / 1e3),
        r => format!("{r:.0} "),
    }
}

/// A ratio with 3 significant digits (`1.46x`, `1639x`, `0.00171x`).
fn format_ratio(r: Option<f64>) -> String {
    let Some(r) = r.filter(|r| r.is_finite() && *r > 0.0) else {
        return "-".into();
    };
    let decimals = (2.0 - r.log10().floor()).clamp(0.0, 6.0) as usize;
    format!("{r:.decimals$}x")
}

impl Report {
    /// Fills in the ratio columns from the rows present.
    pub(crate) fn compute_ratios(&mut self) {
        let latency = self.latency.clone();
        let p50 = |label: &str, size: usize, mode: PayloadMode| {
            latency
                .iter()
                .find(|r| r.transport == label && r.size == size && r.mode == mode)
                .map(|r| r.p50_ns)
                .filter(|&p| p > 0.0)
        };
        for row in &mut self.latency {
            row.vs_floor = p50(FLOOR, row.size, row.mode).map(|f| row.p50_ns / f);
            row.vs_unix = p50(UNIX, row.size, row.mode).map(|u| row.p50_ns / u);
        }
        let throughput = self.throughput.clone();
        let rate = |label: &str, size: usize, reads: bool| {
            throughput
                .iter()
                .find(|r| r.transport == label && r.size == size && r.receiver_reads == reads)
                .map(|r| r.msgs_per_sec)
                .filter(|&p| p > 0.0)
        };
        let spin = self
            .stream
            .iter()
            .find(|r| r.transport == "shmbox spin")
            .map(|r| r.p50_ns)
            .filter(|&p| p > 0.0);
        for row in &mut self.stream {
            row.vs_spin = spin.map(|s| row.p50_ns / s);
        }
        for row in &mut self.throughput {
            row.vs_floor =
                rate(RING_FLOOR, row.size, row.receiver_reads).map(|f| row.msgs_per_sec / f);
            row.vs_unix = rate(UNIX, row.size, row.receiver_reads).map(|u| row.msgs_per_sec / u);
        }
    }

    /// The machine line: CPU model, CPUs, kernel.
    pub fn machine_line(&self) -> String {
        format!(
            "machine: {} | {} CPUs | kernel {}",
            self.machine.cpu_model, self.machine.cpus, self.machine.kernel
        )
    }

    fn pinning_line(&self) -> String {
        let p = &self.pinning;
        match p.parent_cpu {
            None => "pinning: none (fewer than 2 CPUs allowed; spinning transports suffer)".into(),
            Some(cpu) => format!(
                "pinning: parent on CPU {cpu}, peers on CPU {:?} ({}/{} peers pinned)",
                p.peer_cpus, p.peers_pinned, p.peers
            ),
        }
    }

    /// A readable text table of everything, with the machine line, the idle
    /// warning if any, and failures if any.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let kind = if self.quick { "quick" } else { "full" };
        let _ = writeln!(out, "shmbox-bench: {kind} run, {:.1} s", self.elapsed_secs);
        let _ = writeln!(out, "{}", self.machine_line());
        let _ = writeln!(out, "{}", self.pinning_line());
        match self.idle.busy {
            Some(b) => {
                let _ = writeln!(
                    out,
                    "idle check: {:.0}% busy over {} ms before the run",
                    b * 100.0,
                    self.idle.window_ms
                );
            }
            None => out.push_str("idle check: /proc/stat unreadable\n"),
        }
        if let Some(d) = self.idle.during_run {
            let _ = writeln!(
                out,
                "other load during the run: {:.0}% of all CPUs",
                d * 100.0
            );
        }
        for w in &self.idle.warnings {
            let _ = writeln!(out, "{w}");
        }
        let _ = writeln!(out, "shmbox region: {}", self.shmbox_config);
        self.latency_table(&mut out);
        self.throughput_table(&mut out);
        self.fan_in_table(&mut out);
        self.stream_table(&mut out);
        self.memory_table(&mut out);
        self.targets_table(&mut out);
        if !self.failures.is_empty() {
            let _ = writeln!(out, "\nFAILED measurements ({}):", self.failures.len());
            for f in &self.failures {
                let _ = writeln!(out, "  {f}");
            }
        }
        out
    }

    fn latency_table(&self, out: &mut String) {
        for mode in PayloadMode::ALL {
            let rows: Vec<&LatencyRow> = self.latency.iter().filter(|r| r.mode == mode).collect();
            if rows.is_empty() {
                continue;
            }
            let _ = writeln!(
                out,
                "\nOne-way latency (round trip / 2), {}",
                mode.describe()
            );
            let _ = writeln!(
                out,
                "vs floor = p50 / {FLOOR} p50, vs unix = p50 / {UNIX} p50 (same size; lower is faster)"
            );
            let _ = writeln!(
                out,
                "{:>7}  {:<16} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}",
                "size", "transport", "rounds", "p50", "p99", "p99.9", "max", "vs floor", "vs unix"
            );
            let mut last_size = None;
            for r in rows {
                let size = match last_size == Some(r.size) {
                    true => String::new(),
                    false => format_size(r.size),
                };
                last_size = Some(r.size);
                let _ = writeln!(
                    out,
                    "{:>7}  {:<16} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}",
                    size,
                    r.transport,
                    r.rounds,
                    format_ns(r.p50_ns),
                    format_ns(r.p99_ns),
                    format_ns(r.p999_ns),
                    format_ns(r.max_ns),
                    format_ratio(r.vs_floor),
                    format_ratio(r.vs_unix)
                );
            }
        }
    }

    fn throughput_table(&self, out: &mut String) {
        if self.throughput.is_empty() {
            return;
        }
        out.push_str(
            "\nThroughput, one direction, lossless (every message sequence-checked by the receiver; \
             the sender writes every payload byte)\n",
        );
        let _ = writeln!(
            out,
            "vs floor = rate / {RING_FLOOR} rate, vs unix = rate / {UNIX} rate (higher is faster)"
        );
        let _ = writeln!(
            out,
            "{:>7}  {:<16} {:<10} {:>10} {:>9} {:>9} {:>8}",
            "size", "transport", "receiver", "msg/s", "GB/s", "vs floor", "vs unix"
        );
        for r in &self.throughput {
            let receiver = if r.receiver_reads {
                "reads all"
            } else {
                "seq only"
            };
            let _ = writeln!(
                out,
                "{:>7}  {:<16} {:<10} {:>10} {:>9.3} {:>9} {:>8}",
                format_size(r.size),
                r.transport,
                receiver,
                format_rate(r.msgs_per_sec),
                r.gb_per_sec,
                format_ratio(r.vs_floor),
                format_ratio(r.vs_unix)
            );
        }
    }

    fn stream_table(&self, out: &mut String) {
        let Some(first) = self.stream.first() else {
            return;
        };
        let _ = writeln!(
            out,
            "\nSteady stream: one 8-byte message every {}, one-way latency (send to receive on the shared monotonic clock)",
            format_ns(first.interval_ns as f64)
        );
        let _ = writeln!(
            out,
            "{:<17} {:>9} {:>9} {:>9} {:>9} {:>9}  {:>8}",
            "transport", "messages", "p50", "p99", "p99.9", "max", "vs spin"
        );
        for r in &self.stream {
            let _ = writeln!(
                out,
                "{:<17} {:>9} {:>9} {:>9} {:>9} {:>9}  {:>8}",
                r.transport,
                r.messages,
                format_ns(r.p50_ns),
                format_ns(r.p99_ns),
                format_ns(r.p999_ns),
                format_ns(r.max_ns),
                r.vs_spin.map_or("-".into(), |v| format!("{v:.2}x")),
            );
        }
    }

    fn memory_table(&self, out: &mut String) {
        let Some(m) = &self.memory else {
            return;
        };
        let _ = writeln!(
            out,
            "\nMemory: a region of the default config ({}) after traffic in every class",
            m.config
        );
        let pct = |a: u64, b: u64| (a as f64 / b as f64 - 1.0) * 100.0;
        let _ = writeln!(
            out,
            "resident {} bytes; Config::total_size() {} bytes ({:+.2}%); payload bytes alone {} ({:+.2}%)",
            m.resident_bytes,
            m.total_size,
            pct(m.resident_bytes, m.total_size),
            m.payload_bytes,
            pct(m.resident_bytes, m.payload_bytes),
        );
    }

    fn fan_in_table(&self, out: &mut String) {
        if self.fan_in.is_empty() {
            return;
        }
        out.push_str(
            "\nMany-to-one: sender processes into one shmbox mailbox (receiver spinning)\n",
        );
        let _ = writeln!(
            out,
            "{:>7}  {:>7} {:>10} {:>12}",
            "senders", "size", "msg/s", "per sender"
        );
        for r in &self.fan_in {
            let _ = writeln!(
                out,
                "{:>7}  {:>7} {:>10} {:>12}",
                r.senders,
                format_size(r.size),
                format_rate(r.msgs_per_sec),
                format_rate(r.msgs_per_sec / r.senders.max(1) as f64)
            );
        }
    }

    /// The whole report as a JSON document.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serialises")
    }

    /// Writes the latency plot (p50, payload written and read, against
    /// size; log-log) as SVG to `path`.
    pub fn write_svg(&self, path: &std::path::Path) -> Result<(), String> {
        crate::plot::write_svg(self, path)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A report with made-up numbers.
    pub(crate) fn synthetic() -> Report {
        let mut latency = Vec::new();
        for (transport, base) in [(FLOOR, 100.0), ("shmbox spin", 150.0), (UNIX, 4000.0)] {
            for size in [8usize, 1 << 20] {
                for mode in PayloadMode::ALL {
                    let p50 = base * (1 + (size >> 10)) as f64;
                    latency.push(LatencyRow {
                        transport: transport.into(),
                        size,
                        mode,
                        rounds: 1000,
                        p50_ns: p50,
                        p99_ns: p50 * 2.0,
                        p999_ns: p50 * 3.0,
                        max_ns: p50 * 10.0,
                        mean_ns: p50 + 10.0,
                        vs_floor: None,
                        vs_unix: None,
                    });
                }
            }
        }
        let throughput = [
            (RING_FLOOR, 40e6),
            ("shmbox spin", 10e6),
            (crate::transports::SHMBOX_BATCH, 60e6),
            (UNIX, 1e6),
        ]
        .into_iter()
        .map(|(t, rate)| ThroughputRow {
            transport: t.into(),
            size: 8,
            receiver_reads: true,
            messages: rate as u64,
            seconds: 1.0,
            msgs_per_sec: rate,
            gb_per_sec: rate * 8.0 / 1e9,
            vs_floor: None,
            vs_unix: None,
        })
        .collect();
        let mut report = Report {
            machine: Machine {
                cpu_model: "Test CPU".into(),
                cpus: 2,
                kernel: "6.0.0".into(),
            },
            idle: IdleCheck {
                busy: Some(0.5),
                window_ms: 200,
                during_run: Some(0.01),
                warnings: vec!["WARNING: busy".into()],
            },
            pinning: Pinning {
                parent_cpu: Some(0),
                peer_cpus: vec![1],
                peers: 3,
                peers_pinned: 3,
            },
            quick: true,
            sizes: vec![8, 1 << 20],
            shmbox_config: "classes [...]".into(),
            latency,
            throughput,
            fan_in: vec![FanInRow {
                senders: 2,
                size: 8,
                messages: 100,
                seconds: 0.5,
                msgs_per_sec: 200.0,
            }],
            stream: vec![StreamRow {
                transport: "shmbox spin".into(),
                interval_ns: 10_000,
                messages: 1000,
                p50_ns: 400.0,
                p99_ns: 600.0,
                p999_ns: 900.0,
                max_ns: 5000.0,
                vs_spin: None,
            }],
            memory: Some(crate::targets::MemoryRow {
                config: "classes [64x4]".into(),
                total_size: 1010,
                resident_bytes: 1010,
                payload_bytes: 1000,
            }),
            paired: Vec::new(),
            failures: vec!["pipe 8 B: broken".into()],
            elapsed_secs: 1.5,
        };
        report.compute_ratios();
        report
    }

    #[test]
    fn ratios_against_floor_and_unix() {
        let r = synthetic();
        let spin = r
            .latency
            .iter()
            .find(|r| r.transport == "shmbox spin" && r.size == 8)
            .unwrap();
        assert!((spin.vs_floor.unwrap() - 1.5).abs() < 1e-9);
        assert!((spin.vs_unix.unwrap() - 150.0 / 4000.0).abs() < 1e-9);
        let t = &r.throughput[1];
        assert!((t.vs_floor.unwrap() - 0.25).abs() < 1e-9);
        assert!((t.vs_unix.unwrap() - 10.0).abs() < 1e-9);
    }

    #[test]
    fn table_shows_everything() {
        let table = synthetic().table();
        for needle in [
            "machine: Test CPU | 2 CPUs | kernel 6.0.0",
            "WARNING: busy",
            "payload untouched",
            "payload written in full",
            "1 MiB",
            "shmbox spin",
            "1.50x",
            "10.0x",
            "Many-to-one",
            "FAILED measurements (1)",
            "pipe 8 B: broken",
        ] {
            assert!(table.contains(needle), "{needle:?} missing from\n{table}");
        }
    }

    #[test]
    fn json_round_trips() {
        let report = synthetic();
        let json = report.to_json();
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back, report);
        assert!(json.contains("\"mode\": \"written\""));
    }

    #[test]
    fn formats() {
        assert_eq!(format_size(8), "8 B");
        assert_eq!(format_size(1000), "1000 B");
        assert_eq!(format_size(64 << 10), "64 KiB");
        assert_eq!(format_size(16 << 20), "16 MiB");
        assert_eq!(format_ns(123.4), "123 ns");
        assert_eq!(format_ns(1234.0), "1.23 µs");
        assert_eq!(format_ns(123_456.0), "123.5 µs");
        assert_eq!(format_ns(12_345_678.0), "12.3 ms");
        assert_eq!(format_ratio(Some(1.456)), "1.46x");
        assert_eq!(format_ratio(Some(1638.84)), "1639x");
        assert_eq!(format_ratio(Some(0.001714)), "0.00171x");
        assert_eq!(format_ratio(Some(0.25)), "0.250x");
        assert_eq!(format_ratio(None), "-");
    }
}
