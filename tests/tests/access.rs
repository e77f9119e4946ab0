//! Least privilege: with `[access] group`, a non-root member of the group
//! runs `status`, `top`, `check` and `list` (pinned maps opened read-only,
//! state readable); a non-member is refused with a clear error; and the
//! agent refuses to start from a world-writable config or state directory.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::Path,
    process::{Command, Output},
};

use blocklist_tests::{
    agent::{Agent, binary},
    bpffs::Bpffs,
    lab::{Lab, addr::*},
    require_root,
    traffic::udp,
};

/// A gid no account uses; the test never touches /etc/group.
const GROUP: u32 = 64_999;
const NOBODY: &str = "65534";

fn open_up(path: &Path) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn as_user(ns: &str, groups: Option<u32>, dirs: (&Path, &Path, &Path), args: &[&str]) -> Output {
    let (pin, state, config) = dirs;
    let mut c = Command::new("ip");
    c.args([
        "netns", "exec", ns, "setpriv", "--reuid", NOBODY, "--regid", NOBODY,
    ]);
    match groups {
        Some(g) => c.arg(format!("--groups={g}")),
        None => c.arg("--clear-groups"),
    };
    c.arg(binary())
        .arg("--pin-dir")
        .arg(pin)
        .arg("--state-dir")
        .arg(state)
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_group_member_inspects_without_root_and_others_are_refused() {
    require_root();
    let lab = Lab::new();
    let fs = Bpffs::new();
    let dir = tempfile::tempdir().unwrap();
    // The test's own directories must be traversable by the user.
    open_up(dir.path());
    open_up(fs.path());
    let feed = dir.path().join("feed.txt");
    std::fs::write(&feed, format!("{CLIENT4}\n192.0.2.0/24\n")).unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[[feed]]\nname = \"f\"\nallow_reserved = true\nurl = \"{}\"\n[access]\ngroup = \"{GROUP}\"\n",
            feed.display()
        ),
    )
    .unwrap();
    let state = dir.path().join("state");
    let agent =
        Agent::new(lab.filter.name(), fs.pin_dir(), state.clone()).with_config(config.clone());
    agent.run(&["attach", "--iface", &lab.filter_if]);
    agent.run(&["sync", "--once"]);
    assert_eq!(udp(&lab.client, CLIENT4, &lab.filter, FILTER4, 7, 16), 0);

    // Nothing the agent wrote is world-readable or world-writable.
    for path in [
        fs.pin_dir(),
        fs.pin_dir().join("BLOCK_V4"),
        state.clone(),
        state.join("feeds/f.list"),
    ] {
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o007, 0, "{} has mode {mode:o}", path.display());
    }

    let ns = lab.filter.name();
    let pin = fs.pin_dir();
    let dirs = (pin.as_path(), state.as_path(), config.as_path());
    for args in [
        &["status", "--json"][..],
        &["check", CLIENT4, "--json"],
        &["top", "--json"],
        &["list", "--json"],
    ] {
        let out = as_user(ns, Some(GROUP), dirs, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{args:?} as a group member failed: {stderr}"
        );
    }
    let out = as_user(ns, Some(GROUP), dirs, &["check", CLIENT4, "--json"]);
    let check: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(check["blocked"], true);
    assert_eq!(check["block"]["packets"], 7);
    assert_eq!(check["block"]["feeds"][0]["feed"], "f");
    let out = as_user(ns, Some(GROUP), dirs, &["top", "--json"]);
    let top: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(top[0]["ip"], CLIENT4);

    // Read-only really is read-only: a member cannot change the lists.
    let out = as_user(ns, Some(GROUP), dirs, &["block", "203.0.113.1"]);
    assert_eq!(out.status.code(), Some(1));

    // Outside the group: a clear error, nothing read.
    let out = as_user(ns, None, dirs, &["status"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("permission denied") || stderr.contains("Permission denied"),
        "{stderr}"
    );

    let _ = agent.try_run(&["detach", "--iface", &lab.filter_if]);
}

#[test]
fn the_agent_refuses_a_world_writable_config_or_state_directory() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "sync_interval = \"1h\"\n").unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o666)).unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let run = |args: &[&str]| {
        Command::new(binary())
            .arg("--config")
            .arg(&config)
            .arg("--state-dir")
            .arg(&state)
            .args(["--pin-dir", "/nonexistent"])
            .args(args)
            .output()
            .unwrap()
    };
    for args in [
        &["run", "--check-config"][..],
        &["sync", "--once", "--dry-run"],
    ] {
        let out = run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("world-writable") && stderr.contains("config file"),
            "{stderr}"
        );
    }
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = run(&["run", "--check-config"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("world-writable") && stderr.contains("state directory"),
        "{stderr}"
    );
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o750)).unwrap();
    let out = run(&["run", "--check-config"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
