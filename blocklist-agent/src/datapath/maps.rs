//! Typed access to the pinned maps: the block and allow tries, the live
//! configuration and the counters.
//!
//! A block entry for a single address (/32, /128) is stored in the
//! `EXACT_*` hash maps rather than the block trie (a hash probe is cheaper
//! than a trie walk in the datapath). Callers never see the split: every
//! method here takes a [`TrieKind`] and a prefix and routes it.
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

pub use super::mirror::Installed;
use super::{
    DatapathError, batch,
    hit_ids::HitIds,
    mirror::{BlockSnapshot, Mirror},
    pin::PinDir,
    room::Room,
    table::{TableMaps, TableReport},
};
use crate::prefix::{Prefix, canonical_addr};

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
    /// Every trie: (map name, kind, is IPv4), in display order.
    pub const ALL: [(&'static str, TrieKind, bool); 4] = [
        (map_names::BLOCK_V4, TrieKind::Block, true),
        (map_names::BLOCK_V6, TrieKind::Block, false),
        (map_names::ALLOW_V4, TrieKind::Allow, true),
        (map_names::ALLOW_V6, TrieKind::Allow, false),
    ];
}

type TrieV4 = LpmTrie<MapData, [u8; 8], EntryValue>;
type TrieV6 = LpmTrie<MapData, [u8; 16], EntryValue>;
type ExactV4 = HashMap<MapData, [u8; 4], EntryValue>;
type ExactV6 = HashMap<MapData, [u8; 16], EntryValue>;

/// The IPv4 tries' key data: the address and four zero bytes, so that the
/// kernel places the value 8-byte aligned (see the `blocklist_ebpf` docs).
fn v4_key(len: u32, b: [u8; 4]) -> Key<[u8; 8]> {
    Key::new(len, blocklist_ebpf::v4_trie_data(b))
}

/// The address of an IPv4 trie key's data.
fn v4_addr(data: [u8; 8]) -> [u8; 4] {
    [data[0], data[1], data[2], data[3]]
}

/// An IPv4 prefix as the table compiler takes it (IPv6 prefixes, which
/// the IPv4 walks never yield, map to nothing useful).
/// The IPv4 block and allow entries for the compiler.
fn v4_entries(
    m: &Mirror,
) -> (
    Vec<super::table::compile::Entry>,
    Vec<super::table::compile::Entry>,
) {
    let block = m
        .blocks()
        .iter()
        .filter(|(p, _)| p.is_v4())
        .map(|(p, v)| v4_entry(*p, table_id(v)))
        .collect();
    let allow = m
        .allows()
        .iter()
        .filter(|p| p.is_v4())
        .map(|p| v4_entry(*p, 0))
        .collect();
    (block, allow)
}

/// The IPv6 block and allow entries for the compiler.
fn v6_entries(
    m: &Mirror,
) -> (
    Vec<super::table::compile::Entry6>,
    Vec<super::table::compile::Entry6>,
) {
    let block = m
        .blocks()
        .iter()
        .filter(|(p, _)| !p.is_v4())
        .map(|(p, v)| v6_entry(*p, table_id(v)))
        .collect();
    let allow = m
        .allows()
        .iter()
        .filter(|p| !p.is_v4())
        .map(|p| v6_entry(*p, 0))
        .collect();
    (block, allow)
}

/// Past this many IPv4 /16s touched, a partial compile is not worth it.
/// Measured at 1,000,000 mixed entries: a whole compile takes 0.06 s, a
/// partial one 0.009 s for the 9,110 /16s a 1% change touches and 0.029 s
/// for the 28,000 of a 4% change; the extraction per /16 would catch up
/// with the whole compile near all 65,536.
const PARTIAL_MAX_SLOTS: usize = 32_768;

fn v4_host(p: &Prefix) -> u32 {
    u32::from_be_bytes(p.v4_bytes().unwrap_or_default())
}

/// The `TABLE_V4` slots (/16s) an IPv4 prefix spans.
fn v4_slots(p: &Prefix) -> std::ops::Range<usize> {
    let first = (v4_host(p) >> 16) as usize;
    let count = 1usize << 16u32.saturating_sub(u32::from(p.prefix_len()));
    first..(first + count).min(blocklist_ebpf::TABLE_V4_SLOTS as usize)
}

/// What a partial compile needs for the prefixes written since the last
/// commit: every IPv4 block and allow entry overlapping a touched /16, the
/// touched /16s, and whether an IPv6 entry changed. `None` when too many
/// /16s were touched.
#[allow(clippy::type_complexity)]
fn partial_inputs(
    m: &Mirror,
    changed: &[Prefix],
) -> Option<(
    Vec<super::table::compile::Entry>,
    Vec<super::table::compile::Entry>,
    Vec<bool>,
    bool,
)> {
    let mut only = vec![false; blocklist_ebpf::TABLE_V4_SLOTS as usize];
    let mut touched = 0;
    let mut v6 = false;
    for p in changed {
        if !p.is_v4() {
            v6 = true;
            continue;
        }
        for s in v4_slots(p) {
            if !only[s] {
                only[s] = true;
                touched += 1;
                if touched > PARTIAL_MAX_SLOTS {
                    return None;
                }
            }
        }
    }
    // One pass over the installed entries in address order: an entry
    // goes in when any /16 it spans was touched (its own, or for an entry
    // wider than /16 any of its). Two binary searches and sixteen cover
    // lookups per touched /16 missed the cache at every step: 0.045 s for
    // the 9,110 /16s of a 1% change at 1,000,000 entries.
    let overlaps_touched = |p: &Prefix| only[v4_slots(p)].iter().any(|t| *t);
    let block: Vec<_> = m
        .blocks()
        .iter()
        .filter(|(p, _)| p.is_v4() && overlaps_touched(p))
        .map(|(p, v)| v4_entry(*p, table_id(v)))
        .collect();
    let allow: Vec<_> = m
        .allows()
        .iter()
        .filter(|p| p.is_v4() && overlaps_touched(p))
        .map(|p| v4_entry(*p, 0))
        .collect();
    Some((block, allow, only, v6))
}

/// A block entry's id as the table compiler takes it: with
/// [`blocklist_ebpf::RESULT_MONITOR`] when the entry only monitors, so the
/// table's result tells the program without another load.
fn table_id(v: &Installed) -> u32 {
    if v.flags & blocklist_ebpf::ENTRY_FLAG_MONITOR != 0 {
        v.id | blocklist_ebpf::RESULT_MONITOR
    } else {
        v.id
    }
}

fn v4_entry(p: Prefix, id: u32) -> super::table::compile::Entry {
    let b = p.v4_bytes().unwrap_or_default();
    super::table::compile::Entry {
        addr: u32::from_be_bytes(b),
        len: p.prefix_len(),
        id,
    }
}

/// An IPv6 prefix as the table compiler takes it.
fn v6_entry(p: Prefix, id: u32) -> super::table::compile::Entry6 {
    super::table::compile::Entry6 {
        addr: u128::from_be_bytes(p.v6_bytes().unwrap_or_default()),
        len: p.prefix_len(),
        id,
    }
}

/// True when `prefix`, as an entry of `kind`, lives in an exact map.
pub(super) fn is_exact(kind: TrieKind, prefix: Prefix) -> bool {
    kind == TrieKind::Block && prefix.prefix_len() == if prefix.is_v4() { 32 } else { 128 }
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

const BPF_F_RDONLY: u32 = 1 << 3;

/// `BPF_OBJ_GET` with `file_flags`; aya's `from_pin` always asks for
/// read-write, which needs write permission on the pin.
pub(crate) fn obj_get(
    path: &std::path::Path,
    file_flags: u32,
) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::{fd::FromRawFd as _, unix::ffi::OsStrExt as _};
    #[repr(C)]
    struct ObjAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        _pad: u32,
    }
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let mut attr = ObjAttr {
        pathname: c.as_ptr() as u64,
        bpf_fd: 0,
        file_flags,
        path_fd: 0,
        _pad: 0,
    };
    // SAFETY: `ObjAttr` is the `obj` member BPF_OBJ_GET reads, and `c`
    // outlives the call.
    let fd = unsafe { super::sys::bpf(super::sys::Command::ObjGet, &mut attr) }?;
    // SAFETY: BPF_OBJ_GET returned a new descriptor that we now own.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

