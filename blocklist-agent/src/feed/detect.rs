//! Guessing a body's format when a feed says `format = "auto"`.
//!
//! The checks, in order, after a BOM and leading white space:
//!
//! | The body…                                                  | Format           |
//! |------------------------------------------------------------|------------------|
//! | starts with `{`, first line is an object with `cidr`       | `SpamhausJson`   |
//! | starts with `{`, is a bundle / has `objects` (or `more`)   | `Stix`           |
//! | starts with `[`                                            | `Json`           |
//! | first data line is DShield's `Start  End  Netblock` header  | `Dshield`        |
//! | first data line has commas and an address header or field | `Csv`            |
//! | anything else                                              | `Plain`          |
//!
//! Spamhaus text and FireHOL lists parse fine as plain lists, so they need
//! no detection of their own. Only the first 64 KiB are examined, except
//! that a body starting with `{` is parsed whole to see if it is a bundle.

use serde::{Deserialize, de::IgnoredAny};
use serde_json::Value;

use super::{Format, csv, dshield, plain};

/// How much of a body the line-based checks look at.
const SNIFF_LIMIT: usize = 64 * 1024;

/// Guesses the format of a body. Never returns [`Format::Auto`].
pub fn detect(bytes: &[u8]) -> Format {
    let body = plain::strip_bom(bytes).trim_ascii_start();
    let head = body.get(..SNIFF_LIMIT).unwrap_or(body);
    match body.first() {
        Some(b'{') if first_line_has_cidr(head) => return Format::SpamhausJson,
        Some(b'{') if is_stix(body, head) => return Format::Stix,
        Some(b'[') => return Format::Json,
        _ => {}
    }
    if dshield::sniff(head) {
        Format::Dshield
    } else if csv::sniff(head) {
        Format::Csv
    } else {
        Format::Plain
    }
}

/// A Spamhaus JSON-lines body: its first line alone is an object with a
/// `cidr` key (a whole-document parse would fail on the second line).
fn first_line_has_cidr(head: &[u8]) -> bool {
    let first = head.split(|&b| b == b'\n').next().unwrap_or(head);
    serde_json::from_slice::<Value>(first)
        .ok()
        .is_some_and(|v| v.get("cidr").is_some())
}

/// Only the keys that tell a STIX bundle or TAXII envelope apart; the
/// rest of the document is skipped without being stored.
#[derive(Deserialize)]
struct Container {
    #[serde(rename = "type")]
    kind: Option<Value>,
    objects: Option<IgnoredAny>,
    more: Option<IgnoredAny>,
}

fn is_stix(body: &[u8], head: &[u8]) -> bool {
    match serde_json::from_slice::<Container>(body) {
        Ok(c) => {
            c.objects.is_some()
                || c.more.is_some()
                || c.kind.as_ref().and_then(Value::as_str) == Some("bundle")
        }
        // A truncated bundle still says what it is near the top, and the
        // STIX parser then explains what is wrong with it.
        Err(_) => contains(head, b"\"objects\"") || contains(head, b"\"bundle\""),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::{FormatOptions, parse, plain::GARBAGE_BYTES};

    const DROP_TXT: &[u8] = include_bytes!("fixtures/spamhaus_drop.txt");
    const DROP_JSON: &[u8] = include_bytes!("fixtures/spamhaus_drop_v4.json");
    const NETSET: &[u8] = include_bytes!("fixtures/firehol_level1.netset");
    const FEODO_CSV: &[u8] = include_bytes!("fixtures/feodo_ipblocklist.csv");
    const FEODO_JSON: &[u8] = include_bytes!("fixtures/feodo_ipblocklist.json");
    const BUNDLE: &[u8] = include_bytes!("fixtures/stix_bundle.json");
    const DSHIELD: &[u8] = include_bytes!("fixtures/dshield_block.txt");

    #[test]
    fn fixtures() {
        assert_eq!(detect(DROP_TXT), Format::Plain);
        assert_eq!(detect(DROP_JSON), Format::SpamhausJson);
        assert_eq!(detect(NETSET), Format::Plain);
        assert_eq!(detect(FEODO_CSV), Format::Csv);
        assert_eq!(detect(FEODO_JSON), Format::Json);
        assert_eq!(detect(BUNDLE), Format::Stix);
        assert_eq!(detect(DSHIELD), Format::Dshield);
    }

    #[test]
    fn auto_parses_every_fixture_like_its_own_format() {
        let opts = FormatOptions::default();
        let now = 1_717_000_000;
        for (body, format) in [
            (DROP_TXT, Format::Spamhaus),
            (DROP_JSON, Format::SpamhausJson),
            (NETSET, Format::Firehol),
            (FEODO_CSV, Format::Csv),
            (FEODO_JSON, Format::Json),
            (BUNDLE, Format::Stix),
            (DSHIELD, Format::Dshield),
        ] {
            let auto = parse(body, &Format::Auto, &opts, now);
            assert!(!auto.entries.is_empty(), "{format:?}");
            assert_eq!(auto, parse(body, &format, &opts, now), "{format:?}");
        }
    }

    #[test]
    fn stix_variants() {
        assert_eq!(detect(br#"{"more": false}"#), Format::Stix);
        assert_eq!(detect(br#"{"objects": []}"#), Format::Stix);
        assert_eq!(
            detect(br#"  {"type" : "bundle", "id": "bundle--x"}"#),
            Format::Stix
        );
        let truncated = &BUNDLE[..BUNDLE.len() / 2];
        assert_eq!(detect(truncated), Format::Stix);
        // A lone object that is neither is left to the plain parser, which
        // will reject it line by line.
        assert_eq!(detect(br#"{"ip": "192.0.2.1"}"#), Format::Plain);
    }

    #[test]
    fn bom_and_leading_white_space() {
        let mut body = b"\xEF\xBB\xBF\r\n\n  ".to_vec();
        body.extend_from_slice(DROP_JSON);
        assert_eq!(detect(&body), Format::SpamhausJson);
        assert_eq!(detect(b"\xEF\xBB\xBF [\"192.0.2.1\"]"), Format::Json);
        assert_eq!(
            detect(b"\xEF\xBB\xBFip,port\r\n192.0.2.1,80\r\n"),
            Format::Csv
        );
    }

    #[test]
    fn csv_needs_commas_and_an_address_column() {
        assert_eq!(detect(b"ip_address,port\n192.0.2.1,80\n"), Format::Csv);
        assert_eq!(detect(b"# note\n192.0.2.1,80\n"), Format::Csv);
        assert_eq!(detect(b"name,colour\nx,y\n"), Format::Plain);
        assert_eq!(detect(b"192.0.2.1 # seen 2024-05-29, ssh\n"), Format::Plain);
        assert_eq!(detect(b"192.0.2.1\n"), Format::Plain);
    }

    #[test]
    fn only_the_head_is_sniffed() {
        let mut body = "# padding\n".repeat(SNIFF_LIMIT / 10 + 1).into_bytes();
        body.extend_from_slice(b"ip,port\n192.0.2.1,80\n");
        assert_eq!(detect(&body), Format::Plain);
    }

    #[test]
    fn empty_and_garbage() {
        assert_eq!(detect(b""), Format::Plain);
        assert_eq!(detect(b"\xEF\xBB\xBF  \n"), Format::Plain);
        assert_eq!(detect(GARBAGE_BYTES), Format::Plain);
        assert_eq!(detect(b"{\xff\xfe"), Format::Plain);
        assert_eq!(detect(b"{\"objects\":[[[["), Format::Stix);
    }
}
