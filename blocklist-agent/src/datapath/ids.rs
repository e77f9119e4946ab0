//! Entry ids: which `ENTRY_COUNTERS` slot each block entry counts in.
//!
//! An id is given once, when the entry is first installed, and kept in its
//! trie value for the entry's whole life, so every sync that keeps the
//! entry keeps its counters. The free ids are whatever no installed entry
//! holds: the allocator is built from the installed entries whenever the
//! [`Mirror`](super::mirror::Mirror) is (re)read, so it needs no state of
//! its own on disk and is right after a crash or a write by another
//! process. An id freed by a removal is not given again until the table
//! no longer names it (the next commit).

/// The ids in use.
pub struct Ids {
    /// `ENTRY_COUNTERS` slots: ids are below this.
    slots: u32,
    used: Vec<u64>,
    /// Lowest id that may be free.
    next: u32,
    /// Freed since the last commit; still taken until then.
    pending: Vec<u32>,
}

impl Ids {
    /// From the ids of the installed block entries, for an
    /// `ENTRY_COUNTERS` of `slots` slots.
    pub fn new(slots: u32, installed: impl IntoIterator<Item = u32>) -> Self {
        let mut ids = Self {
            slots,
            used: vec![0; slots.div_ceil(64) as usize],
            next: 1,
            pending: Vec::new(),
        };
        // Id 0 means "no counters".
        ids.used[0] |= 1;
        for id in installed {
            if id != 0 && id < slots {
                ids.used[(id / 64) as usize] |= 1 << (id % 64);
            }
        }
        ids
    }

    /// The lowest free id, now taken, or `None` when all are taken.
    pub fn give(&mut self) -> Option<u32> {
        let mut word = (self.next / 64) as usize;
        while word < self.used.len() && self.used[word] == u64::MAX {
            word += 1;
        }
        if word == self.used.len() {
            return None;
        }
        let bit = (!self.used[word]).trailing_zeros();
        let id = word as u32 * 64 + bit;
        if id >= self.slots {
            return None;
        }
        self.used[word] |= 1 << bit;
        self.next = id;
        Some(id)
    }

    /// `id` is no longer held by an entry; it is given again after
    /// [`Ids::release_pending`].
    pub fn release_later(&mut self, id: u32) {
        if id != 0 && id < self.slots {
            self.pending.push(id);
        }
    }

    /// Frees the ids released since the last call.
    pub fn release_pending(&mut self) {
        for id in self.pending.drain(..) {
            self.used[(id / 64) as usize] &= !(1 << (id % 64));
            self.next = self.next.min(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_the_lowest_free_and_never_zero() {
        let mut ids = Ids::new(64, [1, 3]);
        assert_eq!(ids.give(), Some(2));
        assert_eq!(ids.give(), Some(4));
    }

    #[test]
    fn a_released_id_is_given_again_only_after_release_pending() {
        let mut ids = Ids::new(64, [1, 2, 3]);
        ids.release_later(2);
        assert_eq!(ids.give(), Some(4));
        ids.release_pending();
        assert_eq!(ids.give(), Some(2));
        assert_eq!(ids.give(), Some(5));
    }

    #[test]
    fn ids_run_out_cleanly() {
        for slots in [200, blocklist_ebpf::ENTRIES_MAX] {
            let mut ids = Ids::new(slots, std::iter::empty());
            for i in 1..slots {
                assert_eq!(ids.give(), Some(i));
            }
            assert_eq!(ids.give(), None);
        }
    }
}
