//! `shmbox gc NAME | --all [--json]`: sweep dead participants.

use super::describe_open_error;
use crate::cli::GcArgs;
use crate::output::{self, SCHEMA};
use crate::{Failure, Result};
use serde::Serialize;
use shmbox::{OpenError, Region};

#[derive(Debug, Serialize)]
struct Report {
    schema: u32,
    regions: Vec<Swept>,
}

/// What one region's sweep reclaimed; the counts are `null` when the region
/// could not be opened (`ok` false, `error` says why).
#[derive(Debug, Serialize)]
struct Swept {
    name: String,
    ok: bool,
    error: Option<String>,
    participants: Option<u32>,
    messages: Option<u32>,
    chunks: Option<u32>,
    /// Left half-initialised by a creator that died, and removed.
    removed: bool,
}

pub fn run(args: GcArgs) -> Result {
    let mut failed = 0;
    let regions: Vec<Swept> = if let Some(name) = &args.name {
        match Region::open(name) {
            Ok(region) => vec![sweep(name, &region)],
            Err(OpenError::Abandoned { .. }) => {
                vec![remove_abandoned(name).map_err(Failure::error)?]
            }
            Err(e) => return Err(super::open_failure(name, e)),
        }
    } else {
        let names =
            Region::list().map_err(|e| Failure::error(format!("cannot list /dev/shm: {e}")))?;
        names
            .iter()
            .filter_map(|name| {
                let swept = match Region::open(name) {
                    Ok(region) => Ok(sweep(name, &region)),
                    // Removed since it was listed.
                    Err(OpenError::NotFound { .. }) => return None,
                    Err(OpenError::Abandoned { .. }) => remove_abandoned(name),
                    Err(e) => Err(describe_open_error(name, &e)),
                };
                Some(swept.unwrap_or_else(|error| {
                    failed += 1;
                    Swept {
                        name: name.clone(),
                        ok: false,
                        error: Some(error),
                        participants: None,
                        messages: None,
                        chunks: None,
                        removed: false,
                    }
                }))
            })
            .collect()
    };
    if args.json {
        output::print_json(&Report {
            schema: SCHEMA,
            regions,
        })?;
    } else {
        let mut text = String::new();
        for r in &regions {
            match (&r.error, r.participants, r.messages, r.chunks) {
                (Some(e), ..) => text.push_str(&format!("{}: skipped: {e}\n", r.name)),
                _ if r.removed => text.push_str(&format!(
                    "{}: removed: left half-initialised by a creator that died\n",
                    r.name
                )),
                (None, Some(0), ..) => text.push_str(&format!("{}: nothing to reclaim\n", r.name)),
                (None, Some(p), Some(m), Some(c)) => text.push_str(&format!(
                    "{}: reclaimed {p} participant{}, {m} queued message{}, {c} chunk{}\n",
                    r.name,
                    plural(p),
                    plural(m),
                    plural(c)
                )),
                _ => {}
            }
        }
        if regions.is_empty() {
            text.push_str("no shmbox regions\n");
        }
        output::print(&text)?;
    }
    if failed > 0 {
        return Err(Failure::error(format!(
            "{failed} region{} could not be opened (see above)",
            plural(failed)
        )));
    }
    Ok(())
}

fn sweep(name: &str, region: &Region) -> Swept {
    let report = region.sweep();
    Swept {
        name: name.to_string(),
        ok: true,
        error: None,
        participants: Some(report.participants),
        messages: Some(report.messages),
        chunks: Some(report.chunks),
        removed: false,
    }
}

/// Removes `name`, which a creator that died left half-initialised; why
/// not, if it cannot.
fn remove_abandoned(name: &str) -> std::result::Result<Swept, String> {
    let removed = Region::remove_abandoned(name).map_err(|e| describe_open_error(name, &e))?;
    Ok(Swept {
        name: name.to_string(),
        ok: true,
        error: None,
        participants: Some(0),
        messages: Some(0),
        chunks: Some(0),
        removed,
    })
}

fn plural(n: u32) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
