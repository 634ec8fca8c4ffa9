//! Seeing through TLS interception (issue 19): a real registry (Debian's
//! docker-registry over HTTPS on a test host in 203.0.113.64/26), a real
//! containerd 1.6 that trusts the registry's certificate through `ca_file`,
//! and a real proxy in between: mitmproxy (PyPI, re-signs every
//! certificate with its own CA) or tinyproxy (tunnels untouched). The
//! tracer's own handshake through the same proxy, judged against what
//! containerd trusts, must tell the two apart; and a registry whose own
//! certificate is wrong is named as such. Privileged; run under the shared
//! lock (see BRIEF).
//!
//! The host root given to the tracer mirrors the node's files it reads:
//! the drop-in that sets the proxy, and containerd's config and CA files
//! at their real absolute paths (the tracer reads them through the host
//! root, never the test's own `/`). It holds no system CA bundle, so
//! containerd's trust as the tracer sees it is the `ca_file` alone.

use std::{path::Path, process::Command};

use serde_json::Value;
use tracer_tests::{
    containerd::{Containerd, Options},
    dropin_root, env_refs, mirror_into,
    mitmproxy::Mitmproxy,
    proxy_vars,
    registry::{Cert, Registry},
    temp_dir,
    tinyproxy::{Tinyproxy, TinyproxyOptions},
    tracer_bin, CONTAINERD_DROPIN,
};

const DROPIN: &str = CONTAINERD_DROPIN;

/// Test hosts 16..=23 of 203.0.113.0/24 (203.0.113.66 and up): a range
/// no other test uses.
const FIRST_HOST: u8 = 16;

/// containerd with `vars`, verifying `registry` against `ca_file`; its
/// config and CA file mirrored into `root`.
fn containerd(
    vars: &[(&str, &str)],
    registry: &Registry,
    ca_file: Option<&Path>,
    root: &Path,
) -> Containerd {
    let ca = ca_file.map(|f| [(registry.host(), f)]);
    let daemon = Containerd::start_with(
        &temp_dir("tlsctrd"),
        vars,
        &Options {
            ca_files: ca.as_ref().map_or(&[], |c| c.as_slice()),
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("containerd: {e}"));
    mirror_into(root, &daemon.config);
    if let Some(f) = ca_file {
        mirror_into(root, f);
    }
    daemon
}

/// `tracer preflight --image IMAGE` against the daemon: (exit code, stdout).
fn preflight(daemon: &Containerd, image: &str, root: &Path, json: bool) -> (i32, String) {
    let out = Command::new(tracer_bin())
        .args(["preflight", "--image", image, "--runtime-endpoint"])
        .arg(&daemon.socket)
        .arg("--host-root")
        .arg(root)
        .args(["--timeout", "30s"])
        .args(if json { &["--format", "json"][..] } else { &[] })
        .output()
        .expect("run tracer preflight");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        !stdout.is_empty(),
        "preflight printed nothing: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), stdout)
}

fn preflight_json(daemon: &Containerd, image: &str, root: &Path) -> (i32, Value) {
    let (code, stdout) = preflight(daemon, image, root, true);
    let report: Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("preflight JSON ({e}): {stdout}"));
    tracer_tests::assert_matches_schema_file("preflight.schema.json", &report);
    (code, report)
}

/// `tracer doctor --pid PID --probe TARGET --host-root ROOT EXTRA...`:
/// (exit code, stdout).
fn doctor(daemon: &Containerd, target: &str, root: &Path, extra: &[&str]) -> (i32, String) {
    let out = Command::new(tracer_bin())
        .args([
            "doctor",
            "--pid",
            &daemon.pid.to_string(),
            "--probe",
            target,
        ])
        .arg("--host-root")
        .arg(root)
        .args(["--timeout", "3s"])
        .args(extra)
        .output()
        .expect("run tracer doctor");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn doctor_json(daemon: &Containerd, target: &str, root: &Path) -> (i32, Value) {
    let (code, stdout) = doctor(daemon, target, root, &["--format", "json"]);
    let report: Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("doctor JSON ({e}): {stdout}"));
    tracer_tests::assert_matches_doctor_schema(&report);
    (code, report)
}

