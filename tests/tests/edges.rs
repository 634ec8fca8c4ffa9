//! The kernel's edge cases, one scenario each, with the event the tracer
//! must produce written down above the test.
//! Network: loopback, or test hosts in namespaces these tests create.
//! Run as root with --test-threads=1.

use std::{
    io::Read,
    net::TcpListener,
    process::{Child, Command, Stdio},
    thread,
    time::Duration,
};

use serde_json::Value;
use tracer_tests::{attempts_of, closed_port, connector, connector_bin, NetNs, Stopped, Tracer};

fn assert_clean(out: &Stopped) {
    assert!(
        out.status.success(),
        "tracer exit {:?}: {}",
        out.status,
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}

fn only(events: &[Value], pid: u32) -> &Value {
    let mine = attempts_of(events, pid);
    assert_eq!(mine.len(), 1, "exactly one event for pid {pid}: {mine:#?}");
    mine[0]
}

fn duration_s(ev: &Value) -> f64 {
    ev["event"]["duration"].as_u64().expect("duration") as f64 / 1e9
}

fn spawn(args: &[&str]) -> Child {
    Command::new(connector_bin())
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start connector")
}

/// Wait for a child and return its stdout.
fn finish(mut child: Child) -> String {
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read");
    child.wait().expect("wait");
    out
}

fn errnos(stdout: &str) -> Vec<i32> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("errno ")?.parse().ok())
        .collect()
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, sig) };
}

/// Drop the first SYN of each connection to `port` in the test host; the
/// retransmission (about 1 s later) gets a reset.
fn refuse_after_one_retransmission(ns: &NetNs, port: u16) {
    ns.nft(&format!(
        "table inet t {{
            set seen {{ type ipv4_addr . inet_service; timeout 60s; }}
            chain input {{
                type filter hook input priority 0;
                tcp dport {port} tcp flags & (syn|ack) == syn ip saddr . tcp sport @seen accept
                tcp dport {port} tcp flags & (syn|ack) == syn add @seen {{ ip saddr . tcp sport }} drop
            }}
        }}"
    ));
}

/// A blocking connect() whose SYNs go unanswered, the process killed with
/// SIGKILL 500 ms in. Its exit closes the socket (SYN_SENT -> CLOSE with no
/// sk_err).
/// Expected: one event, result `aborted`, outcome `failure`, no error
/// code, duration about 0.5 s. Never `connected`.
#[test]
fn sigkill_while_the_syn_is_unanswered() {
    let ns = NetNs::new(10);
    ns.drop_syns(7100);
    ns.assert_routed();
    let tracer = Tracer::start(&[]);
    let child = spawn(&["tcp", &format!("{}:7100", ns.addr)]);
    let pid = child.id();
    thread::sleep(Duration::from_millis(500));
    signal(&child, libc::SIGKILL);
    let _ = finish(child);
    let out = tracer.stop();
    assert_clean(&out);
    let ev = only(&out.events, pid);
    assert_eq!(ev["tracer"]["result"], "aborted");
    assert_eq!(ev["event"]["outcome"], "failure");
    assert!(ev["error"].get("code").is_none(), "{ev}");
    let d = duration_s(ev);
    assert!((0.4..2.0).contains(&d), "ended at the kill: {d} s");
}

/// A blocking connect() stopped with SIGSTOP 200 ms in, continued at about
/// 2.2 s. The first SYN is dropped; the retransmission at about 1 s is
/// refused while the process is stopped (softirq context).
/// Expected: one event, `refused` (ECONNREFUSED), duration about 1 s (when
/// the kernel knew the outcome), not the 2.2 s until the process resumed.
#[test]
fn sigstop_mid_attempt_then_continue() {
    let ns = NetNs::new(11);
    refuse_after_one_retransmission(&ns, 7101);
    ns.assert_routed();
    let tracer = Tracer::start(&[]);
    let child = spawn(&["tcp", &format!("{}:7101", ns.addr)]);
    let pid = child.id();
    thread::sleep(Duration::from_millis(200));
    signal(&child, libc::SIGSTOP);
    thread::sleep(Duration::from_millis(2000));
    signal(&child, libc::SIGCONT);
    let stdout = finish(child);
    assert_eq!(errnos(&stdout), vec![libc::ECONNREFUSED]);
    let out = tracer.stop();
    assert_clean(&out);
    let ev = only(&out.events, pid);
    assert_eq!(ev["tracer"]["result"], "refused");
    assert_eq!(ev["error"]["code"], "ECONNREFUSED");
    let d = duration_s(ev);
    assert!((0.8..1.9).contains(&d), "the kernel's outcome time: {d} s");
}

