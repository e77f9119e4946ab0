//! `sync --once`: one sync for cron; prints what changed per family and
//! per feed. `--dry-run` computes the same and changes nothing.
//!
//! `--json` output (stable): the [`Report`] of `blocklist_agent::write::sync`:
//! ```json
//! {"feeds": [{"name": "drop.txt", "status": "updated", "entries": 3, "added": 3, "removed": 0, "rejected": 1, "reserved": 0}],
//!  "v4": {"added": 3, "removed": 0, "unchanged": 0}, "v6": {...},
//!  "allow_added": 2, "allow_removed": 0, "too_broad": 0, "shadowed": 0,
//!  "dry_run": false, "seconds": 0.01, "apply_seconds": 0.001}
//! ```
//! A feed that failed or was refused has `"status": "failed"` or
//! `"refused"` and a `"reason"`.
//!
//! Exit codes, for cron: 0 when every feed updated, was unchanged, not
//! due or disabled; [`KEPT_LAST_GOOD`] (3) when the report is printed but
//! at least one feed failed or was refused and protection was kept from
//! its last good list (the last line on stderr names the feeds and why,
//! below whatever the log said); 1
//! for any other error, when nothing was synced.

use anyhow::{Context as _, bail};
use blocklist_agent::{
    agent,
    feed::{fetch::Fetcher, poll::FeedStatus},
    state::lock,
    write::sync::{Report, SyncOptions, sync_once},
};
use clap::Args;

use super::{Context, SourceArgs, table};

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Run one sync and exit (the only mode; `run` is the daemon).
    #[arg(long)]
    pub once: bool,
    /// Show what would change; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Machine-readable report.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub sources: SourceArgs,
}

pub fn run(ctx: &Context, args: SyncArgs) -> anyhow::Result<()> {
    if !args.once {
        bail!("`sync` needs --once (for a long-running agent use `run`)");
    }
    ctx.refuse_unsafe_paths()?;
    let mut config = ctx.config.clone();
    agent::sources::apply(&mut config, &args.sources.feeds, &args.sources.allow);
    let _lock = lock::acquire(ctx.state.root(), config.lock_timeout)?;
    let mut maps = agent::open_maps(&ctx.pin, &ctx.config, !args.dry_run)?;
    let fetcher = Fetcher::new(&config.fetch).context("setting up the HTTP client")?;
    let opts = SyncOptions {
        dry_run: args.dry_run,
        force: args.sources.force,
        due: None,
    };
    let (report, _) = sync_once(&config, &mut maps, &ctx.state, &fetcher, &opts)?;
    if !args.dry_run {
        ctx.share()?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    let kept = report.kept_last_good();
    if kept.is_empty() {
        return Ok(());
    }
    let feeds: Vec<String> = kept
        .iter()
        .map(|(name, why)| format!("`{name}` ({why})"))
        .collect();
    Err(KeptLastGood(format!(
        "{} of {} feed(s) kept their last good entries: {}; fix the feed or its guard (`status` \
         shows it), then sync again",
        kept.len(),
        report.feeds.len(),
        feeds.join("; ")
    ))
    .into())
}

/// The exit code of a sync that kept a feed's last good list.
pub const KEPT_LAST_GOOD: u8 = 3;

/// A sync that finished but kept at least one feed's last good list; the
/// binary exits with [`KEPT_LAST_GOOD`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeptLastGood(String);

/// The human form of a report.
pub fn print_report(r: &Report) {
    let mut t = table::new(&[
        "feed", "status", "entries", "added", "removed", "rejected", "reserved",
    ]);
    for f in &r.feeds {
        let status = match &f.status {
            FeedStatus::Updated => "updated".to_owned(),
            FeedStatus::Unchanged => "unchanged".to_owned(),
            FeedStatus::NotDue => "not due".to_owned(),
            FeedStatus::Disabled => "disabled".to_owned(),
            FeedStatus::Failed(_) => "FAILED, kept last good".to_owned(),
            FeedStatus::Refused(_) => "REFUSED, kept last good".to_owned(),
        };
        t.add_row(vec![
            f.name.clone(),
            status,
            f.entries.to_string(),
            format!("+{}", f.added),
            format!("-{}", f.removed),
            f.rejected.to_string(),
            f.reserved.to_string(),
        ]);
    }
    println!("{t}");
    for f in &r.feeds {
        if let FeedStatus::Failed(why) | FeedStatus::Refused(why) = &f.status {
            println!("  {}: {why}", f.name);
        }
        for s in &f.samples {
            println!(
                "  {} {} {}: {} ({})",
                f.name, s.unit, s.line, s.reason, s.text
            );
        }
        if f.rejected > f.samples.len() {
            println!(
                "  {}: {} more rejected",
                f.name,
                f.rejected - f.samples.len()
            );
        }
        for s in &f.reserved_samples {
            println!("  {} reserved range: {s}", f.name);
        }
        if f.reserved > f.reserved_samples.len() {
            println!(
                "  {}: {} more in reserved ranges (allow_reserved = true on the feed installs them)",
                f.name,
                f.reserved - f.reserved_samples.len()
            );
        }
    }
    let mut t = table::new(&["family", "added", "removed", "unchanged"]);
    for (name, d) in [("IPv4", r.v4), ("IPv6", r.v6)] {
        t.add_row(vec![
            name.to_owned(),
            d.added.to_string(),
            d.removed.to_string(),
            d.unchanged.to_string(),
        ]);
    }
    println!("\n{t}");
    let verb = if r.dry_run { "would change" } else { "changed" };
    println!(
        "\nallow entries: +{} -{}; refused as too broad: {}; inside allow ranges: {}; {verb} in {:.3} s (kernel writes {:.3} s)",
        r.allow_added, r.allow_removed, r.too_broad, r.shadowed, r.seconds, r.apply_seconds
    );
}
