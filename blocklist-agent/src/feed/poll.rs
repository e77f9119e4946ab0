//! One feed, one sync: fetch, parse, guard, remember.
//!
//! A feed that fails (network, HTTP error, truncated body, nothing parsed)
//! or shrinks by more than `guard.max_shrink` keeps its last good entries;
//! the refusal is recorded in its state and shown by `status`. `--force`
//! accepts a shrunken or empty result once. A body identical to the last
//! good one (304, or the same SHA-256) is not parsed again.

use std::{collections::BTreeMap, sync::Arc, time::SystemTime};

use sha2::{Digest as _, Sha256};

use super::{
    Entry, Format, FormatOptions, Rejection, auth,
    config::{FeedConfig, Guard},
    fetch::{Fetched, Fetcher, Source, redact},
    parse, taxii,
};
use crate::{
    prefix::Prefix,
    state::{
        StateDir,
        feeds::{FeedState, StoredIndicator},
    },
};

/// What happened to a feed in this sync.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", content = "reason", rename_all = "kebab-case")]
pub enum FeedStatus {
    /// New entries were accepted.
    Updated,
    /// The source had not changed (304 or identical body).
    Unchanged,
    /// Not due yet: its last good entries are used.
    NotDue,
    /// Fetching or parsing failed: last good entries kept.
    Failed(String),
    /// The guard refused the new list: last good entries kept.
    Refused(String),
    /// `enabled = false`: last good entries kept.
    Disabled,
}

/// The outcome of one feed in one sync.
#[derive(Clone, Debug)]
pub struct FeedOutcome {
    /// Feed name.
    pub name: String,
    /// What happened.
    pub status: FeedStatus,
    /// The entries the policy must use: new ones, or the last good list as
    /// read from disk; `None` when the last good list is the one the
    /// [`PollContext::known_list`] already holds (it was not read).
    pub entries: Option<Vec<Entry>>,
    /// Exactly what changed against the previous list, when known (always
    /// for a new list, unless the previous one was lost).
    pub delta: Option<Delta>,
    /// Distinct prefixes added compared with the last good list.
    pub added: usize,
    /// Distinct prefixes removed compared with the last good list.
    pub removed: usize,
    /// Lines or objects rejected by the parser this time.
    pub rejected: usize,
    /// Examples of rejections.
    pub samples: Vec<Rejection>,
    /// Entries of the list in use (new, or the last good one kept) that
    /// the reserved-range guard refused or cut reserved ranges out of.
    pub reserved: usize,
    /// Examples of those, one line each.
    pub reserved_samples: Vec<String>,
    /// The feed's last good list was unreadable and no new list replaced
    /// it: what it contributes is unknown, so nothing may be removed.
    pub uncertain: bool,
}

/// The distinct prefixes a feed gained and lost in one sync, sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delta {
    /// Listed now, not before.
    pub added: Vec<Prefix>,
    /// Listed before, not now.
    pub removed: Vec<Prefix>,
}

impl Delta {
    /// Between two sorted, distinct lists.
    pub fn between(old: &[Prefix], new: &[Prefix]) -> Self {
        Self::between_sorted(old.iter().copied(), new.iter().copied())
    }

    /// Between two sorted, distinct sequences, read once each.
    pub fn between_sorted(
        old: impl IntoIterator<Item = Prefix>,
        new: impl IntoIterator<Item = Prefix>,
    ) -> Self {
        let (mut old, mut new) = (old.into_iter().peekable(), new.into_iter().peekable());
        let mut d = Delta::default();
        loop {
            match (old.peek(), new.peek()) {
                (Some(o), Some(n)) => match o.cmp(n) {
                    std::cmp::Ordering::Less => d.removed.extend(old.next()),
                    std::cmp::Ordering::Greater => d.added.extend(new.next()),
                    std::cmp::Ordering::Equal => {
                        old.next();
                        new.next();
                    }
                },
                (Some(_), None) => d.removed.extend(old.by_ref()),
                (None, Some(_)) => d.added.extend(new.by_ref()),
                (None, None) => return d,
            }
        }
    }

