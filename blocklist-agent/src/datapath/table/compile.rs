//! The table compiler: IPv4 or IPv6 block and allow entries in, a table's
//! slots and range records out. Pure: no kernel, no I/O.
//!
//! Both families are compiled over a key of `width` bits (IPv4: the
//! address, 32; IPv6: its upper 64 bits). Each /16 of the key space gets
//! one slot. Entries of /16 or wider paint whole slots; narrower ones split
//! their slot into ranges of the low bits. Prefixes are laminar (two are
//! disjoint or one holds the other), so one sweep over a slot's entries,
//! sorted by start and then by width, with a stack of the entries still
//! open, yields the longest match at every point: a step function, which is
//! exactly the chunk's records.
//!
//! IPv6 entries the table does not represent (block entries of /65../127,
//! allow entries longer than /64) mark their /64 [`RESULT_DEEP`]: the
//! program asks the tries there. IPv6 single addresses (/128) are not
//! compiled at all; they live in `EXACT_V6`, which the program probes first.

use blocklist_ebpf::{
    CHUNK_MAX_RECORDS, CHUNK_V6_MAX_RECORDS, RESULT_ALLOWED, RESULT_DEEP, SLOT_CHUNK,
    SLOT_COUNT_MASK, TABLE_V4_SLOTS, blocked_result,
};

/// An IPv4 entry as the compiler takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    /// The address, host byte order (host bits are ignored).
    pub addr: u32,
    /// Prefix length (above 32 is read as 32).
    pub len: u8,
    /// The entry's id (0 for allow entries), with
    /// [`blocklist_ebpf::RESULT_MONITOR`] set when the entry only monitors:
    /// the result carries both.
    pub id: u32,
}

/// An IPv6 entry as the compiler takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry6 {
    /// The address, host byte order (host bits are ignored).
    pub addr: u128,
    /// Prefix length (above 128 is read as 128).
    pub len: u8,
    /// The entry's id (0 for allow entries), with the monitor flag as in
    /// [`Entry`].
    pub id: u32,
}

/// An entry over the key space: the key (host bits cleared), its length
/// in key bits, its id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    at: u64,
    len: u8,
    id: u32,
}

/// What covers a point: the longest entry's length and id.
type Cover = Option<(u8, u32)>;

const SLOTS: usize = TABLE_V4_SLOTS as usize;

/// One range record: where it starts in its slot's low bits, and the
/// result from there up to the next record's start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// Start, in the slot's low `width - 16` bits.
    pub start: u64,
    /// The result ([`RESULT_ALLOWED`], [`RESULT_DEEP`], a blocked result
    /// or 0).
    pub result: u32,
}

impl Record {
    /// The IPv4 kernel form: `(start << 32) | result`.
    pub fn v4_word(&self) -> u64 {
        (self.start << 32) | self.result as u64
    }

    /// A record from its kernel words: one (IPv4) or two (IPv6, start
    /// then result), as [`Chunk`] describes.
    pub fn from_words(words: &[u64]) -> Self {
        match *words {
            [w] => Record {
                start: w >> 32,
                result: w as u32,
            },
            [start, result] => Record {
                start,
                result: result as u32,
            },
            _ => panic!("a record is one or two words, not {}", words.len()),
        }
    }
}

/// A chunk's records as the kernel holds them: one word per record for
/// IPv4 (`start << 32 | result`), two for IPv6 (start, result). Kept in
/// that form so that a million-entry table costs what the kernel's copy
/// does, 8 bytes per IPv4 record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk<'a> {
    words: &'a [u64],
    per: usize,
}

impl<'a> Chunk<'a> {
    /// The records.
    pub fn len(&self) -> usize {
        self.words.len() / self.per
    }

    /// True when there are none (never, for a compiled chunk).
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// Record `i`.
    pub fn get(&self, i: usize) -> Record {
        Record::from_words(&self.words[i * self.per..(i + 1) * self.per])
    }

