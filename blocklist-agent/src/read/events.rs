//! Drop events for a SIEM: records from the kernel's `EVENTS` ring buffer
//! (sampled per address in the kernel, at most one per address per
//! interval) written as JSON lines to stdout, a file (reopened on SIGHUP
//! for logrotate) or syslog (RFC 5424 over `/dev/log`).
//!
//! One line:
//! ```json
//! {"timestamp":"2026-11-27T15:00:00.123Z","interface":"eth0","direction":"src",
//!  "src":"192.0.2.7","dst":"10.0.0.1","protocol":"udp","src_port":40000,"dst_port":53,
//!  "prefix":"192.0.2.0/24","feeds":["spamhaus-drop"],"action":"drop","bytes":60}
//! ```
//! Events the ring buffer had no room for are counted by the kernel
//! (`events_lost`, exported as `xdp_blocklist_drop_events_total{outcome="lost"}`),
//! and so are those over a CPU's budget of 1,024 a second
//! (`events_suppressed`, `{outcome="suppressed"}`), which the kernel checks
//! before anything else so that a flood from many addresses stays cheap.

use std::{
    ffi::CStr,
    fs::{File, OpenOptions},
    io::Write as _,
    net::IpAddr,
    os::unix::net::UnixDatagram,
    path::PathBuf,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use aya::maps::{Map, MapData, RingBuf};
use blocklist_ebpf::{
    ACTION_MONITOR, DIRECTION_DST, DIRECTION_EGRESS, DROP_EVENT_V1_BYTES, DropEvent, FAMILY_V4,
    HOOK_CGROUP, HOOK_NAMES, map_names,
};
use serde::Serialize;

use crate::{
    datapath::pin::PinDir, prefix::Prefix, read::counters::ktime_to_system,
    read::listing::FeedIndex,
};

/// Where events go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Standard output.
    Stdout,
    /// A file, appended to and reopened on SIGHUP.
    File(PathBuf),
    /// A local syslog socket (`/dev/log` unless `[events] syslog_socket`
    /// says otherwise), RFC 5424.
    Syslog(PathBuf),
    /// Nowhere (and the kernel stops producing them).
    Off,
}

impl Output {
    /// `stdout`, `syslog` (to `syslog_socket`), `off`, or a path.
    pub fn parse(s: &str, syslog_socket: &std::path::Path) -> Self {
        match s {
            "stdout" | "" => Output::Stdout,
            "syslog" => Output::Syslog(syslog_socket.to_owned()),
            "off" => Output::Off,
            path => Output::File(PathBuf::from(path)),
        }
    }
}

fn address(bytes: &[u8; 16], family: u8) -> IpAddr {
    if family == FAMILY_V4 {
        IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]])
    } else {
        IpAddr::from(*bytes)
    }
}

/// A protocol by name where it has a common one, else its number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Protocol {
    /// `icmp`, `tcp`, `udp`, `icmpv6`, `sctp`.
    Named(&'static str),
    /// Any other IP protocol number.
    Number(u8),
}

fn protocol(p: u8) -> Protocol {
    match p {
        1 => Protocol::Named("icmp"),
        6 => Protocol::Named("tcp"),
        17 => Protocol::Named("udp"),
        58 => Protocol::Named("icmpv6"),
        132 => Protocol::Named("sctp"),
        n => Protocol::Number(n),
    }
}

/// One drop event as a SIEM reads it (one JSON line).
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    /// When the kernel recorded it, RFC 3339 to the millisecond.
    #[serde(serialize_with = "millis")]
    pub timestamp: Option<SystemTime>,
    /// The interface, `null` for a cgroup hook (a call, not a frame).
    pub interface: Option<String>,
    /// `src`, `dst` or `egress`: which way the matched address faced.
    pub direction: &'static str,
    /// `xdp`, `tc_ingress`, `tc_egress` or `cgroup`.
    pub hook: &'static str,
    /// The source, `null` for a cgroup hook (not chosen yet).
    pub src: Option<IpAddr>,
    /// The destination.
    pub dst: IpAddr,
    /// The IP protocol.
    pub protocol: Protocol,
    /// TCP and UDP only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_port: Option<u16>,
    /// TCP and UDP only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_port: Option<u16>,
    /// The entry that matched.
    pub prefix: Option<Prefix>,
    /// Feeds listing it.
    pub feeds: Vec<String>,
    /// `drop` or `monitor`.
    pub action: &'static str,
    /// Frame length, `null` for a cgroup hook.
    pub bytes: Option<u32>,
    /// The calling process (cgroup hooks only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Its command name (cgroup hooks only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    /// Its cgroup (cgroup hooks only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_id: Option<u64>,
}

fn millis<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.collect_str(&humantime::format_rfc3339_millis(*t)),
        None => s.serialize_none(),
    }
}

