//! `run`: the agent. Attaches the configured interfaces, then syncs every
//! feed on its interval until SIGTERM; SIGHUP reloads the configuration.
//! Stopping leaves the pinned program protecting with the last installed
//! list.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;
use blocklist_agent::{
    agent,
    config::Config,
    datapath::{
        attach::{self, RequestedMode},
        loader::Loaded,
        maps::Maps,
    },
    events, export,
    feed::{auth, fetch::Fetcher},
    hooks, http,
    metrics::{self, FeedIndex, Shared},
    state::{AgentRecord, lock},
    sync::{Schedule, SyncOptions, memo::SyncMemo, sync_with},
};
use clap::Args;

use super::{Context, SourceArgs};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Interface to attach to (repeatable; adds to the config's `interfaces`).
    #[arg(long = "iface", value_name = "IF")]
    pub ifaces: Vec<String>,
    /// Validate the configuration (and the credentials it names) and exit.
    #[arg(long)]
    pub check_config: bool,
    #[command(flatten)]
    pub sources: SourceArgs,
}

/// The longest the loop sleeps, so signals and expiries are seen promptly.
const TICK: Duration = Duration::from_millis(500);

fn effective(ctx_config: &Config, args: &RunArgs) -> Config {
    let mut c = ctx_config.clone();
    agent::sources::apply(&mut c, &args.sources.feeds, &args.sources.allow);
    for i in &args.ifaces {
        if !c.interfaces.contains(i) {
            c.interfaces.push(i.clone());
        }
    }
    c
}

fn check(config: &Config) -> anyhow::Result<()> {
    for f in &config.feeds {
        auth::request(f)?;
    }
    Ok(())
}

pub fn run(ctx: &Context, args: RunArgs) -> anyhow::Result<()> {
    let config = effective(&ctx.config, &args);
    ctx.refuse_unsafe_paths()?;
    check(&config)?;
    if args.check_config {
        println!(
            "configuration OK: {} feed(s), {} interface(s), sync every {}",
            config.feeds.len(),
            config.interfaces.len(),
            humantime::format_duration(config.sync_interval)
        );
        return Ok(());
    }
    // The writer lock is held while writing (here, and for each sync pass),
    // not for the agent's lifetime: `block`/`allow` by hand must keep
    // working while `run` runs, and `sync --once` waits for a pass to end.
    let maps = {
        let _lock = lock::acquire(ctx.state.root(), config.lock_timeout)?;
        let mut maps = agent::open_maps(&ctx.pin, &ctx.config, true)?;
        attach_missing(ctx, &config)?;
        apply_live_config(&mut maps, &config)?;
        ctx.share()?;
        maps
    };
    ctx.state.set_agent(Some(&AgentRecord {
        pid: std::process::id(),
        since: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
    }))?;
    let result = serve(ctx, &args, config, maps);
    let _ = ctx.state.set_agent(None);
    result
}

/// Writes the configured action, match and event rate into `CONFIG`.
fn apply_live_config(maps: &mut Maps, config: &Config) -> anyhow::Result<()> {
    let mut c = maps.config()?;
    c.action = config.action.abi();
    c.match_mode = config.match_mode.abi();
    c.event_interval_ms = config.events.abi_interval_ms();
    c.lookup = config.datapath.lookup.abi();
    maps.set_config(c)?;
    Ok(())
}

