//! `shmbox bench [--quick] [--sizes ...] [--json] [--plot FILE.svg] [--repeat N]`: runs
//! the benchmark harness of crates/shmbox-bench.
//!
//! The harness re-executes this program as its peer processes, so `main`
//! calls [`shmbox_bench::peer_main_if_requested`] first thing.

use crate::cli::BenchArgs;
use crate::{output, Failure, Result};
use std::io::IsTerminal;

pub fn run(args: BenchArgs) -> Result {
    let options = shmbox_bench::Options {
        quick: args.quick,
        sizes: args.sizes,
        progress: std::io::stderr().is_terminal(),
    };
    let mut reports = Vec::new();
    for i in 0..args.repeat {
        if args.repeat > 1 {
            eprintln!("run {} of {}", i + 1, args.repeat);
        }
        reports.push(
            shmbox_bench::run(&options)
                .map_err(|e| Failure::error(format!("benchmark failed: {e}")))?,
        );
    }
    let last = reports.last().expect("at least one run");
    if args.json {
        let mut json = match reports.len() {
            1 => last.to_json(),
            _ => serde_json::to_string_pretty(&serde_json::json!({
                "runs": reports,
                "targets_median": shmbox_bench::median_targets(&reports),
            }))
            .map_err(|e| Failure::error(format!("encoding the report: {e}")))?,
        };
        if !json.ends_with('\n') {
            json.push('\n');
        }
        output::print(&json)?;
    } else if reports.len() == 1 {
        output::print(&last.table())?;
    } else {
        // The last run's targets end its table; the earlier runs' follow.
        let mut out = String::new();
        let n = reports.len();
        for (i, report) in reports[..n - 1].iter().enumerate() {
            out.push_str(&format!("\nRun {} of {n}:\n", i + 1));
            shmbox_bench::write_targets(&mut out, &report.targets());
        }
        out.push_str(&format!(
            "\nTargets, median of {n} runs (run {n}'s full table is above)\n"
        ));
        shmbox_bench::write_targets(&mut out, &shmbox_bench::median_targets(&reports));
        output::print(&format!("{}{out}", last.table()))?;
    }
    if let Some(path) = &args.plot {
        last.write_svg(path).map_err(|e| {
            Failure::error(format!(
                "writing the chart to {} failed: {e}",
                path.display()
            ))
        })?;
        if !args.json {
            eprintln!("chart written to {}", path.display());
        }
    }
    Ok(())
}
