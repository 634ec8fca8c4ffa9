//! The proxy exchange (issue #11, part 1): what a process asked its proxy
//! for and what the proxy answered, from the kernel's cgroup_skb view.
//! Real parts only: Debian's containerd 1.6 pulling from Debian's
//! docker-registry on a test host (203.0.113.2, its own network namespace)
//! through Debian's tinyproxy on loopback, and curl. Privileged; run by
//! `cargo xtask test -- exchange`.
//!
//! The daemon is started before the tracer, as on a node: the tracer finds
//! the running processes with proxy variables at start and attaches the
//! payload programs to their cgroups, so their next connection is watched.

use std::{
    path::PathBuf,
    process::{Child, Stdio},
    time::Duration,
};

use serde_json::Value;
use tracer_tests::{
    containerd::{Containerd, Options},
    registry::Registry,
    temp_dir,
    tinyproxy::{Tinyproxy, TinyproxyOptions},
    Tracer, UnitCgroup,
};

use tracer_tests::{dropin_root as host_root_with, CONTAINERD_DROPIN as DROPIN};

fn proxy_env(url: &str) -> Vec<(&str, &str)> {
    vec![
        ("HTTP_PROXY", url),
        ("HTTPS_PROXY", url),
        ("NO_PROXY", "localhost,127.0.0.1"),
    ]
}

fn containerd(vars: &[(&str, &str)], registry: &Registry) -> Containerd {
    Containerd::start_with(
        &temp_dir("xctrd"),
        vars,
        &Options {
            insecure_registries: &[registry.host()],
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("containerd: {e}"))
}

/// The tracer, started after the daemon, pointed at the drop-in's root.
fn tracer(root: &std::path::Path) -> Tracer {
    Tracer::start(&[
        "--proxy-only",
        "--host-root",
        root.to_str().expect("utf8 path"),
    ])
}

/// Events of `pid` that carry a proxy exchange with a request line.
fn exchanges(events: &[Value], pid: u32) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| e["process"]["pid"] == pid)
        .filter(|e| !e["tracer"]["proxy"]["request"].is_null())
        .collect()
}

/// Print events (shown with --nocapture; the README's examples).
fn show(events: &[&Value]) {
    for e in events {
        println!("{e}");
    }
}

/// Test 1: a pull through a working proxy. The event of the dial to the
/// proxy carries `CONNECT 203.0.113.2:443` and the proxy's 200.
#[test]
fn a_pull_through_a_working_proxy_shows_connect_and_200() {
    let registry = Registry::start(0);
    assert_eq!(registry.host(), "203.0.113.2");
    let proxy = Tinyproxy::start(&TinyproxyOptions::default());
    let url = proxy.url();
    let vars = proxy_env(&url);
    let root = host_root_with(&vars);
    let daemon = containerd(&vars, &registry);
    let tracer = tracer(&root);
    daemon
        .cri_pull(&registry.image())
        .unwrap_or_else(|e| panic!("the pull through the proxy fails: {e}"));
    let stopped = tracer.stop();
    let found = exchanges(&stopped.events, daemon.pid);
    show(&found);
    let connect = found
        .iter()
        .find(|e| e["tracer"]["proxy"]["request"]["method"] == "CONNECT")
        .unwrap_or_else(|| {
            panic!(
                "no CONNECT in the events of containerd {}: {:#?}\nstderr: {}",
                daemon.pid, stopped.events, stopped.stderr
            )
        });
    let p = &connect["tracer"]["proxy"];
    assert_eq!(p["request"]["target"], "203.0.113.2:443");
    assert_eq!(p["response"]["status_code"], 200, "{connect}");
    assert_eq!(p["exchange"], "answered");
    assert_eq!(p["via"], true);
    assert_eq!(p["variable"], "HTTPS_PROXY");
    assert_eq!(connect["tracer"]["result"], "connected");
    // The proxy agrees: it logged the same request line.
    assert!(proxy
        .connect_lines()
        .iter()
        .any(|l| l.starts_with("CONNECT 203.0.113.2:443")));
}

