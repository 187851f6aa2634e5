//! Helpers shared by the integration tests of this crate.

use shmbox::Region;
use std::io::Write;
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A region name unique to this test run (`<prefix>-<tag>-<pid>-<nanos>`);
/// the region is removed on drop.
pub struct Name(pub String);

impl Name {
    pub fn new(prefix: &str, tag: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        Name(format!("{prefix}-{tag}-{}-{nanos}", std::process::id()))
    }

    /// The object's path in `/dev/shm`.
    pub fn path(&self) -> String {
        format!("/dev/shm/shmbox.{}", self.0)
    }
}

impl Drop for Name {
    fn drop(&mut self) {
        let _ = Region::remove(&self.0);
    }
}

/// Aborts the whole test process if the guard lives longer than `limit`:
/// a deadlock fails the run instead of hanging it.
pub struct Watchdog {
    _done: mpsc::Sender<()>,
}

pub fn watchdog(what: &'static str, limit: Duration) -> Watchdog {
    let (tx, rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
            // Written past the test harness's output capture, which an abort
            // would swallow.
            let msg = format!("watchdog: {what} still running after {limit:?}; aborting\n");
            let _ = std::io::stderr().write_all(msg.as_bytes());
            std::process::abort();
        }
    });
    Watchdog { _done: tx }
}
