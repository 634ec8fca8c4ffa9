//! `tracer doctor` and `tracer diff` against a real containerd (Debian's,
//! started the way systemd would, in system.slice/containerd.service) and a
//! real tinyproxy, with drop-ins written under a temporary host root.
//! Privileged (root), one at a time:
//! `cargo test --release -p tracer-tests --test doctor -- --test-threads=1`.
//!
//! Other tests on this machine may run containerds of their own, so each
//! scenario names its daemon with `--pid`; one test checks the plain scan.
//! Traffic goes only to loopback and to test hosts in our own namespaces.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;
use tracer_tests::{
    assert_matches_doctor_schema, closed_port,
    containerd::{Containerd, Options},
    mirror_into,
    registry::Registry,
    sh, temp_dir,
    tinyproxy::{Tinyproxy, TinyproxyOptions},
    tracer_bin, NetNs,
};

const DROPIN: &str = "/etc/systemd/system/containerd.service.d/http-proxy.conf";

fn write(root: &Path, host_path: &str, text: &str) {
    let path = root.join(host_path.trim_start_matches('/'));
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// The incident's drop-in, with line 3 setting HTTPS_PROXY.
fn dropin(proxy: &str, no_proxy: &str) -> String {
    format!(
        "[Service]\nEnvironment=\"HTTP_PROXY={proxy}\"\nEnvironment=\"HTTPS_PROXY={proxy}\"\nEnvironment=\"NO_PROXY={no_proxy}\"\n"
    )
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        let v: Value = serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("doctor JSON: {e}\n{}\n{}", self.stdout, self.stderr));
        assert_matches_doctor_schema(&v);
        v
    }
}

fn tracer(args: &[&str]) -> Run {
    let out = Command::new(tracer_bin())
        .args(args)
        .output()
        .expect("run tracer");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `tracer doctor --pid PID --host-root ROOT --timeout 2s EXTRA...`
fn doctor(pid: u32, root: &Path, extra: &[&str]) -> Run {
    let pid = pid.to_string();
    let root = root.display().to_string();
    let mut args = vec![
        "doctor",
        "--pid",
        &pid,
        "--host-root",
        &root,
        "--timeout",
        "2s",
    ];
    args.extend_from_slice(extra);
    tracer(&args)
}

fn start_containerd(env: &[(&str, &str)]) -> Containerd {
    Containerd::start(&temp_dir("ctrd"), env).unwrap_or_else(|e| panic!("containerd: {e}"))
}

fn findings(report: &Value) -> Vec<&Value> {
    report["daemons"]
        .as_array()
        .expect("daemons")
        .iter()
        .flat_map(|d| d["findings"].as_array().expect("findings"))
        .chain(report["findings"].as_array().expect("findings"))
        .collect()
}

fn finding<'a>(report: &'a Value, code: &str, variable: &str) -> &'a Value {
    findings(report)
        .into_iter()
        .find(|f| f["code"] == code && f["variable"] == variable)
        .unwrap_or_else(|| panic!("no {code} finding for {variable} in {report:#}"))
}

fn save(run: &Run, name: &str) -> PathBuf {
    let path = temp_dir("doctor-json").join(name);
    std::fs::write(&path, &run.stdout).expect("write report");
    path
}

/// The node's own global addresses, for a NO_PROXY that covers them.
fn node_addresses() -> Vec<String> {
    sh("ip -o addr show scope global")
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .filter_map(|a| a.split('/').next())
        .map(str::to_string)
        .collect()
}

