//! `shmbox recv NAME --as NAME [--count N] [--timeout D] [--lines]`

use super::{join, open_region};
use crate::cli::RecvArgs;
use crate::{output, Failure, Result};
use shmbox::{Corruption, Message, RecvTimeoutError};
use std::io::Write;
use std::time::{Duration, Instant};

pub fn run(args: RecvArgs) -> Result {
    let region = open_region(&args.name)?;
    let me = join(&region, &args.name, &args.as_name)?;
    let mut out = std::io::stdout().lock();
    // Only a pipe's or a socket's reader can go away.
    let watch_stdout = stdout_can_go_away();
    let mut received = 0u64;
    // The wait for each message starts when the one before arrived; a
    // corruption reported meanwhile does not restart it.
    let mut waiting_since = Instant::now();
    while args.count.is_none_or(|n| received < n) {
        let deadline = args.timeout.map(|t| waiting_since + t);
        // In slices, looking at standard output in between: a reader that
        // went away (`recv | head -1`) ends the command before it takes a
        // message it could not write.
        let got = loop {
            if watch_stdout && stdout_gone() {
                return Ok(());
            }
            let slice = deadline.map_or(SLICE, |d| {
                d.saturating_duration_since(Instant::now()).min(SLICE)
            });
            match me.recv_timeout(slice) {
                Ok(m) => break Ok(m),
                Err(RecvTimeoutError::Timeout) if deadline.is_none_or(|d| Instant::now() < d) => {}
                Err(RecvTimeoutError::Timeout) if received > 0 => return Ok(()),
                Err(RecvTimeoutError::Timeout) => {
                    return Err(Failure::timeout(format!(
                        "no message for '{}' in region '{}' within {}",
                        args.as_name,
                        args.name,
                        output::duration_fine(args.timeout.unwrap_or_default())
                    )))
                }
                Err(RecvTimeoutError::Corrupt(c)) => break Err(c),
            }
        };
        let message: Message<'_> = match got {
            Ok(m) => m,
            // One the library could not repair: every receive would
            // report it again.
            Err(c) if c.is_lasting() => return Err(unusable(&args.name, &args.as_name, &c)),
            Err(c) => {
                eprintln!("warning: corrupt mailbox: {}", c.reason());
                continue;
            }
        };
        match write_message(&mut out, &message, args.lines) {
            Ok(()) => {}
            // The message has left the mailbox: say that it is lost.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                return Err(Failure::error(format!(
                    "standard output was closed after a message for '{}' was taken from \
                     its mailbox: that message is lost",
                    args.as_name
                )))
            }
            Err(e) => return Err(e.into()),
        }
        drop(message);
        received += 1;
        waiting_since = Instant::now();
    }
    Ok(())
}

/// How long one wait for a message lasts before standard output is
/// looked at again.
const SLICE: Duration = Duration::from_millis(100);

/// Writes `message`: a batch record by record, anything else as it is;
/// with `lines`, a line break after each. Flushed, so that whoever reads
/// the pipe sees each message as it arrives.
fn write_message(out: &mut impl Write, message: &Message<'_>, lines: bool) -> std::io::Result<()> {
    for record in message.records() {
        match record {
            Ok(bytes) => {
                out.write_all(bytes)?;
                if lines {
                    out.write_all(b"\n")?;
                }
            }
            Err(c) => eprintln!(
                "warning: corrupt batch from {}: {}",
                message.sender(),
                c.reason()
            ),
        }
    }
    out.flush()
}

/// Whether standard output is a pipe or a socket, whose reader may go
/// away (a file or a terminal is not looked at: no `poll` per message).
fn stdout_can_go_away() -> bool {
    use rustix::fs::FileType;
    rustix::fs::fstat(std::io::stdout()).is_ok_and(|st| {
        matches!(
            FileType::from_raw_mode(st.st_mode),
            FileType::Fifo | FileType::Socket
        )
    })
}

/// Whether standard output leads nowhere any more: a pipe whose reader
/// has gone, a terminal hung up. Checked without writing (`poll` with no
/// wait).
fn stdout_gone() -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let stdout = std::io::stdout();
    let mut fds = [PollFd::new(&stdout, PollFlags::empty())];
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    poll(&mut fds, Some(&now)) == Ok(1)
        && fds[0].revents().intersects(PollFlags::ERR | PollFlags::HUP)
}

fn unusable(region: &str, me: &str, c: &Corruption) -> Failure {
    Failure::error(format!(
        "the mailbox of '{me}' in region '{region}' is corrupt and cannot be repaired: {}\n\
         hint: `shmbox info {arg}` shows the region; if it is damaged, \
         recreate it (`shmbox rm {arg}`, then create it again)",
        c.reason(),
        arg = super::command_arg(region),
    ))
}
