//! Spamhaus DROP / EDROP lists, as text or as JSON lines.
//!
//! The text lists are plain lists with a `;` comment per entry:
//!
//! ```text
//! ; Spamhaus DROP List 2024/05/29 - (c) 2024 The Spamhaus Project SLR
//! ; Last-Modified: Wed, 29 May 2024 13:51:07 GMT
//! 192.0.2.0/24 ; SBL100001
//! ```
//!
//! The JSON lists (`drop_v4.json`, `drop_v6.json`) hold one object per line
//! and end with a metadata object, which is skipped and counted as ignored:
//!
//! ```text
//! {"cidr":"192.0.2.0/24","sblid":"SBL100001","rir":"ripencc"}
//! {"type":"metadata","timestamp":1716990667,"size":253,"records":1}
//! ```

use serde_json::Value;

use super::{Parsed, json, plain};

/// Parses the DROP/EDROP text format (the plain-list rules apply).
pub fn parse_text(bytes: &[u8]) -> Parsed {
    plain::parse(bytes)
}

/// Parses the DROP/EDROP JSON-lines format. Malformed lines and objects
/// without a usable `cidr` are rejected with their line numbers.
pub fn parse_json(bytes: &[u8]) -> Parsed {
    let mut out = Parsed::default();
    for (no, line) in plain::lines(bytes) {
        match line {
            Ok(text) => parse_json_line(no, text, &mut out),
            Err(bad) => bad.reject(no, &mut out),
        }
    }
    out
}

fn parse_json_line(no: usize, text: &str, out: &mut Parsed) {
    if text.trim().is_empty() {
        return;
    }
    let value = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return out.reject(no, "not a JSON object", text),
        Err(_) => return out.reject(no, "invalid JSON", text),
    };
    if value.get("type").and_then(Value::as_str) == Some("metadata") {
        out.ignored += 1;
        return;
    }
    let value = Value::Object(value);
    let result = json::address_of(&value, Some("cidr"))
        .and_then(|cidr| plain::parse_item(cidr, &mut out.entries).map_err(Into::into));
    if let Err(reason) = result {
        out.reject(no, reason, text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::MAX_LINE;
    use crate::feed::plain::{GARBAGE_BYTES, LEADING_ZEROS, NOT_UTF8, TOO_LONG};
    use crate::feed::test_util::prefixes;

    const DROP_TXT: &[u8] = include_bytes!("fixtures/spamhaus_drop.txt");
    const DROP_V4_JSON: &[u8] = include_bytes!("fixtures/spamhaus_drop_v4.json");

    #[test]
    fn drop_text_fixture() {
        let p = parse_text(DROP_TXT);
        assert_eq!(
            prefixes(&p),
            [
                "192.0.2.0/24",
                "198.51.100.0/25",
                "198.51.100.128/25",
                "203.0.113.0/24",
                "100.64.12.0/22"
            ]
        );
        assert_eq!((p.rejected, p.ignored), (0, 0));
    }

    #[test]
    fn drop_text_with_crlf_and_bad_lines() {
        let p = parse_text(b"; header\r\n192.0.2.0/24 ; SBL1\r\n192.0.2.0/33 ; SBL2\r\n");
        assert_eq!(prefixes(&p), ["192.0.2.0/24"]);
        assert_eq!(p.rejected, 1);
        assert_eq!(p.samples[0].line, 3);
    }

    #[test]
    fn drop_json_fixture() {
        let p = parse_json(DROP_V4_JSON);
        assert_eq!(
            prefixes(&p),
            [
                "192.0.2.0/24",
                "198.51.100.0/25",
                "203.0.113.0/24",
                "100.64.12.0/22"
            ]
        );
        assert_eq!((p.rejected, p.ignored), (0, 1));
        assert!(p.entries.iter().all(|e| e.id.is_none()));
    }

    #[test]
    fn drop_json_bad_lines_are_counted_not_fatal() {
        let mut body = br#"{"cidr":"192.0.2.0/24","sblid":"SBL1"}
{"cidr":"192.0.2.0/24"
{"sblid":"SBL3"}
[1, 2]
{"cidr":"010.0.0.0/8"}
{"cidr":42}

{"cidr":"2001:db8::/32","sblid":"SBL7"}
"#
        .to_vec();
        body.extend_from_slice(b"{\"cidr\":\"\xff\"}\n");
        body.extend(std::iter::repeat_n(b' ', MAX_LINE + 1));
        body.extend_from_slice(b"\n{\"type\":\"metadata\",\"records\":2}\n");
        let p = parse_json(&body);
        assert_eq!(prefixes(&p), ["192.0.2.0/24", "2001:db8::/32"]);
        assert_eq!(p.ignored, 1);
        assert_eq!(p.rejected, 7);
        let reasons = crate::feed::test_util::reasons(&p.samples);
        assert_eq!(
            reasons,
            [
                (2, "invalid JSON"),
                (3, "no `cidr` field"),
                (4, "not a JSON object"),
                (5, LEADING_ZEROS),
                (6, "address field is not a string"),
            ]
        );
        let more = parse_json(&body[body.len() - MAX_LINE - 100..]);
        assert!(more.samples.iter().any(|r| r.reason == TOO_LONG));
        let utf = parse_json(b"{\"cidr\":\"\xff\"}\n");
        assert_eq!(utf.samples[0].reason, NOT_UTF8);
    }

    #[test]
    fn drop_json_with_bom_and_crlf() {
        let p =
            parse_json(b"\xEF\xBB\xBF{\"cidr\":\"192.0.2.0/24\"}\r\n{\"type\":\"metadata\"}\r\n");
        assert_eq!(prefixes(&p), ["192.0.2.0/24"]);
        assert_eq!((p.rejected, p.ignored), (0, 1));
    }

    #[test]
    fn garbage_bytes_do_not_panic() {
        assert!(parse_text(GARBAGE_BYTES).rejected > 0);
        let p = parse_json(GARBAGE_BYTES);
        assert!(p.entries.is_empty());
        assert!(p.rejected > 0);
    }
}
