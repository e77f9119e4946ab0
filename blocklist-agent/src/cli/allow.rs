//! `allow` and `unallow`: entries that override block entries.

use blocklist_agent::{datapath::maps::TrieKind, write::manual};

use super::{Context, EntriesArgs};

/// `allow CIDR...`: the same minimum prefix applies as for `block`, since
/// an over-broad allow entry silently switches protection off.
pub fn allow(ctx: &Context, args: EntriesArgs) -> anyhow::Result<()> {
    let prefixes = manual::parse(&ctx.config, &args.cidrs, true)?;
    ctx.edit_manual(TrieKind::Allow, &prefixes, true, None)
}

/// `unallow CIDR...`
pub fn unallow(ctx: &Context, args: EntriesArgs) -> anyhow::Result<()> {
    let prefixes = manual::parse(&ctx.config, &args.cidrs, false)?;
    ctx.edit_manual(TrieKind::Allow, &prefixes, false, None)
}
