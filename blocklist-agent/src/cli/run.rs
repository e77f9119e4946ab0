//! `run`: the agent ([`blocklist_agent::agent::serve`]). Attaches the
//! configured interfaces, then syncs every feed on its interval until
//! SIGTERM; SIGHUP reloads the configuration. Stopping leaves the pinned
//! program protecting with the last installed list.

use blocklist_agent::{
    agent::{
        self,
        daemon::{self, Agent},
    },
    config::Config,
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

/// The configuration file with the command line's feeds, allow ranges and
/// interfaces added.
fn effective(file: &Config, args: &RunArgs) -> Config {
    let mut c = file.clone();
    agent::sources::apply(&mut c, &args.sources.feeds, &args.sources.allow);
    for i in &args.ifaces {
        if !c.interfaces.contains(i) {
            c.interfaces.push(i.clone());
        }
    }
    c
}

pub fn run(ctx: &Context, args: RunArgs) -> anyhow::Result<()> {
    let config = effective(&ctx.config, &args);
    ctx.refuse_unsafe_paths()?;
    if args.check_config {
        daemon::check_credentials(&config)?;
        println!(
            "configuration OK: {} feed(s), {} interface(s), sync every {}",
            config.feeds.len(),
            config.interfaces.len(),
            humantime::format_duration(config.sync_interval)
        );
        return Ok(());
    }
    let agent = Agent::start(ctx.pin.clone(), ctx.state.clone(), config)?;
    agent::serve(agent, || Ok(effective(&ctx.reload_config()?, &args)))
}
