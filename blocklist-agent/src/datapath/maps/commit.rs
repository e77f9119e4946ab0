//! Committing the compiled table: `TABLE_META`, the batch that defers the
//! table to its end, and the (partial) compiles that bring it in line
//! with the tries.

use super::*;

/// The IPv4 block and allow entries for the compiler.
pub(super) fn v4_entries(
    m: &Mirror,
) -> (
    Vec<crate::datapath::table::compile::Entry>,
    Vec<crate::datapath::table::compile::Entry>,
) {
    let block = m
        .blocks()
        .iter()
        .filter(|(p, _)| p.is_v4())
        .map(|(p, v)| v4_entry(*p, table_id(v)))
        .collect();
    let allow = m
        .allows()
        .iter()
        .filter(|p| p.is_v4())
        .map(|p| v4_entry(*p, 0))
        .collect();
    (block, allow)
}

/// The IPv6 block and allow entries for the compiler.
pub(super) fn v6_entries(
    m: &Mirror,
) -> (
    Vec<crate::datapath::table::compile::Entry6>,
    Vec<crate::datapath::table::compile::Entry6>,
) {
    let block = m
        .blocks()
        .iter()
        .filter(|(p, _)| !p.is_v4())
        .map(|(p, v)| v6_entry(*p, table_id(v)))
        .collect();
    let allow = m
        .allows()
        .iter()
        .filter(|p| !p.is_v4())
        .map(|p| v6_entry(*p, 0))
        .collect();
    (block, allow)
}

/// Past this many IPv4 /16s touched, a partial compile is not worth it.
/// Measured at 1,000,000 mixed entries: a whole compile takes 0.06 s, a
/// partial one 0.009 s for the 9,110 /16s a 1% change touches and 0.029 s
/// for the 28,000 of a 4% change; the extraction per /16 would catch up
/// with the whole compile near all 65,536.
pub(super) const PARTIAL_MAX_SLOTS: usize = 32_768;

pub(super) fn v4_host(p: &Prefix) -> u32 {
    u32::from_be_bytes(p.v4_bytes().unwrap_or_default())
}

/// The `TABLE_V4` slots (/16s) an IPv4 prefix spans.
pub(super) fn v4_slots(p: &Prefix) -> std::ops::Range<usize> {
    let first = (v4_host(p) >> 16) as usize;
    let count = 1usize << 16u32.saturating_sub(u32::from(p.prefix_len()));
    first..(first + count).min(blocklist_ebpf::TABLE_V4_SLOTS as usize)
}

/// What a partial compile needs for the prefixes written since the last
/// commit: every IPv4 block and allow entry overlapping a touched /16, the
/// touched /16s, and whether an IPv6 entry changed. `None` when too many
/// /16s were touched.
#[allow(clippy::type_complexity)]
pub(super) fn partial_inputs(
    m: &Mirror,
    changed: &[Prefix],
) -> Option<(
    Vec<crate::datapath::table::compile::Entry>,
    Vec<crate::datapath::table::compile::Entry>,
    Vec<bool>,
    bool,
)> {
    let mut only = vec![false; blocklist_ebpf::TABLE_V4_SLOTS as usize];
    let mut touched = 0;
    let mut v6 = false;
    for p in changed {
        if !p.is_v4() {
            v6 = true;
            continue;
        }
        for s in v4_slots(p) {
            if !only[s] {
                only[s] = true;
                touched += 1;
                if touched > PARTIAL_MAX_SLOTS {
                    return None;
                }
            }
        }
    }
    // One pass over the installed entries in address order: an entry
    // goes in when any /16 it spans was touched (its own, or for an entry
    // wider than /16 any of its). Two binary searches and sixteen cover
    // lookups per touched /16 missed the cache at every step: 0.045 s for
    // the 9,110 /16s of a 1% change at 1,000,000 entries.
    let overlaps_touched = |p: &Prefix| only[v4_slots(p)].iter().any(|t| *t);
    let block: Vec<_> = m
        .blocks()
        .iter()
        .filter(|(p, _)| p.is_v4() && overlaps_touched(p))
        .map(|(p, v)| v4_entry(*p, table_id(v)))
        .collect();
    let allow: Vec<_> = m
        .allows()
        .iter()
        .filter(|p| p.is_v4() && overlaps_touched(p))
        .map(|p| v4_entry(*p, 0))
        .collect();
    Some((block, allow, only, v6))
}

/// A block entry's id as the table compiler takes it: with
/// [`blocklist_ebpf::RESULT_MONITOR`] when the entry only monitors, so the
/// table's result tells the program without another load.
pub(super) fn table_id(v: &Installed) -> u32 {
    if v.flags & blocklist_ebpf::ENTRY_FLAG_MONITOR != 0 {
        v.id | blocklist_ebpf::RESULT_MONITOR
    } else {
        v.id
    }
}

