//! Impersonation and unit attribution: a process that calls itself
//! `containerd`, or a user manager's unit named `containerd.service`, is not
//! the node's containerd. The doctor reports only the real daemon (and says
//! how it identified it), never dials what the impostor's environment
//! names, and the impostor's dials neither carry the host's drop-in
//! file:line nor count as `containerd.service` of the host in /metrics.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use tracer_tests::{
    assert_matches_doctor_schema, assert_matches_schema, attempts_of, closed_port, connector,
    connector_bin, containerd::Containerd, read_events, rss_kib, temp_dir, terminate, tracer_bin,
    Tracer, UnitCgroup,
};

/// The incident's drop-in for the host's containerd.
const DROPIN: &str = "/etc/systemd/system/containerd.service.d/http-proxy.conf";
/// How long another process's event may take to reach the output.
const ON_TIME: Duration = Duration::from_secs(10);
/// How long `tracer doctor` may take (each connect is bounded by 2 s).
const DOCTOR_BOUND: Duration = Duration::from_secs(30);
/// The tracer's resident memory stays below this.
const RSS_BOUND_KIB: u64 = 512 * 1024;
/// The user whose manager runs the impostor unit.
const UID: u32 = 1000;
const USER_UNIT_CGROUP: &str =
    "user.slice/user-1000.slice/user@1000.service/app.slice/containerd.service";

/// A host root with containerd's unit file, the incident's drop-in, a
/// passwd naming uid 1000's home, and `/usr/bin/containerd` as the very
/// file the real daemon runs (a hard link of it).
fn host_root(proxy: &str) -> PathBuf {
    let root = temp_dir("ident-root");
    let write = |path: &str, text: &str| {
        let p = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, text).expect("write");
    };
    write(
        "/usr/lib/systemd/system/containerd.service",
        "[Service]\nExecStart=/usr/bin/containerd\n",
    );
    write(
        DROPIN,
        &format!(
            "[Service]\nEnvironment=\"HTTP_PROXY={proxy}\"\nEnvironment=\"HTTPS_PROXY={proxy}\"\nEnvironment=\"NO_PROXY=localhost\"\n"
        ),
    );
    write(
        "/etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\nu1000:x:1000:1000::/home/u1000:/bin/sh\n",
    );
    std::fs::create_dir_all(root.join("usr/bin")).expect("mkdir usr/bin");
    std::fs::hard_link("/usr/bin/containerd", root.join("usr/bin/containerd"))
        .expect("link containerd");
    root
}

/// A copy of `program` named `containerd` in a fresh folder anyone may
/// run it from: the impostor's executable.
fn impostor_binary(program: &Path) -> PathBuf {
    let dir = temp_dir("ident-fake");
    let bin = dir.join("containerd");
    std::fs::copy(program, &bin).expect("copy");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    bin
}

