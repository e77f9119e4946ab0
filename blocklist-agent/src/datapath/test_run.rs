//! `BPF_PROG_TEST_RUN`: run the loaded program on a crafted frame in the
//! kernel, without an interface. Used by the verdict tests and the
//! per-packet cost benchmark, and (live frames) the benchmark's traffic
//! generator.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use aya::programs::Xdp;

use super::DatapathError;

/// `XDP_DROP`.
pub const XDP_DROP: u32 = 1;
/// `XDP_PASS`.
pub const XDP_PASS: u32 = 2;

/// The `test` member of `union bpf_attr` (linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// What one test run returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunResult {
    /// The XDP action of the last run.
    pub action: u32,
    /// Mean nanoseconds per run as the kernel measured it.
    pub duration_ns: u32,
}

/// Runs `prog` on `frame` `repeat` times (at least once) in the kernel.
pub fn run(prog: &Xdp, frame: &[u8], repeat: u32) -> Result<RunResult, DatapathError> {
    let fd = prog
        .fd()
        .map_err(|e| DatapathError::other("the program is not loaded", e))?;
    run_fd(fd.as_fd(), frame, repeat)
}

/// [`run`] for any loaded XDP or TC program, by file descriptor (for example one
/// another loader attached, opened with `BPF_PROG_GET_FD_BY_ID`).
pub fn run_fd(prog: BorrowedFd<'_>, frame: &[u8], repeat: u32) -> Result<RunResult, DatapathError> {
    let mut out = vec![0u8; frame.len() + 256];
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_size_out: out.len() as u32,
        data_in: frame.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat: repeat.max(1),
        ..Default::default()
    };
    test_run(&mut attr)?;
    Ok(RunResult {
        action: attr.retval,
        duration_ns: attr.duration,
    })
}

/// `BPF_F_TEST_XDP_LIVE_FRAMES`: the program's verdicts act for real.
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

/// `struct xdp_md`, the context handed to a live-frames run.
#[repr(C)]
#[derive(Default)]
struct XdpMd {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
}

/// Runs `prog` on `repeat` copies of `frame` with
/// `BPF_F_TEST_XDP_LIVE_FRAMES`, as if they had arrived on `ifindex` (in
/// the calling thread's network namespace): `XDP_TX` transmits out of that
/// interface and `XDP_REDIRECT` redirects for real. This is how
/// `xdp-trafficgen` generates traffic; the benchmark uses it to send
/// millions of frames per second into a veth pair. `batch_size` frames go
/// out per flush (0: the kernel's default, 64).
pub fn run_live(
    prog: BorrowedFd<'_>,
    frame: &[u8],
    ifindex: u32,
    repeat: u32,
    batch_size: u32,
) -> Result<(), DatapathError> {
    let ctx = XdpMd {
        data_end: frame.len() as u32,
        ingress_ifindex: ifindex,
        ..Default::default()
    };
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        repeat: repeat.max(1),
        ctx_size_in: size_of::<XdpMd>() as u32,
        ctx_in: &ctx as *const XdpMd as u64,
        flags: BPF_F_TEST_XDP_LIVE_FRAMES,
        batch_size,
        ..Default::default()
    };
    test_run(&mut attr)
}

fn test_run(attr: &mut TestRunAttr) -> Result<(), DatapathError> {
    // SAFETY: `TestRunAttr` is the `test` member BPF_PROG_TEST_RUN reads,
    // and its callers point it at a frame and context that outlive the call.
    unsafe { super::sys::bpf(super::sys::Command::ProgTestRun, attr) }
        .map(drop)
        .map_err(|e| DatapathError::other("BPF_PROG_TEST_RUN", e))
}
