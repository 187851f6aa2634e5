//! `shmbox info NAME [--json]`: everything a region tells without joining
//! it. The JSON document is described in SCHEMA.md.

use super::inspect_region;
use crate::cli::InfoArgs;
use crate::output::{self, line, Align, Table, SCHEMA};
use crate::Result;
use serde::Serialize;
use shmbox::Region;

pub fn run(args: InfoArgs) -> Result {
    let region = inspect_region(&args.name)?;
    let snapshot = Snapshot::take(&args.name, &region);
    if args.json {
        output::print_json(&snapshot)?;
    } else {
        output::print(&snapshot.render())?;
    }
    Ok(())
}

/// A region as `info --json` shows it (schema 1).
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub schema: u32,
    pub name: String,
    pub header: Header,
    pub config: ConfigView,
    pub summary: Summary,
    pub participants: Vec<Participant>,
    pub pool: Vec<Class>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Header {
    pub size: u64,
    pub version: u32,
    pub created: String,
    pub created_unix_ms: u64,
    pub creator_pid: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConfigView {
    pub classes: Vec<ClassConfig>,
    pub max_participants: u32,
    pub mailbox_capacity: u32,
    pub mode: String,
    pub max_message_size: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClassConfig {
    pub size: u64,
    pub count: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub live: u32,
    pub dead: u32,
    pub chunks_total: u64,
    pub chunks_used: u64,
    pub chunks_held_by_dead: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Participant {
    pub name: String,
    pub slot: u32,
    pub generation: u32,
    pub alive: bool,
    pub pid: u32,
    pub queued: u64,
    pub capacity: u64,
    pub strategy: &'static str,
    pub parked: bool,
    pub holding: u32,
    pub counters: Counters,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Counters {
    pub sent: u64,
    pub received: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub full: u64,
    pub timeouts: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Class {
    pub size: u64,
    pub count: u32,
    pub free: u32,
    pub used: u32,
    pub held_by_dead: u32,
}

impl Snapshot {
    /// Reads everything from `region` (which must not have been joined).
    pub fn take(name: &str, region: &Region) -> Snapshot {
        let info = region.info();
        let config = region.config();
        let participants: Vec<Participant> = region
            .participants()
            .into_iter()
            .map(|p| Participant {
                name: p.name,
                slot: p.address.slot(),
                generation: p.address.generation(),
                alive: p.alive,
                pid: p.pid,
                queued: p.queued,
                capacity: p.capacity,
                strategy: output::strategy(p.strategy),
                parked: p.parked,
                holding: p.holding,
                counters: Counters {
                    sent: p.stats.sent,
                    received: p.stats.received,
                    bytes_sent: p.stats.bytes_sent,
                    bytes_received: p.stats.bytes_received,
                    full: p.stats.full,
                    timeouts: p.stats.timeouts,
                },
            })
            .collect();
        let pool: Vec<Class> = region
            .pool_usage()
            .into_iter()
            .map(|c| Class {
                size: c.size,
                count: c.count,
                free: c.free.min(c.count),
                // A snapshot of a moving target: keep it consistent.
                used: c.count.saturating_sub(c.free),
                held_by_dead: c.held_by_dead,
            })
            .collect();
        let live = participants.iter().filter(|p| p.alive).count() as u32;
        Snapshot {
            schema: SCHEMA,
            name: name.to_string(),
            header: Header {
                size: info.size,
                version: info.version,
                created: output::rfc3339(info.created),
                created_unix_ms: output::unix_ms(info.created),
                creator_pid: info.creator_pid,
            },
            config: ConfigView {
                classes: config
                    .classes()
                    .iter()
                    .map(|c| ClassConfig {
                        size: c.size,
                        count: c.count,
                    })
                    .collect(),
                max_participants: config.max_participants(),
                mailbox_capacity: config.mailbox_capacity(),
                mode: output::mode(config.mode()),
                max_message_size: config.max_message_size(),
            },
            summary: Summary {
                live,
                dead: participants.len() as u32 - live,
                chunks_total: pool.iter().map(|c| u64::from(c.count)).sum(),
                chunks_used: pool.iter().map(|c| u64::from(c.used)).sum(),
                chunks_held_by_dead: pool.iter().map(|c| u64::from(c.held_by_dead)).sum(),
            },
            participants,
            pool,
        }
    }

    /// When the region was created.
    pub fn created(&self) -> std::time::SystemTime {
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(self.header.created_unix_ms)
    }

    /// The header, config and summary lines.
    pub fn render_header(&self) -> String {
        let mut out = String::new();
        let h = &self.header;
        let c = &self.config;
        line(&mut out, format_args!("region '{}'", self.name));
        line(
            &mut out,
            format_args!(
                "  size          {} ({} bytes), layout version {}",
                output::bytes(h.size),
                h.size,
                h.version
            ),
        );
        line(
            &mut out,
            format_args!(
                "  created       {} ({}) by pid {}",
                output::datetime(self.created()),
                output::ago(self.created()),
                h.creator_pid
            ),
        );
        let classes: Vec<String> = c
            .classes
            .iter()
            .map(|k| format!("{}:{}", output::size_arg(k.size), k.count))
            .collect();
        line(
            &mut out,
            format_args!("  classes       {}", classes.join(",")),
        );
        line(
            &mut out,
            format_args!(
                "  limits        {} participants, mailbox {}, largest message {}",
                c.max_participants,
                c.mailbox_capacity,
                output::exact_bytes(c.max_message_size)
            ),
        );
        line(&mut out, format_args!("  mode          {}", c.mode));
        let s = &self.summary;
        line(
            &mut out,
            format_args!("  participants  {} live, {} dead", s.live, s.dead),
        );
        line(
            &mut out,
            format_args!(
                "  pool          {} chunks used{}",
                output::fraction(s.chunks_used, s.chunks_total),
                if s.chunks_held_by_dead > 0 {
                    format!(", {} held by the dead", s.chunks_held_by_dead)
                } else {
                    String::new()
                }
            ),
        );
        if s.dead > 0 {
            line(
                &mut out,
                format_args!(
                    "  hint          `shmbox gc {}` reclaims the dead participants",
                    super::command_arg(&self.name)
                ),
            );
        }
        out
    }

    /// The pool table.
    pub fn render_pool(&self) -> String {
        let mut t = Table::new(&[
            ("CLASS", Align::Right),
            ("CHUNKS", Align::Right),
            ("FREE", Align::Right),
            ("USED", Align::Right),
            ("HELD BY DEAD", Align::Right),
        ])
        .indent(2);
        for c in &self.pool {
            t.row(vec![
                output::exact_bytes(c.size),
                c.count.to_string(),
                c.free.to_string(),
                c.used.to_string(),
                c.held_by_dead.to_string(),
            ]);
        }
        t.render()
    }

    /// The whole human report.
    pub fn render(&self) -> String {
        let mut out = self.render_header();
        out.push('\n');
        if self.participants.is_empty() {
            out.push_str("participants: none\n");
        } else {
            out.push_str("participants\n");
            let mut t = Table::new(&[
                ("NAME", Align::Left),
                ("SLOT", Align::Right),
                ("GEN", Align::Right),
                ("STATE", Align::Left),
                ("PID", Align::Right),
                ("MAILBOX", Align::Right),
                ("WAIT", Align::Left),
                ("PARKED", Align::Left),
                ("HOLDING", Align::Right),
            ])
            .indent(2);
            for p in &self.participants {
                t.row(vec![
                    p.name.clone(),
                    p.slot.to_string(),
                    p.generation.to_string(),
                    state(p.alive).into(),
                    p.pid.to_string(),
                    format!("{}/{}", p.queued, p.capacity),
                    p.strategy.into(),
                    yes_no(p.parked).into(),
                    p.holding.to_string(),
                ]);
            }
            out.push_str(&t.render());
            out.push_str(
                "  (PID as recorded at join, for information only: liveness is a kernel lock)\n",
            );
        }
        out.push_str("\npool\n");
        out.push_str(&self.render_pool());
        if !self.participants.is_empty() {
            out.push_str("\ncounters\n");
            let mut t = Table::new(&[
                ("NAME", Align::Left),
                ("SENT", Align::Right),
                ("RECEIVED", Align::Right),
                ("BYTES SENT", Align::Right),
                ("BYTES RECEIVED", Align::Right),
                ("FULL", Align::Right),
                ("TIMEOUTS", Align::Right),
            ])
            .indent(2);
            for p in &self.participants {
                let c = &p.counters;
                t.row(vec![
                    p.name.clone(),
                    c.sent.to_string(),
                    c.received.to_string(),
                    c.bytes_sent.to_string(),
                    c.bytes_received.to_string(),
                    c.full.to_string(),
                    c.timeouts.to_string(),
                ]);
            }
            out.push_str(&t.render());
        }
        out
    }
}

pub fn state(alive: bool) -> &'static str {
    if alive {
        "live"
    } else {
        "dead"
    }
}

pub fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}
