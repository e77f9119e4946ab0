//! abuse.ch ThreatFox's CSV export (`https://threatfox.abuse.ch/export/csv/ip-port/recent/`
//! and the full export): a commented header line, then quoted fields with
//! a space after each comma, every kind of IOC mixed in one file:
//!
//! ```text
//! # "first_seen_utc","ioc_id","ioc_value","ioc_type",...,"confidence_level",...
//! "2026-11-30 21:05:12", "1400001", "192.0.2.10:443", "ip:port", ..., "100", ...
//! "2026-11-30 21:05:13", "1400002", "evil.example.net", "domain", ..., "100", ...
//! ```
//!
//! Only `ip:port` IOCs are addresses; the port is dropped (the agent
//! blocks the address) and an IPv6 one is written `[2001:db8::1]:443`.
//! Other IOC types (domains, URLs, hashes) are skipped on purpose and
//! counted as ignored, as are IOCs below `min_confidence` (0-100). A row
//! whose value, type or confidence cannot be read is rejected.

use super::{Parsed, csv, plain};

/// Parses a ThreatFox CSV, keeping `ip:port` IOCs with a confidence of at
/// least `min_confidence`.
pub fn parse(bytes: &[u8], min_confidence: u32) -> Parsed {
    let mut out = Parsed::default();
    let mut columns = None;
    for (no, line) in plain::lines(bytes) {
        let text = match line {
            Ok(text) => text,
            Err(bad) => {
                bad.reject(no, &mut out);
                continue;
            }
        };
        let trimmed = text.trim();
        if trimmed.is_empty() {
            continue;
        }
        if let Some(comment) = trimmed.strip_prefix('#') {
            let header = csv::split_row(comment);
            let find = |name| csv::find_header(&header, name);
            if let (Some(v), Some(t), Some(c)) = (
                find("ioc_value"),
                find("ioc_type"),
                find("confidence_level"),
            ) {
                columns = Some((v, t, c));
            }
            continue;
        }
        let Some((value, kind, confidence)) = columns else {
            out.reject(
                no,
                "no ThreatFox header (ioc_value, ioc_type, confidence_level) before the data",
                text,
            );
            continue;
        };
        let fields = csv::split_row(text);
        let field = |i: usize| fields.get(i).map(String::as_str);
        match (field(value), field(kind), field(confidence)) {
            (Some(v), Some("ip:port"), Some(c)) => {
                let Ok(c) = c.parse::<u32>() else {
                    out.reject(no, "confidence_level is not a number", text);
                    continue;
                };
                if c < min_confidence {
                    out.ignored += 1;
                } else if let Err(reason) = plain::parse_item(strip_port(v), &mut out.entries) {
                    out.reject(no, reason, text);
                }
            }
            (Some(_), Some(_), Some(_)) => out.ignored += 1,
            _ => out.reject(no, "row has fewer columns than the header", text),
        }
    }
    out
}

/// `192.0.2.1:443` → `192.0.2.1`, `[2001:db8::1]:443` → `2001:db8::1`;
/// anything else as it is.
fn strip_port(value: &str) -> &str {
    if let Some(rest) = value.strip_prefix('[') {
        return rest.split_once(']').map_or(value, |(addr, _)| addr);
    }
    match value.rsplit_once(':') {
        Some((addr, port)) if !addr.contains(':') && port.parse::<u16>().is_ok() => addr,
        _ => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::{
        plain::GARBAGE_BYTES,
        test_util::{prefixes, reasons},
    };

    const FIXTURE: &[u8] = include_bytes!("fixtures/threatfox.csv");

    #[test]
    fn threatfox_fixture() {
        let p = parse(FIXTURE, 0);
        assert_eq!(
            prefixes(&p),
            ["192.0.2.10/32", "198.51.100.7/32", "2001:db8::c2/128"]
        );
        // The domain, the URL and the hash.
        assert_eq!(p.ignored, 3);
        assert_eq!(
            reasons(&p.samples),
            [
                (15, "not an IP address or CIDR"),
                (16, "confidence_level is not a number"),
            ]
        );
        let confident = parse(FIXTURE, 75);
        assert_eq!(prefixes(&confident), ["192.0.2.10/32", "2001:db8::c2/128"]);
        assert_eq!(confident.ignored, 4);
    }

    #[test]
    fn ports_come_off() {
        assert_eq!(strip_port("192.0.2.1:443"), "192.0.2.1");
        assert_eq!(strip_port("[2001:db8::1]:443"), "2001:db8::1");
        assert_eq!(strip_port("2001:db8::1"), "2001:db8::1");
        assert_eq!(strip_port("192.0.2.1"), "192.0.2.1");
    }

    #[test]
    fn data_without_a_header_is_rejected() {
        let p = parse(b"\"x\", \"192.0.2.1:80\", \"ip:port\"\n", 0);
        assert_eq!(p.rejected, 1);
    }

    #[test]
    fn garbage_bytes_do_not_panic() {
        let p = parse(GARBAGE_BYTES, 0);
        assert!(p.entries.is_empty() || p.rejected > 0 || p.ignored > 0);
    }
}
