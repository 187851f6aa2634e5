//! Isolation and recovery across process boundaries: everyone killed with
//! SIGKILL, a participant in another PID namespace (whose pid collides with
//! real ones), a `/dev/shm` too small for the region (in a private mount
//! namespace), and a region of another user.
//!
//! Every test uses region names unique to the run, removed on drop, and
//! bounds every wait: on timeout its children are killed and it fails. The
//! tests that need root, `unshare` or `mount` print a line with `SKIPPED`
//! to stderr and return when the capability is missing.

use shmbox::{Config, Region, SizeClass, SweepReport};
use shmbox_itest::{assert_nothing_left, assert_pool_full, TestRegion};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PROBE: &str = env!("CARGO_BIN_EXE_shmbox-probe");

/// How long any single step may take before the watchdog fires.
const STEP: Duration = Duration::from_secs(30);

struct Proc {
    label: String,
    child: Child,
    /// Kept open so `hold`/`linger` probes wait; closing it releases them.
    _stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// What it wrote to stderr, shown when it fails.
    stderr: Arc<Mutex<String>>,
}

impl Proc {
    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().trim().to_string()
    }
}

/// Spawned processes, killed and reaped on drop so a failing test leaves
/// nothing running.
#[derive(Default)]
struct Children(Vec<Proc>);

