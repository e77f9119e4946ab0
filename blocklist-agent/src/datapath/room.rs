//! How full the entry stores are. Every block entry takes one place in
//! the trie or the exact map of its family (the maps' routing decides
//! which) and one entry id (an `ENTRY_COUNTERS` slot, shared by both
//! families); every allow entry takes one place in its family's allow
//! trie. A writer counts what a change needs in each of them before it
//! writes anything, so that a change that cannot fit is refused whole
//! instead of failing half-way. The [`Mirror`](super::mirror::Mirror)
//! keeps the installed entries' `Room` up to date with each write, so the
//! count costs what the change adds, not a pass over a million entries.
//!
//! ```
//! use blocklist_agent::{datapath::room::Room, prefix::Family};
//!
//! let mut used = Room::default();
//! used.add(&"192.0.2.7/32".parse().unwrap());
//! used.add(&"198.51.100.0/24".parse().unwrap());
//! used.add_allow(&"198.51.100.128/25".parse().unwrap());
//! let capacity = Room::from_counts([4, 4, 1, 4], 8, [1, 1]);
//! assert!(used.over(&capacity).is_none());
//! used.add(&"192.0.2.8/32".parse().unwrap());
//! let over = used.over(&capacity).unwrap();
//! assert_eq!((over.map, over.needed, over.capacity), ("EXACT_V4", 2, 1));
//! assert_eq!(used.blocks(Family::V4), 3);
//! ```

use blocklist_ebpf::map_names;

use super::maps::{Store, TrieKind};
use crate::prefix::{Family, Prefix};

/// The maps an entry takes a place in, in [`Room`]'s order.
const STORES: [&str; 7] = [
    map_names::BLOCK_V4,
    map_names::BLOCK_V6,
    map_names::EXACT_V4,
    map_names::EXACT_V6,
    map_names::ENTRY_COUNTERS,
    map_names::ALLOW_V4,
    map_names::ALLOW_V6,
];
/// Where the entry ids are counted.
const IDS: usize = 4;
/// Where the allow entries of IPv4 are counted; IPv6 follows.
const ALLOW: usize = 5;

/// Entries per store (or what each store holds, as a capacity).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Room([u64; 7]);

/// The first store a [`Room`] overfills.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Overfull {
    /// The map's name.
    pub map: &'static str,
    /// Entries it would have to hold.
    pub needed: u64,
    /// Entries it can hold.
    pub capacity: u64,
    /// Whether it holds allow entries (which no early delete makes room
    /// for).
    pub allow: bool,
}

impl Room {
    /// From the entries of `BLOCK_V4`, `BLOCK_V6`, `EXACT_V4` and
    /// `EXACT_V6`, in that order, the entry ids, and the entries of
    /// `ALLOW_V4` and `ALLOW_V6`.
    pub fn from_counts(block: [u64; 4], ids: u64, allow: [u64; 2]) -> Self {
        Self([
            block[0], block[1], block[2], block[3], ids, allow[0], allow[1],
        ])
    }

    /// The store of a block entry: its family's exact map for a single
    /// address, its family's trie otherwise.
    fn store(p: &Prefix) -> usize {
        match Store::of(TrieKind::Block, *p) {
            Store::Trie(_, Family::V4) => 0,
            Store::Trie(_, Family::V6) => 1,
            Store::Exact(f) => Self::exact_index(f),
        }
    }

    /// Counts one more entry `p`.
    pub fn add(&mut self, p: &Prefix) {
        self.0[Self::store(p)] += 1;
        self.0[IDS] += 1;
    }

    /// Counts one entry `p` less.
    pub fn remove(&mut self, p: &Prefix) {
        let s = Self::store(p);
        self.0[s] = self.0[s].saturating_sub(1);
        self.0[IDS] = self.0[IDS].saturating_sub(1);
    }

    /// Counts one more allow entry `p`.
    pub fn add_allow(&mut self, p: &Prefix) {
        self.0[Self::allow_store(p)] += 1;
    }

    /// Counts one allow entry `p` less.
    pub fn remove_allow(&mut self, p: &Prefix) {
        let s = Self::allow_store(p);
        self.0[s] = self.0[s].saturating_sub(1);
    }

