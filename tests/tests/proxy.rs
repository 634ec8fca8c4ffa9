//! Proxy redirection, end to end: a real containerd given a dead proxy by a
//! systemd drop-in (the incident in shared/docs/INCIDENT.md), and test
//! clients placed in unit cgroups with proxy environments.
//! Run by `cargo xtask test` as root with --test-threads=1.

use std::{ffi::OsStr, os::unix::ffi::OsStrExt, path::Path};

use serde_json::Value;
use tracer_tests::{
    attempts_of, closed_port, connector_bin, connector_with, containerd::Containerd, temp_dir,
    Tracer, UnitCgroup,
};

fn write(root: &Path, host_path: &str, text: &str) {
    let path = root.join(host_path.trim_start_matches('/'));
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// The incident, reproduced: containerd started the way systemd would, in
/// system.slice/containerd.service, with HTTPS_PROXY from a drop-in pointing
/// at a closed loopback port. A CRI pull fails with the incident's message,
/// and the tracer's event names everything an operator needs.
#[test]
fn containerd_pull_through_a_dead_proxy_is_explained() {
    let port = closed_port();
    let proxy = format!("http://127.0.0.1:{port}");
    let host_root = temp_dir("root");
    let dropin = "/etc/systemd/system/containerd.service.d/http-proxy.conf";
    write(
        &host_root,
        dropin,
        &format!(
            "[Service]\nEnvironment=\"HTTP_PROXY={proxy}\"\nEnvironment=\"HTTPS_PROXY={proxy}\"\nEnvironment=\"NO_PROXY=localhost,127.0.0.1\"\n"
        ),
    );
    let dir = temp_dir("ctrd");
    let root_arg = host_root.display().to_string();
    let tracer = Tracer::start(&["--host-root", &root_arg]);
    // The operator's view: one command, text at a terminal.
    let text_tracer = Tracer::start(&[
        "--host-root",
        &root_arg,
        "--format",
        "text",
        "--proxy-only",
        "--comm",
        "containerd",
    ]);
    let text_output = text_tracer.output.clone();
    let daemon = Containerd::start(
        &dir,
        &[
            ("HTTP_PROXY", proxy.as_str()),
            ("HTTPS_PROXY", proxy.as_str()),
            ("NO_PROXY", "localhost,127.0.0.1"),
        ],
    )
    .unwrap_or_else(|e| panic!("containerd: {e}"));
    let err = daemon
        .cri_pull("quay.io/calico/cni:v3.31.3")
        .expect_err("the pull must fail through the dead proxy");
    assert!(
        err.contains(&format!(
            "proxyconnect tcp: dial tcp 127.0.0.1:{port}: connect: connection refused"
        )),
        "the incident's error: {err}"
    );
    let pid = daemon.pid;
    drop(daemon);
    let out = tracer.stop();
    let (status, _) = text_tracer.stop_raw();
    assert!(status.success());
    let text = std::fs::read_to_string(&text_output).expect("text output");
    let line = text
        .lines()
        .find(|l| l.contains(&format!("127.0.0.1:{port}")))
        .unwrap_or_else(|| panic!("text line for the proxy dial: {text}"));
    assert!(
        line.contains("REFUSED")
            && line.contains("[proxy]")
            && line.contains(&format!("{dropin}:3")),
        "{line}"
    );
    // Shown with --nocapture; the README's example comes from here.
    println!("text: {line}");

    let dials: Vec<&Value> = attempts_of(&out.events, pid)
        .into_iter()
        .filter(|e| e["destination"]["port"] == port)
        .collect();
    assert!(
        !dials.is_empty(),
        "containerd's dial of its proxy was traced: {:#?}",
        attempts_of(&out.events, pid)
    );
    let ev = dials[0];
    println!("json: {ev}");
    assert_eq!(ev["process"]["name"], "containerd");
    assert_eq!(ev["destination"]["ip"], "127.0.0.1");
    assert_eq!(ev["tracer"]["result"], "refused");
    assert_eq!(ev["error"]["code"], "ECONNREFUSED");
    assert_eq!(ev["tracer"]["async"], true, "Go dials without blocking");
    assert_eq!(ev["tracer"]["unit"], "containerd.service");
    let p = &ev["tracer"]["proxy"];
    assert_eq!(p["variable"], "HTTPS_PROXY");
    assert_eq!(p["via"], true);
    assert_eq!(p["url"], proxy.as_str());
    assert_eq!(p["rules"], "go");
    assert_eq!(p["source"]["file"], dropin);
    assert_eq!(p["source"]["line"], 3);
    assert!(p.get("drift").is_none(), "live and configured agree: {p}");
    let msg = ev["message"].as_str().expect("message");
    for needle in [
        "containerd",
        &format!("pid {pid}"),
        "containerd.service",
        &format!("127.0.0.1:{port}"),
        "connection refused",
        "HTTPS_PROXY",
        &format!("{dropin}:3"),
    ] {
        assert!(msg.contains(needle), "message names {needle:?}: {msg}");
    }
}

/// A service whose proxy (with credentials) comes from an EnvironmentFile:
/// the event names the env file and line, never the password, and never
/// any other variable of the environment.
#[test]
fn environment_file_source_and_secrets() {
    let port = closed_port();
    let unit = format!("trt-envfile-{}.service", std::process::id());
    let host_root = temp_dir("root");
    write(
        &host_root,
        &format!("/etc/systemd/system/{unit}"),
        "[Unit]\nDescription=test\n\n[Service]\nExecStart=/bin/true\nEnvironmentFile=-/etc/default/trt-proxy\n",
    );
    let secret_url = format!("http://agent:s3cr3tpw@127.0.0.1:{port}");
    write(
        &host_root,
        "/etc/default/trt-proxy",
        &format!("# proxy for the test service\nNO_PROXY=localhost\nhttps_proxy={secret_url}\n"),
    );
    let cgroup = UnitCgroup::new(&unit);
    let tracer = Tracer::start(&["--host-root", &host_root.display().to_string()]);
    let (pid, errnos) = connector_with(
        cgroup
            .command(&connector_bin())
            .env_clear()
            .env("https_proxy", &secret_url)
            .env("NO_PROXY", "localhost")
            .env("API_TOKEN", "tok-do-not-leak")
            .args(["tcp", &format!("127.0.0.1:{port}"), "--linger-ms", "300"]),
    );
    assert_eq!(errnos, vec![libc::ECONNREFUSED]);
    let out = tracer.stop();
    let ev = attempts_of(&out.events, pid)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no event for {pid}"));
    assert_eq!(ev["tracer"]["unit"], unit.as_str());
    let p = &ev["tracer"]["proxy"];
    assert_eq!(p["variable"], "https_proxy");
    assert_eq!(p["via"], true);
    assert_eq!(p["source"]["file"], "/etc/default/trt-proxy");
    assert_eq!(p["source"]["line"], 3);
    assert_eq!(p["source"]["directive"], "environment_file");
    assert_eq!(p["source"]["optional"], true);
    assert_eq!(
        p["source"]["unit_file"],
        format!("/etc/systemd/system/{unit}")
    );
    // The parsed events are the whole output file.
    let all = serde_json::to_string(&out.events).expect("json") + &out.stderr;
    assert!(
        !all.contains("s3cr3tpw"),
        "the proxy password never appears"
    );
    assert!(
        !all.contains("tok-do-not-leak"),
        "no other variable appears"
    );
    assert!(
        p["url"].as_str().is_some_and(|u| u.contains("REDACTED")),
        "{p}"
    );
}

/// The running process's proxy differs from what its unit's files say now
/// (edited without a restart), and a variable no file sets any more (the
/// drop-in was deleted, the daemon never restarted): both are drift.
#[test]
fn drift_between_unit_files_and_the_live_process() {
    let port = closed_port();
    let unit = format!("trt-drift-{}.service", std::process::id());
    let host_root = temp_dir("root");
    write(
        &host_root,
        &format!("/etc/systemd/system/{unit}.d/proxy.conf"),
        "[Service]\nEnvironment=HTTPS_PROXY=http://198.51.100.77:3128\n",
    );
    let cgroup = UnitCgroup::new(&unit);
    let tracer = Tracer::start(&[
        "--host-root",
        &host_root.display().to_string(),
        "--proxy-only",
    ]);
    let (edited, _) = connector_with(
        cgroup
            .command(&connector_bin())
            .env_clear()
            .env("HTTPS_PROXY", format!("http://127.0.0.1:{port}"))
            .args(["tcp", &format!("127.0.0.1:{port}"), "--linger-ms", "300"]),
    );
    let (stale, _) = connector_with(
        cgroup
            .command(&connector_bin())
            .env_clear()
            .env("HTTP_PROXY", format!("127.0.0.1:{port}"))
            .args(["tcp", &format!("127.0.0.1:{port}"), "--linger-ms", "300"]),
    );
    // A process without any proxy: --proxy-only hides it.
    let (plain, _) = connector_with(
        std::process::Command::new(connector_bin())
            .env_clear()
            .args(["tcp", &format!("127.0.0.1:{port}"), "--linger-ms", "300"]),
    );
    let out = tracer.stop();
    let ev = attempts_of(&out.events, edited)[0];
    let p = &ev["tracer"]["proxy"];
    assert_eq!(p["via"], true);
    assert_eq!(p["drift"]["configured"], "http://198.51.100.77:3128");
    assert_eq!(p["drift"]["live"], format!("http://127.0.0.1:{port}"));
    assert!(
        ev["message"]
            .as_str()
            .is_some_and(|m| m.contains("restart")),
        "{ev}"
    );

    let ev = attempts_of(&out.events, stale)[0];
    let p = &ev["tracer"]["proxy"];
    assert_eq!(p["variable"], "HTTP_PROXY");
    assert_eq!(
        p["url"],
        format!("http://127.0.0.1:{port}"),
        "a value without a scheme means http://"
    );
    assert_eq!(p["via"], true);
    assert!(p["drift"]["configured"].is_null());
    assert!(p.get("source").is_none());
    assert!(
        attempts_of(&out.events, plain).is_empty(),
        "--proxy-only hides processes without a proxy"
    );
}

/// Hundreds of KB of environment and non-UTF-8 bytes still give an event
/// with the proxy found.
#[test]
fn huge_and_non_utf8_environments() {
    let port = closed_port();
    let tracer = Tracer::start(&[]);
    // One string may not exceed MAX_ARG_STRLEN (128 KiB): four of 100 KiB.
    let big = "x".repeat(100 * 1024);
    let (pid, _) = connector_with(
        std::process::Command::new(connector_bin())
            .env_clear()
            .env("BIG1", &big)
            .env("BIG2", &big)
            .env("BIG3", &big)
            .env("BIG4", &big)
            .env("WEIRD", OsStr::from_bytes(b"\xff\xfe\x80 not utf-8"))
            .env(
                "HTTPS_PROXY",
                OsStr::from_bytes(format!("http://127.0.0.1:{port}").as_bytes()),
            )
            .args(["tcp", &format!("127.0.0.1:{port}"), "--linger-ms", "300"]),
    );
    let out = tracer.stop();
    let ev = attempts_of(&out.events, pid)[0];
    assert_eq!(ev["tracer"]["proxy_env"], "read");
    assert_eq!(ev["tracer"]["proxy"]["variable"], "HTTPS_PROXY");
    assert_eq!(ev["tracer"]["proxy"]["via"], true);
    let line = serde_json::to_string(ev).expect("json");
    assert!(
        line.len() < 16 * 1024,
        "the environment is not copied into the event"
    );
}

/// Resolving the proxy host name the way the process would: the hosts file
/// under the process's own root. The client runs in a mount namespace of
/// its own with its own /etc/hosts, as a container would; the host root the
/// tracer is given says something else for the same name, and must lose.
/// (Every name here is answered by a hosts file: no DNS query leaves.)
#[test]
fn proxy_host_names_resolve_through_the_process_hosts_file() {
    let port = closed_port();
    let host_root = temp_dir("root");
    write(
        &host_root,
        "/etc/hosts",
        "127.0.0.1 localhost\n127.0.0.8 corp-proxy.example\n",
    );
    let own = temp_dir("ownhosts");
    write(
        &own,
        "/hosts",
        "127.0.0.1 localhost\n127.0.0.9 corp-proxy.example\n",
    );
    let tracer = Tracer::start(&["--host-root", &host_root.display().to_string()]);
    let script = format!(
        "mount --bind {}/hosts /etc/hosts || exit 97; exec \"$0\" \"$@\"",
        own.display()
    );
    let (pid, _) = connector_with(
        std::process::Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .arg(connector_bin())
            .env_clear()
            .env("HTTPS_PROXY", format!("http://corp-proxy.example:{port}"))
            .args(["tcp", &format!("127.0.0.9:{port}"), "--linger-ms", "300"]),
    );
    let out = tracer.stop();
    let ev = attempts_of(&out.events, pid)[0];
    assert_eq!(ev["tracer"]["proxy"]["via"], true, "{ev}");
    assert_eq!(
        ev["tracer"]["proxy"]["url"],
        format!("http://corp-proxy.example:{port}")
    );
}
