//! CrowdSec Local API: the decision stream and the decisions kept by id.
//!
//! A bouncer polls `GET /v1/decisions/stream`: `startup=true` answers with
//! every active decision, later polls (`startup=false`) with what was added
//! and deleted since this bouncer's previous poll. The agent asks with
//! `dedup=false`, because the Local API otherwise sends only the longest
//! decision per (value, type, scope) and never streams the deletion of one
//! of two decisions on an address; with it, every decision and every
//! deletion comes by id, and [`Decisions`] keeps them by id, so an address
//! stays blocked until its last ban is deleted or expires.
//!
//! Only `ban` decisions block; other types (`captcha`, `throttle`, ...)
//! and scopes other than `Ip` and `Range` are counted as ignored. Each
//! decision's `duration` (time remaining, Go syntax) becomes an absolute
//! expiry in whole seconds that [`Decisions::expire`] enforces whether or
//! not the Local API answers.
//!
//! ```
//! use blocklist_agent::feed::crowdsec::{Decisions, parse_stream};
//! let body = br#"{"deleted":null,"new":[{"duration":"29.5s","id":7,"origin":"cscli",
//!   "scenario":"manual","scope":"Ip","type":"ban","value":"192.0.2.7"}]}"#;
//! let mut d = Decisions::default();
//! d.replace(parse_stream(body, 1_000).unwrap());
//! assert_eq!(d.entries()[0].prefix.to_string(), "192.0.2.7/32");
//! assert_eq!(d.expire(1_029), 0);
//! assert_eq!(d.expire(1_030), 1);
//! ```

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};

use super::{Entry, MAX_SAMPLES, Rejection};
use crate::prefix::Prefix;

/// The `User-Agent` the agent sends to the Local API (CrowdSec's bouncer
/// spec names bouncers `crowdsec-NAME-bouncer/VERSION`).
pub const USER_AGENT: &str = concat!("crowdsec-xdp-blocklist-bouncer/", env!("CARGO_PKG_VERSION"));

/// The scopes asked for when the feed names none.
pub const DEFAULT_SCOPES: &[&str] = &["ip", "range"];

/// A full resync (`startup=true`) this often, by default, repairs drift.
pub const DEFAULT_RESYNC: Duration = Duration::from_secs(3600);

/// The poll interval of a CrowdSec feed without `interval` (the bouncer
/// spec's default).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
struct RawStream {
    #[serde(default)]
    new: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    deleted: Option<Vec<serde_json::Value>>,
}

#[derive(Deserialize)]
struct RawDecision {
    id: i64,
    value: String,
    scope: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    duration: String,
    #[serde(default)]
    origin: String,
    #[serde(default)]
    scenario: String,
}

/// One active ban.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// What it blocks.
    pub prefix: Prefix,
    /// Where it came from (`crowdsec`, `cscli`, `CAPI`, `lists:NAME`, ...).
    pub origin: String,
    /// The scenario that decided it.
    pub scenario: String,
    /// When it ends, seconds since the Unix epoch.
    pub expires: i64,
}

/// One answer of the stream endpoint, parsed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stream {
    /// Active bans, by id.
    pub new: Vec<(i64, Decision)>,
    /// Ids of decisions deleted or expired (any type).
    pub deleted: Vec<i64>,
    /// Decisions of another type or scope, or already expired.
    pub ignored: usize,
    /// Decisions whose value or fields could not be read.
    pub rejected: usize,
    /// The first few rejections ("object N" of `new`).
    pub samples: Vec<Rejection>,
}

impl Stream {
    /// True when the answer changes nothing.
    pub fn is_empty(&self) -> bool {
        self.new.is_empty() && self.deleted.is_empty()
    }

    /// The bans as a parser's result (for `Format::Crowdsec` bodies read
    /// outside a bouncer poll, e.g. a saved `startup=true` answer).
    pub fn into_parsed(self) -> super::Parsed {
        super::Parsed {
            entries: self
                .new
                .into_iter()
                .map(|(_, d)| Entry {
                    prefix: d.prefix,
                    id: Some(d.origin),
                })
                .collect(),
            rejected: self.rejected,
            samples: self.samples,
            ignored: self.ignored,
        }
    }
}

