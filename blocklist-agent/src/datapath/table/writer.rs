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

/// [`write()`] for the slots `only` marks (all when `None`): `table` need
/// only be right for those (a partial compile). With `empty` (IPv4's
/// `EMPTY_V4`), also keeps its bits in line: a /24 that turns non-empty
/// has its bit cleared before its slot switches, one that turns empty has
/// it set only after, so a packet that reads the bit and then the slot
/// never skips an entry that either table holds.
pub fn write_slots(
    slots: &MappedU64,
    ranges: &MappedU64,
    empty: Option<&MappedU64>,
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
            if let Some(empty) = empty {
                write_empty(empty, table, only);
            }
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
        if let Some(empty) = empty {
            for (i, _) in &switches {
                let want = empty_words(&table.slot(*i));
                for (k, w) in want.iter().enumerate() {
                    let at = i * 4 + k;
                    empty.store(at, empty.load(at) & w);
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

/// Sets `EMPTY_V4` to `table`'s words for the slots `only` marks (all
/// when `None`), once every slot holds its content: after this write
/// switched the slots, or for slots already in place (maps pinned before
/// `EMPTY_V4` existed start all clear, which only means "search").
fn write_empty(empty: &MappedU64, table: &Compiled, only: Option<&[bool]>) {
    if empty.len() < TABLE_V4_SLOTS as usize * 4 {
        return;
    }
    fence(Ordering::SeqCst);
    for i in (0..TABLE_V4_SLOTS as usize).filter(|&i| only.is_none_or(|o| o[i])) {
        for (k, w) in empty_words(&table.slot(i)).iter().enumerate() {
            if empty.load(i * 4 + k) != *w {
                empty.store(i * 4 + k, *w);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
