//! The metrics endpoint: the tracer's only listening socket.
//!
//! hyper's HTTP/1.1 server on a thread of its own, with its own
//! single-threaded tokio runtime: a slow or hostile client can never delay
//! the drain, and a drain that is stuck (a write(2) to a reader that
//! stopped reading) cannot stop the endpoint from saying so on `/livez`.
//!
//! - `GET /metrics`: the Prometheus text format (version 0.0.4), or
//!   OpenMetrics when the scraper asks for it.
//! - `GET /healthz`: the readiness probe: 200 once every probe is attached
//!   and the tracer is tracing, 503 before. It does not go back to 503:
//!   readiness says "the probes are in the kernel", which stays true.
//! - `GET /livez`: the liveness probe: 200 while the run loop keeps
//!   turning, 503 once it has not turned for the `--liveness-timeout`
//!   (see [`Heartbeat`]).
//!
//! Limits, against clients that connect and say nothing, or say it one
//! byte at a time ("slowloris"):
//! - at most [`MAX_CONNECTIONS`] connections at once; further ones wait in
//!   the listen backlog until one ends;
//! - a request head must arrive whole within [`HEAD_TIMEOUT`] and within
//!   [`MAX_HEAD`] bytes (431 beyond);
//! - a connection lives at most [`DEADLINE`] in all (head, body, answer),
//!   so a slot is never held longer, whatever the client does;
//! - one request per connection, no request body read (a request with one
//!   gets 413).

use std::{
    convert::Infallible,
    net::{SocketAddr, TcpListener},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use hyper::{
    body::Incoming,
    header::{HeaderValue, ACCEPT, ALLOW, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING},
    server::conn::http1,
    service::service_fn,
    Method, Request, Response, StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use thiserror::Error;
use tokio::sync::Semaphore;

/// Connections served at once. A scrape, a readiness and a liveness probe
/// need three; the rest is room for several scrapers and for clients that
/// are slow. Each costs a task and a buffer of a few KiB.
pub const MAX_CONNECTIONS: usize = 32;
/// Longest request head (request line and headers); a scrape's is a few
/// hundred bytes.
pub const MAX_HEAD: usize = 8 * 1024;
/// The whole head must arrive within this; a scraper sends it at once.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// The most a connection lives: head, answer and the client reading it. A
/// full scrape is well under 100 KiB, written in milliseconds on loopback
/// or a pod network.
pub const DEADLINE: Duration = Duration::from_secs(10);

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

/// "The drain is alive": when the run loop last turned (finished a drain,
/// a flush, a tick). The loop beats; the endpoint reads. A drain stuck in
/// a write(2) or a hung read stops beating, and `/livez` turns 503 once the
/// last beat is older than the limit. Starts beating at creation, so the
/// time to attach the probes counts too (an attach that hangs is a stuck
/// tracer as well).
#[derive(Clone, Debug)]
pub struct Heartbeat {
    start: Instant,
    /// Milliseconds after `start` of the last beat.
    last: Arc<AtomicU64>,
    limit: Duration,
}

impl Heartbeat {
    pub fn new(limit: Duration) -> Self {
        Self {
            start: Instant::now(),
            last: Arc::new(AtomicU64::new(0)),
            limit,
        }
    }

    /// The loop turned.
    pub fn beat(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    /// How long since the last beat.
    pub fn silent_for(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }

    pub fn limit(&self) -> Duration {
        self.limit
    }
}

/// What the endpoint answers from.
struct State {
    registry: Registry,
    ready: AtomicBool,
    heartbeat: Heartbeat,
}

/// A running endpoint. The thread lives as long as the process.
pub struct Server {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl Server {
    /// Bind now (a bad address fails before anything is loaded) and serve
    /// on a thread. `heartbeat` is the run loop's, for `/livez`.
    pub fn start(
        addr: SocketAddr,
        registry: Registry,
        heartbeat: Heartbeat,
    ) -> Result<Server, ServerError> {
        let bind_error = |source| ServerError::Bind { addr, source };
        let listener = TcpListener::bind(addr).map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        listener.set_nonblocking(true).map_err(bind_error)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(ServerError::Thread)?;
        // Registering the socket needs the runtime's reactor.
        let listener = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(listener).map_err(bind_error)?
        };
        let state = Arc::new(State {
            registry,
            ready: AtomicBool::new(false),
            heartbeat,
        });
        let shared = Arc::clone(&state);
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || runtime.block_on(serve(listener, shared)))
            .map_err(ServerError::Thread)?;
        Ok(Server { addr, state })
    }

    /// From now on `/healthz` answers 200.
    pub fn set_ready(&self) {
        self.state.ready.store(true, Ordering::Release);
    }
}

async fn serve(listener: tokio::net::TcpListener, state: Arc<State>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        // A slot before accepting: at the limit, new connections wait in
        // the kernel's backlog, and each slot frees within DEADLINE.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // EMFILE and the like: wait a moment rather than spin.
            Err(e) => {
                log::warn!("metrics endpoint cannot accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            connection(stream, &state).await;
            drop(slot);
        });
    }
}

/// Serve one connection, bounded as the module says.
async fn connection(stream: tokio::net::TcpStream, state: &State) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_header_size(MAX_HEAD)
        .keep_alive(false);
    let service = service_fn(|request: Request<Incoming>| {
        let answer = respond(&request, state);
        async move { Ok::<_, Infallible>(answer) }
    });
    let served = http.serve_connection(TokioIo::new(stream), service);
    match tokio::time::timeout(DEADLINE, served).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => log::debug!("metrics connection: {e}"),
        // Dropping the connection closes the socket.
        Err(_) => log::debug!("metrics connection: closed after {DEADLINE:?}"),
    }
}

