//! Entry ids: which `ENTRY_COUNTERS` slot each block entry counts in.
//!
//! An id is given once, when the entry is first installed, and kept in its
//! trie value for the entry's whole life, so every sync that keeps the
//! entry keeps its counters. The free ids are whatever no installed entry
//! holds: the allocator is rebuilt from the installed entries for each
//! write (or batch of writes), so it needs no state of its own and is
//! right after a crash or a write by another process. Within one batch an
//! id freed by a removal is not given again: the compiled table may still
//! name it until the batch ends.

use std::collections::HashMap;

use blocklist_ebpf::ENTRIES_MAX;

use crate::prefix::Prefix;

/// The ids in use and the entries holding them.
pub struct Ids {
    used: Vec<u64>,
    /// Lowest id that may be free.
    next: u32,
    by_prefix: HashMap<Prefix, u32>,
}

impl Ids {
    /// From the installed block entries and their ids.
    pub fn new(installed: impl IntoIterator<Item = (Prefix, u32)>) -> Self {
        let mut ids = Self {
            used: vec![0; ENTRIES_MAX.div_ceil(64) as usize],
            next: 1,
            by_prefix: HashMap::new(),
        };
        // Id 0 means "no counters".
        ids.used[0] |= 1;
        for (p, id) in installed {
            if id != 0 && id < ENTRIES_MAX {
                ids.used[(id / 64) as usize] |= 1 << (id % 64);
            }
            ids.by_prefix.insert(p, id);
        }
        ids
    }

    /// The id of an installed entry.
    pub fn of(&self, p: &Prefix) -> Option<u32> {
        self.by_prefix.get(p).copied()
    }

    /// Gives `p` the lowest free id, or `None` when all are taken.
    pub fn give(&mut self, p: Prefix) -> Option<u32> {
        let mut word = (self.next / 64) as usize;
        while word < self.used.len() && self.used[word] == u64::MAX {
            word += 1;
        }
        if word == self.used.len() {
            return None;
        }
        let bit = (!self.used[word]).trailing_zeros();
        let id = word as u32 * 64 + bit;
        if id >= ENTRIES_MAX {
            return None;
        }
        self.used[word] |= 1 << bit;
        self.next = id;
        self.by_prefix.insert(p, id);
        Some(id)
    }

    /// Entries known (installed, or given an id since).
    pub fn len(&self) -> usize {
        self.by_prefix.len()
    }

    /// True when no entry is known.
    pub fn is_empty(&self) -> bool {
        self.by_prefix.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    #[test]
    fn ids_are_the_lowest_free_and_never_zero() {
        let mut ids = Ids::new([(p("192.0.2.0/24"), 1), (p("192.0.2.9/32"), 3)]);
        assert_eq!(ids.give(p("198.51.100.1/32")), Some(2));
        assert_eq!(ids.give(p("198.51.100.2/32")), Some(4));
        assert_eq!(ids.of(&p("192.0.2.9/32")), Some(3));
        assert_eq!(ids.of(&p("198.51.100.2/32")), Some(4));
        assert_eq!(ids.len(), 4);
    }

    #[test]
    fn ids_run_out_cleanly() {
        let mut ids = Ids::new(std::iter::empty());
        for i in 1..ENTRIES_MAX {
            let a = std::net::Ipv4Addr::from(i);
            assert_eq!(ids.give(Prefix::from_v4(a.octets(), 32).unwrap()), Some(i));
        }
        assert_eq!(ids.give(p("192.0.2.1/32")), None);
    }
}