/// Test 2: the registry is down behind a live proxy. containerd says only
/// "Unable to connect"; the event carries the proxy's 500 and says it all.
#[test]
fn the_registry_down_behind_the_proxy_shows_the_500() {
    let mut registry = Registry::start(0);
    let proxy = Tinyproxy::start(&TinyproxyOptions::default());
    let url = proxy.url();
    let vars = proxy_env(&url);
    let root = host_root_with(&vars);
    let daemon = containerd(&vars, &registry);
    registry.stop();
    let tracer = tracer(&root);
    let err = daemon
        .cri_pull(&registry.image())
        .expect_err("the pull fails with the registry down");
    assert!(err.contains("Unable to connect"), "containerd says: {err}");
    let stopped = tracer.stop();
    let found = exchanges(&stopped.events, daemon.pid);
    show(&found);
    let e = found
        .iter()
        .find(|e| e["tracer"]["proxy"]["response"]["status_code"] == 500)
        .unwrap_or_else(|| panic!("no 500 in {:#?}", stopped.events));
    let p = &e["tracer"]["proxy"];
    assert_eq!(p["response"]["reason"], "Unable to connect");
    assert_eq!(p["request"]["method"], "CONNECT");
    assert_eq!(p["request"]["target"], "203.0.113.2:443");
    let message = e["message"].as_str().unwrap_or_default();
    let want = format!(
        "containerd (pid {}, containerd.service) reached its HTTPS proxy 127.0.0.1:{} (HTTPS_PROXY, {DROPIN}:3) and asked for CONNECT 203.0.113.2:443; the proxy answered 500 Unable to connect",
        daemon.pid, proxy.port
    );
    assert_eq!(message, want);
}

/// Test 3: the proxy demands credentials and the variable has none: 407,
/// and the message says HTTPS_PROXY carries none.
#[test]
fn a_proxy_demanding_credentials_shows_the_407() {
    let registry = Registry::start(0);
    let proxy = Tinyproxy::start(&TinyproxyOptions::with_basic_auth("ops", "s3cret"));
    let url = proxy.url();
    let vars = proxy_env(&url);
    let root = host_root_with(&vars);
    let daemon = containerd(&vars, &registry);
    let tracer = tracer(&root);
    let err = daemon
        .cri_pull(&registry.image())
        .expect_err("the pull fails without credentials");
    assert!(
        err.contains("Proxy Authentication Required"),
        "containerd says: {err}"
    );
    let stopped = tracer.stop();
    let found = exchanges(&stopped.events, daemon.pid);
    show(&found);
    let e = found
        .iter()
        .find(|e| e["tracer"]["proxy"]["response"]["status_code"] == 407)
        .unwrap_or_else(|| panic!("no 407 in {:#?}", stopped.events));
    // tinyproxy answers 407 in HTTP/1.0.
    assert_eq!(e["tracer"]["proxy"]["response"]["version"], "HTTP/1.0");
    let message = e["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("the proxy answered 407 Proxy Authentication Required; the proxy wants credentials and HTTPS_PROXY carries none"),
        "{message}"
    );
    assert!(message.contains(&format!("{DROPIN}:3")), "{message}");
}

/// A stand-in daemon: `sleep` with proxy variables in a unit cgroup,
/// started before the tracer so that the cgroup is watched, as a real
/// proxied service's would be. Killed on drop.
struct Resident {
    child: Child,
}

impl Resident {
    fn start(unit: &UnitCgroup, env: &[(&str, &str)]) -> Resident {
        let child = unit
            .command(std::path::Path::new("/bin/sleep"))
            .arg("120")
            .env_clear()
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .spawn()
            .expect("start the resident sleep");
        Resident { child }
    }
}

impl Drop for Resident {
    fn drop(&mut self) {
        tracer_tests::terminate(&mut self.child, Duration::from_secs(2));
    }
}

