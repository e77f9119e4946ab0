//! `blocklist-agent`: the command-line entry point. Each subcommand lives
//! in its own module under `cli/`.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_logging(&args.global);
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<cli::KeptLastGood>() => {
            eprintln!("warning: {e:#}");
            ExitCode::from(cli::KEPT_LAST_GOOD)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
