//! Loading the embedded XDP object with its maps pinned by name.
//!
//! The object is built by `build.rs` and embedded in the binary. Loading it
//! with a pin directory makes aya reuse maps already pinned there (so
//! entries and counters survive reloads and upgrades) and pin the ones that
//! are not.

use std::path::PathBuf;

use aya::{
    Ebpf, EbpfLoader,
    programs::{CgroupSockAddr, ProgramError, SchedClassifier, Xdp},
};
use blocklist_ebpf::{
    ENTRIES_MAX, EXACT_V4_MAX_ENTRIES, EXACT_V6_MAX_ENTRIES, FLOOR_PROGRAM_NAME, HIT_IDS_WORDS,
    PROGRAM_NAME, RANGES_V4_RECORDS, RANGES_V6_RECORDS, map_names, ranges_v4_records,
};

use super::{DatapathError, grow, maps::Store, pin::PinDir};
use crate::prefix::Family;

/// The XDP object built from `blocklist-ebpf`.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/blocklist"));

/// A loaded (verified, not yet attached) program and its maps.
pub struct Loaded {
    ebpf: Ebpf,
}

/// Options for [`load`].
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Per-CPU slots of the per-address counters (`ADDR_HITS`), rounded
    /// up to a power of two; only applies when the map is created, an
    /// existing pin keeps its size (a new size needs `detach --all`).
    pub addr_slots: u32,
    /// Most block entries (`[datapath] max_entries`); `None` for the
    /// largest, [`ENTRIES_MAX`] - 1. The maps whose size follows it
    /// ([`entry_sized_maps`]) are made that size when they are created; an
    /// existing pin keeps its size, like `ADDR_HITS`.
    pub max_entries: Option<u32>,
    /// Entries the exact maps are made with; `None` for
    /// [`EXACT_START_ENTRIES`](blocklist_ebpf::EXACT_START_ENTRIES), from
    /// where writers grow them ([`grow`](super::grow)). Each is kept
    /// within its largest size and `max_entries`. For tests that write
    /// the maps directly, past the writers that grow them.
    pub exact_entries: Option<u32>,
}

impl LoadOptions {
    /// Options that ask nothing of the maps pinned under `pin` but what
    /// they are, for loading the program again beside them (so that no
    /// warning says a configured size was not taken).
    pub fn as_pinned(pin: &PinDir) -> Self {
        Self {
            addr_slots: pinned_entries(pin, map_names::ADDR_HITS)
                .unwrap_or(blocklist_ebpf::ADDR_SLOTS_DEFAULT),
            ..Self::default()
        }
    }
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            addr_slots: blocklist_ebpf::ADDR_SLOTS_DEFAULT,
            max_entries: None,
            exact_entries: None,
        }
    }
}

