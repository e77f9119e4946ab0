//! `allow` and `unallow`: entries that override block entries.

use blocklist_agent::datapath::maps::TrieKind;

use super::{
    Context,
    entries::{EntriesArgs, edit, parse_all},
};

/// `allow CIDR...`: the same minimum prefix applies as for `block`, since
/// an over-broad allow entry silently switches protection off.
pub fn allow(ctx: &Context, args: EntriesArgs) -> anyhow::Result<()> {
    let prefixes = parse_all(ctx, &args, true)?;
    edit(ctx, TrieKind::Allow, &prefixes, true, None)
}

/// `unallow CIDR...`
pub fn unallow(ctx: &Context, args: EntriesArgs) -> anyhow::Result<()> {
    let prefixes = parse_all(ctx, &args, false)?;
    edit(ctx, TrieKind::Allow, &prefixes, false, None)
}
