//! What is installed and how much room is left: the mirror of the
//! installed entries, the capacity check, and the entry ids.

use super::*;

impl Maps {
    /// The installed entries: the mirror kept since the last write when
    /// the kernel says nobody else wrote since (see [`super::mirror`]),
    /// else one walk of every map.
    pub(super) fn mirror(&mut self) -> Result<&mut Mirror, DatapathError> {
        // While this handle writes, it set `dirty` itself and the mirror
        // follows each write.
        if !self.marked && self.mirror.is_some() {
            let meta = self.table_meta()?;
            self.check_mirror(&meta);
        }
        if self.mirror.is_none() {
            let meta = self.table_meta()?;
            let mut block = Vec::new();
            let mut allow = Vec::new();
            for family in Family::ALL {
                self.visit(TrieKind::Block, family, |p, v| {
                    block.push((
                        p,
                        Installed {
                            flags: v.flags,
                            id: v.id,
                        },
                    ))
                })?;
                self.visit(TrieKind::Allow, family, |p, _| allow.push(p))?;
            }
            let mut m = Mirror::new(meta.generation, block, allow, self.id_slots()?);
            // A committed table (not dirty) matches the tries just read, so
            // the writes from here on are all it will differ by: log them,
            // and the next commit compiles only the /16s they touch. A
            // sync in a fresh process then costs what it changes too.
            if meta.dirty == 0 && meta.generation != 0 {
                m.committed(meta.generation);
            }
            self.mirror = Some(m);
        }
        Ok(self.mirror.as_mut().expect("read above"))
    }

    /// The installed block entries (with their flags) and allow entries,
    /// both families, sorted: what a sync diffs against.
    pub fn installed(&mut self) -> Result<InstalledSet<'_>, DatapathError> {
        let m = self.mirror()?;
        Ok((m.blocks(), m.allows()))
    }

    /// [`Maps::fill`] from the installed entries this handle knows (no walk
    /// while the mirror is current).
    pub fn installed_fill(
        &mut self,
        kind: TrieKind,
        family: Family,
    ) -> Result<Fill, DatapathError> {
        let m = self.mirror()?;
        let room = m.room();
        let entries = match kind {
            TrieKind::Block => room.blocks(family),
            TrieKind::Allow => room.allows(family),
        };
        Ok(Fill {
            entries,
            max_entries: self.capacity(kind, family)?,
        })
    }

    /// The entries per store ([`Room`]) once the block entries `adds` and
    /// the allow entries `allows` are in, from the installed entries this
    /// handle knows, and how many of `adds` are new (the others are
    /// installed: writing them overwrites in place and takes no room).
    /// Costs what the change adds: the mirror keeps the installed room.
    pub fn room_with(
        &mut self,
        adds: &[(Prefix, u32)],
        allows: &[Prefix],
    ) -> Result<(Room, u64), DatapathError> {
        let m = self.mirror()?;
        let mut room = m.room();
        let mut new = 0;
        for (p, _) in adds {
            if m.block(p).is_none() {
                room.add(p);
                new += 1;
            }
        }
        for p in allows {
            if m.allows().binary_search(p).is_err() {
                room.add_allow(p);
            }
        }
        Ok((room, new))
    }

    /// What each store can hold ([`Room`]).
    pub fn room_capacity(&self) -> Result<Room, DatapathError> {
        let exact = |f| {
            self.store_info(Store::Exact(f))
                .map(|i| u64::from(i.max_entries()))
        };
        let trie = |kind, f| self.capacity(kind, f).map(u64::from);
        Ok(Room::from_counts(
            [
                trie(TrieKind::Block, Family::V4)?,
                trie(TrieKind::Block, Family::V6)?,
                exact(Family::V4)?,
                exact(Family::V6)?,
            ],
            // Id 0 means "no counters".
            u64::from(self.id_slots()?) - 1,
            [
                trie(TrieKind::Allow, Family::V4)?,
                trie(TrieKind::Allow, Family::V6)?,
            ],
        ))
    }

    /// Slots of `ENTRY_COUNTERS`, as created (`[datapath] max_entries`
    /// plus id 0): the entry ids are below it.
    pub(super) fn id_slots(&self) -> Result<u32, DatapathError> {
        self.entry_counters
            .map()
            .info()
            .map(|i| i.max_entries())
            .map_err(map_err("reading the size of ENTRY_COUNTERS"))
    }

    /// Ids for new block entries (existing ones keep theirs), with their
    /// counters zeroed before any entry names them.
    pub(super) fn ids_for(&mut self, prefixes: &[Prefix]) -> Result<Vec<u32>, DatapathError> {
        let slots = self.id_slots()?;
        let m = self.mirror()?;
        let mut out = Vec::with_capacity(prefixes.len());
        let mut fresh = Vec::new();
        for p in prefixes {
            let id = match m.block(p) {
                Some(v) => v.id,
                None => {
                    let id = m.give_id().ok_or_else(|| DatapathError::Full {
                        map: map_names::ENTRY_COUNTERS,
                        max: slots - 1,
                        entry: p.to_string(),
                    })?;
                    fresh.push(id);
                    id
                }
            };
            out.push(id);
        }
        let zeros = vec![EntryCounters::default(); fresh.len().min(BATCH)];
        for chunk in fresh.chunks(BATCH) {
            let fd = self.entry_counters.map().fd().as_fd();
            if let Err(e) = batch::update(fd, chunk, &zeros[..chunk.len()]) {
                if !e.unsupported() {
                    return Err(DatapathError::other("zeroing ENTRY_COUNTERS", e.error));
                }
                for id in chunk {
                    self.entry_counters
                        .set(*id, &EntryCounters::default(), 0)
                        .map_err(map_err("zeroing ENTRY_COUNTERS"))?;
                }
            }
        }
        Ok(out)
    }

    /// Entries and capacity of one kind and family. For block entries the
    /// count includes the exact map's and the capacity is the trie's (the
    /// exact map's own limit is reported when an insert hits it).
    pub fn fill(&self, kind: TrieKind, family: Family) -> Result<Fill, DatapathError> {
        let mut keys = 0usize;
        self.visit(kind, family, |_, _| keys += 1)?;
        Ok(Fill {
            entries: keys as u64,
            max_entries: self.capacity(kind, family)?,
        })
    }

    /// [`Maps::fill`] without a walk when `known` (generation, entries)
    /// belongs to the maps' current generation and no write is in
    /// progress; a walk otherwise.
    pub fn fill_known(
        &self,
        kind: TrieKind,
        family: Family,
        known: Option<(u64, u64)>,
    ) -> Result<Fill, DatapathError> {
        if let Some((generation, entries)) = known {
            let meta = self.table_meta()?;
            if meta.dirty == 0 && meta.generation == generation {
                return Ok(Fill {
                    entries,
                    max_entries: self.capacity(kind, family)?,
                });
            }
        }
        self.fill(kind, family)
    }

    /// Capacity of one trie: for the block entries of a family, also no
    /// more than the entry ids (`[datapath] max_entries`), which both
    /// families share, so that a fill near 1 warns before a sync is refused.
    pub(super) fn capacity(&self, kind: TrieKind, family: Family) -> Result<u32, DatapathError> {
        let trie = self.store_info(Store::Trie(kind, family))?.max_entries();
        Ok(match kind {
            TrieKind::Block => trie.min(self.id_slots()? - 1),
            TrieKind::Allow => trie,
        })
    }
}
