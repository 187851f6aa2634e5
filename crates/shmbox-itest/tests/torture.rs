//! Kill torture: participants exchange checksummed, sequence-numbered
//! messages through every size class, and now and then leave and join
//! again, while the driver SIGKILLs a random one at a random moment and
//! restarts it, again and again (200 kills by default; `SHMBOX_KILLS=1000`
//! for a soak, `SHMBOX_TORTURE_SEED` to replay).
//!
//! At the end every survivor must stop cleanly, the pool must be full
//! again after a sweep, no message may be corrupt or delivered twice, and
//! every message that was sent but never received must have been addressed
//! to a participant that was killed or left.

use shmbox::{Config, Region, SizeClass};
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const PEER: &str = env!("CARGO_BIN_EXE_shmbox-peer");
const PEERS: u32 = 4;

/// A region name, log directory and stop file unique to this run; all
/// removed on drop.
struct Scratch {
    region: String,
    dir: std::path::PathBuf,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = Region::remove(&self.region);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Peer {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Its first incarnation's address (see `ready_address`).
    first: (u32, u32),
}

/// An incarnation's address as a `ready <slot> <generation>` line gives it:
/// (slot, generation & 0xffff), unique to the incarnation.
fn ready_address(line: &str) -> Option<(u32, u32)> {
    let (slot, generation) = line.strip_prefix("ready ")?.split_once(' ')?;
    Some((slot.parse().ok()?, generation.parse::<u32>().ok()? & 0xffff))
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_peer(s: &Scratch, index: u32, seed: u64) -> Peer {
    let mut child = Command::new(PEER)
        .args([
            "torture",
            &s.region,
            &index.to_string(),
            &PEERS.to_string(),
            s.dir.to_str().unwrap(),
            s.dir.join("stop").to_str().unwrap(),
            &seed.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn peer");
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // A peer that fails to start is killed (on drop) by the panic.
    let mut peer = Peer {
        child,
        lines,
        first: (0, 0),
    };
    let line = peer.lines.recv_timeout(Duration::from_secs(20));
    match line.as_deref().ok().and_then(ready_address) {
        Some(address) => {
            peer.first = address;
            peer
        }
        None => panic!("peer p{index} did not start: {line:?}"),
    }
}

/// Every line an exited peer printed: its reader thread may still be
/// forwarding the last ones, so wait (boundedly) until it reaches the end
/// of the pipe.
fn all_lines(lines: &mpsc::Receiver<String>) -> Vec<String> {
    let until = Instant::now() + Duration::from_secs(10);
    let mut all = Vec::new();
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(line) => all.push(line),
            Err(_) => break, // the pipe's end (or the bound)
        }
    }
    all
}

fn mix(x: u64) -> u64 {
    shmbox_itest::mix(x)
}

fn config() -> Config {
    Config::default()
        .with_classes(&[
            SizeClass::new(64, 256), // large enough for batched claims
            SizeClass::new(256, 32),
            SizeClass::new(1024, 16),
            SizeClass::new(4096, 8),
            SizeClass::new(8192, 8),
        ])
        .with_max_participants(8)
        .with_mailbox_capacity(16)
}

#[test]
fn kill_torture() {
    let kills: u32 = std::env::var("SHMBOX_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let seed: u64 = std::env::var("SHMBOX_TORTURE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(now.as_nanos() as u64);
    eprintln!("kill torture: {kills} kills, seed {seed} (SHMBOX_TORTURE_SEED to replay)");
    let tag = format!("{}-{}", std::process::id(), now.subsec_nanos());
    let scratch = Scratch {
        region: format!("itest-torture-{tag}"),
        dir: std::env::temp_dir().join(format!("shmbox-torture-{tag}")),
    };
    std::fs::create_dir_all(&scratch.dir).unwrap();
    let region = Region::create(&scratch.region, &config()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(600);

    let mut rng = seed;
    let mut next = || {
        rng = mix(rng);
        rng
    };
    let mut peers: Vec<Peer> = (0..PEERS)
        .map(|i| spawn_peer(&scratch, i, next()))
        .collect();
    let mut swept = shmbox::SweepReport::default();
    for k in 0..kills {
        assert!(
            Instant::now() < deadline,
            "watchdog: torture ran out of time after {k} kills"
        );
        std::thread::sleep(Duration::from_micros(5_000 + next() % 55_000));
        let i = (next() % u64::from(PEERS)) as usize;
        for (j, p) in peers.iter_mut().enumerate() {
            if let Some(status) = p.child.try_wait().unwrap() {
                panic!(
                    "survivor p{j} exited by itself ({status}): {:?}",
                    all_lines(&p.lines)
                );
            }
        }
        peers[i].child.kill().unwrap();
        peers[i].child.wait().unwrap();
        if k % 8 == 0 {
            // Right after a sweep, every held chunk has a live holder.
            swept += region.sweep();
            for class in region.pool_usage() {
                assert_eq!(class.held_by_dead, 0, "after kill {k}: {class:?}");
            }
        }
        peers[i] = spawn_peer(&scratch, i as u32, next());
    }

    // Stop everyone; each drains its mailbox and exits on its own. The
    // survivors are each peer's last incarnation.
    std::fs::write(scratch.dir.join("stop"), b"").unwrap();
    let stop_by = Instant::now() + Duration::from_secs(60);
    let mut survivors: HashSet<(u32, u32)> = HashSet::new();
    for (i, p) in peers.iter_mut().enumerate() {
        loop {
            if let Some(status) = p.child.try_wait().unwrap() {
                let lines = all_lines(&p.lines);
                assert!(status.success(), "p{i} failed: {lines:?}");
                assert!(
                    lines.last().is_some_and(|l| l.starts_with("ok ")),
                    "p{i}: {lines:?}"
                );
                eprintln!("p{i}: {}", lines.last().unwrap());
                // The incarnation it started with, if it never rejoined.
                let last = lines.iter().rev().find_map(|l| ready_address(l));
                survivors.insert(last.unwrap_or(p.first));
                break;
            }
            assert!(
                Instant::now() < stop_by,
                "watchdog: p{i} did not stop (hung survivor)"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    swept += region.sweep();

    // Nothing leaked.
    shmbox_itest::assert_nothing_left(&region);

    // Every message: received at most once, by the participant it was sent
    // to; sent-but-lost only towards participants killed or departed.
    let mut sent: HashMap<(u32, u64), (u32, u32)> = HashMap::new();
    let mut received: HashMap<(u32, u64), (u32, u32)> = HashMap::new();
    let mut incarnations: HashSet<(u32, u32)> = HashSet::new();
    let mut left: HashSet<(u32, u32)> = HashSet::new();
    for entry in std::fs::read_dir(&scratch.dir).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_str().unwrap().to_string();
        let Some(stem) = file.strip_suffix(".log") else {
            continue;
        };
        let (slot, generation) = stem[1..].split_once('.').unwrap();
        let me: (u32, u32) = (
            slot.parse().unwrap(),
            generation.parse::<u32>().unwrap() & 0xffff,
        );
        incarnations.insert(me);
        let text = std::fs::read_to_string(&path).unwrap();
        // A killed participant's last line may be cut short; no other.
        let lines: Vec<&str> = text.lines().collect();
        for (n, line) in lines.iter().enumerate() {
            let f: Vec<&str> = line.split(' ').collect();
            let parsed = match (f[0], f.len()) {
                ("S", 5) => (|| {
                    let key = (f[1].parse::<u32>().ok()?, f[2].parse::<u64>().ok()?);
                    let dest = (
                        f[3].parse::<u32>().ok()?,
                        f[4].parse::<u32>().ok()? & 0xffff,
                    );
                    sent.insert(key, dest);
                    Some(())
                })(),
                ("L", 1) => {
                    left.insert(me);
                    Some(())
                }
                ("R", 3) => (|| {
                    let key = (f[1].parse::<u32>().ok()?, f[2].parse::<u64>().ok()?);
                    if let Some(first) = received.insert(key, me) {
                        panic!("message {key:?} delivered twice: to {first:?} and {me:?}");
                    }
                    Some(())
                })(),
                _ => None,
            };
            assert!(
                parsed.is_some() || n + 1 == lines.len(),
                "{file}: bad line {n}: {line:?}"
            );
        }
    }
    // Killed: every incarnation that neither left nor survived.
    let killed: HashSet<(u32, u32)> = incarnations
        .iter()
        .filter(|a| !left.contains(a) && !survivors.contains(a))
        .copied()
        .collect();
    let sender_of = |id: u32| (id >> 16, id & 0xffff);
    for (key, receiver) in &received {
        match sent.get(key) {
            Some(dest) => assert_eq!(
                dest, receiver,
                "message {key:?} delivered to the wrong participant"
            ),
            None => assert!(
                killed.contains(&sender_of(key.0)),
                "message {key:?} received but never logged as sent by a live sender"
            ),
        }
    }
    let mut lost = 0;
    for (key, dest) in &sent {
        if !received.contains_key(key) {
            assert!(
                !survivors.contains(dest),
                "message {key:?} to surviving participant {dest:?} was lost"
            );
            lost += 1;
        }
    }
    eprintln!(
        "kill torture: {kills} kills, {} departures, {} messages sent, {} received, {lost} lost \
         (all to killed or departed participants); driver sweeps reclaimed {} participants, {} chunks",
        left.len(),
        sent.len(),
        received.len(),
        swept.participants,
        swept.chunks
    );
    assert!(
        received.len() > kills as usize,
        "too little traffic to mean anything"
    );
}
