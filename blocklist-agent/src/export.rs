//! Serving the vetted list onward: `[export] listen` serves the installed
//! block entries (merged from every feed and hand-made entry, guarded, with
//! allow ranges applied) as plain text, one CIDR per line, IPv4 and IPv6
//! separately, with an `ETag` so consumers poll for the cost of a 304.
//!
//! - `/v4.txt`, `/v6.txt`: one family each (pfSense/pfBlockerNG, Palo Alto
//!   EDLs, and other firewalls that read a URL want them apart);
//! - `/all.txt`: both.
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

use crate::datapath::{
    DatapathError,
    maps::{Maps, TrieKind},
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

/// The three lists, replaced as a whole after each sync.
#[derive(Debug, Default)]
pub struct Lists {
    /// IPv4 entries.
    pub v4: List,
    /// IPv6 entries.
    pub v6: List,
    /// Both.
    pub all: List,
}

/// Shared between the sync loop and the endpoint.
pub type Shared = Arc<RwLock<Arc<Lists>>>;

/// Renders the lists from the installed block entries, sorted.
pub fn render(maps: &Maps) -> Result<Lists, DatapathError> {
    let text = |v4: bool| -> Result<String, DatapathError> {
        let mut entries = Vec::new();
        maps.visit(TrieKind::Block, v4, |p, _| entries.push(p))?;
        entries.sort_unstable();
        let mut s = String::with_capacity(entries.len() * 18);
        for p in entries {
            s.push_str(&p.to_string());
            s.push('\n');
        }
        Ok(s)
    };
    let (v4, v6) = (text(true)?, text(false)?);
    let all = format!("{v4}{v6}");
    Ok(Lists {
        v4: List::new(v4),
        v6: List::new(v6),
        all: List::new(all),
    })
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

/// The `/v4.txt`, `/v6.txt` and `/all.txt` routes.
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
        .with_state(shared)
}