/// The incident: containerd with HTTPS_PROXY from a drop-in pointing at a
/// closed loopback port. Doctor names containerd, HTTPS_PROXY, the drop-in's
/// file:line and `refused`, and exits 1.
#[test]
fn incident_dead_proxy_from_a_dropin_is_named_with_file_line_and_refused() {
    let proxy = format!("http://127.0.0.1:{}", closed_port());
    let root = temp_dir("root");
    write(&root, DROPIN, &dropin(&proxy, "localhost,127.0.0.1"));
    let daemon = start_containerd(&[
        ("HTTP_PROXY", &proxy),
        ("HTTPS_PROXY", &proxy),
        ("NO_PROXY", "localhost,127.0.0.1"),
    ]);
    let text = doctor(daemon.pid, &root, &[]);
    assert_eq!(text.code, 1, "{}{}", text.stdout, text.stderr);
    let line = text
        .stdout
        .lines()
        .find(|l| l.contains("proxy-unreachable") && l.contains("HTTPS_PROXY"))
        .unwrap_or_else(|| {
            panic!(
                "no proxy-unreachable line for HTTPS_PROXY:\n{}",
                text.stdout
            )
        });
    for needle in [
        format!("containerd (pid {}, containerd.service)", daemon.pid),
        format!("{DROPIN}:3"),
        "refused".to_string(),
    ] {
        assert!(line.contains(&needle), "{needle:?} missing in {line}");
    }
    println!("{}", text.stdout);

    let json = doctor(daemon.pid, &root, &["--format", "json"]);
    assert_eq!(json.code, 1);
    let report = json.json();
    let d = &report["daemons"][0];
    assert_eq!(d["name"], "containerd");
    assert_eq!(d["unit"], "containerd.service");
    let https = d["variables"]
        .as_array()
        .expect("variables")
        .iter()
        .find(|v| v["name"] == "HTTPS_PROXY")
        .expect("HTTPS_PROXY");
    assert_eq!(https["live"], proxy.as_str());
    assert_eq!(https["source"]["file"], DROPIN);
    assert_eq!(https["source"]["line"], 3);
    assert!(https.get("drift").is_none(), "{https}");
    assert_eq!(d["proxies"][0]["tcp"]["result"], "refused");
    let f = finding(&report, "proxy-unreachable", "HTTPS_PROXY");
    assert_eq!(f["severity"], "error");
    assert_eq!(f["file"], DROPIN);
    assert_eq!(f["line"], 3);
    assert_eq!(report["summary"]["healthy"], false);

    // Named with --pid, it is reported as the operator named it: the temp
    // host root has no /usr/bin/containerd to compare its executable with.
    assert_eq!(d["identified_by"]["by"], "pid", "{d:#}");

    // The plain scan finds the same daemon by its executable: the host
    // root's /usr/bin/containerd is the very file it runs (a hard link of
    // the real one), and it runs in the system service containerd.service.
    let bin = root.join("usr/bin");
    std::fs::create_dir_all(&bin).expect("mkdir usr/bin");
    std::fs::hard_link("/usr/bin/containerd", bin.join("containerd")).expect("link containerd");
    let scan = tracer(&[
        "doctor",
        "--format",
        "json",
        "--host-root",
        &root.display().to_string(),
        "--timeout",
        "2s",
    ]);
    let all = scan.json();
    assert!(
        all["daemons"]
            .as_array()
            .expect("daemons")
            .iter()
            .any(|d| d["pid"] == daemon.pid
                && d["name"] == "containerd"
                && d["identified_by"]["by"] == "executable"
                && d["identified_by"]["executable"] == "/usr/bin/containerd"
                && d["identified_by"]["unit"] == "containerd.service"),
        "scan did not find containerd {}: {all:#}",
        daemon.pid
    );
}

