//! One CrowdSec feed, one poll: the agent as a Local API bouncer.
//!
//! A [`Session`] holds the feed's decisions between polls (and on disk, in
//! `feeds/NAME.decisions.json`, so a restarted agent keeps protecting with
//! them while the Local API is away). The first poll of a process, and one
//! every `resync` (default hourly), asks for every active decision
//! (`startup=true`) and replaces the set; the others apply the deltas.
//! Every poll, due or not, drops the decisions that have expired, so a ban
//! ends on time even when the Local API does not answer. A failed poll
//! keeps the decisions; the shrink guard does not apply (a delta that
//! deletes every ban is a normal answer).

use std::{
    cell::RefCell,
    collections::BTreeMap,
    time::{Instant, SystemTime},
};

use super::config::FeedConfig;
use super::{
    crowdsec::{self, Decisions, Query},
    fetch::{Fetched, Source},
    poll::{Delta, FeedOutcome, FeedStatus, PollContext, distinct, unix_now},
};
use crate::state::feeds::FeedState;

/// What a running agent keeps about one CrowdSec feed between polls.
#[derive(Debug, Default)]
pub struct Session {
    decisions: Decisions,
    /// When the last `startup=true` poll succeeded in this process.
    last_full: Option<Instant>,
    /// The decisions file's modification time after this process last
    /// read or wrote it: another writer (`sync --once`) changing it makes
    /// the session read it again and resync.
    seen: Option<SystemTime>,
    /// The stored decisions were unreadable and no full poll replaced them.
    lost: bool,
    /// Read from the state directory at least once.
    loaded: bool,
}

/// The sessions of every CrowdSec feed, by feed name. `run` keeps one for
/// its lifetime; a one-shot sync starts from the state directory.
#[derive(Debug, Default)]
pub struct Sessions(RefCell<BTreeMap<String, Session>>);

impl Sessions {
    /// The earliest expiry of any decision held (seconds since the epoch).
    pub fn next_expiry(&self) -> Option<i64> {
        self.0
            .borrow()
            .values()
            .filter_map(|s| s.decisions.next_expiry())
            .min()
    }
}

fn load(ctx: &PollContext<'_>, name: &str, session: &mut Session) {
    match ctx.state.feed_decisions(name) {
        Ok(d) => {
            session.decisions = d;
            session.lost = false;
        }
        Err(e) => {
            tracing::warn!(feed = %name, error = %format!("{e:#}"), "stored CrowdSec decisions unreadable; asking the Local API for all of them and holding deletes until it answers");
            session.decisions = Decisions::default();
            session.lost = true;
        }
    }
    session.seen = ctx.state.feed_decisions_mtime(name);
    session.last_full = None;
    session.loaded = true;
}

