//! Shared parsing and editing for `block`/`unblock`/`allow`/`unallow`:
//! every argument is validated before any map is touched, so invalid input
//! changes nothing.

use anyhow::{Context as _, bail};
use blocklist_agent::{
    datapath::maps::{Maps, TrieKind},
    prefix::Prefix,
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

/// Adds or removes `prefixes` in the `kind` tries and prints one line each.
pub fn edit(ctx: &Context, kind: TrieKind, prefixes: &[Prefix], add: bool) -> anyhow::Result<()> {
    let mut maps = open_maps(ctx, add)?;
    let noun = match kind {
        TrieKind::Block => "block",
        TrieKind::Allow => "allow",
    };
    for p in prefixes {
        let changed = if add {
            maps.insert_manual(kind, *p)?
        } else {
            maps.remove(kind, *p)?
        };
        let what = match (add, changed) {
            (true, true) => "added",
            (true, false) => "already present",
            (false, true) => "removed",
            (false, false) => "not present",
        };
        println!("{noun} {p}: {what}");
    }
    Ok(())
}