fn findings(report: &Value) -> Vec<&Value> {
    report["daemons"][0]["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .collect()
}

fn codes(report: &Value) -> Vec<&str> {
    findings(report)
        .iter()
        .filter_map(|f| f["code"].as_str())
        .collect()
}

fn finding<'a>(report: &'a Value, code: &str) -> &'a Value {
    findings(report)
        .into_iter()
        .find(|f| f["code"] == code)
        .unwrap_or_else(|| panic!("no {code} finding: {report:#}"))
}

/// The case: containerd trusts the registry (`ca_file`), its
/// HTTPS_PROXY (drop-in line 3) is mitmproxy. The pull fails with Go's
/// x509 error; preflight and doctor both say the proxy intercepts TLS,
/// name mitmproxy as the issuer and the drop-in, and exit 1.
#[test]
fn through_mitmproxy_the_interception_is_named_with_its_issuer_and_the_dropin() {
    let registry = Registry::start(FIRST_HOST);
    registry.ns().assert_routed();
    let mitm = Mitmproxy::start();
    let vars = proxy_vars(&mitm.url());
    let root = dropin_root(&env_refs(&vars));
    let daemon = containerd(&env_refs(&vars), &registry, Some(&registry.cert), &root);
    let target = format!("{}:443", registry.host());

    let (code, report) = preflight_json(&daemon, &registry.image(), &root);
    assert_eq!(code, 1, "{report:#}");
    let error = report["runtime_error"].as_str().unwrap_or_default();
    assert!(error.contains("x509"), "{report:#}");
    let tls = &report["tls"];
    assert_eq!(tls["path"], "proxy", "{report:#}");
    assert_eq!(tls["verdict"], "intercepted", "{report:#}");
    assert_eq!(tls["handshake"]["chain"][0]["issuer_name"], "mitmproxy");
    assert_eq!(tls["direct"]["same_certificate"], false);
    assert_eq!(tls["direct"]["leaf"]["issuer_name"], "registry.test");
    assert_eq!(tls["judgement"]["problem"], "unknown_authority");
    let verdict = report["verdict"].as_str().unwrap_or_default();
    let ca = registry.cert.display().to_string();
    for needle in [
        format!("reached its proxy 127.0.0.1:{}", mitm.port),
        format!("HTTPS_PROXY, {DROPIN}:3"),
        format!("intercepted TLS to {target}"),
        "issued by 'mitmproxy'".to_string(),
        format!("containerd trusts only {ca} for that registry"),
        format!("put {} in NO_PROXY", registry.host()),
    ] {
        assert!(verdict.contains(&needle), "{needle:?} not in: {verdict}");
    }
    // The text report, as an operator sees it (docs/notes-tls.md).
    let (code, text) = preflight(&daemon, &registry.image(), &root, false);
    assert_eq!(code, 1);
    assert!(text.contains("tls: intercepted"), "{text}");
    println!("{text}");

    let (code, report) = doctor_json(&daemon, &target, &root);
    assert_eq!(code, 1, "{report:#}");
    let f = finding(&report, "proxy-intercepts-tls");
    assert_eq!(f["severity"], "error");
    assert_eq!(f["variable"], "HTTPS_PROXY");
    assert_eq!(f["file"], DROPIN);
    assert_eq!(f["line"], 3);
    let msg = f["message"].as_str().unwrap_or_default();
    assert!(msg.contains("issued by 'mitmproxy'"), "{msg}");
    assert!(msg.contains("NO_PROXY"), "{msg}");
    assert_eq!(
        report["daemons"][0]["probes"][0]["tls"]["verdict"],
        "intercepted"
    );
    let (code, text) = doctor(&daemon, &target, &root, &[]);
    assert_eq!(code, 1);
    assert!(text.contains("proxy-intercepts-tls"), "{text}");
    println!("{text}");
}

