//! One-way latency between two real processes, shmbox against a raw floor.
//!
//! The parent ("ping") re-executes this binary as a peer ("pong") and times
//! round trips between them, one transport after another (never two at
//! once):
//!
//! * `raw flag`: the floor. Two `AtomicU64`s on separate cache lines of a
//!   private POSIX shm object; ping stores a sequence number into line A,
//!   pong spins until it sees it and stores it into line B, ping spins on B.
//! * `raw 8 B payload`: the same, plus an 8-byte payload that ping writes
//!   into a third line and pong copies into a fourth before answering.
//! * `shmbox spin` / `adaptive` / `park`: a region per mode; ping loans 8
//!   bytes, writes the sequence number and sends it; pong receives it, loans
//!   8 bytes, echoes the number back to the sender and drops the message.
//!
//! Each round trip is timed on its own with [`Instant`] after a warm-up;
//! one-way latency is half a round trip. The table shows p50, p99, p99.9
//! and max in nanoseconds and the ratio of each p50 to the floor's p50.
//! The parent runs on CPU 0 and each peer on CPU 1 when possible.
//!
//! ```text
//! cargo run --release -p shmbox --example pingpong                # 20 000 round trips (park: 2 000)
//! cargo run --release -p shmbox --example pingpong -- --quick     # a tenth of that
//! cargo run --release -p shmbox --example pingpong -- --rounds 100000 --json
//! ```
//!
//! Every wait in the parent has a timeout: a peer that dies or hangs is
//! killed and the run exits non-zero with a message saying what happened.
#![warn(clippy::undocumented_unsafe_blocks)]

use rustix::fd::OwnedFd;
use rustix::process::Pid;
use rustix::thread::{sched_setaffinity, CpuSet};
use shmbox::{Address, Config, Mailbox, Region, WaitStrategy};
use std::ops::Deref;
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

type Result<T, E = String> = std::result::Result<T, E>;

/// Round trips per spinning transport, unless `--rounds` says otherwise.
const SPIN_ROUNDS: usize = 20_000;
/// Round trips in park mode: every one of them pays two futex wake-ups.
const PARK_ROUNDS: usize = 2_000;
/// How long the parent waits for a peer to come up.
const PEER_START_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the parent waits for one reply.
const ROUND_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the parent waits for a stopped peer to exit.
const PEER_EXIT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a peer waits for the next ping before giving up (orphaned).
const PEER_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Sequence number that tells a peer to exit.
const STOP: u64 = u64::MAX;
/// What a raw peer stores in the pong line once it is spinning.
const READY: u64 = u64::MAX - 1;
const PARENT_CPU: usize = 0;
const PEER_CPU: usize = 1;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.split_first() {
        Some((first, rest)) if first == "--peer" => peer::run(rest),
        _ => Options::parse(&args).and_then(|opts| parent(&opts)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pingpong: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---- options and transports ------------------------------------------------

struct Options {
    spin_rounds: usize,
    park_rounds: usize,
    json: bool,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options> {
        let mut opts = Options {
            spin_rounds: SPIN_ROUNDS,
            park_rounds: PARK_ROUNDS,
            json: false,
        };
        let mut quick = false;
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--quick" => quick = true,
                "--json" => opts.json = true,
                "--rounds" => {
                    let n = args.next().ok_or("--rounds needs a number")?;
                    let n: usize = n.parse().map_err(|_| format!("bad --rounds {n:?}"))?;
                    opts.spin_rounds = n.max(1);
                    opts.park_rounds = (n / 10).max(1);
                }
                other => {
                    return Err(format!(
                        "unknown argument {other:?}; use --rounds N, --quick, --json"
                    ))
                }
            }
        }
        if quick {
            opts.spin_rounds = (opts.spin_rounds / 10).max(1);
            opts.park_rounds = (opts.park_rounds / 10).max(1);
        }
        Ok(opts)
    }

    fn rounds(&self, transport: Transport) -> usize {
        match transport {
            Transport::Shmbox(WaitStrategy::Park) => self.park_rounds,
            _ => self.spin_rounds,
        }
    }
}

#[derive(Clone, Copy)]
enum Transport {
    RawFlag,
    RawPayload,
    Shmbox(WaitStrategy),
}