fn ifname(ifindex: u32) -> String {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return format!("if{ifindex}");
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// The record of one event, with the feeds listing its entry.
pub fn event(e: &DropEvent, index: &FeedIndex) -> Event {
    let src = address(&e.src, e.family);
    let dst = address(&e.dst, e.family);
    // `address` says which address matched; records from before the
    // egress hooks leave it 0 and say it with `direction`.
    let matched = if e.address != 0 {
        e.address
    } else {
        e.direction
    };
    let hit = if matched == DIRECTION_DST { dst } else { src };
    let hit = crate::prefix::canonical_addr(hit);
    let max = if hit.is_ipv4() { 32 } else { 128 };
    let prefix = ipnet::IpNet::new(hit, (e.prefix_len as u8).min(max))
        .ok()
        .map(Prefix::new);
    let feeds: Vec<String> = prefix
        .map(|p| index.feeds_of(&p).into_iter().map(|l| l.feed).collect())
        .unwrap_or_default();
    let ports = matches!(e.protocol, 6 | 17);
    // The cgroup hooks see a call, not a frame: no interface, no source
    // address chosen yet, but the process is known.
    let call = e.hook == HOOK_CGROUP;
    let end = e.comm.iter().position(|b| *b == 0).unwrap_or(e.comm.len());
    Event {
        timestamp: ktime_to_system(e.ktime_ns),
        interface: (!call).then(|| ifname(e.ifindex)),
        direction: match e.direction {
            DIRECTION_EGRESS => "egress",
            DIRECTION_DST => "dst",
            _ => "src",
        },
        hook: HOOK_NAMES.get(e.hook as usize).copied().unwrap_or("xdp"),
        src: (!call).then_some(src),
        dst,
        protocol: protocol(e.protocol),
        src_port: ports.then_some(e.src_port),
        dst_port: ports.then_some(e.dst_port),
        prefix,
        feeds,
        action: if e.action as u32 == ACTION_MONITOR {
            "monitor"
        } else {
            "drop"
        },
        bytes: (!call).then_some(e.bytes),
        pid: call.then_some(e.pid),
        comm: call.then(|| String::from_utf8_lossy(&e.comm[..end]).into_owned()),
        cgroup_id: call.then_some(e.cgroup_id),
    }
}

/// The JSON line of one event ([`event`]).
pub fn to_json(e: &DropEvent, index: &FeedIndex) -> serde_json::Value {
    serde_json::to_value(event(e, index)).unwrap_or_default()
}

/// A ring record as a [`DropEvent`]: records shorter than the current
/// layout (written by an older program, [`DROP_EVENT_V1_BYTES`]) are
/// zero-filled; shorter ones than that are not events.
pub fn decode(item: &[u8]) -> Option<DropEvent> {
    if item.len() < DROP_EVENT_V1_BYTES {
        return None;
    }
    let mut e = DropEvent::default();
    let n = item.len().min(size_of::<DropEvent>());
    // SAFETY: DropEvent is plain old data (any bytes are a valid value),
    // and at most its size is copied into it.
    unsafe {
        std::ptr::copy_nonoverlapping(item.as_ptr(), (&raw mut e).cast::<u8>(), n);
    }
    Some(e)
}

/// Writes lines to the configured output.
pub struct Sink {
    output: Output,
    file: Option<File>,
    syslog: Option<UnixDatagram>,
    hostname: String,
}

impl Sink {
    /// Opens the output.
    pub fn open(output: Output) -> anyhow::Result<Self> {
        let mut s = Sink {
            output,
            file: None,
            syslog: None,
            hostname: nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "-".into()),
        };
        s.reopen()?;
        Ok(s)
    }

    /// Reopens a file output (after logrotate moved it) or the syslog socket.
    pub fn reopen(&mut self) -> anyhow::Result<()> {
        match &self.output {
            Output::File(p) => {
                self.file = Some(
                    OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(p)
                        .with_context(|| format!("opening the events file {}", p.display()))?,
                );
            }
            Output::Syslog(path) => {
                let sock = UnixDatagram::unbound().context("creating a syslog socket")?;
                sock.connect(path).with_context(|| {
                    format!(
                        "connecting to the syslog socket {} (is a syslog daemon running? \
                         [events] syslog_socket names another socket)",
                        path.display()
                    )
                })?;
                self.syslog = Some(sock);
            }
            Output::Stdout | Output::Off => {}
        }
        Ok(())
    }

    /// Writes one JSON line.
    pub fn write(&mut self, line: &str) {
        let result = match &self.output {
            Output::Stdout => {
                let mut out = std::io::stdout().lock();
                writeln!(out, "{line}").and_then(|_| out.flush())
            }
            Output::File(_) => match &mut self.file {
                Some(f) => writeln!(f, "{line}"),
                None => Ok(()),
            },
            Output::Syslog(_) => match &self.syslog {
                // <13> = facility user, severity notice; RFC 5424 header.
                Some(s) => s
                    .send(
                        format!(
                            "<13>1 {} {} xdp-blocklist {} drop - {line}",
                            humantime::format_rfc3339_millis(SystemTime::now()),
                            self.hostname,
                            std::process::id()
                        )
                        .as_bytes(),
                    )
                    .map(|_| ()),
                None => Ok(()),
            },
            Output::Off => Ok(()),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "writing a drop event failed");
        }
    }
}

