//! A real forward proxy for tests: Debian's `tinyproxy` (1.11), run in the
//! foreground (`tinyproxy -d -c CONF`) on `127.0.0.1:<free port>`, accepting
//! only 127.0.0.1, logging every request line (`LogLevel Info`) to a file in
//! its own temp folder. Dropping it kills it.
//!
//! ```no_run
//! use tracer_tests::tinyproxy::{Tinyproxy, TinyproxyOptions};
//! let proxy = Tinyproxy::start(&TinyproxyOptions::default());
//! let https_proxy = proxy.url(); // "http://127.0.0.1:P"
//! // ... a client CONNECTs through it ...
//! assert!(proxy.connect_lines().contains(&"CONNECT 203.0.113.2:443 HTTP/1.1".to_string()));
//! ```

use std::{
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::temp_dir;

const START_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_GRACE: Duration = Duration::from_secs(5);

/// How to configure tinyproxy.
#[derive(Clone, Debug)]
pub struct TinyproxyOptions {
    /// `BasicAuth USER PASS`: the proxy answers 407 without them.
    pub basic_auth: Option<(String, String)>,
    /// One `ConnectPort N` line each: the ports CONNECT may reach. Empty
    /// means no `ConnectPort` line, which tinyproxy takes as "any port".
    pub connect_ports: Vec<u16>,
}

impl Default for TinyproxyOptions {
    /// No credentials; CONNECT only to port 443.
    fn default() -> Self {
        TinyproxyOptions {
            basic_auth: None,
            connect_ports: vec![443],
        }
    }
}

impl TinyproxyOptions {
    /// The default, plus `BasicAuth user pass`.
    pub fn with_basic_auth(user: &str, pass: &str) -> Self {
        TinyproxyOptions {
            basic_auth: Some((user.to_string(), pass.to_string())),
            ..Self::default()
        }
    }
}

/// A running tinyproxy on 127.0.0.1.
pub struct Tinyproxy {
    pub port: u16,
    /// The generated config file.
    pub config: PathBuf,
    /// tinyproxy's `LogFile`.
    pub log_path: PathBuf,
    /// Its folder (config, log, stdout/stderr).
    pub dir: PathBuf,
    child: Option<Child>,
}

impl Tinyproxy {
    /// Start tinyproxy and wait (at most 10 s) until its port accepts.
    /// Panics with its output if it exits or never listens.
    pub fn start(opts: &TinyproxyOptions) -> Tinyproxy {
        let dir = temp_dir("tinyproxy");
        let config = dir.join("tinyproxy.conf");
        let log_path = dir.join("tinyproxy.log");
        let out_path = dir.join("stdout.txt");
        // A port nobody listens on now; another process could take it before
        // tinyproxy binds, which shows up as a bind error in its output.
        let port = crate::closed_port();
        let mut conf = format!(
            "Port {port}\n\
             Listen 127.0.0.1\n\
             Timeout 60\n\
             Allow 127.0.0.1\n\
             LogLevel Info\n\
             LogFile \"{}\"\n\
             MaxClients 50\n",
            log_path.display()
        );
        for p in &opts.connect_ports {
            conf.push_str(&format!("ConnectPort {p}\n"));
        }
        if let Some((user, pass)) = &opts.basic_auth {
            assert!(
                !user.contains(char::is_whitespace) && !pass.contains(char::is_whitespace),
                "tinyproxy BasicAuth user and password cannot contain whitespace"
            );
            conf.push_str(&format!("BasicAuth {user} {pass}\n"));
        }
        std::fs::write(&config, conf).expect("write tinyproxy.conf");
        let out = std::fs::File::create(&out_path).expect("create tinyproxy stdout file");
        let err = out.try_clone().expect("dup stdout file");
        let child = Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start tinyproxy (apt-get install tinyproxy / cargo xtask setup): {e}"
                )
            });
        let mut proxy = Tinyproxy {
            port,
            config,
            log_path,
            dir,
            child: Some(child),
        };
        proxy.wait_listening(&out_path);
        proxy
    }

    fn wait_listening(&mut self, out_path: &std::path::Path) {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "tinyproxy exited before listening ({status}):\n{}\n{}",
                        std::fs::read_to_string(out_path).unwrap_or_default(),
                        self.log()
                    );
                }
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "tinyproxy not listening on {addr} after {START_TIMEOUT:?}:\n{}\n{}",
                std::fs::read_to_string(out_path).unwrap_or_default(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// tinyproxy's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// `http://127.0.0.1:P`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `http://USER:PASS@127.0.0.1:P` (not percent-encoded: keep them plain).
    pub fn url_with_credentials(&self, user: &str, pass: &str) -> String {
        format!("http://{user}:{pass}@127.0.0.1:{}", self.port)
    }

    /// The whole log file so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Every request line tinyproxy logged, e.g. `CONNECT 203.0.113.2:443
    /// HTTP/1.1` or `GET http://h/ HTTP/1.1`, in order.
    pub fn request_lines(&self) -> Vec<String> {
        // CONNECT   Nov 28 10:23:08.225 [15634]: Request (file descriptor 5): CONNECT 127.0.0.1:443 HTTP/1.1
        self.log()
            .lines()
            .filter_map(|l| l.split_once("]: Request (file descriptor ").map(|(_, r)| r))
            .filter_map(|r| r.split_once("): ").map(|(_, req)| req.trim().to_string()))
            .collect()
    }

    /// The `CONNECT host:port HTTP/1.1` request lines it logged, in order.
    pub fn connect_lines(&self) -> Vec<String> {
        self.request_lines()
            .into_iter()
            .filter(|l| l.starts_with("CONNECT "))
            .collect()
    }

    /// Kill it now (its port then refuses connections).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            crate::terminate(&mut child, STOP_GRACE);
        }
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        self.stop();
        // Keep the log of a failed test for a look afterwards.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
