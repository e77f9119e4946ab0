//! Desired versus installed: the difference, applied incrementally.
//!
//! The installed set is what the maps hold (read once per process, then
//! kept in step: see `datapath/mirror.rs`), so a restarted agent
//! re-applies nothing and a sync with no change writes nothing. A
//! long-running agent also keeps what its last sync saw ([`memo`]) and then
//! applies a changed feed as its delta ([`delta`]). Changes go in this order: allow inserts, block inserts (and
//! flag changes, which overwrite in place), block deletes, allow deletes.
//! An address that is in both the old and the new list is therefore never
//! unblocked, not even for a moment. A change that would not fit the maps
//! that way goes in two batches or is refused whole ([`fit`]).

pub mod delta;
pub mod fit;
pub mod memo;

use std::{
    cmp::Ordering,
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use memo::{Base, SyncMemo};

use anyhow::Context as _;
use serde::Serialize;

use crate::{
    config::Config,
    datapath::maps::{Installed, Maps, TrieKind},
    feed::{
        fetch::Fetcher,
        poll::{self, FeedOutcome, FeedStatus, PollContext},
    },
    prefix::{Family, Prefix},
    read::listing::FeedIndex,
    state::StateDir,
    write::policy::{self, Desired},
};

/// Counts for one family.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct FamilyDiff {
    /// Entries to add (or whose flags change).
    pub added: usize,
    /// Entries to remove.
    pub removed: usize,
    /// Entries already right.
    pub unchanged: usize,
}

/// The changes one sync makes.
#[derive(Debug, Default)]
pub struct Plan {
    /// Block entries to insert or overwrite.
    pub block_add: Vec<(Prefix, u32)>,
    /// Block entries to delete.
    pub block_del: Vec<Prefix>,
    /// Allow entries to insert.
    pub allow_add: Vec<Prefix>,
    /// Allow entries to delete.
    pub allow_del: Vec<Prefix>,
    /// Block trie counts, IPv4.
    pub v4: FamilyDiff,
    /// Block trie counts, IPv6.
    pub v6: FamilyDiff,
}

impl Plan {
    /// The counts of `prefix`'s family.
    pub fn family(&mut self, prefix: &Prefix) -> &mut FamilyDiff {
        if prefix.is_v4() {
            &mut self.v4
        } else {
            &mut self.v6
        }
    }

    /// True when the kernel already matches.
    pub fn is_empty(&self) -> bool {
        self.block_add.is_empty()
            && self.block_del.is_empty()
            && self.allow_add.is_empty()
            && self.allow_del.is_empty()
    }
}

/// Compares the desired state with what the tries hold (as the maps
/// handle knows it: no walk of the kernel when it wrote last).
pub fn plan(maps: &mut Maps, desired: &Desired) -> anyhow::Result<Plan> {
    let (installed, allowed) = maps.installed()?;
    Ok(plan_from(installed, allowed, desired))
}

/// The plan from the installed block entries and allow entries (both
/// sorted by prefix, as [`Maps::installed`] gives them), as data: the pure
/// part of [`plan`].
pub fn plan_from(installed: &[(Prefix, Installed)], allowed: &[Prefix], desired: &Desired) -> Plan {
    let mut p = Plan::default();
    debug_assert!(installed.is_sorted_by_key(|(p, _)| *p));
    debug_assert!(allowed.is_sorted());
    // Both sides in prefix order, walked once together. A binary search
    // of the installed entries for each desired one, in a hash map's
    // order, missed the cache at every step: about 0.9 s of a 1% change
    // sync at 1,000,000 entries.
    debug_assert!(desired.block.is_sorted_by_key(|(p, _)| *p));
    let (mut want, mut have) = (
        desired.block.iter().copied().peekable(),
        installed.iter().peekable(),
    );
    loop {
        let order = match (want.peek(), have.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((w, _)), Some((h, _))) => w.cmp(h),
        };
        match order {
            Ordering::Less => {
                let (prefix, flags) = want.next().expect("peeked");
                p.family(&prefix).added += 1;
                p.block_add.push((prefix, flags));
            }
            Ordering::Greater => {
                let (prefix, _) = have.next().expect("peeked");
                p.family(prefix).removed += 1;
                p.block_del.push(*prefix);
            }
            Ordering::Equal => {
                let (prefix, flags) = want.next().expect("peeked");
                let (_, installed) = have.next().expect("peeked");
                let fam = p.family(&prefix);
                if installed.flags == flags {
                    fam.unchanged += 1;
                } else {
                    // Overwritten in place: added, never removed.
                    fam.added += 1;
                    p.block_add.push((prefix, flags));
                }
            }
        }
    }
    p.allow_add = desired
        .allow
        .iter()
        .filter(|a| allowed.binary_search(a).is_err())
        .copied()
        .collect();
    p.allow_del = allowed
        .iter()
        .filter(|a| !desired.allow.contains(a))
        .copied()
        .collect();
    debug_assert!(p.block_add.is_sorted() && p.block_del.is_sorted());
    p
}

