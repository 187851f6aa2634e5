//! Peer processes: the harness re-executes its own binary with
//! [`PEER_ENV`] set, pins parent and peers to different CPUs, and makes
//! sure every peer is gone when its measurement ends, however it ends.

use crate::spec::{PeerSpec, Role, PEER_ENV};
use rustix::fd::OwnedFd;
use rustix::process::{Pid, PidfdFlags, Signal};
use rustix::thread::{sched_getaffinity, sched_setaffinity, CpuSet};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a peer gets to come up (exec, map, join, connect).
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a peer gets to exit once told to stop.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Spawns peers and pins them; pins the calling thread for its lifetime
/// and restores the thread's affinity on drop.
pub(crate) struct Launcher {
    exe: std::path::PathBuf,
    parent_cpu: Option<usize>,
    peer_cpus: Vec<usize>,
    saved: Option<CpuSet>,
    next_peer: usize,
    /// Peers spawned.
    pub(crate) spawned: usize,
    /// Peers pinned successfully.
    pub(crate) pinned: usize,
}

impl Launcher {
    /// Picks CPUs from this thread's affinity mask: the first for the parent
    /// (pinned now), the others for peers. With one CPU nothing is pinned.
    pub(crate) fn new() -> Result<Launcher, String> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let saved = sched_getaffinity(None).ok();
        let allowed: Vec<usize> = saved
            .as_ref()
            .map(|set| (0..CpuSet::MAX_CPU).filter(|&c| set.is_set(c)).collect())
            .unwrap_or_default();
        let mut launcher = Launcher {
            exe,
            parent_cpu: None,
            peer_cpus: Vec::new(),
            saved,
            next_peer: 0,
            spawned: 0,
            pinned: 0,
        };
        if let [first, rest @ ..] = allowed.as_slice() {
            if !rest.is_empty() && pin(None, *first).is_ok() {
                launcher.parent_cpu = Some(*first);
                launcher.peer_cpus = rest.to_vec();
            }
        }
        Ok(launcher)
    }

    /// The CPU the parent runs on, if pinned.
    pub(crate) fn parent_cpu(&self) -> Option<usize> {
        self.parent_cpu
    }

    /// The CPUs peers are spread over (empty: not pinned).
    pub(crate) fn peer_cpus(&self) -> &[usize] {
        &self.peer_cpus
    }

    /// Starts a peer with `role`. `pipes` gives it piped stdin/stdout (the
    /// pipe transport); otherwise both are null. Peers go round-robin over
    /// the peer CPUs; [`reset_cpus`](Self::reset_cpus) starts again at the
    /// first. The peer is killed if it is still running after `deadline`.
    pub(crate) fn spawn(
        &mut self,
        role: Role,
        pipes: bool,
        deadline: Duration,
    ) -> Result<Peer, String> {
        let spec = PeerSpec {
            parent: std::process::id(),
            role,
        };
        let spec = serde_json::to_string(&spec).map_err(|e| e.to_string())?;
        let stdio = || if pipes { Stdio::piped() } else { Stdio::null() };
        let child = Command::new(&self.exe)
            .env(PEER_ENV, spec)
            .stdin(stdio())
            .stdout(stdio())
            .spawn()
            .map_err(|e| format!("spawning a peer: {e}"))?;
        let pid = Pid::from_child(&child);
        // From here on `Peer`'s drop kills and reaps the child.
        let mut peer = Peer {
            child: Some(child),
            watchdog: None,
        };
        peer.watchdog = Some(Watchdog::arm(pid, deadline)?);
        self.spawned += 1;
        if !self.peer_cpus.is_empty() {
            let cpu = self.peer_cpus[self.next_peer % self.peer_cpus.len()];
            self.next_peer += 1;
            if pin(Some(pid), cpu).is_ok() {
                self.pinned += 1;
            }
        }
        Ok(peer)
    }

    /// The next peer goes to the first peer CPU again.
    pub(crate) fn reset_cpus(&mut self) {
        self.next_peer = 0;
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        if let (Some(set), Some(_)) = (&self.saved, self.parent_cpu) {
            let _ = sched_setaffinity(None, set);
        }
    }
}

