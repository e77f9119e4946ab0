//! Growing the exact maps with the installed set.
//!
//! `EXACT_V4` and `EXACT_V6` are hash maps: the kernel allocates their
//! whole bucket array (16 B a bucket) when they are created, so a map made
//! for a million entries costs 16 MiB on a host that lists ten thousand,
//! and every probe of the trie lookup lands somewhere in those 16 MiB. A
//! fresh pin therefore makes them [`EXACT_START_ENTRIES`] entries, and a
//! write that needs more places grows them ([`make_room`]) to half as
//! much again as it needs, rounded up to a power of two, up to their
//! largest size (`EXACT_*_MAX_ENTRIES`) and the entry ids there are
//! (`[datapath] max_entries`); past that a sync is refused whole, as
//! before.
//!
//! A map cannot be resized in place, and a loaded program keeps the maps
//! it was loaded with. Growing one therefore:
//! 1. loads the program again, with that map made anew at the larger size
//!    and pinned beside the old one (`growing-EXACT_V4`); every other map
//!    is the pinned one (with nothing attached, it only makes the map);
//! 2. copies the old map's entries into it;
//! 3. swaps the new program in at every pinned attachment (XDP and TC
//!    links, clsact filters, cgroup links), each with one atomic update;
//! 4. renames the new pin over the old one; the kernel frees the old map
//!    when the last program using it goes.
//!
//! Both maps hold the same entries from step 2 on, so every packet is
//! decided as before while the programs are swapped. Until step 4 the
//! old pin is the record every writer reads and writes. A writer killed
//! before step 4 leaves the `growing-` pin behind, and maybe some
//! attachments running the program that uses it; [`recover`] (which
//! every writer runs first) removes the pin and swaps a program loaded
//! with the pinned maps back in everywhere, so that no attachment keeps
//! a map that writes no longer reach.
//!
//! ```
//! use blocklist_agent::datapath::grow::grown_size;
//!
//! // Half as much again, rounded up to a power of two, within the limit.
//! assert_eq!(grown_size(70_000, 1 << 20), 131_072);
//! assert_eq!(grown_size(900_000, 1 << 20), 1 << 20);
//! ```

use std::path::{Path, PathBuf};

use aya::maps::MapData;
use blocklist_ebpf::{
    EXACT_MAP_FLAGS, EXACT_START_ENTRIES, EXACT_V4_MAX_ENTRIES, EXACT_V6_MAX_ENTRIES, EntryValue,
};

use super::{
    DatapathError, attach, cgroup,
    loader::{self, LoadOptions, Loaded},
    maps::{Maps, Store},
    pin::PinDir,
    room::Room,
};
use crate::prefix::Family;

/// The size an exact map grows to for `needed` entries: half as much
/// again, rounded up to a power of two (the kernel's bucket count), at
/// most `limit`.
pub fn grown_size(needed: u64, limit: u32) -> u32 {
    let wanted = needed
        .saturating_add(needed / 2)
        .max(1)
        .checked_next_power_of_two()
        .unwrap_or(u64::MAX);
    wanted.min(u64::from(limit)) as u32
}

/// The most entries `family`'s exact map may hold: its largest size,
/// and no more than the `max_entries` block entries there may be.
pub fn largest(family: Family, max_entries: Option<u32>) -> u32 {
    let largest = match family {
        Family::V4 => EXACT_V4_MAX_ENTRIES,
        Family::V6 => EXACT_V6_MAX_ENTRIES,
    };
    max_entries.map_or(largest, |n| n.clamp(1, largest))
}

/// The size a fresh exact map is made with when at most `limit` entries
/// are wanted in it.
pub fn start_size(limit: u32) -> u32 {
    EXACT_START_ENTRIES.min(limit).max(1)
}

/// Where the larger map of `family` is pinned while it is filled.
fn growing_name(family: Family) -> String {
    format!("growing-{}", Store::Exact(family).name())
}

/// Grows each exact map that `peak` (the entries a write will need at
/// once) overfills, as far as its largest size and the entry ids allow,
/// and returns what every store can hold after ([`Maps::room_capacity`]).
/// A store it cannot grow enough is left for the caller's capacity check
/// to refuse.
pub fn make_room(maps: &mut Maps, peak: &Room) -> Result<Room, DatapathError> {
    // Another writer may have grown one since this handle opened it (the
    // `run` loop keeps one handle while `block` grows a map): its writes
    // must reach the map the programs use.
    for family in Family::ALL {
        maps.reopen_exact(family)?;
    }
    let mut capacity = maps.room_capacity()?;
    let mut growths = Vec::new();
    for family in Family::ALL {
        let (needed, has) = (peak.exact(family), capacity.exact(family));
        if needed <= has {
            continue;
        }
        // A map larger than the ids could never fill: each entry has one.
        let ids = capacity.ids().min(u64::from(u32::MAX)) as u32;
        let limit = largest(family, Some(ids));
        if u64::from(limit) <= has {
            continue;
        }
        let size = grown_size(needed, limit);
        growths.push((family, size));
        capacity.set_exact(family, u64::from(size));
    }
    if !growths.is_empty() {
        grow(maps, &growths)?;
    }
    Ok(capacity)
}

