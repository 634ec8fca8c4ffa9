//! What the tracer serves and writes to: the metrics endpoint against slow
//! and over-long clients, `--output` at a path someone else prepared, and
//! liveness when the drain is wedged for real (stdout to a pipe nobody
//! reads).
//!
//! Each scenario in which the tracer runs also checks that it keeps
//! writing other processes' events and that its memory stays bounded.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::Value;
use tracer_tests::{
    assert_matches_schema, attempts_of, closed_port, connector,
    prometheus::{free_port, http_get},
    rss_kib, temp_dir, tracer_bin, Tracer,
};

/// The DaemonSet's memory limit: far above the tracer's ~40 MiB, far below
/// what unbounded buffering of a stalled endpoint or output would take.
const RSS_LIMIT_KIB: u64 = 256 * 1024;

/// Slow clients against the endpoint, each sending a byte every 2 s.
const SLOW_CLIENTS: usize = 8;
/// How many bytes a slow client sends at most (bounded: 2 s each).
const SLOW_BYTES: u32 = 15;

fn metrics_addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().expect("addr")
}

fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A slow client: the start of a request, then one byte every 2 s, until
/// the endpoint closes the connection (or SLOW_BYTES bytes are sent); then
/// again on a new connection, for `total`. Returns how long the endpoint
/// let each connection live, None for one it never cut.
fn slow_client(addr: SocketAddr, total: Duration) -> Vec<Option<Duration>> {
    let started = Instant::now();
    let mut held = Vec::new();
    // Bounded: each connection ends within SLOW_BYTES x 2 s.
    while started.elapsed() < total {
        held.push(dribble(addr));
    }
    held
}

fn dribble(addr: SocketAddr) -> Option<Duration> {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(b"GET /metrics HTTP/1.1\r\n")
        .expect("first line");
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut buf = [0u8; 512];
    for _ in 0..SLOW_BYTES {
        if s.write_all(b"X").is_err() {
            return Some(started.elapsed());
        }
        // The 2 s between bytes, spent waiting for the endpoint's word.
        match s.read(&mut buf) {
            Ok(_) => return Some(started.elapsed()),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return Some(started.elapsed()),
        }
    }
    None
}

/// A connector to a closed port; waits (bounded) until its refused attempt
/// is in the tracer's output file, and returns how long that took.
fn traced_on_time(output: &Path) -> Duration {
    let started = Instant::now();
    let (pid, errnos) = connector(&[
        "tcp",
        &format!("127.0.0.1:{}", closed_port()),
        "--linger-ms",
        "200",
    ]);
    assert_eq!(errnos, vec![libc::ECONNREFUSED]);
    wait_for("another process's event", Duration::from_secs(10), || {
        let text = std::fs::read_to_string(output).unwrap_or_default();
        let events: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        (attempts_of(&events, pid).len() == 1).then_some(())
    });
    started.elapsed()
}

/// Several clients that each send a byte every 2 s cannot starve the
/// endpoint: /metrics, /healthz and /livez answer meanwhile (the old
/// one-connection-at-a-time server gave no answer within 10 s), the slow
/// clients are cut off by the deadline on a whole request head, and other
/// processes' events are written.
#[test]
fn slow_clients_do_not_starve_metrics_or_healthz() {
    let addr = metrics_addr();
    let tracer = Tracer::start(&[
        "--metrics-addr",
        &addr.to_string(),
        "--doctor-interval",
        "0s",
    ]);
    let clients: Vec<_> = (0..SLOW_CLIENTS)
        .map(|_| std::thread::spawn(move || slow_client(addr, Duration::from_secs(12))))
        .collect();
    // Let them connect and start dribbling.
    std::thread::sleep(Duration::from_secs(1));
    let mut peak_rss = 0;
    for round in 0..8 {
        let started = Instant::now();
        // http_get gives up after 10 s: a generous bound for an answer.
        let (code, body) = http_get(addr, "/metrics", None);
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("tracer_connect_attempts_total"), "{body}");
        assert_eq!(http_get(addr, "/healthz", None), (200, "ready\n".into()));
        let (code, body) = http_get(addr, "/livez", None);
        assert_eq!(code, 200, "{body}");
        println!(
            "round {round}: /metrics, /healthz, /livez answered in {:?} with {SLOW_CLIENTS} slow clients",
            started.elapsed()
        );
        peak_rss = peak_rss.max(rss_kib(tracer.pid()));
        std::thread::sleep(Duration::from_secs(1));
    }
    let took = traced_on_time(&tracer.output);
    println!("another process's event written {took:?} after its start");
    let mut holds = Vec::new();
    for client in clients {
        holds.extend(client.join().expect("slow client"));
    }
    println!("slow connections and how long each was let live: {holds:?}");
    assert!(holds.len() >= SLOW_CLIENTS, "{holds:?}");
    for held in &holds {
        // Cut by the deadline on a request head (5 s), never left to
        // dribble on (a generous bound, not a measurement).
        assert!(
            held.is_some_and(|h| h < Duration::from_secs(12)),
            "a slow client kept its connection: {holds:?}"
        );
    }
    peak_rss = peak_rss.max(rss_kib(tracer.pid()));
    println!("tracer RSS peak {peak_rss} KiB");
    assert!(peak_rss < RSS_LIMIT_KIB, "{peak_rss} KiB");
    let out = tracer.stop();
    assert!(out.status.success(), "{}", out.stderr);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}

