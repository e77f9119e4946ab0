//! JSON arrays of objects (or of plain strings) holding addresses.
//!
//! abuse.ch Feodo Tracker's `ipblocklist.json` is the model:
//!
//! ```json
//! [
//!   {"ip_address": "192.0.2.10", "port": 443, "status": "online", "malware": "QakBot"},
//!   {"ip_address": "198.51.100.23", "port": 8080, "status": "offline", "malware": "Emotet"}
//! ]
//! ```
//!
//! The address is read from the configured field, else from the first of
//! `ip_address`, `ip`, `cidr`, `network` that an object has. An array of
//! strings (`["192.0.2.1", "2001:db8::/32"]`) works too.
//!
//! Elements are read one by one, so a truncated download still yields every
//! element before the break, plus one rejection for the broken tail.
//! Rejection "line" numbers are 1-based element indexes.

use std::{borrow::Cow, fmt};

use serde::{
    Deserializer as _,
    de::{SeqAccess, Visitor},
};
use serde_json::Value;

use super::{Parsed, plain};

/// Fields tried, in order, when no field is configured.
pub(crate) const DEFAULT_FIELDS: &[&str] = &["ip_address", "ip", "cidr", "network"];

/// Parses a JSON array body. Never fails: unreadable elements and a
/// broken tail are counted in [`Parsed::rejected`].
pub fn parse(bytes: &[u8], field: Option<&str>) -> Parsed {
    let body = plain::strip_bom(bytes);
    let mut out = Parsed::default();
    let mut index = 0;
    // The default recursion limit (128) stays on: deeply nested input ends
    // in an error instead of a stack overflow.
    let mut de = serde_json::Deserializer::from_slice(body);
    let elements = Elements {
        out: &mut out,
        index: &mut index,
        field,
    };
    let result = de.deserialize_seq(elements).and_then(|()| de.end());
    if let Err(e) = result {
        reject_document(&mut out, index + 1, body, &e);
    }
    out
}

/// Records why the document (or its tail) could not be read.
fn reject_document(out: &mut Parsed, index: usize, body: &[u8], e: &serde_json::Error) {
    let at = byte_offset(body, e);
    let reason = if index == 1 && e.is_data() {
        "expected a JSON array".to_owned()
    } else {
        format!("truncated or invalid JSON at byte {at}")
    };
    let from = at.saturating_sub(40);
    let to = body.len().min(at.saturating_add(40));
    let snippet = body.get(from..to).unwrap_or_default();
    out.reject(index, reason, &plain::lossy_head(snippet));
}

/// The byte offset of an error, from serde_json's line and column.
pub(crate) fn byte_offset(body: &[u8], e: &serde_json::Error) -> usize {
    let line_start: usize = body
        .split(|&b| b == b'\n')
        .take(e.line().saturating_sub(1))
        .map(|l| l.len() + 1)
        .sum();
    (line_start + e.column()).min(body.len())
}

/// Visits the array's elements one at a time, recording each in `out` as
/// it arrives so that those before an error are kept.
struct Elements<'a> {
    out: &'a mut Parsed,
    index: &'a mut usize,
    field: Option<&'a str>,
}

impl<'de> Visitor<'de> for Elements<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(value) = seq.next_element::<Value>()? {
            *self.index += 1;
            // Show the address when there is one: a whole object, with its
            // keys re-ordered, would hide it past the 80-character cut.
            match address_of(&value, self.field) {
                Ok(text) => {
                    if let Err(reason) = plain::parse_item(text, &mut self.out.entries) {
                        self.out.reject(*self.index, reason, text);
                    }
                }
                Err(reason) => self.out.reject(*self.index, reason, &value.to_string()),
            }
        }
        Ok(())
    }
}

