//! The agent's TOML configuration (`deploy/examples/config.toml` shows
//! every section).
//!
//! Unknown keys are errors: a typo in a guard must not silently fall back
//! to a default. Every value here can be overridden on the command line.
//!
//! This module holds the file as a whole (top-level keys, loading,
//! the checks serde cannot make); the feed layer owns `[[feed]]`,
//! `[fetch]` and `[guard]` ([`crate::feed::config`]), the datapath the
//! live settings ([`crate::datapath::mode`]), and [`sections`] the rest.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use crate::{
    datapath::attach::RequestedMode,
    feed::{Format, config::duration},
};

pub mod sections;

pub use sections::{Allow, Datapath, Egress, EgressMode, Events, Export, LOOKUP_ENV, Metrics};

pub use crate::{
    datapath::mode::{Action, Lookup, MatchMode},
    feed::config::{FeedConfig, Fetch, Guard, Preset},
};

/// Default config file location.
pub const DEFAULT_CONFIG: &str = "/etc/xdp-blocklist/config.toml";

/// The configuration file.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Interfaces to attach to.
    pub interfaces: Vec<String>,
    /// XDP attach mode.
    pub xdp_mode: Option<RequestedMode>,
    /// Action on blocked packets.
    pub action: Action,
    /// Which addresses are matched.
    #[serde(rename = "match")]
    pub match_mode: MatchMode,
    /// Pin directory.
    pub pin_dir: Option<PathBuf>,
    /// State directory.
    pub state_dir: Option<PathBuf>,
    /// Guards.
    pub guard: Guard,
    /// Capacity of the per-address counter LRU.
    pub ip_counters_max: Option<u32>,
    /// Default interval between syncs of a feed.
    #[serde(deserialize_with = "duration")]
    pub sync_interval: Duration,
    /// How long a writer waits for the state-directory lock.
    #[serde(deserialize_with = "duration")]
    pub lock_timeout: Duration,
    /// HTTP client limits.
    pub fetch: Fetch,
    /// Never-blocked ranges.
    pub allow: Allow,
    /// The feeds.
    #[serde(rename = "feed")]
    pub feeds: Vec<FeedConfig>,
    /// Prometheus endpoint.
    pub metrics: Metrics,
    /// Drop events.
    pub events: Events,
    /// The list served onward.
    pub export: Export,
    /// Who may inspect without root.
    pub access: crate::access::AccessConfig,
    /// The XDP program's lookup.
    pub datapath: Datapath,
    /// Blocking of what the host itself sends.
    pub egress: Egress,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            interfaces: Vec::new(),
            xdp_mode: None,
            action: Action::default(),
            match_mode: MatchMode::default(),
            pin_dir: None,
            state_dir: None,
            guard: Guard::default(),
            ip_counters_max: None,
            sync_interval: Duration::from_secs(3600),
            lock_timeout: Duration::from_secs(30),
            fetch: Fetch::default(),
            allow: Allow::default(),
            feeds: Vec::new(),
            metrics: Metrics::default(),
            events: Events::default(),
            export: Export::default(),
            access: Default::default(),
            datapath: Datapath::default(),
            egress: Egress::default(),
        }
    }
}

/// A config file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Could not read the file.
    #[error("reading config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML or not the expected schema; the message names the key
    /// and line.
    #[error("config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message, with line and column.
        message: String,
    },
}

