//! Real traffic between the lab's namespaces, bounded in count and time.

use socket2::{Domain, Protocol, Socket, Type};
use std::{
    net::{IpAddr, SocketAddr, TcpListener, UdpSocket},
    time::{Duration, Instant},
};

use crate::lab::Netns;

/// Pings `dst` from `from` (optionally from source address `src`) `count`
/// times, 10 ms apart, and returns how many replies came back.
pub fn ping(from: &Netns, src: Option<&str>, dst: &str, count: u32) -> u32 {
    let count_s = count.to_string();
    let mut args = vec!["ping", "-n", "-q", "-c", &count_s, "-i", "0.01", "-W", "1"];
    if let Some(s) = src {
        args.extend(["-I", s]);
    }
    args.push(dst);
    let out = from.exec(&args);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("transmitted"))
        .unwrap_or_else(|| {
            panic!(
                "no ping summary: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    line.split(',')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("ping summary has a received count")
}

/// Sends `count` UDP datagrams of `payload` bytes from `from` (bound to
/// `src`) to `dst` in `to`, and returns how many arrived.
pub fn udp(from: &Netns, src: &str, to: &Netns, dst: &str, count: u32, payload: usize) -> u32 {
    let dst_ip: IpAddr = dst.parse().expect("dst address");
    let src_ip: IpAddr = src.parse().expect("src address");
    let rx =
        to.enter(|| UdpSocket::bind(SocketAddr::new(dst_ip, 0)).expect("binding the receiver"));
    let target = rx.local_addr().expect("receiver address");
    let tx =
        from.enter(|| UdpSocket::bind(SocketAddr::new(src_ip, 0)).expect("binding the sender"));
    let data = vec![0x5au8; payload];
    for _ in 0..count {
        tx.send_to(&data, target).expect("sending a datagram");
        std::thread::sleep(Duration::from_micros(200));
    }
    rx.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let mut buf = vec![0u8; payload + 16];
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(3);
    while got < count && Instant::now() < deadline {
        match rx.recv(&mut buf) {
            Ok(_) => got += 1,
            Err(_) => break,
        }
    }
    got
}

/// Tries a TCP connection from `from` (bound to `src`) to a listener in
/// `to` on `dst`; true when the handshake completed within one second.
pub fn tcp_connects(from: &Netns, src: &str, to: &Netns, dst: &str) -> bool {
    let dst_ip: IpAddr = dst.parse().expect("dst address");
    let src_ip: IpAddr = src.parse().expect("src address");
    let listener = to.enter(|| TcpListener::bind(SocketAddr::new(dst_ip, 0)).expect("listening"));
    let target = listener.local_addr().expect("listener address");
    from.enter(|| {
        let socket = Socket::new(
            Domain::for_address(target),
            Type::STREAM,
            Some(Protocol::TCP),
        )
        .expect("creating a TCP socket");
        socket
            .bind(&SocketAddr::new(src_ip, 0).into())
            .expect("binding the client address");
        // Bounded: without a timeout a dropped SYN retries for a minute.
        socket
            .connect_timeout(&target.into(), Duration::from_secs(1))
            .is_ok()
    })
}

/// Continuous UDP from one address to another, on threads, for as long as a
/// test needs traffic across some change (a sync, an upgrade, a crash).
/// Sending and receiving run at the same time, so there is no moment in
/// which the test is not sending; the rate is paced (one datagram every
/// 100 µs at most) so that veth never drops a frame before the program
/// sees it, which keeps the kernel's counts exact. Bounded: it stops by
/// itself after `max` or [`Flood::MAX_DATAGRAMS`].
pub struct Flood {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sender: std::thread::JoinHandle<u64>,
    receiver: std::thread::JoinHandle<u64>,
    rx_stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Flood {
    /// The most datagrams one flood sends.
    pub const MAX_DATAGRAMS: u64 = 2_000_000;

    /// Starts sending from `src` in `from` to `dst` in `to`.
    pub fn start(
        from: &Netns,
        src: &str,
        to: &Netns,
        dst: &str,
        payload: usize,
        max: Duration,
    ) -> Self {
        use std::sync::{
            Arc,
            atomic::{AtomicBool, Ordering},
        };
        let dst_ip: IpAddr = dst.parse().expect("dst address");
        let src_ip: IpAddr = src.parse().expect("src address");
        let rx =
            to.enter(|| UdpSocket::bind(SocketAddr::new(dst_ip, 0)).expect("binding the receiver"));
        rx.set_read_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
        let target = rx.local_addr().expect("receiver address");
        let tx =
            from.enter(|| UdpSocket::bind(SocketAddr::new(src_ip, 0)).expect("binding the sender"));
        let stop = Arc::new(AtomicBool::new(false));
        let rx_stop = Arc::new(AtomicBool::new(false));
        let receiver = {
            let rx_stop = rx_stop.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; payload + 16];
                let mut got = 0u64;
                while !rx_stop.load(Ordering::Relaxed) {
                    if rx.recv(&mut buf).is_ok() {
                        got += 1;
                    }
                }
                // Whatever is still queued arrived too.
                rx.set_nonblocking(true).expect("nonblocking");
                while rx.recv(&mut buf).is_ok() {
                    got += 1;
                }
                got
            })
        };
        let sender = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let data = vec![0x5au8; payload];
                let deadline = Instant::now() + max;
                let mut sent = 0u64;
                while !stop.load(Ordering::Relaxed)
                    && sent < Self::MAX_DATAGRAMS
                    && Instant::now() < deadline
                {
                    tx.send_to(&data, target).expect("sending a datagram");
                    sent += 1;
                    std::thread::sleep(Duration::from_micros(100));
                }
                sent
            })
        };
        Self {
            stop,
            sender,
            receiver,
            rx_stop,
        }
    }

    /// Stops sending, lets the last datagrams arrive, and returns (sent,
    /// received).
    pub fn stop(self) -> (u64, u64) {
        use std::sync::atomic::Ordering;
        self.stop.store(true, Ordering::Relaxed);
        let sent = self.sender.join().expect("flood sender panicked");
        std::thread::sleep(Duration::from_millis(200));
        self.rx_stop.store(true, Ordering::Relaxed);
        let got = self.receiver.join().expect("flood receiver panicked");
        (sent, got)
    }
}