/// Where [`apply`] writes: the pinned maps, or a recorder in the tests
/// that check the order of writes.
pub trait Writer {
    /// Inserts or overwrites entries of `kind`.
    fn insert_many(&mut self, kind: TrieKind, entries: &[(Prefix, u32)]) -> anyhow::Result<()>;
    /// Removes entries of `kind`; missing ones are skipped.
    fn remove_many(&mut self, kind: TrieKind, prefixes: &[Prefix]) -> anyhow::Result<()>;
}

impl Writer for Maps {
    fn insert_many(&mut self, kind: TrieKind, entries: &[(Prefix, u32)]) -> anyhow::Result<()> {
        Ok(Maps::insert_many(self, kind, entries)?)
    }

    fn remove_many(&mut self, kind: TrieKind, prefixes: &[Prefix]) -> anyhow::Result<()> {
        Ok(Maps::remove_many(self, kind, prefixes)?)
    }
}

/// Applies a plan in the order that never unblocks a kept address: allow
/// inserts, block inserts, block deletes, allow deletes. At every point
/// between two writes, an address that the old and the new set both block
/// is blocked (its new entry is in before its old one goes, and an allow
/// entry that covers it is never added), and an address that both pass is
/// passed (the new allow entries are in before any new block entry).
pub fn apply(maps: &mut impl Writer, plan: &Plan) -> anyhow::Result<()> {
    apply_with_deletes(maps, plan, &plan.block_del)
}

/// [`apply`] with `block_del` as the block deletes (the plan's others
/// went first: see [`fit`]).
pub fn apply_with_deletes(
    maps: &mut impl Writer,
    plan: &Plan,
    block_del: &[Prefix],
) -> anyhow::Result<()> {
    let allow_add: Vec<(Prefix, u32)> = plan.allow_add.iter().map(|p| (*p, 0)).collect();
    maps.insert_many(TrieKind::Allow, &allow_add)?;
    maps.insert_many(TrieKind::Block, &plan.block_add)?;
    maps.remove_many(TrieKind::Block, block_del)?;
    maps.remove_many(TrieKind::Allow, &plan.allow_del)?;
    Ok(())
}

/// How `sync_once` behaves.
#[derive(Clone, Debug, Default)]
pub struct SyncOptions {
    /// Compute and report, change nothing.
    pub dry_run: bool,
    /// Accept lists the guard would refuse, once.
    pub force: bool,
    /// Feeds to fetch now (by name); `None` fetches all.
    pub due: Option<Vec<String>>,
}

/// Per-feed line of a report.
#[derive(Clone, Debug, Serialize)]
pub struct FeedReport {
    /// Feed name.
    pub name: String,
    /// What happened.
    #[serde(flatten)]
    pub status: FeedStatus,
    /// Distinct prefixes the feed now contributes.
    pub entries: usize,
    /// Added compared with its last good list.
    pub added: usize,
    /// Removed compared with its last good list.
    pub removed: usize,
    /// Lines or objects rejected this time.
    pub rejected: usize,
    /// The first few rejections, with line numbers and reasons.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<crate::feed::Rejection>,
    /// Entries of the list in use that the reserved-range guard refused
    /// or cut reserved ranges out of.
    pub reserved: usize,
    /// The first few of those, one line each with the range's name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reserved_samples: Vec<String>,
}

/// How a sync computed its changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SyncPath {
    /// Every feed's list merged again and diffed with the installed set.
    Full,
    /// Only what the feeds gained and lost since the last sync of this
    /// process ([`delta`]).
    Delta,
}