/// The node trusts mitmproxy's CA for the registry (added to containerd's
/// `ca_file` bundle): the pull works, and both say the proxy intercepts
/// TLS with a trusted CA; exit 0. Doctor's warnings (NO_PROXY lacks the
/// node's addresses) fail it only with --strict.
#[test]
fn a_node_that_trusts_the_proxy_ca_is_intercepted_but_trusted() {
    let registry = Registry::start(FIRST_HOST + 1);
    registry.ns().assert_routed();
    let mitm = Mitmproxy::start();
    let bundle = temp_dir("tlsbundle").join("registry-and-proxy.crt");
    let mut pem = std::fs::read_to_string(&registry.cert).expect("registry cert");
    pem.push_str(&std::fs::read_to_string(mitm.ca_cert()).expect("mitmproxy CA"));
    std::fs::write(&bundle, pem).expect("write bundle");
    let vars = proxy_vars(&mitm.url());
    let root = dropin_root(&env_refs(&vars));
    let daemon = containerd(&env_refs(&vars), &registry, Some(&bundle), &root);
    let target = format!("{}:443", registry.host());

    let (code, report) = preflight_json(&daemon, &registry.image(), &root);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(
        report["tls"]["verdict"], "intercepted_trusted",
        "{report:#}"
    );
    assert_eq!(report["tls"]["judgement"]["verified"], true);
    let verdict = report["verdict"].as_str().unwrap_or_default();
    assert!(verdict.contains("pulled the image"), "{verdict}");
    assert!(
        verdict.contains("intercepts TLS") && verdict.contains("issued by 'mitmproxy'"),
        "{verdict}"
    );

    let (code, report) = doctor_json(&daemon, &target, &root);
    assert_eq!(code, 0, "{report:#}");
    let f = finding(&report, "proxy-intercepts-tls-trusted");
    assert_eq!(f["severity"], "info");
    assert!(!codes(&report).contains(&"proxy-intercepts-tls"));
    assert!(
        report["summary"]["warnings"].as_u64().unwrap_or(0) > 0,
        "NO_PROXY lacks the node's addresses: a warning {report:#}"
    );
    let (strict, _) = doctor(&daemon, &target, &root, &["--strict"]);
    assert_eq!(strict, 1, "--strict fails on the warning");
}

/// The daemon trusts mitmproxy's CA the way Go reads its system pool, not
/// through containerd's config: first a bundle that its `SSL_CERT_FILE`
/// names, then a folder that its `SSL_CERT_DIR` names, holding the CA as a
/// file of its own beside an OpenSSL hash link. containerd pulls through
/// the proxy both times, so the tracer must see the same trust: intercepted
/// but trusted, exit 0, the trust naming the file or the folder.
#[test]
fn a_daemon_trusting_the_proxy_ca_by_ssl_cert_file_or_dir_is_seen_so() {
    let registry = Registry::start(FIRST_HOST + 4);
    registry.ns().assert_routed();
    let mitm = Mitmproxy::start();
    let registry_pem = std::fs::read_to_string(&registry.cert).expect("registry cert");
    let mitm_pem = std::fs::read_to_string(mitm.ca_cert()).expect("mitmproxy CA");
    let scratch = temp_dir("tlsgoenv");
    let bundle = scratch.join("corp-bundle.pem");
    std::fs::write(&bundle, format!("{registry_pem}{mitm_pem}")).expect("bundle");
    let folder = scratch.join("corp-certs");
    std::fs::create_dir_all(&folder).expect("mkdir");
    std::fs::write(folder.join("registry.pem"), &registry_pem).expect("registry.pem");
    std::fs::write(folder.join("corp-proxy.pem"), &mitm_pem).expect("corp-proxy.pem");
    std::os::unix::fs::symlink("corp-proxy.pem", folder.join("0a1b2c3d.0")).expect("hash link");

    let bundle_var = bundle.display().to_string();
    let folder_var = folder.display().to_string();
    for (var, value, shown) in [
        ("SSL_CERT_FILE", &bundle_var, bundle_var.clone()),
        ("SSL_CERT_DIR", &folder_var, format!("{folder_var}/")),
    ] {
        let vars = proxy_vars(&mitm.url());
        let root = dropin_root(&env_refs(&vars));
        mirror_into(&root, &folder.join("registry.pem"));
        mirror_into(&root, &folder.join("corp-proxy.pem"));
        std::os::unix::fs::symlink(
            "corp-proxy.pem",
            root.join(folder.strip_prefix("/").expect("absolute"))
                .join("0a1b2c3d.0"),
        )
        .expect("hash link in the host root");
        mirror_into(&root, &bundle);
        let mut env = env_refs(&vars);
        env.push((var, value.as_str()));
        let daemon = containerd(&env, &registry, None, &root);

        let (code, report) = preflight_json(&daemon, &registry.image(), &root);
        assert_eq!(code, 0, "{var}: {report:#}");
        assert_eq!(
            report["tls"]["verdict"], "intercepted_trusted",
            "{var}: {report:#}"
        );
        let verdict = report["verdict"].as_str().unwrap_or_default();
        assert!(verdict.contains("pulled the image"), "{var}: {verdict}");
        let trust = report["tls"]["trust"].to_string();
        assert!(
            trust.contains(&shown) && trust.contains(var),
            "{var}: {trust}"
        );
        if var == "SSL_CERT_DIR" {
            // Two files, the hash link skipped.
            assert!(trust.contains("\"certificates\":2"), "{trust}");
        }
    }
}