const TRANSPORTS: [Transport; 5] = [
    Transport::RawFlag,
    Transport::RawPayload,
    Transport::Shmbox(WaitStrategy::Spin),
    Transport::Shmbox(WaitStrategy::Adaptive),
    Transport::Shmbox(WaitStrategy::Park),
];

impl Transport {
    fn label(self) -> &'static str {
        match self {
            Transport::RawFlag => "raw flag",
            Transport::RawPayload => "raw 8 B payload",
            Transport::Shmbox(WaitStrategy::Spin) => "shmbox spin",
            Transport::Shmbox(WaitStrategy::Adaptive) => "shmbox adaptive",
            Transport::Shmbox(WaitStrategy::Park) => "shmbox park",
        }
    }
}

fn strategy_arg(strategy: WaitStrategy) -> &'static str {
    match strategy {
        WaitStrategy::Spin => "spin",
        WaitStrategy::Adaptive => "adaptive",
        WaitStrategy::Park => "park",
    }
}

fn parse_strategy(arg: &str) -> Result<WaitStrategy> {
    match arg {
        "spin" => Ok(WaitStrategy::Spin),
        "adaptive" => Ok(WaitStrategy::Adaptive),
        "park" => Ok(WaitStrategy::Park),
        other => Err(format!("unknown wait strategy {other:?}")),
    }
}

// ---- the parent --------------------------------------------------------------

fn parent(opts: &Options) -> Result<()> {
    let machine = Machine::describe();
    let parent_pinned = (machine.cpus >= 2).then(|| pin(None, PARENT_CPU));
    let mut pinning = Pinning {
        parent: parent_pinned,
        peers_pinned: 0,
        peers: 0,
    };
    let mut rows = Vec::new();
    for transport in TRANSPORTS {
        let rounds = opts.rounds(transport);
        let samples = measure(transport, rounds, &mut pinning)
            .map_err(|e| format!("{}: {e}", transport.label()))?;
        rows.push(Row::new(transport.label(), rounds, samples));
    }
    if opts.json {
        println!("{}", json(&machine, &pinning, &rows));
    } else {
        print_table(&machine, &pinning, opts, &rows);
    }
    Ok(())
}

/// Runs one transport with a fresh peer; returns the round-trip times in ns.
fn measure(transport: Transport, rounds: usize, pinning: &mut Pinning) -> Result<Vec<u64>> {
    let pid = std::process::id();
    match transport {
        Transport::RawFlag => measure_raw(&format!("/pingpong-raw-{pid}"), false, rounds, pinning),
        Transport::RawPayload => {
            measure_raw(&format!("/pingpong-raw-{pid}"), true, rounds, pinning)
        }
        Transport::Shmbox(strategy) => {
            let name = format!("pingpong-{pid}-{}", strategy_arg(strategy));
            measure_shmbox(&name, strategy, rounds, pinning)
        }
    }
}

fn measure_raw(
    object: &str,
    payload: bool,
    rounds: usize,
    pinning: &mut Pinning,
) -> Result<Vec<u64>> {
    let (floor, _unlink) = FloorMap::create(object)?;
    let variant = if payload { "payload" } else { "flag" };
    let mut peer = Peer::spawn(&["raw", object, variant], pinning)?;
    peer.wait_ready(|| floor.pong.load(Ordering::Acquire) == READY)?;
    let samples =
        sample(rounds, |seq| raw_round(&floor, seq, payload)).map_err(|e| peer.explain(e))?;
    floor.ping.store(STOP, Ordering::Release);
    peer.finish()?;
    Ok(samples)
}

fn measure_shmbox(
    name: &str,
    strategy: WaitStrategy,
    rounds: usize,
    pinning: &mut Pinning,
) -> Result<Vec<u64>> {
    let region = Region::create(name, &Config::default()).map_err(|e| e.to_string())?;
    let _remove = RemoveRegion(name);
    let ping = region
        .join_with("ping", strategy)
        .map_err(|e| e.to_string())?;
    let mut peer = Peer::spawn(&["shmbox", name, strategy_arg(strategy)], pinning)?;
    peer.wait_ready(|| region.address("pong").is_ok())?;
    let pong = region.address("pong").map_err(|e| e.to_string())?;
    let samples =
        sample(rounds, |seq| shmbox_round(&ping, &pong, seq)).map_err(|e| peer.explain(e))?;
    send_u64(&ping, &pong, STOP, ROUND_TIMEOUT).map_err(|e| peer.explain(e))?;
    peer.finish()?;
    Ok(samples)
}