    /// The kernel words, in order.
    pub fn words(&self) -> &'a [u64] {
        self.words
    }

    /// Every record, in order.
    pub fn iter(&self) -> impl Iterator<Item = Record> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }
}

/// Appends `r` to `words` in the layout of `per` words per record.
fn push_record(words: &mut Vec<u64>, per: usize, r: Record) {
    if per == 1 {
        words.push(r.v4_word());
    } else {
        words.extend([r.start, r.result as u64]);
    }
}

/// One compiled slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Slot<'a> {
    /// One result for the whole /16.
    Direct(u32),
    /// A chunk: the records, sorted by start, the first at start 0.
    Chunk(Chunk<'a>),
}

/// The compiled table, before it is written to the kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Compiled {
    /// Key width: 32 (IPv4) or 64 (IPv6).
    width: u32,
    /// Per slot: a direct result (no [`SLOT_CHUNK`]), or [`SLOT_CHUNK`]
    /// with the index of its first record in `records` (low 32 bits) and
    /// the record count (above), as in the kernel's tables, but indexing
    /// this struct's records.
    slots: Vec<u64>,
    /// The records of every chunk, in the kernel's layout (see [`Chunk`]).
    words: Vec<u64>,
    /// Slots that would have needed a chunk but were left to the tries.
    deep_slots: usize,
}

impl Compiled {
    /// The compiled form of slot `i` (`i < 65,536`).
    pub fn slot(&self, i: usize) -> Slot<'_> {
        let s = self.slots[i];
        if s & SLOT_CHUNK == 0 {
            Slot::Direct(s as u32)
        } else {
            let (start, count) = chunk_of(s);
            let per = self.words_per_record();
            Slot::Chunk(Chunk {
                words: &self.words[start * per..(start + count) * per],
                per,
            })
        }
    }

    /// Records over all chunks (what the table occupies in its ranges).
    pub fn records(&self) -> usize {
        self.words.len() / self.words_per_record()
    }

    /// Kernel words per record: one for IPv4 (`start << 32 | result`),
    /// two for IPv6 (start, result).
    pub fn words_per_record(&self) -> usize {
        if self.width == 32 { 1 } else { 2 }
    }

    /// Slots decided by the tries because their chunk did not fit.
    pub fn deep_slots(&self) -> usize {
        self.deep_slots
    }

    /// The result for `key` (an IPv4 address, or the upper 64 bits of an
    /// IPv6 one), by the same search the XDP program runs.
    pub fn lookup(&self, key: u64) -> u32 {
        let low_bits = self.width - 16;
        match self.slot((key >> low_bits) as usize) {
            Slot::Direct(r) => r,
            Slot::Chunk(records) => search(records, key & ((1u64 << low_bits) - 1)),
        }
    }
}

/// The `EMPTY_V4` words of an IPv4 slot: a set bit per /24 of the /16
/// whose every address has result 0 (no block or allow entry overlaps it).
/// IPv4 only: the records' starts are the slot's low 16 bits.
pub fn empty_words(slot: &Slot<'_>) -> [u64; 4] {
    match slot {
        Slot::Direct(0) => [u64::MAX; 4],
        Slot::Direct(_) => [0; 4],
        Slot::Chunk(records) => {
            let mut empty = [u64::MAX; 4];
            let n = records.len();
            for k in 0..n {
                let r = records.get(k);
                if r.result == 0 {
                    continue;
                }
                let end = if k + 1 < n {
                    records.get(k + 1).start
                } else {
                    1 << 16
                };
                // The slot's low 16 bits: word 0-3 of the slot's four.
                for b in (r.start >> 8)..=((end - 1) >> 8) {
                    let (word, bit) = blocklist_ebpf::empty_v4_bit((b as u32) << 8);
                    empty[word as usize] &= !(1u64 << bit);
                }
            }
            empty
        }
    }
}

/// Record index and count of a chunk slot.
pub fn chunk_of(slot: u64) -> (usize, usize) {
    (
        (slot as u32) as usize,
        ((slot >> 32) & SLOT_COUNT_MASK) as usize,
    )
}