/// connect() again on the same socket after a refusal (blocking: the failed
/// call left the socket SS_UNCONNECTED, so the second call is a new attempt
/// with a new SYN), and after a success (EISCONN, no attempt at all).
/// Expected: refused twice -> two `refused` events; success then EISCONN ->
/// one `connected` event. In both modes.
#[test]
fn second_connect_on_the_same_socket() {
    for mode in ["socket", "syscall"] {
        let port = closed_port();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let open = listener.local_addr().expect("addr").port();
        let tracer = Tracer::start(&["--mode", mode]);
        let (failed, e1) = connector(&["tcp", &format!("127.0.0.1:{port}"), "--reconnect"]);
        assert_eq!(e1, vec![libc::ECONNREFUSED, libc::ECONNREFUSED]);
        let (ok, e2) = connector(&["tcp", &format!("127.0.0.1:{open}"), "--reconnect"]);
        assert_eq!(e2, vec![0, libc::EISCONN]);
        let out = tracer.stop();
        assert_clean(&out);
        let f = attempts_of(&out.events, failed);
        assert_eq!(f.len(), 2, "{mode}: two attempts: {f:#?}");
        assert!(f.iter().all(|e| e["tracer"]["result"] == "refused"));
        let ev = only(&out.events, ok);
        assert_eq!(ev["tracer"]["result"], "connected", "{mode}");
        drop(listener);
    }
}

/// The same with a non-blocking socket, polled like Go/Python do, then
/// connect() called again. After the refusal (SO_ERROR already read) the
/// socket is still SS_CONNECTING, so the second call starts nothing: it
/// returns ECONNABORTED (`__inet_stream_connect()`: sk_state is CLOSE and
/// sk_err was consumed). After the success, the second call returns 0
/// (SS_CONNECTING and ESTABLISHED: it only marks the socket connected).
/// Expected: one `refused` event and one `connected` event: a connect()
/// that only polls an attempt is not an attempt, in either mode.
#[test]
fn second_nonblocking_connect_only_polls() {
    for mode in ["socket", "syscall"] {
        let port = closed_port();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let open = listener.local_addr().expect("addr").port();
        let tracer = Tracer::start(&["--mode", mode]);
        let (failed, e1) = connector(&[
            "tcp",
            &format!("127.0.0.1:{port}"),
            "--nonblock",
            "--reconnect",
        ]);
        assert_eq!(e1, vec![libc::ECONNREFUSED, libc::ECONNABORTED]);
        let (ok, e2) = connector(&[
            "tcp",
            &format!("127.0.0.1:{open}"),
            "--nonblock",
            "--reconnect",
        ]);
        assert_eq!(e2, vec![0, 0]);
        let out = tracer.stop();
        assert_clean(&out);
        let ev = only(&out.events, failed);
        assert_eq!(ev["tracer"]["result"], "refused", "{mode}");
        let ev = only(&out.events, ok);
        assert_eq!(ev["tracer"]["result"], "connected", "{mode}");
        drop(listener);
    }
}

/// A non-blocking attempt whose result is learnt by calling connect() again
/// after poll() says writable (Ruby's connect_nonblock), not SO_ERROR: the
/// second call returns the attempt's errno (`sock_error()`) or 0, and
/// starts nothing.
/// Expected: one `refused` event and one `connected` event, in both modes.
#[test]
fn result_learnt_by_a_second_connect() {
    for mode in ["socket", "syscall"] {
        let port = closed_port();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let open = listener.local_addr().expect("addr").port();
        let tracer = Tracer::start(&["--mode", mode]);
        let (failed, e1) = connector(&[
            "tcp",
            &format!("127.0.0.1:{port}"),
            "--nonblock",
            "--connect-poll",
        ]);
        assert_eq!(e1, vec![libc::ECONNREFUSED]);
        let (ok, e2) = connector(&[
            "tcp",
            &format!("127.0.0.1:{open}"),
            "--nonblock",
            "--connect-poll",
        ]);
        assert_eq!(e2, vec![0]);
        let out = tracer.stop();
        assert_clean(&out);
        let ev = only(&out.events, failed);
        assert_eq!(ev["tracer"]["result"], "refused", "{mode}");
        assert_eq!(ev["tracer"]["async"], true, "{mode}");
        let ev = only(&out.events, ok);
        assert_eq!(ev["tracer"]["result"], "connected", "{mode}");
        drop(listener);
    }
}

