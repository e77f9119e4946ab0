//! The compiled lookup tables: the XDP program's fast path.
//!
//! The block and allow tries are the record of what is installed; this
//! module turns their IPv4 entries into `TABLE_V4` (one slot per /16) and
//! `RANGES_V4` (sorted range records per /16 that holds entries), so that
//! the program decides an IPv4 address with one slot load and at most 17
//! record loads, however many entries there are, and with a bit
//! (`EMPTY16_V4` per /16, `EMPTY22_V4` per /22, `EMPTY_V4` per /24) and no
//! slot load or search when no entry overlaps the address's /16, /22 or /24;
//! and their IPv6 entries
//! of /64 and wider into `TABLE_V6`/`RANGES_V6`, the same shape over the
//! upper 64 bits. The layout is documented once, in `blocklist_ebpf`.
//!
//! - [`compile`] is pure: entries in, slots and records out, unit-tested
//!   against a reference longest-prefix match.
//! - [`writer`] puts a compiled table into the kernel copy on write, so an
//!   update costs what it changes and a packet never sees half of one.
//!
//! [`Maps`](super::maps::Maps) calls both after every write to the tries
//! (or once after a batch of writes), so callers never see the table.

pub mod compile;
pub mod writer;

use std::{os::fd::AsFd as _, time::Instant};

use aya::maps::MapData;
use blocklist_ebpf::{EMPTY_V4_WORDS, EMPTY16_V4_WORDS, EMPTY22_V4_WORDS, map_names};

use super::{DatapathError, mmap::MappedU64, pin::PinDir};

/// What bringing the table in line with the tries did.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct TableReport {
    /// Seconds to compile the entries.
    pub compile_seconds: f64,
    /// Seconds to write the changed slots and chunks.
    pub write_seconds: f64,
    /// Range records the IPv4 table uses.
    pub records: usize,
    /// Range records the IPv6 table uses.
    pub records_v6: usize,
    /// IPv6 /16s left to the tries because their chunks did not fit.
    pub deep_slots_v6: usize,
    /// What the write touched.
    pub written: writer::WriteReport,
    /// Only the IPv4 /16s that the writes since the last commit touched
    /// were compiled (then `records` counts theirs, not the table's).
    pub partial: bool,
}

/// The tables' arrays, mapped into this process.
pub struct TableMaps {
    slots: MappedU64,
    ranges: MappedU64,
    /// `EMPTY_V4`; absent in maps pinned by an older program, which does
    /// not read it.
    empty: Option<MappedU64>,
    /// `EMPTY16_V4`; absent, too, in maps pinned by an older program.
    empty16: Option<MappedU64>,
    /// `EMPTY22_V4`; absent, too, in maps pinned by an older program.
    empty22: Option<MappedU64>,
    slots_v6: MappedU64,
    ranges_v6: MappedU64,
}

impl TableMaps {
    /// Maps the pinned `TABLE_V4`, `RANGES_V4`, `TABLE_V6` and `RANGES_V6`
    /// read-write, each at the size its pin has (a pin made by an older
    /// version may be larger than this version creates).
    pub fn open(pin: &PinDir) -> Result<Self, DatapathError> {
        let map = |name: &str| {
            let path = pin.map(name);
            let what = || format!("mapping {} into memory", path.display());
            let data = MapData::from_pin(&path).map_err(|e| DatapathError::other(what(), e))?;
            let entries = data
                .info()
                .map_err(|e| DatapathError::other(what(), e))?
                .max_entries();
            MappedU64::new(data.fd().as_fd(), entries as usize)
                .map_err(|e| DatapathError::other(what(), e))
        };
        // A bitmap the pins may lack (an older program, which does not
        // read it). A shorter one would leave some bits unwritten while
        // the program still reads them.
        let optional = |name: &str, words: u32| match pin.map(name) {
            path if path.exists() => {
                let bits = map(name)?;
                if bits.len() < words as usize {
                    return Err(DatapathError::other(
                        format!("mapping {}", path.display()),
                        std::io::Error::other(format!(
                            "it has {} words where this version needs {words}; \
                             detach and attach again to recreate the maps",
                            bits.len()
                        )),
                    ));
                }
                Ok(Some(bits))
            }
            _ => Ok(None),
        };
        let empty = optional(map_names::EMPTY_V4, EMPTY_V4_WORDS)?;
        let empty16 = optional(map_names::EMPTY16_V4, EMPTY16_V4_WORDS)?;
        let empty22 = optional(map_names::EMPTY22_V4, EMPTY22_V4_WORDS)?;
        Ok(Self {
            slots: map(map_names::TABLE_V4)?,
            ranges: map(map_names::RANGES_V4)?,
            empty,
            empty16,
            empty22,
            slots_v6: map(map_names::TABLE_V6)?,
            ranges_v6: map(map_names::RANGES_V6)?,
        })
    }

    /// Compiles the IPv4 and IPv6 `block` and `allow` entries (host byte
    /// order) and writes what changed.
    pub fn update(
        &self,
        block: &[compile::Entry],
        allow: &[compile::Entry],
        block6: &[compile::Entry6],
        allow6: &[compile::Entry6],
    ) -> Result<TableReport, DatapathError> {
        self.update_slots(block, allow, None, Some((block6, allow6)))
    }

    /// [`TableMaps::update`] for the IPv4 /16s `only` marks (all when
    /// `None`; the caller then passes every entry overlapping them), and
    /// for IPv6 only when `v6` holds its entries.
    pub fn update_slots(
        &self,
        block: &[compile::Entry],
        allow: &[compile::Entry],
        only: Option<&[bool]>,
        v6: Option<(&[compile::Entry6], &[compile::Entry6])>,
    ) -> Result<TableReport, DatapathError> {
        let t = Instant::now();
        let compiled = compile::compile(block, allow);
        // Half the records at most (two words each), so that any chunk's
        // rewrite fits beside the chunks in place (the writer frees old
        // chunks in rounds).
        let budget6 = self.ranges_v6.len() / 4;
        let compiled6 = v6.map(|(b, a)| compile::compile_v6(b, a, budget6));
        let compile_seconds = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut written = writer::write_slots(
            &self.slots,
            &self.ranges,
            self.empty.as_ref().map(|by24| writer::EmptyBits {
                by24,
                by16: self.empty16.as_ref(),
                by22: self.empty22.as_ref(),
            }),
            &compiled,
            only,
        )
        .map_err(|e| DatapathError::other("updating the compiled IPv4 table", e))?;
        if let Some(c6) = &compiled6 {
            let w6 = writer::write(&self.slots_v6, &self.ranges_v6, c6)
                .map_err(|e| DatapathError::other("updating the compiled IPv6 table", e))?;
            written.slots += w6.slots;
            written.records += w6.records;
            written.rounds += w6.rounds;
        }
        Ok(TableReport {
            compile_seconds,
            write_seconds: t.elapsed().as_secs_f64(),
            records: compiled.records(),
            records_v6: compiled6.as_ref().map_or(0, |c| c.records()),
            deep_slots_v6: compiled6.as_ref().map_or(0, |c| c.deep_slots()),
            written,
            partial: only.is_some(),
        })
    }
}