/// Polls one CrowdSec feed (`due`), or only expires its decisions (not
/// due). Never fails: a problem becomes a status that keeps the decisions.
pub fn poll(ctx: &PollContext<'_>, feed: &FeedConfig, mut st: FeedState, due: bool) -> FeedOutcome {
    let name = feed.name.clone();
    let mut sessions = ctx.sessions.0.borrow_mut();
    let session = sessions.entry(name.clone()).or_default();
    let mut changed = false;
    let mut reloaded = false;
    if !session.loaded || ctx.state.feed_decisions_mtime(&name) != session.seen {
        load(ctx, &name, session);
        // Whatever was read must reach the policy, and the previous sync's
        // view of this feed is no base for a delta.
        changed = true;
        reloaded = true;
    }
    let before =
        distinct(&super::poll::screen(ctx.guard, feed, session.decisions.entries()).entries);
    let now = unix_now();
    let expired = session.decisions.expire(now);
    changed |= expired > 0;
    if expired > 0 {
        tracing::info!(feed = %name, expired, "CrowdSec decisions expired");
    }

    let mut status = if !feed.enabled {
        FeedStatus::Disabled
    } else if due {
        FeedStatus::Unchanged
    } else {
        FeedStatus::NotDue
    };
    let (mut rejected, mut samples) = (0, Vec::new());
    if feed.enabled && due {
        st.last_attempt = Some(SystemTime::now());
        let resync = feed.resync.unwrap_or(crowdsec::DEFAULT_RESYNC);
        let full = session.last_full.is_none_or(|t| t.elapsed() >= resync);
        match fetch(ctx, feed, full) {
            Err(reason) => {
                tracing::warn!(feed = %name, %reason, kept = session.decisions.len(), "CrowdSec Local API poll failed; keeping its decisions");
                st.failures += 1;
                st.last_error = Some(reason.clone());
                status = FeedStatus::Failed(reason);
            }
            Ok(stream) => {
                rejected = stream.rejected;
                samples = stream.samples.clone();
                st.ignored += stream.ignored as u64;
                if rejected > 0 {
                    tracing::info!(feed = %name, rejected, samples = ?samples, "CrowdSec decisions rejected");
                }
                if full {
                    let old = std::mem::take(&mut session.decisions);
                    session.decisions.replace(stream);
                    changed |= session.decisions != old;
                    session.last_full = Some(Instant::now());
                    session.lost = false;
                } else {
                    changed |= session.decisions.apply(stream);
                }
                changed |= session.decisions.expire(unix_now()) > 0;
                st.last_success = Some(SystemTime::now());
                st.last_error = None;
                st.last_refusal = None;
                st.rejected = rejected;
                st.samples = samples.clone();
                if changed {
                    status = FeedStatus::Updated;
                }
            }
        }
    }
    let screened = super::poll::screen(ctx.guard, feed, session.decisions.entries());
    let (reserved, reserved_samples) = (screened.touched(), screened.samples);
    let entries = screened.entries;
    st.entries = entries.len();
    if changed && st.reserved_samples != reserved_samples {
        super::poll::log_reserved(&name, reserved, &reserved_samples);
    }
    st.reserved = reserved;
    st.reserved_samples.clone_from(&reserved_samples);
    if !ctx.dry_run {
        let saved = (|| {
            if changed {
                // The entries file too: `check`, `list` and `top` name the
                // feeds listing a prefix from it, as for any feed.
                ctx.state.set_feed_entries(&name, &entries)?;
                ctx.state.set_feed_decisions(&name, &session.decisions)?;
                session.seen = ctx.state.feed_decisions_mtime(&name);
            }
            ctx.state.set_feed(&name, &st)
        })();
        if let Err(e) = saved {
            tracing::error!(feed = %name, error = %format!("{e:#}"), "could not save the CrowdSec decisions");
        }
    }
    let delta = if changed {
        Delta::between(&before, &distinct(&entries))
    } else {
        Delta::default()
    };
    FeedOutcome {
        name,
        status,
        entries: Some(entries),
        added: delta.added.len(),
        removed: delta.removed.len(),
        delta: (!session.lost && !reloaded).then_some(delta),
        rejected,
        samples,
        reserved,
        reserved_samples,
        uncertain: session.lost,
    }
}

fn fetch(ctx: &PollContext<'_>, feed: &FeedConfig, full: bool) -> Result<crowdsec::Stream, String> {
    let source = Source::parse(feed.url.as_deref().unwrap_or("")).map_err(|e| e.to_string())?;
    let Source::Http(base) = source else {
        return Err(format!(
            "feed `{}`: a CrowdSec feed needs the Local API's http(s) url",
            feed.name
        ));
    };
    let req = super::auth::request(feed).map_err(|e| e.to_string())?;
    let default_scopes: Vec<String> = crowdsec::DEFAULT_SCOPES
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let scopes: Vec<String> = feed
        .scopes
        .as_ref()
        .unwrap_or(&default_scopes)
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let url = crowdsec::stream_url(
        &base,
        &Query {
            startup: full,
            scopes: &scopes,
            origins: &feed.origins,
            scenarios_containing: &feed.scenarios_containing,
            scenarios_not_containing: &feed.scenarios_not_containing,
        },
    );
    let body = match ctx.fetcher.get(&url, &req).map_err(|e| e.to_string())? {
        Fetched::Body(b) => b,
        Fetched::NotModified => return Ok(crowdsec::Stream::default()),
    };
    crowdsec::parse_stream(&body.bytes, unix_now())
}
