//! `cargo xtask soak --minutes N`: a mixed, bounded workload against the
//! tracer for N minutes (default 10; CI runs 1), on loopback and on test
//! hosts in network namespaces only. Each second:
//! - a connect storm of 2,000 (half refused, half accepted);
//! - 10 short-lived clients that exit right after a refused connect, half
//!   of them with a (dead) proxy in their environment: pid churn;
//! - a slow non-blocking connect to a test host that drops SYNs, given up
//!   after 300 ms (aborted);
//! - a client in `system.slice/soak-proxy.service` dialling its proxy,
//!   while that unit's drop-in is rewritten (drift both ways);
//!
//! and every 15 s a containerd is started, asked to pull through a dead
//! proxy, and stopped.
//!
//! It asserts, and prints:
//! - exactly once: every attempt of the workload's own clients (their own
//!   count of attempts) appears exactly once among the events;
//! - no loss (the rate stays far below the documented capacity);
//! - memory: RSS at the end within 5% (plus 2 MiB of allocator slack) of
//!   RSS after the warm-up (the first quarter of the run);
//! - resources: open fds and the process cache stay bounded (exited
//!   processes are evicted 5 s after they go), read through SIGUSR1.

use std::{
    collections::HashMap,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use tracer_tests::{
    closed_port, connector_bin, connector_with, containerd::Containerd, rss_kib, temp_dir, NetNs,
    Tracer, UnitCgroup,
};

const UNIT: &str = "soak-proxy.service";
const DROPIN: &str = "etc/systemd/system/soak-proxy.service.d/proxy.conf";

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Ask the tracer for its stats line (SIGUSR1) and return the process
/// cache size it reports.
fn process_cache(tracer: &Tracer) -> Option<u64> {
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(tracer.pid() as i32, libc::SIGUSR1) };
    std::thread::sleep(Duration::from_millis(100));
    let stderr = std::fs::read_to_string(&tracer.stderr).unwrap_or_default();
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.contains("tracer: stats:"))?;
    line.split("process cache ")
        .nth(1)?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

