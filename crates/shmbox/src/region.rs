//! [`Region`]: a named shared-memory region, or an in-process one.

use crate::config::Config;
use crate::error::{CreateError, JoinError, LookupError, OpenError, RemoveError};
use crate::layout::{
    self, Backing, HeapBuf, Layout, LayoutError, Mapped, HEADER_SIZE, LOCK_ATTACH, LOCK_INIT,
    LOCK_SLOTS, STATE_INITIALIZING, STATE_READY,
};
use crate::mailbox::{Address, Mailbox, WaitStrategy};
use crate::sweep::{self, SweepReport};
use crate::sys::{self, LockKind, Mapping, SharedFutex};
use crate::{name, registry};
use rustix::fd::OwnedFd;
use rustix::io::Errno;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long `open` waits for a live creator to finish initialising.
const INIT_WAIT: Duration = Duration::from_secs(2);
/// How long an empty object without a creator's lock is given before it
/// counts as abandoned (a creator holds the lock microseconds after
/// creating the object).
const ABANDON_GRACE: Duration = Duration::from_millis(100);

pub(crate) struct Shared {
    pub(crate) mapped: Mapped,
    pub(crate) futex: SharedFutex,
    name: Option<String>,
    created: bool,
    /// The region's object, holding this handle's shared attach lock;
    /// `None` for an in-process region.
    pub(crate) fd: Option<OwnedFd>,
    /// Keeps this process's own sweeps apart (OFD locks taken through one
    /// file description do not exclude each other).
    sweeping: Mutex<()>,
    /// Opened read-only and mapped privately, without an attach lock
    /// ([`Region::inspect`]): nothing stores to `mapped`.
    read_only: bool,
}

/// A message region: a named POSIX shared-memory object (or, for tests and
/// single-process use, a heap buffer) holding the participant table, the
/// mailboxes and the message buffer.
///
/// `Region` is a cheap handle (`Clone`, `Send`, `Sync`); the mapping stays
/// alive while any handle, mailbox, loan or message refers to it.
///
/// # Examples
///
/// ```no_run
/// use shmbox::{Config, Region};
/// let region = Region::open_or_create("demo", &Config::default())?;
/// let me = region.join("client")?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Region {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("name", &self.shared.name)
            .field("size", &self.size())
            .finish()
    }
}

/// Occupancy of one size class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassUsage {
    /// Payload bytes per chunk.
    pub size: u64,
    /// Chunks in the class.
    pub count: u32,
    /// Chunks nobody holds.
    pub free: u32,
    /// Chunks held only by participants that are dead (or gone): what the
    /// next [`Region::sweep`] will return to the pool. Zero right after a
    /// sweep.
    pub held_by_dead: u32,
}

/// A participant as seen in the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantInfo {
    /// Its address.
    pub address: Address,
    /// Its name; `<unreadable name …>` (its bytes in hex) if the slot's
    /// name is not a valid one, which only a scribble on the region makes.
    pub name: String,
    /// The pid it joined from (information only; never used for liveness).
    pub pid: u32,
    /// Messages waiting in its mailbox.
    pub queued: u64,
    /// Whether its process is alive. A dead participant stays in the table
    /// until a sweep reclaims it.
    pub alive: bool,
    /// How it waits for messages.
    pub strategy: WaitStrategy,
    /// Whether it is asleep in `recv` right now.
    pub parked: bool,
    /// Capacity of its mailbox.
    pub capacity: u64,
    /// Chunks carrying its holder bit: loaned, being read, or queued for it.
    pub holding: u32,
    /// Its counters since it joined.
    pub stats: ParticipantStats,
}

/// A participant's counters, kept in shared memory on a cache line of its
/// own and written only by the participant itself (relaxed stores), so
/// anyone can read them without disturbing it. The participant counts in
/// its own memory and copies the totals to shared memory every 64 events
/// and whenever it is idle (a receive finds its mailbox empty), so a busy
/// participant's figures may lag by up to 63 events.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ParticipantStats {
    /// Messages sent.
    pub sent: u64,
    /// Messages received.
    pub received: u64,
    /// Payload bytes sent.
    pub bytes_sent: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
    /// `try_send` calls refused because the receiver's mailbox was full.
    pub full: u64,
    /// Timed-out `send_timeout` and `loan_timeout` calls: a sender held
    /// back by a full mailbox or an exhausted pool. (A `recv_timeout` that
    /// times out is an idle receiver, not one held back: not counted.)
    pub timeouts: u64,
}

/// Facts about a region from its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionInfo {
    /// Size in bytes.
    pub size: u64,
    /// Layout version.
    pub version: u32,
    /// When it was created.
    pub created: std::time::SystemTime,
    /// Pid of the process that created it (information only).
    pub creator_pid: u32,
}

fn io(e: Errno) -> std::io::Error {
    std::io::Error::from_raw_os_error(e.raw_os_error())
}