/// The drop-in is edited after containerd started, then deleted: doctor
/// says the running value is not what the files say and a restart is
/// needed, in both cases.
#[test]
fn drift_after_the_dropin_is_edited_or_deleted() {
    let proxy = format!("http://127.0.0.1:{}", closed_port());
    let root = temp_dir("root");
    write(&root, DROPIN, &dropin(&proxy, "localhost"));
    let daemon = start_containerd(&[
        ("HTTP_PROXY", &proxy),
        ("HTTPS_PROXY", &proxy),
        ("NO_PROXY", "localhost"),
    ]);
    let edited = format!("http://127.0.0.1:{}", closed_port() ^ 1);
    write(&root, DROPIN, &dropin(&edited, "localhost"));
    let run = doctor(daemon.pid, &root, &["--format", "json"]);
    assert_eq!(run.code, 1);
    let report = run.json();
    let f = finding(&report, "drift-changed", "HTTPS_PROXY");
    let msg = f["message"].as_str().expect("message");
    assert!(msg.contains(&proxy) && msg.contains(&edited), "{msg}");
    assert!(
        msg.contains("systemctl restart containerd.service"),
        "{msg}"
    );
    assert_eq!(f["file"], DROPIN);
    assert_eq!(f["line"], 3);
    let text = doctor(daemon.pid, &root, &[]);
    assert_eq!(text.code, 1);
    assert!(
        text.stdout.contains("DRIFT: configured now"),
        "{}",
        text.stdout
    );

    std::fs::remove_file(root.join(DROPIN.trim_start_matches('/'))).expect("rm drop-in");
    let run = doctor(daemon.pid, &root, &["--format", "json"]);
    assert_eq!(run.code, 1);
    let report = run.json();
    let f = finding(&report, "drift-not-configured", "HTTPS_PROXY");
    let msg = f["message"].as_str().expect("message");
    assert!(msg.contains("stale") && msg.contains("restart"), "{msg}");
    let text = doctor(daemon.pid, &root, &[]);
    assert!(
        text.stdout.contains("no configuration sets it any more"),
        "{}",
        text.stdout
    );
}

/// Bad node (drop-in, dead proxy) against good node (no proxy): diff names
/// HTTPS_PROXY and the drop-in and exits 1; two reports of the same node
/// (different times) are equal and exit 0.
#[test]
fn diff_of_a_bad_and_a_good_node() {
    let proxy = format!("http://127.0.0.1:{}", closed_port());
    let bad_root = temp_dir("root");
    write(&bad_root, DROPIN, &dropin(&proxy, "localhost"));
    let bad = {
        let daemon = start_containerd(&[
            ("HTTP_PROXY", &proxy),
            ("HTTPS_PROXY", &proxy),
            ("NO_PROXY", "localhost"),
        ]);
        save(
            &doctor(daemon.pid, &bad_root, &["--format", "json"]),
            "bad.json",
        )
    };
    let good_root = temp_dir("root");
    let (good, good_again) = {
        let daemon = start_containerd(&[]);
        let first = doctor(daemon.pid, &good_root, &["--format", "json"]);
        assert_eq!(first.code, 0, "{}", first.stdout);
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let again = doctor(daemon.pid, &good_root, &["--format", "json"]);
        (save(&first, "good.json"), save(&again, "good-again.json"))
    };
    let (bad, good, good_again) = (
        bad.display().to_string(),
        good.display().to_string(),
        good_again.display().to_string(),
    );
    let run = tracer(&["diff", &bad, &good]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("HTTPS_PROXY value"), "{}", run.stdout);
    assert!(
        run.stdout.contains(&format!("{DROPIN}:3")),
        "{}",
        run.stdout
    );
    println!("{}", run.stdout);
    let json = tracer(&["diff", &bad, &good, "--format", "json"]);
    assert_eq!(json.code, 1);
    let c: Value = serde_json::from_str(&json.stdout).expect("diff JSON");
    assert!(c["differences"]
        .as_array()
        .expect("differences")
        .iter()
        .any(|d| d["variable"] == "HTTPS_PROXY"
            && d["field"] == "source"
            && d["a"] == format!("{DROPIN}:3")));
    assert!(c["differences"]
        .as_array()
        .expect("differences")
        .iter()
        .any(|d| d["variable"] == "HTTPS_PROXY"
            && d["field"] == "reachability"
            && d["a"] == "refused"));

    let same = tracer(&["diff", &good, &good_again]);
    assert_eq!(same.code, 0, "{}", same.stdout);
    assert!(same.stdout.contains("no differences"), "{}", same.stdout);
    let garbage = temp_dir("doctor-json").join("garbage.json");
    std::fs::write(&garbage, "{}").expect("write");
    assert_eq!(
        tracer(&["diff", &garbage.display().to_string(), &good]).code,
        2
    );
}

