//! The table compiler: a set of IPv4 block and allow entries in, the
//! `TABLE_V4` slots and `RANGES_V4` records out. Pure: no kernel, no I/O.
//!
//! Each /16 of the address space gets one slot. Entries of /16 or wider
//! paint whole slots; narrower ones split their slot into ranges of the low
//! 16 bits. Prefixes are laminar (two are disjoint or one holds the other),
//! so one sweep over a slot's entries, sorted by start and then by width,
//! with a stack of the entries still open, yields the longest match at
//! every point: a step function, which is exactly the chunk's records.

use blocklist_ebpf::{
    CHUNK_MAX_RECORDS, RESULT_ALLOWED, SLOT_CHUNK, TABLE_V4_SLOTS, blocked_result,
};

/// An IPv4 entry as the compiler takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    /// The address, host byte order (host bits are ignored).
    pub addr: u32,
    /// Prefix length (above 32 is read as 32).
    pub len: u8,
    /// The entry's id (0 for allow entries).
    pub id: u32,
}

/// What covers a point: the longest entry's length and id.
type Cover = Option<(u8, u32)>;

const SLOTS: usize = TABLE_V4_SLOTS as usize;
/// Width of the low part a chunk covers.
const LOW: u32 = 1 << 16;

/// One compiled slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Slot<'a> {
    /// One result for the whole /16.
    Direct(u32),
    /// A chunk: the records, `(start << 32) | result`, sorted by start,
    /// the first at start 0.
    Chunk(&'a [u64]),
}

/// The compiled table, before it is written to the kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Compiled {
    /// Per slot: a direct result (no [`SLOT_CHUNK`]), or [`SLOT_CHUNK`]
    /// with the index of its first record in `records` (low 32 bits) and
    /// the record count (bits 32..49), as in the kernel's `TABLE_V4`, but
    /// indexing this struct's records.
    slots: Vec<u64>,
    records: Vec<u64>,
}

impl Compiled {
    /// The compiled form of slot `i` (`i < 65,536`).
    pub fn slot(&self, i: usize) -> Slot<'_> {
        let s = self.slots[i];
        if s & SLOT_CHUNK == 0 {
            Slot::Direct(s as u32)
        } else {
            let (start, count) = chunk_of(s);
            Slot::Chunk(&self.records[start..start + count])
        }
    }

    /// Records over all chunks (what the table occupies in `RANGES_V4`).
    pub fn records(&self) -> usize {
        self.records.len()
    }

    /// The result for `addr`, by the same search the XDP program runs.
    pub fn lookup(&self, addr: u32) -> u32 {
        match self.slot((addr >> 16) as usize) {
            Slot::Direct(r) => r,
            Slot::Chunk(records) => search(records, addr & 0xffff),
        }
    }
}

/// Record index and count of a chunk slot.
pub fn chunk_of(slot: u64) -> (usize, usize) {
    ((slot as u32) as usize, ((slot >> 32) & 0x1_ffff) as usize)
}

/// A chunk slot value.
pub fn chunk_slot(start: u32, count: usize) -> u64 {
    debug_assert!(count >= 1 && count <= CHUNK_MAX_RECORDS as usize);
    SLOT_CHUNK | ((count as u64) << 32) | start as u64
}

/// The program's branch-free binary search: the result of the last record
/// whose start is at most `low`.
pub fn search(records: &[u64], low: u32) -> u32 {
    let (mut base, mut n) = (0usize, records.len());
    while n > 1 {
        let half = n / 2;
        if ((records[base + half] >> 32) as u32) <= low {
            base += half;
        }
        n -= half;
    }
    records[base] as u32
}

/// The result for a point covered by the longest block entry `block` and,
/// or not, by an allow entry.
fn result(block: Cover, allowed: bool) -> u32 {
    match block {
        None => 0,
        Some(_) if allowed => RESULT_ALLOWED,
        Some((len, id)) => blocked_result(id, len),
    }
}

/// Compiles block and allow entries. Order does not matter; host bits
/// beyond the prefix length are ignored; lengths above 32 are clamped.
pub fn compile(block: &[Entry], allow: &[Entry]) -> Compiled {
    let (block_wide, block_narrow) = split(block);
    let (allow_wide, allow_narrow) = split(allow);
    let block_base = paint(&block_wide);
    let allow_base = paint(&allow_wide);

    let mut slots = Vec::with_capacity(SLOTS);
    let mut records = Vec::new();
    let (mut bi, mut ai) = (0, 0);
    for slot in 0..SLOTS as u32 {
        let bn = take_slot(&block_narrow, &mut bi, slot);
        let an = take_slot(&allow_narrow, &mut ai, slot);
        let (b, a) = (
            block_base[slot as usize],
            allow_base[slot as usize].is_some(),
        );
        if bn.is_empty() && (an.is_empty() || b.is_none()) {
            slots.push(result(b, a) as u64);
            continue;
        }
        let bs = sweep(bn, b);
        let as_ = sweep(an, allow_base[slot as usize]);
        let first = records.len();
        merge(&bs, &as_, &mut records);
        let count = records.len() - first;
        if count == 1 {
            let r = records.pop().expect("one record") as u32;
            slots.push(r as u64);
        } else {
            slots.push(chunk_slot(first as u32, count));
        }
    }
    Compiled { slots, records }
}

