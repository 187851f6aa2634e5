//! The probe program of the isolation tests (`tests/isolation.rs`): small
//! scenarios run in another process, another PID or mount namespace, or as
//! another user.
//!
//! ```text
//! shmbox-probe hold REGION NAME PEER...   join, keep 2 loans, send 3 messages to
//!                                         each peer, keep 1 received message,
//!                                         print `ready ...`, wait until killed
//! shmbox-probe ring REGION NAME TO        join, send one message to TO, receive one
//! shmbox-probe talk REGION NAME PEER      join, send to PEER, wait for its reply
//! shmbox-probe linger REGION NAME         join, print `ready pid=P`, wait until killed
//! shmbox-probe sleep-keeping REGION NAME  join in Park mode, keep chunks (12 messages
//!                                         to itself, received and dropped), print
//!                                         `ready pid=P`, sleep in a receive until killed
//! shmbox-probe loan-waiting REGION NAME SIZE
//!                                         join, print `ready pid=P`, wait in a
//!                                         loan of SIZE bytes (its class exhausted)
//!                                         until killed
//! shmbox-probe tmpfs-test NAME OUTER_MNT_NS
//!                                         mount an 8 MiB tmpfs on /dev/shm (only
//!                                         in a mount namespace other than
//!                                         OUTER_MNT_NS) and check NoSpace
//! shmbox-probe open-denied REGION         Region::open must be PermissionDenied
//! shmbox-probe open-join REGION NAME      Region::open, join, message to self
//! shmbox-probe inspect REGION NAME        Region::open must be PermissionDenied,
//!                                         Region::inspect must list NAME, and
//!                                         join must be refused as read-only
//! ```
//!
//! Each prints one line: `ok ...` (exit 0), `FAIL ...` (exit 1), or, when a
//! capability is missing, `SKIP ...` (exit 2). `hold`, `linger` and
//! `sleep-keeping` print `ready ...` and then wait until killed, until their
//! stdin is closed (so they never outlive a test that died), or at most ten
//! minutes.

use shmbox::{Config, CreateError, OpenError, Region, SizeClass, WaitStrategy};
use std::io::Read;
use std::time::Duration;

/// How long a probe waits for a peer or a message (the test's watchdog is
/// the outer bound).
const PATIENCE: Duration = Duration::from_secs(30);

/// The longest a `hold` or `linger` probe stays alive.
const MAX_LINGER: Duration = Duration::from_secs(600);

enum Outcome {
    Ok(String),
    Fail(String),
    Skip(String),
}

