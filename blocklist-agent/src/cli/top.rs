//! `top`: the busiest blocked addresses, prefixes or feeds.
//!
//! `--json` output (stable), an array, busiest first:
//! - `--by ip`: `{"ip", "direction": "src"|"dst", "prefix", "feeds": [..],
//!   "packets", "bytes", "last_seen": RFC 3339, "action": "drop"|"monitor",
//!   "rate_pps": only with --watch}`
//! - `--by prefix`: `{"prefix", "feeds", "packets", "egress_packets",
//!   "bytes", "last_seen", "action"}` (`monitor`: only monitor feeds list
//!   the entry, its packets passed)
//! - `--by feed`: `{"feed", "prefixes", "packets", "bytes", "last_seen"}`
//! - `--by hook`: `{"hook": "xdp"|"tc_ingress"|"tc_egress"|"cgroup",
//!   "packets" (dropped + monitored), "dropped_packets", "dropped_bytes",
//!   "monitored_packets", "allowlisted_packets", "seen_packets"}`, for
//!   every hook that has seen anything (a cgroup hook counts calls, and
//!   no bytes)

use std::{collections::HashMap, time::Duration};

use blocklist_agent::{
    datapath::maps::Maps,
    read::counters::{HookTotals, ktime_to_system},
    read::hits::{self, FeedHit, IpHit, PrefixHit},
    read::listing::FeedIndex,
};
use clap::{Args, ValueEnum};
use serde::Serialize;

use super::{Context, table};

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum By {
    /// Addresses that hit (source or destination).
    Ip,
    /// Block entries.
    Prefix,
    /// Feeds.
    Feed,
    /// Hooks: XDP, TC ingress, TC egress, cgroup.
    Hook,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    /// Rows to show.
    #[arg(long, default_value_t = 10)]
    pub limit: usize,
    /// What to rank.
    #[arg(long, value_enum, default_value_t = By::Ip)]
    pub by: By,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// Redraw every SECS seconds with rates over the interval (Ctrl-C stops).
    #[arg(long, value_name = "SECS")]
    pub watch: Option<u64>,
}

/// " [monitor]" after an entry that only monitor feeds list (its packets
/// passed), nothing after one that drops.
fn monitor_mark(action: blocklist_agent::config::Action) -> &'static str {
    match action {
        blocklist_agent::config::Action::Monitor => " [monitor]",
        blocklist_agent::config::Action::Drop => "",
    }
}

/// "3s ago", "5m ago", "2h ago", "4d ago", or "never".
pub fn ago(ktime_ns: u64) -> String {
    let Some(t) = ktime_to_system(ktime_ns) else {
        return "never".into();
    };
    let secs = t.elapsed().map_or(0, |d| d.as_secs());
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86400),
    }
}

/// One snapshot: rows as (key, packets, json, table cells).
struct Row {
    key: String,
    packets: u64,
    json: Json,
    cells: Vec<String>,
}

/// One element of `top --json`, by what is ranked.
#[derive(Clone, Serialize)]
#[serde(untagged)]
enum Json {
    Ip(IpHit),
    Prefix(PrefixHit),
    Feed(FeedHit),
    Hook(HookJson),
    #[cfg(test)]
    None,
}

#[derive(Clone, Serialize)]
struct HookJson {
    hook: &'static str,
    /// Dropped + monitored.
    packets: u64,
    #[serde(flatten)]
    totals: HookTotals,
}

/// A `--watch` element: the row and its rate over the interval.
#[derive(Serialize)]
struct Rated<'a> {
    #[serde(flatten)]
    row: &'a Json,
    rate_pps: f64,
}

