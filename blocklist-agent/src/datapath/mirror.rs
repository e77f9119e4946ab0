//! What the tries hold, kept in this process between writes.
//!
//! Every write needs the installed entries: the sync's diff, the id
//! allocator, the table compiler. Reading them back from the kernel costs
//! a walk of every trie and exact map (about 0.6 s at a million entries),
//! so [`Maps`](super::maps::Maps) reads them once into a `Mirror` and then
//! keeps it in step with its own writes. The mirror is trusted only while
//! the kernel says nobody else wrote: every writer bumps
//! `TABLE_META.generation` when it commits, and sets `TABLE_META.dirty`
//! while it writes, so a generation other than the one this mirror saw
//! last, or a dirty flag this process did not set, means another process
//! (or a killed writer) changed the tries, and the mirror is read again.

use std::sync::{Arc, Weak};

use super::{ids::Ids, room::Room};
use crate::prefix::Prefix;

/// One installed block entry as the mirror keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Installed {
    /// `ENTRY_FLAG_*` bits.
    pub flags: u32,
    /// Its `ENTRY_COUNTERS` slot.
    pub id: u32,
}

/// The installed entries of both families, sorted, and the ids they hold.
pub struct Mirror {
    /// `TABLE_META.generation` the tries had when this was last exact.
    pub generation: u64,
    /// Block entries sorted by prefix: a sorted `Vec` takes a third of a
    /// hash map's memory at a million entries. Behind an `Arc` so that a
    /// reader in another thread can hold a [`BlockSnapshot`] without a
    /// copy; writes replace or mutate it in place (a snapshot holds only a
    /// weak reference, so nothing is cloned unless a reader is mid-read).
    block: Arc<Vec<(Prefix, Installed)>>,
    /// Allow entries, sorted.
    allow: Vec<Prefix>,
    /// Which ids are taken.
    ids: Ids,
    /// What `block` and `allow` take in each map, kept with every write.
    room: Room,
    /// Every prefix written since the table last matched these entries,
    /// when that is known: `None` after a fresh read of a dirty table (it
    /// may then differ anywhere) or past [`MAX_CHANGE_LOG`] writes.
    changed: Option<Vec<Prefix>>,
}

/// Past this many writes between two commits the table is compiled whole
/// anyway: a partial compile would touch most slots.
pub const MAX_CHANGE_LOG: usize = 50_000;

impl Mirror {
    /// From the entries a walk of the maps read, for an `ENTRY_COUNTERS`
    /// of `id_slots` slots.
    pub fn new(
        generation: u64,
        mut block: Vec<(Prefix, Installed)>,
        mut allow: Vec<Prefix>,
        id_slots: u32,
    ) -> Self {
        block.sort_unstable_by_key(|(p, _)| *p);
        block.dedup_by_key(|(p, _)| *p);
        allow.sort_unstable();
        allow.dedup();
        let ids = Ids::new(id_slots, block.iter().map(|(_, v)| v.id));
        let room = Room::of(block.iter().map(|(p, _)| p), &allow);
        Self {
            generation,
            block: Arc::new(block),
            allow,
            ids,
            room,
            changed: None,
        }
    }

    fn log(&mut self, written: impl IntoIterator<Item = Prefix>) {
        if let Some(c) = &mut self.changed {
            c.extend(written);
            if c.len() > MAX_CHANGE_LOG {
                self.changed = None;
            }
        }
    }

    /// The prefixes written since the last commit, when all are known
    /// (see `changed`); the log restarts empty.
    pub fn take_changed(&mut self) -> Option<Vec<Prefix>> {
        self.changed.as_mut().map(std::mem::take)
    }

    /// The installed block entry for exactly `p`.
    pub fn block(&self, p: &Prefix) -> Option<Installed> {
        self.block
            .binary_search_by_key(p, |(q, _)| *q)
            .ok()
            .map(|i| self.block[i].1)
    }

    /// Every installed block entry, sorted.
    pub fn blocks(&self) -> &[(Prefix, Installed)] {
        &self.block
    }

    /// Every installed allow entry, sorted.
    pub fn allows(&self) -> &[Prefix] {
        &self.allow
    }

    /// What the installed entries take in each map.
    pub fn room(&self) -> Room {
        self.room
    }

    /// Records block entries written (new or re-flagged), in one merge.
    pub fn put_blocks(&mut self, mut added: Vec<(Prefix, Installed)>) {
        if added.is_empty() {
            return;
        }
        // Stable, so that the last write of a prefix wins. A sync's writes
        // come sorted; a sort would still take a scratch buffer.
        if !added.is_sorted_by_key(|(p, _)| *p) {
            added.sort_by_key(|(p, _)| *p);
        }
        added.reverse();
        added.dedup_by_key(|(p, _)| *p);
        added.reverse();
        self.log(added.iter().map(|(p, _)| *p));
        if self.block.is_empty() {
            // The first load of a million entries: no second copy.
            for (p, _) in &added {
                self.room.add(p);
            }
            self.block = Arc::new(added);
            return;
        }
        // In place: re-flagged entries are overwritten where they are, new
        // ones merged in from the back, so a 1% change moves the entries
        // once and allocates nothing new (a merge into a fresh Vec copied
        // all of them).
        let block = Arc::make_mut(&mut self.block);
        let mut fresh = Vec::new();
        for (p, v) in added {
            match block.binary_search_by_key(&p, |(q, _)| *q) {
                Ok(i) => block[i].1 = v,
                Err(_) => {
                    self.room.add(&p);
                    fresh.push((p, v));
                }
            }
        }
        merge_into(block, fresh, |(p, _)| *p);
    }

