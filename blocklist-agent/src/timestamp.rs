//! Wall-clock timestamps as the state files and the `--json` outputs
//! write them: RFC 3339 in UTC to the second (`2026-12-04T18:00:00Z`).
//! In the code they are [`SystemTime`]s; these serde adapters are the only
//! place they become text.
//!
//! ```
//! use std::time::SystemTime;
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Record {
//!     #[serde(with = "blocklist_agent::timestamp")]
//!     since: SystemTime,
//!     #[serde(with = "blocklist_agent::timestamp::option", default)]
//!     until: Option<SystemTime>,
//! }
//! let r: Record = serde_json::from_str(r#"{"since": "2026-12-04T18:00:00Z"}"#).unwrap();
//! assert!(r.until.is_none());
//! assert_eq!(
//!     serde_json::to_string(&r).unwrap(),
//!     r#"{"since":"2026-12-04T18:00:00Z","until":null}"#
//! );
//! ```

use std::time::SystemTime;

use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

/// `t` as RFC 3339 to the second.
pub fn format(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Parses RFC 3339 (`Z` or without an offset, fractions allowed).
pub fn parse(s: &str) -> Result<SystemTime, humantime::TimestampError> {
    humantime::parse_rfc3339_weak(s)
}

/// Serializes a [`SystemTime`] as RFC 3339 to the second.
pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_seconds(*t))
}

/// Reads an RFC 3339 timestamp.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
    let s = String::deserialize(d)?;
    parse(&s).map_err(|e| D::Error::custom(format!("timestamp {s:?}: {e}")))
}

/// The same for an optional timestamp (`null` or absent for none).
pub mod option {
    use super::*;

    /// Serializes `None` as `null`.
    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => super::serialize(t, s),
            None => s.serialize_none(),
        }
    }

    /// Reads `null` or an RFC 3339 timestamp.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) => parse(&s)
                .map(Some)
                .map_err(|e| D::Error::custom(format!("timestamp {s:?}: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn round_trips_to_the_second_and_refuses_garbage() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_871_200_750);
        let text = format(t);
        assert_eq!(text, "2025-12-04T18:00:00Z");
        assert_eq!(
            parse(&text).unwrap(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_871_200)
        );
        assert!(parse("yesterday").is_err());
    }
}
