//! `tracer preflight`: a real containerd pulls a real image from a real
//! registry (Debian's docker-registry, HTTPS, on a test host in a network
//! namespace) through a real proxy (Debian's tinyproxy on loopback), and
//! the preflight joins the runtime's error, the traced attempts and the
//! configuration into one verdict. Privileged; run by `cargo xtask test`.

use std::{
    path::Path,
    process::{Command, Output},
};

use serde_json::Value;
use tracer_tests::{
    closed_port,
    containerd::{Containerd, Options},
    registry::Registry,
    temp_dir,
    tinyproxy::{Tinyproxy, TinyproxyOptions},
    tracer_bin,
};

use tracer_tests::{dropin_root as host_root_with, env_refs as refs, CONTAINERD_DROPIN as DROPIN};

/// containerd with `vars` (as the drop-in gives them), trusting the test
/// registry.
fn containerd(vars: &[(&str, &str)], registry: &Registry) -> Containerd {
    let dir = temp_dir("pfctrd");
    Containerd::start_with(
        &dir,
        vars,
        &Options {
            insecure_registries: &[registry.host()],
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("containerd: {e}"))
}

/// The text report of a failing pull, printed (shown with --nocapture;
/// the README's examples come from here).
fn preflight_text(daemon: &Containerd, image: &str, root: &Path) -> String {
    let out = Command::new(tracer_bin())
        .args(["preflight", "--image", image, "--runtime-endpoint"])
        .arg(&daemon.socket)
        .arg("--host-root")
        .arg(root)
        .output()
        .expect("text preflight");
    assert_eq!(out.status.code(), Some(1), "the pull fails");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{text}");
    text
}

/// `tracer preflight` against the daemon; (exit code, JSON report).
fn preflight(
    daemon: &Containerd,
    image: &str,
    root: &Path,
    extra: &[&str],
) -> (i32, Value, Output) {
    let out = Command::new(tracer_bin())
        .args(["preflight", "--image", image, "--runtime-endpoint"])
        .arg(&daemon.socket)
        .arg("--host-root")
        .arg(root)
        .args(["--timeout", "30s", "--format", "json"])
        .args(extra)
        .output()
        .expect("run tracer preflight");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "preflight printed no JSON report ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    tracer_tests::assert_matches_schema_file("preflight.schema.json", &report);
    (out.status.code().unwrap_or(-1), report, out)
}

fn proxy_env(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("HTTP_PROXY", url.to_string()),
        ("HTTPS_PROXY", url.to_string()),
        ("NO_PROXY", "localhost,127.0.0.1".to_string()),
    ]
}

#[test]
fn a_pull_through_a_working_proxy_succeeds_and_says_which_path() {
    let registry = Registry::start(10);
    let proxy = Tinyproxy::start(&TinyproxyOptions::default());
    let vars = proxy_env(&proxy.url());
    let root = host_root_with(&refs(&vars));
    let daemon = containerd(&refs(&vars), &registry);
    let (code, report, _) = preflight(&daemon, &registry.image(), &root, &[]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["outcome"], "pulled");
    assert_eq!(report["runtime"]["pid"], daemon.pid);
    assert_eq!(report["runtime"]["name"], "containerd");
    assert_eq!(report["route"]["kind"], "proxy");
    let verdict = report["verdict"].as_str().unwrap_or_default();
    assert!(
        verdict.contains(&format!(
            "through its proxy HTTPS_PROXY 127.0.0.1:{}",
            proxy.port
        )),
        "{verdict}"
    );
    assert!(verdict.contains(&format!("{DROPIN}:3")), "{verdict}");
    let attempts = report["attempts"].as_array().expect("attempts");
    assert!(
        attempts
            .iter()
            .any(|a| a["via_proxy"] == true && a["result"] == "connected"),
        "{attempts:#?}"
    );
    assert!(proxy
        .connect_lines()
        .iter()
        .any(|l| l.starts_with(&format!("CONNECT {}:443", registry.host()))));
}

#[test]
fn the_incident_a_closed_proxy_port() {
    let registry = Registry::start(11);
    let url = format!("http://127.0.0.1:{}", closed_port());
    let vars = proxy_env(&url);
    let root = host_root_with(&refs(&vars));
    let daemon = containerd(&refs(&vars), &registry);
    let (code, report, _) = preflight(&daemon, &registry.image(), &root, &[]);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["outcome"], "failed");
    let error = report["runtime_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("proxyconnect tcp") && error.contains("connection refused"),
        "{error}"
    );
    let verdict = report["verdict"].as_str().unwrap_or_default();
    for part in [
        "containerd",
        "HTTPS_PROXY",
        "connection refused",
        &format!("{DROPIN}:3"),
    ] {
        assert!(verdict.contains(part), "{part} missing: {verdict}");
    }
    // The text form, as an operator sees it (and the README shows).
    let text = preflight_text(&daemon, &registry.image(), &root);
    assert!(
        text.contains("FAILED") && text.contains("refused"),
        "{text}"
    );
}

