//! STIX 2.1 bundles and TAXII 2.1 envelopes.
//!
//! Both are JSON objects with an `objects` array; only `indicator` objects
//! whose pattern names IP addresses are used:
//!
//! ```json
//! {"type": "bundle", "id": "bundle--…", "objects": [
//!   {"type": "indicator", "id": "indicator--…", "pattern_type": "stix",
//!    "pattern": "[ipv4-addr:value = '192.0.2.10' OR ipv4-addr:value ISSUBSET '198.51.100.0/24']",
//!    "modified": "2024-05-29T10:00:00.000Z", "valid_until": "2024-06-29T00:00:00Z"}
//! ]}
//! ```
//!
//! Patterns are read as STIX 2.1 writes them (`OR`, `AND`, `FOLLOWEDBY`,
//! `NOT`, every comparison operator, qualifiers, parentheses) and turned
//! into what can be blocked at the network edge: the addresses each of
//! which alone satisfies the pattern. Those come from `=`, `ISSUBSET` and
//! `IN (…)` on `ipv4-addr:value`, `ipv6-addr:value` and
//! `network-traffic:src_ref.value` / `dst_ref.value`. Under `OR` any other
//! term (a domain, a hash, `!=`, `LIKE`) is skipped and the IP sides block,
//! which is exactly right: either side alone matches the indicator (OASIS's
//! own PoisonIvy example ORs a domain with eighteen addresses). A term that
//! needs more than one address seen once (`AND`, `FOLLOWEDBY`, a qualifier
//! such as `REPEATS`) blocks nothing: an indicator left with nothing is
//! *not applicable* here and counted as ignored, like one that names no
//! address at all. A broken pattern, or a bad address where one is
//! blocked, *rejects* the indicator with the reason; rejection samples
//! name the object by its position in `objects` ("object N").

//! Revoked and expired indicators are returned with `active: false`
//! rather than dropped, so a TAXII poller can withdraw what it added.

use std::time::UNIX_EPOCH;

use serde_json::{Map, Value};

use super::{Entry, Parsed, Rejection, plain};
use crate::prefix::Prefix;

mod pattern;

use pattern::parse_pattern;

/// One usable STIX indicator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Indicator {
    /// The STIX id (`indicator--<uuid>`).
    pub id: String,
    /// `modified`, else `created`, else empty: the version of the
    /// indicator, as written.
    pub modified: String,
    /// The addresses and networks the pattern names.
    pub prefixes: Vec<Prefix>,
    /// `valid_until` in seconds since the Unix epoch, rounded up so that
    /// "still valid" is exactly `valid_until > now`; `None` when absent.
    /// Kept so that an indicator stored by a poller can expire later.
    pub valid_until: Option<i64>,
    /// The indicator was revoked by its producer.
    pub revoked: bool,
    /// Neither revoked nor past `valid_until` at the `now` given to
    /// [`parse`].
    pub active: bool,
}

/// What [`parse`] made of a STIX body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StixParsed {
    /// Usable indicators, active or not.
    pub indicators: Vec<Indicator>,
    /// How many objects (or whole documents) were rejected.
    pub rejected: usize,
    /// The first few rejections; `line` is the 1-based object index.
    pub samples: Vec<Rejection>,
    /// Objects skipped on purpose: other types, other pattern languages,
    /// patterns that name no IP address.
    pub ignored: usize,
}

impl StixParsed {
    /// The entries of the active indicators, each tagged with its
    /// indicator id, and the rejection counts.
    pub fn into_parsed(self) -> Parsed {
        let entries = self
            .indicators
            .into_iter()
            .filter(|ind| ind.active)
            .flat_map(|ind| {
                let id = ind.id;
                ind.prefixes.into_iter().map(move |prefix| Entry {
                    prefix,
                    id: Some(id.clone()),
                })
            })
            .collect();
        Parsed {
            entries,
            rejected: self.rejected,
            samples: self.samples,
            ignored: self.ignored,
        }
    }
}

