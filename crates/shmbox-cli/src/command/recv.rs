//! `shmbox recv NAME --as NAME [--count N] [--timeout D] [--lines]`

use super::{join, open_region};
use crate::cli::RecvArgs;
use crate::{output, Failure, Result};
use shmbox::{Corruption, Message, RecvError, RecvTimeoutError};
use std::io::Write;
use std::time::Instant;

pub fn run(args: RecvArgs) -> Result {
    let region = open_region(&args.name)?;
    let me = join(&region, &args.name, &args.as_name)?;
    let mut out = std::io::stdout().lock();
    let mut received = 0u64;
    // The wait for each message starts when the one before arrived; a
    // corruption reported meanwhile does not restart it.
    let mut waiting_since = Instant::now();
    while args.count.is_none_or(|n| received < n) {
        let got = match args.timeout {
            Some(t) => {
                let left = t.saturating_sub(waiting_since.elapsed());
                match me.recv_timeout(left) {
                    Ok(m) => Ok(m),
                    Err(RecvTimeoutError::Timeout) if received > 0 => break,
                    Err(RecvTimeoutError::Timeout) => {
                        return Err(Failure::timeout(format!(
                            "no message for '{}' in region '{}' within {}",
                            args.as_name,
                            args.name,
                            output::duration_fine(t)
                        )))
                    }
                    Err(RecvTimeoutError::Corrupt(c)) => Err(c),
                }
            }
            None => me.recv().map_err(|RecvError::Corrupt(c)| c),
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
        out.write_all(&message)?;
        drop(message);
        if args.lines {
            out.write_all(b"\n")?;
        }
        // Whoever reads the pipe sees each message as it arrives.
        out.flush()?;
        received += 1;
        waiting_since = Instant::now();
    }
    Ok(())
}

fn unusable(region: &str, me: &str, c: &Corruption) -> Failure {
    Failure::error(format!(
        "the mailbox of '{me}' in region '{region}' is corrupt and cannot be repaired: {}\n\
         hint: `shmbox info {region}` shows the region; if it is damaged, \
         recreate it (`shmbox rm {region}`, then create it again)",
        c.reason()
    ))
}
