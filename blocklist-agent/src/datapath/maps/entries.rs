//! Writing and reading entries: inserts, removals and lookups, each routed
//! by [`Route`](super::route::Route).

use super::*;

impl Maps {
    /// Exact lookup of one entry.
    pub fn get_exact(
        &self,
        kind: TrieKind,
        prefix: Prefix,
    ) -> Result<Option<EntryValue>, DatapathError> {
        let what = || format!("looking up {prefix} in {}", Store::of(kind, prefix).name());
        // A trie's lookup is longest-prefix. Entries are canonical, so a
        // match of this prefix's own length is this very entry.
        let (r, trie) = match &Route::of(kind, prefix) {
            Route::ExactV4(b) => (self.exact_v4.get(b, 0), false),
            Route::ExactV6(b) => (self.exact_v6.get(b, 0), false),
            Route::TrieV4(k, key) => (self.v4(*k).get(key, 0), true),
            Route::TrieV6(k, key) => (self.v6(*k).get(key, 0), true),
        };
        match r {
            Ok(v) if !trie || v.prefix_len == u32::from(prefix.prefix_len()) => Ok(Some(v)),
            Ok(_) => Ok(None),
            Err(e) if is_enoent(&e) => Ok(None),
            Err(e) => Err(map_err(what())(e)),
        }
    }

    /// Inserts (or overwrites) an entry. Returns true when it was new.
    pub fn insert(
        &mut self,
        kind: TrieKind,
        prefix: Prefix,
        flags: u32,
    ) -> Result<bool, DatapathError> {
        let existing = self.get_exact(kind, prefix)?;
        // Re-flagging an entry (a feed entry blocked by hand, say) keeps
        // its counters.
        let value = match existing {
            Some(old) => EntryValue { flags, ..old },
            None => {
                let id = match kind {
                    TrieKind::Block => self.ids_for(&[prefix])?[0],
                    TrieKind::Allow => 0,
                };
                EntryValue::new(prefix.prefix_len() as u32, flags, id)
            }
        };
        let store = Store::of(kind, prefix);
        let name = store.name();
        self.mark()?;
        let r = match &Route::of(kind, prefix) {
            Route::ExactV4(b) => self.exact_v4.insert(b, &value, 0),
            Route::ExactV6(b) => self.exact_v6.insert(b, &value, 0),
            Route::TrieV4(k, key) => self.v4_mut(*k).insert(key, &value, 0),
            Route::TrieV6(k, key) => self.v6_mut(*k).insert(key, &value, 0),
        };
        match r {
            Ok(()) => {
                if let Some(m) = &mut self.mirror {
                    match kind {
                        TrieKind::Block => m.put_blocks(vec![(
                            prefix,
                            Installed {
                                flags,
                                id: value.id,
                            },
                        )]),
                        TrieKind::Allow => m.put_allows(&[prefix]),
                    }
                }
                self.written()?;
                Ok(existing.is_none())
            }
            Err(e) if is_full(&e) => Err(DatapathError::Full {
                map: name,
                max: self.max_entries(store),
                entry: prefix.to_string(),
            }),
            Err(e) => Err(map_err(format!("inserting {prefix} into {name}"))(e)),
        }
    }

    /// Inserts a manual (`block`/`allow`) entry.
    pub fn insert_manual(&mut self, kind: TrieKind, prefix: Prefix) -> Result<bool, DatapathError> {
        self.insert(kind, prefix, ENTRY_FLAG_MANUAL)
    }

    /// Removes an entry (exact prefix), and with it its counters. Returns
    /// true when it was there.
    pub fn remove(&mut self, kind: TrieKind, prefix: Prefix) -> Result<bool, DatapathError> {
        let name = Store::of(kind, prefix).name();
        self.mark()?;
        let r = match Route::of(kind, prefix) {
            Route::ExactV4(b) => self.exact_v4.remove(&b),
            Route::ExactV6(b) if self.batching => {
                let there = self.get_exact(kind, prefix)?.is_some();
                self.deferred_v6.push(b);
                self.forget(kind, &[prefix]);
                self.written()?;
                return Ok(there);
            }
            Route::ExactV6(b) => self.exact_v6.remove(&b),
            Route::TrieV4(k, key) => self.v4_mut(k).remove(&key),
            Route::TrieV6(k, key) => self.v6_mut(k).remove(&key),
        };
        let removed = match r {
            Ok(()) => true,
            Err(e) if is_enoent(&e) => false,
            Err(e) => {
                self.mirror = None;
                return Err(map_err(format!("removing {prefix} from {name}"))(e));
            }
        };
        self.forget(kind, &[prefix]);
        self.written()?;
        Ok(removed)
    }

