//! Fetching feed bodies over HTTP(S) or from files.
//!
//! HTTP goes through reqwest with rustls: connect and total timeouts, a
//! body size limit (checked while reading, so a huge body never sits in
//! memory), gzip, retries with exponential backoff and jitter, `Retry-After`
//! on 429/503, and `ETag`/`If-Modified-Since` so an unchanged feed costs a
//! 304. Credentials are [`Secret`]s: they never appear in `Debug`, logs,
//! errors or state files, and URLs are shown without user info or query.

use std::{
    fmt,
    io::Read as _,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use rand::Rng as _;
use reqwest::{
    StatusCode,
    blocking::{Client, Response},
    header::{self, HeaderMap, HeaderName, HeaderValue},
};

use super::config::Fetch;

/// A credential. Prints as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The value, for building a request.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where a feed comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// An http(s) URL.
    Http(url::Url),
    /// A local file.
    File(PathBuf),
}

impl Source {
    /// `http(s)://...` is HTTP, `file://...` and anything else a path.
    pub fn parse(s: &str) -> Result<Self, FetchError> {
        if s.starts_with("http://") || s.starts_with("https://") {
            url::Url::parse(s).map(Source::Http).map_err(|e| {
                FetchError::Config(format!("`{}` is not a valid URL: {e}", redact_str(s)))
            })
        } else if let Some(p) = s.strip_prefix("file://") {
            Ok(Source::File(PathBuf::from(p)))
        } else {
            Ok(Source::File(PathBuf::from(s)))
        }
    }

    /// The file `name` beside this one (a MISP feed's events beside its
    /// `manifest.json`).
    pub fn sibling(&self, name: &str) -> Result<Self, FetchError> {
        match self {
            Source::Http(u) => u
                .join(name)
                .map(Source::Http)
                .map_err(|e| FetchError::Config(format!("`{name}` beside {}: {e}", redact(u)))),
            Source::File(p) => Ok(Source::File(p.with_file_name(name))),
        }
    }

