//! Writes a [`Compiled`] table into the kernel's slots and ranges
//! (`TABLE_V4`/`RANGES_V4`, or the IPv6 pair), copy on write: only slots
//! whose content changes are touched; a changed chunk goes to free records
//! first, and only then is its slot switched, with one aligned store. A
//! packet therefore always sees, per /16, the old chunk or the new one: an
//! address both sets block stays blocked, and a crash leaves every /16
//! correct for one of the two.

use std::{
    collections::BTreeSet,
    sync::atomic::{Ordering, fence},
    time::Duration,
};

use blocklist_ebpf::{SLOT_CHUNK, TABLE_V4_SLOTS};

use super::compile::{Compiled, Slot, chunk_of, chunk_slot, empty_words};
use crate::datapath::mmap::MappedU64;

/// How long a chunk that was just switched away from may still be read by
/// a program run that loaded its slot before the switch. A run takes
/// microseconds; this is generous.
const GRACE: Duration = Duration::from_millis(5);

/// What one write did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct WriteReport {
    /// Slots switched.
    pub slots: usize,
    /// Range records written.
    pub records: usize,
    /// Rounds: more than one when the free records could not hold every
    /// new chunk at once and the writer waited for old ones to free up.
    pub rounds: usize,
}

/// The ranges array has no room for a chunk even with every unchanged
/// chunk in place and everything else free.
#[derive(Debug, thiserror::Error)]
#[error(
    "the compiled table needs more than the {capacity} range records of its ranges map \
     ({needed} in use or needed); use fewer entries, or set `[datapath] lookup = \"trie\"`"
)]
pub struct RangesFull {
    /// Records the table would need.
    pub needed: usize,
    /// Records available.
    pub capacity: usize,
}

/// Free record runs, for best-fit allocation.
struct Free {
    /// (length, start).
    runs: BTreeSet<(usize, usize)>,
}

impl Free {
    /// Everything in `0..capacity` that no chunk in `used` occupies.
    fn around(mut used: Vec<(usize, usize)>, capacity: usize) -> Self {
        used.sort_unstable();
        let mut runs = BTreeSet::new();
        let mut at = 0;
        for (start, len) in used {
            if start > at {
                runs.insert((start - at, at));
            }
            at = at.max(start + len);
        }
        if capacity > at {
            runs.insert((capacity - at, at));
        }
        Self { runs }
    }

    fn take(&mut self, n: usize) -> Option<usize> {
        let &(len, start) = self.runs.range((n, 0)..).next()?;
        self.runs.remove(&(len, start));
        if len > n {
            self.runs.insert((len - n, start + n));
        }
        Some(start)
    }
}

/// True when the kernel's slot value `current` already holds `want`.
fn holds(current: u64, want: &Slot<'_>, ranges: &MappedU64, per: usize) -> bool {
    match want {
        Slot::Direct(r) => current == *r as u64,
        Slot::Chunk(records) => {
            if current & SLOT_CHUNK == 0 {
                return false;
            }
            let (start, count) = chunk_of(current);
            let words = records.words();
            count == records.len()
                && (start + count) * per <= ranges.len()
                && words
                    .iter()
                    .enumerate()
                    .all(|(k, w)| ranges.load(start * per + k) == *w)
        }
    }
}

/// Brings the kernel's table in line with `table`.
pub fn write(
    slots: &MappedU64,
    ranges: &MappedU64,
    table: &Compiled,
) -> Result<WriteReport, RangesFull> {
    write_slots(slots, ranges, None, table, None)
}

/// The IPv4 table's empty bitmaps: `EMPTY_V4`
/// ([`EMPTY_V4_WORDS`](blocklist_ebpf::EMPTY_V4_WORDS) long, a bit per /24)
/// and, when the pins have them, `EMPTY16_V4` (a bit per /16) and
/// `EMPTY22_V4` (a bit per /22, a word per /16).
#[derive(Clone, Copy)]
pub struct EmptyBits<'a> {
    /// `EMPTY_V4`.
    pub by24: &'a MappedU64,
    /// `EMPTY16_V4`.
    pub by16: Option<&'a MappedU64>,
    /// `EMPTY22_V4`.
    pub by22: Option<&'a MappedU64>,
}

