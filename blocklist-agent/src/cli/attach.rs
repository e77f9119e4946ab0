//! `attach`: load the program, pin its maps, attach to interfaces.

use anyhow::Context as _;
use blocklist_agent::{
    datapath::{
        attach::{self, RequestedMode},
        loader::{self, LoadOptions, Loaded},
        maps::Maps,
        tc,
    },
    hooks,
    state::Attachment,
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

/// Loads the program with the maps pinned under the context's pin dir. When
/// the maps did not exist yet, writes the configured action and match mode
/// into the fresh `CONFIG`.
pub fn load(ctx: &Context) -> anyhow::Result<Loaded> {
    let fresh = !ctx.pin.has_maps();
    let opts = LoadOptions {
        addr_slots: ctx
            .config
            .ip_counters_max
            .unwrap_or(blocklist_ebpf::ADDR_SLOTS_DEFAULT),
    };
    let loaded = loader::load(&ctx.pin, &opts)?;
    if fresh {
        let mut maps = Maps::open(&ctx.pin)?;
        let mut c = maps.config()?;
        c.action = ctx.config.action.abi();
        c.match_mode = ctx.config.match_mode.abi();
        c.lookup = ctx.config.datapath.lookup.abi();
        maps.set_config(c)?;
    }
    // Maps pinned by an older version may come with an empty or
    // differently encoded table (before the IPv6 table, an empty one):
    // compile it before the program can decide with it.
    Maps::open(&ctx.pin)?
        .rebuild_table()
        .context("compiling the lookup tables from the installed entries")?;
    Ok(loaded)
}

/// Records an attachment in the state directory (for `status`).
pub fn record(ctx: &Context, iface: &str, mode: attach::AttachedMode) -> anyhow::Result<()> {
    let mut recorded = ctx.state.attachments().unwrap_or_default();
    recorded.insert(
        iface.to_owned(),
        Attachment {
            mode,
            ifindex: attach::if_index(iface)?,
            since: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        },
    );
    ctx.state
        .set_attachments(&recorded)
        .with_context(|| format!("recording the attachment in {}", ctx.state.root().display()))
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
    let mut loaded = load(ctx)?;
    for iface in &args.ifaces {
        if args.replace {
            attach::replace(&mut loaded, &ctx.pin, iface)?;
            println!("replaced the program on {iface}; maps and counters kept");
            continue;
        }
        let got = attach::attach(&mut loaded, &ctx.pin, iface, mode)?;
        record(ctx, iface, got)?;
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
        for what in hooks::replace_egress(&mut loaded, &ctx.pin)? {
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
