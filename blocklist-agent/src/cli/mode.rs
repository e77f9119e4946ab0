//! `mode`: change the action, match and lookup settings in `CONFIG`, live.

use blocklist_agent::{
    config::{Action, Lookup, MatchMode},
    datapath::maps::Maps,
};
use clap::Args;

use super::Context;

#[derive(Debug, Args)]
pub struct ModeArgs {
    /// drop blocked packets, or monitor: count them and let them pass.
    #[arg(long, value_enum)]
    pub action: Option<Action>,
    /// Which addresses are looked up.
    #[arg(long = "match", value_enum)]
    pub match_mode: Option<MatchMode>,
    /// How IPv4 addresses are decided: the compiled table or the tries.
    #[arg(long, value_enum)]
    pub lookup: Option<Lookup>,
}

pub fn run(ctx: &Context, args: ModeArgs) -> anyhow::Result<()> {
    let mut maps = Maps::open(&ctx.pin)?;
    let mut c = maps.config()?;
    if let Some(a) = args.action {
        c.action = a.abi();
    }
    if let Some(m) = args.match_mode {
        c.match_mode = m.abi();
    }
    if let Some(l) = args.lookup {
        if l == Lookup::Table {
            // The table must hold the installed entries before the program
            // decides with it.
            maps.commit_table()?;
        }
        c.lookup = l.abi();
    }
    maps.set_config(c)?;
    println!(
        "action {}, match {}, lookup {}",
        Action::from_abi(c.action).name(),
        MatchMode::from_abi(c.match_mode).name(),
        Lookup::from_abi(c.lookup).name()
    );
    Ok(())
}
