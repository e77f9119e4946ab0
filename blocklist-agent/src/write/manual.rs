//! Hand-made entries (`block`, `unblock`, `allow`, `unallow`): parsing
//! them, writing them to the tries and to `manual.json` at once, loading
//! them back (rebuilt from the tries when the file is damaged), and their
//! expiry (`block --for`).
//!
//! They are their own source: a sync never removes them, and the policy
//! adds them to every feed's entries (`ENTRY_FLAG_MANUAL`). Every argument
//! is validated before anything is touched, so invalid input changes
//! nothing. The record types live with the rest of the state directory
//! ([`crate::state::manual`]); [`crate::agent::edit_manual`] is the
//! operation the verbs call (the writer lock and the maps around
//! [`edit`]).

use std::time::SystemTime;

use anyhow::{Context as _, bail};

use crate::{
    config::Config,
    datapath::{
        grow,
        maps::{Maps, TrieKind},
    },
    prefix::{Family, Prefix},
    state::{
        StateDir,
        manual::{Manual, ManualBlock},
    },
};

/// Parses every argument; refuses all of them if any is invalid or, with
/// `guard`, broader than the configured minimum. Duplicates count once.
///
/// ```
/// use blocklist_agent::{config::Config, write::manual};
/// let c = Config::default();
/// assert_eq!(manual::parse(&c, &["192.0.2.1".into(), "192.0.2.1/32".into()], true)?.len(), 1);
/// assert!(manual::parse(&c, &["192.0.2.1".into(), "0.0.0.0/0".into()], true).is_err());
/// # Ok::<(), anyhow::Error>(())
/// ```
pub fn parse(config: &Config, cidrs: &[String], guard: bool) -> anyhow::Result<Vec<Prefix>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for s in cidrs {
        let parsed = s.parse::<Prefix>().and_then(|p| {
            if guard {
                p.check_min(config.guard.min_prefix_v4, config.guard.min_prefix_v6)
            } else {
                Ok(p)
            }
        });
        match parsed {
            Ok(p) if !out.contains(&p) => out.push(p),
            Ok(_) => {}
            Err(e) => errors.push(e.to_string()),
        }
    }
    if !errors.is_empty() {
        bail!("nothing was changed: {}", errors.join("; "));
    }
    Ok(out)
}

/// What [`edit`] did with one prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edited {
    /// Now installed and recorded.
    Added,
    /// Was installed and recorded already.
    AlreadyPresent,
    /// Taken out of the tries and the record.
    Removed,
    /// Was in neither.
    NotPresent,
}

impl Edited {
    /// How the CLI says it.
    pub fn as_str(self) -> &'static str {
        match self {
            Edited::Added => "added",
            Edited::AlreadyPresent => "already present",
            Edited::Removed => "removed",
            Edited::NotPresent => "not present",
        }
    }
}

/// Adds (`add`) or removes `prefixes` in the `kind` tries of `maps` and
/// in the hand-made entries, in one batch (the installed entries are read
/// once for the ids and the table is compiled once, however many prefixes
/// there are). `expires` applies to block entries. The caller holds the
/// writer lock.
pub fn edit(
    maps: &mut Maps,
    state: &StateDir,
    kind: TrieKind,
    prefixes: &[Prefix],
    add: bool,
    expires: Option<SystemTime>,
) -> anyhow::Result<Vec<(Prefix, Edited)>> {
    let mut manual = load(state, maps)?;
    if add && kind == TrieKind::Block {
        let adds: Vec<(Prefix, u32)> = prefixes.iter().map(|p| (*p, 0)).collect();
        let (peak, _) = maps.room_with(&adds, &[])?;
        grow::make_room(maps, &peak)
            .context("growing an exact map for the new entries; nothing was changed")?;
    }
    let mut done = Vec::with_capacity(prefixes.len());
    maps.batch(|maps| -> anyhow::Result<()> {
        for p in prefixes {
            let recorded = record(&mut manual, kind, *p, add, expires);
            let changed = if add {
                maps.insert_manual(kind, *p)?
            } else {
                maps.remove(kind, *p)?
            };
            done.push((
                *p,
                match (add, changed || recorded) {
                    (true, true) => Edited::Added,
                    (true, false) => Edited::AlreadyPresent,
                    (false, true) => Edited::Removed,
                    (false, false) => Edited::NotPresent,
                },
            ));
        }
        Ok(())
    })?;
    state
        .set_manual(&manual)
        .with_context(|| format!("recording hand-made entries in {}", state.root().display()))?;
    super::sync::record_counts(maps, state)?;
    Ok(done)
}

/// Adds or removes one prefix in the record; true when that changed it.
fn record(
    manual: &mut Manual,
    kind: TrieKind,
    p: Prefix,
    add: bool,
    expires: Option<SystemTime>,
) -> bool {
    match (kind, add) {
        (TrieKind::Block, true) => manual.block.insert(p, ManualBlock { expires }).is_none(),
        (TrieKind::Block, false) => manual.block.remove(&p).is_some(),
        (TrieKind::Allow, true) => {
            let new = !manual.allow.contains(&p);
            if new {
                manual.allow.push(p);
            }
            new
        }
        (TrieKind::Allow, false) => {
            let before = manual.allow.len();
            manual.allow.retain(|a| *a != p);
            manual.allow.len() != before
        }
    }
}

/// The hand-made entries; a corrupt `manual.json` (power cut) is moved
/// aside and rebuilt from the pinned tries (entries flagged manual), so a
/// sync never drops them. Expiry times cannot be recovered.
pub fn load(state: &StateDir, maps: &Maps) -> anyhow::Result<Manual> {
    match state.manual() {
        Ok(m) => Ok(m),
        Err(e) => {
            let path = state.root().join("manual.json");
            let aside = state.root().join("manual.json.corrupt");
            tracing::warn!(
                error = %format!("{e:#}"),
                moved_to = %aside.display(),
                "hand-made entries unreadable; rebuilding them from the pinned maps (expiry times are lost)"
            );
            let _ = std::fs::rename(&path, &aside);
            let mut m = Manual::default();
            for family in Family::ALL {
                maps.visit(TrieKind::Block, family, |p, v| {
                    if v.flags & blocklist_ebpf::ENTRY_FLAG_MANUAL != 0 {
                        m.block.insert(p, Default::default());
                    }
                })?;
            }
            state.set_manual(&m).context("rewriting manual.json")?;
            Ok(m)
        }
    }
}

/// Drops the block entries whose `--for` ran out at `now` from `manual`
/// (and, unless `dry_run`, from `manual.json`); the sync that follows
/// takes them out of the tries.
pub fn prune_expired(
    state: &StateDir,
    manual: &mut Manual,
    now: SystemTime,
    dry_run: bool,
) -> anyhow::Result<()> {
    let before = manual.block.len();
    manual.block.retain(|_, m| !m.expired(now));
    if manual.block.len() != before && !dry_run {
        state
            .set_manual(manual)
            .context("pruning expired hand-made entries")?;
    }
    Ok(())
}

/// True when a recorded block entry's `--for` has run out at `now` (the
/// agent then syncs at once instead of at the next interval).
pub fn any_expired(state: &StateDir, now: SystemTime) -> bool {
    state
        .manual()
        .map(|m| m.block.values().any(|b| b.expired(now)))
        .unwrap_or(false)
}