fn open_map(pin: &PinDir, name: &str, access: Access) -> Result<Map, DatapathError> {
    let path = pin.map(name);
    match std::fs::metadata(&path) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(DatapathError::PermissionDenied {
                what: format!("reading {}", path.display()),
            });
        }
        Err(_) => return Err(DatapathError::NotPinned(pin.root().to_owned())),
    }
    let what = || format!("opening pinned map {}", path.display());
    let data = match access {
        Access::ReadWrite => {
            MapData::from_pin(&path).map_err(|e| DatapathError::other(what(), e))?
        }
        Access::ReadOnly => {
            let fd = obj_get(&path, BPF_F_RDONLY).map_err(|e| DatapathError::other(what(), e))?;
            MapData::from_fd(fd).map_err(|e| DatapathError::other(what(), e))?
        }
    };
    Map::from_map_data(data)
        .map_err(|e| DatapathError::other(format!("reading map {}", path.display()), e))
}

fn typed<T>(pin: &PinDir, name: &str, access: Access) -> Result<T, DatapathError>
where
    T: TryFrom<Map, Error = MapError>,
{
    T::try_from(open_map(pin, name, access)?).map_err(|e| {
        DatapathError::other(
            format!(
                "map {name} under {} does not have the layout this agent expects \
                 (pinned by another version?); detach all interfaces and attach again",
                pin.root().display()
            ),
            e,
        )
    })
}

fn map_err(what: impl Into<String>) -> impl FnOnce(MapError) -> DatapathError {
    let what = what.into();
    move |e| DatapathError::other(what, e)
}

