//! Command-line definitions (clap derive) and the parsers for sizes,
//! durations, size classes and modes.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

/// Shown at the end of `shmbox --help`.
const AFTER_HELP: &str = "\
Regions live in /dev/shm as shmbox.<NAME>. Inspecting (ls, info, watch) never \
joins or changes a region; create, rm, gc, send and recv do.

Exit status:
  0  success
  1  error (region not found, corrupt, permission denied, peer left, ...)
  2  usage error (bad arguments)
  3  recv: timed out before any message arrived";

#[derive(Debug, Parser)]
#[command(
    name = "shmbox",
    version,
    about = "Create, inspect, watch, sweep and use shmbox shared-memory regions",
    after_help = AFTER_HELP,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a region
    #[command(after_help = "\
Examples:
  shmbox create demo
  shmbox create demo --class 256:1024 --class 64K:16 --participants 8 --mailbox 64
  shmbox create shared --mode 0660      # the group may join too")]
    Create(CreateArgs),
    /// Remove regions (processes still attached keep their mapping)
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
    /// List every shmbox region on this machine
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Show a region's header, config, participants, pool and counters
    #[command(after_help = "The --json schema is documented in SCHEMA.md (\"schema\": 1).")]
    Info(InfoArgs),
    /// Live view of a region with per-participant message rates (q to quit)
    Watch(WatchArgs),
    /// Reclaim dead participants: their slots, queued messages and chunks
    Gc(GcArgs),
    /// Send standard input to a participant
    #[command(after_help = "\
Examples:
  echo hello | shmbox send demo --to server
  tail -f app.log | shmbox send demo --to logger --lines")]
    Send(SendArgs),
    /// Receive messages and write their bytes to standard output
    #[command(after_help = "\
Exits 0 after --count messages, or when --timeout passes after at least one
message; exits 3 when --timeout passes before any message arrived. Ends
quietly (exit 0) when nobody reads its output any more, before taking another
message; a message taken and then not written is reported as lost (exit 1).
A batch's records are written one by one (each on its own line with --lines).

Examples:
  shmbox recv demo --as server --count 1 > message.bin
  shmbox recv demo --as logger --lines --timeout 10s")]
    Recv(RecvArgs),
    /// Run the benchmark suite (crates/shmbox-bench)
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Region name (1 to 64 of A-Z a-z 0-9 . _ -)
    #[arg(value_name = "REGION")]
    pub name: String,
    /// A size class, SIZE:COUNT (COUNT chunks of SIZE bytes; SIZE takes K,
    /// M, G or KiB, MiB, GiB suffixes, all powers of 1024). Repeat or
    /// separate with commas; without it the default classes are used
    /// (64:4096,1K:1024,16K:256,256K:32,1M:8)
    #[arg(long = "class", value_name = "SIZE:COUNT", value_parser = parse_class, value_delimiter = ',')]
    pub classes: Vec<(u64, u32)>,
    /// Most participants at once (1 to 64) [default: 64]
    #[arg(long, value_name = "N")]
    pub participants: Option<u32>,
    /// Mailbox capacity in messages, a power of two (2 to 65536) [default: 256]
    #[arg(long, value_name = "N")]
    pub mailbox: Option<u32>,
    /// Permission bits, octal (0600, 0660 or 0666) [default: 0600]
    #[arg(long, value_name = "MODE", value_parser = parse_mode)]
    pub mode: Option<u32>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Regions to remove
    #[arg(required = true, value_name = "REGION")]
    pub names: Vec<String>,
    /// Ignore regions that do not exist
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Print JSON (see SCHEMA.md)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Region name
    #[arg(value_name = "REGION")]
    pub name: String,
    /// Print JSON (see SCHEMA.md)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Region name
    #[arg(value_name = "REGION")]
    pub name: String,
    /// Milliseconds between refreshes (at least 10)
    #[arg(long, short = 'n', value_name = "MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(10..))]
    pub interval: u64,
    /// Exit after N refreshes
    #[arg(long, short = 'c', value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("target").required(true).args(["name", "all"]))]
