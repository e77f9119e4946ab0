//! The STIX 2.1 pattern language, as far as the network edge needs it:
//! a tokenizer and a recursive-descent parser that turn a pattern into the
//! addresses each of which alone satisfies it (see the [parent module](super)
//! for the rules).

use super::super::plain;
use crate::prefix::Prefix;

/// Parentheses deeper than this are refused rather than recursed into.
pub(crate) const MAX_DEPTH: usize = 32;

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
