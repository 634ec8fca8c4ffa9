//! Real test infrastructure for image pulls through a proxy: Debian's
//! tinyproxy, docker-registry in a network namespace, containerd 1.6. No
//! mocks. Privileged (root): `cargo test --release -p tracer-tests --test
//! registry -- --test-threads=1`.

use std::process::Command;

use tracer_tests::tinyproxy::{Tinyproxy, TinyproxyOptions};

/// `curl` through the proxy to a closed loopback port: tinyproxy logs the
/// CONNECT line and answers with its own reason phrase.
#[test]
fn tinyproxy_logs_connect_lines() {
    let proxy = Tinyproxy::start(&TinyproxyOptions {
        connect_ports: vec![],
        ..TinyproxyOptions::default()
    });
    let port = tracer_tests::closed_port();
    let out = Command::new("curl")
        .args(["-sS", "-k", "--max-time", "10", "-p", "-x", &proxy.url()])
        .arg(format!("https://127.0.0.1:{port}/"))
        .output()
        .expect("run curl");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "curl should fail: {stderr}");
    assert_eq!(
        proxy.connect_lines(),
        vec![format!("CONNECT 127.0.0.1:{port} HTTP/1.1")],
        "log:\n{}",
        proxy.log()
    );
}

/// A proxy with BasicAuth answers 407 without credentials, and lets a
/// CONNECT through with them.
#[test]
fn tinyproxy_basic_auth() {
    let proxy = Tinyproxy::start(&TinyproxyOptions {
        connect_ports: vec![],
        ..TinyproxyOptions::with_basic_auth("user", "pass")
    });
    let port = tracer_tests::closed_port();
    let code = |proxy_url: &str| {
        let out = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "10",
            ])
            .args(["-x", proxy_url])
            .arg(format!("http://127.0.0.1:{port}/"))
            .output()
            .expect("run curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(code(&proxy.url()), "407");
    // With credentials the proxy forwards; the closed port makes it a 500.
    assert_eq!(code(&proxy.url_with_credentials("user", "pass")), "500");
}
