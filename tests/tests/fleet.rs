//! Serving the vetted list onward: `[export] listen` serves the installed
//! entries as plain text with an ETag, and a second agent syncs from it
//! (one agent feeding a fleet).

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use blocklist_tests::{
    agent::Agent,
    bpffs::Bpffs,
    lab::{Lab, Netns, addr::*},
    require_root,
};

fn get(ns: &Netns, url: String, etag: Option<String>) -> (u16, Option<String>, String) {
    ns.enter(move || {
        let mut rb = reqwest::blocking::Client::new().get(&url);
        if let Some(e) = etag {
            rb = rb.header("If-None-Match", e);
        }
        let r = rb.send().expect("GET");
        let tag = r
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        (r.status().as_u16(), tag, r.text().unwrap_or_default())
    })
}

#[test]
fn one_agent_feeds_another_through_the_export_endpoint() {
    require_root();
    let lab = Lab::new();
    let fs = Bpffs::new();
    let dir = tempfile::tempdir().unwrap();
    let port = lab.filter.free_port();
    let feed = dir.path().join("upstream.txt");
    // 0.0.0.0/0 is refused, the filter's own address is protected, and an
    // allow range inside a listed /25 is cut out of it: the exported list
    // is what the central agent drops, not the raw feed.
    std::fs::write(
        &feed,
        format!(
            "{CLIENT4}\n192.0.2.0/24\n192.0.2.128/25\n198.51.100.0/25\n198.51.100.128/25\n\
             0.0.0.0/0\n{FILTER4}\n2001:db8:bad::/48\n2001:db8:bad:1::/64\n"
        ),
    )
    .unwrap();
    let config = dir.path().join("central.toml");
    std::fs::write(
        &config,
        format!(
            "interfaces = [\"{}\"]\n[[feed]]\nname = \"upstream\"\nallow_reserved = true\nurl = \"{}\"\n[metrics]\nlisten = \"off\"\n\
             [events]\noutput = \"off\"\n[export]\nlisten = \"127.0.0.1:{port}\"\n\
             [allow]\ncidrs = [\"198.51.100.7/32\"]\n",
            lab.filter_if,
            feed.display()
        ),
    )
    .unwrap();
    let central = Agent::new(
        lab.filter.name(),
        fs.pin_dir(),
        dir.path().join("central-state"),
    )
    .with_config(config);
    let mut child = central
        .command(&["run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let deadline = Instant::now() + Duration::from_secs(15);
    let (v4, etag) = loop {
        if let Ok((200, Some(tag), body)) =
            std::panic::catch_unwind(|| get(&lab.filter, url("/v4.txt"), None))
            && !body.is_empty()
        {
            break (body, tag);
        }
        assert!(
            Instant::now() < deadline,
            "the export endpoint never served a list"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // 198.51.100.0/25 without .7.
    let split = "198.51.100.0/30\n198.51.100.4/31\n198.51.100.6/32\n198.51.100.8/29\n\
                 198.51.100.16/28\n198.51.100.32/27\n198.51.100.64/26\n";
    assert_eq!(
        v4,
        format!("{CLIENT4}/32\n192.0.2.0/24\n192.0.2.128/25\n{split}198.51.100.128/25\n")
    );
    let (_, _, v6) = get(&lab.filter, url("/v6.txt"), None);
    assert_eq!(v6, "2001:db8:bad::/48\n2001:db8:bad:1::/64\n");
    let (_, _, all) = get(&lab.filter, url("/all.txt"), None);
    assert_eq!(all, format!("{v4}{v6}"));
    // Aggregated: covered and adjacent entries merged; hosts: bare
    // single addresses only.
    let (_, _, agg4) = get(&lab.filter, url("/v4-aggregated.txt"), None);
    assert_eq!(
        agg4,
        format!("{CLIENT4}/32\n192.0.2.0/24\n{split}198.51.100.128/25\n")
    );
    let (_, _, agg6) = get(&lab.filter, url("/v6-aggregated.txt"), None);
    assert_eq!(agg6, "2001:db8:bad::/48\n");
    let (_, _, hosts) = get(&lab.filter, url("/v4-hosts.txt"), None);
    assert_eq!(hosts, format!("{CLIENT4}\n"));
    // Unchanged: a 304 for the same ETag.
    let (code, _, body) = get(&lab.filter, url("/v4.txt"), Some(etag));
    assert_eq!(code, 304);
    assert!(body.is_empty());

    // A second agent of the fleet syncs from the first. Its ad-hoc
    // `--feed`s take the global guard: the lab's client is in 10.0.0.0/8.
    let fs2 = Bpffs::new();
    let edge_config = dir.path().join("edge.toml");
    std::fs::write(&edge_config, "[guard]\nallow_reserved = true\n").unwrap();
    let edge = Agent::new(
        lab.filter.name(),
        fs2.pin_dir(),
        dir.path().join("edge-state"),
    )
    .with_config(edge_config);
    let r = edge
        .run(&[
            "sync",
            "--once",
            "--json",
            "--feed",
            &url("/v4.txt"),
            "--feed",
            &url("/v6.txt"),
        ])
        .json();
    assert_eq!(r["v4"]["added"], 11, "{r}");
    assert_eq!(r["v6"]["added"], 2, "{r}");
    let c = edge.run(&["check", CLIENT4, "--json"]).json();
    assert_eq!(c["blocked"], true);
    assert_eq!(c["block"]["feeds"][0]["feed"], "v4.txt");
    // The edge blocks the rest of the /25 but not what the central allows.
    let c = edge.run(&["check", "198.51.100.6", "--json"]).json();
    assert_eq!(c["blocked"], true, "{c}");
    let c = edge.run(&["check", "198.51.100.7", "--json"]).json();
    assert_eq!(c["blocked"], false, "{c}");

    let _ = child.kill();
    let _ = child.wait();
    let _ = central.try_run(&["detach", "--iface", &lab.filter_if]);
}
