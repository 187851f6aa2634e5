//! The operating-system layer: POSIX shared memory, `mmap`, `fallocate`,
//! futexes. Thin wrappers over `rustix`; each names the C call it makes.

use crate::notify::Futex;
use crate::sync::AtomicU32;
use rustix::fd::OwnedFd;
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::shm;
use std::ptr::NonNull;
use std::time::Duration;

/// Prefix of every shmbox object name in `/dev/shm`.
pub(crate) const OBJECT_PREFIX: &str = "shmbox.";

/// The POSIX shared-memory object name for a region name.
pub(crate) fn object_name(name: &str) -> String {
    format!("/{OBJECT_PREFIX}{name}")
}

/// `shm_open(name, O_RDWR | O_CREAT | O_EXCL, mode)` followed by
/// `fchmod(fd, mode)` so the umask cannot narrow the mode.
///
/// See [`shm_open(3)`](https://man7.org/linux/man-pages/man3/shm_open.3.html).
pub(crate) fn shm_create_exclusive(object: &str, mode: u32) -> Result<OwnedFd, Errno> {
    let fd = shm::open(
        object,
        shm::OFlags::RDWR | shm::OFlags::CREATE | shm::OFlags::EXCL,
        Mode::from_raw_mode(mode),
    )?;
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
    Ok(fd)
}

/// `shm_open(name, O_RDWR, 0)`, with the safeguards of [`open_object`].
pub(crate) fn shm_open_existing(object: &str) -> Result<OwnedFd, Errno> {
    open_object(object, OFlags::RDWR)
}

/// `shm_open(name, O_RDONLY, 0)`: an existing object, for reading only,
/// with the safeguards of [`open_object`].
pub(crate) fn shm_open_read_only(object: &str) -> Result<OwnedFd, Errno> {
    open_object(object, OFlags::RDONLY)
}

/// Opens an existing object as `shm_open` does on Linux (`open` of the
/// name under `/dev/shm`), but
/// - never follows a symbolic link (`O_NOFOLLOW`, as glibc's `shm_open`
///   does; `ELOOP` for a link), so a link planted under a region's name
///   cannot lead to another file;
/// - never waits (`O_NONBLOCK`): opening a FIFO for reading waits for a
///   writer, and anyone may make one in `/dev/shm`. On a shared-memory
///   object (a tmpfs file) the flag changes nothing.
///
/// The caller checks that what it opened is a regular file
/// ([`not_a_file`]).
fn open_object(object: &str, access: OFlags) -> Result<OwnedFd, Errno> {
    rustix::fs::open(
        format!("{SHM_DIR}{object}"),
        access | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Where POSIX shared-memory objects live on Linux.
pub(crate) const SHM_DIR: &str = "/dev/shm";

/// What `fd` is when it is not a regular file (a shared-memory object
/// is one): "a FIFO", "a directory", ...; `None` for a regular file.
pub(crate) fn not_a_file(fd: &OwnedFd) -> Result<Option<&'static str>, Errno> {
    use rustix::fs::FileType;
    Ok(match FileType::from_raw_mode(stat(fd)?.st_mode) {
        FileType::RegularFile => None,
        FileType::Fifo => Some("a FIFO"),
        FileType::Directory => Some("a directory"),
        FileType::Socket => Some("a socket"),
        FileType::CharacterDevice => Some("a character device"),
        FileType::BlockDevice => Some("a block device"),
        FileType::Symlink => Some("a symbolic link"),
        _ => Some("something other than a file"),
    })
}

/// `shm_unlink(name)`.
///
/// See [`shm_unlink(3)`](https://man7.org/linux/man-pages/man3/shm_unlink.3.html).
pub(crate) fn shm_unlink(object: &str) -> Result<(), Errno> {
    shm::unlink(object)
}

/// `fallocate(fd, 0, 0, len)`: reserves the pages now, so a full `/dev/shm`
/// fails here (`ENOSPC`) instead of raising `SIGBUS` on first touch.
///
/// See [`fallocate(2)`](https://man7.org/linux/man-pages/man2/fallocate.2.html).
/// Retried when a signal interrupts it (a large reservation on tmpfs can
/// take long enough to be interrupted by a timer or profiler signal).
pub(crate) fn reserve(fd: &OwnedFd, len: u64) -> Result<(), Errno> {
    loop {
        match rustix::fs::fallocate(fd, rustix::fs::FallocateFlags::empty(), 0, len) {
            Err(Errno::INTR) => {}
            other => return other,
        }
    }
}

/// The CPU this thread runs on, plus one; 0 if it cannot be told.
/// `sched_getcpu()`: glibc reads it from the thread's `rseq` area, a few
/// nanoseconds, no system call.
///
/// See [`sched_getcpu(3)`](https://man7.org/linux/man-pages/man3/sched_getcpu.3.html).
#[inline]
pub(crate) fn current_cpu() -> u32 {
    // SAFETY: no arguments, no memory handed over; returns -1 on error.
    let cpu = unsafe { libc::sched_getcpu() };
    u32::try_from(cpu).map_or(0, |c| c.wrapping_add(1))
}

/// This process's limit on the size of a file it writes
/// (`getrlimit(RLIMIT_FSIZE)`, `ulimit -f`), if it has one. Growing an
/// object past it raises `SIGXFSZ`, which kills the process by default.
pub(crate) fn file_size_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Fsize).current
}

