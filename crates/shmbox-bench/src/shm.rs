//! Plain shared mappings for the raw floors: a few control cache lines
//! followed by a byte area, in a POSIX shm object of its own.
//!
//! This module holds all of the crate's `unsafe` code.

use rustix::fd::OwnedFd;
use rustix::fs::Mode;
use rustix::mm::{MapFlags, ProtFlags};
use rustix::shm::OFlags;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};

/// One control word pair on a cache line of its own: a 64-bit word for
/// sequence numbers and ring indices, a 32-bit one for futexes.
#[repr(C, align(64))]
pub(crate) struct Line {
    /// Sequence number or index.
    pub(crate) word: AtomicU64,
    /// Futex word.
    pub(crate) futex: AtomicU32,
}

/// Size of one control line.
const LINE: usize = std::mem::size_of::<Line>();
/// The byte area starts on a page boundary.
const PAGE: usize = 4096;

/// A shared mapping: `lines` control lines, then `data_len` bytes. Unmapped
/// on drop.
pub(crate) struct SharedMem {
    ptr: NonNull<u8>,
    len: usize,
    lines: usize,
    data_len: usize,
}

// SAFETY: the mapping is plain memory owned by this handle; the control
// lines are atomics, and the byte area is handed out only through `&self`
// (shared) and `&mut self` (exclusive) borrows.
unsafe impl Send for SharedMem {}

/// Unlinks a POSIX shm object when dropped, also on error paths.
pub(crate) struct Unlink(pub(crate) String);

impl Drop for Unlink {
    fn drop(&mut self) {
        let _ = rustix::shm::unlink(self.0.as_str());
    }
}

fn total_len(lines: usize, data_len: usize) -> usize {
    (lines * LINE).div_ceil(PAGE) * PAGE + data_len
}

impl SharedMem {
    /// Creates the shm object `object` (exclusively, mode 0600), zeroed,
    /// and maps it. The returned guard unlinks the name.
    pub(crate) fn create(
        object: &str,
        lines: usize,
        data_len: usize,
    ) -> Result<(SharedMem, Unlink), String> {
        let flags = OFlags::CREATE | OFlags::EXCL | OFlags::RDWR;
        let fd = rustix::shm::open(object, flags, Mode::from_raw_mode(0o600))
            .map_err(|e| format!("shm_open {object}: {e}"))?;
        let unlink = Unlink(object.into());
        let len = total_len(lines, data_len);
        rustix::fs::ftruncate(&fd, len as u64).map_err(|e| format!("ftruncate {object}: {e}"))?;
        let mem = SharedMem::map(&fd, object, lines, data_len)?;
        Ok((mem, unlink))
    }

    /// Opens and maps the existing object `object`, which must be at least
    /// as large as `lines` and `data_len` require.
    pub(crate) fn open(object: &str, lines: usize, data_len: usize) -> Result<SharedMem, String> {
        let fd = rustix::shm::open(object, OFlags::RDWR, Mode::empty())
            .map_err(|e| format!("shm_open {object}: {e}"))?;
        let size = rustix::fs::fstat(&fd)
            .map_err(|e| format!("fstat {object}: {e}"))?
            .st_size;
        let len = total_len(lines, data_len);
        if u64::try_from(size).unwrap_or(0) < len as u64 {
            return Err(format!("{object} is {size} bytes, expected {len}"));
        }
        SharedMem::map(&fd, object, lines, data_len)
    }

    fn map(fd: &OwnedFd, object: &str, lines: usize, data_len: usize) -> Result<SharedMem, String> {
        let len = total_len(lines, data_len);
        // SAFETY: a fresh shared mapping (null hint) of `len` bytes of `fd`,
        // which is at least that long (ftruncate / fstat above); it aliases
        // no Rust object.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd,
                0,
            )
        }
        .map_err(|e| format!("mmap {object}: {e}"))?;
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or("mmap returned null")?;
        Ok(SharedMem {
            ptr,
            len,
            lines,
            data_len,
        })
    }

    /// Hints that the line holding byte `offset` of the byte area is next
    /// wanted by the other process (x86 `CLDEMOTE`: the line moves to the
    /// shared last-level cache), as shmbox does for the first line of a
    /// reply. A no-op elsewhere, and on x86 CPUs without the instruction.
    pub(crate) fn demote_data(&self, offset: usize) {
        assert!(offset < self.data_len, "byte {offset} of {}", self.data_len);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a hint: it changes no register, flag or memory and never
        // faults; the address is inside the mapping anyway.
        unsafe {
            core::arch::asm!(
                "cldemote [{}]",
                in(reg) self.data_ptr().add(offset),
                options(nostack, preserves_flags, readonly)
            );
        }
    }

    /// Control line `i`.
    ///
    /// # Panics
    ///
    /// If `i` is not below the number of lines mapped.
    pub(crate) fn line(&self, i: usize) -> &Line {
        assert!(i < self.lines, "control line {i} of {}", self.lines);
        // SAFETY: line `i` lies inside the mapping (checked above) at a
        // 64-byte aligned offset of a page-aligned mapping. `Line` is only
        // atomics, valid for every bit pattern (the object starts zeroed),
        // and every access to the control lines, here and in the peer, is
        // atomic. No `&mut` to this part of the mapping is ever made.
        unsafe { &*self.ptr.as_ptr().add(i * LINE).cast::<Line>() }
    }

    fn data_ptr(&self) -> *mut u8 {
        // SAFETY: the byte area starts at `len - data_len`, inside (or, for
        // an empty area, one past the end of) the mapping.
        unsafe { self.ptr.as_ptr().add(self.len - self.data_len) }
    }

    /// The byte area, for reading.
    ///
    /// The peer writes these bytes too; the protocols built on top hand
    /// each part of the area back and forth with release/acquire stores on
    /// the control lines, so a part is never written by one process while
    /// the other reads it.
    pub(crate) fn data(&self) -> &[u8] {
        // SAFETY: `data_len` bytes from `data_ptr` lie inside the live
        // mapping, and this process writes them only through
        // `data_mut(&mut self)`, which cannot overlap this borrow. Writes by
        // the peer are ordered by the control lines (see above).
        unsafe { std::slice::from_raw_parts(self.data_ptr(), self.data_len) }
    }

    /// The byte area, for writing (see [`data`](Self::data)).
    pub(crate) fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `data`; `&mut self` makes this the only reference
        // into the byte area in this process.
        unsafe { std::slice::from_raw_parts_mut(self.data_ptr(), self.data_len) }
    }
}

impl Drop for SharedMem {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` is the mapping made in `map`; no reference
        // handed out by `line` or `data` outlives `self`.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// A process-unique name for a shm object (POSIX form, leading `/`).
pub(crate) fn object_name(tag: &str) -> String {
    use std::sync::atomic::Ordering;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("/shmbox-bench-{}-{tag}-{n}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn create_open_share_and_unlink() {
        let name = object_name("test");
        let (mut a, unlink) = SharedMem::create(&name, 2, 100).unwrap();
        let b = SharedMem::open(&name, 2, 100).unwrap();
        a.line(1).word.store(7, Ordering::Release);
        a.data_mut()[99] = 5;
        assert_eq!(b.line(1).word.load(Ordering::Acquire), 7);
        assert_eq!(b.data()[99], 5);
        assert!(SharedMem::open(&name, 2, 5000).is_err());
        drop(unlink);
        assert!(SharedMem::open(&name, 2, 100).is_err());
    }
}
