//! Command-line sources (`run --feed`, `sync --once --feed`, `--allow`)
//! on top of the configuration file.

use crate::{
    config::{Config, FeedConfig},
    prefix::Prefix,
};

/// A stable feed name for a command-line source: its last path segment,
/// reduced to the characters feed names allow, made unique among `taken`.
pub fn name_for(source: &str, taken: &[String]) -> String {
    let last = source
        .trim_end_matches('/')
        .rsplit(['/', '?'])
        .find(|s| !s.is_empty() && !s.contains('='))
        .unwrap_or("feed");
    let mut base: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    if base.is_empty() {
        base = "feed".into();
    }
    let mut name = base.clone();
    let mut n = 2;
    while taken.contains(&name) {
        name = format!("{base}-{n}");
        n += 1;
    }
    name
}

/// Adds the command-line feeds (named by [`name_for`], every option at its
/// default) and allow ranges to `config`.
///
/// ```
/// use blocklist_agent::{agent::sources, config::Config};
/// let mut c = Config::default();
/// sources::apply(&mut c, &["https://feeds.example/drop.txt".into()], &[]);
/// assert_eq!(c.feeds[0].name, "drop.txt");
/// ```
pub fn apply(config: &mut Config, feeds: &[String], allow: &[Prefix]) {
    for source in feeds {
        let taken = config.feed_names();
        config
            .feeds
            .push(FeedConfig::new(name_for(source, &taken), source.clone()));
    }
    config.allow.cidrs.extend(allow.iter().copied());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_and_unique() {
        assert_eq!(name_for("http://127.0.0.1:8080/drop.txt", &[]), "drop.txt");
        assert_eq!(name_for("/var/lib/feeds/list.netset", &[]), "list.netset");
        assert_eq!(name_for("/a/list.txt", &["list.txt".into()]), "list.txt-2");
        assert_eq!(name_for("https://x.example/api/v1/?key=1", &[]), "v1");
    }
}
