//! Privileged integration tests: the real tracer binary, the real kernel,
//! real eBPF programs. Each test asserts only on the events of processes it
//! started itself (by pid), so other activity on the node cannot confuse it.
//! Run by `cargo xtask test` as root with --test-threads=1.

use std::{net::TcpListener, thread, time::Duration};

use serde_json::Value;
use tracer_tests::{attempts_of, closed_port, connector, sh, NetNs, Tracer};

fn only(events: &[Value], pid: u32) -> &Value {
    let mine = attempts_of(events, pid);
    assert_eq!(
        mine.len(),
        1,
        "expected exactly one event for pid {pid}, got {mine:#?}"
    );
    mine[0]
}

fn assert_common(ev: &Value, pid: u32) {
    assert_eq!(ev["event"]["kind"], "event");
    assert_eq!(ev["event"]["category"][0], "network");
    assert_eq!(ev["event"]["action"], "connect");
    assert_eq!(ev["process"]["pid"], pid);
    assert_eq!(ev["process"]["name"], "connector");
    assert!(ev["process"]["thread"]["id"].as_u64().is_some());
    assert!(ev["@timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(ev["tracer"]["schema_version"], 1);
    assert!(ev["tracer"]["cgroup"]["id"].as_u64().is_some());
}

#[test]
fn blocking_refusal_on_loopback() {
    let port = closed_port();
    let tracer = Tracer::start(&[]);
    // Lingers so /proc can still be read (executable, parent) after the
    // attempt, as a real client does while it reports its error.
    let (pid, errnos) = connector(&["tcp", &format!("127.0.0.1:{port}"), "--linger-ms", "300"]);
    assert_eq!(errnos, vec![libc::ECONNREFUSED]);
    let out = tracer.stop();
    assert!(
        out.status.success(),
        "tracer exit: {:?} {}",
        out.status,
        out.stderr
    );
    let ev = only(&out.events, pid);
    assert_common(ev, pid);
    assert_eq!(ev["tracer"]["result"], "refused");
    assert_eq!(ev["event"]["outcome"], "failure");
    assert_eq!(ev["error"]["code"], "ECONNREFUSED");
    assert_eq!(ev["tracer"]["async"], false);
    assert_eq!(ev["destination"]["ip"], "127.0.0.1");
    assert_eq!(ev["destination"]["port"], port);
    assert_eq!(ev["source"]["ip"], "127.0.0.1");
    assert_eq!(ev["network"]["transport"], "tcp");
    assert_eq!(ev["network"]["type"], "ipv4");
    assert!(ev["event"]["duration"].as_u64().is_some());
    assert!(ev["process"]["executable"]
        .as_str()
        .is_some_and(|e| e.ends_with("connector")));
    assert!(ev["process"]["parent"]["pid"].as_u64().is_some());
    assert!(
        out.stderr.contains("stopped"),
        "summary on stderr: {}",
        out.stderr
    );
}

#[test]
fn success_to_a_loopback_listener() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let tracer = Tracer::start(&[]);
    let (pid, errnos) = connector(&["tcp", &format!("127.0.0.1:{port}")]);
    assert_eq!(errnos, vec![0]);
    let out = tracer.stop();
    let ev = only(&out.events, pid);
    assert_common(ev, pid);
    assert_eq!(ev["tracer"]["result"], "connected");
    assert_eq!(ev["event"]["outcome"], "success");
    assert!(ev.get("error").is_none(), "no error on success: {ev}");
    assert!(ev["source"]["port"].as_u64().is_some_and(|p| p > 0));
    drop(listener);
}

#[test]
fn non_blocking_refusal() {
    let port = closed_port();
    let tracer = Tracer::start(&[]);
    let (pid, errnos) = connector(&["tcp", &format!("127.0.0.1:{port}"), "--nonblock"]);
    assert_eq!(errnos, vec![libc::ECONNREFUSED]);
    let out = tracer.stop();
    let ev = only(&out.events, pid);
    assert_eq!(ev["tracer"]["result"], "refused");
    assert_eq!(ev["tracer"]["async"], true);
    assert_eq!(ev["error"]["code"], "ECONNREFUSED");
}

#[test]
fn ipv6_refusal() {
    let port = {
        let l = TcpListener::bind("[::1]:0").expect("bind ::1");
        l.local_addr().expect("addr").port()
    };
    let tracer = Tracer::start(&[]);
    let (pid, errnos) = connector(&["tcp", &format!("[::1]:{port}")]);
    assert_eq!(errnos, vec![libc::ECONNREFUSED]);
    let out = tracer.stop();
    let ev = only(&out.events, pid);
    assert_eq!(ev["tracer"]["result"], "refused");
    assert_eq!(ev["destination"]["ip"], "::1");
    assert_eq!(ev["network"]["type"], "ipv6");
    // The source comes from the socket's IPv6 address (BTF offset).
    assert_eq!(ev["source"]["ip"], "::1");
    assert!(ev["source"]["port"].as_u64().is_some_and(|p| p > 0));
}

#[test]
fn ipv4_mapped_ipv6_is_reported_as_ipv4() {
    let port = closed_port();
    let tracer = Tracer::start(&[]);
    let (pid, errnos) = connector(&["tcp", &format!("[::ffff:127.0.0.1]:{port}")]);
    assert_eq!(errnos, vec![libc::ECONNREFUSED]);
    let out = tracer.stop();
    let ev = only(&out.events, pid);
    assert_eq!(ev["destination"]["ip"], "127.0.0.1");
    assert_eq!(ev["network"]["type"], "ipv4");
    assert_eq!(ev["source"]["ip"], "127.0.0.1");
}

/// The first SYN is dropped in the test host; the retransmission (about
/// 1 s later) is answered with a reset, which the kernel processes in
/// softirq context where the current task is unrelated. The event must
/// still name our process.
#[test]
fn refusal_after_a_retransmitted_syn_in_softirq() {
    let ns = NetNs::new(1);
    ns.nft(
        "table inet t {
            set seen { type ipv4_addr . inet_service; timeout 60s; }
            chain input {
                type filter hook input priority 0;
                tcp dport 7000 tcp flags & (syn|ack) == syn ip saddr . tcp sport @seen accept
                tcp dport 7000 tcp flags & (syn|ack) == syn add @seen { ip saddr . tcp sport } drop
            }
        }",
    );
    ns.assert_routed();
    let tracer = Tracer::start(&[]);
    let (pid, errnos) = connector(&[
        "tcp",
        &format!("{}:7000", ns.addr),
        "--nonblock",
        "--wait-ms",
        "5000",
    ]);
    assert_eq!(errnos, vec![libc::ECONNREFUSED]);
    let out = tracer.stop();
    let ev = only(&out.events, pid);
    assert_eq!(ev["tracer"]["result"], "refused");
    assert_eq!(ev["tracer"]["async"], true);
    assert_eq!(ev["process"]["name"], "connector");
    assert_eq!(ev["destination"]["ip"], ns.addr.as_str());
    let duration = ev["event"]["duration"].as_u64().expect("duration");
    assert!(
        duration > 500_000_000,
        "the refusal came after a retransmission: {duration} ns"
    );
}

