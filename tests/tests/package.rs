//! The Debian package installs and works: `blocklist-agent --version`,
//! `man blocklist-agent`, the unit, the example config and completions.
//! `cargo xtask test` builds the package first and passes its path in
//! `XDPBL_DEB`; the package is purged again at the end, also on failure.

use std::{path::PathBuf, process::Command};

use blocklist_tests::{require_root, sh};

fn deb() -> PathBuf {
    if let Some(p) = std::env::var_os("XDPBL_DEB") {
        return p.into();
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debian");
    std::fs::read_dir(&dir)
        .ok()
        .and_then(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "deb"))
                .max()
        })
        .unwrap_or_else(|| {
            panic!(
                "no package in {}: run `cargo xtask package` (cargo xtask test does)",
                dir.display()
            )
        })
}

struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg")
            .args(["--purge", "xdp-blocklist"])
            .output();
    }
}

#[test]
fn the_debian_package_installs_and_works() {
    require_root();
    let deb = deb();
    let out = Command::new("dpkg")
        .arg("-i")
        .arg(&deb)
        .output()
        .expect("dpkg");
    let _installed = Installed;
    assert!(
        out.status.success(),
        "dpkg -i failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (ok, version) = sh("/usr/bin/blocklist-agent --version");
    assert!(ok, "{version}");
    assert!(version.starts_with("blocklist-agent "), "{version}");
    let (ok, page) = sh("MANPAGER=cat MANWIDTH=80 man blocklist-agent");
    assert!(ok, "man failed: {page}");
    assert!(
        page.contains("blocklist-agent") && page.contains("sync"),
        "{page}"
    );
    for path in [
        "/lib/systemd/system/xdp-blocklist.service",
        "/etc/xdp-blocklist/config.toml",
        "/usr/share/bash-completion/completions/blocklist-agent",
        "/usr/share/zsh/vendor-completions/_blocklist-agent",
        "/usr/share/fish/vendor_completions.d/blocklist-agent.fish",
        "/etc/fail2ban/action.d/xdp-blocklist.conf",
    ] {
        assert!(std::path::Path::new(path).exists(), "{path} missing");
    }
    // The installed unit verifies against the installed binary and man page.
    let (ok, msg) = sh("systemd-analyze verify /lib/systemd/system/xdp-blocklist.service");
    assert!(ok, "{msg}");
    // The shipped config passes the agent's own check once its credentials exist.
    let (ok, msg) = sh(
        "ISMALICIOUS_API_KEY=k ISMALICIOUS_API_SECRET=s PARTNER_TAXII_PASSWORD=p \
         /usr/bin/blocklist-agent --config /etc/xdp-blocklist/config.toml run --check-config",
    );
    assert!(ok, "{msg}");
    // The config is a conffile: kept on remove, gone on purge.
    let (ok, conffiles) = sh("dpkg-query --control-show xdp-blocklist conffiles");
    assert!(
        ok && conffiles.contains("/etc/xdp-blocklist/config.toml")
            && conffiles.contains("/etc/fail2ban/action.d/xdp-blocklist.conf"),
        "{conffiles}"
    );
}