/// `fstat(fd).st_size`.
pub(crate) fn file_size(fd: &OwnedFd) -> Result<u64, Errno> {
    Ok(stat(fd)?.st_size as u64)
}

/// Bytes of memory the object behind `fd` holds (`fstat(fd).st_blocks`
/// in 512-byte units; for a tmpfs object, its pages in RAM or swap).
pub(crate) fn allocated_bytes(fd: &OwnedFd) -> Result<u64, Errno> {
    Ok(rustix::fs::fstat(fd)?.st_blocks as u64 * 512)
}

/// Free bytes on the filesystem holding `fd` (`fstatvfs`), for error messages.
pub(crate) fn free_bytes(fd: &OwnedFd) -> Option<u64> {
    let s = rustix::fs::fstatvfs(fd).ok()?;
    Some(s.f_bavail.saturating_mul(s.f_frsize))
}

/// A mapping of a whole file (shared and read-write, or a private view
/// for inspection); unmapped on drop.
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; all access to it goes through
// atomics or through loans whose exclusivity the pool guarantees.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// `mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)`.
    ///
    /// See [`mmap(2)`](https://man7.org/linux/man-pages/man2/mmap.2.html).
    pub(crate) fn map(fd: &OwnedFd, len: usize) -> Result<Self, Errno> {
        Self::map_with(fd, len, rustix::mm::MapFlags::SHARED)
    }

    /// `mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE |
    /// MAP_NORESERVE, fd, 0)`, for an inspector's `O_RDONLY` descriptor: a
    /// copy-on-write view of the object. Pages never written (an inspector
    /// never writes) are the object's own pages, so it sees every change
    /// the participants make; a store, if one ever happened, would land in
    /// a private copy and could not reach the shared object. (Writable,
    /// unlike a `PROT_READ` mapping, so atomic loads of any ordering are
    /// allowed on it.)
    pub(crate) fn map_private(fd: &OwnedFd, len: usize) -> Result<Self, Errno> {
        use rustix::mm::MapFlags;
        Self::map_with(fd, len, MapFlags::PRIVATE | MapFlags::NORESERVE)
    }

    fn map_with(fd: &OwnedFd, len: usize, flags: rustix::mm::MapFlags) -> Result<Self, Errno> {
        debug_assert!(len > 0);
        use rustix::mm::ProtFlags;
        // SAFETY: a fresh mapping at an address the kernel picks; it aliases
        // no Rust object.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                flags,
                fd,
                0,
            )?
        };
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or(Errno::NOMEM)?;
        Ok(Self { ptr, len })
    }

    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping we created and nobody uses
        // any more (every borrower holds the owning `Arc`).
        let r = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
        debug_assert!(r.is_ok(), "munmap failed: {r:?}");
    }
}

/// Shared (not `FUTEX_PRIVATE_FLAG`) futex calls, valid across processes.
#[derive(Clone, Copy, Default)]
pub(crate) struct SharedFutex;

impl Futex for SharedFutex {
    /// `futex(word, FUTEX_WAIT, expected, timeout)`.
    ///
    /// See [`futex(2)`](https://man7.org/linux/man-pages/man2/futex.2.html).
    fn wait(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
        let ts = timeout.map(|t| rustix::time::Timespec {
            tv_sec: t.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: i64::from(t.subsec_nanos()) as _,
        });
        let r = rustix::thread::futex::wait(
            word,
            rustix::thread::futex::Flags::empty(),
            expected,
            ts.as_ref(),
        );
        debug_assert!(
            matches!(
                r,
                Ok(()) | Err(Errno::AGAIN | Errno::INTR | Errno::TIMEDOUT)
            ),
            "unexpected futex wait result {r:?}"
        );
    }