/// An IPv4 prefix as the table compiler takes it (IPv6 prefixes, which
/// the IPv4 walks never yield, map to nothing useful).
pub(super) fn v4_entry(p: Prefix, id: u32) -> crate::datapath::table::compile::Entry {
    let b = p.v4_bytes().unwrap_or_default();
    crate::datapath::table::compile::Entry {
        addr: u32::from_be_bytes(b),
        len: p.prefix_len(),
        id,
    }
}

/// An IPv6 prefix as the table compiler takes it.
pub(super) fn v6_entry(p: Prefix, id: u32) -> crate::datapath::table::compile::Entry6 {
    crate::datapath::table::compile::Entry6 {
        addr: u128::from_be_bytes(p.v6_bytes().unwrap_or_default()),
        len: p.prefix_len(),
        id,
    }
}

impl Maps {
    /// The table's bookkeeping record.
    pub fn table_meta(&self) -> Result<TableMeta, DatapathError> {
        self.table_meta
            .get(&0, 0)
            .map_err(map_err("reading TABLE_META"))
    }

    pub(super) fn set_table_meta(&mut self, m: TableMeta) -> Result<(), DatapathError> {
        self.table_meta
            .set(0, &m, 0)
            .map_err(map_err("writing TABLE_META"))
    }

    /// Notes, before the first write to the tries, that the table no longer
    /// matches them.
    pub(super) fn mark(&mut self) -> Result<(), DatapathError> {
        if !self.marked {
            let m = self.table_meta()?;
            self.check_mirror(&m);
            // Read the installed entries while the table is still
            // committed, so that the mirror logs every write from here on
            // (see `mirror`) and the commit compiles only what they touch.
            // The commit reads them anyway.
            if self.mirror.is_none() && m.dirty == 0 {
                self.mirror()?;
            }
            self.set_table_meta(TableMeta { dirty: 1, ..m })?;
            self.marked = true;
        }
        Ok(())
    }

    /// Forgets the mirror if another writer (or a killed one) changed the
    /// tries since this handle last committed.
    pub(super) fn check_mirror(&mut self, meta: &TableMeta) {
        if let Some(m) = &self.mirror
            && (meta.dirty != 0 || meta.generation != m.generation)
        {
            self.mirror = None;
        }
    }

    /// After a write: update the table now, unless inside a batch.
    pub(super) fn written(&mut self) -> Result<(), DatapathError> {
        if self.batching {
            return Ok(());
        }
        self.commit_table().map(|_| ())
    }

