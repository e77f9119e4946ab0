//! A sync applied as the feeds' deltas: the cost of what changed, not of
//! what is installed.
//!
//! When the [`Base`] still describes the kernel (see [`super::memo`]),
//! the desired set after this sync differs from the installed one only at
//! the prefixes a feed gained or lost. For each such prefix the full
//! build's rule is evaluated directly: it is blocked when some list
//! (a feed's, or the hand-made entries') holds it and it passes the
//! guards ([`policy::guard`]), with the flags [`policy::flags_of`] gives
//! (so a drop feed joining a monitor feed's entry rewrites it to drop;
//! with a monitor feed configured, the entries under a changed prefix
//! are looked at too). Hand-made entries and protected ranges are the
//! base's (any change to them takes the full path), so no other prefix
//! can change its verdict. The writes go through the same
//! [`super::apply`] in the same order as a full sync, so the promise that
//! a kept address is never unblocked holds here too.

use std::{collections::BTreeSet, sync::Arc, time::Instant};

use super::{Plan, fit, memo::Base, origin_lists};
use crate::{
    config::Config,
    datapath::{maps::Maps, table::TableReport},
    feed::poll::{Delta, FeedOutcome},
    prefix::Prefix,
    read::listing::FeedIndex,
    state::manual::Manual,
    write::policy::{self, Guarded},
};

/// What a delta sync wrote.
pub struct Applied {
    /// What was written.
    pub plan: Plan,
    /// The compiled table's update, when there was one.
    pub table: Option<TableReport>,
    /// Wall time of the kernel writes.
    pub apply_seconds: f64,
    /// The new base (its `files` and `generation` are the caller's to
    /// refresh).
    pub base: Base,
}

/// What [`sync`] did.
pub enum Outcome {
    /// The deltas were applied (possibly none).
    Done(Box<Applied>),
    /// The base does not describe this sync: take the full path (the base
    /// is handed back, for lists the poll did not read).
    Full(Box<Base>),
}

