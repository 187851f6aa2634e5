//! The peer process: what the re-executed binary does when it finds
//! [`PEER_ENV`](crate::spec::PEER_ENV) set.

use crate::spec::{PeerSpec, Role};
use crate::transports::{kernel, raw, shmbox};
use rustix::process::{getppid, set_parent_process_death_signal, Pid, Signal};

/// Runs the role described by `spec` (JSON) to completion.
pub(crate) fn run(spec: &str) -> Result<(), String> {
    let spec: PeerSpec = serde_json::from_str(spec).map_err(|e| format!("bad peer spec: {e}"))?;
    // Die with the parent, however it dies (no orphan spinning on a CPU).
    set_parent_process_death_signal(Some(Signal::KILL))
        .map_err(|e| format!("prctl(PR_SET_PDEATHSIG): {e}"))?;
    if Pid::as_raw(getppid()) as u32 != spec.parent {
        return Err("the parent exited before the peer started".into());
    }
    match spec.role {
        Role::RawPong {
            object,
            kind,
            size,
            written,
        } => raw::pong(&object, kind, size, written),
        Role::ShmboxPong {
            region,
            strategy,
            written,
        } => shmbox::pong(&region, strategy, written),
        Role::PipePong { size, written } => kernel::pipe_pong(size, written),
        Role::UnixPong {
            socket,
            size,
            written,
        } => kernel::unix_pong(&socket, size, written),
        Role::TcpPong {
            port,
            size,
            written,
        } => kernel::tcp_pong(port, size, written),
        Role::RingSender {
            object,
            slot_size,
            slots,
            run_ms,
        } => raw::ring_sender(&object, slot_size, slots, run_ms),
        Role::ShmboxSender {
            region,
            name,
            size,
            run_ms,
            wait_for_go,
        } => shmbox::sender(&region, &name, size, run_ms, wait_for_go),
        Role::ShmboxBatchSender {
            region,
            size,
            run_ms,
        } => shmbox::batch_sender(&region, size, run_ms),
        Role::ShmboxPaced {
            region,
            interval_ns,
            count,
        } => shmbox::paced_sender(&region, interval_ns, count),
        Role::UnixSender {
            socket,
            size,
            run_ms,
        } => kernel::unix_sender(&socket, size, run_ms),
    }
}
