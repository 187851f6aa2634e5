//! Whether a spinning receive costs more through `recv_timeout` than
//! through a `try_recv` loop, and whether two processes differ from two
//! threads. One ping-pong of 8-byte messages (Spin, `try_loan` and
//! `try_send`), round trip / 2, p50 of 200,000 rounds, seven alternating
//! runs of each way:
//!
//! * two threads or two processes (this program started again as the
//!   peer) on a named region, or two threads on an in-process one;
//! * each receiving with `recv_timeout` or with its own `try_recv` loop.
//!
//! The receive is chosen at run time and the ping and pong functions are
//! the same in every way, so the rows differ in what they call, not in
//! where the compiler placed the loops.
//!
//! `cargo run --release -p shmbox-bench --example receive_calls`

mod common;

use common::{pin, spin_receive};
use shmbox::{Config, Mailbox, Message, Region, WaitStrategy};
use std::process::Command;
use std::time::{Duration, Instant};

const ROUNDS: u64 = 200_000;
const RUNS: usize = 7;
/// How long either side waits for the other before giving up (a panic,
/// which also ends a peer process: nothing hangs).
const WAIT_LIMIT: Duration = Duration::from_secs(2);

fn receive(mailbox: &Mailbox, blocking: bool) -> Message<'_> {
    match blocking {
        true => mailbox.recv_timeout(WAIT_LIMIT).expect("recv_timeout"),
        false => spin_receive(mailbox, WAIT_LIMIT),
    }
}

/// Waits (within [`WAIT_LIMIT`]) for `name` to join.
fn address_of(region: &Region, name: &str) -> shmbox::Address {
    let since = Instant::now();
    loop {
        if let Ok(a) = region.address(name) {
            return a;
        }
        assert!(since.elapsed() < WAIT_LIMIT, "{name} did not join");
        std::thread::yield_now();
    }
}

#[inline(never)]
fn pong(region: &Region, blocking: bool) {
    let me = region.join_with("pong", WaitStrategy::Spin).expect("join");
    let ping = address_of(region, "ping");
    common::pong(&me, &ping, ROUNDS, |m| receive(m, blocking));
}

/// Returns the p50 one-way latency in ns.
#[inline(never)]
fn ping(region: &Region, blocking: bool) -> u64 {
    let me = region.join_with("ping", WaitStrategy::Spin).expect("join");
    let pong = address_of(region, "pong");
    common::ping(&me, &pong, ROUNDS, |m| receive(m, blocking))
}

#[derive(Clone, Copy)]
enum Peer {
    Thread,
    Process,
    HeapThread,
}

fn run(peer: Peer, blocking: bool) -> u64 {
    let config = Config::default().with_max_participants(8);
    if let Peer::HeapThread = peer {
        let region = Region::in_process(&config).expect("region");
        return two_threads(&region, blocking);
    }
    let name = format!("receive-calls-{}", std::process::id());
    let region = Region::create(&name, &config).expect("region");
    let _unlink = Unlink(&name);
    match peer {
        Peer::Process => {
            let mut child = Command::new(std::env::current_exe().expect("own path"))
                .args(["pong", &name, if blocking { "blocking" } else { "try" }])
                .spawn()
                .expect("spawn the peer");
            pin(0);
            let p50 = ping(&region, blocking);
            assert!(child.wait().expect("peer").success(), "the peer failed");
            p50
        }
        _ => two_threads(&region, blocking),
    }
}

/// Removes the region's name when dropped, on a panic too.
struct Unlink<'a>(&'a str);

impl Drop for Unlink<'_> {
    fn drop(&mut self) {
        let _ = Region::remove(self.0);
    }
}

fn two_threads(region: &Region, blocking: bool) -> u64 {
    std::thread::scope(|s| {
        s.spawn(|| {
            pin(1);
            pong(region, blocking)
        });
        pin(0);
        ping(region, blocking)
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, role, name, how] = &args[..] {
        assert_eq!(role, "pong");
        pin(1);
        let region = Region::open(name).expect("open the region");
        pong(&region, how == "blocking");
        return;
    }
    let ways = [
        (Peer::Thread, false, "threads, try_recv loop"),
        (Peer::Thread, true, "threads, recv_timeout"),
        (Peer::Process, false, "processes, try_recv loop"),
        (Peer::Process, true, "processes, recv_timeout"),
        (Peer::HeapThread, false, "in-process region, try_recv loop"),
        (Peer::HeapThread, true, "in-process region, recv_timeout"),
    ];
    let mut results = vec![Vec::new(); ways.len()];
    for _ in 0..RUNS {
        for (i, &(peer, blocking, _)) in ways.iter().enumerate() {
            results[i].push(run(peer, blocking));
        }
    }
    println!("one-way p50, ns (CPUs 0 and 1; {RUNS} runs of {ROUNDS} round trips each)");
    for ((_, _, what), runs) in ways.iter().zip(&results) {
        let mut sorted = runs.clone();
        sorted.sort_unstable();
        println!(
            "{what:34} median {:4}  runs {runs:?}",
            sorted[sorted.len() / 2]
        );
    }
}
