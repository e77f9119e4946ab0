//! TAXII 2.1 polling: find the collection, page through its `objects`
//! endpoint, and hand each page to the STIX parser.
//!
//! The collection is found from a collection URL directly
//! (`.../api1/collections/ID/`), or from a discovery or API-root URL
//! (then `collection` names it by id or title; default: the first readable
//! one). Pages are requested with `limit` and followed by `next` while
//! `more` is true; `added_after` is the cursor from the previous poll
//! (`X-TAXII-Date-Added-Last`), so later polls fetch only new objects.

use serde::Deserialize;

use super::{
    Rejection,
    fetch::{FetchError, Fetched, Fetcher, Request, Secret, redact},
    stix::{self, Indicator},
};

/// The TAXII 2.1 media type.
pub const MEDIA_TYPE: &str = "application/taxii+json;version=2.1";
/// Objects per page requested.
pub const PAGE_LIMIT: usize = 1000;
/// Pages per poll before the poll is abandoned as runaway.
pub const MAX_PAGES: usize = 10_000;

/// The result of one complete poll.
#[derive(Debug, Default)]
pub struct Poll {
    /// Every indicator in every page, in server order.
    pub indicators: Vec<Indicator>,
    /// Rejected objects.
    pub rejected: usize,
    /// Examples of rejections.
    pub samples: Vec<Rejection>,
    /// Objects skipped on purpose.
    pub ignored: usize,
    /// The new cursor (`X-TAXII-Date-Added-Last` of the last page).
    pub cursor: Option<String>,
    /// Pages fetched.
    pub pages: usize,
}

#[derive(Deserialize)]
struct Discovery {
    default: Option<String>,
    #[serde(default)]
    api_roots: Vec<String>,
}

#[derive(Deserialize)]
struct Collections {
    #[serde(default)]
    collections: Vec<Collection>,
}

#[derive(Deserialize)]
struct Collection {
    id: String,
    #[serde(default)]
    title: String,
    #[serde(default = "yes")]
    can_read: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    more: bool,
    next: Option<String>,
}

fn with_accept(req: &Request) -> Request {
    let mut r = req.clone();
    r.etag = None;
    r.last_modified = None;
    r.headers.push(("Accept".into(), Secret::new(MEDIA_TYPE)));
    r
}

fn get_json<T: serde::de::DeserializeOwned>(
    fetcher: &Fetcher,
    url: &url::Url,
    req: &Request,
) -> Result<(T, super::fetch::Body), FetchError> {
    let body = match fetcher.get(url, req)? {
        Fetched::Body(b) => b,
        Fetched::NotModified => {
            return Err(FetchError::Config(format!(
                "{}: unexpected 304 from a TAXII server",
                redact(url)
            )));
        }
    };
    let v = serde_json::from_slice(&body.bytes).map_err(|e| FetchError::Truncated {
        from: redact(url),
        message: format!("not a TAXII 2.1 JSON response: {e}"),
    })?;
    Ok((v, body))
}

fn dir_url(u: &url::Url) -> url::Url {
    let mut u = u.clone();
    if !u.path().ends_with('/') {
        let p = format!("{}/", u.path());
        u.set_path(&p);
    }
    u
}

fn join(base: &url::Url, rel: &str) -> Result<url::Url, FetchError> {
    base.join(rel).map(|u| dir_url(&u)).map_err(|e| {
        FetchError::Config(format!("bad TAXII URL `{rel}` from {}: {e}", redact(base)))
    })
}