/// A TCP socket created by one process and passed with SCM_RIGHTS to a
/// forked child, which connects it (the parent closed its copy).
/// Expected: one `refused` event with the child's pid (the caller of
/// connect()), none with the parent's.
#[test]
fn socket_passed_with_scm_rights_is_attributed_to_the_caller() {
    let port = closed_port();
    let tracer = Tracer::start(&[]);
    let child = spawn(&["passfd", &format!("127.0.0.1:{port}")]);
    let parent = child.id();
    let stdout = finish(child);
    assert_eq!(errnos(&stdout), vec![libc::ECONNREFUSED]);
    let receiver: u32 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("child ")?.parse().ok())
        .expect("child pid");
    let out = tracer.stop();
    assert_clean(&out);
    let ev = only(&out.events, receiver);
    assert_eq!(ev["tracer"]["result"], "refused");
    assert_eq!(ev["process"]["parent"]["pid"], parent);
    assert!(attempts_of(&out.events, parent).is_empty());
}

/// One thread is in a blocking connect() (SYNs unanswered) when another
/// thread calls execve. exec kills the connecting thread (de_thread) and
/// closes the close-on-exec socket; the new image then makes a refused
/// attempt. The pid stays the same throughout.
/// Expected: two events for the pid: `aborted` (the first attempt, ended by
/// the exec after about 0.3 s, with the old image's args `exec-race ...`)
/// and `refused` (the new image's attempt, with the new image's args, not
/// the old ones).
#[test]
fn thread_connects_while_another_execs() {
    let ns = NetNs::new(12);
    ns.drop_syns(7102);
    ns.assert_routed();
    let port = closed_port();
    let tracer = Tracer::start(&[]);
    let child = spawn(&[
        "exec-race",
        &format!("{}:7102", ns.addr),
        &format!("127.0.0.1:{port}"),
    ]);
    let pid = child.id();
    let stdout = finish(child);
    assert_eq!(errnos(&stdout), vec![libc::ECONNREFUSED]);
    let out = tracer.stop();
    assert_clean(&out);
    let mine = attempts_of(&out.events, pid);
    assert_eq!(mine.len(), 2, "{mine:#?}");
    let aborted = mine
        .iter()
        .find(|e| e["destination"]["ip"] == ns.addr.as_str())
        .expect("the first attempt");
    assert_eq!(aborted["tracer"]["result"], "aborted");
    let d = duration_s(aborted);
    assert!((0.2..1.5).contains(&d), "ended by the exec: {d} s");
    let args = aborted["process"]["args"].to_string();
    assert!(
        args.contains("exec-race"),
        "the old image's attempt keeps the old image's details: {args}"
    );
    let refused = mine
        .iter()
        .find(|e| e["destination"]["port"] == port)
        .expect("the new image's attempt");
    assert_eq!(refused["tracer"]["result"], "refused");
    let args = refused["process"]["args"].to_string();
    assert!(
        args.contains("tcp") && !args.contains("exec-race"),
        "no stale process details after exec: {args}"
    );
}

/// A listener with a full accept queue (backlog 0, one connection already
/// queued and never accepted): the kernel drops further SYNs
/// (`tcp_conn_request()`, LINUX_MIB_LISTENOVERFLOWS).
/// Expected: with TCP_SYNCNT 1 the kernel gives up after the SYN and one
/// retransmission (1 s + 2 s): `timed_out` (ETIMEDOUT), duration about 3 s;
/// a non-blocking client that gives up after 1.5 s: `aborted`, about 1.5 s.
#[test]
fn full_accept_backlog_drops_syns() {
    // SAFETY: plain syscalls on a socket we own, closed at the end.
    let (fd, port) = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        let mut sin: libc::sockaddr_in = std::mem::zeroed();
        sin.sin_family = libc::AF_INET as u16;
        sin.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        assert_eq!(
            libc::bind(fd, &sin as *const _ as *const libc::sockaddr, len),
            0
        );
        assert_eq!(libc::listen(fd, 0), 0);
        let mut bound: libc::sockaddr_in = std::mem::zeroed();
        let mut blen = len;
        libc::getsockname(fd, &mut bound as *mut _ as *mut libc::sockaddr, &mut blen);
        (fd, u16::from_be(bound.sin_port))
    };
    let target = format!("127.0.0.1:{port}");
    let tracer = Tracer::start(&[]);
    // Fills the queue: connected, never accepted.
    let filler = spawn(&["tcp", &target, "--linger-ms", "5000"]);
    thread::sleep(Duration::from_millis(300));
    let (timed_out, e1) = connector(&["tcp", &target, "--syncnt", "1"]);
    assert_eq!(e1, vec![libc::ETIMEDOUT]);
    let (abandoned, e2) = connector(&["tcp", &target, "--nonblock", "--wait-ms", "1500"]);
    assert_eq!(e2, vec![libc::ETIMEDOUT], "the client gave up");
    let filler_pid = filler.id();
    signal(&filler, libc::SIGKILL);
    let _ = finish(filler);
    // SAFETY: our own descriptor.
    unsafe { libc::close(fd) };
    let out = tracer.stop();
    assert_clean(&out);
    assert_eq!(
        only(&out.events, filler_pid)["tracer"]["result"],
        "connected"
    );
    let ev = only(&out.events, timed_out);
    assert_eq!(ev["tracer"]["result"], "timed_out");
    assert_eq!(ev["error"]["code"], "ETIMEDOUT");
    let d = duration_s(ev);
    assert!((2.5..4.5).contains(&d), "SYN + 1 retransmission: {d} s");
    let ev = only(&out.events, abandoned);
    assert_eq!(ev["tracer"]["result"], "aborted");
    let d = duration_s(ev);
    assert!((1.4..2.5).contains(&d), "the client's 1.5 s: {d} s");
}