impl Config {
    /// Parses a config from text; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut c: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        c.validate(text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })?;
        Ok(c)
    }

    /// Checks what serde cannot: feed names, sources, presets, ranges.
    /// Errors name the feed and the line of its `name`.
    fn validate(&mut self, text: &str) -> Result<(), String> {
        let line_of = |name: &str| {
            text.lines()
                .position(|l| {
                    let l = l.trim();
                    l.starts_with("name") && l.contains(&format!("\"{name}\""))
                })
                .map_or(String::new(), |i| format!(" (line {})", i + 1))
        };
        if !(0.0..=1.0).contains(&self.guard.max_shrink) {
            return Err(format!(
                "guard.max_shrink = {} must be between 0.0 and 1.0",
                self.guard.max_shrink
            ));
        }
        if let Some(n) = self.datapath.max_entries
            && !(1..blocklist_ebpf::ENTRIES_MAX).contains(&n)
        {
            return Err(format!(
                "datapath.max_entries = {n}: it must be between 1 and {}",
                blocklist_ebpf::ENTRIES_MAX - 1
            ));
        }
        if self.guard.min_prefix_v4 > 32 || self.guard.min_prefix_v6 > 128 {
            return Err("guard.min_prefix_v4 must be <= 32 and guard.min_prefix_v6 <= 128".into());
        }
        let mut seen = BTreeSet::new();
        for f in &mut self.feeds {
            let at = line_of(&f.name);
            let valid = !f.name.is_empty()
                && f.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !valid {
                return Err(format!(
                    "feed name `{}`{at} may only use letters, digits, `-`, `_` and `.`",
                    f.name
                ));
            }
            if !seen.insert(f.name.clone()) {
                return Err(format!("feed name `{}`{at} is used twice", f.name));
            }
            f.validate(&at, &self.guard)?;
        }
        if self.sync_interval < Duration::from_secs(1) {
            return Err("sync_interval must be at least 1s".into());
        }
        Ok(())
    }

    /// The configured feed named `name`.
    pub fn feed(&self, name: &str) -> Option<&FeedConfig> {
        self.feeds.iter().find(|f| f.name == name)
    }

    /// The configured feeds' names, in order.
    pub fn feed_names(&self) -> Vec<String> {
        self.feeds.iter().map(|f| f.name.clone()).collect()
    }

    /// The interval of one feed.
    pub fn interval_of(&self, feed: &FeedConfig) -> Duration {
        match (feed.interval, &feed.format) {
            (Some(i), _) => i,
            (None, Format::Crowdsec) => crate::feed::crowdsec::DEFAULT_INTERVAL,
            (None, _) => self.sync_interval,
        }
    }

    /// Loads `path`; a missing file is the default configuration only when
    /// `path` is the default location (an explicit path must exist).
    /// `XDP_BLOCKLIST_LOOKUP` (`table` or `trie`), when set, overrides
    /// `[datapath] lookup`.
    pub fn load(path: &Path, explicit: bool) -> Result<Self, ConfigError> {
        let mut c = match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Self::default(),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        if let Ok(v) = std::env::var(LOOKUP_ENV) {
            c.datapath.lookup = match v.as_str() {
                "table" => Lookup::Table,
                "trie" => Lookup::Trie,
                other => {
                    return Err(ConfigError::Parse {
                        path: path.to_owned(),
                        message: format!(
                            "{LOOKUP_ENV}={other:?} is neither \"table\" nor \"trie\"; \
                             unset it or use one of those"
                        ),
                    });
                }
            };
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prefix::Prefix;

    #[test]
    fn defaults_match_the_design() {
        let c = Config::parse("", Path::new("x.toml")).unwrap();
        assert_eq!(c.action, Action::Drop);
        assert_eq!(c.match_mode, MatchMode::Both);
        assert_eq!((c.guard.min_prefix_v4, c.guard.min_prefix_v6), (8, 16));
        assert_eq!(c.datapath.lookup, Lookup::Table);
    }

    #[test]
    fn the_lookup_is_configurable() {
        let c = Config::parse("[datapath]\nmax_entries = 10000\n", Path::new("c.toml")).unwrap();
        assert_eq!(c.datapath.max_entries, Some(10_000));
        for bad in ["0", "1048576"] {
            let e = Config::parse(
                &format!("[datapath]\nmax_entries = {bad}\n"),
                Path::new("c.toml"),
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains("max_entries") && e.contains("1048575"), "{e}");
        }
        let c = Config::parse("[datapath]\nlookup = \"trie\"\n", Path::new("c.toml")).unwrap();
        assert_eq!(c.datapath.lookup, Lookup::Trie);
        assert!(Config::parse("[datapath]\nlookup = \"hash\"\n", Path::new("c.toml")).is_err());
    }

    #[test]
    fn unknown_keys_name_the_key_and_line() {
        let e = Config::parse(
            "action = \"drop\"\n[guard]\nmin_prefix_v5 = 3\n",
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("min_prefix_v5") && e.contains("line 3"), "{e}");
    }

    #[test]
    fn the_design_example_parses() {
        let text = r#"
interfaces = ["eth0"]
xdp_mode = "auto"
action = "drop"
match = "both"
sync_interval = "1h"
[guard]
max_shrink = 0.5
min_prefix_v4 = 8
min_prefix_v6 = 16
[[feed]]
name = "spamhaus-drop"
url = "https://www.spamhaus.org/drop/drop.txt"
format = "auto"
[[feed]]
name = "ismalicious"
preset = "ismalicious-taxii"
api_key_env = "ISMALICIOUS_API_KEY"
api_secret_env = "ISMALICIOUS_API_SECRET"
[[feed]]
name = "partner-taxii"
url = "https://taxii.example.net/api1/collections/COLLECTION-ID/"
format = "taxii"
username = "reader"
password_env = "PARTNER_TAXII_PASSWORD"
interval = "15m"
[allow]
cidrs = ["192.0.2.10/32"]
[metrics]
listen = "127.0.0.1:9977"
[events]
output = "stdout"
"#;
        let c = Config::parse(text, Path::new("c.toml")).unwrap();
        assert_eq!(c.feeds.len(), 3);
        assert_eq!(c.feeds[1].format, Format::Taxii);
        assert!(c.feeds[1].url.as_deref().unwrap().starts_with("https://"));
        assert_eq!(c.interval_of(&c.feeds[2]), Duration::from_secs(900));
        assert_eq!(c.interval_of(&c.feeds[0]), Duration::from_secs(3600));
        assert_eq!(
            c.allow.cidrs,
            vec!["192.0.2.10/32".parse::<Prefix>().unwrap()]
        );
    }

    #[test]
    fn the_shipped_example_parses() {
        let text = include_str!("../../../deploy/examples/config.toml");
        let c = Config::parse(text, Path::new("config.toml")).unwrap();
        assert_eq!(c.feeds.len(), 5);
        assert!(c.feeds[0].guards_reserved(&c.guard));
        assert!(!c.feeds[4].guards_reserved(&c.guard));
        let mut open = c.guard.clone();
        open.allow_reserved = true;
        assert!(!c.feeds[0].guards_reserved(&open));
        let mut strict = c.feeds[0].clone();
        strict.allow_reserved = Some(false);
        assert!(strict.guards_reserved(&open), "the feed's own setting wins");
    }

    #[test]
    fn feed_mistakes_name_the_feed_and_line() {
        let dup = "[[feed]]\nname = \"a\"\nurl = \"/x\"\n[[feed]]\nname = \"a\"\nurl = \"/y\"\n";
        let e = Config::parse(dup, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("used twice"), "{e}");
        let nourl = "\n[[feed]]\nname = \"b\"\n";
        let e = Config::parse(nourl, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`b` (line 3) needs `url`"), "{e}");
        let badint = "[[feed]]\nname = \"c\"\nurl = \"/x\"\ninterval = \"soon\"\n";
        let e = Config::parse(badint, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("soon") && e.contains("line 4"), "{e}");
        let typo = "[[feed]]\nname = \"d\"\nurl = \"/x\"\nformt = \"csv\"\n";
        let e = Config::parse(typo, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("formt") && e.contains("line 4"), "{e}");
    }

    #[test]
    fn bad_values_are_errors() {
        assert!(Config::parse("action = \"explode\"", Path::new("c.toml")).is_err());
        assert!(Config::parse("xdp_mode = \"turbo\"", Path::new("c.toml")).is_err());
        let c = Config::parse("match = \"src\"\nxdp_mode = \"skb\"", Path::new("c.toml")).unwrap();
        assert_eq!(c.match_mode, MatchMode::Src);
        assert_eq!(c.xdp_mode, Some(RequestedMode::Skb));
        let c = Config::parse(
            "xdp_mode = \"tc\"\n[egress]\nmode = \"cgroup\"\ncgroup = \"/sys/fs/cgroup/edge\"",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(c.xdp_mode, Some(RequestedMode::Tc));
        assert_eq!(c.egress.mode, EgressMode::Cgroup);
        assert_eq!(
            c.egress.cgroup.as_deref(),
            Some(Path::new("/sys/fs/cgroup/edge"))
        );
        assert_eq!(Config::default().egress.mode, EgressMode::Both);
        assert!(Config::parse("[egress]\nmode = \"out\"", Path::new("c.toml")).is_err());
    }

    #[test]
    fn thresholds_belong_to_their_formats() {
        let feed = |extra: &str| {
            Config::parse(
                &format!("[[feed]]\nname = \"f\"\nurl = \"/tmp/f\"\n{extra}"),
                Path::new("c.toml"),
            )
        };
        let c = feed("format = \"ipsum\"\nmin_score = 3").unwrap();
        assert_eq!(
            (c.feeds[0].format.clone(), c.feeds[0].min_score),
            (Format::Scored, Some(3))
        );
        assert!(feed("format = \"threatfox\"\nmin_confidence = 75").is_ok());
        let err = |extra: &str| feed(extra).unwrap_err().to_string();
        assert!(err("min_score = 3").contains("min_score is for scored lists"));
        assert!(
            err("format = \"csv\"\nmin_confidence = 5").contains("min_confidence is for ThreatFox")
        );
        assert!(err("format = \"threatfox\"\nmin_confidence = 101").contains("0 to 100"));
        assert_eq!(
            feed("ipv6_prefix = 64").unwrap().feeds[0].ipv6_prefix,
            Some(64)
        );
        assert!(err("ipv6_prefix = 8").contains("between guard.min_prefix_v6 (16) and 128"));
        assert!(err("ipv6_prefix = 129").contains("and 128"));
        assert_eq!(
            feed("format = \"dshield\"").unwrap().feeds[0].format,
            Format::Dshield
        );
    }
}
