//! Behaviour of the public API on named regions, with threads standing in
//! for processes where a test needs concurrency. Each test uses a unique
//! region name that it removes, and blocking tests run under a watchdog.

mod common;

use common::{watchdog, Name};
use shmbox::{
    Config, CreateError, JoinError, Loan, LoanError, LookupError, Mailbox, OpenError,
    RecvTimeoutError, Region, SendCopyError, SendError, SendTimeoutError, SizeClass, TryLoanError,
    TryRecvError, TrySendError, WaitStrategy,
};
use std::os::unix::fs::PermissionsExt;
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn small() -> Config {
    Config::default()
        .with_classes(&[SizeClass::new(64, 2), SizeClass::new(1024, 4)])
        .with_max_participants(4)
        .with_mailbox_capacity(2)
}

/// Idle participants (their receives have found nothing for a while: a few
/// hundred polls) keep a few chunks for their next loans, never more than
/// half of a pool in all; every other chunk is back in the pool. Nothing
/// leaks once they leave (see `assert_pool_full`).
fn assert_pool_full_when_idle(region: &Region, idle: &[&Mailbox]) {
    for mailbox in idle {
        for _ in 0..1000 {
            assert!(matches!(mailbox.try_recv(), Err(TryRecvError::Empty)));
        }
    }
    let kept: u32 = region.participants().iter().map(|p| p.holding).sum();
    let usage = region.pool_usage();
    let (free, count) = usage
        .iter()
        .fold((0, 0), |(f, c), class| (f + class.free, c + class.count));
    assert_eq!(free + kept, count, "chunks leaked: {usage:?}");
    for class in &usage {
        assert!(
            2 * class.free >= class.count,
            "idle participants keep more than half of class {}: {class:?}",
            class.size
        );
    }
}

/// Polls `done` until it holds, failing after 5 s.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "not within 5 s: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn assert_pool_full(region: &Region) {
    for class in region.pool_usage() {
        assert_eq!(
            class.free, class.count,
            "size class {} leaked chunks",
            class.size
        );
    }
}

#[test]
fn open_takes_the_config_from_the_header() {
    let name = Name::new("api", "cfg");
    let created = Region::create(&name.0, &small()).unwrap();
    assert!(created.created());
    let opened = Region::open(&name.0).unwrap();
    assert!(!opened.created());
    assert_eq!(opened.config(), &small());
    let same = Region::open_or_create(&name.0, &small()).unwrap();
    assert!(!same.created());
    assert!(matches!(
        Region::create(&name.0, &small()),
        Err(CreateError::AlreadyExists { .. })
    ));
}

#[test]
fn a_different_config_recreates_only_an_unused_region() {
    let name = Name::new("api", "recreate");
    let first = Region::create(&name.0, &small()).unwrap();
    let other = small().with_mailbox_capacity(8);
    let err = Region::open_or_create(&name.0, &other).unwrap_err();
    assert!(matches!(err, OpenError::ConfigMismatch { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("mailbox 2") && text.contains("mailbox 8"),
        "{text}"
    );
    drop(first);
    let second = Region::open_or_create(&name.0, &other).unwrap();
    assert!(second.created(), "an unused region is recreated");
    assert_eq!(second.config(), &other);
    assert_eq!(Region::open(&name.0).unwrap().config(), &other);
}

/// One thread keeps asking for the region with another config while
/// another attaches with the first config, joins and checks that the name
/// still leads to its region: a replacement never happens under an
/// attached handle, even one attaching at that very moment.
#[test]
fn a_region_is_never_replaced_under_a_handle_attaching_to_it() {
    let _w = watchdog(
        "a_region_is_never_replaced_under_a_handle_attaching_to_it",
        Duration::from_secs(60),
    );
    let name = Name::new("api", "replace");
    let (ours, theirs) = (small(), small().with_mailbox_capacity(8));
    let until = Instant::now() + Duration::from_secs(2);
    let (attached, replaced) = std::thread::scope(|s| {
        s.spawn(|| {
            while Instant::now() < until {
                match Region::open_or_create(&name.0, &theirs) {
                    Ok(_) | Err(OpenError::ConfigMismatch { .. }) => {}
                    Err(e) => panic!("{e}"),
                }
            }
        });
        let mut attached = 0u32;
        let mut replaced = Vec::new();
        while Instant::now() < until {
            let region = match Region::open_or_create(&name.0, &ours) {
                Ok(region) => region,
                Err(OpenError::ConfigMismatch { .. }) => continue,
                Err(e) => panic!("{e}"),
            };
            let me = region.join("p").unwrap();
            attached += 1;
            // While we are attached, the name must lead to our region.
            match Region::inspect(&name.0) {
                Ok(view) if view.address("p") == Ok(me.address()) => {}
                other => replaced.push(format!("{:?}", other.map(|v| v.config().clone()))),
            }
        }
        (attached, replaced)
    });
    assert!(attached > 0, "never attached");
    assert!(
        replaced.is_empty(),
        "replaced under {} of {attached} attached handles: {:?}",
        replaced.len(),
        &replaced[..replaced.len().min(3)]
    );
}

#[test]
fn inspecting_reads_everything_changes_nothing_and_never_attaches() {
    let name = Name::new("api", "inspect");
    let region = Region::create(&name.0, &small()).unwrap();
    let a = region.join("a").unwrap();
    a.send_copy(b"queued", &a.address()).unwrap();
    let view = Region::inspect(&name.0).unwrap();
    assert!(view.is_read_only() && !region.is_read_only());
    assert_eq!(view.config(), region.config());
    assert_eq!(view.address("a").unwrap(), a.address());
    let seen = view.participants();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].name.as_str(), seen[0].queued, seen[0].alive),
        ("a", 1, true)
    );
    assert_eq!(view.pool_usage(), region.pool_usage());
    // Nothing that would store to the region is allowed.
    assert!(matches!(view.join("b"), Err(JoinError::ReadOnly(n)) if n == name.0));
    assert_eq!(view.sweep(), shmbox::SweepReport::default());
    // The inspector's mapping is private (copy-on-write: nothing stored
    // through it could reach the region); the participant's is shared.
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let object = name.path();
    let perms: Vec<&str> = maps
        .lines()
        .filter(|l| l.contains(&object))
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert!(perms.contains(&"rw-p"), "mappings of {object}: {perms:?}");
    assert!(perms.contains(&"rw-s"), "mappings of {object}: {perms:?}");
    // It sees what the participants do after it opened the region.
    let b = region.join("b").unwrap();
    a.send_copy(b"to b", &b.address()).unwrap();
    let seen: Vec<(String, u64)> = view
        .participants()
        .into_iter()
        .map(|p| (p.name, p.queued))
        .collect();
    assert_eq!(seen, [("a".to_string(), 1), ("b".to_string(), 1)]);
    drop(b);
    // An inspector does not count as attached: with only it left, the
    // region may be recreated with another config, and the inspector keeps
    // reading the old one.
    drop(a);
    drop(region);
    let other = small().with_mailbox_capacity(8);
    let recreated = Region::open_or_create(&name.0, &other).unwrap();
    assert!(recreated.created(), "an inspector kept the region in use");
    assert_eq!(view.config(), &small());
    assert!(view.participants().is_empty());
}

#[test]
fn regions_are_private_unless_asked() {
    let name = Name::new("api", "mode");
    let _r = Region::create(&name.0, &small()).unwrap();
    let mode = std::fs::metadata(name.path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let group = Name::new("api", "mode-group");
    let _g = Region::create(&group.0, &small().with_mode(0o660)).unwrap();
    let mode = std::fs::metadata(group.path())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o660);
    let err =
        Region::create(&Name::new("api", "mode-bad").0, &small().with_mode(0o777)).unwrap_err();
    assert!(err.to_string().contains("mode must"), "{err}");
}

