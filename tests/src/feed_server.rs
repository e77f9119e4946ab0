//! A programmable HTTP/1.1 feed server on a real socket, for the feed and
//! sync tests: each path answers from a queue of replies (the last one
//! repeats), with ETag/304 support, error statuses, `Retry-After`, slow
//! and truncated bodies. Every request is logged so tests can check what
//! the agent sent (validators, API keys).

use std::{
    collections::HashMap,
    io::{BufRead as _, BufReader, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::lab::Netns;

/// One scripted reply.
#[derive(Clone, Debug)]
pub enum Reply {
    /// 200 with a body; with an ETag, a matching `If-None-Match` gets 304.
    Body {
        /// The body.
        body: Vec<u8>,
        /// The ETag to send.
        etag: Option<String>,
    },
    /// 200 with a body and `Last-Modified`; a request whose
    /// `If-Modified-Since` equals it gets 304.
    Dated {
        /// The body.
        body: Vec<u8>,
        /// The `Last-Modified` value (an HTTP date).
        last_modified: String,
    },
    /// A bare status (e.g. 500, 404).
    Status(u16),
    /// A status with `Retry-After: secs` (429, 503).
    RetryAfter(u16, u64),
    /// Announces `declared` bytes, sends `body`, closes.
    Truncated {
        /// The bytes actually sent.
        body: Vec<u8>,
        /// The Content-Length announced.
        declared: usize,
    },
    /// Headers at once, then the body one byte every `every` (slow-loris).
    Trickle {
        /// The body.
        body: Vec<u8>,
        /// Delay between bytes.
        every: Duration,
    },
    /// A close-delimited body of `bytes` bytes (no Content-Length), made of
    /// repeated lines, or as many as the client reads before it hangs up.
    Stream {
        /// How much to send at most.
        bytes: u64,
        /// The line repeated.
        line: Vec<u8>,
    },
    /// Waits, then answers like `Body` without ETag.
    Slow {
        /// The body.
        body: Vec<u8>,
        /// The delay before the headers.
        delay: Duration,
    },
}

impl Reply {
    /// A plain body without validators.
    pub fn body(b: impl Into<Vec<u8>>) -> Self {
        Reply::Body {
            body: b.into(),
            etag: None,
        }
    }

    /// A body with an ETag.
    pub fn tagged(b: impl Into<Vec<u8>>, etag: &str) -> Self {
        Reply::Body {
            body: b.into(),
            etag: Some(etag.to_owned()),
        }
    }
}

/// A request as the server saw it.
#[derive(Clone, Debug)]
pub struct Logged {
    /// The path (without query).
    pub path: String,
    /// Lower-cased header names and their values.
    pub headers: HashMap<String, String>,
    /// The status answered.
    pub status: u16,
}

type Routes = Arc<Mutex<HashMap<String, Vec<Reply>>>>;

/// The server; stops on drop.
pub struct FeedServer {
    addr: SocketAddr,
    routes: Routes,
    log: Arc<Mutex<Vec<Logged>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FeedServer {
    /// Starts a server on 127.0.0.1 inside `ns`.
    pub fn start_in(ns: &Netns) -> Self {
        let listener =
            ns.enter(|| TcpListener::bind("127.0.0.1:0").expect("binding the feed server"));
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("address");
        let routes: Routes = Arc::default();
        let log: Arc<Mutex<Vec<Logged>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (routes, log, stop) = (routes.clone(), log.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((s, _)) => {
                            let (routes, log) = (routes.clone(), log.clone());
                            std::thread::spawn(move || serve(s, &routes, &log));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Self {
            addr,
            routes,
            log,
            stop,
            thread: Some(thread),
        }
    }

    /// The URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Replaces the reply queue of `path`.
    pub fn set(&self, path: &str, replies: Vec<Reply>) {
        self.routes.lock().unwrap().insert(path.to_owned(), replies);
    }

    /// Requests seen so far for `path`.
    pub fn requests(&self, path: &str) -> Vec<Logged> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.path == path)
            .cloned()
            .collect()
    }
}

impl Drop for FeedServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(stream: TcpStream, routes: &Routes, log: &Mutex<Vec<Logged>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let target = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let path = target.split('?').next().unwrap_or("/").to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let reply = {
        let mut r = routes.lock().unwrap();
        match r.get_mut(&path) {
            Some(q) if q.len() > 1 => Some(q.remove(0)),
            Some(q) => q.first().cloned(),
            None => None,
        }
    };
    let mut out = stream;
    let status = match reply {
        None => respond(&mut out, 404, &[], b"not found"),
        Some(Reply::Body { body, etag }) => {
            if etag.is_some() && headers.get("if-none-match") == etag.as_ref() {
                respond(&mut out, 304, &[], b"")
            } else {
                let extra: Vec<(&str, String)> = etag.iter().map(|e| ("ETag", e.clone())).collect();
                respond(&mut out, 200, &extra, &body)
            }
        }
        Some(Reply::Dated {
            body,
            last_modified,
        }) => {
            if headers.get("if-modified-since") == Some(&last_modified) {
                respond(&mut out, 304, &[], b"")
            } else {
                respond(&mut out, 200, &[("Last-Modified", last_modified)], &body)
            }
        }
        Some(Reply::Status(code)) => respond(&mut out, code, &[], b"error"),
        Some(Reply::RetryAfter(code, secs)) => respond(
            &mut out,
            code,
            &[("Retry-After", secs.to_string())],
            b"slow down",
        ),
        Some(Reply::Truncated { body, declared }) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {declared}\r\nConnection: close\r\n\r\n"
            );
            let _ = out.write_all(head.as_bytes());
            let _ = out.write_all(&body);
            let _ = out.flush();
            200
        }
        Some(Reply::Trickle { body, every }) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = out.write_all(head.as_bytes());
            for b in body {
                if out.write_all(&[b]).and_then(|_| out.flush()).is_err() {
                    break;
                }
                std::thread::sleep(every);
            }
            200
        }
        Some(Reply::Stream { bytes, line }) => {
            let _ = out.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
            let chunk: Vec<u8> = line.iter().copied().cycle().take(1 << 16).collect();
            let mut sent = 0u64;
            while sent < bytes {
                if out.write_all(&chunk).is_err() {
                    break;
                }
                sent += chunk.len() as u64;
            }
            200
        }
        Some(Reply::Slow { body, delay }) => {
            std::thread::sleep(delay);
            respond(&mut out, 200, &[], &body)
        }
    };
    log.lock().unwrap().push(Logged {
        path,
        headers,
        status,
    });
}

fn respond(out: &mut TcpStream, code: u16, extra: &[(&str, String)], body: &[u8]) -> u16 {
    let reason = match code {
        200 => "OK",
        304 => "Not Modified",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let mut head = format!("HTTP/1.1 {code} {reason}\r\nConnection: close\r\n");
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if code != 304 {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let _ = out.write_all(head.as_bytes());
    let _ = out.write_all(body);
    let _ = out.flush();
    code
}
