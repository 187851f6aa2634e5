//! Two processes exchanging messages through one region: round trips timed
//! for each wait strategy.
//!
//! The parent ("ping") creates a region and re-executes this binary as a
//! peer ("pong") once per strategy. Ping loans 8 bytes, writes a sequence
//! number into them and sends them; pong receives the message, loans 8 bytes
//! for the answer, copies the number into them, sends them back and drops
//! the message. One-way latency is half a round trip (p50, p99, max, after
//! a warm-up).
//!
//! ```text
//! cargo run --release -p shmbox --example pingpong                 # 20 000 round trips per strategy
//! cargo run --release -p shmbox --example pingpong -- --rounds 2000
//! ```
//!
//! For shmbox against the shared-memory floor and the kernel's transports,
//! all in one run, see `shmbox bench` (crates/shmbox-bench).
//!
//! Every wait has a timeout: a peer that dies or hangs is killed, and the
//! run exits non-zero saying what happened.

use shmbox::{Address, Config, Mailbox, Region, WaitStrategy};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

type Result<T, E = String> = std::result::Result<T, E>;

/// Round trips per strategy unless `--rounds` says otherwise (Park: a
/// tenth, each round trip costs two futex wake-ups).
const ROUNDS: usize = 20_000;
/// How long one round trip, the peer's start or its exit may take.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The value that tells pong to stop.
const STOP: u64 = u64::MAX;

const STRATEGIES: [(WaitStrategy, &str); 3] = [
    (WaitStrategy::Spin, "spin"),
    (WaitStrategy::Adaptive, "adaptive"),
    (WaitStrategy::Park, "park"),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("--pong") => pong(&args[1..]),
        _ => ping(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pingpong: {e}");
            ExitCode::FAILURE
        }
    }
}

fn ping(args: &[String]) -> Result<()> {
    let rounds = match args {
        [] => ROUNDS,
        [flag, n] if flag == "--rounds" => n
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or(format!("--rounds wants a positive number, got {n:?}"))?,
        _ => return Err("usage: pingpong [--rounds N]".into()),
    };
    let name = format!("pingpong-{}", std::process::id());
    let region = Region::create(&name, &Config::default()).map_err(|e| e.to_string())?;
    let _remove = RemoveRegion(&name);
    println!("one-way latency = round trip / 2, 8-byte messages");
    println!(
        "{:<10} {:>8} {:>9} {:>9} {:>9}",
        "strategy", "rounds", "p50 ns", "p99 ns", "max ns"
    );
    for (strategy, label) in STRATEGIES {
        let rounds = if strategy == WaitStrategy::Park {
            rounds.div_ceil(10)
        } else {
            rounds
        };
        let mut one_way = measure(&region, &name, strategy, label, rounds)?;
        one_way.sort_unstable();
        let at = |q: f64| one_way[((one_way.len() - 1) as f64 * q) as usize];
        println!(
            "{label:<10} {rounds:>8} {:>9} {:>9} {:>9}",
            at(0.5),
            at(0.99),
            at(1.0)
        );
    }
    Ok(())
}

/// Times `rounds` round trips with a pong using `strategy`; one-way ns.
fn measure(
    region: &Region,
    name: &str,
    strategy: WaitStrategy,
    label: &str,
    rounds: usize,
) -> Result<Vec<u64>> {
    let ping = region
        .join_with("ping", strategy)
        .map_err(|e| e.to_string())?;
    let mut peer = Peer::spawn(name, label)?;
    let pong = region
        .wait_for("pong", TIMEOUT)
        .map_err(|e| peer.explain(format!("waiting for pong: {e}")))?;
    let warmup = rounds / 10;
    let mut one_way = Vec::with_capacity(rounds);
    for seq in 0..(warmup + rounds) as u64 {
        let started = Instant::now();
        round_trip(&ping, &pong, seq).map_err(|e| peer.explain(e))?;
        if seq >= warmup as u64 {
            one_way.push(started.elapsed().as_nanos() as u64 / 2);
        }
    }
    send_u64(&ping, &pong, STOP).map_err(|e| peer.explain(e))?;
    peer.finish()?;
    Ok(one_way)
}

fn round_trip(ping: &Mailbox, pong: &Address, seq: u64) -> Result<()> {
    send_u64(ping, pong, seq)?;
    let reply = ping
        .recv_timeout(TIMEOUT)
        .map_err(|e| format!("round {seq}: {e}"))?;
    match read_u64(&reply)? {
        echo if echo == seq => Ok(()),
        echo => Err(format!("round {seq}: pong answered {echo}")),
    }
}

/// Loans 8 bytes, writes `value` into them in place and sends them.
fn send_u64(from: &Mailbox, to: &Address, value: u64) -> Result<()> {
    let mut loan = from
        .loan_timeout(8, TIMEOUT)
        .map_err(|e| format!("loan: {e}"))?;
    loan.copy_from_slice(&value.to_le_bytes());
    from.send_timeout(loan, to, TIMEOUT)
        .map_err(|e| format!("send: {e}"))
}

fn read_u64(bytes: &[u8]) -> Result<u64> {
    let word = bytes
        .try_into()
        .map_err(|_| format!("a message of {} bytes, not 8", bytes.len()))?;
    Ok(u64::from_le_bytes(word))
}

/// The peer: answers every message with its number until told to stop.
fn pong(args: &[String]) -> Result<()> {
    let [name, label] = args else {
        return Err("usage: pingpong --pong REGION STRATEGY".into());
    };
    let (strategy, _) = STRATEGIES
        .into_iter()
        .find(|(_, l)| l == label)
        .ok_or(format!("unknown strategy {label:?}"))?;
    let region = Region::open(name).map_err(|e| e.to_string())?;
    let pong = region
        .join_with("pong", strategy)
        .map_err(|e| e.to_string())?;
    loop {
        // Bounded: a parent that died leaves this process, not a hang.
        let msg = pong
            .recv_timeout(TIMEOUT)
            .map_err(|e| format!("recv: {e}"))?;
        let seq = read_u64(&msg)?;
        if seq == STOP {
            return Ok(());
        }
        send_u64(&pong, &msg.sender(), seq)?;
    }
}

/// Removes the region's name when dropped, including on error paths.
struct RemoveRegion<'a>(&'a str);

impl Drop for RemoveRegion<'_> {
    fn drop(&mut self) {
        if let Err(e) = Region::remove(self.0) {
            eprintln!("pingpong: could not remove region '{}': {e}", self.0);
        }
    }
}

/// A pong process; killed and reaped if dropped before [`Peer::finish`].
struct Peer(Option<Child>);

impl Peer {
    fn spawn(region: &str, strategy: &str) -> Result<Peer> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let child = Command::new(exe)
            .args(["--pong", region, strategy])
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawning pong: {e}"))?;
        Ok(Peer(Some(child)))
    }

    /// Adds what became of the peer to an error message.
    fn explain(&mut self, error: String) -> String {
        match self.0.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            Some(status) => format!("{error}; pong has exited ({status})"),
            None => format!("{error}; pong is still running and will be killed"),
        }
    }

    /// Waits (bounded) for the peer to exit after being told to stop.
    fn finish(mut self) -> Result<()> {
        let started = Instant::now();
        let child = self.0.as_mut().expect("not reaped yet");
        loop {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                self.0 = None;
                return match status.success() {
                    true => Ok(()),
                    false => Err(format!("pong failed ({status})")),
                };
            }
            if started.elapsed() > TIMEOUT {
                return Err(format!("pong did not exit within {TIMEOUT:?}; killed"));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
