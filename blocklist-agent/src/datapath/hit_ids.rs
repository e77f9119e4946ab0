//! `HIT_IDS`: which entry ids were ever hit, a byte per id (the ABI note
//! (5) in `blocklist_ebpf`), mapped into this process.
//!
//! A `/metrics` scrape needs the counters of the entries that were hit,
//! which are few, out of up to a million installed. Walking the tries to
//! find them costs about half a second at a million entries; reading this
//! 1 MiB map costs a scan of memory.

use std::os::fd::AsFd as _;

use aya::maps::MapData;
use blocklist_ebpf::{HIT_IDS_SEEDED, map_names};

use super::{DatapathError, mmap::MappedU64, pin::PinDir};

/// The pinned `HIT_IDS`, mapped read-write.
pub struct HitIds {
    words: MappedU64,
}

fn byte_mask(id: u32) -> u64 {
    let mut b = [0u8; 8];
    b[(id & 7) as usize] = 1;
    u64::from_ne_bytes(b)
}

impl HitIds {
    /// Maps the pinned map; `None` when the program under `pin` predates
    /// it (attached by an older agent: readers then walk the maps).
    pub fn open(pin: &PinDir) -> Result<Option<Self>, DatapathError> {
        let path = pin.map(map_names::HIT_IDS);
        if !path.exists() {
            return Ok(None);
        }
        let what = || format!("mapping {} into memory", path.display());
        let data = MapData::from_pin(&path).map_err(|e| DatapathError::other(what(), e))?;
        // Its size follows `[datapath] max_entries` when it was created.
        let len = data
            .info()
            .map_err(|e| DatapathError::other(what(), e))?
            .max_entries();
        let words = MappedU64::new(data.fd().as_fd(), len as usize)
            .map_err(|e| DatapathError::other(what(), e))?;
        Ok(Some(Self { words }))
    }

    /// True once the entries hit before the map existed are marked too
    /// ([`HitIds::seed`]); until then the marks are incomplete.
    pub fn seeded(&self) -> bool {
        self.words.load(0).to_ne_bytes()[0] == HIT_IDS_SEEDED
    }

    /// Marks `ids` (every entry whose counters say it was hit, read after
    /// the map was created), then records that the marks are complete.
    /// Atomic ORs, so the program's own marks meanwhile are kept.
    pub fn seed(&self, ids: impl IntoIterator<Item = u32>) {
        for id in ids {
            if id != 0 && (id as usize) < self.words.len() * 8 {
                self.words.or((id >> 3) as usize, byte_mask(id));
            }
        }
        let mut b = [0u8; 8];
        b[0] = HIT_IDS_SEEDED;
        self.words.or(0, u64::from_ne_bytes(b));
    }

    /// Every marked id, ascending (id 0, the seeded flag, excluded).
    pub fn ids(&self) -> Vec<u32> {
        let mut out = Vec::new();
        for w in 0..self.words.len() {
            let v = self.words.load(w);
            if v == 0 {
                continue;
            }
            for (k, b) in v.to_ne_bytes().iter().enumerate() {
                let id = (w * 8 + k) as u32;
                if *b != 0 && id != 0 {
                    out.push(id);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::byte_mask;

    #[test]
    fn each_id_has_its_own_byte() {
        for id in 0..8 {
            let bytes = byte_mask(id).to_ne_bytes();
            assert_eq!(bytes.iter().filter(|b| **b != 0).count(), 1);
            assert_eq!(bytes[id as usize], 1);
        }
        assert_eq!(byte_mask(9), byte_mask(1));
    }
}
