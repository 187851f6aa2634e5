//! The peer program the multi-process tests spawn.
//!
//! ```text
//! shmbox-peer recv REGION NAME SENDERS PER_SENDER STRATEGY
//! shmbox-peer send REGION NAME TO SENDER_ID COUNT
//! shmbox-peer race REGION INDEX START_UNIX_NS
//! shmbox-peer torture REGION INDEX PEERS LOG_DIR STOP_FILE SEED
//! ```
//!
//! Each prints one line starting with `ok` or `FAIL` and exits 0 or 1. A
//! peer whose parent (the test) dies gets SIGKILL, so none outlives it.

use shmbox::{Config, Region, SizeClass, WaitStrategy};
use shmbox_itest::{fill, message_len, mix, verify};
use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a peer waits for a message or for its counterpart before it
/// gives up (the test's watchdog is the outer bound).
const PATIENCE: Duration = Duration::from_secs(60);

fn main() {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number and touches no
    // memory of ours.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("recv") if args.len() == 6 => {
            receive(&args[1], &args[2], num(&args[3]), num(&args[4]), &args[5])
        }
        Some("send") if args.len() == 6 => send(
            &args[1],
            &args[2],
            &args[3],
            num(&args[4]) as u32,
            num(&args[5]),
        ),
        Some("race") if args.len() == 4 => race(&args[1], num(&args[2]) as u32, num(&args[3])),
        Some("torture") if args.len() == 7 => torture(
            &args[1],
            num(&args[2]) as u32,
            num(&args[3]) as u32,
            &args[4],
            &args[5],
            num(&args[6]),
        ),
        _ => Err(format!("bad arguments: {args:?}")),
    };
    match result {
        Ok(line) => println!("ok {line}"),
        Err(e) => {
            println!("FAIL {e}");
            std::process::exit(1);
        }
    }
}

fn num(s: &str) -> u64 {
    s.parse().unwrap_or_else(|_| panic!("not a number: {s}"))
}

fn strategy(s: &str) -> Result<WaitStrategy, String> {
    match s {
        "spin" => Ok(WaitStrategy::Spin),
        "park" => Ok(WaitStrategy::Park),
        "adaptive" => Ok(WaitStrategy::Adaptive),
        _ => Err(format!("unknown strategy {s}")),
    }
}

fn class_sizes(region: &Region) -> Vec<u64> {
    region.config().classes().iter().map(|c| c.size).collect()
}

/// Receives `senders * per_sender` messages, checking every checksum and
/// that each sender's sequence numbers arrive exactly once, in order.
fn receive(
    region: &str,
    name: &str,
    senders: u64,
    per_sender: u64,
    strat: &str,
) -> Result<String, String> {
    let region = Region::open(region).map_err(|e| e.to_string())?;
    let me = region
        .join_with(name, strategy(strat)?)
        .map_err(|e| e.to_string())?;
    let classes = class_sizes(&region);
    let mut next = vec![0u64; senders as usize];
    let total = senders * per_sender;
    let mut bytes = 0u64;
    let mut started = None;
    for _ in 0..total {
        let msg = me.recv_timeout(PATIENCE).map_err(|e| e.to_string())?;
        started.get_or_insert_with(Instant::now);
        let (sender, seq) = verify(&msg)?;
        let expected = next
            .get_mut(sender as usize)
            .ok_or(format!("unknown sender {sender}"))?;
        if seq != *expected {
            return Err(format!(
                "sender {sender}: got seq {seq}, expected {expected}"
            ));
        }
        if msg.len() != message_len(sender, seq, &classes) {
            return Err(format!(
                "sender {sender} seq {seq}: wrong length {}",
                msg.len()
            ));
        }
        *expected += 1;
        bytes += msg.len() as u64;
    }
    let secs = started.map_or(0.0, |s| s.elapsed().as_secs_f64()).max(1e-9);
    if let Ok(extra) = me.try_recv() {
        return Err(format!("unexpected extra message of {} bytes", extra.len()));
    }
    Ok(format!(
        "received={total} bytes={bytes} secs={secs:.3} msgs_per_sec={:.0}",
        total as f64 / secs
    ))
}

