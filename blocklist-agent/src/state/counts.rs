//! Entry counts kept by the writer (`counts.json`), so that `status` and
//! `/metrics` report them without walking a million entries.
//!
//! Every writer records the counts with the `TABLE_META.generation` its
//! commit left. A reader trusts them only while the maps still have that
//! generation and are not mid-write; otherwise (an older writer, a killed
//! one, a write in progress) it counts by walking, as before.

use serde::{Deserialize, Serialize};

use super::StateDir;
use crate::{datapath::maps::TrieKind, prefix::Family};

/// Installed entries per trie, as of one generation of the maps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// `TABLE_META.generation` these counts belong to.
    pub generation: u64,
    /// Block entries, IPv4 (trie and exact map).
    pub block_v4: u64,
    /// Block entries, IPv6.
    pub block_v6: u64,
    /// Allow entries, IPv4.
    pub allow_v4: u64,
    /// Allow entries, IPv6.
    pub allow_v6: u64,
}

impl Counts {
    /// The count of one kind and family.
    pub fn get(&self, kind: TrieKind, family: Family) -> u64 {
        match (kind, family) {
            (TrieKind::Block, Family::V4) => self.block_v4,
            (TrieKind::Block, Family::V6) => self.block_v6,
            (TrieKind::Allow, Family::V4) => self.allow_v4,
            (TrieKind::Allow, Family::V6) => self.allow_v6,
        }
    }
}

impl StateDir {
    /// The counts the last writer recorded (`None`: none, or unreadable).
    pub fn counts(&self) -> Option<Counts> {
        let c: Counts = self.read_json("counts.json").ok()?;
        (c.generation != 0).then_some(c)
    }

    /// Records the counts (a failure only costs readers a walk).
    pub fn set_counts(&self, c: &Counts) {
        // Not synced: counts that a power cut leaves stale carry an older
        // generation and are not used.
        let bytes = serde_json::to_vec(c).unwrap_or_default();
        if let Err(e) = super::write_replaceable(&self.root().join("counts.json"), &bytes) {
            tracing::warn!(error = %format!("{e:#}"), "could not record the entry counts; status will count by walking the maps");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateDir::new(dir.path());
        assert_eq!(s.counts(), None);
        let c = Counts {
            generation: 7,
            block_v4: 1_000_000,
            block_v6: 3,
            allow_v4: 2,
            allow_v6: 1,
        };
        s.set_counts(&c);
        assert_eq!(s.counts(), Some(c));
        assert_eq!(c.get(TrieKind::Block, Family::V4), 1_000_000);
        std::fs::write(dir.path().join("counts.json"), "{").unwrap();
        assert_eq!(s.counts(), None);
    }
}
