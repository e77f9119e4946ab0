//! Shared parsing and editing for `block`/`unblock`/`allow`/`unallow`:
//! every argument is validated before anything is touched, so invalid
//! input changes nothing. Hand-made entries are recorded in the state
//! directory as their own source (a sync never removes them) and written
//! to the tries at once.

use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use blocklist_agent::{
    datapath::maps::{Maps, TrieKind},
    prefix::Prefix,
    state::{lock, manual::ManualBlock},
};
use clap::Args;

use super::Context;

/// Prefixes to add or remove.
#[derive(Debug, Args)]
pub struct EntriesArgs {
    /// Addresses or CIDRs (host bits are cleared: 10.1.2.3/24 is 10.1.2.0/24).
    #[arg(required = true, value_name = "CIDR")]
    pub cidrs: Vec<String>,
}

/// `block` arguments.
#[derive(Debug, Args)]
pub struct BlockArgs {
    #[command(flatten)]
    pub entries: EntriesArgs,
    /// Unblock automatically after this long (e.g. 30m, 12h, 7d); needs
    /// `run` to be running to take effect on time.
    #[arg(long = "for", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
}

/// Parses every argument; refuses all of them if any is invalid or, with
/// `guard`, broader than the configured minimum.
pub fn parse_all(ctx: &Context, args: &EntriesArgs, guard: bool) -> anyhow::Result<Vec<Prefix>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for s in &args.cidrs {
        let parsed = s.parse::<Prefix>().and_then(|p| {
            if guard {
                p.check_min(
                    ctx.config.guard.min_prefix_v4,
                    ctx.config.guard.min_prefix_v6,
                )
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

/// Opens the pinned maps, creating them (by loading the program without
/// attaching it) when `create` is set and none exist yet, so entries can be
/// staged before the first attach.
pub fn open_maps(ctx: &Context, create: bool) -> anyhow::Result<Maps> {
    if create && !ctx.pin.has_maps() {
        super::attach::load(ctx).context("creating the maps")?;
    }
    Maps::open(&ctx.pin).map_err(Into::into)
}

/// Adds or removes `prefixes` in the `kind` tries and the hand-made
/// entries, and prints one line each. `expires` applies to block entries.
pub fn edit(
    ctx: &Context,
    kind: TrieKind,
    prefixes: &[Prefix],
    add: bool,
    expires: Option<SystemTime>,
) -> anyhow::Result<()> {
    let _lock = lock::acquire(ctx.state.root(), ctx.config.lock_timeout)?;
    let mut maps = open_maps(ctx, add)?;
    let mut manual = blocklist_agent::sync::load_manual(&ctx.state, &maps)?;
    let noun = match kind {
        TrieKind::Block => "block",
        TrieKind::Allow => "allow",
    };
    // One batch: the installed entries are read once for the ids and the
    // table is compiled once, however many prefixes the command names.
    maps.batch(|maps| -> anyhow::Result<()> {
        for p in prefixes {
            let recorded = match (kind, add) {
                (TrieKind::Block, true) => manual
                    .block
                    .insert(
                        *p,
                        ManualBlock {
                            expires: expires
                                .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
                        },
                    )
                    .is_none(),
                (TrieKind::Block, false) => manual.block.remove(p).is_some(),
                (TrieKind::Allow, true) => {
                    let new = !manual.allow.contains(p);
                    if new {
                        manual.allow.push(*p);
                    }
                    new
                }
                (TrieKind::Allow, false) => {
                    let before = manual.allow.len();
                    manual.allow.retain(|a| a != p);
                    manual.allow.len() != before
                }
            };
            let changed = if add {
                maps.insert_manual(kind, *p)?
            } else {
                maps.remove(kind, *p)?
            };
            let what = match (add, changed || recorded) {
                (true, true) => "added",
                (true, false) => "already present",
                (false, true) => "removed",
                (false, false) => "not present",
            };
            let until = match (add, expires) {
                (true, Some(t)) if kind == TrieKind::Block => {
                    format!(" until {}", humantime::format_rfc3339_seconds(t))
                }
                _ => String::new(),
            };
            println!("{noun} {p}: {what}{until}");
        }
        Ok(())
    })?;
    ctx.state.set_manual(&manual).with_context(|| {
        format!(
            "recording hand-made entries in {}",
            ctx.state.root().display()
        )
    })?;
    blocklist_agent::sync::record_counts(&mut maps, &ctx.state)?;
    if !add && kind == TrieKind::Block {
        println!("(a feed that lists one of these will block it again at its next sync)");
    }
    ctx.share()
}
