//! `shmbox bench [--quick] [--sizes ...] [--json] [--plot FILE.svg]`: runs
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
    let report = shmbox_bench::run(&options)
        .map_err(|e| Failure::error(format!("benchmark failed: {e}")))?;
    if args.json {
        let mut json = report.to_json();
        if !json.ends_with('\n') {
            json.push('\n');
        }
        output::print(&json)?;
    } else {
        output::print(&report.table())?;
    }
    if let Some(path) = &args.plot {
        report.write_svg(path).map_err(|e| {
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