/// The `objects/` URL of the collection `url` points at (or contains).
pub fn objects_url(
    fetcher: &Fetcher,
    url: &url::Url,
    collection: Option<&str>,
    req: &Request,
) -> Result<url::Url, FetchError> {
    let url = dir_url(url);
    if url.path().contains("/collections/") {
        return join(&url, "objects/");
    }
    // A discovery URL lists API roots; anything else is taken as an API root.
    let req = with_accept(req);
    let (disc, _) = get_json::<serde_json::Value>(fetcher, &url, &req)?;
    let api_root = if disc.get("api_roots").is_some() {
        let d: Discovery =
            serde_json::from_value(disc).map_err(|e| FetchError::Config(e.to_string()))?;
        let root = d
            .default
            .or_else(|| d.api_roots.first().cloned())
            .ok_or_else(|| {
                FetchError::Config(format!(
                    "TAXII discovery at {} lists no API root",
                    redact(&url)
                ))
            })?;
        join(&url, &root)?
    } else {
        url.clone()
    };
    let (cols, _) = get_json::<Collections>(fetcher, &join(&api_root, "collections/")?, &req)?;
    let chosen = cols
        .collections
        .iter()
        .find(|c| match collection {
            Some(want) => c.id == want || c.title == want,
            None => c.can_read,
        })
        .ok_or_else(|| {
            FetchError::Config(format!(
                "no {} collection at {} (available: {})",
                collection.map_or("readable".to_owned(), |c| format!("`{c}`")),
                redact(&api_root),
                cols.collections
                    .iter()
                    .map(|c| format!("{} ({})", c.id, c.title))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    join(&api_root, &format!("collections/{}/objects/", chosen.id))
}

/// Polls every page added after `cursor`.
pub fn poll(
    fetcher: &Fetcher,
    objects: &url::Url,
    req: &Request,
    cursor: Option<&str>,
    now: i64,
) -> Result<Poll, FetchError> {
    let req = with_accept(req);
    let mut out = Poll {
        cursor: cursor.map(str::to_owned),
        ..Poll::default()
    };
    // medallion (and the spec) may hand out the same `next` token for every
    // page of one chain, so a loop shows as a page identical to the one
    // before it, or as no end within MAX_PAGES.
    let mut previous_page: Option<Vec<u8>> = None;
    let mut next: Option<String> = None;
    // Servers (medallion among them) want the same filters on every page
    // of a `next` chain, so `added_after` stays put while `next` moves.
    let mut added_after = cursor.map(str::to_owned);
    loop {
        if out.pages >= MAX_PAGES {
            return Err(FetchError::Config(format!(
                "{}: more than {MAX_PAGES} pages in one poll; giving up (server paging loop?)",
                redact(objects)
            )));
        }
        let cursor_before = out.cursor.clone();
        let mut page = objects.clone();
        {
            let mut q = page.query_pairs_mut();
            q.append_pair("limit", &PAGE_LIMIT.to_string());
            if let Some(c) = &added_after {
                q.append_pair("added_after", c);
            }
            if let Some(n) = &next {
                q.append_pair("next", n);
            }
        }
        let (env, body) = get_json::<Envelope>(fetcher, &page, &req)?;
        out.pages += 1;
        if env.more && previous_page.as_deref() == Some(body.bytes.as_slice()) {
            return Err(FetchError::Config(format!(
                "{}: the server returned the same page twice with `more` set; stopping (paging loop)",
                redact(objects)
            )));
        }
        let parsed = stix::parse(&body.bytes, now);
        out.indicators.extend(parsed.indicators);
        out.rejected += parsed.rejected;
        out.ignored += parsed.ignored;
        for s in parsed.samples {
            if out.samples.len() < super::MAX_SAMPLES {
                out.samples.push(s);
            }
        }
        if let Some(last) = body
            .headers
            .get("X-TAXII-Date-Added-Last")
            .and_then(|v| v.to_str().ok())
        {
            out.cursor = Some(last.to_owned());
        }
        if !env.more {
            return Ok(out);
        }
        previous_page = Some(body.bytes);
        match env.next {
            Some(n) => next = Some(n),
            // Without `next`, page by `added_after` = this page's last date.
            None => {
                if out.cursor == cursor_before {
                    return Err(FetchError::Config(format!(
                        "{}: `more` is true but neither `next` nor the date cursor advances",
                        redact(objects)
                    )));
                }
                next = None;
                added_after = out.cursor.clone();
            }
        }
    }
}
