//! The performance targets, computed from one run's report (and, over
//! several runs, their medians): each is a ratio taken within one run, or
//! for throughput a rate, against the bound it must meet.

use crate::report::{format_ns, PayloadMode, Report};
use crate::transports::{FLOOR, FLOOR_DEMOTED, RING_FLOOR, SHMBOX_BATCH};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// Memory held by a region of the default config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryRow {
    /// The config measured.
    pub config: String,
    /// What the config asks for: `Config::total_size()`.
    pub total_size: u64,
    /// What the region's object holds, after traffic in every class
    /// (`Region::resident_bytes`).
    pub resident_bytes: u64,
    /// The payload bytes alone: the sum of size × count over the classes.
    pub payload_bytes: u64,
}

/// One target and what a run measured for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetRow {
    /// Its number (`7a`, `7b`: two readings of the memory target).
    pub id: String,
    /// What is measured, against what.
    pub what: String,
    /// The measured ratio, or messages per second for the throughput
    /// target; `None` if the run lacks a measurement it needs.
    pub value: Option<f64>,
    /// The bound.
    pub bound: f64,
    /// Met when `value <= bound` (else when `value >= bound`).
    pub at_most: bool,
    /// The figures the value comes from.
    pub detail: String,
    /// Not a target: a figure shown next to one for reference (the bound
    /// is the target's), neither met nor missed.
    #[serde(default)]
    pub reference: bool,
}

impl TargetRow {
    /// Whether the value meets the bound.
    pub fn met(&self) -> Option<bool> {
        if self.reference {
            return None;
        }
        self.value.map(|v| match self.at_most {
            true => v <= self.bound,
            false => v >= self.bound,
        })
    }

    /// The value as the table shows it.
    pub fn value_text(&self) -> String {
        match self.value {
            None => "-".into(),
            Some(v) if self.is_rate() => format!("{:.2} M msg/s", v / 1e6),
            Some(v) => format!("{v:.3}x"),
        }
    }

    fn is_rate(&self) -> bool {
        self.bound > 1000.0
    }

    fn bound_text(&self) -> String {
        let op = if self.at_most { "<=" } else { ">=" };
        match self.is_rate() {
            true => format!("{op} {:.0} M msg/s", self.bound / 1e6),
            false => format!("{op} {:.2}x", self.bound),
        }
    }
}

impl Report {
    fn p50(&self, transport: &str, size: usize, mode: PayloadMode) -> Option<f64> {
        self.latency
            .iter()
            .find(|r| r.transport == transport && r.size == size && r.mode == mode)
            .map(|r| r.p50_ns)
    }

    fn rate(&self, transport: &str, size: usize, reads: bool) -> Option<(f64, f64)> {
        self.throughput
            .iter()
            .find(|r| r.transport == transport && r.size == size && r.receiver_reads == reads)
            .map(|r| (r.msgs_per_sec, r.gb_per_sec))
    }

    /// A latency target's value: the median of its blocks measured in turn
    /// when the run has them (see [`PairedRow`](crate::report::PairedRow)),
    /// else the ratio of the table's two cells. The detail shows both.
    fn latency_value(
        &self,
        id: &str,
        table: Option<f64>,
        table_detail: String,
    ) -> (Option<f64>, String) {
        let table_text = table.map_or("-".into(), |r| format!("{r:.3}x"));
        let mut ratios = self
            .paired
            .iter()
            .find(|p| p.target == id)
            .map_or_else(Vec::new, |p| p.ratios());
        match crate::report::median(&mut ratios) {
            Some(median) => {
                let (lo, hi) = (ratios[0], ratios[ratios.len() - 1]);
                (
                    Some(median),
                    format!(
                        "{} blocks in turn, {lo:.2}-{hi:.2}x; table {table_detail} = {table_text}",
                        ratios.len()
                    ),
                )
            }
            None => (table, table_detail),
        }
    }