fn is_enoent(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound | MapError::ElementNotFound => true,
        MapError::SyscallError(s) => s.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

fn is_full(e: &MapError) -> bool {
    matches!(e, MapError::SyscallError(s)
        if matches!(s.io_error.raw_os_error(), Some(libc::ENOSPC) | Some(libc::E2BIG)))
}

impl Maps {
    /// Opens every pinned map under `pin` for writing, or says that
    /// nothing is attached.
    pub fn open(pin: &PinDir) -> Result<Self, DatapathError> {
        Self::open_with(pin, Access::ReadWrite)
    }

    /// Opens every pinned map under `pin` for reading only.
    pub fn open_read_only(pin: &PinDir) -> Result<Self, DatapathError> {
        Self::open_with(pin, Access::ReadOnly)
    }

    fn open_with(pin: &PinDir, a: Access) -> Result<Self, DatapathError> {
        Ok(Self {
            pin: pin.clone(),
            block_v4: typed(pin, map_names::BLOCK_V4, a)?,
            block_v6: typed(pin, map_names::BLOCK_V6, a)?,
            exact_v4: typed(pin, map_names::EXACT_V4, a)?,
            exact_v6: typed(pin, map_names::EXACT_V6, a)?,
            allow_v4: typed(pin, map_names::ALLOW_V4, a)?,
            allow_v6: typed(pin, map_names::ALLOW_V6, a)?,
            config: typed(pin, map_names::CONFIG, a)?,
            global: typed(pin, map_names::GLOBAL, a)?,
            hook_global: pin
                .map(map_names::HOOK_GLOBAL)
                .exists()
                .then(|| typed(pin, map_names::HOOK_GLOBAL, a))
                .transpose()?,
            addr_hits: typed(pin, map_names::ADDR_HITS, a)?,
            table_meta: typed(pin, map_names::TABLE_META, a)?,
            table_slots: typed(pin, map_names::TABLE_V4, a)?,
            table_ranges: typed(pin, map_names::RANGES_V4, a)?,
            table_empty: pin
                .map(map_names::EMPTY_V4)
                .exists()
                .then(|| typed(pin, map_names::EMPTY_V4, a))
                .transpose()?,
            table_slots_v6: typed(pin, map_names::TABLE_V6, a)?,
            table_ranges_v6: typed(pin, map_names::RANGES_V6, a)?,
            entry_counters: typed(pin, map_names::ENTRY_COUNTERS, a)?,
            mirror: None,
            table: None,
            batching: false,
            deferred_v6: Vec::new(),
            marked: false,
        })
    }

    /// The table's bookkeeping record.
    pub fn table_meta(&self) -> Result<TableMeta, DatapathError> {
        self.table_meta
            .get(&0, 0)
            .map_err(map_err("reading TABLE_META"))
    }

    fn set_table_meta(&mut self, m: TableMeta) -> Result<(), DatapathError> {
        self.table_meta
            .set(0, &m, 0)
            .map_err(map_err("writing TABLE_META"))
    }

    /// Notes, before the first write to the tries, that the table no longer
    /// matches them.
    fn mark(&mut self) -> Result<(), DatapathError> {
        if !self.marked {
            let m = self.table_meta()?;
            self.check_mirror(&m);
            // Read the installed entries while the table is still
            // committed, so that the mirror logs every write from here on
            // (see `mirror`) and the commit compiles only what they touch.
            // The commit reads them anyway.
            if self.mirror.is_none() && m.dirty == 0 {
                self.mirror()?;
            }
            self.set_table_meta(TableMeta { dirty: 1, ..m })?;
            self.marked = true;
        }
        Ok(())
    }

    /// Forgets the mirror if another writer (or a killed one) changed the
    /// tries since this handle last committed.
    fn check_mirror(&mut self, meta: &TableMeta) {
        if let Some(m) = &self.mirror
            && (meta.dirty != 0 || meta.generation != m.generation)
        {
            self.mirror = None;
        }
    }

    /// After a write: update the table now, unless inside a batch.
    fn written(&mut self) -> Result<(), DatapathError> {
        if self.batching {
            return Ok(());
        }
        self.commit_table().map(|_| ())
    }

    /// The installed entries: the mirror kept since the last write when
    /// the kernel says nobody else wrote since (see [`super::mirror`]),
    /// else one walk of every map.
    fn mirror(&mut self) -> Result<&mut Mirror, DatapathError> {
        // While this handle writes, it set `dirty` itself and the mirror
        // follows each write.
        if !self.marked && self.mirror.is_some() {
            let meta = self.table_meta()?;
            self.check_mirror(&meta);
        }
        if self.mirror.is_none() {
            let meta = self.table_meta()?;
            let mut block = Vec::new();
            let mut allow = Vec::new();
            for v4 in [true, false] {
                self.visit(TrieKind::Block, v4, |p, v| {
                    block.push((
                        p,
                        Installed {
                            flags: v.flags,
                            id: v.id,
                        },
                    ))
                })?;
                self.visit(TrieKind::Allow, v4, |p, _| allow.push(p))?;
            }
            let mut m = Mirror::new(meta.generation, block, allow, self.id_slots()?);
            // A committed table (not dirty) matches the tries just read, so
            // the writes from here on are all it will differ by: log them,
            // and the next commit compiles only the /16s they touch. A
            // sync in a fresh process then costs what it changes too.
            if meta.dirty == 0 && meta.generation != 0 {
                m.committed(meta.generation);
            }
            self.mirror = Some(m);
        }
        Ok(self.mirror.as_mut().expect("read above"))
    }

    /// The installed block entries (with their flags) and allow entries,
    /// both families, sorted: what a sync diffs against.
    pub fn installed(&mut self) -> Result<InstalledSet<'_>, DatapathError> {
        let m = self.mirror()?;
        Ok((m.blocks(), m.allows()))
    }

    /// [`Maps::fill`] from the installed entries this handle knows (no walk
    /// while the mirror is current).
    pub fn installed_fill(&mut self, kind: TrieKind, v4: bool) -> Result<Fill, DatapathError> {
        let m = self.mirror()?;
        let room = m.room();
        let entries = match kind {
            TrieKind::Block => room.blocks(v4),
            TrieKind::Allow => room.allows(v4),
        };
        Ok(Fill {
            entries,
            max_entries: self.capacity(kind, v4)?,
        })
    }

    /// The entries per store ([`Room`]) once the block entries `adds` and
    /// the allow entries `allows` are in, from the installed entries this
    /// handle knows, and how many of `adds` are new (the others are
    /// installed: writing them overwrites in place and takes no room).
    /// Costs what the change adds: the mirror keeps the installed room.
    pub fn room_with(
        &mut self,
        adds: &[(Prefix, u32)],
        allows: &[Prefix],
    ) -> Result<(Room, u64), DatapathError> {
        let m = self.mirror()?;
        let mut room = m.room();
        let mut new = 0;
        for (p, _) in adds {
            if m.block(p).is_none() {
                room.add(p);
                new += 1;
            }
        }
        for p in allows {
            if m.allows().binary_search(p).is_err() {
                room.add_allow(p);
            }
        }
        Ok((room, new))
    }

    /// What each store can hold ([`Room`]).
    pub fn room_capacity(&self) -> Result<Room, DatapathError> {
        let exact = |info: Result<aya::maps::MapInfo, MapError>, name: &str| {
            info.map(|i| i.max_entries() as u64)
                .map_err(map_err(format!("reading the capacity of {name}")))
        };
        let trie = |kind, v4| self.capacity(kind, v4).map(u64::from);
        Ok(Room::from_counts(
            [
                trie(TrieKind::Block, true)?,
                trie(TrieKind::Block, false)?,
                exact(self.exact_v4.map().info(), map_names::EXACT_V4)?,
                exact(self.exact_v6.map().info(), map_names::EXACT_V6)?,
            ],
            // Id 0 means "no counters".
            u64::from(self.id_slots()?) - 1,
            [trie(TrieKind::Allow, true)?, trie(TrieKind::Allow, false)?],
        ))
    }

    /// Slots of `ENTRY_COUNTERS`, as created (`[datapath] max_entries`
    /// plus id 0): the entry ids are below it.
    fn id_slots(&self) -> Result<u32, DatapathError> {
        self.entry_counters
            .map()
            .info()
            .map(|i| i.max_entries())
            .map_err(map_err("reading the size of ENTRY_COUNTERS"))
    }

    /// Runs a write; if it fails, forgets the mirror, which may then be
    /// behind the kernel (part of a batch may have been written).
    fn guarded<R>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<R, DatapathError>,
    ) -> Result<R, DatapathError> {
        let r = f(self);
        if r.is_err() {
            self.mirror = None;
        }
        r
    }

    /// Ids for new block entries (existing ones keep theirs), with their
    /// counters zeroed before any entry names them.
    fn ids_for(&mut self, prefixes: &[Prefix]) -> Result<Vec<u32>, DatapathError> {
        let slots = self.id_slots()?;
        let m = self.mirror()?;
        let mut out = Vec::with_capacity(prefixes.len());
        let mut fresh = Vec::new();
        for p in prefixes {
            let id = match m.block(p) {
                Some(v) => v.id,
                None => {
                    let id = m.give_id().ok_or_else(|| DatapathError::Full {
                        map: map_names::ENTRY_COUNTERS,
                        max: slots - 1,
                        entry: p.to_string(),
                    })?;
                    fresh.push(id);
                    id
                }
            };
            out.push(id);
        }
        let zeros = vec![EntryCounters::default(); fresh.len().min(BATCH)];
        for chunk in fresh.chunks(BATCH) {
            let fd = self.entry_counters.map().fd().as_fd();
            if let Err(e) = batch::update(fd, chunk, &zeros[..chunk.len()]) {
                if !e.unsupported() {
                    return Err(DatapathError::other("zeroing ENTRY_COUNTERS", e.error));
                }
                for id in chunk {
                    self.entry_counters
                        .set(*id, &EntryCounters::default(), 0)
                        .map_err(map_err("zeroing ENTRY_COUNTERS"))?;
                }
            }
        }
        Ok(out)
    }

    /// Runs `f` (a sync's writes) with the table updated once, at the end,
    /// instead of after every write; also when `f` fails part-way, so the
    /// table reflects whatever it wrote. Until then the program decides
    /// with the table as it was before the batch.
    pub fn batch<R, E: From<DatapathError>>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<R, E>,
    ) -> Result<(R, Option<TableReport>), E> {
        self.batching = true;
        let r = f(self);
        self.batching = false;
        if r.is_err() {
            self.mirror = None;
        }
        let t = self.commit_table();
        let deferred = std::mem::take(&mut self.deferred_v6);
        // Without a committed table the replacements may not be visible:
        // keep the addresses blocked and let the next read see them.
        let d = if t.is_ok() {
            delete_batched(&mut self.exact_v6, map_names::EXACT_V6, &deferred)
        } else {
            Ok(())
        };
        if t.is_err() || d.is_err() {
            self.mirror = None;
        }
        let r = r?;
        let t = t?;
        d?;
        Ok((r, t))
    }

    /// Brings the compiled table in line with the tries if they changed
    /// since it was last compiled (by this handle, or by a writer that
    /// was killed before it could); `None` when there was nothing to do.
    pub fn commit_table(&mut self) -> Result<Option<TableReport>, DatapathError> {
        let meta = self.table_meta()?;
        if meta.dirty == 0 && meta.generation != 0 {
            self.marked = false;
            return Ok(None);
        }
        self.compile_table(meta, true).map(Some)
    }

    /// Compiles the tables from the installed entries whatever
    /// `TABLE_META` says, writing only what differs. For a program load: a
    /// table written by an older version may lack parts this program reads
    /// (the IPv6 table) or encode results differently.
    pub fn rebuild_table(&mut self) -> Result<TableReport, DatapathError> {
        let meta = self.table_meta()?;
        self.compile_table(meta, false)
    }

    /// Brings the table in line with the mirror: only the IPv4 /16s the
    /// writes since the last commit touched (and the IPv6 table if an IPv6
    /// entry changed) when `partial` and the mirror knows every write,
    /// else all of it.
    fn compile_table(
        &mut self,
        meta: TableMeta,
        partial: bool,
    ) -> Result<TableReport, DatapathError> {
        if self.table.is_none() {
            self.table = Some(TableMaps::open(&self.pin)?);
        }
        let m = self.mirror()?;
        let changed = if partial && meta.generation != 0 {
            m.take_changed()
        } else {
            None
        };
        if let Some(changed) = changed
            && let Some(inputs) = partial_inputs(m, &changed)
        {
            let (block, allow, only, v6) = inputs;
            let v6_entries = v6.then(|| v6_entries(m));
            let report = self.table.as_ref().expect("mapped above").update_slots(
                &block,
                &allow,
                Some(&only),
                v6_entries
                    .as_ref()
                    .map(|(b, a)| (b.as_slice(), a.as_slice())),
            )?;
            return self.table_committed(meta, report);
        }
        let m = self.mirror()?;
        let (block, allow) = v4_entries(m);
        let (block6, allow6) = v6_entries(m);
        let report = self
            .table
            .as_ref()
            .expect("mapped above")
            .update(&block, &allow, &block6, &allow6)?;
        self.table_committed(meta, report)
    }

    fn table_committed(
        &mut self,
        meta: TableMeta,
        report: TableReport,
    ) -> Result<TableReport, DatapathError> {
        let generation = meta.generation + 1;
        self.set_table_meta(TableMeta {
            dirty: 0,
            generation,
        })?;
        self.marked = false;
        if let Some(m) = &mut self.mirror {
            m.committed(generation);
        }
        // A mapping of a BPF array is resident whole for as long as it
        // exists (the kernel maps every page at mmap): 41 MiB of a
        // daemon's RSS between syncs. Mapping again costs about a
        // millisecond per commit.
        self.table = None;
        Ok(report)
    }

    /// The kernel table's result for an address: what the program's table
    /// lookup answers for it right now (read with lookups, so it works
    /// read-only too; `EMPTY_V4` included). For IPv6 that is the table over the upper 64 bits,
    /// which the program asks after `EXACT_V6` misses;
    /// [`RESULT_DEEP`](blocklist_ebpf::RESULT_DEEP) means the tries decide.
    pub fn table_result(&self, addr: IpAddr) -> Result<u32, DatapathError> {
        let read = |m: &Array<MapData, u64>, i: u32, name: &str| {
            m.get(&i, 0)
                .map_err(map_err(format!("reading {name}[{i}]")))
        };
        let (slots, ranges, names, key, low_bits, words) = match addr {
            IpAddr::V4(a) => (
                &self.table_slots,
                &self.table_ranges,
                (map_names::TABLE_V4, map_names::RANGES_V4),
                u32::from(a) as u64,
                16,
                1,
            ),
            IpAddr::V6(a) => (
                &self.table_slots_v6,
                &self.table_ranges_v6,
                (map_names::TABLE_V6, map_names::RANGES_V6),
                (u128::from(a) >> 64) as u64,
                48,
                2,
            ),
        };
        let slot = read(slots, (key >> low_bits) as u32, names.0)?;
        // The program skips the search in a /24 marked empty.
        let empty = || match (addr, &self.table_empty) {
            (IpAddr::V4(a), Some(empty)) => {
                let (word, bit) = blocklist_ebpf::empty_v4_bit(a.into());
                Ok((read(empty, word, map_names::EMPTY_V4)? >> bit) & 1 != 0)
            }
            _ => Ok(false),
        };
        // The program's search, one record read per step.
        super::table::compile::decide_slot(slot, key & ((1u64 << low_bits) - 1), empty, |i| {
            let at = (i * words) as u32;
            let w = (at..at + words as u32)
                .map(|k| read(ranges, k, names.1))
                .collect::<Result<Vec<u64>, _>>()?;
            Ok(super::table::compile::Record::from_words(&w))
        })
    }

    /// The pin directory these maps came from.
    pub fn pin(&self) -> &PinDir {
        &self.pin
    }

    fn name(kind: TrieKind, v4: bool) -> &'static str {
        match (kind, v4) {
            (TrieKind::Block, true) => map_names::BLOCK_V4,
            (TrieKind::Block, false) => map_names::BLOCK_V6,
            (TrieKind::Allow, true) => map_names::ALLOW_V4,
            (TrieKind::Allow, false) => map_names::ALLOW_V6,
        }
    }

    /// The map an entry lives in.
    fn map_name(kind: TrieKind, v4: bool, exact: bool) -> &'static str {
        match (exact, v4) {
            (true, true) => map_names::EXACT_V4,
            (true, false) => map_names::EXACT_V6,
            (false, _) => Self::name(kind, v4),
        }
    }

    fn v4(&self, kind: TrieKind) -> &TrieV4 {
        match kind {
            TrieKind::Block => &self.block_v4,
            TrieKind::Allow => &self.allow_v4,
        }
    }

    fn v6(&self, kind: TrieKind) -> &TrieV6 {
        match kind {
            TrieKind::Block => &self.block_v6,
            TrieKind::Allow => &self.allow_v6,
        }
    }

    fn v4_mut(&mut self, kind: TrieKind) -> &mut TrieV4 {
        match kind {
            TrieKind::Block => &mut self.block_v4,
            TrieKind::Allow => &mut self.allow_v4,
        }
    }

    fn v6_mut(&mut self, kind: TrieKind) -> &mut TrieV6 {
        match kind {
            TrieKind::Block => &mut self.block_v6,
            TrieKind::Allow => &mut self.allow_v6,
        }
    }

    /// Exact lookup of one entry.
    pub fn get_exact(
        &self,
        kind: TrieKind,
        prefix: Prefix,
    ) -> Result<Option<EntryValue>, DatapathError> {
        let exact = is_exact(kind, prefix);
        let what = || {
            format!(
                "looking up {prefix} in {}",
                Self::map_name(kind, prefix.is_v4(), exact)
            )
        };
        if exact {
            let r = match (prefix.v4_bytes(), prefix.v6_bytes()) {
                (Some(b), _) => self.exact_v4.get(&b, 0),
                (_, Some(b)) => self.exact_v6.get(&b, 0),
                _ => unreachable!("a prefix is v4 or v6"),
            };
            return match r {
                Ok(v) => Ok(Some(v)),
                Err(e) if is_enoent(&e) => Ok(None),
                Err(e) => Err(map_err(what())(e)),
            };
        }
        let r = match (prefix.v4_bytes(), prefix.v6_bytes()) {
            (Some(b), _) => self.v4(kind).get(&v4_key(prefix.prefix_len() as u32, b), 0),
            (_, Some(b)) => self
                .v6(kind)
                .get(&Key::new(prefix.prefix_len() as u32, b), 0),
            _ => unreachable!("a prefix is v4 or v6"),
        };
        match r {
            // The kernel's lookup is longest-prefix. Entries are canonical,
            // so a match of this prefix's own length is this very entry.
            Ok(v) if v.prefix_len == prefix.prefix_len() as u32 => Ok(Some(v)),
            Ok(_) => Ok(None),
            Err(e) if is_enoent(&e) => Ok(None),
            Err(e) => Err(map_err(what())(e)),
        }
    }

    /// Inserts (or overwrites) an entry. Returns true when it was new.
    pub fn insert(
        &mut self,
        kind: TrieKind,
        prefix: Prefix,
        flags: u32,
    ) -> Result<bool, DatapathError> {
        let existing = self.get_exact(kind, prefix)?;
        // Re-flagging an entry (a feed entry blocked by hand, say) keeps
        // its counters.
        let value = match existing {
            Some(old) => EntryValue { flags, ..old },
            None => {
                let id = match kind {
                    TrieKind::Block => self.ids_for(&[prefix])?[0],
                    TrieKind::Allow => 0,
                };
                EntryValue::new(prefix.prefix_len() as u32, flags, id)
            }
        };
        let exact = is_exact(kind, prefix);
        let name = Self::map_name(kind, prefix.is_v4(), exact);
        let len = prefix.prefix_len() as u32;
        self.mark()?;
        let r = match (prefix.v4_bytes(), prefix.v6_bytes(), exact) {
            (Some(b), _, true) => self.exact_v4.insert(&b, &value, 0),
            (_, Some(b), true) => self.exact_v6.insert(&b, &value, 0),
            (Some(b), _, false) => self.v4_mut(kind).insert(&v4_key(len, b), &value, 0),
            (_, Some(b), false) => self.v6_mut(kind).insert(&Key::new(len, b), &value, 0),
            _ => unreachable!("a prefix is v4 or v6"),
        };
        match r {
            Ok(()) => {
                if let Some(m) = &mut self.mirror {
                    match kind {
                        TrieKind::Block => m.put_blocks(vec![(
                            prefix,
                            Installed {
                                flags,
                                id: value.id,
                            },
                        )]),
                        TrieKind::Allow => m.put_allows(&[prefix]),
                    }
                }
                self.written()?;
                Ok(existing.is_none())
            }
            Err(e) if is_full(&e) => Err(DatapathError::Full {
                map: name,
                max: self.max_entries(kind, prefix.is_v4(), exact),
                entry: prefix.to_string(),
            }),
            Err(e) => Err(map_err(format!("inserting {prefix} into {name}"))(e)),
        }
    }

    /// Capacity of one map (0 if it cannot be read).
    fn max_entries(&self, kind: TrieKind, v4: bool, exact: bool) -> u32 {
        let info = match (exact, v4) {
            (true, true) => self.exact_v4.map().info(),
            (true, false) => self.exact_v6.map().info(),
            (false, true) => self.v4(kind).map().info(),
            (false, false) => self.v6(kind).map().info(),
        };
        info.map(|i| i.max_entries()).unwrap_or(0)
    }

    /// Inserts a manual (`block`/`allow`) entry.
    pub fn insert_manual(&mut self, kind: TrieKind, prefix: Prefix) -> Result<bool, DatapathError> {
        self.insert(kind, prefix, ENTRY_FLAG_MANUAL)
    }

    /// Removes an entry (exact prefix), and with it its counters. Returns
    /// true when it was there.
    pub fn remove(&mut self, kind: TrieKind, prefix: Prefix) -> Result<bool, DatapathError> {
        let exact = is_exact(kind, prefix);
        let name = Self::map_name(kind, prefix.is_v4(), exact);
        let len = prefix.prefix_len() as u32;
        self.mark()?;
        let r = match (prefix.v4_bytes(), prefix.v6_bytes(), exact) {
            (Some(b), _, true) => self.exact_v4.remove(&b),
            (_, Some(b), true) if self.batching => {
                let there = self.get_exact(kind, prefix)?.is_some();
                self.deferred_v6.push(b);
                self.forget(kind, &[prefix]);
                self.written()?;
                return Ok(there);
            }
            (_, Some(b), true) => self.exact_v6.remove(&b),
            (Some(b), _, false) => self.v4_mut(kind).remove(&v4_key(len, b)),
            (_, Some(b), false) => self.v6_mut(kind).remove(&Key::new(len, b)),
            _ => unreachable!("a prefix is v4 or v6"),
        };
        let removed = match r {
            Ok(()) => true,
            Err(e) if is_enoent(&e) => false,
            Err(e) => {
                self.mirror = None;
                return Err(map_err(format!("removing {prefix} from {name}"))(e));
            }
        };
        self.forget(kind, &[prefix]);
        self.written()?;
        Ok(removed)
    }

    /// Inserts (or overwrites) many entries with batched syscalls, falling
    /// back to one syscall per entry where the kernel lacks batch support.
    pub fn insert_many(
        &mut self,
        kind: TrieKind,
        entries: &[(Prefix, u32)],
    ) -> Result<(), DatapathError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.mark()?;
        let mut written = Vec::with_capacity(entries.len());
        // A chunk at a time: a million values at once would hold 64 MB.
        for chunk in entries.chunks(BATCH) {
            let ids = self.guarded(|m| m.insert_chunk(kind, chunk))?;
            written.extend(
                chunk
                    .iter()
                    .zip(ids)
                    .map(|((p, flags), id)| (*p, Installed { flags: *flags, id })),
            );
        }
        if let Some(m) = &mut self.mirror {
            match kind {
                TrieKind::Block => m.put_blocks(written),
                TrieKind::Allow => {
                    m.put_allows(&written.iter().map(|(p, _)| *p).collect::<Vec<_>>())
                }
            }
        }
        self.written()
    }

    /// Writes one chunk; returns the ids it gave (0 for allow entries).
    fn insert_chunk(
        &mut self,
        kind: TrieKind,
        entries: &[(Prefix, u32)],
    ) -> Result<Vec<u32>, DatapathError> {
        let prefixes: Vec<Prefix> = entries.iter().map(|(p, _)| *p).collect();
        let ids = match kind {
            TrieKind::Block => self.ids_for(&prefixes)?,
            TrieKind::Allow => vec![0; entries.len()],
        };
        drop(prefixes);
        let given = ids.clone();
        let (mut k4, mut v4s, mut k6, mut v6s) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut e4, mut ev4, mut e6, mut ev6) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for ((p, flags), id) in entries.iter().zip(ids) {
            let value = |p: &Prefix, flags: u32| EntryValue::new(p.prefix_len() as u32, flags, id);
            let exact = is_exact(kind, *p);
            match (p.v4_bytes(), p.v6_bytes(), exact) {
                (Some(b), _, true) => {
                    e4.push(b);
                    ev4.push(value(p, *flags));
                }
                (_, Some(b), true) => {
                    e6.push(b);
                    ev6.push(value(p, *flags));
                }
                (Some(b), _, false) => {
                    k4.push(v4_key(p.prefix_len() as u32, b));
                    v4s.push(value(p, *flags));
                }
                (_, Some(b), false) => {
                    k6.push(Key::new(p.prefix_len() as u32, b));
                    v6s.push(value(p, *flags));
                }
                _ => {}
            }
        }
        let name4 = Self::name(kind, true);
        let name6 = Self::name(kind, false);
        insert_batched(self.v4_mut(kind), name4, &k4, &v4s)?;
        insert_batched(self.v6_mut(kind), name6, &k6, &v6s)?;
        insert_batched(&mut self.exact_v4, map_names::EXACT_V4, &e4, &ev4)?;
        insert_batched(&mut self.exact_v6, map_names::EXACT_V6, &e6, &ev6)?;
        Ok(given)
    }

    /// Tells the mirror that entries of `kind` are gone.
    fn forget(&mut self, kind: TrieKind, prefixes: &[Prefix]) {
        if let Some(m) = &mut self.mirror {
            match kind {
                TrieKind::Block => m.remove_blocks(prefixes),
                TrieKind::Allow => m.remove_allows(prefixes),
            }
        }
    }

    /// Removes many entries (exact prefixes), and their counters, with
    /// batched syscalls; missing entries are skipped.
    pub fn remove_many(
        &mut self,
        kind: TrieKind,
        prefixes: &[Prefix],
    ) -> Result<(), DatapathError> {
        if prefixes.is_empty() {
            return Ok(());
        }
        self.mark()?;
        let (tries, exact): (Vec<Prefix>, Vec<Prefix>) =
            prefixes.iter().partition(|p| !is_exact(kind, **p));
        let k4: Vec<_> = tries
            .iter()
            .filter_map(|p| p.v4_bytes().map(|b| v4_key(p.prefix_len() as u32, b)))
            .collect();
        let k6: Vec<_> = tries
            .iter()
            .filter_map(|p| p.v6_bytes().map(|b| Key::new(p.prefix_len() as u32, b)))
            .collect();
        let e4: Vec<[u8; 4]> = exact.iter().filter_map(|p| p.v4_bytes()).collect();
        let mut e6: Vec<[u8; 16]> = exact.iter().filter_map(|p| p.v6_bytes()).collect();
        if self.batching {
            self.deferred_v6.append(&mut e6);
        }
        let name4 = Self::name(kind, true);
        let name6 = Self::name(kind, false);
        self.guarded(|m| {
            delete_batched(m.v4_mut(kind), name4, &k4)?;
            delete_batched(m.v6_mut(kind), name6, &k6)?;
            delete_batched(&mut m.exact_v4, map_names::EXACT_V4, &e4)?;
            delete_batched(&mut m.exact_v6, map_names::EXACT_V6, &e6)
        })?;
        self.forget(kind, prefixes);
        self.written()
    }

    /// Longest-prefix match of one address (v4-mapped goes to IPv4).
    pub fn lookup(&self, kind: TrieKind, addr: IpAddr) -> Result<Option<Match>, DatapathError> {
        let addr = canonical_addr(addr);
        // The longest possible match first: a single-address entry.
        let host = Prefix::new(ipnet::IpNet::from(addr));
        if let Some(value) = self.get_exact(kind, host)? {
            return Ok(Some(Match {
                prefix: host,
                value,
            }));
        }
        let r = match addr {
            IpAddr::V4(a) => self.v4(kind).get(&v4_key(32, a.octets()), 0),
            IpAddr::V6(a) => self.v6(kind).get(&Key::new(128, a.octets()), 0),
        };
        let value = match r {
            Ok(v) => v,
            Err(e) if is_enoent(&e) => return Ok(None),
            Err(e) => {
                return Err(map_err(format!(
                    "looking up {addr} in {}",
                    Self::name(kind, addr.is_ipv4())
                ))(e));
            }
        };
        let len = value.prefix_len.min(if addr.is_ipv4() { 32 } else { 128 }) as u8;
        let prefix =
            Prefix::new(ipnet::IpNet::new(addr, len).expect("length clamped to the family"));
        Ok(Some(Match { prefix, value }))
    }

    /// Every entry of one kind and family (for block entries, the trie's
    /// and the exact map's): one batched walk in the kernel per map where
    /// supported (a million entries in well under a second), else one
    /// `get_next_key` + lookup pair per entry.
    pub fn entries(
        &self,
        kind: TrieKind,
        v4: bool,
    ) -> Result<Vec<(Prefix, EntryValue)>, DatapathError> {
        let mut out = Vec::new();
        self.visit(kind, v4, |p, v| out.push((p, *v)))?;
        Ok(out)
    }

    /// Calls `f` on every entry of one kind and family, as the batched walk
    /// reads them.
    pub fn visit(
        &self,
        kind: TrieKind,
        v4: bool,
        mut f: impl FnMut(Prefix, &EntryValue),
    ) -> Result<(), DatapathError> {
        self.visit_trie(kind, v4, &mut f)?;
        if kind == TrieKind::Block {
            self.visit_exact(v4, &mut f)?;
        }
        Ok(())
    }

    fn visit_exact(
        &self,
        v4: bool,
        f: &mut impl FnMut(Prefix, &EntryValue),
    ) -> Result<(), DatapathError> {
        let name = Self::map_name(TrieKind::Block, v4, true);
        if v4 {
            let host = |k: [u8; 4]| Prefix::from_v4(k, 32);
            let m = &self.exact_v4;
            walk(m.map().fd().as_fd(), name, host, m.iter(), host, f)
        } else {
            let host = |k: [u8; 16]| Prefix::from_v6(k, 128);
            let m = &self.exact_v6;
            walk(m.map().fd().as_fd(), name, host, m.iter(), host, f)
        }
    }

    fn visit_trie(
        &self,
        kind: TrieKind,
        v4: bool,
        f: &mut impl FnMut(Prefix, &EntryValue),
    ) -> Result<(), DatapathError> {
        let name = Self::name(kind, v4);
        if v4 {
            let m = self.v4(kind);
            walk(
                m.map().fd().as_fd(),
                name,
                |k: RawKey<8>| Prefix::from_v4(v4_addr(k.data), k.prefix_len as u8),
                m.iter(),
                |k| Prefix::from_v4(v4_addr(k.data()), k.prefix_len() as u8),
                f,
            )
        } else {
            let m = self.v6(kind);
            walk(
                m.map().fd().as_fd(),
                name,
                |k: RawKey<16>| Prefix::from_v6(k.data, k.prefix_len as u8),
                m.iter(),
                |k| Prefix::from_v6(k.data(), k.prefix_len() as u8),
                f,
            )
        }
    }

    /// Entries and capacity of one kind and family. For block entries the
    /// count includes the exact map's and the capacity is the trie's (the
    /// exact map's own limit is reported when an insert hits it).
    pub fn fill(&self, kind: TrieKind, v4: bool) -> Result<Fill, DatapathError> {
        let mut keys = 0usize;
        self.visit(kind, v4, |_, _| keys += 1)?;
        Ok(Fill {
            entries: keys as u64,
            max_entries: self.capacity(kind, v4)?,
        })
    }

    /// [`Maps::fill`] without a walk when `known` (generation, entries)
    /// belongs to the maps' current generation and no write is in
    /// progress; a walk otherwise.
    pub fn fill_known(
        &self,
        kind: TrieKind,
        v4: bool,
        known: Option<(u64, u64)>,
    ) -> Result<Fill, DatapathError> {
        if let Some((generation, entries)) = known {
            let meta = self.table_meta()?;
            if meta.dirty == 0 && meta.generation == generation {
                return Ok(Fill {
                    entries,
                    max_entries: self.capacity(kind, v4)?,
                });
            }
        }
        self.fill(kind, v4)
    }

    /// Capacity of one trie: for the block entries of a family, also no
    /// more than the entry ids (`[datapath] max_entries`), which both
    /// families share, so that a fill near 1 warns before a sync is refused.
    fn capacity(&self, kind: TrieKind, v4: bool) -> Result<u32, DatapathError> {
        let info = if v4 {
            self.v4(kind).map().info()
        } else {
            self.v6(kind).map().info()
        };
        let trie = info.map(|i| i.max_entries()).map_err(map_err(format!(
            "reading the capacity of {}",
            Self::name(kind, v4)
        )))?;
        Ok(match kind {
            TrieKind::Block => trie.min(self.id_slots()? - 1),
            TrieKind::Allow => trie,
        })
    }

    /// The live configuration.
    pub fn config(&self) -> Result<Config, DatapathError> {
        self.config.get(&0, 0).map_err(map_err("reading CONFIG"))
    }

    /// Replaces the live configuration; the program sees it on the next packet.
    pub fn set_config(&mut self, config: Config) -> Result<(), DatapathError> {
        self.config
            .set(0, &config, 0)
            .map_err(map_err("writing CONFIG"))
    }

    /// The ingress counters, summed over CPUs: the XDP program's and the
    /// TC ingress classifier's (interfaces in TC mode), what `status` has
    /// always called the global counters.
    pub fn global(&self) -> Result<GlobalCounters, DatapathError> {
        let [xdp, tc_ingress, ..] = self.hook_counters()?;
        Ok(super::percpu::sum_global([xdp, tc_ingress].iter()))
    }

    /// The counters of each hook, indexed by hook ([`blocklist_ebpf::HOOK_XDP`]
    /// ...), summed over CPUs.
    pub fn hook_counters(
        &self,
    ) -> Result<[GlobalCounters; blocklist_ebpf::HOOKS as usize], DatapathError> {
        let mut out = [GlobalCounters::default(); blocklist_ebpf::HOOKS as usize];
        let per_cpu = self.global.get(&0, 0).map_err(map_err("reading GLOBAL"))?;
        out[blocklist_ebpf::HOOK_XDP as usize] = super::percpu::sum_global(per_cpu.iter());
        if let Some(hooks) = &self.hook_global {
            for hook in 1..blocklist_ebpf::HOOKS {
                let per_cpu = hooks
                    .get(&hook, 0)
                    .map_err(map_err(format!("reading HOOK_GLOBAL[{hook}]")))?;
                out[hook as usize] = super::percpu::sum_global(per_cpu.iter());
            }
        }
        Ok(out)
    }

    /// The counters of entry `id` (zero for id 0).
    pub fn entry_counters(&self, id: u32) -> Result<EntryCounters, DatapathError> {
        if id == 0 {
            return Ok(EntryCounters::default());
        }
        self.entry_counters
            .get(&id, 0)
            .map_err(map_err(format!("reading ENTRY_COUNTERS[{id}]")))
    }

    /// The counters of the entries `ids`, in order: one lookup each for a
    /// few, else batched reads of the runs of nearby ids (so the cost
    /// follows the ids, not the array's million slots).
    fn counters_of(&self, ids: &[u32]) -> Result<Vec<EntryCounters>, DatapathError> {
        if ids.len() < 64 {
            return ids.iter().map(|id| self.entry_counters(*id)).collect();
        }
        // A walk hands its ids in trie order: read them in id order.
        let mut order: Vec<u32> = (0..ids.len() as u32).collect();
        order.sort_unstable_by_key(|&i| ids[i as usize]);
        let fd = self.entry_counters.map().fd().as_fd();
        let mut out = vec![EntryCounters::default(); ids.len()];
        let mut i = 0;
        while i < order.len() {
            // A run: ids no more than 16 slots apart (a gap costs a 64-byte
            // copy; a new read, a syscall).
            let id_at = |k: usize| ids[order[k] as usize];
            let mut j = i + 1;
            while j < order.len() && id_at(j) - id_at(j - 1) <= 16 {
                j += 1;
            }
            let (first, last) = (id_at(i), id_at(j - 1));
            let mut run = Vec::with_capacity((last - first + 1) as usize);
            let r = batch::lookup_range::<EntryCounters>(
                fd,
                first,
                (last - first + 1) as usize,
                BATCH,
                |_, v| run.push(v),
            );
            match r {
                Ok(_) => {}
                Err(e) if e.unsupported() => {
                    return ids.iter().map(|id| self.entry_counters(*id)).collect();
                }
                Err(e) => return Err(DatapathError::other("reading ENTRY_COUNTERS", e.error)),
            }
            for k in i..j {
                out[order[k] as usize] = run
                    .get((id_at(k) - first) as usize)
                    .copied()
                    .unwrap_or_default();
            }
            i = j;
        }
        Ok(out)
    }

    /// The hit block entries, found through `HIT_IDS` and named by
    /// `snapshot` (a writer's mirror in this process) instead of a walk of
    /// the tries; `None` when that cannot be trusted (the maps changed
    /// since, a write is in progress, or the program predates `HIT_IDS`),
    /// and the caller walks ([`Maps::hit_block_entries`]).
    pub fn hit_block_entries_known(
        &self,
        snapshot: &BlockSnapshot,
    ) -> Result<Option<Vec<HitEntry>>, DatapathError> {
        let Some(blocks) = snapshot.blocks.upgrade() else {
            return Ok(None);
        };
        let meta = self.table_meta()?;
        if meta.dirty != 0 || meta.generation != snapshot.generation {
            return Ok(None);
        }
        let Some(hit_ids) = self.hit_ids()? else {
            return Ok(None);
        };
        let ids = hit_ids.ids();
        if ids.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let counters = self.counters_of(&ids)?;
        let mut hit = vec![0u64; ENTRIES_MAX.div_ceil(64) as usize];
        for (id, c) in ids.iter().zip(&counters) {
            if c.packets > 0 {
                hit[(*id / 64) as usize] |= 1 << (id % 64);
            }
        }
        let mut out = Vec::new();
        for (p, e) in blocks.iter() {
            let id = e.id;
            if id < ENTRIES_MAX && hit[(id / 64) as usize] & (1 << (id % 64)) != 0 {
                let i = ids.binary_search(&id).expect("marked above");
                out.push((
                    *p,
                    EntryValue {
                        prefix_len: p.prefix_len() as u32,
                        flags: e.flags,
                        id,
                        _pad: 0,
                    },
                    counters[i],
                ));
            }
        }
        Ok(Some(out))
    }

    /// `HIT_IDS`, mapped, once its marks are complete: seeded here (one
    /// read of every counter) the first time after the map was created
    /// under counters that were already counting. `None` when the program
    /// predates the map.
    fn hit_ids(&self) -> Result<Option<HitIds>, DatapathError> {
        let Some(h) = HitIds::open(&self.pin)? else {
            return Ok(None);
        };
        if !h.seeded() {
            let mut ids = Vec::new();
            let fd = self.entry_counters.map().fd().as_fd();
            batch::lookup_each::<u32, EntryCounters>(fd, BATCH, |id, c| {
                if c.first_seen_ns != 0 {
                    ids.push(id);
                }
            })
            .map_err(|e| DatapathError::other("reading ENTRY_COUNTERS", e.error))?;
            h.seed(ids);
        }
        Ok(Some(h))
    }

    /// The installed block entries as this handle last committed them,
    /// for a reader in another thread ([`Maps::hit_block_entries_known`]);
    /// `None` before the first read or while this handle is writing.
    pub fn block_snapshot(&self) -> Option<BlockSnapshot> {
        if self.marked {
            return None;
        }
        self.mirror.as_ref().map(Mirror::snapshot)
    }

    /// Every counter of one block prefix, with the direction split (zero
    /// if never hit or not installed).
    pub fn prefix_entry_counters(&self, prefix: Prefix) -> Result<EntryCounters, DatapathError> {
        match self.get_exact(TrieKind::Block, prefix)? {
            Some(v) => self.entry_counters(v.id),
            None => Ok(EntryCounters::default()),
        }
    }

    /// Counters of one block prefix (zero if never hit or not installed).
    pub fn prefix_counters(&self, prefix: Prefix) -> Result<PrefixCounters, DatapathError> {
        match self.get_exact(TrieKind::Block, prefix)? {
            Some(v) => Ok(self.entry_counters(v.id)?.counters()),
            None => Ok(PrefixCounters::default()),
        }
    }

    /// Every block entry with its flags and counters.
    fn block_entries_with_counters(
        &self,
        exact_only: bool,
    ) -> Result<Vec<(Prefix, EntryValue, EntryCounters)>, DatapathError> {
        let mut entries = Vec::new();
        for v4 in [true, false] {
            if exact_only {
                self.visit_exact(v4, &mut |p, v| entries.push((p, *v)))?;
            } else {
                self.visit(TrieKind::Block, v4, |p, v| entries.push((p, *v)))?;
            }
        }
        let ids: Vec<u32> = entries.iter().map(|(_, v)| v.id).collect();
        let counters = self.counters_of(&ids)?;
        Ok(entries
            .into_iter()
            .zip(counters)
            .map(|((p, v), c)| (p, v, c))
            .collect())
    }

    /// Every block entry that was hit, with its value and counters: one
    /// walk of the maps, for callers that need several views of the hits.
    pub fn hit_block_entries(
        &self,
    ) -> Result<Vec<(Prefix, EntryValue, EntryCounters)>, DatapathError> {
        let mut v = self.block_entries_with_counters(false)?;
        v.retain(|(_, _, c)| c.packets > 0);
        Ok(v)
    }

    /// The counters of every block prefix that was hit.
    pub fn all_prefix_counters(&self) -> Result<Vec<(Prefix, PrefixCounters)>, DatapathError> {
        Ok(self
            .block_entries_with_counters(false)?
            .into_iter()
            .filter(|(_, _, c)| c.packets > 0)
            .map(|(p, _, c)| (p, c.counters()))
            .collect())
    }

    /// Every single-address block entry that was hit, with its flags: its
    /// counters are that address's per-address counters (the program skips
    /// `IP_HITS` for it).
    pub fn single_address_hits(&self) -> Result<Vec<(Prefix, u32, EntryCounters)>, DatapathError> {
        Ok(self
            .block_entries_with_counters(true)?
            .into_iter()
            .filter(|(_, _, c)| c.packets > 0)
            .map(|(p, v, c)| (p, v.flags, c))
            .collect())
    }

    /// True when `prefix` is installed as a hand-made block entry.
    pub fn is_manual(&self, prefix: Prefix) -> Result<bool, DatapathError> {
        Ok(self.block_flags(prefix)? & ENTRY_FLAG_MANUAL != 0)
    }

    /// The `ENTRY_FLAG_*` bits of the block entry `prefix` (0 when it is
    /// not installed).
    pub fn block_flags(&self, prefix: Prefix) -> Result<u32, DatapathError> {
        Ok(self
            .get_exact(TrieKind::Block, prefix)?
            .map_or(0, |v| v.flags))
    }

    /// Every per-address counter, summed over CPUs (an address may hold a
    /// slot on each).
    pub fn ip_counters(&self) -> Result<Vec<(IpKey, IpCounters)>, DatapathError> {
        let mut by_key: std::collections::HashMap<IpKey, IpCounters> =
            std::collections::HashMap::new();
        let mut add = |slot: &AddrHits| {
            if slot.key.family != 0 && slot.counters.packets > 0 {
                let e = by_key.entry(slot.key).or_default();
                super::percpu::add_ip(e, &slot.counters);
            }
        };
        // One batched read of every slot on every CPU (a lookup per slot
        // costs a syscall each: 8 ms for the default 8,192).
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| DatapathError::other(what, e))?;
        let fd = self.addr_hits.map().fd().as_fd();
        match batch::lookup_each_per_cpu::<u32, AddrHits>(
            fd,
            1024,
            cpus.get() as usize,
            |_, per_cpu| per_cpu.iter().for_each(&mut add),
        ) {
            Ok(_) => {}
            Err(e) if e.unsupported() => {
                let slots = self
                    .addr_hits
                    .map()
                    .info()
                    .map_err(map_err("reading the size of ADDR_HITS"))?
                    .max_entries();
                for i in 0..slots {
                    let per_cpu = self
                        .addr_hits
                        .get(&i, 0)
                        .map_err(map_err(format!("reading ADDR_HITS[{i}]")))?;
                    per_cpu.iter().for_each(&mut add);
                }
            }
            Err(e) => return Err(DatapathError::other("reading ADDR_HITS", e.error)),
        }
        Ok(by_key.into_iter().collect())
    }
}

