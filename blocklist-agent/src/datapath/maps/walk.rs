//! Walks of whole maps and batched writes to them.

use super::*;

/// The kernel's `bpf_lpm_trie_key` layout, for batched reads (aya's key
/// type has no `Default`, which the read buffers need).
#[repr(C, packed)]
#[derive(Clone, Copy)]
pub(super) struct RawKey<const N: usize> {
    prefix_len: u32,
    data: [u8; N],
}

impl<const N: usize> Default for RawKey<N> {
    fn default() -> Self {
        Self {
            prefix_len: 0,
            data: [0; N],
        }
    }
}

/// Entries per batch syscall: large enough to amortise the syscall, small
/// enough to keep the kernel's temporary copy modest.
pub(super) const BATCH: usize = 8192;

/// Hands every entry of one map to `f`: one batched walk in the kernel
/// (on `fd`) where supported, else `fallback`, the map's own iterator (one
/// `get_next_key` + lookup pair per entry). `from_batch` and `from_iter`
/// turn the key, as each way reads it, into the entry's prefix (keys that
/// are not one are skipped).
pub(super) fn walk<KB: Copy + Default, KI>(
    fd: BorrowedFd<'_>,
    name: &str,
    from_batch: impl Fn(KB) -> Option<Prefix>,
    fallback: impl Iterator<Item = Result<(KI, EntryValue), MapError>>,
    from_iter: impl Fn(KI) -> Option<Prefix>,
    f: &mut impl FnMut(Prefix, &EntryValue),
) -> Result<(), DatapathError> {
    let what = || format!("listing {name}");
    let batched = batch::lookup_each::<KB, EntryValue>(fd, BATCH, |k, v| {
        if let Some(p) = from_batch(k) {
            f(p, &v)
        }
    });
    match batched {
        Ok(_) => return Ok(()),
        // Nothing was handed out before an unsupported first call.
        Err(e) if e.unsupported() && e.done == 0 => {}
        Err(e) => return Err(DatapathError::other(what(), e.error)),
    }
    for item in fallback {
        let (k, v) = item.map_err(map_err(what()))?;
        if let Some(p) = from_iter(k) {
            f(p, &v);
        }
    }
    Ok(())
}

/// A map holding [`EntryValue`]s under keys `K`: a trie (keys are
/// `Key<_>`) or an exact map (keys are the address bytes).
pub(super) trait EntryMap<K> {
    fn fd(&self) -> BorrowedFd<'_>;
    fn put(&mut self, key: &K, value: &EntryValue) -> Result<(), MapError>;
    fn del(&mut self, key: &K) -> Result<(), MapError>;
    fn max_entries(&self) -> u32;
}

impl<K: Pod> EntryMap<Key<K>> for LpmTrie<MapData, K, EntryValue> {
    fn fd(&self) -> BorrowedFd<'_> {
        self.map().fd().as_fd()
    }
    fn put(&mut self, key: &Key<K>, value: &EntryValue) -> Result<(), MapError> {
        self.insert(key, value, 0)
    }
    fn del(&mut self, key: &Key<K>) -> Result<(), MapError> {
        self.remove(key)
    }
    fn max_entries(&self) -> u32 {
        self.map().info().map(|i| i.max_entries()).unwrap_or(0)
    }
}

impl<K: Pod> EntryMap<K> for HashMap<MapData, K, EntryValue> {
    fn fd(&self) -> BorrowedFd<'_> {
        self.map().fd().as_fd()
    }
    fn put(&mut self, key: &K, value: &EntryValue) -> Result<(), MapError> {
        self.insert(key, value, 0)
    }
    fn del(&mut self, key: &K) -> Result<(), MapError> {
        self.remove(key)
    }
    fn max_entries(&self) -> u32 {
        self.map().info().map(|i| i.max_entries()).unwrap_or(0)
    }
}

pub(super) fn insert_batched<K, M: EntryMap<K>>(
    map: &mut M,
    name: &'static str,
    keys: &[K],
    values: &[EntryValue],
) -> Result<(), DatapathError> {
    for (kc, vc) in keys.chunks(BATCH).zip(values.chunks(BATCH)) {
        let r = batch::update(map.fd(), kc, vc);
        match r {
            Ok(()) => {}
            Err(e) if e.unsupported() => {
                for (k, v) in kc.iter().zip(vc) {
                    map.put(k, v).map_err(|e| {
                        if is_full(&e) {
                            full(map.max_entries(), name)
                        } else {
                            DatapathError::other(format!("inserting into {name}"), e)
                        }
                    })?;
                }
            }
            Err(e)
                if matches!(
                    e.error.raw_os_error(),
                    Some(libc::ENOSPC) | Some(libc::E2BIG)
                ) =>
            {
                return Err(full(map.max_entries(), name));
            }
            Err(e) => {
                return Err(DatapathError::other(
                    format!("batch insert into {name} (after {} entries)", e.done),
                    e.error,
                ));
            }
        }
    }
    Ok(())
}