/// Parses a Go duration (`1h59m59.02s`, `29.5s`, `-16ms`): the decision's
/// time remaining. `None` when it is not one.
pub fn parse_go_duration(s: &str) -> Option<(bool, Duration)> {
    let (negative, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some((negative, Duration::ZERO));
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += value * scale;
    }
    (total.is_finite() && total < 1e15).then(|| (negative, Duration::from_secs_f64(total)))
}

fn sample(out: &mut Stream, index: usize, reason: String, object: &serde_json::Value) {
    out.rejected += 1;
    if out.samples.len() < MAX_SAMPLES {
        let full = object.to_string();
        let mut text: String = full.chars().take(80).collect();
        if full.chars().count() > 80 {
            text.push('…');
        }
        out.samples.push(Rejection {
            line: index + 1,
            unit: super::Unit::Object,
            reason,
            text,
        });
    }
}

/// Parses an answer of `/v1/decisions/stream` at `now` (seconds since the
/// epoch). A body that is not the stream's JSON object is an error (the
/// poll fails and keeps what is installed); a decision that cannot be read
/// is rejected on its own.
pub fn parse_stream(bytes: &[u8], now: i64) -> Result<Stream, String> {
    let not_a_stream = |why: String| {
        format!(
            "the Local API's answer is not a decision stream ({why}); is `url` the Local API's address?"
        )
    };
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| not_a_stream(e.to_string()))?;
    if !value.is_object() {
        return Err(not_a_stream("not a JSON object".into()));
    }
    let raw: RawStream = serde_json::from_value(value).map_err(|e| not_a_stream(e.to_string()))?;
    let mut out = Stream::default();
    for (i, v) in raw.deleted.unwrap_or_default().iter().enumerate() {
        match v.get("id").and_then(serde_json::Value::as_i64) {
            Some(id) => out.deleted.push(id),
            None => sample(&mut out, i, "a deleted decision without an id".into(), v),
        }
    }
    for (i, v) in raw.new.unwrap_or_default().iter().enumerate() {
        let d: RawDecision = match serde_json::from_value(v.clone()) {
            Ok(d) => d,
            Err(e) => {
                sample(&mut out, i, format!("not a decision ({e})"), v);
                continue;
            }
        };
        let scope = d.scope.to_ascii_lowercase();
        if !d.kind.eq_ignore_ascii_case("ban") || !matches!(scope.as_str(), "ip" | "range") {
            out.ignored += 1;
            continue;
        }
        let prefix = match d.value.trim().parse::<Prefix>() {
            Ok(p) if scope == "range" || p.prefix_len() == if p.is_v4() { 32 } else { 128 } => p,
            Ok(_) => {
                sample(
                    &mut out,
                    i,
                    format!("scope Ip with a range value `{}`", d.value),
                    v,
                );
                continue;
            }
            Err(e) => {
                sample(&mut out, i, e.to_string(), v);
                continue;
            }
        };
        let Some((negative, left)) = parse_go_duration(&d.duration) else {
            sample(
                &mut out,
                i,
                format!("duration `{}` is not a Go duration", d.duration),
                v,
            );
            continue;
        };
        if negative || left.is_zero() {
            out.ignored += 1;
            continue;
        }
        out.new.push((
            d.id,
            Decision {
                prefix,
                origin: d.origin,
                scenario: d.scenario,
                // Rounded up: a ban lasts at least what the Local API said.
                expires: now.saturating_add(left.as_secs_f64().ceil() as i64),
            },
        ));
    }
    Ok(out)
}

/// The active bans of one CrowdSec feed, by decision id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decisions {
    by_id: BTreeMap<i64, Decision>,
}

impl Decisions {
    /// Replaces everything with a `startup=true` answer.
    pub fn replace(&mut self, stream: Stream) {
        self.by_id = stream.new.into_iter().collect();
    }