/// The kernel's `bpf_lpm_trie_key` layout, for batched reads (aya's key
/// type has no `Default`, which the read buffers need).
#[repr(C, packed)]
#[derive(Clone, Copy)]
struct RawKey<const N: usize> {
    prefix_len: u32,
    data: [u8; N],
}

impl<const N: usize> Default for RawKey<N> {
    fn default() -> Self {
        Self {
            prefix_len: 0,
            data: [0; N],
        }
    }
}

/// Entries per batch syscall: large enough to amortise the syscall, small
/// enough to keep the kernel's temporary copy modest.
const BATCH: usize = 8192;

/// Hands every entry of one map to `f`: one batched walk in the kernel
/// (on `fd`) where supported, else `fallback`, the map's own iterator (one
/// `get_next_key` + lookup pair per entry). `from_batch` and `from_iter`
/// turn the key, as each way reads it, into the entry's prefix (keys that
/// are not one are skipped).
fn walk<KB: Copy + Default, KI>(
    fd: BorrowedFd<'_>,
    name: &str,
    from_batch: impl Fn(KB) -> Option<Prefix>,
    fallback: impl Iterator<Item = Result<(KI, EntryValue), MapError>>,
    from_iter: impl Fn(KI) -> Option<Prefix>,
    f: &mut impl FnMut(Prefix, &EntryValue),
) -> Result<(), DatapathError> {
    let what = || format!("listing {name}");
    let batched = batch::lookup_each::<KB, EntryValue>(fd, BATCH, |k, v| {
        if let Some(p) = from_batch(k) {
            f(p, &v)
        }
    });
    match batched {
        Ok(_) => return Ok(()),
        // Nothing was handed out before an unsupported first call.
        Err(e) if e.unsupported() && e.done == 0 => {}
        Err(e) => return Err(DatapathError::other(what(), e.error)),
    }
    for item in fallback {
        let (k, v) = item.map_err(map_err(what()))?;
        if let Some(p) = from_iter(k) {
            f(p, &v);
        }
    }
    Ok(())
}