pub(super) fn full(max: u32, name: &'static str) -> DatapathError {
    DatapathError::Full {
        map: name,
        max,
        entry: "a batch of entries".to_owned(),
    }
}

pub(super) fn delete_batched<K, M: EntryMap<K>>(
    map: &mut M,
    name: &'static str,
    keys: &[K],
) -> Result<(), DatapathError> {
    let mut rest = keys;
    while !rest.is_empty() {
        let chunk = &rest[..rest.len().min(BATCH)];
        match batch::delete(map.fd(), chunk) {
            Ok(()) => rest = &rest[chunk.len()..],
            // A missing key stops the batch: skip it and go on after it.
            Err(e) if e.error.raw_os_error() == Some(libc::ENOENT) => {
                rest = &rest[(e.done + 1).min(rest.len())..];
            }
            Err(e) if e.unsupported() => {
                for k in chunk {
                    match map.del(k) {
                        Ok(()) => {}
                        Err(e) if is_enoent(&e) => {}
                        Err(e) => {
                            return Err(DatapathError::other(format!("removing from {name}"), e));
                        }
                    }
                }
                rest = &rest[chunk.len()..];
            }
            Err(e) => {
                return Err(DatapathError::other(
                    format!("batch delete from {name} (after {} entries)", e.done),
                    e.error,
                ));
            }
        }
    }
    Ok(())
}

impl Maps {
    /// Every entry of one kind and family (for block entries, the trie's
    /// and the exact map's): one batched walk in the kernel per map where
    /// supported (a million entries in well under a second), else one
    /// `get_next_key` + lookup pair per entry.
    pub fn entries(
        &self,
        kind: TrieKind,
        family: Family,
    ) -> Result<Vec<(Prefix, EntryValue)>, DatapathError> {
        let mut out = Vec::new();
        self.visit(kind, family, |p, v| out.push((p, *v)))?;
        Ok(out)
    }

    /// Calls `f` on every entry of one kind and family, as the batched walk
    /// reads them.
    pub fn visit(
        &self,
        kind: TrieKind,
        family: Family,
        mut f: impl FnMut(Prefix, &EntryValue),
    ) -> Result<(), DatapathError> {
        self.visit_trie(kind, family, &mut f)?;
        if kind == TrieKind::Block {
            self.visit_exact(family, &mut f)?;
        }
        Ok(())
    }

    pub(super) fn visit_exact(
        &self,
        family: Family,
        f: &mut impl FnMut(Prefix, &EntryValue),
    ) -> Result<(), DatapathError> {
        let name = Store::Exact(family).name();
        if family.is_v4() {
            let host = |k: [u8; 4]| Prefix::from_v4(k, 32);
            let m = &self.exact_v4;
            walk(m.map().fd().as_fd(), name, host, m.iter(), host, f)
        } else {
            let host = |k: [u8; 16]| Prefix::from_v6(k, 128);
            let m = &self.exact_v6;
            walk(m.map().fd().as_fd(), name, host, m.iter(), host, f)
        }
    }

    pub(super) fn visit_trie(
        &self,
        kind: TrieKind,
        family: Family,
        f: &mut impl FnMut(Prefix, &EntryValue),
    ) -> Result<(), DatapathError> {
        let name = Store::Trie(kind, family).name();
        if family.is_v4() {
            let m = self.v4(kind);
            walk(
                m.map().fd().as_fd(),
                name,
                |k: RawKey<8>| Prefix::from_v4(v4_addr(k.data), k.prefix_len as u8),
                m.iter(),
                |k| Prefix::from_v4(v4_addr(k.data()), k.prefix_len() as u8),
                f,
            )
        } else {
            let m = self.v6(kind);
            walk(
                m.map().fd().as_fd(),
                name,
                |k: RawKey<16>| Prefix::from_v6(k.data, k.prefix_len as u8),
                m.iter(),
                |k| Prefix::from_v6(k.data(), k.prefix_len() as u8),
                f,
            )
        }
    }
}
