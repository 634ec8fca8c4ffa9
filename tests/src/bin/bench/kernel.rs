//! The kernel's cost per connect (issue 20 §1): the run time of every eBPF
//! program the tracer holds, from `kernel.bpf_stats_enabled`, divided by
//! the connects made.
//!
//! Wall ratios swing 10-20% run to run on a shared VM; the kernel's own
//! accounting does not. With `bpf_stats_enabled`, the kernel times each
//! run of each program (`run_time_ns`, `run_cnt`, kernel/bpf/syscall.c,
//! shown in `/proc/<pid>/fdinfo/<fd>` of a bpf-prog descriptor). The
//! tracer runs as our child, so its descriptors name exactly the programs
//! it loaded, whatever else is loaded on the node.
//!
//! Two storms, each cut into slices: refused loopback connects (client
//! side only: no listener, the kernel answers with a reset) and
//! connect+accept (both sides' transitions). Steal time on this VM lands
//! inside the programs' own timing and only ever adds, and the programs
//! run node-wide, so other processes' sockets can add runs too: the least
//! slice is the programs' cost, the median is shown beside it.
//!
//! The floor (`--floor`): what running the same hooks costs with nothing
//! in them. tracer-user's `floor` feature builds the eBPF object with every
//! program returning in its first instructions (tracer-ebpf's `floor`);
//! userspace loads and attaches it as usual, so the hooks, program types
//! and run counts are the tracer's own. It runs at once with the tracer in
//! every slice, and `above_floor` subtracts it per program: that is the
//! work the tracer's code does, and the floor (the hooks' dispatch plus
//! bpf_stats' own two clock reads per run) is what no change to the
//! programs' bodies can remove.