/// A map holding [`EntryValue`]s under keys `K`: a trie (keys are
/// `Key<_>`) or an exact map (keys are the address bytes).
trait EntryMap<K> {
    fn fd(&self) -> BorrowedFd<'_>;
    fn put(&mut self, key: &K, value: &EntryValue) -> Result<(), MapError>;
    fn del(&mut self, key: &K) -> Result<(), MapError>;
    fn max_entries(&self) -> u32;
}

impl<K: Pod> EntryMap<Key<K>> for LpmTrie<MapData, K, EntryValue> {
    fn fd(&self) -> BorrowedFd<'_> {
        self.map().fd().as_fd()
    }
    fn put(&mut self, key: &Key<K>, value: &EntryValue) -> Result<(), MapError> {
        self.insert(key, value, 0)
    }
    fn del(&mut self, key: &Key<K>) -> Result<(), MapError> {
        self.remove(key)
    }
    fn max_entries(&self) -> u32 {
        self.map().info().map(|i| i.max_entries()).unwrap_or(0)
    }
}

impl<K: Pod> EntryMap<K> for HashMap<MapData, K, EntryValue> {
    fn fd(&self) -> BorrowedFd<'_> {
        self.map().fd().as_fd()
    }
    fn put(&mut self, key: &K, value: &EntryValue) -> Result<(), MapError> {
        self.insert(key, value, 0)
    }
    fn del(&mut self, key: &K) -> Result<(), MapError> {
        self.remove(key)
    }
    fn max_entries(&self) -> u32 {
        self.map().info().map(|i| i.max_entries()).unwrap_or(0)
    }
}