fn snapshot(ctx: &Context, maps: &Maps, by: By) -> anyhow::Result<Vec<Row>> {
    let listing = FeedIndex::load(&ctx.state, &ctx.config.feed_names());
    Ok(match by {
        By::Ip => hits::by_ip(maps, &listing)?
            .into_iter()
            .map(|h| Row {
                key: format!("{} {:?}", h.ip, h.direction),
                packets: h.packets,
                json: Json::Ip(h.clone()),
                // Address over its entry and feeds: an IPv6 address, its
                // prefix and two feed names do not fit one 80-column line.
                cells: vec![
                    format!(
                        "{} ({})\n  {}{} {}",
                        h.ip,
                        format!("{:?}", h.direction).to_lowercase(),
                        h.prefix,
                        monitor_mark(h.action),
                        h.feeds.join(", ")
                    ),
                    table::count(h.packets),
                    table::bytes(h.bytes),
                    ago(h.last_seen_ns),
                ],
            })
            .collect(),
        By::Prefix => hits::by_prefix(maps, &listing)?
            .into_iter()
            .map(|h| Row {
                key: h.prefix.to_string(),
                packets: h.packets,
                json: Json::Prefix(h.clone()),
                cells: vec![
                    format!(
                        "{}{}\n  {}",
                        h.prefix,
                        monitor_mark(h.action),
                        h.feeds.join(", ")
                    ),
                    table::count(h.packets),
                    table::bytes(h.bytes),
                    ago(h.last_seen_ns),
                ],
            })
            .collect(),
        By::Feed => hits::by_feed(&hits::by_prefix(maps, &listing)?)
            .into_iter()
            .map(|h| Row {
                key: h.feed.clone(),
                packets: h.packets,
                json: Json::Feed(h.clone()),
                cells: vec![
                    h.feed.clone(),
                    table::count(h.prefixes),
                    table::count(h.packets),
                    table::bytes(h.bytes),
                    ago(h.last_seen_ns),
                ],
            })
            .collect(),
        By::Hook => {
            let mut rows: Vec<Row> = maps
                .hook_counters()?
                .iter()
                .zip(blocklist_ebpf::HOOK_NAMES)
                .filter(|(c, _)| c.seen_packets > 0)
                .map(|(c, hook)| {
                    let totals = HookTotals::of(c);
                    let packets = totals.matched();
                    Row {
                        key: hook.to_owned(),
                        packets,
                        json: Json::Hook(HookJson {
                            hook,
                            packets,
                            totals,
                        }),
                        cells: vec![
                            hook.to_owned(),
                            table::count(packets),
                            table::bytes(totals.dropped_bytes),
                            table::count(totals.seen_packets),
                        ],
                    }
                })
                .collect();
            rows.sort_by_key(|r| std::cmp::Reverse(r.packets));
            rows
        }
    })
}

fn header(by: By, rates: bool) -> Vec<&'static str> {
    let mut h = match by {
        By::Ip => vec![
            "address (dir) / entry, feeds",
            "packets",
            "bytes",
            "last seen",
        ],
        By::Prefix => vec!["entry / feeds", "packets", "bytes", "last seen"],
        By::Feed => vec!["feed", "entries hit", "packets", "bytes", "last seen"],
        By::Hook => vec!["hook", "packets", "bytes", "seen"],
    };
    if rates {
        let at = h.len() - 1;
        h.insert(at, "pkt/s");
    }
    h
}

/// Renders rows as the 80-column table.
fn render(by: By, rows: &[Row], rates: Option<&HashMap<String, f64>>) -> String {
    let mut t = table::new(&header(by, rates.is_some()));
    for r in rows {
        let mut cells = r.cells.clone();
        if let Some(rates) = rates {
            let at = cells.len() - 1;
            cells.insert(
                at,
                format!("{:.1}", rates.get(&r.key).copied().unwrap_or(0.0)),
            );
        }
        t.add_row(cells);
    }
    // Unwrapped when it fits; otherwise wrap, but never break an address or
    // prefix across lines (feed lists wrap instead).
    t.set_content_arrangement(comfy_table::ContentArrangement::Disabled);
    let natural = t.to_string();
    if natural.lines().all(|l| l.chars().count() <= 80) {
        return natural;
    }
    t.set_content_arrangement(comfy_table::ContentArrangement::Dynamic);
    let widest = rows
        .iter()
        .filter_map(|r| r.cells[0].split_whitespace().next().map(str::len))
        .max()
        .unwrap_or(0)
        .min(45) as u16;
    table::keep_whole(&mut t, 0, widest + 6);
    t.to_string()
}