/// IPv6 link-local with a zone. A link-local address needs an interface:
/// without a scope id tcp_v6_connect() returns EINVAL before any SYN; with
/// `%1` (lo, whose index is 1 in every namespace) it goes out on lo. The
/// address fe80::1 is assigned to lo in a test namespace (never on the
/// host), where nothing listens on the port.
/// Expected: with the zone, one `refused` event, destination `fe80::1`
/// (the zone is not part of the event), network.type ipv6; without it, one
/// `failed` event (no SYN was sent; socket mode cannot see the errno),
/// written while the tracer runs: no socket event follows such a connect(),
/// and userspace finds the attempt a second later, not only at shutdown.
#[test]
fn ipv6_link_local_with_a_zone() {
    let ns = NetNs::new(13);
    tracer_tests::sh(&format!(
        "ip -n {} addr add fe80::1/64 dev lo nodad",
        ns.name
    ));
    let tracer = Tracer::start(&[]);
    let run = |addr: &str| {
        let mut cmd = ns.command(connector_bin().to_str().expect("path"));
        cmd.args(["tcp", addr]).stdout(Stdio::piped());
        let child = cmd.spawn().expect("connector in the namespace");
        let pid = child.id();
        let stdout = finish(child);
        (pid, errnos(&stdout))
    };
    let (zoned, e1) = run("[fe80::1%1]:7200");
    assert_eq!(e1, vec![libc::ECONNREFUSED]);
    let (bare, e2) = run("[fe80::1]:7200");
    assert_eq!(e2, vec![libc::EINVAL]);
    // Bounded: 50 polls of 100 ms.
    let mut written = Vec::new();
    for _ in 0..50 {
        written = tracer_tests::read_events(&tracer.output);
        if !attempts_of(&written, bare).is_empty() {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let ev = only(&written, bare);
    assert_eq!(
        ev["tracer"]["result"], "failed",
        "written while running: {ev}"
    );
    let out = tracer.stop();
    assert_clean(&out);
    let ev = only(&out.events, zoned);
    assert_eq!(ev["tracer"]["result"], "refused");
    assert_eq!(ev["destination"]["ip"], "fe80::1");
    assert_eq!(ev["network"]["type"], "ipv6");
    let ev = only(&out.events, bare);
    assert_eq!(ev["tracer"]["result"], "failed", "{ev}");
}

/// An IPv4-mapped address on a dual-stack AF_INET6 socket (IPV6_V6ONLY off,
/// the default) to a v4 listener: the kernel hands the connect to
/// tcp_v4_connect (cgroup/connect6 still runs, with the mapped address).
/// Expected: one `connected` event, destination 127.0.0.1, network.type
/// ipv4, a source port.
#[test]
fn ipv4_mapped_connect_on_a_dual_stack_socket() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let tracer = Tracer::start(&[]);
    let (pid, e) = connector(&["tcp", &format!("[::ffff:127.0.0.1]:{port}")]);
    assert_eq!(e, vec![0]);
    let out = tracer.stop();
    assert_clean(&out);
    let ev = only(&out.events, pid);
    assert_eq!(ev["tracer"]["result"], "connected");
    assert_eq!(ev["destination"]["ip"], "127.0.0.1");
    assert_eq!(ev["destination"]["port"], port);
    assert_eq!(ev["network"]["type"], "ipv4");
    assert!(ev["source"]["port"].as_u64().is_some_and(|p| p > 0));
    drop(listener);
}
