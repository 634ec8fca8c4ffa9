//! Secrets a process puts where the tracer reads (issue 17, items 3, 6, 8
//! and 9): its arguments, the request line it sends its proxy, its comm,
//! and a proxy password holding `://`. The real tracer, curl, python3 and
//! tinyproxy, on loopback only (a port nobody listens on, or tinyproxy).
//!
//! Each test plants secrets, then asserts that none appears anywhere the
//! tracer writes (events, stderr, /metrics, and where a process lives long
//! enough, the doctor's text and JSON), and that the tracer kept writing
//! the events of the other processes.

use std::{
    net::SocketAddr,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use tracer_tests::{
    assert_matches_doctor_schema, assert_matches_schema, attempts_of, closed_port,
    prometheus::{free_port, http_get},
    temp_dir, terminate,
    tinyproxy::{Tinyproxy, TinyproxyOptions},
    tracer_bin, Tracer, UnitCgroup,
};

/// python3: set its comm to argv[1] when not empty (prctl PR_SET_NAME),
/// connect to 127.0.0.1:argv[2] (nothing listens there), then sleep
/// argv[3] seconds. Further arguments are only carried.
const CLIENT: &str = "import ctypes, socket, sys, time
if sys.argv[1]:
    ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)
s = socket.socket()
try:
    s.connect(('127.0.0.1', int(sys.argv[2])))
except OSError:
    pass
time.sleep(float(sys.argv[3]))";