/// How [`Region::open_inner`] opens an object.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Read-write (`Region::attach` then takes the shared attach lock).
    Attach,
    /// Read-only, without the attach lock.
    Inspect,
}

/// What `open` found at a name, short of a usable region.
enum Opened {
    Ready(Region),
    /// The creator died before finishing; (device, inode) of the object.
    Abandoned((u64, u64)),
}

impl Region {
    /// Creates the region `name` with `config`. Fails if it already exists.
    ///
    /// Space is reserved up front with `fallocate`, so a too-small
    /// `/dev/shm` gives [`CreateError::NoSpace`] here, never a `SIGBUS`
    /// later. The object is created with `config`'s mode (default `0600`).
    pub fn create(name: &str, config: &Config) -> Result<Region, CreateError> {
        name::validate_region(name)?;
        config.validate()?;
        let layout = Layout::compute(config);
        let object = sys::object_name(name);
        let io_err = |op, e| CreateError::Io {
            name: name.into(),
            op,
            source: io(e),
        };
        let fd = sys::shm_create_exclusive(&object, config.mode).map_err(|e| match e {
            Errno::EXIST => CreateError::AlreadyExists { name: name.into() },
            Errno::ACCESS | Errno::PERM => CreateError::PermissionDenied { name: name.into() },
            e => io_err("shm_open", e),
        })?;
        #[cfg(all(test, not(shmbox_loom)))]
        tests::stall_after_create(name);
        // Removed on failure only if the name is still ours: stalled long
        // enough before taking the lock below, we may have been taken for
        // a creator that died, and the name given to another region.
        let id = sys::identity(&fd).ok();
        let fail = |err: CreateError| {
            if let Some(id) = id {
                let _ = unlink_if_same(name, id);
            }
            err
        };
        // The init lock, held until the region is ready: openers that find
        // the region not ready and this lock gone know we died. And the
        // attach lock, from the start, so that nobody can take the region
        // for unused and replace it between our ready and our return. (An
        // opener that finds it not ready, attached and without the init
        // lock calls it corrupt: we hold both until ready, and a creator
        // that dies loses both.) The object is new: nobody else holds
        // either.
        for (kind, byte) in [
            (LockKind::Exclusive, LOCK_INIT),
            (LockKind::Shared, LOCK_ATTACH),
        ] {
            match sys::ofd_try_lock(&fd, kind, byte) {
                Ok(true) => {}
                Ok(false) => return Err(fail(io_err("fcntl(F_OFD_SETLK)", Errno::AGAIN))),
                Err(e) => return Err(fail(io_err("fcntl(F_OFD_SETLK)", e))),
            }
        }
        if let Some(limit) = sys::file_size_limit().filter(|&l| l < layout.total_size) {
            return Err(fail(CreateError::FileSizeLimit {
                name: name.into(),
                needed: layout.total_size,
                limit,
            }));
        }
        if let Err(e) = sys::reserve(&fd, layout.total_size) {
            return Err(fail(match e {
                Errno::NOSPC | Errno::FBIG | Errno::NOMEM => CreateError::NoSpace {
                    name: name.into(),
                    needed: layout.total_size,
                    available: sys::free_bytes(&fd),
                },
                e => io_err("fallocate", e),
            }));
        }
        let map =
            Mapping::map(&fd, layout.total_size as usize).map_err(|e| fail(io_err("mmap", e)))?;
        let mapped = layout::create_in(Backing::Shm(map), layout);
        sys::ofd_unlock(&fd, LOCK_INIT);
        // The same stall: our object was removed as abandoned, and the
        // name is someone else's now (or nobody's).
        if sys::stat(&fd).map_err(|e| io_err("fstat", e))?.st_nlink == 0 {
            return Err(CreateError::AlreadyExists { name: name.into() });
        }
        Ok(Region::from_mapped(
            mapped,
            Some(name.into()),
            true,
            Some(fd),
            false,
        ))
    }

    /// Attaches to the existing region `name`, taking its config from the
    /// region's header. Waits (at most 2 s) for a creator that is still
    /// initialising it; refuses objects that are not shmbox regions, other
    /// layout versions, inconsistent headers, and regions whose creator died
    /// before finishing ([`OpenError::Abandoned`]).
    pub fn open(name: &str) -> Result<Region, OpenError> {
        match Region::attach(name, Instant::now() + INIT_WAIT)? {
            Opened::Ready(r) => Ok(r),
            Opened::Abandoned(_) => Err(OpenError::Abandoned { name: name.into() }),
        }
    }

