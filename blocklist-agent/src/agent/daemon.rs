//! The long-running agent as a state machine: [`Agent::start`] takes the
//! writer lock, opens (or creates) the pinned maps, attaches the configured
//! interfaces that have no link yet and writes the live settings;
//! [`Agent::tick`] then does one pass of the loop `run` repeats: sync the
//! feeds that are due (or every feed when a hand-made entry or a CrowdSec
//! decision has run out) and publish what `/metrics` and `/export` serve.
//!
//! Nothing here sleeps, reads signals or starts threads: [`super::serve`]
//! does that around an `Agent`, and a test drives one tick at a time.
//!
//! ```no_run
//! use std::time::Instant;
//! use blocklist_agent::{agent::daemon::{Agent, Tick}, config::Config,
//!     datapath::pin::PinDir, state::StateDir};
//! let pin = PinDir::new("/sys/fs/bpf/xdp-blocklist");
//! let state = StateDir::new("/var/lib/xdp-blocklist");
//! let mut agent = Agent::start(pin, state, Config::default())?;
//! loop {
//!     if let Tick::Synced(report) = agent.tick(Instant::now()) {
//!         println!("{} entries added", report.v4.added + report.v6.added);
//!     }
//!     std::thread::sleep(agent.wait(Instant::now()));
//! }
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::{
    sync::{Arc, RwLock, atomic::Ordering},
    time::{Duration, Instant, SystemTime},
};

use crate::{
    config::Config,
    datapath::{
        attach::{self, RequestedMode},
        loader::Loaded,
        maps::Maps,
        pin::PinDir,
    },
    feed::{auth, fetch::Fetcher, poll::unix_now},
    hooks,
    read::export,
    read::listing::FeedIndex,
    read::metrics::Shared,
    state::{StateDir, lock},
    write::sync::{Report, Schedule, SyncOptions, memo::SyncMemo, sync_with},
};

/// The longest [`Agent::wait`] asks to sleep, so that signals and expiries
/// are seen promptly.
pub const TICK: Duration = Duration::from_millis(500);

/// How often a tick looks for hand-made entries and CrowdSec decisions that
/// have run out.
const EXPIRY_CHECK: Duration = Duration::from_secs(1);

/// What one [`Agent::tick`] did.
#[derive(Debug)]
pub enum Tick {
    /// Nothing was due.
    Idle,
    /// Something was due but another writer held the lock past
    /// `lock_timeout`; the next tick tries again.
    Busy(anyhow::Error),
    /// A sync pass ran and committed.
    Synced(Box<Report>),
    /// A sync pass failed as a whole; the installed entries keep protecting.
    Failed(anyhow::Error),
}

/// The running agent: its configuration, the maps it writes, and what it
/// keeps between passes (the schedule, the feeds' last lists, the CrowdSec
/// sessions) so that a later pass costs what changed.
pub struct Agent {
    pin: PinDir,
    state: StateDir,
    config: Config,
    maps: Maps,
    fetcher: Fetcher,
    schedule: Schedule,
    memo: SyncMemo,
    next_expiry_check: Instant,
    passes: u64,
    metrics: Arc<Shared>,
    exported: export::Shared,
}

impl Agent {
    /// Checks the credentials `config` names, then, holding the writer lock,
    /// opens the maps under `pin` (creating them if none exist), attaches
    /// every configured interface that has no pinned link, puts the egress
    /// hooks in place and writes the live settings into `CONFIG`.
    pub fn start(pin: PinDir, state: StateDir, config: Config) -> anyhow::Result<Self> {
        check_credentials(&config)?;
        let fetcher = Fetcher::new(&config.fetch)?;
        // The lock is held while writing, not for the agent's lifetime:
        // `block`/`allow` by hand keep working while `run` runs, and
        // `sync --once` waits for a pass to end.
        let maps = {
            let _lock = lock::acquire(state.root(), config.lock_timeout)?;
            let mut maps = super::open_maps(&pin, &config, true)?;
            attach_missing(&pin, &state, &config)?;
            super::write_live_config(&mut maps, &config)?;
            super::share(&pin, &state, &config)?;
            maps
        };
        let index = Arc::new(RwLock::new(Arc::new(FeedIndex::default())));
        let metrics = Arc::new(Shared::new(
            pin.clone(),
            state.clone(),
            config.clone(),
            index,
        ));
        Ok(Self {
            pin,
            state,
            config,
            maps,
            fetcher,
            schedule: Schedule::default(),
            memo: SyncMemo::default(),
            next_expiry_check: Instant::now(),
            passes: 0,
            metrics,
            exported: Arc::default(),
        })
    }

