//! Which feeds list which prefixes: the one index `list`, `check`, `top`,
//! `/metrics` and the drop events name feeds by. `run` builds it from each
//! sync (prefixes only, shared between syncs); a one-shot command reads it
//! from the state directory with the STIX indicator ids ([`FeedIndex::load`]).
//!
//! ```
//! use blocklist_agent::read::listing::FeedIndex;
//! let p = "192.0.2.0/24".parse().unwrap();
//! let index = FeedIndex::new(vec![("drop".into(), vec![p])]);
//! assert_eq!(index.feeds_of(&p)[0].feed, "drop");
//! ```

use std::{collections::HashMap, sync::Arc};

use serde::Serialize;

use crate::{prefix::Prefix, state::StateDir};

/// One feed listing a prefix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Listing {
    /// The feed.
    pub feed: String,
    /// The STIX indicator id, for STIX/TAXII feeds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// Which feeds list which prefixes: per feed, its distinct prefixes
/// sorted (a sorted Vec is a third of the memory of a map, and only the
/// few prefixes that were hit are ever looked up).
#[derive(Debug, Default)]
pub struct FeedIndex {
    /// Shared, so that a sync that changes one feed keeps the others'.
    feeds: Vec<(String, Arc<Vec<Prefix>>)>,
    /// CrowdSec feeds: (feed, decision origin, prefixes), sorted prefixes.
    origins: Vec<(String, String, Vec<Prefix>)>,
    /// STIX indicator ids by prefix, as (position in `feeds`, id); only
    /// read from the state directory ([`FeedIndex::load`]), where a
    /// command shows them once. `run` keeps none.
    ids: HashMap<Prefix, Vec<(usize, String)>>,
}

impl FeedIndex {
    /// Builds the index from (feed, prefixes) pairs.
    pub fn new(feeds: Vec<(String, Vec<Prefix>)>) -> Self {
        let feeds = feeds
            .into_iter()
            .map(|(n, mut v)| {
                v.sort_unstable();
                v.dedup();
                (n, Arc::new(v))
            })
            .collect();
        Self {
            feeds,
            ..Self::default()
        }
    }

    /// From lists that are already sorted and distinct.
    pub fn from_sorted(feeds: Vec<(String, Arc<Vec<Prefix>>)>) -> Self {
        debug_assert!(feeds.iter().all(|(_, v)| v.windows(2).all(|w| w[0] < w[1])));
        Self {
            feeds,
            ..Self::default()
        }
    }

    /// Reads the last good entries of `feeds` (every feed with state when
    /// empty) from the state directory, with their STIX indicator ids.
    /// Inspection must work with a damaged state directory: a feed whose
    /// list is unreadable names no entries (the next good sync rewrites
    /// it).
    pub fn load(state: &StateDir, feeds: &[String]) -> Self {
        let names = if feeds.is_empty() {
            state.feed_names()
        } else {
            feeds.to_vec()
        };
        let mut index = Self::default();
        for name in names {
            let entries = match state.feed_entries(&name) {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(feed = %name, error = %format!("{e:#}"), "skipping an unreadable feed list");
                    continue;
                }
            };
            let at = index.feeds.len();
            let mut prefixes = Vec::with_capacity(entries.len());
            for e in entries {
                if let Some(id) = e.id {
                    index.ids.entry(e.prefix).or_default().push((at, id));
                }
                prefixes.push(e.prefix);
            }
            prefixes.sort_unstable();
            prefixes.dedup();
            index.feeds.push((name, Arc::new(prefixes)));
        }
        index
    }

    /// One feed's distinct prefixes, sorted.
    pub fn list(&self, feed: &str) -> Option<&Arc<Vec<Prefix>>> {
        self.feeds.iter().find(|(n, _)| n == feed).map(|(_, v)| v)
    }

    /// Every (feed, distinct prefixes), in order.
    pub fn lists(&self) -> &[(String, Arc<Vec<Prefix>>)] {
        &self.feeds
    }

    /// True when some list holds exactly `prefix`.
    pub fn lists_prefix(&self, prefix: &Prefix) -> bool {
        self.feeds
            .iter()
            .any(|(_, v)| v.binary_search(prefix).is_ok())
    }

    /// Adds the CrowdSec feeds' prefixes by decision origin.
    pub fn with_origins(mut self, origins: Vec<(String, String, Vec<Prefix>)>) -> Self {
        self.origins = origins
            .into_iter()
            .map(|(f, o, mut v)| {
                v.sort_unstable();
                v.dedup();
                (f, o, v)
            })
            .collect();
        self
    }

    /// (feed, origin, prefixes) of the CrowdSec feeds.
    pub fn origins(&self) -> &[(String, String, Vec<Prefix>)] {
        &self.origins
    }

    /// The feeds listing `prefix` (one listing per indicator for STIX
    /// feeds whose ids were loaded), in feed order.
    pub fn feeds_of(&self, prefix: &Prefix) -> Vec<Listing> {
        let ids = self.ids.get(prefix).map_or(&[][..], Vec::as_slice);
        let mut out = Vec::new();
        for (at, (feed, list)) in self.feeds.iter().enumerate() {
            if list.binary_search(prefix).is_err() {
                continue;
            }
            let before = out.len();
            out.extend(ids.iter().filter(|(f, _)| *f == at).map(|(_, id)| Listing {
                feed: feed.clone(),
                id: Some(id.clone()),
            }));
            if out.len() == before {
                out.push(Listing {
                    feed: feed.clone(),
                    id: None,
                });
            }
        }
        out
    }

    /// (feed, IPv4 entries, IPv6 entries).
    pub fn counts(&self) -> Vec<(String, usize, usize)> {
        self.feeds
            .iter()
            .map(|(n, v)| {
                let v4 = v.iter().filter(|p| p.is_v4()).count();
                (n.clone(), v4, v.len() - v4)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Entry;

    #[test]
    fn loads_every_feed_with_its_indicator_ids_in_feed_order() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let p = |s: &str| s.parse::<Prefix>().unwrap();
        let tagged = |s: &str, id: &str| Entry {
            prefix: p(s),
            id: Some(id.into()),
        };
        state
            .set_feed_entries("plain", &[Entry::new(p("192.0.2.0/24"))])
            .unwrap();
        state
            .set_feed_entries(
                "taxii",
                &[
                    tagged("192.0.2.0/24", "indicator--a"),
                    tagged("192.0.2.0/24", "indicator--b"),
                    tagged("198.51.100.7/32", "indicator--c"),
                ],
            )
            .unwrap();
        let index = FeedIndex::load(&state, &["plain".into(), "taxii".into()]);
        let names = |p: Prefix| -> Vec<(String, Option<String>)> {
            index
                .feeds_of(&p)
                .into_iter()
                .map(|l| (l.feed, l.id))
                .collect()
        };
        assert_eq!(
            names(p("192.0.2.0/24")),
            [
                ("plain".into(), None),
                ("taxii".into(), Some("indicator--a".into())),
                ("taxii".into(), Some("indicator--b".into())),
            ]
        );
        assert_eq!(
            names(p("198.51.100.7/32")),
            [("taxii".into(), Some("indicator--c".into()))]
        );
        assert!(names(p("203.0.113.0/24")).is_empty());
        assert!(index.lists_prefix(&p("198.51.100.7/32")));
        // Only the feeds asked for; a feed with no list names nothing.
        let one = FeedIndex::load(&state, &["taxii".into(), "gone".into()]);
        assert_eq!(one.feeds_of(&p("192.0.2.0/24")).len(), 2);
    }
}