    /// True when this names a file called `name` (by its last segment).
    pub fn ends_with(&self, name: &str) -> bool {
        match self {
            Source::Http(u) => u.path().rsplit('/').next() == Some(name),
            Source::File(p) => p.file_name().is_some_and(|f| f == name),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Http(u) => f.write_str(&redact(u)),
            Source::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A URL as it may be shown: no user info, no query (API keys live there
/// in some feeds), no fragment.
pub fn redact(u: &url::Url) -> String {
    let mut u = u.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    if u.query().is_some() {
        u.set_query(Some("…"));
    }
    u.set_fragment(None);
    u.to_string()
}

fn redact_str(s: &str) -> String {
    url::Url::parse(s).map_or_else(|_| "<invalid URL>".to_owned(), |u| redact(&u))
}

/// Why a fetch failed. Messages never contain credentials.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The feed's configuration is unusable.
    #[error("{0}")]
    Config(String),
    /// Network-level failure (DNS, connect, TLS, timeout, reset).
    #[error("{from}: {message}")]
    Network {
        /// The source, redacted.
        from: String,
        /// What went wrong.
        message: String,
    },
    /// The server answered with an error status.
    #[error("{from}: HTTP {status}")]
    Status {
        /// The source, redacted.
        from: String,
        /// The status code.
        status: u16,
    },
    /// The body was larger than allowed.
    #[error(
        "{from}: body larger than the {limit}-byte limit (raise [fetch] max_bytes or the feed's max_bytes)"
    )]
    TooLarge {
        /// The source, redacted.
        from: String,
        /// The limit.
        limit: u64,
    },
    /// The body ended early (connection closed, length mismatch).
    #[error("{from}: body truncated: {message}")]
    Truncated {
        /// The source, redacted.
        from: String,
        /// Details.
        message: String,
    },
    /// Reading a file failed.
    #[error("reading {path}: {source}")]
    File {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What a conditional fetch returned.
#[derive(Debug)]
pub enum Fetched {
    /// The server said 304: the last good body is still current.
    NotModified,
    /// A fresh body.
    Body(Body),
}

/// A fetched body and its validators.
#[derive(Debug)]
pub struct Body {
    /// The bytes (decompressed).
    pub bytes: Vec<u8>,
    /// `ETag`, if any.
    pub etag: Option<String>,
    /// `Last-Modified`, if any.
    pub last_modified: Option<String>,
    /// Response headers worth keeping (TAXII's `X-TAXII-Date-Added-Last`).
    pub headers: HeaderMap,
}

/// One request.
#[derive(Clone, Debug, Default)]
pub struct Request {
    /// Extra headers (e.g. `X-API-KEY`, `Authorization`, `Accept`).
    pub headers: Vec<(String, Secret)>,
    /// HTTP Basic credentials.
    pub basic: Option<(String, Secret)>,
    /// `If-None-Match`.
    pub etag: Option<String>,
    /// `If-Modified-Since`.
    pub last_modified: Option<String>,
    /// Overrides the body limit.
    pub max_bytes: Option<u64>,
}

/// An HTTP client with the configured limits.
pub struct Fetcher {
    client: Client,
    cfg: Fetch,
}

impl Fetcher {
    /// Builds the client (rustls, gzip, timeouts, an extra CA if configured).
    pub fn new(cfg: &Fetch) -> Result<Self, FetchError> {
        let mut b = Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .timeout(cfg.timeout)
            .gzip(true)
            .user_agent(concat!("xdp-blocklist/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &cfg.ca_file {
            let pem = std::fs::read(ca).map_err(|source| FetchError::File {
                path: ca.clone(),
                source,
            })?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                FetchError::Config(format!("{} is not a PEM certificate: {e}", ca.display()))
            })?;
            b = b.add_root_certificate(cert);
        }
        let client = b
            .build()
            .map_err(|e| FetchError::Config(format!("building the HTTP client: {e}")))?;
        Ok(Self {
            client,
            cfg: cfg.clone(),
        })
    }

    /// Fetches `source`, retrying transient failures.
    pub fn fetch(&self, source: &Source, req: &Request) -> Result<Fetched, FetchError> {
        match source {
            Source::File(p) => read_file(p, req.max_bytes.unwrap_or(self.cfg.max_bytes)),
            Source::Http(u) => self.get(u, req),
        }
    }

    /// GETs `url` with retries; the body is limited and validators returned.
    pub fn get(&self, url: &url::Url, req: &Request) -> Result<Fetched, FetchError> {
        let attempts = self.cfg.attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (result, retry_after) = self.once(url, req);
            let transient = match &result {
                Ok(_) => false,
                Err(FetchError::Network { .. }) | Err(FetchError::Truncated { .. }) => true,
                Err(FetchError::Status { status, .. }) => *status == 429 || *status >= 500,
                Err(_) => false,
            };
            if !transient || attempt >= attempts {
                return result;
            }
            let backoff = self.cfg.backoff.saturating_mul(1 << (attempt - 1).min(16));
            let jitter = rand::rng().random_range(0.5..1.5);
            let mut wait = backoff.mul_f64(jitter);
            if let Some(ra) = retry_after {
                if ra > self.cfg.max_retry_after {
                    tracing::warn!(source = %redact(url), retry_after = ?ra, "Retry-After is longer than [fetch] max_retry_after; giving up for this sync");
                    return result;
                }
                wait = wait.max(ra);
            }
            tracing::info!(
                source = %redact(url),
                attempt,
                wait_ms = wait.as_millis() as u64,
                error = %result.as_ref().err().map(ToString::to_string).unwrap_or_default(),
                "retrying feed"
            );
            std::thread::sleep(wait);
        }
    }

    fn once(
        &self,
        url: &url::Url,
        req: &Request,
    ) -> (Result<Fetched, FetchError>, Option<Duration>) {
        let started = std::time::Instant::now();
        let source = redact(url);
        let mut headers = HeaderMap::new();
        for (k, v) in &req.headers {
            let (Ok(name), Ok(mut value)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v.expose()),
            ) else {
                return (
                    Err(FetchError::Config(format!(
                        "header `{k}` has an invalid name or value"
                    ))),
                    None,
                );
            };
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        if let Some(e) = &req.etag
            && let Ok(v) = HeaderValue::from_str(e)
        {
            headers.insert(header::IF_NONE_MATCH, v);
        }
        if let Some(lm) = &req.last_modified
            && let Ok(v) = HeaderValue::from_str(lm)
        {
            headers.insert(header::IF_MODIFIED_SINCE, v);
        }
        let mut rb = self.client.get(url.clone()).headers(headers);
        if let Some((user, pass)) = &req.basic {
            rb = rb.basic_auth(user, Some(pass.expose()));
        }
        let resp = match rb.send() {
            Ok(r) => r,
            Err(e) => {
                return (
                    Err(FetchError::Network {
                        from: source,
                        message: describe(&e),
                    }),
                    None,
                );
            }
        };
        let status = resp.status();
        if status == StatusCode::NOT_MODIFIED {
            return (Ok(Fetched::NotModified), None);
        }
        if !status.is_success() {
            let retry_after = retry_after(&resp);
            return (
                Err(FetchError::Status {
                    from: source,
                    status: status.as_u16(),
                }),
                retry_after,
            );
        }
        let limit = req.max_bytes.unwrap_or(self.cfg.max_bytes);
        (
            read_body(resp, &source, limit, started + self.cfg.timeout).map(Fetched::Body),
            None,
        )
    }
}

/// reqwest's error without the URL (which may carry credentials), plus
/// its cause chain.
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "reading the body failed"
    } else {
        "request failed"
    };
    let mut msg = kind.to_owned();
    let mut cur = std::error::Error::source(e);
    while let Some(c) = cur {
        msg.push_str(": ");
        msg.push_str(&c.to_string());
        cur = c.source();
    }
    msg
}

