//! The on-memory format of a region, and validation of a mapped one.
//!
//! ```text
//! offset 0        header (one page): magic, version, state, config, section offsets
//! slots_offset    participant slots, SLOT_SIZE bytes each:
//!                 +0 state | +8 pid | +12 wait strategy | +16 name | +48
//!                 the CPU it last waited on (read by every sender: written
//!                 only on join and leave, and when that CPU changes)
//!                 | +128 counters | +176 taking (the owner's own line,
//!                 written on every message) | +180 classes kept asleep
//!                 (read by blocked loaners)
//! mailboxes_offset one mailbox per slot, mailbox_stride bytes each:
//!                 +0 tail (position << 32 | owner's generation) | +64
//!                 receiver's doorbell (both written by senders)
//!                 | +128 head, room doorbell (written by the receiver)
//!                 | +256 cells (capacity x u64)
//! per class c     pool line: +4 seq (the waiting loaners' futex word)
//!                 | +8 refused loans | +16 waiting loaners (one bit per
//!                 slot); then the free bitmap (one bit per chunk)
//! per class c     count chunks of stride = round_up(32 + size, 64) bytes:
//!                 +0 chunk header (holders, len, sender, dest) | +32 payload
//! ```
//!
//! Lines written by different parties never share a 128-byte pair
//! ([`PAIR`]): x86 cores fetch lines in such pairs (the adjacent-line
//! prefetcher), so a line one core writes next to a line another core reads
//! would bounce between them. A chunk's 32-byte header shares its first
//! line with the first 32 payload bytes: a small message is one line to
//! move, and the receiver's take-over of the header fetches the payload with
//! it. Payloads are therefore 32-byte aligned.
//!
//! Shared memory holds offsets and indices, never pointers. A mailbox cell
//! carries a chunk's class and index (`(class + 1) << 24 | index`), which the
//! receiver turns into an address with a multiply, not a search or a
//! division. Every value read back is checked by [`Mapped::decode`] (or
//! [`Mapped::entry`], which also locates the chunk).
//!
//! An attacher copies the header once, recomputes the whole layout from the
//! config it holds, and refuses the region unless every stored offset and
//! the file size match ([`Layout::from_header`]). After that it derives all
//! addresses from its private copy, so later scribbles on the header cannot
//! move them.

use crate::config::{Config, SizeClass, MAX_CLASSES};
use crate::notify::{Doorbell, EventCount};
use crate::pool::{Holders, Pool};
use crate::queue::OffsetQueue;
use crate::sys::Mapping;
use bytemuck::{Pod, Zeroable};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// `b"SHMBOX\0\x01"` read as a little-endian integer.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"SHMBOX\0\x01");
/// Bumped whenever the on-memory format changes.
pub(crate) const VERSION: u32 = 8;
/// Where a class's pool line has the futex word its waiting loaners sleep
/// on, its count of refused loans, and its waiting loaners (one bit per
/// slot).
const POOL_SEQ: u64 = 4;
const POOL_REFUSED: u64 = 8;
const WAITING_LOANERS: u64 = 16;
pub(crate) const HEADER_SIZE: u64 = 4096;
const INFO_OFFSET: u64 = 64;
pub(crate) const LINE: u64 = 64;
/// Two cache lines: the unit the adjacent-line prefetcher moves.
pub(crate) const PAIR: u64 = 2 * LINE;
pub(crate) const SLOT_SIZE: u64 = 2 * PAIR;
/// Offset of the owner's own line in a slot.
const SLOT_OWNER: u64 = PAIR;
/// A chunk's header (holders, len, sender, dest), on the same line as the
/// first payload bytes: the receiver of a small message pulls one line.
pub(crate) const CHUNK_HEADER: u64 = 32;
const MAILBOX_HEAD: u64 = PAIR;
const MAILBOX_CELLS: u64 = 2 * PAIR;
/// The largest region, 128 GiB: a sanity cap on configs (entries name
/// chunks by class and index, so the size does not limit the encoding).
pub(crate) const MAX_REGION_SIZE: u64 = 1 << 37;

pub(crate) const STATE_INITIALIZING: u32 = 0;
pub(crate) const STATE_READY: u32 = 1;

/// Byte of the region's file that its creator locks (exclusive OFD lock)
/// while it initialises the region: an opener that finds the region not
/// ready and this byte unlocked knows the creator died.
pub(crate) const LOCK_INIT: u64 = 0;
/// Byte every attached handle locks shared: nobody else holds it means
/// nobody else is attached.
pub(crate) const LOCK_ATTACH: u64 = 1;
/// Byte `LOCK_SLOTS + slot` is locked exclusively by the participant in
/// `slot` for as long as it lives (or by a sweeper reclaiming the slot).
pub(crate) const LOCK_SLOTS: u64 = 64;

const fn round_up(x: u64, to: u64) -> u64 {
    x.div_ceil(to) * to
}

/// The header fields after magic, version and state, as stored.
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
#[repr(C)]
pub(crate) struct HeaderInfo {
    pub total_size: u64,
    pub created_unix_ms: u64,
    pub creator_pid: u32,
    pub max_participants: u32,
    pub mailbox_capacity: u32,
    pub class_count: u32,
    pub mode: u32,
    /// Random at creation: tells this region from any other (addresses
    /// carry it, see `Address`).
    pub instance: u32,
    /// FNV-1a over every other field (this one taken as zero): catches a
    /// header edited into another self-consistent config.
    pub checksum: u64,
    pub class_size: [u64; MAX_CLASSES],
    pub class_chunks: [u64; MAX_CLASSES],
    pub slots_offset: u64,
    pub mailboxes_offset: u64,
    pub mailbox_stride: u64,
    pub pool_offset: [u64; MAX_CLASSES],
    pub chunks_offset: [u64; MAX_CLASSES],
    pub chunk_stride: [u64; MAX_CLASSES],
}

