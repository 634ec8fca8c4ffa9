//! `tracer trace --dns`: names behind addresses, and failed lookups as
//! events of their own (issue #11, part 2, test 5).
//!
//! Real parts: Debian's dnsmasq runs in a test host (a network namespace
//! the test creates) as the only resolver of the test's clients. Each
//! client runs in a private mount namespace with its own resolv.conf bind-
//! mounted over /etc/resolv.conf, and resolves with glibc (`getent`,
//! `curl`), so the queries are the ones a real program sends.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use tracer_tests::{
    attempts_of, connector_bin, connector_with, read_events, temp_dir, terminate, NetNs, Tracer,
};

/// dnsmasq answering only from its own records, in `ns`, on port 53 of
/// the test host's address. Every other name gets NXDOMAIN.
struct Dnsmasq {
    child: Child,
}

impl Dnsmasq {
    /// `extra`: more dnsmasq options.
    fn start(ns: &NetNs, records: &[(&str, &str)], extra: &[&str], dir: &Path) -> Dnsmasq {
        let mut cmd = ns.command("dnsmasq");
        cmd.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--user=root",
            "--bind-interfaces",
            "--local=/#/",
        ])
        .arg(format!("--listen-address={}", ns.addr))
        .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()))
        .arg("--log-facility=-")
        .arg("--log-queries");
        for (name, ip) in records {
            cmd.arg(format!("--host-record={name},{ip}"));
        }
        cmd.args(extra);
        let log = std::fs::File::create(dir.join("dnsmasq.log")).expect("dnsmasq log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start dnsmasq (cargo xtask setup installs dnsmasq-base)");
        let dnsmasq = Dnsmasq { child };
        dnsmasq.wait_listening(ns);
        dnsmasq
    }

    /// dnsmasq binds after start-up: wait (at most 10 s) until its UDP
    /// socket on port 53 exists in the namespace.
    fn wait_listening(&self, ns: &NetNs) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = Command::new("ip")
                .args(["netns", "exec", &ns.name, "ss", "-lun"])
                .output()
                .expect("ss");
            if String::from_utf8_lossy(&out.stdout).contains(&format!("{}:53", ns.addr)) {
                return;
            }
            assert!(Instant::now() < deadline, "dnsmasq did not listen in 10 s");
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(5));
    }
}

/// A resolv.conf naming only `server`, one short try, no search list.
fn resolv_conf(dir: &Path, server: &str) -> PathBuf {
    let path = dir.join("resolv.conf");
    std::fs::write(
        &path,
        format!("nameserver {server}\noptions timeout:1 attempts:1\n"),
    )
    .expect("write resolv.conf");
    path
}

/// `program args...` in a private mount namespace whose /etc/resolv.conf
/// is `resolv`. The namespace's sh execs the program, so the child's pid is
/// the program's.
fn with_resolver(resolv: &Path, program: &str, args: &[&str]) -> Command {
    let script = format!(
        "mount --bind {} /etc/resolv.conf || exit 97; exec \"$0\" \"$@\"",
        resolv.display()
    );
    let mut cmd = Command::new("unshare");
    cmd.args([
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
        program,
    ])
    .args(args);
    cmd
}

/// Run to completion; returns the pid and the exit code.
fn run(mut cmd: Command) -> (u32, Option<i32>) {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn client");
    let pid = child.id();
    let out = child.wait_with_output().expect("wait client");
    (pid, out.status.code())
}

fn lookups_of(events: &[Value], pid: u32) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| e["event"]["action"] == "dns-query" && e["process"]["pid"] == pid)
        .collect()
}