    /// Applies a delta: new and renewed decisions, then deletions (a
    /// decision both added and deleted since the last poll is gone).
    /// Returns whether anything changed.
    pub fn apply(&mut self, stream: Stream) -> bool {
        let mut changed = false;
        for (id, d) in stream.new {
            changed |= self.by_id.insert(id, d.clone()).as_ref() != Some(&d);
        }
        for id in stream.deleted {
            changed |= self.by_id.remove(&id).is_some();
        }
        changed
    }

    /// Drops the decisions whose expiry is at or before `now`; how many.
    pub fn expire(&mut self, now: i64) -> usize {
        let before = self.by_id.len();
        self.by_id.retain(|_, d| d.expires > now);
        before - self.by_id.len()
    }

    /// The earliest expiry, seconds since the epoch.
    pub fn next_expiry(&self) -> Option<i64> {
        self.by_id.values().map(|d| d.expires).min()
    }

    /// Active decisions.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// True when no decision is active.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// One entry per (prefix, origin), sorted: the origin rides in the
    /// entry's id, so `check` and the per-origin metrics can name it.
    pub fn entries(&self) -> Vec<Entry> {
        let mut v: Vec<Entry> = self
            .by_id
            .values()
            .map(|d| Entry {
                prefix: d.prefix,
                id: Some(d.origin.clone()),
            })
            .collect();
        v.sort_by(|a, b| (a.prefix, &a.id).cmp(&(b.prefix, &b.id)));
        v.dedup();
        v
    }

    /// The distinct prefixes banned, sorted.
    pub fn prefixes(&self) -> Vec<Prefix> {
        let mut v: Vec<Prefix> = self.by_id.values().map(|d| d.prefix).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Active decisions per origin.
    pub fn per_origin(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for d in self.by_id.values() {
            *m.entry(d.origin.clone()).or_default() += 1;
        }
        m
    }
}

/// The stream URL for a Local API address (`http://127.0.0.1:8080`, with
/// or without a trailing `/` or the `/v1/decisions/stream` path) and a
/// query.
pub fn stream_url(base: &url::Url, query: &Query<'_>) -> url::Url {
    let mut u = base.clone();
    if !u
        .path()
        .trim_end_matches('/')
        .ends_with("/v1/decisions/stream")
    {
        let path = format!("{}/v1/decisions/stream", u.path().trim_end_matches('/'));
        u.set_path(&path);
    }
    {
        let mut q = u.query_pairs_mut();
        q.clear();
        q.append_pair("startup", if query.startup { "true" } else { "false" });
        q.append_pair("dedup", "false");
        q.append_pair("scopes", &query.scopes.join(","));
        if !query.origins.is_empty() {
            q.append_pair("origins", &query.origins.join(","));
        }
        if !query.scenarios_containing.is_empty() {
            q.append_pair(
                "scenarios_containing",
                &query.scenarios_containing.join(","),
            );
        }
        if !query.scenarios_not_containing.is_empty() {
            q.append_pair(
                "scenarios_not_containing",
                &query.scenarios_not_containing.join(","),
            );
        }
    }
    u
}

/// What one poll asks for.
#[derive(Clone, Debug, Default)]
pub struct Query<'a> {
    /// Every active decision (`true`) or the changes since the last poll.
    pub startup: bool,
    /// `scopes` (lower case).
    pub scopes: &'a [String],
    /// `origins`.
    pub origins: &'a [String],
    /// `scenarios_containing`.
    pub scenarios_containing: &'a [String],
    /// `scenarios_not_containing`.
    pub scenarios_not_containing: &'a [String],
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &[u8] = include_bytes!("fixtures/crowdsec_stream.json");

