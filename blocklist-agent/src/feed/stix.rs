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

/// Parentheses deeper than this are refused rather than recursed into.
const MAX_DEPTH: usize = 32;

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

/// The prefixes a pattern blocks; `Ok(None)` when it names no IP address
/// at all (not an IP indicator) or none that alone matches it (an `AND`
/// with a domain: not applicable at the network edge), `Err` when it is
/// broken or gives a bad address.
pub(crate) fn parse_pattern(pattern: &str) -> Result<Option<Vec<Prefix>>, String> {
    let tokens = match tokenize(pattern) {
        Ok(tokens) => tokens,
        Err(reason) if mentions_ip_text(pattern) => return Err(reason),
        Err(_) => return Ok(None),
    };
    if !tokens.iter().any(Token::is_ip_path) {
        return Ok(None);
    }
    let mut parser = PatternParser { tokens, pos: 0 };
    let blockable = parser.pattern(0)?;
    if let Some(extra) = parser.tokens.get(parser.pos) {
        return Err(unexpected(Some(extra)));
    }
    // Names an address, but none that alone matches: not applicable here.
    Ok((!blockable.is_empty()).then_some(blockable))
}

/// A crude check for patterns too broken to tokenize: those mentioning IP
/// objects are worth a rejection, the rest are someone else's business.
fn mentions_ip_text(pattern: &str) -> bool {
    let lower = pattern.to_ascii_lowercase();
    lower.contains("ipv4-addr:") || lower.contains("ipv6-addr:")
}

/// A pattern token. Object paths, keywords, numbers and the prefixes of
/// typed literals (`t'…'`) are all words.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Token<'a> {
    Open(char),
    Close(char),
    Comma,
    Op(&'a str),
    Str(String),
    Word(&'a str),
}

impl Token<'_> {
    fn is_ip_path(&self) -> bool {
        matches!(self, Token::Word(w) if w.get(..10).is_some_and(|head| {
            head.eq_ignore_ascii_case("ipv4-addr:") || head.eq_ignore_ascii_case("ipv6-addr:")
        }) || ip_family(w).is_some())
    }

    fn is_keyword(&self, keyword: &str) -> bool {
        matches!(self, Token::Word(w) if w.eq_ignore_ascii_case(keyword))
    }
}

/// Characters that end a word.
fn ends_word(c: char) -> bool {
    c.is_whitespace() || "[](),'=!<>".contains(c)
}

fn tokenize(pattern: &str) -> Result<Vec<Token<'_>>, String> {
    let mut tokens = Vec::new();
    let mut chars = pattern.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let token = match c {
            c if c.is_whitespace() => continue,
            '[' | '(' => Token::Open(c),
            ']' | ')' => Token::Close(c),
            ',' => Token::Comma,
            '\'' => Token::Str(read_string(&mut chars)?),
            '=' | '!' | '<' | '>' => {
                let len = if chars.next_if(|&(_, n)| n == '=').is_some() {
                    2
                } else {
                    1
                };
                Token::Op(pattern.get(i..i + len).unwrap_or_default())
            }
            _ => {
                let mut end = pattern.len();
                while let Some(&(j, n)) = chars.peek() {
                    if ends_word(n) {
                        end = j;
                        break;
                    }
                    chars.next();
                }
                Token::Word(pattern.get(i..end).unwrap_or_default())
            }
        };
        tokens.push(token);
    }
    Ok(tokens)
}

/// Reads a string literal after its opening quote. STIX knows two escapes,
/// `\'` and `\\`.
fn read_string(chars: &mut impl Iterator<Item = (usize, char)>) -> Result<String, String> {
    let mut s = String::new();
    while let Some((_, c)) = chars.next() {
        match c {
            '\'' => return Ok(s),
            '\\' => match chars.next() {
                Some((_, e @ ('\'' | '\\'))) => s.push(e),
                _ => return Err("invalid escape in string literal".into()),
            },
            c => s.push(c),
        }
    }
    Err("unterminated string literal".into())
}