/// Sends `count` messages of varied sizes to participant `to`.
fn send(region: &str, name: &str, to: &str, id: u32, count: u64) -> Result<String, String> {
    let region = Region::open(region).map_err(|e| e.to_string())?;
    let me = region.join(name).map_err(|e| e.to_string())?;
    let dest = region.wait_for(to, PATIENCE).map_err(|e| e.to_string())?;
    let classes = class_sizes(&region);
    for seq in 0..count {
        let len = message_len(id, seq, &classes);
        let mut loan = me.loan_timeout(len, PATIENCE).map_err(|e| e.to_string())?;
        fill(&mut loan, id, seq);
        me.send_timeout(loan, &dest, PATIENCE)
            .map_err(|e| format!("seq {seq}: {e}"))?;
    }
    Ok(format!("sent={count}"))
}

/// Races `open_or_create` against the other racers at `start_ns`, then
/// joins; reports whether it created the region.
fn race(region: &str, index: u32, start_ns: u64) -> Result<String, String> {
    let config = Config::default()
        .with_classes(&[SizeClass::new(64, 64)])
        .with_max_participants(16)
        .with_mailbox_capacity(64);
    while (SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64)
        < start_ns
    {
        std::hint::spin_loop();
    }
    let r = Region::open_or_create(region, &config).map_err(|e| e.to_string())?;
    let _me = r
        .join(&format!("racer-{index}"))
        .map_err(|e| e.to_string())?;
    // Stay until every racer has joined, so each one attaches to the same
    // live region.
    let deadline = Instant::now() + PATIENCE;
    let mut seen = 0;
    while seen < 8 && Instant::now() < deadline {
        seen = seen.max(r.participants().len());
        std::thread::sleep(Duration::from_millis(1));
    }
    // Linger so the slower racers see everyone too.
    std::thread::sleep(Duration::from_millis(300));
    Ok(format!(
        "{} participants={seen}",
        if r.created() { "created" } else { "opened" },
    ))
}

/// One participant of the kill-torture test. Until `stop_file` exists it
/// sends checksummed, sequence-numbered messages of every size class to
/// random peers, receives, holds loans and messages for a while, sometimes
/// dawdles so mailboxes fill and senders block, and now and then leaves
/// the region and joins it again under the same name (a new incarnation).
/// Every message an incarnation sent (`S`) or received (`R`) goes to
/// `LOG_DIR/s<SLOT>.<GENERATION>.log` as `S sender seq dest_slot
/// dest_generation` / `R sender seq`, where `sender` packs the sender's
/// slot and generation (its address: unique to the incarnation); an
/// incarnation that leaves writes `L` last. Each incarnation prints
/// `ready <slot> <generation>` once joined. When stopped it drains its
/// mailbox and exits.
fn torture(
    region: &str,
    index: u32,
    peers: u32,
    log_dir: &str,
    stop_file: &str,
    seed: u64,
) -> Result<String, String> {
    let region = Region::open(region).map_err(|e| e.to_string())?;
    let mut t = Torture {
        index,
        peers,
        log_dir,
        stop: std::path::Path::new(stop_file),
        rng: seed,
        strategy: [
            WaitStrategy::Spin,
            WaitStrategy::Adaptive,
            WaitStrategy::Park,
        ][(seed % 3) as usize],
        classes: class_sizes(&region),
        sent: 0,
        received: 0,
        steps: 0,
        no_loan: 0,
        full: 0,
        gone: 0,
        rejoins: 0,
    };
    while t.incarnation(&region)? {
        t.rejoins += 1;
    }
    Ok(format!(
        "sent={} received={} steps={} no_loan={} full={} gone={} rejoins={}",
        t.sent, t.received, t.steps, t.no_loan, t.full, t.gone, t.rejoins
    ))
}

/// A torture participant's state across its incarnations.
struct Torture<'a> {
    index: u32,
    peers: u32,
    log_dir: &'a str,
    stop: &'a std::path::Path,
    rng: u64,
    strategy: WaitStrategy,
    classes: Vec<u64>,
    sent: u64,
    received: u64,
    steps: u64,
    no_loan: u64,
    full: u64,
    gone: u64,
    rejoins: u64,
}

