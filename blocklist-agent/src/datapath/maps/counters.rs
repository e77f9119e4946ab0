//! The counters: global, per hook, per entry and per address.

use super::*;

/// The address of a per-address counter key.
pub fn ip_of(key: &IpKey) -> IpAddr {
    if key.family == FAMILY_V4 {
        IpAddr::from([key.addr[0], key.addr[1], key.addr[2], key.addr[3]])
    } else {
        IpAddr::from(key.addr)
    }
}

impl Maps {
    /// The ingress counters, summed over CPUs: the XDP program's and the
    /// TC ingress classifier's (interfaces in TC mode), what `status` has
    /// always called the global counters.
    pub fn global(&self) -> Result<GlobalCounters, DatapathError> {
        let [xdp, tc_ingress, ..] = self.hook_counters()?;
        Ok(crate::datapath::percpu::sum_global(
            [xdp, tc_ingress].iter(),
        ))
    }

    /// The counters of each hook, indexed by hook ([`blocklist_ebpf::HOOK_XDP`]
    /// ...), summed over CPUs.
    pub fn hook_counters(
        &self,
    ) -> Result<[GlobalCounters; blocklist_ebpf::HOOKS as usize], DatapathError> {
        let mut out = [GlobalCounters::default(); blocklist_ebpf::HOOKS as usize];
        let per_cpu = self.global.get(&0, 0).map_err(map_err("reading GLOBAL"))?;
        out[blocklist_ebpf::HOOK_XDP as usize] =
            crate::datapath::percpu::sum_global(per_cpu.iter());
        if let Some(hooks) = &self.hook_global {
            for hook in 1..blocklist_ebpf::HOOKS {
                let per_cpu = hooks
                    .get(&hook, 0)
                    .map_err(map_err(format!("reading HOOK_GLOBAL[{hook}]")))?;
                out[hook as usize] = crate::datapath::percpu::sum_global(per_cpu.iter());
            }
        }
        Ok(out)
    }

    /// The counters of entry `id` (zero for id 0).
    pub fn entry_counters(&self, id: u32) -> Result<EntryCounters, DatapathError> {
        if id == 0 {
            return Ok(EntryCounters::default());
        }
        self.entry_counters
            .get(&id, 0)
            .map_err(map_err(format!("reading ENTRY_COUNTERS[{id}]")))
    }

    /// The counters of the entries `ids`, in order: one lookup each for a
    /// few, else batched reads of the runs of nearby ids (so the cost
    /// follows the ids, not the array's million slots).
    pub(super) fn counters_of(&self, ids: &[u32]) -> Result<Vec<EntryCounters>, DatapathError> {
        if ids.len() < 64 {
            return ids.iter().map(|id| self.entry_counters(*id)).collect();
        }
        // A walk hands its ids in trie order: read them in id order.
        let mut order: Vec<u32> = (0..ids.len() as u32).collect();
        order.sort_unstable_by_key(|&i| ids[i as usize]);
        let fd = self.entry_counters.map().fd().as_fd();
        let mut out = vec![EntryCounters::default(); ids.len()];
        let mut i = 0;
        while i < order.len() {
            // A run: ids no more than 16 slots apart (a gap costs a 64-byte
            // copy; a new read, a syscall).
            let id_at = |k: usize| ids[order[k] as usize];
            let mut j = i + 1;
            while j < order.len() && id_at(j) - id_at(j - 1) <= 16 {
                j += 1;
            }
            let (first, last) = (id_at(i), id_at(j - 1));
            let mut run = Vec::with_capacity((last - first + 1) as usize);
            let r = batch::lookup_range::<EntryCounters>(
                fd,
                first,
                (last - first + 1) as usize,
                BATCH,
                |_, v| run.push(v),
            );
            match r {
                Ok(_) => {}
                Err(e) if e.unsupported() => {
                    return ids.iter().map(|id| self.entry_counters(*id)).collect();
                }
                Err(e) => return Err(DatapathError::other("reading ENTRY_COUNTERS", e.error)),
            }
            for k in i..j {
                out[order[k] as usize] = run
                    .get((id_at(k) - first) as usize)
                    .copied()
                    .unwrap_or_default();
            }
            i = j;
        }
        Ok(out)
    }