    /// One pass of the loop at `now`: syncs the feeds that are due (all of
    /// them when an expiry is due too), then answers a scrape that asked
    /// for the installed entries to be read again.
    pub fn tick(&mut self, now: Instant) -> Tick {
        let due = self.schedule.due(&self.config, now);
        let expiry = now >= self.next_expiry_check && self.expiry_due();
        if now >= self.next_expiry_check {
            self.next_expiry_check = now + EXPIRY_CHECK;
        }
        let tick = if due.is_empty() && !expiry {
            Tick::Idle
        } else {
            let started = Instant::now();
            match self.sync(&due) {
                Err(busy) => return Tick::Busy(busy),
                Ok(tick) => {
                    // Intervals run from the end of a poll, on the caller's
                    // clock.
                    self.schedule
                        .polled(&self.config, &due, now + started.elapsed());
                    self.passes += 1;
                    tick
                }
            }
        };
        if self.metrics.blocks_wanted.swap(false, Ordering::Relaxed) {
            self.publish_blocks(true);
        }
        tick
    }

    /// How long the caller may sleep before the next tick is useful (at
    /// most [`TICK`]).
    pub fn wait(&self, now: Instant) -> Duration {
        self.schedule.wait(&self.config, now, TICK)
    }

    /// Switches to a new configuration (SIGHUP): checks its credentials
    /// first and keeps the running one if they fail; then forgets the
    /// schedule and the feeds' last lists (every feed is polled at the next
    /// tick), attaches new interfaces and writes the live settings.
    pub fn reload(&mut self, config: Config) -> anyhow::Result<()> {
        check_credentials(&config)?;
        let fetcher = Fetcher::new(&config.fetch)?;
        let _lock = lock::acquire(self.state.root(), config.lock_timeout)?;
        attach_missing(&self.pin, &self.state, &config)?;
        super::write_live_config(&mut self.maps, &config)?;
        self.config = config;
        self.fetcher = fetcher;
        self.schedule = Schedule::default();
        self.memo.reloaded();
        if let Ok(mut w) = self.metrics.config.write() {
            *w = self.config.clone();
        }
        Ok(())
    }

    /// Where its maps and links are pinned.
    pub fn pin(&self) -> &PinDir {
        &self.pin
    }

    /// Its state directory.
    pub fn state(&self) -> &StateDir {
        &self.state
    }

    /// The running configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The maps this agent writes.
    pub fn maps(&mut self) -> &mut Maps {
        &mut self.maps
    }

    /// Sync passes run so far (successful or not).
    pub fn passes(&self) -> u64 {
        self.passes
    }

    /// What `/metrics` (and the events writer, through its feed index)
    /// reads; kept current by every pass.
    pub fn metrics(&self) -> Arc<Shared> {
        Arc::clone(&self.metrics)
    }

    /// The lists `/export` serves, rendered after every pass when
    /// `[export] listen` is set.
    pub fn exported(&self) -> export::Shared {
        Arc::clone(&self.exported)
    }

    /// The feed listings of the last pass (which feeds list each entry).
    pub fn feed_index(&self) -> Arc<RwLock<Arc<FeedIndex>>> {
        Arc::clone(&self.metrics.index)
    }

    /// True when a hand-made entry's `--for` or a CrowdSec decision has run
    /// out: it is removed now, not at the next poll.
    fn expiry_due(&self) -> bool {
        crate::write::manual::any_expired(&self.state, SystemTime::now())
            || self
                .memo
                .sessions()
                .next_expiry()
                .is_some_and(|t| t <= unix_now())
    }

