//! `shmbox recv NAME --as NAME [--count N] [--timeout D] [--lines]`

use super::{join, open_region};
use crate::cli::RecvArgs;
use crate::{output, Failure, Result};
use shmbox::{RecvError, RecvTimeoutError};
use std::io::Write;

pub fn run(args: RecvArgs) -> Result {
    let region = open_region(&args.name)?;
    let me = join(&region, &args.name, &args.as_name)?;
    let mut out = std::io::stdout().lock();
    let mut received = 0u64;
    while args.count.is_none_or(|n| received < n) {
        let message = match args.timeout {
            Some(t) => match me.recv_timeout(t) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) if received > 0 => break,
                Err(RecvTimeoutError::Timeout) => {
                    return Err(Failure::timeout(format!(
                        "no message for '{}' in region '{}' within {}",
                        args.as_name,
                        args.name,
                        output::duration_fine(t)
                    )))
                }
                Err(RecvTimeoutError::Corrupt(c)) => {
                    eprintln!("warning: skipped a corrupt message: {}", c.reason());
                    continue;
                }
            },
            None => match me.recv() {
                Ok(m) => m,
                Err(RecvError::Corrupt(c)) => {
                    eprintln!("warning: skipped a corrupt message: {}", c.reason());
                    continue;
                }
            },
        };
        out.write_all(&message)?;
        drop(message);
        if args.lines {
            out.write_all(b"\n")?;
        }
        // Whoever reads the pipe sees each message as it arrives.
        out.flush()?;
        received += 1;
    }
    Ok(())
}
