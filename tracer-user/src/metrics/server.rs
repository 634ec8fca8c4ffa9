//! The metrics endpoint: the tracer's only listening socket.
//!
//! A blocking HTTP/1.1 server on a thread of its own, one connection at a
//! time: a scrape every few seconds needs nothing more, and keeping it off
//! the tokio thread means a slow or hostile client can never delay the
//! drain. Each connection is bounded (request size, read and write
//! timeouts) and closed after one answer.
//!
//! - `GET /metrics`: the Prometheus text format (version 0.0.4).
//! - `GET /healthz`: the readiness probe: 200 once every probe is attached
//!   and the tracer is tracing, 503 before.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use prometheus_client::registry::Registry;
use thiserror::Error;

/// Longest request head read; a scrape's is a few hundred bytes.
const MAX_REQUEST: usize = 8 * 1024;
/// Bound on reading a request and writing an answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Error)]
pub enum ServerError {
    #[error("cannot listen on {addr} for --metrics-addr: {source} (is another tracer or exporter using that port?)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the metrics thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// A running endpoint. The thread lives as long as the process.
pub struct Server {
    pub addr: SocketAddr,
    ready: Arc<AtomicBool>,
}

impl Server {
    /// Bind now (a bad address fails before anything is loaded) and serve
    /// on a thread.
    pub fn start(addr: SocketAddr, registry: Registry) -> Result<Server, ServerError> {
        let listener =
            TcpListener::bind(addr).map_err(|source| ServerError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| ServerError::Bind { addr, source })?;
        let ready = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&ready);
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || serve(&listener, &registry, &flag))
            .map_err(ServerError::Thread)?;
        Ok(Server { addr, ready })
    }

    /// From now on `/healthz` answers 200.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }
}

fn serve(listener: &TcpListener, registry: &Registry, ready: &AtomicBool) {
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                if let Err(e) = answer(stream, registry, ready) {
                    log::debug!("metrics connection: {e}");
                }
            }
            // EMFILE and the like: wait a moment rather than spin.
            Err(e) => {
                log::warn!("metrics endpoint cannot accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn answer(mut stream: TcpStream, registry: &Registry, ready: &AtomicBool) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let head = read_head(&mut stream)?;
    let (status, content_type, body) = respond(&head, registry, ready.load(Ordering::Acquire));
    let header = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(header.as_bytes())?;
    if !head.starts_with("HEAD ") {
        stream.write_all(body.as_bytes())?;
    }
    stream.flush()
}

/// Read up to the blank line that ends the request head (bounded).
fn read_head(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while buf.len() < MAX_REQUEST {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Status, content type and body for a request head.
fn respond(head: &str, registry: &Registry, ready: bool) -> (&'static str, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    let mut words = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (
        words.next().unwrap_or_default(),
        words.next().unwrap_or_default(),
    );
    if method != "GET" && method != "HEAD" {
        return ("405 Method Not Allowed", TEXT, "GET or HEAD only\n".into());
    }
    // Prometheus may add a query string; the path decides.
    let path = target.split('?').next().unwrap_or_default();
    match path {
        // Prometheus asks for OpenMetrics; other scrapers (and promtool
        // check metrics) read the classic text format.
        "/metrics" => match super::encode(registry) {
            Ok(body) if accepts_openmetrics(head) => (
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                body,
            ),
            Ok(body) => (
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                to_classic(&body),
            ),
            Err(_) => (
                "500 Internal Server Error",
                TEXT,
                "cannot encode metrics\n".into(),
            ),
        },
        "/healthz" if ready => ("200 OK", TEXT, "ready\n".into()),
        "/healthz" => ("503 Service Unavailable", TEXT, "attaching probes\n".into()),
        _ => ("404 Not Found", TEXT, "try /metrics or /healthz\n".into()),
    }
}

fn accepts_openmetrics(head: &str) -> bool {
    head.lines().any(|l| {
        l.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("accept")
                && value.contains("application/openmetrics-text")
        })
    })
}

/// OpenMetrics text (what `prometheus-client` writes) as the classic text
/// format 0.0.4: a counter's HELP and TYPE name its `_total` samples, and
/// there is no `# EOF`. The two formats agree on everything else this
/// registry writes (no units, no info or stateset types).
fn to_classic(open: &str) -> String {
    let counters: Vec<&str> = open
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open.len() + 16 * counters.len());
    for line in open.lines() {
        if line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|tag| {
            let rest = line.strip_prefix(tag)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{tag}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(request.as_bytes()).expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out
    }

    #[test]
    fn serves_metrics_and_readiness() {
        let metrics = super::super::Metrics::new();
        let server =
            Server::start("127.0.0.1:0".parse().expect("addr"), metrics.registry).expect("start");
        let r = get(server.addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        server.set_ready();
        let r = get(server.addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        let r = get(
            server.addr,
            "GET /metrics?x=1 HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0\r\n\r\n",
        );
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert!(r.contains("# TYPE tracer_connect_attempts counter"), "{r}");
        assert!(r.trim_end().ends_with("# EOF"), "{r}");
        let r = get(server.addr, "GET /metrics HTTP/1.1\r\n\r\n");
        assert!(r.contains("text/plain; version=0.0.4"), "{r}");
        assert!(
            r.contains("# TYPE tracer_connect_attempts_total counter"),
            "{r}"
        );
        assert!(
            r.contains("# HELP tracer_connect_attempts_total Connect"),
            "{r}"
        );
        assert!(!r.contains("# EOF"), "{r}");
        let r = get(server.addr, "POST /metrics HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 405"), "{r}");
        let r = get(server.addr, "GET /nope HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 404"), "{r}");
        // Garbage and a client that says nothing get an answer, not a hang
        // of the endpoint.
        let r = get(server.addr, "\0\0\0\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 405"), "{r}");
    }

    #[test]
    fn a_taken_port_is_a_clear_error() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let err = Server::start(addr, Registry::default())
            .err()
            .expect("must fail");
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }
}