fn insert_batched<K, M: EntryMap<K>>(
    map: &mut M,
    name: &'static str,
    keys: &[K],
    values: &[EntryValue],
) -> Result<(), DatapathError> {
    for (kc, vc) in keys.chunks(BATCH).zip(values.chunks(BATCH)) {
        let r = batch::update(map.fd(), kc, vc);
        match r {
            Ok(()) => {}
            Err(e) if e.unsupported() => {
                for (k, v) in kc.iter().zip(vc) {
                    map.put(k, v).map_err(|e| {
                        if is_full(&e) {
                            full(map.max_entries(), name)
                        } else {
                            DatapathError::other(format!("inserting into {name}"), e)
                        }
                    })?;
                }
            }
            Err(e)
                if matches!(
                    e.error.raw_os_error(),
                    Some(libc::ENOSPC) | Some(libc::E2BIG)
                ) =>
            {
                return Err(full(map.max_entries(), name));
            }
            Err(e) => {
                return Err(DatapathError::other(
                    format!("batch insert into {name} (after {} entries)", e.done),
                    e.error,
                ));
            }
        }
    }
    Ok(())
}

fn full(max: u32, name: &'static str) -> DatapathError {
    DatapathError::Full {
        map: name,
        max,
        entry: "a batch of entries".to_owned(),
    }
}