const _: () = assert!(INFO_OFFSET + std::mem::size_of::<HeaderInfo>() as u64 <= HEADER_SIZE);

impl HeaderInfo {
    fn compute_checksum(&self) -> u64 {
        let mut copy = *self;
        copy.checksum = 0;
        bytemuck::bytes_of(&copy)
            .iter()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            })
    }
}

/// Where one size class lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClassLayout {
    pub size: u64,
    pub count: u32,
    pub pool_offset: u64,
    pub bitmap_words: usize,
    pub chunks_offset: u64,
    pub stride: u64,
}

/// The computed, validated layout of a region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    pub config: Config,
    pub total_size: u64,
    pub slots_offset: u64,
    pub mailboxes_offset: u64,
    pub mailbox_stride: u64,
    pub classes: Vec<ClassLayout>,
    /// The header's `instance` (0 until [`create_in`] draws one).
    pub instance: u32,
}

/// Why a mapped object is not a usable region.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LayoutError {
    #[error("object is {0} bytes, smaller than a region header ({HEADER_SIZE} bytes)")]
    Truncated(u64),
    #[error("magic number {0:#018x} is not shmbox's")]
    Magic(u64),
    #[error("layout version {found} is not the supported version {VERSION}")]
    Version { found: u32 },
    #[error("stored config is invalid: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("header field {field} is {found}, but the config implies {expected}")]
    Field {
        field: &'static str,
        found: u64,
        expected: u64,
    },
    #[error("header says the region is {expected} bytes, but the object is {found} bytes")]
    Size { found: u64, expected: u64 },
}

/// Bytes of one mailbox: its head and tail lines, then its cells.
fn mailbox_stride(capacity: u32) -> u64 {
    MAILBOX_CELLS + round_up(u64::from(capacity) * 8, PAIR)
}

/// Bytes of one class's pool: its waiters line and its free bitmap.
fn pool_bytes(count: u32) -> u64 {
    round_up(LINE + u64::from(count).div_ceil(64) * 8, PAIR)
}

/// Bytes of one chunk of `size` payload bytes: header and payload, in whole
/// lines (saturating for an absurd size).
fn chunk_stride(size: u64) -> u64 {
    round_up(CHUNK_HEADER + size.min(u64::MAX / 4), LINE)
}

impl Layout {
    /// Computes where everything goes for `config` (assumed valid).
    pub(crate) fn compute(config: &Config) -> Layout {
        let slots_offset = HEADER_SIZE;
        let n = u64::from(config.max_participants);
        let mailboxes_offset = slots_offset + n * SLOT_SIZE;
        let mailbox_stride = mailbox_stride(config.mailbox_capacity);
        let mut at = mailboxes_offset + n * mailbox_stride;
        let mut classes = Vec::with_capacity(config.classes.len());
        for c in &config.classes {
            let pool_offset = at;
            at += pool_bytes(c.count);
            classes.push(ClassLayout {
                size: c.size,
                count: c.count,
                pool_offset,
                bitmap_words: (c.count as usize).div_ceil(64),
                chunks_offset: 0,
                stride: chunk_stride(c.size),
            });
        }
        for c in &mut classes {
            c.chunks_offset = at;
            at += u64::from(c.count) * c.stride;
        }
        Layout {
            config: config.clone(),
            total_size: round_up(at, 4096),
            slots_offset,
            mailboxes_offset,
            mailbox_stride,
            classes,
            instance: 0,
        }
    }

    /// Total bytes for `config` without validating it: what
    /// [`compute`](Self::compute) would give, saturating instead of
    /// overflowing on an absurd config.
    pub(crate) fn compute_size(config: &Config) -> u64 {
        let n = u64::from(config.max_participants);
        let per_participant = SLOT_SIZE.saturating_add(mailbox_stride(config.mailbox_capacity));
        let mut total = HEADER_SIZE.saturating_add(n.saturating_mul(per_participant));
        for c in &config.classes {
            let chunks = u64::from(c.count).saturating_mul(chunk_stride(c.size));
            total = total
                .saturating_add(pool_bytes(c.count))
                .saturating_add(chunks);
        }
        round_up(total.min(u64::MAX / 2), 4096)
    }

    fn info(&self, created_unix_ms: u64, creator_pid: u32) -> HeaderInfo {
        let mut info = HeaderInfo::zeroed();
        info.total_size = self.total_size;
        info.created_unix_ms = created_unix_ms;
        info.creator_pid = creator_pid;
        info.max_participants = self.config.max_participants;
        info.mailbox_capacity = self.config.mailbox_capacity;
        info.class_count = self.classes.len() as u32;
        info.mode = self.config.mode;
        info.instance = self.instance;
        info.slots_offset = self.slots_offset;
        info.mailboxes_offset = self.mailboxes_offset;
        info.mailbox_stride = self.mailbox_stride;
        for (i, c) in self.classes.iter().enumerate() {
            info.class_size[i] = c.size;
            info.class_chunks[i] = u64::from(c.count);
            info.pool_offset[i] = c.pool_offset;
            info.chunks_offset[i] = c.chunks_offset;
            info.chunk_stride[i] = c.stride;
        }
        info.checksum = info.compute_checksum();
        info
    }

