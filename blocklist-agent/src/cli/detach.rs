//! `detach`: remove an interface's pinned links (ingress and TC egress);
//! after the last interface, the cgroup hooks and the pins.

use anyhow::Context as _;
use blocklist_agent::hooks;
use clap::Args;

use super::Context;

#[derive(Debug, Args)]
pub struct DetachArgs {
    /// Interface to detach from (repeatable).
    #[arg(long = "iface", required = true, value_name = "IF")]
    pub ifaces: Vec<String>,
}

pub fn run(ctx: &Context, args: DetachArgs) -> anyhow::Result<()> {
    let mut recorded = ctx.state.attachments().unwrap_or_default();
    for iface in &args.ifaces {
        hooks::detach_interface(&ctx.pin, iface)?;
        recorded.remove(iface);
        println!("detached from {iface}");
    }
    ctx.state
        .set_attachments(&recorded)
        .with_context(|| format!("updating {}", ctx.state.root().display()))?;
    if hooks::detach_when_unused(&ctx.pin, &ctx.state)? {
        println!(
            "no interface uses xdp-blocklist any more; removed the pins under {} \
             (and the egress hooks with them)",
            ctx.pin.root().display()
        );
    }
    Ok(())
}
