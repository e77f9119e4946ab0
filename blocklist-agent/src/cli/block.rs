//! `block` and `unblock`: hand-made block entries.

use blocklist_agent::datapath::maps::TrieKind;

use super::{
    Context,
    entries::{EntriesArgs, edit, parse_all},
};

/// `block CIDR...`
pub fn block(ctx: &Context, args: EntriesArgs) -> anyhow::Result<()> {
    let prefixes = parse_all(ctx, &args, true)?;
    edit(ctx, TrieKind::Block, &prefixes, true)
}

/// `unblock CIDR...`
pub fn unblock(ctx: &Context, args: EntriesArgs) -> anyhow::Result<()> {
    let prefixes = parse_all(ctx, &args, false)?;
    edit(ctx, TrieKind::Block, &prefixes, false)
}
