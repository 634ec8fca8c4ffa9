//! A real Prometheus server (Debian's `prometheus`) for the metrics tests:
//! on loopback, on a free port, with its own TSDB in a temporary folder,
//! scraping one target every second and evaluating the project's rule
//! file every second. Stopped on drop. Plus a tiny HTTP GET for its API and
//! the tracer's endpoint (the harness has no HTTP client crate, and needs
//! none for GETs on loopback).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{temp_dir, terminate};

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// The rule file the project ships.
pub fn rules_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/tracer.rules.yml")
}

/// `GET path` on `addr`; returns (status code, body). Bounded by timeouts.
pub fn http_get(addr: SocketAddr, path: &str, accept: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let accept = accept.map_or_else(String::new, |a| format!("Accept: {a}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n"
    )
    .expect("send request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read answer");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (code, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Percent-encode a query parameter.
pub fn encode_query(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub struct Prometheus {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub log: PathBuf,
    _dir: PathBuf,
}

impl Prometheus {
    /// Start scraping `target` (host:port) every second; wait (at most
    /// 60 s) until the server answers.
    pub fn start(target: SocketAddr) -> Prometheus {
        let dir = temp_dir("prom");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: tracer\n    static_configs:\n      - targets: ['{target}']\n",
                rules_file().display()
            ),
        )
        .expect("write prometheus.yml");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let log = dir.join("prometheus.log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start prometheus (cargo xtask setup installs it)");
        let mut p = Prometheus {
            child: Some(child),
            addr,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if TcpStream::connect(addr).is_ok() && http_get(addr, "/-/ready", None).0 == 200 {
                return p;
            }
            if let Some(Ok(Some(status))) = p.child.as_mut().map(Child::try_wait) {
                panic!("prometheus exited ({status}): {}", p.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready within 60 s: {}",
                p.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// An instant query through the HTTP API: the `data.result` array.
    pub fn query(&self, promql: &str) -> Vec<Value> {
        let (code, body) = http_get(
            self.addr,
            &format!("/api/v1/query?query={}", encode_query(promql)),
            None,
        );
        assert_eq!(code, 200, "query {promql}: {body}");
        let v: Value = serde_json::from_str(&body).expect("query answer is JSON");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The alerts the server holds now (`/api/v1/alerts`).
    pub fn alerts(&self) -> Vec<Value> {
        let (code, body) = http_get(self.addr, "/api/v1/alerts", None);
        assert_eq!(code, 200, "alerts: {body}");
        let v: Value = serde_json::from_str(&body).expect("alerts answer is JSON");
        v["data"]["alerts"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(10));
        }
    }
}