/// Parses a STIX bundle or TAXII envelope. `now` (seconds since the Unix
/// epoch) decides which indicators have expired. Never fails: a body that
/// is not a bundle at all is one rejection.
pub fn parse(bytes: &[u8], now: i64) -> StixParsed {
    // `Parsed` already knows how to count and sample rejections.
    let mut log = Parsed::default();
    let mut indicators = Vec::new();
    let body = plain::strip_bom(bytes);
    match objects(body) {
        Ok(objects) => {
            for (i, object) in objects.iter().enumerate() {
                match read_object(object, now) {
                    Ok(Some(indicator)) => indicators.push(indicator),
                    Ok(None) => log.ignored += 1,
                    Err(refusal) => log.reject_object(i + 1, refusal.reason, &refusal.text),
                }
            }
        }
        Err(reason) => log.reject(1, reason, &plain::lossy_head(body)),
    }
    StixParsed {
        indicators,
        rejected: log.rejected,
        samples: log.samples,
        ignored: log.ignored,
    }
}

/// The `objects` array of a bundle or envelope.
fn objects(body: &[u8]) -> Result<Vec<Value>, String> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| format!("not valid JSON ({e})"))?;
    let Value::Object(mut map) = doc else {
        return Err("not a STIX bundle or TAXII envelope (expected a JSON object)".into());
    };
    match map.remove("objects") {
        Some(Value::Array(objects)) => Ok(objects),
        Some(_) => Err("`objects` is not an array".into()),
        // Both containers may leave out an empty `objects`: a TAXII page
        // with nothing new is `{"more": false}` or even `{}`.
        None if is_empty_container(&map) => Ok(Vec::new()),
        None => Err("no `objects` array (not a STIX bundle or TAXII envelope)".into()),
    }
}

fn is_empty_container(map: &Map<String, Value>) -> bool {
    map.is_empty()
        || map.contains_key("more")
        || map.contains_key("next")
        || map.get("type").and_then(Value::as_str) == Some("bundle")
}

/// Why an object was rejected, and the text to show for it.
struct Refusal {
    reason: String,
    text: String,
}

fn refuse(reason: impl Into<String>, text: &str) -> Refusal {
    Refusal {
        reason: reason.into(),
        text: text.to_owned(),
    }
}

/// An indicator, `None` for objects that are skipped on purpose, or why
/// the object cannot be used.
fn read_object(object: &Value, now: i64) -> Result<Option<Indicator>, Refusal> {
    let Some(map) = object.as_object() else {
        return Err(refuse("not a JSON object", &object.to_string()));
    };
    let str_field = |name: &str| map.get(name).and_then(Value::as_str);
    match str_field("type") {
        Some("indicator") => {}
        Some(_) => return Ok(None),
        None => return Err(refuse("object without a type", &object.to_string())),
    }
    // STIX 2.0 indicators have no pattern_type; their patterns are STIX.
    if map
        .get("pattern_type")
        .is_some_and(|t| t.as_str() != Some("stix"))
    {
        return Ok(None);
    }
    let (id, pattern) = match (str_field("id"), str_field("pattern")) {
        (Some(id), Some(pattern)) => (id, pattern),
        (None, pattern) => return Err(refuse("indicator without an id", pattern.unwrap_or(""))),
        (Some(id), None) => return Err(refuse("indicator without a pattern", id)),
    };
    let Some(prefixes) = parse_pattern(pattern).map_err(|reason| refuse(reason, pattern))? else {
        return Ok(None);
    };
    let revoked = map.get("revoked") == Some(&Value::Bool(true));
    let valid_until = valid_until(map.get("valid_until")).map_err(|reason| refuse(reason, id))?;
    let modified = str_field("modified").or_else(|| str_field("created"));
    Ok(Some(Indicator {
        id: id.to_owned(),
        modified: modified.unwrap_or_default().to_owned(),
        prefixes,
        valid_until,
        revoked,
        active: !revoked && valid_until.is_none_or(|until| until > now),
    }))
}