impl Children {
    /// Spawns `cmd` with piped stdin, stdout and stderr; returns its index.
    fn spawn(&mut self, label: &str, mut cmd: Command) -> std::io::Result<usize> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut err_pipe = child.stderr.take().expect("piped stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = err_pipe.read(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]);
                sink.lock().unwrap().push_str(&text);
            }
        });
        self.0.push(Proc {
            label: label.to_string(),
            _stdin: child.stdin.take(),
            child,
            lines,
            stderr,
        });
        Ok(self.0.len() - 1)
    }

    fn spawn_probe(&mut self, label: &str, args: &[&str]) -> usize {
        let mut cmd = Command::new(PROBE);
        cmd.args(args);
        self.spawn(label, cmd).expect("spawn shmbox-probe")
    }

    /// The next line child `i` prints; the watchdog fires after `limit`.
    fn line(&mut self, i: usize, limit: Duration) -> String {
        let p = &self.0[i];
        match p.lines.recv_timeout(limit) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => panic!(
                "watchdog: no line from {} within {limit:?}; killed. stderr: {}",
                p.label,
                p.stderr()
            ),
            Err(RecvTimeoutError::Disconnected) => {
                let _ = p.lines.recv_timeout(Duration::from_millis(200));
                panic!(
                    "{} exited without printing a line. stderr: {}",
                    p.label,
                    p.stderr()
                )
            }
        }
    }

    /// Waits for child `i` to exit (the watchdog kills it and fails after
    /// `limit`); returns its status and the lines it printed.
    fn finish(&mut self, i: usize, limit: Duration) -> (ExitStatus, Vec<String>) {
        let deadline = Instant::now() + limit;
        let p = &mut self.0[i];
        let status = loop {
            if let Some(status) = p.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                panic!(
                    "watchdog: {} still running after {limit:?}; killed. stderr: {}",
                    p.label,
                    p.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let mut lines = Vec::new();
        while let Ok(line) = p.lines.recv_timeout(Duration::from_secs(5)) {
            lines.push(line);
        }
        (status, lines)
    }

    /// Waits for child `i` and checks it printed an `ok` line and succeeded.
    fn expect_ok(&mut self, i: usize, limit: Duration) -> String {
        let (status, lines) = self.finish(i, limit);
        let p = &self.0[i];
        let last = lines.last().cloned().unwrap_or_default();
        assert!(
            status.success() && last.starts_with("ok"),
            "{} failed ({status}): {lines:?}; stderr: {}",
            p.label,
            p.stderr()
        );
        last
    }

    /// SIGKILLs child `i` and reaps it.
    fn kill(&mut self, i: usize) {
        let p = &mut self.0[i];
        p.child.kill().expect("kill");
        p.child.wait().expect("wait");
    }

    fn pid(&self, i: usize) -> u32 {
        self.0[i].child.id()
    }

    fn stderr(&self, i: usize) -> String {
        self.0[i].stderr()
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for p in &mut self.0 {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn skipped(test: &str, why: &str) {
    eprintln!("{test}: SKIPPED: {why}");
}

/// Runs `unshare ARGS true`; `Err` holds why it cannot be used here.
fn unshare_works(args: &[&str]) -> Result<(), String> {
    let out = Command::new("unshare")
        .args(args)
        .arg("true")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run unshare: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`unshare {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn chunks_in_use(region: &Region) -> u32 {
    region.pool_usage().iter().map(|c| c.count - c.free).sum()
}

fn small_config() -> Config {
    Config::default()
        .with_classes(&[SizeClass::new(64, 64), SizeClass::new(1024, 16)])
        .with_max_participants(8)
        .with_mailbox_capacity(16)
}

/// A participant SIGKILLed while asleep in a receive, keeping its share of
/// free chunks: a loop of `try_loan`s gets them back (a refused one sweeps
/// the dead now and then, as a waiting loan does), and nothing is left.
#[test]
fn a_sleeper_killed_while_keeping_chunks_gives_them_back() {
    let name = TestRegion::new("iso", "sleepkill");
    // 64 chunks of 64 bytes, 8 participants: asleep, a participant keeps
    // min(16, 64 / (2 × 8)) = 4 of them.
    let region = Region::create(&name.0, &small_config()).unwrap();
    let mut kids = Children::default();
    let i = kids.spawn_probe("sleeper", &["sleep-keeping", &name.0, "sleeper"]);
    let line = kids.line(i, STEP);
    assert!(line.starts_with("ready "), "{line}");
    let deadline = Instant::now() + STEP;
    while !region
        .participants()
        .iter()
        .any(|p| p.name == "sleeper" && p.parked && p.holding == 4)
    {
        assert!(
            Instant::now() < deadline,
            "watchdog: the sleeper never slept keeping 4 chunks: {:?}",
            region.participants()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Joined before the kill, so that its join's own sweep finds nobody
    // dead: the first refused `try_loan` must do it.
    let me = region.join("me").unwrap();
    kids.kill(i);
    let mut loans = Vec::new();
    while let Ok(loan) = me.try_loan(8) {
        loans.push(loan);
    }
    assert_eq!(
        loans.len(),
        64 - 4,
        "the dead sleeper's chunks are not free"
    );
    // A loop of `try_loan`s alone, which never waits, gets them back.
    let deadline = Instant::now() + STEP;
    while loans.len() < 64 {
        match me.try_loan(8) {
            Ok(loan) => loans.push(loan),
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "watchdog: a try_loan loop never got the dead sleeper's chunks: {e}"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    drop(loans);
    drop(me);
    assert_nothing_left(&region);
}

/// A participant SIGKILLed while waiting in a loan stays registered as a
/// waiting loaner until a sweep, and meanwhile every release of its class
/// goes to the shared pool and wakes it. An idle receive that sees loaners
/// waiting sweeps the dead (at most every 100 ms): then a release is kept
/// again, for the releaser's next loan.
#[test]
fn a_loaner_killed_while_waiting_is_swept_by_an_idle_receiver() {
    let name = TestRegion::new("iso", "loankill");
    let region = Region::create(&name.0, &small_config()).unwrap();
    let me = region.join("me").unwrap();
    let mut loans = Vec::new();
    while let Ok(loan) = me.try_loan(8) {
        loans.push(loan);
    }
    let mut kids = Children::default();
    let i = kids.spawn_probe("loaner", &["loan-waiting", &name.0, "loaner", "8"]);
    let line = kids.line(i, STEP);
    assert!(line.starts_with("ready "), "{line}");
    // Registered within microseconds of the line; give it plenty.
    std::thread::sleep(Duration::from_millis(300));
    kids.kill(i);
    let holding = |region: &Region| {
        region
            .participants()
            .iter()
            .find(|p| p.name == "me")
            .map_or(0, |p| p.holding)
    };
    let deadline = Instant::now() + STEP;
    loop {
        // Idle receives, then one release: kept once nobody waits.
        for _ in 0..64 {
            assert!(me.try_recv().is_err());
        }
        // (A kept chunk still counts as held: `holding` stays.)
        let before = holding(&region);
        drop(loans.pop());
        if holding(&region) < before {
            // Went to the pool: still registered. Take it back, try later.
            loans.push(me.try_loan(8).expect("the chunk just released"));
            assert!(
                Instant::now() < deadline,
                "watchdog: the dead loaner is still registered: {:?}",
                region.participants()
            );
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        break;
    }
    drop(loans);
    drop(me);
    assert_nothing_left(&region);
}

/// Three participants holding loans, queued messages and a received
/// message are all SIGKILLed; the region is then reopened and reused with
/// no manual cleanup.
#[test]
fn restart_after_kill_9_of_everyone() {
    let name = TestRegion::new("iso", "kill9");
    let config = small_config();
    let region = Region::create(&name.0, &config).unwrap();
    let names = ["a", "b", "c"];
    let mut kids = Children::default();
    let idx: Vec<usize> = names
        .iter()
        .map(|&me| {
            let mut args = vec!["hold", &name.0, me];
            args.extend(names.iter().filter(|&&n| n != me));
            kids.spawn_probe(me, &args)
        })
        .collect();
    for &i in &idx {
        let line = kids.line(i, STEP);
        assert!(line.starts_with("ready "), "{line}");
    }
    // Each holds 2 loans and 1 received message, and has 5 of the 6
    // messages sent to it still queued.
    let mut seen: Vec<(String, u64)> = region
        .participants()
        .into_iter()
        .map(|p| (p.name, p.queued))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [("a".into(), 5), ("b".into(), 5), ("c".into(), 5)],
        "before the kill"
    );
    assert_eq!(chunks_in_use(&region), 3 * (2 + 6));
    // Nobody stays attached: the creator goes away too.
    drop(region);
    for &i in &idx {
        kids.kill(i);
    }

    let region = Region::open_or_create(&name.0, &config).expect("reopen after kill -9");
    assert!(!region.created(), "the region left behind is reused");
    assert_eq!(region.config(), &config);
    // The dead are still in the table, marked dead, until someone sweeps.
    let listed = region.participants();
    assert_eq!(listed.len(), 3);
    assert!(listed.iter().all(|p| !p.alive), "{listed:?}");
    let in_use = chunks_in_use(&region);
    assert_eq!(in_use, 24);
    let report = region.sweep();
    eprintln!("restart_after_kill_9_of_everyone: first sweep {report:?}");
    assert_eq!(report.participants, 3, "{report:?}");
    assert_eq!(report.messages, 3 * 5, "{report:?}");
    // Every chunk the dead held or had queued for them went back.
    assert_eq!(report.chunks, in_use, "{report:?}");
    assert_nothing_left(&region);

    // The same names can join again, and there is nothing left to sweep.
    let mailboxes: Vec<_> = names
        .iter()
        .map(|n| region.join(n).unwrap_or_else(|e| panic!("rejoin {n}: {e}")))
        .collect();
    assert_eq!(region.sweep(), SweepReport::default());
    assert_pool_full(&region);
    assert_eq!(region.participants().len(), 3);
    drop(mailboxes);
    assert!(region.participants().is_empty());

    // Restarted processes work with the region: a -> b -> c -> a.
    let ring: Vec<usize> = (0..3)
        .map(|k| {
            let (me, to) = (names[k], names[(k + 1) % 3]);
            kids.spawn_probe(&format!("ring {me}"), &["ring", &name.0, me, to])
        })
        .collect();
    for i in ring {
        let line = kids.expect_ok(i, STEP);
        eprintln!("restart_after_kill_9_of_everyone: {line}");
    }
    assert_nothing_left(&region);
    assert_eq!(region.sweep(), SweepReport::default());
    drop(region);

    // Once more, this time relying on `join`'s own sweep: no explicit
    // `sweep()` before the names are taken again.
    let again: Vec<usize> = names
        .iter()
        .map(|&me| {
            let mut args = vec!["hold", &name.0, me];
            args.extend(names.iter().filter(|&&n| n != me));
            kids.spawn_probe(&format!("{me} again"), &args)
        })
        .collect();
    for &i in &again {
        let line = kids.line(i, STEP);
        assert!(line.starts_with("ready "), "{line}");
    }
    for &i in &again {
        kids.kill(i);
    }
    let region = Region::open_or_create(&name.0, &config).expect("reopen after kill -9");
    assert!(!region.created());
    assert_eq!(chunks_in_use(&region), 24);
    let mailboxes: Vec<_> = names
        .iter()
        .map(|n| region.join(n).unwrap_or_else(|e| panic!("rejoin {n}: {e}")))
        .collect();
    assert_pool_full(&region);
    assert_eq!(region.sweep(), SweepReport::default(), "join swept it all");
    drop(mailboxes);
    assert!(region.participants().is_empty());
}

/// Outer pid of the first child of `pid` (the init of the PID namespace
/// `unshare --fork` created).
fn first_child(pid: u32) -> Option<u32> {
    let listed = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok();
    if let Some(child) = listed
        .as_deref()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
    {
        return Some(child);
    }
    // Without CONFIG_PROC_CHILDREN: scan for a process whose parent is `pid`.
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let child: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        let ppid: u32 = stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        (ppid == pid).then_some(child)
    })
}

/// A participant in its own PID namespace (pid 1 there) talks with one
/// outside, and its death is detected by its lock, not its pid.
#[test]
fn pid_namespace_participant_shares_the_region() {
    const TEST: &str = "pid_namespace_participant_shares_the_region";
    if !is_root() {
        return skipped(TEST, "not root (needs root and unshare)");
    }
    let variants: [&[&str]; 2] = [
        &["--pid", "--fork", "--kill-child", "--mount-proc"],
        &["--pid", "--fork", "--kill-child"],
    ];
    let mut refusals = Vec::new();
    let Some(unshare) = variants.iter().find(|v| match unshare_works(v) {
        Ok(()) => true,
        Err(e) => {
            refusals.push(e);
            false
        }
    }) else {
        return skipped(TEST, &format!("{refusals:?} (needs root and unshare)"));
    };
    let in_namespace = |args: &[&str]| {
        let mut cmd = Command::new("unshare");
        cmd.args(*unshare).arg(PROBE).args(args);
        cmd
    };

    let name = TestRegion::new("iso", "pidns");
    let region = Region::create(&name.0, &small_config()).unwrap();
    let outside = region.join("outside").unwrap();
    let mut kids = Children::default();

    // 1. A message exchange across the namespace boundary.
    let talk = kids
        .spawn(
            "talk",
            in_namespace(&["talk", &name.0, "inside", "outside"]),
        )
        .expect("spawn unshare");
    let hello = outside.recv_timeout(STEP).expect("message from inside");
    let text = String::from_utf8_lossy(&hello).into_owned();
    assert_eq!(
        text, "hello from inside pid=1",
        "the probe is the namespace's init"
    );
    outside
        .send_copy(b"hello back", &hello.sender())
        .expect("reply");
    drop(hello);
    let line = kids.expect_ok(talk, STEP);
    assert_eq!(line, "ok pid=1 reply='hello back'");
    assert_eq!(region.sweep(), SweepReport::default(), "it left cleanly");

    // 2. Liveness with a colliding pid: the lingering participant's stored
    //    pid (1) names another live process outside its namespace.
    let linger = kids
        .spawn("linger", in_namespace(&["linger", &name.0, "inside"]))
        .expect("spawn unshare");
    assert_eq!(kids.line(linger, STEP), "ready pid=1");
    let inside = region
        .participants()
        .into_iter()
        .find(|p| p.name == "inside")
        .expect("the namespaced participant is listed");
    assert_eq!(inside.pid, 1, "{inside:?}");
    let init = first_child(kids.pid(linger)).expect("the namespace's init");
    assert_ne!(
        init, inside.pid,
        "the outer pid differs from the stored one"
    );
    assert!(
        Path::new(&format!("/proc/{}", inside.pid)).exists(),
        "pid {} is a live process out here too",
        inside.pid
    );
    assert_eq!(region.sweep(), SweepReport::default(), "alive: not swept");
    assert_eq!(region.participants().len(), 2);

    // Killing the namespace's init kills everything in it; unshare then
    // exits, after its child is reaped (its files, and locks, are closed).
    // SAFETY: plain syscall on a pid that is our child's child.
    assert_eq!(unsafe { libc::kill(init as libc::pid_t, libc::SIGKILL) }, 0);
    let (status, lines) = kids.finish(linger, STEP);
    // (unshare reports its child's SIGKILL on stderr and exits with 1.)
    assert!(
        !status.success() && lines.is_empty(),
        "linger was killed: {status} {lines:?}; stderr: {}",
        kids.stderr(linger)
    );
    assert!(
        Path::new(&format!("/proc/{}", inside.pid)).exists(),
        "pid {} is still alive out here",
        inside.pid
    );
    let report = region.sweep();
    eprintln!("{TEST}: sweep after the kill {report:?}");
    assert_eq!(report.participants, 1, "{report:?}");
    let left: Vec<_> = region.participants().into_iter().map(|p| p.name).collect();
    assert_eq!(left, ["outside"]);
    drop(outside);
    assert_pool_full(&region);
}

/// In a private mount namespace over an 8 MiB tmpfs, a region that does not
/// fit fails with `NoSpace` and leaves nothing behind; one that fits works.
#[test]
fn region_larger_than_a_small_tmpfs_fails_cleanly() {
    const TEST: &str = "region_larger_than_a_small_tmpfs_fails_cleanly";
    if !is_root() {
        return skipped(TEST, "not root (needs root, unshare and mount)");
    }
    let args = ["--mount", "--propagation", "private"];
    if let Err(why) = unshare_works(&args) {
        return skipped(TEST, &format!("{why} (needs root, unshare and mount)"));
    }
    let outer_ns = std::fs::read_link("/proc/self/ns/mnt").expect("read /proc/self/ns/mnt");
    let name = TestRegion::new("iso", "tmpfs");
    let mut cmd = Command::new("unshare");
    cmd.args(args)
        .arg(PROBE)
        .args(["tmpfs-test", &name.0])
        .arg(&outer_ns);
    let mut kids = Children::default();
    let probe = kids.spawn("tmpfs-test", cmd).expect("spawn unshare");
    let (status, lines) = kids.finish(probe, STEP);
    let last = lines.last().cloned().unwrap_or_default();
    if let Some(why) = last.strip_prefix("SKIP ") {
        return skipped(TEST, &format!("{why} (needs root, unshare and mount)"));
    }
    assert!(
        status.success() && last.starts_with("ok "),
        "tmpfs-test failed ({status}): {lines:?}; stderr: {}",
        kids.stderr(probe)
    );
    eprintln!("{TEST}: {last}");
    assert!(
        !Path::new(&name.shm_path()).exists(),
        "the real /dev/shm was touched"
    );
}

/// nobody's uid and gid from the password database.
fn nobody() -> Option<(u32, u32)> {
    let from_getent = Command::new("getent")
        .args(["passwd", "nobody"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    let entry = from_getent.or_else(|| {
        std::fs::read_to_string("/etc/passwd")
            .ok()?
            .lines()
            .find(|l| l.starts_with("nobody:"))
            .map(str::to_string)
    })?;
    let mut fields = entry.trim().split(':').skip(2);
    Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
}

/// A `0600` region of root cannot be opened by `nobody`; a `0666` one can,
/// but not replaced with another config (only root may remove it); a
/// `0644` one can be inspected (read-only), not opened.
#[test]
fn another_uid_cannot_open_a_private_region() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    const TEST: &str = "another_uid_cannot_open_a_private_region";
    if !is_root() {
        return skipped(TEST, "not root (needs root to run a probe as nobody)");
    }
    let Some((uid, gid)) = nobody() else {
        return skipped(TEST, "no user 'nobody' in the password database");
    };
    let as_nobody = |args: &[&str]| {
        let mut cmd = Command::new(PROBE);
        cmd.args(args).uid(uid).gid(gid).current_dir("/");
        cmd
    };
    let mut kids = Children::default();

    let private = TestRegion::new("iso", "private");
    let region = Region::create(&private.0, &small_config()).unwrap();
    let mode = std::fs::metadata(private.shm_path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let denied = match kids.spawn("open-denied", as_nobody(&["open-denied", &private.0])) {
        Ok(i) => i,
        Err(e) => {
            return skipped(TEST, &format!("cannot run the probe as uid {uid}: {e}"));
        }
    };
    let line = kids.expect_ok(denied, STEP);
    eprintln!("{TEST}: {line}");

    let shared = TestRegion::new("iso", "shared");
    let config = small_config().with_mode(0o666);
    let region2 = Region::create(&shared.0, &config).unwrap();
    let mode = std::fs::metadata(shared.shm_path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o666, "the umask did not narrow the mode");
    let joined = kids
        .spawn("open-join", as_nobody(&["open-join", &shared.0, "guest"]))
        .expect("spawn probe as nobody");
    let line = kids.expect_ok(joined, STEP);
    eprintln!("{TEST}: {line}");
    assert_nothing_left(&region2);
    assert!(region.participants().is_empty());

    // Nobody attached any more, but root's: `nobody` may not replace it.
    drop(region2);
    let recreate = kids
        .spawn(
            "recreate-denied",
            as_nobody(&["recreate-denied", &shared.0]),
        )
        .expect("spawn probe as nobody");
    let line = kids.expect_ok(recreate, STEP);
    eprintln!("{TEST}: {line}");
    assert!(
        std::path::Path::new(&shared.shm_path()).exists(),
        "root's region is still there"
    );

    // Readable but not writable by others: they can inspect it (read-only
    // mapping), not open or join it.
    let readable = TestRegion::new("iso", "readable");
    let region3 = Region::create(&readable.0, &small_config().with_mode(0o644)).unwrap();
    let owner = region3.join("owner").unwrap();
    let inspector = kids
        .spawn("inspect", as_nobody(&["inspect", &readable.0, "owner"]))
        .expect("spawn probe as nobody");
    let line = kids.expect_ok(inspector, STEP);
    eprintln!("{TEST}: {line}");
    drop(owner);
    assert_nothing_left(&region3);
}