    /// Validates a mailbox cell's value: it must name a chunk of some
    /// class (see [`encode_entry`]). Two shifts and two compares: this runs
    /// on every message received (through [`Mapped::entry`]).
    #[inline]
    pub(crate) fn decode(&self, value: u32) -> Result<ChunkRef, BadEntry> {
        self.decode_in(value).map(|(r, _)| r)
    }

    /// [`decode`](Self::decode), with the class's layout.
    #[inline]
    fn decode_in(&self, value: u32) -> Result<(ChunkRef, &ClassLayout), BadEntry> {
        let class = (value >> ENTRY_CLASS_SHIFT).wrapping_sub(1) as usize;
        let index = value & ENTRY_INDEX_MASK;
        match self.classes.get(class) {
            Some(c) if index < c.count => Ok((
                ChunkRef {
                    class: class as u8,
                    index,
                },
                c,
            )),
            _ => Err(BadEntry(value)),
        }
    }

    /// Rebuilds and checks the layout from a stored header and the size of
    /// the object it came from.
    pub(crate) fn from_header(info: &HeaderInfo, file_size: u64) -> Result<Layout, LayoutError> {
        let n = info.class_count as usize;
        if n == 0 || n > MAX_CLASSES {
            return Err(crate::config::ConfigError::ClassCount(n).into());
        }
        let mut classes = Vec::with_capacity(n);
        for i in 0..n {
            let count = u32::try_from(info.class_chunks[i]).unwrap_or(u32::MAX);
            classes.push(SizeClass::new(info.class_size[i], count));
        }
        let config = Config {
            classes,
            max_participants: info.max_participants,
            mailbox_capacity: info.mailbox_capacity,
            mode: info.mode,
        };
        config.validate()?;
        let mut layout = Layout::compute(&config);
        layout.instance = info.instance;
        let expected = layout.info(info.created_unix_ms, info.creator_pid);
        let check = |field: &'static str, found: u64, expected: u64| {
            if found == expected {
                Ok(())
            } else {
                Err(LayoutError::Field {
                    field,
                    found,
                    expected,
                })
            }
        };
        check("checksum", info.checksum, info.compute_checksum())?;
        check("total_size", info.total_size, expected.total_size)?;
        check("slots_offset", info.slots_offset, expected.slots_offset)?;
        check(
            "mailboxes_offset",
            info.mailboxes_offset,
            expected.mailboxes_offset,
        )?;
        check(
            "mailbox_stride",
            info.mailbox_stride,
            expected.mailbox_stride,
        )?;
        for i in 0..n {
            check("pool_offset", info.pool_offset[i], expected.pool_offset[i])?;
            check(
                "chunks_offset",
                info.chunks_offset[i],
                expected.chunks_offset[i],
            )?;
            check(
                "chunk_stride",
                info.chunk_stride[i],
                expected.chunk_stride[i],
            )?;
        }
        for i in n..MAX_CLASSES {
            check(
                "unused class field",
                info.class_size[i] | info.class_chunks[i],
                0,
            )?;
        }
        if file_size != layout.total_size {
            return Err(LayoutError::Size {
                found: file_size,
                expected: layout.total_size,
            });
        }
        Ok(layout)
    }
}

/// Owner of a region's bytes: a shared mapping or, for the in-process
/// backend, a zeroed heap allocation.
pub(crate) enum Backing {
    Shm(Mapping),
    Heap(HeapBuf),
}

/// A zeroed, page-aligned heap buffer standing in for shared memory.
pub(crate) struct HeapBuf {
    ptr: std::ptr::NonNull<u8>,
    layout: std::alloc::Layout,
}

// SAFETY: like `Mapping`: plain memory accessed through atomics and loans.
unsafe impl Send for HeapBuf {}
// SAFETY: as above.
unsafe impl Sync for HeapBuf {}

impl HeapBuf {
    pub(crate) fn new(len: usize) -> HeapBuf {
        let layout = std::alloc::Layout::from_size_align(len.max(1), 4096).expect("valid layout");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr =
            std::ptr::NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        HeapBuf { ptr, layout }
    }
}

impl Drop for HeapBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

impl Backing {
    /// Copies `bytes` to the start of a heap backing (for the fuzz entry
    /// points).
    pub(crate) fn copy_from(&self, bytes: &[u8]) {
        assert!(matches!(self, Backing::Heap(_)) && bytes.len() <= self.len());
        // SAFETY: in bounds (checked above); a heap backing nobody else can
        // see yet, so no concurrent access.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.base(), bytes.len()) }
    }

    fn base(&self) -> *mut u8 {
        match self {
            Backing::Shm(m) => m.as_ptr(),
            Backing::Heap(h) => h.ptr.as_ptr(),
        }
    }
    fn len(&self) -> usize {
        match self {
            Backing::Shm(m) => m.len(),
            Backing::Heap(h) => h.layout.size(),
        }
    }
}

/// Reads the magic, version and state words of a mapping at least a header
/// long.
pub(crate) struct HeaderWords<'a> {
    pub magic: &'a AtomicU64,
    pub version: &'a AtomicU32,
    pub state: &'a AtomicU32,
}

/// Header words of `backing`, which must be at least `HEADER_SIZE` long.
pub(crate) fn header_words(backing: &Backing) -> HeaderWords<'_> {
    assert!(backing.len() as u64 >= HEADER_SIZE);
    let base = backing.base();
    // SAFETY: the first 16 bytes are in bounds and 8-aligned (page-aligned
    // base); they are only ever accessed atomically.
    unsafe {
        HeaderWords {
            magic: AtomicU64::from_ptr(base.cast()),
            version: AtomicU32::from_ptr(base.add(8).cast()),
            state: AtomicU32::from_ptr(base.add(12).cast()),
        }
    }
}

