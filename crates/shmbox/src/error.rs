//! One error enum per operation. Operations that consume a value (a loan)
//! hand it back inside the error, so nothing is lost.

use crate::config::ConfigError;
use crate::mailbox::Loan;
use crate::name::NameError;
use std::fmt;
use std::time::Duration;

/// Why [`Region::create`](crate::Region::create) failed.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The region name is not acceptable.
    #[error("invalid region name: {0}")]
    InvalidName(#[from] NameError),
    /// The config is not acceptable.
    #[error("invalid config: {0}")]
    InvalidConfig(#[from] ConfigError),
    /// A region (or another object) with this name already exists.
    #[error("region '{name}' already exists; open it, or remove it first")]
    AlreadyExists {
        /// The region name.
        name: String,
    },
    /// `/dev/shm` cannot hold the region.
    #[error("not enough shared memory for region '{name}': it needs {needed} bytes, {}", available.map_or("free space unknown".to_string(), |a| format!("{a} bytes are free")))]
    NoSpace {
        /// The region name.
        name: String,
        /// Bytes the config asks for.
        needed: u64,
        /// Free bytes on the shared-memory filesystem, when known.
        available: Option<u64>,
    },
    /// The region is larger than this process may make a file
    /// (`RLIMIT_FSIZE`, `ulimit -f`): growing the object past it would
    /// raise `SIGXFSZ`, which kills the process.
    #[error("region '{name}' needs {needed} bytes, more than this process's file size limit ({limit} bytes, `ulimit -f`)")]
    FileSizeLimit {
        /// The region name.
        name: String,
        /// Bytes the config asks for.
        needed: u64,
        /// The limit.
        limit: u64,
    },
    /// The operating system refused access.
    #[error("permission denied creating region '{name}'")]
    PermissionDenied {
        /// The region name.
        name: String,
    },
    /// Any other operating-system error.
    #[error("{op} failed for region '{name}': {source}")]
    Io {
        /// The region name.
        name: String,
        /// The failing call.
        op: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

/// Why [`Region::open`](crate::Region::open) or
/// [`Region::open_or_create`](crate::Region::open_or_create) failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The region name is not acceptable.
    #[error("invalid region name: {0}")]
    InvalidName(#[from] NameError),
    /// No region has this name.
    #[error("region '{name}' not found")]
    NotFound {
        /// The region name.
        name: String,
    },
    /// The object exists but is not a shmbox region.
    #[error("'{name}' is not a shmbox region: {reason}")]
    NotShmbox {
        /// The region name.
        name: String,
        /// What gave it away.
        reason: String,
    },
    /// A shmbox region of another layout version.
    #[error("region '{name}' has layout version {found}; this library reads version {expected}")]
    Version {
        /// The region name.
        name: String,
        /// The version found.
        found: u32,
        /// The version supported.
        expected: u32,
    },
    /// The header is inconsistent with itself or the object's size.
    #[error("region '{name}' is corrupt: {reason}")]
    Corrupt {
        /// The region name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The creator did not finish initialising in time.
    #[error("region '{name}' was not initialised within {waited:?}; its creator may have died")]
    InitTimeout {
        /// The region name.
        name: String,
        /// How long we waited.
        waited: Duration,
    },
    /// The region's creator died before finishing initialising it.
    #[error("region '{name}' was left half-initialised by a creator that died; `Region::open_or_create` recreates it")]
    Abandoned {
        /// The region name.
        name: String,
    },
    /// `open_or_create` found the region with another config while others
    /// are attached to it, so it cannot be recreated.
    #[error("region '{name}' exists with config {existing} and is in use, so it cannot be recreated with config {requested}")]
    ConfigMismatch {
        /// The region name.
        name: String,
        /// The config the region has.
        existing: Box<crate::Config>,
        /// The config asked for.
        requested: Box<crate::Config>,
    },
    /// The operating system refused access (e.g. a `0600` region of
    /// another user).
    #[error("permission denied opening region '{name}': it belongs to another user, or its mode does not grant you the access needed (read and write to join it, read to inspect it)")]
    PermissionDenied {
        /// The region name.
        name: String,
    },
    /// Creating the region failed (from `open_or_create`).
    #[error(transparent)]
    Create(#[from] CreateError),
    /// Any other operating-system error.
    #[error("{op} failed for region '{name}': {source}")]
    Io {
        /// The region name.
        name: String,
        /// The failing call.
        op: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

/// Why [`Region::remove`](crate::Region::remove) failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    /// The region name is not acceptable.
    #[error("invalid region name: {0}")]
    InvalidName(#[from] NameError),
    /// No region has this name.
    #[error("region '{name}' not found")]
    NotFound {
        /// The region name.
        name: String,
    },
    /// Any other operating-system error.
    #[error("removing region '{name}' failed: {source}")]
    Io {
        /// The region name.
        name: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Why [`Region::join`](crate::Region::join) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// The participant name is not acceptable.
    #[error("invalid participant name: {0}")]
    InvalidName(#[from] NameError),
    /// A live participant already has this name.
    #[error("participant name '{0}' is taken in this region")]
    NameTaken(String),
    /// Every participant slot is in use.
    #[error("all {max} participant slots are in use")]
    Full {
        /// The region's participant limit.
        max: u32,
    },
    /// The operating system refused a call needed to join.
    #[error("joining failed: {0}")]
    Io(String),
    /// The region was opened for inspection only
    /// ([`Region::inspect`](crate::Region::inspect)).
    #[error("region '{0}' is open for inspection only; open it with Region::open to join")]
    ReadOnly(String),
}

/// Why [`Region::address`](crate::Region::address) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// The participant name is not acceptable.
    #[error("invalid participant name: {0}")]
    InvalidName(#[from] NameError),
    /// No live participant has this name.
    #[error("no participant named '{0}' in this region")]
    NotFound(String),
    /// Nobody of this name joined in time ([`Region::wait_for`](crate::Region::wait_for)).
    #[error("no participant named '{name}' joined within {waited:?}")]
    Timeout {
        /// The participant name.
        name: String,
        /// How long we waited.
        waited: std::time::Duration,
    },
}

/// Why [`Mailbox::try_loan`](crate::Mailbox::try_loan) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TryLoanError {
    /// The message is larger than the largest size class.
    #[error("message of {requested} bytes is larger than the largest size class ({max} bytes)")]
    TooLarge {
        /// Bytes asked for.
        requested: usize,
        /// The largest class's size.
        max: u64,
    },
    /// No chunk of the fitting size class is free (participants may keep
    /// a few each for their next loans; see
    /// [`Mailbox::try_loan`](crate::Mailbox::try_loan)).
    #[error("no free chunk in the {class_size}-byte size class")]
    Exhausted {
        /// Size of the class that fits the message.
        class_size: u64,
    },
}

/// Why [`Mailbox::loan`](crate::Mailbox::loan) or
/// [`Mailbox::loan_timeout`](crate::Mailbox::loan_timeout) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoanError {
    /// The message is larger than the largest size class.
    #[error("message of {requested} bytes is larger than the largest size class ({max} bytes)")]
    TooLarge {
        /// Bytes asked for.
        requested: usize,
        /// The largest class's size.
        max: u64,
    },
    /// No chunk became free in time.
    #[error("timed out waiting for a free chunk in the {class_size}-byte size class")]
    Timeout {
        /// Size of the class that fits the message.
        class_size: u64,
    },
    /// The loaning participant itself holds every chunk of the class: its
    /// loans, the messages it received and has not dropped, and those
    /// queued in its own mailbox (sent to itself, or by senders that have
    /// since died). Only it can give them back, so waiting would never
    /// end (noticed within a few tens of milliseconds).
    #[error("every chunk of the {class_size}-byte size class is held by this participant itself (loans, received messages not yet dropped, messages to itself)")]
    HeldByCaller {
        /// Size of the class that fits the message.
        class_size: u64,
    },
}

/// Why [`Mailbox::try_send`](crate::Mailbox::try_send) failed; the loan is
/// handed back.
pub enum TrySendError<'m> {
    /// The receiver's mailbox is full.
    Full(Loan<'m>),
    /// The receiver has left (or the address is stale).
    Disconnected(Loan<'m>),
}

/// Why [`Mailbox::send`](crate::Mailbox::send) failed; the loan is handed
/// back.
pub enum SendError<'m> {
    /// The receiver has left (or the address is stale).
    Disconnected(Loan<'m>),
    /// The address is the sending mailbox's own, and its mailbox is full:
    /// only it can make room, by receiving, so waiting would never end.
    OwnMailboxFull(Loan<'m>),
}

/// Why [`Mailbox::send_timeout`](crate::Mailbox::send_timeout) failed; the
/// loan is handed back.
pub enum SendTimeoutError<'m> {
    /// The mailbox stayed full for the whole timeout (at once for the
    /// sender's own mailbox: only it could empty it, so it does not wait).
    Timeout(Loan<'m>),
    /// The receiver has left (or the address is stale).
    Disconnected(Loan<'m>),
}

macro_rules! loan_error {
    ($ty:ident { $($variant:ident => $text:literal),* }) => {
        impl<'m> $ty<'m> {
            /// Takes the loan back.
            pub fn into_loan(self) -> Loan<'m> {
                match self { $($ty::$variant(l) => l),* }
            }
        }
        impl fmt::Debug for $ty<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self { $($ty::$variant(l) => f.debug_tuple(stringify!($variant)).field(l).finish()),* }
            }
        }
        impl fmt::Display for $ty<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self { $($ty::$variant(_) => f.write_str($text)),* }
            }
        }
        impl std::error::Error for $ty<'_> {}
    };
}

loan_error!(TrySendError {
    Full => "receiver's mailbox is full",
    Disconnected => "receiver has left the region"
});
loan_error!(SendError {
    Disconnected => "receiver has left the region",
    OwnMailboxFull => "the sender's own mailbox is full, and only it can empty it"
});
loan_error!(SendTimeoutError {
    Timeout => "timed out waiting for room in the receiver's mailbox",
    Disconnected => "receiver has left the region"
});

/// Why [`Mailbox::send_copy`](crate::Mailbox::send_copy) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendCopyError {
    /// The message is larger than the largest size class.
    #[error("message of {requested} bytes is larger than the largest size class ({max} bytes)")]
    TooLarge {
        /// Message length.
        requested: usize,
        /// The largest class's size.
        max: u64,
    },
    /// The receiver has left (or the address is stale).
    #[error("receiver has left the region")]
    Disconnected,
    /// The address is the sending mailbox's own, and its mailbox is full
    /// (see [`SendError::OwnMailboxFull`]).
    #[error("the sender's own mailbox is full, and only it can empty it")]
    OwnMailboxFull,
    /// The sender itself holds every chunk of the class the message needs
    /// (see [`LoanError::HeldByCaller`]).
    #[error("every chunk of the {class_size}-byte size class is held by the sender itself")]
    HeldByCaller {
        /// Size of the class that fits the message.
        class_size: u64,
    },
}

/// What a receive found in place of the next message:
///
/// * a mailbox entry that does not describe a valid message. The entry has
///   been removed from the mailbox; the next receive goes on with the next
///   entry;
/// * a mailbox cell that holds neither an entry nor room for one (only a
///   scribble on the region makes one). Where the mailbox's tail says what
///   the cell held, it is repaired as it is reported (any message it held
///   is lost; its chunk stays held until its sender and receiver have both
///   left), and the next receive goes on. Otherwise the cell stays
///   ([`is_lasting`](Self::is_lasting)): a waiting receive reports it
///   again, and so does a `try_recv` on the first empty poll after a
///   message and on every 16th after that (the polls in between say
///   `Empty`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt mailbox entry: {reason}")]
pub struct Corruption {
    pub(crate) reason: String,
    pub(crate) lasting: bool,
}

impl Corruption {
    /// What was wrong with the entry.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Whether the mailbox stays unusable: receives will report this
    /// again, and no message will arrive (recreate the region). `false`
    /// for a bad entry, which is gone, and for a cell that was repaired.
    pub fn is_lasting(&self) -> bool {
        self.lasting
    }
}

/// Why [`Mailbox::try_recv`](crate::Mailbox::try_recv) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TryRecvError {
    /// No message is waiting.
    #[error("mailbox is empty")]
    Empty,
    /// The next entry was corrupt, or the cell it belongs in was (see
    /// [`Corruption`]).
    #[error(transparent)]
    Corrupt(#[from] Corruption),
}

/// Why [`Mailbox::recv`](crate::Mailbox::recv) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// The next entry was corrupt, or the cell it belongs in was (see
    /// [`Corruption`]).
    #[error(transparent)]
    Corrupt(#[from] Corruption),
}

/// Why [`Mailbox::recv_timeout`](crate::Mailbox::recv_timeout) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecvTimeoutError {
    /// No message arrived in time.
    #[error("timed out waiting for a message")]
    Timeout,
    /// The next entry was corrupt, or the cell it belongs in was (see
    /// [`Corruption`]).
    #[error(transparent)]
    Corrupt(#[from] Corruption),
}