    /// The targets, as this run measured them.
    pub fn targets(&self) -> Vec<TargetRow> {
        use PayloadMode::{Untouched, Written};
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        let ns = |v: Option<f64>| v.map_or("-".into(), format_ns);
        let mut rows = Vec::new();

        // A latency ratio: `num / den`, at most `bound`.
        let latency_row = |id: &str, what: &str, num: Option<f64>, den: Option<f64>, bound| {
            let (value, detail) =
                self.latency_value(id, ratio(num, den), format!("{} / {}", ns(num), ns(den)));
            TargetRow {
                id: id.into(),
                what: what.into(),
                value,
                bound,
                at_most: true,
                detail,
                reference: false,
            }
        };
        rows.push(latency_row(
            "1",
            "spin, 8 B written + read, vs raw 8 B payload",
            self.p50("shmbox spin", 8, Written),
            self.p50(FLOOR, 8, Written),
            1.3,
        ));
        rows.push(TargetRow {
            reference: true,
            ..latency_row(
                "1d",
                "(reference) 1, against a floor with the same cache hint",
                self.p50("shmbox spin", 8, Written),
                self.p50(FLOOR_DEMOTED, 8, Written),
                1.3,
            )
        });
        rows.push(latency_row(
            "2",
            "spin, 1 MiB untouched, vs 8 B untouched",
            self.p50("shmbox spin", 1 << 20, Untouched),
            self.p50("shmbox spin", 8, Untouched),
            1.1,
        ));

        let (park, futex) = (
            self.p50("shmbox park", 8, Written),
            self.p50("raw futex", 8, Written),
        );
        let (park_u, futex_u) = (
            self.p50("shmbox park", 8, Untouched),
            self.p50("raw futex", 8, Untouched),
        );
        let (value, detail) = self.latency_value(
            "3",
            ratio(park, futex),
            format!(
                "{} / {} (untouched {})",
                ns(park),
                ns(futex),
                ratio(park_u, futex_u).map_or("-".into(), |r| format!("{r:.3}x"))
            ),
        );
        rows.push(TargetRow {
            id: "3".into(),
            what: "park, 8 B written + read, vs raw futex".into(),
            value,
            bound: 1.05,
            at_most: true,
            detail,
            reference: false,
        });

        let stream_p50 = |transport: &str| {
            self.stream
                .iter()
                .find(|r| r.transport == transport)
                .map(|r| r.p50_ns)
        };
        rows.push(latency_row(
            "4",
            "adaptive vs spin, steady stream inside the spin window",
            stream_p50("shmbox adaptive"),
            stream_p50("shmbox spin"),
            1.1,
        ));

        let rate = |v: Option<(f64, f64)>| v.map_or("-".into(), |r| format!("{:.2} M", r.0 / 1e6));
        let (batched, single) = (
            self.rate(SHMBOX_BATCH, 8, true),
            self.rate("shmbox spin", 8, true),
        );
        let ring = self.rate(RING_FLOOR, 8, true);
        rows.push(TargetRow {
            id: "5".into(),
            what: "8 B lossless throughput (batches), receiver reads all".into(),
            value: batched.map(|r| r.0),
            bound: 50e6,
            at_most: false,
            detail: format!(
                "one send per message {}; ring floor {}",
                rate(single),
                rate(ring),
            ),
            reference: false,
        });

        let (stream_gb, ring_gb) = (
            self.rate("shmbox spin", 1 << 20, true).map(|r| r.1),
            self.rate(RING_FLOOR, 1 << 20, true).map(|r| r.1),
        );
        let gb = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2} GB/s"));
        rows.push(TargetRow {
            id: "6".into(),
            what: "1 MiB streaming, receiver reads all, vs ring floor".into(),
            value: ratio(stream_gb, ring_gb),
            bound: 0.8,
            at_most: false,
            detail: format!("{} / {}", gb(stream_gb), gb(ring_gb)),
            reference: false,
        });

        if let Some(m) = &self.memory {
            let resident = m.resident_bytes as f64;
            rows.push(TargetRow {
                id: "7a".into(),
                what: "resident vs Config::total_size() (default config)".into(),
                value: Some(resident / m.total_size as f64),
                bound: 1.01,
                at_most: true,
                detail: format!("{} / {} bytes", m.resident_bytes, m.total_size),
                reference: false,
            });
            rows.push(TargetRow {
                id: "7b".into(),
                what: "resident vs the payload bytes alone".into(),
                value: Some(resident / m.payload_bytes as f64),
                bound: 1.01,
                at_most: true,
                detail: format!("{} / {} bytes", m.resident_bytes, m.payload_bytes),
                reference: false,
            });
        }
        rows
    }

    pub(crate) fn targets_table(&self, out: &mut String) {
        out.push_str(
            "\nTargets (ratios within this run; 1-3: median of the blocks measured in turn)\n",
        );
        write_targets(out, &self.targets());
    }
}

