//! `allow` and `unallow`: entries that override block entries.

use blocklist_agent::{agent::manual, datapath::maps::TrieKind};

use super::{Context, EntriesArgs};

/// `allow CIDR...`: the same minimum prefix applies as for `block`, since
/// an over-broad allow entry silently switches protection off.
pub fn allow(ctx: &Context, args: EntriesArgs) -> anyhow::Result<()> {
    edit(ctx, args, true)
}

/// `unallow CIDR...`
pub fn unallow(ctx: &Context, args: EntriesArgs) -> anyhow::Result<()> {
    edit(ctx, args, false)
}

fn edit(ctx: &Context, args: EntriesArgs, add: bool) -> anyhow::Result<()> {
    let prefixes = manual::parse(&ctx.config, &args.cidrs, add)?;
    let done = manual::edit(
        &ctx.pin,
        &ctx.state,
        &ctx.config,
        TrieKind::Allow,
        &prefixes,
        add,
        None,
    )?;
    for (p, what) in done {
        println!("allow {p}: {}", what.as_str());
    }
    ctx.share()
}