/// A masked entry (host bits cleared, length at most 32).
fn canonical(e: &Entry) -> Entry {
    let len = e.len.min(32);
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Entry {
        addr: e.addr & mask,
        len,
        id: e.id,
    }
}

/// Entries of /16 or wider (sorted by length, widest first) and the
/// narrower ones (sorted by address, then widest first).
fn split(entries: &[Entry]) -> (Vec<Entry>, Vec<Entry>) {
    let (mut wide, mut narrow): (Vec<Entry>, Vec<Entry>) =
        entries.iter().map(canonical).partition(|e| e.len <= 16);
    wide.sort_unstable_by_key(|e| e.len);
    narrow.sort_unstable_by_key(|e| (e.addr, e.len));
    (wide, narrow)
}

/// Per slot, the longest of the wide entries that covers it.
fn paint(wide: &[Entry]) -> Vec<Cover> {
    let mut base = vec![None; SLOTS];
    // Widest first, so a longer entry overwrites the wider ones it is in.
    for e in wide {
        let first = (e.addr >> 16) as usize;
        let n = 1usize << (16 - e.len);
        for b in &mut base[first..first + n] {
            *b = Some((e.len, e.id));
        }
    }
    base
}

/// The run of `narrow` entries inside `slot`, advancing `i` past them.
fn take_slot<'a>(narrow: &'a [Entry], i: &mut usize, slot: u32) -> &'a [Entry] {
    let start = *i;
    while *i < narrow.len() && narrow[*i].addr >> 16 == slot {
        *i += 1;
    }
    &narrow[start..*i]
}

/// The longest match over the slot's low 16 bits as a step function:
/// `(start, longest covering entry)`, first start 0, no two neighbours
/// equal. `entries` are sorted by address, then widest first.
fn sweep(entries: &[Entry], base: Cover) -> Vec<(u32, Cover)> {
    fn step(out: &mut Vec<(u32, Cover)>, at: u32, v: Cover) {
        if at >= LOW {
            return;
        }
        match out.last_mut() {
            Some(last) if last.0 == at => {
                last.1 = v;
                let n = out.len();
                if n >= 2 && out[n - 2].1 == v {
                    out.pop();
                }
            }
            Some(last) if last.1 == v => {}
            _ => out.push((at, v)),
        }
    }
    let mut out = vec![(0, base)];
    let mut open: Vec<(u32, (u8, u32))> = Vec::new();
    for e in entries {
        let start = e.addr & 0xffff;
        let end = start + (1u32 << (32 - e.len));
        while let Some(&(end_of_top, _)) = open.last() {
            if end_of_top > start {
                break;
            }
            open.pop();
            step(&mut out, end_of_top, open.last().map(|o| o.1).or(base));
        }
        open.push((end, (e.len, e.id)));
        step(&mut out, start, Some((e.len, e.id)));
    }
    while let Some((e, _)) = open.pop() {
        step(&mut out, e, open.last().map(|o| o.1).or(base));
    }
    out
}

