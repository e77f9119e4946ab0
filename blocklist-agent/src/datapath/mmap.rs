//! A BPF array created with `BPF_F_MMAPABLE`, mapped into this process:
//! the agent reads and writes its `u64` values with plain (atomic) loads
//! and stores, no syscall per value.

use std::{
    os::fd::{AsRawFd as _, BorrowedFd, RawFd},
    sync::atomic::{AtomicU64, Ordering},
};

/// A shared, writable mapping of an mmapable array of `u64` values.
pub struct MappedU64 {
    ptr: *mut AtomicU64,
    len: usize,
    bytes: usize,
}

// SAFETY: the mapping is shared memory accessed only through atomics.
unsafe impl Send for MappedU64 {}

impl MappedU64 {
    /// Maps the `entries` values of the array behind `fd`, read-write.
    pub fn new(fd: BorrowedFd<'_>, entries: usize) -> std::io::Result<Self> {
        // The kernel checks the size against the map and refuses maps not
        // made mmapable.
        Self::map(fd.as_raw_fd(), 0, entries)
    }

    /// A shared mapping of `entries` values, whole pages, of `fd` (-1 with
    /// `MAP_ANONYMOUS` in `flags`).
    fn map(fd: RawFd, flags: libc::c_int, entries: usize) -> std::io::Result<Self> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let bytes = (entries * 8).div_ceil(page) * page;
        // SAFETY: a fresh shared mapping, owned by the value returned.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | flags,
                fd,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self {
            ptr: ptr.cast(),
            len: entries,
            bytes,
        })
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the array has no values.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn at(&self, i: usize) -> &AtomicU64 {
        assert!(
            i < self.len,
            "index {i} past the {} mapped values",
            self.len
        );
        // SAFETY: in bounds of the mapping, 8-byte aligned (page-aligned
        // base), and only ever accessed atomically by this process.
        unsafe { &*self.ptr.add(i) }
    }

    /// Reads value `i`.
    pub fn load(&self, i: usize) -> u64 {
        self.at(i).load(Ordering::Acquire)
    }

    /// Writes value `i` with one aligned store: a concurrent reader (the
    /// XDP program) sees the old value or the new one.
    pub fn store(&self, i: usize, v: u64) {
        self.at(i).store(v, Ordering::Release)
    }

    /// Sets the bits of `v` in value `i` with one atomic read-modify-write,
    /// so a store the XDP program makes to the same word meanwhile is kept.
    pub fn or(&self, i: usize, v: u64) {
        self.at(i).fetch_or(v, Ordering::AcqRel);
    }
}

#[cfg(test)]
impl MappedU64 {
    /// `entries` zeroed values in shared anonymous memory: the unit tests
    /// of code that writes mapped arrays, which the kernel's tests cover
    /// again through the program.
    pub fn anonymous(entries: usize) -> Self {
        Self::map(-1, libc::MAP_ANONYMOUS, entries).expect("mapping anonymous memory")
    }
}

impl Drop for MappedU64 {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, not used after this.
        unsafe { libc::munmap(self.ptr.cast(), self.bytes) };
    }
}