use std::{
    collections::BTreeMap,
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::{json, Value};
pub use tracer_tests::bpf_stats::{Run, StatsOn};
use tracer_tests::{
    bpf_stats::{held_programs, program_names},
    connector_bin,
};

/// One storm of `n` connects of `kind` (`refused`, `accepted`).
fn storm(kind: &str, n: u64) {
    let status = Command::new(connector_bin())
        .args(["storm", "--count", &n.to_string(), "--kind", kind])
        .stdout(Stdio::null())
        .status()
        .expect("start storm");
    assert!(status.success(), "storm {kind} failed: {status}");
}

fn least(v: &[f64]) -> f64 {
    super::min(v.iter().copied())
}

fn median(v: &[f64]) -> f64 {
    super::median(v.to_vec())
}

/// The storm kinds measured.
pub const KINDS: [&str; 2] = ["refused", "accepted"];

/// What each program the tracers `pids` hold ran during one storm of `n`
/// connects of `kind`, per tracer, by program name (ids change from one
/// tracer to the next). A short warm-up storm first: page cache, the
/// ports' first use, the tracers' first drains.
pub fn slice(pids: &[u32], kind: &str, n: u64) -> Vec<BTreeMap<String, Run>> {
    storm(kind, n / 10 + 1);
    std::thread::sleep(Duration::from_millis(100));
    let names = program_names();
    let before: Vec<_> = pids.iter().map(|p| held_programs(*p)).collect();
    storm(kind, n);
    let after: Vec<_> = pids.iter().map(|p| held_programs(*p)).collect();
    before
        .iter()
        .zip(&after)
        .map(|(before, after)| {
            let mut out = BTreeMap::new();
            for (id, a) in after {
                let b = before.get(id).copied().unwrap_or_default();
                let name = names.get(id).cloned().unwrap_or_else(|| format!("id {id}"));
                let run = out.entry(name).or_insert_with(Run::default);
                run.ns += a.ns.saturating_sub(b.ns);
                run.cnt += a.cnt.saturating_sub(b.cnt);
            }
            out
        })
        .collect()
}

/// Print the table of one build's slices of one storm kind (`n` connects
/// each), and return it as JSON.
pub fn report(label: &str, kind: &str, slices: &[BTreeMap<String, Run>], n: u64) -> Value {
    let n = n as f64;
    let mut names: Vec<&String> = slices.iter().flat_map(|s| s.keys()).collect();
    names.sort();
    names.dedup();
    println!(
        "\n{label}, {} loopback connect (least of {} slices, median in brackets):\n  {:<22} {:>12} {:>18} {:>20}",
        if kind == "refused" {
            "refused"
        } else {
            "connect+accept"
        },
        slices.len(),
        "program",
        "runs/connect",
        "ns/run",
        "ns/connect"
    );
    let mut totals = vec![0.0; slices.len()];
    let mut rows = Vec::new();
    for name in names {
        let runs: Vec<Run> = slices
            .iter()
            .map(|s| s.get(name).copied().unwrap_or_default())
            .collect();
        if runs.iter().all(|r| r.cnt == 0) {
            continue;
        }
        let per_connect: Vec<f64> = runs.iter().map(|r| r.ns as f64 / n).collect();
        let per_run: Vec<f64> = runs
            .iter()
            .map(|r| r.ns as f64 / r.cnt.max(1) as f64)
            .collect();
        let runs_per: Vec<f64> = runs.iter().map(|r| r.cnt as f64 / n).collect();
        for (t, v) in totals.iter_mut().zip(&per_connect) {
            *t += v;
        }
        println!(
            "  {name:<22} {:>12.2} {:>18} {:>20}",
            median(&runs_per),
            format!("{:.0} ({:.0})", least(&per_run), median(&per_run)),
            format!("{:.0} ({:.0})", least(&per_connect), median(&per_connect)),
        );
        rows.push(json!({
            "program": name,
            "runs_per_connect_median": median(&runs_per),
            "ns_per_run_least": least(&per_run),
            "ns_per_run_median": median(&per_run),
            "ns_per_connect_least": least(&per_connect),
            "ns_per_connect_median": median(&per_connect),
        }));
    }
    println!(
        "  {:<22} {:>12} {:>18} {:>20}",
        "total",
        "",
        "",
        format!("{:.0} ({:.0})", least(&totals), median(&totals)),
    );
    json!({
        "programs": rows,
        "total_ns_per_connect_least": least(&totals),
        "total_ns_per_connect_median": median(&totals),
        "total_ns_per_connect_slices": totals,
    })
}
/// Whether bpf_stats was off for some of a slice of `n` connects: the
/// kernel then neither counts nor times runs, and `connect4` runs once per
/// connect (more with other processes' connects, never fewer).
pub fn untimed(slice: &BTreeMap<String, Run>, n: u64) -> bool {
    slice.get("connect4").map_or(0, |r| r.cnt) < n
}

/// The least ns per connect of each program in `tracer` minus that in
/// `floor` (two outputs of `report` for the same storm kind, from the
/// same slices), printed and returned as JSON.
pub fn above_floor(kind: &str, tracer: &Value, floor: &Value) -> Value {
    let least_of = |doc: &Value, name: &str| {
        doc["programs"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["program"] == name)
            .and_then(|r| r["ns_per_connect_least"].as_f64())
            .unwrap_or(0.0)
    };
    println!(
        "\nabove the floor, {} loopback connect (least ns/connect of each):\n  {:<22} {:>10} {:>10} {:>12}",
        if kind == "refused" {
            "refused"
        } else {
            "connect+accept"
        },
        "program",
        "tracer",
        "floor",
        "above floor"
    );
    let mut rows = Vec::new();
    for row in tracer["programs"].as_array().into_iter().flatten() {
        let Some(name) = row["program"].as_str() else {
            continue;
        };
        let (t, f) = (least_of(tracer, name), least_of(floor, name));
        println!("  {name:<22} {t:>10.0} {f:>10.0} {:>12.0}", t - f);
        rows.push(json!({ "program": name, "tracer": t, "floor": f, "above_floor": t - f }));
    }
    let total = |doc: &Value| doc["total_ns_per_connect_least"].as_f64().unwrap_or(0.0);
    let (t, f) = (total(tracer), total(floor));
    println!("  {:<22} {t:>10.0} {f:>10.0} {:>12.0}", "total", t - f);
    json!({
        "programs": rows,
        "total_tracer": t,
        "total_floor": f,
        "total_above_floor": t - f,
    })
}