#[test]
fn messages_travel_between_participants() {
    let _w = watchdog(
        "messages_travel_between_participants",
        Duration::from_secs(30),
    );
    let name = Name::new("api", "basic");
    let region = Region::create(&name.0, &small()).unwrap();
    let a = region.join("a").unwrap();
    let b = region.join("b").unwrap();
    let to_b = region.address("b").unwrap();
    assert_eq!(to_b, b.address());
    let mut loan = a.loan(10).unwrap();
    assert_eq!(loan.capacity(), 64);
    assert_eq!(
        loan.as_ptr() as usize % 32,
        0,
        "payloads are 32-byte aligned"
    );
    loan.copy_from_slice(b"0123456789");
    loan.truncate(4);
    a.send(loan, &to_b).unwrap();
    let msg = b.recv().unwrap();
    assert_eq!(&*msg, b"0123");
    assert_eq!(msg.sender(), a.address());
    b.send_copy(&[7u8; 100], &msg.sender()).unwrap();
    drop(msg);
    let reply = a.recv().unwrap();
    assert_eq!(reply.len(), 100);
    assert!(reply.iter().all(|&x| x == 7));
    drop(reply);
    let names: Vec<_> = region.participants().into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["a", "b"]);
    assert_pool_full_when_idle(&region, &[&a, &b]);
}

#[test]
fn full_mailbox_hands_the_loan_back() {
    let _w = watchdog("full_mailbox_hands_the_loan_back", Duration::from_secs(30));
    let name = Name::new("api", "full");
    let config = small().with_classes(&[SizeClass::new(64, 8)]);
    let region = Region::create(&name.0, &config).unwrap();
    let a = region.join("a").unwrap();
    let b = region.join("b").unwrap();
    for i in 0..2u8 {
        a.send_copy(&[i], &b.address()).unwrap();
    }
    let mut loan = a.try_loan(3).unwrap();
    loan.copy_from_slice(b"xyz");
    let loan = match a.try_send(loan, &b.address()) {
        Err(TrySendError::Full(loan)) => loan,
        other => panic!("expected Full, got {other:?}"),
    };
    assert_eq!(&*loan, b"xyz", "the returned loan keeps its contents");
    assert_eq!(b.pending(), 2);
    assert_eq!(&*b.try_recv().unwrap(), [0]);
    a.try_send(loan, &b.address()).unwrap();
    assert_eq!(&*b.try_recv().unwrap(), [1]);
    assert_eq!(&*b.try_recv().unwrap(), b"xyz");
    assert!(matches!(b.try_recv(), Err(TryRecvError::Empty)));
    assert_pool_full_when_idle(&region, &[&a, &b]);
}

/// Only the mailbox that loaned a chunk may send it: another mailbox of the
/// same region (which does not hold the chunk), or of another region (where
/// the same place is a chunk of its own), panics in every build, and the
/// loan, dropped while unwinding, goes back to its own mailbox.
#[test]
fn a_loan_sent_through_another_mailbox_panics() {
    let one = Region::in_process(&small()).unwrap();
    let other = Region::in_process(&small()).unwrap();
    let a = one.join("a").unwrap();
    let b = one.join("b").unwrap();
    let c = other.join("c").unwrap();
    type Send = fn(&Mailbox, shmbox::Loan<'_>, &shmbox::Address);
    let sends: [(&str, Send); 3] = [
        ("try_send", |m, l, to| drop(m.try_send(l, to))),
        ("send", |m, l, to| drop(m.send(l, to))),
        ("send_timeout", |m, l, to| {
            drop(m.send_timeout(l, to, Duration::from_millis(10)))
        }),
    ];
    for (what, send) in sends {
        for (through, to) in [(&b, b.address()), (&c, c.address())] {
            let loan = a.try_loan(8).unwrap();
            assert_panics(
                what,
                "a loan can only be sent by the mailbox that loaned it",
                || send(through, loan, &to),
            );
            assert!(matches!(
                to_mailbox(&to, &b, &c).try_recv(),
                Err(TryRecvError::Empty)
            ));
        }
    }
    // Nothing was delivered, nothing is lost: every loan went back to `a`.
    a.send_copy(b"ok", &b.address()).unwrap();
    assert_eq!(&*b.try_recv().unwrap(), b"ok");
    drop(c);
    assert_pool_full(&other);
    assert_pool_full_when_idle(&one, &[&a, &b]);
}

/// `f` panics with `expected`.
fn assert_panics(what: &str, expected: &str, f: impl FnOnce()) {
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    let payload = panicked.expect_err(what);
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str));
    assert_eq!(message, Some(expected), "{what}");
}

/// An address is good only in the region it came from. Another region's
/// first participant has the same slot and generation as `a`, so without
/// the check a message to it sent from `a` would reach `a` itself: every
/// way of sending panics instead, in every build, and nothing is delivered
/// or lost.
#[test]
fn an_address_of_another_region_panics() {
    let one = Region::in_process(&small()).unwrap();
    let other = Region::in_process(&small()).unwrap();
    let a = one.join("a").unwrap();
    let c = other.join("c").unwrap();
    let stranger = c.address();
    let own = a.address();
    assert_eq!(
        (stranger.slot(), stranger.generation()),
        (own.slot(), own.generation())
    );
    assert_ne!(stranger, own);
    type Send = fn(&Mailbox, &shmbox::Address);
    let sends: [(&str, Send); 4] = [
        ("try_send", |m, to| {
            drop(m.try_send(m.try_loan(8).unwrap(), to))
        }),
        ("send", |m, to| drop(m.send(m.try_loan(8).unwrap(), to))),
        ("send_timeout", |m, to| {
            let loan = m.try_loan(8).unwrap();
            drop(m.send_timeout(loan, to, Duration::from_millis(10)))
        }),
        ("send_copy", |m, to| drop(m.send_copy(b"x", to))),
    ];
    for (what, send) in sends {
        assert_panics(
            what,
            "an address can only be used in the region it came from",
            || send(&a, &stranger),
        );
        assert!(matches!(a.try_recv(), Err(TryRecvError::Empty)), "{what}");
        assert!(matches!(c.try_recv(), Err(TryRecvError::Empty)), "{what}");
    }
    a.send_copy(b"ok", &own).unwrap();
    assert_eq!(&*a.try_recv().unwrap(), b"ok");
    assert_pool_full_when_idle(&one, &[&a]);
    assert_pool_full_when_idle(&other, &[&c]);
}

/// `list` names regions only: a directory in `/dev/shm` that carries the
/// prefix is not one (and `remove` could not remove it).
#[test]
fn list_skips_a_directory_named_like_a_region() {
    struct Dir(String);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let region = Name::new("api", "listed");
    let dir = Name::new("api", "dir");
    let _region = Region::create(&region.0, &small()).unwrap();
    std::fs::create_dir(dir.path()).unwrap();
    let _dir = Dir(dir.path());
    let names = Region::list().unwrap();
    assert!(
        names.contains(&region.0) && !names.contains(&dir.0),
        "{names:?}"
    );
}

