//! Prometheus metrics, end to end: the real tracer serves `/metrics`, a real
//! Prometheus server (Debian's package) scrapes it and evaluates the
//! project's alert rules, and promtool checks the scrape and the rules.
//! Run by `cargo xtask test` as root with --test-threads=1.

use std::{
    net::{SocketAddr, TcpListener},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;
use tracer_tests::{
    attempts_of, closed_port, connector_bin, connector_with,
    prometheus::{free_port, http_get, rules_file, Prometheus},
    temp_dir, Tracer, UnitCgroup,
};

fn write(root: &Path, host_path: &str, text: &str) {
    let path = root.join(host_path.trim_start_matches('/'));
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// `promtool ARGS` with `input` on stdin; panics with its output on failure.
fn promtool(args: &[&str], input: Option<&str>) -> String {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run promtool (cargo xtask setup installs prometheus)");
    if let Some(text) = input {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write stdin");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("promtool output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed: {text}");
    text
}

/// The value of one sample in a classic-format scrape, by its exact
/// series text (`name{labels}`).
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Wait (bounded) until `check` returns Some.
fn eventually<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The shipped rule file is valid, and its alerts fire (and stay quiet)
/// as its promtool unit tests say.
#[test]
fn alert_rules_check_and_their_unit_tests_pass() {
    let rules = rules_file();
    let out = promtool(&["check", "rules", &rules.display().to_string()], None);
    assert!(out.contains("SUCCESS: 3 rules found"), "{out}");
    let tests = rules.with_file_name("tracer.rules.test.yml");
    let out = promtool(&["test", "rules", &tests.display().to_string()], None);
    assert!(out.contains("SUCCESS"), "{out}");
}

/// The incident, as Prometheus sees it: a process in
/// system.slice/containerd.service whose HTTPS_PROXY (with credentials, set
/// by a drop-in) points at a closed port makes three refused proxy dials.
/// Prometheus, scraping the tracer every second, returns 3 for the
/// proxy-dial counter, the dial-failure alert fires, and the periodic doctor
/// reports the proxy unreachable with the drop-in as its source. The
/// scrape passes `promtool check metrics` and shows no credentials.
#[test]
fn refused_proxy_dials_of_containerd_reach_prometheus_and_fire_the_alert() {
    let port = closed_port();
    let secret_url = format!("http://agent:s3cr3tpw@127.0.0.1:{port}");
    let host_root = temp_dir("root");
    let dropin = "/etc/systemd/system/containerd.service.d/http-proxy.conf";
    write(
        &host_root,
        dropin,
        &format!("[Service]\nEnvironment=\"HTTPS_PROXY={secret_url}\"\n"),
    );
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let tracer = Tracer::start(&[
        "--host-root",
        &host_root.display().to_string(),
        "--metrics-addr",
        &metrics.to_string(),
        "--doctor-interval",
        "1s",
        "--doctor-comm",
        "connector",
    ]);
    // Ready means the endpoint's readiness probe answers 200.
    let (code, body) = http_get(metrics, "/healthz", None);
    assert_eq!((code, body.as_str()), (200, "ready\n"));
    let prometheus = Prometheus::start(metrics);

    let cgroup = UnitCgroup::new("containerd.service");
    // Lingers (10 s) so that the periodic doctor, every second, examines it
    // while the test reads the doctor's series.
    let child = cgroup
        .command(&connector_bin())
        .env_clear()
        .env("HTTPS_PROXY", &secret_url)
        .env("API_TOKEN", "tok-do-not-leak")
        .args([
            "tcp",
            &format!("127.0.0.1:{port}"),
            "--count",
            "3",
            "--linger-ms",
            "10000",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start connector");
    let pid = child.id();
    let proxy = format!("127.0.0.1:{port}");

    // The doctor's view: the connector as a daemon of containerd.service,
    // its proxy unreachable, the drop-in named, credentials redacted.
    let reach = eventually(
        "the doctor's reachability series",
        Duration::from_secs(30),
        || {
            let q =
                format!(r#"tracer_doctor_proxy_reachable{{daemon="connector",proxy="{proxy}"}}"#);
            prometheus.query(&q).into_iter().next()
        },
    );
    assert_eq!(reach["value"][1], "0", "{reach}");
    assert_eq!(reach["metric"]["unit"], "containerd.service");
    let info = prometheus.query(r#"tracer_doctor_proxy_info{daemon="connector"}"#);
    let info = info
        .first()
        .unwrap_or_else(|| panic!("no doctor info series"));
    assert_eq!(info["metric"]["variable"], "HTTPS_PROXY");
    assert_eq!(info["metric"]["source"], format!("{dropin}:2"));
    assert_eq!(
        info["metric"]["proxy"],
        format!("http://REDACTED@127.0.0.1:{port}")
    );
    // While the doctor's alert waits out its `for:`, it is pending.
    let unreachable = eventually(
        "TracerRuntimeProxyUnreachable",
        Duration::from_secs(30),
        || {
            prometheus
                .alerts()
                .into_iter()
                .find(|a| a["labels"]["alertname"] == "TracerRuntimeProxyUnreachable")
        },
    );
    assert!(
        unreachable["state"] == "pending" || unreachable["state"] == "firing",
        "{unreachable}"
    );
    let out = child.wait_with_output().expect("connector output");
    let errnos: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(errnos, vec![format!("errno {}", libc::ECONNREFUSED); 3]);

    // The counter, through Prometheus's query API.
    let query = format!(
        r#"tracer_proxy_dials_total{{unit="containerd.service",manager="system",namespace="",variable="HTTPS_PROXY",proxy="{proxy}",result="refused"}}"#
    );
    let value = eventually(
        "the proxy-dial counter in Prometheus",
        Duration::from_secs(60),
        || {
            let result = prometheus.query(&query);
            let v = result.first()?["value"][1].as_str()?.to_string();
            (v == "3").then_some(v)
        },
    );
    assert_eq!(value, "3");

    // The shipped alert, evaluated by the server.
    let alert = eventually(
        "TracerRuntimeProxyDialFailures firing",
        Duration::from_secs(60),
        || {
            prometheus.alerts().into_iter().find(|a| {
                a["labels"]["alertname"] == "TracerRuntimeProxyDialFailures"
                    && a["labels"]["unit"] == "containerd.service"
                    && a["labels"]["proxy"] == proxy.as_str()
                    && a["state"] == "firing"
            })
        },
    );
    println!("alert: {alert}");
    assert_eq!(alert["labels"]["variable"], "HTTPS_PROXY");
    assert_eq!(alert["labels"]["severity"], "critical");

    // A scrape, as promtool and a classic scraper read it.
    let (code, scrape) = http_get(metrics, "/metrics", None);
    assert_eq!(code, 200);
    promtool(&["check", "metrics"], Some(&scrape));
    let series = format!(
        r#"tracer_proxy_dials_total{{unit="containerd.service",manager="system",namespace="",variable="HTTPS_PROXY",proxy="{proxy}",result="refused"}}"#
    );
    assert_eq!(sample(&scrape, &series), Some(3.0), "{scrape}");
    let refused_tcp = sample(
        &scrape,
        r#"tracer_connect_attempts_total{result="refused",transport="tcp",via_proxy="true"}"#,
    )
    .unwrap_or_else(|| panic!("no attempts series: {scrape}"));
    assert!(refused_tcp >= 3.0, "{refused_tcp}");
    assert!(scrape.contains("tracer_build_info{version=\""), "{scrape}");
    // What Prometheus itself gets (OpenMetrics) holds no secret either.
    let (_, open) = http_get(
        metrics,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0"),
    );
    assert!(open.trim_end().ends_with("# EOF"), "{open}");
    for text in [&scrape, &open] {
        assert!(!text.contains("s3cr3tpw"), "a password in the metrics");
        assert!(!text.contains("agent:"), "a user name in the metrics");
        assert!(!text.contains("tok-do-not-leak"), "another variable");
    }
    println!("scrape excerpt:");
    for l in scrape.lines().filter(|l| {
        (l.starts_with("tracer_proxy_dials_total") || l.starts_with("tracer_doctor_"))
            && !l.starts_with("# ")
    }) {
        println!("  {l}");
    }

    drop(prometheus);
    let out = tracer.stop();
    assert!(out.status.success(), "{}", out.stderr);
    // Every line was validated against the schema when read; the dials
    // are there as events too.
    assert_eq!(attempts_of(&out.events, pid).len(), 3);
    assert!(!out.stderr.contains("s3cr3tpw"));
}

/// `--events notable`: the refused attempt of a process is written, its
/// successful one is not, and the metrics count both.
#[test]
fn notable_events_write_failures_and_count_everything() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let open = listener.local_addr().expect("addr");
    let closed = closed_port();
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let tracer = Tracer::start(&[
        "--events",
        "notable",
        "--metrics-addr",
        &metrics.to_string(),
        "--doctor-interval",
        "0s",
    ]);
    let script = format!(
        "{bin} tcp {open} --count 2 && exec {bin} tcp 127.0.0.1:{closed} --linger-ms 300",
        bin = connector_bin().display()
    );
    let (pid, errnos) = connector_with(Command::new("sh").args(["-c", &script]));
    assert_eq!(errnos, vec![0, 0, libc::ECONNREFUSED]);
    // Counted once the drain has seen them (within a second or so).
    let connected = |scrape: &str| {
        sample(
            scrape,
            r#"tracer_connect_attempts_total{result="connected",transport="tcp",via_proxy="false"}"#,
        )
        .unwrap_or(0.0)
    };
    eventually("the successes counted", Duration::from_secs(10), || {
        let (_, scrape) = http_get(metrics, "/metrics", None);
        (connected(&scrape) >= 2.0).then_some(())
    });
    let out = tracer.stop();
    drop(listener);
    // `sh` execs the last connector, so the refusal carries `pid`; the
    // successes came from its child, whose events must not be written.
    let mine: Vec<&Value> = attempts_of(&out.events, pid);
    assert_eq!(mine.len(), 1, "{mine:#?}");
    assert_eq!(mine[0]["tracer"]["result"], "refused");
    let successes = out
        .events
        .iter()
        .filter(|e| e["event"]["action"] == "connect" && e["tracer"]["result"] == "connected")
        .count();
    assert_eq!(successes, 0, "no success is written with --events notable");
}