/// A request head far beyond the limit is refused (431) without being
/// buffered, and the endpoint and the tracer go on.
#[test]
fn an_over_long_request_is_refused() {
    let addr = metrics_addr();
    let tracer = Tracer::start(&[
        "--metrics-addr",
        &addr.to_string(),
        "--doctor-interval",
        "0s",
    ]);
    let rss_before = rss_kib(tracer.pid());
    let mut answers = Vec::new();
    for _ in 0..5 {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s.set_write_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        // 1 MiB of header. The endpoint may close before all of it is
        // sent; what it answered is what counts.
        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nX-Filler: ");
        let filler = vec![b'a'; 64 * 1024];
        for _ in 0..16 {
            if s.write_all(&filler).is_err() {
                break;
            }
        }
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        // Bounded: the read timeout, or the endpoint closing.
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
        }
        answers.push(String::from_utf8_lossy(&raw).into_owned());
    }
    println!(
        "answer to an over-long head: {:?}",
        answers[0].lines().next()
    );
    assert!(
        answers.iter().all(|a| a.starts_with("HTTP/1.1 431")),
        "{answers:?}"
    );
    assert_eq!(http_get(addr, "/healthz", None), (200, "ready\n".into()));
    assert_eq!(http_get(addr, "/metrics", None).0, 200);
    traced_on_time(&tracer.output);
    let rss_after = rss_kib(tracer.pid());
    println!("tracer RSS {rss_before} KiB before, {rss_after} KiB after 5 MiB of refused heads");
    assert!(rss_after < RSS_LIMIT_KIB, "{rss_after} KiB");
    let out = tracer.stop();
    assert!(out.status.success(), "{}", out.stderr);
}

/// `tracer trace --output PATH ARGS`: exit status and stderr, bounded.
fn run_with_output(path: &Path) -> (Option<i32>, String) {
    let mut child = Command::new(tracer_bin())
        .args(["trace", "--output"])
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tracer");
    let status = tracer_tests::wait_child(
        &mut child,
        Duration::from_secs(30),
        &format!("the tracer refusing {}", path.display()),
    );
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    (status.code(), err)
}

/// As the unprivileged user nobody (65534), in `dir`: `sh -c SCRIPT`.
fn as_nobody(dir: &Path, script: &str) {
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "sh",
            "-c",
            script,
        ])
        .current_dir(dir)
        .output()
        .expect("setpriv");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// In a shared directory (mode 1777, like /tmp), an unprivileged user
/// pre-creates the output file with mode 0666 (so it could read every
/// event and rewrite them), or puts a FIFO there (whose reader could stop
/// reading and stall the drain). The tracer refuses both with a clear
/// message and a non-zero exit, writing nothing; so too a root-owned file
/// that every user may write. (The tracer never starts here, so there are
/// no events or memory to check.)
#[test]
fn output_files_someone_else_controls_are_refused() {
    let shared = temp_dir("shared");
    std::fs::set_permissions(
        &shared,
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .expect("chmod 1777");

    // A 0666 file of nobody's.
    as_nobody(&shared, "umask 0 && : > events.json");
    let path = shared.join("events.json");
    let (code, err) = run_with_output(&path);
    println!("0666 file of uid 65534: {err}");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("owned by uid 65534"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        std::fs::metadata(&path).expect("meta").len(),
        0,
        "nothing written"
    );

    // A FIFO of nobody's, with a reader, so that opening it for writing
    // would succeed at once.
    as_nobody(&shared, "mkfifo -m 0666 pipe.json");
    let fifo = shared.join("pipe.json");
    let mut reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .expect("FIFO reader");
    let (code, err) = run_with_output(&fifo);
    println!("FIFO: {err}");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&fifo.display().to_string()), "{err}");
    assert!(
        err.contains("FIFO") && err.contains("not a regular file"),
        "{err}"
    );
    let mut got = Vec::new();
    let _ = reader.read_to_end(&mut got);
    assert!(got.is_empty(), "nothing written to the FIFO");

    // Root's own file, but writable by every user.
    let open = shared.join("open.json");
    std::fs::write(&open, b"").expect("write");
    std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .expect("chmod");
    let (code, err) = run_with_output(&open);
    println!("root's 0666 file: {err}");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("writable by every user"), "{err}");
    assert_eq!(std::fs::metadata(&open).expect("meta").len(), 0);
    let _ = std::fs::remove_dir_all(&shared);
}