/// `valid_until` in whole seconds since the epoch, rounded up: an
/// indicator valid until `…:40.5Z` is still valid at second 40.
fn valid_until(value: Option<&Value>) -> Result<Option<i64>, String> {
    let text = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s,
        Some(other) => return Err(format!("valid_until is not a timestamp: {other}")),
    };
    let at = humantime::parse_rfc3339_weak(text.trim())
        .map_err(|e| format!("unparseable valid_until `{text}` ({e})"))?;
    // humantime refuses years before 1970, so this only fails in theory;
    // such an indicator has long expired either way.
    let Ok(since_epoch) = at.duration_since(UNIX_EPOCH) else {
        return Ok(Some(i64::MIN));
    };
    let secs = i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX);
    let round_up = i64::from(since_epoch.subsec_nanos() > 0);
    Ok(Some(secs.saturating_add(round_up)))
}

#[cfg(test)]
mod tests {
    use super::{pattern::MAX_DEPTH, *};
    use crate::feed::plain::GARBAGE_BYTES;

    const BUNDLE: &[u8] = include_bytes!("../fixtures/stix_bundle.json");
    /// 2024-05-29T16:26:40Z.
    const NOW: i64 = 1_717_000_000;

    fn strings(prefixes: &[Prefix]) -> Vec<String> {
        prefixes.iter().map(Prefix::to_string).collect()
    }

    fn pattern(p: &str) -> Result<Option<Vec<String>>, String> {
        parse_pattern(p).map(|o| o.map(|v| strings(&v)))
    }

    fn ok(p: &str) -> Vec<String> {
        match pattern(p) {
            Ok(Some(v)) => v,
            other => panic!("{p}: {other:?}"),
        }
    }

    fn err(p: &str) -> String {
        match pattern(p) {
            Err(e) => e,
            other => panic!("{p}: {other:?}"),
        }
    }