/// Which addresses an object path holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    V4,
    V6,
    /// `network-traffic:src_ref.value` / `dst_ref.value`: either family,
    /// as the literal says.
    Either,
}

fn ip_family(path: &str) -> Option<Family> {
    let is = |p: &str| path.eq_ignore_ascii_case(p);
    if is("ipv4-addr:value") {
        Some(Family::V4)
    } else if is("ipv6-addr:value") {
        Some(Family::V6)
    } else if is("network-traffic:src_ref.value") || is("network-traffic:dst_ref.value") {
        Some(Family::Either)
    } else {
        None
    }
}

/// What part of a (sub)pattern can be blocked: the addresses each of
/// which alone satisfies it. Empty when nothing can: a term on another
/// object (a domain, a hash), or one that needs more than an address seen
/// once (`AND`, `FOLLOWEDBY`, `NOT`, `!=`, `LIKE`, a qualifier such as
/// `REPEATS`). Under `OR` such a term is skipped and the other side still
/// blocks (it alone matches the indicator); under `AND` the whole
/// conjunction blocks nothing, because the edge cannot see the other term.
type Blockable = Vec<Prefix>;

/// A recursive-descent parser for STIX 2.1 patterns, which evaluates each
/// part to what can be blocked ([`Blockable`]) as it goes:
///
/// ```text
/// pattern     := obs_or (FOLLOWEDBY obs_or)*
/// obs_or      := obs_and (OR obs_and)*
/// obs_and     := observation (AND observation)*
/// observation := ('[' comp_or ']' | '(' pattern ')') qualifier*
/// comp_or     := comp_and (OR comp_and)*
/// comp_and    := comparison (AND comparison)*
/// comparison  := '(' comp_or ')' | path [NOT] op value
/// op          := '=' | '!=' | '<' | '<=' | '>' | '>=' | IN | LIKE | MATCHES
///              | ISSUBSET | ISSUPERSET
/// ```
///
/// Only `=`, `ISSUBSET` and `IN` on an IP path block; a bad address there
/// is an error (the feed is wrong), anything else the edge cannot
/// represent is skipped as above.
struct PatternParser<'a> {
    tokens: Vec<Token<'a>>,
    pos: usize,
}