/// What one sync did.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Full merge or deltas only.
    pub path: SyncPath,
    /// Per feed.
    pub feeds: Vec<FeedReport>,
    /// Block trie changes, IPv4.
    pub v4: FamilyDiff,
    /// Block trie changes, IPv6.
    pub v6: FamilyDiff,
    /// Allow entries added.
    pub allow_added: usize,
    /// Allow entries removed.
    pub allow_removed: usize,
    /// Entries refused as broader than the minimum prefix.
    pub too_broad: usize,
    /// Block entries inside protected ranges, left out.
    pub shadowed: usize,
    /// True when deletes were held back because a feed's last good list
    /// was unreadable and could not be fetched again.
    pub deletes_held: bool,
    /// True when nothing was changed on purpose.
    pub dry_run: bool,
    /// Wall time of the whole sync.
    pub seconds: f64,
    /// Wall time of the kernel writes alone (tries and compiled table).
    pub apply_seconds: f64,
    /// Wall time of fetching, parsing and recording the feeds.
    pub poll_seconds: f64,
    /// What updating the compiled IPv4 table took, when it was updated.
    pub table: Option<crate::datapath::table::TableReport>,
}

impl Report {
    /// The feeds whose protection was kept from their last good list
    /// because this sync could not take a new one: failed or refused, with
    /// the reason. Empty when every feed updated, was unchanged, not due or
    /// disabled.
    pub fn kept_last_good(&self) -> Vec<(&str, &str)> {
        self.feeds
            .iter()
            .filter_map(|f| match &f.status {
                FeedStatus::Failed(why) | FeedStatus::Refused(why) => {
                    Some((f.name.as_str(), why.as_str()))
                }
                _ => None,
            })
            .collect()
    }
}

fn report_of(o: &FeedOutcome, entries: usize) -> FeedReport {
    FeedReport {
        name: o.name.clone(),
        status: o.status.clone(),
        entries,
        added: o.added,
        removed: o.removed,
        rejected: o.rejected,
        samples: o.samples.clone(),
        reserved: o.reserved,
        reserved_samples: o.reserved_samples.clone(),
    }
}

/// (feed, origin, prefixes) of the CrowdSec feeds among `outcomes`: their
/// entries carry the decision's origin as their id.
pub(crate) fn origin_lists<'a>(
    config: &Config,
    outcomes: impl IntoIterator<Item = &'a FeedOutcome>,
) -> Vec<(String, String, Vec<Prefix>)> {
    let mut out: BTreeMap<(String, String), Vec<Prefix>> = BTreeMap::new();
    for o in outcomes {
        let crowdsec = config
            .feeds
            .iter()
            .any(|f| f.name == o.name && f.format == crate::feed::Format::Crowdsec);
        if !crowdsec {
            continue;
        }
        for e in o.entries.iter().flatten() {
            let origin = e.id.clone().unwrap_or_default();
            out.entry((o.name.clone(), origin))
                .or_default()
                .push(e.prefix);
        }
    }
    out.into_iter().map(|((f, o), v)| (f, o, v)).collect()
}

/// Records the installed counts for `status` and `/metrics`, from what
/// this handle knows (no walk while its mirror is current).
pub fn record_counts(maps: &mut Maps, state: &StateDir) -> anyhow::Result<()> {
    let meta = maps.table_meta()?;
    if meta.dirty != 0 {
        return Ok(());
    }
    let mut n = |kind, family| maps.installed_fill(kind, family).map(|f| f.entries);
    let counts = crate::state::counts::Counts {
        generation: meta.generation,
        block_v4: n(TrieKind::Block, Family::V4)?,
        block_v6: n(TrieKind::Block, Family::V6)?,
        allow_v4: n(TrieKind::Allow, Family::V4)?,
        allow_v6: n(TrieKind::Allow, Family::V6)?,
    };
    state.set_counts(&counts);
    Ok(())
}

/// Keeps `base` for the next sync, stamped with the maps' generation after
/// this sync's commit; none when a write is still marked in progress (the
/// next sync then takes the full path).
fn keep_base(memo: &SyncMemo, maps: &Maps, mut base: Base) -> anyhow::Result<()> {
    let meta = maps.table_meta()?;
    if meta.dirty == 0 {
        base.generation = meta.generation;
        memo.set_base(Some(base));
    }
    Ok(())
}

