//! `shmbox watch NAME [--interval MS] [--count N]`: `info`, refreshed, with
//! per-participant rates from the counters' deltas between refreshes.
//!
//! On a terminal it redraws in place with plain ANSI escapes (cursor home,
//! clear to end of line and of screen). When stdin is a terminal it is put
//! in raw mode (crossterm) to read `q` (or Esc, or Ctrl-C) without Enter;
//! a guard restores it on every way out, errors and panics included.
//! SIGINT, SIGTERM and SIGHUP end the loop cleanly too. SIGBUS (someone
//! shrank the region's object, and the view of it lost pages) ends the
//! process with an error, the terminal restored first. When stdout is not a
//! terminal, each refresh is printed as a plain block after a blank line.

use super::info::{state, yes_no, Counters, Snapshot};
use super::inspect_region;
use crate::cli::WatchArgs;
use crate::output::{self, Align, Table};
use crate::Result;
use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// Set by the signal handler.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// The terminal's settings before raw mode (null if stdin is not a
/// terminal), for [`on_bus_error`].
static SAVED_TERMIOS: AtomicPtr<libc::termios> = AtomicPtr::new(std::ptr::null_mut());

/// Someone shrank the region's object: our view of the pages past its new
/// end raises SIGBUS. Restores the terminal, says so and exits, with
/// async-signal-safe calls only (the handler never returns to the access).
extern "C" fn on_bus_error(_: libc::c_int) {
    const SHOW_CURSOR: &[u8] = b"\x1b[?25h\r\n";
    const MESSAGE: &[u8] =
        b"error: the region's object was shrunk while being watched (someone truncated it)\r\n";
    let saved = SAVED_TERMIOS.load(Ordering::Acquire);
    // SAFETY: `tcsetattr`, `write` and `_exit` are async-signal-safe;
    // `saved` is null or points to a leaked termios written before the
    // handler was installed.
    unsafe {
        if !saved.is_null() {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, saved);
        }
        if CURSOR_HIDDEN.load(Ordering::Relaxed) {
            libc::write(
                libc::STDOUT_FILENO,
                SHOW_CURSOR.as_ptr().cast(),
                SHOW_CURSOR.len(),
            );
        }
        libc::write(libc::STDERR_FILENO, MESSAGE.as_ptr().cast(), MESSAGE.len());
        libc::_exit(1);
    }
}

fn catch_signals() {
    let handler: extern "C" fn(libc::c_int) = on_signal;
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe.
        unsafe {
            libc::signal(sig, handler as libc::sighandler_t);
        }
    }
    let mut termios = std::mem::MaybeUninit::<libc::termios>::uninit();
    // SAFETY: `tcgetattr` fills `termios` when it returns 0.
    if unsafe { libc::tcgetattr(libc::STDIN_FILENO, termios.as_mut_ptr()) } == 0 {
        // SAFETY: initialised by the successful call above.
        let termios = Box::new(unsafe { termios.assume_init() });
        SAVED_TERMIOS.store(Box::into_raw(termios), Ordering::Release);
    }
    let handler: extern "C" fn(libc::c_int) = on_bus_error;
    // SAFETY: the handler makes only async-signal-safe calls (see there).
    unsafe {
        libc::signal(libc::SIGBUS, handler as libc::sighandler_t);
    }
}

/// Raw mode for as long as it lives; restores the terminal when dropped
/// (also on an error return or a panic).
struct RawMode;

