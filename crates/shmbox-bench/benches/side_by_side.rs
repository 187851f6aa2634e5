//! `cargo bench -p shmbox-bench`: the side-by-side run, quick unless
//! `--full` is passed (`cargo bench -p shmbox-bench -- --full`). Prints the
//! table and writes `target/side_by_side.svg` and `target/side_by_side.json`.
//! Other arguments (cargo passes `--bench`) are ignored.

use std::path::PathBuf;
use std::process::ExitCode;

/// The workspace's target directory: this binary lives in
/// `<target>/<profile>/deps/`.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().ok();
    let deps = exe.as_deref().and_then(|e| e.parent());
    match deps.filter(|d| d.ends_with("deps")) {
        Some(deps) => deps
            .ancestors()
            .nth(2)
            .map(PathBuf::from)
            .unwrap_or_default(),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"),
    }
}

fn main() -> ExitCode {
    shmbox_bench::peer_main_if_requested();
    let full = std::env::args().any(|a| a == "--full");
    let options = shmbox_bench::Options {
        quick: !full,
        sizes: None,
        progress: true,
    };
    let report = match shmbox_bench::run(&options) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("side_by_side: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("{}", report.table());
    let dir = target_dir();
    let json = dir.join("side_by_side.json");
    if let Err(e) = std::fs::write(&json, report.to_json()) {
        eprintln!("side_by_side: writing {}: {e}", json.display());
        return ExitCode::FAILURE;
    }
    let svg = dir.join("side_by_side.svg");
    if let Err(e) = report.write_svg(&svg) {
        eprintln!("side_by_side: {e}");
        return ExitCode::FAILURE;
    }
    println!("wrote {} and {}", svg.display(), json.display());
    match report.failures.is_empty() {
        true => ExitCode::SUCCESS,
        false => ExitCode::FAILURE,
    }
}