    #[test]
    fn bundle_fixture() {
        let s = parse(BUNDLE, NOW);
        let summary: Vec<_> = s
            .indicators
            .iter()
            .map(|i| (i.id.as_str(), strings(&i.prefixes), i.active))
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "indicator--a1000000-0000-4000-8000-000000000001",
                    vec!["192.0.2.10/32".to_owned()],
                    true
                ),
                (
                    "indicator--a1000000-0000-4000-8000-000000000002",
                    vec!["2001:db8:bad::/48".to_owned()],
                    true
                ),
                (
                    "indicator--a1000000-0000-4000-8000-000000000003",
                    vec!["198.51.100.1/32".to_owned(), "198.51.100.128/25".to_owned()],
                    true
                ),
                (
                    "indicator--a1000000-0000-4000-8000-000000000004",
                    vec!["203.0.113.5/32".to_owned(), "2001:db8::5/128".to_owned()],
                    true
                ),
                (
                    "indicator--a1000000-0000-4000-8000-000000000005",
                    vec!["192.0.2.66/32".to_owned()],
                    false
                ),
                (
                    "indicator--a1000000-0000-4000-8000-000000000006",
                    vec!["192.0.2.67/32".to_owned()],
                    false
                ),
            ]
        );
        // identity, malware, relationship, sigma, domain-name, and an AND
        // of two addresses (no single address matches it).
        assert_eq!(s.ignored, 6);
        let rejected = crate::feed::test_util::reasons(&s.samples);
        assert_eq!(
            rejected,
            [(
                12,
                "invalid address `192.0.2.999`: not an IP address or CIDR"
            ),]
        );
        assert_eq!(s.rejected, 1);
        let why: Vec<_> = s
            .indicators
            .iter()
            .map(|i| (i.revoked, i.valid_until))
            .collect();
        assert_eq!(
            why,
            [
                (false, Some(4_102_358_400)),
                (false, None),
                (false, None),
                (false, None),
                (true, None),
                (false, Some(1_577_836_800)),
            ]
        );
        assert_eq!(s.indicators[0].modified, "2024-05-01T10:00:00.000Z");
        assert_eq!(
            s.indicators[1].modified, "2016-05-12T08:17:27.000Z",
            "falls back to created"
        );
    }

    #[test]
    fn into_parsed_keeps_active_entries_with_ids() {
        let p = parse(BUNDLE, NOW).into_parsed();
        assert_eq!(p.entries.len(), 6);
        assert_eq!(
            p.entries[2],
            Entry {
                prefix: "198.51.100.1".parse().unwrap(),
                id: Some("indicator--a1000000-0000-4000-8000-000000000003".into()),
            }
        );
        assert!(p.entries.iter().all(|e| e.id.is_some()));
        assert!(
            !p.entries
                .iter()
                .any(|e| e.prefix.to_string().starts_with("192.0.2.6"))
        );
        assert_eq!((p.rejected, p.ignored, p.samples.len()), (1, 6, 1));
    }

    #[test]
    fn expiry_is_relative_to_now() {
        // Indicator 1 is valid until 2099; from then on it has expired.
        let until = 4_102_358_400; // 2099-12-31T00:00:00Z
        let before = parse(BUNDLE, until - 1);
        assert!(before.indicators[0].active);
        let at = parse(BUNDLE, until);
        assert!(!at.indicators[0].active, "valid_until is exclusive");
        // The expired one (2020) was active back then.
        assert!(parse(BUNDLE, 1_500_000_000).indicators[5].active);
    }

    fn indicator(extra: &str) -> String {
        format!(
            r#"{{"type":"bundle","objects":[{{"type":"indicator","id":"indicator--x",
               "pattern":"[ipv4-addr:value = '192.0.2.1']"{extra}}}]}}"#
        )
    }

    #[test]
    fn fractional_valid_until() {
        let s = parse(
            indicator(r#","valid_until":"2024-05-29T16:26:40.500Z""#).as_bytes(),
            NOW,
        );
        assert!(s.indicators[0].active, "half a second left");
        let s = parse(
            indicator(r#","valid_until":"2024-05-29T16:26:40.000Z""#).as_bytes(),
            NOW,
        );
        assert!(!s.indicators[0].active);
    }

    #[test]
    fn bad_valid_until_rejects_the_indicator() {
        for extra in [
            r#","valid_until":"tomorrow""#,
            r#","valid_until":"2024-13-01T00:00:00Z""#,
            r#","valid_until":12345"#,
        ] {
            let s = parse(indicator(extra).as_bytes(), NOW);
            assert!(s.indicators.is_empty(), "{extra}");
            assert_eq!(s.rejected, 1);
            assert!(
                s.samples[0].reason.contains("valid_until"),
                "{:?}",
                s.samples
            );
            assert_eq!(s.samples[0].text, "indicator--x");
        }
        let s = parse(
            indicator(r#","valid_until":null,"revoked":false"#).as_bytes(),
            NOW,
        );
        assert!(s.indicators[0].active);
    }

    #[test]
    fn taxii_envelope() {
        let body = br#"{"more": true, "next": "page-2", "objects": [
            {"type":"indicator","id":"indicator--t","spec_version":"2.1",
             "pattern":"[ipv6-addr:value = '2001:db8::1']","pattern_type":"stix",
             "created":"2024-01-01T00:00:00Z","modified":"2024-02-01T00:00:00Z",
             "valid_from":"2024-01-01T00:00:00Z"}]}"#;
        let s = parse(body, NOW);
        assert_eq!(s.indicators.len(), 1);
        assert_eq!(s.indicators[0].modified, "2024-02-01T00:00:00Z");
        assert_eq!(strings(&s.indicators[0].prefixes), ["2001:db8::1/128"]);
    }

    #[test]
    fn empty_containers_are_not_errors() {
        for body in [
            &br#"{"more": false}"#[..],
            b"{}",
            br#"{"type":"bundle","id":"bundle--x"}"#,
            br#"{"type":"bundle","objects":[]}"#,
        ] {
            assert_eq!(parse(body, NOW), StixParsed::default());
        }
    }

    #[test]
    fn broken_documents_are_one_rejection() {
        let cut = &BUNDLE[..BUNDLE.len() / 2];
        for (body, reason) in [
            (cut, "not valid JSON"),
            (&b""[..], "not valid JSON"),
            (&b"[1, 2]"[..], "not a STIX bundle"),
            (&br#"{"type":"report"}"#[..], "no `objects` array"),
            (&br#"{"objects": {}}"#[..], "`objects` is not an array"),
        ] {
            let s = parse(body, NOW);
            assert!(s.indicators.is_empty());
            assert_eq!(s.rejected, 1);
            assert!(s.samples[0].reason.starts_with(reason), "{:?}", s.samples);
        }
    }

    #[test]
    fn odd_objects() {
        let body = br#"{"objects": [
            42,
            {"id": "x--1"},
            {"type": "indicator", "pattern": "[ipv4-addr:value = '192.0.2.1']"},
            {"type": "indicator", "id": "indicator--np"},
            {"type": "indicator", "id": "indicator--pt", "pattern_type": 5, "pattern": "x"},
            {"type": "indicator", "id": "indicator--ok", "pattern": "[ipv4-addr:value = '192.0.2.2']"}
        ]}"#;
        let s = parse(body, NOW);
        assert_eq!(s.indicators.len(), 1);
        assert_eq!(s.indicators[0].modified, "");
        assert_eq!(s.ignored, 1);
        let reasons = crate::feed::test_util::reasons(&s.samples);
        assert_eq!(
            reasons,
            [
                (1, "not a JSON object"),
                (2, "object without a type"),
                (3, "indicator without an id"),
                (4, "indicator without a pattern"),
            ]
        );
    }

    #[test]
    fn supported_patterns() {
        assert_eq!(ok("[ipv4-addr:value = '192.0.2.1']"), ["192.0.2.1/32"]);
        assert_eq!(
            ok("[ipv4-addr:value ISSUBSET '192.0.2.7/24']"),
            ["192.0.2.0/24"]
        );
        assert_eq!(ok("[ipv4-addr:value = '192.0.2.0/25']"), ["192.0.2.0/25"]);
        assert_eq!(
            ok("[ipv6-addr:value issubset '2001:db8::/32']"),
            ["2001:db8::/32"]
        );
        assert_eq!(
            ok("[ipv6-addr:value = '::ffff:192.0.2.1']"),
            ["192.0.2.1/32"]
        );
        assert_eq!(
            ok(
                "[ipv4-addr:value = '192.0.2.1' OR ipv6-addr:value = '2001:db8::1'] OR \
                ([ipv4-addr:value IN ('198.51.100.1', '198.51.100.2')])"
            ),
            [
                "192.0.2.1/32",
                "2001:db8::1/128",
                "198.51.100.1/32",
                "198.51.100.2/32"
            ]
        );
        assert_eq!(
            ok("[(ipv4-addr:value='192.0.2.1' OR (ipv4-addr:value='192.0.2.2'))]"),
            ["192.0.2.1/32", "192.0.2.2/32"]
        );
        assert_eq!(
            ok("  [ ipv4-addr:value\t=\n'192.0.2.1' ]  "),
            ["192.0.2.1/32"]
        );
    }

    #[test]
    fn non_ip_patterns_are_ignored() {
        for p in [
            "[domain-name:value = 'evil.example']",
            "[url:value = 'http://192.0.2.1/']",
            "[file:hashes.'SHA-256' = 'aa']",
            "[network-traffic:dst_ref.type = 'ipv4-addr']",
            "[domain-name:value = 'a'] AND [file:name = 'b']",
            "[domain-name:value = 'unterminated",
            "",
        ] {
            assert_eq!(pattern(p), Ok(None), "{p}");
        }
    }

    #[test]
    fn or_blocks_the_ip_sides_of_a_mixed_pattern() {
        // OASIS's PoisonIvy example shape: a domain OR'ed with addresses.
        assert_eq!(
            ok("[domain-name:value = 'www.webserver.dynssl.com' OR \
                ipv4-addr:value = '113.10.246.30' OR ipv4-addr:value = '219.90.112.203']"),
            ["113.10.246.30/32", "219.90.112.203/32"]
        );
        // Every IP path form, each beside terms the edge cannot use.
        assert_eq!(
            ok("[network-traffic:dst_ref.value = '192.0.2.1' OR \
                network-traffic:src_ref.value ISSUBSET '2001:db8::/48' OR \
                file:hashes.'SHA-256' = 'aa' OR \
                ipv4-addr:value != '192.0.2.9' OR ipv4-addr:value LIKE '10.%' OR \
                ipv4-addr:value NOT = '192.0.2.8' OR ipv4-addr:value > '1' OR \
                ipv4-addr:resolves_to_refs[*].value = 'x' OR \
                ipv6-addr:value IN ('2001:db8::1', '2001:db8::2')]"),
            [
                "192.0.2.1/32",
                "2001:db8::/48",
                "2001:db8::1/128",
                "2001:db8::2/128"
            ]
        );
        // An AND inside an OR is one term: skipped, the other side blocks.
        assert_eq!(
            ok(
                "[ipv4-addr:value = '192.0.2.1' AND domain-name:value = 'x'] OR \
                [ipv4-addr:value = '192.0.2.2'] OR \
                [ipv4-addr:value = '192.0.2.3'] REPEATS 5 TIMES"
            ),
            ["192.0.2.2/32"]
        );
        assert_eq!(
            ok(
                "[(ipv4-addr:value = '192.0.2.1' AND domain-name:value = 'x') OR \
                ipv4-addr:value = '192.0.2.4']"
            ),
            ["192.0.2.4/32"]
        );
    }

    #[test]
    fn or_mixed_bundle_fixture() {
        let s = parse(include_bytes!("../fixtures/stix_or_mixed.json"), NOW);
        let got: Vec<_> = s
            .indicators
            .iter()
            .map(|i| {
                (
                    i.id.rsplit('-').next().unwrap_or_default(),
                    strings(&i.prefixes),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "000000000001",
                    vec![
                        "113.10.246.30/32".to_owned(),
                        "219.90.112.203/32".to_owned(),
                        "202.65.220.64/32".to_owned()
                    ]
                ),
                (
                    "000000000004",
                    vec!["203.0.113.9/32".to_owned(), "2001:db8:c2::/48".to_owned()]
                ),
            ]
        );
        // The domain-only indicator and the AND: not applicable.
        assert_eq!(s.ignored, 2);
        assert_eq!(s.rejected, 1);
        let r = &s.samples[0];
        assert_eq!((r.line, r.unit), (5, crate::feed::Unit::Object));
        assert!(r.reason.contains("203.0.113.300"), "{}", r.reason);
    }

    #[test]
    fn patterns_no_single_address_matches_are_not_applicable() {
        for p in [
            "[ipv4-addr:value = '192.0.2.1' AND ipv4-addr:value = '192.0.2.2']",
            "[ipv4-addr:value = '192.0.2.1' AND domain-name:value = 'x']",
            "[ipv4-addr:value = '192.0.2.1'] AND [ipv4-addr:value = '192.0.2.2']",
            "[ipv4-addr:value = '192.0.2.1'] FOLLOWEDBY [ipv4-addr:value = '192.0.2.2']",
            "[ipv4-addr:value NOT = '192.0.2.1']",
            "[ipv4-addr:value != '192.0.2.1']",
            "[ipv4-addr:value LIKE '192.0.2.%']",
            "[ipv4-addr:value MATCHES '^192']",
            "[ipv4-addr:value ISSUPERSET '192.0.2.0/24']",
            "[ipv4-addr:value > '192.0.2.1']",
            "[ipv4-addr:value = '192.0.2.1'] WITHIN 300 SECONDS",
            "[ipv4-addr:value = '192.0.2.1'] REPEATS 5 TIMES",
            "[ipv4-addr:value = '192.0.2.1'] START t'2016-06-01T00:00:00Z' STOP t'2016-07-01T00:00:00Z'",
            "([ipv4-addr:value = '192.0.2.1'] WITHIN 5 SECONDS)",
            "[ipv4-addr:resolves_to_refs[*].value = 'x']",
            "[network-traffic:dst_ref.value = '192.0.2.1' AND network-traffic:dst_port = 443]",
        ] {
            assert_eq!(pattern(p), Ok(None), "{p}");
        }
    }

    #[test]
    fn broken_ip_patterns_say_why() {
        let cases = [
            (
                "[ipv4-addr:value = '2001:db8::1']",
                "`2001:db8::1` is not an IPv4 address (ipv4-addr)",
            ),
            (
                "[ipv6-addr:value = '192.0.2.1']",
                "`192.0.2.1` is not an IPv6 address (ipv6-addr)",
            ),
            (
                "[domain-name:value = 'x' OR ipv4-addr:value = '192.0.2.999']",
                "invalid address `192.0.2.999`: not an IP address or CIDR",
            ),
            (
                "[ipv6-addr:value = 'fe80::1%eth0']",
                "invalid address `fe80::1%eth0`: zone id",
            ),
            (
                "[ipv4-addr:value = '010.0.0.1']",
                "invalid address `010.0.0.1`: leading zeros are ambiguous (octal?)",
            ),
            (
                "[ipv4-addr:value = '192.0.2.1-192.0.2.5']",
                "invalid address `192.0.2.1-192.0.2.5`: not an IP address or CIDR",
            ),
            (
                "[ipv4-addr:value = 192.0.2.1]",
                "expected a quoted address, found `192.0.2.1`",
            ),
            (
                "[ipv4-addr:value = '192.0.2.1'",
                "unexpected end of pattern",
            ),
            (
                "ipv4-addr:value = '192.0.2.1'",
                "unexpected `ipv4-addr:value`",
            ),
            ("[ipv4-addr:value = '192.0.2.1']]", "unexpected `]`"),
            (
                "[ipv4-addr:value = '192.0.2.1'] OR",
                "unexpected end of pattern",
            ),
            (
                "[ipv4-addr:value = '192.0.2.1'] WITHIN 5 MINUTES",
                "unexpected `MINUTES`",
            ),
            (
                "[ipv4-addr:value IN ('192.0.2.1' '192.0.2.2')]",
                "unexpected string '192.0.2.2'",
            ),
            (
                "[ipv4-addr:value = '192.0.2.1]",
                "unterminated string literal",
            ),
            (
                "[ipv4-addr:value = '192.0.2.1\\n']",
                "invalid escape in string literal",
            ),
            (
                "[ipv4-addr:value = 'a\\'b']",
                "invalid address `a'b`: not an IP address or CIDR",
            ),
        ];
        for (p, reason) in cases {
            assert_eq!(err(p), reason, "{p}");
        }
    }

    #[test]
    fn escaped_quotes_do_not_end_strings() {
        // The `]` and `'` inside the literal belong to it.
        assert_eq!(
            pattern("[domain-name:value = 'x\\'] OR [ipv4-addr:value = \\'']"),
            Ok(None)
        );
        assert_eq!(
            ok("[ipv4-addr:value = '192.0.2.1' OR ipv4-addr:value IN ('192.0.2.2')]"),
            ["192.0.2.1/32", "192.0.2.2/32"]
        );
    }

    #[test]
    fn deep_parentheses_are_refused_not_recursed() {
        let deep = format!(
            "{}[ipv4-addr:value = '192.0.2.1']{}",
            "(".repeat(10_000),
            ")".repeat(10_000)
        );
        assert_eq!(err(&deep), "pattern nested too deeply");
        let inner = format!(
            "[{}ipv4-addr:value = '192.0.2.1'{}]",
            "(".repeat(10_000),
            ")".repeat(10_000)
        );
        assert_eq!(err(&inner), "pattern nested too deeply");
        let fine = format!(
            "{}[ipv4-addr:value = '192.0.2.1']{}",
            "(".repeat(MAX_DEPTH),
            ")".repeat(MAX_DEPTH)
        );
        assert_eq!(ok(&fine), ["192.0.2.1/32"]);
    }

    #[test]
    fn deeply_nested_json_is_refused() {
        let mut body = br#"{"objects":"#.to_vec();
        body.extend(std::iter::repeat_n(b'[', 100_000));
        let s = parse(&body, NOW);
        assert_eq!(s.rejected, 1);
        assert!(s.samples[0].reason.starts_with("not valid JSON"));
    }

    #[test]
    fn garbage_bytes_do_not_panic() {
        let s = parse(GARBAGE_BYTES, NOW);
        assert_eq!(s.rejected, 1);
        for chunk in GARBAGE_BYTES.split(|&b| b == b'\n') {
            let _ = parse_pattern(&String::from_utf8_lossy(chunk));
        }
        let _ =
            parse_pattern("[ipv4-addr:value = '\u{10FFFF}' OR ipv6-addr:value ISSUBSET 'é/ü'] ÿ !");
    }
}
