//! Short-lived clients keep their verdict (issue 20 §2): a process that
//! dials its proxy and exits at once is judged from the environment the
//! kernel captured, because no attempt is drained before the announcement
//! it depends on (`drain_events` in tracer-user/src/trace/mod.rs).
//!
//! As a new user would measure it: clients with `HTTPS_PROXY` naming the
//! proxy by a hosts-file name dial that (dead) proxy, 8 at a time, and at
//! least 99.9% of their attempts must say `via: true`. Once with `busybox
//! nc` (2,000 clients of about a millisecond each), once with curl (1,500)
//! while a connect storm loads the tracer. And 3,000 started 300 at a
//! time, in a namespace whose hosts file alone names the proxy. The clients and the tracer run in
//! a private mount namespace whose /etc/hosts names the proxy (the node's
//! hosts file, in a node's terms), so the machine's own file is untouched.
//! Privileged; run under the integration-test lock.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use tracer_tests::{
    assert_matches_schema, closed_port, connector_bin, in_private_mounts, temp_dir, terminate,
    Tracer,
};

/// The proxy's name, only in the test's hosts file.
const PROXY_NAME: &str = "deadproxy.test";

/// The hosts file of the test's mount namespace, and the script prefix
/// that puts it in place of /etc/hosts there.
fn hosts_file(dir: &Path) -> String {
    let hosts = dir.join("hosts");
    std::fs::write(
        &hosts,
        format!("127.0.0.1 localhost\n127.0.0.1 {PROXY_NAME}\n"),
    )
    .expect("write hosts file");
    format!("mount --bind {} /etc/hosts", hosts.display())
}

