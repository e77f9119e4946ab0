//! MISP: one event as a MISP feed serves it (`{"Event": {...}}`, the
//! `<uuid>.json` files beside a feed's `manifest.json`; the poller reads a
//! whole feed from its manifest, event by event), and the answers
//! of MISP's REST search (`/attributes/restSearch`:
//! `{"response": {"Attribute": [...]}}`; `/events/restSearch`:
//! `{"response": [{"Event": {...}}]}`), which need the API key in an
//! `Authorization` header (`headers = { Authorization = "env:MISP_KEY" }`).
//!
//! The attributes read are `ip-src`, `ip-dst`, `ip-src|port` and
//! `ip-dst|port` (the port is dropped), in the event and in its objects
//! (`Object[].Attribute`). An attribute not meant for detection
//! (`to_ids` false) or deleted is skipped on purpose and counted as
//! ignored, like every attribute of another type; a bad address is
//! rejected, sampled as "object N" with N counting the attributes in the
//! order they appear.

use serde_json::Value;

use super::{Parsed, plain};

/// The attribute types that hold an address.
const IP_TYPES: [&str; 4] = ["ip-src", "ip-dst", "ip-src|port", "ip-dst|port"];

/// Parses a MISP event or REST search answer.
pub fn parse(bytes: &[u8]) -> Parsed {
    let mut out = Parsed::default();
    let body = plain::strip_bom(bytes);
    let doc: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            out.reject(1, format!("not valid JSON ({e})"), &plain::lossy_head(body));
            return out;
        }
    };
    let mut attributes = Vec::new();
    let events: Vec<&Value> = match (doc.get("Event"), doc.get("response")) {
        (Some(event), _) => vec![event],
        (None, Some(Value::Array(events))) => {
            events.iter().filter_map(|e| e.get("Event")).collect()
        }
        (None, Some(response)) => {
            attributes.extend(list(response.get("Attribute")));
            Vec::new()
        }
        (None, None) => {
            out.reject(
                1,
                "not a MISP event or REST search answer (no `Event` or `response`)",
                &plain::lossy_head(body),
            );
            return out;
        }
    };
    for event in events {
        attributes.extend(list(event.get("Attribute")));
        for object in list(event.get("Object")) {
            attributes.extend(list(object.get("Attribute")));
        }
    }
    for (i, a) in attributes.into_iter().enumerate() {
        read(i + 1, a, &mut out);
    }
    out
}

fn list(v: Option<&Value>) -> impl Iterator<Item = &Value> {
    v.and_then(Value::as_array).into_iter().flatten()
}

fn read(n: usize, a: &Value, out: &mut Parsed) {
    let kind = a.get("type").and_then(Value::as_str).unwrap_or_default();
    if !IP_TYPES.contains(&kind) || !flag(a.get("to_ids"), true) || flag(a.get("deleted"), false) {
        out.ignored += 1;
        return;
    }
    let Some(value) = a.get("value").and_then(Value::as_str) else {
        out.reject_object(n, "attribute without a value", &a.to_string());
        return;
    };
    let addr = if kind.ends_with("|port") {
        value.split_once('|').map_or(value, |(addr, _)| addr)
    } else {
        value
    };
    if let Err(reason) = plain::parse_item(addr, &mut out.entries) {
        out.reject_object(n, reason, value);
    }
}

/// MISP writes booleans as `true`, `1` or `"1"` depending on the version
/// and the endpoint; absent means `default`.
fn flag(v: Option<&Value>, default: bool) -> bool {
    match v {
        None | Some(Value::Null) => default,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_u64() != Some(0),
        Some(Value::String(s)) => !matches!(s.as_str(), "0" | "false" | ""),
        Some(_) => default,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::{Unit, plain::GARBAGE_BYTES, test_util::prefixes};

    /// Both written by PyMISP (`fixtures/misp/generate.py`).
    const EVENT: &[u8] = include_bytes!("fixtures/misp/event.json");
    const RESTSEARCH: &[u8] = include_bytes!("fixtures/misp/restsearch.json");

    const WANT: [&str; 5] = [
        "192.0.2.10/32",
        "198.51.100.0/24",
        "203.0.113.5/32",
        "2001:db8::c2/128",
        "192.0.2.20/32",
    ];

    #[test]
    fn feed_event_written_by_pymisp() {
        let p = parse(EVENT);
        assert_eq!(prefixes(&p), WANT);
        // Not for IDS, deleted, a domain, a URL, the object's port and its
        // second address (not for IDS).
        assert_eq!(p.ignored, 6);
        assert_eq!(p.rejected, 1);
        assert_eq!((p.samples[0].line, p.samples[0].unit), (9, Unit::Object));
        assert_eq!(p.samples[0].text, "192.0.2.999");
    }

    #[test]
    fn restsearch_answer_written_by_pymisp() {
        let p = parse(RESTSEARCH);
        assert_eq!(prefixes(&p), WANT);
        assert_eq!((p.ignored, p.rejected), (6, 1));
    }

    #[test]
    fn events_search_and_odd_flags() {
        let body = br#"{"response": [{"Event": {"Attribute": [
            {"type": "ip-dst", "value": "192.0.2.1", "to_ids": "1"},
            {"type": "ip-dst", "value": "192.0.2.2", "to_ids": 0},
            {"type": "ip-src", "value": "192.0.2.3", "deleted": "1"},
            {"type": "ip-src"}
        ]}}]}"#;
        let p = parse(body);
        assert_eq!(prefixes(&p), ["192.0.2.1/32"]);
        assert_eq!((p.ignored, p.rejected), (2, 1));
    }

    #[test]
    fn not_misp_is_one_rejection() {
        assert_eq!(parse(b"{}").rejected, 1);
        assert_eq!(parse(b"[1, 2]").rejected, 1);
        assert_eq!(parse(GARBAGE_BYTES).rejected, 1);
    }
}
