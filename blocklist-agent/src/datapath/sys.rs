//! The one seam for `bpf(2)`: every command the agent issues itself, for
//! what aya does not expose (the batch lookups, updates and deletes,
//! `BPF_OBJ_GET` with file flags, `BPF_PROG_TEST_RUN`), goes through
//! [`bpf`]. aya covers everything else.
//!
//! Unit tests replace the kernel for their thread with `fake::with`, the
//! way aya's own `sys/fake.rs` does, so that the batch fallbacks and the
//! `ENOENT` handling are tested without a kernel.

use std::io;

/// The `bpf(2)` commands issued here (`enum bpf_cmd`, linux/bpf.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i64)]
pub(crate) enum Command {
    /// Open a pinned object.
    ObjGet = 7,
    /// Run a program on a crafted input.
    ProgTestRun = 10,
    /// Read a run of keys and values.
    MapLookupBatch = 24,
    /// Write keys and values.
    MapUpdateBatch = 26,
    /// Delete keys.
    MapDeleteBatch = 27,
}

/// Calls `bpf(cmd, attr, size_of::<A>())` and returns the kernel's
/// non-negative result (a new descriptor for [`Command::ObjGet`]).
///
/// # Safety
///
/// `A` must be the `union bpf_attr` member `cmd` reads (a `#[repr(C)]`
/// prefix of it), and every buffer its fields point to must be valid for
/// what `cmd` reads and writes there, for the duration of the call.
pub(crate) unsafe fn bpf<A>(cmd: Command, attr: &mut A) -> io::Result<i64> {
    #[cfg(test)]
    if let Some(r) = fake::call(cmd, (attr as *mut A).cast()) {
        return r;
    }
    // SAFETY: the caller's promise.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut A,
            size_of::<A>() as u32,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! A kernel for one test thread.

    use std::cell::RefCell;

    use super::{Command, io};

    /// What stands in for the kernel: the command and its attribute block.
    type Kernel = Box<dyn FnMut(Command, *mut u8) -> io::Result<i64>>;

    thread_local! {
        static KERNEL: RefCell<Option<Kernel>> = const { RefCell::new(None) };
    }

    /// Runs `f` with `kernel` answering every [`super::bpf`] call made on
    /// this thread.
    pub(crate) fn with<R>(
        kernel: impl FnMut(Command, *mut u8) -> io::Result<i64> + 'static,
        f: impl FnOnce() -> R,
    ) -> R {
        KERNEL.with(|k| *k.borrow_mut() = Some(Box::new(kernel)));
        struct Reset;
        impl Drop for Reset {
            fn drop(&mut self) {
                KERNEL.with(|k| *k.borrow_mut() = None);
            }
        }
        let _reset = Reset;
        f()
    }

    pub(super) fn call(cmd: Command, attr: *mut u8) -> Option<io::Result<i64>> {
        KERNEL.with(|k| k.borrow_mut().as_mut().map(|kernel| kernel(cmd, attr)))
    }

    /// An errno as the kernel returns it.
    pub(crate) fn errno(e: i32) -> io::Result<i64> {
        Err(io::Error::from_raw_os_error(e))
    }
}
