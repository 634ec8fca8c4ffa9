//! deploy/systemd/tracer.service: systemd accepts it (`systemd-analyze
//! verify`, which works without systemd running), and the capabilities it
//! grants are enough to trace, proxy verdict included. Privileged; run by
//! `cargo xtask test`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use tracer_tests::{
    attempts_of, closed_port, connector_bin, connector_with, temp_dir, tracer_bin, Tracer,
    UnitCgroup,
};

fn unit_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd/tracer.service")
}

fn unit_text() -> String {
    std::fs::read_to_string(unit_path()).expect("read deploy/systemd/tracer.service")
}

/// The values of `key=` in the unit (every occurrence, split on spaces).
fn values(text: &str, key: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix(&format!("{key}=")))
        .flat_map(|v| v.split_whitespace().map(str::to_string))
        .collect()
}

/// `systemd-analyze verify` prints nothing for a clean unit. It exits 0 on
/// unknown keys and bad values (printing a warning) and checks that
/// ExecStart's program exists, so: the unit, with ExecStart pointing at the
/// tracer under test, must produce no output at all.
#[test]
fn the_unit_passes_systemd_analyze_verify_without_a_word() {
    let dir = temp_dir("unit");
    let unit = dir.join("tracer.service");
    let text = unit_text().replace("/usr/local/bin/tracer", &tracer_bin().display().to_string());
    std::fs::write(&unit, text).expect("write unit");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("run systemd-analyze (Debian package systemd)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert_eq!(said.trim(), "", "systemd-analyze verify has remarks");
    let _ = std::fs::remove_dir_all(&dir);
}

/// systemd drops capability names it does not know without a word: check
/// each with capsh, and that the bounding and ambient sets agree.
#[test]
fn the_units_capabilities_are_real_names() {
    let text = unit_text();
    let bounding = values(&text, "CapabilityBoundingSet");
    let ambient = values(&text, "AmbientCapabilities");
    assert!(!bounding.is_empty());
    assert_eq!(bounding, ambient);
    for cap in &bounding {
        let ok = Command::new("capsh")
            .arg(format!("--supports={}", cap.to_lowercase()))
            .status()
            .expect("run capsh (Debian package libcap2-bin)")
            .success();
        assert!(ok, "{cap} is not a capability this system knows");
    }
    assert_eq!(values(&text, "Type"), ["notify"]);
    assert_eq!(values(&text, "Restart"), ["on-failure"]);
    assert_eq!(values(&text, "WatchdogSec"), ["30s"]);
}

/// The flags of the unit's `ExecStart=tracer trace ...`, without
/// `--output FILE` (the harness writes to a file of its own), and with
/// `--metrics-addr` moved to a free loopback port.
fn exec_start_flags(text: &str) -> Vec<String> {
    let words = values(text, "ExecStart");
    assert_eq!(words.get(1).map(String::as_str), Some("trace"), "{words:?}");
    let mut out = Vec::new();
    let mut it = words.into_iter().skip(2);
    while let Some(w) = it.next() {
        match w.as_str() {
            "--output" => {
                it.next();
            }
            "--metrics-addr" => {
                it.next();
                out.extend(["--metrics-addr".to_string(), "127.0.0.1:0".to_string()]);
            }
            _ => out.push(w),
        }
    }
    assert!(out.iter().any(|w| w == "--events"), "{out:?}");
    out
}

/// Every capability the running system knows (capsh's view of our bounding
/// set: the test runs as root with all of them).
fn all_capabilities() -> Vec<String> {
    let out = Command::new("capsh")
        .arg("--print")
        .output()
        .expect("capsh --print");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Bounding set ="))
        .expect("a bounding set line")
        .split(',')
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect()
}

/// The tracer run with exactly the unit's capabilities and the flags of
/// its ExecStart (every other capability
/// dropped from the bounding set by capsh, so the exec'd tracer, uid 0,
/// gets only those) loads, attaches and traces a refused proxy dial of a
/// process in a unit cgroup, with the process's executable, its unit, its
/// proxy variable and the drop-in's file:line: everything the service is
/// for.
#[test]
fn the_units_capabilities_are_enough_to_trace_a_proxy_dial() {
    let keep: Vec<String> = values(&unit_text(), "CapabilityBoundingSet")
        .iter()
        .map(|c| c.to_lowercase())
        .collect();
    let drop: Vec<String> = all_capabilities()
        .into_iter()
        .filter(|c| !keep.contains(c))
        .collect();
    assert!(drop.contains(&"cap_sys_admin".to_string()));
    let wrapper: Vec<String> = [
        "capsh".to_string(),
        format!("--drop={}", drop.join(",")),
        "--".to_string(),
        "-c".to_string(),
        "exec \"$0\" \"$@\"".to_string(),
    ]
    .to_vec();

    let port = closed_port();
    let unit = format!("trt-caps-{}.service", std::process::id());
    let host_root = temp_dir("capsroot");
    let dropin = format!("/etc/systemd/system/{unit}.d/http-proxy.conf");
    let path = host_root.join(dropin.trim_start_matches('/'));
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    let proxy = format!("http://127.0.0.1:{port}");
    std::fs::write(
        &path,
        format!(
            "[Service]\nEnvironment=\"HTTP_PROXY={proxy}\"\nEnvironment=\"HTTPS_PROXY={proxy}\"\n"
        ),
    )
    .expect("write drop-in");
    let cgroup = UnitCgroup::new(&unit);
    // The unit's own command line: the output is the harness's file, and
    // the metrics port a free one (the unit's 9464 may be taken here).
    let mut args = exec_start_flags(&unit_text());
    args.extend(["--host-root".to_string(), host_root.display().to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let tracer = Tracer::start_wrapped(&wrapper, &args);
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", tracer.pid())).expect("tracer status");
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| v.trim().to_string())
        .expect("CapEff");
    let (pid, errnos) = connector_with(
        cgroup
            .command(&connector_bin())
            .env_clear()
            .env("HTTPS_PROXY", &proxy)
            .args(["tcp", &format!("127.0.0.1:{port}"), "--linger-ms", "300"]),
    );
    assert_eq!(errnos, vec![libc::ECONNREFUSED]);
    let out = tracer.stop();
    assert!(out.status.success(), "{}", out.stderr);
    println!("tracer CapEff {cap_eff} (kept {keep:?})");
    // CAP_BPF (39), CAP_PERFMON (38), CAP_SYS_PTRACE (19), CAP_NET_ADMIN (12).
    assert_eq!(
        cap_eff, "000000c000081000",
        "the tracer ran with the unit's set only"
    );
    let ev = attempts_of(&out.events, pid)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no event for {pid}: {}", out.stderr));
    assert_eq!(ev["tracer"]["result"], "refused");
    assert_eq!(ev["tracer"]["unit"], unit.as_str());
    assert!(
        ev["process"]["executable"]
            .as_str()
            .is_some_and(|e| e.ends_with("/connector")),
        "the executable of a root process was readable: {ev}"
    );
    let p = &ev["tracer"]["proxy"];
    assert_eq!(p["variable"], "HTTPS_PROXY");
    assert_eq!(p["via"], true);
    assert_eq!(p["source"]["file"], dropin.as_str());
    assert_eq!(p["source"]["line"], 3);
    let _ = std::fs::remove_dir_all(&host_root);
}