/// Warms up with a tenth of `rounds`, then times `rounds` round trips one by
/// one. `round_trip` gets a fresh sequence number each call (never 0).
fn sample(rounds: usize, mut round_trip: impl FnMut(u64) -> Result<()>) -> Result<Vec<u64>> {
    let warmup = (rounds / 10).max(10) as u64;
    for seq in 1..=warmup {
        round_trip(seq)?;
    }
    let mut samples = Vec::with_capacity(rounds);
    for seq in (warmup + 1..).take(rounds) {
        let start = Instant::now();
        round_trip(seq)?;
        samples.push(start.elapsed().as_nanos() as u64);
    }
    Ok(samples)
}

/// The payload ping sends with `seq` (distinct from `seq`, so a pong that
/// echoes the flag instead of copying the payload is caught).
fn payload_for(seq: u64) -> u64 {
    seq.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn raw_round(floor: &Floor, seq: u64, payload: bool) -> Result<()> {
    if payload {
        floor.payload.store(payload_for(seq), Ordering::Relaxed);
    }
    floor.ping.store(seq, Ordering::Release);
    spin_wait(&floor.pong, ROUND_TIMEOUT, |v| v == seq)
        .map_err(|_| format!("no reply to round {seq} within {ROUND_TIMEOUT:?}"))?;
    if payload {
        let echo = floor.echo.load(Ordering::Relaxed);
        if echo != payload_for(seq) {
            return Err(format!("round {seq}: payload came back as {echo:#x}"));
        }
    }
    Ok(())
}

fn shmbox_round(ping: &Mailbox, pong: &Address, seq: u64) -> Result<()> {
    send_u64(ping, pong, seq, ROUND_TIMEOUT)?;
    let reply = ping
        .recv_timeout(ROUND_TIMEOUT)
        .map_err(|e| format!("round {seq}: recv: {e}"))?;
    let echoed = read_u64(&reply)?;
    if echoed != seq {
        return Err(format!("round {seq}: reply carries {echoed}"));
    }
    Ok(())
}

/// Loans 8 bytes, writes `value` into them and sends them to `to`.
fn send_u64(from: &Mailbox, to: &Address, value: u64, timeout: Duration) -> Result<()> {
    let mut loan = from
        .loan_timeout(8, timeout)
        .map_err(|e| format!("loan: {e}"))?;
    loan.copy_from_slice(&value.to_le_bytes());
    from.send_timeout(loan, to, timeout)
        .map_err(|e| format!("send: {e}"))
}

fn read_u64(bytes: &[u8]) -> Result<u64> {
    let bytes = <[u8; 8]>::try_from(bytes)
        .map_err(|_| format!("expected an 8-byte message, got {} bytes", bytes.len()))?;
    Ok(u64::from_le_bytes(bytes))
}

/// Spins until `done(word)` holds; gives up after `timeout`. The clock is
/// read only every few thousand spins, so the fast path is a bare load.
fn spin_wait(word: &AtomicU64, timeout: Duration, done: impl Fn(u64) -> bool) -> Result<u64, ()> {
    let mut spins = 0u32;
    let mut started = None;
    loop {
        let value = word.load(Ordering::Acquire);
        if done(value) {
            return Ok(value);
        }
        spins = spins.wrapping_add(1);
        if spins % 4096 == 0 && started.get_or_insert_with(Instant::now).elapsed() > timeout {
            return Err(());
        }
        core::hint::spin_loop();
    }
}

/// Removes a region's name when dropped, including on error paths.
struct RemoveRegion<'a>(&'a str);

impl Drop for RemoveRegion<'_> {
    fn drop(&mut self) {
        if let Err(e) = Region::remove(self.0) {
            eprintln!("pingpong: could not remove region '{}': {e}", self.0);
        }
    }
}

// ---- the peer process ----------------------------------------------------------

/// A peer process; killed and reaped if dropped before [`Peer::finish`].
struct Peer {
    child: Option<Child>,
}

