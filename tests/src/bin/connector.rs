//! Test client: makes exactly the connect attempts a test asks for, so the
//! test can match the tracer's events to a pid of its own.
//!
//! connector tcp ADDR [--nonblock] [--wait-ms N] [--count N]
//! connector udp ADDR
//! connector unix PATH
//! connector storm --count N [--kind mixed|refused|accepted]
//!                     (mixed alternates a refused and an accepted connect;
//!                     the others make only one kind: the bench's kernel
//!                     cost is measured per kind)
//! connector dns-storm ADDR --count N  (sends N DNS queries with sendto()
//!                      from one unconnected UDP socket; prints `queries N`)
//! connector self      (a TCP socket connecting to its own address: a
//!                      simultaneous open, SYN_SENT -> SYN_RECV)
//! connector passfd ADDR  (creates a TCP socket, passes it with SCM_RIGHTS
//!                      to a forked child, which connects it; prints
//!                      `child PID` and the child's `errno N`)
//! connector exec-race HANG_ADDR ADDR  (a thread makes a blocking connect to
//!                      HANG_ADDR, whose SYNs go unanswered; 300 ms later the
//!                      main thread execs `connector tcp ADDR --linger-ms 300`)
//!
//! tcp options: --interval-ms N pauses N ms between the --count attempts;
//! --reconnect calls connect() a second time on the same socket
//! after the first result (a second attempt after a failure; EISCONN after a
//! success) and prints both errnos; --syncnt N sets TCP_SYNCNT (SYN
//! retransmissions before the kernel gives up with ETIMEDOUT). --print-pid
//! prints `pid N` (the pid as the process sees it, e.g. 1 in a pid
//! namespace). --connect-poll (with --nonblock) learns the result the way
//! Ruby's connect_nonblock does: poll for writability, then connect() again
//! (0 once connected, the attempt's errno once failed), not SO_ERROR.
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
                sin6_scope_id: a.scope_id(),
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

/// Options of one inet attempt.
#[derive(Clone, Copy, Default)]
struct Opts {
    /// connect() again on the same socket after the first result.
    reconnect: bool,
    /// TCP_SYNCNT, when set.
    syncnt: Option<i32>,
    /// Learn a non-blocking result by calling connect() again.
    connect_poll: bool,
}

fn inet(kind: i32, addr: &SocketAddr, nonblock: bool, wait: Duration, close: Close) -> i32 {
    inet_with(kind, addr, nonblock, wait, close, Opts::default())[0]
}

/// Wait for a non-blocking attempt and read its result, like Go's dialer.
///
/// SAFETY: `fd` is a socket we own.
unsafe fn wait_result(fd: i32, wait: Duration) -> i32 {
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
        err
    } else {
        libc::ETIMEDOUT // gave up, like a Go dial timeout
    }
}

/// connect() on `fd` to `addr`, waiting for a non-blocking result.
///
/// SAFETY: `fd` is a socket we own.
unsafe fn connect_fd(fd: i32, addr: &SocketAddr, wait: Duration) -> i32 {
    let (sa, len) = sockaddr(addr);
    let rc = libc::connect(fd, &sa as *const _ as *const libc::sockaddr, len);
    let result = if rc == 0 { 0 } else { errno() };
    if result == libc::EINPROGRESS {
        wait_result(fd, wait)
    } else {
        result
    }
}

fn inet_with(
    kind: i32,
    addr: &SocketAddr,
    nonblock: bool,
    wait: Duration,
    close: Close,
    opts: Opts,
) -> Vec<i32> {
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
            return vec![errno()];
        }
        if let Some(n) = opts.syncnt {
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_SYNCNT,
                &n as *const i32 as *const libc::c_void,
                std::mem::size_of::<i32>() as libc::socklen_t,
            );
        }
        if opts.connect_poll {
            let (sa, len) = sockaddr(addr);
            let rc = libc::connect(fd, &sa as *const _ as *const libc::sockaddr, len);
            let mut result = if rc == 0 { 0 } else { errno() };
            if result == libc::EINPROGRESS {
                let mut pfd = libc::pollfd {
                    fd,
                    events: libc::POLLOUT,
                    revents: 0,
                };
                libc::poll(&mut pfd, 1, wait.as_millis() as i32);
                let rc = libc::connect(fd, &sa as *const _ as *const libc::sockaddr, len);
                result = if rc == 0 { 0 } else { errno() };
            }
            libc::close(fd);
            return vec![result];
        }
        let mut results = vec![connect_fd(fd, addr, wait)];
        if opts.reconnect {
            results.push(connect_fd(fd, addr, wait));
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
        results
    }
}