    /// One sync pass over `due` under the writer lock; `Err` only when the
    /// lock could not be had.
    fn sync(&mut self, due: &[String]) -> Result<Tick, anyhow::Error> {
        let opts = SyncOptions {
            dry_run: false,
            force: false,
            due: Some(due.to_vec()),
        };
        let lock = lock::acquire(self.state.root(), self.config.lock_timeout)?;
        let result = sync_with(
            &self.config,
            &mut self.maps,
            &self.state,
            &self.fetcher,
            &opts,
            &self.memo,
        );
        if let Err(e) = super::share(&self.pin, &self.state, &self.config) {
            tracing::warn!(error = %format!("{e:#}"), "could not share the state with [access] group");
        }
        drop(lock);
        Ok(match result {
            Ok((report, index)) => {
                if let Ok(mut w) = self.metrics.index.write() {
                    *w = index;
                }
                if let Ok(mut w) = self.metrics.last_sync_seconds.write() {
                    *w = Some(report.seconds);
                }
                self.publish_blocks(false);
                if self.config.export.listen != "off" {
                    self.render_export();
                }
                Tick::Synced(Box::new(report))
            }
            Err(e) => Tick::Failed(e),
        })
    }

    /// Hands `/metrics` the installed block entries this process knows, so
    /// that a scrape names the hit entries without walking the maps. With
    /// `reread`, first reads the maps again if another process wrote them
    /// (asked for by a scrape that found the snapshot stale).
    fn publish_blocks(&mut self, reread: bool) {
        if reread && let Err(e) = self.maps.installed() {
            tracing::debug!(error = %e, "could not read the installed entries for /metrics");
        }
        if let Ok(mut w) = self.metrics.blocks.write() {
            *w = self.maps.block_snapshot();
        }
    }

    fn render_export(&mut self) {
        match export::render(&self.maps) {
            Ok(lists) => {
                if let Ok(mut w) = self.exported.write() {
                    *w = Arc::new(lists);
                }
            }
            Err(e) => tracing::error!(error = %e, "rendering the exported list failed"),
        }
    }
}

/// Resolves every credential the feeds name (environment variables, files),
/// so that a missing secret fails `run --check-config` and a reload, not
/// the first poll.
pub fn check_credentials(config: &Config) -> anyhow::Result<()> {
    for f in &config.feeds {
        auth::request(f)?;
    }
    Ok(())
}

/// Attaches every configured interface that has no pinned link yet, and
/// puts the egress hooks `[egress]` wants in place.
fn attach_missing(pin: &PinDir, state: &StateDir, config: &Config) -> anyhow::Result<()> {
    let linked = pin.linked_interfaces();
    let todo: Vec<&String> = config
        .interfaces
        .iter()
        .filter(|i| !linked.contains(i))
        .collect();
    let mut loaded = None;
    if !todo.is_empty() {
        let mode = config.xdp_mode.unwrap_or(RequestedMode::Auto);
        let l = loaded.insert(super::load(pin, config)?);
        for iface in todo {
            let got = attach::attach(l, pin, iface, mode)?;
            super::record_attachment(state, iface, got)?;
            tracing::info!(%iface, mode = %got, "attached");
        }
    }
    // The ingress hooks protect already; an egress hook that cannot go in
    // (no cgroup2 mount, a cgroup path that is gone) is an error to fix,
    // not a reason to stop syncing the lists. It is retried on SIGHUP.
    if let Err(e) = egress_hooks(pin, state, config, loaded) {
        tracing::error!(
            error = %format!("{e:#}"),
            "the egress hooks [egress] asks for are not in place; ingress filtering and \
             syncing go on (fix the cause or set [egress] mode, then reload)"
        );
    }
    Ok(())
}

fn egress_hooks(
    pin: &PinDir,
    state: &StateDir,
    config: &Config,
    loaded: Option<Loaded>,
) -> anyhow::Result<()> {
    let plan = hooks::EgressPlan::new(pin, &config.egress)?;
    if plan.is_empty() {
        return Ok(());
    }
    let mut l = match loaded {
        Some(l) => l,
        None => super::load(pin, config)?,
    };
    for line in plan.apply(&mut l, pin, state)? {
        tracing::info!("{line}");
    }
    Ok(())
}
