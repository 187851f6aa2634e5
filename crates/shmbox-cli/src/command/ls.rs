//! `shmbox ls [--json]`: every region on the machine. A region that cannot
//! be opened is listed with the reason instead of failing the listing.

use super::{describe_open_error, object_path};
use crate::cli::LsArgs;
use crate::output::{self, Align, Table, SCHEMA};
use crate::{Failure, Result};
use serde::Serialize;
use shmbox::{OpenError, Region};
use std::io::IsTerminal;

#[derive(Debug, Serialize)]
struct Listing {
    schema: u32,
    regions: Vec<Entry>,
}

/// One region; the fields after `error` are `null` when `ok` is false
/// (except `size`, taken from the object's file when it can be).
#[derive(Debug, Serialize)]
struct Entry {
    name: String,
    ok: bool,
    error: Option<String>,
    size: Option<u64>,
    live: Option<u32>,
    dead: Option<u32>,
    chunks_used: Option<u64>,
    chunks_total: Option<u64>,
    created: Option<String>,
    created_unix_ms: Option<u64>,
}

pub fn run(args: LsArgs) -> Result {
    let names = Region::list().map_err(|e| {
        Failure::error(format!(
            "cannot list /dev/shm: {e}; shmbox needs a tmpfs mounted there"
        ))
    })?;
    let regions: Vec<Entry> = names.iter().filter_map(|n| entry(n)).collect();
    if args.json {
        output::print_json(&Listing {
            schema: SCHEMA,
            regions,
        })?;
        return Ok(());
    }
    if regions.is_empty() {
        if std::io::stdout().is_terminal() {
            eprintln!("no shmbox regions; `shmbox create NAME` makes one");
        }
        return Ok(());
    }
    let mut t = Table::new(&[
        ("NAME", Align::Left),
        ("SIZE", Align::Right),
        ("LIVE", Align::Right),
        ("DEAD", Align::Right),
        ("POOL USED", Align::Right),
        ("CREATED", Align::Left),
    ]);
    let dash = || "-".to_string();
    for e in &regions {
        let size = e.size.map_or_else(dash, output::bytes);
        if let Some(err) = &e.error {
            t.row(vec![
                e.name.clone(),
                size,
                dash(),
                dash(),
                dash(),
                format!("error: {err}"),
            ]);
            continue;
        }
        t.row(vec![
            e.name.clone(),
            size,
            e.live.unwrap_or(0).to_string(),
            e.dead.unwrap_or(0).to_string(),
            output::fraction(e.chunks_used.unwrap_or(0), e.chunks_total.unwrap_or(0)),
            e.created_unix_ms.map_or_else(dash, |ms| {
                let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
                format!("{} ({})", output::datetime(t), output::ago(t))
            }),
        ]);
    }
    output::print(&t.render())?;
    Ok(())
}

/// The entry for `name`; `None` if it was removed since it was listed.
fn entry(name: &str) -> Option<Entry> {
    Some(match Region::inspect(name) {
        Ok(region) => {
            let info = region.info();
            let participants = region.participants();
            let live = participants.iter().filter(|p| p.alive).count() as u32;
            let pool = region.pool_usage();
            let total: u64 = pool.iter().map(|c| u64::from(c.count)).sum();
            let free: u64 = pool.iter().map(|c| u64::from(c.free.min(c.count))).sum();
            Entry {
                name: name.to_string(),
                ok: true,
                error: None,
                size: Some(info.size),
                live: Some(live),
                dead: Some(participants.len() as u32 - live),
                chunks_used: Some(total - free),
                chunks_total: Some(total),
                created: Some(output::rfc3339(info.created)),
                created_unix_ms: Some(output::unix_ms(info.created)),
            }
        }
        Err(OpenError::NotFound { .. }) => return None,
        Err(e) => Entry {
            name: name.to_string(),
            ok: false,
            error: Some(describe_open_error(name, &e)),
            size: std::fs::symlink_metadata(object_path(name))
                .ok()
                .map(|m| m.len()),
            live: None,
            dead: None,
            chunks_used: None,
            chunks_total: None,
            created: None,
            created_unix_ms: None,
        },
    })
}
