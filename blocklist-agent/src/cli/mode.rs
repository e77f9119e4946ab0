//! `mode`: change the action and match setting in `CONFIG`, live.

use blocklist_agent::{
    config::{Action, MatchMode},
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
    maps.set_config(c)?;
    println!(
        "action {}, match {}",
        Action::from_abi(c.action).name(),
        MatchMode::from_abi(c.match_mode).name()
    );
    Ok(())
}
