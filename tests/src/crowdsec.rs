//! A private CrowdSec Local API for a test: Debian's `crowdsec` (installed
//! by `cargo xtask setup`) run with `-no-cs` (the API alone, no log
//! processing) inside a namespace, on 127.0.0.1, with its own config,
//! data directory and SQLite database in a temporary directory. Decisions
//! are added and deleted with the real `cscli`.

use std::{
    net::TcpStream,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::lab::Netns;

/// A running Local API and the bouncer key made for the test.
pub struct Lapi {
    child: Option<Child>,
    dir: tempfile::TempDir,
    netns: String,
    port: u16,
    key: String,
    /// A second bouncer's key for the test's own reads: the Local API
    /// remembers each bouncer's last poll, and a read with the agent's key
    /// would take deltas away from it.
    reader: String,
}

impl Lapi {
    /// Writes the config, registers a machine (for `cscli decisions`) and
    /// a bouncer, and starts the Local API in `ns`.
    pub fn start_in(ns: &Netns) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = ns.free_port();
        let d = dir.path();
        std::fs::create_dir_all(d.join("data")).unwrap();
        std::fs::create_dir_all(d.join("cfg")).unwrap();
        std::fs::write(d.join("acquis.yaml"), "").unwrap();
        // Quoted addresses: an unquoted `::1` is a YAML error.
        let config = format!(
            "common:\n  daemonize: false\n  log_media: file\n  log_dir: {d}\n  log_level: info\n\
             config_paths:\n  config_dir: {d}/cfg\n  data_dir: {d}/data\n  \
             hub_dir: /var/lib/crowdsec/hub/\n  index_path: /var/lib/crowdsec/hub/.index.json\n\
             crowdsec_service:\n  acquisition_path: {d}/acquis.yaml\n\
             db_config:\n  type: sqlite\n  db_path: {d}/data/crowdsec.db\n  use_wal: true\n\
             api:\n  client:\n    credentials_path: {d}/creds.yaml\n  server:\n    \
             listen_uri: 127.0.0.1:{port}\n    profiles_path: /etc/crowdsec/profiles.yaml\n    \
             trusted_ips:\n      - \"127.0.0.1\"\n      - \"::1\"\n",
            d = d.display()
        );
        std::fs::write(d.join("config.yaml"), config).unwrap();
        let mut lapi = Self {
            child: None,
            dir,
            netns: ns.name().to_owned(),
            port,
            key: String::new(),
            reader: String::new(),
        };
        // Both write the SQLite file directly: before the API starts.
        let creds = lapi.dir.path().join("creds.yaml");
        lapi.cscli(&[
            "machines",
            "add",
            "xdpbl-test",
            "--password",
            "xdpbl-test-password",
            "-f",
            creds.to_str().unwrap(),
            "--url",
            &lapi.url(),
        ]);
        lapi.key = lapi
            .cscli(&["bouncers", "add", "xdp-blocklist-test", "-o", "raw"])
            .trim()
            .to_owned();
        lapi.reader = lapi
            .cscli(&["bouncers", "add", "xdp-blocklist-test-reader", "-o", "raw"])
            .trim()
            .to_owned();
        assert!(!lapi.key.is_empty(), "cscli bouncers add printed no key");
        lapi.resume();
        lapi
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    /// `http://127.0.0.1:PORT/`, as the agent's feed `url`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// The bouncer key `cscli bouncers add` printed.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The Local API's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("crowdsec.log")).unwrap_or_default()
    }

    /// Runs `cscli -c CONFIG args` in the namespace; returns its stdout.
    pub fn cscli(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.netns, "cscli", "-c"])
            .arg(self.config())
            .args(args)
            .output()
            .unwrap_or_else(|e| {
                panic!("running cscli ({e}); `cargo xtask setup` installs crowdsec")
            });
        assert!(
            out.status.success(),
            "cscli {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `cscli decisions add` for an address (`--ip`) or a CIDR (`--range`)
    /// with a duration and a type (`ban`, `captcha`...).
    pub fn add(&self, value: &str, duration: &str, kind: &str) {
        let flag = if value.contains('/') {
            "--range"
        } else {
            "--ip"
        };
        self.cscli(&[
            "decisions",
            "add",
            flag,
            value,
            "--duration",
            duration,
            "--type",
            kind,
            "--reason",
            "xdp-blocklist test",
        ]);
    }

    /// Ids of the decisions on `value` (newest first), read from the
    /// Local API itself (not deduplicated, unlike `cscli decisions list`).
    pub fn ids(&self, value: &str) -> Vec<i64> {
        let url = format!(
            "http://127.0.0.1:{}/v1/decisions/stream?startup=true&dedup=false&scopes=ip,range",
            self.port
        );
        let key = self.reader.clone();
        let text = self.enter(move || {
            reqwest::blocking::Client::new()
                .get(&url)
                .header("X-Api-Key", key)
                .send()
                .and_then(|r| r.text())
                .expect("reading the decision stream")
        });
        let body: serde_json::Value = serde_json::from_str(&text).expect("the stream is JSON");
        let mut ids: Vec<i64> = body["new"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["value"] == value)
            .filter_map(|d| d["id"].as_i64())
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids
    }

    /// `cscli decisions delete --id`.
    pub fn delete_id(&self, id: i64) {
        self.cscli(&["decisions", "delete", "--id", &id.to_string()]);
    }

    fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        crate::lab::enter(&self.netns, f)
    }

    fn up(&self) -> bool {
        let port = self.port;
        self.enter(move || TcpStream::connect(("127.0.0.1", port)).is_ok())
    }

    /// Stops the Local API (the agent must keep what it installed).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.up() {
            assert!(Instant::now() < deadline, "the Local API did not stop");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts (again) the Local API and waits until it accepts connections.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let stdout = std::fs::File::create(self.dir.path().join("stdout.log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.netns, "crowdsec", "-c"])
            .arg(self.config())
            .arg("-no-cs")
            .stdout(Stdio::null())
            .stderr(stdout)
            .spawn()
            .unwrap_or_else(|e| panic!("starting crowdsec ({e}); `cargo xtask setup` installs it"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.up() {
            assert!(
                Instant::now() < deadline,
                "the Local API did not start within 30 s: {}\n{}",
                std::fs::read_to_string(self.dir.path().join("stdout.log")).unwrap_or_default(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Lapi {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