/// Every configured feed's list file signature, as the base records them.
fn signatures(config: &Config, state: &StateDir) -> BTreeMap<String, Option<(u64, SystemTime)>> {
    config
        .feeds
        .iter()
        .map(|f| (f.name.clone(), state.feed_entries_signature(&f.name)))
        .collect()
}

/// One complete sync: poll the due feeds, build the desired state, apply
/// the difference. The caller holds the writer lock. Also returns which
/// feeds list which prefixes (for metrics and events).
pub fn sync_once(
    config: &Config,
    maps: &mut Maps,
    state: &StateDir,
    fetcher: &Fetcher,
    opts: &SyncOptions,
) -> anyhow::Result<(Report, Arc<FeedIndex>)> {
    sync_with(config, maps, state, fetcher, opts, &SyncMemo::default())
}

/// [`sync_once`] with what the previous sync of this process left
/// ([`SyncMemo`]): unchanged feeds are not read again, and a change is
/// applied as its delta when nothing else moved.
pub fn sync_with(
    config: &Config,
    maps: &mut Maps,
    state: &StateDir,
    fetcher: &Fetcher,
    opts: &SyncOptions,
    memo: &SyncMemo,
) -> anyhow::Result<(Report, Arc<FeedIndex>)> {
    let started = Instant::now();
    let ctx = PollContext {
        fetcher,
        state,
        guard: &config.guard,
        force: opts.force,
        dry_run: opts.dry_run,
        known_list: &|feed| memo.known_list(state, feed),
        sessions: memo.sessions(),
    };
    let outcomes: Vec<FeedOutcome> = config
        .feeds
        .iter()
        .map(|f| {
            let due = opts.due.as_ref().is_none_or(|d| d.contains(&f.name));
            poll::poll(&ctx, f, due)
        })
        .collect();
    let poll_seconds = started.elapsed().as_secs_f64();
    let mut manual = super::manual::load(state, maps)?;
    let now = SystemTime::now();
    super::manual::prune_expired(state, &mut manual, now, opts.dry_run)?;
    let allow = policy::allow_set(config, &manual, &policy::host_protected());
    // The memo's base is taken out: a sync that fails or leaves the kernel
    // other than desired leaves none, so the next one takes the full path.
    let mut base = memo.take_base();
    if !opts.dry_run
        && let Some(b) = base.take()
    {
        match delta::sync(config, maps, &outcomes, &manual, &allow, b)? {
            delta::Outcome::Done(applied) => {
                let delta::Applied {
                    plan,
                    table,
                    apply_seconds,
                    mut base,
                } = *applied;
                let plan_was_empty = plan.is_empty();
                base.files = signatures(config, state);
                let reports = outcomes
                    .iter()
                    .map(|o| {
                        let n = base.index.list(&o.name).map_or(0, |l| l.len());
                        report_of(o, n)
                    })
                    .collect();
                let report = Report {
                    path: SyncPath::Delta,
                    feeds: reports,
                    v4: plan.v4,
                    v6: plan.v6,
                    allow_added: 0,
                    allow_removed: 0,
                    too_broad: base.too_broad,
                    shadowed: base.shadowed,
                    deletes_held: false,
                    dry_run: false,
                    seconds: started.elapsed().as_secs_f64(),
                    apply_seconds,
                    poll_seconds,
                    table,
                };
                let index = Arc::clone(&base.index);
                keep_base(memo, maps, base)?;
                if !plan_was_empty {
                    record_counts(maps, state)?;
                }
                return Ok((report, index));
            }
            delta::Outcome::Full(b) => base = Some(*b),
        }
    }

    // The full path: every feed's list, from this poll, the memo, or disk.
    let mut uncertain: Vec<String> = Vec::new();
    let mut lists: Vec<(String, Arc<Vec<Prefix>>)> = Vec::with_capacity(outcomes.len() + 1);
    for o in &outcomes {
        if o.uncertain {
            uncertain.push(o.name.clone());
        }
        let list = match &o.entries {
            Some(entries) => Arc::new(poll::distinct(entries)),
            None => base
                .as_ref()
                .and_then(|b| b.index.list(&o.name).cloned())
                .context("a feed's list was neither read nor held by the memo (internal error)")?,
        };
        lists.push((o.name.clone(), list));
    }
    let origins = origin_lists(config, &outcomes);
    let reports: Vec<FeedReport> = outcomes
        .iter()
        .zip(&lists)
        .map(|(o, (_, l))| report_of(o, l.len()))
        .collect();
    // The parsed entries (48 bytes each, a million of them for a big
    // feed) are not needed past their lists: freed before the desired set
    // is built, they do not add to its peak.
    drop(outcomes);
    let desired = policy::build(&lists, &manual, config, &allow, now);
    let mut manual_list: Vec<Prefix> = manual.block.keys().copied().collect();
    manual_list.sort_unstable();
    lists.push(("manual".to_owned(), Arc::new(manual_list)));
    let index = Arc::new(FeedIndex::from_sorted(lists).with_origins(origins));
    let mut plan = plan(maps, &desired)?;
    // The desired set (a map of a million entries) is not needed past the
    // diff: freed before the writes, it does not add to their peak.
    let (too_broad, shadowed) = (desired.too_broad.len(), desired.shadowed);
    drop(desired);
    let deletes_held = !uncertain.is_empty() && !plan.block_del.is_empty();
    if deletes_held {
        tracing::warn!(
            feeds = ?uncertain,
            held = plan.block_del.len(),
            "last good lists unreadable and not refetched; keeping every installed entry this sync"
        );
        for p in std::mem::take(&mut plan.block_del) {
            let fam = plan.family(&p);
            fam.removed -= 1;
            fam.unchanged += 1;
        }
    }
    let mut apply_seconds = 0.0;
    let mut table = None;
    if !opts.dry_run && !plan.is_empty() {
        let t = Instant::now();
        // The block writes (24 bytes each, a million on a first load) are
        // not needed past their writes: freed before the table compile,
        // they do not add to its peak. Only the counts are reported.
        table = fit::write(maps, &mut plan, true)?;
        apply_seconds = t.elapsed().as_secs_f64();
    } else if !opts.dry_run {
        // Nothing to write, but a writer killed mid-sync may have left the
        // table behind the tries.
        let t = Instant::now();
        table = maps.commit_table()?;
        if table.is_some() {
            apply_seconds = t.elapsed().as_secs_f64();
        }
    }
    if !opts.dry_run {
        record_counts(maps, state)?;
    }
    if opts.dry_run {
        // Nothing changed: what the memo knew still holds.
        memo.set_base(base);
    } else if uncertain.is_empty() {
        keep_base(
            memo,
            maps,
            Base {
                generation: 0,
                index: Arc::clone(&index),
                manual,
                allow: allow.into_iter().collect(),
                min: (config.guard.min_prefix_v4, config.guard.min_prefix_v6),
                feeds: config.feeds.iter().map(|f| f.name.clone()).collect(),
                files: signatures(config, state),
                too_broad,
                shadowed,
                reloaded: false,
            },
        )?;
    }
    let report = Report {
        path: SyncPath::Full,
        feeds: reports,
        v4: plan.v4,
        v6: plan.v6,
        allow_added: plan.allow_add.len(),
        allow_removed: plan.allow_del.len(),
        too_broad,
        shadowed,
        deletes_held,
        dry_run: opts.dry_run,
        seconds: started.elapsed().as_secs_f64(),
        apply_seconds,
        poll_seconds,
        table,
    };
    Ok((report, index))
}

