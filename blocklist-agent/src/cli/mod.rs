//! Command-line interface: global options, the subcommand enum and the
//! context every subcommand starts from.

mod allow;
mod attach;
mod block;
mod check;
mod detach;
mod generate;
mod list;
mod mode;
mod run;
mod status;
mod sync;
mod table;
mod top;

use std::path::PathBuf;

use anyhow::Context as _;
use blocklist_agent::{
    config::{Config, DEFAULT_CONFIG},
    datapath::{
        maps::TrieKind,
        pin::{DEFAULT_PIN_DIR, PinDir},
    },
    prefix::Prefix,
    state::{DEFAULT_STATE_DIR, StateDir},
};
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Drop traffic to and from blocklisted addresses at the XDP hook.
#[derive(Debug, Parser)]
#[command(
    name = "blocklist-agent",
    version,
    about,
    propagate_version = true,
    after_long_help = EXIT_STATUS
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// The exit codes, for the help and the man page.
const EXIT_STATUS: &str = "Exit status:\n  \
    0  success\n  \
    1  error: nothing was done; one line on stderr says what failed and what to do\n  \
    2  usage error\n  \
    3  sync --once finished, but a feed failed or its new list was refused and\n     \
    its last good entries were kept; the last line on stderr names the feeds";

/// Options every subcommand takes.
#[derive(Debug, Args)]
pub struct Global {
    /// Configuration file.
    #[arg(long, global = true, env = "XDP_BLOCKLIST_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where maps and links are pinned (a bpffs directory).
    #[arg(long, global = true, env = "XDP_BLOCKLIST_PIN_DIR", value_name = "DIR")]
    pub pin_dir: Option<PathBuf>,
    /// Where the agent keeps its state.
    #[arg(
        long,
        global = true,
        env = "XDP_BLOCKLIST_STATE_DIR",
        value_name = "DIR"
    )]
    pub state_dir: Option<PathBuf>,
    /// Log format on stderr (filter with RUST_LOG).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Log output format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The agent: attach, then keep the tries in sync with the feeds.
    Run(run::RunArgs),
    /// One sync for cron (`--once`), printing what changed; exits 3 when a
    /// feed failed or was refused and kept its last good entries.
    #[command(after_long_help = EXIT_STATUS)]
    Sync(sync::SyncArgs),
    /// Installed entries with the feeds that list them.
    List(list::ListArgs),
    /// Load the XDP program and attach it to interfaces.
    Attach(attach::AttachArgs),
    /// Detach from interfaces (and remove the pins after the last one).
    Detach(detach::DetachArgs),
    /// Change the action or the addresses matched, live.
    Mode(mode::ModeArgs),
    /// Block prefixes by hand (kept across syncs; `--for` makes them expire).
    Block(block::BlockArgs),
    /// Remove hand-made block entries.
    Unblock(EntriesArgs),
    /// Never block these prefixes (allow entries win over block entries).
    Allow(EntriesArgs),
    /// Remove allow entries.
    Unallow(EntriesArgs),
    /// Attachment, entries, fill and global counters.
    Status(status::StatusArgs),
    /// Is this address blocked, by which prefix, with what hits?
    Check(check::CheckArgs),
    /// The busiest blocked addresses, prefixes or feeds.
    Top(top::TopArgs),
    /// Write the man page and shell completions (used for packaging).
    #[command(hide = true)]
    Generate(generate::GenerateArgs),
}

/// Prefixes to add or remove (`block`, `unblock`, `allow`, `unallow`).
#[derive(Debug, Args)]
pub struct EntriesArgs {
    /// Addresses or CIDRs (host bits are cleared: 10.1.2.3/24 is 10.1.2.0/24).
    #[arg(required = true, value_name = "CIDR")]
    pub cidrs: Vec<String>,
}

/// Command-line overrides shared by `run` and `sync`: extra feeds and
/// allow ranges on top of the config file
/// ([`blocklist_agent::agent::sources`]).
#[derive(Debug, Args, Default)]
pub struct SourceArgs {
    /// A feed URL or file path, in addition to the config's feeds
    /// (repeatable; format detected automatically).
    #[arg(long = "feed", value_name = "URL|PATH")]
    pub feeds: Vec<String>,
    /// A range that is never blocked (repeatable).
    #[arg(long = "allow", value_name = "CIDR")]
    pub allow: Vec<Prefix>,
    /// Accept feed lists the shrink guard would refuse, this once.
    #[arg(long)]
    pub force: bool,
}