/// Copies the stored header info out of `backing` (at least a header long).
pub(crate) fn read_info(backing: &Backing) -> HeaderInfo {
    assert!(backing.len() as u64 >= HEADER_SIZE);
    // SAFETY: in bounds; a volatile copy of plain-old-data, so a concurrent
    // writer can give us garbage values but not undefined behaviour in Rust's
    // model of this process (we never hold a reference into it).
    unsafe {
        std::ptr::read_volatile(
            backing
                .base()
                .add(INFO_OFFSET as usize)
                .cast::<HeaderInfo>(),
        )
    }
}

/// A participant slot in the table.
pub(crate) struct SlotView<'a> {
    /// `generation << 32 | status` (see `registry`).
    pub state: &'a AtomicU64,
    pub pid: &'a AtomicU32,
    pub strategy: &'a AtomicU32,
    /// The CPU the participant last waited for messages on, plus one (0:
    /// not known yet); written when it changes, read by its senders.
    /// Advisory: it only decides a cache hint, so a stale or scribbled
    /// value (or a binary that never writes it) costs speed, nothing else.
    pub cpu: &'a AtomicU32,
    /// Up to 32 name bytes, zero-padded, packed little-endian.
    pub name: &'a [AtomicU64],
    /// The mailbox entry the participant is taking right now (0 if none),
    /// so a sweep can tell a message being received from one never sent.
    pub taking: &'a AtomicU32,
    /// The participant's counters, on the owner's line of the slot (only
    /// the owner writes them, now and then): see [`Counter`].
    pub counters: &'a [AtomicU64],
    /// The classes the participant keeps chunks of while asleep in a
    /// receive (see [`KeepNotice`](crate::notify::KeepNotice)).
    pub kept_asleep: &'a AtomicU32,
}

/// Per-participant counters, in slot order.
#[derive(Debug, Clone, Copy)]
#[repr(usize)]
pub(crate) enum Counter {
    Sent,
    Received,
    BytesSent,
    BytesReceived,
    Full,
    Timeouts,
}

pub(crate) const COUNTERS: usize = 6;

/// One mailbox: its queue and its two doorbells.
pub(crate) struct MailboxView<'a> {
    pub queue: OffsetQueue<'a>,
    /// Rung by the receiver for senders waiting for room.
    pub room: Doorbell<'a>,
    /// Rung by a sender for the receiver asleep in `recv`.
    pub parker: Doorbell<'a>,
}

/// Flag in a chunk header's `len` word: the payload is a batch of records.
pub(crate) const BATCH_FLAG: u64 = 1 << 63;

/// A chunk's header, the first [`CHUNK_HEADER`] bytes of its first line;
/// its payload follows on the same line. `sender` and `dest` pack
/// `slot << 32 | generation`; `len` is the message's length, with
/// [`BATCH_FLAG`] for a batch.
#[repr(C)]
pub(crate) struct ChunkHeader {
    pub holders: AtomicU64,
    pub len: AtomicU64,
    pub sender: AtomicU64,
    pub dest: AtomicU64,
}

const _: () = assert!(std::mem::size_of::<ChunkHeader>() as u64 == CHUNK_HEADER);

/// A chunk's header in the region. Only [`Mapped::chunk_at`] makes one, so
/// a whole chunk (header and payload) lies behind every such reference.
pub(crate) type ChunkView<'a> = &'a ChunkHeader;

/// A chunk located in the region (see [`Mapped::chunk_at`]).
#[derive(Clone, Copy)]
pub(crate) struct ChunkAt<'a> {
    pub r: ChunkRef,
    pub header: ChunkView<'a>,
    /// Its payload (32-byte aligned), on the header's line.
    pub payload: *mut u8,
    /// Bytes the payload can hold.
    pub capacity: usize,
}

/// A chunk reference decoded from a mailbox cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChunkRef {
    pub class: u8,
    pub index: u32,
}

/// A value read from a mailbox that names no chunk of this region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("mailbox entry {0:#x} names no chunk of this region")]
pub(crate) struct BadEntry(pub u32);

/// Bits of an entry below its class.
pub(crate) const ENTRY_CLASS_SHIFT: u32 = 24;
const ENTRY_INDEX_MASK: u32 = (1 << ENTRY_CLASS_SHIFT) - 1;
const _: () = assert!(crate::config::MAX_CHUNKS_PER_CLASS <= 1 << ENTRY_CLASS_SHIFT);
const _: () = assert!(((MAX_CLASSES as u32) << ENTRY_CLASS_SHIFT) < crate::queue::MAX_VALUE);

/// The value a mailbox cell carries for chunk `index` of class `class`:
/// `(class + 1) << 24 | index`, never 0 and below the queue's markers.
#[inline]
pub(crate) const fn encode_entry(class: u8, index: u32) -> u32 {
    ((class as u32 + 1) << ENTRY_CLASS_SHIFT) | index
}

/// A region's memory together with its validated layout.
pub(crate) struct Mapped {
    backing: Backing,
    /// `backing`'s first byte, kept here so hot paths skip the match.
    base: *mut u8,
    pub layout: Layout,
}

// SAFETY: `base` points into `backing`, which is Send and Sync and lives as
// long as `self`; shared memory is accessed only atomically or through
// loans, as for `Backing` itself.
unsafe impl Send for Mapped {}
// SAFETY: as above.
unsafe impl Sync for Mapped {}

