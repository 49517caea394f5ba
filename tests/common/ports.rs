//! Ports for servers that must be told their port before they bind, shared by the tests and
//! the soak run (`examples/soak.rs` includes this file).

use std::sync::Mutex;

/// The first port of the kernel's ephemeral range (`ip_local_port_range`), which sockets bound
/// to port 0 and outgoing connections draw from.
pub fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768)
}

/// A loopback port for a server that must be told its port before it binds (pebble, a
/// gateway started as a process): one that no other part of the tests can take in the
/// meantime. Ports come from below the kernel's ephemeral range (`ip_local_port_range`), which
/// every socket bound to port 0 and every outgoing connection draws from, so nothing else in
/// the tests can be given one; this process takes its own block of them (by process id), never
/// hands one out twice, and checks each is free (TCP and UDP) before handing it out.
pub fn free_port() -> u16 {
    use std::sync::OnceLock;
    static NEXT: OnceLock<Mutex<(u16, u16)>> = OnceLock::new();
    let range = NEXT.get_or_init(|| {
        let low = ephemeral_low();
        // clear of the fixed ports of the default config and the benchmarks (8000-19999)
        let (start, end) = (20000u16, low.max(20000));
        assert!(
            end - start >= 1000,
            "ip_local_port_range starts at {low}: no room below it for test ports"
        );
        let blocks = (end - start) / 500;
        let first = start + (std::process::id() as u16 % blocks) * 500;
        Mutex::new((first, first + 500))
    });
    loop {
        let port = {
            let mut r = range.lock().unwrap();
            assert!(r.0 < r.1, "this test process used all of its 500 ports");
            r.0 += 1;
            r.0 - 1
        };
        let tcp = std::net::TcpListener::bind(("127.0.0.1", port));
        let udp = std::net::UdpSocket::bind(("127.0.0.1", port));
        if tcp.is_ok() && udp.is_ok() {
            return port;
        }
    }
}