/// A chunk slot value.
pub fn chunk_slot(start: u32, count: usize) -> u64 {
    debug_assert!(count >= 1 && count as u64 <= SLOT_COUNT_MASK);
    SLOT_CHUNK | ((count as u64) << 32) | start as u64
}

/// The program's branch-free binary search: the result of the last record
/// whose start is at most `low`.
pub fn search(records: Chunk<'_>, low: u64) -> u32 {
    let found: Result<u32, std::convert::Infallible> =
        search_with(records.len(), low, |i| Ok(records.get(i)));
    match found {
        Ok(r) => r,
    }
}

/// [`search`] over `count` records that `get` reads one at a time (from
/// the kernel's map, say), so that a lookup reads only the records the
/// program's search touches.
pub fn search_with<E>(
    count: usize,
    low: u64,
    mut get: impl FnMut(usize) -> Result<Record, E>,
) -> Result<u32, E> {
    let (mut base, mut n) = (0usize, count);
    while n > 1 {
        let half = n / 2;
        if get(base + half)?.start <= low {
            base += half;
        }
        n -= half;
    }
    Ok(get(base)?.result)
}

/// What a kernel slot value decides for an address whose bits below the
/// slot are `low`, in the program's order: a direct slot's result; for a
/// chunk, 0 when `empty()` says no entry overlaps the address's /24, else
/// the search over the records `get` reads (by index into the ranges).
/// The program reads the /16's `EMPTY16_V4` bit and the /22's `EMPTY22_V4`
/// bit before the slot ([`Maps::table_result`](crate::datapath::maps::Maps::table_result)
/// does too).
pub fn decide_slot<E>(
    slot: u64,
    low: u64,
    empty: impl FnOnce() -> Result<bool, E>,
    mut get: impl FnMut(usize) -> Result<Record, E>,
) -> Result<u32, E> {
    if slot & SLOT_CHUNK == 0 {
        return Ok(slot as u32);
    }
    if empty()? {
        return Ok(0);
    }
    let (first, count) = chunk_of(slot);
    search_with(count, low, |i| get(first + i))
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

/// Compiles IPv4 block and allow entries. Order does not matter; host bits
/// beyond the prefix length are ignored; lengths above 32 are clamped.
pub fn compile(block: &[Entry], allow: &[Entry]) -> Compiled {
    let key = |e: &Entry| Key {
        at: e.addr as u64,
        len: e.len.min(32),
        id: e.id,
    };
    let block: Vec<Key> = block.iter().map(key).collect();
    let allow: Vec<Key> = allow.iter().map(key).collect();
    build(
        32,
        block,
        allow,
        Vec::new(),
        CHUNK_MAX_RECORDS as usize,
        usize::MAX,
    )
}

/// Compiles IPv6 block and allow entries into at most `budget` records
/// (the largest chunks beyond it are left to the tries). Block entries of
/// /128 are skipped (they live in `EXACT_V6`); see the module doc for the
/// other lengths the table does not hold.
pub fn compile_v6(block: &[Entry6], allow: &[Entry6], budget: usize) -> Compiled {
    let upper = |a: u128| (a >> 64) as u64;
    let mut deep = Vec::new();
    let mut keys = |entries: &[Entry6], is_block: bool| -> Vec<Key> {
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let len = e.len.min(128);
            if len <= 64 {
                out.push(Key {
                    at: upper(e.addr),
                    len,
                    id: e.id,
                });
            } else if !(is_block && len == 128) {
                deep.push(Key {
                    at: upper(e.addr),
                    len: 64,
                    id: 0,
                });
            }
        }
        out
    };
    let block = keys(block, true);
    let allow = keys(allow, false);
    deep.sort_unstable();
    deep.dedup();
    build(
        64,
        block,
        allow,
        deep,
        CHUNK_V6_MAX_RECORDS as usize,
        budget,
    )
}