impl Mapped {
    /// Pairs memory with a layout validated against its size.
    pub(crate) fn new(backing: Backing, layout: Layout) -> Mapped {
        assert_eq!(
            backing.len() as u64,
            layout.total_size,
            "layout does not match the memory"
        );
        // The arrays indexed on hot paths (slots, mailboxes, each class's
        // chunks) lie inside the memory, and each element holds what is
        // read from it: `element` relies on this and checks only the index.
        let fits = |offset: u64, stride: u64, n: u32, need: u64| {
            stride >= need
                && stride % LINE == 0
                && offset % LINE == 0
                && u64::from(n)
                    .checked_mul(stride)
                    .and_then(|bytes| bytes.checked_add(offset))
                    .is_some_and(|end| end <= layout.total_size)
        };
        let max = layout.config.max_participants;
        assert!(fits(layout.slots_offset, SLOT_SIZE, max, SLOT_SIZE));
        assert!(fits(
            layout.mailboxes_offset,
            layout.mailbox_stride,
            max,
            MAILBOX_CELLS + 8 * u64::from(layout.config.mailbox_capacity)
        ));
        for c in &layout.classes {
            assert!(fits(
                c.chunks_offset,
                c.stride,
                c.count,
                CHUNK_HEADER + c.size
            ));
        }
        let base = backing.base();
        Mapped {
            backing,
            base,
            layout,
        }
    }

    #[inline]
    fn u64_at(&self, off: u64) -> &AtomicU64 {
        assert!(off % 8 == 0 && off + 8 <= self.layout.total_size);
        // SAFETY: in bounds and 8-aligned (checked above; the base is page
        // aligned); shared memory is accessed only atomically through here.
        unsafe { AtomicU64::from_ptr(self.base.add(off as usize).cast()) }
    }

    #[inline]
    fn u32_at(&self, off: u64) -> &AtomicU32 {
        assert!(off % 4 == 0 && off + 4 <= self.layout.total_size);
        // SAFETY: in bounds and 4-aligned, as above.
        unsafe { AtomicU32::from_ptr(self.base.add(off as usize).cast()) }
    }

    fn u64_slice(&self, off: u64, n: usize) -> &[AtomicU64] {
        assert!(off % 8 == 0 && off + 8 * n as u64 <= self.layout.total_size);
        // SAFETY: `n` aligned words in bounds, accessed only atomically.
        unsafe { std::slice::from_raw_parts(self.base.add(off as usize).cast(), n) }
    }