/// Through tinyproxy, with the same trust: the registry's own certificate
/// arrives through the tunnel. No interception is claimed; exit 0.
#[test]
fn through_tinyproxy_no_interception_is_claimed() {
    let registry = Registry::start(FIRST_HOST + 2);
    registry.ns().assert_routed();
    let proxy = Tinyproxy::start(&TinyproxyOptions::default());
    let vars = proxy_vars(&proxy.url());
    let root = dropin_root(&env_refs(&vars));
    let daemon = containerd(&env_refs(&vars), &registry, Some(&registry.cert), &root);
    let target = format!("{}:443", registry.host());

    let (code, report) = preflight_json(&daemon, &registry.image(), &root);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["tls"]["verdict"], "not_intercepted", "{report:#}");
    assert_eq!(report["tls"]["direct"]["same_certificate"], true);
    assert!(
        !report["verdict"]
            .as_str()
            .unwrap_or_default()
            .contains("intercept"),
        "{report:#}"
    );

    let (code, report) = doctor_json(&daemon, &target, &root);
    assert_eq!(code, 0, "{report:#}");
    let tls = &report["daemons"][0]["probes"][0]["tls"];
    assert_eq!(tls["verdict"], "not_intercepted");
    assert_eq!(tls["handshake"]["chain"][0]["issuer_name"], "registry.test");
    assert_eq!(tls["trust"][0]["origin"], "containerd ca_file");
    assert!(
        !codes(&report).iter().any(|c| c.contains("tls")),
        "{report:#}"
    );
}

/// No proxy at all: a registry whose certificate names another host, one
/// whose certificate expired (both trusted as files), and one that is not
/// trusted. Each is named as such, and agrees with containerd's own x509
/// error.
#[test]
fn direct_certificate_problems_are_named() {
    let cases = [
        (
            Cert::WrongName,
            true,
            "tls-certificate-wrong-name",
            "wrong_name",
            // Go, for an IP address and a certificate without IP SANs.
            "x509: cannot validate certificate for",
        ),
        (
            Cert::Expired,
            true,
            "tls-certificate-expired",
            "expired",
            "x509: certificate has expired",
        ),
        (
            Cert::SelfSigned,
            false,
            "tls-certificate-unknown-authority",
            "unknown_authority",
            "x509: certificate signed by unknown authority",
        ),
    ];
    for (i, (cert, trusted, code_name, problem, go_error)) in cases.into_iter().enumerate() {
        let registry = Registry::start_with(FIRST_HOST + 3 + i as u8, cert);
        registry.ns().assert_routed();
        let root = dropin_root(&[]);
        let ca = trusted.then_some(registry.cert.as_path());
        let daemon = containerd(&[], &registry, ca, &root);
        let target = format!("{}:443", registry.host());

        let (code, report) = doctor_json(&daemon, &target, &root);
        assert_eq!(code, 1, "{cert:?}: {report:#}");
        let f = finding(&report, code_name);
        assert_eq!(f["severity"], "error");
        let tls = &report["daemons"][0]["probes"][0]["tls"];
        assert_eq!(tls["path"], "direct");
        assert_eq!(tls["verdict"], "certificate_problem");
        assert_eq!(tls["judgement"]["problem"], problem, "{cert:?}: {report:#}");
        println!("{cert:?}: {}", f["message"]);

        let (code, report) = preflight_json(&daemon, &registry.image(), &root);
        assert_eq!(code, 1, "{report:#}");
        let error = report["runtime_error"].as_str().unwrap_or_default();
        assert!(
            error.contains(go_error),
            "{cert:?}: containerd said {error}"
        );
        assert_eq!(report["tls"]["judgement"]["problem"], problem);
        let verdict = report["verdict"].as_str().unwrap_or_default();
        assert!(
            verdict.contains(&format!("reached {target} directly")),
            "{verdict}"
        );
    }
}