/// The `EMPTY22_V4` word of a /16 whose `EMPTY_V4` words are `words`: a
/// /22's bit is set when its four /24 bits are.
///
/// ```
/// use blocklist_agent::datapath::table::writer::empty22_word;
/// // Only the /24 at offset 5 (in the second /22) holds an entry.
/// let mut words = [u64::MAX; 4];
/// words[0] &= !(1 << 5);
/// assert_eq!(empty22_word(&words), !(1u64 << 1));
/// ```
pub fn empty22_word(words: &[u64; 4]) -> u64 {
    let mut out = 0;
    for j in 0..64 {
        if (words[j / 16] >> ((4 * j) % 64)) & 0xf == 0xf {
            out |= 1 << j;
        }
    }
    out
}

/// [`write()`] for the slots `only` marks (all when `None`): `table` need
/// only be right for those (a partial compile). With `empty`, also keeps
/// the empty bits in line: a /24, /22 or /16 that turns non-empty has its bit
/// cleared before its slot switches, one that turns empty has it set only
/// after, so a packet that reads the bits and then the slot never skips an
/// entry that either table holds, and a switched /16 decides by the new
/// table at once, even if the writer dies before the bits are set.
pub fn write_slots(
    slots: &MappedU64,
    ranges: &MappedU64,
    empty: Option<EmptyBits<'_>>,
    table: &Compiled,
    only: Option<&[bool]>,
) -> Result<WriteReport, RangesFull> {
    let empty = empty.map(|bits| (bits, EmptyWords::of(table, only)));
    let report = switch_slots(slots, ranges, empty.as_ref(), table, only)?;
    if let Some((bits, want)) = &empty {
        set_empty(*bits, want);
    }
    Ok(report)
}

/// The empty bits a table wants for one /16.
#[derive(Clone, Copy)]
struct SlotBits {
    /// Its four `EMPTY_V4` words.
    by24: [u64; 4],
    /// Its `EMPTY22_V4` word; all set when no entry overlaps the /16,
    /// which is also its `EMPTY16_V4` bit.
    by22: u64,
}

impl SlotBits {
    fn whole_16_empty(&self) -> bool {
        self.by22 == u64::MAX
    }
}

/// The empty bits a table wants, for the slots a write covers.
struct EmptyWords(Vec<Option<SlotBits>>);

impl EmptyWords {
    fn of(table: &Compiled, only: Option<&[bool]>) -> Self {
        Self(
            (0..TABLE_V4_SLOTS as usize)
                .map(|i| {
                    only.is_none_or(|o| o[i]).then(|| {
                        let by24 = empty_words(&table.slot(i));
                        SlotBits {
                            by24,
                            by22: empty22_word(&by24),
                        }
                    })
                })
                .collect(),
        )
    }
}