    /// Element `i` of an array of `n` elements of `stride` bytes at
    /// `offset`, one of those [`new`](Self::new) checked to lie inside the
    /// memory: only the index is checked here (hot paths build views per
    /// message). Fields inside are then reached without further checks.
    #[inline]
    fn element(&self, offset: u64, stride: u64, i: u32, n: u32) -> Block<'_> {
        assert!(i < n, "index {i} out of {n}");
        let off = offset + u64::from(i) * stride;
        debug_assert!(off % LINE == 0 && off + stride <= self.layout.total_size);
        Block {
            // SAFETY: `new` checked that all `n` elements lie inside the
            // memory, and `i < n` (checked above).
            ptr: unsafe { self.base.add(off as usize) },
            len: stride,
            _mapped: std::marker::PhantomData,
        }
    }

    /// A copy of every byte of a heap-backed region (for the fuzz seeds).
    pub(crate) fn to_vec(&self) -> Vec<u8> {
        assert!(matches!(self.backing, Backing::Heap(_)));
        // SAFETY: the whole backing is in bounds; heap-backed and owned by
        // `self`, which the caller has not shared.
        unsafe { std::slice::from_raw_parts(self.base, self.backing.len()) }.to_vec()
    }

    pub(crate) fn header(&self) -> HeaderWords<'_> {
        header_words(&self.backing)
    }

    pub(crate) fn info(&self) -> HeaderInfo {
        read_info(&self.backing)
    }

    /// Writes a fresh region: header info, empty queues, full pools. The
    /// caller then publishes magic/version/state.
    pub(crate) fn initialize(&self, creator_pid: u32) {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let info = self.layout.info(ms, creator_pid);
        // SAFETY: in bounds (static assert above); nobody else reads the info
        // before the state word says READY.
        unsafe {
            std::ptr::write_volatile(
                self.backing
                    .base()
                    .add(INFO_OFFSET as usize)
                    .cast::<HeaderInfo>(),
                info,
            )
        };
        for slot in 0..self.layout.config.max_participants {
            self.mailbox(slot).queue.init();
        }
        for c in 0..self.layout.classes.len() {
            self.pool(c as u8).init();
        }
    }

    #[inline]
    pub(crate) fn slot(&self, slot: u32) -> SlotView<'_> {
        let b = self.element(
            self.layout.slots_offset,
            SLOT_SIZE,
            slot,
            self.layout.config.max_participants,
        );
        SlotView {
            state: b.u64(0),
            pid: b.u32(8),
            strategy: b.u32(12),
            cpu: b.u32(48),
            name: b.u64s(16, 4),
            taking: b.u32(SLOT_OWNER + 48),
            counters: b.u64s(SLOT_OWNER, COUNTERS),
            kept_asleep: b.u32(SLOT_OWNER + 52),
        }
    }

    #[inline]
    pub(crate) fn mailbox(&self, slot: u32) -> MailboxView<'_> {
        let b = self.element(
            self.layout.mailboxes_offset,
            self.layout.mailbox_stride,
            slot,
            self.layout.config.max_participants,
        );
        let cap = self.layout.config.mailbox_capacity as usize;
        MailboxView {
            queue: OffsetQueue::new(b.u64(0), b.u64(MAILBOX_HEAD), b.u64s(MAILBOX_CELLS, cap)),
            room: Doorbell::new(b.u32(MAILBOX_HEAD + 12)),
            parker: Doorbell::new(b.u32(LINE)),
        }
    }

    pub(crate) fn pool(&self, class: u8) -> Pool<'_, ClassChunks<'_>> {
        let c = &self.layout.classes[class as usize];
        Pool::new(
            self.u64_slice(c.pool_offset + LINE, c.bitmap_words),
            c.count,
            ClassChunks {
                mapped: self,
                class: c,
            },
        )
    }

    /// Whether loaners sleep waiting for a chunk of `class` (see
    /// [`pool_waiters`](Self::pool_waiters)).
    #[inline]
    pub(crate) fn loaners_waiting(&self, class: u8) -> bool {
        let c = &self.layout.classes[class as usize];
        self.u64_at(c.pool_offset + WAITING_LOANERS)
            .load(Ordering::Relaxed)
            != 0
    }

    /// How often loans found `class` exhausted (wrapping; counted at most
    /// once a millisecond per participant): a participant keeping chunks
    /// of the class gives them back when it sees this move.
    #[inline]
    pub(crate) fn loans_refused(&self, class: u8) -> &AtomicU32 {
        let c = &self.layout.classes[class as usize];
        self.u32_at(c.pool_offset + POOL_REFUSED)
    }

    /// The wait list of loaners blocked on an exhausted class.
    pub(crate) fn pool_waiters(&self, class: u8) -> EventCount<'_> {
        let c = &self.layout.classes[class as usize];
        EventCount::new(
            self.u64_at(c.pool_offset + WAITING_LOANERS),
            self.u32_at(c.pool_offset + POOL_SEQ),
        )
    }

    /// Chunk `r`'s header view.
    #[inline]
    pub(crate) fn chunk(&self, r: ChunkRef) -> ChunkView<'_> {
        self.chunk_at(r).header
    }

    /// Chunk `r`: its header, the start of its payload and its capacity,
    /// with one bounds check.
    #[inline]
    pub(crate) fn chunk_at(&self, r: ChunkRef) -> ChunkAt<'_> {
        self.chunk_in(&self.layout.classes[r.class as usize], r)
    }

    /// [`chunk_at`](Self::chunk_at) with `r`'s class layout `c` at hand.
    #[inline(always)]
    fn chunk_in(&self, c: &ClassLayout, r: ChunkRef) -> ChunkAt<'_> {
        let b = self.element(c.chunks_offset, c.stride, r.index, c.count);
        // SAFETY: the block spans the whole chunk: its header, 64-aligned
        // (elements start on a line), then its payload (`new` checked the
        // stride holds both). Shared memory is only accessed atomically
        // through the header. The payload pointer is taken from the block's
        // own pointer, not from the header reference, so it may reach the
        // whole payload.
        let (header, payload) = unsafe {
            (
                &*b.ptr.cast::<ChunkHeader>(),
                b.ptr.add(CHUNK_HEADER as usize),
            )
        };
        ChunkAt {
            r,
            header,
            payload,
            capacity: c.size as usize,
        }
    }

    /// The chunk a value read from a mailbox cell names, validated: its
    /// class must exist and its index be below the class's count.
    #[inline]
    pub(crate) fn entry(&self, value: u32) -> Result<ChunkAt<'_>, BadEntry> {
        self.layout
            .decode_in(value)
            .map(|(r, c)| self.chunk_in(c, r))
    }

    /// The value a mailbox cell carries for `r`.
    #[inline]
    pub(crate) fn encode(&self, r: ChunkRef) -> u32 {
        encode_entry(r.class, r.index)
    }

    /// Validates a value read from a mailbox cell: it must name a chunk of
    /// some class.
    #[inline]
    pub(crate) fn decode(&self, value: u32) -> Result<ChunkRef, BadEntry> {
        self.layout.decode(value)
    }

    /// Smallest class whose chunks hold `len` bytes.
    #[inline]
    pub(crate) fn class_for(&self, len: usize) -> Option<u8> {
        self.layout
            .classes
            .iter()
            .position(|c| c.size >= len as u64)
            .map(|c| c as u8)
    }

    #[cfg(test)]
    pub(crate) fn is_ready(&self) -> bool {
        self.header().state.load(Ordering::Acquire) == STATE_READY
    }
}