const TEXT: &str = "text/plain; charset=utf-8";

fn answer(status: StatusCode, content_type: &'static str, body: String) -> Response<String> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// The answer to one request.
fn respond<B>(request: &Request<B>, state: &State) -> Response<String> {
    let method = request.method();
    if method != Method::GET && method != Method::HEAD {
        let mut r = answer(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            "GET or HEAD only\n".into(),
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    // A GET has no body; one announced is refused without being read.
    let headers = request.headers();
    let has_body = headers.contains_key(TRANSFER_ENCODING)
        || headers
            .get(CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    if has_body {
        return answer(
            StatusCode::PAYLOAD_TOO_LARGE,
            TEXT,
            "no request body expected\n".into(),
        );
    }
    // Prometheus may add a query string; the path decides.
    match request.uri().path() {
        // Prometheus asks for OpenMetrics; other scrapers (and promtool
        // check metrics) read the classic text format.
        "/metrics" => match super::encode(&state.registry) {
            Ok(body) if accepts_openmetrics(headers) => answer(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                body,
            ),
            Ok(body) => answer(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                to_classic(&body),
            ),
            Err(_) => answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                TEXT,
                "cannot encode metrics\n".into(),
            ),
        },
        "/healthz" if state.ready.load(Ordering::Acquire) => {
            answer(StatusCode::OK, TEXT, "ready\n".into())
        }
        "/healthz" => answer(
            StatusCode::SERVICE_UNAVAILABLE,
            TEXT,
            "attaching probes\n".into(),
        ),
        "/livez" => liveness(&state.heartbeat),
        _ => answer(
            StatusCode::NOT_FOUND,
            TEXT,
            "try /metrics, /healthz or /livez\n".into(),
        ),
    }
}

/// 200 while the run loop turns, 503 once it has been silent too long.
fn liveness(heartbeat: &Heartbeat) -> Response<String> {
    let silent = heartbeat.silent_for();
    let (secs, limit) = (silent.as_secs_f64(), heartbeat.limit().as_secs_f64());
    if silent <= heartbeat.limit() {
        answer(
            StatusCode::OK,
            TEXT,
            format!("alive: the run loop turned {secs:.1} s ago\n"),
        )
    } else {
        answer(
            StatusCode::SERVICE_UNAVAILABLE,
            TEXT,
            format!(
                "stuck: the run loop has not turned for {secs:.0} s (limit {limit:.0} s): \
                 a write to the output that does not complete, or a hung read\n"
            ),
        )
    }
}

fn accepts_openmetrics(headers: &hyper::HeaderMap) -> bool {
    headers.get_all(ACCEPT).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.contains("application/openmetrics-text"))
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
    use std::{
        io::{Read, Write},
        net::TcpStream,
    };

    fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        s.write_all(request.as_bytes()).expect("write");
        let mut out = Vec::new();
        s.read_to_end(&mut out).expect("read");
        String::from_utf8_lossy(&out).into_owned()
    }

    fn start(registry: Registry, heartbeat: Heartbeat) -> Server {
        Server::start("127.0.0.1:0".parse().expect("addr"), registry, heartbeat).expect("start")
    }

    #[test]
    fn serves_metrics_and_readiness() {
        let metrics = super::super::Metrics::new();
        let server = start(metrics.registry, Heartbeat::new(Duration::from_secs(30)));
        let r = get(server.addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        server.set_ready();
        let r = get(server.addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert!(r.ends_with("\r\n\r\nready\n"), "{r}");
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
        // HEAD: the headers of a GET, no body.
        let r = get(server.addr, "HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert!(r.ends_with("\r\n\r\n"), "{r}");
        let r = get(server.addr, "POST /metrics HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 405"), "{r}");
        assert!(r.to_ascii_lowercase().contains("allow: get, head"), "{r}");
        let r = get(
            server.addr,
            "GET /metrics HTTP/1.1\r\nContent-Length: 100000\r\n\r\nxx",
        );
        assert!(r.starts_with("HTTP/1.1 413"), "{r}");
        let r = get(server.addr, "GET /nope HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 404"), "{r}");
        // Garbage gets an answer, not a hang of the endpoint.
        let r = get(server.addr, "\0\0\0\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    }

    #[test]
    fn an_over_long_head_is_refused_and_the_endpoint_goes_on() {
        let server = start(Registry::default(), Heartbeat::new(Duration::from_secs(30)));
        let long = format!(
            "GET /metrics HTTP/1.1\r\nX-Filler: {}\r\n\r\n",
            "a".repeat(MAX_HEAD * 4)
        );
        let r = get(server.addr, &long);
        assert!(r.starts_with("HTTP/1.1 431"), "{r}");
        let r = get(server.addr, "GET /metrics HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    }

    /// A client that connects and says nothing does not hold the endpoint:
    /// others are answered meanwhile (the old server answered one
    /// connection at a time).
    #[test]
    fn a_silent_client_does_not_block_others() {
        let server = start(Registry::default(), Heartbeat::new(Duration::from_secs(30)));
        server.set_ready();
        let silent: Vec<TcpStream> = (0..MAX_CONNECTIONS / 2)
            .map(|_| TcpStream::connect(server.addr).expect("connect"))
            .collect();
        let started = Instant::now();
        let r = get(server.addr, "GET /healthz HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert!(
            started.elapsed() < HEAD_TIMEOUT,
            "answered before the silent ones were cut"
        );
        // The silent ones are closed once the head timeout passes.
        for mut s in silent {
            s.set_read_timeout(Some(DEADLINE * 2)).expect("timeout");
            let mut buf = [0u8; 64];
            let _ = s.read(&mut buf);
        }
        assert!(started.elapsed() < DEADLINE * 2, "{:?}", started.elapsed());
    }

    #[test]
    fn livez_fails_once_the_loop_is_silent_too_long() {
        let heartbeat = Heartbeat::new(Duration::from_millis(300));
        let server = start(Registry::default(), heartbeat.clone());
        let r = get(server.addr, "GET /livez HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert!(r.contains("alive"), "{r}");
        std::thread::sleep(Duration::from_millis(600));
        let r = get(server.addr, "GET /livez HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        assert!(r.contains("stuck"), "{r}");
        // Readiness is not liveness: /healthz stays as it was.
        server.set_ready();
        let r = get(server.addr, "GET /healthz HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        heartbeat.beat();
        let r = get(server.addr, "GET /livez HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    }

    #[test]
    fn a_taken_port_is_a_clear_error() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let err = Server::start(
            addr,
            Registry::default(),
            Heartbeat::new(Duration::from_secs(1)),
        )
        .err()
        .expect("must fail");
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }
}