/// Credentials in a proxy URL never appear in any output: text, JSON, or
/// diff.
#[test]
fn credentials_never_appear_in_any_output() {
    let proxy = format!("http://user:s3cret@127.0.0.1:{}", closed_port());
    let root = temp_dir("root");
    write(&root, DROPIN, &dropin(&proxy, "localhost"));
    let daemon = start_containerd(&[
        ("HTTP_PROXY", &proxy),
        ("HTTPS_PROXY", &proxy),
        ("https_proxy", "http://other:pa55word@127.0.0.1:1"),
        ("NO_PROXY", "localhost"),
    ]);
    let edited = proxy.replace("s3cret", "n3wsecret");
    let text = doctor(daemon.pid, &root, &["--probe", "198.51.100.250:443"]);
    let json = doctor(
        daemon.pid,
        &root,
        &["--format", "json", "--probe", "198.51.100.250:443"],
    );
    write(&root, DROPIN, &dropin(&edited, "localhost"));
    let drifted = doctor(daemon.pid, &root, &["--format", "json"]);
    let a = save(&json, "a.json").display().to_string();
    let b = save(&drifted, "b.json").display().to_string();
    let diff = tracer(&["diff", &a, &b]);
    let diff_json = tracer(&["diff", &a, &b, "--format", "json"]);
    assert_eq!(text.code, 1);
    json.json();
    let report = drifted.json();
    finding(&report, "drift-changed", "HTTPS_PROXY");
    finding(&report, "credentials-world-readable", "HTTPS_PROXY");
    for run in [&text, &json, &drifted, &diff, &diff_json] {
        for secret in ["s3cret", "n3wsecret", "pa55word", "user:", "other:"] {
            assert!(
                !run.stdout.contains(secret),
                "{secret} leaked:\n{}",
                run.stdout
            );
            assert!(
                !run.stderr.contains(secret),
                "{secret} leaked:\n{}",
                run.stderr
            );
        }
    }
    assert!(
        text.stdout.contains("REDACTED@127.0.0.1"),
        "{}",
        text.stdout
    );
}