    /// Runs `f` (a sync's writes) with the table updated once, at the end,
    /// instead of after every write; also when `f` fails part-way, so the
    /// table reflects whatever it wrote. Until then the program decides
    /// with the table as it was before the batch.
    pub fn batch<R, E: From<DatapathError>>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<R, E>,
    ) -> Result<(R, Option<TableReport>), E> {
        self.batching = true;
        let r = f(self);
        self.batching = false;
        if r.is_err() {
            self.mirror = None;
        }
        let t = self.commit_table();
        let deferred = std::mem::take(&mut self.deferred_v6);
        // Without a committed table the replacements may not be visible:
        // keep the addresses blocked and let the next read see them.
        let d = if t.is_ok() {
            delete_batched(&mut self.exact_v6, map_names::EXACT_V6, &deferred)
        } else {
            Ok(())
        };
        if t.is_err() || d.is_err() {
            self.mirror = None;
        }
        let r = r?;
        let t = t?;
        d?;
        Ok((r, t))
    }

    /// Brings the compiled table in line with the tries if they changed
    /// since it was last compiled (by this handle, or by a writer that
    /// was killed before it could); `None` when there was nothing to do.
    pub fn commit_table(&mut self) -> Result<Option<TableReport>, DatapathError> {
        let meta = self.table_meta()?;
        if meta.dirty == 0 && meta.generation != 0 {
            self.marked = false;
            return Ok(None);
        }
        self.compile_table(meta, true).map(Some)
    }

    /// Compiles the tables from the installed entries whatever
    /// `TABLE_META` says, writing only what differs. For a program load: a
    /// table written by an older version may lack parts this program reads
    /// (the IPv6 table) or encode results differently.
    pub fn rebuild_table(&mut self) -> Result<TableReport, DatapathError> {
        let meta = self.table_meta()?;
        self.compile_table(meta, false)
    }

    /// Brings the table in line with the mirror: only the IPv4 /16s the
    /// writes since the last commit touched (and the IPv6 table if an IPv6
    /// entry changed) when `partial` and the mirror knows every write,
    /// else all of it.
    pub(super) fn compile_table(
        &mut self,
        meta: TableMeta,
        partial: bool,
    ) -> Result<TableReport, DatapathError> {
        if self.table.is_none() {
            self.table = Some(TableMaps::open(&self.pin)?);
        }
        let m = self.mirror()?;
        let changed = if partial && meta.generation != 0 {
            m.take_changed()
        } else {
            None
        };
        if let Some(changed) = changed
            && let Some(inputs) = partial_inputs(m, &changed)
        {
            let (block, allow, only, v6) = inputs;
            let v6_entries = v6.then(|| v6_entries(m));
            let report = self.table.as_ref().expect("mapped above").update_slots(
                &block,
                &allow,
                Some(&only),
                v6_entries
                    .as_ref()
                    .map(|(b, a)| (b.as_slice(), a.as_slice())),
            )?;
            return self.table_committed(meta, report);
        }
        let m = self.mirror()?;
        let (block, allow) = v4_entries(m);
        let (block6, allow6) = v6_entries(m);
        let report = self
            .table
            .as_ref()
            .expect("mapped above")
            .update(&block, &allow, &block6, &allow6)?;
        self.table_committed(meta, report)
    }

    pub(super) fn table_committed(
        &mut self,
        meta: TableMeta,
        report: TableReport,
    ) -> Result<TableReport, DatapathError> {
        let generation = meta.generation + 1;
        self.set_table_meta(TableMeta {
            dirty: 0,
            generation,
        })?;
        self.marked = false;
        if let Some(m) = &mut self.mirror {
            m.committed(generation);
        }
        // A mapping of a BPF array is resident whole for as long as it
        // exists (the kernel maps every page at mmap): 41 MiB of a
        // daemon's RSS between syncs. Mapping again costs about a
        // millisecond per commit.
        self.table = None;
        Ok(report)
    }

    /// The kernel table's result for an address: what the program's table
    /// lookup answers for it right now, read in the program's order (with
    /// lookups, so it works read-only too): for IPv4 the `EMPTY16_V4` and
    /// `EMPTY22_V4` bits, the slot, the `EMPTY_V4` bit, the search. A bit
    /// set where an entry lies (which the writer never leaves) shows here
    /// as the miss the program answers. For IPv6 that is the table over
    /// the upper 64 bits, which the program asks after `EXACT_V6` misses;
    /// [`RESULT_DEEP`](blocklist_ebpf::RESULT_DEEP) means the tries decide.
    pub fn table_result(&self, addr: IpAddr) -> Result<u32, DatapathError> {
        let read = |m: &Array<MapData, u64>, i: u32, name: &str| {
            m.get(&i, 0)
                .map_err(map_err(format!("reading {name}[{i}]")))
        };
        if let IpAddr::V4(a) = addr {
            let a = u32::from(a);
            let bits = [
                (
                    &self.table_empty16,
                    blocklist_ebpf::empty16_v4_bit(a),
                    map_names::EMPTY16_V4,
                ),
                (
                    &self.table_empty22,
                    blocklist_ebpf::empty22_v4_bit(a),
                    map_names::EMPTY22_V4,
                ),
            ];
            for (map, (word, bit), name) in bits {
                if let Some(m) = map
                    && (read(m, word, name)? >> bit) & 1 != 0
                {
                    return Ok(0);
                }
            }
        }
        let (slots, ranges, names, key, low_bits, words) = match addr {
            IpAddr::V4(a) => (
                &self.table_slots,
                &self.table_ranges,
                (map_names::TABLE_V4, map_names::RANGES_V4),
                u32::from(a) as u64,
                16,
                1,
            ),
            IpAddr::V6(a) => (
                &self.table_slots_v6,
                &self.table_ranges_v6,
                (map_names::TABLE_V6, map_names::RANGES_V6),
                (u128::from(a) >> 64) as u64,
                48,
                2,
            ),
        };
        let slot = read(slots, (key >> low_bits) as u32, names.0)?;
        // The program skips the search in a /24 marked empty.
        let empty = || match (addr, &self.table_empty) {
            (IpAddr::V4(a), Some(empty)) => {
                let (word, bit) = blocklist_ebpf::empty_v4_bit(a.into());
                Ok((read(empty, word, map_names::EMPTY_V4)? >> bit) & 1 != 0)
            }
            _ => Ok(false),
        };
        // The program's search, one record read per step.
        crate::datapath::table::compile::decide_slot(
            slot,
            key & ((1u64 << low_bits) - 1),
            empty,
            |i| {
                let at = (i * words) as u32;
                let w = (at..at + words as u32)
                    .map(|k| read(ranges, k, names.1))
                    .collect::<Result<Vec<u64>, _>>()?;
                Ok(crate::datapath::table::compile::Record::from_words(&w))
            },
        )
    }
}