/// Reads the ring buffer until `stop`, writing each event; `reopen` asks
/// for the output to be reopened.
pub fn spawn(
    pin: PinDir,
    output: Output,
    index: Arc<RwLock<Arc<FeedIndex>>>,
    reopen: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let path = pin.map(map_names::EVENTS);
    let data = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    let mut ring = RingBuf::try_from(Map::from_map_data(data).context("reading EVENTS")?)
        .context("EVENTS is not a ring buffer")?;
    let mut sink = Sink::open(output)?;
    let handle = std::thread::Builder::new().name("events".into()).spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            if reopen.swap(false, Ordering::Relaxed)
                && let Err(e) = sink.reopen()
            {
                tracing::error!(error = %format!("{e:#}"), "reopening the events output failed");
            }
            let idx = index.read().map(|i| i.clone()).unwrap_or_default();
            let mut any = false;
            while let Some(item) = ring.next() {
                any = true;
                let Some(e) = decode(&item) else {
                    continue;
                };
                match serde_json::to_string(&event(&e, &idx)) {
                                Ok(line) => sink.write(&line),
                                Err(err) => tracing::warn!(error = %err, "an event did not serialize"),
                            }
            }
            if !any {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    })?;
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn a_cgroup_event_names_the_process_and_the_destination() {
        let mut dst = [0u8; 16];
        dst[..4].copy_from_slice(&[198, 51, 100, 9]);
        let mut comm = [0u8; 16];
        comm[..7].copy_from_slice(b"beacon1");
        let e = DropEvent {
            dst,
            prefix_len: 32,
            dst_port: 443,
            family: FAMILY_V4,
            direction: DIRECTION_EGRESS,
            address: DIRECTION_DST,
            protocol: 6,
            pid: 4242,
            comm,
            cgroup_id: 77,
            hook: HOOK_CGROUP,
            ..DropEvent::default()
        };
        let v = to_json(&e, &FeedIndex::default());
        assert_eq!(v["direction"], "egress");
        assert_eq!(v["hook"], "cgroup");
        assert_eq!(v["prefix"], "198.51.100.9/32");
        assert_eq!(v["dst"], "198.51.100.9");
        assert_eq!(v["src"], Value::Null);
        assert_eq!(v["dst_port"], 443);
        assert_eq!(
            (v["pid"].clone(), v["comm"].clone()),
            (json!(4242), json!("beacon1"))
        );
        assert_eq!(v["cgroup_id"], 77);
    }

    #[test]
    fn an_old_64_byte_record_still_decodes() {
        let e = DropEvent {
            prefix_len: 24,
            direction: DIRECTION_DST,
            hook: 9,
            pid: 5,
            ..DropEvent::default()
        };
        // SAFETY: a plain-old-data value viewed as its bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts((&raw const e).cast::<u8>(), size_of::<DropEvent>())
        };
        let old = decode(&bytes[..DROP_EVENT_V1_BYTES]).unwrap();
        assert_eq!((old.prefix_len, old.direction), (24, DIRECTION_DST));
        assert_eq!((old.hook, old.pid), (0, 5));
        assert_eq!(decode(bytes).unwrap(), e);
        assert!(decode(&bytes[..40]).is_none());
    }

    #[test]
    fn an_event_renders_every_field() {
        let mut src = [0u8; 16];
        src[..4].copy_from_slice(&[192, 0, 2, 7]);
        let mut dst = [0u8; 16];
        dst[..4].copy_from_slice(&[10, 0, 0, 1]);
        let e = DropEvent {
            ktime_ns: 1,
            src,
            dst,
            ifindex: 1,
            bytes: 60,
            prefix_len: 24,
            src_port: 40000,
            dst_port: 53,
            family: FAMILY_V4,
            direction: blocklist_ebpf::DIRECTION_SRC,
            protocol: 17,
            action: 0,
            ..DropEvent::default()
        };
        let index = FeedIndex::new(vec![(
            "spamhaus".into(),
            vec!["192.0.2.0/24".parse().unwrap()],
        )]);
        let v = to_json(&e, &index);
        assert_eq!(v["src"], "192.0.2.7");
        assert_eq!(v["dst"], "10.0.0.1");
        assert_eq!(v["prefix"], "192.0.2.0/24");
        assert_eq!(v["feeds"][0], "spamhaus");
        assert_eq!(v["protocol"], "udp");
        assert_eq!(
            (v["src_port"].clone(), v["dst_port"].clone()),
            (json!(40000), json!(53))
        );
        assert_eq!(v["action"], "drop");
        assert_eq!(v["hook"], "xdp");
        assert!(v.get("pid").is_none());
        assert_eq!(v["direction"], "src");
        assert_eq!(v["interface"], "lo");
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn outputs_parse() {
        assert_eq!(Output::parse("stdout", "/dev/log".as_ref()), Output::Stdout);
        assert_eq!(Output::parse("off", "/dev/log".as_ref()), Output::Off);
        assert_eq!(
            Output::parse("/var/log/x.json", "/dev/log".as_ref()),
            Output::File("/var/log/x.json".into())
        );
    }
}
