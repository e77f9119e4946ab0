//! `block` and `unblock`: hand-made block entries.

use std::time::Duration;

use blocklist_agent::{datapath::maps::TrieKind, reserved, write::manual};
use clap::Args;

use super::{Context, EntriesArgs};

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

/// `block CIDR... [--for DURATION]`
pub fn block(ctx: &Context, args: BlockArgs) -> anyhow::Result<()> {
    let prefixes = manual::parse(&ctx.config, &args.entries.cidrs, true)?;
    for p in &prefixes {
        // Installed anyway: the operator named it. Feeds are guarded.
        if let Some((r, why)) = reserved::touching(p) {
            eprintln!(
                "warning: {p} is in the reserved range {r} ({why}); blocking it can cut this host \
                 off from its LAN, resolver or metadata service"
            );
        }
    }
    let expires = args.duration.map(|d| std::time::SystemTime::now() + d);
    ctx.edit_manual(TrieKind::Block, &prefixes, true, expires)
}

/// `unblock CIDR...`
pub fn unblock(ctx: &Context, args: EntriesArgs) -> anyhow::Result<()> {
    let prefixes = manual::parse(&ctx.config, &args.cidrs, false)?;
    ctx.edit_manual(TrieKind::Block, &prefixes, false, None)?;
    println!("(a feed that lists one of these will block it again at its next sync)");
    Ok(())
}