/// A FIFO or a symbolic link under a region's name (anyone may make one
/// in `/dev/shm`) is no region: opening it is refused at once. Opening a
/// FIFO for reading used to wait for a writer for ever (`shmbox ls` hung),
/// and a link led to whatever it named, here another region.
#[test]
fn a_fifo_or_a_link_under_a_regions_name_is_refused_at_once() {
    use rustix::fs::{mknodat, symlink, FileType, Mode, CWD};
    let _w = watchdog("opening a FIFO or a link", Duration::from_secs(30));
    let target = Name::new("api", "linked");
    let link = Name::new("api", "link");
    let fifo = Name::new("api", "fifo");
    let region = Region::create(&target.0, &small()).unwrap();
    symlink(target.path(), link.path()).unwrap();
    mknodat(
        CWD,
        fifo.path(),
        FileType::Fifo,
        Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    for (name, what) in [(&link.0, "a symbolic link"), (&fifo.0, "a FIFO")] {
        type Open = fn(&str) -> Result<Region, OpenError>;
        let opens: [(&str, Open); 3] = [
            ("open", Region::open),
            ("inspect", Region::inspect),
            ("open_or_create", |n| Region::open_or_create(n, &small())),
        ];
        for (how, open) in opens {
            match open(name) {
                Err(OpenError::NotShmbox { reason, .. }) => {
                    assert!(reason.contains(what), "{how} {name}: {reason}")
                }
                other => panic!(
                    "{how} {name}: {:?}",
                    other.map(|r| r.name().map(str::to_string))
                ),
            }
        }
        assert!(
            Region::list().unwrap().contains(name),
            "{name} is listed, to be removed"
        );
        Region::remove(name).unwrap();
    }
    struct Dir(String);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let dir = Name::new("api", "dirnamed");
    std::fs::create_dir(dir.path()).unwrap();
    let _remove = Dir(dir.path());
    for result in [Region::open(&dir.0), Region::inspect(&dir.0)] {
        match result {
            Err(OpenError::NotShmbox { reason, .. }) => assert!(reason.contains("a directory")),
            other => panic!("{:?}", other.map(|r| r.name().map(str::to_string))),
        }
    }
    // A sparse object larger than any region is not mapped.
    let huge = Name::new("api", "huge");
    std::fs::File::create(huge.path())
        .unwrap()
        .set_len(1 << 40)
        .unwrap();
    match Region::open(&huge.0) {
        Err(OpenError::NotShmbox { reason, .. }) => {
            assert!(reason.contains("more than"), "{reason}")
        }
        other => panic!("{:?}", other.map(|r| r.name().map(str::to_string))),
    }
    // The link's target is untouched.
    assert_eq!(region.participants().len(), 0);
    assert!(Region::open(&target.0).is_ok());
}

/// A region's mode is its object's: opened up with `chmod` (or made under
/// the name by someone else), `open_or_create` does not join it with
/// wider permissions than it asks for.
#[test]
fn open_or_create_does_not_join_a_region_opened_up_with_chmod() {
    let name = Name::new("api", "chmod");
    let creator = Region::create(&name.0, &small()).unwrap();
    assert_eq!(creator.config().mode(), 0o600);
    std::fs::set_permissions(name.path(), std::fs::Permissions::from_mode(0o666)).unwrap();
    assert_eq!(Region::open(&name.0).unwrap().config().mode(), 0o666);
    assert_eq!(Region::inspect(&name.0).unwrap().config().mode(), 0o666);
    // The creator is attached, so the region cannot be replaced.
    match Region::open_or_create(&name.0, &small()) {
        Err(OpenError::ConfigMismatch {
            existing,
            requested,
            ..
        }) => {
            assert_eq!((existing.mode(), requested.mode()), (0o666, 0o600));
        }
        other => panic!("{:?}", other.map(|r| r.config().mode())),
    }
    // Asked for with the mode it has, it is joined.
    let wide = small().with_mode(0o666);
    assert!(Region::open_or_create(&name.0, &wide).is_ok());
    // Closed with `chmod` (narrower than asked for), it is joined.
    std::fs::set_permissions(name.path(), std::fs::Permissions::from_mode(0o600)).unwrap();
    let group = small().with_mode(0o660);
    assert_eq!(
        Region::open_or_create(&name.0, &group)
            .unwrap()
            .config()
            .mode(),
        0o600
    );
    std::fs::set_permissions(name.path(), std::fs::Permissions::from_mode(0o666)).unwrap();
    // Nobody attached: it is replaced by one of the mode asked for.
    drop(creator);
    let replaced = Region::open_or_create(&name.0, &small()).unwrap();
    assert_eq!(replaced.config().mode(), 0o600);
    let mode = std::fs::metadata(name.path()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

/// A mailbox sending to itself with its own mailbox full is told so at
/// once: only it can make room, so a wait would never end.
#[test]
fn a_send_to_ones_own_full_mailbox_does_not_wait() {
    let _w = watchdog("send to one's own full mailbox", Duration::from_secs(30));
    let name = Name::new("api", "selffull");
    let config = small().with_classes(&[SizeClass::new(64, 8)]);
    let region = Region::create(&name.0, &config).unwrap();
    let me = region.join("me").unwrap();
    let mine = me.address();
    // Capacity 2: two messages fill it.
    me.send_copy(b"1", &mine).unwrap();
    me.send(me.loan(1).unwrap(), &mine).unwrap();
    let loan = match me.send(me.loan(3).unwrap(), &mine) {
        Err(SendError::OwnMailboxFull(loan)) => loan,
        other => panic!("{other:?}"),
    };
    assert_eq!(loan.len(), 3, "the loan comes back");
    let started = Instant::now();
    match me.send_timeout(loan, &mine, Duration::from_secs(20)) {
        Err(SendTimeoutError::Timeout(_)) => {}
        other => panic!("{other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        me.send_copy(b"x", &mine),
        Err(SendCopyError::OwnMailboxFull)
    );
    // Nothing was lost or added: the two messages, then room again.
    assert_eq!(&*me.try_recv().unwrap(), b"1");
    assert_eq!(me.try_recv().unwrap().len(), 1);
    assert!(me.try_recv().is_err());
    me.send_copy(b"again", &mine).unwrap();
    assert_eq!(&*me.try_recv().unwrap(), b"again");
}

/// `is_alive` tells a participant that is there from one that left, even
/// when its slot is taken again under the same name.
#[test]
fn is_alive_follows_a_participant_not_its_slot() {
    let name = Name::new("api", "alive");
    let region = Region::create(&name.0, &small()).unwrap();
    let b = region.join("b").unwrap();
    let first = b.address();
    assert!(region.is_alive(&first));
    drop(b);
    assert!(!region.is_alive(&first));
    let again = region.join("b").unwrap();
    assert!(region.is_alive(&again.address()) && !region.is_alive(&first));
}

/// A handle knows when its region's name no longer leads to it: removed,
/// or removed and created again as another region.
#[test]
fn a_handle_knows_when_its_name_leads_elsewhere() {
    let name = Name::new("api", "stale");
    let first = Region::create(&name.0, &small()).unwrap();
    let inspector = Region::inspect(&name.0).unwrap();
    assert!(!first.is_stale() && !inspector.is_stale());
    Region::remove(&name.0).unwrap();
    assert!(first.is_stale() && inspector.is_stale());
    let second = Region::create(&name.0, &small()).unwrap();
    assert!(first.is_stale() && inspector.is_stale());
    assert!(!second.is_stale());
    assert!(!Region::in_process(&small()).unwrap().is_stale());
}

/// Every handle of one region gives the same addresses: a process that
/// attached twice may use an address from either handle with a mailbox of
/// the other.
#[test]
fn addresses_are_the_regions_not_the_handles() {
    let name = Name::new("api", "twohandles");
    let first = Region::create(&name.0, &small()).unwrap();
    let second = Region::open(&name.0).unwrap();
    let a = first.join("a").unwrap();
    let b = second.join("b").unwrap();
    assert_eq!(first.address("b").unwrap(), b.address());
    assert_eq!(second.address("a").unwrap(), a.address());
    // A read-only handle, and the participants' table, agree.
    let inspector = Region::inspect(&name.0).unwrap();
    assert_eq!(inspector.address("a").unwrap(), a.address());
    let listed: Vec<_> = first.participants().iter().map(|p| p.address).collect();
    assert!(listed.contains(&a.address()) && listed.contains(&b.address()));
    a.send_copy(b"to b", &first.address("b").unwrap()).unwrap();
    let msg = b.try_recv().unwrap();
    assert_eq!(&*msg, b"to b");
    assert_eq!(msg.sender(), a.address());
    b.send_copy(b"to a", &msg.sender()).unwrap();
    drop(msg);
    assert_eq!(&*a.try_recv().unwrap(), b"to a");
}

fn to_mailbox<'a>(to: &shmbox::Address, b: &'a Mailbox, c: &'a Mailbox) -> &'a Mailbox {
    match *to == b.address() {
        true => b,
        false => c,
    }
}

#[test]
fn send_timeout_is_honoured_and_send_wakes_on_room() {
    let _w = watchdog("send_timeout", Duration::from_secs(30));
    let name = Name::new("api", "sendwait");
    let config = small().with_classes(&[SizeClass::new(64, 8)]);
    let region = Region::create(&name.0, &config).unwrap();
    let b = region.join("b").unwrap();
    let to = b.address();
    let (timed_out_tx, timed_out_rx) = mpsc::channel();
    std::thread::scope(|s| {
        let region = &region;
        let sender = s.spawn(move || {
            let a = region.join("a").unwrap();
            a.send_copy(b"1", &to).unwrap();
            a.send_copy(b"2", &to).unwrap();
            let started = Instant::now();
            let loan = a.loan(1).unwrap();
            match a.send_timeout(loan, &to, Duration::from_millis(50)) {
                Err(SendTimeoutError::Timeout(_)) => {}
                other => panic!("expected Timeout, got {other:?}"),
            }
            assert!(started.elapsed() >= Duration::from_millis(50));
            timed_out_tx.send(()).unwrap();
            a.send_copy(b"3", &to).unwrap(); // blocks until b makes room
        });
        timed_out_rx.recv().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(&*b.recv().unwrap(), b"1");
        sender.join().unwrap();
    });
    assert_eq!(&*b.recv().unwrap(), b"2");
    assert_eq!(&*b.recv().unwrap(), b"3");
    assert_pool_full_when_idle(&region, &[&b]);
}

#[test]
fn exhausted_pool_then_loan_wakes_on_release() {
    let _w = watchdog("exhausted pool", Duration::from_secs(30));
    let name = Name::new("api", "exhaust");
    let region = Region::create(&name.0, &small()).unwrap();
    let me = region.join("me").unwrap();
    let (held_tx, held_rx) = mpsc::channel();
    std::thread::scope(|s| {
        let region = &region;
        s.spawn(move || {
            let holder = region.join("holder").unwrap();
            let first = holder.loan(64).unwrap();
            let second = holder.loan(64).unwrap();
            held_tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(100));
            drop(first);
            std::thread::sleep(Duration::from_millis(100));
            drop(second);
        });
        held_rx.recv().unwrap();
        let err = me.try_loan(10).unwrap_err();
        assert_eq!(err, TryLoanError::Exhausted { class_size: 64 });
        assert!(err.to_string().contains("64-byte size class"), "{err}");
        // A bigger class is unaffected.
        assert_eq!(me.try_loan(100).unwrap().capacity(), 1024);
        // Each blocking loan wakes when the holder drops a chunk.
        let one = me.loan(10).unwrap();
        let two = me.loan(10).unwrap();
        drop((one, two));
    });
    assert_pool_full_when_idle(&region, &[&me]);
}

#[test]
fn loan_timeout_is_honoured() {
    let _w = watchdog("loan_timeout_is_honoured", Duration::from_secs(30));
    let name = Name::new("api", "loanwait");
    let region = Region::create(&name.0, &small()).unwrap();
    let me = region.join("me").unwrap();
    let other = region.join("other").unwrap();
    let hold = (other.loan(1).unwrap(), other.loan(1).unwrap());
    let started = Instant::now();
    let err = me.loan_timeout(1, Duration::from_millis(50)).unwrap_err();
    assert_eq!(err, LoanError::Timeout { class_size: 64 });
    assert!(started.elapsed() >= Duration::from_millis(50));
    drop(hold);
}

/// A loan that only the loaner itself could satisfy (it holds every chunk
/// of the class: a loan, a message received, a message to itself, a
/// message a live peer queued for it) ends with `HeldByCaller` instead of
/// waiting for ever; one chunk held by anyone else, and it waits as usual.
#[test]
fn a_loan_waiting_for_the_loaners_own_chunks_ends() {
    let _w = watchdog(
        "a loan waiting for the loaner's own chunks",
        Duration::from_secs(30),
    );
    let name = Name::new("api", "ownchunks");
    let config = small().with_classes(&[SizeClass::new(64, 3)]);
    let region = Region::create(&name.0, &config).unwrap();
    let me = region.join("me").unwrap();
    let other = region.join("other").unwrap();
    let held_elsewhere = other.loan(1).unwrap();
    me.send_copy(b"a", &me.address()).unwrap();
    let received = me.recv().unwrap();
    me.send_copy(b"b", &me.address()).unwrap();
    // Another participant holds one: that is a wait with an end.
    assert_eq!(
        me.loan_timeout(1, Duration::from_millis(100)).unwrap_err(),
        LoanError::Timeout { class_size: 64 }
    );
    drop(held_elsewhere);
    other.give_back_kept();
    let loan = me.loan(1).unwrap();
    let held = LoanError::HeldByCaller { class_size: 64 };
    let started = Instant::now();
    assert_eq!(me.loan(1).unwrap_err(), held);
    assert_eq!(
        me.loan_timeout(1, Duration::from_secs(20)).unwrap_err(),
        held
    );
    assert_eq!(
        me.send_copy(b"c", &other.address()),
        Err(SendCopyError::HeldByCaller { class_size: 64 })
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // Any one given back, and loans go on.
    drop(received);
    drop(me.loan(1).unwrap());
    drop(loan);
    // The last one queued in our own mailbox by a live peer: its bit stays
    // on the chunk until we take the entry, and only we can.
    me.give_back_kept();
    let loan = me.loan(1).unwrap();
    other.send_copy(b"c", &me.address()).unwrap();
    assert_eq!(me.loan(1).unwrap_err(), held);
    assert_eq!(&*me.recv().unwrap(), b"b");
    drop(me.loan(1).unwrap());
    assert_eq!(&*me.recv().unwrap(), b"c");
    drop(loan);
}

#[test]
fn blocking_recv_in_park_mode_is_woken_by_a_send() {
    let _w = watchdog("park recv", Duration::from_secs(30));
    let name = Name::new("api", "park");
    let region = Region::create(&name.0, &small()).unwrap();
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::scope(|s| {
        let region = &region;
        let receiver = s.spawn(move || {
            let rx = region.join_with("rx", WaitStrategy::Park).unwrap();
            ready_tx.send(rx.address()).unwrap();
            let msg = rx.recv().unwrap();
            msg.to_vec()
        });
        let to = ready_rx.recv().unwrap();
        std::thread::sleep(Duration::from_millis(100)); // let it park
        let tx = region.join("tx").unwrap();
        tx.send_copy(b"wake up", &to).unwrap();
        assert_eq!(receiver.join().unwrap(), b"wake up");
    });
}

#[test]
fn a_sleeping_receiver_keeps_its_share_until_a_loaner_waits() {
    with_a_sleeper_keeping_8(WaitStrategy::Park, "park-keeps", wait_for_the_share);
}

#[test]
fn an_adaptive_receiver_asleep_keeps_its_share_until_a_loaner_waits() {
    with_a_sleeper_keeping_8(WaitStrategy::Adaptive, "adaptive-keeps", wait_for_the_share);
}

#[test]
fn a_refused_try_loan_makes_sleepers_give_back_their_share() {
    with_a_sleeper_keeping_8(WaitStrategy::Park, "try-keeps", poll_for_the_share);
}

#[test]
fn a_refused_try_loan_makes_a_spinning_receiver_give_back_its_share() {
    // Awake, idle: it gives the share back at its next empty receive.
    with_a_sleeper_keeping_8(WaitStrategy::Spin, "spin-keeps", poll_for_the_share);
}

/// Only `try_loan`, never a blocking loan, gets the keeper's share: the
/// refusals ask for it; without that, this would spin until the deadline.
fn poll_for_the_share<'m>(tx: &'m Mailbox, loans: &mut Vec<Loan<'m>>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while loans.len() < 32 {
        match tx.try_loan(8) {
            Ok(loan) => loans.push(loan),
            Err(TryLoanError::Exhausted { .. }) => {
                assert!(Instant::now() < deadline, "the keeper kept its share");
                std::thread::sleep(Duration::from_micros(200));
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// A loan that waits for the class gets the sleeper's share.
fn wait_for_the_share<'m>(tx: &'m Mailbox, loans: &mut Vec<Loan<'m>>) {
    // Without the sleeper giving it back, these loans would time out.
    for _ in 0..8 {
        loans.push(tx.loan_timeout(8, Duration::from_secs(5)).unwrap());
    }
}

/// A region of 32 chunks of 64 bytes and 2 participants, in which "rx"
/// (waiting with `strategy`) sleeps in a receive (or, with `Spin`, spins
/// idle) keeping its share: min(16, 32 / (2 × 2)) = 8 chunks. "tx" takes the 24 others with `try_loan`,
/// none refused, then `take_the_rest` must get the sleeper's 8; then rx is
/// woken, and every chunk must be free again.
fn with_a_sleeper_keeping_8(
    strategy: WaitStrategy,
    tag: &'static str,
    take_the_rest: impl for<'m> FnOnce(&'m Mailbox, &mut Vec<Loan<'m>>),
) {
    let _w = watchdog(tag, Duration::from_secs(30));
    let name = Name::new("api", tag);
    let config = Config::default()
        .with_classes(&[SizeClass::new(64, 32)])
        .with_max_participants(2)
        .with_mailbox_capacity(64);
    let region = Region::create(&name.0, &config).unwrap();
    std::thread::scope(|s| {
        let region = &region;
        let (ready_tx, ready_rx) = mpsc::channel();
        let receiver = s.spawn(move || {
            let rx = region.join_with("rx", strategy).unwrap();
            // 12 messages to ourselves, then all received and dropped:
            // between messages we keep all 12 for our next loans.
            for i in 0..12u8 {
                rx.send_copy(&[i], &rx.address()).unwrap();
            }
            for i in 0..12u8 {
                assert_eq!(&*rx.recv().unwrap(), &[i]);
            }
            ready_tx.send(rx.address()).unwrap();
            // Asleep until the test sends a message.
            let msg = rx.recv_timeout(Duration::from_secs(20)).unwrap();
            assert_eq!(&*msg, b"wake");
        });
        let to = ready_rx.recv().unwrap();
        // Asleep (or, spinning, idle) with its share.
        eventually("rx idle keeping 8 chunks", || {
            region.participants().iter().any(|p| {
                p.name == "rx" && p.holding == 8 && (p.parked || strategy == WaitStrategy::Spin)
            })
        });
        // Exactly the 24 free chunks, with no refused loan (a refusal would
        // itself ask the sleeper to give its share back).
        let tx = region.join("tx").unwrap();
        let mut loans: Vec<_> = (0..24).map(|_| tx.try_loan(8).unwrap()).collect();
        assert_eq!(
            region.pool_usage()[0].free,
            0,
            "the sleeper kept more than its share"
        );
        take_the_rest(&tx, &mut loans);
        assert_eq!(loans.len(), 32);
        drop(loans);
        tx.send_copy(b"wake", &to).unwrap();
        receiver.join().unwrap();
    });
    assert_pool_full(&region);
}

#[test]
fn a_sender_waiting_for_room_keeps_no_chunks() {
    let _w = watchdog("blocked sender keeps nothing", Duration::from_secs(30));
    let name = Name::new("api", "send-keeps");
    let config = Config::default()
        .with_classes(&[SizeClass::new(64, 32)])
        .with_max_participants(2)
        .with_mailbox_capacity(2);
    let region = Region::create(&name.0, &config).unwrap();
    let rx = region.join("rx").unwrap();
    let to = rx.address();
    std::thread::scope(|s| {
        let region = &region;
        let (ready_tx, ready_rx) = mpsc::channel();
        let sender = s.spawn(move || {
            let tx = region.join("tx").unwrap();
            // Keep 12 chunks: 12 loans at once, all dropped.
            let loans: Vec<_> = (0..12).map(|_| tx.try_loan(8).unwrap()).collect();
            drop(loans);
            // Fill rx's mailbox, then wait for room.
            for i in 0..2u8 {
                tx.send_copy(&[i], &to).unwrap();
            }
            ready_tx.send(()).unwrap();
            let mut loan = tx.loan(1).unwrap();
            loan.copy_from_slice(&[2]);
            // Bounded, so that a failing check below ends the test.
            tx.send_timeout(loan, &to, Duration::from_secs(10))
                .map_err(|e| e.to_string())
                .unwrap();
        });
        ready_rx.recv().unwrap();
        // Until it waits: two queued chunks and the one it sends, nothing
        // kept.
        eventually("tx holding 3 chunks", || {
            region
                .participants()
                .iter()
                .any(|p| p.name == "tx" && p.holding == 3)
        });
        // Every chunk not queued or being sent can be loaned while the
        // sender waits: it gave back what it kept.
        let mut loans = Vec::new();
        while let Ok(loan) = rx.try_loan(8) {
            loans.push(loan);
        }
        assert_eq!(loans.len(), 32 - 3, "a sender waiting for room kept chunks");
        drop(loans);
        for i in 0..3u8 {
            assert_eq!(&*rx.recv_timeout(Duration::from_secs(5)).unwrap(), &[i]);
        }
        sender.join().unwrap();
    });
    drop(rx);
    assert_pool_full(&region);
}

#[test]
fn recv_timeout_is_honoured_for_every_strategy() {
    let _w = watchdog(
        "recv_timeout_is_honoured_for_every_strategy",
        Duration::from_secs(30),
    );
    let name = Name::new("api", "recvwait");
    let region = Region::create(&name.0, &small()).unwrap();
    let me = region.join("me").unwrap();
    for strategy in [
        WaitStrategy::Spin,
        WaitStrategy::Adaptive,
        WaitStrategy::Park,
    ] {
        me.set_wait_strategy(strategy);
        let started = Instant::now();
        let err = me.recv_timeout(Duration::from_millis(30)).unwrap_err();
        assert_eq!(err, RecvTimeoutError::Timeout);
        assert!(
            started.elapsed() >= Duration::from_millis(30),
            "{strategy:?}"
        );
    }
}

#[test]
fn too_large_messages_are_refused_with_the_limit() {
    let name = Name::new("api", "large");
    let region = Region::create(&name.0, &small()).unwrap();
    let me = region.join("me").unwrap();
    assert_eq!(
        me.try_loan(1025).unwrap_err(),
        TryLoanError::TooLarge {
            requested: 1025,
            max: 1024
        }
    );
    assert_eq!(
        me.loan(5000).unwrap_err(),
        LoanError::TooLarge {
            requested: 5000,
            max: 1024
        }
    );
    let err = me.send_copy(&[0; 2000], &me.address()).unwrap_err();
    assert_eq!(
        err,
        SendCopyError::TooLarge {
            requested: 2000,
            max: 1024
        }
    );
    assert!(
        err.to_string().contains("largest size class (1024 bytes)"),
        "{err}"
    );
}

/// A timeout too long for the clock (`Duration::MAX`) waits for ever
/// instead of panicking on the deadline's arithmetic.
#[test]
fn wait_for_takes_any_timeout() {
    let region = Region::in_process(&small()).unwrap();
    let peer = region.join("peer").unwrap();
    assert_eq!(
        region.wait_for("peer", Duration::MAX).unwrap(),
        peer.address()
    );
}

/// A participant awake but busy elsewhere (not calling in) keeps the
/// chunks it freed until it comes back, here every chunk of a class: a
/// loan elsewhere waits for them; `give_back_kept` returns them at once.
#[test]
fn give_back_kept_returns_what_a_busy_participant_keeps() {
    let _w = watchdog(
        "give_back_kept_returns_what_a_busy_participant_keeps",
        Duration::from_secs(30),
    );
    let config = small()
        .with_classes(&[SizeClass::new(64, 4)])
        .with_mailbox_capacity(4);
    let region = Region::in_process(&config).unwrap();
    let s = region.join("s").unwrap();
    let r = region.join("r").unwrap();
    for i in 0..4u8 {
        s.send_copy(&[i], &r.address()).unwrap();
    }
    for _ in 0..4 {
        drop(r.try_recv().unwrap());
    }
    assert!(matches!(r.try_recv(), Err(TryRecvError::Empty)));
    // `r` is off doing other work.
    assert!(matches!(
        s.loan_timeout(1, Duration::from_millis(50)),
        Err(LoanError::Timeout { .. })
    ));
    r.give_back_kept();
    let loans: Vec<_> = (0..4).map(|_| s.try_loan(1).expect("given back")).collect();
    drop(loans);
}

#[test]
fn bad_names_are_refused_with_what_is_allowed() {
    let long = "n".repeat(65);
    for bad in ["", "a/b", "..", ".x", "a b", long.as_str()] {
        let err = Region::create(bad, &small()).unwrap_err();
        assert!(matches!(err, CreateError::InvalidName(_)), "{bad:?}: {err}");
        assert!(matches!(Region::open(bad), Err(OpenError::InvalidName(_))));
    }
    let msg = Region::open("a/b").unwrap_err().to_string();
    assert!(msg.contains("A-Z a-z 0-9 _ - ."), "{msg}");
    let region = Region::in_process(&small()).unwrap();
    assert!(matches!(region.join("x/y"), Err(JoinError::InvalidName(_))));
    assert!(matches!(
        region.address(""),
        Err(LookupError::InvalidName(_))
    ));
}

#[test]
fn foreign_and_mismatching_objects_are_refused() {
    let name = Name::new("api", "foreign");
    std::fs::write(name.path(), vec![0xabu8; 8192]).unwrap();
    let err = Region::open(&name.0).unwrap_err();
    assert!(matches!(err, OpenError::NotShmbox { .. }), "{err}");
    assert!(err.to_string().contains("is not a shmbox region"), "{err}");

    let short = Name::new("api", "short");
    std::fs::write(short.path(), b"tiny").unwrap();
    assert!(matches!(
        Region::open(&short.0),
        Err(OpenError::NotShmbox { .. })
    ));

    let versioned = Name::new("api", "version");
    drop(Region::create(&versioned.0, &small()).unwrap());
    let mut bytes = std::fs::read(versioned.path()).unwrap();
    bytes[8] = 99;
    std::fs::write(versioned.path(), &bytes).unwrap();
    let err = Region::open(&versioned.0).unwrap_err();
    assert!(
        matches!(
            err,
            OpenError::Version {
                found: 99,
                expected: 8,
                ..
            }
        ),
        "{err}"
    );

    let truncated = Name::new("api", "truncated");
    drop(Region::create(&truncated.0, &small()).unwrap());
    let bytes = std::fs::read(truncated.path()).unwrap();
    std::fs::write(truncated.path(), &bytes[..bytes.len() - 4096]).unwrap();
    let err = Region::open(&truncated.0).unwrap_err();
    assert!(matches!(err, OpenError::Corrupt { .. }), "{err}");

    let absent = Name::new("api", "absent");
    assert!(matches!(
        Region::open(&absent.0),
        Err(OpenError::NotFound { .. })
    ));
}

/// Total size of the filesystem behind /dev/shm.
fn dev_shm_size() -> u64 {
    let out = std::process::Command::new("df")
        .args(["-B1", "--output=size", "/dev/shm"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().nth(1).unwrap().trim().parse().unwrap()
}

#[test]
fn a_region_larger_than_dev_shm_fails_cleanly() {
    let name = Name::new("api", "nospace");
    let chunk = 1u64 << 30;
    let count = (dev_shm_size() / chunk + 2) as u32;
    let config = Config::default().with_classes(&[SizeClass::new(chunk, count)]);
    match Region::create(&name.0, &config) {
        Err(e @ CreateError::NoSpace { .. }) => {
            let CreateError::NoSpace { needed, .. } = e else {
                unreachable!()
            };
            assert_eq!(needed, config.total_size());
            assert!(
                e.to_string().contains(&format!("needs {needed} bytes")),
                "{e}"
            );
        }
        other => panic!("expected NoSpace, got {other:?}"),
    }
    assert!(
        !std::path::Path::new(&name.path()).exists(),
        "failed create left its object behind"
    );
}

#[test]
fn stale_addresses_are_refused_not_misdelivered() {
    let _w = watchdog(
        "stale_addresses_are_refused_not_misdelivered",
        Duration::from_secs(30),
    );
    let region = Region::in_process(&small()).unwrap();
    let a = region.join("a").unwrap();
    let old = region.join("b").unwrap().address(); // joins and leaves at once
    let b2 = region.join("b").unwrap();
    assert_eq!(b2.address().slot(), old.slot(), "slot reused");
    assert_ne!(b2.address().generation(), old.generation());
    let loan = a.loan(1).unwrap();
    assert!(matches!(
        a.try_send(loan, &old),
        Err(TrySendError::Disconnected(_))
    ));
    assert_eq!(a.send_copy(b"x", &old), Err(SendCopyError::Disconnected));
    assert!(matches!(b2.try_recv(), Err(TryRecvError::Empty)));
    assert_eq!(region.address("b").unwrap(), b2.address());
    assert_pool_full_when_idle(&region, &[&a, &b2]);
}

/// Sends racing their receiver's leave and a newcomer's join of the same
/// slot: each message is refused, or released with the departed
/// receiver's mailbox, never left in the newcomer's queue (which skips an
/// entry for the departed receiver, leaving its chunk with the sender, lost
/// to everyone until the sender leaves). A third thread only burns CPU, so
/// that the sender is now and then preempted in the middle of a send.
#[test]
fn sends_racing_a_slot_changing_hands_leak_no_chunk() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let _w = watchdog(
        "sends_racing_a_slot_changing_hands_leak_no_chunk",
        Duration::from_secs(60),
    );
    let config = small().with_classes(&[SizeClass::new(64, 8)]);
    let region = Region::in_process(&config).unwrap();
    let stop = AtomicBool::new(false);
    let (region, stop) = (&region, &stop);
    std::thread::scope(|s| {
        s.spawn(move || {
            // About a million changes of hands, here.
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(2) {
                let b = region.join("b").unwrap();
                while b.try_recv().is_ok() {}
            }
            stop.store(true, Ordering::Relaxed);
        });
        s.spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        });
        s.spawn(move || {
            let tx = region.join("tx").unwrap();
            let (mut sent, mut refused) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let Ok(to) = region.address("b") else {
                    continue;
                };
                // Never blocking: a lost chunk must fail the check below,
                // not hang a blocking loan.
                let Ok(loan) = tx.try_loan(1) else {
                    continue;
                };
                match tx.try_send(loan, &to) {
                    Ok(()) => sent += 1,
                    Err(_) => refused += 1,
                }
            }
            assert!(sent > 0, "no send went through ({refused} refused)");
            // Everyone else has left: every chunk of the region is ours to
            // loan again, at once.
            let loans: Vec<_> = (0..8)
                .map(|i| {
                    tx.try_loan(1).unwrap_or_else(|e| {
                        panic!("chunk {i} of 8 lost ({sent} sent, {refused} refused): {e}")
                    })
                })
                .collect();
            drop(loans);
        });
    });
    assert_pool_full(region);
}

#[test]
fn leaving_releases_queued_messages() {
    let _w = watchdog("leaving_releases_queued_messages", Duration::from_secs(30));
    let region = Region::in_process(&small()).unwrap();
    let a = region.join("a").unwrap();
    let b = region.join("b").unwrap();
    a.send_copy(b"one", &b.address()).unwrap();
    a.send_copy(&[0; 500], &b.address()).unwrap();
    assert_eq!(region.pool_usage()[0].free, 1);
    drop(b);
    assert_pool_full(&region);
    assert_eq!(region.participants().len(), 1);
}

#[test]
fn names_are_unique_and_slots_limited() {
    let region = Region::in_process(&small()).unwrap();
    let _a = region.join("a").unwrap();
    assert_eq!(
        region.join("a").unwrap_err(),
        JoinError::NameTaken("a".into())
    );
    let _b = region.join("b").unwrap();
    let _c = region.join("c").unwrap();
    let _d = region.join("d").unwrap();
    assert_eq!(region.join("e").unwrap_err(), JoinError::Full { max: 4 });
    assert_eq!(
        region.address("zz").unwrap_err(),
        LookupError::NotFound("zz".into())
    );
}

#[test]
fn concurrent_joins_of_one_name_have_one_winner() {
    let _w = watchdog("join race", Duration::from_secs(60));
    let region = Region::in_process(&Config::default().with_max_participants(16)).unwrap();
    for round in 0..200 {
        let barrier = std::sync::Barrier::new(8);
        let wins: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        let joined = region.join("same");
                        let won = joined.is_ok();
                        barrier.wait(); // hold the name until everyone tried
                        won
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| usize::from(h.join().unwrap()))
                .sum()
        });
        assert_eq!(wins, 1, "round {round}");
    }
}