/// The shared compiler over a key of `width` bits.
fn build(
    width: u32,
    block: Vec<Key>,
    allow: Vec<Key>,
    deep: Vec<Key>,
    max_chunk: usize,
    budget: usize,
) -> Compiled {
    let (block_wide, block_narrow) = split(width, block);
    let (allow_wide, allow_narrow) = split(width, allow);
    let (_, deep) = split(width, deep);
    let block_base = paint(width, &block_wide);
    let allow_base = paint(width, &allow_wide);
    let low_bits = width - 16;

    let per = if width == 32 { 1 } else { 2 };
    let mut slots = Vec::with_capacity(SLOTS);
    let mut words = Vec::new();
    let mut records = Vec::new();
    let mut deep_slots = 0;
    let (mut bi, mut ai, mut di) = (0, 0, 0);
    for slot in 0..SLOTS as u64 {
        let bn = take_slot(low_bits, &block_narrow, &mut bi, slot);
        let an = take_slot(low_bits, &allow_narrow, &mut ai, slot);
        let dn = take_slot(low_bits, &deep, &mut di, slot);
        let (b, a) = (
            block_base[slot as usize],
            allow_base[slot as usize].is_some(),
        );
        if bn.is_empty() && dn.is_empty() && (an.is_empty() || b.is_none()) {
            slots.push(result(b, a) as u64);
            continue;
        }
        let bs = sweep(width, bn, b);
        let as_ = sweep(width, an, allow_base[slot as usize]);
        let ds = sweep(width, dn, None);
        records.clear();
        merge(&bs, &as_, &ds, &mut records);
        let count = records.len();
        if count == 1 {
            slots.push(records[0].result as u64);
        } else if count > max_chunk {
            slots.push(RESULT_DEEP as u64);
            deep_slots += 1;
        } else {
            slots.push(chunk_slot((words.len() / per) as u32, count));
            for r in &records {
                push_record(&mut words, per, *r);
            }
        }
    }
    let mut c = Compiled {
        width,
        slots,
        words,
        deep_slots,
    };
    c.fit(budget);
    c
}

impl Compiled {
    /// Leaves the largest chunks to the tries until the records fit in
    /// `budget`.
    fn fit(&mut self, budget: usize) {
        if self.records() <= budget {
            return;
        }
        let mut chunks: Vec<(usize, usize)> = (0..SLOTS)
            .filter(|&i| self.slots[i] & SLOT_CHUNK != 0)
            .map(|i| (chunk_of(self.slots[i]).1, i))
            .collect();
        chunks.sort_unstable_by(|a, b| b.cmp(a));
        let mut total = self.records();
        for (count, i) in chunks {
            if total <= budget {
                break;
            }
            self.slots[i] = RESULT_DEEP as u64;
            self.deep_slots += 1;
            total -= count;
        }
        let per = self.words_per_record();
        let old = std::mem::take(&mut self.words);
        for s in &mut self.slots {
            if *s & SLOT_CHUNK != 0 {
                let (start, count) = chunk_of(*s);
                let first = self.words.len() / per;
                self.words
                    .extend_from_slice(&old[start * per..(start + count) * per]);
                *s = chunk_slot(first as u32, count);
            }
        }
    }
}

/// A masked key (host bits cleared).
fn canonical(width: u32, e: &Key) -> Key {
    let len = (e.len as u32).min(width);
    let full = u64::MAX >> (64 - width);
    let mask = full & !full.checked_shr(len).unwrap_or(0);
    Key {
        at: e.at & mask,
        len: len as u8,
        id: e.id,
    }
}

/// Entries of /16 or wider (sorted by length, widest first) and the
/// narrower ones (sorted by address, then widest first).
fn split(width: u32, mut entries: Vec<Key>) -> (Vec<Key>, Vec<Key>) {
    for e in &mut entries {
        *e = canonical(width, e);
    }
    // The narrow ones stay where they are: a copy of a million keys would
    // be the compile's largest allocation. The wide ones are few (at most
    // one per distinct /16-or-wider prefix).
    let mut wide: Vec<Key> = entries.iter().filter(|e| e.len <= 16).copied().collect();
    entries.retain(|e| e.len > 16);
    let mut narrow = entries;
    wide.sort_unstable_by_key(|e| e.len);
    narrow.sort_unstable_by_key(|e| (e.at, e.len));
    (wide, narrow)
}

