//! Region configuration.

use std::fmt;

/// Most size classes a region can have.
pub const MAX_CLASSES: usize = 8;
/// Most participants a region can have (one bit each in a chunk's holders
/// mask).
pub const MAX_PARTICIPANTS: u32 = 64;
/// Largest mailbox capacity.
pub const MAX_MAILBOX_CAPACITY: u32 = 1 << 16;
/// Most chunks in one size class.
pub const MAX_CHUNKS_PER_CLASS: u32 = 1 << 24;
/// Largest chunk size.
pub const MAX_CHUNK_SIZE: u64 = 1 << 32;

/// One size class of the message buffer: `count` chunks of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeClass {
    /// Payload bytes of each chunk.
    pub size: u64,
    /// Number of chunks.
    pub count: u32,
}

impl SizeClass {
    /// `count` chunks of `size` bytes.
    pub const fn new(size: u64, count: u32) -> Self {
        Self { size, count }
    }
}

/// How a region is laid out. The creator's config is stored in the region's
/// header; processes that attach later take it from there.
///
/// The default (about 22 MiB) fits a container's 64 MiB `/dev/shm`:
///
/// | size class | chunks |
/// |---|---|
/// | 64 B | 4096 |
/// | 1 KiB | 1024 |
/// | 16 KiB | 256 |
/// | 256 KiB | 32 |
/// | 1 MiB | 8 |
///
/// with 64 participants, mailboxes of 256 messages, and mode `0600`.
///
/// # Examples
///
/// ```
/// use shmbox::{Config, SizeClass};
/// let config = Config::default()
///     .with_classes(&[SizeClass::new(256, 128), SizeClass::new(4096, 16)])
///     .with_max_participants(8)
///     .with_mailbox_capacity(64);
/// assert!(config.validate().is_ok());
/// assert!(config.total_size() < 1 << 20);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub(crate) classes: Vec<SizeClass>,
    pub(crate) max_participants: u32,
    pub(crate) mailbox_capacity: u32,
    pub(crate) mode: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            classes: vec![
                SizeClass::new(64, 4096),
                SizeClass::new(1 << 10, 1024),
                SizeClass::new(16 << 10, 256),
                SizeClass::new(256 << 10, 32),
                SizeClass::new(1 << 20, 8),
            ],
            max_participants: MAX_PARTICIPANTS,
            mailbox_capacity: 256,
            mode: 0o600,
        }
    }
}

/// Why a [`Config`] is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Zero or more than [`MAX_CLASSES`] size classes.
    #[error("a config needs 1 to {MAX_CLASSES} size classes, got {0}")]
    ClassCount(usize),
    /// Sizes must grow strictly from one class to the next.
    #[error("size classes must be listed in strictly increasing size; class {index} ({size} bytes) is not larger than the one before")]
    ClassOrder {
        /// Position of the offending class.
        index: usize,
        /// Its size.
        size: u64,
    },
    /// A class with a size or count of zero or over the limit.
    #[error("size class {index} must have a size of 1 to {MAX_CHUNK_SIZE} bytes and 1 to {MAX_CHUNKS_PER_CLASS} chunks, got {size} bytes x {count}")]
    ClassBounds {
        /// Position of the offending class.
        index: usize,
        /// Its size.
        size: u64,
        /// Its count.
        count: u32,
    },
    /// Participants out of range.
    #[error("max participants must be 1 to {MAX_PARTICIPANTS}, got {0}")]
    Participants(u32),
    /// Mailbox capacity not a power of two in range.
    #[error("mailbox capacity must be a power of two from 2 to {MAX_MAILBOX_CAPACITY}, got {0}")]
    MailboxCapacity(u32),
    /// Mode with bits other than read/write, or without owner read/write.
    #[error("mode must include 0600 and contain only read/write bits (at most 0666), got {0:04o}")]
    Mode(u32),
    /// The whole region would be too large to address.
    #[error("the region would take {0} bytes, more than the 128 GiB a region may have")]
    TooLarge(u64),
}

impl Config {
    /// Replaces the size classes (listed smallest first).
    pub fn with_classes(mut self, classes: &[SizeClass]) -> Self {
        self.classes = classes.to_vec();
        self
    }

    /// Sets the maximum number of participants (1 to [`MAX_PARTICIPANTS`]).
    pub fn with_max_participants(mut self, n: u32) -> Self {
        self.max_participants = n;
        self
    }

    /// Sets each mailbox's capacity in messages (a power of two).
    pub fn with_mailbox_capacity(mut self, n: u32) -> Self {
        self.mailbox_capacity = n;
        self
    }

    /// Sets the permission bits of the shared-memory object (default
    /// `0o600`; `0o660` grants the group access).
    pub fn with_mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// The size classes, smallest first.
    pub fn classes(&self) -> &[SizeClass] {
        &self.classes
    }

    /// Maximum number of participants.
    pub fn max_participants(&self) -> u32 {
        self.max_participants
    }

    /// Capacity of each mailbox in messages.
    pub fn mailbox_capacity(&self) -> u32 {
        self.mailbox_capacity
    }

    /// Permission bits of the shared-memory object. For an opened
    /// region's [`Region::config`](crate::Region::config), the object's
    /// bits as they are now (`fstat`), whatever mode it was created with.
    pub fn mode(&self) -> u32 {
        self.mode
    }

    /// The largest message this config can carry.
    pub fn max_message_size(&self) -> u64 {
        self.classes.last().map_or(0, |c| c.size)
    }

    /// Checks every limit; [`Region::create`](crate::Region::create) does the
    /// same.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.classes.is_empty() || self.classes.len() > MAX_CLASSES {
            return Err(ConfigError::ClassCount(self.classes.len()));
        }
        for (index, c) in self.classes.iter().enumerate() {
            if c.size == 0
                || c.size > MAX_CHUNK_SIZE
                || c.count == 0
                || c.count > MAX_CHUNKS_PER_CLASS
            {
                return Err(ConfigError::ClassBounds {
                    index,
                    size: c.size,
                    count: c.count,
                });
            }
            if index > 0 && c.size <= self.classes[index - 1].size {
                return Err(ConfigError::ClassOrder {
                    index,
                    size: c.size,
                });
            }
        }
        if self.max_participants == 0 || self.max_participants > MAX_PARTICIPANTS {
            return Err(ConfigError::Participants(self.max_participants));
        }
        let cap = self.mailbox_capacity;
        if !cap.is_power_of_two() || !(2..=MAX_MAILBOX_CAPACITY).contains(&cap) {
            return Err(ConfigError::MailboxCapacity(cap));
        }
        if self.mode & !0o666 != 0 || self.mode & 0o600 != 0o600 {
            return Err(ConfigError::Mode(self.mode));
        }
        let total = crate::layout::Layout::compute_size(self);
        if total > crate::layout::MAX_REGION_SIZE {
            return Err(ConfigError::TooLarge(total));
        }
        Ok(())
    }

    /// Bytes the region takes in `/dev/shm` with this config.
    pub fn total_size(&self) -> u64 {
        crate::layout::Layout::compute_size(self)
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "classes [")?;
        for (i, c) in self.classes.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{}x{}", c.size, c.count)?;
        }
        write!(
            f,
            "], {} participants, mailbox {}, mode {:04o}",
            self.max_participants, self.mailbox_capacity, self.mode
        )
    }
}