#[test]
fn registry_down_behind_a_working_proxy_is_told_apart() {
    let mut registry = Registry::start(12);
    let proxy = Tinyproxy::start(&TinyproxyOptions::default());
    let vars = proxy_env(&proxy.url());
    let root = host_root_with(&refs(&vars));
    let daemon = containerd(&refs(&vars), &registry);
    registry.stop();
    let (code, report, out) = preflight(&daemon, &registry.image(), &root, &[]);
    assert_eq!(code, 1, "{report:#}");
    let error = report["runtime_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("Unable to connect"),
        "containerd's terse error: {error}"
    );
    assert_eq!(report["proxy_answer"]["status_code"], 500, "{report:#}");
    assert_eq!(
        report["proxy_answer"]["request"],
        format!("CONNECT {}:443", registry.host())
    );
    let verdict = report["verdict"].as_str().unwrap_or_default();
    assert!(verdict.contains("reached its proxy"), "{verdict}");
    assert!(
        verdict.contains("could not connect to the registry"),
        "{verdict}"
    );
    assert!(verdict.contains("500"), "{verdict}");
    let _ = out;
    let text = preflight_text(&daemon, &registry.image(), &root);
    assert!(text.contains("proxy answered: CONNECT"), "{text}");
}

#[test]
fn a_proxy_demanding_credentials_the_variable_lacks() {
    let registry = Registry::start(13);
    let proxy = Tinyproxy::start(&TinyproxyOptions::with_basic_auth("ops", "s3cret"));
    let vars = proxy_env(&proxy.url());
    let root = host_root_with(&refs(&vars));
    let daemon = containerd(&refs(&vars), &registry);
    let (code, report, _) = preflight(&daemon, &registry.image(), &root, &[]);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["proxy_answer"]["status_code"], 407, "{report:#}");
    let verdict = report["verdict"].as_str().unwrap_or_default();
    assert!(verdict.contains("demands credentials"), "{verdict}");
    assert!(verdict.contains("HTTPS_PROXY has none"), "{verdict}");
    assert!(verdict.contains(&format!("{DROPIN}:3")), "{verdict}");
    let text = preflight_text(&daemon, &registry.image(), &root);
    assert!(text.contains("407"), "{text}");
}

#[test]
fn no_proxy_covering_the_registry_sends_the_pull_direct() {
    let mut registry = Registry::start(14);
    let proxy = Tinyproxy::start(&TinyproxyOptions::default());
    let no_proxy = format!("localhost,127.0.0.1,{}", registry.host());
    let vars = vec![
        ("HTTP_PROXY", proxy.url()),
        ("HTTPS_PROXY", proxy.url()),
        ("NO_PROXY", no_proxy.clone()),
    ];
    let root = host_root_with(&refs(&vars));
    let daemon = containerd(&refs(&vars), &registry);
    registry.stop();
    let (code, report, _) = preflight(&daemon, &registry.image(), &root, &[]);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["route"]["kind"], "direct");
    assert_eq!(report["route"]["variable"], "NO_PROXY");
    let verdict = report["verdict"].as_str().unwrap_or_default();
    assert!(
        verdict.contains(&format!(
            "went directly to {}:443 because NO_PROXY={no_proxy} covers",
            registry.host()
        )),
        "{verdict}"
    );
    assert!(verdict.contains("connection refused"), "{verdict}");
    assert!(proxy.connect_lines().is_empty(), "the proxy saw nothing");
}

#[test]
fn credentials_never_appear_and_remove_cleans_up() {
    let registry = Registry::start(15);
    let proxy = Tinyproxy::start(&TinyproxyOptions::with_basic_auth("ops", "s3cret"));
    let url = format!("http://ops:s3cret@127.0.0.1:{}", proxy.port);
    let vars = proxy_env(&url);
    let root = host_root_with(&refs(&vars));
    let daemon = containerd(&refs(&vars), &registry);
    let (code, report, out) = preflight(&daemon, &registry.image(), &root, &["--remove"]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["removed"], true);
    for stream in [&out.stdout, &out.stderr] {
        let text = String::from_utf8_lossy(stream);
        assert!(!text.contains("s3cret"), "a credential leaked: {text}");
    }
}
