//! Threat-intelligence feeds: fetching (`fetch`), one parser per format,
//! and format detection.
//!
//! Every parser is a pure function from the body's bytes to a [`Parsed`]:
//! accepted entries, plus a count of what was rejected and why (the first
//! few with line numbers). A bad line never aborts a feed.

pub mod auth;
pub mod bouncer;
pub mod config;
pub mod crowdsec;
pub mod csv;
pub mod detect;
pub mod dshield;
pub mod fetch;
pub mod firehol;
pub mod json;
pub mod misp;
pub mod plain;
pub mod poll;
pub mod scored;
pub mod spamhaus;
pub mod stix;
pub mod taxii;
pub mod threatfox;

pub use crate::record::{Entry, Rejection, Unit};

/// How many rejected lines are kept as examples.
pub const MAX_SAMPLES: usize = 5;
/// Lines longer than this are rejected without being parsed.
pub const MAX_LINE: usize = 4096;

/// Widens every IPv6 entry longer than `len` to its `/len` (a feed's
/// `ipv6_prefix`), then removes the duplicates that makes (several
/// addresses of one /64 become one entry). Order is kept otherwise.
pub fn widen_v6(entries: &mut Vec<Entry>, len: Option<u8>) {
    let Some(len) = len else { return };
    let mut widened = false;
    for e in entries.iter_mut() {
        let w = e.prefix.widen_v6(len);
        widened |= w != e.prefix;
        e.prefix = w;
    }
    if widened {
        let mut seen = std::collections::HashSet::with_capacity(entries.len());
        entries.retain(|e| seen.insert((e.prefix, e.id.clone())));
    }
}

/// What a parser made of a body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    /// Accepted entries (not yet de-duplicated or guarded).
    pub entries: Vec<Entry>,
    /// How many lines or objects were rejected.
    pub rejected: usize,
    /// The first [`MAX_SAMPLES`] rejections.
    pub samples: Vec<Rejection>,
    /// Objects skipped on purpose (other STIX object types, non-IP
    /// indicators, metadata lines), not errors.
    pub ignored: usize,
}

impl Parsed {
    /// Records a rejection, keeping the first few as samples.
    pub fn reject(&mut self, line: usize, reason: impl Into<String>, text: &str) {
        self.reject_at(line, Unit::Line, reason, text);
    }

    /// [`Parsed::reject`] for the `n`th object of a JSON array.
    pub fn reject_object(&mut self, n: usize, reason: impl Into<String>, text: &str) {
        self.reject_at(n, Unit::Object, reason, text);
    }

    fn reject_at(&mut self, line: usize, unit: Unit, reason: impl Into<String>, text: &str) {
        self.rejected += 1;
        if self.samples.len() < MAX_SAMPLES {
            let mut t: String = text.chars().take(80).collect();
            if text.chars().count() > 80 {
                t.push('…');
            }
            self.samples.push(Rejection {
                line,
                unit,
                reason: reason.into(),
                text: t,
            });
        }
    }
}

/// The body formats the agent understands.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// Guess from the content ([`detect::detect`]).
    Auto,
    /// One address or CIDR per line; comments `#`, `;`, `//`.
    Plain,
    /// Spamhaus DROP/EDROP text (`1.2.3.0/24 ; SBL123`).
    Spamhaus,
    /// Spamhaus JSON lines (`{"cidr": "...", "sblid": "..."}`, a metadata line).
    SpamhausJson,
    /// FireHOL `.netset` / `.ipset`.
    Firehol,
    /// CSV with a named or numbered column (`column` in the feed config).
    Csv,
    /// A JSON array of objects with a named field (`field` in the config).
    Json,
    /// A STIX 2.1 bundle.
    Stix,
    /// A TAXII 2.1 collection (fetched page by page; each page is STIX).
    Taxii,
    /// A CrowdSec Local API's decision stream (the agent as a bouncer).
    Crowdsec,
    /// An address and a score per line (IPsum), cut at `min_score`.
    #[serde(alias = "ipsum")]
    Scored,
    /// abuse.ch ThreatFox CSV (`ip:port` IOCs), cut at `min_confidence`.
    Threatfox,
    /// A MISP event (feed file) or REST search answer.
    Misp,
    /// DShield `block.txt`: start, end and netblock columns; each range
    /// becomes the fewest prefixes covering exactly it.
    Dshield,
}

