//! The compiled IPv4 lookup table: the XDP program's fast path.
//!
//! The block and allow tries are the record of what is installed; this
//! module turns their IPv4 entries into `TABLE_V4` (one slot per /16) and
//! `RANGES_V4` (sorted range records per /16 that holds entries), so that
//! the program decides an IPv4 address with one slot load and at most 17
//! record loads, however many entries there are. The layout is documented
//! once, in `blocklist_ebpf`.
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
use blocklist_ebpf::{RANGES_V4_RECORDS, TABLE_V4_SLOTS, map_names};

use super::{DatapathError, mmap::MappedU64, pin::PinDir};

/// What bringing the table in line with the tries did.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct TableReport {
    /// Seconds to compile the entries.
    pub compile_seconds: f64,
    /// Seconds to write the changed slots and chunks.
    pub write_seconds: f64,
    /// Range records the table uses.
    pub records: usize,
    /// What the write touched.
    pub written: writer::WriteReport,
}

/// The table's two arrays, mapped into this process.
pub struct TableMaps {
    slots: MappedU64,
    ranges: MappedU64,
}

impl TableMaps {
    /// Maps the pinned `TABLE_V4` and `RANGES_V4` read-write.
    pub fn open(pin: &PinDir) -> Result<Self, DatapathError> {
        let map = |name: &str, entries: u32| {
            let path = pin.map(name);
            let what = || format!("mapping {} into memory", path.display());
            let data = MapData::from_pin(&path).map_err(|e| DatapathError::other(what(), e))?;
            MappedU64::new(data.fd().as_fd(), entries as usize)
                .map_err(|e| DatapathError::other(what(), e))
        };
        Ok(Self {
            slots: map(map_names::TABLE_V4, TABLE_V4_SLOTS)?,
            ranges: map(map_names::RANGES_V4, RANGES_V4_RECORDS)?,
        })
    }

    /// Compiles `block` and `allow` (IPv4, host byte order) and writes
    /// what changed.
    pub fn update(
        &self,
        block: &[compile::Entry],
        allow: &[compile::Entry],
    ) -> Result<TableReport, DatapathError> {
        let t = Instant::now();
        let compiled = compile::compile(block, allow);
        let compile_seconds = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let written = writer::write(&self.slots, &self.ranges, &compiled)
            .map_err(|e| DatapathError::other("updating the compiled IPv4 table", e))?;
        Ok(TableReport {
            compile_seconds,
            write_seconds: t.elapsed().as_secs_f64(),
            records: compiled.records(),
            written,
        })
    }
}
