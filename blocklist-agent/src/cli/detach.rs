//! `detach`: remove the pinned link; after the last interface, the pins.

use anyhow::Context as _;
use blocklist_agent::datapath::attach;
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
        attach::detach(&ctx.pin, iface)?;
        recorded.remove(iface);
        println!("detached from {iface}");
    }
    ctx.state
        .set_attachments(&recorded)
        .with_context(|| format!("updating {}", ctx.state.root().display()))?;
    if ctx.pin.linked_interfaces().is_empty() {
        ctx.pin.remove_all()?;
        println!(
            "no interface uses xdp-blocklist any more; removed the pins under {}",
            ctx.pin.root().display()
        );
    }
    Ok(())
}