/// Create a TCP socket, fork, pass the socket to the child over a unix
/// socketpair with SCM_RIGHTS, close it here; the child connects it.
fn passfd(addr: &SocketAddr) {
    // SAFETY: plain syscalls; the process is single-threaded at fork.
    unsafe {
        let family = if addr.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        let mut pair = [0i32; 2];
        if libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, pair.as_mut_ptr()) != 0 {
            eprintln!("socketpair: {}", std::io::Error::last_os_error());
            std::process::exit(1);
        }
        let child = libc::fork();
        if child == 0 {
            libc::close(pair[0]);
            let fd = recv_fd(pair[1]);
            let result = if fd < 0 {
                -1
            } else {
                connect_fd(fd, addr, Duration::from_millis(3000))
            };
            use std::io::Write;
            let mut out = std::io::stdout();
            let _ = writeln!(out, "child {}\nerrno {result}", libc::getpid());
            let _ = out.flush();
            std::thread::sleep(Duration::from_millis(300));
            libc::_exit(0);
        }
        libc::close(pair[1]);
        let fd = libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        send_fd(pair[0], fd);
        libc::close(fd);
        let mut status = 0;
        libc::waitpid(child, &mut status, 0);
    }
}

/// SAFETY: `over` is a connected unix socket, `fd` an open descriptor.
unsafe fn send_fd(over: i32, fd: i32) {
    let mut byte = [b'x'];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let space = libc::CMSG_SPACE(std::mem::size_of::<i32>() as u32) as usize;
    let mut control = vec![0u8; space];
    let mut msg: libc::msghdr = std::mem::zeroed();
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space;
    let cmsg = libc::CMSG_FIRSTHDR(&msg);
    (*cmsg).cmsg_level = libc::SOL_SOCKET;
    (*cmsg).cmsg_type = libc::SCM_RIGHTS;
    (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<i32>() as u32) as usize;
    std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>(), fd);
    if libc::sendmsg(over, &msg, 0) != 1 {
        eprintln!("sendmsg: {}", std::io::Error::last_os_error());
        std::process::exit(1);
    }
}

/// SAFETY: `over` is a connected unix socket.
unsafe fn recv_fd(over: i32) -> i32 {
    let mut byte = [0u8];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let space = libc::CMSG_SPACE(std::mem::size_of::<i32>() as u32) as usize;
    let mut control = vec![0u8; space];
    let mut msg: libc::msghdr = std::mem::zeroed();
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space;
    if libc::recvmsg(over, &mut msg, 0) != 1 {
        return -1;
    }
    let cmsg = libc::CMSG_FIRSTHDR(&msg);
    if cmsg.is_null() || (*cmsg).cmsg_type != libc::SCM_RIGHTS {
        return -1;
    }
    std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>())
}

/// A thread connects to `hang` (SYNs unanswered) while the main thread
/// execs a plain `connector tcp ADDR`: exec kills the other thread
/// (de_thread) and closes the close-on-exec socket mid-attempt.
fn exec_race(hang: SocketAddr, addr: &str) {
    std::thread::spawn(move || {
        inet(
            libc::SOCK_STREAM,
            &hang,
            false,
            Duration::from_millis(0),
            Close::Graceful,
        );
    });
    std::thread::sleep(Duration::from_millis(300));
    let exe = std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into());
    use std::os::unix::process::CommandExt;
    let err = std::process::Command::new(exe)
        .args(["tcp", addr, "--linger-ms", "300"])
        .exec();
    eprintln!("exec: {err}");
    std::process::exit(1);
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

/// Which connects a storm makes.
#[derive(Clone, Copy)]
enum StormKind {
    Mixed,
    Refused,
    Accepted,
}

