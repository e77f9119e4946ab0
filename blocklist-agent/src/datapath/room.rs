//! How full the block stores are. Every block entry takes one place in
//! the trie or the exact map of its family (the maps' routing decides
//! which) and one entry id (an `ENTRY_COUNTERS` slot, shared by both
//! families). A writer counts what a change needs in each of them before
//! it writes anything, so that a change that cannot fit is refused whole
//! instead of failing half-way.
//!
//! ```
//! use blocklist_agent::datapath::room::Room;
//!
//! let mut used = Room::default();
//! used.add(&"192.0.2.7/32".parse().unwrap());
//! used.add(&"198.51.100.0/24".parse().unwrap());
//! let capacity = Room::from_counts([4, 4, 1, 4], 8);
//! assert!(used.over(&capacity).is_none());
//! used.add(&"192.0.2.8/32".parse().unwrap());
//! let over = used.over(&capacity).unwrap();
//! assert_eq!((over.map, over.needed, over.capacity), ("EXACT_V4", 2, 1));
//! ```

use blocklist_ebpf::map_names;

use crate::prefix::Prefix;

/// The maps a block entry takes a place in, in [`Room`]'s order.
const STORES: [&str; 5] = [
    map_names::BLOCK_V4,
    map_names::BLOCK_V6,
    map_names::EXACT_V4,
    map_names::EXACT_V6,
    map_names::ENTRY_COUNTERS,
];
/// Where the entry ids are counted.
const IDS: usize = 4;

/// Block entries per store (or what each store holds, as a capacity).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Room([u64; 5]);

/// The first store a [`Room`] overfills.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Overfull {
    /// The map's name.
    pub map: &'static str,
    /// Entries it would have to hold.
    pub needed: u64,
    /// Entries it can hold.
    pub capacity: u64,
}

impl Room {
    /// From the entries of `BLOCK_V4`, `BLOCK_V6`, `EXACT_V4` and
    /// `EXACT_V6`, in that order, and the entry ids.
    pub fn from_counts(maps: [u64; 4], ids: u64) -> Self {
        Self([maps[0], maps[1], maps[2], maps[3], ids])
    }

    /// The store of a block entry: its family's exact map for a single
    /// address, its family's trie otherwise.
    fn store(p: &Prefix) -> usize {
        let exact = super::maps::is_exact(super::maps::TrieKind::Block, *p);
        match (p.is_v4(), exact) {
            (true, false) => 0,
            (false, false) => 1,
            (true, true) => 2,
            (false, true) => 3,
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

    /// The entries `prefixes`, counted.
    pub fn of<'a>(prefixes: impl IntoIterator<Item = &'a Prefix>) -> Self {
        let mut r = Self::default();
        for p in prefixes {
            r.add(p);
        }
        r
    }

    /// The first store holding more than `capacity` allows, if any.
    pub fn over(&self, capacity: &Room) -> Option<Overfull> {
        (0..STORES.len())
            .find(|&i| self.0[i] > capacity.0[i])
            .map(|i| Overfull {
                map: STORES[i],
                needed: self.0[i],
                capacity: capacity.0[i],
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_entry_takes_one_place_in_its_store_and_one_id() {
        let r = Room::of(
            [
                "192.0.2.0/24",
                "192.0.2.1/32",
                "2001:db8::/48",
                "2001:db8::1/128",
                "2001:db8::2/128",
            ]
            .map(|s| s.parse::<Prefix>().unwrap())
            .iter(),
        );
        assert_eq!(r, Room::from_counts([1, 1, 1, 2], 5));
        let mut less = r;
        less.remove(&"2001:db8::1/128".parse().unwrap());
        assert_eq!(less, Room::from_counts([1, 1, 1, 1], 4));
    }

    #[test]
    fn the_ids_are_a_store_too() {
        let used = Room::from_counts([2, 0, 2, 0], 4);
        let over = used.over(&Room::from_counts([9, 9, 9, 9], 3)).unwrap();
        assert_eq!(
            (over.map, over.needed, over.capacity),
            ("ENTRY_COUNTERS", 4, 3)
        );
    }
}
