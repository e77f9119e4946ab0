//! `blocklist-agent`: the command-line entry point. Each subcommand lives
//! in its own module under `cli/`.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    if !args.is_daemon() {
        // `list | head`, `top --json | head`: a reader that stops early
        // ends the command quietly, as it does `ls` (Rust ignores SIGPIPE,
        // so every print would fail with a panic instead). The daemon keeps
        // ignoring it: a closed events pipe must not stop the protection.
        // SAFETY: called before any thread exists; SIG_DFL is a valid
        // disposition for SIGPIPE.
        let _ = unsafe {
            nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigDfl,
            )
        };
    }
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
