//! A feed's configuration (`[[feed]]`), the HTTP limits (`[fetch]`) and
//! the guards on what feeds may install (`[guard]`): the configuration
//! types the feed layer owns, which [`crate::config::Config`] includes.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::{Deserialize, Deserializer};

use super::Format;
use crate::datapath::mode::Action;

/// Safety limits on what may be blocked.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Guard {
    /// A feed that shrinks by more than this fraction keeps its last good
    /// entries.
    pub max_shrink: f64,
    /// IPv4 prefixes shorter than this are refused.
    pub min_prefix_v4: u8,
    /// IPv6 prefixes shorter than this are refused.
    pub min_prefix_v6: u8,
    /// `true` installs feed entries in the reserved ranges
    /// ([`crate::reserved`]: private, loopback, link-local, multicast...)
    /// for every feed that does not say otherwise; by default they are
    /// refused or cut out, and reported.
    pub allow_reserved: bool,
}

impl Default for Guard {
    fn default() -> Self {
        Self {
            max_shrink: 0.5,
            min_prefix_v4: 8,
            min_prefix_v6: 16,
            allow_reserved: false,
        }
    }
}

/// A duration written as `"1h"`, `"15m"`, `"30s"`.
pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!("`{s}` is not a duration like 1h, 15m or 30s: {e}"))
    })
}

pub(crate) fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

/// Feed presets: endpoints and authentication filled in by name.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// isMalicious over TAXII 2.1 (`X-API-KEY: base64(key:secret)`).
    IsmaliciousTaxii,
    /// isMalicious plain blocklist download (`X-API-KEY: base64(key:secret)`).
    IsmaliciousBlocklist,
    /// A CrowdSec Local API on this host (`http://127.0.0.1:8080/`), as a
    /// bouncer (`X-Api-Key` from `api_key_env` or `api_key_file`).
    Crowdsec,
}

impl Preset {
    /// The default URL and format of the preset (`url` in the feed
    /// overrides the URL, e.g. for a regional endpoint).
    pub fn defaults(self) -> (&'static str, Format) {
        match self {
            Preset::IsmaliciousTaxii => ("https://ismalicious.com/taxii2/", Format::Taxii),
            Preset::IsmaliciousBlocklist => {
                ("https://ismalicious.com/api/blocklist/ips", Format::Plain)
            }
            Preset::Crowdsec => ("http://127.0.0.1:8080/", Format::Crowdsec),
        }
    }
}

