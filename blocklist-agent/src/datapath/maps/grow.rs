//! The exact maps' side of growing one ([`grow`](crate::datapath::grow)):
//! copying its entries into the larger map, and opening the larger one
//! once its pin took the old one's place.

use super::*;

impl Maps {
    /// Entries `family`'s exact map holds at most.
    pub fn exact_capacity(&self, family: Family) -> Result<u32, DatapathError> {
        self.store_info(Store::Exact(family))
            .map(|i| i.max_entries())
    }

    /// Copies every entry of `family`'s exact map into the map of the
    /// same layout pinned as `to` under this pin directory; returns how
    /// many it copied.
    pub(crate) fn copy_exact(&self, family: Family, to: &str) -> Result<u64, DatapathError> {
        let mut entries = Vec::new();
        self.visit_exact(family, &mut |p, v| entries.push((p, *v)))?;
        let name = Store::Exact(family).name();
        match family {
            Family::V4 => {
                let mut m: ExactV4 = typed(&self.pin, to, Access::ReadWrite)?;
                let (keys, values): (Vec<[u8; 4]>, Vec<EntryValue>) = entries
                    .iter()
                    .filter_map(|(p, v)| Some((p.v4_bytes()?, *v)))
                    .unzip();
                insert_batched(&mut m, name, &keys, &values)?;
            }
            Family::V6 => {
                let mut m: ExactV6 = typed(&self.pin, to, Access::ReadWrite)?;
                let (keys, values): (Vec<[u8; 16]>, Vec<EntryValue>) = entries
                    .iter()
                    .filter_map(|(p, v)| Some((p.v6_bytes()?, *v)))
                    .unzip();
                insert_batched(&mut m, name, &keys, &values)?;
            }
        }
        Ok(entries.len() as u64)
    }

    /// Opens `family`'s exact map from its pin again, after a larger map
    /// was pinned in its place.
    pub(crate) fn reopen_exact(&mut self, family: Family) -> Result<(), DatapathError> {
        let name = Store::Exact(family).name();
        match family {
            Family::V4 => self.exact_v4 = typed(&self.pin, name, Access::ReadWrite)?,
            Family::V6 => self.exact_v6 = typed(&self.pin, name, Access::ReadWrite)?,
        }
        Ok(())
    }
}