fn retry_after(resp: &Response) -> Option<Duration> {
    if !matches!(
        resp.status(),
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    ) {
        return None;
    }
    let v = resp
        .headers()
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(when.duration_since(SystemTime::now()).unwrap_or_default())
}

/// Reads the body up to `limit` bytes and no later than `deadline`: a
/// server trickling bytes (slow-loris) never trips a per-read timeout, so
/// the whole-request timeout is enforced here.
fn read_body(
    mut resp: Response,
    source: &str,
    limit: u64,
    deadline: std::time::Instant,
) -> Result<Body, FetchError> {
    if let Some(len) = resp.content_length()
        && len > limit
    {
        return Err(FetchError::TooLarge {
            from: source.to_owned(),
            limit,
        });
    }
    let header_value = |name: HeaderName, resp: &Response| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let etag = header_value(header::ETAG, &resp);
    let last_modified = header_value(header::LAST_MODIFIED, &resp);
    let headers = resp.headers().clone();
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        if std::time::Instant::now() > deadline {
            return Err(FetchError::Network {
                from: source.to_owned(),
                message: "timed out reading the body (the server sends too slowly)".into(),
            });
        }
        let n = match resp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(FetchError::Truncated {
                    from: source.to_owned(),
                    message: e.to_string(),
                });
            }
        };
        bytes.extend_from_slice(&buf[..n]);
        if bytes.len() as u64 > limit {
            return Err(FetchError::TooLarge {
                from: source.to_owned(),
                limit,
            });
        }
    }
    Ok(Body {
        bytes,
        etag,
        last_modified,
        headers,
    })
}

fn read_file(path: &Path, limit: u64) -> Result<Fetched, FetchError> {
    let err = |source| FetchError::File {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(err)?;
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes).map_err(err)?;
    if bytes.len() as u64 > limit {
        return Err(FetchError::TooLarge {
            from: path.display().to_string(),
            limit,
        });
    }
    let last_modified = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .map(|t| humantime::format_rfc3339_seconds(t).to_string());
    Ok(Fetched::Body(Body {
        bytes,
        etag: None,
        last_modified,
        headers: HeaderMap::new(),
    }))
}

#[cfg(test)]
mod tests {

    #[test]
    fn siblings_sit_beside_the_manifest() {
        let http = Source::parse("https://misp.example.net/feeds/circl/manifest.json?k=1").unwrap();
        assert!(http.ends_with("manifest.json"));
        let Source::Http(u) = http.sibling("abc-1.json").unwrap() else {
            panic!("not http");
        };
        assert_eq!(
            u.as_str(),
            "https://misp.example.net/feeds/circl/abc-1.json"
        );
        let file = Source::parse("/srv/misp/manifest.json").unwrap();
        assert!(file.ends_with("manifest.json") && !file.ends_with("json"));
        assert_eq!(
            file.sibling("abc-1.json").unwrap().to_string(),
            "/srv/misp/abc-1.json"
        );
    }

    use super::*;

    #[test]
    fn urls_are_shown_without_credentials_or_query() {
        let u = url::Url::parse("https://user:pw@feeds.example/list.txt?key=SECRET#x").unwrap();
        let shown = redact(&u);
        assert!(!shown.contains("SECRET") && !shown.contains("pw") && !shown.contains("user"));
        assert!(shown.starts_with("https://feeds.example/list.txt"));
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "***");
    }

    #[test]
    fn sources_are_recognised() {
        assert!(matches!(
            Source::parse("https://a.example/x").unwrap(),
            Source::Http(_)
        ));
        assert_eq!(
            Source::parse("file:///etc/x").unwrap(),
            Source::File("/etc/x".into())
        );
        assert_eq!(
            Source::parse("/etc/x").unwrap(),
            Source::File("/etc/x".into())
        );
    }

    #[test]
    fn files_respect_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.txt");
        std::fs::write(&p, b"192.0.2.1\n").unwrap();
        assert!(matches!(read_file(&p, 100).unwrap(), Fetched::Body(b) if b.bytes.len() == 10));
        assert!(matches!(read_file(&p, 5), Err(FetchError::TooLarge { .. })));
        assert!(matches!(
            read_file(&dir.path().join("missing"), 5),
            Err(FetchError::File { .. })
        ));
    }
}
