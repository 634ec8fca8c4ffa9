//! Past capacity, losses are counted exactly: attempts made = events
//! written + losses reported, for the test's own processes, and the DNS
//! messages lost alongside are counted as such, never as attempts.
//! Privileged; run by `cargo xtask test`.

use std::{
    io::Read,
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use tracer_tests::{assert_matches_schema, connector_bin, rss_kib, temp_dir, tracer_bin};

/// Three parallel storms (90,000 connects), the tracer frozen with SIGSTOP
/// for 3 s in the middle, and a reader of its stdout that takes 16 KiB
/// every 20 ms (about 800 events/s) while the storms run. The kernel ring
/// fills, records are dropped and counted; afterwards every attempt is
/// either an event or a counted loss, exactly, and the tracer's memory
/// stayed bounded while its reader was slow.
///
/// With `--dns`, a storm of 20,000 DNS queries (1,168 bytes of ring each:
/// 8 MiB holds about 7,000) is sent while the tracer is frozen, so DNS
/// messages are lost too. They must be counted in `dns_full`: counted as
/// lost attempts, they would break the equality above.
#[test]
fn attempts_are_events_plus_counted_losses_under_overload() {
    let dir = temp_dir("overload");
    let stderr_path = dir.join("stderr.txt");
    let mut tracer = Command::new(tracer_bin())
        .args(["trace", "--comm", "connector", "--dns"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .expect("start tracer");
    let tracer_pid = tracer.id();
    let mut stdout = tracer.stdout.take().expect("stdout");
    let slow = Arc::new(AtomicBool::new(true));
    let reader = {
        let slow = Arc::clone(&slow);
        thread::spawn(move || {
            let mut all = Vec::new();
            let mut chunk = vec![0u8; 16 * 1024];
            loop {
                match stdout.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => all.extend_from_slice(&chunk[..n]),
                }
                if slow.load(Ordering::Relaxed) {
                    thread::sleep(Duration::from_millis(20));
                }
            }
            all
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&stderr_path)
        .unwrap_or_default()
        .contains("ready")
    {
        assert!(Instant::now() < deadline, "tracer not ready");
        thread::sleep(Duration::from_millis(20));
    }

    let storms: Vec<_> = (0..3)
        .map(|_| {
            Command::new(connector_bin())
                .args(["storm", "--count", "30000"])
                .stdout(Stdio::piped())
                .spawn()
                .expect("start storm")
        })
        .collect();
    let pids: Vec<u32> = storms.iter().map(|c| c.id()).collect();
    // Freeze the tracer for 3 s while the storms run, watching its memory.
    let mut peak_rss = 0;
    let sample = |peak: &mut u64| *peak = (*peak).max(rss_kib(tracer_pid));
    thread::sleep(Duration::from_millis(200));
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(tracer_pid as i32, libc::SIGSTOP) };
    // Loopback, a port 53 nothing need answer on.
    let dns = Command::new(connector_bin())
        .args(["dns-storm", "127.0.0.153:53", "--count", "20000"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the DNS storm");
    let dns_pid = dns.id();
    thread::sleep(Duration::from_secs(3));
    unsafe { libc::kill(tracer_pid as i32, libc::SIGCONT) };
    let dns_out = dns.wait_with_output().expect("DNS storm output");
    assert!(dns_out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&dns_out.stdout).trim(),
        "queries 20000"
    );
    let mut made = 0u64;
    for storm in storms {
        let out = storm.wait_with_output().expect("storm output");
        assert!(out.status.success());
        made += String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .skip_while(|w| *w != "attempts")
            .nth(1)
            .and_then(|n| n.parse::<u64>().ok())
            .expect("the storm reports its attempts");
        sample(&mut peak_rss);
    }
    assert_eq!(made, 90_000);
    // The slow reader keeps the tracer busy writing for a while: watch its
    // memory, then read at full speed and stop it.
    for _ in 0..20 {
        sample(&mut peak_rss);
        thread::sleep(Duration::from_millis(100));
    }
    slow.store(false, Ordering::Relaxed);
    unsafe { libc::kill(tracer_pid as i32, libc::SIGINT) };
    let bytes = reader.join().expect("reader");
    let status = tracer.wait().expect("tracer exit");
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let text = String::from_utf8(bytes).expect("utf-8 output");
    let mut events = 0u64;
    let mut last: Option<Value> = None;
    for line in text.lines() {
        let ev: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_matches_schema(&ev);
        if ev["event"]["action"] == "connect" {
            let pid = ev["process"]["pid"].as_u64().unwrap_or(0) as u32;
            assert!(pids.contains(&pid), "only the connect storms: {ev}");
            events += 1;
        }
        if ev["event"]["action"] == "dns-query" {
            assert_eq!(ev["process"]["pid"], dns_pid, "only the DNS storm: {ev}");
        }
        last = Some(ev);
    }
    let last = last.expect("some output");
    assert_eq!(last["event"]["action"], "lost-events-final");
    let lost = last["tracer"]["lost"]["total"].as_u64().expect("total");
    let dns_lost = last["tracer"]["lost"]["dns_full"]
        .as_u64()
        .expect("dns_full");
    println!(
        "made {made}, events {events}, lost {lost} (ring {}, in-flight {}), announcements lost {}, DNS messages lost {dns_lost}, exchange lines lost {}, tracer peak RSS {} KiB",
        last["tracer"]["lost"]["ringbuf_full"],
        last["tracer"]["lost"]["inflight_full"],
        last["tracer"]["lost"]["announcements_full"],
        last["tracer"]["lost"]["exchange_full"],
        peak_rss
    );
    assert!(
        dns_lost > 0,
        "20,000 queries into a frozen tracer's ring lost some (else the DNS half proves nothing)"
    );
    assert!(
        dns_lost <= 20_000,
        "no more DNS messages lost than sent: {dns_lost}"
    );
    assert!(
        lost > 0,
        "the overload did overflow the ring (else it proves nothing)"
    );
    assert_eq!(
        events + lost,
        made,
        "every attempt is an event or a counted loss (DNS losses apart)"
    );
    // The stop line says the same, per kind.
    assert!(
        stderr.contains(&format!("{dns_lost} DNS messages lost")),
        "{stderr}"
    );
    // 8 MiB + 2 MiB of rings, 1 MiB of output buffer, caches: bounded.
    assert!(
        peak_rss < 96 * 1024,
        "peak RSS {peak_rss} KiB while the reader was slow"
    );
}
