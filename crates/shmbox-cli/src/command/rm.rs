//! `shmbox rm NAME... [--force]`

use crate::cli::RmArgs;
use crate::{output, Failure, Result};
use shmbox::{Region, RemoveError};

pub fn run(args: RmArgs) -> Result {
    let mut failures = Vec::new();
    for name in &args.names {
        match remove(name, args.force) {
            Ok(Some(text)) => output::print(&text)?,
            Ok(None) => {}
            Err(f) => failures.push(f),
        }
    }
    match failures.len() {
        0 => Ok(()),
        1 => Err(failures.remove(0)),
        n => {
            for f in &failures {
                eprintln!("error: {}", crate::printable(&f.message));
            }
            let code = failures.iter().map(|f| f.code).max().unwrap_or(1);
            Err(Failure {
                message: format!("{n} of {} regions were not removed", args.names.len()),
                code,
            })
        }
    }
}

/// Removes one region; the line to print, if any.
fn remove(name: &str, force: bool) -> Result<Option<String>> {
    // Who is still attached, to say so (best effort: a corrupt region is
    // removed all the same). Read-only: looking does not attach.
    let live = Region::inspect(name)
        .map(|r| r.participants().iter().filter(|p| p.alive).count())
        .unwrap_or(0);
    match Region::remove(name) {
        Ok(()) if live == 1 => Ok(Some(format!(
            "removed region '{name}' (1 live participant keeps its memory until it exits)\n"
        ))),
        Ok(()) if live > 1 => Ok(Some(format!(
            "removed region '{name}' ({live} live participants keep its memory until they exit)\n"
        ))),
        Ok(()) => Ok(Some(format!("removed region '{name}'\n"))),
        Err(RemoveError::NotFound { .. }) if force => Ok(None),
        Err(RemoveError::NotFound { .. }) => Err(Failure::error(format!(
            "region '{name}' not found; `shmbox ls` lists regions (--force ignores missing ones)"
        ))),
        Err(RemoveError::InvalidName(n)) => {
            Err(Failure::usage(format!("invalid region name '{name}': {n}")))
        }
        Err(RemoveError::Io { source, .. }) if source.raw_os_error() == Some(libc::EPERM) => {
            Err(Failure::error(format!(
                "region '{name}' may only be removed by its owner or root \
                 (/dev/shm is sticky): {source}"
            )))
        }
        Err(e) => Err(Failure::error(format!(
            "{e}; check that you may write to /dev/shm"
        ))),
    }
}