fn serve(ctx: &Context, args: &RunArgs, mut config: Config, mut maps: Maps) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let reopen_events = Arc::new(AtomicBool::new(false));
    let index = Arc::new(std::sync::RwLock::new(Arc::new(FeedIndex::default())));
    let shared = Arc::new(Shared::new(
        ctx.pin.clone(),
        ctx.state.clone(),
        config.clone(),
        Arc::clone(&index),
    ));
    if config.metrics.listen != "off" {
        let addr: std::net::SocketAddr = config.metrics.listen.parse().with_context(|| {
            format!(
                "[metrics] listen = {:?} is not host:port (or \"off\")",
                config.metrics.listen
            )
        })?;
        http::serve("metrics", addr, metrics::router(Arc::clone(&shared)))?;
        tracing::info!(%addr, "metrics endpoint listening");
    }
    let exported: export::Shared = Arc::default();
    let export_on = config.export.listen != "off";
    if export_on {
        let addr: std::net::SocketAddr = config.export.listen.parse().with_context(|| {
            format!(
                "[export] listen = {:?} is not host:port (or \"off\")",
                config.export.listen
            )
        })?;
        http::serve("export", addr, export::router(Arc::clone(&exported)))?;
        tracing::info!(%addr, "export endpoint listening");
    }
    #[cfg(feature = "ebpf-debug-log")]
    forward_ebpf_logs(Arc::clone(&stop));
    let events_output = events::Output::parse(&config.events.output, &config.events.syslog_socket);
    let events_thread = if events_output != events::Output::Off {
        Some(events::spawn(
            ctx.pin.clone(),
            events_output,
            Arc::clone(&index),
            Arc::clone(&reopen_events),
            Arc::clone(&stop),
        )?)
    } else {
        None
    };

    let term = Arc::new(AtomicBool::new(false));
    let hup = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&term))
            .context("installing signal handlers")?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hup))
        .context("installing signal handlers")?;

    let mut fetcher = Fetcher::new(&config.fetch)?;
    // systemd (Type=notify): READY after the first sync pass, which always
    // ends with a protecting set (new lists, or each feed's last good one).
    let mut ready = false;
    let mut schedule = Schedule::default();
    let mut next_expiry_check = Instant::now();
    // What each sync leaves for the next (the installed feeds' lists, the
    // CrowdSec decisions): later syncs cost what changed.
    let memo = SyncMemo::default();
    tracing::info!(feeds = config.feeds.len(), "agent running");
    while !term.load(Ordering::Relaxed) {
        if hup.swap(false, Ordering::Relaxed) {
            notify(&[sd_notify::NotifyState::Reloading]);
            reopen_events.store(true, Ordering::Relaxed);
            match reload(ctx, args) {
                Ok((c, f)) => {
                    config = c;
                    fetcher = f;
                    schedule = Schedule::default();
                    memo.forget();
                    let _lock = lock::acquire(ctx.state.root(), config.lock_timeout)?;
                    attach_missing(ctx, &config)?;
                    apply_live_config(&mut maps, &config)?;
                    if let Ok(mut w) = shared.config.write() {
                        *w = config.clone();
                    }
                    tracing::info!(feeds = config.feeds.len(), "configuration reloaded");
                }
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "reload failed; keeping the running configuration")
                }
            }
            notify(&[sd_notify::NotifyState::Ready]);
        }
        let now = Instant::now();
        let due = schedule.due(&config, now);
        let expiry = now >= next_expiry_check
            && (agent::manual::any_expired(&ctx.state, SystemTime::now())
                || decision_expired(&memo));
        if now >= next_expiry_check {
            next_expiry_check = now + Duration::from_secs(1);
        }
        if !due.is_empty() || expiry {
            let opts = SyncOptions {
                dry_run: false,
                force: false,
                due: Some(due.clone()),
            };
            let lock = match lock::acquire(ctx.state.root(), config.lock_timeout) {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "another writer is busy; retrying later");
                    std::thread::sleep(TICK);
                    continue;
                }
            };
            let result = sync_with(&config, &mut maps, &ctx.state, &fetcher, &opts, &memo);
            if let Err(e) = ctx.share() {
                tracing::warn!(error = %format!("{e:#}"), "could not share the state with [access] group");
            }
            drop(lock);
            match result {
                Ok((r, index)) => {
                    if let Ok(mut w) = shared.index.write() {
                        *w = index;
                    }
                    if let Ok(mut w) = shared.last_sync_seconds.write() {
                        *w = Some(r.seconds);
                    }
                    publish_blocks(&shared, &mut maps, false);
                    if export_on {
                        match export::render(&maps) {
                            Ok(lists) => {
                                if let Ok(mut w) = exported.write() {
                                    *w = Arc::new(lists);
                                }
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "rendering the exported list failed")
                            }
                        }
                    }
                    tracing::info!(
                    v4_added = r.v4.added, v4_removed = r.v4.removed, v6_added = r.v6.added,
                    v6_removed = r.v6.removed, seconds = r.seconds, poll_seconds = r.poll_seconds, apply_seconds = r.apply_seconds,
                    table_compile_seconds = r.table.map_or(0.0, |t| t.compile_seconds), path = ?r.path, feeds = ?r.feeds.iter().map(|f| (&f.name, &f.status)).collect::<Vec<_>>(),
                    "sync done"
                    )
                }
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "sync failed; the installed entries keep protecting")
                }
            }
            schedule.polled(&config, &due, Instant::now());
            if !ready {
                ready = true;
                notify(&[
                    sd_notify::NotifyState::Ready,
                    sd_notify::NotifyState::Status("protecting; first sync done"),
                ]);
            }
        }
        if shared.blocks_wanted.swap(false, Ordering::Relaxed) {
            publish_blocks(&shared, &mut maps, true);
        }
        std::thread::sleep(schedule.wait(&config, Instant::now(), TICK));
    }
    notify(&[sd_notify::NotifyState::Stopping]);
    tracing::info!("stopping; the pinned program keeps protecting with the installed entries");
    stop.store(true, Ordering::Relaxed);
    if let Some(t) = events_thread {
        let _ = t.join();
    }
    Ok(())
}