/// The copy-on-write rounds of [`write_slots`]: every slot `only` marks
/// ends up holding `table`'s content, with the empty bits of each switched
/// slot cleared where `table` needs a search, before the switch. The bits
/// `table` sets are left to [`set_empty`].
fn switch_slots(
    slots: &MappedU64,
    ranges: &MappedU64,
    empty: Option<&(EmptyBits<'_>, EmptyWords)>,
    table: &Compiled,
    only: Option<&[bool]>,
) -> Result<WriteReport, RangesFull> {
    let n = TABLE_V4_SLOTS as usize;
    let per = table.words_per_record();
    let capacity = ranges.len() / per;
    let mut report = WriteReport::default();
    loop {
        let current: Vec<u64> = (0..n).map(|i| slots.load(i)).collect();
        let todo: Vec<usize> = (0..n)
            .filter(|&i| only.is_none_or(|o| o[i]))
            .filter(|&i| !holds(current[i], &table.slot(i), ranges, per))
            .collect();
        if todo.is_empty() {
            return Ok(report);
        }
        let used: Vec<(usize, usize)> = current
            .iter()
            .filter(|s| *s & SLOT_CHUNK != 0)
            .map(|s| chunk_of(*s))
            .collect();
        let in_use: usize = used.iter().map(|u| u.1).sum();
        let mut free = Free::around(used, capacity);
        let mut switches = Vec::with_capacity(todo.len());
        let mut deferred = false;
        for i in todo {
            match table.slot(i) {
                Slot::Direct(r) => switches.push((i, r as u64)),
                Slot::Chunk(records) => match free.take(records.len()) {
                    Some(start) => {
                        for (k, w) in records.words().iter().enumerate() {
                            ranges.store(start * per + k, *w);
                        }
                        report.records += records.len();
                        switches.push((i, chunk_slot(start as u32, records.len())));
                    }
                    None => deferred = true,
                },
            }
        }
        if switches.is_empty() {
            return Err(RangesFull {
                needed: in_use + table.records(),
                capacity,
            });
        }
        if let Some((bits, want)) = empty {
            for (i, _) in &switches {
                let want = want.0[*i].expect("a switched slot is one the write covers");
                for (k, w) in want.by24.iter().enumerate() {
                    let at = i * 4 + k;
                    bits.by24.store(at, bits.by24.load(at) & w);
                }
                if let Some(by16) = bits.by16
                    && !want.whole_16_empty()
                {
                    by16.store(i / 64, by16.load(i / 64) & !(1u64 << (i % 64)));
                }
                if let Some(by22) = bits.by22 {
                    by22.store(*i, by22.load(*i) & want.by22);
                }
            }
        }
        // Every record of every new chunk, and every cleared empty bit, is
        // visible before any slot points at it.
        fence(Ordering::SeqCst);
        for (i, v) in &switches {
            slots.store(*i, *v);
        }
        report.slots += switches.len();
        report.rounds += 1;
        if deferred {
            std::thread::sleep(GRACE);
        }
    }
}

/// Sets the empty bits to the wanted words, once every slot holds its
/// content: after this write switched the slots, or for slots already in
/// place (maps pinned before the bitmaps existed start all clear, which
/// only means "search").
fn set_empty(bits: EmptyBits<'_>, want: &EmptyWords) {
    fence(Ordering::SeqCst);
    for (i, words) in want.0.iter().enumerate() {
        let Some(want) = words else { continue };
        for (k, w) in want.by24.iter().enumerate() {
            if bits.by24.load(i * 4 + k) != *w {
                bits.by24.store(i * 4 + k, *w);
            }
        }
        if let Some(by22) = bits.by22
            && by22.load(i) != want.by22
        {
            by22.store(i, want.by22);
        }
        if let Some(by16) = bits.by16 {
            let (at, bit) = (i / 64, 1u64 << (i % 64));
            let old = by16.load(at);
            let new = if want.whole_16_empty() {
                old | bit
            } else {
                old & !bit
            };
            if new != old {
                by16.store(at, new);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use blocklist_ebpf::{
        EMPTY_V4_WORDS, EMPTY16_V4_WORDS, EMPTY22_V4_WORDS, empty_v4_bit, empty16_v4_bit,
        empty22_v4_bit,
    };
    use proptest::prelude::*;

    use super::*;
    use crate::datapath::table::compile::{Entry, Record, compile, decide_slot};

    /// The kernel side of an IPv4 table, in plain memory.
    struct Kernel {
        slots: MappedU64,
        ranges: MappedU64,
        empty: MappedU64,
        empty16: MappedU64,
        empty22: MappedU64,
    }

    impl Kernel {
        fn new(records: usize) -> Self {
            Self {
                slots: MappedU64::anonymous(TABLE_V4_SLOTS as usize),
                ranges: MappedU64::anonymous(records),
                empty: MappedU64::anonymous(EMPTY_V4_WORDS as usize),
                empty16: MappedU64::anonymous(EMPTY16_V4_WORDS as usize),
                empty22: MappedU64::anonymous(EMPTY22_V4_WORDS as usize),
            }
        }

        fn bits(&self) -> EmptyBits<'_> {
            EmptyBits {
                by24: &self.empty,
                by16: Some(&self.empty16),
                by22: Some(&self.empty22),
            }
        }

        /// What the program decides for `addr`, read the way it reads
        /// (the /16 bit, the /22 bit), then the /24 bit before the slot,
        /// which is stricter than the program's order.
        fn decide(&self, addr: u32) -> u32 {
            let (word, bit) = empty16_v4_bit(addr);
            if (self.empty16.load(word as usize) >> bit) & 1 != 0 {
                return 0;
            }
            let (word, bit) = empty22_v4_bit(addr);
            if (self.empty22.load(word as usize) >> bit) & 1 != 0 {
                return 0;
            }
            let (word, bit) = empty_v4_bit(addr);
            if (self.empty.load(word as usize) >> bit) & 1 != 0 {
                return 0;
            }
            let slot = self.slots.load((addr >> 16) as usize);
            decide_slot(
                slot,
                (addr & 0xffff) as u64,
                || Ok::<_, ()>(false),
                |i| Ok(Record::from_words(&[self.ranges.load(i)])),
            )
            .unwrap()
        }
    }

    /// Distinct entries in 10.0.0.0/15, ids from `first_id`.
    fn entries(raw: &[(bool, u16, u8)], first_id: u32) -> Vec<Entry> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for &(hi, lo, len) in raw {
            let mask = u32::MAX << (32 - len as u32);
            let addr = (0x0a00_0000 | ((hi as u32) << 16) | lo as u32) & mask;
            if seen.insert((addr, len)) {
                out.push(Entry {
                    addr,
                    len,
                    id: first_id + out.len() as u32,
                });
            }
        }
        out
    }

    fn raw() -> impl Strategy<Value = Vec<(bool, u16, u8)>> {
        prop::collection::vec((any::<bool>(), any::<u16>(), 15u8..=32), 0..24)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// A writer that dies right after its last slot switch, before it
        /// sets the new empty bits, leaves every switched /16 deciding by
        /// the new table: the bits it needed clear were cleared first.
        #[test]
        fn a_switched_slot_decides_by_the_new_table_before_the_bits_are_set(
            old in raw(),
            new in raw(),
            allow in raw(),
        ) {
            let allow: Vec<Entry> = entries(&allow[..allow.len() / 3], 0)
                .into_iter()
                .map(|e| Entry { id: 0, ..e })
                .collect();
            let (old, new) = (compile(&entries(&old, 1), &allow), compile(&entries(&new, 100), &allow));
            let kernel = Kernel::new(4096);
            write_slots(&kernel.slots, &kernel.ranges, Some(kernel.bits()), &old, None).unwrap();
            for addr in 0x0a00_0000u32..0x0a02_0000 {
                prop_assert_eq!(kernel.decide(addr), old.lookup(addr as u64), "{:#x}", addr);
            }
            let empty = (kernel.bits(), EmptyWords::of(&new, None));
            switch_slots(&kernel.slots, &kernel.ranges, Some(&empty), &new, None).unwrap();
            for addr in 0x0a00_0000u32..0x0a02_0000 {
                prop_assert_eq!(kernel.decide(addr), new.lookup(addr as u64), "{:#x}", addr);
            }
            // And the finished write marks the new empty /24s and /16s.
            set_empty(empty.0, &empty.1);
            for i in 0..TABLE_V4_SLOTS as usize {
                let words = empty_words(&new.slot(i));
                for (k, w) in words.iter().enumerate() {
                    prop_assert_eq!(kernel.empty.load(i * 4 + k), *w, "slot {}", i);
                }
                let bit = (kernel.empty16.load(i / 64) >> (i % 64)) & 1 != 0;
                prop_assert_eq!(bit, words.iter().all(|w| *w == u64::MAX), "/16 slot {}", i);
                for j in 0..64 {
                    let bit = (kernel.empty22.load(i) >> j) & 1 != 0;
                    let all = (4 * j..4 * j + 4).all(|b| (words[b / 64] >> (b % 64)) & 1 != 0);
                    prop_assert_eq!(bit, all, "/22 {} of slot {}", j, i);
                }
            }
            for addr in 0x0a00_0000u32..0x0a02_0000 {
                prop_assert_eq!(kernel.decide(addr), new.lookup(addr as u64), "{:#x}", addr);
            }
        }
    }

    #[test]
    fn best_fit_takes_the_smallest_run_that_fits() {
        let mut f = Free::around(vec![(2, 3), (10, 5)], 20);
        // Runs: 0..2, 5..10, 15..20.
        assert_eq!(f.take(2), Some(0));
        assert_eq!(f.take(4), Some(5));
        assert_eq!(f.take(5), Some(15));
        assert_eq!(f.take(2), None);
        assert_eq!(f.take(1), Some(9));
    }
}