/// Per slot, the longest of the wide entries that covers it.
fn paint(width: u32, wide: &[Key]) -> Vec<Cover> {
    let mut base = vec![None; SLOTS];
    // Widest first, so a longer entry overwrites the wider ones it is in.
    for e in wide {
        let first = (e.at >> (width - 16)) as usize;
        let n = 1usize << (16 - e.len);
        for b in &mut base[first..first + n] {
            *b = Some((e.len, e.id));
        }
    }
    base
}

/// The run of `narrow` entries inside `slot`, advancing `i` past them.
fn take_slot<'a>(low_bits: u32, narrow: &'a [Key], i: &mut usize, slot: u64) -> &'a [Key] {
    let start = *i;
    while *i < narrow.len() && narrow[*i].at >> low_bits == slot {
        *i += 1;
    }
    &narrow[start..*i]
}

/// The longest match over the slot's low bits as a step function:
/// `(start, longest covering entry)`, first start 0, no two neighbours
/// equal. `entries` are sorted by address, then widest first.
fn sweep(width: u32, entries: &[Key], base: Cover) -> Vec<(u64, Cover)> {
    let low_bits = width - 16;
    let end_of_slot = 1u64 << low_bits;
    let step = |out: &mut Vec<(u64, Cover)>, at: u64, v: Cover| {
        if at >= end_of_slot {
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
    };
    let mut out = vec![(0, base)];
    let mut open: Vec<(u64, (u8, u32))> = Vec::new();
    for e in entries {
        let start = e.at & (end_of_slot - 1);
        let end = start + (1u64 << (width - e.len as u32));
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

/// Combines the block, allow and deep step functions into records.
fn merge(
    block: &[(u64, Cover)],
    allow: &[(u64, Cover)],
    deep: &[(u64, Cover)],
    out: &mut Vec<Record>,
) {
    let first = out.len();
    let (mut i, mut j, mut k) = (0, 0, 0);
    let (mut b, mut a, mut d) = (None, false, false);
    loop {
        let at = [block.get(i), allow.get(j), deep.get(k)]
            .into_iter()
            .flatten()
            .map(|x| x.0)
            .min();
        let Some(at) = at else { break };
        if block.get(i).is_some_and(|x| x.0 == at) {
            b = block[i].1;
            i += 1;
        }
        if allow.get(j).is_some_and(|y| y.0 == at) {
            a = allow[j].1.is_some();
            j += 1;
        }
        if deep.get(k).is_some_and(|y| y.0 == at) {
            d = deep[k].1.is_some();
            k += 1;
        }
        let r = if d { RESULT_DEEP } else { result(b, a) };
        if out.len() > first && out.last().expect("non-empty").result == r {
            continue;
        }
        out.push(Record {
            start: at,
            result: r,
        });
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
            let len = e.len.min(32) as u32;
            len == 0 || (addr >> (32 - len)) == (e.addr >> (32 - len))
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
            let len = len.min(32);
            let addr = (0x0a00_0000 | (hi << 16) | lo as u32)
                & (u32::MAX.checked_shl(32 - len as u32).unwrap_or(0));
            if seen.insert((addr, len)) {
                out.push(Entry {
                    addr,
                    len,
                    id: out.len() as u32 + 1,
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
                prop_assert_eq!(t.lookup(p as u64), reference(&block, &allow, p), "address {:#x}", p);
            }
        }

        #[test]
        fn empty_bits_mark_exactly_the_24s_no_entry_overlaps(
            block in proptest::collection::vec(raw(), 0..40),
            allow in proptest::collection::vec(raw(), 0..8),
        ) {
            let block = block_set(block);
            let allow: Vec<Entry> = block_set(allow).into_iter().map(|a| Entry { id: 0, ..a }).collect();
            let t = compile(&block, &allow);
            for slot in 0x0a00..0x0a05u32 {
                let words = empty_words(&t.slot(slot as usize));
                for b in 0..256u32 {
                    let base = (slot << 16) | (b << 8);
                    let empty = (0..256).all(|x| reference(&block, &allow, base | x) == 0);
                    let bit = (words[(b / 64) as usize] >> (b % 64)) & 1 != 0;
                    prop_assert_eq!(bit, empty, "/24 at {:#x}", base);
                }
            }
        }

        /// Also the bound `RANGES_V4_RECORDS` is sized by: a chunk has at
        /// most its first record and one per boundary of an entry inside
        /// its slot.
        #[test]
        fn chunks_are_minimal_and_well_formed(
            block in proptest::collection::vec(raw(), 0..40),
            allow in proptest::collection::vec(raw(), 0..8),
        ) {
            let (block, allow) = (block_set(block), block_set(allow));
            let t = compile(&block, &allow);
            for i in 0..SLOTS {
                if let Slot::Chunk(r) = t.slot(i) {
                    let inside = block
                        .iter()
                        .chain(&allow)
                        .filter(|e| e.len > 16 && (e.addr >> 16) as usize == i)
                        .count();
                    prop_assert!(r.len() <= 1 + 2 * inside, "{} records, {} entries inside", r.len(), inside);
                    prop_assert!(r.len() >= 2);
                    prop_assert_eq!(r.get(0).start, 0);
                    let recs: Vec<Record> = r.iter().collect();
                    for w in recs.windows(2) {
                        prop_assert!(w[0].start < w[1].start, "sorted starts");
                        prop_assert_ne!(w[0].result, w[1].result, "neighbours differ");
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
        let words: Vec<u64> = r.words().to_vec();
        assert_eq!(
            words,
            [
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
        assert_eq!(t.lookup(0x0a00_0001u64), 0);
    }

    #[test]
    fn a_full_slot_of_hosts_fits_one_chunk() {
        let block: Vec<Entry> = (0..65_536u32)
            .map(|i| e(0x0a00_0000 | i, 32, i + 1))
            .collect();
        let t = compile(&block, &[e(0x0a00_0000, 31, 0)]);
        assert_eq!(t.lookup(0x0a00_0000u64), RESULT_ALLOWED);
        assert_eq!(t.lookup(0x0a00_0002u64), blocked_result(3, 32));
        assert_eq!(t.lookup(0x0a00_ffffu64), blocked_result(65_536, 32));
        // One record per host (each its own id) but the allowed /31 is one.
        assert_eq!(t.records(), 65_535);
    }

    fn e6(addr: u128, len: u8, id: u32) -> Entry6 {
        Entry6 { addr, len, id }
    }

    fn covers6(e: &Entry6, a: u128) -> bool {
        let len = e.len.min(128) as u32;
        len == 0 || (a >> (128 - len)) == (e.addr >> (128 - len))
    }

    /// The full longest-prefix verdict over every entry, /128s included.
    fn reference6(block: &[Entry6], allow: &[Entry6], a: u128) -> u32 {
        let best = block
            .iter()
            .filter(|e| covers6(e, a))
            .max_by_key(|e| e.len)
            .map(|e| (e.len, e.id));
        result(best, allow.iter().any(|e| covers6(e, a)))
    }

    /// Canonical, distinct IPv6 entries in a few /48s of one /32 (and a
    /// second /16), so they nest at every length.
    fn block_set6(raw: Vec<(u8, u8, u64, u64, u8)>) -> Vec<Entry6> {
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        for (slot, net, mid, host, len) in raw {
            let a: u128 = (((0x2001_0db8u128 + slot as u128 * 0x1_0000) << 96)
                | ((net as u128) << 80)
                | ((mid as u128 & 0xff) << 64)
                | (host as u128 & 0xff))
                & u128::MAX.checked_shl(128 - len as u32).unwrap_or(0);
            if seen.insert((a, len)) {
                out.push(e6(a, len, out.len() as u32 + 1));
            }
        }
        out
    }

    fn raw6() -> impl Strategy<Value = (u8, u8, u64, u64, u8)> {
        (
            0u8..2,
            0u8..3,
            any::<u64>(),
            any::<u64>(),
            prop_oneof![0u8..=64, 65u8..=128, Just(128u8), Just(64u8)],
        )
    }

    fn addr6() -> impl Strategy<Value = u128> {
        (0u8..3, 0u8..4, any::<u64>(), any::<u64>()).prop_map(|(slot, net, mid, host)| {
            ((0x2001_0db8u128 + slot as u128 * 0x1_0000) << 96)
                | ((net as u128) << 80)
                | ((mid as u128 & 0x1ff) << 64)
                | (host as u128 & 0x1ff)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
        /// Where the table answers (not [`RESULT_DEEP`], not a listed
        /// /128, which the program probes first), it answers what the
        /// full longest-prefix match does; it defers only where an entry it
        /// does not hold lies in the address's /64.
        #[test]
        fn table_v6_equals_reference(
            block in proptest::collection::vec(raw6(), 0..40),
            allow in proptest::collection::vec(raw6(), 0..8),
            probes in proptest::collection::vec(addr6(), 64),
        ) {
            let block = block_set6(block);
            let allow: Vec<Entry6> = block_set6(allow).into_iter().map(|a| Entry6 { id: 0, ..a }).collect();
            let t = compile_v6(&block, &allow, usize::MAX);
            let mut points = probes;
            for c in block.iter().chain(&allow) {
                let size = 1u128.checked_shl(128 - c.len as u32).unwrap_or(0);
                points.extend([c.addr, c.addr.wrapping_sub(1), c.addr.wrapping_add(size).wrapping_sub(1), c.addr.wrapping_add(size)]);
            }
            for p in points {
                let r = t.lookup((p >> 64) as u64);
                let exact = block.iter().any(|e| e.len == 128 && e.addr == p);
                let unheld = block.iter().filter(|e| e.len > 64 && e.len < 128)
                    .chain(allow.iter().filter(|e| e.len > 64))
                    .any(|e| e.addr >> 64 == p >> 64);
                if r == RESULT_DEEP {
                    prop_assert!(unheld, "deferred without cause at {:#x}", p);
                } else if !exact {
                    prop_assert!(!unheld);
                    prop_assert_eq!(r, reference6(&block, &allow, p), "address {:#x}", p);
                }
            }
        }
    }

    #[test]
    fn v6_hosts_stay_out_of_the_table_and_long_prefixes_defer() {
        let net: u128 = 0x2001_0db8_0001_0002 << 64;
        let t = compile_v6(
            &[
                e6(net, 48, 1),
                e6(net | 5, 128, 2),
                e6((net + (1 << 64)) | 0x100, 120, 3),
            ],
            &[],
            usize::MAX,
        );
        let hi = (net >> 64) as u64;
        assert_eq!(t.lookup(hi), blocked_result(1, 48));
        assert_eq!(t.lookup(hi + 1), RESULT_DEEP);
        assert_eq!(t.lookup(hi + 2), blocked_result(1, 48));
        assert_eq!(t.lookup(hi - 0x1_0000), 0);
    }

    #[test]
    fn v6_chunks_beyond_the_budget_defer_whole_slots() {
        let block: Vec<Entry6> = (0..100u128)
            .map(|i| e6((0x2001_0db8u128 << 96) | (i << 70), 58, i as u32 + 1))
            .chain([e6((0x2a00u128 << 112) | (1 << 96), 48, 200)])
            .collect();
        let t = compile_v6(&block, &[], 10);
        assert_eq!(t.deep_slots(), 1);
        assert_eq!(t.lookup(0x2001_0db8u64 << 32), RESULT_DEEP);
        assert_eq!(t.lookup(0x2a00_0001u64 << 32), blocked_result(200, 48));
        assert!(t.records() <= 10);
    }
}