/// Combines the block and allow step functions into records.
fn merge(block: &[(u32, Cover)], allow: &[(u32, Cover)], out: &mut Vec<u64>) {
    let first = out.len();
    let (mut i, mut j) = (0, 0);
    let (mut b, mut a) = (None, false);
    while i < block.len() || j < allow.len() {
        let at = match (block.get(i), allow.get(j)) {
            (Some(x), Some(y)) => x.0.min(y.0),
            (Some(x), None) => x.0,
            (None, Some(y)) => y.0,
            (None, None) => unreachable!(),
        };
        if block.get(i).is_some_and(|x| x.0 == at) {
            b = block[i].1;
            i += 1;
        }
        if allow.get(j).is_some_and(|y| y.0 == at) {
            a = allow[j].1.is_some();
            j += 1;
        }
        let r = result(b, a);
        if out.len() > first && *out.last().expect("non-empty") as u32 == r {
            continue;
        }
        out.push(((at as u64) << 32) | r as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blocklist_ebpf::RESULT_BLOCKED;
    use proptest::prelude::*;

    fn e(addr: u32, len: u8, id: u32) -> Entry {
        Entry { addr, len, id }
    }

    /// The reference: the longest block match, overridden by any allow
    /// match.
    fn reference(block: &[Entry], allow: &[Entry], addr: u32) -> u32 {
        let covers = |e: &Entry| {
            let c = canonical(e);
            c.len == 0 || (addr >> (32 - c.len as u32)) == (c.addr >> (32 - c.len as u32))
        };
        let best = block
            .iter()
            .filter(|e| covers(e))
            .max_by_key(|e| e.len.min(32))
            .map(|e| (e.len.min(32), e.id));
        result(best, allow.iter().any(covers))
    }

    /// Canonical, distinct block entries with distinct ids (as installed).
    fn block_set(raw: Vec<(u32, u16, u8)>) -> Vec<Entry> {
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        for (hi, lo, len) in raw {
            let c = canonical(&e(0x0a00_0000 | (hi << 16) | lo as u32, len, 0));
            if seen.insert((c.addr, c.len)) {
                out.push(Entry {
                    id: out.len() as u32 + 1,
                    ..c
                });
            }
        }
        out
    }

    fn raw() -> impl Strategy<Value = (u32, u16, u8)> {
        // Few distinct /16s, so entries overlap and nest often.
        (0u32..4, any::<u16>(), 8u8..=32)
    }

    fn addr() -> impl Strategy<Value = u32> {
        (0u32..5, any::<u16>()).prop_map(|(hi, lo)| 0x0a00_0000 | (hi << 16) | lo as u32)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
        #[test]
        fn table_equals_reference(
            block in proptest::collection::vec(raw(), 0..40),
            allow in proptest::collection::vec(raw(), 0..8),
            probes in proptest::collection::vec(addr(), 64),
        ) {
            let block = block_set(block);
            let allow: Vec<Entry> = block_set(allow).into_iter().map(|a| Entry { id: 0, ..a }).collect();
            let t = compile(&block, &allow);
            let mut points = probes;
            // Every entry's edges, where off-by-one errors live.
            for c in block.iter().chain(&allow) {
                let size = 1u64 << (32 - c.len as u32);
                points.extend([c.addr, c.addr.wrapping_sub(1), (c.addr as u64 + size - 1) as u32, (c.addr as u64 + size) as u32]);
            }
            for p in points {
                prop_assert_eq!(t.lookup(p), reference(&block, &allow, p), "address {:#x}", p);
            }
        }

        #[test]
        fn chunks_are_minimal_and_well_formed(
            block in proptest::collection::vec(raw(), 0..40),
            allow in proptest::collection::vec(raw(), 0..8),
        ) {
            let t = compile(&block_set(block), &block_set(allow));
            for i in 0..SLOTS {
                if let Slot::Chunk(r) = t.slot(i) {
                    prop_assert!(r.len() >= 2);
                    prop_assert_eq!(r[0] >> 32, 0);
                    for w in r.windows(2) {
                        prop_assert!(w[0] >> 32 < w[1] >> 32, "sorted starts");
                        prop_assert_ne!(w[0] as u32, w[1] as u32, "neighbours differ");
                    }
                }
            }
        }
    }

    #[test]
    fn wide_entries_fill_slots_directly() {
        let t = compile(&[e(0x0a00_0000, 8, 7)], &[e(0x0a01_0000, 16, 0)]);
        assert_eq!(t.slot(0x0a00), Slot::Direct(blocked_result(7, 8)));
        assert_eq!(t.slot(0x0a01), Slot::Direct(RESULT_ALLOWED));
        assert_eq!(t.slot(0x0b00), Slot::Direct(0));
        assert_eq!(t.records(), 0);
    }

    #[test]
    fn a_host_inside_a_prefix_splits_its_slot() {
        let t = compile(&[e(0x0a00_0000, 8, 1), e(0x0a00_0105, 32, 2)], &[]);
        let Slot::Chunk(r) = t.slot(0x0a00) else {
            panic!("expected a chunk");
        };
        assert_eq!(
            r,
            &[
                blocked_result(1, 8) as u64,
                (0x105u64 << 32) | blocked_result(2, 32) as u64,
                (0x106u64 << 32) | blocked_result(1, 8) as u64,
            ]
        );
        assert_ne!(blocked_result(1, 8) & RESULT_BLOCKED, 0);
    }

    #[test]
    fn an_allow_entry_outside_every_block_entry_adds_nothing() {
        let t = compile(&[], &[e(0x0a00_0000, 24, 0)]);
        assert_eq!(t.records(), 0);
        assert_eq!(t.lookup(0x0a00_0001), 0);
    }

    #[test]
    fn a_full_slot_of_hosts_fits_one_chunk() {
        let block: Vec<Entry> = (0..65_536u32)
            .map(|i| e(0x0a00_0000 | i, 32, i + 1))
            .collect();
        let t = compile(&block, &[e(0x0a00_0000, 31, 0)]);
        assert_eq!(t.lookup(0x0a00_0000), RESULT_ALLOWED);
        assert_eq!(t.lookup(0x0a00_0002), blocked_result(3, 32));
        assert_eq!(t.lookup(0x0a00_ffff), blocked_result(65_536, 32));
        // One record per host (each its own id) but the allowed /31 is one.
        assert_eq!(t.records(), 65_535);
    }
}