/// When each feed is next due, for the `run` loop.
#[derive(Debug, Default)]
pub struct Schedule {
    next: BTreeMap<String, Instant>,
}

impl Schedule {
    /// Feeds due at `now` (feeds never polled are due).
    pub fn due(&self, config: &Config, now: Instant) -> Vec<String> {
        config
            .feeds
            .iter()
            .filter(|f| self.next.get(&f.name).is_none_or(|t| *t <= now))
            .map(|f| f.name.clone())
            .collect()
    }

    /// Records that `names` were polled at `now`.
    pub fn polled(&mut self, config: &Config, names: &[String], now: Instant) {
        for f in config.feeds.iter().filter(|f| names.contains(&f.name)) {
            self.next
                .insert(f.name.clone(), now + config.interval_of(f));
        }
    }

    /// Time until the next feed is due (at most `cap`).
    pub fn wait(&self, config: &Config, now: Instant, cap: Duration) -> Duration {
        config
            .feeds
            .iter()
            .map(|f| {
                self.next
                    .get(&f.name)
                    .map_or(Duration::ZERO, |t| t.saturating_duration_since(now))
            })
            .min()
            .unwrap_or(cap)
            .min(cap)
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::BTreeSet,
        net::{IpAddr, Ipv4Addr},
    };