/// Connect storm for the benchmark: alternate a connect to a closed
/// loopback port (refused) and to a listener of our own (accepted and
/// closed by a thread), `count` attempts in all, each socket closed with a
/// reset (see `Close::Reset`). Prints the elapsed time. `kind` keeps only
/// the refused or only the accepted connects.
fn storm(count: u32, kind: StormKind) {
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
    let accepts = match kind {
        StormKind::Mixed => count.div_ceil(2),
        StormKind::Refused => 0,
        StormKind::Accepted => count,
    };
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
        let refused = match kind {
            StormKind::Mixed => i % 2 == 1,
            StormKind::Refused => true,
            StormKind::Accepted => false,
        };
        let target = if refused { &closed } else { &open };
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

/// `count` DNS queries (an A question for `storm.test.`, a distinct id
/// each) sent with sendto() to `server`, as Go's and musl's resolvers may
/// send them. Nothing needs to answer: the tracer's `--dns` programs copy
/// each query as it leaves.
fn dns_storm(server: &SocketAddr, count: u32) {
    let bind: SocketAddr = if server.is_ipv4() {
        SocketAddr::from(([127, 0, 0, 1], 0))
    } else {
        SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 0))
    };
    let socket = match std::net::UdpSocket::bind(bind) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bind: {e}");
            std::process::exit(1);
        }
    };
    let mut query = [
        0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, // header: id, RD, one question
        5, b's', b't', b'o', b'r', b'm', 4, b't', b'e', b's', b't', 0, // storm.test.
        0, 1, 0, 1, // A, IN
    ];
    let mut sent = 0u32;
    for i in 0..count {
        query[..2].copy_from_slice(&(i as u16).to_be_bytes());
        if socket.send_to(&query, server).is_ok() {
            sent += 1;
        }
    }
    println!("queries {sent}");
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
    if args.iter().any(|a| a == "--print-pid") {
        println!("pid {}", std::process::id());
    }
    let parse = |i: usize| -> SocketAddr {
        match args.get(i).and_then(|a| a.parse().ok()) {
            Some(a) => a,
            None => {
                eprintln!("bad or missing address {:?}", args.get(i));
                std::process::exit(2);
            }
        }
    };
    if args.get(1).map(String::as_str) == Some("passfd") {
        passfd(&parse(2));
        return;
    }
    if args.get(1).map(String::as_str) == Some("exec-race") {
        let addr = args.get(3).cloned().unwrap_or_default();
        exec_race(parse(2), &addr);
        return;
    }
    if args.get(1).map(String::as_str) == Some("dns-storm") {
        let count = arg_after(&args, "--count")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        dns_storm(&parse(2), count.min(10_000_000));
        return;
    }
    if args.get(1).map(String::as_str) == Some("storm") {
        let count = arg_after(&args, "--count")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        let kind = match arg_after(&args, "--kind").as_deref() {
            None | Some("mixed") => StormKind::Mixed,
            Some("refused") => StormKind::Refused,
            Some("accepted") => StormKind::Accepted,
            Some(other) => {
                eprintln!("storm --kind: mixed, refused or accepted, not {other:?}");
                std::process::exit(2);
            }
        };
        storm(count.min(10_000_000), kind);
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
    let opts = Opts {
        reconnect: args.iter().any(|a| a == "--reconnect"),
        syncnt: arg_after(&args, "--syncnt").and_then(|v| v.parse().ok()),
        connect_poll: args.iter().any(|a| a == "--connect-poll"),
    };
    // --interval-ms N: a pause between attempts (a process that retries).
    let interval = arg_after(&args, "--interval-ms")
        .and_then(|v| v.parse::<u64>().ok())
        .map(|ms| Duration::from_millis(ms.min(10_000)));
    for i in 0..count {
        if let (Some(pause), true) = (interval, i > 0) {
            std::thread::sleep(pause);
        }
        let results = match kind.as_str() {
            "unix" => vec![unix(target)],
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
                inet_with(ty, &addr, nonblock, wait, Close::Graceful, opts)
            }
            other => {
                eprintln!("unknown kind {other}");
                std::process::exit(2);
            }
        };
        for result in results {
            println!("errno {result}");
        }
    }
    if let Some(ms) = arg_after(&args, "--linger-ms").and_then(|v| v.parse::<u64>().ok()) {
        std::thread::sleep(Duration::from_millis(ms.min(10_000)));
    }
}