    /// The hit block entries, found through `HIT_IDS` and named by
    /// `snapshot` (a writer's mirror in this process) instead of a walk of
    /// the tries; `None` when that cannot be trusted (the maps changed
    /// since, a write is in progress, or the program predates `HIT_IDS`),
    /// and the caller walks ([`Maps::hit_block_entries`]).
    pub fn hit_block_entries_known(
        &self,
        snapshot: &BlockSnapshot,
    ) -> Result<Option<Vec<HitEntry>>, DatapathError> {
        let Some(blocks) = snapshot.blocks.upgrade() else {
            return Ok(None);
        };
        let meta = self.table_meta()?;
        if meta.dirty != 0 || meta.generation != snapshot.generation {
            return Ok(None);
        }
        let Some(hit_ids) = self.hit_ids()? else {
            return Ok(None);
        };
        let ids = hit_ids.ids();
        if ids.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let counters = self.counters_of(&ids)?;
        let mut hit = vec![0u64; ENTRIES_MAX.div_ceil(64) as usize];
        for (id, c) in ids.iter().zip(&counters) {
            if c.packets > 0 {
                hit[(*id / 64) as usize] |= 1 << (id % 64);
            }
        }
        let mut out = Vec::new();
        for (p, e) in blocks.iter() {
            let id = e.id;
            if id < ENTRIES_MAX && hit[(id / 64) as usize] & (1 << (id % 64)) != 0 {
                let i = ids.binary_search(&id).expect("marked above");
                out.push((
                    *p,
                    EntryValue {
                        prefix_len: p.prefix_len() as u32,
                        flags: e.flags,
                        id,
                        _pad: 0,
                    },
                    counters[i],
                ));
            }
        }
        Ok(Some(out))
    }

    /// `HIT_IDS`, mapped, once its marks are complete: seeded here (one
    /// read of every counter) the first time after the map was created
    /// under counters that were already counting. `None` when the program
    /// predates the map.
    pub(super) fn hit_ids(&self) -> Result<Option<HitIds>, DatapathError> {
        let Some(h) = HitIds::open(&self.pin)? else {
            return Ok(None);
        };
        if !h.seeded() {
            let mut ids = Vec::new();
            let fd = self.entry_counters.map().fd().as_fd();
            batch::lookup_each::<u32, EntryCounters>(fd, BATCH, |id, c| {
                if c.first_seen_ns != 0 {
                    ids.push(id);
                }
            })
            .map_err(|e| DatapathError::other("reading ENTRY_COUNTERS", e.error))?;
            h.seed(ids);
        }
        Ok(Some(h))
    }

    /// The installed block entries as this handle last committed them,
    /// for a reader in another thread ([`Maps::hit_block_entries_known`]);
    /// `None` before the first read or while this handle is writing.
    pub fn block_snapshot(&self) -> Option<BlockSnapshot> {
        if self.marked {
            return None;
        }
        self.mirror.as_ref().map(Mirror::snapshot)
    }

    /// Every counter of one block prefix, with the direction split (zero
    /// if never hit or not installed).
    pub fn prefix_entry_counters(&self, prefix: Prefix) -> Result<EntryCounters, DatapathError> {
        match self.get_exact(TrieKind::Block, prefix)? {
            Some(v) => self.entry_counters(v.id),
            None => Ok(EntryCounters::default()),
        }
    }

    /// Counters of one block prefix (zero if never hit or not installed).
    pub fn prefix_counters(&self, prefix: Prefix) -> Result<PrefixCounters, DatapathError> {
        match self.get_exact(TrieKind::Block, prefix)? {
            Some(v) => Ok(self.entry_counters(v.id)?.counters()),
            None => Ok(PrefixCounters::default()),
        }
    }