    use proptest::prelude::*;

    use super::*;

    /// One write `apply` made.
    #[derive(Clone, Debug, PartialEq, Eq)]
    enum Write {
        Insert(TrieKind, Vec<Prefix>),
        Remove(TrieKind, Vec<Prefix>),
    }

    /// Called after every single element written, with the block and allow
    /// sets then.
    type Check = Box<dyn FnMut(&BTreeSet<Prefix>, &BTreeSet<Prefix>)>;

    /// A writer that keeps the sets in memory and records every write.
    #[derive(Default)]
    struct Recorder {
        block: BTreeSet<Prefix>,
        allow: BTreeSet<Prefix>,
        writes: Vec<Write>,
        check: Option<Check>,
    }

    impl Recorder {
        fn set(&mut self, kind: TrieKind) -> &mut BTreeSet<Prefix> {
            match kind {
                TrieKind::Block => &mut self.block,
                TrieKind::Allow => &mut self.allow,
            }
        }

        fn checked(&mut self) {
            if let Some(c) = self.check.as_mut() {
                c(&self.block, &self.allow);
            }
        }
    }

    impl Writer for Recorder {
        fn insert_many(&mut self, kind: TrieKind, entries: &[(Prefix, u32)]) -> anyhow::Result<()> {
            for (p, _) in entries {
                self.set(kind).insert(*p);
                self.checked();
            }
            let w = Write::Insert(kind, entries.iter().map(|(p, _)| *p).collect());
            self.writes.push(w);
            Ok(())
        }

        fn remove_many(&mut self, kind: TrieKind, prefixes: &[Prefix]) -> anyhow::Result<()> {
            for p in prefixes {
                self.set(kind).remove(p);
                self.checked();
            }
            self.writes.push(Write::Remove(kind, prefixes.to_vec()));
            Ok(())
        }
    }

    fn blocked(block: &BTreeSet<Prefix>, allow: &BTreeSet<Prefix>, a: IpAddr) -> bool {
        block.iter().any(|p| p.contains(a)) && !allow.iter().any(|p| p.contains(a))
    }

    /// Prefixes inside 10.0.0.0/22, so that random ones overlap often.
    fn arb_prefix() -> impl Strategy<Value = Prefix> {
        (0u32..1024, 22u8..=32).prop_map(|(host, len)| {
            let a = Ipv4Addr::from(0x0a00_0000 | host);
            Prefix::new(ipnet::Ipv4Net::new(a, len).unwrap().into())
        })
    }

    fn arb_set(max: usize) -> impl Strategy<Value = BTreeSet<Prefix>> {
        proptest::collection::btree_set(arb_prefix(), 0..max)
    }

    fn desired(block: &BTreeSet<Prefix>, allow: &BTreeSet<Prefix>) -> Desired {
        Desired {
            block: block.iter().map(|p| (*p, 0)).collect(),
            allow: allow.clone(),
            ..Desired::default()
        }
    }

    /// Verdicts that a write changed for an address the old and the new
    /// sets agree on: (address, the verdict both give).
    type Violations = std::rc::Rc<std::cell::RefCell<Vec<(IpAddr, bool)>>>;