impl<'a> PatternParser<'a> {
    fn next(&mut self) -> Option<Token<'a>> {
        let token = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        token
    }

    fn peek(&self) -> Option<&Token<'a>> {
        self.tokens.get(self.pos)
    }

    fn eat(&mut self, keyword: &str) -> bool {
        let found = self.peek().is_some_and(|t| t.is_keyword(keyword));
        if found {
            self.pos += 1;
        }
        found
    }

    fn expect(&mut self, wanted: Token<'static>) -> Result<(), String> {
        match self.next() {
            Some(t) if t == wanted => Ok(()),
            other => Err(unexpected(other.as_ref())),
        }
    }

    fn keyword(&mut self, keyword: &str) -> Result<(), String> {
        if self.eat(keyword) {
            Ok(())
        } else {
            Err(unexpected(self.peek()))
        }
    }

    fn pattern(&mut self, depth: usize) -> Result<Blockable, String> {
        let first = self.obs_or(depth)?;
        let mut followed = false;
        while self.eat("FOLLOWEDBY") {
            self.obs_or(depth)?;
            followed = true;
        }
        Ok(if followed { Vec::new() } else { first })
    }

    fn obs_or(&mut self, depth: usize) -> Result<Blockable, String> {
        let mut out = self.obs_and(depth)?;
        while self.eat("OR") {
            out.extend(self.obs_and(depth)?);
        }
        Ok(out)
    }

    fn obs_and(&mut self, depth: usize) -> Result<Blockable, String> {
        let first = self.observation(depth)?;
        let mut both = false;
        while self.eat("AND") {
            self.observation(depth)?;
            both = true;
        }
        Ok(if both { Vec::new() } else { first })
    }

    fn observation(&mut self, depth: usize) -> Result<Blockable, String> {
        let inner = match self.next() {
            Some(Token::Open('[')) => {
                let v = self.comp_or(depth)?;
                self.expect(Token::Close(']'))?;
                v
            }
            Some(Token::Open('(')) => {
                let v = self.pattern(deeper(depth)?)?;
                self.expect(Token::Close(')'))?;
                v
            }
            other => return Err(unexpected(other.as_ref())),
        };
        let mut qualified = false;
        while self.qualifier()? {
            qualified = true;
        }
        Ok(if qualified { Vec::new() } else { inner })
    }

    /// `WITHIN n SECONDS`, `REPEATS n TIMES`, `START t'…' STOP t'…'`: the
    /// address seen once no longer satisfies the observation.
    fn qualifier(&mut self) -> Result<bool, String> {
        if self.eat("WITHIN") {
            self.any_value()?;
            self.keyword("SECONDS")?;
        } else if self.eat("REPEATS") {
            self.any_value()?;
            self.keyword("TIMES")?;
        } else if self.eat("START") {
            self.any_value()?;
            self.keyword("STOP")?;
            self.any_value()?;
        } else {
            return Ok(false);
        }
        Ok(true)
    }

    fn comp_or(&mut self, depth: usize) -> Result<Blockable, String> {
        let mut out = self.comp_and(depth)?;
        while self.eat("OR") {
            out.extend(self.comp_and(depth)?);
        }
        Ok(out)
    }

    fn comp_and(&mut self, depth: usize) -> Result<Blockable, String> {
        let first = self.comparison(depth)?;
        let mut both = false;
        while self.eat("AND") {
            self.comparison(depth)?;
            both = true;
        }
        Ok(if both { Vec::new() } else { first })
    }

    fn comparison(&mut self, depth: usize) -> Result<Blockable, String> {
        let path = match self.next() {
            Some(Token::Open('(')) => {
                let v = self.comp_or(deeper(depth)?)?;
                self.expect(Token::Close(')'))?;
                return Ok(v);
            }
            Some(Token::Word(path)) if path.contains(':') => path,
            other => return Err(unexpected(other.as_ref())),
        };
        let family = self.rest_of_path(path);
        let negated = self.eat("NOT");
        let family = family.filter(|_| !negated);
        match self.next() {
            Some(Token::Op("=")) => self.value_or_skip(family),
            Some(t) if t.is_keyword("ISSUBSET") => self.value_or_skip(family),
            Some(t) if t.is_keyword("IN") => match family {
                Some(f) => self.set(f),
                None => self.any_value().map(|()| Vec::new()),
            },
            Some(Token::Op(_)) => self.any_value().map(|()| Vec::new()),
            Some(t)
                if ["LIKE", "MATCHES", "ISSUPERSET"]
                    .iter()
                    .any(|k| t.is_keyword(k)) =>
            {
                self.any_value().map(|()| Vec::new())
            }
            other => Err(unexpected(other.as_ref())),
        }
    }

    /// The family of the IP path that starts with `path`, consuming the
    /// rest of a longer path (`x:y[*].z`, `file:hashes.'SHA-256'`), which
    /// is never an IP path.
    fn rest_of_path(&mut self, path: &str) -> Option<Family> {
        let mut longer = false;
        loop {
            match (
                self.peek(),
                self.tokens.get(self.pos + 1),
                self.tokens.get(self.pos + 2),
            ) {
                (Some(Token::Str(_)), ..) if !longer && path.ends_with('.') => {
                    self.pos += 1;
                    longer = true;
                }
                (Some(Token::Open('[')), Some(Token::Word(_)), Some(Token::Close(']'))) => {
                    self.pos += 3;
                    longer = true;
                }
                (Some(Token::Word(w)), ..) if longer && w.starts_with('.') => self.pos += 1,
                _ => break,
            }
        }
        if longer { None } else { ip_family(path) }
    }

    fn value_or_skip(&mut self, family: Option<Family>) -> Result<Blockable, String> {
        match family {
            Some(f) => self.value(f).map(|p| vec![p]),
            None => self.any_value().map(|()| Vec::new()),
        }
    }

    /// Any literal, or a parenthesised list of them, for terms that block
    /// nothing: a string, a number, `true`/`false`, a typed literal
    /// (`t'…'`, `h'…'`, `b'…'`).
    fn any_value(&mut self) -> Result<(), String> {
        match self.next() {
            Some(Token::Str(_)) => Ok(()),
            Some(Token::Word(w)) => {
                if matches!(w, "t" | "h" | "b") && matches!(self.peek(), Some(Token::Str(_))) {
                    self.pos += 1;
                }
                Ok(())
            }
            Some(Token::Open('(')) => loop {
                self.any_value()?;
                match self.next() {
                    Some(Token::Comma) => {}
                    Some(Token::Close(')')) => return Ok(()),
                    other => return Err(unexpected(other.as_ref())),
                }
            },
            other => Err(unexpected(other.as_ref())),
        }
    }

    /// `('a', 'b', …)` after `IN`.
    fn set(&mut self, family: Family) -> Result<Blockable, String> {
        self.expect(Token::Open('('))?;
        let mut out = Vec::new();
        loop {
            out.push(self.value(family)?);
            match self.next() {
                Some(Token::Comma) => {}
                Some(Token::Close(')')) => return Ok(out),
                other => return Err(unexpected(other.as_ref())),
            }
        }
    }

    fn value(&mut self, family: Family) -> Result<Prefix, String> {
        let text = match self.next() {
            Some(Token::Str(s)) => s,
            other => {
                return Err(format!(
                    "expected a quoted address, found {}",
                    describe(other.as_ref())
                ));
            }
        };
        let prefix = plain::parse_prefix(&text)
            .map_err(|reason| format!("invalid address `{text}`: {reason}"))?;
        // Judge the literal, not the canonical prefix: `::ffff:192.0.2.1`
        // is a fine ipv6-addr even though it is stored as IPv4.
        match (family, text.contains(':')) {
            (Family::V4, true) => Err(format!("`{text}` is not an IPv4 address (ipv4-addr)")),
            (Family::V6, false) => Err(format!("`{text}` is not an IPv6 address (ipv6-addr)")),
            _ => Ok(prefix),
        }
    }
}