/// A working tinyproxy and a registry on a test host: CONNECT answers 200,
/// the daemon's configuration matches, NO_PROXY covers the node: healthy,
/// exit 0.
#[test]
fn working_proxy_tunnels_to_the_registry() {
    let registry = Registry::start(45);
    registry.ns().assert_routed();
    let proxy = Tinyproxy::start(&TinyproxyOptions::default());
    let mut no_proxy = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    no_proxy.extend(node_addresses());
    let no_proxy = no_proxy.join(",");
    assert!(!no_proxy.split(',').any(|a| a == registry.host()));
    let root = temp_dir("root");
    write(&root, DROPIN, &dropin(&proxy.url(), &no_proxy));
    // containerd verifies the registry against its certificate (ca_file),
    // and the host root holds containerd's config and that file, where the
    // doctor reads its trust: the TLS handshake through the tunnel
    // verifies.
    let daemon = Containerd::start_with(
        &temp_dir("ctrd"),
        &[
            ("HTTP_PROXY", &proxy.url()),
            ("HTTPS_PROXY", &proxy.url()),
            ("NO_PROXY", &no_proxy),
        ],
        &Options {
            ca_files: &[(registry.host(), &registry.cert)],
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("containerd: {e}"));
    mirror_into(&root, &daemon.config);
    mirror_into(&root, &registry.cert);
    let target = format!("{}:443", registry.host());
    let run = doctor(daemon.pid, &root, &["--format", "json", "--probe", &target]);
    let report = run.json();
    assert_eq!(run.code, 0, "{report:#}");
    let probe = &report["daemons"][0]["probes"][0];
    assert_eq!(probe["route"], "proxy");
    assert_eq!(probe["variable"], "HTTPS_PROXY");
    assert_eq!(probe["tunnel"]["kind"], "status");
    assert_eq!(probe["tunnel"]["code"], 200);
    assert_eq!(probe["tls"]["verdict"], "not_intercepted", "{report:#}");
    assert!(
        findings(&report).iter().all(|f| f["severity"] == "info"),
        "{report:#}"
    );
    assert!(
        proxy
            .connect_lines()
            .contains(&format!("CONNECT {target} HTTP/1.1")),
        "{}",
        proxy.log()
    );
    let text = doctor(daemon.pid, &root, &["--probe", &target]);
    assert_eq!(text.code, 0);
    assert!(text.stdout.contains("CONNECT 200"), "{}", text.stdout);
    println!("{}", text.stdout);
}

/// tinyproxy with BasicAuth, HTTPS_PROXY without credentials: the 407
/// finding says the variable has none and where it is set.
#[test]
fn proxy_demanding_credentials_names_the_variable_without_them() {
    let host = NetNs::new(46);
    let proxy = Tinyproxy::start(&TinyproxyOptions::with_basic_auth("user", "pass"));
    let root = temp_dir("root");
    write(&root, DROPIN, &dropin(&proxy.url(), "localhost"));
    let daemon = start_containerd(&[
        ("HTTP_PROXY", &proxy.url()),
        ("HTTPS_PROXY", &proxy.url()),
        ("NO_PROXY", "localhost"),
    ]);
    let target = format!("{}:443", host.addr);
    let run = doctor(daemon.pid, &root, &["--format", "json", "--probe", &target]);
    assert_eq!(run.code, 1);
    let report = run.json();
    assert_eq!(report["daemons"][0]["probes"][0]["tunnel"]["code"], 407);
    let f = finding(&report, "proxy-auth-required", "HTTPS_PROXY");
    let msg = f["message"].as_str().expect("message");
    assert!(msg.contains("HTTPS_PROXY has none"), "{msg}");
    assert!(msg.contains(&format!("{DROPIN}:3")), "{msg}");
    assert_eq!(f["line"], 3);

    // With credentials in the URL the same proxy lets the CONNECT through
    // (to a port with nothing behind it, so tinyproxy answers 5xx).
    let with = proxy.url_with_credentials("user", "pass");
    let tunnel = tracer_user_connect(&with, &target);
    assert!(!tunnel.contains("407"), "{tunnel}");
}

/// The CONNECT as `tracer doctor` does it, through the binary: a process
/// with the proxy in its environment, examined by pid.
fn tracer_user_connect(proxy: &str, target: &str) -> String {
    let mut child = Command::new("sleep")
        .arg("30")
        .env_clear()
        .env("HTTPS_PROXY", proxy)
        .spawn()
        .expect("sleep");
    let run = tracer(&[
        "doctor",
        "--pid",
        &child.id().to_string(),
        "--probe",
        target,
        "--format",
        "json",
        "--timeout",
        "2s",
    ]);
    let _ = child.kill();
    let _ = child.wait();
    let report = run.json();
    report["daemons"][0]["probes"][0]["tunnel"].to_string()
}

/// Without root or CAP_SYS_PTRACE another user's environment cannot be
/// read: doctor says so, and what to do, and does not call the node healthy.
#[test]
fn without_privileges_it_says_so() {
    let mut child = Command::new("sleep")
        .arg("30")
        .env_clear()
        .env("HTTPS_PROXY", "http://127.0.0.1:1")
        .spawn()
        .expect("sleep");
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(tracer_bin())
        .args([
            "doctor",
            "--pid",
            &child.id().to_string(),
            "--format",
            "json",
        ])
        .output()
        .expect("setpriv");
    let _ = child.kill();
    let _ = child.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_matches_doctor_schema(&report);
    assert_eq!(report["privileges"]["can_read_environ"], false);
    let codes: Vec<&str> = findings(&report)
        .iter()
        .filter_map(|f| f["code"].as_str())
        .collect();
    assert!(
        codes.contains(&"environ-unreadable") && codes.contains(&"no-privileges"),
        "{report:#}"
    );
    assert!(stdout.contains("CAP_SYS_PTRACE"));
}