/// Starts fetching the cache line at `ptr` *for writing* (x86 `PREFETCHW`:
/// the line arrives exclusive, so the store or atomic that follows does not
/// fetch it a second time to upgrade it). `_mm_prefetch` with the ET0 hint
/// would compile to a plain read prefetch unless the crate were built with
/// the `prfchw` feature, hence the instruction itself; x86 CPUs without it
/// decode it as a no-op. Elsewhere it does nothing.
#[inline(always)]
pub(crate) fn prefetch_write(ptr: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it changes no register, flag or memory
    // and never faults, whatever the address.
    unsafe {
        core::arch::asm!("prefetchw [{}]", in(reg) ptr, options(nostack, preserves_flags, readonly));
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = ptr;
}

/// Hints that the cache line at `ptr` is next wanted by another core (x86
/// `CLDEMOTE`): the line leaves this core's private caches for the shared
/// last-level cache, where the other core's miss finds it sooner than by
/// asking this core for it. A hint: no register, flag or memory changes,
/// and the line stays valid. CPUs without the instruction decode it as a
/// no-op (it is in the reserved-NOP space). Elsewhere it does nothing.
#[inline(always)]
pub(crate) fn demote(ptr: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a hint: it changes no register, flag or memory and never
    // faults, whatever the address.
    unsafe {
        core::arch::asm!("cldemote [{}]", in(reg) ptr, options(nostack, preserves_flags, readonly));
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = ptr;
}

/// Starts fetching the header line of chunk `c` (with its first payload
/// bytes) for writing, and, if a `len`-byte payload reaches past that line,
/// its second line too. A line the message does not use is left alone:
/// fetching it would only take it away from the other side for nothing.
#[inline(always)]
pub(crate) fn prefetch_for_writing(c: &ChunkAt<'_>, len: usize) {
    prefetch_write(c.header as *const ChunkHeader as *const u8);
    if len as u64 > LINE - CHUNK_HEADER {
        prefetch_write(c.payload.wrapping_add((LINE - CHUNK_HEADER) as usize));
    }
}

/// Starts fetching, for reading, the rest of chunk `c` that a `len`-byte
/// payload uses beyond the header's line (its second line; the hardware
/// prefetcher follows from there).
#[inline(always)]
pub(crate) fn prefetch_rest(c: &ChunkAt<'_>, len: usize) {
    if len as u64 > LINE - CHUNK_HEADER {
        prefetch_read(c.payload.wrapping_add((LINE - CHUNK_HEADER) as usize));
    }
}

/// Starts fetching the cache line at `ptr` for reading.
#[inline(always)]
pub(crate) fn prefetch_read(ptr: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: as in `prefetch_write`.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(ptr.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = ptr;
}

/// A span of the region, one element of an array checked by
/// [`Mapped::new`] (see [`Mapped::element`]).
struct Block<'a> {
    ptr: *mut u8,
    len: u64,
    _mapped: std::marker::PhantomData<&'a Mapped>,
}

impl<'a> Block<'a> {
    #[inline]
    fn u64(&self, rel: u64) -> &'a AtomicU64 {
        debug_assert!(rel % 8 == 0 && rel + 8 <= self.len);
        // SAFETY: inside the block (layout constants; checked in debug
        // builds), 8-aligned since blocks start on a cache line; shared
        // memory is only ever accessed atomically through these views.
        unsafe { AtomicU64::from_ptr(self.ptr.add(rel as usize).cast()) }
    }

    #[inline]
    fn u32(&self, rel: u64) -> &'a AtomicU32 {
        debug_assert!(rel % 4 == 0 && rel + 4 <= self.len);
        // SAFETY: as in `u64`.
        unsafe { AtomicU32::from_ptr(self.ptr.add(rel as usize).cast()) }
    }

    #[inline]
    fn u64s(&self, rel: u64, n: usize) -> &'a [AtomicU64] {
        debug_assert!(rel % 8 == 0 && rel + 8 * n as u64 <= self.len);
        // SAFETY: as in `u64`, for `n` consecutive words.
        unsafe { std::slice::from_raw_parts(self.ptr.add(rel as usize).cast(), n) }
    }
}

/// Holders words of one class's chunks.
pub(crate) struct ClassChunks<'a> {
    mapped: &'a Mapped,
    class: &'a ClassLayout,
}

impl Holders for ClassChunks<'_> {
    #[inline]
    fn prefetch_for_write(&self, index: u32) {
        if index < self.class.count {
            let at = self.class.chunks_offset + u64::from(index) * self.class.stride;
            prefetch_write(self.mapped.base.wrapping_add(at as usize));
        }
    }

    #[inline]
    fn holders(&self, index: u32) -> &AtomicU64 {
        assert!(index < self.class.count);
        self.mapped
            .u64_at(self.class.chunks_offset + u64::from(index) * self.class.stride)
    }
}

/// Validates the header of a mapping of `file_size` bytes: magic, version,
/// then the layout. Used by `open` and by the validation tests.
pub(crate) fn validate(backing: &Backing, file_size: u64) -> Result<Layout, LayoutError> {
    if file_size < HEADER_SIZE || (backing.len() as u64) < HEADER_SIZE {
        return Err(LayoutError::Truncated(file_size));
    }
    let words = header_words(backing);
    let magic = words.magic.load(Ordering::Acquire);
    if magic != MAGIC {
        return Err(LayoutError::Magic(magic));
    }
    let version = words.version.load(Ordering::Acquire);
    if version != VERSION {
        return Err(LayoutError::Version { found: version });
    }
    Layout::from_header(&read_info(backing), file_size)
}

/// Builds a fresh region in `backing` (which must be `layout.total_size`
/// bytes of zeroes) and marks it ready.
pub(crate) fn create_in(backing: Backing, mut layout: Layout) -> Mapped {
    layout.instance = fresh_instance();
    let mapped = Mapped::new(backing, layout);
    let words = mapped.header();
    // Magic and version first: an opener that sees them knows this is a
    // shmbox region still being initialised, not a foreign object.
    words.magic.store(MAGIC, Ordering::Relaxed);
    words.version.store(VERSION, Ordering::Relaxed);
    mapped.initialize(crate::sys::pid());
    // SYNC POINT: pairs with the acquire load of `state` by openers.
    words.state.store(STATE_READY, Ordering::Release);
    mapped
}