/// The address text of one element: an object's field, or the element
/// itself when it is a string.
pub(crate) fn address_of<'v>(
    value: &'v Value,
    field: Option<&str>,
) -> Result<&'v str, Cow<'static, str>> {
    let found = match value {
        Value::String(s) => return Ok(s),
        Value::Object(map) => match field {
            Some(f) => map.get(f).ok_or_else(|| format!("no `{f}` field"))?,
            None => DEFAULT_FIELDS
                .iter()
                .find_map(|f| map.get(*f))
                .ok_or("no address field (ip_address, ip, cidr or network)")?,
        },
        _ => return Err("neither an object nor a string".into()),
    };
    found
        .as_str()
        .ok_or_else(|| "address field is not a string".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::plain::{GARBAGE, GARBAGE_BYTES, LEADING_ZEROS, ZONE_ID};
    use crate::feed::test_util::prefixes;

    const FEODO: &[u8] = include_bytes!("fixtures/feodo_ipblocklist.json");

    #[test]
    fn feodo_fixture() {
        let p = parse(FEODO, None);
        assert_eq!(
            prefixes(&p),
            [
                "192.0.2.10/32",
                "198.51.100.23/32",
                "203.0.113.77/32",
                "2001:db8:feed::25/128"
            ]
        );
        assert_eq!(p.rejected, 1);
        assert_eq!(p.samples[0].line, 5);
        assert_eq!(p.samples[0].reason, LEADING_ZEROS);
        assert_eq!(p.samples[0].text, "010.0.0.9");
    }

    #[test]
    fn configured_field() {
        let body = br#"[{"dst":"192.0.2.1","ip":"198.51.100.1"},{"ip":"198.51.100.2"}]"#;
        let p = parse(body, Some("dst"));
        assert_eq!(prefixes(&p), ["192.0.2.1/32"]);
        assert_eq!(p.rejected, 1);
        assert_eq!(p.samples[0].reason, "no `dst` field");
        assert_eq!(p.samples[0].line, 2);
    }

    #[test]
    fn default_field_order() {
        let body = br#"[{"network":"10.0.0.0/8","ip":"192.0.2.1"},{"cidr":"2001:db8::/32"}]"#;
        let p = parse(body, None);
        assert_eq!(prefixes(&p), ["192.0.2.1/32", "2001:db8::/32"]);
    }

    #[test]
    fn array_of_strings_and_odd_elements() {
        let body = br#"["192.0.2.1", "2001:db8::/32", "fe80::1%eth0", 5, null, {"ip": 7},
                        {"port": 1}, "192.0.2.5-192.0.2.6", "nope"]"#;
        let p = parse(body, None);
        assert_eq!(
            prefixes(&p),
            [
                "192.0.2.1/32",
                "2001:db8::/32",
                "192.0.2.5/32",
                "192.0.2.6/32"
            ]
        );
        let reasons = crate::feed::test_util::reasons(&p.samples);
        assert_eq!(
            reasons,
            [
                (3, ZONE_ID),
                (4, "neither an object nor a string"),
                (5, "neither an object nor a string"),
                (6, "address field is not a string"),
                (7, "no address field (ip_address, ip, cidr or network)"),
            ]
        );
        assert_eq!(p.rejected, 6);
    }

    #[test]
    fn truncated_document_keeps_what_came_before() {
        let cut = FEODO.len() / 2;
        let p = parse(&FEODO[..cut], None);
        assert!(!p.entries.is_empty());
        assert_eq!(p.entries, parse(FEODO, None).entries[..p.entries.len()]);
        let tail = p.samples.last().unwrap();
        assert!(
            tail.reason
                .starts_with("truncated or invalid JSON at byte "),
            "{tail:?}"
        );
        assert_eq!(tail.line, p.entries.len() + 1);
    }

    #[test]
    fn error_offset_points_at_the_break() {
        let body = b"[\"192.0.2.1\",\n \"192.0.2.2\",\n  }";
        let p = parse(body, None);
        assert_eq!(prefixes(&p), ["192.0.2.1/32", "192.0.2.2/32"]);
        assert_eq!(p.rejected, 1);
        let at = body.iter().position(|&b| b == b'}').unwrap();
        let reason = &p.samples[0].reason;
        let n: usize = reason.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(n.abs_diff(at) <= 1, "{reason} vs {at}");
        assert_eq!(p.samples[0].line, 3);
    }

    #[test]
    fn trailing_garbage_is_one_rejection() {
        let p = parse(br#"["192.0.2.1"] trailing"#, None);
        assert_eq!(prefixes(&p), ["192.0.2.1/32"]);
        assert_eq!(p.rejected, 1);
        assert!(p.samples[0].reason.starts_with("truncated or invalid JSON"));
    }

    #[test]
    fn not_an_array() {
        for body in [&br#"{"ip":"192.0.2.1"}"#[..], b"42", b"\"192.0.2.1\""] {
            let p = parse(body, None);
            assert!(p.entries.is_empty());
            assert_eq!(p.rejected, 1);
            assert_eq!(p.samples[0].reason, "expected a JSON array");
        }
        let p = parse(b"", None);
        assert_eq!(p.rejected, 1);
        assert!(p.samples[0].reason.starts_with("truncated or invalid JSON"));
    }

    #[test]
    fn bom_and_whitespace() {
        let p = parse(b"\xEF\xBB\xBF \r\n[\"192.0.2.1\"]\r\n", None);
        assert_eq!(prefixes(&p), ["192.0.2.1/32"]);
        assert_eq!(p.rejected, 0);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let mut body = b"[\"192.0.2.1\",".to_vec();
        body.extend(std::iter::repeat_n(b'[', 100_000));
        let p = parse(&body, None);
        assert_eq!(prefixes(&p), ["192.0.2.1/32"]);
        assert_eq!(p.rejected, 1);
        let mut objects = b"[".to_vec();
        objects.extend(std::iter::repeat_n(&b"{\"a\":"[..], 50_000).flatten());
        assert_eq!(parse(&objects, None).rejected, 1);
    }

    #[test]
    fn garbage_bytes_do_not_panic() {
        let p = parse(GARBAGE_BYTES, None);
        assert!(p.entries.is_empty());
        assert_eq!(p.rejected, 1);
        assert_eq!(parse(b"[\"\xff\"]", None).rejected, 1);
        assert_eq!(parse(b"[\"nope\"]", None).samples[0].reason, GARBAGE);
    }
}