    /// `old` with this delta applied (sorted, distinct).
    pub fn apply_to(&self, old: &[Prefix]) -> Vec<Prefix> {
        let mut out = Vec::with_capacity(old.len() + self.added.len());
        let (mut i, mut a) = (0, 0);
        let mut r = 0;
        while i < old.len() || a < self.added.len() {
            let take_old = a >= self.added.len() || (i < old.len() && old[i] < self.added[a]);
            if take_old {
                while r < self.removed.len() && self.removed[r] < old[i] {
                    r += 1;
                }
                if !(r < self.removed.len() && self.removed[r] == old[i]) {
                    out.push(old[i]);
                }
                i += 1;
            } else {
                out.push(self.added[a]);
                a += 1;
            }
        }
        out
    }

    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// What every feed poll needs.
pub struct PollContext<'a> {
    /// The HTTP client.
    pub fetcher: &'a Fetcher,
    /// Where last good entries and feed state live.
    pub state: &'a StateDir,
    /// Shrink limits.
    pub guard: &'a Guard,
    /// Accept a shrunken or empty list once.
    pub force: bool,
    /// Change nothing on disk.
    pub dry_run: bool,
    /// A feed's distinct prefixes as the previous sync of this process
    /// left them, when its list file is unchanged since (so it need not
    /// be read); `None` otherwise.
    pub known_list: &'a dyn Fn(&str) -> Option<Arc<Vec<Prefix>>>,
    /// The CrowdSec feeds' sessions, kept between syncs.
    pub sessions: &'a super::bouncer::Sessions,
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The distinct prefixes of a list, sorted (a sorted Vec costs a third of
/// a BTreeSet at a million entries).
pub(crate) fn distinct(entries: &[Entry]) -> Vec<Prefix> {
    let mut v: Vec<Prefix> = entries.iter().map(|e| e.prefix).collect();
    // A candidate list comes sorted from `dedup`: no second sort.
    if !v.is_sorted() {
        v.sort_unstable();
    }
    v.dedup();
    v
}

/// Entries with duplicates (same prefix and id) removed, sorted.
fn dedup(mut entries: Vec<Entry>) -> Vec<Entry> {
    // Unstable: equal entries are identical, and a stable sort of a
    // million would take a 24 MB scratch buffer and half again the time.
    entries.sort_unstable_by(|a, b| (a.prefix, &a.id).cmp(&(b.prefix, &b.id)));
    entries.dedup();
    entries
}

/// A list's distinct prefixes in order, read in place when the list is
/// sorted (a candidate from [`dedup`], or a list saved from one): at a
/// million entries a copy is 18 MB, two of them a sync's peak.
enum Distinct<'a> {
    /// Distinct and sorted already (the memo's list), or made so.
    Prefixes(std::borrow::Cow<'a, [Prefix]>),
    /// Sorted by prefix, repeats possible (other ids).
    Entries(&'a [Entry]),
}

impl<'a> Distinct<'a> {
    fn of(entries: &'a [Entry]) -> Self {
        if entries.is_sorted_by_key(|e| e.prefix) {
            Distinct::Entries(entries)
        } else {
            Distinct::Prefixes(std::borrow::Cow::Owned(distinct(entries)))
        }
    }

    fn iter(&self) -> impl Iterator<Item = Prefix> + '_ {
        let (prefixes, entries): (&[Prefix], &[Entry]) = match self {
            Distinct::Prefixes(p) => (p, &[]),
            Distinct::Entries(e) => (&[], e),
        };
        // Sorted entries repeat a prefix only next to itself.
        let mut last = None;
        prefixes.iter().copied().chain(
            entries
                .iter()
                .map(|e| e.prefix)
                .filter(move |p| last.replace(*p) != Some(*p)),
        )
    }

    fn len(&self) -> usize {
        match self {
            Distinct::Prefixes(p) => p.len(),
            Distinct::Entries(_) => self.iter().count(),
        }
    }
}

/// A feed's previous list.
enum LastGood {
    /// Held by the memo (distinct prefixes, sorted); not read.
    Known(Arc<Vec<Prefix>>),
    /// Read from the state directory.
    Loaded(Vec<Entry>),
}

impl LastGood {
    fn distinct(&self) -> Distinct<'_> {
        match self {
            LastGood::Known(v) => Distinct::Prefixes(std::borrow::Cow::Borrowed(v.as_slice())),
            LastGood::Loaded(e) => Distinct::of(e),
        }
    }

    fn into_entries(self) -> Option<Vec<Entry>> {
        match self {
            LastGood::Known(_) => None,
            LastGood::Loaded(e) => Some(e),
        }
    }
}

/// A fresh list, before the guard looks at it.
struct Candidate {
    entries: Vec<Entry>,
    rejected: usize,
    samples: Vec<Rejection>,
    reserved: usize,
    reserved_samples: Vec<String>,
    etag: Option<String>,
    last_modified: Option<String>,
    sha256: Option<String>,
    cursor: Option<String>,
    indicators: Option<BTreeMap<String, StoredIndicator>>,
}

enum Fetch {
    Unchanged,
    New(Box<Candidate>),
}

/// Syncs one feed. Never fails: every problem becomes a status that keeps
/// the last good entries.
pub fn poll(ctx: &PollContext<'_>, feed: &FeedConfig, due: bool) -> FeedOutcome {
    let name = feed.name.clone();
    let mut st = ctx.state.feed(&name).unwrap_or_else(|e| {
        tracing::warn!(feed = %name, error = %format!("{e:#}"), "feed state unreadable; starting afresh");
        FeedState::default()
    });
    if feed.format == Format::Crowdsec {
        return super::bouncer::poll(ctx, feed, st, due);
    }
    // The last good list: what the memo holds, when its file is still the
    // one the memo saw (nothing to read), else read from disk. A lost or
    // corrupt list (crash, disk trouble) must not turn into "the feed lists
    // nothing": the feed is fetched afresh now, and if that fails the sync
    // holds every delete (see `uncertain`).
    let known = (ctx.known_list)(&name);
    let (last_good, lost) = match known {
        Some(list) => (LastGood::Known(list), false),
        None => match ctx.state.feed_entries(&name) {
            Ok(v) => (LastGood::Loaded(v), false),
            Err(e) => {
                tracing::warn!(feed = %name, error = %format!("{e:#}"), "last good entries unreadable; fetching the feed afresh and holding deletes until it succeeds");
                st.etag = None;
                st.last_modified = None;
                st.content_sha256 = None;
                st.taxii_cursor = None;
                (LastGood::Loaded(Vec::new()), true)
            }
        },
    };
    // Takes the last good list by value: at a million entries a copy is
    // tens of megabytes.
    let keep = |status, last_good: LastGood, st: &FeedState| FeedOutcome {
        name: name.clone(),
        status,
        entries: last_good.into_entries(),
        delta: None,
        added: 0,
        removed: 0,
        rejected: 0,
        samples: Vec::new(),
        reserved: st.reserved,
        reserved_samples: st.reserved_samples.clone(),
        uncertain: lost,
    };
    if !feed.enabled {
        return keep(FeedStatus::Disabled, last_good, &st);
    }
    if !due && !lost {
        return keep(FeedStatus::NotDue, last_good, &st);
    }

    let source_text = feed.url.clone().unwrap_or_default();
    let source = match Source::parse(&source_text) {
        Ok(s) => s,
        Err(e) => {
            let out = keep(FeedStatus::Failed(e.to_string()), last_good, &st);
            return record_failure(ctx, &mut st, out);
        }
    };
    let shown = source.to_string();
    let reading = reading_of(feed, ctx.guard);
    // State from before `reading` was kept has none: adopt it without
    // throwing the validators (and a TAXII cursor) away on an upgrade.
    if st.reading.is_empty() {
        st.reading.clone_from(&reading);
    }
    if st.source != shown || st.reading != reading {
        // A different source, or the same body read another way (format,
        // column, threshold): its validators and cursor mean nothing here
        // (the feed's history and counters stay with the feed).
        st.source = shown;
        st.reading = reading;
        st.etag = None;
        st.last_modified = None;
        st.content_sha256 = None;
        st.taxii_cursor = None;
    }
    st.last_attempt = Some(SystemTime::now());

    let fetched = fetch(ctx, feed, &source, &st);
    let cand = match fetched {
        Err(e) => {
            let out = keep(FeedStatus::Failed(e), last_good, &st);
            return record_failure(ctx, &mut st, out);
        }
        Ok(Fetch::Unchanged) => {
            st.last_success = Some(SystemTime::now());
            st.last_error = None;
            st.last_refusal = None;
            save(ctx, &name, &st, None, None);
            return keep(FeedStatus::Unchanged, last_good, &st);
        }
        Ok(Fetch::New(c)) => *c,
    };

    let old = last_good.distinct();
    let new = Distinct::of(&cand.entries);
    let new_len = new.len();
    // With the list lost, the guard compares against the size recorded in
    // the feed's state.
    let old_len = if lost { st.entries } else { old.len() };
    let refusal = if new_len == 0 {
        Some(format!(
            "the new list has no usable entry ({} rejected); keeping the last good {} entries",
            cand.rejected, old_len
        ))
    } else if old_len > 0 && (new_len as f64) < old_len as f64 * (1.0 - ctx.guard.max_shrink) {
        Some(format!(
            "the list shrank from {} to {} entries, more than guard.max_shrink = {}; keeping the last good list (sync --force accepts it once)",
            old_len, new_len, ctx.guard.max_shrink
        ))
    } else {
        None
    };
    if let Some(reason) = refusal
        && !ctx.force
    {
        st.refusals += 1;
        st.last_refusal = Some(format!(
            "{}: {reason}",
            crate::timestamp::format(SystemTime::now())
        ));
        // The fetch itself worked.
        st.last_error = None;
        tracing::warn!(feed = %name, %reason, "feed refused by the guard");
        save(ctx, &name, &st, None, None);
        drop((old, new));
        let mut out = keep(FeedStatus::Refused(reason), last_good, &st);
        out.rejected = cand.rejected;
        out.samples = cand.samples;
        return out;
    }

    let delta = Delta::between_sorted(old.iter(), new.iter());
    let (added, removed) = (delta.added.len(), delta.removed.len());
    let count = new_len;
    drop((old, new));
    drop(last_good);
    st.etag = cand.etag;
    st.last_modified = cand.last_modified;
    st.content_sha256 = cand.sha256;
    if cand.cursor.is_some() {
        st.taxii_cursor = cand.cursor;
    }
    st.last_success = Some(SystemTime::now());
    st.last_error = None;
    st.last_refusal = None;
    st.entries = count;
    st.rejected = cand.rejected;
    st.samples = cand.samples.clone();
    st.reserved = cand.reserved;
    st.reserved_samples = cand.reserved_samples.clone();
    log_reserved(&name, cand.reserved, &cand.reserved_samples);
    save(
        ctx,
        &name,
        &st,
        Some(&cand.entries),
        cand.indicators.as_ref(),
    );
    FeedOutcome {
        name,
        status: FeedStatus::Updated,
        entries: Some(cand.entries),
        delta: (!lost).then_some(delta),
        added,
        removed,
        rejected: cand.rejected,
        samples: cand.samples,
        reserved: cand.reserved,
        reserved_samples: cand.reserved_samples,
        uncertain: false,
    }
}

/// A feed's entries as the policy takes them: widened by `ipv6_prefix`,
/// through the reserved-range guard ([`crate::reserved`], unless the feed
/// or `[guard] allow_reserved` allows them), and de-duplicated (sorted by
/// prefix and id). Every kind of feed goes through here.
pub(crate) fn screen(
    guard: &Guard,
    feed: &FeedConfig,
    mut entries: Vec<Entry>,
) -> crate::reserved::Screened {
    super::widen_v6(&mut entries, feed.ipv6_prefix);
    let mut s = if feed.guards_reserved(guard) {
        crate::reserved::screen(entries, (guard.min_prefix_v4, guard.min_prefix_v6))
    } else {
        crate::reserved::Screened {
            entries,
            ..Default::default()
        }
    };
    // Widening and splitting can repeat an entry.
    s.entries = dedup(std::mem::take(&mut s.entries));
    s
}

/// Says once per new list what the reserved-range guard kept out.
pub(crate) fn log_reserved(feed: &str, reserved: usize, samples: &[String]) {
    if reserved > 0 {
        tracing::warn!(
            feed, reserved, samples = ?samples,
            "reserved ranges kept out of the feed (allow_reserved = true on the feed installs them)"
        );
    }
}

fn record_failure(ctx: &PollContext<'_>, st: &mut FeedState, out: FeedOutcome) -> FeedOutcome {
    if let FeedStatus::Failed(reason) = &out.status {
        tracing::warn!(feed = %out.name, %reason, kept = out.entries.as_ref().map_or(st.entries, Vec::len), "feed failed; keeping its last good entries");
        st.failures += 1;
        st.last_error = Some(reason.clone());
    }
    save(ctx, &out.name, st, None, None);
    out
}

fn save(
    ctx: &PollContext<'_>,
    name: &str,
    st: &FeedState,
    entries: Option<&[Entry]>,
    indicators: Option<&BTreeMap<String, StoredIndicator>>,
) {
    if ctx.dry_run {
        return;
    }
    // Entries first: a crash between the two leaves new entries with old
    // validators, which only costs one more download.
    let result = (|| {
        if let Some(e) = entries {
            ctx.state.set_feed_entries(name, e)?;
        }
        if let Some(i) = indicators {
            ctx.state.set_feed_indicators(name, i)?;
        }
        ctx.state.set_feed(name, st)
    })();
    if let Err(e) = result {
        tracing::error!(feed = %name, error = %format!("{e:#}"), "could not save feed state");
    }
}

/// How a feed's body is read, as one string: a change means the same
/// body gives another list.
fn reading_of(feed: &FeedConfig, guard: &Guard) -> String {
    format!(
        "{:?} {:?} {:?} {:?} {:?}{}{}",
        feed.format,
        feed.column,
        feed.field,
        feed.min_score,
        feed.min_confidence,
        // Absent from the string when unset, so the state of feeds from
        // before the option keeps its validators.
        feed.ipv6_prefix
            .map_or(String::new(), |l| format!(" ipv6_prefix={l}")),
        // A list stored before the guard existed is read again under it.
        if feed.guards_reserved(guard) {
            " reserved-guard"
        } else {
            ""
        }
    )
}

fn fetch(
    ctx: &PollContext<'_>,
    feed: &FeedConfig,
    source: &Source,
    st: &FeedState,
) -> Result<Fetch, String> {
    let mut req = auth::request(feed).map_err(|e| e.to_string())?;
    if feed.format == Format::Taxii {
        let Source::Http(url) = source else {
            return Err(format!("feed `{}`: TAXII needs an http(s) URL", feed.name));
        };
        return fetch_taxii(ctx, feed, url, &req, st);
    }
    req.etag = st.etag.clone();
    req.last_modified = st.last_modified.clone();
    let body = match ctx.fetcher.fetch(source, &req).map_err(|e| e.to_string())? {
        Fetched::NotModified => return Ok(Fetch::Unchanged),
        Fetched::Body(b) => b,
    };
    let sha = hex::encode(Sha256::digest(&body.bytes));
    if st.content_sha256.as_deref() == Some(sha.as_str()) && st.entries > 0 {
        return Ok(Fetch::Unchanged);
    }
    let opts = FormatOptions {
        column: feed.column.clone(),
        field: feed.field.clone(),
        min_score: feed.min_score,
        min_confidence: feed.min_confidence,
    };
    let parsed = if feed.format == Format::Misp && source.ends_with("manifest.json") {
        misp_feed(ctx, source, &req, &body.bytes)?
    } else {
        parse(&body.bytes, &feed.format, &opts, unix_now())
    };
    if parsed.rejected > 0 {
        tracing::info!(feed = %feed.name, rejected = parsed.rejected, samples = ?parsed.samples, "feed lines rejected");
    }
    let (etag, last_modified) = (body.etag, body.last_modified);
    // The body (tens of megabytes at a million lines) is not needed past
    // the parse: freed before the screen, whose vector is the other peak.
    drop(body.bytes);
    let screened = screen(ctx.guard, feed, parsed.entries);
    Ok(Fetch::New(Box::new(Candidate {
        reserved: screened.touched(),
        entries: screened.entries,
        rejected: parsed.rejected,
        samples: parsed.samples,
        reserved_samples: screened.samples,
        etag,
        last_modified,
        sha256: Some(sha),
        cursor: None,
        indicators: None,
    })))
}

/// More events than this in one MISP manifest is refused (the feed keeps
/// its last good entries): each is one request.
const MAX_MISP_EVENTS: usize = 10_000;

/// A MISP feed directory: `manifest.json` names each event by its uuid,
/// served beside it as `<uuid>.json`. The manifest's validators decide
/// whether anything changed (MISP rewrites it with every event); then
/// every event is fetched and read, and one that fails fails the poll.
fn misp_feed(
    ctx: &PollContext<'_>,
    manifest_source: &Source,
    req: &super::fetch::Request,
    manifest: &[u8],
) -> Result<super::Parsed, String> {
    let manifest: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(super::plain::strip_bom(manifest))
            .map_err(|e| format!("manifest.json is not a MISP manifest (a JSON object): {e}"))?;
    if manifest.len() > MAX_MISP_EVENTS {
        return Err(format!(
            "manifest.json lists {} events, more than {MAX_MISP_EVENTS}",
            manifest.len()
        ));
    }
    let mut req = req.clone();
    req.etag = None;
    req.last_modified = None;
    let mut out = super::Parsed::default();
    for uuid in manifest.keys() {
        if uuid.is_empty() || !uuid.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            return Err(format!(
                "manifest.json names `{uuid}`, which is not an event uuid"
            ));
        }
        let source = manifest_source
            .sibling(&format!("{uuid}.json"))
            .map_err(|e| e.to_string())?;
        let body = match ctx.fetcher.fetch(&source, &req) {
            Ok(Fetched::Body(b)) => b,
            Ok(Fetched::NotModified) => {
                return Err(format!(
                    "event {uuid}: answered 304 to an unconditional request"
                ));
            }
            Err(e) => return Err(format!("event {uuid}: {e}")),
        };
        let p = super::misp::parse(&body.bytes);
        out.entries.extend(p.entries);
        out.ignored += p.ignored;
        out.rejected += p.rejected;
        for s in p.samples {
            if out.samples.len() < super::MAX_SAMPLES {
                out.samples.push(Rejection {
                    text: format!("event {uuid}: {}", s.text),
                    ..s
                });
            }
        }
    }
    Ok(out)
}

