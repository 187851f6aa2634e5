//! What the examples `protocol_floor` and `receive_calls` share.

use rustix::thread::{sched_setaffinity, CpuSet};
use shmbox::{Address, Mailbox, Message};
use std::time::{Duration, Instant};

/// Pins the calling thread to `cpu` (best effort).
pub fn pin(cpu: usize) {
    let mut set = CpuSet::new();
    set.set(cpu);
    let _ = sched_setaffinity(None, &set);
}

/// Receives on `mailbox` with a `try_recv` loop, reading the clock only
/// every 4096 polls; panics (which ends a peer process too) if nothing
/// arrives within `limit`.
#[inline]
pub fn spin_receive(mailbox: &Mailbox, limit: Duration) -> Message<'_> {
    let mut spins = 0u32;
    let mut since = None;
    loop {
        match mailbox.try_recv() {
            Ok(m) => return m,
            Err(shmbox::TryRecvError::Empty) => {
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(4096)
                    && since.get_or_insert_with(Instant::now).elapsed() > limit
                {
                    panic!("no message within {limit:?}");
                }
                core::hint::spin_loop()
            }
            Err(e) => panic!("try_recv: {e}"),
        }
    }
}

/// The p50 one-way latency (round trip / 2) of `round_trips` in ns, the
/// first tenth left out as warm-up.
pub fn p50_one_way(mut round_trips: Vec<u64>) -> u64 {
    round_trips.drain(..round_trips.len() / 10);
    round_trips.sort_unstable();
    round_trips[round_trips.len() / 2] / 2
}

/// Sends `rounds` 8-byte messages from `me` to `to`, each after the reply
/// to the one before (taken with `receive`); returns the p50 one-way
/// latency in ns.
pub fn ping<'m>(
    me: &'m Mailbox,
    to: &Address,
    rounds: u64,
    receive: impl Fn(&'m Mailbox) -> Message<'m>,
) -> u64 {
    let mut rtt = Vec::with_capacity(rounds as usize);
    for seq in 0..rounds {
        let t = Instant::now();
        let mut loan = me.try_loan(8).expect("loan");
        loan.copy_from_slice(&seq.to_le_bytes());
        me.try_send(loan, to)
            .map_err(|e| e.to_string())
            .expect("send");
        let msg = receive(me);
        rtt.push(t.elapsed().as_nanos() as u64);
        assert_eq!(msg[..8], seq.to_le_bytes());
    }
    p50_one_way(rtt)
}

/// The other side of [`ping`]: answers `rounds` messages taken with
/// `receive`, each with a copy sent to `to`.
pub fn pong<'m>(
    me: &'m Mailbox,
    to: &Address,
    rounds: u64,
    receive: impl Fn(&'m Mailbox) -> Message<'m>,
) {
    for _ in 0..rounds {
        let msg = receive(me);
        let mut loan = me.try_loan(8).expect("loan");
        loan.copy_from_slice(&msg[..8]);
        me.try_send(loan, to)
            .map_err(|e| e.to_string())
            .expect("send");
    }
}