/// Read the tracer's output until `found` holds (at most `limit`).
fn wait_for(tracer: &Tracer, limit: Duration, found: impl Fn(&[Value]) -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        if tracer.output.exists() && found(&read_events(&tracer.output)) {
            return;
        }
        if Instant::now() > deadline {
            return;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// curl resolves a name through dnsmasq and dials the address it got: the
/// connect event carries the name it asked for, learnt from the answer this
/// very process received. Another process that dials the same address
/// without a lookup gets the name too, marked as learnt from the node.
#[test]
fn a_looked_up_name_names_the_connect() {
    let ns = NetNs::new(20);
    let dir = temp_dir("dnsname");
    let name = "registry.trt-dns.test";
    let _dnsmasq = Dnsmasq::start(&ns, &[(name, &ns.addr)], &[], &dir);
    let resolv = resolv_conf(&dir, &ns.addr);
    let tracer = Tracer::start(&["--dns"]);

    // Port 9 (discard) has no listener in the test host: the connect is
    // refused, which is enough to carry the name.
    let url = format!("http://{name}:9/");
    let (curl, _) = run(with_resolver(
        &resolv,
        "curl",
        &["-s", "--max-time", "3", &url],
    ));
    let (other, _) = connector_with(Command::new(connector_bin()).args([
        "tcp",
        &format!("{}:9", ns.addr),
        "--linger-ms",
        "200",
    ]));
    let out = tracer.stop();

    let dials = attempts_of(&out.events, curl);
    assert!(!dials.is_empty(), "no connect of curl: {:#?}", out.events);
    let dial = dials[0];
    assert_eq!(dial["destination"]["ip"], ns.addr.as_str(), "{dial}");
    assert_eq!(dial["destination"]["domain"], name, "{dial}");
    assert_eq!(dial["tracer"]["domain_from"], "process", "{dial}");
    assert_eq!(dial["tracer"]["result"], "refused", "{dial}");

    let theirs = attempts_of(&out.events, other);
    assert_eq!(theirs.len(), 1, "{:#?}", out.events);
    assert_eq!(theirs[0]["destination"]["domain"], name, "{}", theirs[0]);
    assert_eq!(theirs[0]["tracer"]["domain_from"], "node", "{}", theirs[0]);

    // A successful lookup is no event of its own.
    assert!(
        lookups_of(&out.events, curl).is_empty(),
        "{:#?}",
        out.events
    );
}

/// An unknown name: dnsmasq answers NXDOMAIN, and the lookup becomes a
/// dns-query event naming the process, the name, the type and the code.
/// A server that refuses is one too, with its own code; and a lookup
/// over TCP is read as well as one over UDP.
#[test]
fn an_unknown_name_is_an_nxdomain_event() {
    let ns = NetNs::new(21);
    let dir = temp_dir("dnsnx");
    // Names under refused.trt-dns.test go to "the standard servers", of
    // which there are none (--no-resolv): dnsmasq answers REFUSED.
    let _dnsmasq = Dnsmasq::start(
        &ns,
        &[("known.trt-dns.test", &ns.addr)],
        &["--server=/refused.trt-dns.test/#"],
        &dir,
    );
    let resolv = resolv_conf(&dir, &ns.addr);
    let tracer = Tracer::start(&["--dns"]);

    let name = "nosuch.trt-dns.test";
    let (getent, code) = run(with_resolver(&resolv, "getent", &["ahostsv4", name]));
    // getent: 2 = key not found.
    assert_eq!(code, Some(2), "getent found {name}?");
    let (refuser, code) = run(with_resolver(
        &resolv,
        "getent",
        &["ahostsv4", "x.refused.trt-dns.test"],
    ));
    assert_eq!(code, Some(2), "getent resolved a refused name?");
    // Over TCP (resolv.conf `options use-vc`): the message follows a
    // 2-byte length prefix in the stream.
    let tcp_resolv = dir.join("resolv-tcp.conf");
    std::fs::write(
        &tcp_resolv,
        format!(
            "nameserver {}\noptions timeout:1 attempts:1 use-vc\n",
            ns.addr
        ),
    )
    .expect("write resolv.conf");
    let tcp_name = "nosuch-tcp.trt-dns.test";
    let (tcp_getent, code) = run(with_resolver(
        &tcp_resolv,
        "getent",
        &["ahostsv4", tcp_name],
    ));
    assert_eq!(code, Some(2), "getent found {tcp_name}?");
    wait_for(&tracer, Duration::from_secs(5), |events| {
        !lookups_of(events, getent).is_empty()
            && !lookups_of(events, refuser).is_empty()
            && !lookups_of(events, tcp_getent).is_empty()
    });
    let out = tracer.stop();

    let lookups = lookups_of(&out.events, getent);
    assert_eq!(lookups.len(), 1, "{:#?}", out.events);
    let ev = lookups[0];
    assert_eq!(ev["dns"]["question"]["name"], name, "{ev}");
    assert_eq!(ev["dns"]["question"]["type"], "A", "{ev}");
    assert_eq!(ev["dns"]["response_code"], "NXDOMAIN", "{ev}");
    assert_eq!(ev["tracer"]["result"], "nxdomain", "{ev}");
    assert_eq!(ev["event"]["outcome"], "failure", "{ev}");
    assert_eq!(ev["process"]["name"], "getent", "{ev}");
    assert_eq!(ev["destination"]["ip"], ns.addr.as_str(), "{ev}");
    assert_eq!(ev["destination"]["port"], 53, "{ev}");
    assert!(ev["event"]["duration"].as_u64().is_some(), "{ev}");
    let message = ev["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(&format!("getent (pid {getent}")),
        "{message}"
    );
    assert!(
        message.contains(&format!("looked up {name} (A) at {}:53", ns.addr))
            && message.ends_with("the name does not exist (NXDOMAIN)"),
        "{message}"
    );
    // The query really went to dnsmasq, and it said so.
    let log = std::fs::read_to_string(dir.join("dnsmasq.log")).unwrap_or_default();
    assert!(log.contains(&format!("query[A] {name}")), "{log}");

    let refused = lookups_of(&out.events, refuser);
    assert_eq!(refused.len(), 1, "{:#?}", out.events);
    let ev = refused[0];
    assert_eq!(
        ev["dns"]["question"]["name"], "x.refused.trt-dns.test",
        "{ev}"
    );
    assert_eq!(ev["dns"]["response_code"], "REFUSED", "{ev}");
    assert_eq!(ev["tracer"]["result"], "refused", "{ev}");
    assert!(
        ev["message"]
            .as_str()
            .is_some_and(|m| m.ends_with("the DNS server refused to answer (REFUSED)")),
        "{ev}"
    );

    let over_tcp = lookups_of(&out.events, tcp_getent);
    assert_eq!(over_tcp.len(), 1, "{:#?}", out.events);
    let ev = over_tcp[0];
    assert_eq!(ev["network"]["transport"], "tcp", "{ev}");
    assert_eq!(ev["dns"]["question"]["name"], tcp_name, "{ev}");
    assert_eq!(ev["dns"]["response_code"], "NXDOMAIN", "{ev}");
}

/// A resolver that never answers (nftables drops port 53 in the test
/// host): after the documented bound the query is an event of its own.
#[test]
fn a_resolver_that_does_not_answer_gives_a_timeout_event() {
    let ns = NetNs::new(22);
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
    let dir = temp_dir("dnsdead");
    let resolv = resolv_conf(&dir, &ns.addr);
    let tracer = Tracer::start(&["--dns"]);

    let name = "dead.trt-dns.test";
    let (getent, code) = run(with_resolver(&resolv, "getent", &["ahostsv4", name]));
    assert_ne!(code, Some(0), "getent resolved {name} with a dead server?");
    // The tracer reports after 5 s without an answer, at its next 1 s tick.
    wait_for(&tracer, Duration::from_secs(15), |events| {
        !lookups_of(events, getent).is_empty()
    });
    let out = tracer.stop();

    let lookups = lookups_of(&out.events, getent);
    assert_eq!(lookups.len(), 1, "{:#?}", out.events);
    let ev = lookups[0];
    assert_eq!(ev["tracer"]["result"], "no_answer", "{ev}");
    assert_eq!(ev["dns"]["type"], "query", "{ev}");
    assert_eq!(ev["dns"]["question"]["name"], name, "{ev}");
    assert!(ev["dns"].get("response_code").is_none(), "{ev}");
    assert!(ev["event"].get("duration").is_none(), "{ev}");
    let message = ev["message"].as_str().unwrap_or_default();
    assert!(message.contains("no answer within 5 s"), "{message}");
    // The query did reach the test host (and was dropped there).
    let rules = tracer_tests::sh(&format!("ip netns exec {} nft list ruleset", ns.name));
    assert!(
        rules.contains("udp dport 53 counter packets ")
            && !rules.contains("udp dport 53 counter packets 0 "),
        "{rules}"
    );
}

/// The pinned lines of the writers (tracer-user/src/sink/golden*.ndjson),
/// the dns-query ones included, are valid against the strict schema.
#[test]
fn the_golden_lines_match_the_schema() {
    let sink = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tracer-user/src/sink");
    let mut checked = 0;
    for file in ["golden.ndjson", "golden_dns.ndjson"] {
        let text = std::fs::read_to_string(sink.join(file)).expect("golden file");
        for line in text.lines().filter(|l| l.starts_with('{')) {
            let event: Value = serde_json::from_str(line).expect("JSON");
            tracer_tests::assert_matches_schema(&event);
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} golden lines");
}

/// A resolver that does not connect() its UDP socket (Go's and musl's may
/// sendto() each server instead) is seen through cgroup/sendmsg4: the
/// failed lookup is still this process's. Python sends one hand-made A
/// query with sendto() and waits for the answer.
#[test]
fn an_unconnected_sendto_lookup_is_attributed_to_its_process() {
    let ns = NetNs::new(23);
    let dir = temp_dir("dnssendto");
    let _dnsmasq = Dnsmasq::start(&ns, &[("known.trt-dns.test", &ns.addr)], &[], &dir);
    let tracer = Tracer::start(&["--dns"]);

    let name = "sendto.trt-dns.test";
    let script = r#"
import socket, struct, sys
name, server = sys.argv[1], sys.argv[2]
q = struct.pack(">HHHHHH", 0x5151, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
q += struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.sendto(q, (server, 53))
answer = s.recv(512)
sys.exit(answer[3] & 15)
"#;
    let mut cmd = Command::new("python3");
    cmd.args(["-c", script, name, &ns.addr]);
    let (pid, code) = run(cmd);
    assert_eq!(code, Some(3), "dnsmasq answers NXDOMAIN");
    wait_for(&tracer, Duration::from_secs(5), |events| {
        !lookups_of(events, pid).is_empty()
    });
    let out = tracer.stop();

    let lookups = lookups_of(&out.events, pid);
    assert_eq!(lookups.len(), 1, "{:#?}", out.events);
    let ev = lookups[0];
    assert_eq!(ev["process"]["name"], "python3", "{ev}");
    assert_eq!(ev["dns"]["id"], "20817", "{ev}");
    assert_eq!(ev["dns"]["question"]["name"], name, "{ev}");
    assert_eq!(ev["dns"]["response_code"], "NXDOMAIN", "{ev}");
    assert_eq!(ev["destination"]["ip"], ns.addr.as_str(), "{ev}");
}
