//! A real TLS-intercepting proxy for tests: mitmproxy's `mitmdump` (PyPI,
//! in the venv `cargo xtask setup` makes at [`VENV`]), on
//! `127.0.0.1:<free port>`. It answers CONNECT with 200, then presents its
//! own certificate for the target, signed by its CA (issuer "mitmproxy"),
//! which it creates in its own folder at start. `ssl_insecure` lets it talk
//! to the test registry's self-signed certificate upstream. Dropping it
//! kills it.

use std::{
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::temp_dir;

/// The venv `cargo xtask setup` installs mitmproxy into.
pub const VENV: &str = "/opt/tracer-test/mitmproxy";
/// mitmproxy's first start creates its CA (an RSA key): allow for it.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_GRACE: Duration = Duration::from_secs(5);

pub struct Mitmproxy {
    pub port: u16,
    /// Its confdir: the CA it signs with lives here.
    pub dir: PathBuf,
    out_path: PathBuf,
    child: Option<Child>,
}

impl Mitmproxy {
    /// Start mitmdump and wait (at most 30 s) until its port accepts and
    /// its CA exists. Panics with its output if it exits or never listens.
    pub fn start() -> Mitmproxy {
        let dir = temp_dir("mitmproxy");
        let out_path = dir.join("mitmdump.log");
        let port = crate::closed_port();
        let out = std::fs::File::create(&out_path).expect("create mitmdump log");
        let err = out.try_clone().expect("dup log");
        let child = Command::new(Path::new(VENV).join("bin/mitmdump"))
            .args(["--listen-host", "127.0.0.1", "--listen-port"])
            .arg(port.to_string())
            .arg("--set")
            .arg(format!("confdir={}", dir.display()))
            .args(["--set", "ssl_insecure=true"])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", &dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start mitmdump from {VENV} (cargo xtask setup installs it): {e}")
            });
        let mut proxy = Mitmproxy {
            port,
            dir,
            out_path,
            child: Some(child),
        };
        proxy.wait_listening();
        proxy
    }

    fn wait_listening(&mut self) {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "mitmdump exited before listening ({status}):\n{}",
                        self.log()
                    );
                }
            }
            if self.ca_cert().exists()
                && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "mitmdump not listening on {addr} after {START_TIMEOUT:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Its CA certificate (PEM), the one a node would have to trust.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("mitmproxy-ca-cert.pem")
    }

    /// Its output so far (one line per flow).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.out_path).unwrap_or_default()
    }
}

impl Drop for Mitmproxy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            crate::terminate(&mut child, STOP_GRACE);
        }
    }
}
