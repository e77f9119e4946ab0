//! The TAXII 2.1 reference server, medallion (PyPI), started on a loopback
//! port inside a test namespace with a generated config: one API root
//! (`api1`) with one collection, HTTP Basic auth, small pages so paging is
//! exercised. Objects are added (and new versions posted) through its real
//! API between polls.

use std::{
    net::TcpStream,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::lab::Netns;

/// The collection id served.
pub const COLLECTION: &str = "91a7b528-80eb-42ed-a74d-c6fbd5a26116";
/// Basic-auth user.
pub const USER: &str = "reader";
/// Basic-auth password.
pub const PASSWORD: &str = "taxii-test-password";
/// Objects per page (medallion's `max_page_size`).
pub const PAGE: usize = 2;

/// A running medallion; killed on drop.
pub struct TaxiiServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    netns: String,
}

impl TaxiiServer {
    /// Starts medallion in `ns` and waits until it accepts connections.
    pub fn start_in(ns: &Netns) -> Self {
        let port = ns.free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        let base = format!("http://127.0.0.1:{port}");
        let data = json!({
            "/discovery": {
                "title": "xdp-blocklist test TAXII server",
                "description": "medallion for the integration tests",
                "default": format!("{base}/api1/"),
                "api_roots": [format!("{base}/api1/")]
            },
            "api1": {
                "information": {
                    "title": "test API root",
                    "versions": ["application/taxii+json;version=2.1"],
                    "max_content_length": 10_000_000
                },
                "status": [],
                "collections": [{
                    "id": COLLECTION,
                    "title": "Blocklist indicators",
                    "can_read": true,
                    "can_write": true,
                    "media_types": ["application/stix+json;version=2.1"],
                    "objects": [],
                    "manifest": []
                }]
            }
        });
        let data_path = dir.path().join("data.json");
        std::fs::write(&data_path, data.to_string()).expect("writing medallion data");
        let config = json!({
            "backend": {
                "module": "medallion.backends.memory_backend",
                "module_class": "MemoryBackend",
                "filename": data_path,
            },
            "users": { USER: PASSWORD },
            "taxii": { "max_page_size": PAGE }
        });
        let config_path = dir.path().join("config.json");
        std::fs::write(&config_path, config.to_string()).expect("writing medallion config");
        let log = std::fs::File::create(dir.path().join("medallion.log")).expect("log file");
        let python = crate::venv_python();
        let child = Command::new("ip")
            .args(["netns", "exec", ns.name()])
            .arg(&python)
            .args(["-m", "medallion.scripts.run"])
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "starting medallion with {} ({e}); `cargo xtask setup` installs it",
                    python.display()
                )
            });
        let server = Self {
            child,
            port,
            dir,
            netns: ns.name().to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if ns.enter(|| TcpStream::connect(("127.0.0.1", port)).is_ok()) {
                return server;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("medallion did not start: {}", server.log());
    }

    /// The discovery URL.
    pub fn discovery_url(&self) -> String {
        format!("http://127.0.0.1:{}/taxii2/", self.port)
    }

    /// The collection URL.
    pub fn collection_url(&self) -> String {
        format!(
            "http://127.0.0.1:{}/api1/collections/{COLLECTION}/",
            self.port
        )
    }

    /// medallion's own log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("medallion.log")).unwrap_or_default()
    }

    /// POSTs STIX objects to the collection (as a TAXII envelope).
    pub fn add(&self, ns: &Netns, objects: Vec<Value>) {
        assert_eq!(ns.name(), self.netns, "post from the server's namespace");
        let url = format!("{}objects/", self.collection_url());
        let body = json!({ "objects": objects }).to_string();
        let status = ns.enter(move || {
            let client = reqwest::blocking::Client::new();
            client
                .post(&url)
                .basic_auth(USER, Some(PASSWORD))
                .header("Accept", "application/taxii+json;version=2.1")
                .header("Content-Type", "application/taxii+json;version=2.1")
                .body(body)
                .send()
                .map(|r| r.status().as_u16())
        });
        match status {
            Ok(s) if (200..300).contains(&s) => {}
            other => panic!(
                "posting objects to medallion failed: {other:?}\n{}",
                self.log()
            ),
        }
        // Objects added in the same second share a date_added; a later post
        // must land in a later second so `added_after` separates them.
        std::thread::sleep(Duration::from_millis(1100));
    }
}

impl Drop for TaxiiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A STIX 2.1 indicator for one address or CIDR.
pub fn indicator(id: &str, modified: &str, pattern: &str, extra: Value) -> Value {
    let mut v = json!({
        "type": "indicator",
        "spec_version": "2.1",
        "id": format!("indicator--{id}"),
        "created": "2026-01-01T00:00:00.000Z",
        "modified": modified,
        "name": "test indicator",
        "pattern": pattern,
        "pattern_type": "stix",
        "valid_from": "2026-01-01T00:00:00Z"
    });
    if let (Some(obj), Some(more)) = (v.as_object_mut(), extra.as_object()) {
        for (k, val) in more {
            obj.insert(k.clone(), val.clone());
        }
    }
    v
}
