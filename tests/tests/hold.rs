//! Where the tracer used to break: a node as it boots (no tracefs), a
//! short-lived client with a proxy, a dead DNS server. Privileged; run by
//! `cargo xtask test` as root with --test-threads=1.

use std::{
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use tracer_tests::{
    attempts_of, closed_port, connector, connector_bin, connector_with, in_private_mounts, sh,
    temp_dir, NetNs, Tracer, FRESH_NODE,
};

/// tracefs mounts in this (the test's) mount namespace.
fn tracefs_mounts() -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .filter(|l| l.contains(" - tracefs "))
        .count()
}

/// The tracer becomes ready where nobody mounted tracefs or debugfs, and
/// traces a refused connect.
fn ready_on_a_fresh_node(mode: &str) {
    let mounts_before = tracefs_mounts();
    let port = closed_port();
    let tracer = Tracer::start_wrapped(&in_private_mounts(FRESH_NODE), &["--mode", mode]);
    let (pid, errnos) = connector(&["tcp", &format!("127.0.0.1:{port}"), "--linger-ms", "200"]);
    assert_eq!(errnos, vec![libc::ECONNREFUSED]);
    let out = tracer.stop();
    assert!(out.status.success(), "{:?} {}", out.status, out.stderr);
    assert!(out.stderr.contains("ready"), "{}", out.stderr);
    let mine = attempts_of(&out.events, pid);
    assert_eq!(mine.len(), 1, "{mine:#?}");
    assert_eq!(mine[0]["tracer"]["result"], "refused");
    assert_eq!(mine[0]["tracer"]["mode"], mode);
    // Whatever the tracer mounted stayed in its own namespace.
    assert_eq!(
        tracefs_mounts(),
        mounts_before,
        "a tracefs mount was left behind"
    );
}

#[test]
fn socket_mode_is_ready_without_tracefs() {
    ready_on_a_fresh_node("socket");
}

#[test]
fn syscall_mode_mounts_tracefs_privately_when_missing() {
    ready_on_a_fresh_node("syscall");
}

/// The attempts whose destination is `port` made by processes named `comm`.
fn dials_to<'a>(events: &'a [Value], comm: &str, port: u16) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| {
            e["event"]["action"] == "connect"
                && e["process"]["name"] == comm
                && e["destination"]["port"] == port
        })
        .collect()
}

fn assert_proxy_dial(ev: &Value, variable: &str) {
    let proxy = &ev["tracer"]["proxy"];
    assert_eq!(proxy["variable"], variable, "{ev}");
    assert_eq!(proxy["via"], true, "{ev}");
    assert_eq!(ev["tracer"]["result"], "refused", "{ev}");
    // Credentials never leave the tracer.
    assert!(!ev.to_string().contains("s3cret"), "{ev}");
}

