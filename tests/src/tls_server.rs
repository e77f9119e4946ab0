//! An HTTPS feed server (Python's `http.server` behind TLS, in a
//! namespace) with a certificate the harness makes: either signed by a
//! test CA of its own (whose certificate a test gives the agent as
//! `[fetch] ca_file`) or self-signed and trusted by nobody.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{lab::Netns, venv_python};

/// Who vouches for the server's certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trust {
    /// Signed by the harness's CA ([`TlsServer::ca_file`]).
    TestCa,
    /// Self-signed: no client trusts it.
    Nobody,
}

/// The server; killed on drop. It serves the files of its directory.
pub struct TlsServer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl (cargo xtask setup installs it)");
    assert!(
        out.status.success(),
        "openssl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TlsServer {
    /// Starts a server on 127.0.0.1 inside `ns`, serving `dir` (where its
    /// keys are written too).
    pub fn start(ns: &Netns, dir: &Path, trust: Trust) -> Self {
        std::fs::create_dir_all(dir).expect("creating the TLS server's directory");
        let days = ["-days", "2"];
        match trust {
            Trust::Nobody => openssl(
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    days[0],
                    days[1],
                    "-subj",
                    "/CN=127.0.0.1",
                    "-addext",
                    "subjectAltName=IP:127.0.0.1",
                    "-keyout",
                    "key.pem",
                    "-out",
                    "cert.pem",
                ],
                dir,
            ),
            Trust::TestCa => {
                openssl(
                    &[
                        "req",
                        "-x509",
                        "-newkey",
                        "rsa:2048",
                        "-nodes",
                        days[0],
                        days[1],
                        "-subj",
                        "/CN=xdp-blocklist test CA",
                        "-addext",
                        "basicConstraints=critical,CA:TRUE",
                        "-addext",
                        "keyUsage=critical,keyCertSign,cRLSign",
                        "-keyout",
                        "ca.key",
                        "-out",
                        "ca.pem",
                    ],
                    dir,
                );
                openssl(
                    &[
                        "req",
                        "-newkey",
                        "rsa:2048",
                        "-nodes",
                        "-subj",
                        "/CN=127.0.0.1",
                        "-keyout",
                        "key.pem",
                        "-out",
                        "server.csr",
                    ],
                    dir,
                );
                std::fs::write(
                    dir.join("ext.cnf"),
                    "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
                )
                .expect("writing ext.cnf");
                openssl(
                    &[
                        "x509",
                        "-req",
                        "-in",
                        "server.csr",
                        "-CA",
                        "ca.pem",
                        "-CAkey",
                        "ca.key",
                        "-CAcreateserial",
                        days[0],
                        days[1],
                        "-extfile",
                        "ext.cnf",
                        "-out",
                        "cert.pem",
                    ],
                    dir,
                );
            }
        }
        let port = ns.free_port();
        let script = format!(
            "import functools, http.server, ssl\n\
             h = functools.partial(http.server.SimpleHTTPRequestHandler, directory='{d}')\n\
             s = http.server.HTTPServer(('127.0.0.1', {port}), h)\n\
             c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); c.load_cert_chain('{d}/cert.pem', '{d}/key.pem')\n\
             s.socket = c.wrap_socket(s.socket, server_side=True)\n\
             s.serve_forever()\n",
            d = dir.display()
        );
        let child = Command::new("ip")
            .args(["netns", "exec", ns.name()])
            .arg(venv_python())
            .args(["-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the TLS test server");
        let mut server = Self {
            child,
            port,
            dir: dir.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ns.enter(|| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()) {
            if let Some(status) = server.child.try_wait().expect("polling the TLS server") {
                panic!("the TLS test server exited before listening: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "the TLS test server did not listen on 127.0.0.1:{port} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// The URL of `file` in the served directory.
    pub fn url(&self, file: &str) -> String {
        format!("https://127.0.0.1:{}/{file}", self.port)
    }

    /// The test CA's certificate (with [`Trust::TestCa`]).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