    /// [`open_inner`](Self::open_inner) to attach, then the attach lock;
    /// opening the name again (until `deadline`) while its region is being
    /// replaced: the replacer holds the attach byte for a few system calls,
    /// then the name leads to the new region, or to nothing
    /// ([`OpenError::NotFound`]).
    fn attach(name: &str, deadline: Instant) -> Result<Opened, OpenError> {
        loop {
            let opened = Region::open_inner(name, Access::Attach)?;
            if let Opened::Ready(r) = &opened {
                if !r.lock_attach(name)? {
                    if Instant::now() >= deadline {
                        return Err(OpenError::NotFound { name: name.into() });
                    }
                    drop(opened);
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
            }
            return Ok(opened);
        }
    }

    /// Takes the attach byte shared. `false` if the region is being
    /// replaced: `open_or_create` replaces a region only with that byte
    /// locked exclusively, and removes the name before it lets go, so
    /// finding the byte taken, or the name gone once we hold it, we were
    /// attaching to a region being replaced.
    fn lock_attach(&self, name: &str) -> Result<bool, OpenError> {
        let fd = self.shared.fd.as_ref().expect("a region opened by name");
        let io_err = |op, e| OpenError::Io {
            name: name.into(),
            op,
            source: io(e),
        };
        let locked = sys::ofd_try_lock(fd, LockKind::Shared, LOCK_ATTACH)
            .map_err(|e| io_err("fcntl(F_OFD_SETLK)", e))?;
        let links = sys::stat(fd).map_err(|e| io_err("fstat", e))?.st_nlink;
        Ok(locked && links != 0)
    }

    /// Opens the existing region `name` for inspection only: its object is
    /// opened read-only and mapped as a private copy-on-write view (which
    /// shows every change the participants make, and which nothing
    /// stored through could reach the shared object), and no attach lock
    /// is taken. It needs only read permission, and an inspector never
    /// counts as attached
    /// (it does not keep a region from being recreated with another
    /// config). Everything that reads works — [`config`](Self::config),
    /// [`participants`](Self::participants),
    /// [`pool_usage`](Self::pool_usage), [`info`](Self::info),
    /// [`address`](Self::address); [`join`](Self::join) is refused with
    /// [`JoinError::ReadOnly`] and [`sweep`](Self::sweep) does nothing.
    /// The same checks as [`open`](Self::open) apply to the header.
    ///
    /// This is what `shmbox ls`, `info` and `watch` use.
    ///
    /// Two caveats of the private view: in a process that locks its
    /// memory (`mlockall(MCL_FUTURE)`) the view is copied when mapped and
    /// then shows the region as it was at that moment; and with strict
    /// overcommit (`vm.overcommit_memory = 2`) mapping a large region
    /// counts its whole size against the commit limit and may fail with
    /// an I/O error.
    pub fn inspect(name: &str) -> Result<Region, OpenError> {
        match Region::open_inner(name, Access::Inspect)? {
            Opened::Ready(r) => Ok(r),
            Opened::Abandoned(_) => Err(OpenError::Abandoned { name: name.into() }),
        }
    }

    /// Whether this handle was opened with [`inspect`](Self::inspect).
    pub fn is_read_only(&self) -> bool {
        self.shared.read_only
    }

    fn open_inner(name: &str, access: Access) -> Result<Opened, OpenError> {
        name::validate_region(name)?;
        let object = sys::object_name(name);
        let io_err = |op, e| OpenError::Io {
            name: name.into(),
            op,
            source: io(e),
        };
        let fd = match access {
            Access::Attach => sys::shm_open_existing(&object),
            Access::Inspect => sys::shm_open_read_only(&object),
        }
        .map_err(|e| match e {
            Errno::NOENT => OpenError::NotFound { name: name.into() },
            Errno::ACCESS | Errno::PERM => OpenError::PermissionDenied { name: name.into() },
            Errno::LOOP => not_shmbox(name, "a symbolic link"),
            Errno::ISDIR => not_shmbox(name, "a directory"),
            // `open` of a socket.
            Errno::NXIO => not_shmbox(name, "a socket"),
            e => io_err("shm_open", e),
        })?;
        if let Some(what) = sys::not_a_file(&fd).map_err(|e| io_err("fstat", e))? {
            return Err(not_shmbox(name, what));
        }
        let started = Instant::now();
        let creator_alive = || {
            sys::ofd_is_locked(&fd, LockKind::Shared, LOCK_INIT)
                .map_err(|e| io_err("fcntl(F_OFD_GETLK)", e))
        };
        let identity = || sys::identity(&fd).map_err(|e| io_err("fstat", e));
        loop {
            let size = sys::file_size(&fd).map_err(|e| io_err("fstat", e))?;
            let waited = started.elapsed();
            // However the header changes under us, give up in bounded time.
            if waited > 2 * INIT_WAIT {
                return Err(OpenError::InitTimeout {
                    name: name.into(),
                    waited,
                });
            }
            if size < HEADER_SIZE {
                if size > 0 {
                    return Err(OpenError::NotShmbox {
                        name: name.into(),
                        reason: LayoutError::Truncated(size).to_string(),
                    });
                }
                // The creator locks before it reserves space: an empty object
                // without the lock is left over by a creator that died.
                if !creator_alive()? && waited > ABANDON_GRACE {
                    return Ok(Opened::Abandoned(identity()?));
                }
                if waited > INIT_WAIT {
                    return Err(OpenError::InitTimeout {
                        name: name.into(),
                        waited: INIT_WAIT,
                    });
                }
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            // No config makes a larger one: do not map what cannot be a
            // region (a sparse object of terabytes would fail in `mmap`).
            if size > layout::MAX_REGION_SIZE {
                return Err(OpenError::NotShmbox {
                    name: name.into(),
                    reason: format!(
                        "object is {size} bytes, more than the {} a region may have",
                        layout::MAX_REGION_SIZE
                    ),
                });
            }
            let size_usize = usize::try_from(size).map_err(|_| OpenError::Corrupt {
                name: name.into(),
                reason: format!("object size {size} does not fit in memory"),
            })?;
            let mapping = match access {
                Access::Attach => Mapping::map(&fd, size_usize),
                Access::Inspect => Mapping::map_private(&fd, size_usize),
            };
            let backing = Backing::Shm(mapping.map_err(|e| io_err("mmap", e))?);
            let words = layout::header_words(&backing);
            let magic = words.magic.load(Ordering::Acquire);
            // SYNC POINT: pairs with the release store of READY in `create_in`.
            let state = words.state.load(Ordering::Acquire);
            let ready = state == STATE_READY;
            // Not ready yet (a zero magic on a ready region is corruption,
            // which `validate` reports).
            let ours = magic == 0 || magic == layout::MAGIC;
            if ours && !ready && state != STATE_INITIALIZING {
                return Err(OpenError::Corrupt {
                    name: name.into(),
                    reason: format!("state word {state:#x} is neither initialising nor ready"),
                });
            }
            if ours && !ready {
                if !creator_alive()? {
                    // A region someone is attached to was not abandoned,
                    // whatever its header says: never recreate it under them.
                    let in_use = sys::ofd_is_locked(&fd, LockKind::Exclusive, LOCK_ATTACH)
                        .map_err(|e| io_err("fcntl(F_OFD_GETLK)", e))?;
                    // Check `ready` once more first: the creator may have
                    // finished and dropped its lock since we looked.
                    if words.state.load(Ordering::Acquire) == STATE_READY {
                        continue;
                    }
                    if in_use {
                        return Err(OpenError::Corrupt {
                            name: name.into(),
                            reason: "the header says it is not initialised, yet it is in use"
                                .into(),
                        });
                    }
                    return Ok(Opened::Abandoned(identity()?));
                }
                if waited > INIT_WAIT {
                    return Err(OpenError::InitTimeout {
                        name: name.into(),
                        waited: INIT_WAIT,
                    });
                }
                drop(backing);
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            let mut layout = layout::validate(&backing, size).map_err(|e| match e {
                LayoutError::Magic(_) | LayoutError::Truncated(_) => OpenError::NotShmbox {
                    name: name.into(),
                    reason: e.to_string(),
                },
                LayoutError::Version { found } => OpenError::Version {
                    name: name.into(),
                    found,
                    expected: layout::VERSION,
                },
                e => OpenError::Corrupt {
                    name: name.into(),
                    reason: e.to_string(),
                },
            })?;
            // The object's own permission bits, not the header's word:
            // `chmod` changes them (anyone who owns the object may), and
            // `open_or_create` compares them with the mode it asks for.
            layout.config.mode = sys::stat(&fd).map_err(|e| io_err("fstat", e))?.st_mode & 0o777;
            let mapped = Mapped::new(backing, layout);
            return Ok(Opened::Ready(Region::from_mapped(
                mapped,
                Some(name.into()),
                false,
                Some(fd),
                access == Access::Inspect,
            )));
        }
    }

    /// Opens `name` if it exists with `config`, otherwise creates it. Of many
    /// processes racing here, exactly one creates; the others wait until it
    /// has initialised the region, then attach.
    ///
    /// A region left behind by processes that all died is reused as it is
    /// (its dead participants are swept when someone joins). If the region
    /// exists with a different config, it is recreated with `config` when
    /// nobody else is attached, and refused with
    /// [`OpenError::ConfigMismatch`] (naming both configs) when someone is.
    /// A region whose creator died while initialising it is recreated.
    /// Recreating means removing the old name, which only its owner (or
    /// root) may do: anyone else gets [`OpenError::PermissionDenied`].
    ///
    /// The mode is part of the config, read from the object itself: a
    /// region someone else made under the name, or opened up with
    /// `chmod`, is never joined with wider permissions than `config` asks
    /// for.
    pub fn open_or_create(name: &str, config: &Config) -> Result<Region, OpenError> {
        name::validate_region(name)?;
        config.validate().map_err(CreateError::from)?;
        // One wait for regions being replaced, however many attempts.
        let deadline = Instant::now() + INIT_WAIT;
        for _ in 0..100 {
            match Region::create(name, config) {
                Ok(r) => return Ok(r),
                Err(CreateError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            match Region::attach(name, deadline) {
                Ok(Opened::Ready(r)) if joinable(r.config(), config) => return Ok(r),
                Ok(Opened::Ready(r)) => {
                    // Not ours to remove (`/dev/shm` is sticky): refused
                    // before taking the attach byte from anyone.
                    if !r.ours_to_remove() {
                        return Err(denied(name));
                    }
                    // Replace it only if nobody else is attached, holding
                    // the attach byte exclusively until its name is gone,
                    // so that nobody attaches to it meanwhile (see
                    // `lock_attach`).
                    if !r.attach_exclusively() {
                        return Err(OpenError::ConfigMismatch {
                            name: name.into(),
                            existing: Box::new(r.config().clone()),
                            requested: Box::new(config.clone()),
                        });
                    }
                    if let Some(id) = r.identity() {
                        unlink_if_same(name, id).map_err(|_| denied(name))?;
                    }
                    drop(r);
                }
                Ok(Opened::Abandoned(id)) => {
                    unlink_if_same(name, id).map_err(|_| denied(name))?;
                }
                // Removed between our create and open: try again.
                Err(OpenError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Err(OpenError::NotFound { name: name.into() })
    }

    /// Whether the region's name no longer leads to this region: it was
    /// removed (and maybe created again, as another region). Processes
    /// that open the name from now on do not meet this handle's
    /// participants. Always `false` for an in-process region, and when
    /// the name cannot be looked at (no permission).
    pub fn is_stale(&self) -> bool {
        let (Some(name), Some(id)) = (&self.shared.name, self.identity()) else {
            return false;
        };
        match sys::shm_open_read_only(&sys::object_name(name)) {
            Ok(fd) => sys::identity(&fd).is_ok_and(|now| now != id),
            Err(e) => e == Errno::NOENT,
        }
    }

    /// Removes `name` if its creator died before finishing it (an object
    /// left empty or half-initialised, with no process attached): `true`
    /// if it did. `false` for a region that is ready (or was finished
    /// meanwhile). Waits, like [`open`](Self::open), at most a few
    /// seconds for a creator that is alive and still initialising.
    /// [`open_or_create`](Self::open_or_create) does the same before it
    /// creates the region again.
    pub fn remove_abandoned(name: &str) -> Result<bool, OpenError> {
        name::validate_region(name)?;
        match Region::attach(name, Instant::now() + INIT_WAIT)? {
            Opened::Ready(_) => Ok(false),
            Opened::Abandoned(id) => unlink_if_same(name, id).map_err(|_| denied(name)),
        }
    }

    /// Removes the region's name (`shm_unlink`). Processes still attached
    /// keep their mapping; the memory is freed when the last one detaches.
    pub fn remove(name: &str) -> Result<(), RemoveError> {
        name::validate_region(name)?;
        sys::shm_unlink(&sys::object_name(name)).map_err(|e| match e {
            Errno::NOENT => RemoveError::NotFound { name: name.into() },
            e => RemoveError::Io {
                name: name.into(),
                source: io(e),
            },
        })
    }

    /// A region in this process's heap: the same layout and algorithms,
    /// shared between threads instead of processes.
    ///
    /// # Examples
    ///
    /// ```
    /// use shmbox::{Config, Region};
    /// let region = Region::in_process(&Config::default())?;
    /// assert_eq!(region.name(), None);
    /// # Ok::<(), shmbox::ConfigError>(())
    /// ```
    pub fn in_process(config: &Config) -> Result<Region, crate::ConfigError> {
        config.validate()?;
        let layout = Layout::compute(config);
        let backing = Backing::Heap(HeapBuf::new(layout.total_size as usize));
        Ok(Region::from_mapped(
            layout::create_in(backing, layout),
            None,
            true,
            None,
            false,
        ))
    }

    fn from_mapped(
        mapped: Mapped,
        name: Option<String>,
        created: bool,
        fd: Option<OwnedFd>,
        read_only: bool,
    ) -> Region {
        Region {
            shared: Arc::new(Shared {
                mapped,
                futex: SharedFutex,
                name,
                created,
                fd,
                sweeping: Mutex::new(()),
                read_only,
            }),
        }
    }

    /// Whether this handle created the region (as opposed to attaching to
    /// an existing one), e.g. to tell which of many `open_or_create`
    /// callers won.
    pub fn created(&self) -> bool {
        self.shared.created
    }

    /// Whether we may remove its name: `/dev/shm` is sticky, so only its
    /// owner (or root) may.
    fn ours_to_remove(&self) -> bool {
        self.shared.fd.as_ref().is_some_and(|fd| {
            let me = rustix::process::geteuid();
            me.is_root() || sys::stat(fd).is_ok_and(|st| st.st_uid == me.as_raw())
        })
    }

    /// Turns our shared attach lock into an exclusive one, if no other
    /// handle is attached: then nobody else can attach until we let go.
    fn attach_exclusively(&self) -> bool {
        self.shared
            .fd
            .as_ref()
            .is_some_and(|fd| sys::ofd_try_lock(fd, LockKind::Exclusive, LOCK_ATTACH) == Ok(true))
    }

    fn identity(&self) -> Option<(u64, u64)> {
        self.shared
            .fd
            .as_ref()
            .and_then(|fd| sys::identity(fd).ok())
    }

    /// Whether the participant in `slot` is dead: its slot is taken but
    /// nobody holds the slot's liveness lock. Always `false` in-process.
    pub(crate) fn is_dead(&self, slot: u32) -> bool {
        let Some(fd) = &self.shared.fd else {
            return false;
        };
        let state = self.mapped().slot(slot).state.load(Ordering::Acquire);
        registry::status(state) != registry::FREE
            && !sys::ofd_is_locked(fd, LockKind::Shared, LOCK_SLOTS + u64::from(slot))
                .unwrap_or(true)
    }

    /// Reclaims every dead participant: its slot, the messages queued for
    /// it, and every chunk it had loaned, was sending or was reading.
    ///
    /// A participant is dead when its process has exited, however it
    /// exited: liveness is an OFD lock the kernel drops with the process,
    /// never a pid. Sweeping is safe to run at any time, from any number
    /// of processes at once; a sweeper killed half-way leaves the work to
    /// the next one. It also runs when someone joins, and when a sender or
    /// loaner that is blocked finds a participant dead. On a handle from
    /// [`inspect`](Self::inspect) it does nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// # let region = shmbox::Region::in_process(&shmbox::Config::default())?;
    /// let report = region.sweep();
    /// assert_eq!(report.participants, 0);
    /// # Ok::<(), shmbox::ConfigError>(())
    /// ```
    pub fn sweep(&self) -> SweepReport {
        let mut report = SweepReport::default();
        let Some(fd) = &self.shared.fd else {
            return report;
        };
        if self.shared.read_only {
            return report;
        }
        let _one_at_a_time = self
            .shared
            .sweeping
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let m = self.mapped();
        for slot in 0..m.layout.config.max_participants {
            if registry::status(m.slot(slot).state.load(Ordering::Acquire)) == registry::FREE {
                continue;
            }
            let byte = LOCK_SLOTS + u64::from(slot);
            if sys::ofd_try_lock(fd, LockKind::Exclusive, byte) != Ok(true) {
                continue; // alive, or being swept by someone else
            }
            report += sweep::reclaim(m, &self.shared.futex, slot);
            sys::ofd_unlock(fd, byte);
        }
        report
    }

    pub(crate) fn mapped(&self) -> &Mapped {
        &self.shared.mapped
    }

    /// Joins the region as participant `name`, with the default
    /// [`WaitStrategy::Adaptive`]. Names are unique among live participants.
    pub fn join(&self, name: &str) -> Result<Mailbox, JoinError> {
        self.join_with(name, WaitStrategy::default())
    }

    /// Joins the region as participant `name`, receiving with `strategy`.
    pub fn join_with(&self, name: &str, strategy: WaitStrategy) -> Result<Mailbox, JoinError> {
        name::validate_participant(name)?;
        if self.shared.read_only {
            return Err(JoinError::ReadOnly(
                self.shared.name.clone().unwrap_or_default(),
            ));
        }
        Mailbox::join(self.clone(), name, strategy)
    }

    /// Whether `to` still names a participant whose process is alive: it
    /// has not left, its slot has not been reused, and no kill ended it.
    /// (A sender blocked for a reason `send` cannot see, a loan say, may
    /// ask this now and then.)
    ///
    /// # Panics
    ///
    /// If `to` is an address of another region.
    pub fn is_alive(&self, to: &Address) -> bool {
        let m = self.mapped();
        crate::mailbox::assert_region(to, m.layout.instance);
        registry::is_active(m, to.slot, to.generation) && !self.is_dead(to.slot)
    }

    /// The address of the participant called `name`. It may have died
    /// and not been swept yet: [`is_alive`](Self::is_alive) tells.
    pub fn address(&self, name: &str) -> Result<Address, LookupError> {
        name::validate_participant(name)?;
        registry::lookup(self.mapped(), name)
            .map(|(slot, generation)| Address {
                slot,
                generation,
                region: self.mapped().layout.instance,
            })
            .ok_or_else(|| LookupError::NotFound(name.into()))
    }

    /// Waits until a participant called `name` has joined, at most
    /// `timeout`, and returns its address: for a process that starts before
    /// its peers.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # let region = shmbox::Region::in_process(&shmbox::Config::default())?;
    /// let peer = region.join("peer")?;
    /// assert_eq!(region.wait_for("peer", Duration::from_secs(1))?, peer.address());
    /// assert!(region.wait_for("nobody", Duration::from_millis(10)).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_for(&self, name: &str, timeout: Duration) -> Result<Address, LookupError> {
        // A timeout past what the clock can represent waits for ever.
        let deadline = Instant::now().checked_add(timeout);
        loop {
            match self.address(name) {
                Err(LookupError::NotFound(_)) if deadline.is_none_or(|d| Instant::now() < d) => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(LookupError::NotFound(_)) => {
                    return Err(LookupError::Timeout {
                        name: name.into(),
                        waited: timeout,
                    })
                }
                other => return other,
            }
        }
    }

    /// The region's name (`None` for an in-process region).
    pub fn name(&self) -> Option<&str> {
        self.shared.name.as_deref()
    }

    /// The config the region was created with.
    pub fn config(&self) -> &Config {
        &self.mapped().layout.config
    }

    /// The region's size in bytes.
    pub fn size(&self) -> u64 {
        self.mapped().layout.total_size
    }

    /// Bytes of memory the region's object holds: the pages of its
    /// `/dev/shm` file (`create` reserves them all up front, so this equals
    /// [`size`](Self::size) unless the object was changed from outside);
    /// for an in-process region, its heap buffer's size.
    ///
    /// ```
    /// # let config = shmbox::Config::default();
    /// let region = shmbox::Region::in_process(&config)?;
    /// assert_eq!(region.resident_bytes()?, config.total_size());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn resident_bytes(&self) -> std::io::Result<u64> {
        match &self.shared.fd {
            Some(fd) => sys::allocated_bytes(fd).map_err(std::io::Error::from),
            None => Ok(self.size()),
        }
    }

    /// Occupancy of each size class, smallest first. Counts are read without
    /// stopping anyone, so they are a snapshot of a moving target.
    pub fn pool_usage(&self) -> Vec<ClassUsage> {
        let m = self.mapped();
        let live = self.live_bits();
        m.layout
            .classes
            .iter()
            .enumerate()
            .map(|(c, cl)| {
                let pool = m.pool(c as u8);
                ClassUsage {
                    size: cl.size,
                    count: cl.count,
                    free: pool.free_count(),
                    held_by_dead: pool.held_without(live),
                }
            })
            .collect()
    }

    /// Holder bits of participants that are alive, or whose slot a sweeper
    /// is reclaiming right now.
    fn live_bits(&self) -> u64 {
        let m = self.mapped();
        (0..m.layout.config.max_participants)
            .filter(|&slot| {
                let state = m.slot(slot).state.load(Ordering::Acquire);
                registry::status(state) != registry::FREE && !self.is_dead(slot)
            })
            .fold(0, |bits, slot| bits | 1u64 << slot)
    }

    /// Facts from the region's header.
    pub fn info(&self) -> RegionInfo {
        let info = self.mapped().info();
        RegionInfo {
            // The size validated at open, not the header's word (writable
            // by anyone attached, as the rest of this informational part).
            size: self.size(),
            version: layout::VERSION,
            created: std::time::UNIX_EPOCH + Duration::from_millis(info.created_unix_ms),
            creator_pid: info.creator_pid,
        }
    }

    /// Names of the shmbox regions on this machine (the objects in
    /// `/dev/shm` whose names carry shmbox's prefix), sorted.
    pub fn list() -> std::io::Result<Vec<String>> {
        let mut names: Vec<String> = std::fs::read_dir(sys::SHM_DIR)?
            .filter_map(|e| e.ok())
            // Whatever else carries a region's name is listed (opening it
            // says what it is, and `remove` removes it), but a directory,
            // which `remove` cannot remove.
            .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|f| f.strip_prefix(sys::OBJECT_PREFIX).map(str::to_string))
            .filter(|n| name::validate_region(n).is_ok())
            .collect();
        names.sort();
        Ok(names)
    }

    /// The participants in the table: the live ones, and dead ones that no
    /// sweep has reclaimed yet (`alive == false`).
    pub fn participants(&self) -> Vec<ParticipantInfo> {
        let m = self.mapped();
        // One pass over the chunks for every slot, not one per slot.
        let mut held = [0u32; 64];
        for class in 0..m.layout.classes.len() {
            m.pool(class as u8).count_held(&mut held);
        }
        (0..m.layout.config.max_participants)
            .filter_map(|slot| {
                let view = m.slot(slot);
                let state = view.state.load(Ordering::Acquire);
                if registry::status(state) != registry::ACTIVE {
                    return None;
                }
                let words = registry::load_name(&view);
                // A participant leaving meanwhile clears its name: do not
                // list that as an unreadable one.
                if view.state.load(Ordering::Acquire) != state {
                    return None;
                }
                let alive = !self.is_dead(slot);
                Some(ParticipantInfo {
                    address: Address {
                        slot,
                        generation: registry::generation(state),
                        region: m.layout.instance,
                    },
                    name: registry::decode_name(&words).unwrap_or_else(|| unreadable(&words)),
                    pid: view.pid.load(Ordering::Relaxed),
                    queued: m.mailbox(slot).queue.len(),
                    alive,
                    strategy: WaitStrategy::from_raw(view.strategy.load(Ordering::Relaxed)),
                    parked: alive && m.mailbox(slot).queue.is_parked(),
                    capacity: u64::from(m.layout.config.mailbox_capacity),
                    holding: held[slot as usize],
                    stats: {
                        let c = |i: usize| view.counters[i].load(Ordering::Relaxed);
                        ParticipantStats {
                            sent: c(0),
                            received: c(1),
                            bytes_sent: c(2),
                            bytes_received: c(3),
                            full: c(4),
                            timeouts: c(5),
                        }
                    },
                })
            })
            .collect()
    }
}

/// Whether `open_or_create` may join a region of config `existing` when
/// it asks for `wanted`: the same config, but for a mode that may be
/// narrower than the one asked for (an owner may `chmod` a region closed),
/// never wider.
fn joinable(existing: &Config, wanted: &Config) -> bool {
    let (have, want) = (existing.mode(), wanted.mode());
    have & !want == 0 && *existing == wanted.clone().with_mode(have)
}

/// How [`Region::participants`] names a slot whose name bytes are not a
/// valid name (only a scribble makes one): its bytes in hex, so that it
/// is still listed, counted and told apart.
fn unreadable(words: &[u64; 4]) -> String {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let hex: String = bytes[..end].iter().map(|b| format!("{b:02x}")).collect();
    format!("<unreadable name {hex}>")
}

/// `name` leads to `what` (a FIFO, a symbolic link, ...) instead of a
/// shared-memory object.
fn not_shmbox(name: &str, what: &str) -> OpenError {
    OpenError::NotShmbox {
        name: name.into(),
        reason: format!("it is {what}, not a shared-memory object"),
    }
}

/// `open_or_create` may not remove the region it would recreate.
fn denied(name: &str) -> OpenError {
    OpenError::PermissionDenied { name: name.into() }
}

/// Removes `name` if it still names the object `id` (device, inode): a
/// recreation must not remove a fresh region someone else just made.
/// `Err` if it does and we may not remove it (`/dev/shm` is sticky: only
/// the object's owner may).
fn unlink_if_same(name: &str, id: (u64, u64)) -> Result<bool, Errno> {
    let object = sys::object_name(name);
    if let Ok(fd) = sys::shm_open_existing(&object) {
        if sys::identity(&fd).ok() == Some(id) {
            return match sys::shm_unlink(&object) {
                Ok(()) => Ok(true),
                Err(Errno::NOENT) => Ok(false),
                Err(e) => Err(e),
            };
        }
    }
    Ok(false)
}

#[cfg(all(test, not(shmbox_loom)))]
mod tests {
    use super::*;
    use std::cell::Cell;

    thread_local! {
        /// Runs (once) in `create` between creating the object and locking
        /// it: a creator stalled there.
        static STALL: Cell<Option<fn(&str)>> = const { Cell::new(None) };
    }

    pub(super) fn stall_after_create(name: &str) {
        if let Some(stall) = STALL.take() {
            stall(name);
        }
    }

    /// A creator stalled between creating its object and locking it, long
    /// enough to be taken for one that died: another process removes the
    /// name and creates its own region there. The stalled creator then
    /// finds its object nameless and reports the name taken, instead of
    /// returning a region nobody else can find; the other region stays.
    fn theirs() -> Config {
        Config::default()
            .with_classes(&[crate::SizeClass::new(64, 4)])
            .with_max_participants(2)
    }

    /// Removes the name when dropped, the test failing or not.
    struct Unlink(String);

    impl Drop for Unlink {
        fn drop(&mut self) {
            let _ = Region::remove(&self.0);
        }
    }

    #[test]
    fn a_creator_taken_for_dead_does_not_split_the_region() {
        let name = Unlink(format!("unit-stall-{}", std::process::id()));
        STALL.set(Some(|name| {
            // The object has no lock and no size yet: after the grace, it
            // is taken for abandoned and recreated.
            let region = Region::open_or_create(name, &theirs()).expect("recreated");
            assert!(region.created());
            std::mem::forget(region); // stays attached, as another process
        }));
        let err = Region::create(&name.0, &Config::default()).unwrap_err();
        assert!(matches!(err, CreateError::AlreadyExists { .. }), "{err}");
        assert_eq!(Region::open(&name.0).unwrap().config(), &theirs());
    }
}