impl Peer {
    /// Runs this binary with `--peer <args>` and pins it to [`PEER_CPU`].
    fn spawn(args: &[&str], pinning: &mut Pinning) -> Result<Peer> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let child = Command::new(exe)
            .arg("--peer")
            .args(args)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawning the peer: {e}"))?;
        if pinning.parent.is_some() {
            pinning.peers += 1;
            if pin(Some(Pid::from_child(&child)), PEER_CPU).is_ok() {
                pinning.peers_pinned += 1;
            }
        }
        Ok(Peer { child: Some(child) })
    }

    fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("peer not reaped yet")
    }

    /// Polls `ready` until it holds, failing early if the peer exits.
    fn wait_ready(&mut self, ready: impl Fn() -> bool) -> Result<()> {
        let started = Instant::now();
        while !ready() {
            if let Some(status) = self.try_status() {
                return Err(format!("peer exited before it was ready ({status})"));
            }
            if started.elapsed() > PEER_START_TIMEOUT {
                return Err(format!("peer not ready within {PEER_START_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    fn try_status(&mut self) -> Option<ExitStatus> {
        self.child().try_wait().ok().flatten()
    }

    /// Adds what became of the peer to an error message.
    fn explain(&mut self, error: String) -> String {
        match self.try_status() {
            Some(status) => format!("{error}; the peer has exited ({status})"),
            None => format!("{error}; the peer is still running and will be killed"),
        }
    }

    /// Waits (bounded) for the peer to exit after being told to stop.
    fn finish(mut self) -> Result<()> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.try_status() {
                self.child = None;
                return match status.success() {
                    true => Ok(()),
                    false => Err(format!("peer failed ({status})")),
                };
            }
            if started.elapsed() > PEER_EXIT_TIMEOUT {
                return Err(format!(
                    "peer did not exit within {PEER_EXIT_TIMEOUT:?}; killed"
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

mod peer {
    //! What the re-executed binary does with `--peer`.
    use super::*;

    pub(super) fn run(args: &[String]) -> Result<()> {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        match args.as_slice() {
            ["raw", object, variant] => {
                let payload = match *variant {
                    "flag" => false,
                    "payload" => true,
                    other => return Err(format!("unknown raw variant {other:?}")),
                };
                let floor = FloorMap::open(object)?;
                raw_pong(&floor, payload)
            }
            ["shmbox", region, mode] => shmbox_pong(region, parse_strategy(mode)?),
            _ => Err(format!("bad peer arguments {args:?}")),
        }
        .map_err(|e| format!("peer: {e}"))
    }

    fn raw_pong(floor: &Floor, payload: bool) -> Result<()> {
        floor.pong.store(READY, Ordering::Release);
        let mut last = 0;
        loop {
            let seq = spin_wait(&floor.ping, PEER_IDLE_TIMEOUT, |v| v != last)
                .map_err(|_| format!("no ping for {PEER_IDLE_TIMEOUT:?}; giving up"))?;
            if seq == STOP {
                return Ok(());
            }
            if payload {
                let value = floor.payload.load(Ordering::Relaxed);
                floor.echo.store(value, Ordering::Relaxed);
            }
            floor.pong.store(seq, Ordering::Release);
            last = seq;
        }
    }

    fn shmbox_pong(name: &str, strategy: WaitStrategy) -> Result<()> {
        let region = Region::open(name).map_err(|e| e.to_string())?;
        let pong = region
            .join_with("pong", strategy)
            .map_err(|e| e.to_string())?;
        loop {
            let msg = pong
                .recv_timeout(PEER_IDLE_TIMEOUT)
                .map_err(|e| format!("recv: {e}"))?;
            let seq = read_u64(&msg)?;
            if seq == STOP {
                return Ok(());
            }
            send_u64(&pong, &msg.sender(), seq, PEER_IDLE_TIMEOUT)?;
            drop(msg);
        }
    }
}

// ---- the raw floor's shared memory ---------------------------------------------

/// One cache line holding one word.
#[repr(C, align(64))]
struct Line(AtomicU64);

impl Deref for Line {
    type Target = AtomicU64;
    fn deref(&self) -> &AtomicU64 {
        &self.0
    }
}

/// The raw floor's shared words, each on its own cache line.
#[repr(C)]
struct Floor {
    /// Ping → pong: the sequence number.
    ping: Line,
    /// Pong → ping: the echoed sequence number.
    pong: Line,
    /// Ping → pong: the payload.
    payload: Line,
    /// Pong → ping: the echoed payload.
    echo: Line,
}

const FLOOR_LEN: usize = std::mem::size_of::<Floor>();

/// A shared mapping of a [`Floor`]; unmapped on drop.
struct FloorMap {
    ptr: NonNull<Floor>,
}

/// Unlinks a POSIX shm object when dropped, including on error paths.
struct UnlinkShm(String);

impl Drop for UnlinkShm {
    fn drop(&mut self) {
        let _ = rustix::shm::unlink(self.0.as_str());
    }
}

impl FloorMap {
    /// Creates the shm object `object` (exclusively), sized and zeroed.
    fn create(object: &str) -> Result<(FloorMap, UnlinkShm)> {
        use rustix::shm::OFlags;
        let flags = OFlags::CREATE | OFlags::EXCL | OFlags::RDWR;
        let mode = rustix::fs::Mode::from_raw_mode(0o600);
        let fd = rustix::shm::open(object, flags, mode)
            .map_err(|e| format!("shm_open {object}: {e}"))?;
        let unlink = UnlinkShm(object.into());
        rustix::fs::ftruncate(&fd, FLOOR_LEN as u64)
            .map_err(|e| format!("ftruncate {object}: {e}"))?;
        Ok((FloorMap::map(&fd, object)?, unlink))
    }

    /// Opens the existing shm object `object`.
    fn open(object: &str) -> Result<FloorMap> {
        let fd = rustix::shm::open(object, rustix::shm::OFlags::RDWR, rustix::fs::Mode::empty())
            .map_err(|e| format!("shm_open {object}: {e}"))?;
        let size = rustix::fs::fstat(&fd)
            .map_err(|e| format!("fstat {object}: {e}"))?
            .st_size;
        if size < FLOOR_LEN as i64 {
            return Err(format!("{object} is {size} bytes, expected {FLOOR_LEN}"));
        }
        FloorMap::map(&fd, object)
    }

    fn map(fd: &OwnedFd, object: &str) -> Result<FloorMap> {
        use rustix::mm::{MapFlags, ProtFlags};
        // SAFETY: a fresh mapping (null hint) of FLOOR_LEN bytes of `fd`,
        // which is at least that long (ftruncate / fstat above); it aliases
        // no Rust object of ours.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                FLOOR_LEN,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd,
                0,
            )
        }
        .map_err(|e| format!("mmap {object}: {e}"))?;
        let ptr = NonNull::new(ptr.cast::<Floor>()).ok_or("mmap returned null")?;
        Ok(FloorMap { ptr })
    }
}

impl Deref for FloorMap {
    type Target = Floor;
    fn deref(&self) -> &Floor {
        // SAFETY: `ptr` is a live, page-aligned mapping of FLOOR_LEN bytes
        // until drop. `Floor` is only atomics, for which every bit pattern
        // (the object starts zeroed) is valid, and all access to the shared
        // words, here and in the other process, is atomic.
        unsafe { self.ptr.as_ref() }
    }
}

impl Drop for FloorMap {
    fn drop(&mut self) {
        // SAFETY: `ptr`/FLOOR_LEN is the mapping made in `map`; no reference
        // from `deref` outlives `self`.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), FLOOR_LEN) };
    }
}

// ---- machine description and pinning -------------------------------------------

struct Machine {
    cpu_model: String,
    cpus: usize,
    kernel: String,
}

impl Machine {
    fn describe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let field = |key: &str| {
            cpuinfo.lines().find_map(|line| {
                let (k, v) = line.split_once(':')?;
                (k.trim() == key).then(|| v.trim().to_string())
            })
        };
        let cpu_model = field("model name")
            .or_else(|| field("Model"))
            .unwrap_or_else(|| "unknown CPU".into());
        let processors = cpuinfo
            .lines()
            .filter(|l| l.split(':').next().map(str::trim) == Some("processor"))
            .count();
        let cpus = match processors {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let kernel = rustix::system::uname()
            .release()
            .to_string_lossy()
            .into_owned();
        Machine {
            cpu_model,
            cpus,
            kernel,
        }
    }
}

/// Pins `pid` (`None`: this thread) to `cpu`.
fn pin(pid: Option<Pid>, cpu: usize) -> Result<(), String> {
    let mut set = CpuSet::new();
    set.set(cpu);
    sched_setaffinity(pid, &set).map_err(|e| e.to_string())
}

/// What pinning achieved. `parent` is `None` when there were too few CPUs
/// to try.
struct Pinning {
    parent: Option<Result<(), String>>,
    peers_pinned: usize,
    peers: usize,
}

impl Pinning {
    fn parent_ok(&self) -> bool {
        matches!(self.parent, Some(Ok(())))
    }

    fn peers_ok(&self) -> bool {
        self.peers > 0 && self.peers_pinned == self.peers
    }

    fn describe(&self, cpus: usize) -> String {
        let Some(parent) = &self.parent else {
            return format!("not attempted ({cpus} CPU)");
        };
        let parent = match parent {
            Ok(()) => format!("parent -> CPU {PARENT_CPU} ok"),
            Err(e) => format!("parent -> CPU {PARENT_CPU} FAILED ({e})"),
        };
        let peers = match self.peers_ok() {
            true => "ok",
            false => "FAILED",
        };
        format!(
            "{parent}; peer -> CPU {PEER_CPU} {peers} ({}/{} peers)",
            self.peers_pinned, self.peers
        )
    }
}

// ---- results -----------------------------------------------------------------

/// One transport's one-way latencies (half round trips), in ns.
struct Row {
    label: &'static str,
    rounds: usize,
    p50: u64,
    p99: u64,
    p999: u64,
    max: u64,
}

impl Row {
    fn new(label: &'static str, rounds: usize, mut round_trips: Vec<u64>) -> Row {
        round_trips.sort_unstable();
        let one_way = |q: f64| percentile(&round_trips, q) / 2;
        Row {
            label,
            rounds,
            p50: one_way(0.50),
            p99: one_way(0.99),
            p999: one_way(0.999),
            max: one_way(1.0),
        }
    }

    /// This row's p50 over the floor's, if the floor's is not zero.
    fn vs_floor(&self, floor: &Row) -> Option<f64> {
        (floor.p50 > 0).then(|| self.p50 as f64 / floor.p50 as f64)
    }
}

/// Nearest-rank percentile of sorted, non-empty `sorted`.
fn percentile(sorted: &[u64], q: f64) -> u64 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn print_table(machine: &Machine, pinning: &Pinning, opts: &Options, rows: &[Row]) {
    println!(
        "cpu: {} | {} CPUs | kernel {}",
        machine.cpu_model, machine.cpus, machine.kernel
    );
    println!("pinning: {}", pinning.describe(machine.cpus));
    println!(
        "one-way latency = round trip / 2; {} round trips per transport ({} for park)",
        opts.spin_rounds, opts.park_rounds
    );
    println!(
        "{:<16} {:>8} {:>8} {:>9} {:>8} {:>10}",
        "transport", "p50 ns", "p99 ns", "p99.9 ns", "max ns", "vs floor"
    );
    let floor = &rows[0];
    for row in rows {
        let ratio = row
            .vs_floor(floor)
            .map_or("-".to_string(), |r| format!("{r:.2}x"));
        println!(
            "{:<16} {:>8} {:>8} {:>9} {:>8} {:>10}",
            row.label, row.p50, row.p99, row.p999, row.max, ratio
        );
    }
}

fn json(machine: &Machine, pinning: &Pinning, rows: &[Row]) -> String {
    let floor = &rows[0];
    let rows: Vec<String> = rows
        .iter()
        .map(|row| {
            let ratio = row
                .vs_floor(floor)
                .map_or("null".to_string(), |r| format!("{r:.3}"));
            format!(
                "{{\"transport\":{},\"rounds\":{},\"p50_ns\":{},\"p99_ns\":{},\
                 \"p999_ns\":{},\"max_ns\":{},\"vs_floor\":{ratio}}}",
                json_string(row.label),
                row.rounds,
                row.p50,
                row.p99,
                row.p999,
                row.max
            )
        })
        .collect();
    format!(
        "{{\"cpu_model\":{},\"cpus\":{},\"kernel\":{},\"parent_pinned\":{},\
         \"peer_pinned\":{},\"latency\":\"one-way (round trip / 2)\",\"results\":[{}]}}",
        json_string(&machine.cpu_model),
        machine.cpus,
        json_string(&machine.kernel),
        pinning.parent_ok(),
        pinning.peers_ok(),
        rows.join(",")
    )
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