/// Every SYN is dropped; the client gives up after 1.5 s and closes, as a
/// Go dial timeout does.
#[test]
fn attempt_abandoned_by_the_client() {
    let ns = NetNs::new(2);
    ns.drop_syns(7001);
    ns.assert_routed();
    let tracer = Tracer::start(&[]);
    let (pid, errnos) = connector(&[
        "tcp",
        &format!("{}:7001", ns.addr),
        "--nonblock",
        "--wait-ms",
        "1500",
    ]);
    assert_eq!(errnos, vec![libc::ETIMEDOUT], "the client gave up");
    let out = tracer.stop();
    let ev = only(&out.events, pid);
    assert_eq!(ev["tracer"]["result"], "aborted");
    assert_eq!(ev["event"]["outcome"], "failure");
    assert!(
        ev["error"].get("code").is_none(),
        "no errno for an abort: {ev}"
    );
    let duration = ev["event"]["duration"].as_u64().expect("duration");
    assert!(
        duration >= 1_400_000_000,
        "closed after 1.5 s: {duration} ns"
    );
}

/// An attempt still in flight when the tracer stops is flushed as pending.
#[test]
fn in_flight_attempts_are_flushed_as_pending() {
    let ns = NetNs::new(3);
    ns.drop_syns(7002);
    ns.assert_routed();
    let tracer = Tracer::start(&[]);
    let target = format!("{}:7002", ns.addr);
    let client =
        thread::spawn(move || connector(&["tcp", &target, "--nonblock", "--wait-ms", "4000"]));
    thread::sleep(Duration::from_millis(1000));
    let out = tracer.stop();
    let (pid, _) = client.join().expect("client");
    let ev = only(&out.events, pid);
    assert_eq!(ev["tracer"]["result"], "pending");
    assert_eq!(ev["event"]["outcome"], "unknown");
    assert!(out.stderr.contains("1 still pending"), "{}", out.stderr);
}