#[test]
fn threads_exchange_many_messages_without_loss() {
    let _w = watchdog("thread stress", Duration::from_secs(120));
    let region = Region::in_process(&small().with_mailbox_capacity(8)).unwrap();
    const SENDERS: u32 = 3;
    const PER: u32 = 20_000;
    std::thread::scope(|s| {
        let rx = region.join("rx").unwrap();
        let to = rx.address();
        for id in 0..SENDERS {
            let region = &region;
            s.spawn(move || {
                let tx = region.join(&format!("tx{id}")).unwrap();
                for seq in 0..PER {
                    let len = 8 + (seq as usize * 7) % 1000;
                    let mut loan = tx.loan(len).unwrap();
                    loan[..4].copy_from_slice(&id.to_le_bytes());
                    loan[4..8].copy_from_slice(&seq.to_le_bytes());
                    tx.send(loan, &to).unwrap();
                }
            });
        }
        let mut next = [0u32; SENDERS as usize];
        for _ in 0..SENDERS * PER {
            let msg = rx.recv().unwrap();
            let id = u32::from_le_bytes(msg[..4].try_into().unwrap()) as usize;
            let seq = u32::from_le_bytes(msg[4..8].try_into().unwrap());
            assert_eq!(seq, next[id]);
            assert_eq!(msg.len(), 8 + (seq as usize * 7) % 1000);
            next[id] += 1;
        }
    });
    assert_pool_full(&region);
}

