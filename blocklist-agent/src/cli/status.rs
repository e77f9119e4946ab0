//! `status`: attachment, entries and fill per trie, global counters.
//!
//! `--json` output (stable):
//! ```json
//! {"pin_dir": "...", "action": "drop", "match": "both", "lookup": "table",
//!  "table": {"generation": 4, "dirty": false},
//!  "interfaces": [{"name": "eth0", "mode": "native", "since": "...", "link_pinned": true}],
//!  "hooks": [{"hook": "xdp", "target": "eth0", "mode": "native", "since": "..."},
//!            {"hook": "tc_egress", "target": "eth0", "mode": "tcx", "since": null},
//!            {"hook": "cgroup", "target": "/sys/fs/cgroup", "mode": "connect4,...", "since": "..."}],
//!  "hook_counters": {"xdp": {"seen_packets": 0, "dropped_packets": 0, ...}, "tc_ingress": ..., "tc_egress": ..., "cgroup": ...},
//!  "tries": [{"name": "BLOCK_V4", "entries": 3, "max_entries": 1048575, "fill": 0.0}],
//!  "counters": {"seen_packets": 0, ...}}
//! ```

use std::{collections::BTreeMap, path::Path, time::SystemTime};

use blocklist_agent::{
    config::{Action, Lookup, MatchMode},
    datapath::maps::{Maps, TrieKind},
    hooks::{self, Hook},
    read::counters::{self, HookTotals},
    state::feeds::FeedState,
    timestamp,
};
use blocklist_ebpf::HOOK_NAMES;
use clap::Args;
use serde::Serialize;

use super::{Context, table};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

const FILL_WARNING: f64 = 0.8;

/// `status --json`.
#[derive(Serialize)]
struct Doc<'a> {
    pin_dir: &'a Path,
    agent: AgentDoc,
    action: &'static str,
    #[serde(rename = "match")]
    match_mode: &'static str,
    lookup: &'static str,
    table: TableDoc,
    interfaces: Vec<Interface<'a>>,
    hooks: &'a [Hook],
    hook_counters: BTreeMap<&'static str, HookTotals>,
    tries: Vec<Trie>,
    counters: BTreeMap<&'static str, u64>,
    feeds: Vec<FeedDoc<'a>>,
}

#[derive(Serialize)]
struct AgentDoc {
    running: bool,
    pid: Option<u32>,
    #[serde(with = "timestamp::option")]
    since: Option<SystemTime>,
}

#[derive(Serialize)]
struct TableDoc {
    generation: u64,
    dirty: bool,
}

#[derive(Serialize)]
struct Interface<'a> {
    name: &'a str,
    mode: Option<String>,
    #[serde(with = "timestamp::option")]
    since: Option<SystemTime>,
    link_pinned: bool,
}

#[derive(Serialize)]
struct Trie {
    name: &'static str,
    entries: u64,
    max_entries: u32,
    fill: f64,
}

#[derive(Serialize)]
struct FeedDoc<'a> {
    name: &'a str,
    action: &'static str,
    entries: usize,
    #[serde(with = "timestamp::option")]
    last_attempt: Option<SystemTime>,
    #[serde(with = "timestamp::option")]
    last_success: Option<SystemTime>,
    last_error: &'a Option<String>,
    last_refusal: &'a Option<String>,
    failures: u64,
    refusals: u64,
    rejected: usize,
    reserved: usize,
    reserved_samples: &'a [String],
    ignored: u64,
    upstream_last_modified: &'a Option<String>,
}

