//! `BPF_MAP_UPDATE_BATCH` / `BPF_MAP_DELETE_BATCH` (kernel >= 5.6 for hash
//! maps, and for LPM tries on recent kernels): one syscall per thousands of
//! entries instead of one per entry. aya does not expose them.

use std::os::fd::{AsRawFd, BorrowedFd};

use super::sys::{self, Command};

/// The `batch` member of `union bpf_attr` (linux/bpf.h).
#[repr(C)]
#[derive(Default)]
pub(crate) struct BatchAttr {
    pub(crate) in_batch: u64,
    pub(crate) out_batch: u64,
    pub(crate) keys: u64,
    pub(crate) values: u64,
    pub(crate) count: u32,
    pub(crate) map_fd: u32,
    pub(crate) elem_flags: u64,
    pub(crate) flags: u64,
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
            Some(libc::EINVAL) | Some(libc::ENOTSUP) | Some(libc::ENOSYS) | Some(ENOTSUPP)
        ) && self.done == 0
    }
}

/// The kernel's internal `ENOTSUPP`, which `bpf(2)` returns for a batch
/// command the map type does not implement (not `EOPNOTSUPP`).
const ENOTSUPP: i32 = 524;

fn call(cmd: Command, attr: &mut BatchAttr) -> Result<(), std::io::Error> {
    let asked = attr.count;
    // SAFETY: `BatchAttr` is the `batch` member the batch commands read;
    // every caller here points it at key and value buffers of `count`
    // elements that outlive the call.
    let r = unsafe { sys::bpf(cmd, attr) }.map(drop);
    // The kernel writes back how many elements it handled, except when it
    // refuses the command before the first (a map type without the batch
    // operation): then `count` is still what was asked, although nothing
    // was done. An element that fails stops the batch before `asked`, and
    // the end of a walk is ENOENT, so an unchanged count on any other
    // error means none.
    if r.as_ref()
        .is_err_and(|e| e.raw_os_error() != Some(libc::ENOENT))
        && attr.count == asked
    {
        attr.count = 0;
    }
    r
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
    let stride = size_of::<V>();
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
    let stride = size_of::<V>();
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
    let per_cpu = size_of::<V>().next_multiple_of(8);
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
    assert!(bytes.len() >= size_of::<V>());
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
        let r = call(Command::MapLookupBatch, &mut attr);
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
    call(Command::MapUpdateBatch, &mut attr).map_err(|error| BatchError {
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
    call(Command::MapDeleteBatch, &mut attr).map_err(|error| BatchError {
        done: attr.count as usize,
        error,
    })
}

#[cfg(test)]
mod tests {
    use std::{
        cell::RefCell,
        collections::BTreeMap,
        os::fd::{AsFd as _, OwnedFd},
        rc::Rc,
    };

    use super::*;
    use crate::datapath::sys::fake;

    fn fd() -> OwnedFd {
        std::fs::File::open("/dev/null").unwrap().into()
    }

    /// A hash map of u32 -> u64 as the kernel's batch commands see it.
    fn kernel(
        map: Rc<RefCell<BTreeMap<u32, u64>>>,
        calls: Rc<RefCell<Vec<Command>>>,
    ) -> impl FnMut(Command, *mut u8) -> std::io::Result<i64> {
        move |cmd, attr| {
            calls.borrow_mut().push(cmd);
            // SAFETY: the batch commands pass a BatchAttr whose buffers
            // hold `count` u32 keys and u64 values.
            let a = unsafe { &mut *attr.cast::<BatchAttr>() };
            let count = a.count as usize;
            // SAFETY: the callers' key and value buffers hold `count`
            // elements (a delete passes no values).
            let keys = unsafe { std::slice::from_raw_parts_mut(a.keys as *mut u32, count) };
            let values = match a.values {
                0 => &mut [][..],
                // SAFETY: as above.
                v => unsafe { std::slice::from_raw_parts_mut(v as *mut u64, count) },
            };
            let mut map = map.borrow_mut();
            match cmd {
                Command::MapLookupBatch => {
                    // SAFETY: `in_batch` and `out_batch` point at a u32 key.
                    let after = (a.in_batch != 0).then(|| unsafe { *(a.in_batch as *const u32) });
                    let rest: Vec<(u32, u64)> = map
                        .iter()
                        .filter(|(k, _)| after.is_none_or(|a| **k > a))
                        .map(|(k, v)| (*k, *v))
                        .collect();
                    let n = rest.len().min(count);
                    for (i, (k, v)) in rest[..n].iter().enumerate() {
                        keys[i] = *k;
                        values[i] = *v;
                    }
                    a.count = n as u32;
                    if n > 0 {
                        // SAFETY: as above.
                        unsafe { *(a.out_batch as *mut u32) = rest[n - 1].0 };
                    }
                    if n == rest.len() {
                        fake::errno(libc::ENOENT)
                    } else {
                        Ok(0)
                    }
                }
                Command::MapDeleteBatch => {
                    for (i, k) in keys.iter().enumerate() {
                        if map.remove(k).is_none() {
                            a.count = i as u32;
                            return fake::errno(libc::ENOENT);
                        }
                    }
                    Ok(0)
                }
                Command::MapUpdateBatch => {
                    map.extend(keys.iter().copied().zip(values.iter().copied()));
                    Ok(0)
                }
                _ => fake::errno(libc::EINVAL),
            }
        }
    }

    #[test]
    fn a_walk_ends_at_enoent_and_keeps_the_last_partial_chunk() {
        let map = Rc::new(RefCell::new(
            (1..=5).map(|k| (k, u64::from(k) * 10)).collect(),
        ));
        let calls = Rc::new(RefCell::new(Vec::new()));
        let got = fake::with(kernel(Rc::clone(&map), Rc::clone(&calls)), || {
            lookup_all::<u32, u64>(fd().as_fd(), 2)
        })
        .unwrap();
        assert_eq!(got, [(1, 10), (2, 20), (3, 30), (4, 40), (5, 50)]);
        // Two full chunks, then the last one with ENOENT.
        assert_eq!(calls.borrow().len(), 3);
    }

    #[test]
    fn a_range_stops_after_count_and_an_empty_map_is_no_error() {
        let map = Rc::new(RefCell::new((0..100).map(|k| (k, u64::from(k))).collect()));
        let calls = Rc::new(RefCell::new(Vec::new()));
        let mut seen = Vec::new();
        let n = fake::with(kernel(map, Rc::clone(&calls)), || {
            lookup_range::<u64>(fd().as_fd(), 10, 7, 3, |k, v| seen.push((k, v)))
        })
        .unwrap();
        assert_eq!(n, 7);
        assert_eq!(seen.first(), Some(&(10, 10)));
        assert_eq!(seen.last(), Some(&(16, 16)));
        assert_eq!(calls.borrow().len(), 3, "3 + 3 + 1");
        let empty = Rc::new(RefCell::new(BTreeMap::new()));
        let n = fake::with(kernel(empty, calls), || {
            lookup_each::<u32, u64>(fd().as_fd(), 8, |_, _| panic!("no entries"))
        })
        .unwrap();
        assert_eq!(n, 0);
    }

    #[test]
    fn a_missing_key_stops_a_delete_and_says_how_far_it_got() {
        let map = Rc::new(RefCell::new([(1, 0), (2, 0), (4, 0)].into_iter().collect()));
        let calls = Rc::new(RefCell::new(Vec::new()));
        let e = fake::with(kernel(Rc::clone(&map), calls), || {
            delete::<u32>(fd().as_fd(), &[1, 2, 3, 4])
        })
        .unwrap_err();
        assert_eq!(e.done, 2);
        assert_eq!(e.error.raw_os_error(), Some(libc::ENOENT));
        assert!(!e.unsupported());
        assert_eq!(map.borrow().keys().copied().collect::<Vec<_>>(), [4]);
    }

    #[test]
    fn only_a_refusal_before_any_element_means_unsupported() {
        let err = |done, errno| BatchError {
            done,
            error: std::io::Error::from_raw_os_error(errno),
        };
        assert!(err(0, libc::EINVAL).unsupported());
        assert!(err(0, libc::ENOTSUP).unsupported());
        assert!(err(0, ENOTSUPP).unsupported(), "the kernel's own ENOTSUPP");
        assert!(
            !err(3, libc::EINVAL).unsupported(),
            "a partial batch is a real error"
        );
        assert!(!err(0, libc::EPERM).unsupported());
        // A map type without batch operations: the kernel returns before
        // writing the count back, and nothing was done.
        let refuse = |_, _| fake::errno(ENOTSUPP);
        let e = fake::with(refuse, || {
            update::<u32, u64>(fd().as_fd(), &[1, 2], &[2, 3])
        })
        .unwrap_err();
        assert!(e.unsupported(), "done {}", e.done);
        let e = fake::with(refuse, || delete::<u32>(fd().as_fd(), &[1, 2])).unwrap_err();
        assert!(e.unsupported(), "done {}", e.done);
        let mut seen = 0;
        let e = fake::with(refuse, || {
            lookup_each::<u32, u64>(fd().as_fd(), 4, |_, _| seen += 1)
        })
        .unwrap_err();
        assert!(e.unsupported() && seen == 0, "no made-up entries ({seen})");
    }
}
