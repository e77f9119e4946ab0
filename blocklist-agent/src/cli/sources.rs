//! Command-line overrides shared by `run` and `sync`: extra feeds,
//! allow ranges and interfaces on top of the config file.

use blocklist_agent::{
    config::{Config, FeedConfig},
    prefix::Prefix,
};
use clap::Args;

/// `--feed`, `--allow`.
#[derive(Debug, Args, Default)]
pub struct SourceArgs {
    /// A feed URL or file path, in addition to the config's feeds
    /// (repeatable; format detected automatically).
    #[arg(long = "feed", value_name = "URL|PATH")]
    pub feeds: Vec<String>,
    /// A range that is never blocked (repeatable).
    #[arg(long = "allow", value_name = "CIDR")]
    pub allow: Vec<Prefix>,
    /// Accept feed lists the shrink guard would refuse, this once.
    #[arg(long)]
    pub force: bool,
}

/// A stable feed name for a command-line source: its last path segment,
/// reduced to the characters feed names allow.
fn name_for(source: &str, taken: &[String]) -> String {
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

impl SourceArgs {
    /// Adds the command-line feeds and allow ranges to `config`.
    pub fn apply(&self, config: &mut Config) {
        for source in &self.feeds {
            let taken: Vec<String> = config.feeds.iter().map(|f| f.name.clone()).collect();
            config
                .feeds
                .push(FeedConfig::new(name_for(source, &taken), source.clone()));
        }
        config.allow.cidrs.extend(self.allow.iter().copied());
    }
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
