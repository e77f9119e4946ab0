//! `list`: installed block entries with the feeds (and STIX indicator ids)
//! that list them, and their hit counters.
//!
//! `--json` output (stable): an array of
//! `{"prefix": "192.0.2.0/24", "manual": false, "feeds": [{"feed": "drop.txt"},
//!   {"feed": "partner", "id": "indicator--..."}], "packets": 0, "bytes": 0}`.

use blocklist_agent::{
    datapath::maps::{Maps, TrieKind},
    prefix::{Family, Prefix},
    read::listing::{FeedIndex, Listing},
};
use blocklist_ebpf::ENTRY_FLAG_MANUAL;
use clap::Args;
use serde::Serialize;

use super::{Context, table};

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only entries listed by this feed (`manual` for hand-made ones).
    #[arg(long, value_name = "NAME")]
    pub feed: Option<String>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// One element of `list --json`.
#[derive(Serialize)]
struct Row<'a> {
    prefix: Prefix,
    manual: bool,
    feeds: &'a [Listing],
    packets: u64,
    bytes: u64,
}

pub fn run(ctx: &Context, args: ListArgs) -> anyhow::Result<()> {
    let maps = Maps::open_read_only(&ctx.pin)?;
    let listing = FeedIndex::load(&ctx.state, &ctx.config.feed_names());
    let mut rows = Vec::new();
    for family in Family::ALL {
        let mut entries = maps.entries(TrieKind::Block, family)?;
        entries.sort_by_key(|(p, _)| *p);
        for (prefix, value) in entries {
            let manual = value.flags & ENTRY_FLAG_MANUAL != 0;
            let feeds = listing.feeds_of(&prefix);
            let keep = match args.feed.as_deref() {
                None => true,
                Some("manual") => manual,
                Some(name) => feeds.iter().any(|l| l.feed == name),
            };
            if keep {
                rows.push((prefix, manual, feeds));
            }
        }
    }
    if args.json {
        let mut out = Vec::with_capacity(rows.len());
        for (prefix, manual, feeds) in &rows {
            let c = maps.prefix_counters(*prefix)?;
            out.push(Row {
                prefix: *prefix,
                manual: *manual,
                feeds,
                packets: c.packets,
                bytes: c.bytes,
            });
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let mut t = table::new(&["prefix", "sources", "packets", "bytes"]);
    for (prefix, manual, feeds) in &rows {
        let c = maps.prefix_counters(*prefix)?;
        let mut sources: Vec<String> = feeds.iter().map(|l| l.feed.clone()).collect();
        sources.dedup();
        if *manual {
            sources.insert(0, "manual".into());
        }
        t.add_row(vec![
            prefix.to_string(),
            sources.join(", "),
            c.packets.to_string(),
            table::bytes(c.bytes),
        ]);
    }
    println!("{t}");
    println!("{} entries", rows.len());
    Ok(())
}