fn delete_batched<K, M: EntryMap<K>>(
    map: &mut M,
    name: &'static str,
    keys: &[K],
) -> Result<(), DatapathError> {
    let mut rest = keys;
    while !rest.is_empty() {
        let chunk = &rest[..rest.len().min(BATCH)];
        match batch::delete(map.fd(), chunk) {
            Ok(()) => rest = &rest[chunk.len()..],
            // A missing key stops the batch: skip it and go on after it.
            Err(e) if e.error.raw_os_error() == Some(libc::ENOENT) => {
                rest = &rest[(e.done + 1).min(rest.len())..];
            }
            Err(e) if e.unsupported() => {
                for k in chunk {
                    match map.del(k) {
                        Ok(()) => {}
                        Err(e) if is_enoent(&e) => {}
                        Err(e) => {
                            return Err(DatapathError::other(format!("removing from {name}"), e));
                        }
                    }
                }
                rest = &rest[chunk.len()..];
            }
            Err(e) => {
                return Err(DatapathError::other(
                    format!("batch delete from {name} (after {} entries)", e.done),
                    e.error,
                ));
            }
        }
    }
    Ok(())
}

/// The address of a per-address counter key.
pub fn ip_of(key: &IpKey) -> IpAddr {
    if key.family == FAMILY_V4 {
        IpAddr::from([key.addr[0], key.addr[1], key.addr[2], key.addr[3]])
    } else {
        IpAddr::from(key.addr)
    }
}