pub fn run(ctx: &Context, args: TopArgs) -> anyhow::Result<()> {
    let maps = Maps::open_read_only(&ctx.pin)?;
    let Some(secs) = args.watch else {
        let mut rows = snapshot(ctx, &maps, args.by)?;
        rows.truncate(args.limit);
        if args.json {
            let v: Vec<&Json> = rows.iter().map(|r| &r.json).collect();
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else if rows.is_empty() {
            println!("nothing has hit the blocklist yet");
        } else {
            println!("{}", render(args.by, &rows, None));
        }
        return Ok(());
    };
    let interval = Duration::from_secs(secs.max(1));
    let mut before: HashMap<String, u64> = HashMap::new();
    loop {
        let mut rows = snapshot(ctx, &maps, args.by)?;
        let rates: HashMap<String, f64> = rows
            .iter()
            .map(|r| {
                let prev = before.get(&r.key).copied().unwrap_or(r.packets);
                (
                    r.key.clone(),
                    r.packets.saturating_sub(prev) as f64 / interval.as_secs_f64(),
                )
            })
            .collect();
        before = rows.iter().map(|r| (r.key.clone(), r.packets)).collect();
        rows.truncate(args.limit);
        if args.json {
            let v: Vec<Rated<'_>> = rows
                .iter()
                .map(|r| Rated {
                    row: &r.json,
                    rate_pps: rates.get(&r.key).copied().unwrap_or(0.0),
                })
                .collect();
            println!("{}", serde_json::to_string(&v)?);
        } else {
            // Clear the screen and redraw in place.
            print!("\x1b[2J\x1b[H");
            println!(
                "xdp-blocklist top by {:?}, every {}s (Ctrl-C to stop)\n",
                args.by,
                interval.as_secs()
            );
            println!("{}", render(args.by, &rows, Some(&rates)));
        }
        std::thread::sleep(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<Row> {
        vec![
            Row {
                key: "a".into(),
                packets: 123_456,
                json: Json::None,
                cells: vec![
                    "2001:db8:ffff:ffff:ffff:ffff:ffff:fffe (src)\n  2001:db8:ffff::/48 spamhaus-drop, partner-taxii".into(),
                    table::count(123_456),
                    "12.3 MiB".into(),
                    "3s ago".into(),
                ],
            },
            Row {
                key: "b".into(),
                packets: 7,
                json: Json::None,
                cells: vec![
                    "192.0.2.7 (dst)\n  192.0.2.0/24 manual".into(),
                    table::count(7),
                    "686 B".into(),
                    "2m ago".into(),
                ],
            },
        ]
    }

    #[test]
    fn ip_table_fits_80_columns() {
        let out = render(By::Ip, &rows(), None);
        for line in out.lines() {
            assert!(
                line.chars().count() <= 80,
                "{} chars: {line}",
                line.chars().count()
            );
        }
        let rates = HashMap::from([("a".to_owned(), 1234.5)]);
        let watched = render(By::Ip, &rows(), Some(&rates));
        for line in watched.lines() {
            assert!(line.chars().count() <= 80, "{line}");
        }
        assert!(watched.contains("1234.5"));
    }

    #[test]
    fn ip_table_snapshot() {
        let out = render(By::Ip, &rows(), None);
        let expected = include_str!("snapshots/top_ip.txt");
        assert_eq!(out.trim_end(), expected.trim_end(), "\n{out}");
    }

    #[test]
    fn prefix_and_feed_tables_snapshot() {
        let prefixes = vec![Row {
            key: "p".into(),
            packets: 42,
            json: Json::None,
            cells: vec![
                "2001:db8:ffff::/48\n  spamhaus-drop, partner-taxii".into(),
                table::count(42),
                "4.1 KiB".into(),
                "5m ago".into(),
            ],
        }];
        let out = render(By::Prefix, &prefixes, None);
        assert_eq!(
            out.trim_end(),
            include_str!("snapshots/top_prefix.txt").trim_end(),
            "\n{out}"
        );
        let feeds = vec![Row {
            key: "f".into(),
            packets: 1_234_567,
            json: Json::None,
            cells: vec![
                "spamhaus-drop".into(),
                table::count(17),
                table::count(1_234_567),
                "118.0 MiB".into(),
                "1s ago".into(),
            ],
        }];
        let out = render(By::Feed, &feeds, None);
        assert_eq!(
            out.trim_end(),
            include_str!("snapshots/top_feed.txt").trim_end(),
            "\n{out}"
        );
        for line in out.lines() {
            assert!(line.chars().count() <= 80);
        }
    }

    #[test]
    fn never_seen_is_never() {
        assert_eq!(ago(0), "never");
    }
}
