//! Smoke test of the whole harness: every transport and measurement with
//! budgets of a few milliseconds, real peer processes included. It has its
//! own `main` (no libtest) because the peers re-execute this binary.

use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The run is killed (and the peers with it) if it takes longer.
const WATCHDOG: Duration = Duration::from_secs(60);

fn check() -> Result<(), String> {
    let report = shmbox_bench::testing::run_tiny(&[8, 4096])?;
    if !report.failures.is_empty() {
        return Err(format!("failures:\n{}", report.failures.join("\n")));
    }
    // raw flag once; 9 other transports x 2 sizes x 2 modes.
    if report.latency.len() != 1 + 9 * 2 * 2 {
        return Err(format!("{} latency rows", report.latency.len()));
    }
    // Ring, shmbox and Unix socket at 8 B and 1 MiB, shmbox batches at
    // 8 B only; each with and without the receiver reading.
    if report.throughput.len() != (3 * 2 + 1) * 2 || report.fan_in.len() != 3 {
        return Err("missing throughput rows".into());
    }
    if let Some(r) = report
        .latency
        .iter()
        .find(|r| r.rounds == 0 || r.p50_ns <= 0.0)
    {
        return Err(format!("empty latency row {r:?}"));
    }
    if let Some(r) = report.throughput.iter().find(|r| r.messages == 0) {
        return Err(format!("empty throughput row {r:?}"));
    }
    // The memory measurement ran, and every target has a value.
    let memory = report.memory.as_ref().ok_or("no memory measurement")?;
    if memory.resident_bytes == 0 || memory.payload_bytes >= memory.total_size {
        return Err(format!("implausible memory row {memory:?}"));
    }
    let targets = report.targets();
    // 1, the reference row 1d, 2-6, 7a, 7b.
    if targets.len() != 9 || targets.iter().filter(|t| t.reference).count() != 1 {
        return Err(format!("{} targets", targets.len()));
    }
    // (Target 2's table cells need 1 MiB, which this run lacks: its value
    // comes from the blocks measured in turn.)
    if let Some(t) = targets.iter().find(|t| t.value.is_none()) {
        return Err(format!("target without a value: {t:?}"));
    }
    // Targets 1-3 (and 1d) measured in turn, two blocks each, every cell
    // measured.
    let ids: Vec<&str> = report.paired.iter().map(|p| p.target.as_str()).collect();
    if ids != ["1", "1d", "2", "3"] {
        return Err(format!("targets in turn: {ids:?}"));
    }
    if let Some(p) = report.paired.iter().find(|p| {
        p.ratios().len() != 2 || p.num_p50_ns.iter().chain(&p.den_p50_ns).any(|&v| v <= 0.0)
    }) {
        return Err(format!("incomplete blocks {p:?}"));
    }
    let table = report.table();
    for needle in [
        "machine:",
        "shmbox spin",
        "raw futex",
        "tcp loopback",
        "Many-to-one",
        "Memory:",
        "Targets",
    ] {
        if !table.contains(needle) {
            return Err(format!("{needle:?} missing from the table:\n{table}"));
        }
    }
    let json: serde_json::Value =
        serde_json::from_str(&report.to_json()).map_err(|e| e.to_string())?;
    if json["latency"].as_array().map(Vec::len) != Some(report.latency.len()) {
        return Err("JSON lacks the latency rows".into());
    }
    let svg = std::env::temp_dir().join(format!("shmbox-bench-tiny-{}.svg", std::process::id()));
    report.write_svg(&svg)?;
    let _ = std::fs::remove_file(&svg);
    // Nothing left behind in /dev/shm.
    let pid = std::process::id();
    let leftovers: Vec<String> = std::fs::read_dir("/dev/shm")
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains(&format!("bench-{pid}-")))
        .collect();
    if !leftovers.is_empty() {
        return Err(format!("left in /dev/shm: {leftovers:?}"));
    }
    Ok(())
}

fn main() -> ExitCode {
    shmbox_bench::peer_main_if_requested();
    if std::env::args().any(|a| a == "--list") {
        println!("tiny_run: test");
        return ExitCode::SUCCESS;
    }
    std::thread::spawn(|| {
        std::thread::sleep(WATCHDOG);
        eprintln!("tiny_run: still running after {WATCHDOG:?}; aborting");
        std::process::exit(2);
    });
    let started = Instant::now();
    println!("\nrunning 1 test");
    let result = check();
    let secs = started.elapsed().as_secs_f64();
    match result {
        Ok(()) => {
            println!("test tiny_run ... ok\n");
            println!("test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in {secs:.2}s\n");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("test tiny_run ... FAILED\n\n{e}\n");
            println!("test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in {secs:.2}s\n");
            ExitCode::FAILURE
        }
    }
}
