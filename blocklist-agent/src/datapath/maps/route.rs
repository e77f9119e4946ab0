//! Where an entry lives: the one place that decides, for an entry of a
//! kind, which map holds it and under which key.
//!
//! A block entry for a single address (/32, /128) goes to its family's
//! exact map, since a hash probe costs the datapath far less than a trie
//! walk; every other entry goes to its kind's trie of its family.

use super::*;

/// One of the six maps that hold entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    /// `BLOCK_V4`, `BLOCK_V6`, `ALLOW_V4` or `ALLOW_V6`.
    Trie(TrieKind, Family),
    /// `EXACT_V4` or `EXACT_V6`: the single-address block entries.
    Exact(Family),
}

impl Store {
    /// Where the entry `prefix` of `kind` lives.
    ///
    /// ```
    /// use blocklist_agent::{datapath::maps::{Store, TrieKind}, prefix::{Family, Prefix}};
    /// let p = |s: &str| Prefix::new(s.parse().unwrap());
    /// assert_eq!(Store::of(TrieKind::Block, p("192.0.2.1/32")), Store::Exact(Family::V4));
    /// assert_eq!(Store::of(TrieKind::Allow, p("192.0.2.1/32")).name(), "ALLOW_V4");
    /// assert_eq!(Store::of(TrieKind::Block, p("2001:db8::/32")).name(), "BLOCK_V6");
    /// ```
    pub fn of(kind: TrieKind, prefix: Prefix) -> Self {
        if kind == TrieKind::Block && prefix.is_host() {
            Store::Exact(prefix.family())
        } else {
            Store::Trie(kind, prefix.family())
        }
    }

    /// The map's name, which is also its pin's.
    pub const fn name(self) -> &'static str {
        match self {
            Store::Trie(TrieKind::Block, Family::V4) => map_names::BLOCK_V4,
            Store::Trie(TrieKind::Block, Family::V6) => map_names::BLOCK_V6,
            Store::Trie(TrieKind::Allow, Family::V4) => map_names::ALLOW_V4,
            Store::Trie(TrieKind::Allow, Family::V6) => map_names::ALLOW_V6,
            Store::Exact(Family::V4) => map_names::EXACT_V4,
            Store::Exact(Family::V6) => map_names::EXACT_V6,
        }
    }
}

/// An entry's key in the map [`Store::of`] names.
pub(super) enum Route {
    TrieV4(TrieKind, Key<[u8; 8]>),
    TrieV6(TrieKind, Key<[u8; 16]>),
    ExactV4([u8; 4]),
    ExactV6([u8; 16]),
}

impl Route {
    pub(super) fn of(kind: TrieKind, prefix: Prefix) -> Self {
        let len = u32::from(prefix.prefix_len());
        match (
            Store::of(kind, prefix),
            prefix.v4_bytes(),
            prefix.v6_bytes(),
        ) {
            (Store::Exact(_), Some(b), _) => Route::ExactV4(b),
            (Store::Exact(_), _, Some(b)) => Route::ExactV6(b),
            (Store::Trie(k, _), Some(b), _) => Route::TrieV4(k, v4_key(len, b)),
            (Store::Trie(k, _), _, Some(b)) => Route::TrieV6(k, Key::new(len, b)),
            _ => unreachable!("a prefix is IPv4 or IPv6"),
        }
    }
}

impl Maps {
    /// A trie of one kind and family.
    pub(super) fn v4(&self, kind: TrieKind) -> &TrieV4 {
        match kind {
            TrieKind::Block => &self.block_v4,
            TrieKind::Allow => &self.allow_v4,
        }
    }

    pub(super) fn v6(&self, kind: TrieKind) -> &TrieV6 {
        match kind {
            TrieKind::Block => &self.block_v6,
            TrieKind::Allow => &self.allow_v6,
        }
    }

    pub(super) fn v4_mut(&mut self, kind: TrieKind) -> &mut TrieV4 {
        match kind {
            TrieKind::Block => &mut self.block_v4,
            TrieKind::Allow => &mut self.allow_v4,
        }
    }

    pub(super) fn v6_mut(&mut self, kind: TrieKind) -> &mut TrieV6 {
        match kind {
            TrieKind::Block => &mut self.block_v6,
            TrieKind::Allow => &mut self.allow_v6,
        }
    }

    /// The capacity of one store, as created.
    pub(super) fn store_info(&self, store: Store) -> Result<aya::maps::MapInfo, DatapathError> {
        let info = match store {
            Store::Exact(Family::V4) => self.exact_v4.map().info(),
            Store::Exact(Family::V6) => self.exact_v6.map().info(),
            Store::Trie(kind, Family::V4) => self.v4(kind).map().info(),
            Store::Trie(kind, Family::V6) => self.v6(kind).map().info(),
        };
        info.map_err(map_err(format!("reading the capacity of {}", store.name())))
    }

    /// Capacity of one store (0 if it cannot be read).
    pub(super) fn max_entries(&self, store: Store) -> u32 {
        self.store_info(store).map_or(0, |i| i.max_entries())
    }
}