#[test]
fn a_creator_that_died_mid_initialisation_does_not_wedge_the_name() {
    let _w = watchdog("abandoned region", Duration::from_secs(60));
    // What a creator leaves when killed at each step: an empty object (right
    // after shm_open), reserved but blank space (after fallocate), and a
    // header with the magic but never marked ready.
    let blank = vec![0u8; 1 << 20];
    let mut half = blank.clone();
    half[..8].copy_from_slice(b"SHMBOX\0\x01");
    half[8] = 1; // version 1, state still "initialising"
    for (what, bytes) in [
        ("empty", &[][..]),
        ("blank", &blank[..]),
        ("half", &half[..]),
    ] {
        let name = Name::new("api", &format!("abandoned-{what}"));
        std::fs::write(name.path(), bytes).unwrap();
        let err = Region::open(&name.0).unwrap_err();
        assert!(matches!(err, OpenError::Abandoned { .. }), "{what}: {err}");
        assert!(err.to_string().contains("open_or_create"), "{err}");
        let region = Region::open_or_create(&name.0, &small()).unwrap();
        assert!(region.created(), "{what}: the next opener recreates it");
        let me = region.join("me").unwrap();
        me.send_copy(b"ok", &me.address()).unwrap();
        assert_eq!(&*me.recv().unwrap(), b"ok");
        // A ready region is not removed as abandoned.
        assert!(!Region::remove_abandoned(&name.0).unwrap());
        drop((me, region));
        Region::remove(&name.0).unwrap();
        // Left behind again, it is removed, and `create` then succeeds.
        std::fs::write(name.path(), bytes).unwrap();
        assert!(matches!(
            Region::create(&name.0, &small()),
            Err(CreateError::AlreadyExists { .. })
        ));
        assert!(Region::remove_abandoned(&name.0).unwrap(), "{what}");
        assert!(Region::create(&name.0, &small()).is_ok(), "{what}");
    }
}