    /// Every block entry with its flags and counters.
    pub(super) fn block_entries_with_counters(
        &self,
        exact_only: bool,
    ) -> Result<Vec<(Prefix, EntryValue, EntryCounters)>, DatapathError> {
        let mut entries = Vec::new();
        for family in Family::ALL {
            if exact_only {
                self.visit_exact(family, &mut |p, v| entries.push((p, *v)))?;
            } else {
                self.visit(TrieKind::Block, family, |p, v| entries.push((p, *v)))?;
            }
        }
        let ids: Vec<u32> = entries.iter().map(|(_, v)| v.id).collect();
        let counters = self.counters_of(&ids)?;
        Ok(entries
            .into_iter()
            .zip(counters)
            .map(|((p, v), c)| (p, v, c))
            .collect())
    }

    /// Every block entry that was hit, with its value and counters: one
    /// walk of the maps, for callers that need several views of the hits.
    pub fn hit_block_entries(
        &self,
    ) -> Result<Vec<(Prefix, EntryValue, EntryCounters)>, DatapathError> {
        let mut v = self.block_entries_with_counters(false)?;
        v.retain(|(_, _, c)| c.packets > 0);
        Ok(v)
    }

    /// The counters of every block prefix that was hit.
    pub fn all_prefix_counters(&self) -> Result<Vec<(Prefix, PrefixCounters)>, DatapathError> {
        Ok(self
            .block_entries_with_counters(false)?
            .into_iter()
            .filter(|(_, _, c)| c.packets > 0)
            .map(|(p, _, c)| (p, c.counters()))
            .collect())
    }

    /// Every single-address block entry that was hit, with its flags: its
    /// counters are that address's per-address counters (the program skips
    /// `IP_HITS` for it).
    pub fn single_address_hits(&self) -> Result<Vec<(Prefix, u32, EntryCounters)>, DatapathError> {
        Ok(self
            .block_entries_with_counters(true)?
            .into_iter()
            .filter(|(_, _, c)| c.packets > 0)
            .map(|(p, v, c)| (p, v.flags, c))
            .collect())
    }

    /// True when `prefix` is installed as a hand-made block entry.
    pub fn is_manual(&self, prefix: Prefix) -> Result<bool, DatapathError> {
        Ok(self.block_flags(prefix)? & ENTRY_FLAG_MANUAL != 0)
    }

    /// The `ENTRY_FLAG_*` bits of the block entry `prefix` (0 when it is
    /// not installed).
    pub fn block_flags(&self, prefix: Prefix) -> Result<u32, DatapathError> {
        Ok(self
            .get_exact(TrieKind::Block, prefix)?
            .map_or(0, |v| v.flags))
    }

    /// Every per-address counter, summed over CPUs (an address may hold a
    /// slot on each).
    pub fn ip_counters(&self) -> Result<Vec<(IpKey, IpCounters)>, DatapathError> {
        let mut by_key: std::collections::HashMap<IpKey, IpCounters> =
            std::collections::HashMap::new();
        let mut add = |slot: &AddrHits| {
            if slot.key.family != 0 && slot.counters.packets > 0 {
                let e = by_key.entry(slot.key).or_default();
                crate::datapath::percpu::add_ip(e, &slot.counters);
            }
        };
        // One batched read of every slot on every CPU (a lookup per slot
        // costs a syscall each: 8 ms for the default 8,192).
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| DatapathError::other(what, e))?;
        let fd = self.addr_hits.map().fd().as_fd();
        match batch::lookup_each_per_cpu::<u32, AddrHits>(
            fd,
            1024,
            cpus.get() as usize,
            |_, per_cpu| per_cpu.iter().for_each(&mut add),
        ) {
            Ok(_) => {}
            Err(e) if e.unsupported() => {
                let slots = self
                    .addr_hits
                    .map()
                    .info()
                    .map_err(map_err("reading the size of ADDR_HITS"))?
                    .max_entries();
                for i in 0..slots {
                    let per_cpu = self
                        .addr_hits
                        .get(&i, 0)
                        .map_err(map_err(format!("reading ADDR_HITS[{i}]")))?;
                    per_cpu.iter().for_each(&mut add);
                }
            }
            Err(e) => return Err(DatapathError::other("reading ADDR_HITS", e.error)),
        }
        Ok(by_key.into_iter().collect())
    }
}