/// What every subcommand needs: the resolved directories and config.
pub struct Context {
    pub pin: PinDir,
    pub state: StateDir,
    pub config: Config,
    config_path: (PathBuf, bool),
}

impl Context {
    fn new(g: &Global) -> anyhow::Result<Self> {
        let (path, explicit) = match &g.config {
            Some(p) => (p.clone(), true),
            None => (PathBuf::from(DEFAULT_CONFIG), false),
        };
        let config = Config::load(&path, explicit).context("loading the configuration")?;
        let config_path = (path, explicit);
        let pin = g
            .pin_dir
            .clone()
            .or_else(|| config.pin_dir.clone())
            .unwrap_or_else(|| DEFAULT_PIN_DIR.into());
        let state = g
            .state_dir
            .clone()
            .or_else(|| config.state_dir.clone())
            .unwrap_or_else(|| DEFAULT_STATE_DIR.into());
        Ok(Self {
            pin: PinDir::new(pin),
            state: StateDir::new(state),
            config,
            config_path,
        })
    }

    /// Adds or removes hand-made entries
    /// ([`blocklist_agent::agent::edit_manual`]), prints one line for each
    /// (`block 192.0.2.1/32: added until ...`), and shares what it created.
    pub fn edit_manual(
        &self,
        kind: TrieKind,
        prefixes: &[Prefix],
        add: bool,
        expires: Option<std::time::SystemTime>,
    ) -> anyhow::Result<()> {
        let done = blocklist_agent::agent::edit_manual(
            &self.pin,
            &self.state,
            &self.config,
            kind,
            prefixes,
            add,
            expires,
        )?;
        let noun = match kind {
            TrieKind::Block => "block",
            TrieKind::Allow => "allow",
        };
        let until = match expires {
            Some(t) if add && kind == TrieKind::Block => {
                format!(" until {}", humantime::format_rfc3339_seconds(t))
            }
            _ => String::new(),
        };
        for (p, what) in done {
            println!("{noun} {p}: {}{until}", what.as_str());
        }
        self.share()
    }

    /// Shares what writers created with `[access] group` (no-op without it).
    pub fn share(&self) -> anyhow::Result<()> {
        blocklist_agent::agent::share(&self.pin, &self.state, &self.config)
    }

    /// Refuses a world-writable config file or state directory (for the
    /// commands that act on them unattended: `run` and `sync`).
    pub fn refuse_unsafe_paths(&self) -> anyhow::Result<()> {
        blocklist_agent::access::refuse_world_writable(&self.config_path.0, "config file")?;
        blocklist_agent::access::refuse_world_writable(self.state.root(), "state directory")
    }

    /// Reads the configuration file again (SIGHUP).
    pub fn reload_config(&self) -> anyhow::Result<Config> {
        let (path, explicit) = &self.config_path;
        Config::load(path, *explicit).context("reloading the configuration")
    }
}

/// Sets up `tracing` on stderr.
pub fn init_logging(g: &Global) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match g.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

pub use sync::{KEPT_LAST_GOOD, KeptLastGood};

impl Cli {
    /// True for `run`, the long-running agent.
    pub fn is_daemon(&self) -> bool {
        matches!(self.command, Command::Run(_))
    }
}

/// Runs one subcommand.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Generate(a) = cli.command {
        return generate::run(a);
    }
    let ctx = Context::new(&cli.global)?;
    match cli.command {
        Command::Run(a) => run::run(&ctx, a),
        Command::Sync(a) => sync::run(&ctx, a),
        Command::List(a) => list::run(&ctx, a),
        Command::Attach(a) => attach::run(&ctx, a),
        Command::Detach(a) => detach::run(&ctx, a),
        Command::Mode(a) => mode::run(&ctx, a),
        Command::Block(a) => block::block(&ctx, a),
        Command::Unblock(a) => block::unblock(&ctx, a),
        Command::Allow(a) => allow::allow(&ctx, a),
        Command::Unallow(a) => allow::unallow(&ctx, a),
        Command::Status(a) => status::run(&ctx, a),
        Command::Check(a) => check::run(&ctx, a),
        Command::Top(a) => top::run(&ctx, a),
        Command::Generate(_) => unreachable!("handled before loading the configuration"),
    }
}
