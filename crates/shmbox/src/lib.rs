//! shmbox: zero-copy messaging between processes through named shared memory.
//!
//! Processes attach to a named **region** in `/dev/shm`. Each joins as a
//! participant with its own **mailbox** (a lock-free list of offsets in the
//! region). A sender **loans** a chunk of the region's message buffer,
//! writes its message there in place, and **sends** it: the chunk's offset
//! is atomically stored into the receiver's mailbox. The receiver reads the
//! message in place and **releases** the chunk by dropping it. Only an
//! offset moves; the payload is written once and read once.
//!
//! # Guarantees
//!
//! * **No copies, no syscalls on the fast path.** Send and receive are a few
//!   atomic operations; a `FUTEX_WAKE` is issued only when the receiver has
//!   announced it is asleep.
//! * **Nothing lost silently.** `try_send` hands the loan back when the
//!   receiver's mailbox is full or the receiver has left; `send` waits for
//!   room (but returns the loan at once when the mailbox is the sender's
//!   own: only it could make room). A message that was accepted and is still queued when its
//!   receiver leaves is released with the mailbox.
//! * **Stale addresses are refused.** An [`Address`] carries its slot's
//!   generation, and so does the tail of the mailbox's queue: a participant
//!   that left and whose slot was reused is not confused with the
//!   newcomer, even by a send under way while the newcomer joins. It also
//!   carries its region's instance: another region's mailbox refuses it
//!   (a panic, like a loan sent through another mailbox) instead of
//!   delivering to whoever holds the same slot there.
//! * **Race-free setup.** Of many processes calling
//!   [`Region::open_or_create`], exactly one creates the region; the others
//!   wait for it to be initialised and take the config from its header.
//! * **Validated input.** Headers are checked against the object's size
//!   before use, and every offset read from a mailbox is checked to name a
//!   chunk of the region before it is dereferenced: a corrupt entry gives
//!   an error, not undefined behaviour.
//! * **Batches for small messages.** A [`Batch`] packs many small
//!   messages, each written in place, into one chunk sent as one mailbox
//!   entry; [`Message::records`] reads them back in place. At 8 bytes that
//!   is over ten times the rate of one send per message.
//! * **Space reserved up front.** Creation reserves the whole region with
//!   `fallocate`: a full `/dev/shm` is an error naming the bytes needed,
//!   never a `SIGBUS` later.
//!
//! # Crash safety
//!
//! Any participant may be killed at any instant (`kill -9`, OOM killer,
//! power to its container cut) and the others carry on:
//!
//! * **Liveness the kernel guarantees.** Each participant holds an OFD lock
//!   on one byte of the region's file; the kernel drops it when the process
//!   dies, however it dies. No pid is trusted: pids are reused and differ
//!   between PID namespaces (they are shown for information only).
//! * **Sweep.** [`Region::sweep`] reclaims each dead participant exactly
//!   once: its slot and name, the messages queued for it, and every chunk
//!   it had loaned, was sending or was reading. It runs on
//!   [`join`](Region::join), when a blocked sender or loaner finds someone
//!   dead (they re-check every 20 ms, so nobody waits for ever on the dead),
//!   at most every 100 ms on a refused `try_loan` and on an idle receive
//!   while loaners wait, and on demand. Any number of sweepers may run at once, and a sweeper
//!   killed half-way leaves the work to the next. About 50 µs per dead
//!   participant with the default config.
//! * **Senders see dead receivers.** A send to a participant that left
//!   hands the loan back with `Disconnected`; so does a send to one that
//!   died, once it is swept, or when its mailbox is full (a refused or
//!   blocked send checks). Until then a send to it succeeds, as a send
//!   does into any mailbox whose receiver dies before reading: such
//!   messages, like those queued before it died, are released by the
//!   sweep and counted in [`SweepReport::messages`]. Telling the dead on
//!   every send would cost a system call; [`Region::is_alive`] asks.
//! * **Restart just works.** A region whose participants all died is
//!   reused as it is; [`Region::open_or_create`] with a different config
//!   recreates it when nobody is attached; a region whose creator died
//!   while initialising it is recreated.
//!
//! The kill-torture test SIGKILLs a random one of four busy participants
//! at a random moment 200 times per CI run (1,000 in a soak) and checks that
//! no chunk leaks, no survivor hangs, no message is corrupted or delivered
//! twice, and every lost message was addressed to a killed participant.
//!
//! # Trust model
//!
//! Every participant can write the whole region, so shmbox guards against
//! bugs and malice in other participants as far as shared memory allows:
//!
//! * **Guaranteed:** nothing another participant writes into the region can
//!   make a shmbox call in your process read or write outside the region,
//!   panic, loop without bound or wait beyond what you asked for. Every
//!   offset, index, length and count read from shared memory is validated
//!   before use (a bad mailbox entry is a [`Corruption`] error and is
//!   skipped; a scribbled cell at the head of your own mailbox is repaired
//!   when the mailbox's tail says what it held, and otherwise reported
//!   again by later receives as lasting), loops over shared state are bounded, and the
//!   header is checked against the object's size once and then ignored.
//!   A name that leads to anything but a shared-memory object (a FIFO or
//!   a symbolic link someone made in `/dev/shm`) is refused with
//!   [`OpenError::NotShmbox`], without waiting and without following it.
//! * **Not guaranteed:** a participant with write access can read, change,
//!   drop or forge *messages* (including while you read one: message bytes
//!   are data, shmbox never trusts them), take names, exhaust the pool or
//!   fill mailboxes. It can also shrink the region's object
//!   (`ftruncate`): every process that then touches the lost pages dies
//!   of `SIGBUS`, which no check can prevent (POSIX shared memory cannot
//!   be sealed against it). Keep untrusted processes out with the
//!   object's mode: regions are `0600` unless [`Config::with_mode`] grants
//!   group or other access, and a process of another user is refused
//!   with [`OpenError::PermissionDenied`].
//!
//! # Example
//!
//! An in-process region behaves like a shared one, with threads in place
//! of processes:
//!
//! ```
//! use shmbox::{Config, Region};
//!
//! let region = Region::in_process(&Config::default())?;
//! let server = region.join("server")?;
//! let client = region.join("client")?;
//!
//! // The client writes its request straight into the shared buffer...
//! let mut loan = client.loan(12)?;
//! loan.copy_from_slice(b"how are you?");
//! client.send(loan, &region.address("server")?).map_err(|e| e.to_string())?;
//!
//! // ...the server reads it in place and replies to the sender.
//! let request = server.recv()?;
//! assert_eq!(&*request, b"how are you?");
//! server.send_copy(b"fine", &request.sender())?;
//! drop(request); // releases the chunk
//!
//! assert_eq!(&*client.recv()?, b"fine");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Between processes, use [`Region::open_or_create`] with a name instead of
//! [`Region::in_process`]; `examples/pingpong.rs` runs two processes.
//!
//! # Layers
//!
//! `sys` (syscalls) → `layout` (on-memory format, validation) → core
//! algorithms (`queue`, `pool`, `notify`, `registry`) → the API
//! ([`Region`], [`Mailbox`], [`Loan`], [`Message`]).
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks, missing_docs)]