/// The targets of several runs: each value is the median of the runs'.
pub fn median_targets(reports: &[Report]) -> Vec<TargetRow> {
    let all: Vec<Vec<TargetRow>> = reports.iter().map(Report::targets).collect();
    let Some(first) = all.first() else {
        return Vec::new();
    };
    first
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let mut values: Vec<f64> = all
                .iter()
                .filter_map(|rows| rows.get(i).and_then(|r| r.value))
                .collect();
            let median = crate::report::median(&mut values);
            let shown: Vec<String> = values
                .iter()
                .map(|&v| TargetRow {
                    value: Some(v),
                    ..row.clone()
                })
                .map(|r| r.value_text())
                .collect();
            TargetRow {
                value: median,
                detail: format!("runs: {}", shown.join(", ")),
                ..row.clone()
            }
        })
        .collect()
}

/// Appends `rows` as a table.
pub fn write_targets(out: &mut String, rows: &[TargetRow]) {
    let _ = writeln!(
        out,
        "{:<3} {:<56} {:>14} {:>15} {:<6}  detail",
        "#", "target", "measured", "bound", ""
    );
    for r in rows {
        let status = match r.met() {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "-",
        };
        let _ = writeln!(
            out,
            "{:<3} {:<56} {:>14} {:>15} {:<6}  {}",
            r.id,
            r.what,
            r.value_text(),
            r.bound_text(),
            status,
            r.detail
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::synthetic;

    fn by_id<'a>(rows: &'a [TargetRow], id: &str) -> &'a TargetRow {
        rows.iter().find(|r| r.id == id).unwrap()
    }

    #[test]
    fn targets_come_from_the_report() {
        let rows = synthetic().targets();
        // Spin 150 ns against the floor's 100 ns at 8 B.
        let one = by_id(&rows, "1");
        assert!((one.value.unwrap() - 1.5).abs() < 1e-9);
        assert_eq!(one.met(), Some(false));
        // The synthetic throughput: 60 M msg/s in batches (10 M one by one).
        assert_eq!(by_id(&rows, "5").value, Some(60e6));
        assert_eq!(by_id(&rows, "5").met(), Some(true));
        assert!(by_id(&rows, "5")
            .detail
            .contains("one send per message 10.00 M"));
        // 1010 resident bytes: exactly the total size, 1 % over the payload.
        assert_eq!(by_id(&rows, "7a").value, Some(1.0));
        assert_eq!(by_id(&rows, "7a").met(), Some(true));
        assert!((by_id(&rows, "7b").value.unwrap() - 1.01).abs() < 1e-9);
        // No park or futex rows in the synthetic report: no value.
        assert_eq!(by_id(&rows, "3").value, None);
        assert_eq!(by_id(&rows, "3").met(), None);
    }

    #[test]
    fn blocks_in_turn_set_the_latency_targets() {
        let mut report = synthetic();
        report.paired.push(crate::report::PairedRow {
            target: "1".into(),
            num: "shmbox spin, 8 B, written".into(),
            den: "raw payload, 8 B, written".into(),
            num_p50_ns: vec![150.0, 330.0, 120.0],
            den_p50_ns: vec![100.0, 300.0, 100.0],
        });
        let rows = report.targets();
        // Blocks 1.5x, 1.1x, 1.2x: the median, not the table's 1.5x.
        let one = by_id(&rows, "1");
        assert!((one.value.unwrap() - 1.2).abs() < 1e-9, "{one:?}");
        assert_eq!(one.met(), Some(true));
        assert!(
            one.detail.contains("3 blocks in turn, 1.10-1.50x"),
            "{}",
            one.detail
        );
        assert!(one.detail.contains("= 1.500x"), "{}", one.detail);
        // Target 2 has no blocks: the table's ratio (150 * 1025 / 150).
        assert!((by_id(&rows, "2").value.unwrap() - 1025.0).abs() < 1e-6);
    }

    #[test]
    fn medians_of_several_runs() {
        let spin_8b = |report: &mut Report, ns: f64| {
            for r in &mut report.latency {
                if r.transport == "shmbox spin" && r.size == 8 {
                    r.p50_ns = ns;
                }
            }
        };
        let runs: Vec<Report> = [300.0, 110.0, 120.0]
            .into_iter()
            .map(|ns| {
                let mut r = synthetic();
                spin_8b(&mut r, ns);
                r
            })
            .collect();
        let median = median_targets(&runs);
        let one = by_id(&median, "1");
        assert!((one.value.unwrap() - 1.2).abs() < 1e-9, "{one:?}");
        assert_eq!(one.met(), Some(true));
        assert!(
            one.detail.contains("1.100x, 1.200x, 3.000x"),
            "{}",
            one.detail
        );
        let mut table = String::new();
        write_targets(&mut table, &median);
        assert!(table.contains("MISSED") && table.contains("met"), "{table}");
    }
}
