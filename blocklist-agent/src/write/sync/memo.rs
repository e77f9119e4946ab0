//! What a long-running agent remembers between syncs, so that a sync costs
//! what changed rather than what is installed.
//!
//! After a sync that left the kernel exactly as desired, the memo keeps a
//! [`Base`]: the generation `TABLE_META` had after its commit, every
//! feed's distinct prefixes (the [`FeedIndex`]), the hand-made entries and
//! the protected ranges it was computed with, and the size and time of
//! each feed's list file. The next sync trusts it only while all of that
//! still holds: the same generation (nobody else wrote the maps), the same
//! hand-made entries, protected ranges, guards and feeds, and list files
//! nobody replaced. Then a feed whose body did not change is not read
//! from disk at all, and a feed that changed is applied as its delta
//! ([`super::delta`]). Anything else, or a fresh process (`sync --once`),
//! takes the full path, which reads everything once and sets a new base.
//!
//! A configuration reload keeps the base but bars the delta path: the
//! lists still describe their list files (each is trusted only while its
//! file is the one recorded), so the full sync after a reload need not
//! read and decode every list file again (at a million entries, the
//! largest allocation of that sync), while everything else the base holds
//! was computed under the old configuration and is not used.

use std::{cell::RefCell, collections::BTreeMap, sync::Arc, time::SystemTime};

use crate::{
    feed::bouncer::Sessions, prefix::Prefix, read::listing::FeedIndex, state::StateDir,
    state::manual::Manual,
};

/// The state one sync left behind, for the next one.
#[derive(Debug)]
pub struct Base {
    /// `TABLE_META.generation` after this agent's last commit.
    pub generation: u64,
    /// Every feed's distinct prefixes (and `manual`), as installed.
    pub index: Arc<FeedIndex>,
    /// The hand-made entries the desired set was built with.
    pub manual: Manual,
    /// The protected ranges (allow entries) it was built with, sorted.
    pub allow: Vec<Prefix>,
    /// `guard.min_prefix_v4`, `guard.min_prefix_v6`.
    pub min: (u8, u8),
    /// The configured feeds, in order.
    pub feeds: Vec<String>,
    /// Each feed's list file (size, modified) when the base was made.
    pub files: BTreeMap<String, Option<(u64, SystemTime)>>,
    /// Refused as too broad, and left out as inside a protected range.
    pub too_broad: usize,
    /// See `too_broad`.
    pub shadowed: usize,
    /// Set by a configuration reload: only the lists may be used, and the
    /// next sync takes the full path.
    pub reloaded: bool,
}

/// Kept by `run` for its lifetime; a one-shot sync uses a fresh one.
#[derive(Debug, Default)]
pub struct SyncMemo {
    base: RefCell<Option<Base>>,
    sessions: Sessions,
}

impl SyncMemo {
    /// The CrowdSec feeds' sessions.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// After a configuration reload: the next sync takes the full path,
    /// but the feeds' lists the base holds are still used for list files
    /// nobody replaced. CrowdSec sessions are kept.
    pub fn reloaded(&self) {
        if let Some(base) = self.base.borrow_mut().as_mut() {
            base.reloaded = true;
        }
    }

    pub(crate) fn set_base(&self, base: Option<Base>) {
        self.base.replace(base);
    }

    pub(crate) fn take_base(&self) -> Option<Base> {
        self.base.take()
    }

    /// The feed's distinct prefixes as the base holds them, when its list
    /// file is still the one the base was made with (so it need not be
    /// read).
    pub fn known_list(&self, state: &StateDir, feed: &str) -> Option<Arc<Vec<Prefix>>> {
        let base = self.base.borrow();
        let base = base.as_ref()?;
        let recorded = base.files.get(feed)?;
        if *recorded != state.feed_entries_signature(feed) {
            return None;
        }
        base.index.list(feed).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Entry;

    fn base_for(state: &StateDir, list: Vec<Prefix>) -> Base {
        Base {
            generation: 7,
            index: Arc::new(FeedIndex::from_sorted(vec![("a".into(), Arc::new(list))])),
            manual: Manual::default(),
            allow: Vec::new(),
            min: (8, 32),
            feeds: vec!["a".into()],
            files: [("a".to_owned(), state.feed_entries_signature("a"))].into(),
            too_broad: 0,
            shadowed: 0,
            reloaded: false,
        }
    }

    #[test]
    fn a_reload_keeps_the_lists_of_unreplaced_files_and_bars_the_delta_path() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let list: Vec<Prefix> = vec!["192.0.2.0/24".parse().unwrap()];
        let entries: Vec<Entry> = list.iter().copied().map(Entry::new).collect();
        state.set_feed_entries("a", &entries).unwrap();
        let memo = SyncMemo::default();
        memo.set_base(Some(base_for(&state, list.clone())));
        memo.reloaded();
        assert_eq!(
            memo.known_list(&state, "a").as_deref(),
            Some(&list),
            "the list file is the one recorded: its list is not read again"
        );
        let base = memo.take_base().expect("a reload keeps the base");
        assert!(
            base.reloaded,
            "but the next sync may not apply deltas to it"
        );

        // Without a base, a reload has nothing to keep.
        memo.reloaded();
        assert!(memo.take_base().is_none());

        // A list file replaced since is read again.
        memo.set_base(Some(base_for(&state, list)));
        let more: Vec<Entry> = ["192.0.2.0/24", "198.51.100.0/24"]
            .iter()
            .map(|p| Entry::new(p.parse().unwrap()))
            .collect();
        state.set_feed_entries("a", &more).unwrap();
        memo.reloaded();
        assert!(memo.known_list(&state, "a").is_none());
    }
}