#[test]
fn participants_report_counters_and_holdings() {
    let _w = watchdog("counters", Duration::from_secs(30));
    let name = Name::new("api", "counters");
    let region = Region::create(&name.0, &small().with_mailbox_capacity(4)).unwrap();
    let a = region.join_with("a", WaitStrategy::Spin).unwrap();
    let b = region.join("b").unwrap();
    a.send_copy(&[1; 10], &b.address()).unwrap();
    a.send_copy(&[2; 20], &b.address()).unwrap();
    let msg = b.recv().unwrap();
    let _loan = a.loan(100).unwrap();
    assert!(b.recv_timeout(Duration::from_millis(1)).is_ok());
    assert!(b.recv_timeout(Duration::from_millis(1)).is_err());
    // Counters reach shared memory every 64 events and whenever a
    // participant is idle (a receive that finds nothing).
    assert!(a.try_recv().is_err());
    let info = region.participants();
    let (pa, pb) = (&info[0], &info[1]);
    assert_eq!((pa.name.as_str(), pb.name.as_str()), ("a", "b"));
    assert!(pa.alive && pb.alive);
    assert_eq!(pa.strategy, WaitStrategy::Spin);
    assert_eq!(pb.strategy, WaitStrategy::Adaptive);
    assert_eq!((pa.stats.sent, pa.stats.bytes_sent), (2, 30));
    assert_eq!((pb.stats.received, pb.stats.bytes_received), (2, 30));
    // A receive that timed out is not counted: only senders held back.
    assert_eq!(pb.stats.timeouts, 0);
    assert_eq!(pa.holding, 1, "the loan");
    assert_eq!(pb.holding, 1, "the message still held");
    assert_eq!(pb.capacity, 4);
    drop(msg);
    assert_eq!(
        region.participants()[1].holding,
        1,
        "kept for b's next loan"
    );
    assert!(b.try_recv().is_err());
    assert_eq!(region.participants()[1].holding, 0, "given back when idle");
    // A loan held back (b holds the rest of the class) is counted.
    let held: Vec<_> = (0..3).map(|_| b.loan(100).unwrap()).collect();
    assert!(matches!(
        a.loan_timeout(100, Duration::from_millis(1)),
        Err(LoanError::Timeout { .. })
    ));
    assert_eq!(region.participants()[0].stats.timeouts, 1);
    drop(held);
    assert!(Region::list().unwrap().contains(&name.0));
    assert!(region.info().size == region.size() && region.info().creator_pid == std::process::id());
}