/// One `[[feed]]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FeedConfig {
    /// Unique name: letters, digits, `-`, `_`, `.`.
    pub name: String,
    /// `http(s)://...`, `file:///...` or a plain path.
    pub url: Option<String>,
    /// Body format.
    #[serde(default = "auto")]
    pub format: Format,
    /// A named preset (fills in url, format and the API key header).
    pub preset: Option<Preset>,
    /// CSV column (header name or 0-based number).
    pub column: Option<String>,
    /// JSON field holding the address.
    pub field: Option<String>,
    /// Scored lists (`format = "scored"`, IPsum): keep addresses listed by
    /// at least this many sources (default 1).
    pub min_score: Option<u32>,
    /// ThreatFox CSV: keep IOCs of at least this confidence, 0-100
    /// (default 0).
    pub min_confidence: Option<u32>,
    /// Blocks the `/N` of each listed IPv6 address instead of the
    /// address (`64`: the /64 a single host usually holds); shorter IPv6
    /// prefixes and IPv4 are unchanged.
    pub ipv6_prefix: Option<u8>,
    /// `drop` (default) or `monitor`: a monitor feed's entries are counted
    /// and reported (`top`, `check`, `/metrics`, events with `"action":
    /// "monitor"`) but their packets pass, to watch what a new feed would
    /// hit before enforcing it. An address a drop feed lists too drops.
    #[serde(default)]
    pub action: Action,
    /// Overrides `[guard] allow_reserved` for this feed: `true` installs
    /// its entries in private, loopback, link-local and other reserved
    /// ranges (a feed of your own LAN's attackers), `false` guards it even
    /// when the global setting allows them.
    pub allow_reserved: Option<bool>,
    /// TAXII: collection id or title when `url` is a discovery or API root URL.
    pub collection: Option<String>,
    /// Environment variable holding the API key (presets).
    pub api_key_env: Option<String>,
    /// Environment variable holding the API secret (presets).
    pub api_secret_env: Option<String>,
    /// File holding `key:secret` (presets), instead of the two variables.
    pub api_key_file: Option<PathBuf>,
    /// HTTP Basic user name.
    pub username: Option<String>,
    /// Environment variable holding the HTTP Basic password.
    pub password_env: Option<String>,
    /// File holding the HTTP Basic password.
    pub password_file: Option<PathBuf>,
    /// Extra request headers; a value `env:VAR` or `file:PATH` is read
    /// from there, anything else is literal.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// How often this feed is fetched (default: `sync_interval`).
    #[serde(default, deserialize_with = "opt_duration")]
    pub interval: Option<Duration>,
    /// Overrides `[fetch] max_bytes` for this feed.
    pub max_bytes: Option<u64>,
    /// `false` keeps the feed's last good entries without fetching it.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// CrowdSec: decision scopes to ask for (default `["ip", "range"]`).
    pub scopes: Option<Vec<String>>,
    /// CrowdSec: only decisions of these origins (`crowdsec`, `cscli`,
    /// `CAPI`, `lists`...); empty: all.
    #[serde(default)]
    pub origins: Vec<String>,
    /// CrowdSec: only decisions whose scenario contains one of these.
    #[serde(default)]
    pub scenarios_containing: Vec<String>,
    /// CrowdSec: no decision whose scenario contains one of these.
    #[serde(default)]
    pub scenarios_not_containing: Vec<String>,
    /// CrowdSec: how often the whole decision set is fetched again
    /// (`startup=true`) to repair drift (default 1h).
    #[serde(default, deserialize_with = "opt_duration")]
    pub resync: Option<Duration>,
}

impl FeedConfig {
    /// The entry flag this feed's entries carry ([`blocklist_ebpf::ENTRY_FLAG_MONITOR`]
    /// for a monitor feed, none for a drop feed).
    pub fn entry_flags(&self) -> u32 {
        match self.action {
            Action::Drop => 0,
            Action::Monitor => blocklist_ebpf::ENTRY_FLAG_MONITOR,
        }
    }

    /// True when the reserved-range guard screens this feed.
    pub fn guards_reserved(&self, guard: &Guard) -> bool {
        !self.allow_reserved.unwrap_or(guard.allow_reserved)
    }