/// The tracer as a child writing events to a pipe; killed on drop.
struct Piped {
    child: Child,
    stderr: PathBuf,
    _dir: PathBuf,
}

impl Drop for Piped {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Piped {
    fn start(args: &[&str]) -> Piped {
        let dir = temp_dir("piped");
        let stderr = dir.join("stderr.txt");
        let child = Command::new(tracer_bin())
            .arg("trace")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("start tracer");
        let mut piped = Piped {
            child,
            stderr,
            _dir: dir,
        };
        wait_for("ready", Duration::from_secs(60), || {
            if let Ok(Some(status)) = piped.child.try_wait() {
                panic!("tracer exited ({status}): {}", piped.stderr_text());
            }
            piped.stderr_text().contains("ready").then_some(())
        });
        piped
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

/// The drain wedged for real: the tracer writes its events to a pipe that
/// nobody reads, and a burst of connects fills it, so write(2) blocks.
/// /livez turns 503 once the loop has not turned for --liveness-timeout,
/// while the endpoint (on its own thread) still answers: /healthz stays
/// 200 (readiness means the probes are attached, as documented) and
/// /metrics still serves. Once the pipe is read again, /livez recovers,
/// every event of the burst is written (the kernel held them meanwhile),
/// and a later process's event follows.
#[test]
fn a_wedged_drain_fails_liveness_and_recovers() {
    let addr = metrics_addr();
    let mut tracer = Piped::start(&[
        "--metrics-addr",
        &addr.to_string(),
        "--doctor-interval",
        "0s",
        "--liveness-timeout",
        "3s",
    ]);
    let (code, body) = http_get(addr, "/livez", None);
    assert_eq!(code, 200, "{body}");

    // 400 refused connects: about 300 KiB of JSON lines, several times
    // what a pipe holds (64 KiB).
    let burst = 400;
    let (burst_pid, errnos) = connector(&[
        "tcp",
        &format!("127.0.0.1:{}", closed_port()),
        "--count",
        &burst.to_string(),
    ]);
    assert_eq!(errnos.len(), burst);
    let wedged_at = Instant::now();
    let body = wait_for("/livez to fail", Duration::from_secs(30), || {
        let (code, body) = http_get(addr, "/livez", None);
        (code == 503).then_some(body)
    });
    println!(
        "/livez failed {:?} after the burst: {body}",
        wedged_at.elapsed()
    );
    assert!(body.contains("stuck"), "{body}");
    // Readiness as documented: attached, so still 200.
    assert_eq!(http_get(addr, "/healthz", None), (200, "ready\n".into()));
    let (code, scrape) = http_get(addr, "/metrics", None);
    assert_eq!(code, 200);
    assert!(scrape.contains("tracer_connect_attempts_total"));
    let rss = rss_kib(tracer.child.id());
    println!("tracer RSS while wedged: {rss} KiB");
    assert!(rss < RSS_LIMIT_KIB, "{rss} KiB");

    // Read the pipe again.
    let mut stdout = tracer.child.stdout.take().expect("stdout");
    let read: Arc<Mutex<Vec<u8>>> = Arc::default();
    let sink = Arc::clone(&read);
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 64 * 1024];
        // Ends when the tracer exits (EOF).
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().expect("lock").extend_from_slice(&buf[..n]);
        }
    });
    let resumed = Instant::now();
    let body = wait_for("/livez to recover", Duration::from_secs(30), || {
        let (code, body) = http_get(addr, "/livez", None);
        (code == 200).then_some(body)
    });
    println!(
        "/livez recovered {:?} after reading resumed: {body}",
        resumed.elapsed()
    );

    // A later process's event is written.
    let (later_pid, _) = connector(&[
        "tcp",
        &format!("127.0.0.1:{}", closed_port()),
        "--linger-ms",
        "200",
    ]);
    let events = |bytes: &[u8]| -> Vec<Value> {
        String::from_utf8_lossy(bytes)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    wait_for("the later process's event", Duration::from_secs(10), || {
        let all = events(&read.lock().expect("lock"));
        (attempts_of(&all, later_pid).len() == 1).then_some(())
    });

    // SIGINT: the tracer stops by itself once it is unwedged.
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(tracer.child.id() as i32, libc::SIGINT) };
    let status = wait_for("the tracer to stop", Duration::from_secs(30), || {
        tracer.child.try_wait().ok().flatten()
    });
    reader.join().expect("reader");
    assert!(status.success(), "{}", tracer.stderr_text());
    let bytes = read.lock().expect("lock").clone();
    let text = String::from_utf8_lossy(&bytes);
    let mut all = Vec::new();
    for line in text.lines() {
        let event: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert_matches_schema(&event);
        all.push(event);
    }
    assert_eq!(
        attempts_of(&all, burst_pid).len(),
        burst,
        "every attempt of the burst written once the pipe was read"
    );
    assert_eq!(attempts_of(&all, later_pid).len(), 1);
}