    #[test]
    fn go_durations() {
        let secs = |s: &str| parse_go_duration(s).map(|(n, d)| (n, d.as_secs_f64()));
        assert_eq!(secs("29.5s"), Some((false, 29.5)));
        assert_eq!(secs("1h59m59s"), Some((false, 7199.0)));
        assert_eq!(secs("-16.168705ms").map(|(n, _)| n), Some(true));
        assert_eq!(secs("3m0.5s"), Some((false, 180.5)));
        assert_eq!(secs("0"), Some((false, 0.0)));
        for bad in ["", "1d", "h", "1.2.3s", "--1s"] {
            assert_eq!(secs(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_fixture_keeps_bans_by_id_and_counts_the_rest() {
        let s = parse_stream(FIXTURE, 1_000).unwrap();
        let ids: Vec<i64> = s.new.iter().map(|(id, _)| *id).collect();
        // Two bans on one address, a range, IPv6 single and range.
        assert_eq!(ids, vec![1, 2, 3, 5, 6]);
        // A captcha, a country scope, an expired one.
        assert_eq!(s.ignored, 3);
        // A garbage value and a missing field.
        assert_eq!(s.rejected, 2);
        assert!(
            s.samples[0].line == 7 && s.samples[0].unit == super::super::Unit::Object,
            "{:?}",
            s.samples
        );
        assert_eq!(s.deleted, vec![40]);
        assert_eq!(s.new[0].1.expires, 1_000 + 29);
        assert_eq!(s.new[2].1.prefix.to_string(), "198.51.100.0/24");
    }

    #[test]
    fn an_address_with_two_bans_stays_until_both_are_gone() {
        let mut d = Decisions::default();
        d.replace(parse_stream(FIXTURE, 1_000).unwrap());
        let has = |d: &Decisions, p: &str| d.entries().iter().any(|e| e.prefix.to_string() == p);
        assert!(has(&d, "192.0.2.7/32"));
        let delete = |id: i64| Stream {
            deleted: vec![id],
            ..Stream::default()
        };
        assert!(d.apply(delete(1)));
        assert!(has(&d, "192.0.2.7/32"), "the second ban keeps it");
        assert!(d.apply(delete(2)));
        assert!(!has(&d, "192.0.2.7/32"));
        assert!(!d.apply(delete(2)), "deleting twice changes nothing");
    }

    #[test]
    fn a_renewed_ban_extends_and_expiry_is_enforced() {
        let mut d = Decisions::default();
        d.replace(parse_stream(FIXTURE, 1_000).unwrap());
        assert_eq!(d.next_expiry(), Some(1_029));
        let renewal = parse_stream(
            br#"{"new":[{"id":9,"value":"192.0.2.7","scope":"Ip","type":"ban","duration":"4h","origin":"crowdsec"}]}"#,
            1_020,
        )
        .unwrap();
        assert!(d.apply(renewal));
        d.expire(1_029 + 7200);
        assert!(
            d.entries()
                .iter()
                .any(|e| e.prefix.to_string() == "192.0.2.7/32"),
            "the renewal outlives the first bans"
        );
        // The first crowdsec ban (4h) and the renewal.
        assert_eq!(d.per_origin().get("crowdsec"), Some(&2));
        d.expire(1_020 + 4 * 3600);
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn a_body_that_is_not_a_stream_is_an_error() {
        for body in [&b"<html>"[..], b"[]", b""] {
            let e = parse_stream(body, 0).unwrap_err();
            assert!(e.contains("Local API"), "{e}");
        }
        assert!(
            parse_stream(br#"{"new":null,"deleted":null}"#, 0)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn the_stream_url_carries_every_filter() {
        let scopes = vec!["ip".to_owned(), "range".to_owned()];
        let origins = vec!["crowdsec".to_owned(), "cscli".to_owned()];
        let q = Query {
            startup: true,
            scopes: &scopes,
            origins: &origins,
            ..Query::default()
        };
        for base in [
            "http://127.0.0.1:8080",
            "http://127.0.0.1:8080/",
            "http://127.0.0.1:8080/v1/decisions/stream",
        ] {
            let u = stream_url(&base.parse().unwrap(), &q);
            assert_eq!(
                u.as_str(),
                "http://127.0.0.1:8080/v1/decisions/stream?startup=true&dedup=false&scopes=ip%2Crange&origins=crowdsec%2Ccscli"
            );
        }
    }
}