    /// Inserts (or overwrites) many entries with batched syscalls, falling
    /// back to one syscall per entry where the kernel lacks batch support.
    pub fn insert_many(
        &mut self,
        kind: TrieKind,
        entries: &[(Prefix, u32)],
    ) -> Result<(), DatapathError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.mark()?;
        let mut written = Vec::with_capacity(entries.len());
        // A chunk at a time: a million values at once would hold 64 MB.
        for chunk in entries.chunks(BATCH) {
            let ids = self.guarded(|m| m.insert_chunk(kind, chunk))?;
            written.extend(
                chunk
                    .iter()
                    .zip(ids)
                    .map(|((p, flags), id)| (*p, Installed { flags: *flags, id })),
            );
        }
        if let Some(m) = &mut self.mirror {
            match kind {
                TrieKind::Block => m.put_blocks(written),
                TrieKind::Allow => {
                    m.put_allows(&written.iter().map(|(p, _)| *p).collect::<Vec<_>>())
                }
            }
        }
        self.written()
    }

    /// Writes one chunk; returns the ids it gave (0 for allow entries).
    pub(super) fn insert_chunk(
        &mut self,
        kind: TrieKind,
        entries: &[(Prefix, u32)],
    ) -> Result<Vec<u32>, DatapathError> {
        let prefixes: Vec<Prefix> = entries.iter().map(|(p, _)| *p).collect();
        let ids = match kind {
            TrieKind::Block => self.ids_for(&prefixes)?,
            TrieKind::Allow => vec![0; entries.len()],
        };
        drop(prefixes);
        let given = ids.clone();
        let (mut k4, mut v4s, mut k6, mut v6s) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut e4, mut ev4, mut e6, mut ev6) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for ((p, flags), id) in entries.iter().zip(ids) {
            let v = EntryValue::new(p.prefix_len() as u32, *flags, id);
            match Route::of(kind, *p) {
                Route::ExactV4(b) => {
                    e4.push(b);
                    ev4.push(v);
                }
                Route::ExactV6(b) => {
                    e6.push(b);
                    ev6.push(v);
                }
                Route::TrieV4(_, k) => {
                    k4.push(k);
                    v4s.push(v);
                }
                Route::TrieV6(_, k) => {
                    k6.push(k);
                    v6s.push(v);
                }
            }
        }
        let name = |f| Store::Trie(kind, f).name();
        insert_batched(self.v4_mut(kind), name(Family::V4), &k4, &v4s)?;
        insert_batched(self.v6_mut(kind), name(Family::V6), &k6, &v6s)?;
        let exact = |f| Store::Exact(f).name();
        insert_batched(&mut self.exact_v4, exact(Family::V4), &e4, &ev4)?;
        insert_batched(&mut self.exact_v6, exact(Family::V6), &e6, &ev6)?;
        Ok(given)
    }

    /// Tells the mirror that entries of `kind` are gone.
    pub(super) fn forget(&mut self, kind: TrieKind, prefixes: &[Prefix]) {
        if let Some(m) = &mut self.mirror {
            match kind {
                TrieKind::Block => m.remove_blocks(prefixes),
                TrieKind::Allow => m.remove_allows(prefixes),
            }
        }
    }

    /// Removes many entries (exact prefixes), and their counters, with
    /// batched syscalls; missing entries are skipped.
    pub fn remove_many(
        &mut self,
        kind: TrieKind,
        prefixes: &[Prefix],
    ) -> Result<(), DatapathError> {
        if prefixes.is_empty() {
            return Ok(());
        }
        self.mark()?;
        let (mut k4, mut k6, mut e4, mut e6) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for p in prefixes {
            match Route::of(kind, *p) {
                Route::ExactV4(b) => e4.push(b),
                Route::ExactV6(b) => e6.push(b),
                Route::TrieV4(_, k) => k4.push(k),
                Route::TrieV6(_, k) => k6.push(k),
            }
        }
        if self.batching {
            self.deferred_v6.append(&mut e6);
        }
        let name = |f| Store::Trie(kind, f).name();
        let exact = |f| Store::Exact(f).name();
        self.guarded(|m| {
            delete_batched(m.v4_mut(kind), name(Family::V4), &k4)?;
            delete_batched(m.v6_mut(kind), name(Family::V6), &k6)?;
            delete_batched(&mut m.exact_v4, exact(Family::V4), &e4)?;
            delete_batched(&mut m.exact_v6, exact(Family::V6), &e6)
        })?;
        self.forget(kind, prefixes);
        self.written()
    }

    /// Longest-prefix match of one address (v4-mapped goes to IPv4).
    pub fn lookup(&self, kind: TrieKind, addr: IpAddr) -> Result<Option<Match>, DatapathError> {
        let addr = canonical_addr(addr);
        // The longest possible match first: a single-address entry.
        let host = Prefix::new(ipnet::IpNet::from(addr));
        if let Some(value) = self.get_exact(kind, host)? {
            return Ok(Some(Match {
                prefix: host,
                value,
            }));
        }
        let r = match addr {
            IpAddr::V4(a) => self.v4(kind).get(&v4_key(32, a.octets()), 0),
            IpAddr::V6(a) => self.v6(kind).get(&Key::new(128, a.octets()), 0),
        };
        let value = match r {
            Ok(v) => v,
            Err(e) if is_enoent(&e) => return Ok(None),
            Err(e) => {
                return Err(map_err(format!(
                    "looking up {addr} in {}",
                    Store::Trie(kind, Family::of(addr)).name()
                ))(e));
            }
        };
        let len = value.prefix_len.min(if addr.is_ipv4() { 32 } else { 128 }) as u8;
        let prefix =
            Prefix::new(ipnet::IpNet::new(addr, len).expect("length clamped to the family"));
        Ok(Some(Match { prefix, value }))
    }
}