#[cfg(test)]
mod tests {
    use std::{cell::RefCell, collections::BTreeMap, os::fd::OwnedFd, rc::Rc};

    use super::*;
    use crate::datapath::{
        batch::BatchAttr,
        sys::{Command, fake},
    };

    /// A map whose single-element calls go to `entries` and whose batch
    /// calls the fake kernel answers.
    struct FakeMap {
        fd: OwnedFd,
        entries: Rc<RefCell<BTreeMap<u32, EntryValue>>>,
        max: u32,
    }

    impl FakeMap {
        fn new(entries: &Rc<RefCell<BTreeMap<u32, EntryValue>>>) -> Self {
            Self {
                fd: std::fs::File::open("/dev/null").unwrap().into(),
                entries: Rc::clone(entries),
                max: 4,
            }
        }
    }

    fn syscall_error(errno: i32) -> MapError {
        MapError::SyscallError(aya::sys::SyscallError {
            call: "bpf_map_update_elem",
            io_error: std::io::Error::from_raw_os_error(errno),
        })
    }

    impl EntryMap<u32> for FakeMap {
        fn fd(&self) -> BorrowedFd<'_> {
            self.fd.as_fd()
        }
        fn put(&mut self, key: &u32, value: &EntryValue) -> Result<(), MapError> {
            let mut m = self.entries.borrow_mut();
            if m.len() as u32 >= self.max && !m.contains_key(key) {
                return Err(syscall_error(libc::E2BIG));
            }
            m.insert(*key, *value);
            Ok(())
        }
        fn del(&mut self, key: &u32) -> Result<(), MapError> {
            match self.entries.borrow_mut().remove(key) {
                Some(_) => Ok(()),
                None => Err(MapError::KeyNotFound),
            }
        }
        fn max_entries(&self) -> u32 {
            self.max
        }
    }

    fn value(id: u32) -> EntryValue {
        EntryValue {
            prefix_len: 32,
            id,
            ..Default::default()
        }
    }

    #[test]
    fn without_batch_support_inserts_and_deletes_go_one_by_one() {
        let entries = Rc::new(RefCell::new(BTreeMap::new()));
        let mut map = FakeMap::new(&entries);
        let no_batches = |_, _| fake::errno(524);
        fake::with(no_batches, || {
            insert_batched(
                &mut map,
                "BLOCK_V4",
                &[1, 2, 3],
                &[value(1), value(2), value(3)],
            )
        })
        .unwrap();
        assert_eq!(entries.borrow().len(), 3);
        // A key that is not there is no error one by one either.
        fake::with(no_batches, || {
            delete_batched(&mut map, "BLOCK_V4", &[2, 9, 3])
        })
        .unwrap();
        assert_eq!(entries.borrow().keys().copied().collect::<Vec<_>>(), [1]);
        // A full map says which map and its size, one by one too.
        let e = fake::with(no_batches, || {
            insert_batched(&mut map, "BLOCK_V4", &[5, 6, 7, 8], &[value(5); 4])
        })
        .unwrap_err();
        assert!(
            matches!(
                e,
                DatapathError::Full {
                    map: "BLOCK_V4",
                    max: 4,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn a_batch_delete_skips_each_missing_key_and_goes_on() {
        let kernel_map = Rc::new(RefCell::new(
            [1u32, 2, 4, 6]
                .into_iter()
                .collect::<std::collections::BTreeSet<_>>(),
        ));
        let calls = Rc::new(RefCell::new(0));
        let (k, c) = (Rc::clone(&kernel_map), Rc::clone(&calls));
        let kernel = move |cmd, attr: *mut u8| {
            assert_eq!(cmd, Command::MapDeleteBatch);
            *c.borrow_mut() += 1;
            // SAFETY: a delete batch of `count` u32 keys.
            let a = unsafe { &mut *attr.cast::<BatchAttr>() };
            // SAFETY: as above.
            let keys =
                unsafe { std::slice::from_raw_parts(a.keys as *const u32, a.count as usize) };
            for (i, key) in keys.iter().enumerate() {
                if !k.borrow_mut().remove(key) {
                    a.count = i as u32;
                    return fake::errno(libc::ENOENT);
                }
            }
            Ok(0)
        };
        let entries = Rc::new(RefCell::new(BTreeMap::new()));
        let mut map = FakeMap::new(&entries);
        fake::with(kernel, || {
            delete_batched(&mut map, "BLOCK_V4", &[1, 3, 2, 5, 7, 4, 6])
        })
        .unwrap();
        assert!(kernel_map.borrow().is_empty());
        // [1 3..] stops at 3, [2 5..] at 5, [7..] at 7, then [4 6].
        assert_eq!(*calls.borrow(), 4);
    }

    #[test]
    fn a_full_batch_insert_is_reported_as_full() {
        let entries = Rc::new(RefCell::new(BTreeMap::new()));
        let mut map = FakeMap::new(&entries);
        let e = fake::with(
            |_, _| fake::errno(libc::E2BIG),
            || insert_batched(&mut map, "EXACT_V4", &[1], &[value(1)]),
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                DatapathError::Full {
                    map: "EXACT_V4",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn ip_of_round_trips() {
        let key = IpKey {
            addr: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            family: FAMILY_V4,
            direction: 1,
            _pad: [0; 2],
        };
        assert_eq!(ip_of(&key), "10.0.0.1".parse::<IpAddr>().unwrap());
    }
}
