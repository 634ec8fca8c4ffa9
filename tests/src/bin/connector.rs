//! Test client: makes exactly the connect attempts a test asks for, so the
//! test can match the tracer's events to a pid of its own.
//!
//! connector tcp ADDR [--nonblock] [--wait-ms N] [--count N]
//! connector udp ADDR
//! connector unix PATH
//! connector storm --count N
//! connector self      (a TCP socket connecting to its own address: a
//!                      simultaneous open, SYN_SENT -> SYN_RECV)
//!
//! --linger-ms N keeps the process alive N ms after its attempts, as a real
//! client does while it reports its error; a process that exits within
//! microseconds of its connect can be gone before /proc is read.
//!
//! ADDR is `ip:port` or `[ipv6]:port`. With --nonblock the socket is
//! non-blocking and the client polls for writability for at most --wait-ms
//! (default 3000) before closing it, like Go's dialer. Prints one line per
//! attempt: `errno N` (0 on success). Exits 0 whatever the outcomes.

use std::{net::SocketAddr, time::Duration};

fn arg_after(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1).cloned())
}

fn sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: zeroed sockaddr_storage is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in, sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as u16,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in6.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in6, sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// How the socket is closed after the attempt.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Close {
    /// close(2): FIN, and the client keeps a TIME_WAIT socket for 60 s.
    Graceful,
    /// SO_LINGER 0, then close(2): RST, no TIME_WAIT. The storm needs it:
    /// tens of thousands of TIME_WAIT sockets to one destination fill the
    /// ephemeral port range (and the kernel's 131,072 TIME_WAIT buckets),
    /// and every later connect() then scans for a free port, which made
    /// single storm runs up to twice as slow at random.
    Reset,
}

fn inet(kind: i32, addr: &SocketAddr, nonblock: bool, wait: Duration, close: Close) -> i32 {
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let flags = if nonblock { libc::SOCK_NONBLOCK } else { 0 };
    // SAFETY: plain syscalls on a socket we own.
    unsafe {
        let fd = libc::socket(family, kind | flags | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return errno();
        }
        let (sa, len) = sockaddr(addr);
        let rc = libc::connect(fd, &sa as *const _ as *const libc::sockaddr, len);
        let mut result = if rc == 0 { 0 } else { errno() };
        if result == libc::EINPROGRESS {
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLOUT,
                revents: 0,
            };
            let n = libc::poll(&mut pfd, 1, wait.as_millis() as i32);
            if n == 1 {
                let mut err: i32 = 0;
                let mut elen = std::mem::size_of::<i32>() as libc::socklen_t;
                libc::getsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_ERROR,
                    &mut err as *mut i32 as *mut libc::c_void,
                    &mut elen,
                );
                result = err;
            } else {
                result = libc::ETIMEDOUT; // gave up, like a Go dial timeout
            }
        }
        if close == Close::Reset {
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                &linger as *const libc::linger as *const libc::c_void,
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
        }
        libc::close(fd);
        result
    }
}

fn unix(path: &str) -> i32 {
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

/// A loopback listener with a deep accept queue. std's `TcpListener::bind`
/// listens with a backlog of 128; a fast machine connects faster than the
/// acceptor thread accepts, the queue overflows, SYNs are dropped
/// (TcpExtListenOverflows) and each dropped SYN stalls its connect() for the
/// 1 s retransmission timeout: measured, a 20,000-connect storm then took
/// 35 s instead of 0.2 s, at random, traced or not.
fn deep_listener() -> std::io::Result<std::net::TcpListener> {
    use std::os::fd::FromRawFd;
    let addr: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
    // SAFETY: plain syscalls on a socket we own; ownership of the fd passes
    // to the TcpListener.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let listener = std::net::TcpListener::from_raw_fd(fd);
        let (sa, len) = sockaddr(&addr);
        if libc::bind(fd, &sa as *const _ as *const libc::sockaddr, len) != 0
            || libc::listen(fd, 65535) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        Ok(listener)
    }
}

/// Connect storm for the benchmark: alternate a connect to a closed
/// loopback port (refused) and to a listener of our own (accepted and
/// closed by a thread), `count` attempts in all, each socket closed with a
/// reset (see `Close::Reset`). Prints the elapsed time.
fn storm(count: u32) {
    let listener = match deep_listener() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("listen: {e}");
            std::process::exit(1);
        }
    };
    let open = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").ok();
        let port = l
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map_or(1, |a| a.port());
        drop(l);
        port
    };
    let accepts = count.div_ceil(2);
    let acceptor = std::thread::spawn(move || {
        for _ in 0..accepts {
            if listener.accept().is_err() {
                break;
            }
        }
    });
    let open: SocketAddr = SocketAddr::from(([127, 0, 0, 1], open));
    let closed: SocketAddr = SocketAddr::from(([127, 0, 0, 1], closed));
    let start = std::time::Instant::now();
    for i in 0..count {
        let target = if i % 2 == 0 { &open } else { &closed };
        inet(
            libc::SOCK_STREAM,
            target,
            false,
            Duration::from_millis(0),
            Close::Reset,
        );
    }
    let elapsed = start.elapsed();
    let _ = acceptor.join();
    println!("elapsed_ns {} attempts {count}", elapsed.as_nanos());
}

/// Bind a TCP socket to a free loopback port and connect it to that same
/// address. The SYN reaches the socket itself while it is in SYN_SENT, which
/// the kernel treats as a simultaneous open (SYN_SENT -> SYN_RECV ->
/// ESTABLISHED). Prints the errno like the other modes.
fn self_connect() -> i32 {
    // SAFETY: plain syscalls on a socket we own.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return errno();
        }
        let any: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
        let (sa, len) = sockaddr(&any);
        if libc::bind(fd, &sa as *const _ as *const libc::sockaddr, len) != 0 {
            return errno();
        }
        let mut bound: libc::sockaddr_storage = std::mem::zeroed();
        let mut blen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        libc::getsockname(fd, &mut bound as *mut _ as *mut libc::sockaddr, &mut blen);
        let rc = libc::connect(fd, &bound as *const _ as *const libc::sockaddr, blen);
        let result = if rc == 0 { 0 } else { errno() };
        libc::close(fd);
        result
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("self") {
        println!("errno {}", self_connect());
        return;
    }
    if args.get(1).map(String::as_str) == Some("storm") {
        let count = arg_after(&args, "--count")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        storm(count.min(10_000_000));
        return;
    }
    let (Some(kind), Some(target)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: connector tcp|udp|unix TARGET [--nonblock] [--wait-ms N] [--count N]");
        std::process::exit(2);
    };
    let nonblock = args.iter().any(|a| a == "--nonblock");
    let wait = Duration::from_millis(
        arg_after(&args, "--wait-ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(3000),
    );
    let count: u32 = arg_after(&args, "--count")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .min(100_000);
    for _ in 0..count {
        let result = match kind.as_str() {
            "unix" => unix(target),
            "tcp" | "udp" => {
                let Ok(addr) = target.parse::<SocketAddr>() else {
                    eprintln!("bad address {target}");
                    std::process::exit(2);
                };
                let ty = if kind == "tcp" {
                    libc::SOCK_STREAM
                } else {
                    libc::SOCK_DGRAM
                };
                inet(ty, &addr, nonblock, wait, Close::Graceful)
            }
            other => {
                eprintln!("unknown kind {other}");
                std::process::exit(2);
            }
        };
        println!("errno {result}");
    }
    if let Some(ms) = arg_after(&args, "--linger-ms").and_then(|v| v.parse::<u64>().ok()) {
        std::thread::sleep(Duration::from_millis(ms.min(10_000)));
    }
}
