//! Serving the vetted list onward: `[export] listen` serves the installed
//! block entries (merged from every feed and hand-made entry, guarded, with
//! allow ranges applied) as plain text, one CIDR per line, IPv4 and IPv6
//! separately, with an `ETag` so consumers poll for the cost of a 304.
//!
//! - `/v4.txt`, `/v6.txt`: one family each (pfSense/pfBlockerNG, Palo Alto
//!   EDLs, and other firewalls that read a URL want them apart);
//! - `/all.txt`: both;
//! - `/v4-aggregated.txt`, `/v6-aggregated.txt`: the same sets with
//!   adjacent and overlapping prefixes merged (as `iprange` and
//!   `aggregate` do), for devices with small rule tables;
//! - `/v4-hosts.txt`: only the single-address entries, as bare addresses,
//!   for devices that cannot mix addresses and networks.
//!
//! One agent can feed a fleet: the others list this URL as a plain feed,
//! so only one host talks to the upstream APIs and their rate limits.

use std::sync::{Arc, RwLock};

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use sha2::{Digest as _, Sha256};

use crate::{
    datapath::{
        DatapathError,
        maps::{Maps, TrieKind},
    },
    prefix::Prefix,
};

/// One rendered list and its validator.
#[derive(Debug, Default)]
pub struct List {
    /// One CIDR per line.
    pub body: String,
    /// Strong ETag of `body`.
    pub etag: String,
}

impl List {
    fn new(body: String) -> Self {
        let etag = format!(
            "\"{}\"",
            &hex::encode(Sha256::digest(body.as_bytes()))[..32]
        );
        Self { body, etag }
    }
}

/// The lists, replaced as a whole after each sync.
#[derive(Debug, Default)]
pub struct Lists {
    /// IPv4 entries.
    pub v4: List,
    /// IPv6 entries.
    pub v6: List,
    /// Both.
    pub all: List,
    /// IPv4 entries, aggregated.
    pub v4_aggregated: List,
    /// IPv6 entries, aggregated.
    pub v6_aggregated: List,
    /// IPv4 single addresses only.
    pub v4_hosts: List,
}

/// Shared between the sync loop and the endpoint.
pub type Shared = Arc<RwLock<Arc<Lists>>>;

/// Renders the lists from the installed block entries, sorted.
pub fn render(maps: &Maps) -> Result<Lists, DatapathError> {
    let entries = |v4: bool| -> Result<Vec<Prefix>, DatapathError> {
        let mut entries = Vec::new();
        maps.visit(TrieKind::Block, v4, |p, _| entries.push(p))?;
        entries.sort_unstable();
        Ok(entries)
    };
    let (e4, e6) = (entries(true)?, entries(false)?);
    let (v4, v6) = (lines(&e4, Prefix::to_string), lines(&e6, Prefix::to_string));
    let all = format!("{v4}{v6}");
    let hosts: Vec<Prefix> = e4
        .iter()
        .copied()
        .filter(|p| p.prefix_len() == 32)
        .collect();
    Ok(Lists {
        v4_aggregated: List::new(lines(&aggregate(&e4), Prefix::to_string)),
        v6_aggregated: List::new(lines(&aggregate(&e6), Prefix::to_string)),
        v4_hosts: List::new(lines(&hosts, |p| p.addr().to_string())),
        v4: List::new(v4),
        v6: List::new(v6),
        all: List::new(all),
    })
}

fn lines(entries: &[Prefix], show: impl Fn(&Prefix) -> String) -> String {
    let mut s = String::with_capacity(entries.len() * 18);
    for p in entries {
        s.push_str(&show(p));
        s.push('\n');
    }
    s
}

/// Adjacent and overlapping prefixes merged into the fewest that cover
/// exactly the same addresses, sorted.
pub fn aggregate(entries: &[Prefix]) -> Vec<Prefix> {
    let nets: Vec<ipnet::IpNet> = entries.iter().map(Prefix::net).collect();
    let mut out: Vec<Prefix> = ipnet::IpNet::aggregate(&nets)
        .into_iter()
        .map(Prefix::new)
        .collect();
    out.sort_unstable();
    out
}

fn reply(list: &List, headers: &HeaderMap) -> Response {
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == list.etag));
    if matches {
        return (
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, list.etag.clone())],
        )
            .into_response();
    }
    (
        StatusCode::OK,
        [
            (header::ETAG, list.etag.clone()),
            (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_owned()),
        ],
        list.body.clone(),
    )
        .into_response()
}

/// The routes of the lists (see the module doc).
pub fn router(shared: Shared) -> axum::Router {
    fn current(s: &Shared) -> Arc<Lists> {
        s.read().map(|l| Arc::clone(&l)).unwrap_or_default()
    }
    axum::Router::new()
        .route(
            "/v4.txt",
            get(|State(s): State<Shared>, h: HeaderMap| async move { reply(&current(&s).v4, &h) }),
        )
        .route(
            "/v6.txt",
            get(|State(s): State<Shared>, h: HeaderMap| async move { reply(&current(&s).v6, &h) }),
        )
        .route(
            "/all.txt",
            get(|State(s): State<Shared>, h: HeaderMap| async move { reply(&current(&s).all, &h) }),
        )
        .route(
            "/v4-aggregated.txt",
            get(|State(s): State<Shared>, h: HeaderMap| async move {
                reply(&current(&s).v4_aggregated, &h)
            }),
        )
        .route(
            "/v6-aggregated.txt",
            get(|State(s): State<Shared>, h: HeaderMap| async move {
                reply(&current(&s).v6_aggregated, &h)
            }),
        )
        .route(
            "/v4-hosts.txt",
            get(|State(s): State<Shared>, h: HeaderMap| async move {
                reply(&current(&s).v4_hosts, &h)
            }),
        )
        .with_state(shared)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(list: &[&str]) -> Vec<Prefix> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn aggregate_merges_adjacent_and_covered_prefixes() {
        let got = aggregate(&p(&[
            "192.0.2.0/25",
            "192.0.2.128/25",
            "192.0.2.7/32",
            "198.51.100.0/24",
            "198.51.100.64/26",
            "203.0.113.1/32",
            "203.0.113.3/32",
        ]));
        let got: Vec<String> = got.iter().map(Prefix::to_string).collect();
        assert_eq!(
            got,
            [
                "192.0.2.0/24",
                "198.51.100.0/24",
                "203.0.113.1/32",
                "203.0.113.3/32"
            ]
        );
        let v6 = aggregate(&p(&[
            "2001:db8::/33",
            "2001:db8:8000::/33",
            "2001:db8::1/128",
        ]));
        assert_eq!(v6, p(&["2001:db8::/32"]));
    }

    #[test]
    fn hosts_are_bare_addresses() {
        let e = p(&["192.0.2.7/32", "198.51.100.9/32"]);
        assert_eq!(
            lines(&e, |p| p.addr().to_string()),
            "192.0.2.7\n198.51.100.9\n"
        );
    }
}