#[test]
fn udp_connect_in_syscall_mode() {
    let tracer = Tracer::start(&["--mode", "syscall"]);
    let (pid, errnos) = connector(&["udp", "127.0.0.1:9"]);
    assert_eq!(errnos, vec![0]);
    let out = tracer.stop();
    let ev = only(&out.events, pid);
    assert_eq!(ev["network"]["transport"], "udp");
    assert_eq!(ev["tracer"]["result"], "connected");
    assert_eq!(ev["tracer"]["mode"], "syscall");
    assert_eq!(ev["destination"]["port"], 9);
}

#[test]
fn unix_connect_to_a_missing_path_in_syscall_mode() {
    let path = format!("/tmp/trt-missing-{}.sock", std::process::id());
    let tracer = Tracer::start(&["--mode", "syscall"]);
    let (pid, errnos) = connector(&["unix", &path]);
    assert_eq!(errnos, vec![libc::ENOENT]);
    let out = tracer.stop();
    let ev = only(&out.events, pid);
    assert_eq!(ev["network"]["transport"], "unix");
    assert_eq!(ev["destination"]["address"], path.as_str());
    assert_eq!(ev["tracer"]["result"], "failed");
    assert_eq!(ev["error"]["code"], "ENOENT");
}

#[test]
fn syscall_mode_keeps_tcp_and_knows_einprogress() {
    let port = closed_port();
    let tracer = Tracer::start(&["--mode", "syscall"]);
    let (pid, _) = connector(&["tcp", &format!("127.0.0.1:{port}"), "--nonblock"]);
    let (pid2, _) = connector(&["tcp", &format!("127.0.0.1:{port}")]);
    let out = tracer.stop();
    let ev = only(&out.events, pid);
    assert_eq!(ev["tracer"]["result"], "refused");
    assert_eq!(ev["tracer"]["async"], true);
    let ev = only(&out.events, pid2);
    assert_eq!(ev["tracer"]["result"], "refused");
    assert_eq!(ev["tracer"]["async"], false);
}

#[test]
fn exactly_one_event_per_attempt() {
    let port = closed_port();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let open = listener.local_addr().expect("addr").port();
    let tracer = Tracer::start(&[]);
    let (pid, errnos) = connector(&["tcp", &format!("127.0.0.1:{port}"), "--count", "25"]);
    assert_eq!(errnos.len(), 25);
    let (pid2, errnos2) = connector(&[
        "tcp",
        &format!("127.0.0.1:{open}"),
        "--nonblock",
        "--count",
        "25",
    ]);
    assert!(errnos2.iter().all(|e| *e == 0));
    let out = tracer.stop();
    let refused = attempts_of(&out.events, pid);
    assert_eq!(refused.len(), 25, "one event per refused attempt");
    assert!(refused.iter().all(|e| e["tracer"]["result"] == "refused"));
    let ok = attempts_of(&out.events, pid2);
    assert_eq!(ok.len(), 25, "one event per successful attempt");
    assert!(ok.iter().all(|e| e["tracer"]["result"] == "connected"));
    // The stream ends with the lost-events record, even when nothing was lost.
    let last = out.events.last().expect("some events");
    assert_eq!(last["event"]["action"], "lost-events-final");
    assert_eq!(last["tracer"]["lost"]["total"], 0);
    drop(listener);
}

#[test]
fn pid_filter() {
    let port = closed_port();
    // Start a connector that waits for a signal? Simpler: filter on a pid we
    // know in advance — our own test process — and check a child is excluded.
    let me = std::process::id().to_string();
    let tracer = Tracer::start(&["--pid", &me]);
    let (child, _) = connector(&["tcp", &format!("127.0.0.1:{port}")]);
    let _ = std::net::TcpStream::connect(("127.0.0.1", port));
    let out = tracer.stop();
    assert!(
        attempts_of(&out.events, child).is_empty(),
        "other pids are filtered out"
    );
    let mine = attempts_of(&out.events, std::process::id());
    assert_eq!(
        mine.len(),
        1,
        "our own attempt is traced: {:#?}",
        out.events
    );
    assert!(out
        .events
        .iter()
        .filter(|e| e["event"]["action"] == "connect")
        .all(|e| e["process"]["pid"] == std::process::id()));
}

