//! Real test infrastructure for image pulls through a proxy: Debian's
//! tinyproxy, docker-registry in a network namespace, containerd 1.6. No
//! mocks. Privileged (root): `cargo test --release -p tracer-tests --test
//! registry -- --test-threads=1`.

use std::{path::PathBuf, process::Command, time::Instant};

use tracer_tests::{
    containerd::{Containerd, Options},
    registry::{self, Registry},
    temp_dir,
    tinyproxy::{Tinyproxy, TinyproxyOptions},
};

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

/// A containerd daemon in a fresh folder, removed (with the folder) on drop.
struct Daemon {
    containerd: Option<Containerd>,
    dir: PathBuf,
}

impl Daemon {
    /// containerd that trusts `registry`'s self-signed certificate, with
    /// `env` (and nothing else but PATH) as a systemd unit would give it.
    fn start(registry: &Registry, env: &[(&str, &str)]) -> Daemon {
        let dir = temp_dir("ctd");
        let host = registry.host();
        let containerd = Containerd::start_with(
            &dir,
            env,
            &Options {
                insecure_registries: &[host],
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("containerd: {e}"));
        Daemon {
            containerd: Some(containerd),
            dir,
        }
    }

    fn pull(&self, image: &str) -> Result<(), String> {
        let t = Instant::now();
        let r = self.containerd.as_ref().expect("running").cri_pull(image);
        eprintln!("CRI pull of {image}: {:?} after {:?}", r, t.elapsed());
        r
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        drop(self.containerd.take());
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// What every failed pull of the registry's image starts with.
fn error_prefix(registry: &Registry) -> String {
    let image = registry.image();
    format!(
        "failed to pull and unpack image \"{image}\": failed to resolve reference \"{image}\": \
         failed to do request: Head \"https://{}/v2/{}/manifests/{}\": ",
        registry.host(),
        registry::REPOSITORY,
        registry::TAG
    )
}

fn proxy_env(url: &str) -> Vec<(&str, &str)> {
    vec![
        ("HTTPS_PROXY", url),
        ("HTTP_PROXY", url),
        ("NO_PROXY", "localhost,127.0.0.1"),
    ]
}

/// a. Through a working proxy the pull succeeds, and the proxy saw the
/// CONNECT to the registry.
#[test]
fn pull_through_working_proxy() {
    let t = Instant::now();
    let registry = Registry::start(0);
    assert_eq!(registry.image(), "203.0.113.2/acc/img:1");
    let proxy = Tinyproxy::start(&TinyproxyOptions::default());
    let url = proxy.url();
    let daemon = Daemon::start(&registry, &proxy_env(&url));
    daemon
        .pull(&registry.image())
        .unwrap_or_else(|e| panic!("pull failed: {e}\nproxy log:\n{}", proxy.log()));
    let connect = format!("CONNECT {}:443 HTTP/1.1", registry.host());
    assert!(
        proxy.connect_lines().contains(&connect),
        "no `{connect}` in the proxy's log:\n{}",
        proxy.log()
    );
    eprintln!("pull_through_working_proxy: {:?}", t.elapsed());
}

/// b. The registry is down behind a working proxy: containerd reports
/// tinyproxy's reason phrase only, with no word of a proxy.
#[test]
fn registry_down_behind_proxy() {
    let t = Instant::now();
    let mut registry = Registry::start(1);
    registry.stop();
    let proxy = Tinyproxy::start(&TinyproxyOptions::default());
    let url = proxy.url();
    let daemon = Daemon::start(&registry, &proxy_env(&url));
    let err = daemon
        .pull(&registry.image())
        .expect_err("the pull should fail: the registry is down");
    assert!(err.starts_with(&error_prefix(&registry)), "{err}");
    assert!(err.contains("Unable to connect"), "{err}");
    assert!(!err.to_lowercase().contains("proxy"), "{err}");
    let connect = format!("CONNECT {}:443 HTTP/1.1", registry.host());
    assert!(
        proxy.connect_lines().contains(&connect),
        "the proxy should have tried: {}",
        proxy.log()
    );
    eprintln!("registry_down_behind_proxy: {:?}", t.elapsed());
}

/// c. A proxy that demands credentials: without them, `Proxy
/// Authentication Required`; with them in the URL, success.
#[test]
fn proxy_demands_credentials() {
    let t = Instant::now();
    let registry = Registry::start(2);
    let proxy = Tinyproxy::start(&TinyproxyOptions::with_basic_auth("user", "pass"));

    let url = proxy.url();
    let daemon = Daemon::start(&registry, &proxy_env(&url));
    let err = daemon
        .pull(&registry.image())
        .expect_err("the pull should fail: no credentials for the proxy");
    assert!(err.starts_with(&error_prefix(&registry)), "{err}");
    assert!(err.contains("Proxy Authentication Required"), "{err}");
    drop(daemon);

    let url = proxy.url_with_credentials("user", "pass");
    let daemon = Daemon::start(&registry, &proxy_env(&url));
    daemon
        .pull(&registry.image())
        .unwrap_or_else(|e| panic!("pull with credentials failed: {e}\n{}", proxy.log()));
    eprintln!("proxy_demands_credentials: {:?}", t.elapsed());
}

/// d. NO_PROXY covers the registry, which is down: containerd dials it
/// directly and is refused; the proxy sees nothing.
#[test]
fn no_proxy_registry_down() {
    let t = Instant::now();
    let mut registry = Registry::start(3);
    registry.stop();
    let proxy = Tinyproxy::start(&TinyproxyOptions::default());
    let url = proxy.url();
    let no_proxy = format!("localhost,127.0.0.1,{}", registry.host());
    let daemon = Daemon::start(
        &registry,
        &[
            ("HTTPS_PROXY", &url),
            ("HTTP_PROXY", &url),
            ("NO_PROXY", &no_proxy),
        ],
    );
    let err = daemon
        .pull(&registry.image())
        .expect_err("the pull should fail: the registry is down");
    assert!(err.starts_with(&error_prefix(&registry)), "{err}");
    let refused = format!(
        "dial tcp {}:443: connect: connection refused",
        registry.host()
    );
    assert!(err.contains(&refused), "{err}");
    assert_eq!(
        proxy.request_lines(),
        Vec::<String>::new(),
        "{}",
        proxy.log()
    );
    eprintln!("no_proxy_registry_down: {:?}", t.elapsed());
}

/// The registry's certificate verifies for its IP (SAN), names
/// `registry.test`, and the pushed manifest is served with its digest.
#[test]
fn registry_serves_the_image_with_a_verifiable_certificate() {
    let registry = Registry::start(4);
    registry.ns().assert_routed();
    let manifest_url = format!(
        "https://{}/v2/{}/manifests/{}",
        registry.host(),
        registry::REPOSITORY,
        registry::TAG
    );
    let out = Command::new("curl")
        .args(["-sS", "-f", "--noproxy", "*", "--max-time", "10", "-I"])
        .arg("--cacert")
        .arg(&registry.cert)
        .args([
            "-H",
            "Accept: application/vnd.docker.distribution.manifest.v2+json",
        ])
        .arg(&manifest_url)
        .output()
        .expect("run curl");
    let head = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        head.contains(&format!(
            "docker-content-digest: {}",
            registry.manifest_digest
        )),
        "{head}"
    );
    let san = tracer_tests::sh(&format!(
        "openssl x509 -noout -ext subjectAltName -in {}",
        registry.cert.display()
    ));
    assert!(san.contains("DNS:registry.test"), "{san}");
    assert!(
        san.contains(&format!("IP Address:{}", registry.host())),
        "{san}"
    );
}