    fn allow_store(p: &Prefix) -> usize {
        Self::allow_index(p.family())
    }

    fn allow_index(family: Family) -> usize {
        match family {
            Family::V4 => ALLOW,
            Family::V6 => ALLOW + 1,
        }
    }

    /// The block entries `blocks` and the allow entries `allows`, counted.
    pub fn of<'a>(
        blocks: impl IntoIterator<Item = &'a Prefix>,
        allows: impl IntoIterator<Item = &'a Prefix>,
    ) -> Self {
        let mut r = Self::default();
        for p in blocks {
            r.add(p);
        }
        for p in allows {
            r.add_allow(p);
        }
        r
    }

    /// Block entries of one family, trie and exact map.
    pub fn blocks(&self, family: Family) -> u64 {
        match family {
            Family::V4 => self.0[0] + self.0[2],
            Family::V6 => self.0[1] + self.0[3],
        }
    }

    /// Entries of one family's exact map (its single addresses).
    pub fn exact(&self, family: Family) -> u64 {
        self.0[Self::exact_index(family)]
    }

    /// Sets the count (or capacity) of one family's exact map.
    pub fn set_exact(&mut self, family: Family, n: u64) {
        self.0[Self::exact_index(family)] = n;
    }

    fn exact_index(family: Family) -> usize {
        match family {
            Family::V4 => 2,
            Family::V6 => 3,
        }
    }

    /// Entry ids.
    pub fn ids(&self) -> u64 {
        self.0[IDS]
    }

    /// Allow entries of one family.
    pub fn allows(&self, family: Family) -> u64 {
        self.0[Self::allow_index(family)]
    }

    /// The first store holding more than `capacity` allows, if any.
    pub fn over(&self, capacity: &Room) -> Option<Overfull> {
        (0..STORES.len())
            .find(|&i| self.0[i] > capacity.0[i])
            .map(|i| Overfull {
                map: STORES[i],
                needed: self.0[i],
                capacity: capacity.0[i],
                allow: i >= ALLOW,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_entry_takes_one_place_in_its_store_and_one_id() {
        let p = |s: &str| s.parse::<Prefix>().unwrap();
        let blocks = [
            "192.0.2.0/24",
            "192.0.2.1/32",
            "2001:db8::/48",
            "2001:db8::1/128",
            "2001:db8::2/128",
        ]
        .map(p);
        let allows = ["192.0.2.1/32", "2001:db8::/64"].map(p);
        let r = Room::of(blocks.iter(), allows.iter());
        assert_eq!(r, Room::from_counts([1, 1, 1, 2], 5, [1, 1]));
        assert_eq!((r.blocks(Family::V4), r.blocks(Family::V6)), (2, 3));
        assert_eq!(
            (r.exact(Family::V4), r.exact(Family::V6), r.ids()),
            (1, 2, 5)
        );
        let mut less = r;
        less.remove(&p("2001:db8::1/128"));
        less.remove_allow(&p("192.0.2.1/32"));
        assert_eq!(less, Room::from_counts([1, 1, 1, 1], 4, [0, 1]));
        assert_eq!((less.allows(Family::V4), less.allows(Family::V6)), (0, 1));
    }

    #[test]
    fn the_ids_are_a_store_too() {
        let used = Room::from_counts([2, 0, 2, 0], 4, [0, 0]);
        let over = used
            .over(&Room::from_counts([9, 9, 9, 9], 3, [9, 9]))
            .unwrap();
        assert_eq!(
            (over.map, over.needed, over.capacity),
            ("ENTRY_COUNTERS", 4, 3)
        );
        assert!(!over.allow);
    }

    #[test]
    fn the_allow_tries_are_stores_too() {
        let used = Room::from_counts([0, 0, 0, 0], 0, [0, 3]);
        let over = used
            .over(&Room::from_counts([9, 9, 9, 9], 9, [9, 2]))
            .unwrap();
        assert_eq!((over.map, over.needed), ("ALLOW_V6", 3));
        assert!(over.allow);
    }
}
