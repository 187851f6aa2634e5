//! One module per subcommand, and the region-opening helpers they share.

pub mod bench;
pub mod create;
pub mod gc;
pub mod info;
pub mod ls;
pub mod recv;
pub mod rm;
pub mod send;
pub mod watch;

use crate::cli::Command;
use crate::{Failure, Result};
use shmbox::{OpenError, Region};

/// Runs one subcommand.
pub fn run(command: Command) -> Result {
    match command {
        Command::Create(a) => create::run(a),
        Command::Rm(a) => rm::run(a),
        Command::Ls(a) => ls::run(a),
        Command::Info(a) => info::run(a),
        Command::Watch(a) => watch::run(a),
        Command::Gc(a) => gc::run(a),
        Command::Send(a) => send::run(a),
        Command::Recv(a) => recv::run(a),
        Command::Bench(a) => bench::run(a),
    }
}

/// Where the region's object lives (the library does not expose this; it
/// is the documented `/dev/shm/shmbox.<name>`). Used only to stat an object
/// that cannot be opened as a region.
pub fn object_path(name: &str) -> std::path::PathBuf {
    format!("/dev/shm/shmbox.{name}").into()
}

/// `name` as an argument in a command a hint suggests: after `--` if it
/// starts with a dash, where it would read as an option.
pub fn command_arg(name: &str) -> String {
    match name.starts_with('-') {
        true => format!("-- {name}"),
        false => name.to_string(),
    }
}

/// What went wrong opening `name`, with what to do about it.
pub fn describe_open_error(name: &str, e: &OpenError) -> String {
    let arg = command_arg(name);
    match e {
        OpenError::NotFound { .. } => {
            format!("region '{name}' not found; `shmbox ls` lists regions, `shmbox create {arg}` makes one")
        }
        OpenError::InvalidName(n) => format!("invalid region name '{name}': {n}"),
        OpenError::PermissionDenied { .. } => format!(
            "{e}; run as its owner, or have its owner recreate it with a mode that grants you \
             access (`shmbox create --mode 0660 {arg}` for its group, 0666 for everyone)"
        ),
        OpenError::NotShmbox { .. } | OpenError::Corrupt { .. } => {
            format!("{e}; `shmbox rm {arg}` removes it")
        }
        OpenError::Version { .. } => {
            format!("{e}; use the shmbox version that created it, or `shmbox rm {arg}`")
        }
        OpenError::Abandoned { .. } => format!(
            "region '{name}' was left half-initialised by a creator that died; `shmbox rm {arg}` removes it"
        ),
        OpenError::InitTimeout { .. } => {
            format!("{e}; try again, or `shmbox rm {arg}` if it stays that way")
        }
        _ => e.to_string(),
    }
}

/// Opens an existing region (never creates one), with a helpful error.
pub fn open_region(name: &str) -> Result<Region> {
    Region::open(name).map_err(|e| open_failure(name, e))
}

/// Opens an existing region for reading only (`Region::inspect`: read
/// permission is enough, and the region is never changed), with a helpful
/// error.
pub fn inspect_region(name: &str) -> Result<Region> {
    Region::inspect(name).map_err(|e| open_failure(name, e))
}

fn open_failure(name: &str, e: OpenError) -> Failure {
    let message = describe_open_error(name, &e);
    match e {
        OpenError::InvalidName(_) => Failure::usage(message),
        _ => Failure::error(message),
    }
}

/// Joins `region` as `as_name`, with a helpful error.
pub fn join(region: &Region, region_name: &str, as_name: &str) -> Result<shmbox::Mailbox> {
    let arg = command_arg(region_name);
    region.join(as_name).map_err(|e| match e {
        shmbox::JoinError::InvalidName(n) => {
            Failure::usage(format!("invalid participant name '{as_name}': {n}"))
        }
        shmbox::JoinError::NameTaken(_) => Failure::error(format!(
            "participant name '{as_name}' is taken in region '{region_name}'; choose another with --as (`shmbox info {arg}` lists participants)"
        )),
        shmbox::JoinError::Full { max } => Failure::error(format!(
            "all {max} participant slots of region '{region_name}' are in use by live participants; `shmbox info {arg}` lists them"
        )),
        e => Failure::error(format!("cannot join region '{region_name}': {e}")),
    })
}
