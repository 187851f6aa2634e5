//! What a peer process is asked to do, passed to it in an environment
//! variable as JSON.

use serde::{Deserialize, Serialize};
use shmbox::WaitStrategy;

/// The environment variable that makes a process a benchmark peer.
pub(crate) const PEER_ENV: &str = "SHMBOX_BENCH_PEER";

/// A peer's instructions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PeerSpec {
    /// Pid of the parent; the peer exits if it is not its parent.
    pub parent: u32,
    /// What to do.
    pub role: Role,
}

/// Which raw floor a raw peer answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum RawKind {
    /// Two flags, no payload.
    Flag,
    /// Flags plus a payload buffer per direction; spinning.
    Payload,
    /// Like `Payload`, and each side, after its flag store, demotes the
    /// first line of the buffer it wrote to the shared cache (x86
    /// `CLDEMOTE`), as a shmbox reply does: the floor with the same hint.
    PayloadDemoted,
    /// Like `Payload`, but each side sleeps in `FUTEX_WAIT`.
    Futex,
}

/// A peer role: one ping-pong partner or one sender.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Role {
    /// Echoes through a raw shared mapping.
    RawPong {
        object: String,
        kind: RawKind,
        size: usize,
        written: bool,
    },
    /// Echoes through a shmbox region as participant "pong".
    ShmboxPong {
        region: String,
        strategy: Strategy,
        written: bool,
    },
    /// Echoes through its stdin/stdout.
    PipePong { size: usize, written: bool },
    /// Echoes through a Unix stream socket (abstract name).
    UnixPong {
        socket: String,
        size: usize,
        written: bool,
    },
    /// Echoes through TCP on 127.0.0.1.
    TcpPong {
        port: u16,
        size: usize,
        written: bool,
    },
    /// Fills an SPSC ring for `run_ms`, then sends the end marker.
    RingSender {
        object: String,
        slot_size: usize,
        slots: usize,
        run_ms: u64,
    },
    /// Sends an 8-byte CLOCK_MONOTONIC timestamp to "rx" every
    /// `interval_ns`, `count` times, then the end marker.
    ShmboxPaced {
        region: String,
        interval_ns: u64,
        count: u64,
    },
    /// Sends to participant "rx" of a shmbox region for `run_ms`; with
    /// `wait_for_go`, first waits for a message saying go.
    ShmboxSender {
        region: String,
        name: String,
        size: usize,
        run_ms: u64,
        wait_for_go: bool,
    },
    /// Sends `size`-byte messages in batches to "rx" for `run_ms`.
    ShmboxBatchSender {
        region: String,
        size: usize,
        run_ms: u64,
    },
    /// Writes messages into a Unix stream socket for `run_ms`.
    UnixSender {
        socket: String,
        size: usize,
        run_ms: u64,
    },
}

/// A serialisable [`WaitStrategy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Strategy {
    /// [`WaitStrategy::Spin`].
    Spin,
    /// [`WaitStrategy::Adaptive`].
    Adaptive,
    /// [`WaitStrategy::Park`].
    Park,
}

impl From<Strategy> for WaitStrategy {
    fn from(s: Strategy) -> WaitStrategy {
        match s {
            Strategy::Spin => WaitStrategy::Spin,
            Strategy::Adaptive => WaitStrategy::Adaptive,
            Strategy::Park => WaitStrategy::Park,
        }
    }
}

/// Sequence number that ends a stream or tells a pong to exit.
pub(crate) const END: u64 = u64::MAX;