    /// `futex(word, FUTEX_WAKE, count)`.
    fn wake(&self, word: &AtomicU32, count: u32) {
        let r = rustix::thread::futex::wake(
            word,
            rustix::thread::futex::Flags::empty(),
            count.min(i32::MAX as u32),
        );
        debug_assert!(r.is_ok(), "unexpected futex wake result {r:?}");
    }
}

/// Pid of the calling process (shown for information only; never trusted
/// for liveness).
pub(crate) fn pid() -> u32 {
    rustix::process::getpid().as_raw_nonzero().get() as u32
}

/// Kind of an open-file-description lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockKind {
    /// `F_RDLCK`: many holders.
    Shared,
    /// `F_WRLCK`: one holder.
    Exclusive,
}

fn flock(kind: libc::c_int, byte: u64) -> libc::flock {
    // SAFETY: `flock` is plain old data; all-zero is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = byte as libc::off_t;
    fl.l_len = 1;
    fl
}

fn lock_type(kind: LockKind) -> libc::c_int {
    match kind {
        LockKind::Shared => libc::F_RDLCK,
        LockKind::Exclusive => libc::F_WRLCK,
    }
}

fn fcntl_lock(fd: &OwnedFd, cmd: libc::c_int, fl: &mut libc::flock) -> Result<(), Errno> {
    use rustix::fd::AsRawFd;
    // SAFETY: `fl` is a valid, exclusively borrowed `struct flock` for the
    // duration of the call, as `F_OFD_*` commands require.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), cmd, fl as *mut libc::flock) };
    if r == -1 {
        Err(Errno::from_raw_os_error(
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        ))
    } else {
        Ok(())
    }
}

/// `fcntl(fd, F_OFD_SETLK, {kind, byte, 1})`: takes a lock on one byte of
/// the file without waiting. `Ok(false)` when another open file description
/// holds a conflicting lock. The kernel drops the lock when the description
/// is closed — in particular when its process dies, however it dies.
///
/// See [`fcntl(2)`](https://man7.org/linux/man-pages/man2/fcntl.2.html),
/// "Open file description locks".
pub(crate) fn ofd_try_lock(fd: &OwnedFd, kind: LockKind, byte: u64) -> Result<bool, Errno> {
    let mut fl = flock(lock_type(kind), byte);
    match fcntl_lock(fd, libc::F_OFD_SETLK, &mut fl) {
        Ok(()) => Ok(true),
        Err(Errno::AGAIN | Errno::ACCESS) => Ok(false),
        Err(e) => Err(e),
    }
}

/// `fcntl(fd, F_OFD_SETLK, {F_UNLCK, byte, 1})`.
pub(crate) fn ofd_unlock(fd: &OwnedFd, byte: u64) {
    let mut fl = flock(libc::F_UNLCK, byte);
    let r = fcntl_lock(fd, libc::F_OFD_SETLK, &mut fl);
    debug_assert!(r.is_ok(), "unlock failed: {r:?}");
}

/// `fcntl(fd, F_OFD_GETLK, {kind, byte, 1})`: whether another open file
/// description holds a lock on `byte` that conflicts with `kind`.
pub(crate) fn ofd_is_locked(fd: &OwnedFd, kind: LockKind, byte: u64) -> Result<bool, Errno> {
    let mut fl = flock(lock_type(kind), byte);
    fcntl_lock(fd, libc::F_OFD_GETLK, &mut fl)?;
    Ok(i32::from(fl.l_type) != libc::F_UNLCK)
}

/// Opens `/proc/self/fd/N`: a new open file description of the same
/// object (even if its name was removed), so its locks are its own.
pub(crate) fn reopen(fd: &OwnedFd) -> Result<OwnedFd, Errno> {
    use rustix::fd::AsRawFd;
    rustix::fs::open(
        format!("/proc/self/fd/{}", fd.as_raw_fd()),
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// `fstat(fd)`: among others its owner (`st_uid`), and its links
/// (`st_nlink`, 0 once the object's name is removed).
pub(crate) fn stat(fd: &OwnedFd) -> Result<rustix::fs::Stat, Errno> {
    rustix::fs::fstat(fd)
}

/// Device and inode of an open object, to tell two objects of one name apart.
pub(crate) fn identity(fd: &OwnedFd) -> Result<(u64, u64), Errno> {
    let st = stat(fd)?;
    Ok((st.st_dev, st.st_ino))
}