/// The maps whose size `max_entries` block entries decide, with their
/// sizes: the counters and hit marks (one per id), the exact maps, and the
/// table's range arrays, so that a host with a small list pays for a small
/// one. Without `max_entries`, the sizes the object declares. The exact
/// maps start small either way and grow with the installed set (see
/// [`grow`](super::grow)).
///
/// ```
/// use blocklist_agent::datapath::loader::entry_sized_maps;
///
/// let sizes = entry_sized_maps(Some(10_000));
/// assert!(sizes.contains(&("ENTRY_COUNTERS", 10_001)));
/// assert!(sizes.contains(&("EXACT_V4", 10_000)));
/// assert!(entry_sized_maps(None).contains(&("EXACT_V4", 65_536)));
/// ```
pub fn entry_sized_maps(max_entries: Option<u32>) -> [(&'static str, u32); 6] {
    let Some(n) = max_entries.map(|n| n.clamp(1, ENTRIES_MAX - 1)) else {
        return [
            (map_names::ENTRY_COUNTERS, ENTRIES_MAX),
            (map_names::HIT_IDS, HIT_IDS_WORDS),
            (map_names::EXACT_V4, grow::start_size(EXACT_V4_MAX_ENTRIES)),
            (map_names::EXACT_V6, grow::start_size(EXACT_V6_MAX_ENTRIES)),
            (map_names::RANGES_V4, RANGES_V4_RECORDS),
            (map_names::RANGES_V6, RANGES_V6_RECORDS * 2),
        ];
    };
    // Twice the entries: a chunk has about two records per entry, and the
    // writer needs room for a rewrite beside it. Two words a record.
    let v6_records = (2 * n)
        .next_power_of_two()
        .clamp(1 << 12, RANGES_V6_RECORDS);
    [
        (map_names::ENTRY_COUNTERS, n + 1),
        (map_names::HIT_IDS, (n + 1).div_ceil(8)),
        (
            map_names::EXACT_V4,
            grow::start_size(grow::largest(Family::V4, Some(n))),
        ),
        (
            map_names::EXACT_V6,
            grow::start_size(grow::largest(Family::V6, Some(n))),
        ),
        (map_names::RANGES_V4, ranges_v4_records(n + 1)),
        (map_names::RANGES_V6, v6_records * 2),
    ]
}

/// The family of an exact map's name.
fn exact_family(name: &str) -> Option<Family> {
    Family::ALL
        .into_iter()
        .find(|&f| Store::Exact(f).name() == name)
}

/// Most per-CPU `ADDR_HITS` slots (72 MiB per CPU).
const ADDR_SLOTS_MAX: u32 = 1 << 20;

/// Loads the object, reusing or creating the pinned maps under `pin`, and
/// loads the main program into the kernel (running the verifier).
pub fn load(pin: &PinDir, opts: &LoadOptions) -> Result<Loaded, DatapathError> {
    load_with(pin, opts, &[])
}

/// [`load`] with each map `(name, size, at)` of `fresh` made anew at
/// `size` entries and pinned at `at`, where nothing may be pinned yet,
/// instead of the pinned one: how [`grow`](super::grow) gives the
/// program larger exact maps.
pub fn load_growing(
    pin: &PinDir,
    fresh: &[(&'static str, u32, PathBuf)],
) -> Result<Loaded, DatapathError> {
    load_with(pin, &LoadOptions::as_pinned(pin), fresh)
}

fn load_with(
    pin: &PinDir,
    opts: &LoadOptions,
    fresh: &[(&'static str, u32, PathBuf)],
) -> Result<Loaded, DatapathError> {
    pin.ensure()?;
    let mut loader = EbpfLoader::new();
    loader.default_map_pin_directory(pin.root());
    // aya refuses a pin whose size differs from the object's: a pin keeps
    // the size it was made with, so the object takes it.
    let wanted = opts.addr_slots.clamp(2, ADDR_SLOTS_MAX).next_power_of_two();
    let slots = pinned_entries(pin, map_names::ADDR_HITS).unwrap_or(wanted);
    if slots != wanted {
        tracing::warn!(
            pinned = slots,
            configured = wanted,
            "ADDR_HITS keeps the per-CPU slots it was pinned with; ip_counters_max takes \
             effect once the maps are made again (`detach --all`, then attach)"
        );
    }
    loader.map_max_entries(map_names::ADDR_HITS, slots);
    let mut kept = Vec::new();
    for (name, mut wanted) in entry_sized_maps(opts.max_entries) {
        if let (Some(n), Some(family)) = (opts.exact_entries, exact_family(name)) {
            wanted = n.clamp(1, grow::largest(family, opts.max_entries));
        }
        if let Some((fresh, size, at)) = fresh.iter().find(|f| f.0 == name) {
            loader.map_max_entries(fresh, *size);
            loader.map_pin_path(fresh, at.as_path());
            continue;
        }
        let size = pinned_entries(pin, name).unwrap_or(wanted);
        // An exact map's pinned size is the one it grew to.
        if size != wanted && exact_family(name).is_none() {
            kept.push(format!("{name} {size} (configured {wanted})"));
        }
        loader.map_max_entries(name, size);
    }
    if opts.max_entries.is_some() && !kept.is_empty() {
        tracing::warn!(
            maps = kept.join(", "),
            "maps keep the size they were pinned with; `[datapath] max_entries` takes effect \
             once the maps are made again (`detach --all`, then attach)"
        );
    }
    let ebpf = loader.load(OBJECT).map_err(|e| {
        DatapathError::other(
            format!(
                "loading the XDP object with maps pinned in {}",
                pin.root().display()
            ),
            e,
        )
    })?;
    let mut loaded = Loaded { ebpf };
    loaded.tell_addr_slots()?;
    loaded
        .xdp(PROGRAM_NAME)?
        .load()
        .map_err(|e| DatapathError::other("loading the XDP program (verifier)", e))?;
    Ok(loaded)
}

/// The size of the map pinned as `name`, when there is one: the maps whose
/// size is chosen when they are created (`ADDR_HITS` by
/// `ip_counters_max`, the [`entry_sized_maps`] by `[datapath]
/// max_entries` or by an older version).
pub fn pinned_entries(pin: &PinDir, name: &str) -> Option<u32> {
    let data = aya::maps::MapData::from_pin(pin.map(name)).ok()?;
    Some(data.info().ok()?.max_entries())
}

impl Loaded {
    /// Writes the real size of `ADDR_HITS` (a reused pin keeps the size it
    /// was made with) into `CONFIG`, where the program reads its mask.
    fn tell_addr_slots(&mut self) -> Result<(), DatapathError> {
        let slots = self
            .ebpf
            .map(map_names::ADDR_HITS)
            .and_then(|m| match m {
                aya::maps::Map::PerCpuArray(d) => d.info().ok().map(|i| i.max_entries()),
                _ => None,
            })
            .ok_or_else(|| DatapathError::Other {
                what: "reading the size of ADDR_HITS".into(),
                source: "the embedded object has no per-CPU array ADDR_HITS; rebuild the agent"
                    .into(),
            })?;
        let mut config: aya::maps::Array<_, blocklist_ebpf::Config> = self
            .ebpf
            .map_mut(map_names::CONFIG)
            .ok_or_else(|| DatapathError::Other {
                what: "opening CONFIG".into(),
                source: "the embedded object has no CONFIG map; rebuild the agent".into(),
            })?
            .try_into()
            .map_err(|e| DatapathError::other("opening CONFIG", e))?;
        let mut c = config
            .get(&0, 0)
            .map_err(|e| DatapathError::other("reading CONFIG", e))?;
        // A size that is not a power of two (a pin made by hand) uses the
        // largest power of two below it.
        c.addr_slots_mask = (1u32 << (31 - slots.max(2).leading_zeros())) - 1;
        config
            .set(0, &c, 0)
            .map_err(|e| DatapathError::other("writing CONFIG", e))
    }

    /// The main program, loaded.
    pub fn program(&mut self) -> Result<&mut Xdp, DatapathError> {
        self.xdp(PROGRAM_NAME)
    }

    /// The empty `XDP_PASS` program, loaded on first use (benchmark floor).
    pub fn floor_program(&mut self) -> Result<&mut Xdp, DatapathError> {
        let p = self.xdp(FLOOR_PROGRAM_NAME)?;
        load_once(p.fd().map(|_| ()), || p.load(), "the floor program")?;
        Ok(p)
    }

    /// A cgroup egress program (one of `EGRESS_PROGRAMS`), loaded on
    /// first use.
    pub fn egress_program(&mut self, name: &str) -> Result<&mut CgroupSockAddr, DatapathError> {
        let prog: &mut CgroupSockAddr = self.typed(name, "a cgroup sock_addr program")?;
        load_once(prog.fd().map(|_| ()), || prog.load(), &format!("`{name}`"))?;
        Ok(prog)
    }

    /// A TC classifier (`TC_INGRESS_PROGRAM` or `TC_EGRESS_PROGRAM`),
    /// loaded on first use.
    pub fn tc_program(&mut self, name: &str) -> Result<&mut SchedClassifier, DatapathError> {
        let prog: &mut SchedClassifier = self.typed(name, "a TC classifier")?;
        load_once(prog.fd().map(|_| ()), || prog.load(), &format!("`{name}`"))?;
        Ok(prog)
    }

    fn xdp(&mut self, name: &str) -> Result<&mut Xdp, DatapathError> {
        self.typed(name, "XDP")
    }

    /// The embedded program `name` as its type `T` (`kind` names it for
    /// the error).
    fn typed<'a, T>(&'a mut self, name: &str, kind: &str) -> Result<&'a mut T, DatapathError>
    where
        &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
    {
        let prog = self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| DatapathError::Other {
                what: format!("the embedded object has no program `{name}`"),
                source: "rebuild the agent".into(),
            })?;
        prog.try_into()
            .map_err(|e| DatapathError::other(format!("program `{name}` is not {kind}"), e))
    }
}

/// Loads a program on first use: `state` is its `fd()` (`NotLoaded`
/// until then), `load` runs the verifier.
fn load_once(
    state: Result<(), ProgramError>,
    load: impl FnOnce() -> Result<(), ProgramError>,
    what: &str,
) -> Result<(), DatapathError> {
    match state {
        Ok(()) => Ok(()),
        Err(ProgramError::NotLoaded) => {
            load().map_err(|e| DatapathError::other(format!("loading {what} (verifier)"), e))
        }
        Err(e) => Err(DatapathError::other(format!("loading {what}"), e)),
    }
}