#[test]
fn a_region_in_use_is_never_taken_for_abandoned() {
    let name = Name::new("api", "in-use");
    let region = Region::create(&name.0, &small()).unwrap();
    let alice = region.join("alice").unwrap();
    // Scribble "still initialising" into the state word of a live region.
    let mut bytes = std::fs::read(name.path()).unwrap();
    bytes[12..16].copy_from_slice(&0u32.to_le_bytes());
    std::fs::write(name.path(), &bytes).unwrap();
    let err = Region::open(&name.0).unwrap_err();
    assert!(matches!(err, OpenError::Corrupt { .. }), "{err}");
    let err = Region::open_or_create(&name.0, &small()).unwrap_err();
    assert!(matches!(err, OpenError::Corrupt { .. }), "{err}");
    // Alice's region is still the one behind the name.
    assert_eq!(region.address("alice").unwrap(), alice.address());

    // A header edited into another self-consistent config (class 0 of 48
    // instead of 64 bytes keeps the same chunk spacing) is caught too.
    let edited = Name::new("api", "edited");
    drop(Region::create(&edited.0, &small()).unwrap());
    let mut bytes = std::fs::read(edited.path()).unwrap();
    let at = 64 + 48; // header info: class_size[0]
    assert_eq!(bytes[at..at + 8], 64u64.to_le_bytes());
    bytes[at..at + 8].copy_from_slice(&48u64.to_le_bytes());
    std::fs::write(edited.path(), &bytes).unwrap();
    let err = Region::open(&edited.0).unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");
}