/// The operator's first move on a node: `HTTPS_PROXY=... curl ...`, 20
/// times in an ordinary shell. curl dials the dead proxy, fails and exits
/// within milliseconds, before /proc/<pid>/environ could be read; the
/// kernel read its proxy variables at the connect.
#[test]
fn short_lived_curl_through_a_dead_proxy_keeps_its_verdict() {
    let port = closed_port();
    let tracer = Tracer::start(&[]);
    let script = "i=0; while [ $i -lt 20 ]; do curl -s -m 5 https://registry.invalid/v2/; i=$((i+1)); done; exit 0";
    let status = Command::new("sh")
        .args(["-c", script])
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .env_remove("https_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy")
        .env("HTTPS_PROXY", format!("http://ops:s3cret@127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .status()
        .expect("run the curl loop (apt-get install curl)");
    assert!(status.success());
    let out = tracer.stop();
    let curls = dials_to(&out.events, "curl", port);
    assert_eq!(curls.len(), 20, "one event per curl run: {curls:#?}");
    for ev in curls {
        assert_proxy_dial(ev, "HTTPS_PROXY");
    }
}

/// A client that exits the instant its connect is refused, 20 times.
#[test]
fn a_client_that_exits_right_after_a_refusal_keeps_its_verdict() {
    let port = closed_port();
    let tracer = Tracer::start(&[]);
    let mut pids = Vec::new();
    for _ in 0..20 {
        let (pid, errnos) = connector_with(
            Command::new(connector_bin())
                .args(["tcp", &format!("127.0.0.1:{port}"), "--nonblock"])
                .env_clear()
                .env("https_proxy", format!("http://ops:s3cret@127.0.0.1:{port}"))
                .env("NO_PROXY", "example.invalid"),
        );
        assert_eq!(errnos, vec![libc::ECONNREFUSED]);
        pids.push(pid);
    }
    let out = tracer.stop();
    for pid in pids {
        let mine = attempts_of(&out.events, pid);
        assert_eq!(mine.len(), 1, "{mine:#?}");
        assert_proxy_dial(mine[0], "https_proxy");
        assert_eq!(mine[0]["tracer"]["proxy_env"], "read");
    }
}

/// A DNS server that never answers (a test host that drops port 53) is the
/// only resolver the tracer has, and a process whose proxy is a name only
/// DNS could answer runs a connect storm. Draining must not wait for the
/// lookup: no event is lost, each says it cannot tell whether it dialled
/// the proxy and why, and another process's events keep flowing.
#[test]
fn a_dead_dns_server_never_stalls_the_drain() {
    let ns = NetNs::new(5);
    ns.nft(
        "table inet t {
            chain input {
                type filter hook input priority 0;
                udp dport 53 counter drop
                tcp dport 53 counter drop
            }
        }",
    );
    ns.assert_routed();
    let dir = temp_dir("deaddns");
    let resolv = dir.join("resolv.conf");
    // One 30 s try: far longer than the test waits for anything else.
    std::fs::write(
        &resolv,
        format!("nameserver {}\noptions timeout:30 attempts:1\n", ns.addr),
    )
    .expect("write resolv.conf");
    let script = format!(
        "mount --bind {} /etc/resolv.conf || exit 97; exec \"$0\" \"$@\"",
        resolv.display()
    );
    let tracer = Tracer::start_wrapped(&in_private_mounts(&script), &[]);

    let port = closed_port();
    let name = "proxy.trt-dead-dns.test";
    let storm_target = format!("127.0.0.1:{port}");
    let storm = thread::spawn(move || {
        connector_with(
            Command::new(connector_bin())
                .args(["tcp", &storm_target, "--count", "3000"])
                .env_clear()
                .env("HTTPS_PROXY", format!("http://{name}:{port}")),
        )
    });

    // Meanwhile another process's attempts must show up promptly: each
    // within 2 s, while the lookup blocks for 30 s.
    let other_port = closed_port();
    let mut others = Vec::new();
    for _ in 0..5 {
        let (pid, _) = connector(&["tcp", &format!("127.0.0.1:{other_port}")]);
        let started = Instant::now();
        loop {
            let text = std::fs::read_to_string(&tracer.output).unwrap_or_default();
            if text.contains(&format!("\"pid\":{pid},")) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "the event of pid {pid} did not appear within 2 s while DNS is dead"
            );
            thread::sleep(Duration::from_millis(10));
        }
        others.push(pid);
        thread::sleep(Duration::from_millis(200));
    }
    let (storm_pid, errnos) = storm.join().expect("storm");
    assert_eq!(errnos.len(), 3000);
    let out = tracer.stop();

    let stormed = attempts_of(&out.events, storm_pid);
    assert_eq!(stormed.len(), 3000, "no event lost");
    for ev in &stormed {
        let proxy = &ev["tracer"]["proxy"];
        assert_eq!(proxy["variable"], "HTTPS_PROXY", "{ev}");
        assert!(proxy["via"].is_null(), "via unknown while unresolved: {ev}");
        let why = proxy["unresolved"].as_str().unwrap_or_default();
        assert!(why.starts_with(&format!("{name}:{port}: ")), "{ev}");
        assert!(
            why.contains("still being resolved") || why.contains("more than 5 s"),
            "{ev}"
        );
    }
    for pid in others {
        assert_eq!(attempts_of(&out.events, pid).len(), 1);
    }
    let last = out.events.last().expect("events");
    assert_eq!(last["event"]["action"], "lost-events-final");
    assert_eq!(last["tracer"]["lost"]["total"], 0, "nothing lost");
    // The workers were still waiting on DNS; the tracer stopped anyway.
    assert!(out.status.success(), "{}", out.stderr);
    // The lookup really went to the dead server (and so nowhere else).
    let rules = sh(&format!("ip netns exec {} nft list ruleset", ns.name));
    let dropped: u64 = rules
        .split("packets ")
        .skip(1)
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    assert!(dropped > 0, "no DNS query reached the test host: {rules}");
}
