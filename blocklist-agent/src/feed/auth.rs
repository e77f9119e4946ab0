//! Credentials for a feed request, read from the environment or files at
//! fetch time and carried as [`Secret`]s.
//!
//! - `api_key_env` + `api_secret_env` (or `api_key_file` holding
//!   `key:secret`): `X-API-KEY: base64(key:secret)`, as isMalicious wants.
//! - `username` + `password_env`/`password_file`: HTTP Basic.
//! - `headers`: literal values, or `env:VAR` / `file:PATH`.
//! - CrowdSec feeds: the bouncer key as it is in `X-Api-Key` (from
//!   `api_key_env` or `api_key_file`), and the bouncer's `User-Agent`.

use base64::Engine as _;

use super::config::FeedConfig;
use super::fetch::{FetchError, Request, Secret};

fn env(feed: &str, var: &str) -> Result<Secret, FetchError> {
    std::env::var(var).map(Secret::new).map_err(|_| {
        FetchError::Config(format!(
            "feed `{feed}`: environment variable {var} is not set (it holds a credential)"
        ))
    })
}

fn file(feed: &str, path: &std::path::Path) -> Result<Secret, FetchError> {
    std::fs::read_to_string(path)
        .map(|s| Secret::new(s.trim_end_matches(['\r', '\n'])))
        .map_err(|e| {
            FetchError::Config(format!(
                "feed `{feed}`: reading credential file {}: {e}",
                path.display()
            ))
        })
}

fn indirect(feed: &str, value: &str) -> Result<Secret, FetchError> {
    if let Some(var) = value.strip_prefix("env:") {
        env(feed, var)
    } else if let Some(p) = value.strip_prefix("file:") {
        file(feed, std::path::Path::new(p))
    } else {
        Ok(Secret::new(value))
    }
}

/// The request (headers, Basic auth, body limit) for `feed`.
pub fn request(feed: &FeedConfig) -> Result<Request, FetchError> {
    let name = &feed.name;
    let mut req = Request {
        max_bytes: feed.max_bytes,
        ..Request::default()
    };
    if feed.format == super::Format::Crowdsec {
        // A bouncer key goes as it is, and the Local API lists bouncers by
        // their User-Agent.
        let key = match (&feed.api_key_file, &feed.api_key_env) {
            (Some(p), _) => file(name, p)?,
            (None, Some(k)) => env(name, k)?,
            (None, None) => {
                return Err(FetchError::Config(format!(
                    "feed `{name}`: a CrowdSec feed needs api_key_env or api_key_file \
                     (the key `cscli bouncers add xdp-blocklist` printed)"
                )));
            }
        };
        req.headers.push(("X-Api-Key".into(), key));
        req.headers.push((
            "User-Agent".into(),
            Secret::new(super::crowdsec::USER_AGENT),
        ));
        for (k, v) in &feed.headers {
            req.headers.push((k.clone(), indirect(name, v)?));
        }
        return Ok(req);
    }
    let api = match (&feed.api_key_file, &feed.api_key_env, &feed.api_secret_env) {
        (Some(p), _, _) => Some(file(name, p)?),
        (None, Some(k), Some(s)) => {
            let (k, s) = (env(name, k)?, env(name, s)?);
            Some(Secret::new(format!("{}:{}", k.expose(), s.expose())))
        }
        (None, Some(k), None) => Some(env(name, k)?),
        (None, None, Some(_)) => {
            return Err(FetchError::Config(format!(
                "feed `{name}`: api_secret_env needs api_key_env too"
            )));
        }
        (None, None, None) => None,
    };
    if let Some(key) = api {
        let encoded = base64::engine::general_purpose::STANDARD.encode(key.expose());
        req.headers.push(("X-API-KEY".into(), Secret::new(encoded)));
    }
    if let Some(user) = &feed.username {
        let pass = match (&feed.password_env, &feed.password_file) {
            (Some(v), _) => env(name, v)?,
            (None, Some(p)) => file(name, p)?,
            (None, None) => Secret::new(""),
        };
        req.basic = Some((user.clone(), pass));
    }
    for (k, v) in &feed.headers {
        req.headers.push((k.clone(), indirect(name, v)?));
    }
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(extra: &str) -> FeedConfig {
        let text = format!("name = \"f\"\nurl = \"https://x.example/\"\n{extra}");
        let mut f: FeedConfig = toml::from_str(&text).unwrap();
        f.validate("", &Default::default()).unwrap();
        f
    }

    #[test]
    fn api_key_is_base64_of_key_colon_secret() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key");
        std::fs::write(&p, "mykey:mysecret\n").unwrap();
        let r = request(&feed(&format!("api_key_file = \"{}\"", p.display()))).unwrap();
        assert_eq!(r.headers[0].0, "X-API-KEY");
        assert_eq!(r.headers[0].1.expose(), "bXlrZXk6bXlzZWNyZXQ=");
        // Never printed.
        assert!(!format!("{r:?}").contains("bXlrZXk6"));
    }

    #[test]
    fn missing_variables_are_named() {
        let e = request(&feed(
            "username = \"u\"\npassword_env = \"XDPBL_TEST_SURELY_UNSET\"",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("XDPBL_TEST_SURELY_UNSET") && e.contains("`f`"),
            "{e}"
        );
    }

    #[test]
    fn headers_can_come_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tok");
        std::fs::write(&p, "Bearer abc\n").unwrap();
        let r = request(&feed(&format!(
            "headers = {{ Authorization = \"file:{}\" }}",
            p.display()
        )))
        .unwrap();
        assert_eq!(r.headers[0].1.expose(), "Bearer abc");
    }
}