/// `-c CLIENT COMM PORT SLEEP EXTRA...`: python3's arguments.
fn client_args(comm: &str, port: u16, sleep: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec!["-c".into(), CLIENT.into(), comm.into()];
    args.push(port.to_string());
    args.push(sleep.into());
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

/// `python3 -c CLIENT COMM PORT SLEEP EXTRA...`, its argv[0] `arg0`.
fn client(arg0: &str, comm: &str, port: u16, sleep: &str, extra: &[&str]) -> Command {
    // The system python3 itself: a version manager's shim would exec it
    // again under its own argv[0].
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg0(arg0)
        .args(client_args(comm, port, sleep, extra))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// Run to the end; its pid.
fn run(cmd: &mut Command) -> u32 {
    let mut child = cmd.spawn().expect("spawn");
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if child.try_wait().expect("wait").is_some() {
            return pid;
        }
        if Instant::now() > deadline {
            terminate(&mut child, Duration::from_secs(1));
            panic!("{cmd:?} did not end within 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child killed on drop.
struct Living(Child);

impl Drop for Living {
    fn drop(&mut self) {
        terminate(&mut self.0, Duration::from_secs(2));
    }
}

/// A loopback port that accepts connections and never answers, so that a
/// client stays alive (waiting) long enough for the tracer to read its
/// command line; a closed port ends curl before that. Stops on drop.
struct Silent {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Silent {
    fn start() -> Silent {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            // Bounded: until dropped, or 120 s.
            let deadline = Instant::now() + Duration::from_secs(120);
            while !flag.load(Ordering::SeqCst) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => held.push(stream),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Silent {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `tracer doctor --pid PID [--host-root ROOT]` in text and in JSON (checked
/// against the schema); both outputs and stderrs, joined.
fn doctor(pid: u32, root: Option<&Path>) -> String {
    let mut all = String::new();
    for format in ["text", "json"] {
        let mut cmd = Command::new(tracer_bin());
        cmd.args(["doctor", "--pid", &pid.to_string(), "--timeout", "2s"])
            .args(["--format", format]);
        if let Some(root) = root {
            cmd.arg("--host-root").arg(root);
        }
        let started = Instant::now();
        let out = cmd.output().expect("run tracer doctor");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the doctor took {:?}",
            started.elapsed()
        );
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if format == "json" {
            let report: Value = serde_json::from_str(&stdout)
                .unwrap_or_else(|e| panic!("doctor JSON: {e}\n{stdout}"));
            assert_matches_doctor_schema(&report);
        }
        all.push_str(&stdout);
        all.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    all
}

fn metrics_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

fn scrape(addr: SocketAddr) -> String {
    let (code, body) = http_get(addr, "/metrics", None);
    assert_eq!(code, 200, "/metrics: {body}");
    body
}

/// No secret in any of the places, each named.
#[track_caller]
fn assert_nowhere(secrets: &[&str], places: &[(&str, &str)]) {
    for secret in secrets {
        for (place, text) in places {
            if let Some(line) = text.lines().find(|l| l.contains(secret)) {
                panic!("the secret {secret:?} leaked into {place}: {line}");
            }
        }
    }
}

/// The connect event of `pid`, or a panic with what was written.
fn event_of<'a>(events: &'a [Value], pid: u32, what: &str) -> &'a Value {
    attempts_of(events, pid)
        .first()
        .copied()
        .unwrap_or_else(|| {
            panic!("no event for {what} (pid {pid}): the tracer stopped writing? {events:#?}")
        })
}

fn args_of(event: &Value) -> Vec<String> {
    event["process"]["args"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Test 1: curl with every secret-bearing argument form, and a process
/// carrying the generic forms, against a closed loopback port. The
/// events, stderr, /metrics and the doctor say none of the secrets, and
/// the args say REDACTED where they were.
#[test]
fn secrets_in_arguments_never_leave_the_tracer() {
    let port = closed_port();
    // curl waits here (at most its --max-time) while the tracer reads it.
    let silent = Silent::start();
    let url = format!("http://127.0.0.1:{}/", silent.port);
    let proxy = format!("http://127.0.0.1:{}", silent.port);
    let maddr = metrics_addr();
    let tracer = Tracer::start(&["--metrics-addr", &maddr.to_string()]);
    let output = tracer.output.clone();
    // (the curl arguments, the secret they carry). curl takes no
    // `--flag=value`; the python3 process below carries those forms.
    let forms: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["-u".into(), "bob:Sek01user".into(), url.clone()],
            "Sek01user",
        ),
        (
            vec!["--user".into(), "bob:Sek02user".into(), url.clone()],
            "Sek02user",
        ),
        (
            vec!["-sSu".into(), "bob:Sek03comb".into(), url.clone()],
            "Sek03comb",
        ),
        (
            vec![
                "-x".into(),
                proxy.clone(),
                "-U".into(),
                "bob:Sek04prox".into(),
                url.clone(),
            ],
            "Sek04prox",
        ),
        (
            vec![
                "-x".into(),
                proxy.clone(),
                "--proxy-user".into(),
                "bob:Sek05prox".into(),
                url.clone(),
            ],
            "Sek05prox",
        ),
        (
            vec![
                "-H".into(),
                "Authorization: Bearer Sek06bear".into(),
                url.clone(),
            ],
            "Sek06bear",
        ),
        (
            vec![
                "-H".into(),
                "Proxy-Authorization: Basic Sek07pa".into(),
                url.clone(),
            ],
            "Sek07pa",
        ),
        (
            vec![
                "--header".into(),
                "Cookie: session=Sek08cookie".into(),
                url.clone(),
            ],
            "Sek08cookie",
        ),
        (
            vec!["-H".into(), "X-Api-Key: Sek09key".into(), url.clone()],
            "Sek09key",
        ),
        (
            vec!["-HAuthorization: Bearer Sek10att".into(), url.clone()],
            "Sek10att",
        ),
        (
            vec!["--oauth2-bearer".into(), "Sek11oauth".into(), url.clone()],
            "Sek11oauth",
        ),
        (
            vec!["-b".into(), "sid=Sek12cook".into(), url.clone()],
            "Sek12cook",
        ),
        (
            vec![format!(
                "{url}o?access_token=Sek13tok&X-Amz-Signature=Sek13sig"
            )],
            "Sek13",
        ),
        (
            vec![
                "-x".into(),
                format!("http://bob:Sek14url@127.0.0.1:{}", silent.port),
                url.clone(),
            ],
            "Sek14url",
        ),
        (
            vec![
                "-x".into(),
                proxy.clone(),
                "--proxy-header".into(),
                "Proxy-Authorization: Basic Sek15prox".into(),
                url.clone(),
            ],
            "Sek15prox",
        ),
    ];
    let mut curls = Vec::new();
    for (args, secret) in &forms {
        let pid = run(Command::new("curl")
            .args(["-sS", "--max-time", "1", "-o", "/dev/null"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null()));
        curls.push((pid, *secret));
    }
    // The MySQL clients' -pPW: a process named mysql.
    let mysql = run(&mut client(
        "mysql",
        "",
        port,
        "1",
        &["-uroot", "-pSek20mysql", "shop"],
    ));
    // The generic forms and a shell string; alive for the doctor.
    let generic = [
        "--password",
        "Sek21pw",
        "--token=Sek22tok",
        "--client-secret",
        "Sek23cs",
        "--api-key=Sek24api",
        "PGPASSWORD=Sek25pg",
        "mysql -uroot -pSek26sh shop",
    ];
    let living = Living(
        client("python3", "", port, "30", &generic)
            .spawn()
            .expect("spawn"),
    );
    let resident = living.0.id();
    // Someone else's connect, after all of them.
    let other = run(&mut client("python3", "", port, "0", &[]));
    std::thread::sleep(Duration::from_millis(500));
    let metrics = scrape(maddr);
    let doctor = doctor(resident, None);
    drop(living);
    let stopped = tracer.stop();
    let raw = std::fs::read_to_string(&output).expect("read output");
    for e in &stopped.events {
        assert_matches_schema(e);
    }
    let mut secrets: Vec<&str> = forms.iter().map(|(_, s)| *s).collect();
    secrets.extend([
        "Sek20mysql",
        "Sek21pw",
        "Sek22tok",
        "Sek23cs",
        "Sek24api",
        "Sek25pg",
        "Sek26sh",
    ]);
    assert_nowhere(
        &secrets,
        &[
            ("the events", &raw),
            ("stderr", &stopped.stderr),
            ("/metrics", &metrics),
            ("the doctor", &doctor),
        ],
    );
    // Every process was written, with its arguments, redacted. curl
    // itself blanks the argument after -u, -U and --proxy-user once it
    // has read it (spaces); if the tracer read it before, it says REDACTED.
    let mut redacted = 0;
    for (pid, secret) in &curls {
        let e = event_of(&stopped.events, *pid, secret);
        let args = args_of(e);
        println!("{secret}: {args:?}");
        let blanked = args.iter().any(|a| !a.is_empty() && a.trim().is_empty());
        let shown = args.iter().any(|a| a.contains("REDACTED"));
        assert!(shown || blanked, "{secret}: {args:?}");
        redacted += usize::from(shown);
    }
    assert!(
        redacted >= 8,
        "only {redacted} curl command lines carried REDACTED"
    );
    let args = args_of(event_of(&stopped.events, mysql, "mysql -p"));
    assert!(args.contains(&"-pREDACTED".to_string()), "{args:?}");
    let args = args_of(event_of(&stopped.events, resident, "the generic forms"));
    for want in [
        "--token=REDACTED",
        "PGPASSWORD=REDACTED",
        "--api-key=REDACTED",
    ] {
        assert!(args.contains(&want.to_string()), "{want}: {args:?}");
    }
    event_of(&stopped.events, other, "the other process");
    println!("generic: {args:?}");
}

/// Test 2: `--args none` writes no command line at all, and the events
/// are still written.
#[test]
fn args_none_drops_command_lines() {
    // curl lives (waiting for an answer) long enough to be read.
    let silent = Silent::start();
    let tracer = Tracer::start(&["--args", "none"]);
    let curl = run(Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "1",
            "-o",
            "/dev/null",
            "-u",
            "bob:Sek30none",
        ])
        .arg(format!("http://127.0.0.1:{}/", silent.port))
        .stderr(Stdio::null()));
    let output = tracer.output.clone();
    let stopped = tracer.stop();
    let raw = std::fs::read_to_string(output).expect("read output");
    let e = event_of(&stopped.events, curl, "curl");
    assert_matches_schema(e);
    assert!(e["process"].get("args").is_none(), "{e}");
    assert_eq!(e["process"]["name"], "curl");
    assert_nowhere(
        &["Sek30none", "bob:"],
        &[("the events", &raw), ("stderr", &stopped.stderr)],
    );
}

/// A `sleep` with `env` in the unit's cgroup, started before the tracer so
/// that the cgroup is watched for the proxy exchange.
fn resident(unit: &UnitCgroup, env: &[(&str, &str)]) -> Living {
    Living(
        unit.command(Path::new("/bin/sleep"))
            .arg("60")
            .env_clear()
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .spawn()
            .expect("start the resident sleep"),
    )
}

/// Test 3: a plain-HTTP request through a real tinyproxy, whose absolute
/// target carries `?access_token=` and `X-Amz-Signature=`: the event keeps
/// the target up to the query, marked `?REDACTED`, and the secrets are
/// nowhere, though tinyproxy got them.
#[test]
fn query_strings_of_proxied_requests_are_dropped() {
    let tiny = Tinyproxy::start(&TinyproxyOptions::default());
    let purl = tiny.url();
    let env = [("HTTP_PROXY", purl.as_str()), ("http_proxy", purl.as_str())];
    let unit = UnitCgroup::new("trt-hsecrets.service");
    let _resident = resident(&unit, &env);
    let maddr = metrics_addr();
    let tracer = Tracer::start(&["--proxy-only", "--metrics-addr", &maddr.to_string()]);
    let port = closed_port();
    let base = format!("http://127.0.0.1:{port}/bucket/object");
    // The secrets are in the request line only: curl reads the URL from a
    // file, so its arguments do not carry them.
    let config = temp_dir("hsecrets").join("curlrc");
    std::fs::write(
        &config,
        format!("url = \"{base}?access_token=Sek40tok&X-Amz-Signature=Sek40sig#Sek40frag\"\n"),
    )
    .expect("write curl config");
    let curl = run(unit
        .command(Path::new("/usr/bin/curl"))
        .args(["-sS", "--max-time", "10", "-o", "/dev/null", "-K"])
        .arg(&config)
        .env_clear()
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null()));
    let metrics = scrape(maddr);
    let output = tracer.output.clone();
    let stopped = tracer.stop();
    let raw = std::fs::read_to_string(output).expect("read output");
    // tinyproxy got the whole target: the query was on the wire.
    assert!(
        tiny.request_lines()
            .iter()
            .any(|l| l.contains("access_token=Sek40tok")),
        "tinyproxy's log: {}",
        tiny.log()
    );
    let e = attempts_of(&stopped.events, curl)
        .into_iter()
        .find(|e| !e["tracer"]["proxy"]["request"].is_null())
        .unwrap_or_else(|| panic!("no exchange for curl {curl}: {:#?}", stopped.events));
    assert_matches_schema(e);
    let target = format!("{base}?REDACTED");
    assert_eq!(e["tracer"]["proxy"]["request"]["target"], target.as_str());
    let message = e["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("asked for GET {target}")),
        "{message}"
    );
    println!("{e}");
    assert_nowhere(
        &["Sek40tok", "Sek40sig", "Sek40frag", "access_token"],
        &[
            ("the events", &raw),
            ("stderr", &stopped.stderr),
            ("/metrics", &metrics),
        ],
    );
}

/// Test 4: a process names itself with terminal escapes (prctl
/// PR_SET_NAME). `--format text` shows them escaped, never a raw ESC, and
/// goes on with the next process's line.
#[test]
fn an_escape_sequence_in_comm_is_shown_escaped() {
    let port = closed_port();
    let tracer = Tracer::start(&["--format", "text"]);
    let output = tracer.output.clone();
    let evil = run(&mut client(
        "python3",
        "\x1b[2J\x1b]0;pwn\x07",
        port,
        "0",
        &[],
    ));
    let other = run(&mut client("python3", "trt-after", port, "0", &[]));
    std::thread::sleep(Duration::from_millis(300));
    let (status, stderr) = tracer.stop_raw();
    assert!(status.success(), "{status}: {stderr}");
    let bytes = std::fs::read(&output).expect("read output");
    let text = String::from_utf8_lossy(&bytes);
    print!("{text}");
    assert!(!bytes.contains(&0x1b), "a raw ESC in the text output");
    assert!(!bytes.contains(&0x07), "a raw BEL in the text output");
    assert!(
        text.lines()
            .any(|l| l.contains(&format!(r"\x1b[2J\x1b]0;pwn\x07[{evil}]"))),
        "no escaped line for pid {evil}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains(&format!("trt-after[{other}]"))),
        "no line for the process after it"
    );
    assert!(!stderr.contains('\x1b'), "a raw ESC on stderr");
}

/// A host root whose `unit` drop-in sets `HTTPS_PROXY` to `value`.
fn host_root(unit: &str, value: &str) -> PathBuf {
    let root = temp_dir("hdrift");
    let dir = root.join(format!("etc/systemd/system/{unit}.d"));
    std::fs::create_dir_all(&dir).expect("mkdir drop-in dir");
    std::fs::write(
        dir.join("proxy.conf"),
        format!("[Service]\nEnvironment=\"HTTPS_PROXY={value}\"\n"),
    )
    .expect("write drop-in");
    root
}

/// Test 5: a proxy password holding `://` differs between the unit file
/// and the running process (drift). Neither password, nor the part before
/// its `://`, appears in the events, the doctor's text and JSON, or the
/// periodic doctor's metrics.
#[test]
fn drift_values_with_a_scheme_in_the_password_stay_redacted() {
    let port = closed_port();
    let unit_name = "trt-hdrift.service";
    let configured = format!("http://ops:Sek50conf://x@127.0.0.1:{port}");
    let live = format!("http://ops:Sek51live://y@127.0.0.1:{port}");
    let root = host_root(unit_name, &configured);
    let unit = UnitCgroup::new(unit_name);
    let maddr = metrics_addr();
    let tracer = Tracer::start(&[
        "--host-root",
        root.to_str().expect("utf8 root"),
        "--metrics-addr",
        &maddr.to_string(),
        "--doctor-interval",
        "1s",
        "--doctor-comm",
        "trt-hdrift",
    ]);
    // Named trt-hdrift, in the unit's cgroup, with the live value; it
    // dials the proxy port and stays for the doctors.
    let mut cmd =
        tracer_tests::command_in_cgroups(Path::new("/usr/bin/python3"), &unit.procs_files());
    cmd.args(client_args("trt-hdrift", port, "30", &[]))
        .env_clear()
        .env("HTTPS_PROXY", &live)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let living = Living(cmd.spawn().expect("spawn"));
    let pid = living.0.id();
    // The periodic doctor has examined it once its variable is a series.
    let deadline = Instant::now() + Duration::from_secs(20);
    let metrics = loop {
        let m = scrape(maddr);
        if m.lines()
            .any(|l| l.contains("trt-hdrift") && l.contains("HTTPS_PROXY"))
        {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "the periodic doctor never examined trt-hdrift: {m}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let doctor = doctor(pid, Some(&root));
    assert!(doctor.contains("REDACTED@127.0.0.1"), "{doctor}");
    drop(living);
    let output = tracer.output.clone();
    let stopped = tracer.stop();
    let raw = std::fs::read_to_string(output).expect("read output");
    event_of(&stopped.events, pid, "the drifting process");
    assert_nowhere(
        &["Sek50conf", "Sek51live", "ops:Sek"],
        &[
            ("the events", &raw),
            ("stderr", &stopped.stderr),
            ("/metrics", &metrics),
            ("the doctor", &doctor),
        ],
    );
}

/// Test 6: a proxy password holding an unencoded `/`
/// (`http://Usr53x:4561/Sek52slash@127.0.0.1:P`). Go's URL parse ends the
/// authority at the `/`, so the client dials host `Usr53x`, port 4561: a
/// piece of the credentials. The event (proxy URL, endpoint, message), the
/// tracer's stderr and the doctor's text and JSON say `REDACTED` there, and
/// neither the user name nor the password appears anywhere.
#[test]
fn a_slash_in_a_proxy_password_does_not_leak_it_as_the_host() {
    let port = closed_port();
    let value = format!("http://Usr53x:4561/Sek52slash@127.0.0.1:{port}");
    let tracer = Tracer::start(&[]);
    let mut cmd = client("/usr/bin/python3", "trt-hslash", port, "20", &[]);
    cmd.env_clear()
        .env("HTTPS_PROXY", &value)
        .env("HTTP_PROXY", &value)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let living = Living(cmd.spawn().expect("spawn"));
    let pid = living.0.id();
    // Its dial is written (python starts slowly on a busy machine) before
    // the doctor looks and the client is stopped.
    let deadline = Instant::now() + Duration::from_secs(30);
    while attempts_of(&tracer_tests::read_events(&tracer.output), pid).is_empty() {
        assert!(
            Instant::now() < deadline,
            "no event for the client (pid {pid})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let doctor = doctor(pid, None);
    drop(living);
    let output = tracer.output.clone();
    let stopped = tracer.stop();
    let raw = std::fs::read_to_string(output).expect("read output");
    let event = event_of(&stopped.events, pid, "the client");
    assert_matches_schema(event);
    // The verdict is still there, with the credentials' place said.
    let proxy = &event["tracer"]["proxy"];
    assert_eq!(proxy["url"], "http://REDACTED", "{event}");
    assert_eq!(proxy["variable"], "HTTPS_PROXY", "{event}");
    assert!(doctor.contains("REDACTED"), "{doctor}");
    let lower = raw.to_ascii_lowercase();
    assert_nowhere(
        &["usr53x", "sek52slash"],
        &[
            ("the events", &lower),
            ("stderr", &stopped.stderr.to_ascii_lowercase()),
            ("the doctor", &doctor.to_ascii_lowercase()),
        ],
    );
}