fn fetch_taxii(
    ctx: &PollContext<'_>,
    feed: &FeedConfig,
    url: &url::Url,
    req: &super::fetch::Request,
    st: &FeedState,
) -> Result<Fetch, String> {
    let objects = taxii::objects_url(ctx.fetcher, url, feed.collection.as_deref(), req)
        .map_err(|e| e.to_string())?;
    let now = unix_now();
    let poll = taxii::poll(ctx.fetcher, &objects, req, st.taxii_cursor.as_deref(), now)
        .map_err(|e| e.to_string())?;
    tracing::info!(feed = %feed.name, source = %redact(&objects), pages = poll.pages, indicators = poll.indicators.len(), "TAXII poll");
    let mut stored = match ctx.state.feed_indicators(&feed.name) {
        Ok(s) => s,
        Err(e) => {
            // Without the stored indicators, an incremental poll would look
            // like a collapse: start over from the beginning of the collection.
            tracing::warn!(feed = %feed.name, error = %format!("{e:#}"), "stored TAXII indicators unreadable; polling the collection from the start");
            if st.taxii_cursor.is_some() {
                let mut fresh = st.clone();
                fresh.taxii_cursor = None;
                return fetch_taxii(ctx, feed, url, req, &fresh);
            }
            Default::default()
        }
    };
    let changed = !poll.indicators.is_empty();
    for ind in poll.indicators {
        // A later version replaces an earlier one; an older copy (re-sent by
        // a server) never overrides what we hold.
        if stored
            .get(&ind.id)
            .is_some_and(|s| s.modified > ind.modified)
        {
            continue;
        }
        stored.insert(
            ind.id.clone(),
            StoredIndicator {
                modified: ind.modified,
                valid_until: ind.valid_until,
                revoked: ind.revoked,
                prefixes: ind.prefixes,
            },
        );
    }
    let entries: Vec<Entry> = stored
        .iter()
        .filter(|(_, s)| !s.revoked && s.valid_until.is_none_or(|v| v > now))
        .flat_map(|(id, s)| {
            s.prefixes.iter().map(move |p| Entry {
                prefix: *p,
                id: Some(id.clone()),
            })
        })
        .collect();
    let screened = screen(ctx.guard, feed, entries);
    let reserved = screened.touched();
    let entries = screened.entries;
    // Nothing new and nothing expired: the same list as before.
    if !changed
        && entries.len()
            == ctx
                .state
                .feed_entries(&feed.name)
                .map(|e| e.len())
                .unwrap_or(0)
        && st.entries > 0
    {
        return Ok(Fetch::Unchanged);
    }
    Ok(Fetch::New(Box::new(Candidate {
        entries,
        rejected: poll.rejected,
        samples: poll.samples,
        reserved,
        reserved_samples: screened.samples,
        etag: None,
        last_modified: None,
        sha256: None,
        cursor: poll.cursor,
        indicators: Some(stored),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_between_sorted_lists() {
        let p = |s: &str| s.parse::<Prefix>().unwrap();
        let old = [p("10.0.0.1"), p("10.0.0.2"), p("10.0.0.3")];
        let new = [p("10.0.0.2"), p("10.0.0.4"), p("10.0.0.5")];
        let d = Delta::between(&old, &new);
        assert_eq!(d.added, vec![p("10.0.0.4"), p("10.0.0.5")]);
        assert_eq!(d.removed, vec![p("10.0.0.1"), p("10.0.0.3")]);
        assert_eq!(d.apply_to(&old), new.to_vec());
        assert_eq!(Delta::between(&[], &new).added.len(), 3);
        assert_eq!(Delta::between(&old, &[]).removed.len(), 3);
    }

    proptest::proptest! {
        #[test]
        fn a_delta_applied_gives_the_new_list(
            old in proptest::collection::btree_set(0u32..64, 0..40),
            new in proptest::collection::btree_set(0u32..64, 0..40),
        ) {
            let to = |s: &std::collections::BTreeSet<u32>| -> Vec<Prefix> {
                s.iter().map(|h| Prefix::from_v4((0x0a00_0000u32 | h).to_be_bytes(), 32).unwrap()).collect()
            };
            let (old, new) = (to(&old), to(&new));
            proptest::prop_assert_eq!(Delta::between(&old, &new).apply_to(&old), new);
        }

        /// The delta read in place from entry lists (repeated prefixes
        /// with other ids, sorted as `dedup` leaves them or not at all) is
        /// the delta of their distinct prefixes.
        #[test]
        fn a_delta_read_in_place_is_the_delta_of_the_distinct_prefixes(
            old in proptest::collection::vec((0u32..48, proptest::option::of(0u8..3)), 0..60),
            new in proptest::collection::vec((0u32..48, proptest::option::of(0u8..3)), 0..60),
            sorted in proptest::bool::ANY,
        ) {
            let to = |v: &[(u32, Option<u8>)]| -> Vec<Entry> {
                let e: Vec<Entry> = v.iter().map(|(h, id)| Entry {
                    prefix: Prefix::from_v4((0x0a00_0000u32 | h).to_be_bytes(), 32).unwrap(),
                    id: id.map(|i| format!("indicator--{i}")),
                }).collect();
                if sorted { dedup(e) } else { e }
            };
            let (old, new) = (to(&old), to(&new));
            let (o, n) = (Distinct::of(&old), Distinct::of(&new));
            proptest::prop_assert_eq!(o.len(), distinct(&old).len());
            proptest::prop_assert_eq!(n.len(), distinct(&new).len());
            proptest::prop_assert_eq!(
                Delta::between_sorted(o.iter(), n.iter()),
                Delta::between(&distinct(&old), &distinct(&new))
            );
        }
    }
}
