//! [`Region`]: a named shared-memory region, or an in-process one.

use crate::config::Config;
use crate::error::{CreateError, JoinError, LookupError, OpenError, RemoveError};
use crate::layout::{
    self, Backing, HeapBuf, Layout, LayoutError, Mapped, HEADER_SIZE, STATE_READY,
};
use crate::mailbox::{Address, Mailbox, WaitStrategy};
use crate::sys::{self, Mapping, SharedFutex};
use crate::{name, registry};
use rustix::io::Errno;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long `open` waits for a creator to finish initialising.
const INIT_WAIT: Duration = Duration::from_secs(2);

pub(crate) struct Shared {
    pub(crate) mapped: Mapped,
    pub(crate) futex: SharedFutex,
    name: Option<String>,
    created: bool,
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
}

/// A participant as seen in the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantInfo {
    /// Its address.
    pub address: Address,
    /// Its name.
    pub name: String,
    /// The pid it joined from (information only; never used for liveness).
    pub pid: u32,
    /// Messages waiting in its mailbox.
    pub queued: u64,
}

fn io(e: Errno) -> std::io::Error {
    std::io::Error::from_raw_os_error(e.raw_os_error())
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
        let fd = sys::shm_create_exclusive(&object, config.mode).map_err(|e| match e {
            Errno::EXIST => CreateError::AlreadyExists { name: name.into() },
            Errno::ACCESS | Errno::PERM => CreateError::PermissionDenied { name: name.into() },
            e => CreateError::Io {
                name: name.into(),
                op: "shm_open",
                source: io(e),
            },
        })?;
        let fail = |err: CreateError| {
            let _ = sys::shm_unlink(&object);
            err
        };
        if let Err(e) = sys::reserve(&fd, layout.total_size) {
            return Err(fail(match e {
                Errno::NOSPC | Errno::FBIG | Errno::NOMEM => CreateError::NoSpace {
                    name: name.into(),
                    needed: layout.total_size,
                    available: sys::free_bytes(&fd),
                },
                e => CreateError::Io {
                    name: name.into(),
                    op: "fallocate",
                    source: io(e),
                },
            }));
        }
        let map = Mapping::map(&fd, layout.total_size as usize).map_err(|e| {
            fail(CreateError::Io {
                name: name.into(),
                op: "mmap",
                source: io(e),
            })
        })?;
        let mapped = layout::create_in(Backing::Shm(map), layout);
        Ok(Region::from_mapped(mapped, Some(name.into()), true))
    }

    /// Attaches to the existing region `name`, taking its config from the
    /// region's header. Waits (at most 2 s) for a creator that is still
    /// initialising it; refuses objects that are not shmbox regions, other
    /// layout versions and inconsistent headers.
    pub fn open(name: &str) -> Result<Region, OpenError> {
        name::validate_region(name)?;
        let object = sys::object_name(name);
        let fd = sys::shm_open_existing(&object).map_err(|e| match e {
            Errno::NOENT => OpenError::NotFound { name: name.into() },
            Errno::ACCESS | Errno::PERM => OpenError::PermissionDenied { name: name.into() },
            e => OpenError::Io {
                name: name.into(),
                op: "shm_open",
                source: io(e),
            },
        })?;
        let started = Instant::now();
        let timed_out = || started.elapsed() > INIT_WAIT;
        let init_timeout = || OpenError::InitTimeout {
            name: name.into(),
            waited: INIT_WAIT,
        };
        let stat_err = |e| OpenError::Io {
            name: name.into(),
            op: "fstat",
            source: io(e),
        };
        loop {
            let size = sys::file_size(&fd).map_err(stat_err)?;
            if size < HEADER_SIZE {
                if size == 0 && !timed_out() {
                    // The creator has not reserved the space yet.
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                return Err(if size == 0 {
                    init_timeout()
                } else {
                    OpenError::NotShmbox {
                        name: name.into(),
                        reason: LayoutError::Truncated(size).to_string(),
                    }
                });
            }
            let size_usize = usize::try_from(size).map_err(|_| OpenError::Corrupt {
                name: name.into(),
                reason: format!("object size {size} does not fit in memory"),
            })?;
            let map = Mapping::map(&fd, size_usize).map_err(|e| OpenError::Io {
                name: name.into(),
                op: "mmap",
                source: io(e),
            })?;
            let backing = Backing::Shm(map);
            let words = layout::header_words(&backing);
            let magic = words.magic.load(Ordering::Acquire);
            // SYNC POINT: pairs with the release store of READY in `create_in`.
            let ready = words.state.load(Ordering::Acquire) == STATE_READY;
            if (magic == 0 || (magic == layout::MAGIC && !ready)) && !timed_out() {
                drop(backing);
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            if magic == layout::MAGIC && !ready {
                return Err(init_timeout());
            }
            let layout = layout::validate(&backing, size).map_err(|e| match e {
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
            return Ok(Region::from_mapped(
                Mapped::new(backing, layout),
                Some(name.into()),
                false,
            ));
        }
    }

    /// Opens `name` if it exists, otherwise creates it with `config`. Of many
    /// processes racing here, exactly one creates; the others wait until it
    /// has initialised the region, then attach with the region's own config
    /// (which may differ from `config`).
    pub fn open_or_create(name: &str, config: &Config) -> Result<Region, OpenError> {
        name::validate_region(name)?;
        let mut attempts = 0;
        loop {
            match Region::create(name, config) {
                Ok(r) => return Ok(r),
                Err(CreateError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            match Region::open(name) {
                // Removed between our create and open: try again.
                Err(OpenError::NotFound { .. }) if attempts < 100 => attempts += 1,
                r => return r,
            }
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
        ))
    }

    fn from_mapped(mapped: Mapped, name: Option<String>, created: bool) -> Region {
        Region {
            shared: Arc::new(Shared {
                mapped,
                futex: SharedFutex,
                name,
                created,
            }),
        }
    }

    /// Whether this handle created the region (as opposed to attaching to
    /// an existing one), e.g. to tell which of many `open_or_create`
    /// callers won.
    pub fn created(&self) -> bool {
        self.shared.created
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
        Mailbox::join(self.clone(), name, strategy)
    }

    /// The address of the live participant called `name`.
    pub fn address(&self, name: &str) -> Result<Address, LookupError> {
        name::validate_participant(name)?;
        registry::lookup(self.mapped(), name)
            .map(|(slot, generation)| Address { slot, generation })
            .ok_or_else(|| LookupError::NotFound(name.into()))
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

    /// Occupancy of each size class, smallest first. Counts are read without
    /// stopping anyone, so they are a snapshot of a moving target.
    pub fn pool_usage(&self) -> Vec<ClassUsage> {
        let m = self.mapped();
        m.layout
            .classes
            .iter()
            .enumerate()
            .map(|(c, cl)| ClassUsage {
                size: cl.size,
                count: cl.count,
                free: m.pool(c as u8).free_count(),
            })
            .collect()
    }

    /// The live participants.
    pub fn participants(&self) -> Vec<ParticipantInfo> {
        let m = self.mapped();
        (0..m.layout.config.max_participants)
            .filter_map(|slot| {
                let view = m.slot(slot);
                let state = view.state.load(Ordering::Acquire);
                if registry::status(state) != registry::ACTIVE {
                    return None;
                }
                Some(ParticipantInfo {
                    address: Address {
                        slot,
                        generation: registry::generation(state),
                    },
                    name: registry::decode_name(&registry::load_name(&view))?,
                    pid: view.pid.load(Ordering::Relaxed),
                    queued: m.mailbox(slot).queue.len(),
                })
            })
            .collect()
    }
}