/// curl in `unit`'s cgroup with `env`; returns its pid and stdout.
fn curl_in(unit: &UnitCgroup, env: &[(&str, &str)], args: &[&str]) -> (u32, String) {
    let child = unit
        .command(std::path::Path::new("/usr/bin/curl"))
        .args([
            "-sS",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run curl");
    let pid = child.id();
    let out = child.wait_with_output().expect("curl output");
    (pid, String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `python3 -c SCRIPT PORT TARGET` in `unit`'s cgroup with `env`; returns
/// its pid, the first line it printed (the proxy's status line) and its
/// stderr.
fn python_in(
    unit: &UnitCgroup,
    env: &[(&str, &str)],
    script: &str,
    port: u16,
    target: &str,
) -> (u32, String, String) {
    let child = unit
        .command(std::path::Path::new("/usr/bin/python3"))
        .args(["-c", script, &port.to_string(), target])
        .env_clear()
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    let pid = child.id();
    let out = child.wait_with_output().expect("python3 output");
    (
        pid,
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Test 4: plain HTTP through HTTP_PROXY sends no CONNECT: the request
/// line is the absolute form, and that is what the event reports.
#[test]
fn plain_http_through_http_proxy_reports_the_absolute_form() {
    let registry = Registry::start(0);
    let proxy = Tinyproxy::start(&TinyproxyOptions::default());
    let url = proxy.url();
    let env = [("HTTP_PROXY", url.as_str()), ("http_proxy", url.as_str())];
    let unit = UnitCgroup::new("trt-xplain.service");
    let _resident = Resident::start(&unit, &env);
    let tracer = Tracer::start(&["--proxy-only"]);
    // Plain HTTP to the registry's port: the registry (TLS) answers 400,
    // relayed by the proxy; what matters is the line curl sent.
    let target = format!("http://{}:443/v2/acc/img/manifests/1", registry.host());
    let (pid, code) = curl_in(&unit, &env, &["-I", &target]);
    let stopped = tracer.stop();
    let found = exchanges(&stopped.events, pid);
    show(&found);
    let e = found.first().unwrap_or_else(|| {
        panic!(
            "no exchange for curl {pid} (HTTP {code}): {:#?}\nstderr: {}",
            stopped.events, stopped.stderr
        )
    });
    let p = &e["tracer"]["proxy"];
    assert_eq!(p["request"]["method"], "HEAD");
    assert_eq!(p["request"]["target"], target);
    assert_eq!(p["request"]["version"], "HTTP/1.1");
    assert_eq!(p["variable"], "HTTP_PROXY");
    assert_eq!(p["exchange"], "answered");
    assert!(
        proxy
            .request_lines()
            .iter()
            .any(|l| l.starts_with(&format!("HEAD {target}"))),
        "tinyproxy's log: {}",
        proxy.log()
    );
}

/// Test 6: only the request and status lines leave the kernel. curl sends
/// `Proxy-Authorization` (from credentials in its proxy URL) and a secret
/// header in the same segment as its request line; neither, nor the
/// password, appears anywhere in the tracer's output.
#[test]
fn headers_and_credentials_never_leave_the_kernel() {
    let registry = Registry::start(0);
    let proxy = Tinyproxy::start(&TinyproxyOptions::with_basic_auth("ops", "s3cret"));
    let url = proxy.url_with_credentials("ops", "s3cret");
    let env = [("HTTP_PROXY", url.as_str()), ("http_proxy", url.as_str())];
    let unit = UnitCgroup::new("trt-xprivacy.service");
    let _resident = Resident::start(&unit, &env);
    let tracer = Tracer::start(&["--proxy-only"]);
    let target = format!("http://{}:443/v2/", registry.host());
    // The header comes from a file, not curl's arguments (which the event
    // reports as process.args).
    let headers = temp_dir("xhdr").join("headers.txt");
    std::fs::write(&headers, "X-Secret-Token: hunter2-topsecret\n").expect("write headers");
    let header_arg = format!("@{}", headers.display());
    let (pid, code) = curl_in(&unit, &env, &["-H", &header_arg, &target]);
    let output = tracer.output.clone();
    let stopped = tracer.stop();
    let found = exchanges(&stopped.events, pid);
    show(&found);
    let e = found
        .first()
        .unwrap_or_else(|| panic!("no exchange for curl {pid}: {:#?}", stopped.events));
    // The request line itself is there...
    assert_eq!(e["tracer"]["proxy"]["request"]["method"], "GET");
    assert_eq!(e["tracer"]["proxy"]["request"]["target"], target);
    // ...and nothing after it, anywhere.
    let raw = std::fs::read_to_string(&output).expect("read output");
    for secret in [
        "s3cret",
        "b3BzOnMzY3JldA", // base64 of ops:s3cret, as Proxy-Authorization carries it
        "Proxy-Authorization",
        "X-Secret-Token",
        "hunter2-topsecret",
    ] {
        assert!(!raw.contains(secret), "{secret} leaked into the events");
        assert!(
            !stopped.stderr.contains(secret),
            "{secret} leaked into stderr"
        );
    }
    // The proxy got the credentials (else it answers 407), so they were
    // on the wire, in the segment the kernel read.
    assert_ne!(code, "407", "tinyproxy refused the credentials");
    assert_ne!(e["tracer"]["proxy"]["response"]["status_code"], 407);
}

/// Issue 18: a dual-stack AF_INET6 socket (Java's default; here python3
/// with IPV6_V6ONLY cleared) dials its IPv4 proxy as `::ffff:127.0.0.1`
/// and sends CONNECT. The socket is marked like a plain IPv4 dial, so the
/// attempt carries the CONNECT and tinyproxy's 200 (`exchange: answered`),
/// not `not_seen`, and its destination reads as the IPv4 proxy.
#[test]
fn a_v4_mapped_dial_from_a_dual_stack_socket_shows_the_exchange() {
    let registry = Registry::start(0);
    let proxy = Tinyproxy::start(&TinyproxyOptions::default());
    let url = proxy.url();
    let env = [("HTTPS_PROXY", url.as_str()), ("https_proxy", url.as_str())];
    let unit = UnitCgroup::new("trt-xmapped.service");
    let _resident = Resident::start(&unit, &env);
    let tracer = Tracer::start(&["--proxy-only"]);
    let target = format!("{}:443", registry.host());
    let script = r#"
import socket, sys
port, target = int(sys.argv[1]), sys.argv[2]
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.settimeout(10)
s.connect(("::ffff:127.0.0.1", port))
s.sendall(("CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (target, target)).encode())
print(s.recv(256).split(b"\r\n")[0].decode())
"#;
    let (pid, status_line, stderr) = python_in(&unit, &env, script, proxy.port, &target);
    assert!(
        status_line.starts_with("HTTP/1.") && status_line.contains(" 200"),
        "tinyproxy answered the mapped dial: {status_line:?} {stderr}"
    );
    let stopped = tracer.stop();
    let mine: Vec<&Value> = stopped
        .events
        .iter()
        .filter(|e| e["process"]["pid"] == pid && e["event"]["action"] == "connect")
        .collect();
    show(&mine);
    let e = mine.first().unwrap_or_else(|| {
        panic!(
            "no event for python3 {pid}: {:#?}\nstderr: {}",
            stopped.events, stopped.stderr
        )
    });
    assert_eq!(e["destination"]["ip"], "127.0.0.1", "{e}");
    assert_eq!(e["destination"]["port"], proxy.port, "{e}");
    let p = &e["tracer"]["proxy"];
    assert_eq!(p["via"], true, "{e}");
    assert_eq!(p["variable"], "HTTPS_PROXY", "{e}");
    assert_eq!(p["exchange"], "answered", "{e}");
    assert_eq!(p["request"]["method"], "CONNECT", "{e}");
    assert_eq!(p["request"]["target"], target, "{e}");
    assert_eq!(p["response"]["status_code"], 200, "{e}");
}

/// An HTTPS server on a test host of its own (203.0.113.6): `openssl
/// s_server -www` with a leaf certificate for `tls.test` issued by a test
/// CA, `CN=Tracer Test CA, O=Tracer Tests`, so a reported issuer can only
/// come from the certificate's issuer field (not its subject).
struct TlsServer {
    dir: PathBuf,
    child: Child,
    // Dropped after the child: the process goes before its namespace.
    ns: tracer_tests::NetNs,
}

impl TlsServer {
    const NAME: &'static str = "tls.test";
    const ISSUER: &'static str = "O=Tracer Tests, CN=Tracer Test CA";

    fn start() -> TlsServer {
        let ns = tracer_tests::NetNs::new_in(tracer_tests::TestNet::Net3, 1);
        let dir = temp_dir("tlssrv");
        let d = dir.display();
        tracer_tests::sh(&format!(
            "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -keyout {d}/ca.key -out {d}/ca.pem \
               -subj '/O=Tracer Tests/CN=Tracer Test CA' 2>&1 && \
             openssl req -newkey rsa:2048 -nodes -keyout {d}/leaf.key -out {d}/leaf.csr \
               -subj '/CN={name}' 2>&1 && \
             printf 'subjectAltName=DNS:{name}\\n' > {d}/ext.cnf && \
             openssl x509 -req -in {d}/leaf.csr -CA {d}/ca.pem -CAkey {d}/ca.key -CAcreateserial \
               -days 2 -out {d}/leaf.pem -extfile {d}/ext.cnf 2>&1",
            name = Self::NAME
        ));
        let child = ns
            .command("openssl")
            .args(["s_server", "-quiet", "-www", "-accept", "443"])
            .arg("-cert")
            .arg(dir.join("leaf.pem"))
            .arg("-key")
            .arg(dir.join("leaf.key"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start openssl s_server");
        let server = TlsServer { dir, child, ns };
        // Listening within 10 s (bounded poll).
        let listening = (0..100).any(|_| {
            let out = tracer_tests::sh(&format!("ip netns exec {} ss -Hltn", server.ns.name));
            if out.contains(":443 ") {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
            false
        });
        assert!(listening, "openssl s_server did not listen on :443");
        server
    }

    /// curl's `--connect-to` and `--cacert` arguments for
    /// `https://tls.test/`. Not `--resolve`: through a proxy the name goes
    /// to the proxy, which cannot resolve it; `--connect-to` makes curl ask
    /// for `CONNECT 203.0.113.6:443` and still send `tls.test` as SNI.
    fn curl_args(&self) -> Vec<String> {
        vec![
            "--connect-to".into(),
            format!("{}:443:{}:443", Self::NAME, self.ns.addr),
            "--cacert".into(),
            self.dir.join("ca.pem").display().to_string(),
            format!("https://{}/", Self::NAME),
        ]
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        tracer_tests::terminate(&mut self.child, Duration::from_secs(2));
    }
}

/// curl through tinyproxy to the TLS server, in a watched unit; returns
/// curl's event (its dial to the proxy) and the whole output.
fn curl_through_proxy(unit_name: &str, extra: &[&str]) -> (Value, tracer_tests::Stopped) {
    let server = TlsServer::start();
    let proxy = Tinyproxy::start(&TinyproxyOptions::default());
    let url = proxy.url();
    let env = [("HTTPS_PROXY", url.as_str()), ("https_proxy", url.as_str())];
    let unit = UnitCgroup::new(unit_name);
    let _resident = Resident::start(&unit, &env);
    let tracer = Tracer::start(&["--proxy-only"]);
    let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    args.extend(server.curl_args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (pid, code) = curl_in(&unit, &env, &args);
    assert_eq!(code, "200", "curl through the proxy to the TLS server");
    let stopped = tracer.stop();
    let found = exchanges(&stopped.events, pid);
    show(&found);
    let e = found
        .iter()
        .find(|e| e["tracer"]["proxy"]["request"]["method"] == "CONNECT")
        .map(|e| (*e).clone())
        .unwrap_or_else(|| {
            panic!(
                "no CONNECT of curl {pid}: {:#?}\nstderr: {}",
                stopped.events, stopped.stderr
            )
        });
    (e, stopped)
}

/// Issue 19 part 4: the ClientHello through the tunnel gives the SNI and
/// the offered versions; TLS 1.3 hides the certificate, so no issuer.
#[test]
fn tls_through_a_tunnel_reports_sni_and_versions() {
    let (e, _) = curl_through_proxy("trt-xtls13.service", &[]);
    let tls = &e["tls"];
    assert_eq!(tls["client"]["server_name"], TlsServer::NAME, "{e}");
    let offered = tls["client"]["supported_versions"]
        .as_array()
        .unwrap_or_else(|| panic!("no supported_versions: {e}"));
    assert_eq!(offered.first(), Some(&Value::from("1.3")), "{e}");
    assert_eq!(tls["version"], "1.3", "{e}");
    assert_eq!(tls["version_protocol"], "tls", "{e}");
    assert!(
        tls["server"].is_null(),
        "TLS 1.3 hides the certificate: {e}"
    );
    assert_eq!(e["tracer"]["proxy"]["response"]["status_code"], 200);
    let message = e["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("through the tunnel it began TLS for tls.test offering TLS 1.3; the server chose TLS 1.3"),
        "{message}"
    );
}

/// With TLS 1.2 the Certificate follows the ServerHello in clear: the
/// event names the leaf certificate's issuer (the test CA, not the leaf).
#[test]
fn tls_1_2_through_a_tunnel_reports_the_issuer() {
    let (e, _) = curl_through_proxy("trt-xtls12.service", &["--tls-max", "1.2"]);
    let tls = &e["tls"];
    assert_eq!(tls["client"]["server_name"], TlsServer::NAME, "{e}");
    assert_eq!(tls["version"], "1.2", "{e}");
    assert_eq!(tls["server"]["issuer"], TlsServer::ISSUER, "{e}");
    let message = e["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!(
            "the server chose TLS 1.2 and presented a certificate issued by '{}'",
            TlsServer::ISSUER
        )),
        "{message}"
    );
}

/// A CONNECT tunnel that carries something other than TLS: no tls fields,
/// the exchange still reported, and the event is not held for the wait.
#[test]
fn a_tunnel_that_is_not_tls_has_no_tls_fields() {
    let server = TlsServer::start();
    let proxy = Tinyproxy::start(&TinyproxyOptions::default());
    let url = proxy.url();
    let env = [("HTTPS_PROXY", url.as_str()), ("https_proxy", url.as_str())];
    let unit = UnitCgroup::new("trt-xnottls.service");
    let _resident = Resident::start(&unit, &env);
    let tracer = Tracer::start(&["--proxy-only"]);
    let target = format!("{}:443", server.ns.addr);
    // After the 200, bytes that look like a TLS record header but are not
    // a ClientHello, then a lie of a length: neither may be parsed.
    let script = r#"
import socket, sys
port, target = int(sys.argv[1]), sys.argv[2]
s = socket.create_connection(("127.0.0.1", port), timeout=10)
s.sendall(("CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (target, target)).encode())
head = b""
while b"\r\n\r\n" not in head:
    chunk = s.recv(256)
    if not chunk:
        break
    head += chunk
print(head.split(b"\r\n")[0].decode())
s.sendall(b"\x16\x03\x01\xff\xff\x02\xff\xff\xff" + b"SSH-2.0-not-tls\r\n")
s.close()
"#;
    let (pid, status_line, stderr) = python_in(&unit, &env, script, proxy.port, &target);
    assert!(
        status_line.contains(" 200"),
        "tinyproxy answered: {status_line:?} {stderr}"
    );
    let stopped = tracer.stop();
    let found = exchanges(&stopped.events, pid);
    show(&found);
    let e = found.first().unwrap_or_else(|| {
        panic!(
            "no exchange for python3 {pid}: {:#?}\nstderr: {}",
            stopped.events, stopped.stderr
        )
    });
    assert_eq!(e["tracer"]["proxy"]["response"]["status_code"], 200, "{e}");
    assert_eq!(e["tracer"]["proxy"]["exchange"], "answered", "{e}");
    assert!(e.get("tls").is_none(), "not TLS, yet: {e}");
    assert!(
        !e["message"].as_str().unwrap_or_default().contains("TLS"),
        "{e}"
    );
}