/// Replaces each `(family, size)`'s exact map with one of `size` entries
/// holding the same entries, and swaps a program that uses them in at
/// every attachment, with one program load for all of them (the steps of
/// the module doc). With nothing attached there is no program to swap,
/// and the maps are made without loading one (the verifier takes about
/// half a second). The caller holds the writer lock.
pub fn grow(maps: &mut Maps, growths: &[(Family, u32)]) -> Result<(), DatapathError> {
    let pin = maps.pin().clone();
    recover(&pin)?;
    let fresh: Vec<(&'static str, u32, PathBuf)> = growths
        .iter()
        .map(|&(f, size)| (Store::Exact(f).name(), size, pin.map(&growing_name(f))))
        .collect();
    let mut loaded = if attached(&pin) {
        Some(loader::load_growing(&pin, &fresh)?)
    } else {
        for (&(family, size), (_, _, at)) in growths.iter().zip(&fresh) {
            make_exact(family, size, at)?;
        }
        None
    };
    let mut copied = Vec::new();
    for &(family, _) in growths {
        copied.push(maps.copy_exact(family, &growing_name(family))?);
    }
    if let Some(loaded) = &mut loaded {
        swap_everywhere(loaded, &pin)?;
    }
    for ((&(family, size), (name, _, at)), copied) in growths.iter().zip(&fresh).zip(copied) {
        let old = maps.exact_capacity(family)?;
        std::fs::rename(at, pin.map(name)).map_err(|e| {
            DatapathError::other(
                format!(
                    "renaming the grown {name} into place under {}",
                    pin.root().display()
                ),
                e,
            )
        })?;
        maps.reopen_exact(family)?;
        tracing::info!(
            map = name,
            from = old,
            to = size,
            entries = copied,
            "grew the exact map to fit the installed set"
        );
    }
    Ok(())
}

/// Whether any program is attached through a pin under `pin`.
fn attached(pin: &PinDir) -> bool {
    !pin.linked_interfaces().is_empty()
        || !pin.tc_egress_interfaces().is_empty()
        || !cgroup::attached(pin).is_empty()
}

/// Makes `family`'s exact map with `size` entries, as the object declares
/// it (keyed by the address bytes), and pins it at `at`.
fn make_exact(family: Family, size: u32, at: &Path) -> Result<(), DatapathError> {
    let name = Store::Exact(family).name();
    let def = aya_obj::Map::new_from_params(
        aya::maps::MapType::Hash as u32,
        u32::from(family.host_len()) / 8,
        size_of::<EntryValue>() as u32,
        size,
        EXACT_MAP_FLAGS,
    );
    let what = || format!("making a {name} of {size} entries at {}", at.display());
    let map = MapData::create(def, name, None).map_err(|e| DatapathError::other(what(), e))?;
    map.pin(at).map_err(|e| DatapathError::other(what(), e))
}

/// Finishes what a writer killed while growing an exact map left: removes
/// the half-made map's pin and, if it removed one, swaps a program loaded
/// with the pinned maps in at every attachment. Does nothing otherwise.
pub fn recover(pin: &PinDir) -> Result<(), DatapathError> {
    let mut found = false;
    for family in Family::ALL {
        let path = pin.map(&growing_name(family));
        if path.exists() {
            std::fs::remove_file(&path)
                .map_err(|e| DatapathError::other(format!("removing {}", path.display()), e))?;
            found = true;
        }
    }
    if !found || !pin.has_maps() {
        return Ok(());
    }
    tracing::warn!(
        pin = %pin.root().display(),
        "a writer stopped while growing an exact map; swapping a program that uses the pinned \
         maps back in everywhere"
    );
    let mut loaded = loader::load(pin, &LoadOptions::as_pinned(pin))?;
    swap_everywhere(&mut loaded, pin)
}

/// Swaps `loaded` in at every pinned attachment under `pin`.
fn swap_everywhere(loaded: &mut Loaded, pin: &PinDir) -> Result<(), DatapathError> {
    for iface in pin.linked_interfaces() {
        attach::replace(loaded, pin, &iface)?;
    }
    attach::replace_egress(loaded, pin).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grown_map_has_headroom_and_a_power_of_two_size() {
        for needed in [1u64, 2, 3, 1000, 65_537, 100_000, 699_051] {
            let size = grown_size(needed, u32::MAX);
            assert!(size.is_power_of_two(), "{needed}: {size}");
            assert!(u64::from(size) >= needed + needed / 2, "{needed}: {size}");
            assert!(u64::from(size) < 3 * needed.max(1), "{needed}: {size}");
        }
    }

    #[test]
    fn a_map_never_grows_past_its_limit() {
        assert_eq!(grown_size(1 << 20, 1 << 20), 1 << 20);
        assert_eq!(grown_size(u64::MAX, 1000), 1000);
        assert_eq!(start_size(10), 10);
        assert_eq!(start_size(u32::MAX), EXACT_START_ENTRIES);
    }
}
