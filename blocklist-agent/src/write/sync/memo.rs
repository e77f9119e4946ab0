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

    /// Forgets the base (after a configuration reload): the next sync
    /// takes the full path. CrowdSec sessions are kept.
    pub fn forget(&self) {
        self.base.replace(None);
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
