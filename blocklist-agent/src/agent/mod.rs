//! The agent's operations, as the verbs of the binary use them: the
//! long-running agent ([`daemon::Agent`], one [`daemon::Agent::tick`] at a
//! time, and [`serve`], the process around it), load the program, open or
//! create the pinned maps, record attachments, edit the hand-made entries
//! ([`edit_manual`]), add command-line sources to a configuration ([`sources`]).
//!
//! Each verb of `blocklist-agent` parses its arguments, calls one of
//! these, and renders what it returns; the operations print nothing.
//!
//! ```no_run
//! use blocklist_agent::{agent, config::Config, datapath::pin::PinDir};
//! let pin = PinDir::new(std::path::PathBuf::from("/sys/fs/bpf/xdp-blocklist"));
//! // Creates the pinned maps (loading the program unattached) if none exist.
//! let maps = agent::open_maps(&pin, &Config::default(), true)?;
//! # Ok::<(), anyhow::Error>(())
//! ```

pub mod daemon;
mod serve;
pub mod sources;

pub use serve::serve;

use std::time::SystemTime;

use anyhow::Context as _;

use crate::{
    config::Config,
    datapath::{
        attach, grow,
        loader::{self, LoadOptions, Loaded},
        maps::{Maps, TrieKind},
        pin::PinDir,
    },
    prefix::Prefix,
    state::{Attachment, StateDir, lock},
    write::manual::{self, Edited},
};

/// Loads the program with the maps pinned under `pin`. When the maps did
/// not exist yet, writes the configured live settings into the fresh
/// `CONFIG` ([`write_live_config`]).
pub fn load(pin: &PinDir, config: &Config) -> anyhow::Result<Loaded> {
    grow::recover(pin).context("finishing an exact map's growth that a writer left")?;
    let fresh = !pin.has_maps();
    let opts = LoadOptions {
        addr_slots: config
            .ip_counters_max
            .unwrap_or(blocklist_ebpf::ADDR_SLOTS_DEFAULT),
        max_entries: config.datapath.max_entries,
        exact_entries: None,
    };
    let loaded = loader::load(pin, &opts)?;
    if fresh {
        write_live_config(&mut Maps::open(pin)?, config)?;
    }
    // Maps pinned by an older version may come with an empty or
    // differently encoded table (before the IPv6 table, an empty one):
    // compile it before the program can decide with it.
    Maps::open(pin)?
        .rebuild_table()
        .context("compiling the lookup tables from the installed entries")?;
    Ok(loaded)
}

/// Writes the configured action, match, event rate and lookup into
/// `CONFIG`: into fresh maps, and by `run` at its start and on reload.
pub(crate) fn write_live_config(maps: &mut Maps, config: &Config) -> anyhow::Result<()> {
    let mut c = maps.config()?;
    c.action = config.action.abi();
    c.match_mode = config.match_mode.abi();
    c.event_interval_ms = config.events.abi_interval_ms();
    c.lookup = config.datapath.lookup.abi();
    maps.set_config(c)?;
    Ok(())
}

/// Records an attachment in the state directory (for `status`).
pub fn record_attachment(
    state: &StateDir,
    iface: &str,
    mode: attach::AttachedMode,
) -> anyhow::Result<()> {
    let mut recorded = state.attachments().unwrap_or_default();
    recorded.insert(
        iface.to_owned(),
        Attachment {
            mode,
            ifindex: attach::if_index(iface)?,
            since: SystemTime::now(),
        },
    );
    state
        .set_attachments(&recorded)
        .with_context(|| format!("recording the attachment in {}", state.root().display()))
}

/// Opens the pinned maps, creating them (by loading the program without
/// attaching it) when `create` is set and none exist yet, so entries can be
/// staged before the first attach. A writer (`create`) first finishes what
/// a writer killed while growing an exact map left ([`grow::recover`]).
pub fn open_maps(pin: &PinDir, config: &Config, create: bool) -> anyhow::Result<Maps> {
    if create && !pin.has_maps() {
        load(pin, config).context("creating the maps")?;
    } else if create {
        grow::recover(pin).context("finishing an exact map's growth that a writer left")?;
    }
    Maps::open(pin).map_err(Into::into)
}

/// Shares what writers created with `[access] group` (a no-op without).
pub fn share(pin: &PinDir, state: &StateDir, config: &Config) -> anyhow::Result<()> {
    match &config.access.group {
        Some(g) => crate::access::share(pin, state, g),
        None => Ok(()),
    }
}

/// Adds or removes hand-made entries ([`crate::write::manual::edit`])
/// under the writer lock, creating the maps (the program loaded
/// unattached) when adding to none.
pub fn edit_manual(
    pin: &PinDir,
    state: &StateDir,
    config: &Config,
    kind: TrieKind,
    prefixes: &[Prefix],
    add: bool,
    expires: Option<SystemTime>,
) -> anyhow::Result<Vec<(Prefix, Edited)>> {
    let _lock = lock::acquire(state.root(), config.lock_timeout)?;
    let mut maps = open_maps(pin, config, add)?;
    manual::edit(&mut maps, state, kind, prefixes, add, expires)
}