#[test]
fn comm_filter() {
    let port = closed_port();
    let tracer = Tracer::start(&["--comm", "connector"]);
    let (child, _) = connector(&["tcp", &format!("127.0.0.1:{port}")]);
    let _ = std::net::TcpStream::connect(("127.0.0.1", port));
    let out = tracer.stop();
    assert_eq!(attempts_of(&out.events, child).len(), 1);
    assert!(attempts_of(&out.events, std::process::id()).is_empty());
    assert!(out
        .events
        .iter()
        .filter(|e| e["event"]["action"] == "connect")
        .all(|e| e["process"]["name"] == "connector"));
}

#[test]
fn failed_only_filter() {
    let port = closed_port();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let open = listener.local_addr().expect("addr").port();
    let tracer = Tracer::start(&["--failed-only"]);
    let (ok_pid, _) = connector(&["tcp", &format!("127.0.0.1:{open}")]);
    let (bad_pid, _) = connector(&["tcp", &format!("127.0.0.1:{port}")]);
    let out = tracer.stop();
    assert!(
        attempts_of(&out.events, ok_pid).is_empty(),
        "success filtered out"
    );
    assert_eq!(attempts_of(&out.events, bad_pid).len(), 1);
    assert!(out
        .events
        .iter()
        .filter(|e| e["event"]["action"] == "connect")
        .all(|e| e["tracer"]["result"] != "connected"));
    drop(listener);
}

#[test]
fn text_format_is_one_line_per_attempt() {
    let port = closed_port();
    let tracer = Tracer::start(&["--format", "text"]);
    let output = tracer.output.clone();
    let (pid, _) = connector(&["tcp", &format!("127.0.0.1:{port}")]);
    let (status, _) = tracer.stop_raw();
    assert!(status.success());
    let text = std::fs::read_to_string(&output).expect("read text output");
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(&format!("connector[{pid}]")))
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(lines[0].contains("REFUSED"));
    assert!(lines[0].contains(&format!("127.0.0.1:{port}")));
    assert!(lines[0].contains("connection refused"));
}

#[test]
fn bad_input_gets_clear_errors() {
    let bin = tracer_tests::tracer_bin();
    let out = std::process::Command::new(&bin)
        .args(["trace", "--no-such-flag"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "unknown flag: exit 2");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Usage"));

    let out = std::process::Command::new(&bin)
        .args(["trace", "--output", "/nonexistent-dir/x.json"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent-dir/x.json"),
        "names the path: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    // Without privileges: drop to an unprivileged uid with setpriv (util-linux).
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(&bin)
        .args(["trace", "--output", "/dev/null"])
        .output()
        .expect("run setpriv");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("CAP_BPF") && err.contains("root"),
        "says what is missing: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn exits_by_itself_when_the_reader_goes_away() {
    let port = closed_port();
    let bin = tracer_tests::tracer_bin();
    let cmd = format!(
        "{} trace | head -1 > /tmp/trt-head-{}.txt",
        bin.display(),
        std::process::id()
    );
    let mut shell = std::process::Command::new("sh")
        .args(["-c", &cmd])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start pipeline");
    // Generate attempts until the pipeline ends (bounded: at most 30 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        let _ = std::net::TcpStream::connect(("127.0.0.1", port));
        if let Ok(Some(status)) = shell.try_wait() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "tracer did not exit after head -1"
        );
        thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success());
    let mut err = String::new();
    use std::io::Read;
    shell
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read");
    assert!(!err.contains("panicked"), "{err}");
    let line = std::fs::read_to_string(format!("/tmp/trt-head-{}.txt", std::process::id()))
        .expect("head output");
    serde_json::from_str::<Value>(line.trim()).expect("the one line is complete JSON");
    let _ = sh(&format!("rm -f /tmp/trt-head-{}.txt", std::process::id()));
}

/// A socket connecting to its own address makes a simultaneous open
/// (SYN_SENT -> SYN_RECV -> ESTABLISHED). It is reported as connected, and
/// with --debug-ebpf the eBPF side says what it saw, through aya-log; without
/// the flag it says nothing.
#[test]
fn simultaneous_open_is_connected_and_debug_ebpf_reports_it() {
    for debug in [true, false] {
        let args: &[&str] = if debug { &["--debug-ebpf"] } else { &[] };
        let tracer = Tracer::start(args);
        let (pid, errnos) = connector(&["self"]);
        assert_eq!(errnos, vec![0], "self-connect succeeds");
        let out = tracer.stop();
        let ev = only(&out.events, pid);
        assert_eq!(ev["tracer"]["result"], "connected");
        let line = format!("tracer: ebpf warning: simultaneous open: tracked socket of pid {pid}");
        assert_eq!(
            out.stderr.contains(&line),
            debug,
            "--debug-ebpf {debug}: {}",
            out.stderr
        );
    }
}
