//! Crash recovery, shown: a participant is killed with SIGKILL while it
//! holds loans, has messages queued for it and is half-way through its
//! work; the survivor reclaims everything with one sweep and keeps going.
//!
//! ```text
//! cargo run --release -p shmbox --example crash_recovery
//! ```
//!
//! The parent creates a region (default config), re-executes itself as a
//! child that joins, loans chunks and receives messages without releasing
//! them, then gets killed. The parent shows the pool before and after
//! `Region::sweep`, and how long the sweep took, and fails unless the sweep
//! reclaimed the child and every chunk it held. A watchdog ends the run
//! (and the child) if anything takes longer than 30 s.

use shmbox::{Config, Region};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("--child") {
        return child(&args.next().ok_or("region name missing")?);
    }
    let name = format!("crash-recovery-{}", std::process::id());
    watchdog(&name, Duration::from_secs(30));
    let region = Region::create(&name, &Config::default())?;
    let result = run(&region, &name);
    Region::remove(&name)?;
    result
}

fn run(region: &Region, name: &str) -> Result<(), Box<dyn std::error::Error>> {
    let survivor = region.join("survivor")?;
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--child", name])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
    if line.trim() != "ready" {
        child.kill()?;
        child.wait()?;
        return Err(format!("child said {line:?}").into());
    }
    // Queue a few messages for the child that it will never read.
    let victim = region.address("victim")?;
    for i in 0..10u8 {
        survivor.send_copy(&[i; 100], &victim)?;
    }
    print_pool("before the crash", region);

    child.kill()?; // SIGKILL: no destructor, no cleanup of any kind
    child.wait()?;
    println!(
        "victim killed with SIGKILL; it is still in the table: {:?}",
        names(region)
    );
    print_pool("after the crash", region);

    let started = Instant::now();
    let report = region.sweep();
    let took = started.elapsed();
    println!(
        "sweep: {} participant, {} queued messages, {} chunks reclaimed in {:.1} µs",
        report.participants,
        report.messages,
        report.chunks,
        took.as_secs_f64() * 1e6
    );
    print_pool("after the sweep", region);
    // Everything the victim held is free again; the survivor may keep a
    // few chunks of its own for its next loans.
    let kept = region
        .participants()
        .iter()
        .map(|p| u64::from(p.holding))
        .sum::<u64>();
    let (free, count) = region.pool_usage().iter().fold((0, 0), |(f, c), u| {
        (f + u64::from(u.free), c + u64::from(u.count))
    });
    if report.participants != 1 || free + kept != count {
        return Err(format!(
            "the sweep left chunks behind: {report:?}, {free} free + {kept} kept of {count}"
        )
        .into());
    }
    let idle = Instant::now();
    let nothing = region.sweep();
    println!(
        "a sweep with nobody dead: {:?} in {:.1} µs",
        nothing,
        idle.elapsed().as_secs_f64() * 1e6
    );
    // The name is free again: a restarted victim just joins.
    let again = region.join("victim")?;
    survivor.send_copy(b"welcome back", &again.address())?;
    println!(
        "restarted victim got: {:?}",
        String::from_utf8_lossy(&again.recv_timeout(Duration::from_secs(1))?)
    );
    Ok(())
}

fn child(name: &str) -> Result<(), Box<dyn std::error::Error>> {
    let region = Region::open(name)?;
    let me = region.join("victim")?;
    let loans: Vec<_> = (0..20)
        .map(|i| me.loan(1 << (i % 12)))
        .collect::<Result<_, _>>()?;
    println!("ready");
    // Receive without releasing, then hang on to everything until killed.
    let mut held = Vec::new();
    while let Ok(msg) = me.recv_timeout(Duration::from_millis(200)) {
        held.push(msg);
        if held.len() == 4 {
            break;
        }
    }
    std::thread::sleep(Duration::from_secs(60));
    drop((loans, held));
    Ok(())
}

/// Ends the process (removing the region, and with it the child's
/// chance to hang on) if the run takes longer than `limit`.
fn watchdog(name: &str, limit: Duration) {
    let name = name.to_string();
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("crash_recovery: watchdog: still running after {limit:?}");
        let _ = Region::remove(&name);
        std::process::exit(2);
    });
}

fn names(region: &Region) -> Vec<String> {
    region.participants().into_iter().map(|p| p.name).collect()
}

fn print_pool(when: &str, region: &Region) {
    let usage: Vec<String> = region
        .pool_usage()
        .iter()
        .map(|c| format!("{}B {}/{} free", c.size, c.free, c.count))
        .collect();
    println!("{when:>17}: {}", usage.join(", "));
}
