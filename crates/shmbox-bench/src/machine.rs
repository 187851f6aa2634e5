//! What machine the numbers come from, and whether it was idle.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The machine a report was made on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// CPU model from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// Online CPUs.
    pub cpus: usize,
    /// Kernel release (`uname -r`).
    pub kernel: String,
}

impl Machine {
    /// Describes this machine.
    pub fn describe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let field = |key: &str| {
            cpuinfo.lines().find_map(|line| {
                let (k, v) = line.split_once(':')?;
                (k.trim() == key).then(|| v.trim().to_string())
            })
        };
        let cpu_model = field("model name")
            .or_else(|| field("Model"))
            .unwrap_or_else(|| "unknown CPU".into());
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let kernel = rustix::system::uname()
            .release()
            .to_string_lossy()
            .into_owned();
        Machine {
            cpu_model,
            cpus,
            kernel,
        }
    }
}

/// Load above this share of all CPUs (while the harness sleeps) makes the
/// report carry a warning.
pub const BUSY_THRESHOLD: f64 = 0.20;

/// The idle check made before measuring, and the load seen during the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdleCheck {
    /// Share of all CPUs' time spent busy (not idle, not waiting for I/O)
    /// while the harness slept before measuring, 0 to 1; `None` if
    /// `/proc/stat` could not be read.
    pub busy: Option<f64>,
    /// How long it sampled, in milliseconds.
    pub window_ms: u64,
    /// Share of all CPUs' time that other processes were busy during the
    /// run (busy time less the CPU time of the harness and its peers; time
    /// the kernel spent on interrupts for our sockets counts as other).
    pub during_run: Option<f64>,
    /// Warnings printed with the report: the machine was busy before or
    /// during the run.
    pub warnings: Vec<String>,
}

fn busy_warning(when: &str, share: f64) -> String {
    format!(
        "WARNING: other work kept {:.0}% of all CPUs busy {when} (threshold {:.0}%); \
         numbers may be distorted several-fold",
        share * 100.0,
        BUSY_THRESHOLD * 100.0
    )
}

/// Samples `/proc/stat` over `window` while this process sleeps: any busy
/// time in between is other load.
pub fn idle_check(window: Duration) -> IdleCheck {
    let before = cpu_times();
    std::thread::sleep(window);
    let after = cpu_times();
    let busy = match (before, after) {
        (Some((busy0, total0)), Some((busy1, total1))) if total1 > total0 => {
            Some(busy1.saturating_sub(busy0) as f64 / (total1 - total0) as f64)
        }
        _ => None,
    };
    let warnings = busy
        .filter(|&b| b > BUSY_THRESHOLD)
        .map(|b| busy_warning("before the run", b))
        .into_iter()
        .collect();
    IdleCheck {
        busy,
        window_ms: window.as_millis() as u64,
        during_run: None,
        warnings,
    }
}

/// Measures how busy other processes keep the machine while we run.
pub(crate) struct LoadProbe {
    machine: (u64, u64),
    own: u64,
}

impl LoadProbe {
    /// Starts measuring.
    pub(crate) fn start() -> Option<LoadProbe> {
        Some(LoadProbe {
            machine: cpu_times()?,
            own: own_ticks()?,
        })
    }

    /// Records the share of all CPUs other processes kept busy since
    /// [`start`](Self::start) in `idle` (all our peers must have been
    /// reaped by now: their time counts as ours only then).
    pub(crate) fn finish(&self, idle: &mut IdleCheck) {
        let (Some((busy, total)), Some(own)) = (cpu_times(), own_ticks()) else {
            return;
        };
        let (busy0, total0) = self.machine;
        if total <= total0 {
            return;
        }
        let other = busy
            .saturating_sub(busy0)
            .saturating_sub(own.saturating_sub(self.own));
        let share = other as f64 / (total - total0) as f64;
        idle.during_run = Some(share);
        if share > BUSY_THRESHOLD {
            idle.warnings.push(busy_warning("during the run", share));
        }
    }
}

/// CPU time (user + system) of this process and its reaped children, in
/// clock ticks, from `/proc/self/stat`.
fn own_ticks() -> Option<u64> {
    parse_own_ticks(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

fn parse_own_ticks(stat: &str) -> Option<u64> {
    // Fields after the command name in parentheses: state is the first,
    // utime, stime, cutime and cstime the 12th to 15th.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields
        .get(11..15)?
        .iter()
        .map(|f| f.parse::<u64>().ok())
        .sum()
}

/// (busy, total) jiffies summed over all CPUs, from the `cpu` line of
/// `/proc/stat`. Busy is everything but idle and iowait (steal counts as
/// busy: another guest has the CPU).
fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_cpu_line(stat.lines().find(|l| l.starts_with("cpu "))?)
}

fn parse_cpu_line(line: &str) -> Option<(u64, u64)> {
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]:
    // guest time is already counted in user.
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat() {
        let line = "cpu  100 5 50 800 20 3 2 10 7 0";
        assert_eq!(parse_cpu_line(line), Some((170, 990)));
        assert_eq!(parse_cpu_line("cpu x"), None);
    }

    #[test]
    fn parses_own_stat() {
        let stat = "123 (a (b) c) R 1 2 3 4 5 6 7 8 9 10 100 20 3 4 20 0";
        assert_eq!(parse_own_ticks(stat), Some(127));
        assert!(own_ticks().is_some());
    }

    #[test]
    fn describes_this_machine() {
        let m = Machine::describe();
        // What the kernel says, not the fallbacks.
        let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
        let last: usize = online
            .trim()
            .rsplit(['-', ','])
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            m.cpus >= 1 && m.cpus <= last + 1,
            "{m:?} vs online {online}"
        );
        // x86 kernels always name the model; many ARM ones do not.
        #[cfg(target_arch = "x86_64")]
        assert_ne!(m.cpu_model, "unknown CPU", "/proc/cpuinfo names no model");
        assert!(m.kernel.starts_with(|c: char| c.is_ascii_digit()), "{m:?}");
    }
}
