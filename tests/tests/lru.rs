//! The kernel's LRU maps (issue 20 §2): sized by the node's CPU count at
//! load, and their evictions counted and reported.
//!
//! `PROXY_SOCKS` takes one entry per dial to a known proxy and drops it
//! only once the exchange's two lines are seen. Dials to a `--proxy`
//! endpoint that refuses never exchange a line, so more dials than the map
//! holds must evict, and the tracer must say how many.

use tracer_tests::{closed_port, connector, Tracer};

/// Possible CPUs, as the kernel's per-CPU LRU lists count them
/// (/sys/devices/system/cpu/possible: "0-1", "0", "0-3,8-11").
fn possible_cpus() -> u32 {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible").expect("possible cpus");
    text.trim()
        .split(',')
        .map(|part| match part.split_once('-') {
            Some((a, b)) => b.parse::<u32>().expect("cpu") - a.parse::<u32>().expect("cpu") + 1,
            None => 1,
        })
        .sum()
}

/// (present, capacity, evicted) of `map` in a "kernel LRU maps:" line.
fn lru_counts(stderr: &str, map: &str) -> (u64, u64, u64) {
    let line = stderr
        .lines()
        .find(|l| l.contains("tracer: stopped") && l.contains("kernel LRU maps:"))
        .unwrap_or_else(|| panic!("no LRU maps in the stop line: {stderr}"));
    let at = line
        .find(&format!("{map} "))
        .unwrap_or_else(|| panic!("{map} missing: {line}"));
    // "PROXY_SOCKS 8704/8704 (1296 evicted)"
    let rest = &line[at + map.len() + 1..];
    let (present, rest) = rest.split_once('/').expect("present/capacity");
    let (capacity, rest) = rest.split_once(" (").expect("capacity (");
    let (evicted, _) = rest.split_once(" evicted").expect("evicted");
    (
        present.parse().expect("present"),
        capacity.parse().expect("capacity"),
        evicted.parse().expect("evicted"),
    )
}

#[test]
fn lru_maps_are_sized_by_cpu_count_and_evictions_are_counted() {
    const DIALS: u64 = 12_000;
    let port = closed_port();
    let proxy = format!("127.0.0.1:{port}");
    let tracer = Tracer::start(&["--proxy", &proxy]);
    let (_pid, errnos) = connector(&["tcp", &proxy, "--count", &DIALS.to_string()]);
    assert_eq!(errnos.len() as u64, DIALS);
    assert!(
        errnos.iter().all(|&e| e == libc::ECONNREFUSED),
        "{errnos:?}"
    );
    let stopped = tracer.stop();

    let cpus = u64::from(possible_cpus());
    let (present, capacity, evicted) = lru_counts(&stopped.stderr, "PROXY_SOCKS");
    // Base size plus 256 per possible CPU (probe/lru.rs).
    assert_eq!(
        capacity,
        (8_192 + 256 * cpus).min(8_192 * 16),
        "{}",
        stopped.stderr
    );
    assert!(present <= capacity, "{}", stopped.stderr);
    // Every dial put a key, none was deleted (no exchange): what is not
    // present was evicted. (Other processes dialling that port could only
    // add entries, never take ours.)
    assert!(present + evicted >= DIALS, "{}", stopped.stderr);
    assert!(evicted >= DIALS - capacity, "{}", stopped.stderr);
    assert!(evicted > 0);

    // SEEN holds announced processes: the connector at least; its size
    // grows with the CPUs too.
    let (seen, seen_capacity, _) = lru_counts(&stopped.stderr, "SEEN");
    assert_eq!(seen_capacity, (16_384 + 256 * cpus).min(16_384 * 16));
    assert!(seen <= seen_capacity);
    // DNS_SOCKS is in the object even without --dns.
    let (_, dns_capacity, dns_evicted) = lru_counts(&stopped.stderr, "DNS_SOCKS");
    assert_eq!(dns_capacity, (16_384 + 256 * cpus).min(16_384 * 16));
    assert_eq!(dns_evicted, 0);
}