/// Hands `/metrics` the installed block entries this process knows, so
/// that a scrape names the hit entries without walking the maps. With
/// `reread`, first reads the maps again if another process wrote them
/// (asked for by a scrape that found the snapshot stale).
fn publish_blocks(shared: &Shared, maps: &mut Maps, reread: bool) {
    if reread && let Err(e) = maps.installed() {
        tracing::debug!(error = %e, "could not read the installed entries for /metrics");
    }
    if let Ok(mut w) = shared.blocks.write() {
        *w = maps.block_snapshot();
    }
}

/// Tells systemd, when started by it (NOTIFY_SOCKET set); a no-op otherwise.
fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

fn reload(ctx: &Context, args: &RunArgs) -> anyhow::Result<(Config, Fetcher)> {
    let fresh = super::Context::reload_config(ctx)?;
    let c = effective(&fresh, args);
    check(&c)?;
    let f = Fetcher::new(&c.fetch)?;
    Ok((c, f))
}

/// A CrowdSec decision has run out: it is removed now, not at the next poll.
fn decision_expired(memo: &SyncMemo) -> bool {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    memo.sessions().next_expiry().is_some_and(|t| t <= now)
}

/// Attaches every configured interface that has no pinned link yet, and
/// puts the egress hooks `[egress]` wants in place.
fn attach_missing(ctx: &Context, config: &Config) -> anyhow::Result<()> {
    let linked = ctx.pin.linked_interfaces();
    let todo: Vec<String> = config
        .interfaces
        .iter()
        .filter(|i| !linked.contains(i))
        .cloned()
        .collect();
    let mut loaded = None;
    if !todo.is_empty() {
        let mode = config.xdp_mode.unwrap_or(RequestedMode::Auto);
        let l = loaded.insert(agent::load(&ctx.pin, &ctx.config)?);
        for iface in todo {
            let got = attach::attach(l, &ctx.pin, &iface, mode)?;
            agent::record_attachment(&ctx.state, &iface, got)?;
            tracing::info!(%iface, mode = %got, "attached");
        }
    }
    // The ingress hooks protect already; an egress hook that cannot go in
    // (no cgroup2 mount, a cgroup path that is gone) is an error to fix,
    // not a reason to stop syncing the lists. It is retried on SIGHUP.
    if let Err(e) = egress_hooks(ctx, config, loaded) {
        tracing::error!(
            error = %format!("{e:#}"),
            "the egress hooks [egress] asks for are not in place; ingress filtering and \
             syncing go on (fix the cause or set [egress] mode, then reload)"
        );
    }
    Ok(())
}

fn egress_hooks(ctx: &Context, config: &Config, loaded: Option<Loaded>) -> anyhow::Result<()> {
    let plan = hooks::EgressPlan::new(&ctx.pin, &config.egress)?;
    if plan.is_empty() {
        return Ok(());
    }
    let mut l = match loaded {
        Some(l) => l,
        None => agent::load(&ctx.pin, &ctx.config)?,
    };
    for line in plan.apply(&mut l, &ctx.pin, &ctx.state)? {
        tracing::info!("{line}");
    }
    Ok(())
}

/// Forwards aya-log records of every loaded xdp-blocklist program to the
/// agent's log (built with the `ebpf-debug-log` feature only).
#[cfg(feature = "ebpf-debug-log")]
fn forward_ebpf_logs(stop: Arc<AtomicBool>) {
    let ids: Vec<u32> = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str() == Some(blocklist_ebpf::PROGRAM_NAME))
        .map(|p| p.id())
        .collect();
    for id in ids {
        match aya_log::EbpfLogger::init_from_id(id) {
            Ok(mut logger) => {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        logger.flush();
                        std::thread::sleep(Duration::from_millis(100));
                    }
                });
            }
            Err(e) => tracing::warn!(program = id, error = %e, "cannot read aya-log output"),
        }
    }
}
