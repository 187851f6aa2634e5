//! Human output (aligned tables, byte sizes, times) and JSON helpers.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Version of every `--json` document, in its `"schema"` field. Bumped only
/// for incompatible changes (see SCHEMA.md).
pub const SCHEMA: u32 = 1;

/// Column alignment.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A plain-text table: a header row and rows of cells, columns separated by
/// two spaces, no trailing blanks.
pub struct Table {
    headers: Vec<&'static str>,
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
    indent: usize,
}

impl Table {
    /// A table with these `(header, alignment)` columns.
    pub fn new(columns: &[(&'static str, Align)]) -> Table {
        Table {
            headers: columns.iter().map(|c| c.0).collect(),
            align: columns.iter().map(|c| c.1).collect(),
            rows: Vec::new(),
            indent: 0,
        }
    }

    /// Indents every line by `n` spaces.
    pub fn indent(mut self, n: usize) -> Table {
        self.indent = n;
        self
    }

    /// Adds a row; missing cells are blank, a last cell may overflow.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as lines ending in `\n`.
    pub fn render(&self) -> String {
        let n = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            // The last column is not padded, so it does not widen the rest.
            for (i, cell) in row.iter().enumerate().take(n) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let headers: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&headers).chain(&self.rows) {
            let mut line = " ".repeat(self.indent);
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let width = widths.get(i).copied().unwrap_or(0);
                let pad = width.saturating_sub(cell.chars().count());
                let last = i + 1 == row.len();
                match self.align.get(i).copied().unwrap_or(Align::Left) {
                    Align::Right => {
                        line.push_str(&" ".repeat(pad));
                        line.push_str(cell);
                    }
                    Align::Left => {
                        line.push_str(cell);
                        if !last {
                            line.push_str(&" ".repeat(pad));
                        }
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A byte count for people: `512 B`, `1.5 KiB`, `22.1 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value >= 100.0 || value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A chunk size, exact: `64 B`, `16 KiB`, `1 MiB`, `1000 B`.
pub fn exact_bytes(n: u64) -> String {
    for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if n >= 1 << shift && n.is_multiple_of(1 << shift) {
            return format!("{} {unit}", n >> shift);
        }
    }
    format!("{n} B")
}

/// A size as `create --class` accepts it: `64`, `16K`, `1M`.
pub fn size_arg(n: u64) -> String {
    for (shift, unit) in [(30, "G"), (20, "M"), (10, "K")] {
        if n >= 1 << shift && n.is_multiple_of(1 << shift) {
            return format!("{}{unit}", n >> shift);
        }
    }
    n.to_string()
}

/// A rate per second for people: `0`, `12.5`, `3.4k`, `1.2M`.
pub fn rate(per_second: f64) -> String {
    if per_second < 0.05 {
        "0".into()
    } else if per_second < 1000.0 {
        format!("{per_second:.1}")
    } else if per_second < 1e6 {
        format!("{:.1}k", per_second / 1e3)
    } else if per_second < 1e9 {
        format!("{:.1}M", per_second / 1e6)
    } else {
        format!("{:.1}G", per_second / 1e9)
    }
}

/// A byte rate for people: `0 B/s`, `1.5 KiB/s`.
pub fn byte_rate(per_second: f64) -> String {
    format!("{}/s", bytes(per_second.max(0.0).round() as u64))
}

/// A permission mode as four octal digits.
pub fn mode(mode: u32) -> String {
    format!("{mode:04o}")
}

/// Milliseconds since the Unix epoch (0 for earlier times).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().try_into().unwrap_or(u64::MAX))
}

/// Civil date (year, month, day) of a day count since 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The last second RFC 3339 can write (9999-12-31T23:59:59Z): a later
/// time (a scribbled creation time) reads as this one.
const LAST_SECOND: u64 = 253_402_300_799;

fn utc_parts(t: SystemTime) -> (i64, u32, u32, u64, u64, u64) {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .min(LAST_SECOND);
    let (y, mo, d) = civil((secs / 86_400) as i64);
    let s = secs % 86_400;
    (y, mo, d, s / 3600, s / 60 % 60, s % 60)
}

/// RFC 3339 in UTC, to the second: `2025-06-01T12:00:00Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s) = utc_parts(t);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// For people, in UTC: `2025-06-01 12:00:00 UTC`.
pub fn datetime(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s) = utc_parts(t);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC")
}

/// Time of day in UTC: `12:00:00`.
pub fn time_of_day(t: SystemTime) -> String {
    let (_, _, _, h, mi, s) = utc_parts(t);
    format!("{h:02}:{mi:02}:{s:02}")
}

/// A duration for people, coarsely: `45s`, `3m12s`, `2h5m`, `3d4h`.
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s / 60 % 60),
        _ => format!("{}d{}h", s / 86_400, s / 3600 % 24),
    }
}

/// A duration as the options take it: `500ms`, `2s`, `1.5s`.
pub fn duration_fine(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        if d.subsec_nanos().is_multiple_of(1_000_000) {
            format!("{}ms", d.as_millis())
        } else {
            format!("{}us", d.as_micros())
        }
    } else if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        let s = format!("{:.3}", d.as_secs_f64());
        format!("{}s", s.trim_end_matches('0'))
    }
}