impl Torture<'_> {
    fn next(&mut self) -> u64 {
        self.rng = mix(self.rng);
        self.rng
    }

    /// One incarnation: joins, works until it decides to leave (`true`: join
    /// again) or the stop file appears (`false`, after draining).
    fn incarnation(&mut self, region: &Region) -> Result<bool, String> {
        let me = region
            .join_with(&format!("p{}", self.index), self.strategy)
            .map_err(|e| e.to_string())?;
        // An incarnation is its address: slots are reused, but each reuse
        // bumps the slot's generation.
        let (slot, generation) = (me.address().slot(), me.address().generation());
        let id = (slot << 16) | (generation & 0xffff);
        let path = format!("{}/s{slot}.{generation}.log", self.log_dir);
        // Unbuffered: one write per line, so a kill loses at most the line
        // being written.
        let mut log = std::fs::File::create(&path).map_err(|e| e.to_string())?;
        println!("ready {slot} {generation}");
        std::io::stdout().flush().map_err(|e| e.to_string())?;
        self.rng ^= u64::from(id) << 32;
        let short = Duration::from_millis(50);
        let mut seq = 0u64;
        let mut held_messages = Vec::new();
        let mut held_loans = Vec::new();
        loop {
            if self.steps.is_multiple_of(8) && self.stop.exists() {
                break;
            }
            self.steps += 1;
            match self.next() % 16 {
                0..=6 => {
                    let to = (self.index + 1 + (self.next() % u64::from(self.peers - 1)) as u32)
                        % self.peers;
                    let Ok(dest) = region.address(&format!("p{to}")) else {
                        continue;
                    };
                    let len = message_len(id, seq, &self.classes);
                    let Ok(mut loan) = me.loan_timeout(len, short) else {
                        self.no_loan += 1;
                        continue;
                    };
                    fill(&mut loan, id, seq);
                    match me.send_timeout(loan, &dest, short) {
                        Ok(()) => {
                            let (dslot, dgen) = (dest.slot(), dest.generation());
                            let line = format!("S {id} {seq} {dslot} {dgen}\n");
                            log.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
                            self.sent += 1;
                        }
                        Err(shmbox::SendTimeoutError::Timeout(_)) => self.full += 1,
                        Err(shmbox::SendTimeoutError::Disconnected(_)) => self.gone += 1,
                    }
                    seq += 1;
                }
                7..=11 => {
                    let wait = Duration::from_micros(self.next() % 3000);
                    if let Ok(msg) = me.recv_timeout(wait) {
                        check(&msg, &mut log)?;
                        self.received += 1;
                        if self.next().is_multiple_of(4) && held_messages.len() < 3 {
                            held_messages.push(msg);
                        }
                    }
                }
                12 => {
                    held_messages.clear();
                }
                13 => {
                    if held_loans.len() < 2 {
                        let len = message_len(id, self.next(), &self.classes);
                        if let Ok(loan) = me.try_loan(len) {
                            held_loans.push(loan);
                        }
                    } else {
                        held_loans.clear();
                    }
                }
                14 => std::thread::sleep(Duration::from_micros(self.next() % 5000)),
                _ => match self.next() % 16 {
                    0..=1 => {
                        region.sweep();
                    }
                    2 => {
                        // Leave with whatever is queued for us (released
                        // unread) and join again. `L` first: a kill while
                        // leaving still counts as a departure.
                        drop(held_messages);
                        drop(held_loans);
                        log.write_all(b"L\n").map_err(|e| e.to_string())?;
                        drop(me);
                        return Ok(true);
                    }
                    _ => {}
                },
            }
        }
        held_messages.clear();
        held_loans.clear();
        // The others stop sending within one step of the stop file
        // appearing: keep receiving for a while, then until the mailbox
        // stays quiet.
        let until = Instant::now() + Duration::from_secs(1);
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            if let Ok(msg) = me.recv_timeout(left) {
                check(&msg, &mut log)?;
                self.received += 1;
            }
        }
        while let Ok(msg) = me.recv_timeout(Duration::from_millis(300)) {
            check(&msg, &mut log)?;
            self.received += 1;
        }
        log.flush().map_err(|e| e.to_string())?;
        Ok(false)
    }
}

/// Verifies a torture message and logs its receipt.
fn check(msg: &shmbox::Message<'_>, log: &mut impl Write) -> Result<(), String> {
    let (sender, seq) = verify(msg)?;
    // One write per line: a kill cuts at most the line being written.
    log.write_all(format!("R {sender} {seq}\n").as_bytes())
        .map_err(|e| e.to_string())
}
