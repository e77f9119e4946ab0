//! `generate` (hidden): the man page and shell completions, generated from
//! the clap definitions so they never drift from the real options. Used by
//! `cargo xtask package`.

use std::{fs, io::Write as _, path::PathBuf};

use anyhow::Context as _;
use clap::{Args, CommandFactory as _};
use clap_complete::Shell;

use super::Cli;

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Where to write blocklist-agent.1.gz and the completions.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let cmd = Cli::command();
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut page)
        .context("rendering the man page")?;
    // Each subcommand's own options, after the summary.
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let about = sub.get_about().map(ToString::to_string).unwrap_or_default();
        writeln!(
            page,
            ".SH \"blocklist-agent {}\"\n{}",
            sub.get_name(),
            about.replace('-', "\\-")
        )?;
        clap_mangen::Man::new(sub.clone())
            .render_options_section(&mut page)
            .context("rendering the man page")?;
    }
    let gz = args.dir.join("blocklist-agent.1.gz");
    let mut enc = flate2::write::GzEncoder::new(
        fs::File::create(&gz).with_context(|| format!("creating {}", gz.display()))?,
        flate2::Compression::best(),
    );
    enc.write_all(&page)?;
    enc.finish()?;
    for (shell, file) in [
        (Shell::Bash, "blocklist-agent.bash"),
        (Shell::Zsh, "_blocklist-agent"),
        (Shell::Fish, "blocklist-agent.fish"),
    ] {
        let path = args.dir.join(file);
        let mut f =
            fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        clap_complete::generate(shell, &mut Cli::command(), "blocklist-agent", &mut f);
    }
    println!(
        "wrote the man page and completions to {}",
        args.dir.display()
    );
    Ok(())
}