    /// A recorder holding the old sets that checks, after every element
    /// written, the verdict of each address of 10.0.0.0/22 that the old
    /// and the new sets agree on.
    fn watched(
        old_block: &BTreeSet<Prefix>,
        old_allow: &BTreeSet<Prefix>,
        new_block: &BTreeSet<Prefix>,
        new_allow: &BTreeSet<Prefix>,
    ) -> (Recorder, Violations) {
        let kept: Vec<(IpAddr, bool)> = (0u32..1024)
            .map(|h| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | h)))
            .filter_map(|a| {
                let before = blocked(old_block, old_allow, a);
                (before == blocked(new_block, new_allow, a)).then_some((a, before))
            })
            .collect();
        let violations = Violations::default();
        let seen = violations.clone();
        let rec = Recorder {
            block: old_block.clone(),
            allow: old_allow.clone(),
            check: Some(Box::new(move |b, a| {
                for (addr, want) in &kept {
                    if blocked(b, a, *addr) != *want {
                        seen.borrow_mut().push((*addr, *want));
                    }
                }
            })),
            ..Recorder::default()
        };
        (rec, violations)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// The module's promise, checked after every single element the
        /// plan writes: an address blocked before and after is blocked
        /// throughout, and one passed before and after is passed
        /// throughout. The writes come in the documented order.
        #[test]
        fn apply_never_unblocks_a_kept_address(
            old_block in arb_set(12),
            old_allow in arb_set(4),
            new_block in arb_set(12),
            new_allow in arb_set(4),
        ) {
            let installed: Vec<(Prefix, Installed)> = old_block.iter().map(|p| (*p, Installed { flags: 0, id: 0 })).collect();
            let allowed: Vec<Prefix> = old_allow.iter().copied().collect();
            let plan = plan_from(&installed, &allowed, &desired(&new_block, &new_allow));
            let (mut rec, violations) = watched(&old_block, &old_allow, &new_block, &new_allow);
            apply(&mut rec, &plan).unwrap();
            let v = violations.borrow();
            prop_assert!(v.is_empty(), "{} kept verdicts changed mid-apply, first {:?}", v.len(), &v[..v.len().min(4)]);
            prop_assert_eq!(&rec.block, &new_block);
            prop_assert_eq!(&rec.allow, &new_allow);
            let order: Vec<(bool, TrieKind)> = rec
                .writes
                .iter()
                .filter_map(|w| match w {
                    Write::Insert(k, v) if !v.is_empty() => Some((true, *k)),
                    Write::Remove(k, v) if !v.is_empty() => Some((false, *k)),
                    _ => None,
                })
                .collect();
            let rank = |w: &(bool, TrieKind)| match w {
                (true, TrieKind::Allow) => 0,
                (true, TrieKind::Block) => 1,
                (false, TrieKind::Block) => 2,
                (false, TrieKind::Allow) => 3,
            };
            prop_assert!(order.windows(2).all(|w| rank(&w[0]) < rank(&w[1])), "write order {:?}", order);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// The same promise for a plan written in two batches because it
        /// would not fit otherwise ([`fit`]): the deletes no new entry
        /// overlaps, then the rest in the usual order.
        #[test]
        fn the_two_batch_order_never_unblocks_a_kept_address(
            old_block in arb_set(12),
            old_allow in arb_set(4),
            new_block in arb_set(12),
            new_allow in arb_set(4),
        ) {
            let installed: Vec<(Prefix, Installed)> = old_block.iter().map(|p| (*p, Installed { flags: 0, id: 0 })).collect();
            let allowed: Vec<Prefix> = old_allow.iter().copied().collect();
            let plan = plan_from(&installed, &allowed, &desired(&new_block, &new_allow));
            let (mut rec, violations) = watched(&old_block, &old_allow, &new_block, &new_allow);
            let early = fit::early_deletes(&plan.block_add, &plan.block_del);
            let rest = fit::without(&plan.block_del, &early);
            rec.remove_many(TrieKind::Block, &early).unwrap();
            apply_with_deletes(&mut rec, &plan, &rest).unwrap();
            let v = violations.borrow();
            prop_assert!(v.is_empty(), "{} kept verdicts changed mid-apply, first {:?}", v.len(), &v[..v.len().min(4)]);
            prop_assert_eq!(&rec.block, &new_block);
            prop_assert_eq!(&rec.allow, &new_allow);
        }
    }

    #[test]
    fn a_prefix_narrowed_to_one_address_is_inserted_before_the_old_one_goes() {
        let wide: Prefix = "192.0.2.0/24".parse().unwrap();
        let narrow: Prefix = "192.0.2.7/32".parse().unwrap();
        for (old, new) in [(wide, narrow), (narrow, wide)] {
            let plan = plan_from(
                &[(old, Installed { flags: 0, id: 0 })],
                &[],
                &desired(&BTreeSet::from([new]), &BTreeSet::new()),
            );
            let mut rec = Recorder {
                block: BTreeSet::from([old]),
                ..Recorder::default()
            };
            apply(&mut rec, &plan).unwrap();
            let writes: Vec<Write> = rec
                .writes
                .into_iter()
                .filter(|w| !matches!(w, Write::Insert(_, v) | Write::Remove(_, v) if v.is_empty()))
                .collect();
            assert_eq!(
                writes,
                vec![
                    Write::Insert(TrieKind::Block, vec![new]),
                    Write::Remove(TrieKind::Block, vec![old]),
                ]
            );
        }
    }
}