fn deeper(depth: usize) -> Result<usize, String> {
    if depth >= MAX_DEPTH {
        Err("pattern nested too deeply".into())
    } else {
        Ok(depth + 1)
    }
}

/// Explains a token the subset cannot handle, naming the unsupported
/// construct when it is one.
fn unexpected(token: Option<&Token<'_>>) -> String {
    match token {
        Some(Token::Word(w)) => {
            let upper = w.to_ascii_uppercase();
            match upper.as_str() {
                "AND" | "FOLLOWEDBY" | "NOT" | "LIKE" | "MATCHES" | "ISSUPERSET" | "EXISTS" => {
                    format!("{upper} is not supported")
                }
                "WITHIN" | "REPEATS" | "START" | "STOP" => {
                    format!("qualifier {upper} is not supported")
                }
                _ => format!("unexpected {}", describe(token)),
            }
        }
        Some(Token::Op(op)) if *op != "=" => format!("operator {op} is not supported"),
        _ => format!("unexpected {}", describe(token)),
    }
}

fn describe(token: Option<&Token<'_>>) -> String {
    match token {
        None => "end of pattern".into(),
        Some(Token::Open(c) | Token::Close(c)) => format!("`{c}`"),
        Some(Token::Comma) => "`,`".into(),
        Some(Token::Op(op)) => format!("`{op}`"),
        Some(Token::Str(s)) => format!("string '{s}'"),
        Some(Token::Word(w)) => format!("`{w}`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::plain::GARBAGE_BYTES;

    const BUNDLE: &[u8] = include_bytes!("fixtures/stix_bundle.json");
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
        let s = parse(include_bytes!("fixtures/stix_or_mixed.json"), NOW);
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