pub fn run(ctx: &Context, args: StatusArgs) -> anyhow::Result<()> {
    let maps = Maps::open_read_only(&ctx.pin)?;
    let config = maps.config()?;
    let recorded = ctx.state.attachments().unwrap_or_default();
    let linked = ctx.pin.linked_interfaces();
    let mut names: Vec<String> = recorded
        .keys()
        .cloned()
        .chain(linked.iter().cloned())
        .collect();
    names.sort();
    names.dedup();
    let interfaces: Vec<_> = names
        .iter()
        .map(|n| {
            let rec = recorded.get(n);
            Interface {
                name: n,
                mode: rec.map(|r| r.mode.to_string()),
                since: rec.map(|r| r.since),
                link_pinned: linked.contains(n),
            }
        })
        .collect();
    let mut tries = Vec::new();
    let counts = ctx.state.counts();
    for (name, kind, family) in TrieKind::ALL {
        let known = counts.map(|c| (c.generation, c.get(kind, family)));
        let f = maps.fill_known(kind, family, known)?;
        tries.push((name, f));
    }
    let g = maps.global()?;
    let by_hook = maps.hook_counters()?;
    let hooks = hooks::attached(&ctx.pin, &ctx.state);
    let counters: BTreeMap<_, _> = g.named().into_iter().collect();
    let feed_names = {
        let configured = ctx.config.feed_names();
        if configured.is_empty() {
            ctx.state.feed_names()
        } else {
            configured
        }
    };
    let feeds: Vec<(String, FeedState)> = feed_names
        .into_iter()
        .map(|n| {
            let st = ctx.state.feed(&n).unwrap_or_default();
            (n, st)
        })
        .collect();
    let agent = ctx.state.agent();
    let action = Action::from_abi(config.action).name();
    let match_mode = MatchMode::from_abi(config.match_mode).name();
    let lookup = Lookup::from_abi(config.lookup).name();
    let meta = maps.table_meta()?;

    if args.json {
        let doc = Doc {
            pin_dir: ctx.pin.root(),
            agent: AgentDoc {
                running: agent.is_some(),
                pid: agent.as_ref().map(|a| a.pid),
                since: agent.as_ref().map(|a| a.since),
            },
            action,
            match_mode,
            lookup,
            table: TableDoc {
                generation: meta.generation,
                dirty: meta.dirty != 0,
            },
            interfaces,
            hooks: &hooks,
            hook_counters: HOOK_NAMES
                .iter()
                .zip(&by_hook)
                .map(|(name, c)| (*name, HookTotals::of(c)))
                .collect(),
            tries: tries
                .iter()
                .map(|(n, f)| Trie {
                    name: n,
                    entries: f.entries,
                    max_entries: f.max_entries,
                    fill: f.ratio(),
                })
                .collect(),
            counters,
            feeds: feeds
                .iter()
                .map(|(n, f)| FeedDoc {
                    name: n,
                    action: feed_action(ctx, n),
                    entries: f.entries,
                    last_attempt: f.last_attempt,
                    last_success: f.last_success,
                    last_error: &f.last_error,
                    last_refusal: &f.last_refusal,
                    failures: f.failures,
                    refusals: f.refusals,
                    rejected: f.rejected,
                    reserved: f.reserved,
                    reserved_samples: &f.reserved_samples,
                    ignored: f.ignored,
                    upstream_last_modified: &f.last_modified,
                })
                .collect(),
        };
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }

    println!(
        "xdp-blocklist: action {action}, match {match_mode}, lookup {lookup}, pins {}",
        ctx.pin.root().display()
    );
    if meta.dirty != 0 {
        println!(
            "compiled IPv4 table: behind the tries (a write is in progress, or one was \
             interrupted; the next sync recompiles it)"
        );
    }
    match &agent {
        Some(a) => println!(
            "agent: running since {} (pid {})",
            timestamp::format(a.since),
            a.pid
        ),
        None => println!(
            "agent: not running (the pinned program keeps protecting with the installed entries)"
        ),
    }
    println!();
    let mut t = table::new(&["interface", "mode", "attached since", "link"]);
    for n in &names {
        let rec = recorded.get(n);
        t.add_row(vec![
            n.clone(),
            rec.map_or("?".into(), |r| r.mode.to_string()),
            rec.map_or("?".into(), |r| timestamp::format(r.since)),
            if linked.contains(n) {
                "pinned".into()
            } else {
                "MISSING".into()
            },
        ]);
    }
    if names.is_empty() {
        println!("not attached to any interface (entries are kept in the pinned maps)");
    } else {
        println!("{t}");
    }
    if !hooks.is_empty() {
        println!();
        let mut t = table::new(&["hook", "on", "mode", "seen", "dropped", "monitored"]);
        for h in &hooks {
            let c = HOOK_NAMES
                .iter()
                .position(|n| *n == h.hook)
                .map(|i| by_hook[i])
                .unwrap_or_default();
            t.add_row(vec![
                h.hook.to_owned(),
                h.target.clone(),
                h.mode.clone(),
                c.seen_packets.to_string(),
                (c.dropped_v4_packets + c.dropped_v6_packets).to_string(),
                c.monitored_packets.to_string(),
            ]);
        }
        println!("{t}");
        println!(
            "(seen, dropped, monitored: per hook type, over all its targets; a cgroup hook counts calls)"
        );
    }
    println!();
    let mut t = table::new(&["trie", "entries", "capacity", "fill"]);
    for (name, f) in &tries {
        let warn = if f.ratio() > FILL_WARNING {
            "  WARNING: over 80% full"
        } else {
            ""
        };
        t.add_row(vec![
            name.to_string(),
            f.entries.to_string(),
            f.max_entries.to_string(),
            format!("{:.2}%{warn}", f.ratio() * 100.0),
        ]);
    }
    println!("{t}");
    println!();
    let mut t = table::new(&["counter", "packets", "bytes"]);
    for c in counters::traffic(&g) {
        let name = match (c.outcome, c.family) {
            ("not_ip", _) => "not IP".to_owned(),
            (o, "any") => o.to_owned(),
            (o, f) => format!("{o} v{}", &f[3..]),
        };
        t.add_row(vec![
            name,
            c.packets.to_string(),
            c.bytes.map_or_else(|| "-".to_owned(), table::bytes),
        ]);
    }
    println!("{t}");
    if !feeds.is_empty() {
        println!();
        let mut t = table::new(&["feed", "action", "entries", "last success", "problem"]);
        for (n, f) in &feeds {
            let mut problem = f
                .last_error
                .clone()
                .map(|e| format!("failing: {e}"))
                .or_else(|| f.last_refusal.clone().map(|r| format!("refused: {r}")))
                .unwrap_or_default();
            if f.reserved > 0 {
                if !problem.is_empty() {
                    problem.push_str("; ");
                }
                problem.push_str(&format!(
                    "{} entries in reserved ranges kept out (allow_reserved = true installs them)",
                    f.reserved
                ));
            }
            t.add_row(vec![
                n.clone(),
                feed_action(ctx, n).to_owned(),
                f.entries.to_string(),
                f.last_success
                    .map_or_else(|| "never".into(), timestamp::format),
                problem,
            ]);
        }
        println!("{t}");
    }
    Ok(())
}

/// `drop` or `monitor`, as the configuration says for the feed `name`.
fn feed_action(ctx: &Context, name: &str) -> &'static str {
    ctx.config.feed(name).map_or("drop", |f| f.action.name())
}