/// A random region instance, from the kernel's random source (or, where
/// `getrandom` fails, from std's random hasher keys mixed with the process
/// id and the time, which differ in a forked child): two regions share one
/// only by chance (one in 2^32).
fn fresh_instance() -> u32 {
    let mut bytes = [0u8; 4];
    match rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()) {
        Ok(4) => u32::from_ne_bytes(bytes),
        _ => {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u32(std::process::id());
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
            );
            h.finish() as u32
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SizeClass;

    fn small() -> Config {
        Config::default()
            .with_classes(&[SizeClass::new(64, 10), SizeClass::new(1000, 3)])
            .with_max_participants(4)
            .with_mailbox_capacity(8)
    }

    /// An absurd config's size saturates (and is then refused as too
    /// large) instead of overflowing.
    #[test]
    fn an_absurd_config_saturates() {
        let config = Config::default()
            .with_max_participants(u32::MAX)
            .with_mailbox_capacity(1 << 30);
        assert!(config.total_size() > MAX_REGION_SIZE);
        assert!(config.validate().is_err());
    }

    #[test]
    fn the_size_without_a_layout_is_the_layout_size() {
        for config in [
            small(),
            Config::default(),
            Config::default()
                .with_classes(&[SizeClass::new(1, 1), SizeClass::new(33, 65)])
                .with_max_participants(1)
                .with_mailbox_capacity(2),
        ] {
            assert_eq!(
                Layout::compute_size(&config),
                Layout::compute(&config).total_size,
                "{config}"
            );
        }
    }

    fn fresh(config: &Config) -> Mapped {
        let layout = Layout::compute(config);
        create_in(
            Backing::Heap(HeapBuf::new(layout.total_size as usize)),
            layout,
        )
    }

    fn raw(m: &Mapped) -> *mut u8 {
        m.backing.base()
    }

    #[test]
    fn a_fresh_region_validates() {
        let m = fresh(&small());
        assert_eq!(validate(&m.backing, m.layout.total_size).unwrap(), m.layout);
        assert!(m.is_ready());
        assert_eq!(m.pool(0).free_count(), 10);
        assert_eq!(m.pool(1).free_count(), 3);
    }

    #[test]
    fn truncated_object_is_refused() {
        let m = fresh(&small());
        let short = m.layout.total_size - 4096;
        assert_eq!(
            validate(&m.backing, short),
            Err(LayoutError::Size {
                found: short,
                expected: m.layout.total_size
            })
        );
        assert_eq!(validate(&m.backing, 100), Err(LayoutError::Truncated(100)));
        let tiny = Backing::Heap(HeapBuf::new(100));
        assert_eq!(validate(&tiny, 100), Err(LayoutError::Truncated(100)));
    }

    #[test]
    fn wrong_magic_is_refused() {
        let m = fresh(&small());
        m.header().magic.store(0x1234, Ordering::Relaxed);
        assert_eq!(
            validate(&m.backing, m.layout.total_size),
            Err(LayoutError::Magic(0x1234))
        );
    }

    #[test]
    fn wrong_version_is_refused() {
        let m = fresh(&small());
        m.header().version.store(VERSION + 1, Ordering::Relaxed);
        assert_eq!(
            validate(&m.backing, m.layout.total_size),
            Err(LayoutError::Version { found: VERSION + 1 })
        );
    }

    fn patch_info(m: &Mapped, f: impl FnOnce(&mut HeaderInfo)) {
        let mut info = m.info();
        f(&mut info);
        // SAFETY: test-only write of the header info in bounds.
        unsafe { std::ptr::write_volatile(raw(m).add(INFO_OFFSET as usize).cast(), info) };
    }

    #[test]
    fn inconsistent_sizes_are_refused() {
        type Patch = Box<dyn Fn(&mut HeaderInfo)>;
        let cases: Vec<(&str, Patch)> = vec![
            ("offset", Box::new(|i| i.chunks_offset[1] += 64)),
            ("stride", Box::new(|i| i.chunk_stride[0] = 64)),
            ("total", Box::new(|i| i.total_size *= 2)),
            ("count", Box::new(|i| i.class_chunks[0] = 1 << 40)),
            ("classes", Box::new(|i| i.class_count = 9)),
            ("zero classes", Box::new(|i| i.class_count = 0)),
            ("order", Box::new(|i| i.class_size[1] = 32)),
            ("participants", Box::new(|i| i.max_participants = 1000)),
            ("capacity", Box::new(|i| i.mailbox_capacity = 7)),
            ("stray class", Box::new(|i| i.class_size[5] = 64)),
            ("mode", Box::new(|i| i.mode = 0o7777)),
        ];
        for (what, f) in cases {
            let m = fresh(&small());
            patch_info(&m, f);
            let r = validate(&m.backing, m.layout.total_size);
            assert!(r.is_err(), "{what}: corrupt header accepted");
        }
    }

    #[test]
    fn garbage_headers_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let m = fresh(&small());
        let size = m.layout.total_size;
        for _ in 0..2000 {
            let m2 = fresh(&small());
            let at = rng.random_range(0..256usize);
            // SAFETY: test-only scribble inside the header page.
            unsafe { *raw(&m2).add(at) = rng.random() };
            let _ = validate(&m2.backing, rng.random_range(0..size * 2));
        }
    }

    #[test]
    fn decode_checks_class_and_index() {
        let m = fresh(&small());
        let classes = m.layout.classes.len() as u8;
        for class in 0..classes {
            let count = m.layout.classes[class as usize].count;
            for index in 0..count {
                let r = ChunkRef { class, index };
                assert_eq!(m.decode(m.encode(r)), Ok(r));
            }
            // One past the last chunk of the class.
            let past = encode_entry(class, count);
            assert_eq!(m.decode(past), Err(BadEntry(past)));
        }
        // No class 0 (the empty value), no class past the last one, no
        // marker.
        for v in [0, 5, encode_entry(classes, 0), u32::MAX, u32::MAX - 1] {
            assert_eq!(m.decode(v), Err(BadEntry(v)), "{v:#x}");
        }
    }
}