/// Applies the polls' deltas on top of `base`, or says why it cannot.
pub fn sync(
    config: &Config,
    maps: &mut Maps,
    outcomes: &[FeedOutcome],
    manual: &Manual,
    allow: &BTreeSet<Prefix>,
    base: Base,
) -> anyhow::Result<Outcome> {
    let meta = maps.table_meta()?;
    let protected = policy::Protected::new(allow);
    let allow: Vec<Prefix> = allow.iter().copied().collect();
    let min = (config.guard.min_prefix_v4, config.guard.min_prefix_v6);
    let feeds: Vec<String> = config.feeds.iter().map(|f| f.name.clone()).collect();
    let usable = !base.reloaded
        && meta.dirty == 0
        && meta.generation == base.generation
        && base.manual == *manual
        && base.allow == allow
        && base.min == min
        && base.feeds == feeds
        && outcomes
            .iter()
            .all(|o| !o.uncertain && (o.entries.is_none() || o.delta.is_some()));
    if !usable {
        return Ok(Outcome::Full(Box::new(base)));
    }
    let changed: Vec<(&FeedOutcome, &Delta)> = outcomes
        .iter()
        .filter_map(|o| o.delta.as_ref().filter(|d| !d.is_empty()).map(|d| (o, d)))
        .collect();

    let mut lists: Vec<(String, Arc<Vec<Prefix>>)> = base.index.lists().to_vec();
    for (o, d) in &changed {
        let Some(slot) = lists.iter_mut().find(|(n, _)| *n == o.name) else {
            return Ok(Outcome::Full(Box::new(base)));
        };
        slot.1 = Arc::new(d.apply_to(&slot.1));
    }
    let mut origins: Vec<(String, String, Vec<Prefix>)> = base
        .index
        .origins()
        .iter()
        .filter(|(f, _, _)| !changed.iter().any(|(o, _)| o.name == *f))
        .cloned()
        .collect();
    // Only the CrowdSec feeds among them have origins.
    origins.extend(origin_lists(config, changed.iter().map(|(o, _)| *o)));
    let index = FeedIndex::from_sorted(lists).with_origins(origins);

    let mut candidates: Vec<Prefix> = changed
        .iter()
        .flat_map(|(_, d)| d.added.iter().chain(&d.removed))
        .copied()
        .collect();
    candidates.sort_unstable();
    candidates.dedup();

    let mut too_broad = base.too_broad as i64;
    for (_, d) in &changed {
        let broad = |v: &[Prefix]| {
            v.iter()
                .filter(|p| p.check_min(min.0, min.1).is_err())
                .count()
        };
        too_broad += broad(&d.added) as i64 - broad(&d.removed) as i64;
    }
    let mut shadowed = base.shadowed as i64;
    let mut plan = Plan::default();
    let now = std::time::SystemTime::now();
    {
        let (installed, _) = maps.installed()?;
        if policy::any_monitor(config) {
            // A drop entry that comes or goes changes the flags of the
            // monitor entries it holds (see `policy::flags_of`): they are
            // candidates too.
            let mut inside = Vec::new();
            for q in candidates
                .iter()
                .filter(|q| q.prefix_len() < if q.is_v4() { 32 } else { 128 })
            {
                // Installed entries sort by family, then address: the ones
                // inside `q` are one run.
                let at = |p: &Prefix| (!p.is_v4(), p.addr());
                let (first, last) = (
                    (!q.is_v4(), q.net().network()),
                    (!q.is_v4(), q.net().broadcast()),
                );
                let from = installed.partition_point(|(p, _)| at(p) < first);
                inside.extend(
                    installed[from..]
                        .iter()
                        .take_while(|(p, _)| at(p) <= last)
                        .map(|(p, _)| *p),
                );
            }
            candidates.extend(inside);
            candidates.sort_unstable();
            candidates.dedup();
        }
        // Every installed entry is unchanged unless a candidate below
        // removes or rewrites it.
        for (p, _) in installed {
            plan.family(p).unchanged += 1;
        }
        let flags_of = |p: &Prefix| {
            installed
                .binary_search_by_key(p, |(q, _)| *q)
                .ok()
                .map(|i| installed[i].1.flags)
        };
        for p in candidates {
            let (was, is) = (base.index.lists_prefix(&p), index.lists_prefix(&p));
            match policy::guard(&p, min, &protected) {
                Guarded::TooBroad => continue,
                Guarded::Shadowed => {
                    shadowed += i64::from(is) - i64::from(was);
                    continue;
                }
                Guarded::Block => {}
            }
            // The full build's rule for this one prefix: its flags from
            // every list holding it (drop wins over monitor, hand-made
            // entries keep their flag), or nothing when none does.
            let want = policy::flags_of(&p, index.lists(), manual, config, now);
            match (want, flags_of(&p)) {
                (Some(w), Some(f)) if w == f => {}
                (Some(w), old) => {
                    plan.block_add.push((p, w));
                    let fam = plan.family(&p);
                    fam.added += 1;
                    if old.is_some() {
                        fam.unchanged -= 1;
                    }
                }
                (None, Some(_)) => {
                    plan.block_del.push(p);
                    let fam = plan.family(&p);
                    fam.removed += 1;
                    fam.unchanged -= 1;
                }
                (None, None) => {}
            }
        }
    }

    let mut table = None;
    let mut apply_seconds = 0.0;
    if !plan.is_empty() {
        let t = Instant::now();
        table = fit::write(maps, &mut plan, false)?;
        apply_seconds = t.elapsed().as_secs_f64();
    }
    let base = Base {
        index: Arc::new(index),
        too_broad: too_broad.max(0) as usize,
        shadowed: shadowed.max(0) as usize,
        ..base
    };
    Ok(Outcome::Done(Box::new(Applied {
        plan,
        table,
        apply_seconds,
        base,
    })))
}