/// Options some formats need.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FormatOptions {
    /// CSV: the column, by header name or 0-based number. Default: the
    /// first column whose header looks like an address (`ip`,
    /// `ip_address`, `dst_ip`, `cidr`, `network`...), else column 0.
    pub column: Option<String>,
    /// JSON: the field holding the address. Default: `ip_address`, `ip`,
    /// `cidr`, `network`, whichever an object has.
    pub field: Option<String>,
    /// Scored lists: the least score kept (default 1).
    pub min_score: Option<u32>,
    /// ThreatFox: the least confidence kept, 0-100 (default 0).
    pub min_confidence: Option<u32>,
}

/// Parses a body in `format` (`Auto` detects it first). STIX indicators
/// that are revoked or expired at `now` (seconds since the Unix epoch) are
/// left out. `Taxii` bodies are STIX envelopes and parse as STIX.
pub fn parse(bytes: &[u8], format: &Format, opts: &FormatOptions, now: i64) -> Parsed {
    let format = match format {
        Format::Auto => detect::detect(bytes),
        f => f.clone(),
    };
    match format {
        Format::Auto | Format::Plain => plain::parse(bytes),
        Format::Spamhaus => spamhaus::parse_text(bytes),
        Format::SpamhausJson => spamhaus::parse_json(bytes),
        Format::Firehol => firehol::parse(bytes),
        Format::Csv => csv::parse(bytes, opts.column.as_deref()),
        Format::Json => json::parse(bytes, opts.field.as_deref()),
        Format::Scored => scored::parse(bytes, opts.min_score.unwrap_or(1)),
        Format::Threatfox => threatfox::parse(bytes, opts.min_confidence.unwrap_or(0)),
        Format::Misp => misp::parse(bytes),
        Format::Dshield => dshield::parse(bytes),
        Format::Stix | Format::Taxii => stix::parse(bytes, now).into_parsed(),
        Format::Crowdsec => crowdsec::parse_stream(bytes, now).map_or_else(
            |e| {
                let mut p = Parsed::default();
                p.reject(1, e, "");
                p
            },
            crowdsec::Stream::into_parsed,
        ),
    }
}

/// Helpers shared by the parsers' tests.
#[cfg(test)]
pub(crate) mod test_util {
    use super::{Parsed, Rejection};

    /// The accepted prefixes, as text.
    pub fn prefixes(p: &Parsed) -> Vec<String> {
        p.entries.iter().map(|e| e.prefix.to_string()).collect()
    }

    /// (line, reason) of each sampled rejection.
    pub fn reasons(samples: &[Rejection]) -> Vec<(usize, &str)> {
        samples
            .iter()
            .map(|r| (r.line, r.reason.as_str()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_widening_merges_one_hosts_addresses() {
        let mut entries: Vec<Entry> = [
            "2001:db8:0:1::5",
            "2001:db8:0:1::6",
            "2001:db8:0:2::/80",
            "2001:db8::/48",
            "192.0.2.7",
            "::ffff:192.0.2.8",
        ]
        .iter()
        .map(|s| Entry::new(s.parse().unwrap()))
        .collect();
        let untouched = entries.clone();
        widen_v6(&mut entries, None);
        assert_eq!(entries, untouched);
        widen_v6(&mut entries, Some(64));
        assert_eq!(
            test_util::prefixes(&Parsed {
                entries,
                ..Parsed::default()
            }),
            [
                "2001:db8:0:1::/64",
                "2001:db8:0:2::/64",
                "2001:db8::/48",
                "192.0.2.7/32",
                "192.0.2.8/32"
            ]
        );
    }
}