pub struct GcArgs {
    /// Region to sweep
    #[arg(value_name = "REGION")]
    pub name: Option<String>,
    /// Sweep every region on this machine
    #[arg(long, short)]
    pub all: bool,
    /// Print JSON (see SCHEMA.md)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// Region name
    #[arg(value_name = "REGION")]
    pub name: String,
    /// Participant to send to
    #[arg(long, value_name = "PEER")]
    pub to: String,
    /// Participant name to join as [default: send-PID, this process's pid]
    #[arg(long = "as", value_name = "NAME")]
    pub as_name: Option<String>,
    /// Send each line as a message of its own, without its newline
    #[arg(long)]
    pub lines: bool,
    /// Wait up to D for PEER to join (e.g. 500ms, 5s) instead of failing at once
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub wait: Option<Duration>,
    /// Give up when a message cannot be handed over within D (PEER's
    /// mailbox or the pool stays full) [default: wait as long as PEER lives]
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct RecvArgs {
    /// Region name
    #[arg(value_name = "REGION")]
    pub name: String,
    /// Participant name to join as
    #[arg(long = "as", value_name = "NAME")]
    pub as_name: String,
    /// Stop after N messages
    #[arg(long, short = 'c', value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Stop when no message arrives within D (e.g. 500ms, 2s, 1m; a bare
    /// number is seconds) [default: wait for ever]
    #[arg(long, short = 't', value_name = "D", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Write a newline after each message (otherwise the bytes are written
    /// as they are, back to back)
    #[arg(long)]
    pub lines: bool,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The quick variant: fewer sizes and shorter measurements (well under
    /// a minute; the full run takes a few minutes)
    #[arg(long)]
    pub quick: bool,
    /// Payload sizes for the latency measurements (at least 8 bytes), e.g.
    /// 64,1K,64K
    #[arg(long, value_name = "SIZE", value_parser = parse_size_usize, value_delimiter = ',', num_args = 1..)]
    pub sizes: Option<Vec<usize>>,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
    /// Also write the results as an SVG chart to FILE (of the last run)
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Run N times and report the median of each target's ratio (the
    /// machine is noisy: a single run's ratios move by 10-20%)
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub repeat: u32,
}

/// Parses a byte size: a number with an optional K, M, G (or KiB, MiB, GiB,
/// Ki, Mi, Gi, and B) suffix, case-insensitive, in powers of 1024.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '_')
        .unwrap_or(t.len());
    let (digits, suffix) = t.split_at(split);
    let digits: String = digits.chars().filter(|&c| c != '_').collect();
    if digits.is_empty() {
        return Err(format!(
            "'{s}' is not a size; use a number with an optional K, M or G suffix (e.g. 64, 1K, 16KiB, 1M)"
        ));
    }
    let unit: u64 = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "ki" | "kib" => 1 << 10,
        "m" | "mi" | "mib" => 1 << 20,
        "g" | "gi" | "gib" => 1 << 30,
        "kb" | "mb" | "gb" => {
            return Err(format!(
                "'{s}': say {}K or {}KiB (sizes are powers of 1024)",
                digits, digits
            ))
        }
        other => {
            return Err(format!(
                "'{s}' has an unknown unit '{other}'; use K, M or G (or KiB, MiB, GiB)"
            ))
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| format!("'{s}' is too large"))
}

fn parse_size_usize(s: &str) -> Result<usize, String> {
    let n = parse_size(s)?;
    usize::try_from(n).map_err(|_| format!("'{s}' is too large"))
}

/// Parses `SIZE:COUNT`.
pub fn parse_class(s: &str) -> Result<(u64, u32), String> {
    let (size, count) = s.split_once(':').ok_or_else(|| {
        format!("'{s}' is not a size class; write SIZE:COUNT, e.g. 1K:256 for 256 chunks of 1 KiB")
    })?;
    let size = parse_size(size)?;
    let count = count.trim().parse::<u32>().map_err(|e| match e.kind() {
        std::num::IntErrorKind::PosOverflow => {
            format!("'{s}': the chunk count '{count}' is too large")
        }
        _ => format!("'{s}': the chunk count '{count}' is not a whole number"),
    })?;
    Ok((size, count))
}

/// Parses an octal mode such as `0660`, `660` or `0o660`.
pub fn parse_mode(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let digits = t.strip_prefix("0o").unwrap_or(t);
    u32::from_str_radix(digits, 8)
        .map_err(|_| format!("'{s}' is not an octal mode; write e.g. 0600 or 0660"))
}

/// Parses a duration: a number (decimals allowed) with a unit of `ns`,
/// `us`, `ms`, `s`, `m` or `h`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number.parse().map_err(|_| {
        format!("'{s}' is not a duration; write e.g. 500ms, 2s or 1m (a bare number is seconds)")
    })?;
    let seconds_per_unit = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "ns" => 1e-9,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "'{s}' has an unknown unit '{other}'; use ms, s, m or h"
            ))
        }
    };
    Duration::try_from_secs_f64(value * seconds_per_unit)
        .map_err(|_| format!("'{s}' is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64"), Ok(64));
        assert_eq!(parse_size("1K"), Ok(1024));
        assert_eq!(parse_size("1k"), Ok(1024));
        assert_eq!(parse_size("16KiB"), Ok(16 << 10));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("100B"), Ok(100));
        assert_eq!(parse_size("1_000"), Ok(1000));
        assert!(parse_size("1KB").unwrap_err().contains("1K or 1KiB"));
        assert!(parse_size("K").is_err());
        assert!(parse_size("1X").unwrap_err().contains("unknown unit"));
        assert!(parse_size("99999999999999999999").is_err());
    }

    #[test]
    fn classes() {
        assert_eq!(parse_class("1K:256"), Ok((1024, 256)));
        assert!(parse_class("1K").unwrap_err().contains("SIZE:COUNT"));
        assert!(parse_class("1K:x")
            .unwrap_err()
            .contains("not a whole number"));
        assert!(parse_class("64:4294967296")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0660"), Ok(0o660));
        assert_eq!(parse_mode("600"), Ok(0o600));
        assert_eq!(parse_mode("0o666"), Ok(0o666));
        assert!(parse_mode("0999").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert!(parse_duration("2 weeks").is_err());
        assert!(parse_duration("ms").is_err());
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
