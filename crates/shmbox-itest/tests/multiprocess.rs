//! Real processes exchanging messages through one region. Every test uses a
//! unique region name that it removes, and a watchdog that kills its
//! children and fails instead of hanging.

use shmbox::{Config, Region, SizeClass};
use shmbox_itest::{assert_nothing_left, TestRegion};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const PEER: &str = env!("CARGO_BIN_EXE_shmbox-peer");

/// Children killed on drop, so a failing test leaves no process behind.
#[derive(Default)]
struct Children(Vec<(String, Child)>);

impl Children {
    fn spawn(&mut self, label: &str, args: &[&str]) {
        let child = Command::new(PEER)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn peer");
        self.0.push((label.to_string(), child));
    }

    /// Waits for every child; after `limit` kills them all and panics.
    /// Returns each child's output line, in spawn order.
    fn wait_all(&mut self, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        let mut status = vec![None; self.0.len()];
        while status.iter().any(Option::is_none) {
            for (i, (_, child)) in self.0.iter_mut().enumerate() {
                if status[i].is_none() {
                    status[i] = child.try_wait().expect("try_wait");
                }
            }
            if Instant::now() > deadline {
                let stuck: Vec<_> = self
                    .0
                    .iter()
                    .zip(&status)
                    .filter(|(_, s)| s.is_none())
                    .map(|((l, _), _)| l.clone())
                    .collect();
                panic!("watchdog: {stuck:?} still running after {limit:?}; killed");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.0
            .drain(..)
            .zip(status)
            .map(|((label, child), st)| {
                let out = child.wait_with_output().expect("output");
                let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
                assert!(st.unwrap().success(), "{label} failed: {line}");
                line
            })
            .collect()
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Five size classes so random sizes cover them all; small pools, so
/// loaners really wait for releases.
fn test_config() -> Config {
    Config::default()
        .with_classes(&[
            SizeClass::new(64, 256),
            SizeClass::new(256, 128),
            SizeClass::new(1024, 64),
            SizeClass::new(4096, 32),
            SizeClass::new(8192, 16),
        ])
        .with_max_participants(8)
        .with_mailbox_capacity(128)
}

fn many_to_one(tag: &str, senders: u64, total: u64, strategy: &str) {
    let name = TestRegion::new("itest", tag);
    let region = Region::create(&name.0, &test_config()).unwrap();
    let per = total / senders;
    let mut kids = Children::default();
    let (per_s, senders_s) = (per.to_string(), senders.to_string());
    kids.spawn(
        "receiver",
        &["recv", &name.0, "rx", &senders_s, &per_s, strategy],
    );
    for id in 0..senders {
        let id_s = id.to_string();
        kids.spawn(
            &format!("sender {id}"),
            &["send", &name.0, &format!("tx{id}"), "rx", &id_s, &per_s],
        );
    }
    let lines = kids.wait_all(Duration::from_secs(300));
    eprintln!("{tag}: {}", lines[0]);
    assert!(
        lines[0].starts_with(&format!("ok received={}", per * senders)),
        "{}",
        lines[0]
    );
    assert_nothing_left(&region);
}

/// 2 processes x 1,000,000 messages of random sizes over every size class:
/// sequence numbers and checksums verified, none lost or duplicated, the
/// pool full again at the end.
#[test]
fn two_processes_a_million_messages() {
    many_to_one("pair", 1, 1_000_000, "adaptive");
}

/// 4 senders into one receiver, same checks.
#[test]
fn four_senders_one_receiver() {
    many_to_one("fan-in", 4, 1_000_000, "park");
}

/// 8 processes race `open_or_create` on one name: exactly one creates, and
/// all attach to that one region (each sees all 8 participants).
#[test]
fn eight_processes_race_open_or_create() {
    let name = TestRegion::new("itest", "race");
    let start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        + 300_000_000;
    let mut kids = Children::default();
    for i in 0..8 {
        kids.spawn(
            &format!("racer {i}"),
            &["race", &name.0, &i.to_string(), &start.to_string()],
        );
    }
    let lines = kids.wait_all(Duration::from_secs(60));
    let created = lines.iter().filter(|l| l.starts_with("ok created")).count();
    assert_eq!(created, 1, "{lines:?}");
    for line in &lines {
        assert!(
            line.ends_with("participants=8"),
            "a racer attached elsewhere: {lines:?}"
        );
    }
    let region = Region::open(&name.0).unwrap();
    assert!(region.participants().is_empty());
}