/// `tracer doctor --host-root ROOT --timeout 2s ARGS`, within the bound.
fn doctor(root: &Path, args: &[&str]) -> (String, Duration) {
    let started = Instant::now();
    let out = Command::new(tracer_bin())
        .arg("doctor")
        .args([
            "--host-root",
            &root.display().to_string(),
            "--timeout",
            "2s",
        ])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run tracer doctor");
    let took = started.elapsed();
    assert!(
        took < DOCTOR_BOUND,
        "doctor took {took:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (String::from_utf8_lossy(&out.stdout).into_owned(), took)
}

fn doctor_json(root: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--format", "json"];
    all.extend_from_slice(args);
    let (stdout, _) = doctor(root, &all);
    let report: Value = serde_json::from_str(&stdout).expect("doctor JSON");
    assert_matches_doctor_schema(&report);
    report
}

/// Another process's connect reaches the output on time, every line is
/// valid, and the tracer's memory stays bounded.
fn assert_tracer_healthy(tracer: &Tracer) {
    let (pid, _) = connector(&["tcp", &format!("127.0.0.1:{}", closed_port())]);
    let deadline = Instant::now() + ON_TIME;
    loop {
        let events = read_events(&tracer.output);
        if !attempts_of(&events, pid).is_empty() {
            for e in &events {
                assert_matches_schema(e);
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no event of control process {pid} within {ON_TIME:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let rss = rss_kib(tracer.pid());
    assert!(
        rss > 0 && rss < RSS_BOUND_KIB,
        "tracer RSS {rss} KiB (bound {RSS_BOUND_KIB})"
    );
}

/// GET /metrics.
fn metrics(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect metrics");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut body = String::new();
    s.read_to_string(&mut body).expect("metrics");
    body
}

/// A loopback port of our own, to see whether anyone dials it.
fn witness() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.set_nonblocking(true).expect("nonblocking");
    let port = l.local_addr().expect("addr").port();
    (l, port)
}

/// Whoever connected to the witness (the kernel completes the handshake
/// into the backlog whether or not we accept).
fn dialled(l: &TcpListener) -> usize {
    let mut n = 0;
    while l.accept().is_ok() {
        n += 1;
    }
    n
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        terminate(&mut self.0, Duration::from_secs(2));
    }
}

/// A copy of a binary named `containerd` running in
/// `system.slice/containerd.service` beside the real containerd, and an
/// unprivileged one outside any service: the doctor (on demand and
/// periodic) reports only the real one, says how it identified it, and
/// never dials the impostors' proxy.
#[test]
fn a_copy_named_containerd_is_not_containerd() {
    let dead = format!("http://127.0.0.1:{}", closed_port());
    let root = host_root(&dead);
    let dir = temp_dir("ident-ctrd");
    let real = Containerd::start(
        &dir,
        &[
            ("HTTP_PROXY", &dead),
            ("HTTPS_PROXY", &dead),
            ("NO_PROXY", "localhost"),
        ],
    )
    .unwrap_or_else(|e| panic!("containerd: {e}"));
    let (listener, port) = witness();
    let bait = format!("http://127.0.0.1:{port}");

    let metrics_addr: SocketAddr = format!("127.0.0.1:{}", tracer_tests::prometheus::free_port())
        .parse()
        .expect("addr");
    let tracer = Tracer::start(&[
        "--host-root",
        &root.display().to_string(),
        "--metrics-addr",
        &metrics_addr.to_string(),
        "--doctor-interval",
        "1s",
    ]);

    // In containerd's own cgroup, as root: only its executable tells.
    let fake = impostor_binary(Path::new("/bin/sleep"));
    let cgroup = UnitCgroup::new("containerd.service");
    let in_unit = Killed(
        cgroup
            .command(&fake)
            .arg("60")
            .env_clear()
            .env("HTTPS_PROXY", &bait)
            .env("HTTP_PROXY", &bait)
            .spawn()
            .expect("start the fake in the unit"),
    );
    // Unprivileged, outside any service.
    let unprivileged = Killed(
        Command::new("setpriv")
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .arg(&fake)
            .arg("60")
            .env_clear()
            .env("HTTPS_PROXY", &bait)
            .spawn()
            .expect("start the unprivileged fake"),
    );
    let fakes = [in_unit.0.id(), unprivileged.0.id()];
    // Both have exec'd and call themselves containerd.
    let deadline = Instant::now() + Duration::from_secs(5);
    while fakes.iter().any(|p| {
        std::fs::read_to_string(format!("/proc/{p}/comm"))
            .map_or(true, |c| c.trim() != "containerd")
    }) {
        assert!(Instant::now() < deadline, "the fakes did not start");
        std::thread::sleep(Duration::from_millis(20));
    }

    let report = doctor_json(&root, &[]);
    let daemons = report["daemons"].as_array().expect("daemons");
    for d in daemons {
        assert!(
            !fakes.contains(&(d["pid"].as_u64().unwrap_or(0) as u32)),
            "an impostor was reported: {d:#}"
        );
    }
    let found: Vec<&Value> = daemons.iter().filter(|d| d["pid"] == real.pid).collect();
    assert_eq!(found.len(), 1, "the real containerd is missing: {report:#}");
    let d = found[0];
    assert_eq!(d["name"], "containerd");
    assert_eq!(d["identified_by"]["by"], "executable");
    assert_eq!(d["identified_by"]["executable"], "/usr/bin/containerd");
    assert_eq!(d["identified_by"]["unit"], "containerd.service");
    let https = d["variables"]
        .as_array()
        .expect("variables")
        .iter()
        .find(|v| v["name"] == "HTTPS_PROXY")
        .expect("HTTPS_PROXY");
    assert_eq!(https["source"]["file"], DROPIN);
    assert_eq!(https["source"]["line"], 3);

    let (text, took) = doctor(&root, &[]);
    let expected = "identified by: executable /usr/bin/containerd (the host's file) in the host's system service containerd.service";
    assert!(text.contains(expected), "{text}");
    for pid in fakes {
        assert!(!text.contains(&format!("(pid {pid}")), "{text}");
    }
    println!("doctor text ({took:?}):\n{text}");

    // The periodic doctor has run a few times by now (every second).
    std::thread::sleep(Duration::from_secs(3));
    let exposition = metrics(metrics_addr);
    let dead_endpoint = dead.trim_start_matches("http://");
    assert!(
        exposition
            .lines()
            .any(|l| l.starts_with("tracer_doctor_proxy_reachable{")
                && l.contains(r#"daemon="containerd""#)
                && l.contains(dead_endpoint)),
        "no doctor series for the real containerd:\n{exposition}"
    );
    assert!(
        !exposition.contains(&format!("127.0.0.1:{port}")),
        "the impostors' proxy reached the metrics:\n{exposition}"
    );
    assert_eq!(
        dialled(&listener),
        0,
        "the doctor dialled an impostor's proxy"
    );

    assert_tracer_healthy(&tracer);
    drop(in_unit);
    drop(unprivileged);
    let stopped = tracer.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    drop(real);
}

/// An unprivileged process named containerd in a user manager's
/// `containerd.service` dials a dead proxy from its environment while the
/// host has the incident's drop-in for its own containerd: its events say
/// the unit is the user manager's (uid 1000) and carry no host file:line,
/// its dials are not the host's containerd.service in /metrics, and the
/// doctor, asked about it by pid, reads no host unit file for it.
#[test]
fn a_user_unit_named_containerd_is_not_the_hosts() {
    let dead_port = closed_port();
    let dead = format!("http://127.0.0.1:{dead_port}");
    let root = host_root(&dead);
    let metrics_addr: SocketAddr = format!("127.0.0.1:{}", tracer_tests::prometheus::free_port())
        .parse()
        .expect("addr");
    let tracer = Tracer::start(&[
        "--host-root",
        &root.display().to_string(),
        "--metrics-addr",
        &metrics_addr.to_string(),
        "--doctor-interval",
        "1s",
    ]);

    let fake = impostor_binary(&connector_bin());
    let cgroup = UnitCgroup::at(USER_UNIT_CGROUP);
    let uid = UID.to_string();
    let mut cmd = cgroup.command(Path::new("setpriv"));
    cmd.args(["--reuid", &uid, "--regid", &uid, "--clear-groups"])
        .arg(&fake)
        .args([
            "tcp",
            &format!("127.0.0.1:{dead_port}"),
            "--count",
            "3",
            "--linger-ms",
            "3000",
        ])
        .env_clear()
        .env("HTTPS_PROXY", &dead)
        .env("HTTP_PROXY", &dead);
    // The doctor examines it by pid while it lingers.
    let child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the user unit");
    let pid = child.id();
    std::thread::sleep(Duration::from_millis(500));
    let report = doctor_json(&root, &["--pid", &pid.to_string()]);
    let d = &report["daemons"][0];
    assert_eq!(d["pid"], pid);
    assert_eq!(d["identified_by"]["by"], "pid", "{d:#}");
    assert_eq!(d["unit"], "containerd.service");
    assert!(
        !report.to_string().contains(DROPIN),
        "the host's drop-in was read for a user unit: {report:#}"
    );
    // The plain scan does not take it for containerd.
    let scan = doctor_json(&root, &[]);
    assert!(
        scan["daemons"]
            .as_array()
            .expect("daemons")
            .iter()
            .all(|d| d["pid"] != pid),
        "{scan:#}"
    );
    let out = child.wait_with_output().expect("user unit");
    assert!(out.status.success());

    let deadline = Instant::now() + ON_TIME;
    let events = loop {
        let events = read_events(&tracer.output);
        if attempts_of(&events, pid).len() >= 3 {
            break events;
        }
        assert!(Instant::now() < deadline, "no events of {pid}");
        std::thread::sleep(Duration::from_millis(100));
    };
    for e in attempts_of(&events, pid) {
        assert_matches_schema(e);
        assert_eq!(e["process"]["name"], "containerd", "{e}");
        assert_eq!(e["tracer"]["unit"], "containerd.service", "{e}");
        assert_eq!(e["tracer"]["unit_manager"], "user", "{e}");
        assert_eq!(e["tracer"]["unit_manager_uid"], UID, "{e}");
        assert_eq!(e["tracer"]["proxy"]["via"], true, "{e}");
        assert!(!e.to_string().contains(DROPIN), "host drop-in in {e}");
        assert!(
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains("containerd.service of the user manager of uid 1000")),
            "{e}"
        );
    }

    let exposition = metrics(metrics_addr);
    let dials: Vec<&str> = exposition
        .lines()
        .filter(|l| l.starts_with("tracer_proxy_dials_total{"))
        .collect();
    assert!(
        dials.iter().any(
            |l| l.contains(r#"unit="user@1000.service/containerd.service""#)
                && l.contains(r#"manager="user""#)
                && l.contains(r#"result="refused""#)
        ),
        "{exposition}"
    );
    assert!(
        dials
            .iter()
            .all(|l| !l.contains(r#"unit="containerd.service""#)),
        "the user unit's dials count as the host's containerd.service:\n{exposition}"
    );
    println!("{}", dials.join("\n"));

    // The host's containerd is not running here: the periodic doctor
    // found no daemon, so no doctor series names containerd.
    assert!(
        !exposition
            .lines()
            .any(|l| l.starts_with("tracer_doctor_proxy") && l.contains(r#"daemon="containerd""#)),
        "{exposition}"
    );

    assert_tracer_healthy(&tracer);
    let stopped = tracer.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    drop(cgroup);
}