#[test]
fn a_region_holds_exactly_its_size_in_memory() {
    let _w = watchdog(
        "a_region_holds_exactly_its_size_in_memory",
        Duration::from_secs(30),
    );
    let name = Name::new("api", "resident");
    let config = Config::default();
    let region = Region::create(&name.0, &config).unwrap();
    assert_eq!(region.size(), config.total_size());
    // Reserved up front, and nothing more: the object holds exactly the
    // region's size, before and after traffic.
    assert_eq!(region.resident_bytes().unwrap(), config.total_size());
    let a = region.join("a").unwrap();
    for len in [1, 64, 1000, 16 << 10, 200 << 10, 1 << 20] {
        a.send_copy(&vec![7u8; len], &a.address()).unwrap();
        assert_eq!(a.try_recv().unwrap().len(), len);
    }
    assert_eq!(region.resident_bytes().unwrap(), config.total_size());
}

#[test]
fn batches_carry_many_records_in_one_entry() {
    let _w = watchdog(
        "batches_carry_many_records_in_one_entry",
        Duration::from_secs(30),
    );
    let name = Name::new("api", "batch");
    let region = Region::create(&name.0, &Config::default()).unwrap();
    let (a, b) = (region.join("a").unwrap(), region.join("b").unwrap());
    let mut batch = a.try_batch(1024).unwrap();
    assert!(batch.is_empty());
    // Records of every length from 0 to 40 bytes, each filled with its own
    // length, until the chunk is full.
    let mut sent = Vec::new();
    for len in (0..=40).cycle() {
        match batch.push(len) {
            Some(record) => {
                assert_eq!(record.len(), len);
                record.fill(len as u8);
                sent.push(len);
            }
            None => break,
        }
    }
    assert_eq!(batch.len(), sent.len());
    assert!(batch.remaining() < shmbox::record_size(sent.len() % 41));
    let room = batch.remaining();
    assert_eq!(batch.push_copy(&[]), room >= shmbox::RECORD_HEADER);
    let sent_len = batch.len();
    let loan = batch.finish();
    assert!(loan.is_batch());
    a.try_send(loan, &b.address()).unwrap();
    assert_eq!(b.pending(), 1, "one mailbox entry for the whole batch");

    let msg = b.try_recv().unwrap();
    assert!(msg.is_batch());
    let got: Vec<&[u8]> = msg.records().map(Result::unwrap).collect();
    assert_eq!(got.len(), sent_len);
    for (record, &len) in got.iter().zip(&sent) {
        assert_eq!(record.len(), len);
        assert!(record.iter().all(|&byte| byte == len as u8));
        // Every record starts 8-byte aligned in the shared buffer.
        assert_eq!(record.as_ptr() as usize % 8, 0);
    }
    drop(msg);

    // A plain message reads as one record.
    a.send_copy(b"plain", &b.address()).unwrap();
    let msg = b.try_recv().unwrap();
    assert!(!msg.is_batch());
    let records: Vec<_> = msg.records().collect();
    assert_eq!(records, vec![Ok(&b"plain"[..])]);
    drop(msg);
    assert_pool_full_when_idle(&region, &[&a, &b]);
}

#[test]
fn a_batch_with_a_bad_record_length_is_an_error_not_a_crash() {
    let _w = watchdog(
        "a_batch_with_a_bad_record_length_is_an_error_not_a_crash",
        Duration::from_secs(30),
    );
    let name = Name::new("api", "badbatch");
    let region = Region::create(&name.0, &Config::default()).unwrap();
    let (a, b) = (region.join("a").unwrap(), region.join("b").unwrap());
    let mut batch = a.try_batch(64).unwrap();
    batch.push_copy(b"good");
    batch.push_copy(b"next");
    let mut loan = batch.finish();
    // The second record claims far more bytes than the batch has.
    loan[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
    a.try_send(loan, &b.address()).unwrap();
    let msg = b.try_recv().unwrap();
    let mut records = msg.records();
    assert_eq!(records.next(), Some(Ok(&b"good"[..])));
    let err = records.next().unwrap().unwrap_err();
    assert!(err.reason().contains("runs past"), "{err}");
    assert_eq!(records.next(), None, "iteration ends at the bad record");
    // A batch cut in the middle of a record header.
    let mut batch = a.try_batch(64).unwrap();
    batch.push_copy(b"x");
    let mut loan = batch.finish();
    loan.resize(20);
    a.try_send(loan, &b.address()).unwrap();
    let msg = b.try_recv().unwrap();
    let results: Vec<_> = msg.records().collect();
    assert_eq!(results.len(), 2);
    assert!(results[1]
        .as_ref()
        .unwrap_err()
        .reason()
        .contains("record header"));
}
