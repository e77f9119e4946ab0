//! `block` and `unblock`: hand-made block entries.

use blocklist_agent::datapath::maps::TrieKind;

use super::{
    Context,
    entries::{BlockArgs, EntriesArgs, edit, parse_all},
};

/// `block CIDR... [--for DURATION]`
pub fn block(ctx: &Context, args: BlockArgs) -> anyhow::Result<()> {
    let prefixes = parse_all(ctx, &args.entries, true)?;
    for p in &prefixes {
        // Installed anyway: the operator named it. Feeds are guarded.
        if let Some((r, why)) = blocklist_agent::reserved::touching(p) {
            eprintln!(
                "warning: {p} is in the reserved range {r} ({why}); blocking it can cut this host \
                 off from its LAN, resolver or metadata service"
            );
        }
    }
    let expires = args.duration.map(|d| std::time::SystemTime::now() + d);
    edit(ctx, TrieKind::Block, &prefixes, true, expires)
}

/// `unblock CIDR...`
pub fn unblock(ctx: &Context, args: EntriesArgs) -> anyhow::Result<()> {
    let prefixes = parse_all(ctx, &args, false)?;
    edit(ctx, TrieKind::Block, &prefixes, false, None)
}
