//! `shmbox create NAME [--class SIZE:COUNT ...] [--participants N] [--mailbox N] [--mode MODE]`

use crate::cli::CreateArgs;
use crate::output::{self, exact_bytes};
use crate::{Failure, Result};
use shmbox::{
    Config, ConfigError, CreateError, Region, SizeClass, MAX_CHUNKS_PER_CLASS, MAX_CHUNK_SIZE,
    MAX_CLASSES, MAX_MAILBOX_CAPACITY, MAX_PARTICIPANTS,
};

pub fn run(args: CreateArgs) -> Result {
    let config = config(&args)?;
    let name = &args.name;
    // A region whose creator died half-way blocks its name: replace it.
    let created = match Region::create(name, &config) {
        Err(CreateError::AlreadyExists { .. })
            if Region::remove_abandoned(name).is_ok_and(|removed| removed) =>
        {
            eprintln!("replacing region '{name}', left half-initialised by a creator that died");
            Region::create(name, &config)
        }
        created => created,
    };
    let region = created.map_err(|e| match e {
        CreateError::InvalidName(n) => Failure::usage(format!("invalid region name '{name}': {n}")),
        CreateError::InvalidConfig(c) => Failure::usage(explain(&c)),
        CreateError::AlreadyExists { .. } => Failure::error(format!(
            "region '{name}' already exists; `shmbox info {arg}` shows it, `shmbox rm {arg}` removes it",
            arg = super::command_arg(name)
        )),
        CreateError::NoSpace { .. } => Failure::error(format!(
            "{e}; use fewer or smaller --class chunks, or free space in /dev/shm (`shmbox ls`)"
        )),
        CreateError::Io {
            op: "shm_open",
            ref source,
            ..
        } if source.raw_os_error() == Some(libc::ENOSPC) => Failure::error(format!(
            "{e}; /dev/shm cannot hold another object (its inodes are used up): \
             `shmbox ls` lists the regions, `shmbox rm` removes unused ones"
        )),
        e => Failure::error(e.to_string()),
    })?;
    let c = region.config();
    let classes: Vec<String> = c
        .classes()
        .iter()
        .map(|k| format!("{} x {}", k.count, exact_bytes(k.size)))
        .collect();
    output::print(&format!(
        "created region '{name}': {} in /dev/shm\n  classes       {}\n  participants  {}\n  mailbox       {} messages\n  mode          {}\n",
        output::bytes(region.size()),
        classes.join(", "),
        c.max_participants(),
        c.mailbox_capacity(),
        output::mode(c.mode()),
    ))?;
    Ok(())
}

/// The config the arguments ask for, on top of `Config::default()`.
fn config(args: &CreateArgs) -> Result<Config> {
    let mut config = Config::default();
    if !args.classes.is_empty() {
        // Any order on the command line; the library wants them ascending.
        let mut classes: Vec<SizeClass> = args
            .classes
            .iter()
            .map(|&(size, count)| SizeClass::new(size, count))
            .collect();
        classes.sort_by_key(|c| c.size);
        if let Some(w) = classes.windows(2).find(|w| w[0].size == w[1].size) {
            return Err(Failure::usage(format!(
                "two --class arguments have the size {}; give each size once",
                output::size_arg(w[0].size)
            )));
        }
        config = config.with_classes(&classes);
    }
    if let Some(n) = args.participants {
        config = config.with_max_participants(n);
    }
    if let Some(n) = args.mailbox {
        config = config.with_mailbox_capacity(n);
    }
    if let Some(m) = args.mode {
        config = config.with_mode(m);
    }
    config.validate().map_err(|e| Failure::usage(explain(&e)))?;
    Ok(config)
}

/// A config error in terms of the command's options.
fn explain(e: &ConfigError) -> String {
    match *e {
        ConfigError::ClassCount(n) => {
            format!("give 1 to {MAX_CLASSES} --class arguments, got {n}")
        }
        ConfigError::ClassBounds { size, count, .. } => format!(
            "--class {}:{count}: a size class needs 1 B to {} per chunk and 1 to {MAX_CHUNKS_PER_CLASS} chunks",
            output::size_arg(size),
            exact_bytes(MAX_CHUNK_SIZE),
        ),
        ConfigError::Participants(n) => {
            format!("--participants must be 1 to {MAX_PARTICIPANTS}, got {n}")
        }
        ConfigError::MailboxCapacity(n) => format!(
            "--mailbox must be a power of two from 2 to {MAX_MAILBOX_CAPACITY}, got {n}"
        ),
        ConfigError::Mode(m) => format!(
            "--mode must include 0600 and only read/write bits (0600, 0620, 0640, 0660, 0666, ...), got {}",
            output::mode(m)
        ),
        ConfigError::TooLarge(_) => format!("{e}; use fewer or smaller --class chunks"),
        // The classes are sorted and duplicates refused before this.
        ConfigError::ClassOrder { .. } => format!("invalid config: {e}"),
    }
}