impl From<Result<String, String>> for Outcome {
    fn from(r: Result<String, String>) -> Self {
        match r {
            Ok(s) => Outcome::Ok(s),
            Err(e) => Outcome::Fail(e),
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let outcome = match a.as_slice() {
        ["hold", region, name, peers @ ..] if !peers.is_empty() => hold(region, name, peers).into(),
        ["ring", region, name, to] => ring(region, name, to).into(),
        ["talk", region, name, peer] => talk(region, name, peer).into(),
        ["linger", region, name] => linger(region, name).into(),
        ["sleep-keeping", region, name] => sleep_keeping(region, name).into(),
        ["loan-waiting", region, name, size] => loan_waiting(region, name, size).into(),
        ["tmpfs-test", name, outer_ns] => tmpfs_test(name, outer_ns),
        ["open-denied", region] => open_denied(region).into(),
        ["recreate-denied", region] => recreate_denied(region).into(),
        ["open-join", region, name] => open_join(region, name).into(),
        ["inspect", region, name] => inspect(region, name).into(),
        _ => Outcome::Fail(format!("bad arguments: {args:?}")),
    };
    match outcome {
        Outcome::Ok(line) => println!("ok {line}"),
        Outcome::Fail(e) => {
            println!("FAIL {e}");
            std::process::exit(1);
        }
        Outcome::Skip(why) => {
            println!("SKIP {why}");
            std::process::exit(2);
        }
    }
}

fn pid() -> u32 {
    std::process::id()
}

/// Waits until a participant called `name` is live in `region`.
fn address_of(region: &Region, name: &str) -> Result<shmbox::Address, String> {
    region
        .wait_for(name, PATIENCE)
        .map_err(|e| format!("waiting for '{name}': {e}"))
}

/// Prints `ready ...` and blocks until stdin reaches end of file (the
/// test closed it or died), or `MAX_LINGER` passes. Normally the test
/// kills us first.
fn wait_until_released(ready: &str) {
    use std::io::Write;
    std::thread::spawn(|| {
        std::thread::sleep(MAX_LINGER);
        println!("FAIL lingered for {MAX_LINGER:?} without being killed");
        std::process::exit(1);
    });
    println!("ready {ready}");
    let _ = std::io::stdout().flush();
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}

fn hold(region: &str, name: &str, peers: &[&str]) -> Result<String, String> {
    let region = Region::open(region).map_err(|e| format!("open: {e}"))?;
    let me = region.join(name).map_err(|e| format!("join: {e}"))?;
    // Two loans (from the larger class) that are never sent.
    let loans: Vec<_> = (0..2)
        .map(|_| me.try_loan(100).map_err(|e| format!("loan: {e}")))
        .collect::<Result<_, _>>()?;
    let mut sent = 0;
    for peer in peers {
        let to = address_of(&region, peer)?;
        for i in 0..3 {
            me.send_copy(format!("{name}->{peer} #{i}").as_bytes(), &to)
                .map_err(|e| format!("send to {peer}: {e}"))?;
            sent += 1;
        }
    }
    // One received message kept unreleased; the rest stay queued.
    let kept = me
        .recv_timeout(PATIENCE)
        .map_err(|e| format!("recv: {e}"))?;
    wait_until_released(&format!(
        "{name} pid={} loans={} sent={sent} received='{}'",
        pid(),
        loans.len(),
        String::from_utf8_lossy(&kept)
    ));
    drop((kept, loans));
    Err("released before being killed".into())
}

fn ring(region: &str, name: &str, to: &str) -> Result<String, String> {
    let region = Region::open(region).map_err(|e| format!("open: {e}"))?;
    let me = region.join(name).map_err(|e| format!("join: {e}"))?;
    let dest = address_of(&region, to)?;
    me.send_copy(format!("ring {name}->{to}").as_bytes(), &dest)
        .map_err(|e| format!("send to {to}: {e}"))?;
    let msg = me
        .recv_timeout(PATIENCE)
        .map_err(|e| format!("recv: {e}"))?;
    let text = String::from_utf8_lossy(&msg).into_owned();
    if !text.starts_with("ring ") || !text.ends_with(&format!("->{name}")) {
        return Err(format!("{name} got unexpected message '{text}'"));
    }
    Ok(format!("{name} got '{text}'"))
}

fn talk(region: &str, name: &str, peer: &str) -> Result<String, String> {
    let region = Region::open(region).map_err(|e| format!("open: {e}"))?;
    let me = region.join(name).map_err(|e| format!("join: {e}"))?;
    let dest = address_of(&region, peer)?;
    me.send_copy(format!("hello from {name} pid={}", pid()).as_bytes(), &dest)
        .map_err(|e| format!("send to {peer}: {e}"))?;
    let reply = me
        .recv_timeout(PATIENCE)
        .map_err(|e| format!("waiting for the reply: {e}"))?;
    if reply.sender() != dest {
        return Err(format!(
            "reply from {} instead of {peer} at {dest}",
            reply.sender()
        ));
    }
    Ok(format!(
        "pid={} reply='{}'",
        pid(),
        String::from_utf8_lossy(&reply)
    ))
}

fn linger(region: &str, name: &str) -> Result<String, String> {
    let region = Region::open(region).map_err(|e| format!("open: {e}"))?;
    let _me = region.join(name).map_err(|e| format!("join: {e}"))?;
    wait_until_released(&format!("pid={}", pid()));
    Err("released before being killed".into())
}

fn sleep_keeping(region: &str, name: &str) -> Result<String, String> {
    let region = Region::open(region).map_err(|e| format!("open: {e}"))?;
    let me = region
        .join_with(name, WaitStrategy::Park)
        .map_err(|e| format!("join: {e}"))?;
    // Chunks freed as their last holder are kept for the next loans.
    for i in 0..12u8 {
        me.send_copy(&[i], &me.address())
            .map_err(|e| format!("send: {e}"))?;
    }
    for _ in 0..12 {
        me.recv_timeout(PATIENCE)
            .map_err(|e| format!("recv: {e}"))?;
    }
    // Asleep in the receive below: a thread ends us when the test goes
    // away (our stdin closes).
    std::thread::spawn(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(1);
    });
    println!("ready pid={}", pid());
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let woke = match me.recv_timeout(MAX_LINGER) {
        Ok(_) => "a message arrived before we were killed".to_string(),
        Err(e) => format!("recv: {e} before being killed"),
    };
    Err(woke)
}

fn loan_waiting(region: &str, name: &str, size: &str) -> Result<String, String> {
    let size: usize = size.parse().map_err(|e| format!("size: {e}"))?;
    let region = Region::open(region).map_err(|e| format!("open: {e}"))?;
    let me = region.join(name).map_err(|e| format!("join: {e}"))?;
    std::thread::spawn(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(1);
    });
    println!("ready pid={}", pid());
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let woke = match me.loan_timeout(size, MAX_LINGER) {
        Ok(_) => "a chunk came free before we were killed".to_string(),
        Err(e) => format!("loan: {e} before being killed"),
    };
    Err(woke)
}