impl RawMode {
    fn enable() -> Option<RawMode> {
        crossterm::terminal::enable_raw_mode()
            .ok()
            .map(|()| RawMode)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

/// Hides the cursor while it lives.
struct HiddenCursor;

/// Whether a [`HiddenCursor`] lives (for [`on_bus_error`]).
static CURSOR_HIDDEN: AtomicBool = AtomicBool::new(false);

impl HiddenCursor {
    fn new() -> HiddenCursor {
        CURSOR_HIDDEN.store(true, Ordering::Relaxed);
        HiddenCursor
    }
}

impl Drop for HiddenCursor {
    fn drop(&mut self) {
        CURSOR_HIDDEN.store(false, Ordering::Relaxed);
        let mut out = std::io::stdout();
        let _ = out.write_all(b"\x1b[?25h");
        let _ = out.flush();
    }
}

/// What the previous refresh saw of one participant.
struct Before {
    at: Instant,
    counters: Counters,
}

/// Messages and bytes per second, sent and received.
#[derive(Clone, Copy)]
struct Rates {
    tx: f64,
    rx: f64,
    tx_bytes: f64,
    rx_bytes: f64,
}

pub fn run(args: WatchArgs) -> Result {
    let region = inspect_region(&args.name)?;
    catch_signals();
    let tty_out = std::io::stdout().is_terminal();
    let raw = if std::io::stdin().is_terminal() {
        RawMode::enable()
    } else {
        None
    };
    let _cursor = tty_out.then(HiddenCursor::new);
    let interval = Duration::from_millis(args.interval);
    let mut before: HashMap<(u32, u32), Before> = HashMap::new();
    let mut frames = 0u64;
    let mut out = std::io::stdout();
    if tty_out {
        out.write_all(b"\x1b[?25l\x1b[H\x1b[2J")?;
    }
    loop {
        let now = Instant::now();
        let snapshot = Snapshot::take(&args.name, &region);
        let rates: HashMap<(u32, u32), Rates> = rates(&snapshot, &before, now);
        before = snapshot
            .participants
            .iter()
            .map(|p| {
                (
                    (p.slot, p.generation),
                    Before {
                        at: now,
                        counters: p.counters,
                    },
                )
            })
            .collect();
        let removed = region.is_stale();
        let text = render(&snapshot, &rates, &args, raw.is_some(), removed);
        if tty_out {
            // A terminal that reports no size (0 x 0) is taken as unbounded.
            let (width, height) = crossterm::terminal::size()
                .ok()
                .filter(|&(w, h)| w > 0 && h > 0)
                .unwrap_or((u16::MAX, u16::MAX));
            out.write_all(&redraw(&text, width.into(), height.into()))?;
        } else {
            if frames > 0 {
                out.write_all(b"\n")?;
            }
            out.write_all(text.as_bytes())?;
        }
        out.flush()?;
        frames += 1;
        if args.count.is_some_and(|n| frames >= n) {
            break;
        }
        if wait(now + interval, raw.is_some())? == Next::Quit {
            break;
        }
    }
    drop(raw);
    if tty_out {
        // Leave the last frame on screen and the prompt below it.
        out.write_all(b"\n")?;
        out.flush()?;
    }
    Ok(())
}

#[derive(PartialEq, Eq)]
enum Next {
    Refresh,
    Quit,
}

/// Waits until `deadline`, watching for `q`, Esc or Ctrl-C (when `keys`)
/// and for a signal; a terminal resize refreshes at once.
fn wait(deadline: Instant, keys: bool) -> Result<Next> {
    loop {
        if STOP.load(Ordering::Relaxed) {
            return Ok(Next::Quit);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Next::Refresh);
        }
        let slice = left.min(Duration::from_millis(50));
        if !keys {
            std::thread::sleep(slice);
            continue;
        }
        // A terminal that cannot be read (closed, hung up) ends the watch.
        let Ok(ready) = event::poll(slice) else {
            return Ok(Next::Quit);
        };
        if !ready {
            continue;
        }
        match event::read() {
            Ok(Event::Key(k)) if k.kind != KeyEventKind::Release => {
                let ctrl_c =
                    k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c');
                if ctrl_c || matches!(k.code, KeyCode::Char('q' | 'Q') | KeyCode::Esc) {
                    return Ok(Next::Quit);
                }
            }
            Ok(Event::Resize(..)) => return Ok(Next::Refresh),
            Ok(_) => {}
            Err(_) => return Ok(Next::Quit),
        }
    }
}

fn rates(
    snapshot: &Snapshot,
    before: &HashMap<(u32, u32), Before>,
    now: Instant,
) -> HashMap<(u32, u32), Rates> {
    snapshot
        .participants
        .iter()
        .filter_map(|p| {
            let b = before.get(&(p.slot, p.generation))?;
            let secs = now.duration_since(b.at).as_secs_f64();
            if secs <= 0.0 {
                return None;
            }
            let per_sec = |new: u64, old: u64| new.saturating_sub(old) as f64 / secs;
            let (c, o) = (&p.counters, &b.counters);
            Some((
                (p.slot, p.generation),
                Rates {
                    tx: per_sec(c.sent, o.sent),
                    rx: per_sec(c.received, o.received),
                    tx_bytes: per_sec(c.bytes_sent, o.bytes_sent),
                    rx_bytes: per_sec(c.bytes_received, o.bytes_received),
                },
            ))
        })
        .collect()
}

/// One frame, lines ending in `\n`.
fn render(
    s: &Snapshot,
    rates: &HashMap<(u32, u32), Rates>,
    args: &WatchArgs,
    keys: bool,
    removed: bool,
) -> String {
    let mut out = String::new();
    output::line(
        &mut out,
        format_args!(
            "shmbox watch '{}'  every {}  {} UTC  ({} to quit)",
            s.name,
            output::duration_fine(Duration::from_millis(args.interval)),
            output::time_of_day(SystemTime::now()),
            if keys { "q" } else { "Ctrl-C" }
        ),
    );
    let sum = &s.summary;
    output::line(
        &mut out,
        format_args!(
            "size {}  participants {} live, {} dead  pool {}{}  created {}",
            output::bytes(s.header.size),
            sum.live,
            sum.dead,
            output::fraction(sum.chunks_used, sum.chunks_total),
            if sum.chunks_held_by_dead > 0 {
                format!(" ({} held by the dead)", sum.chunks_held_by_dead)
            } else {
                String::new()
            },
            output::ago(s.created()),
        ),
    );
    if removed {
        out.push_str("REMOVED: the region's name is gone from /dev/shm, or now names another region; showing this one's memory as attached processes still see it\n");
    }
    out.push('\n');
    if s.participants.is_empty() {
        out.push_str("participants: none\n");
    } else {
        out.push_str("participants\n");
        let mut t = Table::new(&[
            ("NAME", Align::Left),
            ("STATE", Align::Left),
            ("MAILBOX", Align::Right),
            ("WAIT", Align::Left),
            ("PARKED", Align::Left),
            ("HOLD", Align::Right),
            ("TX/S", Align::Right),
            ("RX/S", Align::Right),
            ("TX BYTES/S", Align::Right),
            ("RX BYTES/S", Align::Right),
            ("SENT", Align::Right),
            ("RECEIVED", Align::Right),
            ("FULL", Align::Right),
            ("TIMEOUTS", Align::Right),
        ])
        .indent(2);
        for p in &s.participants {
            let r = rates.get(&(p.slot, p.generation));
            let show = |f: fn(&Rates) -> String| r.map_or_else(|| "-".to_string(), f);
            t.row(vec![
                p.name.clone(),
                state(p.alive).into(),
                format!("{}/{}", p.queued, p.capacity),
                p.strategy.into(),
                yes_no(p.parked).into(),
                p.holding.to_string(),
                show(|r| output::rate(r.tx)),
                show(|r| output::rate(r.rx)),
                show(|r| output::byte_rate(r.tx_bytes)),
                show(|r| output::byte_rate(r.rx_bytes)),
                p.counters.sent.to_string(),
                p.counters.received.to_string(),
                p.counters.full.to_string(),
                p.counters.timeouts.to_string(),
            ]);
        }
        out.push_str(&t.render());
        out.push_str(
            "  (TX/S, RX/S: messages sent and received per second since the last refresh)\n",
        );
    }
    out.push_str("\npool\n");
    out.push_str(&s.render_pool());
    out
}

/// `text` as a redraw in place: cursor home, each line cut to the
/// terminal's width and cleared to its end, at most `height - 1` lines (so
/// the screen never scrolls), then the rest of the screen cleared. Raw
/// mode turns off the newline translation, hence `\r\n`.
fn redraw(text: &str, width: usize, height: usize) -> Vec<u8> {
    let mut frame = String::from("\x1b[H");
    for line in text.lines().take(height.saturating_sub(1).max(1)) {
        frame.extend(line.chars().take(width));
        frame.push_str("\x1b[K\r\n");
    }
    frame.push_str("\x1b[J");
    frame.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::redraw;

    #[test]
    fn redraw_cuts_to_the_screen() {
        let frame = String::from_utf8(redraw("abcdef\nxy\nlast\n", 4, 3)).unwrap();
        assert_eq!(frame, "\x1b[Habcd\x1b[K\r\nxy\x1b[K\r\n\x1b[J");
    }
}