    /// Checks what serde cannot for one feed, filling in its preset's
    /// URL and format; `at` names the line of its `name` in errors
    /// (" (line 12)", or nothing).
    pub(crate) fn validate(&mut self, at: &str, guard: &Guard) -> Result<(), String> {
        if let Some(p) = self.preset {
            let (url, format) = p.defaults();
            if self.url.is_none() {
                self.url = Some(url.to_owned());
            }
            if self.format == Format::Auto {
                self.format = format;
            }
        }
        if self.url.as_deref().is_none_or(str::is_empty) {
            return Err(format!(
                "feed `{}`{at} needs `url` (or a `preset`)",
                self.name
            ));
        }
        if self.format == Format::Taxii && !self.url.as_deref().unwrap_or("").starts_with("http") {
            return Err(format!(
                "feed `{}`{at}: format taxii needs an http(s) url",
                self.name
            ));
        }
        if self.format == Format::Crowdsec {
            if !self.url.as_deref().unwrap_or("").starts_with("http") {
                return Err(format!(
                    "feed `{}`{at}: format crowdsec needs the Local API's http(s) url (e.g. http://127.0.0.1:8080/)",
                    self.name
                ));
            }
            if self.api_key_env.is_none() && self.api_key_file.is_none() {
                return Err(format!(
                    "feed `{}`{at}: format crowdsec needs the bouncer key in `api_key_env` or `api_key_file` \
                     (create one with `cscli bouncers add xdp-blocklist`)",
                    self.name
                ));
            }
            if let Some(bad) = self.scopes.iter().flatten().find(|s| {
                !crate::feed::crowdsec::DEFAULT_SCOPES.contains(&s.to_ascii_lowercase().as_str())
            }) {
                return Err(format!(
                    "feed `{}`{at}: scope `{bad}` cannot be blocked by address; use \"ip\" and/or \"range\"",
                    self.name
                ));
            }
            if self.resync.is_some_and(|d| d < Duration::from_secs(60)) {
                return Err(format!(
                    "feed `{}`{at}: resync must be at least 1m",
                    self.name
                ));
            }
        } else if self.scopes.is_some()
            || !self.origins.is_empty()
            || !self.scenarios_containing.is_empty()
            || !self.scenarios_not_containing.is_empty()
            || self.resync.is_some()
        {
            return Err(format!(
                "feed `{}`{at}: scopes, origins, scenarios_containing, scenarios_not_containing and resync \
                 are CrowdSec options; set format = \"crowdsec\" or remove them",
                self.name
            ));
        }
        if self.min_score.is_some() && self.format != Format::Scored {
            return Err(format!(
                "feed `{}`{at}: min_score is for scored lists; set format = \"scored\" or remove it",
                self.name
            ));
        }
        if self.min_confidence.is_some() && self.format != Format::Threatfox {
            return Err(format!(
                "feed `{}`{at}: min_confidence is for ThreatFox CSV; set format = \"threatfox\" or remove it",
                self.name
            ));
        }
        if self.min_confidence.is_some_and(|c| c > 100) {
            return Err(format!(
                "feed `{}`{at}: min_confidence is a percentage, 0 to 100",
                self.name
            ));
        }
        if let Some(len) = self.ipv6_prefix
            && !(guard.min_prefix_v6.max(1)..=128).contains(&len)
        {
            return Err(format!(
                "feed `{}`{at}: ipv6_prefix = {len} must be between guard.min_prefix_v6 ({}) and 128; \
                 64 blocks the /64 of each listed address",
                self.name,
                guard.min_prefix_v6.max(1)
            ));
        }
        if self.interval.is_some_and(|d| d < Duration::from_secs(1)) {
            return Err(format!(
                "feed `{}`{at}: interval must be at least 1s",
                self.name
            ));
        }
        Ok(())
    }

    /// A feed with only a name and a source; everything else default.
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            url: Some(url.into()),
            format: Format::Auto,
            preset: None,
            column: None,
            field: None,
            min_score: None,
            min_confidence: None,
            ipv6_prefix: None,
            action: Action::Drop,
            allow_reserved: None,
            collection: None,
            api_key_env: None,
            api_secret_env: None,
            api_key_file: None,
            username: None,
            password_env: None,
            password_file: None,
            headers: BTreeMap::new(),
            interval: None,
            max_bytes: None,
            enabled: true,
            scopes: None,
            origins: Vec::new(),
            scenarios_containing: Vec::new(),
            scenarios_not_containing: Vec::new(),
            resync: None,
        }
    }
}

fn auto() -> Format {
    Format::Auto
}

pub(crate) fn yes() -> bool {
    true
}

/// `[fetch]`: HTTP client limits.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Fetch {
    /// TCP/TLS connect timeout.
    #[serde(deserialize_with = "duration")]
    pub connect_timeout: Duration,
    /// Whole-request timeout (headers and body).
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    /// Largest body accepted, in bytes (after decompression).
    pub max_bytes: u64,
    /// Attempts per fetch (1 = no retry).
    pub attempts: u32,
    /// First retry delay; doubles each attempt, with jitter.
    #[serde(deserialize_with = "duration")]
    pub backoff: Duration,
    /// Longest `Retry-After` honoured; longer ones fail the attempt.
    #[serde(deserialize_with = "duration")]
    pub max_retry_after: Duration,
    /// Extra CA certificate (PEM) trusted for HTTPS feeds.
    pub ca_file: Option<PathBuf>,
}

impl Default for Fetch {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(120),
            max_bytes: 256 << 20,
            attempts: 3,
            backoff: Duration::from_secs(2),
            max_retry_after: Duration::from_secs(300),
            ca_file: None,
        }
    }
}
