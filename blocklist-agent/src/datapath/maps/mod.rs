//! Typed access to the pinned maps: the block and allow tries, the live
//! configuration and the counters.
//!
//! A block entry for a single address (/32, /128) is stored in the
//! `EXACT_*` hash maps rather than the block trie (a hash probe is cheaper
//! than a trie walk in the datapath). Callers never see the split: every
//! method here takes a [`TrieKind`] and a prefix, and [`Store::of`]
//! decides where it lives.
//!
//! The code is split by job: `open` (opening the pins, error helpers),
//! `route` (where an entry lives), `entries` (single reads and writes),
//! `walk` (whole-map walks, batched writes), `installed` (the mirror of
//! the installed entries, room and ids), `commit` (keeping the compiled
//! table in line), `counters`, and `grow` (moving an exact map's entries
//! into a larger one).
//!
//! Every write to the tries is followed by bringing the compiled IPv4
//! table (see [`table`](super::table)) in line with them, at once or, in a
//! [`batch`](Maps::batch), once at its end; `TABLE_META.dirty` marks the
//! time in between, so a writer killed there leaves the next one a note
//! to recompile.
//!
//! Everything here opens maps by their pins, so it works from any process
//! (the CLI in another shell, the `run` loop, tests) while the program runs
//! or after the agent stopped.

use std::{
    net::IpAddr,
    os::fd::{AsFd, BorrowedFd},
};

use aya::{
    Pod,
    maps::{
        Array, HashMap, IterableMap, Map, MapData, MapError, PerCpuArray,
        lpm_trie::{Key, LpmTrie},
    },
};
use blocklist_ebpf::{
    AddrHits, Config, ENTRIES_MAX, ENTRY_FLAG_MANUAL, EntryCounters, EntryValue, FAMILY_V4,
    GlobalCounters, IpCounters, IpKey, PrefixCounters, TableMeta, map_names,
};

use super::{
    DatapathError, batch,
    hit_ids::HitIds,
    mirror::{BlockSnapshot, Mirror},
    pin::PinDir,
    room::Room,
    table::{TableMaps, TableReport},
};
pub use crate::datapath::mirror::Installed;
use crate::prefix::{Family, Prefix, canonical_addr};

/// A block entry that was hit: its prefix, value and counters.
pub type HitEntry = (Prefix, EntryValue, EntryCounters);

/// Which pair of tries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrieKind {
    /// `BLOCK_V4` / `BLOCK_V6`.
    Block,
    /// `ALLOW_V4` / `ALLOW_V6`.
    Allow,
}

impl TrieKind {
    /// Every trie: (map name, kind, family), in display order.
    pub const ALL: [(&'static str, TrieKind, Family); 4] = [
        (map_names::BLOCK_V4, TrieKind::Block, Family::V4),
        (map_names::BLOCK_V6, TrieKind::Block, Family::V6),
        (map_names::ALLOW_V4, TrieKind::Allow, Family::V4),
        (map_names::ALLOW_V6, TrieKind::Allow, Family::V6),
    ];
}

pub(super) type TrieV4 = LpmTrie<MapData, [u8; 8], EntryValue>;
pub(super) type TrieV6 = LpmTrie<MapData, [u8; 16], EntryValue>;
pub(super) type ExactV4 = HashMap<MapData, [u8; 4], EntryValue>;
pub(super) type ExactV6 = HashMap<MapData, [u8; 16], EntryValue>;

/// The IPv4 tries' key data: the address and four zero bytes, so that the
/// kernel places the value 8-byte aligned (see the `blocklist_ebpf` docs).
pub(super) fn v4_key(len: u32, b: [u8; 4]) -> Key<[u8; 8]> {
    Key::new(len, blocklist_ebpf::v4_trie_data(b))
}

/// The address of an IPv4 trie key's data.
pub(super) fn v4_addr(data: [u8; 8]) -> [u8; 4] {
    [data[0], data[1], data[2], data[3]]
}

/// Handles on every pinned map.
pub struct Maps {
    pin: PinDir,
    block_v4: TrieV4,
    block_v6: TrieV6,
    exact_v4: ExactV4,
    exact_v6: ExactV6,
    allow_v4: TrieV4,
    allow_v6: TrieV6,
    config: Array<MapData, Config>,
    global: PerCpuArray<MapData, GlobalCounters>,
    /// Absent from pins made before the TC and cgroup hooks (until the
    /// next `attach` creates it).
    hook_global: Option<PerCpuArray<MapData, GlobalCounters>>,
    addr_hits: PerCpuArray<MapData, AddrHits>,
    table_meta: Array<MapData, TableMeta>,
    table_slots: Array<MapData, u64>,
    table_ranges: Array<MapData, u64>,
    /// `EMPTY_V4`, when the pins have it (older programs had none).
    table_empty: Option<Array<MapData, u64>>,
    /// `EMPTY16_V4` and `EMPTY22_V4`, likewise.
    table_empty16: Option<Array<MapData, u64>>,
    table_empty22: Option<Array<MapData, u64>>,
    table_slots_v6: Array<MapData, u64>,
    table_ranges_v6: Array<MapData, u64>,
    entry_counters: Array<MapData, EntryCounters>,
    /// The installed entries and their ids, read once and kept in step
    /// with this handle's writes while nobody else writes.
    mirror: Option<Mirror>,
    /// The table's arrays, mapped for an update and unmapped after its
    /// commit.
    table: Option<TableMaps>,
    /// Inside [`Maps::batch`]: table updates wait for its end.
    batching: bool,
    /// IPv6 single addresses removed inside the batch, deleted from
    /// `EXACT_V6` only after the table is committed: the program probes
    /// `EXACT_V6` before the table, so deleting one earlier would let its
    /// address through while the entry that replaces it (a /64, say) is
    /// still waiting for the table.
    deferred_v6: Vec<[u8; 16]>,
    /// `TABLE_META.dirty` was set by this handle and not cleared yet.
    marked: bool,
}

/// Installed block entries and allow entries, each sorted by prefix.
pub type InstalledSet<'a> = (&'a [(Prefix, Installed)], &'a [Prefix]);

/// Fill of one trie.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Fill {
    /// Entries installed.
    pub entries: u64,
    /// Capacity.
    pub max_entries: u32,
}

impl Fill {
    /// Entries over capacity, 0.0..=1.0.
    pub fn ratio(&self) -> f64 {
        if self.max_entries == 0 {
            0.0
        } else {
            self.entries as f64 / self.max_entries as f64
        }
    }
}

/// The result of a longest-prefix lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Match {
    /// The entry that matched.
    pub prefix: Prefix,
    /// Its value.
    pub value: EntryValue,
}

/// How the pinned maps are opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// For writers (root).
    ReadWrite,
    /// For inspection: needs only read permission on the pins, so a
    /// non-root user in the configured group can run `status`, `top`,
    /// `check` and `list`.
    ReadOnly,
}

mod commit;
mod counters;
mod entries;
mod grow;
mod installed;
mod open;
mod route;
mod walk;

pub use counters::ip_of;
pub(crate) use open::obj_get;
use open::*;
use route::Route;
pub use route::Store;
use walk::*;

#[cfg(test)]
mod tests;
