//! The records feeds produce and the state directory keeps: a listed
//! prefix ([`Entry`]) and a line or object that was not accepted
//! ([`Rejection`]). They sit below both `feed` and `state`, so that the
//! state stores them without depending on the parsers.

use crate::prefix::Prefix;

/// One accepted entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The canonical prefix.
    pub prefix: Prefix,
    /// The STIX indicator id that listed it, for STIX/TAXII feeds.
    pub id: Option<String>,
}

impl Entry {
    /// An entry without an indicator id.
    pub fn new(prefix: Prefix) -> Self {
        Self { prefix, id: None }
    }
}

/// A line or object that was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rejection {
    /// 1-based line number, or object index where [`Rejection::unit`] says
    /// `object`.
    pub line: usize,
    /// What `line` counts: lines of the file, or objects of a STIX bundle
    /// (whose lines say nothing: bundles are often one line).
    #[serde(default)]
    pub unit: Unit,
    /// Why, in a few words.
    pub reason: String,
    /// The offending text, cut to 80 characters.
    pub text: String,
}

/// What a [`Rejection`]'s position counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    /// Lines of the body.
    #[default]
    Line,
    /// Objects of a JSON array (STIX `objects`).
    Object,
}

impl std::fmt::Display for Unit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Line => "line",
            Self::Object => "object",
        })
    }
}