fn shm_entries() -> Result<Vec<String>, String> {
    let mut names: Vec<String> = std::fs::read_dir("/dev/shm")
        .map_err(|e| format!("reading /dev/shm: {e}"))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("reading /dev/shm: {e}"))?;
    names.sort();
    Ok(names)
}

fn tmpfs_test(name: &str, outer_ns: &str) -> Outcome {
    // Never mount over the real /dev/shm: insist on another mount namespace.
    match std::fs::read_link("/proc/self/ns/mnt") {
        Ok(ns) if ns.to_string_lossy() != outer_ns => {}
        Ok(ns) => {
            return Outcome::Fail(format!(
                "refusing to mount: still in the test's mount namespace {}",
                ns.display()
            ))
        }
        Err(e) => return Outcome::Skip(format!("cannot read /proc/self/ns/mnt: {e}")),
    }
    // SAFETY: plain C strings that live across the call.
    let r = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            c"/dev/shm".as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            c"size=8m,mode=1777".as_ptr().cast(),
        )
    };
    if r != 0 {
        return Outcome::Skip(format!(
            "mount -t tmpfs -o size=8m tmpfs /dev/shm failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    tmpfs_checks(name).into()
}

fn tmpfs_checks(name: &str) -> Result<String, String> {
    const SMALL_FS: u64 = 8 << 20;
    if !shm_entries()?.is_empty() {
        return Err(format!("fresh tmpfs is not empty: {:?}", shm_entries()?));
    }
    let big = Config::default()
        .with_classes(&[SizeClass::new(1024, 256), SizeClass::new(1 << 20, 32)])
        .with_max_participants(8)
        .with_mailbox_capacity(64);
    let mut report = Vec::new();
    for (label, config) in [("32MiB", big), ("default", Config::default())] {
        let needed = config.total_size();
        if needed <= SMALL_FS {
            return Err(format!("{label} config needs only {needed} bytes"));
        }
        match Region::create(name, &config) {
            Err(e @ CreateError::NoSpace { .. }) => {
                let msg = e.to_string();
                let CreateError::NoSpace {
                    needed: n,
                    available,
                    ..
                } = e
                else {
                    unreachable!()
                };
                if n != needed {
                    return Err(format!(
                        "{label}: NoSpace needed={n}, config needs {needed}"
                    ));
                }
                if !msg.contains(&needed.to_string()) || !msg.contains("bytes") {
                    return Err(format!("{label}: message does not name the bytes: {msg}"));
                }
                if available.is_some_and(|a| a > SMALL_FS) {
                    return Err(format!("{label}: {available:?} bytes available on 8 MiB"));
                }
                report.push(format!("{label}: '{msg}'"));
            }
            Err(e) => return Err(format!("{label}: expected NoSpace, got {e:?}")),
            Ok(r) => {
                drop(r);
                let _ = Region::remove(name);
                return Err(format!("{label}: {needed} bytes fit an 8 MiB tmpfs"));
            }
        }
        let left = shm_entries()?;
        if !left.is_empty() {
            return Err(format!("{label}: failed create left {left:?} in /dev/shm"));
        }
    }
    // open_or_create passes the same error on.
    match Region::open_or_create(name, &Config::default()) {
        Err(OpenError::Create(CreateError::NoSpace { .. })) => {}
        other => return Err(format!("open_or_create: expected NoSpace, got {other:?}")),
    }
    if !shm_entries()?.is_empty() {
        return Err(format!("open_or_create left {:?}", shm_entries()?));
    }

    // A region that fits works normally.
    let small = Config::default()
        .with_classes(&[SizeClass::new(64, 256), SizeClass::new(4096, 64)])
        .with_max_participants(4)
        .with_mailbox_capacity(16);
    if small.total_size() > SMALL_FS / 2 {
        return Err(format!("small config needs {} bytes", small.total_size()));
    }
    let region = Region::create(name, &small).map_err(|e| format!("small create: {e}"))?;
    let x = region.join("x").map_err(|e| format!("join x: {e}"))?;
    let y = region.join("y").map_err(|e| format!("join y: {e}"))?;
    x.send_copy(&[7u8; 3000], &y.address())
        .map_err(|e| format!("send: {e}"))?;
    let msg = y.recv_timeout(PATIENCE).map_err(|e| format!("recv: {e}"))?;
    if *msg != [7u8; 3000] {
        return Err("message garbled".into());
    }
    drop(msg);
    drop((x, y));
    if region.pool_usage().iter().any(|c| c.free != c.count) {
        return Err(format!("pool not full: {:?}", region.pool_usage()));
    }
    Region::remove(name).map_err(|e| format!("remove: {e}"))?;
    drop(region);
    let left = shm_entries()?;
    if !left.is_empty() {
        return Err(format!("left behind after remove: {left:?}"));
    }
    Ok(format!(
        "{}; small region of {} bytes created, used and removed",
        report.join("; "),
        small.total_size()
    ))
}

fn open_denied(region: &str) -> Result<String, String> {
    match Region::open(region) {
        Err(e @ OpenError::PermissionDenied { .. }) => {
            let msg = e.to_string();
            if msg.to_lowercase().contains("permission") {
                Ok(format!("uid={} denied: {msg}", uid()))
            } else {
                Err(format!("message does not mention permission: {msg}"))
            }
        }
        Err(e) => Err(format!("expected PermissionDenied, got {e:?}")),
        Ok(_) => Err(format!("uid={} opened a private region", uid())),
    }
}

/// `open_or_create` with another config, on a region nobody is attached
/// to but that we may not remove: refused, not `NotFound`.
fn recreate_denied(region: &str) -> Result<String, String> {
    let other = Config::default().with_max_participants(3).with_mode(0o666);
    match Region::open_or_create(region, &other) {
        Err(e @ OpenError::PermissionDenied { .. }) => Ok(format!("uid={} refused: {e}", uid())),
        Err(e) => Err(format!("expected PermissionDenied, got {e:?}")),
        Ok(_) => Err(format!("uid={} replaced a region it cannot remove", uid())),
    }
}

fn inspect(region: &str, name: &str) -> Result<String, String> {
    match Region::open(region) {
        Err(OpenError::PermissionDenied { .. }) => {}
        Err(e) => return Err(format!("open: expected PermissionDenied, got {e:?}")),
        Ok(_) => {
            return Err(format!(
                "uid={} opened a read-only region read-write",
                uid()
            ))
        }
    }
    let view = Region::inspect(region).map_err(|e| format!("inspect: {e:?}"))?;
    let names: Vec<String> = view.participants().into_iter().map(|p| p.name).collect();
    if names != [name] {
        return Err(format!("participants {names:?}, expected [{name}]"));
    }
    match view.join("guest") {
        Err(shmbox::JoinError::ReadOnly(_)) => {}
        other => return Err(format!("join: expected ReadOnly, got {other:?}")),
    }
    let free: u32 = view.pool_usage().iter().map(|c| c.free).sum();
    Ok(format!(
        "uid={} inspected: {names:?}, {free} chunks free",
        uid()
    ))
}

fn open_join(region: &str, name: &str) -> Result<String, String> {
    let region = Region::open(region).map_err(|e| format!("open: {e:?}"))?;
    let me = region.join(name).map_err(|e| format!("join: {e:?}"))?;
    me.send_copy(b"to myself", &me.address())
        .map_err(|e| format!("send: {e}"))?;
    let msg = me
        .recv_timeout(PATIENCE)
        .map_err(|e| format!("recv: {e}"))?;
    if &*msg != b"to myself" {
        return Err("message garbled".into());
    }
    Ok(format!("uid={} opened, joined and messaged", uid()))
}

fn uid() -> u32 {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() }
}
