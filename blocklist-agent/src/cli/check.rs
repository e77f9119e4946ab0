//! `check IP`: is this address blocked, by which prefix, with what hits,
//! and does an allow entry override it?
//!
//! `--json` output (stable):
//! ```json
//! {"ip": "10.0.0.1", "blocked": true, "monitored": false, "pending": false,
//!  "block": {"prefix": "10.0.0.0/24", "manual": true, "action": "drop",
//!            "feeds": [{"feed": "partner-taxii", "id": "indicator--..."}],
//!            "packets": 3, "bytes": 294, "first_seen": "...", "last_seen": "..."},
//!  "allow": null}
//! ```
//!
//! `blocked` is what the program does with the address now; `monitored`
//! says it matches an entry only monitor feeds (`action = "monitor"`)
//! list, whose packets are counted and pass. For IPv4 in
//! table mode that is the compiled table's answer; `pending` is true when
//! it still differs from the installed entries (a sync is writing the
//! table, or one was interrupted and the next recompiles it).

use std::{net::IpAddr, time::SystemTime};

use anyhow::Context as _;
use blocklist_agent::config::Lookup;
use blocklist_agent::{
    datapath::maps::{Maps, TrieKind},
    prefix::{Prefix, canonical_addr},
    read::counters::{ktime_rfc3339, ktime_to_system},
    read::hits,
    read::listing::{FeedIndex, Listing},
    timestamp,
};
use blocklist_ebpf::{
    ENTRY_FLAG_MANUAL, ENTRY_FLAG_MONITOR, RESULT_ALLOWED, RESULT_BLOCKED, RESULT_DEEP,
    RESULT_MONITOR,
};
use clap::Args;
use serde::Serialize;

use super::{Context, table};

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The address to check.
    pub ip: String,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// `check --json`.
#[derive(Serialize)]
struct Doc {
    ip: IpAddr,
    blocked: bool,
    monitored: bool,
    pending: bool,
    block: Option<Block>,
    allow: Option<Allow>,
}

/// The block entry that matches, with its hits.
#[derive(Serialize)]
struct Block {
    prefix: Prefix,
    manual: bool,
    action: &'static str,
    feeds: Vec<Listing>,
    packets: u64,
    bytes: u64,
    #[serde(with = "timestamp::option")]
    first_seen: Option<SystemTime>,
    #[serde(with = "timestamp::option")]
    last_seen: Option<SystemTime>,
}

/// The allow entry that overrides it.
#[derive(Serialize)]
struct Allow {
    prefix: Prefix,
}

pub fn run(ctx: &Context, args: CheckArgs) -> anyhow::Result<()> {
    let ip: IpAddr = args.ip.trim().parse().with_context(|| {
        format!(
            "`{}` is not an IP address (expected e.g. 192.0.2.1 or 2001:db8::1)",
            args.ip
        )
    })?;
    let ip = canonical_addr(ip);
    let maps = Maps::open_read_only(&ctx.pin)?;
    let block = maps.lookup(TrieKind::Block, ip)?;
    let allow = maps.lookup(TrieKind::Allow, ip)?;
    let listed = block.is_some() && allow.is_none();
    let config = maps.config()?;
    // What the program decides now: in table mode the compiled table,
    // except for IPv6 single addresses (probed in `EXACT_V6` first) and the
    // /64s the IPv6 table leaves to the tries.
    let exact_v6 = ip.is_ipv6() && block.as_ref().is_some_and(|m| m.prefix.prefix_len() == 128);
    let entry_monitor = listed
        && block
            .as_ref()
            .is_some_and(|m| m.value.flags & ENTRY_FLAG_MONITOR != 0);
    // (matches, only monitors) as the program sees it.
    let (matched, monitor) = if Lookup::from_abi(config.lookup) == Lookup::Table && !exact_v6 {
        match maps.table_result(ip)? {
            RESULT_DEEP => (listed, entry_monitor),
            r if r & RESULT_BLOCKED != 0 && r & RESULT_ALLOWED == 0 => {
                (true, r & RESULT_MONITOR != 0)
            }
            _ => (false, false),
        }
    } else {
        (listed, entry_monitor)
    };
    let pending = matched != listed || monitor != entry_monitor;
    // A monitored address passes: it is counted, not blocked.
    let blocked = matched && !monitor;
    let monitored = matched && monitor;
    let counters = match &block {
        Some(m) => Some(maps.prefix_counters(m.prefix)?),
        None => None,
    };
    let listed_by = match &block {
        Some(m) => FeedIndex::load(&ctx.state, &ctx.config.feed_names()).feeds_of(&m.prefix),
        None => Vec::new(),
    };

    if args.json {
        let doc = Doc {
            ip,
            blocked,
            monitored,
            pending,
            block: block.as_ref().map(move |m| {
                let c = counters.unwrap_or_default();
                Block {
                    prefix: m.prefix,
                    manual: m.value.flags & ENTRY_FLAG_MANUAL != 0,
                    action: hits::action_of(m.value.flags).name(),
                    feeds: listed_by,
                    packets: c.packets,
                    bytes: c.bytes,
                    first_seen: ktime_to_system(c.first_seen_ns),
                    last_seen: ktime_to_system(c.last_seen_ns),
                }
            }),
            allow: allow.as_ref().map(|m| Allow { prefix: m.prefix }),
        };
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }

    let verdict = match (&block, &allow, pending) {
        (_, _, true) if blocked => "BLOCKED (no longer listed; the table is being updated)",
        (_, _, true) => "not blocked yet (listed; the table is being updated)",
        (Some(_), None, _) if monitored => {
            "MONITORED (only monitor feeds list it: its packets are counted and pass)"
        }
        (Some(_), None, _) => "BLOCKED",
        (Some(_), Some(_), _) => "allowed (an allow entry overrides the block entry)",
        (None, _, _) => "not blocked",
    };
    let mut rows = vec![("address", ip.to_string()), ("verdict", verdict.to_owned())];
    if let Some(m) = &block {
        let c = counters.unwrap_or_default();
        let source = if m.value.flags & ENTRY_FLAG_MANUAL != 0 {
            "manual"
        } else {
            "feed"
        };
        rows.push(("block entry", format!("{} ({source})", m.prefix)));
        for l in &listed_by {
            let id =
                l.id.as_deref()
                    .map(|i| format!(" indicator {i}"))
                    .unwrap_or_default();
            rows.push(("listed by", format!("{}{id}", l.feed)));
        }
        rows.push((
            "hits",
            format!("{} packets, {}", c.packets, table::bytes(c.bytes)),
        ));
        rows.push((
            "first seen",
            ktime_rfc3339(c.first_seen_ns).unwrap_or_else(|| "never".into()),
        ));
        rows.push((
            "last seen",
            ktime_rfc3339(c.last_seen_ns).unwrap_or_else(|| "never".into()),
        ));
    }
    if let Some(m) = &allow {
        rows.push(("allow entry", m.prefix.to_string()));
    }
    println!("{}", table::pairs(rows));
    Ok(())
}
