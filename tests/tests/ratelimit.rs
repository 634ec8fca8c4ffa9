//! `--rate-limit N/s`: a runaway process is held to N events per second,
//! every dropped event is accounted for in a "rate-limited" line and the
//! metrics, and another process's events in the same second all get
//! through. Run by `cargo xtask test` as root with --test-threads=1.

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use tracer_tests::{
    attempts_of, closed_port, connector_bin,
    prometheus::{free_port, http_get},
    Tracer,
};

const LIMIT: u64 = 50;
const STORM: u64 = 3000;
const QUIET: u64 = 20;

fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A storm of refused connects from one process under a limit: its written
/// events plus its reported drops equal its attempts, nothing is lost, and
/// a second process making attempts at the same time has every one of its
/// events written.
#[test]
fn a_storm_is_limited_and_accounted_for_and_does_not_starve_another_process() {
    let port = closed_port();
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let tracer = Tracer::start(&[
        "--rate-limit",
        &format!("{LIMIT}/s"),
        "--metrics-addr",
        &metrics.to_string(),
        "--doctor-interval",
        "0s",
    ]);
    let target = format!("127.0.0.1:{port}");
    let spawn = |count: u64| {
        Command::new(connector_bin())
            .args([
                "tcp",
                &target,
                "--count",
                &count.to_string(),
                "--linger-ms",
                "300",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start connector")
    };
    // Both at once: the quiet process's attempts fall in the storm's
    // seconds.
    let storm = spawn(STORM);
    let quiet = spawn(QUIET);
    let (storm_pid, quiet_pid) = (storm.id(), quiet.id());
    let started = Instant::now();
    let refused = |child: std::process::Child| {
        let out = child.wait_with_output().expect("connector output");
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| *l == format!("errno {}", libc::ECONNREFUSED))
            .count() as u64
    };
    assert_eq!(refused(quiet), QUIET);
    assert_eq!(refused(storm), STORM);
    let took = started.elapsed();

    // The drops are counted in the metrics too (at least ours: other
    // processes on the node may be limited as well).
    let deadline = Instant::now() + Duration::from_secs(10);
    let limited = loop {
        let (_, scrape) = http_get(metrics, "/metrics", None);
        let limited = sample(&scrape, "tracer_events_rate_limited_total").unwrap_or(0.0);
        if limited > 0.0 || Instant::now() > deadline {
            break limited;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = tracer.stop();
    assert!(out.status.success(), "{}", out.stderr);

    let written = attempts_of(&out.events, storm_pid).len() as u64;
    let summaries: Vec<&Value> = out
        .events
        .iter()
        .filter(|e| e["event"]["action"] == "rate-limited" && e["process"]["pid"] == storm_pid)
        .collect();
    let dropped: u64 = summaries
        .iter()
        .map(|e| {
            e["tracer"]["rate_limited"]["dropped"]
                .as_u64()
                .expect("dropped")
        })
        .sum();
    let lost = out
        .events
        .iter()
        .rev()
        .find(|e| e["event"]["action"] == "lost-events-final")
        .map_or(0, |e| e["tracer"]["lost"]["total"].as_u64().unwrap_or(0));
    println!(
        "storm of {STORM} in {took:?}: {written} written, {dropped} dropped in {} summaries, {lost} lost; metric {limited}",
        summaries.len()
    );
    if let Some(s) = summaries.first() {
        println!("summary: {s}");
    }
    assert_eq!(lost, 0, "nothing lost in the kernel");
    assert_eq!(written + dropped, STORM, "written + dropped = attempts");
    assert!(dropped > 0, "the storm went over the limit");
    // At most LIMIT per second it spanned (+1 for a partial second at
    // each end).
    let seconds = took.as_secs() + 2;
    assert!(
        written <= LIMIT * seconds,
        "{written} written in about {seconds} s at {LIMIT}/s"
    );
    assert!(written >= LIMIT, "the first second's budget is written");
    for s in &summaries {
        assert_eq!(s["process"]["name"], "connector");
        assert_eq!(s["tracer"]["rate_limited"]["limit_per_second"], LIMIT);
    }
    assert!(limited >= dropped as f64, "metric {limited} < {dropped}");

    // The other process, in the same seconds, is not starved.
    assert_eq!(attempts_of(&out.events, quiet_pid).len() as u64, QUIET);
    assert!(
        !out.events
            .iter()
            .any(|e| e["event"]["action"] == "rate-limited" && e["process"]["pid"] == quiet_pid),
        "the quiet process had nothing dropped"
    );
}