/// Run `script` in a private mount namespace prepared by `prepare`;
/// bounded by the clients themselves (each ends on a refused connect or
/// curl's --max-time).
fn in_namespace(prepare: &str, script: &str) {
    let status = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(format!("{prepare} && {script}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .expect("run the clients");
    // xargs exits 123 when clients failed, which they all do (refused).
    assert!(
        matches!(status.code(), Some(0 | 123)),
        "clients: {status:?}"
    );
}

/// The attempts of processes named `comm` to `port`, and how many of them
/// were judged `via: true`. Every line must match the schema.
fn judged(events: &[Value], comm: &str, port: u16) -> (usize, usize, Vec<String>) {
    let mut total = 0;
    let mut via = 0;
    let mut others = Vec::new();
    for ev in events {
        assert_matches_schema(ev);
        if ev["event"]["action"] != "connect"
            || ev["process"]["name"] != comm
            || ev["destination"]["port"] != port
        {
            continue;
        }
        total += 1;
        if ev["tracer"]["proxy"]["via"] == true {
            via += 1;
        } else if others.len() < 5 {
            others.push(ev.to_string());
        }
    }
    (total, via, others)
}

/// The tracer in a mount namespace with the test's hosts file.
fn tracer(prepare: &str, comms: &[&str]) -> Tracer {
    let mut args = Vec::new();
    for c in comms {
        args.extend(["--comm", c]);
    }
    Tracer::start_wrapped(
        &in_private_mounts(&format!("{prepare} && exec \"$0\" \"$@\"")),
        &args,
    )
}

/// `clients` short-lived `busybox nc` (under the name nc, its comm and
/// what `--comm` selects) in the mount namespace `prepare` makes, started
/// `parallel` at a time with `HTTPS_PROXY` naming the proxy by host name,
/// each dialling that dead proxy once: at least 99.9% of their attempts
/// must be judged `via: true` by `tracer`.
fn busybox_clients_keep_their_verdict(
    dir: &Path,
    prepare: &str,
    tracer: Tracer,
    port: u16,
    clients: usize,
    parallel: usize,
) {
    let nc = dir.join("nc");
    std::os::unix::fs::symlink("/usr/bin/busybox", &nc).expect("link busybox");
    in_namespace(
        prepare,
        &format!(
            "seq {clients} | sed 's/.*/127.0.0.1 {port}/' | \
             HTTPS_PROXY=http://{PROXY_NAME}:{port} xargs -P {parallel} -L 1 {} 2>/dev/null",
            nc.display()
        ),
    );
    let stopped = tracer.stop();
    let (total, via, others) = judged(&stopped.events, "nc", port);
    eprintln!("busybox nc, {parallel} at a time: {via} of {total} attempts judged via: true");
    assert_eq!(total, clients, "one attempt per client: {}", stopped.stderr);
    assert!(
        via * 1000 >= clients * 999,
        "{via} of {clients} judged via: true; e.g. {others:#?}"
    );
}

#[test]
fn short_lived_busybox_clients_keep_their_verdict() {
    let dir = temp_dir("shortlived");
    let prepare = hosts_file(&dir);
    let port = closed_port();
    let tracer = tracer(&prepare, &["nc"]);
    busybox_clients_keep_their_verdict(&dir, &prepare, tracer, port, 2000, 8);
}

/// 300 clients started at once, in a mount namespace whose hosts file is
/// the only one naming the proxy (a container's), while the tracer's own
/// view does not know the name. By the time their announcements are read,
/// most clients are zombies: no root, no /proc/<pid>/ns/mnt. Their mount
/// namespace comes from the kernel's announcement, and the name is
/// resolved through the root of their closest ancestor still in that
/// namespace (here `xargs`). Before, such a lookup fell back to the
/// tracer's own hosts file, found no such name, and cached "not found" for
/// the whole namespace: 1,075 of 6,000 clients were judged `via: true`.
/// The tracer's resolv.conf names only loopback, so no lookup can leave
/// the machine whatever the binary does.
#[test]
fn three_hundred_clients_at_once_in_their_own_namespace_keep_their_verdict() {
    let dir = temp_dir("shortlived-300");
    let prepare = hosts_file(&dir);
    let resolv = dir.join("resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
    )
    .expect("write resolv.conf");
    let port = closed_port();
    // The tracer sees the machine's /etc/hosts, which lacks the name.
    let tracer = Tracer::start_wrapped(
        &in_private_mounts(&format!(
            "mount --bind {} /etc/resolv.conf && exec \"$0\" \"$@\"",
            resolv.display()
        )),
        &["--comm", "nc"],
    );
    busybox_clients_keep_their_verdict(&dir, &prepare, tracer, port, 3000, 300);
}

#[test]
fn curls_through_a_dead_proxy_during_a_storm_keep_their_verdict() {
    const CURLS: usize = 1500;
    let dir = temp_dir("shortlived-curl");
    let prepare = hosts_file(&dir);
    let port = closed_port();
    let tracer = tracer(&prepare, &["curl", "connector"]);
    // The storm: traced too, so the drain is busy while the curls run;
    // bounded by its count, and stopped when the curls are done.
    let mut storm = Command::new(connector_bin())
        .args(["storm", "--count", "3000000"])
        .stdout(Stdio::null())
        .spawn()
        .expect("start the storm");
    std::thread::sleep(Duration::from_millis(300));
    in_namespace(
        &prepare,
        &format!(
            "seq {CURLS} | sed 's/.*/https:\\/\\/example.test\\//' | \
             HTTPS_PROXY=http://{PROXY_NAME}:{port} xargs -P 8 -L 1 \
             curl -s -o /dev/null --max-time 5"
        ),
    );
    let storm_ran = storm.try_wait().ok().flatten().is_none();
    terminate(&mut storm, Duration::from_secs(2));
    let stopped = tracer.stop();
    let storm_events = stopped
        .events
        .iter()
        .filter(|e| e["process"]["name"] == "connector")
        .count();
    let (total, via, others) = judged(&stopped.events, "curl", port);
    eprintln!(
        "curl: {via} of {total} attempts judged via: true, during a storm of {storm_events} events"
    );
    assert!(storm_ran, "the storm lasted as long as the curls");
    assert!(
        storm_events > 10_000,
        "the storm was traced: {storm_events}"
    );
    assert_eq!(total, CURLS, "one attempt per curl: {}", stopped.stderr);
    assert!(
        via * 1000 >= CURLS * 999,
        "{via} of {CURLS} judged via: true; e.g. {others:#?}"
    );
}

/// `process cache N (M unannounced)` from the tracer's SIGUSR1 statistics.
fn cache_sizes(tracer: &Tracer) -> Option<(usize, usize)> {
    let line = tracer.stats()?;
    let rest = line.split("process cache ").nth(1)?;
    let (cached, rest) = rest.split_once(" (")?;
    let (unannounced, _) = rest.split_once(" unannounced")?;
    Some((cached.parse().ok()?, unannounced.parse().ok()?))
}

/// Processes running before the tracer with proxy variables are adopted
/// at start (read from /proc, their proxies watched), but the kernel never
/// announced them, so it sends no exit record for them either: without a
/// check of their own they stayed in the process cache, with their mount
/// namespaces in the resolver, until their pid was reused. They must be
/// forgotten within a few ticks of exiting.
#[test]
fn processes_adopted_at_start_are_forgotten_when_they_exit() {
    const RESIDENTS: usize = 40;
    let proxy = format!("http://127.0.0.1:{}", closed_port());
    let mut residents: Vec<_> = (0..RESIDENTS)
        .map(|_| {
            Command::new("sleep")
                .arg("120")
                .env("HTTPS_PROXY", &proxy)
                .stdin(Stdio::null())
                .spawn()
                .expect("sleep")
        })
        .collect();
    let tracer = Tracer::start(&[]);
    let (cached, unannounced) = cache_sizes(&tracer).expect("stats line");
    assert!(
        unannounced >= RESIDENTS && cached >= RESIDENTS,
        "{RESIDENTS} residents not adopted: cache {cached}, unannounced {unannounced}"
    );
    for child in &mut residents {
        terminate(child, Duration::from_secs(2));
    }
    // The audit checks 64 a tick, then the 5 s grace and a sweep tick.
    let mut last = (cached, unannounced);
    for _ in 0..30 {
        std::thread::sleep(Duration::from_millis(500));
        last = cache_sizes(&tracer).expect("stats line");
        if last.0 + RESIDENTS <= cached && last.1 + RESIDENTS <= unannounced {
            break;
        }
    }
    let stopped = tracer.stop();
    assert!(
        last.0 + RESIDENTS <= cached && last.1 + RESIDENTS <= unannounced,
        "exited residents still cached 15 s later: before {:?}, now {last:?}\n{}",
        (cached, unannounced),
        stopped.stderr
    );
}