    /// Records block entries removed; their ids become free once the table
    /// no longer names them ([`Mirror::committed`]).
    pub fn remove_blocks(&mut self, removed: &[Prefix]) {
        self.log(removed.iter().copied());
        let mut gone = removed.to_vec();
        gone.sort_unstable();
        gone.dedup();
        let (ids, room) = (&mut self.ids, &mut self.room);
        // Both sorted: one pass, not a search per entry.
        let mut next = gone.iter().peekable();
        Arc::make_mut(&mut self.block).retain(|(p, v)| {
            while next.next_if(|g| *g < p).is_some() {}
            if next.next_if(|g| *g == p).is_some() {
                ids.release_later(v.id);
                room.remove(p);
                false
            } else {
                true
            }
        });
    }

    /// Records allow entries written.
    pub fn put_allows(&mut self, added: &[Prefix]) {
        self.log(added.iter().copied());
        let mut added = added.to_vec();
        added.sort_unstable();
        added.dedup();
        for p in &added {
            if self.allow.binary_search(p).is_err() {
                self.room.add_allow(p);
            }
        }
        self.allow = merge(std::mem::take(&mut self.allow), added, |p| *p);
    }

    /// Records allow entries removed.
    pub fn remove_allows(&mut self, removed: &[Prefix]) {
        self.log(removed.iter().copied());
        let mut gone = removed.to_vec();
        gone.sort_unstable();
        let room = &mut self.room;
        self.allow.retain(|p| {
            let kept = gone.binary_search(p).is_err();
            if !kept {
                room.remove_allow(p);
            }
            kept
        });
    }

    /// The table now matches these entries, as of `generation`: ids freed
    /// since the last commit may be given again.
    pub fn committed(&mut self, generation: u64) {
        self.generation = generation;
        self.ids.release_pending();
        self.changed = Some(Vec::new());
    }

    /// The block entries, for a reader in another thread. The reader
    /// checks the maps' generation: writes since the last commit leave
    /// the kernel dirty or at another generation.
    pub fn snapshot(&self) -> BlockSnapshot {
        BlockSnapshot {
            generation: self.generation,
            blocks: Arc::downgrade(&self.block),
        }
    }

    /// Gives an id to a new block entry, or `None` when all
    /// `ENTRIES_MAX - 1` are taken.
    pub fn give_id(&mut self) -> Option<u32> {
        self.ids.give()
    }
}

/// The installed block entries of one generation of the maps, as a
/// writer in this process last committed them: what a `/metrics` scrape
/// names the hit entries by, instead of walking the tries. Valid only
/// while the maps still have `generation` and are not mid-write, and only
/// while the writer has not changed them since (the weak reference then
/// no longer upgrades).
#[derive(Clone, Debug, Default)]
pub struct BlockSnapshot {
    /// `TABLE_META.generation` the entries belong to.
    pub generation: u64,
    /// The entries, sorted by prefix.
    pub blocks: Weak<Vec<(Prefix, Installed)>>,
}

/// Merges `fresh` (sorted, distinct, none already in `block`) into the
/// sorted `block` in place, from the back.
fn merge_into<T: Copy, K: Ord>(block: &mut Vec<T>, fresh: Vec<T>, key: impl Fn(&T) -> K) {
    if fresh.is_empty() {
        return;
    }
    let (n, k) = (block.len(), fresh.len());
    let filler = fresh[0];
    block.resize(n + k, filler);
    let (mut i, mut j, mut out) = (n, k, n + k);
    while j > 0 {
        out -= 1;
        if i > 0 && key(&block[i - 1]) > key(&fresh[j - 1]) {
            block[out] = block[i - 1];
            i -= 1;
        } else {
            block[out] = fresh[j - 1];
            j -= 1;
        }
    }
}

