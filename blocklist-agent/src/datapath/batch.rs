//! `BPF_MAP_UPDATE_BATCH` / `BPF_MAP_DELETE_BATCH` (kernel >= 5.6 for hash
//! maps, and for LPM tries on recent kernels): one syscall per thousands of
//! entries instead of one per entry. aya 0.14 does not expose them.

use std::os::fd::{AsRawFd, BorrowedFd};

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// The `batch` member of `union bpf_attr` (linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// A failed batch: how many elements the kernel processed before the error.
#[derive(Debug)]
pub struct BatchError {
    /// Elements done before the failure.
    pub done: usize,
    /// The kernel's error.
    pub error: std::io::Error,
}

impl BatchError {
    /// True when the kernel does not support this batch operation on this
    /// map type (the caller falls back to single operations).
    pub fn unsupported(&self) -> bool {
        matches!(
            self.error.raw_os_error(),
            Some(libc::EINVAL) | Some(libc::ENOTSUP) | Some(libc::ENOSYS)
        ) && self.done == 0
    }
}

fn call(cmd: libc::c_long, attr: &mut BatchAttr) -> Result<(), std::io::Error> {
    // SAFETY: `attr` is a valid bpf_attr prefix for the batch commands; the
    // key and value buffers it points to outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>() as u32,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Reads every key and value of a map, `chunk` entries per syscall, with
/// the kernel's generic batch lookup (which walks the map like
/// `get_next_key`, but in the kernel). `K` and `V` must be the map's exact
/// key and value layouts.
pub fn lookup_all<K: Copy + Default, V: Copy + Default>(
    fd: BorrowedFd<'_>,
    chunk: usize,
) -> Result<Vec<(K, V)>, BatchError> {
    let mut out = Vec::new();
    lookup_each(fd, chunk, |k, v| out.push((k, v)))?;
    Ok(out)
}

/// [`lookup_all`], handing each entry to `f` as its chunk arrives instead
/// of collecting them: a caller that keeps less than the whole record (or
/// only counts) never holds a copy of the map. Returns the number of
/// entries.
pub fn lookup_each<K: Copy + Default, V: Copy + Default>(
    fd: BorrowedFd<'_>,
    chunk: usize,
    mut f: impl FnMut(K, V),
) -> Result<usize, BatchError> {
    let stride = std::mem::size_of::<V>();
    walk::<K>(fd, chunk, None, usize::MAX, stride, |k, v| f(k, value(v)))
}

/// Reads array entries `start..start + count` (fewer at the end of the
/// array), `chunk` per syscall: the batch walk of an array goes in index
/// order, so a run of ids costs one syscall per chunk, not one per id.
pub fn lookup_range<V: Copy + Default>(
    fd: BorrowedFd<'_>,
    start: u32,
    count: usize,
    chunk: usize,
    mut f: impl FnMut(u32, V),
) -> Result<usize, BatchError> {
    let stride = std::mem::size_of::<V>();
    let after = start.checked_sub(1);
    walk::<u32>(fd, chunk.min(count.max(1)), after, count, stride, |k, v| {
        f(k, value(v))
    })
}

/// [`lookup_each`] for a per-CPU map: `f` gets each key with its value on
/// every possible CPU (`cpus` of them, as `aya::util::nr_cpus` counts).
pub fn lookup_each_per_cpu<K: Copy + Default, V: Copy + Default>(
    fd: BorrowedFd<'_>,
    chunk: usize,
    cpus: usize,
    mut f: impl FnMut(K, &[V]),
) -> Result<usize, BatchError> {
    // The kernel copies each CPU's value rounded up to 8 bytes.
    let per_cpu = std::mem::size_of::<V>().next_multiple_of(8);
    let mut values = Vec::with_capacity(cpus);
    walk::<K>(fd, chunk, None, usize::MAX, per_cpu * cpus, |k, v| {
        values.clear();
        // CPU `c`'s copy, at its 8-byte-rounded offset.
        values.extend((0..cpus).map(|c| value::<V>(&v[c * per_cpu..])));
        f(k, &values)
    })
}

/// The `V` at the start of `bytes`, a value as the kernel copied it.
fn value<V: Copy>(bytes: &[u8]) -> V {
    assert!(bytes.len() >= std::mem::size_of::<V>());
    // SAFETY: in bounds (checked above); `V` is a plain `repr(C)` map
    // value, valid for any bytes the kernel wrote; the read is unaligned.
    unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<V>()) }
}

/// The batched walk: up to `limit` entries after key `after` (from the
/// start when `None`), each value `stride` bytes as the kernel lays them
/// out, handed to `f` as raw bytes.
fn walk<K: Copy + Default>(
    fd: BorrowedFd<'_>,
    chunk: usize,
    after: Option<K>,
    limit: usize,
    stride: usize,
    mut f: impl FnMut(K, &[u8]),
) -> Result<usize, BatchError> {
    let mut done = 0;
    let mut keys = vec![K::default(); chunk];
    // u64 words: every value layout here is at most 8-byte aligned.
    let mut values = vec![0u64; (chunk * stride).div_ceil(8)];
    let mut in_batch = after.unwrap_or_default();
    let mut out_batch = K::default();
    let mut first = after.is_none();
    while done < limit {
        let want = chunk.min(limit - done);
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                &in_batch as *const K as u64
            },
            out_batch: &mut out_batch as *mut K as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: want as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..Default::default()
        };
        let r = call(BPF_MAP_LOOKUP_BATCH, &mut attr);
        let n = attr.count as usize;
        // SAFETY: the kernel wrote `n` values of `stride` bytes each.
        let bytes =
            unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), values.len() * 8) };
        for (i, k) in keys[..n].iter().enumerate() {
            f(*k, &bytes[i * stride..(i + 1) * stride]);
        }
        done += n;
        match r {
            Ok(()) => {}
            // ENOENT: the walk reached the end (the last chunk is in `n`).
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(done),
            Err(error) => return Err(BatchError { done, error }),
        }
        in_batch = out_batch;
        first = false;
    }
    Ok(done)
}

/// Inserts `keys[i] -> values[i]` for all i in one syscall.
pub fn update<K, V>(fd: BorrowedFd<'_>, keys: &[K], values: &[V]) -> Result<(), BatchError> {
    assert_eq!(keys.len(), values.len());
    if keys.is_empty() {
        return Ok(());
    }
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count: keys.len() as u32,
        map_fd: fd.as_raw_fd() as u32,
        ..Default::default()
    };
    call(BPF_MAP_UPDATE_BATCH, &mut attr).map_err(|error| BatchError {
        done: attr.count as usize,
        error,
    })
}

/// Deletes `keys` in one syscall. A missing key stops the batch with
/// `ENOENT`; `done` then says how many were deleted before it.
pub fn delete<K>(fd: BorrowedFd<'_>, keys: &[K]) -> Result<(), BatchError> {
    if keys.is_empty() {
        return Ok(());
    }
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        count: keys.len() as u32,
        map_fd: fd.as_raw_fd() as u32,
        ..Default::default()
    };
    call(BPF_MAP_DELETE_BATCH, &mut attr).map_err(|error| BatchError {
        done: attr.count as usize,
        error,
    })
}