#[cfg(not(target_os = "linux"))]
compile_error!("shmbox supports Linux only for now");

mod notify;
mod pool;
mod queue;
mod sync;

#[cfg(not(shmbox_loom))]
mod batch;
#[cfg(not(shmbox_loom))]
mod config;
#[cfg(not(shmbox_loom))]
mod error;
#[cfg(not(shmbox_loom))]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(not(shmbox_loom))]
mod layout;
#[cfg(not(shmbox_loom))]
mod mailbox;
#[cfg(not(shmbox_loom))]
mod name;
#[cfg(not(shmbox_loom))]
mod region;
#[cfg(not(shmbox_loom))]
mod registry;
#[cfg(not(shmbox_loom))]
mod sweep;
#[cfg(not(shmbox_loom))]
mod sys;

#[cfg(not(shmbox_loom))]
pub use batch::{record_size, Batch, Records, RECORD_HEADER};
#[cfg(not(shmbox_loom))]
pub use config::{
    Config, ConfigError, SizeClass, MAX_CHUNKS_PER_CLASS, MAX_CHUNK_SIZE, MAX_CLASSES,
    MAX_MAILBOX_CAPACITY, MAX_PARTICIPANTS,
};
#[cfg(not(shmbox_loom))]
pub use error::{
    Corruption, CreateError, JoinError, LoanError, LookupError, OpenError, RecvError,
    RecvTimeoutError, RemoveError, SendCopyError, SendError, SendTimeoutError, TryLoanError,
    TryRecvError, TrySendError,
};
#[cfg(not(shmbox_loom))]
pub use mailbox::{Address, Loan, Mailbox, Message, WaitStrategy};
#[cfg(not(shmbox_loom))]
pub use name::{validate_participant, validate_region, NameError, MAX_REGION_NAME};
#[cfg(not(shmbox_loom))]
pub use region::{ClassUsage, ParticipantInfo, ParticipantStats, Region, RegionInfo};
#[cfg(not(shmbox_loom))]
pub use registry::MAX_PARTICIPANT_NAME;
#[cfg(not(shmbox_loom))]
pub use sweep::SweepReport;
