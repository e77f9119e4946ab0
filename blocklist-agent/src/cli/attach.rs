//! `attach`: load the program, pin its maps, attach to interfaces.

use blocklist_agent::{
    agent,
    datapath::{
        attach::{self, RequestedMode},
        loader::Loaded,
        tc,
    },
    hooks,
};
use clap::Args;

use super::Context;

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Interface to attach to (repeatable).
    #[arg(long = "iface", required = true, value_name = "IF")]
    pub ifaces: Vec<String>,
    /// auto tries native XDP and falls back to skb (generic) mode; tc runs
    /// the same decision as a TC classifier (where another XDP program is
    /// attached, or the driver has no XDP).
    #[arg(long, value_name = "MODE", value_parser = clap::value_parser!(RequestedModeArg))]
    pub mode: Option<RequestedModeArg>,
    /// Replace the program on an already attached interface (upgrade),
    /// keeping the link, the maps and the counters.
    #[arg(long)]
    pub replace: bool,
}

/// clap wrapper for [`RequestedMode`].
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum RequestedModeArg {
    /// Native, else skb.
    Auto,
    /// Native only.
    Native,
    /// Generic (skb) only.
    Skb,
    /// TC ingress classifier instead of XDP.
    Tc,
}

impl From<RequestedModeArg> for RequestedMode {
    fn from(m: RequestedModeArg) -> Self {
        match m {
            RequestedModeArg::Auto => RequestedMode::Auto,
            RequestedModeArg::Native => RequestedMode::Native,
            RequestedModeArg::Skb => RequestedMode::Skb,
            RequestedModeArg::Tc => RequestedMode::Tc,
        }
    }
}

pub fn run(ctx: &Context, args: AttachArgs) -> anyhow::Result<()> {
    let mode = args
        .mode
        .map(RequestedMode::from)
        .or(ctx.config.xdp_mode)
        .unwrap_or_default();
    // Fail on a missing interface before loading anything.
    for iface in &args.ifaces {
        attach::if_index(iface)?;
    }
    let mut loaded = agent::load(&ctx.pin, &ctx.config)?;
    for iface in &args.ifaces {
        if args.replace {
            attach::replace(&mut loaded, &ctx.pin, iface)?;
            println!("replaced the program on {iface}; maps and counters kept");
            continue;
        }
        let got = attach::attach(&mut loaded, &ctx.pin, iface, mode)?;
        agent::record_attachment(&ctx.state, iface, got)?;
        let note = match (mode, got) {
            (RequestedMode::Auto, attach::AttachedMode::Skb) => {
                " (native XDP not supported by the driver; fell back)".to_owned()
            }
            (_, attach::AttachedMode::Tc) => format!(
                " (TC ingress classifier, {})",
                tc::pinned(&ctx.pin.link(iface)).map_or("unknown", tc::Attachment::name)
            ),
            _ => String::new(),
        };
        println!(
            "attached to {iface} in {got} mode{note}; maps pinned under {}",
            ctx.pin.root().display()
        );
    }
    if args.replace {
        for what in attach::replace_egress(&mut loaded, &ctx.pin)? {
            println!("replaced the program of {what}");
        }
    } else {
        egress(ctx, &mut loaded)?;
    }
    ctx.share()
}

/// Puts the egress hooks `[egress]` asks for in place (and takes away
/// those it no longer wants), printing each change.
pub fn egress(ctx: &Context, loaded: &mut Loaded) -> anyhow::Result<()> {
    let plan = hooks::EgressPlan::new(&ctx.pin, &ctx.config.egress)?;
    for line in plan.apply(loaded, &ctx.pin, &ctx.state)? {
        println!("{line}");
    }
    Ok(())
}