/// Pins `pid` (`None`: the calling thread) to `cpu`.
fn pin(pid: Option<Pid>, cpu: usize) -> Result<(), String> {
    let mut set = CpuSet::new();
    set.set(cpu);
    sched_setaffinity(pid, &set).map_err(|e| e.to_string())
}

/// A running peer. Dropping it kills and reaps the process.
pub(crate) struct Peer {
    child: Option<Child>,
    watchdog: Option<Watchdog>,
}

impl Peer {
    fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("peer not reaped yet")
    }

    /// The peer's stdin and stdout, if it was spawned with pipes.
    pub(crate) fn take_pipes(&mut self) -> Option<(ChildStdin, ChildStdout)> {
        let child = self.child();
        Some((child.stdin.take()?, child.stdout.take()?))
    }

    /// Polls `ready` until it gives `Some`, failing early if the peer exits.
    pub(crate) fn wait_ready<T>(
        &mut self,
        mut ready: impl FnMut() -> Result<Option<T>, String>,
    ) -> Result<T, String> {
        let started = Instant::now();
        loop {
            if let Some(v) = ready()? {
                return Ok(v);
            }
            if let Some(status) = self.try_status() {
                return Err(format!("peer exited before it was ready ({status})"));
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(format!("peer not ready within {START_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    fn try_status(&mut self) -> Option<ExitStatus> {
        self.child().try_wait().ok().flatten()
    }

    /// Adds what became of the peer to an error message.
    pub(crate) fn explain(&mut self, error: String) -> String {
        let fired = self.watchdog.as_ref().is_some_and(Watchdog::fired);
        match self.try_status() {
            _ if fired => format!("{error}; the peer overran its deadline and was killed"),
            Some(status) => format!("{error}; the peer has exited ({status})"),
            None => format!("{error}; the peer is still running and will be killed"),
        }
    }

    /// Waits (bounded) for the peer to exit on its own, after it was told
    /// to stop; fails if it exits unsuccessfully.
    pub(crate) fn finish(mut self) -> Result<(), String> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.try_status() {
                self.child = None;
                return match status.success() {
                    true => Ok(()),
                    false => Err(format!("peer failed ({status})")),
                };
            }
            if started.elapsed() > EXIT_TIMEOUT {
                return Err(format!("peer did not exit within {EXIT_TIMEOUT:?}; killed"));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The watchdog holds a pidfd: it can never signal a reused pid.
        drop(self.watchdog.take());
    }
}

/// Kills a peer that is still running at its deadline (a peer stuck in a
/// blocking read would otherwise block the parent's read for ever).
struct Watchdog {
    state: Arc<(Mutex<bool>, Condvar)>,
    fired: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    fn arm(pid: Pid, deadline: Duration) -> Result<Watchdog, String> {
        let pidfd: OwnedFd = rustix::process::pidfd_open(pid, PidfdFlags::empty())
            .map_err(|e| format!("pidfd_open: {e}"))?;
        let state = Arc::new((Mutex::new(false), Condvar::new()));
        let fired = Arc::new(AtomicBool::new(false));
        let (s, f) = (state.clone(), fired.clone());
        let thread = std::thread::Builder::new()
            .name("peer-watchdog".into())
            .spawn(move || {
                let (lock, cvar) = &*s;
                let disarmed = lock.lock().unwrap_or_else(|e| e.into_inner());
                let (disarmed, _) = cvar
                    .wait_timeout_while(disarmed, deadline, |d| !*d)
                    .unwrap_or_else(|e| e.into_inner());
                if !*disarmed {
                    f.store(true, Ordering::Relaxed);
                    let _ = rustix::process::pidfd_send_signal(&pidfd, Signal::KILL);
                }
            })
            .map_err(|e| format!("spawning a watchdog thread: {e}"))?;
        Ok(Watchdog {
            state,
            fired,
            thread: Some(thread),
        })
    }

    fn fired(&self) -> bool {
        self.fired.load(Ordering::Relaxed)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let (lock, cvar) = &*self.state;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cvar.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
