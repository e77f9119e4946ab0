//! The process around an [`Agent`]: the `/metrics` and `/export`
//! endpoints, the drop-event writer, signals (SIGTERM/SIGINT stop, SIGHUP
//! reloads), systemd notifications, and the loop of ticks.
//!
//! ```no_run
//! use blocklist_agent::{agent::{self, daemon::Agent}, config::Config,
//!     datapath::pin::PinDir, state::StateDir};
//! let pin = PinDir::new("/sys/fs/bpf/xdp-blocklist");
//! let state = StateDir::new("/var/lib/xdp-blocklist");
//! let agent = Agent::start(pin, state, Config::default())?;
//! // Until SIGTERM; SIGHUP calls the closure for the new configuration.
//! agent::serve(agent, || Ok(Config::default()))?;
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Instant, SystemTime},
};

use anyhow::Context as _;

use super::daemon::{Agent, TICK, Tick};
use crate::{
    config::Config, read::events, read::export, read::http, read::metrics, state::AgentRecord,
    write::sync::Report,
};

/// Runs `agent` until SIGTERM or SIGINT. SIGHUP asks `reload` for the new
/// configuration; when that (or applying it) fails, the running one stays.
/// Stopping leaves the pinned program protecting with the last installed
/// list.
pub fn serve(
    mut agent: Agent,
    mut reload: impl FnMut() -> anyhow::Result<Config>,
) -> anyhow::Result<()> {
    let config = agent.config().clone();
    let stop = Arc::new(AtomicBool::new(false));
    let reopen_events = Arc::new(AtomicBool::new(false));
    if let Some(addr) = listen("metrics", &config.metrics.listen)? {
        http::serve("metrics", addr, metrics::router(agent.metrics()))?;
        tracing::info!(%addr, "metrics endpoint listening");
    }
    if let Some(addr) = listen("export", &config.export.listen)? {
        http::serve("export", addr, export::router(agent.exported()))?;
        tracing::info!(%addr, "export endpoint listening");
    }
    #[cfg(feature = "ebpf-debug-log")]
    forward_ebpf_logs(Arc::clone(&stop));
    let events_output = events::Output::parse(&config.events.output, &config.events.syslog_socket);
    let events_thread = if events_output != events::Output::Off {
        Some(events::spawn(
            agent.pin().clone(),
            events_output,
            agent.feed_index(),
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

    let state = agent.state().clone();
    state.set_agent(Some(&AgentRecord {
        pid: std::process::id(),
        since: SystemTime::now(),
    }))?;
    tracing::info!(feeds = config.feeds.len(), "agent running");
    // systemd (Type=notify): READY after the first sync pass, which always
    // ends with a protecting set (new lists, or each feed's last good one).
    let mut ready = false;
    while !term.load(Ordering::Relaxed) {
        if hup.swap(false, Ordering::Relaxed) {
            notify(&[sd_notify::NotifyState::Reloading]);
            reopen_events.store(true, Ordering::Relaxed);
            match reload().and_then(|c| agent.reload(c)) {
                Ok(()) => {
                    tracing::info!(feeds = agent.config().feeds.len(), "configuration reloaded")
                }
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "reload failed; keeping the running configuration")
                }
            }
            notify(&[sd_notify::NotifyState::Ready]);
        }
        match agent.tick(Instant::now()) {
            Tick::Idle => {}
            Tick::Busy(e) => {
                tracing::warn!(error = %format!("{e:#}"), "another writer is busy; retrying later");
                std::thread::sleep(TICK);
                continue;
            }
            Tick::Synced(r) => log_report(&r),
            Tick::Failed(e) => {
                tracing::error!(error = %format!("{e:#}"), "sync failed; the installed entries keep protecting")
            }
        }
        if !ready && agent.passes() > 0 {
            ready = true;
            notify(&[
                sd_notify::NotifyState::Ready,
                sd_notify::NotifyState::Status("protecting; first sync done"),
            ]);
        }
        std::thread::sleep(agent.wait(Instant::now()));
    }
    notify(&[sd_notify::NotifyState::Stopping]);
    tracing::info!("stopping; the pinned program keeps protecting with the installed entries");
    stop.store(true, Ordering::Relaxed);
    if let Some(t) = events_thread {
        let _ = t.join();
    }
    let _ = state.set_agent(None);
    Ok(())
}

/// The address an endpoint listens on, `None` for `"off"`.
fn listen(section: &str, value: &str) -> anyhow::Result<Option<SocketAddr>> {
    if value == "off" {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .with_context(|| format!("[{section}] listen = {value:?} is not host:port (or \"off\")"))
}

fn log_report(r: &Report) {
    tracing::info!(
        v4_added = r.v4.added,
        v4_removed = r.v4.removed,
        v6_added = r.v6.added,
        v6_removed = r.v6.removed,
        seconds = r.seconds,
        poll_seconds = r.poll_seconds,
        apply_seconds = r.apply_seconds,
        table_compile_seconds = r.table.map_or(0.0, |t| t.compile_seconds),
        path = ?r.path,
        feeds = ?r.feeds.iter().map(|f| (&f.name, &f.status)).collect::<Vec<_>>(),
        "sync done"
    )
}

/// Tells systemd, when started by it (NOTIFY_SOCKET set); a no-op otherwise.
fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
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
                        std::thread::sleep(std::time::Duration::from_millis(100));
                    }
                });
            }
            Err(e) => tracing::warn!(program = id, error = %e, "cannot read aya-log output"),
        }
    }
}