/// How long ago `t` was: `3m12s ago` (or `just now`).
pub fn ago(t: SystemTime) -> String {
    match SystemTime::now().duration_since(t) {
        Ok(d) if d.as_secs() > 0 => format!("{} ago", duration(d)),
        Ok(_) => "just now".into(),
        Err(_) => "in the future".into(),
    }
}

/// A wait strategy's name, as in the JSON schema.
pub fn strategy(s: shmbox::WaitStrategy) -> &'static str {
    match s {
        shmbox::WaitStrategy::Spin => "spin",
        shmbox::WaitStrategy::Park => "park",
        shmbox::WaitStrategy::Adaptive => "adaptive",
    }
}

/// `used/total (p%)`.
pub fn fraction(used: u64, total: u64) -> String {
    let pct = if total == 0 {
        0.0
    } else {
        used as f64 * 100.0 / total as f64
    };
    let pct = if pct > 0.0 && pct < 0.1 {
        "<0.1".to_string()
    } else {
        format!("{pct:.1}")
    };
    format!("{used}/{total} ({pct}%)")
}

/// Writes `text` to stdout.
pub fn print(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// Writes `value` to stdout as pretty JSON followed by a newline.
pub fn print_json<T: serde::Serialize>(value: &T) -> std::io::Result<()> {
    let mut text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    text.push('\n');
    print(&text)
}

/// Appends a formatted line to `out`.
pub fn line(out: &mut String, args: std::fmt::Arguments<'_>) {
    let _ = out.write_fmt(args);
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns() {
        let mut t = Table::new(&[
            ("NAME", Align::Left),
            ("N", Align::Right),
            ("NOTE", Align::Left),
        ]);
        t.row(vec!["a".into(), "10".into(), "x".into()]);
        t.row(vec!["long-name".into(), "2".into(), String::new()]);
        assert_eq!(
            t.render(),
            "NAME        N  NOTE\na          10  x\nlong-name   2\n"
        );
    }

    #[test]
    fn byte_formats() {
        assert_eq!(bytes(64), "64 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(1 << 20), "1 MiB");
        assert_eq!(bytes(23_183_360), "22.1 MiB");
        assert_eq!(exact_bytes(16 << 10), "16 KiB");
        assert_eq!(exact_bytes(1000), "1000 B");
        assert_eq!(size_arg(256 << 10), "256K");
        assert_eq!(size_arg(100), "100");
    }

    #[test]
    fn times() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20Z");
        assert_eq!(datetime(UNIX_EPOCH), "1970-01-01 00:00:00 UTC");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00Z");
        // A scribbled creation time stays valid RFC 3339.
        let scribbled = UNIX_EPOCH + Duration::from_millis(u64::MAX);
        assert_eq!(rfc3339(scribbled), "9999-12-31T23:59:59Z");
        assert_eq!(duration(Duration::from_secs(192)), "3m12s");
        assert_eq!(duration(Duration::from_secs(7500)), "2h05m");
        assert_eq!(duration_fine(Duration::from_millis(500)), "500ms");
        assert_eq!(duration_fine(Duration::from_secs(2)), "2s");
        assert_eq!(duration_fine(Duration::from_millis(1500)), "1.5s");
    }

    #[test]
    fn fractions_and_rates() {
        assert_eq!(fraction(0, 10), "0/10 (0.0%)");
        assert_eq!(fraction(1, 5416), "1/5416 (<0.1%)");
        assert_eq!(rate(0.0), "0");
        assert_eq!(rate(12.34), "12.3");
        assert_eq!(rate(3400.0), "3.4k");
        assert_eq!(byte_rate(1536.0), "1.5 KiB/s");
    }
}