/// Merges two sorted, deduplicated lists; on equal keys `new` wins.
fn merge<T: Copy, K: Ord>(old: Vec<T>, new: Vec<T>, key: impl Fn(&T) -> K) -> Vec<T> {
    // The first load of a million entries: no second copy.
    if old.is_empty() {
        return new;
    }
    let mut out = Vec::with_capacity(old.len() + new.len());
    let (mut a, mut b) = (old.into_iter().peekable(), new.into_iter().peekable());
    loop {
        match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => match key(x).cmp(&key(y)) {
                std::cmp::Ordering::Less => out.push(a.next().expect("peeked")),
                std::cmp::Ordering::Greater => out.push(b.next().expect("peeked")),
                std::cmp::Ordering::Equal => {
                    a.next();
                    out.push(b.next().expect("peeked"));
                }
            },
            (Some(_), None) => out.push(a.next().expect("peeked")),
            (None, Some(_)) => out.push(b.next().expect("peeked")),
            (None, None) => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    fn v(flags: u32, id: u32) -> Installed {
        Installed { flags, id }
    }

    #[test]
    fn a_rewrite_keeps_the_newest_value_and_a_removal_frees_its_id_after_the_commit() {
        let mut m = Mirror::new(7, vec![(p("192.0.2.0/24"), v(0, 1))], vec![], 64);
        let id = m.give_id().unwrap();
        assert_eq!(id, 2);
        m.put_blocks(vec![
            (p("198.51.100.1/32"), v(0, id)),
            (p("192.0.2.0/24"), v(1, 1)),
        ]);
        assert_eq!(m.block(&p("192.0.2.0/24")), Some(v(1, 1)));
        m.remove_blocks(&[p("192.0.2.0/24")]);
        assert_eq!(m.block(&p("192.0.2.0/24")), None);
        // Not yet: the table may still name id 1 until the commit.
        assert_eq!(m.give_id(), Some(3));
        m.committed(8);
        assert_eq!(m.generation, 8);
        assert_eq!(m.give_id(), Some(1));
    }

    #[test]
    fn a_snapshot_never_sees_a_later_write() {
        let mut m = Mirror::new(3, vec![(p("192.0.2.0/24"), v(0, 1))], vec![], 64);
        let snap = m.snapshot();
        assert_eq!(snap.generation, 3);
        let held = snap.blocks.upgrade().unwrap();
        m.put_blocks(vec![(p("198.51.100.0/24"), v(0, 2))]);
        m.remove_blocks(&[p("192.0.2.0/24")]);
        assert_eq!(held.as_slice(), &[(p("192.0.2.0/24"), v(0, 1))]);
        drop(held);
        // Written since: the old snapshot is gone, not rewritten under it.
        assert!(snap.blocks.upgrade().is_none());
        let fresh = m.snapshot().blocks.upgrade().unwrap();
        assert_eq!(fresh.as_slice(), &[(p("198.51.100.0/24"), v(0, 2))]);
    }

    proptest! {
        /// The mirror after any sequence of writes equals a map that
        /// replays them, and its room counts what it holds.
        #[test]
        fn the_mirror_follows_every_write(
            ops in proptest::collection::vec(
                (0u8..4, proptest::collection::vec((0u32..64, 0u32..3, 0u8..4), 0..20)),
                0..20,
            )
        ) {
            let mut m = Mirror::new(0, vec![], vec![], blocklist_ebpf::ENTRIES_MAX);
            let mut reference = BTreeMap::new();
            let mut allowed = std::collections::BTreeSet::new();
            for (op, entries) in ops {
                let entries: Vec<(Prefix, Installed)> = entries
                    .into_iter()
                    .map(|(a, f, kind)| {
                        // Both families, single addresses and wider: every
                        // store of the room.
                        let q = match kind {
                            0 => Prefix::from_v4((0xc000_0200 | a).to_be_bytes(), 32),
                            1 => Prefix::from_v4((0xc000_0000 | a << 8).to_be_bytes(), 24),
                            2 => Prefix::from_v6((0x2001_0db8u128 << 96 | u128::from(a)).to_be_bytes(), 128),
                            _ => Prefix::from_v6((0x2001_0db8u128 << 96 | u128::from(a) << 2).to_be_bytes(), 126),
                        };
                        (q.unwrap(), v(f, a + 1))
                    })
                    .collect();
                let prefixes: Vec<Prefix> = entries.iter().map(|(q, _)| *q).collect();
                match op {
                    0 => {
                        for (q, i) in &entries {
                            reference.insert(*q, *i);
                        }
                        m.put_blocks(entries);
                    }
                    1 => {
                        for q in &prefixes {
                            reference.remove(q);
                        }
                        m.remove_blocks(&prefixes);
                    }
                    2 => {
                        allowed.extend(prefixes.iter().copied());
                        m.put_allows(&prefixes);
                    }
                    _ => {
                        for q in &prefixes {
                            allowed.remove(q);
                        }
                        m.remove_allows(&prefixes);
                    }
                }
                let allows: Vec<Prefix> = allowed.iter().copied().collect();
                prop_assert_eq!(m.allows(), allows.as_slice());
                prop_assert_eq!(m.room(), Room::of(m.blocks().iter().map(|(q, _)| q), &allows));
                let got: Vec<(Prefix, Installed)> = m.blocks().to_vec();
                let want: Vec<(Prefix, Installed)> = reference.iter().map(|(q, i)| (*q, *i)).collect();
                prop_assert_eq!(got, want);
            }
        }
    }
}