fn main() {
    let minutes: u64 = std::env::args()
        .skip_while(|a| a != "--minutes")
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or(10)
        .clamp(1, 24 * 60);
    let run_for = Duration::from_secs(minutes * 60);
    let warmup = run_for / 4;

    let host_root = temp_dir("soakroot");
    let dropin = host_root.join(DROPIN);
    std::fs::create_dir_all(dropin.parent().expect("parent")).expect("mkdir drop-in dir");
    let dead = closed_port();
    let proxy = format!("http://127.0.0.1:{dead}");
    std::fs::write(
        &dropin,
        format!("[Service]\nEnvironment=HTTPS_PROXY={proxy}\n"),
    )
    .expect("write drop-in");
    let ns = NetNs::new(7);
    ns.drop_syns(7007);
    ns.assert_routed();
    let unit = UnitCgroup::new(UNIT);
    let tracer = Tracer::start(&["--host-root", &host_root.display().to_string()]);
    let tpid = tracer.pid();

    // pid -> attempts that process made, by its own count.
    let mut made: HashMap<u32, u64> = HashMap::new();
    let record = |made: &mut HashMap<u32, u64>, (pid, errnos): (u32, Vec<i32>)| {
        made.insert(pid, errnos.len() as u64);
    };
    let started = Instant::now();
    let mut after_warmup: Option<(u64, usize)> = None;
    let (mut max_fds, mut max_cache, mut iterations, mut containerd_runs) = (0, 0, 0u64, 0u64);
    let mut last_containerd = Instant::now() - Duration::from_secs(60);
    while started.elapsed() < run_for {
        let round = Instant::now();
        iterations += 1;
        // The storm: one process, 2,000 attempts.
        let out = Command::new(connector_bin())
            .args(["storm", "--count", "2000"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("storm");
        let pid = out.id();
        let out = out.wait_with_output().expect("storm output");
        let n = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .skip_while(|w| *w != "attempts")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        made.insert(pid, n);
        // Churn: clients that exit right after a refused connect.
        for i in 0..10 {
            let mut cmd = Command::new(connector_bin());
            cmd.args(["tcp", &format!("127.0.0.1:{dead}"), "--nonblock"])
                .env_clear();
            if i % 2 == 0 {
                cmd.env("HTTPS_PROXY", &proxy);
            }
            record(&mut made, connector_with(&mut cmd));
        }
        // A slow non-blocking attempt, given up after 300 ms.
        record(
            &mut made,
            connector_with(Command::new(connector_bin()).args([
                "tcp",
                &format!("{}:7007", ns.addr),
                "--nonblock",
                "--wait-ms",
                "300",
            ])),
        );
        // A unit's process dialling its proxy while its drop-in changes.
        let value = if iterations % 2 == 0 {
            proxy.clone()
        } else {
            format!("{proxy}/")
        };
        std::fs::write(
            &dropin,
            format!("[Service]\nEnvironment=HTTPS_PROXY={value}\n"),
        )
        .expect("rewrite drop-in");
        record(
            &mut made,
            connector_with(
                unit.command(&connector_bin())
                    .args(["tcp", &format!("127.0.0.1:{dead}")])
                    .env_clear()
                    .env("HTTPS_PROXY", &proxy),
            ),
        );
        // containerd, restarted every 15 s, pulling through a dead proxy.
        if last_containerd.elapsed() >= Duration::from_secs(15) {
            last_containerd = Instant::now();
            containerd_runs += 1;
            let dir = temp_dir("soakctrd");
            match Containerd::start(
                &dir,
                &[
                    ("HTTPS_PROXY", proxy.as_str()),
                    ("HTTP_PROXY", proxy.as_str()),
                ],
            ) {
                Ok(daemon) => {
                    let _ = daemon.cri_pull("quay.io/calico/cni:v3.31.3");
                }
                Err(e) => panic!("containerd: {e}"),
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
        let rss = rss_kib(tpid);
        max_fds = max_fds.max(fds(tpid));
        if let Some(cache) = process_cache(&tracer) {
            max_cache = max_cache.max(cache);
        }
        if after_warmup.is_none() && started.elapsed() >= warmup {
            after_warmup = Some((rss, fds(tpid)));
            println!(
                "soak: after warm-up ({:.0} s): RSS {rss} KiB, {} fds",
                warmup.as_secs_f64(),
                fds(tpid)
            );
        }
        let rest = Duration::from_secs(1).saturating_sub(round.elapsed());
        std::thread::sleep(rest);
    }
    let end_rss = rss_kib(tpid);
    let end_fds = fds(tpid);
    let out = tracer.stop();
    assert!(out.status.success(), "{}", out.stderr);
    let mut seen: HashMap<u32, u64> = HashMap::new();
    for ev in out
        .events
        .iter()
        .filter(|e| e["event"]["action"] == "connect")
    {
        let pid = ev["process"]["pid"].as_u64().unwrap_or(0) as u32;
        *seen.entry(pid).or_default() += 1;
    }
    let attempts: u64 = made.values().sum();
    let mismatched: Vec<String> = made
        .iter()
        .filter(|(pid, n)| seen.get(pid).copied().unwrap_or(0) != **n)
        .map(|(pid, n)| {
            format!(
                "pid {pid}: made {n}, events {}",
                seen.get(pid).copied().unwrap_or(0)
            )
        })
        .collect();
    let last: &Value = out.events.last().expect("events");
    let lost = last["tracer"]["lost"]["total"].as_u64().unwrap_or(u64::MAX);
    let (warm_rss, warm_fds) = after_warmup.unwrap_or((end_rss, end_fds));
    let growth = (end_rss as f64 - warm_rss as f64) / warm_rss.max(1) as f64 * 100.0;
    println!(
        "soak: {minutes} min, {iterations} rounds, {containerd_runs} containerd runs, {} processes, {attempts} attempts, {} events, {lost} lost",
        made.len(),
        seen.values().sum::<u64>()
    );
    println!(
        "soak: RSS after warm-up {warm_rss} KiB, at end {end_rss} KiB ({growth:+.1}%); fds {warm_fds} -> {end_fds} (max {max_fds}); process cache max {max_cache}"
    );
    assert!(mismatched.is_empty(), "not exactly once: {mismatched:?}");
    assert_eq!(lost, 0, "no loss below capacity");
    assert!(
        end_rss <= warm_rss + warm_rss / 20 + 2048,
        "RSS grew from {warm_rss} to {end_rss} KiB"
    );
    assert!(
        end_fds <= warm_fds + 2 && max_fds <= warm_fds + 8,
        "fds grew: {warm_fds} -> {end_fds} (max {max_fds})"
    );
    assert!(max_cache <= 500, "process cache not bounded: {max_cache}");
    println!("soak: ok");
}
