//! Writing and reading single entries: where an entry lives, inserts,
//! removals and lookups.

use super::*;

impl Maps {
    pub(super) fn name(kind: TrieKind, v4: bool) -> &'static str {
        match (kind, v4) {
            (TrieKind::Block, true) => map_names::BLOCK_V4,
            (TrieKind::Block, false) => map_names::BLOCK_V6,
            (TrieKind::Allow, true) => map_names::ALLOW_V4,
            (TrieKind::Allow, false) => map_names::ALLOW_V6,
        }
    }

    /// The map an entry lives in.
    pub(super) fn map_name(kind: TrieKind, v4: bool, exact: bool) -> &'static str {
        match (exact, v4) {
            (true, true) => map_names::EXACT_V4,
            (true, false) => map_names::EXACT_V6,
            (false, _) => Self::name(kind, v4),
        }
    }

    pub(super) fn v4(&self, kind: TrieKind) -> &TrieV4 {
        match kind {
            TrieKind::Block => &self.block_v4,
            TrieKind::Allow => &self.allow_v4,
        }
    }

    pub(super) fn v6(&self, kind: TrieKind) -> &TrieV6 {
        match kind {
            TrieKind::Block => &self.block_v6,
            TrieKind::Allow => &self.allow_v6,
        }
    }

    pub(super) fn v4_mut(&mut self, kind: TrieKind) -> &mut TrieV4 {
        match kind {
            TrieKind::Block => &mut self.block_v4,
            TrieKind::Allow => &mut self.allow_v4,
        }
    }

    pub(super) fn v6_mut(&mut self, kind: TrieKind) -> &mut TrieV6 {
        match kind {
            TrieKind::Block => &mut self.block_v6,
            TrieKind::Allow => &mut self.allow_v6,
        }
    }

    /// Exact lookup of one entry.
    pub fn get_exact(
        &self,
        kind: TrieKind,
        prefix: Prefix,
    ) -> Result<Option<EntryValue>, DatapathError> {
        let exact = is_exact(kind, prefix);
        let what = || {
            format!(
                "looking up {prefix} in {}",
                Self::map_name(kind, prefix.is_v4(), exact)
            )
        };
        if exact {
            let r = match (prefix.v4_bytes(), prefix.v6_bytes()) {
                (Some(b), _) => self.exact_v4.get(&b, 0),
                (_, Some(b)) => self.exact_v6.get(&b, 0),
                _ => unreachable!("a prefix is v4 or v6"),
            };
            return match r {
                Ok(v) => Ok(Some(v)),
                Err(e) if is_enoent(&e) => Ok(None),
                Err(e) => Err(map_err(what())(e)),
            };
        }
        let r = match (prefix.v4_bytes(), prefix.v6_bytes()) {
            (Some(b), _) => self.v4(kind).get(&v4_key(prefix.prefix_len() as u32, b), 0),
            (_, Some(b)) => self
                .v6(kind)
                .get(&Key::new(prefix.prefix_len() as u32, b), 0),
            _ => unreachable!("a prefix is v4 or v6"),
        };
        match r {
            // The kernel's lookup is longest-prefix. Entries are canonical,
            // so a match of this prefix's own length is this very entry.
            Ok(v) if v.prefix_len == prefix.prefix_len() as u32 => Ok(Some(v)),
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
        let exact = is_exact(kind, prefix);
        let name = Self::map_name(kind, prefix.is_v4(), exact);
        let len = prefix.prefix_len() as u32;
        self.mark()?;
        let r = match (prefix.v4_bytes(), prefix.v6_bytes(), exact) {
            (Some(b), _, true) => self.exact_v4.insert(&b, &value, 0),
            (_, Some(b), true) => self.exact_v6.insert(&b, &value, 0),
            (Some(b), _, false) => self.v4_mut(kind).insert(&v4_key(len, b), &value, 0),
            (_, Some(b), false) => self.v6_mut(kind).insert(&Key::new(len, b), &value, 0),
            _ => unreachable!("a prefix is v4 or v6"),
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
                max: self.max_entries(kind, prefix.is_v4(), exact),
                entry: prefix.to_string(),
            }),
            Err(e) => Err(map_err(format!("inserting {prefix} into {name}"))(e)),
        }
    }

    /// Capacity of one map (0 if it cannot be read).
    pub(super) fn max_entries(&self, kind: TrieKind, v4: bool, exact: bool) -> u32 {
        let info = match (exact, v4) {
            (true, true) => self.exact_v4.map().info(),
            (true, false) => self.exact_v6.map().info(),
            (false, true) => self.v4(kind).map().info(),
            (false, false) => self.v6(kind).map().info(),
        };
        info.map(|i| i.max_entries()).unwrap_or(0)
    }

    /// Inserts a manual (`block`/`allow`) entry.
    pub fn insert_manual(&mut self, kind: TrieKind, prefix: Prefix) -> Result<bool, DatapathError> {
        self.insert(kind, prefix, ENTRY_FLAG_MANUAL)
    }

    /// Removes an entry (exact prefix), and with it its counters. Returns
    /// true when it was there.
    pub fn remove(&mut self, kind: TrieKind, prefix: Prefix) -> Result<bool, DatapathError> {
        let exact = is_exact(kind, prefix);
        let name = Self::map_name(kind, prefix.is_v4(), exact);
        let len = prefix.prefix_len() as u32;
        self.mark()?;
        let r = match (prefix.v4_bytes(), prefix.v6_bytes(), exact) {
            (Some(b), _, true) => self.exact_v4.remove(&b),
            (_, Some(b), true) if self.batching => {
                let there = self.get_exact(kind, prefix)?.is_some();
                self.deferred_v6.push(b);
                self.forget(kind, &[prefix]);
                self.written()?;
                return Ok(there);
            }
            (_, Some(b), true) => self.exact_v6.remove(&b),
            (Some(b), _, false) => self.v4_mut(kind).remove(&v4_key(len, b)),
            (_, Some(b), false) => self.v6_mut(kind).remove(&Key::new(len, b)),
            _ => unreachable!("a prefix is v4 or v6"),
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
            let value = |p: &Prefix, flags: u32| EntryValue::new(p.prefix_len() as u32, flags, id);
            let exact = is_exact(kind, *p);
            match (p.v4_bytes(), p.v6_bytes(), exact) {
                (Some(b), _, true) => {
                    e4.push(b);
                    ev4.push(value(p, *flags));
                }
                (_, Some(b), true) => {
                    e6.push(b);
                    ev6.push(value(p, *flags));
                }
                (Some(b), _, false) => {
                    k4.push(v4_key(p.prefix_len() as u32, b));
                    v4s.push(value(p, *flags));
                }
                (_, Some(b), false) => {
                    k6.push(Key::new(p.prefix_len() as u32, b));
                    v6s.push(value(p, *flags));
                }
                _ => {}
            }
        }
        let name4 = Self::name(kind, true);
        let name6 = Self::name(kind, false);
        insert_batched(self.v4_mut(kind), name4, &k4, &v4s)?;
        insert_batched(self.v6_mut(kind), name6, &k6, &v6s)?;
        insert_batched(&mut self.exact_v4, map_names::EXACT_V4, &e4, &ev4)?;
        insert_batched(&mut self.exact_v6, map_names::EXACT_V6, &e6, &ev6)?;
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
        let (tries, exact): (Vec<Prefix>, Vec<Prefix>) =
            prefixes.iter().partition(|p| !is_exact(kind, **p));
        let k4: Vec<_> = tries
            .iter()
            .filter_map(|p| p.v4_bytes().map(|b| v4_key(p.prefix_len() as u32, b)))
            .collect();
        let k6: Vec<_> = tries
            .iter()
            .filter_map(|p| p.v6_bytes().map(|b| Key::new(p.prefix_len() as u32, b)))
            .collect();
        let e4: Vec<[u8; 4]> = exact.iter().filter_map(|p| p.v4_bytes()).collect();
        let mut e6: Vec<[u8; 16]> = exact.iter().filter_map(|p| p.v6_bytes()).collect();
        if self.batching {
            self.deferred_v6.append(&mut e6);
        }
        let name4 = Self::name(kind, true);
        let name6 = Self::name(kind, false);
        self.guarded(|m| {
            delete_batched(m.v4_mut(kind), name4, &k4)?;
            delete_batched(m.v6_mut(kind), name6, &k6)?;
            delete_batched(&mut m.exact_v4, map_names::EXACT_V4, &e4)?;
            delete_batched(&mut m.exact_v6, map_names::EXACT_V6, &e6)
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
                    Self::name(kind, addr.is_ipv4())
                ))(e));
            }
        };
        let len = value.prefix_len.min(if addr.is_ipv4() { 32 } else { 128 }) as u8;
        let prefix =
            Prefix::new(ipnet::IpNet::new(addr, len).expect("length clamped to the family"));
        Ok(Some(Match { prefix, value }))
    }
}
